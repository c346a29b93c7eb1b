"""Suggestion-safety invariants (issue 8, R16), checked on every suggestion of every card of every
case file, and proved able to fail on a deliberately unsafe rule.

1. a delete removes only a draft order of this request that the card names (in its "Why" list),
   never an active order, and never aspirin;
2. a card that replaces a draft medication creates a product of the same route family; a route
   the service cannot tell (unknown) never gets a parenteral product, except for a drug that
   exists only as an injection (the neuromuscular blockers);
3. a created order carries no dosing but the label's standard starting dose of its product from
   the suggestion screen's data (nothing carried over that may not fit the new product);
4. no NSAID card is about aspirin at an antiplatelet dose (325 mg or less, or no dose given);
5. a parenteral product is created only to replace a parenteral draft or when the request holds
   a procedure, except the few created in patient-view that exist only for that route
   (``PARENTERAL_BY_NATURE``); remifentanil (anaesthesia only) only with surgery or vertebral
   augmentation drafted, never with an awake procedure such as a contrast study;
6. a patient under 18 is offered no one-click medication but the weight-banded auto-injectors
   (the product table holds adult strengths).
"""
from __future__ import annotations

import shutil

import yaml

from case_cards import CASES, Served, served
from casebuilder import build_request
from cds_service.core.cards import dosage_instruction
from cds_service.core.facts import ServiceRequestFact, build_facts
from cds_service.core.terminology import RXNORM
from helpers import NOW, ROOT, SERVICES

REMIFENTANIL = "73032"  # RxNorm ingredient
UNDER_ANAESTHESIA = ("spine-surgery", "spine-vertebral-augmentation")  # value sets of drafted procedures
CHILD_PRODUCTS = ("epinephrine-auto-injectors",)  # value sets whose products a child may be given
ASPIRIN = "1191"
NSAID_RULES = {"ms-lbp.nsaid-risk", "mcas.nsaid-caution"}
INJECTION_ONLY = {"mcas.neuromuscular-blocker"}  # atracurium and alike exist only as injections
# Products created from patient-view that exist only as an injection and replace no order: the
# epinephrine auto-injector (the patient's rescue device) and zoledronic acid (a yearly infusion).
PARENTERAL_BY_NATURE = {"epinephrine-auto-injectors": "auto-injector", "zoledronic": "zoledronic acid"}


def violations(item: Served, knowledge) -> list[str]:
    """Every breach of the invariants in the cards ``item`` got, as readable sentences."""
    request, found = item.request, []
    terminology = knowledge.terminology
    facts = build_facts(request["hook"], request["context"], request["prefetch"], terminology, NOW)
    drafts = {f"{r['resourceType']}/{r['id']}": r for r in _drafts(request)}
    draft_meds = {m.ref: m for m in facts.draft_medications}
    has_procedure = any(r["resourceType"] == "ServiceRequest" for r in drafts.values())
    under_anaesthesia = any(terminology.match_codes(draft.codings, vid) for draft in facts.all_drafts
                            if isinstance(draft, ServiceRequestFact) for vid in UNDER_ANAESTHESIA)
    child = facts.age_years is not None and facts.age_years < 18
    for card in item.cards:
        rule = card["source"]["topic"]["code"]
        if rule in NSAID_RULES:
            for med in draft_meds.values():
                low_dose = med.single_dose_mg is None or med.single_dose_mg <= 325
                if ASPIRIN in _ingredients(med, terminology) and low_dose and _name_of(med) in card["summary"]:
                    found.append(f"{item.case['id']}: {rule}: an NSAID card about antiplatelet-dose aspirin")
        for suggestion in card.get("suggestions", []):
            where = f"{item.case['id']}: {rule}: {suggestion['label']}"
            deleted = [a["resourceId"] for a in suggestion["actions"] if a["type"] == "delete"]
            for ref in deleted:
                if ref not in drafts:
                    found.append(f"{where}: deletes {ref}, not a draft order of this request")
                    continue
                name = _name(drafts[ref])
                if name and name not in card.get("detail", ""):
                    found.append(f"{where}: deletes {ref} ({name}), which the card does not name")
                med = draft_meds.get(ref)
                if med is not None and ASPIRIN in _ingredients(med, terminology):
                    found.append(f"{where}: deletes aspirin")
            replaced = [draft_meds[r] for r in deleted if r in draft_meds]
            for action in suggestion["actions"]:
                resource = action.get("resource") or {}
                if resource.get("resourceType") != "MedicationRequest":
                    continue
                product = terminology.products[resource["medicationCodeableConcept"]["coding"][0]["code"]]
                label_dose = knowledge.screen.products[product.rxcui].dosage
                if resource.get("dosageInstruction") != ([dosage_instruction(label_dose)] if label_dose else None):
                    found.append(f"{where}: the created order carries dosing other than its label's starting dose")
                ingredients = {i.rxcui for i in product.ingredients}
                for med in replaced:
                    if med.route not in (None, "unknown") and product.route != med.route:
                        found.append(f"{where}: replaces a {med.route} order with a {product.route} product")
                    if med.route in (None, "unknown") and product.route == "parenteral" and rule not in INJECTION_ONLY:
                        found.append(f"{where}: replaces an order of unknown route with an injection")
                if product.route == "parenteral" and not has_procedure and rule not in INJECTION_ONLY:
                    if replaced and not all(m.route == "parenteral" for m in replaced):
                        found.append(f"{where}: a parenteral alternative for a non-parenteral draft")
                    if not replaced and request["hook"] != "patient-view":
                        found.append(f"{where}: a parenteral product without a parenteral draft or a procedure")
                    if request["hook"] == "patient-view" and not any(
                            key in product.name.lower() or key in rule for key in PARENTERAL_BY_NATURE.values()):
                        found.append(f"{where}: a parenteral product created at chart open ({product.name})")
                if REMIFENTANIL in ingredients and not under_anaesthesia:
                    found.append(f"{where}: remifentanil without surgery under anaesthesia in the request")
                in_sets = terminology.medication_sets(((RXNORM, product.rxcui, product.name),), product.name)
                if child and not any(vid in in_sets for vid in CHILD_PRODUCTS):
                    found.append(f"{where}: an adult-strength product offered to a patient aged {facts.age_years}")
    return found


def _drafts(request):
    bundle = request["context"].get("draftOrders") or {}
    return [e["resource"] for e in bundle.get("entry", []) if e.get("resource", {}).get("id")]


def _name(resource) -> str:
    concept = resource.get("medicationCodeableConcept") or resource.get("code") or {}
    return concept.get("text") or next((c.get("display", "") for c in concept.get("coding", [])), "")


def _name_of(med) -> str:
    return med.name[:30]  # a long name may be shortened in the summary


def _ingredients(med, terminology) -> set[str]:
    codes = {code for _, code, _ in med.codings if code}
    return {c for code in codes for c in terminology.expand_rxnorm(code)} | (
        {ASPIRIN} if "aspirin" in (med.text or "").lower() else set())


def test_every_suggestion_of_every_case_is_safe_to_click(app):
    knowledge = app.extensions["cds"].knowledge
    found = [v for item in served() for v in violations(item, knowledge)]
    assert found == []


def test_every_rule_with_suggestions_has_them_checked_in_some_case(app):
    knowledge = app.extensions["cds"].knowledge
    with_suggestions = {r.id for m in knowledge.modules.values() for r in m.rules if r.suggestions}
    checked = {rule for item in served() for card in item.cards if card.get("suggestions")
               for rule in card.get("extension", {}).get(next(iter(card.get("extension", {})), ""), [])
               or [card["source"]["topic"]["code"]]}
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
