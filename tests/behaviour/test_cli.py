"""The command line: ``cds-service`` and ``python -m cds_service`` are the same program."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from cds_service.cli import main


def test_python_dash_m_runs_the_cli_and_checks_knowledge():
    result = subprocess.run([sys.executable, "-m", "cds_service", "knowledge", "check"],
                            capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "ok"


def test_serve_offers_host_port_and_workers():
    # in process: the same program as above (python -m runs cds_service.cli:main), without a second start-up
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--workers"):
        assert option in result.stdout


def test_broken_knowledge_makes_check_fail_with_the_file_named(tmp_path):
    result = CliRunner().invoke(main, ["knowledge", "check"], env={"CDS_KNOWLEDGE_DIR": str(tmp_path / "missing")})
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception  # no crash
    assert "missing" in result.stderr and "does not exist" in result.stderr


def test_the_factory_leaves_the_garbage_collector_alone_and_the_server_freezes_once(app_config, monkeypatch):
    import gc

    from cds_service import create_app
    from cds_service.cli import _Gunicorn

    before = gc.get_freeze_count()
    create_app(app_config)
    assert gc.get_freeze_count() == before  # fifteen apps in one test process must not pile up
    for key, value in app_config.items():
        if isinstance(value, (str, bool)):
            monkeypatch.setenv(f"CDS_{key}", str(value).lower() if isinstance(value, bool) else value)
    try:
        assert _Gunicorn({"workers": 1}, {}).load() is not None
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
