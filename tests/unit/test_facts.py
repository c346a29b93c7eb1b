"""Facts computed once per call: statuses, ages, doses, durations, latest observations."""
from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

from cds_service.core.facts import build_facts
from cds_service.core.terminology import ICD10CM, normalize_icd10

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def terminology():
    from cds_service.knowledge.loader import load_knowledge
    from cds_service.settings import knowledge_dir

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


RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _morphine_medication(mid="m1"):
    return {"resourceType": "Medication", "id": mid,
            "code": {"coding": [{"system": RXNORM, "code": "892582"}], "text": "morphine sulfate 15 MG Oral Tablet"}}


def test_medication_reference_resolves_contained_bundle_full_url_and_prefetch(terminology):
    contained = {"resourceType": "MedicationRequest", "id": "a", "status": "draft",
                 "contained": [_morphine_medication()], "medicationReference": {"reference": "#m1"}}
    by_url = {"resourceType": "MedicationRequest", "id": "b", "status": "draft",
              "medicationReference": {"reference": "http://ehr.example/fhir/Medication/m2"}}
    dangling = {"resourceType": "MedicationRequest", "id": "c", "status": "draft",
                "medicationReference": {"reference": "Medication/nowhere"}}
    context = {"patientId": "p", "draftOrders": {"resourceType": "Bundle", "entry": [
        {"resource": contained}, {"resource": by_url}, {"resource": dangling},
        {"fullUrl": "urn:uuid:0d1c", "resource": _morphine_medication("m2")}]}}
    active = {"resourceType": "MedicationRequest", "id": "d", "status": "active",
              "medicationReference": {"reference": "Medication/m3"}}
    data = {"medications": {"resourceType": "Bundle", "entry": [
        {"resource": active}, {"resource": _morphine_medication("m3"), "search": {"mode": "include"}}]}}
    facts = build_facts("order-sign", context, data, terminology, NOW)
    assert [m.codings[0][1] if m.codings else None for m in facts.draft_medications] == ["892582", "892582", None]
    assert facts.active_medications[0].text == "morphine sulfate 15 MG Oral Tablet"


def test_a_brand_is_read_only_without_a_known_code_and_as_whole_words(terminology):
    brand_only = {"resourceType": "MedicationRequest", "id": "a", "status": "draft",
                  "medicationCodeableConcept": {"text": "Solu-Medrol 125 mg IV, not MS Continuous"}}
    coded = {"resourceType": "MedicationRequest", "id": "b", "status": "draft",
             "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "892582"}], "text": "MS Contin 15 mg"}}
    first, second = _facts(terminology, [brand_only, coded]).draft_medications
    assert [b.name for b in first.brands] == ["Solu-Medrol"]  # not "Medrol", not "MS Contin" inside "Continuous"
    assert second.brands == ()  # a coded product wins over a brand word


def test_the_orders_own_route_wins_over_the_product_table(terminology):
    def steroid(route):
        return {"resourceType": "MedicationRequest", "id": route or "none", "status": "draft",
                "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1743704"}]},
                "dosageInstruction": [{"route": {"coding": [{"system": "http://snomed.info/sct", "code": route}]}}]
                if route else []}
    routes = [m.route for m in _facts(terminology, [steroid("404820008"), steroid("72607000"), steroid(None)]).draft_medications]
    assert routes == ["neuraxial", "neuraxial", "parenteral"]


def test_every_observation_of_the_latest_day_is_kept(terminology):
    def tscore(code, when, value):
        return {"resourceType": "Observation", "status": "final", "effectiveDateTime": when,
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "valueQuantity": {"value": value}}
    facts = _facts(terminology, observations=[tscore("38264-8", "2026-06-01", -1.1), tscore("38264-8", "2026-06-01", -2.6),
                                              tscore("38264-8", "2023-01-01", -3.0)], hook="patient-view")
    assert [o.value for o in facts.latest_day_observations["38264-8"]] == [-1.1, -2.6]
    assert facts.latest_observations["38264-8"].value == -1.1


@pytest.mark.parametrize("resource, counts", [
    ({"resourceType": "MedicationDispense", "status": "completed", "whenHandedOver": "2026-08-15"}, True),
    ({"resourceType": "MedicationDispense", "status": "completed", "whenHandedOver": "2025-08-15"}, False),
    ({"resourceType": "MedicationDispense", "status": "in-progress", "whenHandedOver": "2026-08-15"}, False),
    ({"resourceType": "MedicationRequest", "status": "completed"}, False),  # undated: no window holds it
    ({"resourceType": "MedicationRequest", "status": "completed", "authoredOn": "2026-01-10"}, True),
    ({"resourceType": "MedicationStatement", "status": "intended"}, True),
    ({"resourceType": "MedicationStatement", "status": "completed", "effectiveDateTime": "2024-02-01"}, False),
])
def test_recent_days_counts_dispenses_prescriptions_and_statements_in_the_window(terminology, resource, counts):
    from cds_service.core.conditions import CompileContext, compile_condition

    resource = {**resource, "medicationCodeableConcept": {
        "coding": [{"system": RXNORM, "code": "1870230"}], "text": "epinephrine 0.3 MG Auto-Injector"}}
    key = {"MedicationDispense": "medicationDispenses", "MedicationStatement": "medicationStatements"}.get(
        resource["resourceType"], "medications")
    data = {"medications": {"resourceType": "Bundle", "entry": []}, key: {"resourceType": "Bundle", "entry": [{"resource": resource}]}}
    facts = build_facts("patient-view", {"patientId": "p"}, data, terminology, NOW)
    present = compile_condition({"active_medication": {"valueset": "epinephrine-auto-injectors", "recent_days": 365}},
                                CompileContext(terminology, {}))
    assert (present(facts, None) is not None) is counts


def _probe_codes(terminology):
    """Every code of the knowledge, each also cut short and lengthened (is-a prefixes, children),
    in every system the knowledge uses, and a few codes in no set."""
    systems = {s for vs in terminology.valuesets.values() for s, _ in vs.codes()}
    codes = {c for vs in terminology.valuesets.values() for _, c in vs.codes()} | {"", "X", "99999999"}
    grown = {v for c in codes for v in (c[:-1], c + "1", c + ".9", c.replace(".", ""))}
    return [(s, c) for s in systems for c in sorted(codes | grown)]


def test_value_set_look_ups_answer_as_each_value_set_defines(terminology):
    """The flat look-up index the engine reads gives, for every coding, exactly the sets whose
    definition (codes, is-a prefixes, exclusions) holds it."""
    for system, code in _probe_codes(terminology):
        expected = {vid for vid, vs in terminology.valuesets.items() if vs.contains(system, code)}
        assert terminology.valuesets_of(system, code) == expected, (system, code)
        norm = normalize_icd10(code) if system == ICD10CM else code.strip()
        named = any((system, norm) in vs.exact or any(norm.startswith(p) for p in vs.is_a.get(system, ()))
                    for vs in terminology.valuesets.values())
        assert terminology.knows_code([(system, code, "")]) == named, (system, code)


def test_an_uncoded_order_is_matched_by_every_ingredient_name_it_holds(terminology):
    """Name matching done once per order finds, for every value set, the name a search of each of
    the set's names in turn finds (whole words, any case), and no other."""
    names = sorted({n for vs in terminology.valuesets.values() for n, _ in vs.names})
    texts = [f"{n.upper()} 10 MG tab" for n in names] + [f"{n}x tablet" for n in names[:40]] + [
        "Morphine / hydromorphone", "co-codamol", "pre-ibuprofen gel", "IBUPROFEN-famotidine", "nothing here",
        "Ibuprofène 400", "İbuprofen"]
    for text in texts:
        sets = terminology.medication_sets((), text)
        for vid, vs in terminology.valuesets.items():
            first = next((n for n, pattern in vs.names if pattern.search(text)), None)
            assert (sets[vid].display if vid in sets else None) == first, (text, vid)


@pytest.mark.parametrize("text, route", [("morphine 1 MG/ML epidural injection", "neuraxial"),
                                         ("Intrathecal injection of baclofen", "neuraxial"),
                                         ("morphine 4 MG/ML injection", "parenteral")])
def test_an_epidural_or_intrathecal_injection_in_words_is_neuraxial_not_systemic(terminology, text, route):
    """The most specific route word wins: an epidural injection never gets the swap to an IV drug
    that a parenteral order gets."""
    order = {"resourceType": "MedicationRequest", "id": "d", "status": "draft",
             "medicationCodeableConcept": {"text": text}}
    (fact,) = _facts(terminology, drafts=[order]).draft_medications
    assert fact.route == route
