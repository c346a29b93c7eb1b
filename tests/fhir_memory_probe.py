"""One service call against a FHIR server, in a fresh process: its time and peak memory.

    python tests/fhir_memory_probe.py FHIR_BASE_URL [FIXTURE]

Creates the app (authentication off, the FHIR server listed, a throwaway SQLite file), posts
the patient-view fixture with its whole prefetch removed (so every key is fetched from
FHIR_BASE_URL in parallel, with a bearer token), and prints one JSON line: the status, the
seconds the call took, and the process's resident memory before the call and at its peak
(VmRSS and VmHWM of /proc/self/status, in MiB). test_fhir_limits.py runs it; run by hand with
PYTHONPATH pointing at another checkout, it measures that checkout's code.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fhir_fixtures" / "requests"
DEFAULT_FIXTURE = "patient-view/mcas-ms-older-adult--chart-open.json"
SERVICE = "back-pain-patient-view"


def memory_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(server: str, fixture: str = DEFAULT_FIXTURE) -> None:
    from cds_service import create_app

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"TESTING": True, "AUTH_REQUIRED": False, "LOG_LEVEL": "CRITICAL",
                          "DATABASE_URL": f"sqlite:///{tmp}/probe.sqlite3",
                          "ISSUER_FHIR_SERVERS": {"https://ehr.example.org": [server]}})
        client = app.test_client()
        body = json.loads((FIXTURES / fixture).read_text("utf-8"))
        body["prefetch"] = {}
        body["fhirServer"] = server
        body["fhirAuthorization"] = {"access_token": "probe-token", "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/*.read", "subject": "cds-back-pain"}
        before = memory_mib("VmRSS")
        started = time.perf_counter()
        response = client.post(f"/cds-services/{SERVICE}", json=body)
        seconds = time.perf_counter() - started
        print(json.dumps({"status": response.status_code, "seconds": round(seconds, 3),
                          "rss_before_mib": round(before, 1), "peak_mib": round(memory_mib("VmHWM"), 1)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
