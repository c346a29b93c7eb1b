"""Facts computed once per call: statuses, ages, doses, durations, latest observations."""
from __future__ import annotations

import os

from datetime import datetime, timezone

import pytest

from cds_service.facts import build_facts

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def terminology():
    from cds_service.config import knowledge_dir
    from cds_service.knowledge import load_knowledge

    return load_knowledge(knowledge_dir(os.environ.get("CDS_KNOWLEDGE_DIR"))).terminology


def _facts(terminology, drafts=(), conditions=(), patient=None, observations=(), hook="order-sign"):
    context = {"patientId": "p", "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": d} for d in drafts]}}
    data = {"conditions": {"resourceType": "Bundle", "entry": [{"resource": c} for c in conditions]},
            "observations": {"resourceType": "Bundle", "entry": [{"resource": o} for o in observations]},
            "patient": patient}
    return build_facts(hook, context, data, terminology, NOW)


def _ibuprofen(**dosage):
    return {"resourceType": "MedicationRequest", "id": "d", "status": "draft",
            "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                      "code": "197807"}], "text": "ibuprofen 800 MG Oral Tablet"},
            **dosage}


def test_daily_dose_uses_product_strength_and_upper_bounds(terminology):
    order = _ibuprofen(dosageInstruction=[{
        "timing": {"repeat": {"frequency": 3, "frequencyMax": 4, "period": 1, "periodUnit": "d"}},
        "doseAndRate": [{"doseQuantity": {"value": 1, "code": "{pill}"}}]}])
    (fact,) = _facts(terminology, [order]).draft_medications
    assert fact.single_dose_mg == 800 and fact.daily_dose_mg == 3200


def test_planned_duration_counts_refills_and_bounds(terminology):
    supply = _ibuprofen(dispenseRequest={"expectedSupplyDuration": {"value": 7, "code": "d"}, "numberOfRepeatsAllowed": 1})
    bounded = _ibuprofen(dosageInstruction=[{"timing": {"repeat": {"boundsPeriod": {"start": "2026-11-23", "end": "2026-12-08"}}}}])
    quantity = _ibuprofen(dispenseRequest={"quantity": {"value": 60}}, dosageInstruction=[{
        "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
        "doseAndRate": [{"doseQuantity": {"value": 1, "code": "{pill}"}}]}])
    days = [f.planned_days for f in _facts(terminology, [supply, bounded, quantity]).draft_medications]
    assert days == [14, 15, 30]


def test_refuted_entered_in_error_and_resolved_conditions_are_not_active(terminology):
    def condition(clinical, verification):
        res = {"resourceType": "Condition", "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "G35.A"}]}}
        if clinical:
            res["clinicalStatus"] = {"coding": [{"code": clinical}]}
        if verification:
            res["verificationStatus"] = {"coding": [{"code": verification}]}
        return res

    facts = _facts(terminology, conditions=[condition("active", "refuted"), condition("active", "entered-in-error"),
                                            condition("resolved", None), condition(None, "provisional"),
                                            condition("relapse", "confirmed")])
    assert [c.suspected for c in facts.conditions] == [True, False]


def test_age_is_taken_at_the_time_of_the_call(terminology):
    assert _facts(terminology, patient={"resourceType": "Patient", "birthDate": "1961-11-23"}).age_years == 65
    assert _facts(terminology, patient={"resourceType": "Patient", "birthDate": "1961-11-24"}).age_years == 64
    assert _facts(terminology, patient={"resourceType": "Patient", "birthDate": "garbage"}).age_years is None


def test_latest_observation_wins_and_entered_in_error_is_ignored(terminology):
    def obs(value, when, status="final"):
        return {"resourceType": "Observation", "status": status, "effectiveDateTime": when,
                "code": {"coding": [{"system": "http://loinc.org", "code": "38267-1"}]},
                "valueQuantity": {"value": value}}

    facts = _facts(terminology, observations=[obs(-1.5, "2025-01-01"), obs(-0.5, "2026-06-01"),
                                              obs(-3.0, "2026-09-01", "entered-in-error")])
    assert facts.latest_observations["38267-1"].value == -0.5
