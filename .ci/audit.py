"""Audit the pinned dependencies (constraints.txt) for known vulnerabilities with pip-audit.

    python .ci/audit.py [--requirements constraints.txt] [--exceptions deploy/pip-audit-exceptions.txt]
                        [--report FILE] [--today YYYY-MM-DD] [--strict]

Run by ``make audit`` (in .venv-tools, where pip-audit is installed) and by ``.ci/run``.
pip-audit asks PyPI's JSON API (the ``pypi`` service) about each pinned version.

Exit status:
  0  every package was checked and has no known vulnerability outside a recorded exception; or
     the audit could not be completed (service unreachable, packages it could not look up) and
     ``--strict`` is off: then a loud NOTICE says so, listing what was not checked;
  1  a known vulnerability without a recorded exception, an expired exception, a malformed
     exceptions file, or (with ``--strict`` or CDS_AUDIT_STRICT=1) an audit that could not be completed.

``--report`` evaluates a pip-audit JSON report already written instead of running pip-audit
(the tests use it); ``--today`` fixes the date the exceptions are checked against.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Accepted:
    vuln_id: str
    package: str
    recorded: dt.date
    review_by: dt.date
    reason: str


def read_exceptions(path: Path) -> tuple[list[Accepted], list[str]]:
    """The recorded exceptions, and the problems with lines that are not well formed."""
    found, problems = [], []
    if not path.exists():
        return found, problems
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = [f.strip() for f in text.split("|")]
        if len(fields) != 5 or not all(fields):
            problems.append(f"{path.name}:{number}: expected 5 non-empty fields separated by '|'")
            continue
        vuln_id, package, recorded, review_by, reason = fields
        try:
            found.append(Accepted(vuln_id, package.lower(), dt.date.fromisoformat(recorded),
                                    dt.date.fromisoformat(review_by), reason))
        except ValueError:
            problems.append(f"{path.name}:{number}: dates must be YYYY-MM-DD")
            continue
        if found[-1].review_by < found[-1].recorded:
            problems.append(f"{path.name}:{number}: review-by date is before the recorded date")
    return found, problems


def run_pip_audit(requirements: Path, ignore: list[str]) -> tuple[dict | None, str]:
    """pip-audit's JSON report, or None and why it could not be had."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip_audit", "--requirement", str(requirements), "--no-deps", "--disable-pip",
               "--progress-spinner", "off", "--timeout", "20", "--format", "json", "--output", str(report)]
        for vuln_id in ignore:
            cmd += ["--ignore-vuln", vuln_id]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if report.exists() and report.stat().st_size:
            return json.loads(report.read_text("utf-8")), ""
        last = [ln for ln in out.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        return None, f"pip-audit exited {out.returncode} without a report: {last[0][:400]}"


def banner(lines: list[str]) -> None:
    print("#" * 96)
    for line in lines:
        print(f"### {line}")
    print("#" * 96)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requirements", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("--exceptions", type=Path, default=ROOT / "deploy" / "pip-audit-exceptions.txt")
    parser.add_argument("--report", type=Path, help="evaluate this pip-audit JSON report instead of running pip-audit")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=dt.date.today())
    parser.add_argument("--strict", action="store_true", default=os.environ.get("CDS_AUDIT_STRICT") == "1",
                        help="an audit that could not be completed fails (also CDS_AUDIT_STRICT=1)")
    args = parser.parse_args(argv)

    failures: list[str] = []
    exceptions, problems = read_exceptions(args.exceptions)
    failures += problems
    live = [e for e in exceptions if e.review_by >= args.today]
    for e in exceptions:
        if e.review_by < args.today:
            failures.append(f"expired exception: {e.vuln_id} ({e.package}) was to be reviewed by {e.review_by}; "
                            f"renew it with a new reason and date in {args.exceptions.name}, or remove it")
    for e in live:
        print(f"audit: accepted until {e.review_by}: {e.vuln_id} in {e.package} ({e.reason})")

    if args.report:
        report, error = json.loads(args.report.read_text("utf-8")), ""
    else:
        report, error = run_pip_audit(args.requirements, [e.vuln_id for e in live])
    incomplete: list[str] = []
    checked = 0
    if report is None:
        incomplete.append(error)
    else:
        accepted = {e.vuln_id for e in live}
        for dep in report.get("dependencies", []):
            if "skip_reason" in dep:
                incomplete.append(f"{dep['name']}: {dep['skip_reason']}")
                continue
            checked += 1
            for vuln in dep.get("vulns", []):
                if {vuln["id"], *vuln.get("aliases", [])} & accepted:
                    continue  # pip-audit ignores only the exact id; an alias listed is accepted too
                fix = ", ".join(vuln.get("fix_versions", [])) or "no fixed version yet"
                failures.append(f"{dep['name']} {dep['version']}: {vuln['id']} "
                                f"(aliases: {', '.join(vuln.get('aliases', [])) or 'none'}; fixed in: {fix})")

    for failure in failures:
        print(f"audit: FAIL: {failure}")
    if incomplete:
        total = checked + (len(incomplete) if report is not None else 0)
        banner([
            "NOTICE: the dependency audit could NOT be completed"
            + (f": {len(incomplete)} of {total} pinned packages were not checked" if report is not None else ""),
            "(pip-audit asks PyPI's JSON API, https://pypi.org/pypi/<name>/<version>/json; from here it failed).",
            *[f"  {line}" for line in incomplete[:8]],
            *([f"  ... and {len(incomplete) - 8} more"] if len(incomplete) > 8 else []),
            "No vulnerability verdict exists for what is listed above. Run `make audit` where PyPI is reachable;",
            "CDS_AUDIT_STRICT=1 makes this a failure" + (" (it is set: FAILING)." if args.strict else " (not set)."),
        ])
        if args.strict:
            failures.append("audit incomplete")
    if failures:
        print(f"audit: FAILED ({len(failures)} problem(s))")
        return 1
    if not incomplete:
        print(f"audit: {checked} pinned packages checked, no known vulnerability"
              + (f" outside {len(live)} recorded exception(s)" if live else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
