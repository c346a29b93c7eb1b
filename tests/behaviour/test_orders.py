"""order-select and order-sign semantics, and tolerance of real EHR and sandbox data."""
from __future__ import annotations

from conformance import assert_conformant
from helpers import request_fixture, rule_ids


def _succinylcholine_select():
    return request_fixture("order-select/mcas-adult--succinylcholine.json")


def test_succinylcholine_draft_gets_critical_card_with_two_alternatives(hooks):
    response = hooks.call(_succinylcholine_select())
    body = response.get_json()
    assert_conformant(body)
    (card,) = body["cards"]
    assert card["indicator"] == "critical"
    assert card["source"]["topic"]["code"] == "mcas.neuromuscular-blocker"
    assert "succinylcholine" in card["summary"].lower()
    assert card["selectionBehavior"] == "at-most-one"
    labels = [s["label"] for s in card["suggestions"]]
    assert labels == ["Replace with rocuronium", "Replace with vecuronium"]
    create, delete = card["suggestions"][0]["actions"]
    assert delete == {"type": "delete", "description": delete["description"], "resourceId": "MedicationRequest/request-123"}
    assert create["resource"]["medicationCodeableConcept"]["coding"][0]["code"] == "1234995"
    assert create["resource"]["status"] == "draft"


def test_no_card_when_patient_has_no_mast_cell_disorder(hooks):
    body = request_fixture("order-select/no-condition-adult--succinylcholine.json")
    assert hooks.cards(body) == []


def test_order_select_answers_only_for_the_selected_order(hooks):
    body = _succinylcholine_select()
    other = request_fixture("order-select/mcas-adult--morphine.json")["context"]["draftOrders"]["entry"][0]
    other["resource"]["id"] = "request-999"
    body["context"]["draftOrders"]["entry"].append(other)
    assert rule_ids(hooks.cards(body)) == ["mcas.neuromuscular-blocker"]


def test_selection_missing_from_draft_orders_gives_no_card_and_no_error(hooks):
    body = _succinylcholine_select()
    body["context"]["selections"] = ["MedicationRequest/not-there"]
    assert hooks.cards(body) == []


def test_order_sign_checks_every_draft_including_re_signed_ones(hooks):
    body = request_fixture("order-sign/mcas-adult--three-drafts.json")
    cards = hooks.cards(body)
    assert sorted(rule_ids(cards)) == ["mcas.histamine-releasing-opioid", "mcas.neuromuscular-blocker"]
    assert cards[0]["indicator"] == "critical"  # criticals first


def test_sandbox_medication_request_without_medication_gives_no_card(hooks):
    body = request_fixture("order-select/mcas-adult--sandbox-quirk-no-medication-yet.json")
    assert hooks.cards(body) == []


def test_sandbox_object_fields_are_read_like_arrays(hooks):
    body = request_fixture("order-select/mcas-adult--sandbox-quirk-morphine-object-fields.json")
    assert "mcas.histamine-releasing-opioid" in rule_ids(hooks.cards(body))


def test_bundle_without_type_and_unknown_types_do_not_fail(hooks):
    # DSTU2 MedicationOrder drafts get their own answer: tests/test_sandbox.py
    body = _succinylcholine_select()
    body["context"]["draftOrders"].pop("type", None)
    body["context"]["draftOrders"]["entry"] += [
        {"resource": {"resourceType": "NutritionOrder", "id": "n1", "status": "draft"}},
        {"resource": {"resourceType": "ServiceRequest", "id": "example-request-id", "status": "draft",
                      "code": {"coding": [{}]}, "reasonCode": []}},
        {"resource": "not an object"},
        "garbage",
    ]
    body["context"]["selections"] += ["NutritionOrder/n1",
                                      "ServiceRequest/example-request-id"]
    response = hooks.call(body)
    assert response.status_code == 200
    assert rule_ids(response.get_json()["cards"]) == ["mcas.neuromuscular-blocker"]


def test_order_matched_only_by_name_says_so(hooks):
    body = _succinylcholine_select()
    concept = body["context"]["draftOrders"]["entry"][0]["resource"]["medicationCodeableConcept"]
    concept["coding"] = [{"system": "http://example.org/local-drug-codes", "code": "X1"}]
    concept["text"] = "Succinylcholine 100 mg IV"
    (card,) = hooks.cards(body)
    assert "recognised by its name" in card["detail"]


def test_hydromorphone_is_not_morphine(hooks):
    body = request_fixture("order-select/mcas-adult--morphine.json")
    concept = body["context"]["draftOrders"]["entry"][0]["resource"]["medicationCodeableConcept"]
    concept["coding"] = []
    concept["text"] = "hydromorphone 2 mg tablet"
    assert hooks.cards(body) == []


def test_html_in_ehr_text_is_escaped_in_card_detail(hooks):
    body = _succinylcholine_select()
    concept = body["context"]["draftOrders"]["entry"][0]["resource"]["medicationCodeableConcept"]
    concept["text"] = "<script>alert(1)</script> succinylcholine"
    concept["coding"] = []
    body_out = hooks.call(body).get_json()
    assert_conformant(body_out)
    assert "<script>" not in body_out["cards"][0]["detail"]


def test_a_patient_of_unknown_age_gets_no_one_click_adult_strength_order(hooks):
    """Without a birth date the patient may be a child: the advice stays, the one-click orders of
    adult-strength products do not (as for a patient under 18)."""
    body = request_fixture("order-select/mcas-adult--morphine-injection.json")
    (card,) = hooks.cards(body)
    assert any(a["type"] == "create" and a["resource"]["resourceType"] == "MedicationRequest"
               for s in card.get("suggestions", []) for a in s["actions"])  # an adult gets them
    body["prefetch"]["patient"].pop("birthDate")
    (card,) = hooks.cards(body)
    assert not any(a["type"] == "create" and a["resource"]["resourceType"] == "MedicationRequest"
                   for s in card.get("suggestions", []) for a in s["actions"])
    assert "unknown age" in card["detail"]
