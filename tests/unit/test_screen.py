"""cds_service.core.screen: a one-click order is checked as a pharmacist would verify it: withheld for
an allergy to its ingredient or a cross-reacting group, duplicate therapy, a state it must not be
given in, low kidney function; kept when the record shows nothing against it. Missing data the
check needs is a reason too, never read as normal."""
from __future__ import annotations

from datetime import timedelta

import pytest
from coreknowledge import NOW, facts_of, knowledge
from hypothesis import given, settings
from hypothesis import strategies as st

from cds_service.core.screen import _floor, latest_result, screen

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ACETAMINOPHEN = "198440"  # Acetaminophen 500 MG Oral Tablet (ingredient 161)
ZOLEDRONIC = "705824"  # zoledronic acid 5 mg infusion: eGFR at least 35, not in pregnancy or lactation
ROCURONIUM = "1234995"
CETIRIZINE = "1014678"  # eGFR threshold, but a missing result does not block it
EVERYTHING = {"patient": {"resourceType": "Patient", "id": "p", "birthDate": "1980-01-01", "gender": "female"},
              "conditions": [], "allergies": [], "medications": [], "medicationStatements": [],
              "medicationDispenses": [], "observations": []}


def _screen(rxcui, replaced=frozenset(), **data):
    k = knowledge()
    facts = facts_of("order-sign", **{**EVERYTHING, **data})
    return screen(rxcui, facts, k.terminology, k.screen, replaced)


def _allergy(text, code=None):
    concept = {"text": text, **({"coding": [{"system": RXNORM, "code": code}]} if code else {})}
    return {"resourceType": "AllergyIntolerance", "id": "a", "patient": {"reference": "Patient/p"},
            "clinicalStatus": {"coding": [{"code": "active"}]}, "code": concept}


def _egfr(value, days_ago=10, unit="mL/min/{1.73_m2}"):
    when = (NOW - timedelta(days=days_ago)).date().isoformat()
    return {"resourceType": "Observation", "id": f"egfr{value}{days_ago}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "48642-3"}]},
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            "effectiveDateTime": when}


def _active(text, code):
    return {"resourceType": "MedicationRequest", "id": "m", "status": "active", "intent": "order",
            "subject": {"reference": "Patient/p"},
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}], "text": text}}


def test_an_unremarkable_record_keeps_the_suggestion():
    assert _screen(ACETAMINOPHEN) is None
    assert _screen(ZOLEDRONIC, observations=[_egfr(80)]) is None


@pytest.mark.parametrize("allergy", [_allergy("acetaminophen", "161"), _allergy("Tylenol"), _allergy("paracetamol")])
def test_an_allergy_to_the_ingredient_by_code_brand_or_name_withholds_it(allergy):
    reason = _screen(ACETAMINOPHEN, allergies=[allergy])
    assert reason is not None and reason.startswith("Acetaminophen not offered: allergy to")


def test_an_unrelated_allergy_keeps_it():
    assert _screen(ACETAMINOPHEN, allergies=[_allergy("penicillin", "7980")]) is None
    assert _screen(ACETAMINOPHEN, allergies=[_allergy("latex")]) is None


def test_an_allergy_to_a_cross_reacting_drug_withholds_it():
    reason = _screen(ROCURONIUM, allergies=[_allergy("succinylcholine")])
    assert reason is not None and "cross-react" in reason


def test_a_list_the_check_needs_that_could_not_be_read_withholds_it():
    data = {k: v for k, v in EVERYTHING.items() if k != "allergies"}
    k = knowledge()
    reason = screen(ACETAMINOPHEN, facts_of("order-sign", **data), k.terminology, k.screen)
    assert reason is not None and "allergy list could not be read" in reason


def test_the_same_drug_already_active_is_duplicate_therapy():
    reason = _screen(ACETAMINOPHEN, medications=[_active("acetaminophen 650 MG Oral Tablet", "198444")])
    assert reason is not None and "already active" in reason


def test_a_draft_the_swap_replaces_is_not_a_duplicate():
    draft = {**_active("Tylenol 500 mg", "198440"), "id": "d1", "status": "draft"}
    k = knowledge()
    facts = facts_of("order-sign", drafts=(draft,), **EVERYTHING)
    assert "already drafted" in (screen(ACETAMINOPHEN, facts, k.terminology, k.screen) or "")
    assert screen(ACETAMINOPHEN, facts, k.terminology, k.screen, frozenset({"MedicationRequest/d1"})) is None


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=5, max_value=120))
def test_kidney_threshold_withholds_below_and_keeps_at_or_above(value):
    reason = _screen(ZOLEDRONIC, observations=[_egfr(value)])
    assert (reason is None) == (value >= 35)
    if reason:
        assert f"eGFR {value}" in reason


def test_an_old_or_missing_egfr_withholds_a_product_that_requires_one_only():
    assert "no eGFR in the last 90 days" in (_screen(ZOLEDRONIC, observations=[_egfr(80, days_ago=120)]) or "")
    assert "no eGFR" in (_screen(ZOLEDRONIC) or "")
    assert _screen(CETIRIZINE) is None  # a dose change, not a contraindication: no result does not block
    assert _screen(CETIRIZINE, observations=[_egfr(20)]) is not None


def _weight(value, unit):
    return {"resourceType": "Observation", "id": f"w{unit}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "valueQuantity": {"value": value, "unit": unit}, "effectiveDateTime": "2026-11-20"}


@pytest.mark.parametrize("unit, read", [("kg", True), ("kilograms", True), ("lbs", False), ("[lb_av]", False)])
def test_a_weight_in_another_unit_is_not_read_as_kg(unit, read):
    k = knowledge()
    facts = facts_of("order-sign", **{**EVERYTHING, "observations": [_weight(30, unit)]})
    assert (latest_result(facts, k.terminology, k.screen.body_weight, 90, unit="kg") is not None) == read


def test_pregnancy_on_the_problem_list_withholds_a_product_to_avoid_in_it():
    pregnancy = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p"},
                 "clinicalStatus": {"coding": [{"code": "active"}]},
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "77386006"}]}}
    reason = _screen(ZOLEDRONIC, conditions=[pregnancy], observations=[_egfr(80)])
    assert reason is not None and "pregnancy recorded" in reason
    assert _screen(ACETAMINOPHEN, conditions=[pregnancy]) is None


SNOMED = "http://snomed.info/sct"
PREGNANT, NOT_PREGNANT = (SNOMED, "77386006"), (SNOMED, "60001007")


def _status(answer, days_ago=30, status="final", n=0, **extra):
    """A pregnancy-status observation (LOINC 82810-3) as Synthea and US Core write it; ``answer``
    (system, code), or a whole value element in ``extra``, or none at all."""
    res = {"resourceType": "Observation", "id": f"status{n}{days_ago}", "status": status,
           "code": {"coding": [{"system": "http://loinc.org", "code": "82810-3", "display": "Pregnancy status"}]},
           "subject": {"reference": "Patient/p"}, **extra}
    if days_ago is not None:
        res["effectiveDateTime"] = (NOW - timedelta(days=days_ago)).date().isoformat()
    if answer is not None:
        res["valueCodeableConcept"] = {"coding": [{"system": answer[0], "code": answer[1]}]}
    return res


def _zoledronic_with(*statuses, **data):
    return _screen(ZOLEDRONIC, observations=[_egfr(80), *statuses], **data)


@pytest.mark.parametrize("answer", [PREGNANT, ("http://loinc.org", "LA15173-0"),
                                    ("urn:oid:2.16.840.1.113883.6.96", "77386006")])
def test_a_pregnancy_status_of_pregnant_withholds_a_product_to_avoid_in_pregnancy(answer):
    reason = _zoledronic_with(_status(answer))
    assert reason is not None and "pregnancy status 'pregnant' recorded on" in reason
    assert _screen(ACETAMINOPHEN, observations=[_status(answer)]) is None  # nothing to avoid


@pytest.mark.parametrize("answer", [NOT_PREGNANT, ("http://loinc.org", "LA26683-5"), (SNOMED, "261665006"),
                                    (SNOMED, "146799005"), None])
def test_a_pregnancy_status_other_than_pregnant_alone_withholds_nothing(answer):
    assert _zoledronic_with(_status(answer)) is None


def test_the_window_and_the_latest_answer_decide():
    assert _zoledronic_with(_status(PREGNANT, days_ago=281)) is None  # older than 280 days
    assert _zoledronic_with(_status(PREGNANT, days_ago=279)) is not None
    assert _zoledronic_with(_status(PREGNANT, days_ago=100), _status(NOT_PREGNANT, days_ago=10)) is None
    assert _zoledronic_with(_status(NOT_PREGNANT, days_ago=100), _status(PREGNANT, days_ago=10)) is not None
    # the same day: 'pregnant' is not cleared
    assert _zoledronic_with(_status(NOT_PREGNANT, days_ago=10, n=1), _status(PREGNANT, days_ago=10, n=2)) is not None


@pytest.mark.parametrize("unanswered", [
    _status(None, days_ago=5), _status((SNOMED, "261665006"), days_ago=5),  # no value; Unknown
    _status(None, days_ago=5, valueCodeableConcept={"text": "Pregnant?"}),  # words only
    _status(None, days_ago=5, valueString="not pregnant"),
    _status(None, days_ago=5, valueCodeableConcept="77386006"),  # malformed
    _status(None, days_ago=5, valueCodeableConcept={"coding": [None, {"code": 60001007}]}),
    _status(NOT_PREGNANT, days_ago=None),  # no date
    _status(NOT_PREGNANT, days_ago=5, status="entered-in-error"),
])
def test_a_status_that_does_not_answer_neither_crashes_nor_clears_an_earlier_pregnant_one(unanswered):
    assert _zoledronic_with(_status(PREGNANT, days_ago=60), unanswered) is not None
    assert _zoledronic_with(unanswered) is None


@pytest.mark.parametrize("not_yet", [
    _status(NOT_PREGNANT, days_ago=5, status="preliminary"),
    _status(NOT_PREGNANT, days_ago=5, status="registered"),
    _status(NOT_PREGNANT, days_ago=5, status="unknown"),
    _status(NOT_PREGNANT, days_ago=-3),  # dated after the call's day
    _status(NOT_PREGNANT, days_ago=None, effectiveDateTime=(NOW + timedelta(hours=2)).isoformat()),  # later today
    _status(NOT_PREGNANT, days_ago=None, effectivePeriod={"start": (NOW + timedelta(days=1)).isoformat()}),
])
def test_a_not_pregnant_status_not_yet_final_or_dated_in_the_future_does_not_clear_an_earlier_pregnant_one(not_yet):
    assert _zoledronic_with(_status(PREGNANT, days_ago=60), not_yet) is not None


@pytest.mark.parametrize("settled", [
    _status(NOT_PREGNANT, days_ago=5, status="amended"),
    _status(NOT_PREGNANT, days_ago=5, status="corrected"),
    _status(NOT_PREGNANT, days_ago=None, effectiveDateTime=(NOW - timedelta(hours=2)).isoformat()),  # earlier today
    _status(NOT_PREGNANT, days_ago=None, effectiveDateTime=NOW.date().isoformat() + "T23:00:00"),  # no zone: its day
])
def test_a_final_not_pregnant_status_up_to_now_still_clears_an_earlier_pregnant_one(settled):
    assert _zoledronic_with(_status(PREGNANT, days_ago=60), settled) is None


def test_a_preliminary_pregnant_status_still_withholds():
    assert _zoledronic_with(_status(PREGNANT, days_ago=5, status="preliminary")) is not None


def _encounter_diagnosis(system, code, days_ago):
    return {"resourceType": "Condition", "id": f"dx{code}{days_ago}", "subject": {"reference": "Patient/p"},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                      "code": "encounter-diagnosis"}]}],
            "code": {"coding": [{"system": system, "code": code}]},
            "onsetDateTime": (NOW - timedelta(days=days_ago)).date().isoformat()}


ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


@pytest.mark.parametrize("system, code", [(SNOMED, "72892002"), (ICD10CM, "Z34.02")])
def test_a_pregnancy_coded_at_a_visit_counts_for_280_days_not_90(system, code):
    for days_ago in (120, 279):  # past the dialect's 90 days of an encounter diagnosis
        reason = _zoledronic_with(conditions=[_encounter_diagnosis(system, code, days_ago)])
        assert reason is not None and reason.endswith("pregnancy recorded")
    assert _zoledronic_with(conditions=[_encounter_diagnosis(system, code, 281)]) is None


def test_other_encounter_diagnoses_keep_the_90_days():
    back_pain = _encounter_diagnosis(ICD10CM, "M54.50", 120)
    facts = facts_of("order-sign", conditions=[back_pain])
    assert facts.conditions == ()
    assert len(facts_of("order-sign", conditions=[_encounter_diagnosis(ICD10CM, "M54.50", 80)]).conditions) == 1


def test_a_later_not_pregnant_status_clears_neither_a_recorded_pregnancy_nor_a_positive_test():
    pregnancy = {"resourceType": "Condition", "id": "c", "subject": {"reference": "Patient/p"},
                 "clinicalStatus": {"coding": [{"code": "active"}]},
                 "code": {"coding": [{"system": SNOMED, "code": "72892002"}]}}
    reason = _zoledronic_with(_status(NOT_PREGNANT, days_ago=2), conditions=[pregnancy])
    assert reason is not None and reason.endswith("pregnancy recorded")
    test = {"resourceType": "Observation", "id": "hcg", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2106-3"}]},
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "10828004"}]},
            "effectiveDateTime": (NOW - timedelta(days=20)).date().isoformat()}
    reason = _zoledronic_with(test, _status(NOT_PREGNANT, days_ago=2))
    assert reason is not None and "positive pregnancy test" in reason


def test_every_status_of_the_record_is_read_not_only_the_latest_day():
    k = knowledge()
    older, newer = _status(PREGNANT, days_ago=60), _status(None, days_ago=5)
    facts = facts_of("order-sign", **{**EVERYTHING, "observations": [_egfr(80), older, newer]})
    codes = k.terminology.valuesets[k.screen.pregnancy_status.valueset].exact_codes
    read = facts.observations_of(codes)
    assert [(o.code, o.coded_value) for o in read] == [("82810-3", ("77386006",)), ("82810-3", ())]
    assert facts.observations_of(codes) is read  # once per call
    missing = {key: value for key, value in EVERYTHING.items() if key != "observations"}
    facts = facts_of("order-sign", **missing)  # observations not fetched: the status cannot be read
    assert screen(ZOLEDRONIC, facts, k.terminology, k.screen) is not None  # withheld for the eGFR, not a crash


def test_latest_result_is_the_most_recent_within_the_window():
    k = knowledge()
    facts = facts_of("order-sign", **{**EVERYTHING, "observations": [_egfr(50, 5), _egfr(20, 40)]})
    latest = latest_result(facts, k.terminology, "kidney-function", 90)
    assert latest is not None and latest.value == 50
    assert latest_result(facts, k.terminology, "kidney-function", 3) is None  # older counts as none


@pytest.mark.parametrize("comparator, value, withheld", [
    ("<", 60, "does not say whether it is below 35; check kidney function first"),  # could be 20
    ("<", 30, "below 35"),
    ("<=", 35, "does not say whether"),
    (">", 60, None),  # how labs report a normal eGFR
    (">", 30, "does not say whether"),
])
def test_an_egfr_reported_as_a_bound_is_read_with_its_comparator(comparator, value, withheld):
    """'<60' was read as 60, above zoledronic acid's limit of 35: offered with an eGFR that may be 20."""
    result = _egfr(value)
    result["valueQuantity"]["comparator"] = comparator
    reason = _screen(ZOLEDRONIC, observations=[result])
    assert (reason is None) if withheld is None else (withheld in (reason or ""))


def test_a_result_floor_withholds_when_the_results_could_not_be_read_at_all():
    """No results list at all is not 'no low calcium': the floor says to check, as the other checks do."""
    k = knowledge()
    data = {key: v for key, v in EVERYTHING.items() if key != "observations"}
    facts = facts_of("order-sign", **data)
    product, entry = k.terminology.products[ZOLEDRONIC], k.screen.products[ZOLEDRONIC]
    assert entry.floors
    reason = _floor(product, entry, facts, k.terminology, k.screen, frozenset())
    assert reason is not None and "could not be read; check it first" in reason
