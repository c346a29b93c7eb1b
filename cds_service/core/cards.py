"""Findings to CDS Hooks 2.0 cards: the only module that writes card JSON.

Sans-IO. Each card carries a fresh uuid (time-ordered: ``issued.new_id``), a summary under 140 characters that
names the drug or procedure (shortened at a word boundary), an indicator,
Markdown detail that says what to do, then why (the evidence lines),
``source.topic.code`` = the rule id and ``source.url`` = the rule's page (which
holds the guideline statement), override reasons for warnings and criticals,
and suggestions whose created resources are validated as FHIR R4 before they
leave. Every medication a suggestion would create passes the suggestion screen
(``screen.py``) first: one that fails withholds its suggestion, and the card
says why in one line; one offered carries its label's starting dose, or the
card says to set the dose. A group of several findings (a module's info findings in patient-view)
becomes one merged card: a section per finding, each with its rule id and a
link to its rule page, every suggestion kept and duplicates merged; its
``source.topic.code`` is the first finding's rule id and the extension
``MERGED_RULES`` lists every rule id in it. Text from the EHR is escaped so
that no raw HTML reaches the clinician's screen. Empty members are left out,
as the spec requires.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from cds_service.core import layout
from cds_service.core.engine import Finding
from cds_service.core.facts import Facts, MedicationFact, ServiceRequestFact
from cds_service.core.fhir import validate_resource
from cds_service.core.issued import IssuedCard, new_id  # noqa: F401 - IssuedCard: built here; storage keeps it
from cds_service.core.rules import Action, Rule, Suggestion
from cds_service.core.screen import Dosage, ScreenData, screen
from cds_service.core.silencing import medication_key
from cds_service.core.terminology import CPT, RXNORM, SNOMED, Terminology

SUMMARY_LIMIT = 139
RULE_SYSTEM = "https://cds-back-pain.example.org/fhir/CodeSystem/rule"
_UNSAFE = re.compile(r"[\[\]`*_\\]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


MERGED_RULES = "https://cds-back-pain.example.org/cds-hooks/extension/merged-rules"
# The knowledge release a card came from (declared version + content hash: Knowledge.release),
# so feedback and a committee's approval can name the exact rules that made it.
KNOWLEDGE_RELEASE = "https://cds-back-pain.example.org/cds-hooks/extension/knowledge-release"


def item_key(finding: Finding, terminology: Terminology) -> str:
    """What an override is remembered by, with the patient and the rule (``silencing``): for a
    medication its drug (the RxNorm ingredients joined by "+" for a combination product; else its
    code, else its name), route family and single dose (``silencing.medication_key``); a
    procedure's code (else its name); or "" for a patient-level finding."""
    item = finding.item
    if item is None:
        return ""
    codes = [code for system, code, _ in getattr(item, "codings", ()) if code]
    rxnorm = [code for system, code, _ in getattr(item, "codings", ()) if system == RXNORM and code]
    if rxnorm:
        ingredients = terminology.expand_rxnorm(rxnorm[0])[1:]
        drug = "+".join(sorted(ingredients)) if ingredients else rxnorm[0]
    else:
        drug = codes[0] if codes else str(getattr(item, "text", "")).strip().lower()
    if isinstance(item, MedicationFact):
        return medication_key(drug.replace("|", "/"), item.route, item.single_dose_mg)
    return drug


def escape(text: str) -> str:
    """EHR text made inert inside Markdown: no HTML tags (entities), no links or emphasis (escapes)."""
    text = _CONTROL.sub(" ", text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _UNSAFE.sub(lambda m: "\\" + m.group(0), text)


@dataclass(frozen=True)
class _Offer:
    """What a card's suggestions are built with: the call's facts, the terminology and the
    suggestion screen, and the lines that say which medication was not offered and why."""

    facts: Facts
    terminology: Terminology
    screen: ScreenData | None
    withheld: list[str]
    set_the_dose: list[str]


def build_cards(groups: list[tuple[Finding, ...]], facts: Facts, terminology: Terminology,
                reason_system: str, rules_url: str | None,
                release: str = "", screen: ScreenData | None = None) -> tuple[list[dict[str, Any]], list[IssuedCard]]:
    """One card per group of findings (``engine.Outcome.cards``), and what storage keeps of each."""
    cards, issued = [], []
    for group in groups:
        offer = _Offer(facts, terminology, screen, [], [])
        card = _card(group, offer, reason_system, rules_url)
        if release:
            card.setdefault("extension", {})[KNOWLEDGE_RELEASE] = release
        cards.append(card)
        issued.append(IssuedCard(card["uuid"], tuple(f.rule.id for f in group),
                                 tuple(s["uuid"] for s in card.get("suggestions", [])),
                                 tuple(item_key(f, terminology) for f in group), card["indicator"]))
    return cards, issued


ADULT_AGE = 18
CHILD_NOTE = ("_One-click orders of adult-strength products are not offered for a patient under 18 or of unknown age:"
              " choose a paediatric product and dose._")


def _card(group: tuple[Finding, ...], offer: _Offer, reason_system: str, rules_url: str | None) -> dict[str, Any]:
    facts = offer.facts
    lead = group[0]
    merged = len(group) > 1
    suffix = f" (+{len(group) - 1} more below)" if merged else ""
    card: dict[str, Any] = {
        "uuid": new_id(),
        "summary": _summary(lead.rule.summary, lead, facts, SUMMARY_LIMIT - len(suffix), offer.terminology) + suffix,
        "indicator": lead.indicator,
        "source": _source(lead, rules_url),
    }
    suggestions = _merged_suggestions(group, offer)
    notices = []  # why a button the words lead one to expect is not there
    if any(_adult_only(spec, facts) for f in group for spec in f.suggestions):
        notices.append(CHILD_NOTE)
    elif _active_order_only(group, suggestions):
        notices.append(ACTIVE_ORDER_NOTE)
    if offer.withheld or offer.set_the_dose:
        notices.append(_screen_lines(offer))
    if len(suggestions) > layout.MAX_BUTTONS:
        rest = [s["label"] for s in suggestions[layout.MAX_BUTTONS:]]
        notices.append(MORE_ORDERS.format(orders="; ".join(escape(r) for r in rest)))
        suggestions = suggestions[: layout.MAX_BUTTONS]
    card["detail"] = _detail(group, facts, rules_url, notices)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = (lead.rule.selection or "any") if not merged else "any"
    if lead.indicator != "info" and lead.rule.override_reasons:
        card["overrideReasons"] = [{"system": reason_system, "code": c, "display": d}
                                   for c, d in lead.rule.override_reasons]
    links = list(dict.fromkeys([*_rule_page_links(group, rules_url),
                                *((link["label"], link["url"]) for f in group for link in f.rule.links)]))
    if links:
        card["links"] = [{"label": label, "url": url, "type": "absolute"} for label, url in links]
    if merged:
        card["extension"] = {MERGED_RULES: [f.rule.id for f in group]}
    return card


def _screen_lines(offer: _Offer) -> str:
    """One short line per medication the screen held back, then the orders left to dose."""
    lines = [escape(line) for line in dict.fromkeys(offer.withheld)]
    lines += [f"{name}: set the dose on the order (no standard starting dose)."
              for name in dict.fromkeys(offer.set_the_dose)]
    return "\n".join(f"- {line}" for line in lines)


# Said on the card when the rule's swap cannot be a button, so that words and buttons agree.
ACTIVE_ORDER_NOTE = ("_No one-click swap is offered: this is an active order, which a card cannot stop. Stop it in "
                     "the chart, then order the alternative named above._")
MORE_ORDERS = "_Also suggested (not shown as buttons): {orders}._"
RULE_PAGE_LABEL = "About this advice: "


def _active_order_only(group: tuple[Finding, ...], suggestions: list[dict[str, Any]]) -> bool:
    """A swap held for this patient but none could be built because the order is already active."""
    return not suggestions and any(
        getattr(f.item, "kind", "draft") != "draft" and any(a.kind == "delete_item" for s in f.suggestions
                                                            for a in s.actions)
        for f in group)


def _rule_page_links(group: tuple[Finding, ...], rules_url: str | None) -> list[tuple[str, str]]:
    """One link per finding to its rule page: a link of type absolute opens outside the chart,
    where a Markdown link in the detail would replace it."""
    if not rules_url:
        return []
    return [(shorten(RULE_PAGE_LABEL + f.rule.title, 80), f"{rules_url}/{f.rule.id}") for f in group]


def _merged_suggestions(group: tuple[Finding, ...], offer: _Offer) -> list[dict[str, Any]]:
    """Every finding's suggestions in order; one whose actions repeat an earlier one's is left out
    (the same drug offered by two findings is offered once, under the first label)."""
    kept, seen = [], set()
    for finding in group:
        for spec in finding.suggestions:
            suggestion = _suggestion(spec, finding, offer)
            if suggestion is None:
                continue
            key = tuple(_action_key(a) for a in suggestion["actions"])
            if key not in seen:
                seen.add(key)
                kept.append(suggestion)
    return kept


def _action_key(action: dict[str, Any]) -> tuple[str, ...]:
    if action["type"] == "delete":
        return ("delete", action["resourceId"])
    resource = action["resource"]
    concept = resource.get("medicationCodeableConcept") or resource.get("code") or {}
    return ("create", resource["resourceType"], *(c["code"] for c in concept.get("coding", [])))


def _values(finding: Finding, facts: Facts, item_name: str) -> dict[str, str]:
    labels = [e.label for e in finding.evidence if e.label]
    return {
        "item": item_name,
        "age": str(facts.age_years) if facts.age_years is not None else "unknown",
        "findings": ", ".join(dict.fromkeys(labels)) or "none",
    }


def _item_name(finding: Finding) -> str:
    return getattr(finding.item, "name", "") or ""


def display_name(item: Any, terminology: Terminology | None) -> str:
    """A medication as a clinician names it in a summary: its ingredients and dose form
    ("diphenhydramine oral capsule") for a product we know, else the order's own name."""
    name = getattr(item, "name", "") or ""
    if terminology is not None and isinstance(item, ServiceRequestFact):
        return min(filter(None, [_our_procedure_name(item, terminology), name]), key=len, default=name)
    if terminology is None or not isinstance(item, MedicationFact):
        return name
    for system, code, _ in item.codings:
        product = terminology.products.get(code) if system == RXNORM else None
        if product and product.ingredients:
            return f"{' and '.join(i.name for i in product.ingredients)} {product.dose_form.lower()}".strip()
    return name


def _our_procedure_name(item: ServiceRequestFact, terminology: Terminology) -> str:
    """A CPT-coded procedure by our own short description (value sets), the shortest: the order's
    display may be the long official one, which a summary would have to cut (the order's own
    name is used when it is shorter still)."""
    ours = [vs.exact[(system, code)] for system, code, _ in item.codings if system == CPT
            for vs in terminology.valuesets.values() if vs.exact.get((system, code))]
    return min(ours, key=len) if ours else ""


def _summary(template: str, finding: Finding, facts: Facts, limit: int = SUMMARY_LIMIT,
             terminology: Terminology | None = None) -> str:
    name = display_name(finding.item, terminology)
    text = template.format_map(_values(finding, facts, name))
    if len(text) > limit and name:  # shorten the drug or procedure name, never the risk
        room = max(8, len(name) - (len(text) - limit) - 1)
        text = template.format_map(_values(finding, facts, shorten(name, room)))
    return shorten(text, limit)


def shorten(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, cut at a word boundary and marked with "…"."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut.strip():
        cut = cut[: cut.rstrip().rfind(" ")]
    return cut.rstrip(" ,;:-(") + "…"


WHY = layout.WHY


def _part(finding: Finding, facts: Facts, rules_url: str | None) -> layout.Part:
    """A finding's texts for the layout: the rule's detail and the notes that hold, filled in."""
    values = _values(finding, facts, escape(_item_name(finding)))
    notes = [note.strip().format_map(values) for note in finding.notes]
    return layout.Part(finding.rule.title, finding.rule.detail.strip().format_map(values), tuple(notes),
                       tuple(escape(e.text) for e in finding.evidence),
                       f"{rules_url}/{finding.rule.id}" if rules_url else None, escape(_item_name(finding)))


def _detail(group: tuple[Finding, ...], facts: Facts, rules_url: str | None, notices: list[str]) -> str:
    """One finding: what to do, then why; several: a line per finding, then why (``layout``);
    the ``notices`` last, room kept for them."""
    parts = [_part(f, facts, rules_url) for f in group]
    reserve = sum(len(n) + 2 for n in notices)
    if len(parts) == 1:
        text = layout.single(parts[0], any(e.by_name for e in group[0].evidence), reserve)
    else:
        text = layout.merged(parts, reserve)
    return "\n\n".join([text, *notices])


def _source(finding: Finding, rules_url: str | None) -> dict[str, Any]:
    """The rule's page (what it checks, the guideline statement and reference), else the guideline."""
    rule = finding.rule
    source: dict[str, Any] = {"label": rule.reference.label}
    url = (f"{rules_url}/{rule.id}" if rules_url else None) or rule.reference.url
    if url:
        source["url"] = url
    source["topic"] = {"system": RULE_SYSTEM, "code": rule.id, "display": rule.title}
    return source


def _suggestion(spec: Suggestion, finding: Finding, offer: _Offer) -> dict[str, Any] | None:
    """The suggestion whole, or none: a "replace" never shrinks to a bare delete (no one-click
    order for a child) nor to a bare add (an active order is not removed from a card, and
    adding the alternative beside it would double the therapy); and none when a medication it
    creates fails the suggestion screen (the card then says why)."""
    facts = offer.facts
    if _adult_only(spec, facts):
        return None
    built = [_action(a, finding, offer) for a in spec.actions]
    actions = [a for a in built if a is not None]
    if not actions or len(actions) < len(built):
        return None
    if not _passes_screen(spec, finding, offer):
        return None
    # A client applies a suggestion as a transaction (deletes first), so the order is ours to
    # choose: creates first, because the CDS Hooks sandbox applies only the first action.
    actions.sort(key=lambda a: a["type"] == "delete")
    suggestion: dict[str, Any] = {"label": spec.label, "uuid": new_id(), "actions": actions}
    if spec.recommended:
        suggestion["isRecommended"] = True
    return suggestion


def _passes_screen(spec: Suggestion, finding: Finding, offer: _Offer) -> bool:
    """Every medication the suggestion creates, screened (``screen.screen``); the reasons of
    those that fail go to the card. Without screen data nothing is offered: unchecked is unsafe."""
    replaced = frozenset(ref for a in spec.actions if a.kind == "delete_item"
                         if (ref := getattr(finding.item, "ref", None)))
    creates = [a.args["rxcui"] for a in spec.actions if a.kind == "create_medication"]
    if creates and offer.screen is None:
        return False
    reasons = [r for rxcui in creates
               if offer.screen and (r := screen(rxcui, offer.facts, offer.terminology, offer.screen, replaced))]
    offer.withheld.extend(reasons)
    if not reasons and offer.screen is not None:
        offer.set_the_dose.extend(offer.screen.products[rxcui].label for rxcui in creates
                                  if offer.screen.products[rxcui].dosage is None)
    return not reasons


def _adult_only(spec: Suggestion, facts: Facts) -> bool:
    """A suggestion that creates a medication for a patient under 18 or of unknown age, unless
    the rule marked it ``for_children``: the product table holds adult strengths (a 10 mg
    montelukast tablet is not a 4-year-old's dose), so the advice comes without a one-click order."""
    if spec.for_children or (facts.age_years is not None and facts.age_years >= ADULT_AGE):
        return False
    return any(action.kind == "create_medication" for action in spec.actions)


def _action(action: Action, finding: Finding, offer: _Offer) -> dict[str, Any] | None:
    item, facts = finding.item, offer.facts
    if action.kind == "delete_item":
        ref = getattr(item, "ref", None)
        if not ref or getattr(item, "kind", "draft") != "draft":
            return None  # an active order is not removed from a card; the rest still applies
        return {"type": "delete", "description": f"Remove the draft order for {_item_name(finding) or ref}",
                "resourceId": ref}
    product = offer.screen.products.get(action.args.get("rxcui", "")) if offer.screen else None
    dosage = product.dosage_for(action.args.get("dosage")) if product else None
    resource = suggested_resource(action, facts.patient_id, offer.terminology, dosage)
    if action.kind == "create_medication":
        name = resource["medicationCodeableConcept"]["text"]
        return {"type": "create", "description": f"Add a draft order for {name}", "resource": resource}
    return {"type": "create", "description": f"Add a draft order: {resource['code']['text']}", "resource": resource}


def suggested_resource(action: Action, patient_id: str, terminology: Terminology,
                       dosage: Dosage | None = None) -> dict[str, Any]:
    """The draft resource a create action suggests for the patient, validated as FHIR R4: a
    medication with the label's standard starting dose when the screen data gives one.

    It differs between calls only in its subject: each action's resource is built and validated
    once (for its knowledge and dosage), kept as JSON, and read back as a fresh copy per call
    (no part of one call's card is shared with another's)."""
    if _BUILT_FOR[0] is not terminology:  # another knowledge (a reload): the old one's go with it
        _BUILT.clear()
        _BUILT_FOR[0] = terminology
    key = (id(action), id(dosage))
    built = _BUILT.get(key)
    if built is not None and built[0] is action and built[1] is dosage:
        resource: dict[str, Any] = orjson.loads(built[2])
        resource["subject"] = {"reference": f"Patient/{patient_id}"}  # in its place: key order kept
        return resource
    if action.kind == "create_medication":
        resource = _medication_request(action.args, patient_id, terminology, dosage)
    else:
        resource = _service_request(action.args, patient_id, terminology)
    _BUILT[key] = (action, dosage, orjson.dumps(resource))  # bounded by one knowledge's actions and doses
    return resource


# The suggested resources of one knowledge at a time (the service's; a reload's replaces it, so the
# old knowledge is not kept alive by this cache), by action and dosage.
_BUILT: dict[tuple[int, int], tuple[Action, Dosage | None, bytes]] = {}
_BUILT_FOR: list[Terminology | None] = [None]


UCUM = "http://unitsofmeasure.org"
ROUTE_DISPLAYS = {"26643006": "Oral route", "47625008": "Intravenous route", "78421000": "Intramuscular route"}


def dosage_instructions(dosage: Dosage) -> list[dict[str, Any]]:
    """FHIR R4 Dosages for a label's standard dose: one, or one per part of the day's doses tied
    to meals or sleep (same sequence: given together, so a daily dose sums them)."""
    if not dosage.parts:
        return [dosage_instruction(dosage)]
    found = []
    for part in dosage.parts:
        instruction = {"sequence": 1, **_instruction(dosage, part.text)}
        repeat: dict[str, Any] = {"frequency": part.per_day, "period": 1, "periodUnit": "d", "when": list(part.when)}
        if part.offset_min is not None:
            repeat["offset"] = part.offset_min
        instruction["timing"] = {"repeat": repeat}
        found.append(instruction)
    return found


def dosage_instruction(dosage: Dosage) -> dict[str, Any]:
    """A FHIR R4 Dosage for a label's standard starting dose: text, route, dose, frequency; a
    single dose (``once``) is counted once (Timing.repeat.count 1)."""
    instruction = _instruction(dosage, dosage.text)
    if dosage.once:
        instruction["timing"] = {"repeat": {"count": 1, "frequency": 1, "period": 1, "periodUnit": "d"}}
    elif dosage.every:
        period, period_unit = dosage.every
        instruction["timing"] = {"repeat": {"frequency": 1, "period": period, "periodUnit": period_unit}}
    if dosage.as_needed:
        instruction["asNeededBoolean"] = True
    if dosage.max_per_day:
        most, most_unit = dosage.max_per_day
        instruction["maxDosePerPeriod"] = {
            "numerator": {"value": most, "unit": most_unit, "system": UCUM, "code": most_unit},
            "denominator": {"value": 1, "unit": "d", "system": UCUM, "code": "d"}}
    return instruction


def _instruction(dosage: Dosage, text: str) -> dict[str, Any]:
    value, unit = dosage.dose
    route = {"system": SNOMED, "code": dosage.route}
    if dosage.route in ROUTE_DISPLAYS:
        route["display"] = ROUTE_DISPLAYS[dosage.route]
    return {
        "text": text,
        "route": {"coding": [route]},
        "doseAndRate": [{"doseQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}],
    }


def _medication_request(args: dict[str, Any], patient_id: str, terminology: Terminology,
                        dosage: Dosage | None) -> dict[str, Any]:
    product = terminology.products[args["rxcui"]]
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "medicationCodeableConcept": {
            "text": product.name,
            "coding": [{"system": RXNORM, "code": product.rxcui, "display": product.name}],
        },
    }
    if dosage is not None:
        resource["dosageInstruction"] = dosage_instructions(dosage)
    if args.get("quantity"):
        resource["dispenseRequest"] = {"quantity": {"value": args["quantity"]}}
    if args.get("note"):
        resource["note"] = [{"text": args["note"]}]
    return _validated(resource)


# Shapes of created resources that passed FHIR R4 validation. A suggestion's resource differs
# between calls only in its subject (a FHIR id the request schema has already checked), so each
# shape is validated once; the set is bounded by the actions in the knowledge, and the warm-up
# validates them all before the server forks (``warm.warm``).
_VALID_SHAPES: set[bytes] = set()


def _validated(resource: dict[str, Any]) -> dict[str, Any]:
    shape = orjson.dumps({k: v for k, v in resource.items() if k != "subject"}, option=orjson.OPT_SORT_KEYS)
    if shape not in _VALID_SHAPES:
        validate_resource(resource)
        _VALID_SHAPES.add(shape)
    return resource


def _service_request(args: dict[str, Any], patient_id: str, terminology: Terminology) -> dict[str, Any]:
    vs = terminology.valuesets[args["valueset"]]
    system, code = next((s, c) for (s, c) in vs.exact if c == args["code"])
    display = vs.exact[(system, code)]
    resource: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient_id}"},
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
    }
    if args.get("priority"):
        resource["priority"] = args["priority"]
    if args.get("note"):
        resource["note"] = [{"text": args["note"]}]
    return _validated(resource)


FHIR_VERSION_TOPIC = "service.fhir-r4-required"


def fhir_version_card(sign: str, reason_system: str, release: str = "") -> dict[str, Any]:
    """The one card for a call whose data is FHIR DSTU2 or STU3 (``fhir.pre_r4_sign``): no rule
    was run, and the clinician must not read the absence of cards as "all clear"."""
    return {
        "uuid": new_id(),
        "summary": "Not checked: this service needs FHIR R4 data; the EHR sent DSTU2 or STU3",
        "indicator": "warning",
        "detail": (
            f"The request carried {escape(sign)}, which belong to FHIR DSTU2 or STU3. This service reads "
            "FHIR R4 only, so **none of its checks ran for this patient**: no other card does not mean "
            "all clear.\n\nIn the CDS Hooks sandbox, switch to an R4 FHIR server (the gear menu, "
            "*Change FHIR Server*) and try again."
        ),
        "source": {"label": "FHIR R4", "url": "https://hl7.org/fhir/R4/",
                   "topic": {"system": RULE_SYSTEM, "code": FHIR_VERSION_TOPIC, "display": "FHIR version check"}},
        "overrideReasons": [{"system": reason_system, "code": "already-addressed",
                             "display": "Already addressed or not applicable"}],
        **({"extension": {KNOWLEDGE_RELEASE: release}} if release else {}),
    }


CHECKS_NOT_RUN_TOPIC = "service.checks-not-run"
# Prefetch keys in a clinician's words.
_DATA_WORDS = {"patient": "patient details (age, sex)", "conditions": "problem list",
               "medications": "medication orders", "allergies": "allergy list",
               "medicationStatements": "medication statements", "medicationDispenses": "dispensed medications",
               "observations": "recent results"}
_UNKNOWN_WHY = "not available for this call"


def checks_not_run_card(unchecked: list[tuple[Rule, frozenset[str]]], why: Mapping[str, str],
                        reason_system: str, release: str = "") -> dict[str, Any]:
    """The one card saying which checks did not run for want of data, and why: a module's gate
    held (the patient has the condition it is about), so silence would read as "all clear".
    ``unchecked``: (rule, the prefetch keys it lacked); ``why``: per key, why it could not be had."""
    keys = sorted({key for _, lacking in unchecked for key in lacking})
    titles = list(dict.fromkeys(rule.title for rule, _ in unchecked))
    data = "\n".join(f"- {escape(_DATA_WORDS.get(k, k))}: {escape(why.get(k, _UNKNOWN_WHY))}" for k in keys)
    checks = "\n".join(f"- {escape(title)}" for title in titles)
    summary = shorten(f"{len(titles)} check{'s' if len(titles) != 1 else ''} did not run: "
                      + ", ".join(_DATA_WORDS.get(k, k) for k in keys) + " could not be obtained", SUMMARY_LIMIT)
    return {
        "uuid": new_id(),
        "summary": summary,
        "indicator": "info",
        "detail": (
            "Part of this patient's record could not be obtained, so **these checks did not run**; "
            "no card from them does not mean all clear. Review the record yourself, or try again.\n\n"
            f"**Checks that did not run**\n\n{checks}\n\n**Data that could not be obtained**\n\n{data}"
        ),
        "source": {"label": "CDS Hooks prefetch", "url": "https://cds-hooks.hl7.org/2.0/#prefetch-template",
                   "topic": {"system": RULE_SYSTEM, "code": CHECKS_NOT_RUN_TOPIC, "display": "Checks not run"}},
        "overrideReasons": [{"system": reason_system, "code": "already-addressed",
                             "display": "Already addressed or not applicable"}],
        **({"extension": {KNOWLEDGE_RELEASE: release}} if release else {}),
    }
