"""Benchmark requests: sandbox-shaped CDS Hooks calls with the records of real-world charts.

Two kinds of record (``CHARTS``):

* **Chart-shaped records** (``18KB``, ``300KB``, ``1MB``): the fixture persona
  ``mcas-ms-older-adult`` (MCAS + MS + low back pain + osteoporosis, on diphenhydramine; both
  modules' gates open, so every rule runs) with the shape of a long real chart: many small
  Observations of many LOINC codes (vital signs, labs, surveys: 64 codes), a few large ones (a
  long clinician note with its narrative, a panel of 40 components), and long Condition
  (SNOMED CT) and MedicationRequest (RxNorm) lists. The padding is drawn, re-identified to the
  persona, from the Synthea patients below, so every code is one a real generator wrote. Among
  the Observations is a dated series of the results the rules read (urine LTE4 33343-5, newest
  high; DXA lumbar T-score 38267-1, newest -2.7), so "latest result" selection works over a
  series. The 300 KB record has the 43 Conditions and 50 medications of the chart in issue #10;
  Synthea's Observations are larger (≈0.9 KB) than that chart's, so 245 of them make 300 KB.
* **Synthea patients** (``synthea:<name>``): four synthetic patients' own records, as published
  (``bench/data/synthea/``, Apache-2.0): ordinary charts where the MCAS and MS gates stay shut.

Complete prefetch, as an EHR sends it: for each hook, every key of the service's own discovery
document (``discovery_prefetch``), each answered as a FHIR server answers its query
(``search``: the resource type, and the ``status`` and ``code`` parameters the templates use),
so a key whose query finds nothing is an empty searchset. tests/test_bench_payloads.py fails if
a request lacks a key that discovery advertises. Deterministic: the same arguments give the
same bytes.
"""
from __future__ import annotations

import copy
import functools
import gzip
import json
import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PERSONA = ROOT / "fhir_fixtures" / "patients" / "mcas-ms-older-adult.json"
SYNTHEA_DIR = ROOT / "bench" / "data" / "synthea"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
HOOK_INSTANCE = "5b1c1b56-0e2a-4bb6-9c35-2f6b7e1c9a10"
USER = "Practitioner/COREPRACTITIONER1"


@dataclass(frozen=True)
class Chart:
    """How much a chart-shaped record adds to the persona's own resources."""
    observations: int  # small Observations drawn from the Synthea pool (many codes)
    rule_read: int  # the series of results the rules read, among the Observations
    large: int  # large Observations: a long note with narrative, or a 40-component panel (alternating)
    conditions: int
    medications: int


SIZES = {  # label -> the chart-shaped record of about that many bytes (the EHR sends what discovery asks of it)
    "18KB": Chart(observations=6, rule_read=2, large=0, conditions=3, medications=3),
    "300KB": Chart(observations=240, rule_read=20, large=3, conditions=39, medications=49),
    "1MB": Chart(observations=880, rule_read=40, large=8, conditions=110, medications=150),
}
SYNTHEA = ("Meg_Toy", "Fletcher_Hyatt", "Don_Moore", "Vito_Feeney")  # smallest to largest record
CHARTS = (*SIZES, *(f"synthea:{name}" for name in SYNTHEA))
HOOKS = ("patient-view", "order-select", "order-sign")
SERVICE_OF = {
    "patient-view": "back-pain-patient-view",
    "order-select": "back-pain-order-select",
    "order-sign": "back-pain-order-sign",
}
# The record's resources by type (a chart may have none of some: their searches find nothing).
RESOURCE_TYPES = ("Condition", "MedicationRequest", "AllergyIntolerance", "Observation",
                  "MedicationStatement", "MedicationDispense")

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


def rule_read_series(n: int, patient_id: str) -> list[dict[str, Any]]:
    """``n`` results the rules read, alternating LTE4 and DXA, newest first, every 30 days back from 2026-10-01."""
    found = []
    for i in range(n):
        code, display, text, category, unit, series = RULE_READ[i % len(RULE_READ)]
        k = i // len(RULE_READ)
        value = series[-1 - k] if k < len(series) else series[0]  # newest first: the newest is the last of the series
        when = LAST_DATE - timedelta(days=30 * k)
        res: dict[str, Any] = {
            "resourceType": "Observation", "id": f"bench-rule-read-{i}",
            "meta": {"versionId": "1", "lastUpdated": f"{when.isoformat()}T18:00:00Z"},
            "status": "final", "category": _category(category), "code": _concept(LOINC, code, display, text),
            "subject": {"reference": f"Patient/{patient_id}"}, "effectiveDateTime": f"{when.isoformat()}T09:30:00-05:00",
            "issued": f"{when.isoformat()}T18:00:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        }
        if code == "33343-5":
            res["interpretation"] = _interpretation("H" if value > 104 else "N")
            res["referenceRange"] = [{"high": {"value": 104, "unit": unit, "system": UCUM, "code": unit},
                                      "text": "<=104 pg/mg creatinine"}]
        found.append(res)
    return found


@functools.lru_cache(maxsize=None)
def synthea_resources(name: str) -> tuple[dict[str, Any], ...]:
    bundle = json.loads(gzip.decompress((SYNTHEA_DIR / f"{name}.json.gz").read_bytes()))
    return tuple(e["resource"] for e in bundle["entry"])


def _pool(kind: str) -> list[dict[str, Any]]:
    return [r for name in SYNTHEA for r in synthea_resources(name) if r["resourceType"] == kind]


def _drawn(kind: str, n: int, patient_id: str, prefix: str, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` resources of ``kind`` from the Synthea pool (cycling if needed), re-identified to the patient."""
    pool = _pool(kind)
    rng.shuffle(pool)
    found = []
    for i in range(n):
        res = copy.deepcopy(pool[i % len(pool)])
        res["id"] = f"{prefix}-{i}"
        res["subject"] = {"reference": f"Patient/{patient_id}"}
        res.pop("encounter", None)  # an encounter of another (synthetic) patient
        found.append(res)
    return found


def _note(i: int, lines: int) -> str:
    return " ".join(f"Visit note {i}, paragraph {k}: symptoms, examination and plan reviewed with the patient; "
                    f"measurements recorded in the flowsheet; follow-up in {k % 6 + 2} weeks." for k in range(lines))


def large_observations(n: int, patient_id: str, rng: random.Random) -> list[dict[str, Any]]:
    """Large Observations: a long clinician note with its XHTML narrative, or a 40-component panel."""
    small = _drawn("Observation", 40 * n, patient_id, "bench-large-part", rng)
    found = []
    for i in range(n):
        res = small[40 * i]
        res["id"] = f"bench-large-{i}"
        if i % 2 == 0:
            text = _note(i, 60)
            res["note"] = [{"authorString": "Bench Clinician", "time": res.get("issued", ""), "text": text}]
            res["text"] = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{text}</p></div>'}
        else:
            res["component"] = [
                {"code": part["code"], **{k: v for k, v in part.items() if k.startswith("value")}}
                for part in small[40 * i: 40 * i + 40]
            ]
        found.append(res)
    return found


def _persona() -> list[dict[str, Any]]:
    bundle = json.loads(PERSONA.read_text("utf-8"))
    return [copy.deepcopy(e["resource"]) for e in bundle["entry"]]


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"fullUrl": f"http://127.0.0.1/fhir/{r['resourceType']}/{r.get('id', '')}",
                       "resource": r, "search": {"mode": "match"}} for r in resources]}


def _by_type(resources: list[dict[str, Any]]) -> dict[str, Any]:
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    data: dict[str, Any] = {"Patient": patient}
    for kind in RESOURCE_TYPES:
        data[kind] = [r for r in resources if r["resourceType"] == kind]
    return data


@functools.cache
def discovery_prefetch() -> dict[str, dict[str, str]]:
    """hook -> the prefetch templates the service's discovery document advertises for it."""
    from cds_service import create_app

    app = create_app({"AUTH_REQUIRED": False, "DATABASE_URL": "sqlite:///:memory:", "PATIENT_KEY_SECRET": "bench"})
    services = app.test_client().get("/cds-services").get_json()["services"]
    return {service["hook"]: service.get("prefetch", {}) for service in services}


def search(template: str, record: dict[str, Any]) -> Any:
    """What a FHIR server answers for one prefetch template on this (one-patient) record: a read
    of the Patient, or a searchset of the type filtered by ``status`` and ``code`` (any of the
    comma-separated values; ``system|code`` tokens)."""
    path, _, query = template.partition("?")
    kind = path.split("/")[0]
    if kind == "Patient":
        return record["Patient"]
    params = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
    found = record.get(kind, [])
    if "status" in params:
        found = [r for r in found if r.get("status") in params["status"].split(",")]
    if "code" in params:
        tokens = set(params["code"].split(","))
        found = [r for r in found if any(f"{c.get('system')}|{c.get('code')}" in tokens
                                         for c in (r.get("code") or {}).get("coding", []))]
    return _searchset(found)


def record(chart: str) -> dict[str, Any]:
    """The patient's resources by type (``Patient``: the resource; other types: a list)."""
    if chart.startswith("synthea:"):
        return _by_type(copy.deepcopy(list(synthea_resources(chart.split(":", 1)[1]))))
    shape = SIZES[chart]
    rng = random.Random(f"bench-{chart}")
    resources = _persona()
    pid = next(r for r in resources if r["resourceType"] == "Patient")["id"]
    observations = (rule_read_series(shape.rule_read, pid)
                    + _drawn("Observation", shape.observations - shape.rule_read, pid, "bench-obs", rng)
                    + large_observations(shape.large, pid, rng))
    rng.shuffle(observations)  # a server's order, not ours
    resources += (observations + _drawn("Condition", shape.conditions, pid, "bench-cond", rng)
                  + _drawn("MedicationRequest", shape.medications, pid, "bench-med", rng))
    return _by_type(resources)


def counts(chart: str) -> dict[str, int]:
    """Resources per type of a record, and in all."""
    data = record(chart)
    found = {kind: len(data[kind]) for kind in RESOURCE_TYPES}
    found["resources"] = 1 + sum(found.values())
    return found


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


def hook_request(hook: str, chart: str, prefetch: bool = True, fhir_server: str = "http://127.0.0.1:8081",
                 token: str | None = None) -> dict[str, Any]:
    data = record(chart)
    pid = data["Patient"]["id"]
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
        body["prefetch"] = {key: search(template.replace("{{context.patientId}}", pid), data)
                            for key, template in discovery_prefetch()[hook].items()}
    return body


def body_bytes(hook: str, chart: str, **kwargs: Any) -> bytes:
    # The sandbox sends pretty-printed JSON; EHRs usually send compact JSON. Compact here.
    return json.dumps(hook_request(hook, chart, **kwargs), separators=(",", ":")).encode("utf-8")


if __name__ == "__main__":
    for chart in CHARTS:
        for hook in HOOKS:
            print(chart, hook, len(body_bytes(hook, chart)), counts(chart))
