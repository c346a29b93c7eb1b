"""A FHIR Bulk Data export (``$export`` layout) of re-identified Synthea patients, for the forecast.

    python bench/synthea_export.py OUT_DIR [--patients N]

Eight record templates, each copied to patients ``p0000``, ``p0001``, ... in turn:

* the four public Synthea R4 patients of ``bench/data/synthea`` as published (SMART Health IT,
  ``smart-on-fhir/generated-sample-data``, ``R4/SYNTHEA/``, Apache-2.0; see that folder's
  README.md): ordinary charts on which the MCAS and MS gates stay shut;
* the four personas of ``fhir_fixtures/patients`` (MCAS, MS with low back pain, both, neither),
  each padded with the Conditions and MedicationRequests of one Synthea patient, re-identified
  to the persona as the benchmark's records are (``payloads._drawn``): real orders a generator
  wrote, replayed against MCAS and MS.

Every resource gets a new id and subject per copy. Lines are written round-robin across
patients, so a file is not sorted by patient (as a real export's is not), and only the eight
templates are ever in memory: a 100,000-patient export costs no more memory than ten.
"""
from __future__ import annotations

import argparse
import copy
import gzip
import json
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SYNTHEA = ("Meg_Toy", "Fletcher_Hyatt", "Don_Moore", "Vito_Feeney")
PERSONAS = ("mcas-adult", "ms-lbp-adult", "mcas-ms-older-adult", "no-condition-adult")
PADDING = ("Condition", "MedicationRequest")  # what a persona takes from its Synthea donor


def _synthea(name: str) -> list[dict[str, Any]]:
    bundle = json.loads(gzip.decompress((HERE / "data" / "synthea" / f"{name}.json.gz").read_bytes()))
    return [e["resource"] for e in bundle["entry"]]


def _persona(name: str, donor: str) -> list[dict[str, Any]]:
    bundle = json.loads((ROOT / "fhir_fixtures" / "patients" / f"{name}.json").read_text("utf-8"))
    own = [e["resource"] for e in bundle["entry"]]
    return own + [r for r in _synthea(donor) if r["resourceType"] in PADDING]


def templates() -> list[list[dict[str, Any]]]:
    return [_synthea(n) for n in SYNTHEA] + [_persona(p, d) for p, d in zip(PERSONAS, SYNTHEA, strict=True)]


def _reidentified(resource: dict[str, Any], patient_id: str, n: int) -> dict[str, Any]:
    res = copy.deepcopy(resource)
    if res["resourceType"] == "Patient":
        res["id"] = patient_id
        return res
    res["id"] = f"{patient_id}-{n}"
    res["subject"] = {"reference": f"Patient/{patient_id}"}
    for key in ("encounter", "context"):  # another (synthetic) patient's encounter
        res.pop(key, None)
    if "requester" in res and res["resourceType"] == "MedicationRequest":
        res["requester"] = {"display": "Synthea clinician"}
    return res


def _lines(kind: str, patients: int, recs: list[list[dict[str, Any]]]) -> Iterator[bytes]:
    per_template = [[(i, r) for i, r in enumerate(rec) if r["resourceType"] == kind] for rec in recs]
    longest = max((len(t) for t in per_template), default=0)
    for k in range(longest):  # round-robin: patient 0's k-th, patient 1's k-th, ...
        for p in range(patients):
            rows = per_template[p % len(recs)]
            if k < len(rows):
                n, resource = rows[k]
                yield json.dumps(_reidentified(resource, f"p{p:04d}", n), separators=(",", ":")).encode() + b"\n"


def write_export(out: Path, patients: int) -> dict[str, int]:
    """Write ``<Type>.ndjson`` files for ``patients`` patients; lines per file."""
    out.mkdir(parents=True, exist_ok=True)
    recs = templates()
    kinds = sorted({r["resourceType"] for rec in recs for r in rec})
    written = {}
    for kind in kinds:
        with (out / f"{kind}.ndjson").open("wb") as f:
            written[kind] = sum(f.write(line) > 0 for line in _lines(kind, patients, recs))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--patients", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(write_export(args.out, args.patients)))


if __name__ == "__main__":
    main()
