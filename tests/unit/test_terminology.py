"""cds_service.core.terminology: value-set membership by code (any spelling of the system, ICD-10
with or without its dot), products to ingredients, and names in order text as whole words."""
from __future__ import annotations

import pytest
from coreknowledge import knowledge

from cds_service.core.terminology import (
    ICD10CM,
    RXNORM,
    Brand,
    BrandIndex,
    NameIndex,
    compile_valuesets,
    normalize_icd10,
)


@pytest.fixture(scope="module")
def terminology():
    return knowledge().terminology


@pytest.mark.parametrize("written, tabular", [("M5450", "M54.50"), ("m54.50", "M54.50"), (" g35 ", "G35")])
def test_icd10_codes_are_normalised_as_the_tabular_writes_them(written, tabular):
    assert normalize_icd10(written) == tabular
    assert normalize_icd10(normalize_icd10(written)) == tabular


def test_an_icd10_code_without_its_dot_is_in_the_same_sets(terminology):
    assert terminology.valuesets_of(ICD10CM, "D8940") == terminology.valuesets_of(ICD10CM, "D89.40") != frozenset()


def test_a_product_expands_to_its_ingredients_and_matches_the_ingredients_sets(terminology):
    assert terminology.expand_rxnorm("892582") == ("892582", "7052")  # morphine 15 mg tablet -> morphine
    assert terminology.expand_rxnorm("unknown") == ("unknown",)
    sets = terminology.medication_sets(((RXNORM, "892582", "morphine sulfate 15 MG Oral Tablet"),), "")
    assert "mcas-histamine-releasing-opioids" in sets and sets["mcas-histamine-releasing-opioids"].code == "892582"
    assert not sets["mcas-histamine-releasing-opioids"].by_name


def test_an_order_known_by_code_is_not_read_again_from_its_text(terminology):
    """A known code that is not in a set is a clear no: the text 'morphine' does not add morphine."""
    ibuprofen = ((RXNORM, "197807", "ibuprofen 800 MG Oral Tablet"),)
    assert terminology.knows_rxnorm(ibuprofen)
    sets = terminology.medication_sets(ibuprofen, "morphine")
    assert "nsaids-non-aspirin" in sets and "mcas-histamine-releasing-opioids" not in sets
    assert "mcas-histamine-releasing-opioids" in terminology.medication_sets((), "morphine")


def test_an_uncoded_order_is_matched_by_whole_ingredient_names_not_parts_of_words(terminology):
    by_name = terminology.medication_sets((), "morphine sulfate 15 mg tablet")
    assert by_name["mcas-histamine-releasing-opioids"].by_name
    assert "mcas-histamine-releasing-opioids" not in terminology.medication_sets((), "hydromorphone 2 mg")
    assert "mcas-histamine-releasing-opioids" not in terminology.medication_sets((), "no morphine")


def test_a_brand_stands_for_its_ingredient(terminology):
    assert "nsaids-non-aspirin" in terminology.medication_sets((), "Toradol 10 mg tablet")


def test_match_codes_says_which_coding_matched(terminology):
    codings = (("http://example.org", "x", "local"), (ICD10CM, "G35", "MS"))
    match = terminology.match_codes(codings, "multiple-sclerosis")
    assert match is not None and (match.system, match.code, match.display) == (ICD10CM, "G35", "MS")
    assert terminology.match_codes(codings[:1], "multiple-sclerosis") is None


def test_an_ndc_only_order_reads_as_its_rxnorm_product(terminology):
    codings = terminology.product_codings((("urn:oid:2.16.840.1.113883.6.69", "49502-500-02", "EpiPen"),))
    assert ("http://hl7.org/fhir/sid/ndc", "49502-500-02", "EpiPen") in codings
    assert (RXNORM, "727347", "EpiPen") in codings


def test_name_index_finds_whole_words_in_any_case():
    index = NameIndex(["morphine", "codeine phosphate"])
    assert index.find("MORPHINE 5 mg") == {"morphine"}
    assert index.find("hydromorphone") == frozenset()
    assert index.find("Codeine Phosphate 30 mg and morphine") == {"morphine", "codeine phosphate"}
    assert index.find("") == frozenset()
    assert index.find("morphine é") == {"morphine"}  # non-ASCII text is searched in full


def test_brand_index_prefers_the_longest_brand_and_keeps_order_of_appearance():
    index = BrandIndex([Brand("Medrol", "6902"), Brand("Solu-Medrol", "6902"), Brand("Advil", "5640")])
    assert [b.name for b in index.find("Solu-Medrol 125 mg IV then Advil")] == ["Solu-Medrol", "Advil"]
    assert [b.name for b in index.find("medrol dosepak")] == ["Medrol"]
    assert index.find("Medrolx") == ()
    assert len(index) == 3


def test_compiled_value_sets_resolve_includes_filters_and_exclusions():
    resources = {
        "child": {"url": "u:child", "compose": {"include": [{"system": ICD10CM, "concept": [{"code": "G35"}]}]}},
        "parent": {"url": "u:parent", "compose": {
            "include": [{"valueSet": ["u:child"]}, {"system": ICD10CM, "filter": [{"value": "M54"}]}],
            "exclude": [{"system": ICD10CM, "concept": [{"code": "M5450"}]}]}},
    }
    compiled = compile_valuesets(resources, {})
    parent = compiled["parent"]
    assert parent.contains(ICD10CM, "G35")  # from the included value set
    assert parent.contains(ICD10CM, "M54.16")  # is-a the filter's prefix
    assert not parent.contains(ICD10CM, "M54.50")  # excluded, written with or without its dot
    assert not parent.contains(ICD10CM, "G36")
    assert not compiled["child"].contains(ICD10CM, "M54.16")
