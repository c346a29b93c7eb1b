"""The command line: ``cds-service`` and ``python -m cds_service`` are the same program."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def test_python_dash_m_runs_the_cli_and_checks_knowledge():
    result = subprocess.run([sys.executable, "-m", "cds_service", "knowledge", "check"],
                            capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "ok"


def test_serve_offers_host_port_and_workers():
    result = subprocess.run([sys.executable, "-m", "cds_service", "serve", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--host", "--port", "--workers"):
        assert option in result.stdout


def test_broken_knowledge_makes_check_fail_with_the_file_named(tmp_path):
    env = {**os.environ, "CDS_KNOWLEDGE_DIR": str(tmp_path / "missing")}
    result = subprocess.run([sys.executable, "-m", "cds_service", "knowledge", "check"],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert "missing" in result.stderr and "does not exist" in result.stderr
