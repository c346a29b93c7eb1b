"""Issue #25's targets, each met or missed with its figure, computed from one run's results (and
the results.json it replaces, for the no-regression target)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import payloads
from harness import ratio
from scenarios import BIG_SIZE, CONNECTIONS, SMALL_SIZE, TARGET_SIZE


def cpu_of(case: dict[str, Any], server: str) -> float | None:
    return (case.get(server) or {}).get("load", {}).get("cpu_ms_per_request")


FLOOR_SHARE = 0.5  # patient-view ≈300 KB req/s against the orjson floor (issue #25)
SMALL_CPU_MS = 2.0  # patient-view 18 KB, CPU per call on one connection
CONCURRENCY_COST = 1.2  # CPU per call under 8 connections against one connection
SYNTHEA_REGRESSION = 1.1  # a Synthea record's CPU ÷ orjson floor against the previous run's


def cpu_single(case: dict[str, Any]) -> float | None:
    """The service's CPU per call on one connection: the lowest over the rounds (a busy machine only adds)."""
    values = [r["cpu_ms_per_request"] for r in case["service"]["rounds"]["single"] if r.get("cpu_ms_per_request")]
    return min(values) if values else None


def _cpu_loaded(case: dict[str, Any]) -> float | None:
    """The same under the 8-connection load."""
    values = [r["cpu_ms_per_request"] for r in case["service"]["rounds"]["load"] if r.get("cpu_ms_per_request")]
    return min(values) if values else None


def concurrency_cost(case: dict[str, Any]) -> float | None:
    """CPU per call under 8 connections ÷ on one connection, each the lowest of its rounds."""
    one, eight = cpu_single(case), _cpu_loaded(case)
    return ratio(eight, one) if one and eight else None


def row_targets(case: dict[str, Any]) -> dict[str, bool | None]:
    """Issue #25's per-case targets: the orjson-floor share (patient-view ≈300 KB only) and the cost of
    concurrency (every case): met, missed, or None (not measured or not a target for this case)."""
    floor = case["ratio"].get("req_per_s_vs_parsing_baseline")
    conc = concurrency_cost(case)
    pv_mid = case["hook"] == "patient-view" and case["size"] == TARGET_SIZE
    return {"floor": None if floor is None or not pv_mid else floor >= FLOOR_SHARE,
            "concurrency": None if conc is None else conc <= CONCURRENCY_COST}


def _floor_share_of_cpu(case: dict[str, Any]) -> float | None:
    svc, floor = cpu_of(case, "service"), cpu_of(case, "baseline_parse")
    return ratio(svc, floor) if svc and floor else None


def targets(result: dict[str, Any], previous: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Issue #25's targets (2 workers per core), each from this run only (ratios within the run), then
    the earlier targets still tracked. ``previous``: the results.json this run replaces, for the
    Synthea regression check (compared as CPU ÷ the orjson floor's CPU, so machine load cancels)."""
    found = []
    by = {(c["hook"], c["size"]): c for c in result["cases"]}

    def add(name: str, value: float | None, limit: str, met: bool | None) -> None:
        found.append({"target": name, "value": value, "limit": limit, "met": met})

    mid = by.get(("patient-view", TARGET_SIZE))
    if mid:
        share = mid["ratio"].get("req_per_s_vs_parsing_baseline")
        add(f"patient-view {TARGET_SIZE} ({kb_text(mid['body_bytes'])} body): req/s ÷ orjson floor, same server settings",
            share, f"≥ {FLOOR_SHARE}", None if share is None else share >= FLOOR_SHARE)
    small = by.get(("patient-view", SMALL_SIZE))
    if small:
        cpu = cpu_single(small)
        add(f"patient-view {SMALL_SIZE} ({kb_text(small['body_bytes'])} body): CPU ms/call, one connection", cpu,
            f"≤ {SMALL_CPU_MS}", None if cpu is None else cpu <= SMALL_CPU_MS)
    for hook in payloads.HOOKS:
        m, big = by.get((hook, TARGET_SIZE)), by.get((hook, BIG_SIZE))
        if m and big:
            k = ratio(cpu_of(big, "service") or 0, cpu_of(m, "service") or 0)
            add(f"{hook}: CPU per call, {BIG_SIZE} ÷ {TARGET_SIZE}", k, "≤ 3.3", k is not None and k <= 3.3)
    for hook in payloads.HOOKS:
        for size in (SMALL_SIZE, TARGET_SIZE):
            case = by.get((hook, size))
            if case:
                conc = concurrency_cost(case)
                add(f"{hook} {size}: CPU per call, {CONNECTIONS} connections ÷ 1 connection", conc,
                    f"≤ {CONCURRENCY_COST}", None if conc is None else conc <= CONCURRENCY_COST)
    before = {c["id"]: c for c in (previous or {}).get("cases", [])}
    for case in result["cases"]:
        if not case["size"].startswith("synthea:"):
            continue
        earlier = before.get(case["id"])
        name = f"no regression, {case['size'].replace('synthea:', 'Synthea ')}: (CPU ÷ orjson floor's CPU)"
        if earlier and earlier.get("body_bytes") != case["body_bytes"]:  # a different request: no comparison
            add(f"{name}: the previous run sent another body ({kb_text(earlier.get('body_bytes') or 0)}), not compared",
                None, f"≤ {SYNTHEA_REGRESSION}", None)
            continue
        now, then = _floor_share_of_cpu(case), _floor_share_of_cpu(earlier) if earlier else None
        k = ratio(now, then) if now and then else None
        add(f"{name} against the previous run's ({times_text(then)})", k, f"≤ {SYNTHEA_REGRESSION}",
            None if k is None else k <= SYNTHEA_REGRESSION)
    # earlier targets, kept so a regression shows
    first = result["first_call"]
    add(f"(earlier) first call of a fresh worker ÷ warm median ({first['case']}, one worker)", first["ratio"], "≤ 2",
        first["ratio"] <= 2)
    auth = result["auth"]
    if "ratio" in auth:
        add(f"(earlier) auth on ÷ auth off, req/s ({auth['case']}, {CONNECTIONS} connections)", auth["ratio"],
            "≥ 0.85", auth["ratio"] >= 0.85)
    else:
        add(f"(earlier) auth on ÷ auth off ({auth['case']}): {auth['skipped']}", None, "≥ 0.85", None)
    boot = result["startup"]["wall_s"]
    add("(earlier) start-up: fresh python until create_app has returned (s, wall)", boot, "< 1", boot < 1)
    rss = result["rss"]["max_worker_rss_mb"]
    add("(earlier) worker RSS after load (MB, largest worker, VmRSS)", rss, "< 120", 0 < rss < 120)
    for fb in result["fallback"]:
        add(f"(earlier) FHIR fallback {fb['hook']}: p50 − slowest single fetch (ms)", fb["added_p50_ms"], "< 20",
            fb["added_p50_ms"] < 20)
    return found




def previous_results(folder: Path) -> dict[str, Any] | None:
    """The results.json this run will replace (for the no-regression target), if readable."""
    try:
        return json.loads((folder / "results.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


def kb_text(n: int) -> str:
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MB"


def times_text(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"
