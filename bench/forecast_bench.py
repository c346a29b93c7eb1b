"""The forecast stage of ``make bench``: ``cds-service forecast`` on a 1,000-patient export.

The export is written by ``synthea_export.py`` (the public Synthea patients and the personas
padded with Synthea orders, re-identified to 1,000 patients, lines round-robin so no file is
sorted by patient). The forecast runs as ``cds-service forecast --jobs N`` in a child process;
reported: patients per second, per second per core (÷ N), CPU seconds per patient, and the
peak resident memory of the largest process (the command or one of its workers, from
``getrusage(RUSAGE_CHILDREN)``), which must not grow with the export.

    python bench/forecast_bench.py [--patients 1000] [--jobs N]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import synthea_export  # noqa: E402

NOW = "2026-11-23T12:00:00Z"


def forecast_stage(patients: int = 1000, jobs: int | None = None, tmp: Path | None = None) -> dict[str, Any]:
    jobs = jobs or os.cpu_count() or 1
    folder = Path(tempfile.mkdtemp(prefix="cds-forecast-bench-", dir=tmp))
    lines = synthea_export.write_export(folder, patients)
    size = sum(f.stat().st_size for f in folder.glob("*.ndjson"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cds_service", "forecast", str(folder), "--jobs", str(jobs),
                           "--format", "json", "--quiet", "--now", NOW], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    body = json.loads(done.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for f in folder.glob("*.ndjson"):
        f.unlink()
    folder.rmdir()
    return {
        "patients": body["patients"], "orders": body["orders"], "export_mb": round(size / 1e6, 1),
        "resources": sum(lines.values()), "jobs": jobs, "wall_s": round(wall, 1),
        "patients_per_s": round(body["patients"] / wall, 1),
        "patients_per_s_per_core": round(body["patients"] / wall / jobs, 1),
        "cpu_ms_per_patient": round(cpu * 1000 / body["patients"], 1),
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),  # KB on Linux: the largest single process
        "failed_patients": body["failed_patients"],
        "rules": {r["rule"]: r["patients"] for r in body["rules"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args()
    print(json.dumps(forecast_stage(args.patients, args.jobs), indent=2))


if __name__ == "__main__":
    main()
