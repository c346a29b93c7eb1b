"""Builds hook requests from the compact case files in tests/cases/*.yaml.

A case names a persona (fhir_fixtures/patients/<name>.json), may add records
(conditions, medications, observations, allergies) and draft orders in a
short form, and lists the cards it expects (rule id and indicator). The
request is shaped like the CDS Hooks sandbox's: draftOrders without
Bundle.type, complete prefetch.
"""
from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from cds_service.errors import did_you_mean
from cds_service.knowledge.evaluate import explain_request, facts_for
from helpers import NOW, load_fixture

SYSTEMS = {
    "icd10": "http://hl7.org/fhir/sid/icd-10-cm",
    "snomed": "http://snomed.info/sct",
    "rxnorm": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "loinc": "http://loinc.org",
    "cpt": "http://www.ama-assn.org/go/cpt",
}
PREFETCH_OF = {"Condition": "conditions", "MedicationRequest": "medications", "Medication": "medications",
               "AllergyIntolerance": "allergies", "Observation": "observations",
               "MedicationStatement": "medicationStatements", "MedicationDispense": "medicationDispenses"}


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
    return res


def observation(spec: dict[str, Any], patient: str, n: int) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation", "id": f"case-observation-{n}", "status": "final",
        "code": {"coding": [{"system": SYSTEMS["loinc"], "code": spec["loinc"]}], "text": spec.get("text", spec["loinc"])},
        "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": spec["date"],
        "valueQuantity": {"value": spec["value"], "system": "http://unitsofmeasure.org", "code": spec.get("unit", "1")},
    }
    if spec.get("interpretation"):
        res["interpretation"] = [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": spec["interpretation"]}]}]
    return res


def allergy(spec: dict[str, Any], patient: str, n: int) -> dict[str, Any]:
    return {"resourceType": "AllergyIntolerance", "id": f"case-allergy-{n}", "patient": {"reference": f"Patient/{patient}"},
            "code": _concept(spec)}


def build_request(case: dict[str, Any]) -> dict[str, Any]:
    bundle = copy.deepcopy(load_fixture(f"patients/{case['patient']}.json"))
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


# What a negative case (one that names a rule and does not expect its card) really tests.
GATE_WORDS = {
    "rule": "it tests the rule itself (hook listened to, module applies): remove tests_gate",
    "hook": "its hook is not one the rule listens to: it tests that gate, so say tests_gate: hook",
    "module": "the rule's module does not apply to its patient: it tests that gate, so say tests_gate: module",
}


def _rule_and_module(knowledge: Any, rule_id: str) -> tuple[Any, Any]:
    return next((r, m) for m in knowledge.modules.values() for r in m.rules if r.id == rule_id)


def negative_kind(knowledge: Any, case: dict[str, Any]) -> str:
    """'hook' when the rule does not listen to the case's hook, 'module' when the rule's module
    gate does not hold for its patient, else 'rule' (the case exercises the rule's own conditions)."""
    rule, module = _rule_and_module(knowledge, case["rule"])
    if case["hook"] not in rule.hooks:
        return "hook"
    facts = facts_for(knowledge, build_request(case), NOW)
    return "rule" if module.gate(facts, None) is not None else "module"


def explain_case(app: Any, case: dict[str, Any], got: Counter, want: Counter) -> str:
    """For each rule missing or unexpected, which of its conditions held and which did not."""
    # keys are (rule, indicator, merged rules): a merged card stands for each of its rules
    differing = sorted({rule for key in (got - want) + (want - got) for rule in (key[0], *(key[2] if len(key) > 2 else ()))})
    return explain_request(app.extensions["cds"].knowledge, build_request(case), differing, NOW)


def no_such_rule(rule_id: str, known: set[str]) -> str:
    return f"no such rule '{rule_id}'{did_you_mean(rule_id, known)}"
