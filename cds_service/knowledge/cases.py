"""Clinical cases (tests/cases/*.yaml): read and checked with the fix for each mistake, built into
hook requests, run offline, and compared with what they expect.

One source of truth for ``cds-service knowledge check`` / ``knowledge test RULE`` and the test
suite (tests/casebuilder.py and tests/test_cases.py call this module). A case names a persona
(``fhir_fixtures/patients/<name>.json``), may add records (conditions, medications, observations,
allergies, statements) and draft orders in a short form, and lists the cards it expects (rule id
and indicator); its format is documented in docs/knowledge.md ("The case format"). The request
is shaped like the CDS Hooks sandbox's: draftOrders without Bundle.type, complete prefetch.
"""
from __future__ import annotations

import copy
import html
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from cds_service.core.hooks import PREFETCH_KEY_OF
from cds_service.core.rules import Knowledge
from cds_service.errors import did_you_mean
from cds_service.knowledge.evaluate import evaluate_request, explain_request, facts_for

SYSTEMS = {
    "icd10": "http://hl7.org/fhir/sid/icd-10-cm",
    "snomed": "http://snomed.info/sct",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "loinc": "http://loinc.org",
    "cpt": "http://www.ama-assn.org/go/cpt",
}
# A Medication a case names goes with the orders that reference it.
PREFETCH_OF = {**PREFETCH_KEY_OF, "Medication": "medications"}


def _concept(spec: dict[str, Any]) -> dict[str, Any]:
    if "code" not in spec:  # an order known only by its text (e.g. bed rest)
        return {"text": spec["text"]}
    # a short name, or a system written as an EHR writes it (an OID, WHO ICD-10: tests/cases/*-dialects.yaml)
    coding = {"system": SYSTEMS.get(spec["system"], spec["system"]), "code": spec["code"]}
    if spec.get("display"):
        coding["display"] = spec["display"]
    concept: dict[str, Any] = {"coding": [coding]}
    if spec.get("display") or spec.get("text"):
        concept["text"] = spec.get("text") or spec["display"]
    return concept


def condition(spec: dict[str, Any], patient: str, n: int) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Condition", "id": f"case-condition-{n}",
        "subject": {"reference": f"Patient/{patient}"}, "code": _concept(spec),
    }
    if spec.get("clinical", "active") is not None:
        res["clinicalStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                             "code": spec.get("clinical", "active")}]}
    res["verificationStatus"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                             "code": spec.get("verification", "confirmed")}]}
    if spec.get("onset"):
        res["onsetDateTime"] = spec["onset"]
    if spec.get("abatement"):  # when it ended (Synthea writes it with clinicalStatus resolved)
        res["abatementDateTime"] = spec["abatement"]
    if spec.get("category"):  # e.g. encounter-diagnosis (an EHR's visit diagnosis)
        res["category"] = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                        "code": spec["category"]}]}]
    return res


def medication(spec: dict[str, Any], patient: str, rid: str, status: str) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": rid, "status": spec.get("status", status),
        "intent": "order", "subject": {"reference": f"Patient/{patient}"}, "authoredOn": spec.get("start", "2026-11-23"),
    }
    if spec.get("rxcui") or spec.get("text"):
        concept: dict[str, Any] = {"text": spec.get("text") or spec.get("display") or spec["rxcui"]}
        if spec.get("rxcui"):
            concept["coding"] = [{"system": SYSTEMS["rxnorm"], "code": spec["rxcui"], "display": concept["text"]}]
        res["medicationCodeableConcept"] = concept
    if spec.get("ndc"):  # a drug sent by its NDC only (no RxNorm code, no name)
        res["medicationCodeableConcept"] = {"coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": spec["ndc"]}]}
    if spec.get("reference"):  # the drug named through medicationReference (pending cases, R1)
        _refer_to_medication(res, spec["reference"])
    dosage = _dosage(spec)
    if dosage:
        res["dosageInstruction"] = [dosage]
    if spec.get("supply_days"):
        res["dispenseRequest"] = {"expectedSupplyDuration": {"value": spec["supply_days"], "unit": "days",
                                                             "system": "http://unitsofmeasure.org", "code": "d"}}
    if spec.get("quantity"):  # tablets dispensed (the course is counted from them and the daily dose)
        res.setdefault("dispenseRequest", {})["quantity"] = {"value": spec["quantity"]}
    if spec.get("reason"):
        res["reasonCode"] = [_concept(spec["reason"])]
    if spec.get("note"):  # the prescriber's note (Annotation text), read by reason_named
        res["note"] = [{"text": spec["note"]}]
    if spec.get("do_not_perform"):  # an order NOT to give it ("do not give morphine")
        res["doNotPerform"] = True
    if spec.get("route"):  # text: the engine does not trust it; {snomed, display}: a coded route it reads
        dosage = res.setdefault("dosageInstruction", [{}])[0]
        route = spec["route"]
        dosage["route"] = {"text": route} if isinstance(route, str) else {
            "coding": [{"system": SYSTEMS["snomed"], "code": route["snomed"], "display": route.get("display", "")}],
            "text": route.get("display", "")}
    if spec.get("route_code"):  # a coded route on the order itself (R5)
        dosage = res.setdefault("dosageInstruction", [{}])[0]
        dosage["route"] = _concept(spec["route_code"])
    return res


def statement(spec: dict[str, Any], patient: str, n: int) -> dict[str, Any]:
    """A MedicationStatement (R8): what the patient reports taking, e.g. prescribed elsewhere."""
    res = medication(spec, patient, f"case-statement-{n}", "active")
    res["resourceType"] = "MedicationStatement"
    for key in ("intent", "authoredOn"):
        res.pop(key, None)
    res["effectiveDateTime"] = spec.get("start", "2026-11-23")
    return res


def _refer_to_medication(res: dict[str, Any], where: str) -> None:
    """Moves the drug into a Medication: contained (#med-<id>), a separate draftOrders entry
    (Medication/med-<id>, added by build_request), or a reference that resolves nowhere."""
    concept = res.pop("medicationCodeableConcept", None)
    mid = f"med-{res['id']}"
    if where == "contained":
        res["contained"] = [{"resourceType": "Medication", "id": mid, "code": concept}]
        res["medicationReference"] = {"reference": f"#{mid}"}
    elif where == "bundle":
        res["_bundle_medication"] = {"resourceType": "Medication", "id": mid, "code": concept}
        res["medicationReference"] = {"reference": f"Medication/{mid}"}
    else:
        res["medicationReference"] = {"reference": "Medication/does-not-exist"}


def _dosage(spec: dict[str, Any]) -> dict[str, Any] | None:
    if "dose" not in spec and not spec.get("sig"):
        return None
    if "dose" not in spec:
        return {"text": spec["sig"]}
    value, unit, *system = spec["dose"]  # a third item: the unit's system (e.g. SNOMED CT "258684004")
    dose = {"value": value, "system": SYSTEMS.get(system[0], system[0]) if system else "http://unitsofmeasure.org",
            "code": unit}
    dosage: dict[str, Any] = {"doseAndRate": [{"doseQuantity": dose}]} if value is not None else {}
    if spec.get("sig"):  # the sig in words, as the prescriber typed it
        dosage["text"] = spec["sig"]
    if spec.get("per_day"):
        dosage["timing"] = {"repeat": {"frequency": spec["per_day"], "period": 1, "periodUnit": "d"}}
    return dosage


def service_request(spec: dict[str, Any], patient: str, rid: str) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "ServiceRequest", "id": rid, "status": spec.get("status", "draft"),
                           "intent": "order", "subject": {"reference": f"Patient/{patient}"}, "code": _concept(spec)}
    if spec.get("reason"):
        res["reasonCode"] = [_concept(spec["reason"])]
    if spec.get("detail"):  # free-text order detail (R3 reads it with the code text)
        res["orderDetail"] = [{"text": spec["detail"]}]
    if spec.get("category"):  # e.g. SNOMED CT 387713003 Surgical procedure (R3)
        res["category"] = [_concept(spec["category"])]
    if spec.get("do_not_perform"):  # an order NOT to do it
        res["doNotPerform"] = True
    return res


def observation(spec: dict[str, Any], patient: str, n: int) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation", "id": f"case-observation-{n}", "status": spec.get("status", "final"),
        "code": {"coding": [{"system": SYSTEMS["loinc"], "code": spec["loinc"]}], "text": spec.get("text", spec["loinc"])},
        "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": spec["date"],
    }
    if "result" in spec:  # a qualitative result, coded (SNOMED CT), e.g. a pregnancy test
        if spec["result"] is None:  # an observation with no value at all (e.g. a status not answered)
            return res
        res["valueCodeableConcept"] = {"coding": [{"system": SYSTEMS["snomed"], "code": spec["result"]}]}
        return res
    res["valueQuantity"] = {"value": spec["value"], "system": "http://unitsofmeasure.org", "code": spec.get("unit", "1")}
    if spec.get("comparator"):  # "<" for "<9.0": a bound the lab reports instead of a value
        res["valueQuantity"]["comparator"] = spec["comparator"]
    if spec.get("unit_text"):  # the unit as a lab prints it; with `unit: null`, the only unit given
        res["valueQuantity"]["unit"] = spec["unit_text"]
        if spec.get("unit", "1") is None:
            del res["valueQuantity"]["code"], res["valueQuantity"]["system"]
    if spec.get("interpretation"):
        res["interpretation"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": spec["interpretation"]}]}]
    return res


def allergy(spec: dict[str, Any], patient: str, n: int) -> dict[str, Any]:
    return {"resourceType": "AllergyIntolerance", "id": f"case-allergy-{n}", "patient": {"reference": f"Patient/{patient}"},
            "code": _concept(spec)}


def build_request(case: dict[str, Any], fixtures: Path) -> dict[str, Any]:
    """The CDS Hooks request a case stands for: its persona (``fixtures``/patients/<name>.json), its
    record added, its drafts, a complete prefetch."""
    bundle = copy.deepcopy(orjson.loads((fixtures / "patients" / f"{case['patient']}.json").read_bytes()))
    resources = [e["resource"] for e in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    pid = patient["id"]
    if "birth_date" in case:
        patient["birthDate"] = case["birth_date"]
    if case.get("replace_record"):
        resources = [patient]
    record = case.get("record", {})
    resources += [condition(c, pid, i) for i, c in enumerate(record.get("conditions", []))]
    resources += [medication(m, pid, f"case-active-{i}", "active") for i, m in enumerate(record.get("medications", []))]
    resources += [observation(o, pid, i) for i, o in enumerate(record.get("observations", []))]
    resources += [allergy(a, pid, i) for i, a in enumerate(record.get("allergies", []))]
    resources += [statement(s, pid, i) for i, s in enumerate(record.get("statements", []))]
    # a record medication named through a Medication of the prefetch searchset (its `include`, R1)
    resources += [r.pop("_bundle_medication") for r in list(resources) if "_bundle_medication" in r]
    prefetch: dict[str, Any] = {"patient": patient}
    for key in PREFETCH_OF.values():
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    for res in resources:
        if res["resourceType"] in PREFETCH_OF:
            prefetch[PREFETCH_OF[res["resourceType"]]]["entry"].append({"resource": res})
    drafts = []
    for i, draft in enumerate(case.get("drafts", [])):
        rid = f"request-{i + 1}"
        if "procedure" in draft:
            drafts.append(service_request(draft["procedure"], pid, rid))
        else:
            drafts.append(medication(draft["medication"], pid, rid, "draft"))
    drafts += [d.pop("_bundle_medication") for d in list(drafts) if "_bundle_medication" in d]
    context: dict[str, Any] = {"patientId": pid, "userId": "Practitioner/COREPRACTITIONER1"}
    if case["hook"] != "patient-view":
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": d} for d in drafts]}
    if case["hook"] == "order-select":
        context["selections"] = [f"{d['resourceType']}/{d['id']}" for d in drafts[:1]]
    return {"hook": case["hook"], "hookInstance": "8f2a9d1e-3c4b-4e5f-9a6b-7c8d9e0f1a2b",
            "fhirServer": "http://127.0.0.1:8081", "context": context, "prefetch": prefetch}



# ---------------------------------------------------------------- reading and checking case files

# Each part of a case: its required keys, then its optional ones (docs/knowledge.md, "The case format").
CONCEPT = ((), ("system", "code", "display", "text"))
SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "case": (("id", "rule", "description", "hook", "patient", "expect"),
             ("birth_date", "replace_record", "tests_gate", "record", "drafts", "feedback", "feature")),
    "record": ((), ("conditions", "medications", "observations", "allergies", "statements")),
    "conditions": (("code",), (*CONCEPT[1], "onset", "abatement", "clinical", "verification",
                                  "category")),
    "allergies": (("code",), CONCEPT[1]),
    "observations": (("loinc", "date"), ("value", "result", "text", "unit", "unit_text", "interpretation",
                                         "comparator", "status")),
    "medications": ((), ("rxcui", "text", "display", "status", "start", "reference", "dose", "per_day",
                         "supply_days", "reason", "note", "route", "route_code", "do_not_perform", "ndc", "quantity",
                         "sig")),
    "procedure": ((), (*CONCEPT[1], "status", "reason", "detail", "category", "do_not_perform")),
    "expect": (("rule", "indicator"), ("summary_contains", "detail_contains", "detail_excludes", "suggestions",
                                        "merged_rules")),
    "feedback": (("rule", "outcome", "days_ago"), ("reason", "drug_ingredient", "route", "dose_mg")),
}
SHAPES["statements"] = SHAPES["medications"]
# The key an author may reach for, and the one the case format uses.
INSTEAD = {("observations", "code"): "an observation names its LOINC code with loinc: (e.g. loinc: 29463-7)",
           ("observations", "system"): "an observation is always LOINC: write loinc: CODE",
           ("medications", "code"): "a medication names its RxNorm code with rxcui:",
           ("observations", "units"): "one result has one unit: unit: (a UCUM code) or unit_text:"}
HOOKS = ("patient-view", "order-select", "order-sign")
INDICATORS = ("info", "warning", "critical")


class CaseError(ValueError):
    """Case files that cannot be used; ``problems`` names each: file, case id, key path, fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("Cases are invalid:\n  " + "\n  ".join(problems))
        self.problems = problems


def read_cases(directory: Path, fixtures: Path | None = None) -> list[dict[str, Any]]:
    """Every case of ``directory``/*.yaml, in file order; CaseError naming every problem."""
    cases, problems = [], []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text("utf-8")) or {}
        except yaml.YAMLError as exc:
            problems.append(f"{path.name}: not valid YAML: {str(exc).splitlines()[0]}")
            continue
        for i, case in enumerate(data.get("cases") or [] if isinstance(data, dict) else []):
            name = case.get("id") if isinstance(case, dict) else None
            where = f"{path.name}: case {name}" if isinstance(name, str) else f"{path.name}: cases[{i}]"
            found = case_problems(case, fixtures)
            problems += [f"{where}: {p}" for p in found]
            if isinstance(name, str) and name in seen:
                problems.append(f"{where}: id also used in {seen[name]}: each case id is unique")
            if isinstance(name, str):
                seen[name] = path.name
            if not found:
                cases.append(case)
    if problems:
        raise CaseError(problems)
    return cases


def case_problems(case: Any, fixtures: Path | None = None) -> list[str]:
    """What is wrong with one case, each as ``key path: problem (fix)``."""
    found = _shape(case, "case", "")
    if found:
        return found
    if case["hook"] not in HOOKS:
        found.append(f"hook: {case['hook']!r} is not one of {', '.join(HOOKS)}{did_you_mean(case['hook'], HOOKS)}")
    if fixtures is not None and not (fixtures / "patients" / f"{case['patient']}.json").exists():
        known = sorted(p.stem for p in (fixtures / "patients").glob("*.json"))
        found.append(f"patient: no persona '{case['patient']}' in fhir_fixtures/patients/"
                     f"{did_you_mean(case['patient'], known)}")
    if case.get("tests_gate") not in (None, "hook", "module"):
        found.append(f"tests_gate: {case['tests_gate']!r} is not hook or module")
    record = case.get("record") or {}
    shape = _shape(record, "record", "record")
    found += shape
    for part, items in ({} if shape else record).items():
        found += [p for i, item in enumerate(items or []) for p in _shape(item, part, f"record.{part}[{i}]")]
    for i, draft in enumerate(case.get("drafts") or []):
        kind = next(iter(draft), None) if isinstance(draft, dict) and len(draft) == 1 else None
        if kind not in ("medication", "procedure"):
            found.append(f"drafts[{i}]: a draft is {{medication: {{...}}}} or {{procedure: {{...}}}}, not {draft!r}")
            continue
        found += _shape(draft[kind], "medications" if kind == "medication" else "procedure", f"drafts[{i}].{kind}")
    for i, want in enumerate(case["expect"] or []):
        found += _shape(want, "expect", f"expect[{i}]")
        if isinstance(want, dict) and want.get("indicator") not in INDICATORS:
            found.append(f"expect[{i}].indicator: {want.get('indicator')!r} is not one of {', '.join(INDICATORS)}")
    for i, entry in enumerate(case.get("feedback") or []):
        found += _shape(entry, "feedback", f"feedback[{i}]")
    return found


def _shape(value: Any, shape: str, where: str) -> list[str]:
    required, optional = SHAPES[shape]
    allowed = (*required, *optional)
    at = f"{where}: " if where else ""
    if not isinstance(value, dict):
        return [f"{at}a mapping with keys {', '.join(allowed)} is expected, not {value!r}"]
    found = []
    for key in value:
        if key not in allowed and value[key] is None and " " in str(key):  # YAML flow style split a text
            found.append(f"{where + '.' if where else ''}{key}: a text was cut at a comma: put it in quotes")
        elif key not in allowed:
            fix = INSTEAD.get((shape, key)) or f"allowed: {', '.join(allowed)}"
            found.append(f"{where + '.' if where else ''}{key}: unknown key{did_you_mean(str(key), allowed)} ({fix})")
    for key in required:
        if key not in value and not (shape in ("conditions", "allergies") and "text" in value):
            found.append(f"{at}missing key '{key}' (keys: {', '.join(required)}; optional: {', '.join(optional)})")
    if shape == "observations" and "value" not in value and "result" not in value:
        found.append(f"{at}a result needs value: (a number) or result: (a SNOMED CT code of a coded result)")
    return found


# ---------------------------------------------------------------- running cases offline

@dataclass(frozen=True)
class Outcome:
    case: dict[str, Any]
    request: dict[str, Any]
    cards: list[dict[str, Any]]
    problems: list[str]  # what differs from what the case expects, each with the explanation


def card_key(card: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
    """What a case expects of a card: its rule id, indicator and, for a merged card, every rule
    merged into it in order (``merged_rules``; the first is the card's own rule id)."""
    from cds_service.core.cards import MERGED_RULES

    return card["source"]["topic"]["code"], card["indicator"], tuple(card.get("extension", {}).get(MERGED_RULES, ()))


def expected_rules(case: dict[str, Any]) -> set[str]:
    """Every rule a case expects a card from, merged info cards included."""
    return {r for e in case["expect"] for r in (e["rule"], *e.get("merged_rules", ()))}


MARKDOWN_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|<>~])")


def unescaped(markdown: str) -> str:
    """Markdown text as a reader sees it: "\\[Ampyra\\]" is "[Ampyra]", "\\{1.73\\_m2\\}" is "{1.73_m2}"."""
    return html.unescape(MARKDOWN_ESCAPE.sub(r"\1", markdown))


def compare(case: dict[str, Any], cards: list[dict[str, Any]]) -> list[str]:
    """How ``cards`` differ from what the case expects (cards by rule and indicator, then the
    texts and suggestion labels it names); [] when they agree."""
    got = Counter(card_key(c) for c in cards)
    want = Counter((e["rule"], e["indicator"], tuple(e.get("merged_rules", ()))) for e in case["expect"])
    if got != want:
        return [f"{case['description']}: expected {sorted(want)}, got {sorted(got)}"]
    found = []
    for expectation in case["expect"]:
        card = next(c for c in cards if c["source"]["topic"]["code"] == expectation["rule"])
        for fragment in expectation.get("summary_contains", []):
            if fragment.lower() not in card["summary"].lower():
                found.append(f"summary_contains: {fragment!r} not in {card['summary']!r}")
        detail = unescaped(card["detail"]).lower()  # as the clinician reads it
        for fragment in expectation.get("detail_contains", []):
            if fragment.lower() not in detail:
                found.append(f"detail_contains: {fragment!r} not in the detail")
        for fragment in expectation.get("detail_excludes", []):
            if fragment.lower() in detail:
                found.append(f"detail_excludes: {fragment!r} is in the detail")
        if "suggestions" in expectation:
            labels = [s["label"] for s in card.get("suggestions", [])]
            if labels != expectation["suggestions"]:
                found.append(f"suggestions: expected {expectation['suggestions']}, got {labels}")
    return found


def run_case(knowledge: Knowledge, case: dict[str, Any], fixtures: Path, now: datetime) -> Outcome:
    """One case offline (no HTTP, no storage: a case that seeds feedback is judged without it)."""
    request = build_request(case, fixtures)
    cards = evaluate_request(knowledge, request, now, "http://127.0.0.1:8080/rules").cards
    problems = compare(case, cards)
    if problems:  # which conditions held: of the rules that differ, else of the case's own rule
        got = Counter(card_key(c) for c in cards)
        want = Counter((e["rule"], e["indicator"], tuple(e.get("merged_rules", ()))) for e in case["expect"])
        if got == want:
            got = Counter({(case["rule"], "", ()): 1})
        problems.append(explain_case(knowledge, case, got, want, fixtures, now))
    return Outcome(case, request, cards, problems)


# What a negative case (one that names a rule and does not expect its card) really tests.
GATE_WORDS = {
    "rule": "it tests the rule itself (hook listened to, module applies): remove tests_gate",
    "hook": "its hook is not one the rule listens to: it tests that gate, so say tests_gate: hook",
    "module": "the rule's module does not apply to its patient: it tests that gate, so say tests_gate: module",
}


def _rule_and_module(knowledge: Knowledge, rule_id: str) -> tuple[Any, Any]:
    return next((r, m) for m in knowledge.modules.values() for r in m.rules if r.id == rule_id)


def negative_kind(knowledge: Knowledge, case: dict[str, Any], fixtures: Path, now: datetime) -> str:
    """'hook' when the rule does not listen to the case's hook, 'module' when the rule's module
    gate does not hold for its patient, else 'rule' (the case exercises the rule's own conditions)."""
    rule, module = _rule_and_module(knowledge, case["rule"])
    if case["hook"] not in rule.hooks:
        return "hook"
    facts = facts_for(knowledge, build_request(case, fixtures), now)
    return "rule" if module.gate(facts, None) is not None else "module"


def explain_case(knowledge: Knowledge, case: dict[str, Any], got: Counter[Any], want: Counter[Any], fixtures: Path,
                 now: datetime) -> str:
    """For each rule missing or unexpected, which of its conditions held and which did not."""
    # keys are (rule, indicator, merged rules): a merged card stands for each of its rules
    differing = sorted({rule for key in (got - want) + (want - got) for rule in (key[0], *(key[2] if len(key) > 2 else ()))})
    return explain_request(knowledge, build_request(case, fixtures), differing, now)


def no_such_rule(rule_id: str, known: set[str]) -> str:
    return f"no such rule '{rule_id}'{did_you_mean(rule_id, known)}"


def pairing_problems(knowledge: Knowledge, cases: list[dict[str, Any]], fixtures: Path, now: datetime,
                     only: str | None = None) -> list[str]:
    """Every rule (or only ``only``) needs, on each hook it listens to, a case that expects its card
    and a negative case that tests the rule itself; a negative case that tests a gate must say
    which. Each problem with the fix."""
    rules = {rule.id: (f"modules/{m.id}.yaml", rule.hooks) for m in knowledge.modules.values() for rule in m.rules}
    found = []
    for case in cases:
        for rule_id in sorted(({case["rule"]} | expected_rules(case)) - set(rules)):
            found.append(f"case {case['id']}: {no_such_rule(rule_id, set(rules))}")
    positive = {(r, case["hook"]) for case in cases for r in expected_rules(case)}
    negative = set()
    for case in cases:
        if case["rule"] not in rules or case["rule"] in expected_rules(case) or only not in (None, case["rule"]):
            continue
        kind = negative_kind(knowledge, case, fixtures, now)
        if kind != case.get("tests_gate", "rule"):
            found.append(f"case {case['id']} ({case['rule']}): {GATE_WORDS[kind]}")
        if kind == "rule":
            negative.add((case["rule"], case["hook"]))
    for rule_id, (file, hooks) in rules.items():
        if only not in (None, rule_id):
            continue
        for hook in sorted(hooks):
            if (rule_id, hook) not in positive:
                found.append(f"{file}: rule {rule_id}: no positive case on {hook}: add a case with hook: {hook} "
                             "whose expect names it")
            if (rule_id, hook) not in negative:
                found.append(f"{file}: rule {rule_id}: no negative case on {hook} for a patient its module applies to: "
                             f"add the closest case with hook: {hook} in which its card must not show")
    return found
