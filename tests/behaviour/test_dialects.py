"""Charts as EHRs really write them (issue 20): code systems under OIDs, routes abbreviated, dose
units in SNOMED CT, names as prescribers write them. Facts-level checks of each dialect, and the
metamorphic test over every case file: each case re-written in a dialect gives the same cards."""
from __future__ import annotations

import copy
from collections import Counter
from typing import Any, Callable

import pytest
from case_cards import CASES
from casebuilder import build_request
from helpers import NOW, SERVICES

from cds_service.knowledge.evaluate import facts_for

OIDS = {
    "http://hl7.org/fhir/sid/icd-10-cm": "urn:oid:2.16.840.1.113883.6.90",
    "http://snomed.info/sct": "urn:oid:2.16.840.1.113883.6.96",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "urn:oid:2.16.840.1.113883.6.88",
    "http://loinc.org": "urn:oid:2.16.840.1.113883.6.1",
    "http://www.ama-assn.org/go/cpt": "urn:oid:2.16.840.1.113883.6.12",
    "http://unitsofmeasure.org": "urn:oid:2.16.840.1.113883.6.8",
}
V2_ROUTE = "http://terminology.hl7.org/CodeSystem/v2-0162"
SNOMED_TO_V2 = {"47625008": "IV", "78421000": "IM", "34206005": "SC", "26643006": "PO", "404820008": "EP",
                "72607000": "IT", "46713006": "NS", "37161004": "PR", "6064005": "TP", "45890007": "TD", "54485002": "OP"}
WORD_TO_ABBREVIATION = {"intravenous": "IV", "intramuscular": "IM", "subcutaneous": "SQ", "oral": "PO", "by mouth": "PO"}
UCUM_TO_SNOMED = {"mg": ("258684004", "milligram"), "g": ("258682000", "gram"), "mL": ("258773002", "milliliter"),
                  "{pill}": ("732936001", "Tablet"), "{tablet}": ("732936001", "Tablet")}
GENERIC_TO_BRAND = {"cyclobenzaprine": "Flexeril", "ketorolac": "Toradol", "acetaminophen": "Tylenol",
                    "atracurium": "Tracrium", "alendronate": "Fosamax"}


def _walk(value: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    if isinstance(value, dict):
        visit(value)
        for child in list(value.values()):
            _walk(child, visit)
    elif isinstance(value, list):
        for child in value:
            _walk(child, visit)


def under_oids(request: dict[str, Any]) -> None:
    """Every coding and quantity system written as its OID."""
    def visit(node: dict[str, Any]) -> None:
        if isinstance(node.get("system"), str) and node["system"] in OIDS:
            node["system"] = OIDS[node["system"]]
    _walk(request, visit)


def routes_abbreviated(request: dict[str, Any]) -> None:
    """Every route as an EHR abbreviates it: SNOMED CT route codes as HL7 v2 table 0162 codes, route
    words as IV, IM, SQ, PO."""
    def visit(node: dict[str, Any]) -> None:
        route = node.get("route")
        if not isinstance(route, dict):
            return
        for coding in route.get("coding", []):
            if coding.get("code") in SNOMED_TO_V2:
                coding.update(system=V2_ROUTE, code=SNOMED_TO_V2[coding["code"]], display=SNOMED_TO_V2[coding["code"]])
        text = route.get("text")
        if isinstance(text, str) and text.strip().lower() in WORD_TO_ABBREVIATION:
            route["text"] = WORD_TO_ABBREVIATION[text.strip().lower()]
        elif isinstance(text, str) and route.get("coding"):
            route["text"] = route["coding"][0]["display"]
    _walk(request, visit)


def units_in_snomed(request: dict[str, Any]) -> None:
    """Every dose unit coded in SNOMED CT, as UK and European EHRs send it."""
    def visit(node: dict[str, Any]) -> None:
        for key in ("doseQuantity", "numerator"):
            quantity = node.get(key)
            if isinstance(quantity, dict) and quantity.get("code") in UCUM_TO_SNOMED:
                code, unit = UCUM_TO_SNOMED[quantity["code"]]
                quantity.update(system="http://snomed.info/sct", code=code, unit=unit)
    _walk(request, visit)


def names_as_brands(request: dict[str, Any]) -> None:
    """Every order known only by its text written with the brand name of its ingredient."""
    def visit(node: dict[str, Any]) -> None:
        concept = node.get("medicationCodeableConcept")
        if not isinstance(concept, dict) or concept.get("coding") or not isinstance(concept.get("text"), str):
            return
        text = concept["text"]
        for generic, brand in GENERIC_TO_BRAND.items():
            if generic in text.lower():
                start = text.lower().index(generic)
                concept["text"] = text[:start] + brand + text[start + len(generic):]
    _walk(request, visit)


DIALECTS = {"oids": under_oids, "routes": routes_abbreviated, "snomed-units": units_in_snomed, "brands": names_as_brands}


def card_keys(body: dict[str, Any]) -> Counter[tuple[str, str]]:
    return Counter((c["source"]["topic"]["code"], c["indicator"]) for c in body["cards"])


def _rewritten_runs() -> list[Any]:
    """Each case written in each dialect, where the dialect changes the request: a rewrite that
    leaves the request as it was (a case with no text-only order has no brand to write, one
    without a coded route no abbreviation) sends test_cases' own request again and checks less
    than it does. Cases that seed stored feedback are test_cases' alone (the feedback lives in
    the app that served them)."""
    runs = []
    for case in CASES:
        if case.get("feedback"):
            continue
        request = build_request(case)
        for dialect in sorted(DIALECTS):
            rewritten = copy.deepcopy(request)
            DIALECTS[dialect](rewritten)
            if rewritten != request:
                runs.append(pytest.param(case, dialect, rewritten, id=f"{case['id']}-{dialect}"))
    return runs


REWRITTEN = _rewritten_runs()


def test_every_dialect_rewrites_cases_for_the_metamorphic_test():
    """A dialect whose rewrite changed no case would drop out of the test below unnoticed."""
    rewrites = Counter(run.values[1] for run in REWRITTEN)
    assert [dialect for dialect in DIALECTS if not rewrites[dialect]] == [], rewrites  # each dialect rewrote some case


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory):
    """One app for every rewritten case, as served() in case_cards does for the cases without
    stored feedback: a call leaves only issued cards behind, which change no later answer."""
    from cds_service import create_app

    app = create_app({"TESTING": True, "AUTH_REQUIRED": False, "CLOCK": lambda: NOW, "OPEN_FHIR_SERVERS": [],
                      "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('dialects') / 'shared.sqlite3'}",
                      "PATIENT_KEY_SECRET": "test-only-patient-key-secret"})
    return app.test_client()


@pytest.mark.parametrize("case, dialect, rewritten", REWRITTEN)
def test_a_case_rewritten_in_a_dialect_gives_the_same_cards(shared_client, case, dialect, rewritten):
    """Metamorphic: the same chart and orders, written as another EHR writes them."""
    want = Counter((e["rule"], e["indicator"]) for e in case["expect"])
    response = shared_client.post(f"/cds-services/{SERVICES[rewritten['hook']]}", json=rewritten)
    assert response.status_code == 200, response.get_json()
    assert card_keys(response.get_json()) == want, f"{case['id']} in dialect {dialect}"


# --- each dialect, on the facts the rules read ---------------------------------------------------

def _facts(app, case: dict[str, Any]):
    return facts_for(app.extensions["cds"].knowledge, build_request(case), NOW)


def _order(**medication: Any) -> dict[str, Any]:
    return {"hook": "order-sign", "patient": "mcas-adult", "drafts": [{"medication": medication}]}


def test_a_snomed_milligram_dose_is_read_as_milligrams_not_tablets(app):
    """cyclobenzaprine 5 mg TID with the unit coded 258684004 (milligram): 5 mg, 15 mg a day."""
    case = _order(rxcui="828320", text="cyclobenzaprine hydrochloride 5 MG Oral Tablet", dose=[5, "mg"], per_day=3)
    request = build_request(case)
    units_in_snomed(request)
    med = facts_for(app.extensions["cds"].knowledge, request, NOW).draft_medications[0]
    assert (med.single_dose_mg, med.daily_dose_mg) == (5.0, 15.0)
    ibuprofen = build_request(_order(rxcui="197807", text="ibuprofen 800 MG Oral Tablet", dose=[800, "mg"], per_day=3))
    units_in_snomed(ibuprofen)
    assert facts_for(app.extensions["cds"].knowledge, ibuprofen, NOW).draft_medications[0].daily_dose_mg == 2400.0


def test_an_unknown_coded_unit_is_unread_not_taken_for_tablets(app):
    request = build_request(_order(rxcui="828320", text="cyclobenzaprine hydrochloride 5 MG Oral Tablet", dose=[5, "mg"]))
    dose = request["context"]["draftOrders"]["entry"][0]["resource"]["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
    dose.update(system="http://snomed.info/sct", code="999999999", unit="mystery")
    med = facts_for(app.extensions["cds"].knowledge, request, NOW).draft_medications[0]
    assert med.single_dose_mg is None and med.dose_unread


def test_a_course_from_90_tablets_with_the_dose_in_mg_lasts_30_days(app):
    """10 mg tablets, 10 mg three times a day, 90 dispensed: 30 days, not 3."""
    request = build_request(_order(rxcui="828348", text="cyclobenzaprine hydrochloride 10 MG Oral Tablet", dose=[10, "mg"], per_day=3))
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    order["dispenseRequest"] = {"quantity": {"value": 90}}
    assert facts_for(app.extensions["cds"].knowledge, request, NOW).draft_medications[0].planned_days == 30.0
    units_in_snomed(request)
    assert facts_for(app.extensions["cds"].knowledge, request, NOW).draft_medications[0].planned_days == 30.0


def test_a_dose_given_only_in_the_sig_is_read(app):
    request = build_request(_order(rxcui="197807", text="ibuprofen 800 MG Oral Tablet"))
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    order["dosageInstruction"] = [{"text": "800 mg PO TID with food"}]
    med = facts_for(app.extensions["cds"].knowledge, request, NOW).draft_medications[0]
    assert (med.single_dose_mg, med.daily_dose_mg, med.route) == (800.0, 2400.0, "oral")
    order["dosageInstruction"] = [{"text": "as directed"}]
    med = facts_for(app.extensions["cds"].knowledge, request, NOW).draft_medications[0]
    assert med.single_dose_mg is None and med.dose_unread


@pytest.mark.parametrize("written, route", [("IV", "parenteral"), ("IVP", "parenteral"), ("IM", "parenteral"),
                                            ("SQ", "parenteral"), ("SC", "parenteral"), ("PO", "oral")])
def test_route_abbreviations_are_read(app, written, route):
    """An IV diphenhydramine written "IV" is parenteral, never "route unknown" (then swapped to a tablet)."""
    case = _order(text="diphenhydramine 50 mg", route=written)
    assert _facts(app, case).draft_medications[0].route == route


def test_a_sig_in_plain_words_does_not_change_the_route(app):
    """'take it with food': "it" is no intrathecal route; the tablet stays oral."""
    request = build_request(_order(rxcui="197807", text="ibuprofen 800 MG Oral Tablet"))
    request["context"]["draftOrders"]["entry"][0]["resource"]["dosageInstruction"] = [{"text": "800 mg, take it with food"}]
    assert facts_for(app.extensions["cds"].knowledge, request, NOW).draft_medications[0].route == "oral"


def test_a_v2_route_code_is_read_and_a_word_inside_another_is_not(app):
    request = build_request(_order(text="diphenhydramine 50 mg"))
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    order["dosageInstruction"] = [{"route": {"coding": [{"system": "urn:oid:2.16.840.1.113883.12.162", "code": "IV"}]}}]
    assert facts_for(app.extensions["cds"].knowledge, request, NOW).draft_medications[0].route == "parenteral"
    order["dosageInstruction"] = [{"route": {"text": "River"}}]
    assert facts_for(app.extensions["cds"].knowledge, request, NOW).draft_medications[0].route is None


@pytest.mark.parametrize("written, valueset", [
    ("Flexeril 10 mg", "cyclobenzaprine"), ("Toradol 10 mg", "nsaids-non-aspirin"), ("Sprix nasal spray", "nsaids-non-aspirin"),
    ("Tracrium 50 mg", "mcas-degranulating-neuromuscular-blockers"), ("Tylenol #3", "mcas-histamine-releasing-opioids"),
    ("APAP/COD 300/30", "mcas-histamine-releasing-opioids"), ("APAP/COD 300/30", "acetaminophen"),
    ("EpiPen 0.3 mg", "epinephrine-auto-injectors"), ("epinephrine auto-injector 0.3 mg", "epinephrine-auto-injectors"),
    ("Fosamax 70 mg weekly", "bisphosphonates")])
def test_names_as_prescribers_write_them(app, written, valueset):
    assert valueset in _facts(app, _order(text=written)).draft_medications[0].sets


@pytest.mark.parametrize("written, valueset", [
    ("no Toradol", "nsaids-non-aspirin"), ("Tylenol", "mcas-histamine-releasing-opioids"),
    ("Flexeril - discontinued", "cyclobenzaprine"), ("cisatracurium 10 mg", "mcas-degranulating-neuromuscular-blockers"),
    ("avoid morphine", "mcas-histamine-releasing-opioids"), ("PAPA 10", "acetaminophen")])
def test_names_negated_or_inside_other_words_do_not_match(app, written, valueset):
    assert valueset not in _facts(app, _order(text=written)).draft_medications[0].sets


def test_an_epipen_sent_by_ndc_only_is_an_auto_injector(app):
    request = build_request(_order(text="x"))
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    order["medicationCodeableConcept"] = {"coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": "49502050002"}]}
    assert "epinephrine-auto-injectors" in facts_for(app.extensions["cds"].knowledge, request, NOW).draft_medications[0].sets
    order["medicationCodeableConcept"] = {"coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": "00000-0000-00"}]}
    assert "epinephrine-auto-injectors" not in facts_for(app.extensions["cds"].knowledge, request, NOW).draft_medications[0].sets


def _conditions(app, *conditions: dict[str, Any]):
    case = {"hook": "patient-view", "patient": "mcas-adult", "replace_record": True, "record": {"conditions": list(conditions)}}
    return _facts(app, case).conditions


def test_remission_keeps_a_relapsing_chronic_disease_current_but_not_back_pain(app):
    ms = {"system": "icd10", "code": "G35", "display": "Multiple sclerosis", "clinical": "remission"}
    assert [c.text for c in _conditions(app, ms)] == ["Multiple sclerosis"]
    pain = {"system": "icd10", "code": "M54.50", "display": "Low back pain", "clinical": "remission"}
    assert _conditions(app, pain) == ()


def test_mcas_written_only_as_problem_list_text_is_seen(app):
    found = _conditions(app, {"text": "MCAS"})
    assert [c.codings[0][1] for c in found] == ["D89.40"]
    assert [c.codings for c in _conditions(app, {"text": "no MCAS"})] == [()]
    assert [c.codings for c in _conditions(app, {"text": "MCASE review"})] == [()]


def _encounter_diagnosis(onset: str | None) -> dict[str, Any]:
    return {"system": "icd10", "code": "M54.50", "display": "Low back pain", "clinical": None, "onset": onset}


@pytest.mark.parametrize("onset, current", [("2019-03-01", False), ("2026-11-01", True), ("2026-08-25", True),
                                            ("2026-08-24", False), (None, False)])
def test_an_encounter_diagnosis_without_status_counts_only_when_recent(app, onset, current):
    """90 days (dialects.yaml): a 2019 encounter diagnosis with no status is not active back pain."""
    case = {"hook": "patient-view", "patient": "mcas-adult", "replace_record": True,
            "record": {"conditions": [_encounter_diagnosis(onset)]}}
    request = build_request(case)
    condition = request["prefetch"]["conditions"]["entry"][0]["resource"]
    condition["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                          "code": "encounter-diagnosis"}]}]
    facts = facts_for(app.extensions["cds"].knowledge, request, NOW)
    assert bool(facts.conditions) is current
    del condition["category"]  # a problem-list entry with no status stays current, as before
    assert facts_for(app.extensions["cds"].knowledge, request, NOW).conditions


def test_a_chronic_encounter_diagnosis_counts_whatever_its_age(app):
    case = {"hook": "patient-view", "patient": "mcas-adult", "replace_record": True,
            "record": {"conditions": [{"system": "icd10", "code": "G35", "display": "MS", "clinical": None, "onset": "2019-01-01"}]}}
    request = build_request(case)
    request["prefetch"]["conditions"]["entry"][0]["resource"]["category"] = [{"coding": [{"code": "encounter-diagnosis"}]}]
    assert facts_for(app.extensions["cds"].knowledge, request, NOW).conditions


# --- a medicationReference held only on the FHIR server -------------------------------------------

FHIR = "https://ehr.example.org/fhir"


def _succinylcholine_by_server_reference() -> dict[str, Any]:
    case = {"hook": "order-select", "patient": "mcas-adult", "drafts": [{"medication": {"reference": "missing"}}]}
    request = build_request(case)
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    order["medicationReference"] = {"reference": "Medication/sux-1"}
    request["fhirServer"] = FHIR
    request["fhirAuthorization"] = {"access_token": "token-abc", "token_type": "Bearer", "expires_in": 300,
                                    "scope": "patient/*.read", "subject": "cds-back-pain"}
    return request


SUCCINYLCHOLINE = {"resourceType": "Medication", "id": "sux-1", "code": {"coding": [
    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1594589",
     "display": "succinylcholine chloride 20 MG/ML Injectable Solution"}]}}


def test_a_medication_held_only_on_the_fhir_server_is_read_from_it(hooks):
    import responses
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Medication/sux-1", json=SUCCINYLCHOLINE)
        body = hooks.call(_succinylcholine_by_server_reference()).get_json()
        assert [c["source"]["topic"]["code"] for c in body["cards"]] == ["mcas.neuromuscular-blocker"]
        assert rsps.calls[0].request.headers["Authorization"] == "Bearer token-abc"


def test_a_server_medication_that_cannot_be_read_says_the_order_was_not_checked(hooks):
    import responses
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Medication/sux-1", status=500)
        body = hooks.call(_succinylcholine_by_server_reference()).get_json()
    assert [(c["source"]["topic"]["code"], c["indicator"]) for c in body["cards"]] == [("mcas.drug-not-identified", "warning")]


def test_an_absolute_medication_reference_is_never_fetched(hooks):
    import responses
    request = _succinylcholine_by_server_reference()
    request["context"]["draftOrders"]["entry"][0]["resource"]["medicationReference"] = {
        "reference": "https://elsewhere.example.org/fhir/Medication/sux-1"}
    with responses.RequestsMock() as rsps:  # fails on any call
        body = hooks.call(request).get_json()
        assert len(rsps.calls) == 0
    assert [c["source"]["topic"]["code"] for c in body["cards"]] == ["mcas.drug-not-identified"]


# --- knowledge check ---------------------------------------------------------------------------------

def test_knowledge_check_refuses_an_alias_without_a_source_or_a_target(tmp_path):
    import shutil

    import yaml
    from helpers import ROOT

    from cds_service.errors import KnowledgeError
    from cds_service.knowledge.loader import load_knowledge

    shutil.copytree(ROOT / "knowledge", tmp_path / "knowledge")
    path = tmp_path / "knowledge" / "dialects.yaml"
    data = yaml.safe_load(path.read_text())
    data["medication_names"].append({"written": "Madeupium", "means": ["madeupine"], "source": "NOWHERE", "evidence": "x"})
    data["ndc"].append({"ndc": "12345-678-90", "rxcui": "999999999", "source": "DAILYMED", "evidence": "x"})
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(KnowledgeError) as raised:
        load_knowledge(tmp_path / "knowledge")
    problems = str(raised.value)
    assert "source 'NOWHERE' is not in terminology-sources.yaml" in problems
    assert "'madeupine' is no ingredient name a value set matches" in problems
    assert "rxcui 999999999 is not in rxnorm-products.json" in problems
