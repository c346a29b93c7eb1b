"""Benchmark requests: sandbox-shaped CDS Hooks calls with a big, realistic prefetch.

The patient is the fixture persona ``mcas-ms-older-adult`` (MCAS + MS + low back
pain + osteoporosis, on diphenhydramine), so both modules' gates open and many
rules run. Its record is padded with ``n`` generated Observations: LOINC-coded
vital signs and labs (valueQuantity, effectiveDateTime, referenceRange,
interpretation), and every tenth one a result the rules read (urine LTE4
33343-5, DXA T-score 38267-1, ...), so that "latest result" selection works
over a real series; the newest LTE4 is high (interpretation H) and the newest
lumbar DXA T-score is -2.7.

Complete prefetch: every key the service advertises in discovery is sent. The
observations are sent under ``observations`` for every hook (order-select and
order-sign do not ask for them with the current knowledge: they are parsed
and carried, not read). Deterministic: the same arguments give the same bytes.
"""
from __future__ import annotations

import copy
import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PERSONA = ROOT / "fhir_fixtures" / "patients" / "mcas-ms-older-adult.json"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
HOOK_INSTANCE = "5b1c1b56-0e2a-4bb6-9c35-2f6b7e1c9a10"
USER = "Practitioner/COREPRACTITIONER1"
SIZES = {"20KB": 10, "300KB": 250, "1MB": 850}  # label -> generated Observations (≈1.2 KB each, compact JSON)
HOOKS = ("patient-view", "order-select", "order-sign")
SERVICE_OF = {
    "patient-view": "back-pain-patient-view",
    "order-select": "back-pain-order-select",
    "order-sign": "back-pain-order-sign",
}
# What a complete prefetch holds for each key (what discovery asks with the current knowledge).
PREFETCH_KEYS = {
    "patient-view": ("patient", "conditions", "medications", "observations"),
    "order-select": ("patient", "conditions", "medications", "allergies", "observations"),
    "order-sign": ("patient", "conditions", "medications", "allergies", "observations"),
}

# (LOINC, display, text, category, UCUM unit, mean, spread, low, high, decimals)
VITALS_AND_LABS = [
    ("8867-4", "Heart rate", "Heart rate", "vital-signs", "/min", 74, 9, 60, 100, 0),
    ("9279-1", "Respiratory rate", "Respiratory rate", "vital-signs", "/min", 15, 2, 12, 20, 0),
    ("8310-5", "Body temperature", "Body temperature", "vital-signs", "Cel", 36.8, 0.3, 36.1, 37.2, 1),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "SpO2", "vital-signs", "%", 97, 1.5, 95, 100, 0),
    ("29463-7", "Body weight", "Body weight", "vital-signs", "kg", 68, 1.2, None, None, 1),
    ("39156-5", "Body mass index (BMI) [Ratio]", "BMI", "vital-signs", "kg/m2", 25.1, 0.5, 18.5, 25, 1),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "Glucose", "laboratory", "mg/dL", 96, 12, 70, 99, 0),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "Hemoglobin", "laboratory", "g/dL", 13.2, 0.8, 12, 15.5, 1),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "Creatinine", "laboratory", "mg/dL", 0.9, 0.12, 0.6, 1.1, 2),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "WBC", "laboratory", "10*3/uL", 6.8, 1.5, 4.5, 11, 1),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "Platelets", "laboratory", "10*3/uL", 250, 40, 150, 400, 0),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "Sodium", "laboratory", "mmol/L", 140, 2, 136, 145, 0),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "Potassium", "laboratory", "mmol/L", 4.2, 0.3, 3.5, 5.1, 1),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "ALT", "laboratory", "U/L", 24, 7, 7, 35, 0),
    ("1989-3", "25-Hydroxyvitamin D3 [Mass/volume] in Serum or Plasma", "Vitamin D 25-OH", "laboratory", "ng/mL", 28, 6, 30, 100, 0),
]
# Results the rules read: (LOINC, display, text, category, unit, value(s) for the series)
RULE_READ = [
    ("33343-5", "Leukotriene E4 (LTE4/creatinine)", "Leukotriene E4, random urine, per creatinine", "laboratory",
     "pg/mg{creat}", (90, 140, 180, 120, 250)),
    ("38267-1", "DXA Lumbar spine [T-score] Bone density", "DXA lumbar spine T-score", "imaging", "1",
     (-2.1, -2.3, -2.4, -2.6, -2.7)),
]
LAST_DATE = date(2026, 10, 1)


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": text or display}


def _category(code: str) -> list[dict[str, Any]]:
    display = {"vital-signs": "Vital Signs", "laboratory": "Laboratory", "imaging": "Imaging"}[code]
    return [{"coding": [{"system": CATEGORY, "code": code, "display": display}]}]


def _interpretation(code: str) -> list[dict[str, Any]]:
    display = {"H": "High", "L": "Low", "N": "Normal"}[code]
    return [{"coding": [{"system": INTERP, "code": code, "display": display}]}]


def observations(n: int, patient_id: str) -> list[dict[str, Any]]:
    """``n`` Observations, newest first, dated back from 2026-10-01; every tenth one is rule-read."""
    rng = random.Random(20261123 + n)
    found = []
    rule_read_seen = {code: 0 for code, *_ in RULE_READ}
    for i in range(n):
        when = LAST_DATE - timedelta(days=3 * i + rng.randint(0, 2))
        stamp = f"{when.isoformat()}T{8 + rng.randint(0, 9):02d}:{rng.randint(0, 59):02d}:00-05:00"
        res: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"bench-obs-{n}-{i}",
            "meta": {"versionId": "1", "lastUpdated": f"{when.isoformat()}T18:00:00Z"},
            "status": "final",
            "subject": {"reference": f"Patient/{patient_id}"},
            "encounter": {"reference": f"Encounter/bench-enc-{i // 5}"},
            "effectiveDateTime": stamp,
            "issued": f"{when.isoformat()}T18:00:00Z",
            "performer": [{"reference": "Organization/bench-lab", "display": "Bench Reference Laboratory"}],
        }
        if i % 10 == 0:
            code, display, text, category, unit, series = RULE_READ[(i // 10) % len(RULE_READ)]
            k = rule_read_seen[code]
            rule_read_seen[code] += 1
            value = series[-1 - k] if k < len(series) else series[0]  # newest first: the newest is the last of the series
            res["category"] = _category(category)
            res["code"] = _concept(LOINC, code, display, text)
            res["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
            if code == "33343-5":
                res["interpretation"] = _interpretation("H" if value > 104 else "N")
                res["referenceRange"] = [{"high": {"value": 104, "unit": unit, "system": UCUM, "code": unit},
                                          "text": "<=104 pg/mg creatinine"}]
        else:
            code, display, text, category, unit, mean, spread, low, high, decimals = VITALS_AND_LABS[i % len(VITALS_AND_LABS)]
            value = round(rng.gauss(mean, spread), decimals)
            value = int(value) if decimals == 0 else value
            res["category"] = _category(category)
            res["code"] = _concept(LOINC, code, display, text)
            res["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
            if low is not None:
                res["referenceRange"] = [{"low": {"value": low, "unit": unit, "system": UCUM, "code": unit},
                                          "high": {"value": high, "unit": unit, "system": UCUM, "code": unit}}]
                res["interpretation"] = _interpretation("H" if value > high else "L" if value < low else "N")
        found.append(res)
    return found


def _persona() -> list[dict[str, Any]]:
    bundle = json.loads(PERSONA.read_text("utf-8"))
    return [copy.deepcopy(e["resource"]) for e in bundle["entry"]]


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"http://127.0.0.1/fhir/{r['resourceType']}/{r.get('id', '')}",
                       "resource": r, "search": {"mode": "match"}} for r in resources]}


def record(n_observations: int) -> dict[str, Any]:
    """The patient's data per prefetch key (patient, conditions, medications, allergies, observations)."""
    resources = _persona()
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    pid = patient["id"]
    of = lambda kind: [r for r in resources if r["resourceType"] == kind]  # noqa: E731
    return {
        "patient": patient,
        "conditions": _searchset(of("Condition")),
        "medications": _searchset(of("MedicationRequest")),
        "allergies": _searchset(of("AllergyIntolerance")),
        "observations": _searchset(of("Observation") + observations(n_observations, pid)),
    }


def _medication_draft(rid: str, pid: str, rxcui: str, name: str, dose: tuple[float, str], per_day: int,
                      days: int, route: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "MedicationRequest", "id": rid, "status": "draft", "intent": "order",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                                  "code": "community"}]}],
        "medicationCodeableConcept": {"text": name, "coding": [{"system": RXNORM, "code": rxcui, "display": name}]},
        "subject": {"reference": f"Patient/{pid}"}, "authoredOn": "2026-11-23",
        "dosageInstruction": [{
            "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": dose[0], "system": UCUM, "code": dose[1]}}],
        }],
        "dispenseRequest": {"expectedSupplyDuration": {"value": days, "unit": "days", "system": UCUM, "code": "d"}},
    }
    if route:
        res["dosageInstruction"][0]["route"] = {"text": route}
    return res


def drafts(pid: str) -> list[dict[str, Any]]:
    """Five draft orders the rules flag: two MCAS-risk drugs, an NSAID, a steroid, a lumbar MRI."""
    return [
        _medication_draft("request-1", pid, "892582", "morphine sulfate 15 MG Oral Tablet", (1, "{tbl}"), 4, 5),
        _medication_draft("request-2", pid, "1594589", "succinylcholine chloride 20 MG/ML Injectable Solution",
                          (5, "mL"), 1, 1, route="intravenous"),
        _medication_draft("request-3", pid, "197806", "ibuprofen 600 MG Oral Tablet", (1, "{tbl}"), 3, 10),
        _medication_draft("request-4", pid, "198145", "prednisone 10 MG Oral Tablet", (4, "{tbl}"), 1, 5),
        {"resourceType": "ServiceRequest", "id": "request-5", "status": "draft", "intent": "order",
         "subject": {"reference": f"Patient/{pid}"},
         "code": _concept(CPT, "72148", "MRI lumbar spine without contrast")},
    ]


def hook_request(hook: str, n_observations: int, prefetch: bool = True, fhir_server: str = "http://127.0.0.1:8081",
                 token: str | None = None) -> dict[str, Any]:
    data = record(n_observations)
    pid = data["patient"]["id"]
    context: dict[str, Any] = {"userId": USER, "patientId": pid}
    if hook == "order-select":
        draft = drafts(pid)[:1]  # one selected draft: morphine
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": d} for d in draft]}
        context["selections"] = ["MedicationRequest/request-1"]
    elif hook == "order-sign":
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": d} for d in drafts(pid)]}
    body: dict[str, Any] = {"hook": hook, "hookInstance": HOOK_INSTANCE, "fhirServer": fhir_server, "context": context}
    if token:
        body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "cds-back-pain"}
    if prefetch:
        body["prefetch"] = {key: data[key] for key in PREFETCH_KEYS[hook]}
    return body


def body_bytes(hook: str, n_observations: int, **kwargs: Any) -> bytes:
    # The sandbox sends pretty-printed JSON; EHRs usually send compact JSON. Compact here.
    return json.dumps(hook_request(hook, n_observations, **kwargs), separators=(",", ":")).encode("utf-8")


if __name__ == "__main__":
    for label, n in SIZES.items():
        for hook in HOOKS:
            print(label, hook, len(body_bytes(hook, n)))
