"""Re-make the Synthea records in this folder from the published bundles.

    python bench/data/synthea/extract.py <bundle.json> ...

Each argument is a transaction Bundle from smart-on-fhir/generated-sample-data, R4/SYNTHEA/
(see README.md here). Keeps only what a CDS Hooks prefetch of this service would carry (the
Patient, its Conditions, MedicationRequests, AllergyIntolerances and Observations), unchanged,
in a ``collection`` Bundle, written compact and gzipped as ``<Given_Family>.json.gz`` next to
this script. The gzip header carries no name or time, so the output is byte-for-byte stable.
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEPT = ("Patient", "Condition", "MedicationRequest", "AllergyIntolerance", "Observation")


def extract(bundle_path: Path) -> Path:
    bundle = json.loads(bundle_path.read_text("utf-8"))
    resources = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] in KEPT]
    resources.sort(key=lambda r: KEPT.index(r["resourceType"]))  # stable: the bundle's order within a type
    out = {"resourceType": "Bundle", "type": "collection",
           "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]}
    name = "_".join(bundle_path.stem.split("_")[:2])  # Given_Family, without the uuid
    target = HERE / f"{name}.json.gz"
    raw = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    with open(target, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
        gz.write(raw)
    return target


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(extract(Path(arg)))
