"""Cards read in five seconds, with their rule pages one click away and words that agree with
their buttons (issue 26), over HTTP as the EHR gets them and over every case file.

The checks are those of `cds-service knowledge check` (cds_service/knowledge/checks.py).
"""
from __future__ import annotations

import copy

import pytest
from case_cards import served
from helpers import ROOT, SERVICES, request_fixture

from cds_service.core.cards import MERGED_RULES
from cds_service.core.layout import CARD_LIMIT, FINDING_LIMIT, MAX_BUTTONS, NOTICE_ALLOWANCE
from cds_service.knowledge.checks import alternative_names, card_limit_problems, sections, words_buttons_problems
from cds_service.knowledge.loader import load_knowledge

OLDER = "patient-view/mcas-ms-older-adult--chart-open.json"


@pytest.fixture(scope="module")
def names():
    return alternative_names(load_knowledge(ROOT / "knowledge"))


def _call(client, request):
    response = client.post(f"/cds-services/{SERVICES[request['hook']]}", json=request)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["cards"]


def _by_rule(cards, rule):
    return next(c for c in cards if c["source"]["topic"]["code"] == rule)


def test_every_card_of_every_case_fits_the_limits_and_its_words_match_its_buttons(names):
    problems = []
    for s in served():
        for card in s.cards:
            problems += card_limit_problems(card, f"case {s.case['id']}")
            problems += words_buttons_problems(card, names, f"case {s.case['id']}")
    assert problems == []


def test_the_limit_check_can_fail():
    long_card = {"source": {"topic": {"code": "x.y"}}, "summary": "s", "detail": "Give it. " * 120,
                 "suggestions": [{"label": str(n), "actions": []} for n in range(4)]}
    problems = card_limit_problems(long_card, "c")
    assert any("detail:" in p for p in problems) and any("4 suggestion buttons" in p for p in problems)
    assert any("links:" in p for p in problems)


def test_the_words_and_buttons_check_can_fail(names):
    card = {"source": {"topic": {"code": "x.y"}}, "summary": "Drug: prefer cetirizine or fexofenadine",
            "detail": "Switch to cetirizine or fexofenadine.", "suggestions": []}
    assert words_buttons_problems(card, names, "c")
    said = {**card, "detail": card["detail"] + "\n\n_No one-click swap is offered: this is an active order._"}
    assert words_buttons_problems(said, names, "c") == []
    offered = {**card, "summary": "Drug: prefer cetirizine", "detail": "Switch to cetirizine.",
               "suggestions": [{"label": "Use cetirizine instead", "actions": []}]}
    assert words_buttons_problems(offered, names, "c") == []


def test_the_older_adults_merged_card_leads_with_a_line_per_finding_and_three_buttons(client):
    card = next(c for c in _call(client, request_fixture(OLDER)) if MERGED_RULES in c.get("extension", {}))
    rules = card["extension"][MERGED_RULES]
    assert len(rules) == 4 and len(sections(card["detail"])) == 4
    assert card["detail"].startswith("1. ") and len(card["detail"]) <= CARD_LIMIT + NOTICE_ALLOWANCE
    assert len(card["suggestions"]) == MAX_BUTTONS
    # what is no button is still named, with its caution (or why the screen held it back), so nothing is lost silently
    assert "zoledronic acid" in card["detail"].lower() and "kidney function" in card["detail"]
    # a link per finding to its rule page, opening outside the chart; no link inside the detail
    pages = [link["url"].rsplit("/", 1)[1] for link in card["links"] if "/rules/" in link["url"]]
    assert pages == rules and {link["type"] for link in card["links"]} == {"absolute"}
    assert "](" not in card["detail"] and card["source"]["url"].endswith("/rules/" + rules[0])


def test_a_single_finding_card_fits_and_links_its_rule_page(client):
    for card in _call(client, request_fixture("order-select/mcas-adult--morphine.json")):
        assert len(card["detail"]) <= FINDING_LIMIT + 100
        assert [link["url"] for link in card["links"]][0] == card["source"]["url"]


def test_zoledronic_acid_button_carries_the_kidney_and_calcium_caution(client):
    cards = _call(client, request_fixture(OLDER))  # a button or a named order: the caution goes with it
    labels = [s["label"] for c in cards for s in c.get("suggestions", [])]
    words = " ".join(c["detail"] for c in cards)
    said = (" ".join(labels) + " " + words).lower()
    assert "zoledronic acid" in said and "kidney function" in said  # the button's caution, or the screen's reason
    assert not any(label == "Add zoledronic acid" for label in labels)


def test_an_active_sedating_antihistamine_says_why_no_swap_is_offered(client):
    request = request_fixture(OLDER)
    card = _by_rule(_call(client, request), "mcas.first-gen-antihistamine-elderly")
    assert "suggestions" not in card and "an active order, which a card cannot stop" in card["detail"]
    assert "cetirizine or fexofenadine" in card["summary"]


def test_the_same_drug_as_a_draft_is_offered_the_swap_and_no_excuse(client):
    request = copy.deepcopy(request_fixture("order-select/mcas-adult--morphine.json"))
    older = request_fixture(OLDER)
    diphenhydramine = next(e["resource"] for e in older["prefetch"]["medications"]["entry"]
                           if "diphenhydramine" in str(e["resource"]))
    draft = {**copy.deepcopy(diphenhydramine), "id": "draft-h1", "status": "draft"}
    request["prefetch"] = dict(older["prefetch"])
    request["context"] = {**request["context"], "patientId": older["context"]["patientId"],
                          "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]},
                          "selections": ["MedicationRequest/draft-h1"]}
    card = _by_rule(_call(client, request), "mcas.first-gen-antihistamine-elderly")
    assert [s["label"] for s in card["suggestions"]] == ["Use cetirizine instead", "Use fexofenadine instead"]
    assert "card cannot stop" not in card["detail"]


def test_the_rule_page_says_what_the_active_order_card_does(client):
    page = client.get("/rules/mcas.first-gen-antihistamine-elderly", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "no\nbutton is offered" in page or "no button is offered" in page
    assert "only drafts the alternative" not in page
