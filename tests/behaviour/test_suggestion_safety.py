"""Suggestion-safety invariants (issue 8, R16; listed in cds_service/knowledge/safety.py, which
`cds-service knowledge test RULE` runs too), checked on every suggestion of every card of every
case file, and proved able to fail on a deliberately unsafe rule."""
from __future__ import annotations

import shutil

import yaml
from case_cards import CASES, Served, served
from casebuilder import build_request
from helpers import NOW, ROOT, SERVICES

from cds_service.core.cards import MERGED_RULES
from cds_service.knowledge.safety import suggestion_violations


def violations(item: Served, knowledge) -> list[str]:
    """Every breach of the invariants in the cards ``item`` got, as readable sentences."""
    return suggestion_violations(item.case["id"], item.request, item.cards, knowledge, NOW)


def test_every_suggestion_of_every_case_is_safe_to_click(app):
    knowledge = app.extensions["cds"].knowledge
    found = [v for item in served() for v in violations(item, knowledge)]
    assert found == []


def test_every_rule_with_suggestions_has_them_checked_in_some_case(app):
    knowledge = app.extensions["cds"].knowledge
    with_suggestions = {r.id for m in knowledge.modules.values() for r in m.rules if r.suggestions}
    checked = {rule for item in served() for card in item.cards if card.get("suggestions")
               for rule in card.get("extension", {}).get(MERGED_RULES, []) or [card["source"]["topic"]["code"]]}
    assert sorted(with_suggestions - checked) == []


def test_the_invariants_catch_a_deliberately_unsafe_rule(tmp_path, app_config):
    """Remove the route condition from the fentanyl-injection swap: an oral morphine tablet then
    gets a one-click injection, which the invariants must report."""
    from cds_service import create_app

    knowledge = tmp_path / "knowledge"
    shutil.copytree(ROOT / "knowledge", knowledge)
    path = knowledge / "modules" / "mcas.yaml"
    module = yaml.safe_load(path.read_text())
    rule = next(r for r in module["rules"] if r["id"] == "mcas.histamine-releasing-opioid")
    for item in rule["suggestions"]["items"]:
        item.pop("when", None)  # unsafe: offered whatever the route
    path.write_text(yaml.safe_dump(module, sort_keys=False))
    unsafe = create_app({**app_config, "KNOWLEDGE_DIR": str(knowledge)})
    client = unsafe.test_client()
    case = next(c for c in CASES if c["id"] == "mcas-opioid-oral-morphine-no-injectable") if any(
        c["id"] == "mcas-opioid-oral-morphine-no-injectable" for c in CASES) else {
        "id": "oral-morphine", "hook": "order-sign", "patient": "mcas-adult",
        "drafts": [{"medication": {"rxcui": "892582", "text": "morphine sulfate 15 MG Oral Tablet"}}]}
    request = build_request(case)
    cards = client.post(f"/cds-services/{SERVICES[request['hook']]}", json=request).get_json()["cards"]
    found = violations(Served(case, request, cards), unsafe.extensions["cds"].knowledge)
    assert any("replaces a oral order with a parenteral product" in v for v in found), found
    assert any("remifentanil without surgery under anaesthesia" in v for v in found), found
