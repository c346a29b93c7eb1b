"""In-process micro-benchmarks of the stages of one service call.

For each hook and prefetch size, times each stage the endpoint runs, in the
order it runs them, with ``time.perf_counter`` over many iterations:

  parse            the body, with the parser ``api._json_body`` uses (json or orjson)
  envelope         ``hooks.parse_hook_request`` (JSON Schema of the envelope and context)
  prefetch         ``prefetch.gather`` with complete prefetch (no fetch)
  facts            ``facts.build_facts`` and every part of the record read (what a call whose
                   gates all open reads; a call reads a part only when a rule asks for it)
  rules            ``engine.evaluate`` on fresh facts: the rules and the reading of the parts of
                   the record they ask for
  decide           ``decision.decide``: facts, rules and cards together, as the endpoint runs
                   them (cards include FHIR validation of suggested resources)
  storage          ``Storage.record_cards`` (one SQLite transaction, the service's PRAGMAs)
  response json    ``flask.jsonify`` of the cards
  log line         the call's JSON log line (written to /dev/null)
  metrics          what one call counts (cards, stage and total histograms, the call counter; in
                   multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set, as under ``serve``)
  whole call       the endpoint through Flask's test client (no HTTP, no gunicorn)

Each stage's median wall time and median CPU time. Prints one JSON document on stdout. The knowledge directory, database and log
level come from the same ``CDS_*`` environment the service reads.

    python bench/micro.py [--seconds 0.15] [--sizes 300KB] [--hooks order-sign]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import payloads  # noqa: E402


def _time(fn: Callable[[], Any], seconds: float, min_iter: int = 20, max_iter: int = 5000) -> dict[str, Any]:
    fn()  # warm
    samples: list[float] = []
    cpu: list[float] = []
    end = time.perf_counter() + seconds
    while (len(samples) < min_iter or time.perf_counter() < end) and len(samples) < max_iter:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return {
        "iterations": len(samples),
        "median_us": round(statistics.median(samples) * 1e6, 1),
        # CPU of this process (every thread): what a loaded machine distorts least
        "cpu_median_us": round(statistics.median(cpu) * 1e6, 1),
        "mean_us": round(statistics.fmean(samples) * 1e6, 1),
        "p99_us": round(samples[min(len(samples) - 1, int(0.99 * len(samples)))] * 1e6, 1),
    }


def read_all(facts: Any) -> Any:
    """Facts with every part of the record read, as when every gate opens."""
    for part in ("conditions", "allergies", "active_medications", "recent_medications", "latest_day_observations"):
        getattr(facts, part)
    return facts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=0.15, help="time per stage per case")
    parser.add_argument("--sizes", nargs="*", default=list(payloads.SIZES))
    parser.add_argument("--hooks", nargs="*", default=list(payloads.HOOKS))
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="cds-bench-micro-")
    os.environ.setdefault("CDS_DATABASE_URL", f"sqlite:///{tmp}/micro.sqlite3")
    os.environ.setdefault("CDS_AUTH_REQUIRED", "false")
    # counted as under ``serve``: multiprocess mode, a file per worker (web/metrics.py)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="cds-bench-metrics-"))
    from flask import jsonify

    from cds_service import create_app, metrics
    from cds_service.core.decision import decide
    from cds_service.core.engine import evaluate
    from cds_service.core.facts import build_facts
    from cds_service.core.hooks import parse_hook_request
    from cds_service.core.issued import new_id
    from cds_service.fhirfetch.gather import gather
    from cds_service.storage.issued import CallRecord
    from cds_service.web import api

    app = create_app({"LOG_LEVEL": "INFO"})
    # Every line, written where it costs no terminal: the log line is a stage of its own
    for handler in logging.getLogger("cds_service").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))
    call_log = logging.getLogger("cds_service.api")

    def count(answered: list[tuple[str, str]]) -> None:
        """What one call counts: its cards, its stages, its status and total time."""
        metrics.cards_returned(answered)
        metrics.call_stages("micro", prefetch=0.0001, evaluate=0.001, store=0.0005)
        metrics.get().calls.labels("micro", "patient-view", "200").inc()
        metrics.get().seconds.labels("micro", "total").observe(0.002)
    rt = app.extensions["cds"]
    client = app.test_client()
    rules_url = "http://127.0.0.1/rules"
    orjson = getattr(api, "orjson", None)
    parse = orjson.loads if orjson is not None else json.loads
    parser = "orjson" if orjson is not None else "json"
    results: list[dict[str, Any]] = []
    for size in args.sizes:
        for hook in args.hooks:
            raw = payloads.body_bytes(hook, size)
            service = rt.knowledge.services[payloads.SERVICE_OF[hook]]
            body = json.loads(raw)
            req = parse_hook_request(body, service.hook)
            data = gather(req, rt.prefetch[service.id], service.required_prefetch, rt.fetch_policy).data
            now = rt.clock()
            modules = list(service.modules)

            # The stages run within this iteration; each binds the values of this payload (B023).
            def decided(service: Any = service, req: Any = req, data: Any = data, now: Any = now) -> Any:
                return decide(service, req, data, rt.knowledge, now, rules_url=rules_url)

            decision = decided()
            cards = decision.cards
            log_fields = {"request_id": "micro", "service": service.id, "hook": service.hook,
                          "hook_instance": req.hook_instance, "rules_fired": [c.rule_id for c in decision.issued],
                          "rules_skipped": decision.skipped, "rules_failed": decision.failed,
                          "rules_suppressed": decision.suppressed, "queued_ms": 0.0, "prefetch_ms": 0.01,
                          "evaluate_ms": 1.0, "store_ms": 0.5}
            stages = {
                "parse": lambda raw=raw: parse(raw),
                "envelope": lambda body=body, service=service: parse_hook_request(body, service.hook),
                "prefetch": lambda req=req, service=service: gather(req, rt.prefetch[service.id],
                                                                    service.required_prefetch, rt.fetch_policy),
                "facts": lambda req=req, data=data, now=now: read_all(
                    build_facts(req.hook, req.context, data, rt.knowledge.terminology, now)),
                "rules": lambda modules=modules, req=req, data=data, now=now: evaluate(
                    modules, build_facts(req.hook, req.context, data, rt.knowledge.terminology, now)),
                "decide": decided,
                # the call's whole record alone (not the decision), as the background thread writes one
                # call's: cards and go-live record in one transaction; new card ids each time, as each call has
                "storage": lambda service=service, req=req, decision=decision: rt.storage.cards.record([CallRecord(
                    service.id, req.hook_instance, [replace(c, uuid=new_id()) for c in decision.issued],
                    None, decision.held_back, rt.knowledge.release, decision.silent)]),
                "response json": None,
                "log line": lambda log_fields=log_fields: call_log.info("service call", extra=log_fields),
                "metrics": lambda decision=decision: count(decision.answered()),
                "whole call": lambda service=service, raw=raw: client.post(
                    f"/cds-services/{service.id}", data=raw, buffered=True, content_type="application/json"),
            }
            timed: dict[str, Any] = {}
            with app.test_request_context():
                for name, fn in stages.items():
                    if name == "response json":
                        fn = lambda cards=cards: jsonify({"cards": cards}).get_data()  # noqa: E731
                    timed[name] = _time(fn, args.seconds)
            status = client.post(f"/cds-services/{service.id}", data=raw, content_type="application/json").status_code
            results.append({
                "hook": hook, "size": size, "resources": payloads.counts(size)["resources"], "body_bytes": len(raw), "status": status,
                "cards": [c["source"]["topic"]["code"] for c in cards],
                "suggestions": sum(len(c.get("suggestions", [])) for c in cards),
                "rules_skipped": decision.skipped, "rules_failed": decision.failed,
                "stages": timed,
            })
    print(json.dumps({"seconds_per_stage": args.seconds, "parser": parser, "cases": results}))


if __name__ == "__main__":
    main()
