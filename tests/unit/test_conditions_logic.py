"""cds_service.core.conditions.logic: all, any and not combine conditions as logic does, and the
card says what held (and, for a not, that nothing was recorded)."""
from __future__ import annotations

import itertools

import pytest
from coreknowledge import condition, facts_of

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
MS = {"condition": "multiple-sclerosis"}
ALLERGY = {"allergy": "nsaid-allergy"}


def _ms():
    return {"resourceType": "Condition", "id": "ms", "subject": {"reference": "Patient/p"},
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {"coding": [{"system": ICD10CM, "code": "G35"}], "text": "Multiple sclerosis"}}


def _nsaid_allergy():
    return {"resourceType": "AllergyIntolerance", "id": "a", "patient": {"reference": "Patient/p"},
            "clinicalStatus": {"coding": [{"code": "active"}]}, "code": {"text": "ibuprofen"}}


def _facts(ms: bool, allergy: bool):
    return facts_of("patient-view", conditions=[_ms()] if ms else [], allergies=[_nsaid_allergy()] if allergy else [])


@pytest.mark.parametrize("ms, allergy", list(itertools.product([False, True], repeat=2)))
def test_all_any_and_not_follow_their_truth_tables(ms, allergy):
    facts = _facts(ms, allergy)
    assert (condition(MS)(facts, None) is not None) == ms  # the cases are what they say
    assert (condition(ALLERGY)(facts, None) is not None) == allergy
    assert (condition({"all": [MS, ALLERGY]})(facts, None) is not None) == (ms and allergy)
    assert (condition({"any": [MS, ALLERGY]})(facts, None) is not None) == (ms or allergy)
    assert (condition({"not": MS})(facts, None) is not None) == (not ms)
    assert (condition({"not": {"not": MS}})(facts, None) is not None) == ms


def test_all_and_any_give_the_evidence_of_every_part_that_held():
    evidence = condition({"all": [MS, ALLERGY]})(_facts(True, True), None)
    assert evidence is not None and len(evidence) == 2
    assert any("Multiple sclerosis" in e.text for e in evidence) and any("ibuprofen" in e.text for e in evidence)
    assert len(condition({"any": [MS, ALLERGY]})(_facts(True, False), None) or []) == 1


def test_not_of_a_record_condition_says_none_was_recorded():
    evidence = condition({"not": ALLERGY})(_facts(False, False), None)
    assert evidence is not None and evidence[0].text.startswith("None recorded: ")
    assert condition({"not": {"age_at_least": 200}})(_facts(False, False), None) == []


def test_combinations_read_what_their_parts_read():
    predicate = condition({"any": [MS, {"not": ALLERGY}]})
    assert predicate.needs == {"conditions", "allergies"}
    assert predicate.valuesets == {"multiple-sclerosis", "nsaid-allergy"}
