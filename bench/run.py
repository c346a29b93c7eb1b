"""``make bench``: the service against three references, under the same load, on real chart shapes.

One run, on this machine, on loopback only:

1. start-up: a fresh ``python -c`` that imports the service and calls ``create_app`` (median of 3);
2. micro-benchmarks of the stages in-process (``micro.py``);
3. the servers, each on a free port: the service (``cds-service serve``, production settings,
   auth off, a temp SQLite); the bare Flask floor (``baseline.py``: the same ``serve`` command
   with a bare app that returns the service's response bytes for the same request); the orjson
   floor (the same, also parsing the body); the Node/Express reference (``node/server.js``:
   parses the body, answers one card, as the official example services do; ``npm ci`` installs
   express from the committed lock when missing);
4. the records of ``payloads.py``: patient-view, order-select (one selected draft) and order-sign
   (five drafts) on the chart-shaped records of ≈18 KB / ≈300 KB / ≈1 MB (the records' sizes; the
   request bodies are smaller, since prefetch carries only the Observations whose codes the
   discovery template asks for, as an EHR's FHIR server answers it), and patient-view on
   four Synthea patients; for each: a warm-up, then a bounded load with 8 connections (req/s,
   p50, p99, server CPU per call) and one connection (p50, p99, and the service's CPU per call;
   service and bare floor), the
   servers in turn, never at the same time;
5. worker RSS after the load;
6. the FHIR fallback: no prefetch, a local FHIR server answering every query in 50 ms;
7. authentication on (a second service requiring a client JWT per call) against off;
8. the first call of a fresh one-worker service against its warm calls;
8b. ``cds-service forecast`` on a 1,000-patient export of re-identified Synthea records
   (``forecast_bench.py``; run alone: ``python bench/forecast_bench.py``): patients per second
   per core and peak memory;
9. ``results.json``, ``results.md`` (with issue #25's targets, each met or missed with its figure:
   patient-view ≈300 KB req/s ≥ 0.5 × the orjson floor; patient-view 18 KB ≤ 2 ms CPU per call on
   one connection; 1 MB ≤ 3.3 × 300 KB CPU per call; CPU per call under 8 connections ≤ 1.2 × one
   connection; no regression on the Synthea records against the results.json it replaces), and the table in
   the README between the bench markers.

Every process it starts is stopped at the end, also on failure or Ctrl-C.
Load generator: wrk (installed with apt-get when missing and possible), else ``pyload.py``
(then authentication on is not measured: it needs wrk).

    python bench/run.py [--quick] [--duration 2] [--rounds 2] [--no-readme]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import forecast_bench  # noqa: E402
import payloads  # noqa: E402
from harness import (  # noqa: E402
    PY,
    Load,
    ensure_node,
    ensure_wrk,
    free_port,
    http_get,
    loadavg,
    machine,
    memory_of,
    post,
    ratio,
    start,
    stop_all,
    versions,
    wait_ready,
    workers_of,
)
from report import growth_table, markdown, table, targets_table, update_readme  # noqa: E402
from scenarios import (  # noqa: E402
    AUTH_CASE,
    CONNECTIONS,
    FALLBACK_DELAY_MS,
    FALLBACK_SIZE,
    FIRST_CALL_CASE,
    ISSUER,
    SHORT,
    WORKERS,
    auth_cost,
    choose_knowledge,
    first_call,
    micro,
    sent_resources,
    service_env,
    slowest_fetch,
    startup,
)
from targets import previous_results, targets  # noqa: E402

# ---------------------------------------------------------------- the run

def run(args: argparse.Namespace) -> dict[str, Any]:
    started = dt.datetime.now(dt.timezone.utc)
    tmp = Path(tempfile.mkdtemp(prefix="cds-bench-"))
    knowledge, knowledge_note = choose_knowledge()
    env = service_env(tmp, knowledge)
    load = Load(None if args.python_load else ensure_wrk())
    sizes = ["300KB"] if args.quick else list(payloads.SIZES)
    synthea = [] if args.quick else [f"synthea:{name}" for name in payloads.SYNTHEA]
    load_before = loadavg()
    print(f"bench: load generator {load.name}; knowledge {knowledge_note}; temp {tmp}", flush=True)

    print("bench: start-up", flush=True)
    boot = startup(env)
    print(f"  {boot}", flush=True)
    print("bench: micro-benchmarks of the stages", flush=True)
    stages = micro(env, 0.05 if args.quick else 0.15)

    svc_port, base_port, parse_port, fhir_port = free_port(), free_port(), free_port(), free_port()
    svc_log, base_log, fhir_log = tmp / "service.log", tmp / "baseline.log", tmp / "fakefhir.log"
    # the fake FHIR server is on loopback: read only when listed (SECURITY.md, issuer binding)
    env["CDS_ISSUER_FHIR_SERVERS"] = json.dumps({ISSUER: [f"http://127.0.0.1:{fhir_port}"]})
    service = start([PY, "-m", "cds_service", "serve", "--host", "127.0.0.1", "--port", str(svc_port)], env, svc_log)
    wait_ready(svc_port, service, svc_log)

    # the cases, and the service's answer to each (the baseline returns these bytes)
    answers = tmp / "answers"
    answers.mkdir()
    cases: list[dict[str, Any]] = []
    for chart, hooks in [*((c, payloads.HOOKS) for c in sizes), *((c, ("patient-view",)) for c in synthea)]:
        counts = payloads.counts(chart)
        for hook in hooks:
            case_id = f"{SHORT[hook]}-{chart.replace('synthea:', 'syn-')}"
            body = payloads.body_bytes(hook, chart)
            body_file = tmp / f"{case_id}.body.json"
            body_file.write_bytes(body)
            path = f"/cds-services/{payloads.SERVICE_OF[hook]}"
            status, answer, _ = post(svc_port, path, body, case_id)
            if status != 200:
                raise RuntimeError(f"{case_id}: the service answered {status}: {answer[:500]!r}")
            (answers / f"{case_id}.json").write_bytes(answer)
            cards = json.loads(answer)["cards"]
            cases.append({"id": case_id, "hook": hook, "size": chart, "counts": counts, "body_bytes": len(body),
                          "sent_resources": sent_resources(body),
                          "response_bytes": len(answer), "path": path, "body_file": body_file,
                          "cards": [c["source"]["topic"]["code"] for c in cards]})

    base_env = {**env, "BENCH_RESPONSES": str(answers)}
    baseline = start([PY, str(HERE / "baseline.py"), "--host", "127.0.0.1", "--port", str(base_port)], base_env, base_log)
    wait_ready(base_port, baseline, base_log)
    parsing = start([PY, str(HERE / "baseline.py"), "--host", "127.0.0.1", "--port", str(parse_port)],
                    {**base_env, "BENCH_BASELINE_PARSE": "1"}, tmp / "baseline-parse.log")
    wait_ready(parse_port, parsing, tmp / "baseline-parse.log")
    servers = [("service", svc_port, service.pid, True), ("baseline", base_port, baseline.pid, True),
               ("baseline_parse", parse_port, parsing.pid, False)]
    node, node_note = ensure_node()
    if node:
        node_port, node_log = free_port(), tmp / "node.log"
        node_proc = start([node, str(HERE / "node" / "server.js"), "--host", "127.0.0.1", "--port", str(node_port)],
                          {**env, "BENCH_WORKERS": str(WORKERS)}, node_log)
        wait_ready(node_port, node_proc, node_log)
        servers.append(("node", node_port, node_proc.pid, False))
    else:
        print("#" * 96 + f"\n### NOTICE: the Node/Express reference is NOT measured: {node_note}\n" + "#" * 96,
              flush=True)

    seconds = args.duration
    for case in cases:
        print(f"bench: {case['id']}", flush=True)
        for _, port, _, _ in servers:
            load.run(port, case["path"], case["body_file"], case["id"], CONNECTIONS, args.warmup)  # warm-up
        # Rounds, the servers in turn within each; the best round of each measurement is kept: a
        # busy machine only ever makes a server look slower, never faster.
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {name: {"load": [], "single": []} for name, *_ in servers}
        rounds = 1 if case["size"].startswith("synthea:") else args.rounds  # keeps make bench under 8 minutes
        for _ in range(rounds):
            for name, port, master, single in servers:
                runs[name]["load"].append(load.run(port, case["path"], case["body_file"], case["id"], CONNECTIONS,
                                                   seconds, master))
                if single:
                    runs[name]["single"].append(load.run(port, case["path"], case["body_file"], case["id"], 1,
                                                         seconds, master))
        for name, *_ in servers:
            case[name] = {"load": max(runs[name]["load"], key=lambda r: r["req_per_s"])}
            if runs[name]["single"]:
                case[name]["single"] = min(runs[name]["single"], key=lambda r: r["p50_ms"])
            case[name]["rounds"] = runs[name]
        s, b = case["service"], case["baseline"]
        case["ratio"] = {
            "req_per_s": ratio(s["load"]["req_per_s"], b["load"]["req_per_s"]),
            "load_p50": ratio(s["load"]["p50_ms"], b["load"]["p50_ms"]),
            "load_p99": ratio(s["load"]["p99_ms"], b["load"]["p99_ms"]),
            "single_p50": ratio(s["single"]["p50_ms"], b["single"]["p50_ms"]),
            "single_p99": ratio(s["single"]["p99_ms"], b["single"]["p99_ms"]),
            "cpu_per_request": ratio(s["load"]["cpu_ms_per_request"] or 0, b["load"]["cpu_ms_per_request"] or 0),
            "req_per_s_vs_parsing_baseline": ratio(s["load"]["req_per_s"], case["baseline_parse"]["load"]["req_per_s"]),
        }
        if "node" in case:
            case["ratio"]["req_per_s_vs_node"] = ratio(s["load"]["req_per_s"], case["node"]["load"]["req_per_s"])
            case["ratio"]["cpu_per_request_vs_node"] = ratio(s["load"]["cpu_ms_per_request"] or 0,
                                                              case["node"]["load"]["cpu_ms_per_request"] or 0)

    workers = workers_of(service.pid)
    rss = {"workers": {str(pid): memory_of(pid) for pid in workers}, "master": memory_of(service.pid)}
    rss["max_worker_rss_mb"] = max((m.get("VmRSS", 0.0) for m in rss["workers"].values()), default=0.0)
    rss["max_worker_pss_mb"] = max((m.get("Pss", 0.0) for m in rss["workers"].values()), default=0.0)

    # the FHIR fallback: no prefetch, every query answered by a local FHIR server after 50 ms
    print("bench: FHIR fallback", flush=True)
    fhir = start([PY, str(HERE / "slowfhir.py"), "--port", str(fhir_port), "--chart", FALLBACK_SIZE,
                  "--delay-ms", str(FALLBACK_DELAY_MS)], env, fhir_log)
    wait_ready(fhir_port, fhir, fhir_log, path="/metadata")
    discovered = json.loads(http_get(svc_port, "/cds-services"))
    templates = {s["id"]: s.get("prefetch", {}) for s in discovered["services"]}
    patient_id = payloads.record(FALLBACK_SIZE)["Patient"]["id"]
    fallback = []
    for hook in ("patient-view", "order-sign"):
        sid = payloads.SERVICE_OF[hook]
        fetch = slowest_fetch(fhir_port, patient_id, templates[sid])
        body = payloads.body_bytes(hook, FALLBACK_SIZE, prefetch=False, fhir_server=f"http://127.0.0.1:{fhir_port}", token="bench-token")
        body_file = tmp / f"fallback-{SHORT[hook]}.body.json"
        body_file.write_bytes(body)
        status, answer, _ = post(svc_port, f"/cds-services/{sid}", body)
        if status != 200:
            raise RuntimeError(f"fallback {hook}: the service answered {status}: {answer[:500]!r}")
        print(f"bench: fallback {hook}", flush=True)
        load.run(svc_port, f"/cds-services/{sid}", body_file, "", 1, 1)  # warm-up: connections, thread pools
        single = load.run(svc_port, f"/cds-services/{sid}", body_file, "", 1, seconds)
        fallback.append({
            "hook": hook, "queries": len(templates[sid]), "delay_ms": FALLBACK_DELAY_MS,
            "fetch": fetch, "service": single,
            "cards": [c["source"]["topic"]["code"] for c in json.loads(answer)["cards"]],
            "added_p50_ms": round(single["p50_ms"] - fetch["slowest_ms"], 2),
            "added_p99_ms": round(single["p99_ms"] - fetch["slowest_ms"], 2),
        })

    if load.wrk:
        case = next((c for c in cases if c["id"] == AUTH_CASE), cases[0])  # --quick has no 18 KB case
        print(f"bench: auth on vs off ({case['id']})", flush=True)
        auth = auth_cost(load, env, tmp, case, svc_port, service.pid, seconds, args.rounds)
    else:
        auth = {"case": AUTH_CASE, "skipped": "the auth-on measurement needs wrk (one JWT per request)"}
    print(f"bench: first call of a fresh worker ({FIRST_CALL_CASE})", flush=True)
    case = next(c for c in cases if c["id"] == FIRST_CALL_CASE)
    first = {"case": case["id"], **first_call(env, tmp, case["path"], case["body_file"].read_bytes())}
    for case in cases:
        del case["body_file"]
    print("bench: forecast of a 1,000-patient Synthea export (cds-service forecast, every core)", flush=True)
    forecast = forecast_bench.forecast_stage(1000, tmp=tmp)
    print(f"  {forecast['patients_per_s_per_core']} patients/s per core, peak {forecast['peak_rss_mb']} MB", flush=True)

    finished = dt.datetime.now(dt.timezone.utc)
    result = {
        "date": started.isoformat(timespec="seconds"), "duration_s": round((finished - started).total_seconds(), 1),
        "machine": machine(), "versions": versions(load), "knowledge": knowledge_note,
        "settings": {
            "service": "cds-service serve --host 127.0.0.1 --port <free> (gunicorn: workers 2 x cores, gthread with 16 threads, preload; "
                       "CDS_AUTH_REQUIRED=false, CDS_DATABASE_URL=<temp SQLite>, other settings production defaults)",
            "baseline": "bench/baseline.py: the same serve command and gunicorn options, a bare Flask view that reads "
                        "the body and returns the service's captured answer bytes",
            "baseline_parse": "the orjson floor: the same baseline, also parsing the body (BENCH_BASELINE_PARSE=1: "
                              "orjson.loads if the service's api module uses orjson, else plain json.loads, without "
                              "the service's own checks); 8 connections only",
            "node": f"bench/node/server.js ({node_note}): express.json() with a 16 MB limit parses the body, one card "
                    f"naming the patient is answered, as the official example services do; node:cluster with "
                    f"{WORKERS} workers (as many as the service's); 8 connections only",
            "load": f"warm-up {args.warmup} s; then {args.rounds} rounds (Synthea records: 1) of: {CONNECTIONS} "
                    f"connections for {seconds} s and 1 connection for {seconds} s, each server in turn, never two at "
                    "the same time; the best round is reported (highest req/s; lowest one-connection p50, with that "
                    "round's p99)",
            "workers": os.cpu_count() * 2 if os.cpu_count() else None,
        },
        "loadavg_before": load_before, "loadavg_after": loadavg(),
        "startup": boot, "rss": rss, "cases": cases, "fallback": fallback, "micro": stages, "auth": auth,
        "first_call": first, "forecast": forecast,
    }
    result["targets"] = targets(result, previous_results(Path(args.out)))
    return result



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=2, help="whole seconds per measurement (default 2)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per case; the best round is reported")
    parser.add_argument("--warmup", type=int, default=1, help="whole seconds of warm-up per case and server")
    parser.add_argument("--quick", action="store_true", help="only the ≈300 KB cases, short micro-benchmarks")
    parser.add_argument("--python-load", action="store_true", help="use bench/pyload.py even if wrk is there")
    parser.add_argument("--no-readme", action="store_true", help="do not update the README table")
    parser.add_argument("--out", default=str(HERE), help="folder for results.json and results.md")
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        result = run(args)
    finally:
        stop_all()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8")
    (out / "results.md").write_text(markdown(result), "utf-8")
    if not args.no_readme and not args.quick:
        update_readme(result)
    print()
    print(table(result))
    print()
    print(growth_table(result))
    print()
    print(targets_table(result))
    print(f"\nbench: wrote {out / 'results.md'} and {out / 'results.json'} in {result['duration_s']:.0f} s")


if __name__ == "__main__":
    main()
