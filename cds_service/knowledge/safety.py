"""Suggestion safety (issue 8, R16): every one-click suggestion of a card checked as a pharmacist
would before clicking it. One source of truth: ``cds-service knowledge test RULE`` runs it on the
cards of that rule's cases, and tests/test_suggestion_safety.py on every case's.

1. a delete removes only a draft order of this request that the card names (in its "Why" list),
   never an active order, and never aspirin;
2. a card that replaces a draft medication creates a product of the same route family; a route
   the service cannot tell (unknown) never gets a parenteral product, except for a drug that
   exists only as an injection (the neuromuscular blockers);
3. a created order carries no dosing but the label's standard starting dose of its product from
   the suggestion screen's data, or one of its named other doses (a premedication's single
   dose): nothing carried over that may not fit the new product;
4. no NSAID card is about aspirin at an antiplatelet dose (325 mg or less, or no dose given);
5. a parenteral product is created only to replace a parenteral draft or when the request holds
   a procedure, except the few created in patient-view that exist only for that route
   (``PARENTERAL_BY_NATURE``); remifentanil (anaesthesia only) only with surgery or vertebral
   augmentation drafted, never with an awake procedure such as a contrast study;
6. a patient under 18 is offered no one-click medication but the weight-banded auto-injectors
   (the product table holds adult strengths).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from cds_service.core.cards import display_name, dosage_instructions
from cds_service.core.facts import ServiceRequestFact, build_facts
from cds_service.core.rules import Knowledge
from cds_service.core.terminology import RXNORM
from cds_service.knowledge.cases import unescaped

REMIFENTANIL = "73032"  # RxNorm ingredient
UNDER_ANAESTHESIA = ("spine-surgery", "spine-vertebral-augmentation")  # value sets of drafted procedures
CHILD_PRODUCTS = ("epinephrine-auto-injectors",)  # value sets whose products a child may be given
ASPIRIN = "1191"
NSAID_RULES = {"ms-lbp.nsaid-risk", "mcas.nsaid-caution"}
INJECTION_ONLY = {"mcas.neuromuscular-blocker"}  # atracurium and alike exist only as injections
# Products created from patient-view that exist only as an injection and replace no order: the
# epinephrine auto-injector (the patient's rescue device) and zoledronic acid (a yearly infusion).
PARENTERAL_BY_NATURE = {"epinephrine-auto-injectors": "auto-injector", "zoledronic": "zoledronic acid"}


def suggestion_violations(case_id: str, request: dict[str, Any], cards: list[dict[str, Any]], knowledge: Knowledge,
                          now: datetime) -> list[str]:
    """Every breach of the invariants in the ``cards`` a request got, as readable sentences."""
    found: list[str] = []
    terminology = knowledge.terminology
    facts = build_facts(request["hook"], request["context"], request["prefetch"], terminology, now)
    drafts = {f"{r['resourceType']}/{r['id']}": r for r in _drafts(request)}
    draft_meds = {m.ref: m for m in facts.draft_medications}
    has_procedure = any(r["resourceType"] == "ServiceRequest" for r in drafts.values())
    under_anaesthesia = any(terminology.match_codes(draft.codings, vid) for draft in facts.all_drafts
                            if isinstance(draft, ServiceRequestFact) for vid in UNDER_ANAESTHESIA)
    child = facts.age_years is not None and facts.age_years < 18
    for card in cards:
        rule = card["source"]["topic"]["code"]
        if rule in NSAID_RULES:
            for med in draft_meds.values():
                low_dose = med.single_dose_mg is None or med.single_dose_mg <= 325
                if ASPIRIN in _ingredients(med, terminology) and low_dose and _name_of(med, terminology) in card["summary"]:
                    found.append(f"{case_id}: {rule}: an NSAID card about antiplatelet-dose aspirin")
        for suggestion in card.get("suggestions", []):
            where = f"{case_id}: {rule}: {suggestion['label']}"
            deleted = [a["resourceId"] for a in suggestion["actions"] if a["type"] == "delete"]
            for ref in deleted:
                if ref not in drafts:
                    found.append(f"{where}: deletes {ref}, not a draft order of this request")
                    continue
                name = _name(drafts[ref])
                if name and name not in unescaped(card.get("detail", "")):  # "\[Ampyra\]" names "[Ampyra]"
                    found.append(f"{where}: deletes {ref} ({name}), which the card does not name")
                drafted = draft_meds.get(ref)
                if drafted is not None and ASPIRIN in _ingredients(drafted, terminology):
                    found.append(f"{where}: deletes aspirin")
            replaced = [draft_meds[r] for r in deleted if r in draft_meds]
            for action in suggestion["actions"]:
                resource = action.get("resource") or {}
                if resource.get("resourceType") != "MedicationRequest":
                    continue
                product = terminology.products[resource["medicationCodeableConcept"]["coding"][0]["code"]]
                entry = knowledge.screen.products.get(product.rxcui) if knowledge.screen else None
                label_doses = [d for d in (entry.dosage, *entry.other_dosages.values()) if d] if entry else []
                allowed: list[list[dict[str, Any]] | None] = [dosage_instructions(d) for d in label_doses] or [None]
                if resource.get("dosageInstruction") not in allowed:
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


def _drafts(request: dict[str, Any]) -> list[dict[str, Any]]:
    bundle = request["context"].get("draftOrders") or {}
    return [e["resource"] for e in bundle.get("entry", []) if e.get("resource", {}).get("id")]


def _name(resource: dict[str, Any]) -> str:
    concept = resource.get("medicationCodeableConcept") or resource.get("code") or {}
    return concept.get("text") or next((c.get("display", "") for c in concept.get("coding", [])), "")


def _name_of(med: Any, terminology: Any) -> str:
    return display_name(med, terminology)[:30]  # a long name may be shortened in the summary


def _ingredients(med: Any, terminology: Any) -> set[str]:
    codes = {code for _, code, _ in med.codings if code}
    return {c for code in codes for c in terminology.expand_rxnorm(code)} | (
        {ASPIRIN} if "aspirin" in (med.text or "").lower() else set())
