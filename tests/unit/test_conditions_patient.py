"""cds_service.core.conditions.patient: conditions on the problem list by status and age, allergies
by code, brand or name, and the patient's age against a threshold."""
from __future__ import annotations

from datetime import timedelta

import pytest
from coreknowledge import NOW, facts_of, holds

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _condition(code="G35", status="active", onset=None, text="Multiple sclerosis"):
    resource = {"resourceType": "Condition", "id": f"c{code}{status}", "subject": {"reference": "Patient/p"},
                "code": {"coding": [{"system": ICD10CM, "code": code}], "text": text}}
    if status:
        resource["clinicalStatus"] = {"coding": [{"code": status}]}
    if onset is not None:
        resource["onsetDateTime"] = (NOW - timedelta(days=onset)).date().isoformat()
    return resource


def _facts(*conditions, **more):
    return facts_of("patient-view", conditions=list(conditions), **more)


@pytest.mark.parametrize("status, current", [("active", True), ("recurrence", True), ("relapse", True),
                                             ("remission", True), ("resolved", False), ("inactive", False)])
def test_a_condition_counts_while_current_and_remission_of_ms_still_counts(status, current):
    assert holds({"condition": "multiple-sclerosis"}, _facts(_condition(status=status))) == current


def test_a_condition_outside_the_set_does_not_count():
    assert not holds({"condition": "multiple-sclerosis"}, _facts(_condition(code="M54.50", text="Low back pain")))


def test_a_listed_status_asks_for_that_status_only():
    spec = {"condition": {"valueset": "multiple-sclerosis", "statuses": ["resolved"]}}
    assert holds(spec, _facts(_condition(status="resolved")))
    assert not holds(spec, _facts(_condition(status="active")))


def test_relapse_is_read_from_the_clinical_status():
    assert holds({"condition_in_relapse": "multiple-sclerosis"}, _facts(_condition(status="relapse")))
    assert not holds({"condition_in_relapse": "multiple-sclerosis"}, _facts(_condition(status="active")))


@pytest.mark.parametrize("onset, lasted, recent", [(200, True, False), (90, True, True), (10, False, True), (None, False, False)])
def test_condition_for_days_measures_from_the_onset_and_an_unknown_onset_is_neither(onset, lasted, recent):
    facts = _facts(_condition(onset=onset))
    assert holds({"condition_for_days": {"valueset": "multiple-sclerosis", "at_least_days": 90}}, facts) == lasted
    assert holds({"condition_for_days": {"valueset": "multiple-sclerosis", "at_most_days": 90}}, facts) == recent


def _allergy(concept):
    return {"resourceType": "AllergyIntolerance", "id": "a", "patient": {"reference": "Patient/p"},
            "clinicalStatus": {"coding": [{"code": "active"}]}, "code": concept}


@pytest.mark.parametrize("concept", [{"coding": [{"system": RXNORM, "code": "5640"}]}, {"text": "ibuprofen"},
                                     {"text": "Toradol"}, {"coding": [{"system": RXNORM, "code": "197807"}]}])
def test_an_allergy_counts_by_ingredient_code_product_code_brand_or_name(concept):
    assert holds({"allergy": "nsaid-allergy"}, _facts(allergies=[_allergy(concept)]))


def test_an_unrelated_or_resolved_allergy_does_not_count():
    assert not holds({"allergy": "nsaid-allergy"}, _facts(allergies=[_allergy({"text": "penicillin"})]))
    resolved = {**_allergy({"text": "ibuprofen"}), "clinicalStatus": {"coding": [{"code": "resolved"}]}}
    assert not holds({"allergy": "nsaid-allergy"}, _facts(allergies=[resolved]))


def test_age_at_least_holds_from_the_birthday_on_and_not_for_an_unknown_age():
    def patient(birth):
        return {"resourceType": "Patient", "id": "p", "birthDate": birth}

    today = NOW.date()
    assert holds({"age_at_least": 65}, facts_of("patient-view", patient=patient(f"{today.year - 65}-{today:%m-%d}")))
    day_before = today + timedelta(days=1)
    assert not holds({"age_at_least": 65},
                     facts_of("patient-view", patient=patient(f"{day_before.year - 65}-{day_before:%m-%d}")))
    assert not holds({"age_at_least": 18}, facts_of("patient-view", patient={"resourceType": "Patient", "id": "p"}))
    assert holds({"age_at_least": {"years": 18, "label": "age"}}, facts_of("patient-view", patient=patient("1950-01-01")))
