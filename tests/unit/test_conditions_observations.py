"""cds_service.core.conditions.observations: lab results against a rule's limit: the latest value (or
the lowest of the latest exam), compared as written, only in the rule's units; abnormal high by the
lab's own interpretation or range; and whether a result is on record at all."""
from __future__ import annotations

from datetime import timedelta

import pytest
from coreknowledge import NOW, condition, facts_of, holds
from hypothesis import given, settings
from hypothesis import strategies as st

LOINC = "http://loinc.org"
EGFR = "48642-3"
WEIGHT = "29463-7"


def _result(code, value, unit, days_ago=5, oid=None, **more):
    when = (NOW - timedelta(days=days_ago)).date().isoformat()
    return {"resourceType": "Observation", "id": oid or f"o{code}{value}{days_ago}", "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}], "text": code},
            "valueQuantity": {"value": value, "unit": unit}, "effectiveDateTime": when, **more}


def _facts(*results):
    return facts_of("patient-view", observations=list(results))


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=5, max_value=120))
def test_the_three_comparisons_agree_with_the_number_line(value):
    facts = _facts(_result(EGFR, value, "mL/min/1.73m2"))
    spec = {"valueset": "kidney-function", "value": 30}
    assert holds({"observation_below": spec}, facts) == (value < 30)
    assert holds({"observation_at_most": spec}, facts) == (value <= 30)
    assert holds({"observation_at_least": spec}, facts) == (value >= 30)


def test_the_latest_result_decides_not_an_older_one():
    facts = _facts(_result(EGFR, 20, "mL/min/1.73m2", days_ago=40), _result(EGFR, 80, "mL/min/1.73m2", days_ago=2))
    assert not holds({"observation_below": {"valueset": "kidney-function", "value": 30}}, facts)


@pytest.mark.parametrize("unit, counts", [("kg", True), ("kilograms", True), ("lb", False), ("[lb_av]", False)])
def test_a_band_with_units_holds_only_for_a_result_in_them(unit, counts):
    facts = _facts(_result(WEIGHT, 20, unit))
    spec = {"valueset": "body-weight", "value": 30, "units": ["kg"]}
    assert holds({"observation_below": spec}, facts) == counts
    assert holds({"observation_recorded": {"valueset": "body-weight", "units": ["kg"]}}, facts) == counts
    assert holds({"observation_recorded": "body-weight"}, facts)


def test_lowest_of_the_latest_day_takes_every_result_of_the_latest_exam():
    facts = _facts(_result(EGFR, 80, "mL/min/1.73m2", days_ago=2, oid="a"),
                   _result(EGFR, 25, "mL/min/1.73m2", days_ago=2, oid="b"),
                   _result(EGFR, 10, "mL/min/1.73m2", days_ago=60, oid="c"))
    low = {"valueset": "kidney-function", "value": 30, "of": "lowest-of-latest-day"}
    assert holds({"observation_below": low}, facts)
    assert holds({"observation_below": {**low, "value": 26}}, facts) and not holds({"observation_below": {**low, "value": 25}}, facts)


def test_abnormal_high_follows_the_labs_interpretation_then_its_range():
    tryptase = "21582-2"
    high = _result(tryptase, 12, "ng/mL", interpretation=[{"coding": [{"code": "H"}]}])
    normal = _result(tryptase, 40, "ng/mL", interpretation=[{"coding": [{"code": "N"}]}])
    by_range = _result(tryptase, 12, "ng/mL", referenceRange=[{"high": {"value": 11.4, "unit": "ng/mL"}}])
    spec = {"observation_high": "serum-tryptase"}
    assert holds({"observation_recorded": "serum-tryptase"}, _facts(high))  # 21582-2 is a serum tryptase
    assert holds(spec, _facts(high))
    assert not holds(spec, _facts(normal))  # the lab said normal: the number is not second-guessed
    assert holds(spec, _facts(by_range))
    assert not holds(spec, _facts(_result(tryptase, 12, "ng/mL")))  # no interpretation, range nor threshold


def test_a_comparison_reads_observations_and_its_value_set():
    predicate = condition({"observation_at_least": {"valueset": "kidney-function", "value": 30}})
    assert predicate.needs == {"observations"} and predicate.valuesets == {"kidney-function"}
