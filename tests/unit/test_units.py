"""cds_service.core.units: a lab result counts for a rule's unit when either of its units means the
same UCUM unit; units are matched, never converted; knowledge authors get a fix for a unit."""
from __future__ import annotations

import pytest

from cds_service.core.units import READABLE, SPELLINGS, readable, same_unit, ucum_code, unit_problem

ALL_SPELLINGS = [(code, alias) for code, aliases in SPELLINGS.items() for alias in (code, *aliases)]


@pytest.mark.parametrize("code, spelling", ALL_SPELLINGS)
def test_every_declared_spelling_reads_as_its_ucum_code_in_any_case_and_spacing(code, spelling):
    assert ucum_code(spelling) == code
    assert ucum_code(spelling.upper()) == code
    assert ucum_code(f"  {spelling} ") == code
    assert ucum_code(ucum_code(spelling)) == code  # idempotent: a code reads as itself


def test_no_spelling_means_two_units():
    """A spelling shared by two codes would make a result count for a unit it is not in."""
    codes_of: dict[str, set[str]] = {}
    for code, alias in ALL_SPELLINGS:
        codes_of.setdefault("".join(alias.split()).lower(), set()).add(code)
    assert {key: codes for key, codes in codes_of.items() if len(codes) > 1} == {}


def test_egfr_as_labs_print_it_counts_for_the_ucum_unit_a_rule_names():
    assert same_unit(["mL/min/1.73m2"], ["mL/min/{1.73_m2}"])
    assert same_unit(["", "mL/min/1.73 m²"], ["mL/min/{1.73_m2}"])  # the code empty, the text filled


def test_same_unit_is_symmetric_between_what_a_result_says_and_what_a_rule_names():
    for code, alias in ALL_SPELLINGS:
        assert same_unit([alias], [code]) and same_unit([code], [alias])


@pytest.mark.parametrize("found, named", [
    (["mg/dL"], ["umol/L"]),  # creatinine in two units: a threshold in one never reads the other
    (["g"], ["kg"]),
    (["[lb_av]"], ["kg"]),  # a weight in pounds is not a weight in kg: no silent conversion
    (["mL/min"], ["mL/min/{1.73_m2}"]),  # a clearance is not an eGFR
])
def test_different_units_never_match(found, named):
    assert not same_unit(found, named)


def test_a_result_without_units_counts_for_no_unit():
    assert not same_unit([], ["kg"])
    assert not same_unit(["", ""], ["kg"])


def test_an_unknown_unit_is_compared_exactly_as_written():
    assert ucum_code(" furlong ") == "furlong"
    assert same_unit(["furlong"], ["furlong"]) and not same_unit(["furlongs"], ["furlong"])


def test_readable_shows_clinicians_the_print_form_and_leaves_other_text_alone():
    assert readable("mL/min/{1.73_m2}") == "mL/min/1.73 m²"
    assert readable("1") == ""
    assert readable("mg/dL") == "mg/dL"
    assert "{" not in "".join(READABLE.values())


def test_unit_problem_accepts_ucum_codes_and_gives_the_code_for_a_spelling():
    assert all(unit_problem(code) is None for code in SPELLINGS)
    problem = unit_problem("lbs")
    assert problem is not None and "'[lb_av]'" in problem
    unknown = unit_problem("furlong")
    assert unknown is not None and "units.py" in unknown


@pytest.mark.parametrize("bad", [None, "", "   ", 5])
def test_unit_problem_rejects_what_is_not_a_unit(bad):
    assert unit_problem(bad) is not None
