"""What clinicians and informaticists read, polished (issue 26, Must have 6): units as written
on a ward, plurals, one way of naming the guideline sources, drugs by the name a clinician uses,
feedback on the "Not checked" card kept under its own id, and an icon for the pages."""
from __future__ import annotations

import yaml
from helpers import ROOT, request_fixture
from test_sandbox import _dstu2_order_select

from cds_service.core.cards import FHIR_VERSION_TOPIC
from cds_service.core.units import readable

OLDER = "patient-view/mcas-ms-older-adult--chart-open.json"


def _detail_of(cards, rule):
    return next(c for c in cards if rule in (c["source"]["topic"]["code"], *c.get("extension", {}).get(
        "https://cds-back-pain.example.org/cds-hooks/extension/merged-rules", ())))


def test_a_result_unit_reads_as_a_clinician_writes_it(hooks):
    detail = " ".join(c["detail"] for c in hooks.cards(request_fixture(OLDER)))
    assert "250 pg/mg creatinine" in detail and "{creat}" not in detail
    assert readable("1") == "" and readable("mL/min/{1.73_m2}") == "mL/min/1.73 m²"  # a T-score gets no "1"
    assert readable("kg") == "kg"  # a unit with nothing to translate is left as it is


def test_rule_pages_count_codes_with_the_right_plural(client, app):
    knowledge = app.extensions["cds"].knowledge
    pages = {rule.id: client.get(f"/rules/{rule.id}", headers={"Accept": "text/html"}).get_data(as_text=True)
             for module in knowledge.modules.values() for rule in module.rules}
    text = " ".join(pages.values())
    assert "(1 codes" not in text and "(1 code or code family)" in text
    assert "codes or code families)" in text


def test_every_guideline_summary_is_labelled_the_same_way():
    guidelines = yaml.safe_load((ROOT / "knowledge" / "guidelines.yaml").read_text())["guidelines"]
    summaries = [g["label"] for g in guidelines.values() if g.get("kind", "guideline-summary") == "guideline-summary"]
    assert len(summaries) >= 2 and all(label.endswith(" (guideline summary)") for label in summaries), summaries


def test_a_summary_names_the_drug_by_its_ingredient_and_form(hooks):
    card = next(c for c in hooks.cards(request_fixture(OLDER))
                if c["source"]["topic"]["code"] == "mcas.first-gen-antihistamine-elderly")
    assert card["summary"].startswith("diphenhydramine oral capsule:")
    assert "diphenhydramine hydrochloride 25 MG Oral Capsule" in card["detail"]  # the order as written, in the why


def test_an_uncoded_order_keeps_its_own_name_in_the_summary(hooks):
    body = request_fixture("order-select/mcas-adult--morphine.json")
    for entry in body["context"]["draftOrders"]["entry"]:
        entry["resource"]["medicationCodeableConcept"].pop("coding", None)
        entry["resource"]["medicationCodeableConcept"]["text"] = "Morphine sulfate 15 mg tablet"
    (card,) = hooks.cards(body)
    assert card["summary"].startswith("Morphine sulfate 15 mg tablet")


def test_feedback_on_the_not_checked_card_is_counted_under_its_own_id(client, hooks, app):
    (card,) = hooks.call(_dstu2_order_select()).get_json()["cards"]
    response = client.post("/cds-services/back-pain-order-select/feedback", json={"feedback": [
        {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z"}]})
    assert response.status_code == 200
    stats = app.extensions["cds"].storage.stats()
    assert "(unknown card)" not in stats and stats[FHIR_VERSION_TOPIC]["overridden"] == 1


def test_the_pages_have_an_icon(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    page = client.get("/rules/mcas.bone-health", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert 'rel="icon"' in page


def test_a_procedure_is_named_by_our_short_description_not_a_cut_official_name(hooks):
    body = request_fixture("order-select/ms-lbp-adult--lumbar-mri.json")
    long_name = ("Magnetic resonance imaging, spinal canal and contents, lumbar, without contrast material, "
                 "as ordered by the radiology department for the evaluation of back pain")
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order["code"]["coding"][0]["display"] = order["code"]["text"] = long_name
    (card,) = hooks.cards(body)
    assert card["summary"].startswith("MRI lumbar spine without contrast:") and "…" not in card["summary"]
    order["code"]["coding"][0]["code"] = "00000"  # no code we describe: the order's own name, cut at a word
    for card in hooks.cards(body):
        assert not card["summary"].startswith("MRI lumbar spine without contrast:")
