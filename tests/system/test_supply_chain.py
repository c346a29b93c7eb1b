"""Supply chain: the pins CI installs, and the verdicts of the dependency audit (.ci/audit.py).

The audit is judged on pip-audit JSON reports of the shape pip-audit writes (``--report``), so
these tests need no network; ``make audit`` in CI runs pip-audit itself.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import distribution, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
AUDIT = ROOT / ".ci" / "audit.py"
VULN = {"id": "GHSA-aaaa-bbbb-cccc", "fix_versions": ["2.0.1"], "aliases": ["CVE-2026-0001"], "description": "x"}


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "constraints.txt").read_text("utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            found[canonicalize_name(name)] = pinned.strip()
    return found


def test_every_dependency_of_the_service_and_its_extras_is_pinned_at_the_installed_version():
    pinned, seen, todo = pins(), set(), [("cds-service", {"test", "postgres"})]
    while todo:
        name, extras = todo.pop()
        for text in distribution(name).requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
                continue
            key = canonicalize_name(req.name)
            if key in seen:
                continue
            seen.add(key)
            assert key in pinned, f"{req.name} is not pinned in constraints.txt: run make lock"
            assert version(req.name) == pinned[key], f"{req.name} {version(req.name)} installed, {pinned[key]} pinned"
            todo.append((req.name, set(req.extras)))
    assert {"flask", "gunicorn", "pyjwt", "psycopg", "pytest"} <= seen


def audit(tmp_path: Path, report: dict, exceptions: str = "", *extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "report.json").write_text(json.dumps(report))
    (tmp_path / "exceptions.txt").write_text(exceptions)
    return subprocess.run([sys.executable, str(AUDIT), "--report", str(tmp_path / "report.json"),
                           "--exceptions", str(tmp_path / "exceptions.txt"), "--today", "2026-12-01", *extra],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})


def dep(name: str, *vulns: dict) -> dict:
    return {"name": name, "version": "2.0.0", "vulns": list(vulns)}


def test_a_known_vulnerability_fails_the_audit_and_names_the_package_and_the_fix(tmp_path):
    out = audit(tmp_path, {"dependencies": [dep("flask"), dep("requests", VULN)], "fixes": []})
    assert out.returncode == 1
    assert "requests 2.0.0: GHSA-aaaa-bbbb-cccc" in out.stdout and "fixed in: 2.0.1" in out.stdout


def test_no_vulnerability_passes_and_says_how_many_packages_were_checked(tmp_path):
    out = audit(tmp_path, {"dependencies": [dep("flask"), dep("requests")], "fixes": []})
    assert out.returncode == 0
    assert "2 pinned packages checked, no known vulnerability" in out.stdout


def test_a_dated_exception_accepts_the_vulnerability_by_its_id_or_an_alias(tmp_path):
    for vuln_id in ("GHSA-aaaa-bbbb-cccc", "CVE-2026-0001"):
        line = f"{vuln_id} | requests | 2026-11-30 | 2027-02-28 | not reachable from our calls\n"
        out = audit(tmp_path, {"dependencies": [dep("requests", VULN)], "fixes": []}, line)
        assert out.returncode == 0, out.stdout
        assert f"accepted until 2027-02-28: {vuln_id}" in out.stdout


def test_an_expired_exception_fails_even_when_the_vulnerability_is_gone(tmp_path):
    line = "GHSA-aaaa-bbbb-cccc | requests | 2026-08-01 | 2026-11-30 | waiting for 2.0.1\n"
    out = audit(tmp_path, {"dependencies": [dep("requests")], "fixes": []}, line)
    assert out.returncode == 1
    assert "expired exception: GHSA-aaaa-bbbb-cccc" in out.stdout


def test_a_malformed_exception_line_fails_with_its_line_number(tmp_path):
    out = audit(tmp_path, {"dependencies": [dep("requests")], "fixes": []}, "# comment\nGHSA-x | requests | soon\n")
    assert out.returncode == 1
    assert "exceptions.txt:2: expected 5 non-empty fields" in out.stdout


def test_packages_the_service_could_not_look_up_are_a_loud_notice_and_a_failure_when_strict(tmp_path):
    report = {"dependencies": [dep("flask"), {"name": "requests", "skip_reason": "Dependency not found on PyPI"}],
              "fixes": []}
    out = audit(tmp_path, report)
    assert out.returncode == 0
    assert re.search(r"NOTICE: the dependency audit could NOT be completed: 1 of 2 pinned packages", out.stdout)
    assert "requests: Dependency not found on PyPI" in out.stdout
    assert audit(tmp_path, report, "", "--strict").returncode == 1
