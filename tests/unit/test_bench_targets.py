"""``make bench`` reports issue #25's targets from the figures of one run: a figure past its limit
shows as missed, one within it as met, and a target without its figure as not measured."""
from __future__ import annotations

import copy
import sys

from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import scenarios  # noqa: E402
import targets  # noqa: E402


def _runs(cpu_one: float, cpu_eight: float, rps: float = 100.0) -> dict:
    one = {"cpu_ms_per_request": cpu_one, "p50_ms": 2.0, "p99_ms": 5.0, "req_per_s": rps, "ok": True}
    eight = {**one, "cpu_ms_per_request": cpu_eight}
    return {"load": eight, "single": one, "rounds": {"load": [eight], "single": [one]}}


def _case(hook: str, size: str, cpu_one: float, cpu_eight: float, floor_share: float, floor_cpu: float = 1.0) -> dict:
    return {"id": f"{scenarios.SHORT[hook]}-{size.replace('synthea:', 'syn-')}", "hook": hook, "size": size,
            "body_bytes": 70_000, "service": _runs(cpu_one, cpu_eight),
            "baseline_parse": {"load": {"cpu_ms_per_request": floor_cpu}},
            "ratio": {"req_per_s_vs_parsing_baseline": floor_share}}


def _result(**changes: float) -> dict:
    cpu_small = changes.get("cpu_small", 1.8)
    cases = [
        _case("patient-view", "18KB", cpu_small, cpu_small * 1.1, 0.4),
        _case("patient-view", "300KB", 5.0, changes.get("cpu_mid_eight", 5.5), changes.get("share", 0.6)),
        _case("patient-view", "1MB", 15.0, 16.0, 0.5),
        _case("patient-view", "synthea:Meg_Toy", 2.0, changes.get("synthea_cpu", 2.0), 0.9),
    ]
    return {"cases": cases, "first_call": {"case": "pv-300KB", "ratio": 1.2},
            "auth": {"case": "pv-18KB", "ratio": 0.95}, "startup": {"wall_s": 0.8},
            "rss": {"max_worker_rss_mb": 100.0}, "fallback": []}


def _met(result: dict, *words: str) -> bool | None:
    """The verdict of the one target whose name holds every word."""
    found = [t["met"] for t in targets.targets(result) if all(w in t["target"] for w in words)]
    assert len(found) == 1, words
    return found[0]


FLOOR = ("patient-view 300KB", "orjson floor")
SMALL = ("patient-view 18KB", "one connection", "CPU ms/call")


def test_each_target_turns_missed_when_its_figure_passes_its_limit():
    assert _met(_result(), *FLOOR) is True
    assert _met(_result(), *SMALL) is True

    assert _met(_result(share=0.45), *FLOOR) is False
    assert _met(_result(cpu_small=2.2), *SMALL) is False
    concurrency = [t for t in targets.targets(_result(cpu_mid_eight=6.5)) if "connections ÷ 1 connection" in t["target"]
                   and "300KB" in t["target"]]
    assert concurrency[0]["met"] is False and concurrency[0]["value"] == 1.3


def test_a_synthea_record_regresses_against_the_previous_run_only_beyond_its_limit():
    previous = _result()
    same = {t["target"]: t["met"] for t in targets.targets(_result(), copy.deepcopy(previous)) if "Synthea" in t["target"]}
    assert list(same.values()) == [True]
    worse = {t["target"]: t["met"] for t in targets.targets(_result(synthea_cpu=2.5), previous) if "Synthea" in t["target"]}
    assert list(worse.values()) == [False]
    unknown = [t for t in targets.targets(_result()) if "Synthea" in t["target"]]
    assert unknown[0]["met"] is None  # no earlier run to compare with: not measured, never "met"
    other_body = copy.deepcopy(previous)
    other_body["cases"][-1]["body_bytes"] = 96_000  # the earlier run sent the whole record
    changed = [t for t in targets.targets(_result(synthea_cpu=2.5), other_body) if "Synthea" in t["target"]]
    assert changed[0]["met"] is None and "another body" in changed[0]["target"]
