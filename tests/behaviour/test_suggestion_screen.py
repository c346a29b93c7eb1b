"""Metamorphic tests of the suggestion screen (issue 19), over every case file.

For every case and every medication its cards would create, the chart is changed in a way that
must withdraw that one-click order: an allergy to its ingredient, an active order of the same
product, and (for a product with a kidney threshold) a low eGFR today. After each change no
suggestion of any card creates the product, the finding that offered it is still on a card, and
that card says in one line why the product is not offered. A change that must not matter (an
allergy to an unrelated drug) leaves the offer in place.
"""
from __future__ import annotations

import copy
from typing import Any, Iterator

import pytest
from case_cards import Served, served
from helpers import SERVICES

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UNRELATED_ALLERGEN = ("25480", "gabapentin")  # an RxNorm ingredient (product table) no suggestion creates
EGFR = "98979-8"  # eGFR CKD-EPI 2021 (knowledge/valuesets/kidney-function.json)
CALCIUM = "17861-6"  # total calcium, mass per volume (knowledge/valuesets/serum-calcium-total.json)


def _created(cards: list[dict[str, Any]]) -> Iterator[tuple[tuple[str, ...], str]]:
    """(rule ids of the card, RxNorm product) for every medication a suggestion creates."""
    for card in cards:
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                resource = action.get("resource") or {}
                if resource.get("resourceType") == "MedicationRequest":
                    yield _card_rules(card), resource["medicationCodeableConcept"]["coding"][0]["code"]


def _card_rules(card: dict[str, Any]) -> tuple[str, ...]:
    merged = [ids for ids in card.get("extension", {}).values() if isinstance(ids, list)]
    return tuple(merged[0]) if merged else (card["source"]["topic"]["code"],)


def _rules(cards: list[dict[str, Any]]) -> set[str]:
    return {rule for card in cards for rule in _card_rules(card)}


def _add(request: dict[str, Any], key: str, resource: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(request)
    bundle = changed["prefetch"].setdefault(key, {"resourceType": "Bundle", "type": "searchset", "entry": []})
    bundle.setdefault("entry", []).append({"resource": resource})
    return changed


def allergy_to(request: dict[str, Any], code: str, text: str) -> dict[str, Any]:
    pid = request["context"]["patientId"]
    return _add(request, "allergies", {
        "resourceType": "AllergyIntolerance", "id": "screen-allergy", "patient": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": RXNORM, "code": code, "display": text}], "text": text}})


def active_order_of(request: dict[str, Any], rxcui: str, name: str) -> dict[str, Any]:
    pid = request["context"]["patientId"]
    return _add(request, "medications", {
        "resourceType": "MedicationRequest", "id": "screen-active", "status": "active", "intent": "order",
        "subject": {"reference": f"Patient/{pid}"}, "authoredOn": "2026-11-01",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxcui, "display": name}], "text": name}})


def low_egfr(request: dict[str, Any], value: float) -> dict[str, Any]:
    pid = request["context"]["patientId"]
    return _add(request, "observations", {
        "resourceType": "Observation", "id": "screen-egfr", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": EGFR}], "text": "eGFR"},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2026-11-22",
        "valueQuantity": {"value": value, "unit": "mL/min/{1.73_m2}", "system": "http://unitsofmeasure.org",
                          "code": "mL/min/{1.73_m2}"}})


def _call(client: Any, request: dict[str, Any]) -> list[dict[str, Any]]:
    response = client.post(f"/cds-services/{SERVICES[request['hook']]}", json=request)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["cards"]


def _offers(served_cases: list[Served]) -> list[tuple[Served, tuple[str, ...], str]]:
    """Every (case, rule ids of the card, product) offered; not the cases whose stored overrides
    (``feedback``) live only in the app that served them."""
    return [(item, rules, rxcui) for item in served_cases if not item.case.get("feedback")
            for rules, rxcui in dict.fromkeys(_created(item.cards))]


def _withdrawn(cards: list[dict[str, Any]], rules: tuple[str, ...], rxcui: str, label: str,
               rule_reads_it: bool = False) -> list[str]:
    """What is wrong if the product is still offered, the finding lost, or the card silent about
    why. ``rule_reads_it``: the rule itself asks whether the patient is on this drug's class (an
    active order may complete the therapy it asks for, and then the rule rightly changes its
    card): only the offer must go."""
    problems = []
    if any(code == rxcui for _, code in _created(cards)):
        problems.append(f"{label} still offered")
    if rule_reads_it:
        return problems
    if not set(rules) <= _rules(cards):
        problems.append(f"finding {set(rules) - _rules(cards)} dropped")
    elif not any(f"{label} not offered" in card.get("detail", "") for card in cards):
        problems.append(f"no card says why {label} is not offered")
    return problems


def _rule_reads(knowledge: Any, rule_ids: tuple[str, ...], rxcui: str) -> bool:
    """Whether a rule of the card reads a value set the product is in."""
    terminology = knowledge.terminology
    product = terminology.products[rxcui]
    sets = set(terminology.medication_sets(((RXNORM, rxcui, product.name),), product.name))
    return any(sets & r.valuesets for m in knowledge.modules.values() for r in m.rules if r.id in rule_ids)


@pytest.fixture
def screen_data(app):
    return app.extensions["cds"].knowledge.screen


def test_every_case_offers_medications_to_screen():
    assert len(_offers(served())) >= 20  # the metamorphic tests below have something to bite on


@pytest.mark.parametrize("change", ["allergy", "active order"])
def test_an_allergy_or_an_active_order_withdraws_every_one_click_medication(app, screen_data, change):
    client, knowledge = app.test_client(), app.extensions["cds"].knowledge
    found = []
    for item, rule, rxcui in _offers(served()):
        product, label = knowledge.terminology.products[rxcui], screen_data.products[rxcui].label
        ingredient = product.ingredients[0]
        changed = (allergy_to(item.request, ingredient.rxcui, ingredient.name) if change == "allergy"
                   else active_order_of(item.request, rxcui, product.name))
        reads = change == "active order" and _rule_reads(knowledge, rule, rxcui)
        found += [f"{item.case['id']}: {p}" for p in _withdrawn(_call(client, changed), rule, rxcui, label, reads)]
    assert found == [], found[:12]


def test_a_low_egfr_withdraws_every_product_with_a_kidney_threshold(app, screen_data):
    client, found, tried = app.test_client(), [], 0
    for item, rule, rxcui in _offers(served()):
        entry = screen_data.products[rxcui]
        if entry.egfr_at_least is None:
            continue
        tried += 1
        cards = _call(client, low_egfr(item.request, entry.egfr_at_least - 1))
        found += [f"{item.case['id']}: {p}" for p in _withdrawn(cards, rule, rxcui, entry.label)]
    assert tried > 0 and found == [], found[:12]


def low_calcium(request: dict[str, Any]) -> dict[str, Any]:
    pid = request["context"]["patientId"]
    return _add(request, "observations", {
        "resourceType": "Observation", "id": "screen-calcium", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": CALCIUM}], "text": "Calcium"},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": "2026-11-22",
        "valueQuantity": {"value": 7.6, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}})


def test_a_low_calcium_withdraws_every_product_with_a_calcium_floor(app, screen_data):
    client, found, tried = app.test_client(), [], 0
    for item, rule, rxcui in _offers(served()):
        entry = screen_data.products[rxcui]
        if "calcium" not in entry.floors:
            continue
        tried += 1
        found += [f"{item.case['id']}: {p}" for p in _withdrawn(_call(client, low_calcium(item.request)), rule, rxcui, entry.label)]
    assert tried > 0 and found == [], found[:12]


def test_an_unrelated_allergy_changes_no_offer(app):
    client = app.test_client()
    for item in served():
        before = sorted(code for _, code in _created(item.cards))
        if not before or item.case.get("feedback"):  # stored overrides live in served()'s own app
            continue
        after = sorted(code for _, code in _created(_call(client, allergy_to(item.request, *UNRELATED_ALLERGEN))))
        assert after == before, item.case["id"]


def _screen_copy(tmp_path, change):
    import shutil

    import yaml
    from helpers import ROOT

    target = tmp_path / "knowledge"
    shutil.copytree(ROOT / "knowledge", target)
    path = target / "suggestion-screen.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def test_a_created_product_without_a_screen_entry_or_source_stops_start_up(tmp_path):
    """No product is ever offered unchecked, and every entry names a known source."""
    from cds_service.errors import KnowledgeError
    from cds_service.knowledge.loader import load_knowledge

    def change(data):
        del data["products"]["1234995"]  # rocuronium, created by mcas.neuromuscular-blocker
        data["products"]["705824"]["source"] = "NO-SUCH-LABEL"
        del data["products"]["310273"]["other_dosages"]  # famotidine's premedication dose
        data["products"]["705824"]["result_floors"] = ["no-such-floor"]

    with pytest.raises(KnowledgeError) as error:
        load_knowledge(_screen_copy(tmp_path, change))
    problems = "\n".join(error.value.problems)
    assert "rxcui 1234995 (created by mcas.neuromuscular-blocker) has no screen entry" in problems
    assert "products.705824: source 'NO-SUCH-LABEL'" in problems
    assert "no other_dosages.premedication (named by mcas.procedure-premedication)" in problems
    assert "unknown result floor 'no-such-floor'" in problems


def _created_orders(rxcui: str) -> list[dict[str, Any]]:
    """Every MedicationRequest of ``rxcui`` a suggestion of a served case creates."""
    return [action["resource"] for item in served() for card in item.cards
            for suggestion in card.get("suggestions", []) for action in suggestion["actions"]
            if (action.get("resource") or {}).get("medicationCodeableConcept", {}).get("coding", [{}])[0].get("code") == rxcui]


def _premedication(resource: dict[str, Any]) -> bool:
    return any("Premedication" in note.get("text", "") for note in resource.get("note", []))


def test_created_orders_carry_the_label_starting_dose(app):
    """Famotidine added at chart review is a complete order: 20 mg by mouth every 12 hours."""
    famotidine = [r for r in _created_orders("310273") if not _premedication(r)]
    assert famotidine
    dosage = famotidine[0]["dosageInstruction"][0]
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 20
    assert dosage["timing"]["repeat"] == {"frequency": 1, "period": 12, "periodUnit": "h"}
    assert dosage["route"]["coding"][0]["code"] == "26643006"


def test_oral_cromolyn_is_timed_before_meals_and_at_bedtime_four_doses_a_day(app):
    """Gastrocrom label: 200 mg 30 minutes before meals and at bedtime. The order says so in FHIR
    event timing (ACM, ACD, ACV with 30 minutes' offset; HS without), not "every 6 hours", and the
    dose reader still counts 4 x 200 mg = 800 mg a day on it (the maximum-dose checks read it)."""
    from cds_service.core import dosing

    knowledge = app.extensions["cds"].knowledge
    cromolyn = _created_orders("831261")
    assert cromolyn
    instructions = cromolyn[0]["dosageInstruction"]
    repeats = [i["timing"]["repeat"] for i in instructions]
    assert repeats == [{"frequency": 3, "period": 1, "periodUnit": "d", "when": ["ACM", "ACD", "ACV"], "offset": 30},
                       {"frequency": 1, "period": 1, "periodUnit": "d", "when": ["HS"]}]
    assert {i["sequence"] for i in instructions} == {1}
    assert [i["text"] for i in instructions] == ["200 mg (10 mL) by mouth 30 minutes before breakfast, lunch and dinner",
                                                 "200 mg (10 mL) by mouth at bedtime"]
    dose = dosing.read(cromolyn[0], knowledge.terminology.products["831261"])
    assert (dose.single_dose_mg, dose.daily_dose_mg, dose.dose_unread) == (200, 800, False)


def test_premedication_h1_and_h2_are_single_doses_and_maintenance_orders_are_not(app):
    """Premedication before a procedure is one dose (Timing.repeat.count 1, "once, before the
    procedure"), never the open-ended maintenance order; cetirizine and famotidine offered as
    anti-mediator therapy keep their daily regimen."""
    from cds_service.core import dosing

    terminology = app.extensions["cds"].knowledge.terminology
    for rxcui, mg in (("1014678", 10), ("310273", 20)):
        orders = _created_orders(rxcui)
        premedication = [r for r in orders if _premedication(r)]
        maintenance = [r for r in orders if not _premedication(r)]
        assert premedication and maintenance, rxcui
        for resource in premedication:
            [instruction] = resource["dosageInstruction"]
            assert instruction["timing"]["repeat"]["count"] == 1
            assert instruction["text"] == f"{mg} mg by mouth once, before the procedure"
            assert "one dose, once" in resource["note"][0]["text"]
            assert dosing.read(resource, terminology.products[rxcui]).daily_dose_mg == mg
        for resource in maintenance:
            assert "count" not in resource["dosageInstruction"][0]["timing"]["repeat"]
            assert "once, before the procedure" not in resource["dosageInstruction"][0]["text"]


def test_an_unreadable_allergy_list_withholds_the_one_click_order_never_reads_as_none(app):
    """The EHR sent no allergies and there is no FHIR server to ask: acetaminophen is not offered
    as a swap for ibuprofen, and the card says what to check; with an empty list it is offered."""
    from casebuilder import build_request

    case = {"id": "no-allergy-list", "hook": "order-select", "patient": "ms-lbp-adult",
            "record": {"conditions": [{"system": "icd10", "code": "I25.10", "display": "Atherosclerotic heart disease"}]},
            "drafts": [{"medication": {"rxcui": "197805", "text": "ibuprofen 400 MG Oral Tablet"}}]}
    client, request = app.test_client(), build_request(case)
    request.pop("fhirServer")
    offered = _call(client, request)
    assert [s["label"] for c in offered for s in c.get("suggestions", [])] == ["Replace with acetaminophen"]
    del request["prefetch"]["allergies"]
    cards = _call(client, request)
    assert [c["source"]["topic"]["code"] for c in cards] == ["ms-lbp.nsaid-risk"]
    assert not cards[0].get("suggestions")
    assert "Acetaminophen not offered: the allergy list could not be read; check it first" in cards[0]["detail"]


def test_the_metamorphic_check_catches_an_unscreened_offer(app, monkeypatch):
    """With the screen switched off, an allergy to the offered drug leaves it offered, and the
    check above says so: the metamorphic tests can fail."""
    monkeypatch.setattr("cds_service.core.cards.screen", lambda *args, **kwargs: None)
    knowledge = app.extensions["cds"].knowledge
    item, rules, rxcui = _offers(served())[0]
    ingredient = knowledge.terminology.products[rxcui].ingredients[0]
    cards = _call(app.test_client(), allergy_to(item.request, ingredient.rxcui, ingredient.name))
    label = knowledge.screen.products[rxcui].label
    assert f"{label} still offered" in _withdrawn(cards, rules, rxcui, label)
