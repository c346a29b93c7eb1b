"""The site overlay is reloaded on SIGHUP with the knowledge (issue 23), on the real server; a
broken overlay keeps the running one."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests
from processes import Service

pytestmark = pytest.mark.slow
RULE = "mcas.histamine-releasing-opioid"


def _mode(base: str) -> str:
    return requests.get(f"{base}/rules/{RULE}", timeout=5).json()["site"]["mode"]


def test_sighup_reloads_the_site_overlay_and_keeps_it_when_broken(tmp_path: Path):
    site = tmp_path / "site.yaml"
    site.write_text(f"rules:\n  {RULE}:\n    mode: silent\n")
    with Service(tmp_path, "site", "--workers", "1", env={"CDS_SITE_CONFIG": str(site)}) as service:
        assert _mode(service.base) == "silent"
        site.write_text(f"rules:\n  {RULE}:\n    mode: active\n    note: Activated 2026-12-07\n")
        service.signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while _mode(service.base) != "active" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _mode(service.base) == "active"

        site.write_text("rules:\n  mcas.no-such-rule:\n    mode: off\n")  # a typo: the running overlay stays
        workers = service.workers()
        service.signal(signal.SIGHUP)
        service.replaced_after(workers, "rules.mcas.no-such-rule")
        assert _mode(service.base) == "active"
        assert "rules.mcas.no-such-rule" in service.log()
