"""cds_service.core.dialect: the ways real EHRs write codes, routes, units, names and problems, read
as the value sets and rules expect them; an empty Dialect reads FHIR as written."""
from __future__ import annotations

import pytest
from coreknowledge import knowledge

from cds_service.core.dialect import Dialect, compile_dialect, ndc_key

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture(scope="module")
def dialect() -> Dialect:
    return knowledge().terminology.dialect


def test_every_alias_names_its_canonical_system_and_a_canonical_one_itself(dialect):
    assert dialect.systems
    for alias, canonical in dialect.systems.items():
        assert dialect.system(alias) == canonical
        assert dialect.system(canonical) == canonical
    assert dialect.system(SNOMED + "/") == SNOMED
    assert dialect.system("http://example.org/local") == "http://example.org/local"


def test_rewriting_a_system_to_any_alias_keeps_the_value_sets_a_rule_reads():
    """Metamorphic: the same code under an OID or another URI of its system is in the same sets."""
    terminology = knowledge().terminology
    codes = [(ICD10CM, "G35"), (ICD10CM, "D89.40"), (RXNORM, "7052")]
    for system, code in codes:
        sets = terminology.valuesets_of(system, code)
        assert sets, (system, code)
        aliases = [a for a, c in terminology.dialect.systems.items() if c == system]
        assert aliases, system
        for alias in aliases:
            assert terminology.valuesets_of(alias, code) == sets
            assert terminology.dialect.codings([(alias, code, "d")]) == ((system, code, "d"),)


def test_an_empty_dialect_reads_fhir_as_written():
    plain = Dialect()
    assert plain.system("urn:oid:2.16.840.1.113883.6.90") == "urn:oid:2.16.840.1.113883.6.90"
    assert plain.route_in_words("morphine 4 mg IV") is None
    assert plain.unit({"system": UCUM, "code": "mg"}) is None
    assert plain.written_names("Toradol 10 mg") == ()
    assert plain.condition_codings("MCAS") == ()


@pytest.mark.parametrize("text, route", [
    ("morphine 4 mg IV push", "parenteral"), ("4 mg iv", "parenteral"), ("ondansetron SQ", "parenteral"),
    ("1 tablet by mouth", "oral"), ("10 mg PO TID", "oral"),
])
def test_route_abbreviations_are_read_as_whole_words_in_any_case(dialect, text, route):
    assert dialect.route_in_words(text) == route


@pytest.mark.parametrize("text", ["IVF bolus", "drive to the river", "take it with food", "POTASSIUM"])
def test_a_route_abbreviation_inside_another_word_is_no_route(dialect, text):
    assert dialect.route_in_words(text) is None


def test_route_codes_of_v2_and_snomed_are_read_and_their_oid_too(dialect):
    assert dialect.route_of_code("http://terminology.hl7.org/CodeSystem/v2-0162", "iv") == "parenteral"
    assert dialect.route_of_code("urn:oid:2.16.840.1.113883.12.162", "PO") == "oral"
    assert dialect.route_of_code(SNOMED, "26643006") == "oral"
    assert dialect.route_of_code(SNOMED, "999999") is None


@pytest.mark.parametrize("quantity, unit", [
    ({"system": UCUM, "code": "mg"}, "mg"),
    ({"system": "urn:oid:2.16.840.1.113883.6.8", "code": "mcg"}, "ug"),
    ({"system": SNOMED, "code": "258684004", "unit": "milligram"}, "mg"),
    ({"system": UCUM, "code": "{tablet}"}, "unit"),
    ({"unit": "Tablets"}, "unit"),
    ({"code": "mg"}, "mg"),  # a code without a system: read as a word
])
def test_dose_units_are_read_from_any_system_or_the_text(dialect, quantity, unit):
    assert dialect.unit(quantity) == unit


def test_a_coded_unit_the_dialect_does_not_know_is_unread_whatever_its_text_says(dialect):
    assert dialect.unit({"system": SNOMED, "code": "123", "unit": "mg"}) is None
    assert dialect.unit({"unit": "spoonful"}) is None
    assert dialect.unit({}) is None


def test_mg_converts_amounts_only():
    assert Dialect.mg(2, "g") == 2000
    assert Dialect.mg(500, "ug") == pytest.approx(0.5)
    assert Dialect.mg(15, "mg") == 15
    assert Dialect.mg(1, "mL") is None and Dialect.mg(1, "unit") is None


def test_written_names_longest_first_each_once_and_not_when_negated(dialect):
    found = dialect.written_names("Tylenol #3 1 tab q6h; Tylenol #3 prn")
    assert [n.written for n in found] == ["Tylenol #3"]
    assert set(found[0].means) == {"acetaminophen", "codeine"}
    assert [n.written for n in dialect.written_names("toradol 10 mg")] == ["Toradol"]
    assert dialect.written_names("no Toradol") == ()
    assert dialect.written_names("Toradol - discontinued") == ()
    assert dialect.written_names("Toradolex") == ()


def test_negation_stays_within_its_clause(dialect):
    text = "no aspirin. Toradol 10 mg"
    start = text.index("Toradol")
    assert not dialect.negated(text, start, start + len("Toradol"))


def test_an_ndc_is_found_however_it_is_written(dialect):
    assert dialect.ndc_product("49502-500-02") == "727347"
    assert dialect.ndc_product("49502050002") == "727347"  # the 11-digit claims form
    assert dialect.ndc_product("4950250002") == "727347"  # the 10 digits without hyphens
    assert dialect.ndc_product("00000-000-00") is None
    assert ndc_key("49502-500-02") == "4950250002"


def test_problem_list_text_stands_for_its_code_unless_negated(dialect):
    assert (ICD10CM, "D89.40", "MCAS") in dialect.condition_codings("MCAS, well controlled")
    assert (ICD10CM, "G35", "multiple sclerosis") in dialect.condition_codings("Multiple Sclerosis")
    assert dialect.condition_codings("no MCAS") == ()
    assert dialect.condition_codings("MCASX") == ()


def test_compile_dialect_maps_aliases_of_row_systems_to_the_canonical_uri():
    compiled = compile_dialect({
        "code_systems": [{"canonical": SNOMED, "aliases": ["urn:oid:2.16.840.1.113883.6.96"]}],
        "routes": {"codes": [{"system": "urn:oid:2.16.840.1.113883.6.96", "map": {"26643006": "oral"}}],
                   "words": {"map": {"PO": "oral"}}},
        "ndc": [{"ndc": "1234-5678-90", "rxcui": "1"}],
    })
    assert compiled.route_of_code(SNOMED, "26643006") == "oral"
    assert compiled.route_in_words("po") == "oral"
    assert compiled.ndc_product("01234567890") == "1"  # 4-4-2 padded to 5-4-2
    assert compiled.ndc_product("1234-5678-90") == "1"
