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
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import forecast_bench  # noqa: E402
import payloads  # noqa: E402
from fakefhir import free_port  # noqa: E402 (one copy, shared with the tests)

PY = sys.executable
CONNECTIONS = 8
WORKERS = (os.cpu_count() or 1) * 2  # the service's default (cds-service serve): the Node reference gets as many
FALLBACK_DELAY_MS = 50.0
FALLBACK_SIZE = "300KB"
SMALL_SIZE = "18KB"
TARGET_SIZE = "300KB"
BIG_SIZE = "1MB"
AUTH_CASE = "pv-18KB"  # auth costs most, relatively, where the rest is cheap
FIRST_CALL_CASE = "pv-300KB"
README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"
SHORT = {"patient-view": "pv", "order-select": "os", "order-sign": "sg"}

_children: list[subprocess.Popen] = []


# ---------------------------------------------------------------- processes

def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = open(log, "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=ROOT, start_new_session=True)  # its own process group: stopped as a whole
    _children.append(proc)
    return proc


def stop_all() -> None:
    for proc in reversed(_children):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the group this script created for it
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    for proc in reversed(_children):
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    _children.clear()


def stop(proc: subprocess.Popen) -> None:
    """Stop one process this script started (its process group) and forget it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _children.remove(proc)


def wait_ready(port: int, proc: subprocess.Popen, log: Path, path: str = "/healthz", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process on port {port} exited ({proc.returncode}); log:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port} within {timeout:.0f} s; log:\n{log.read_text()[-3000:]}")


def post(port: int, path: str, body: bytes, case: str = "") -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    t0 = time.perf_counter()
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", "X-Bench-Case": case})
    response = conn.getresponse()
    data = response.read()
    elapsed = time.perf_counter() - t0
    conn.close()
    return response.status, data, elapsed


def workers_of(master: int) -> list[int]:
    try:
        text = Path(f"/proc/{master}/task/{master}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_seconds(master: int) -> float:
    """User + system CPU of a gunicorn master and its workers so far, with the workers it has
    reaped (a worker replaced after ``--max-requests`` takes its CPU time with it otherwise)."""
    total = 0
    for pid in [master, *workers_of(master)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        if pid == master:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: the workers it has reaped
    return total / os.sysconf("SC_CLK_TCK")


def memory_of(pid: int) -> dict[str, float]:
    found: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line.split(":")[0]] = int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Pss:", "Private_Clean:", "Private_Dirty:")):
                found[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return {k: round(v, 1) for k, v in found.items()}


def ensure_node() -> tuple[str | None, str]:
    """node, with bench/node's dependencies installed (npm ci from the committed lock); or None and why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return None, "node or npm is not installed"
    folder = HERE / "node"
    if not (folder / "node_modules" / "express").is_dir():
        print("bench: installing the Node reference's dependencies (npm ci in bench/node)", flush=True)
        out = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True, text=True)
        if out.returncode != 0:
            return None, f"npm ci in bench/node failed: {(out.stdout + out.stderr)[-500:]}"
    express = json.loads((folder / "node_modules" / "express" / "package.json").read_text())["version"]
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    return node, f"node {version}, express {express}"


# ---------------------------------------------------------------- load generation

def ensure_wrk() -> str | None:
    found = shutil.which("wrk")
    if found:
        return found
    if os.environ.get("BENCH_NO_INSTALL") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    print("bench: wrk is missing; installing it with apt-get (Debian package 'wrk')", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            print("bench: could not install wrk; using the Python load generator", flush=True)
            return None
    return shutil.which("wrk")


class Load:
    def __init__(self, wrk: str | None) -> None:
        self.wrk = wrk

    @property
    def name(self) -> str:
        if self.wrk:
            out = subprocess.run([self.wrk, "-v"], capture_output=True, text=True)
            return (out.stdout + out.stderr).split("\n")[0].split(" Copyright")[0].strip()
        return "bench/pyload.py (Python threads)"

    def run(self, port: int, path: str, body_file: Path, case: str, connections: int, seconds: float,
            master: int | None = None, tokens: Path | None = None) -> dict[str, Any]:
        url = f"http://127.0.0.1:{port}{path}"
        if self.wrk:
            threads = min(2, connections)  # wrk takes whole seconds
            cmd = [self.wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                   "-s", str(HERE / "post.lua"), url]
            env = {**os.environ, "BENCH_BODY": str(body_file), "BENCH_CASE": case}
            if tokens:
                env.update({"BENCH_TOKENS": str(tokens), "BENCH_THREADS": str(threads)})
        elif tokens:
            raise RuntimeError("the auth-on measurement needs wrk (one JWT per request)")
        else:
            cmd = [PY, str(HERE / "pyload.py"), "--url", url, "--body", str(body_file), "--case", case,
                   "--connections", str(connections), "--duration", str(seconds)]
            env = dict(os.environ)
        cpu0 = cpu_seconds(master) if master else 0.0
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60)
        cpu = cpu_seconds(master) - cpu0 if master else 0.0
        line = next((ln for ln in reversed(out.stdout.splitlines()) if ln.startswith("{")), None)
        if out.returncode != 0 or line is None:
            raise RuntimeError(f"load generator failed ({out.returncode}): {out.stdout[-1000:]} {out.stderr[-1000:]}")
        raw = json.loads(line)
        secs = raw["duration_us"] / 1e6
        lat = raw["latency_us"]
        errors = sum(raw["errors"].values())
        return {
            "connections": connections, "seconds": round(secs, 2), "requests": raw["requests"],
            "req_per_s": round(raw["requests"] / secs, 1) if secs else 0.0,
            "p50_ms": round(lat["p50"] / 1000, 2), "p90_ms": round(lat["p90"] / 1000, 2),
            "p99_ms": round(lat["p99"] / 1000, 2), "max_ms": round(lat["max"] / 1000, 2),
            "mean_ms": round(lat["mean"] / 1000, 2), "errors": raw["errors"], "ok": errors == 0,
            # server CPU per request: what a busy machine does not distort much (10 ms clock ticks)
            "cpu_ms_per_request": round(cpu * 1000 / raw["requests"], 3) if master and raw["requests"] else None,
        }


# ---------------------------------------------------------------- measurements

def service_env(tmp: Path, knowledge: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update({"CDS_AUTH_REQUIRED": "false", "CDS_DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}"})
    # measure the checkout this bench/ lives in, whatever an editable install points at
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    if knowledge:
        env["CDS_KNOWLEDGE_DIR"] = knowledge
    return env


def choose_knowledge() -> tuple[str | None, str]:
    """The repository's knowledge if it loads; else CDS_KNOWLEDGE_DIR or /tmp/kn (a working stub)."""
    cli = [PY, "-m", "cds_service", "knowledge", "check"]
    env = {k: v for k, v in os.environ.items() if k != "CDS_KNOWLEDGE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    if subprocess.run(cli, env=env, capture_output=True, cwd=ROOT).returncode == 0:
        return None, "knowledge/ (the repository's)"
    for candidate in (os.environ.get("CDS_KNOWLEDGE_DIR"), "/tmp/kn"):
        if candidate and subprocess.run(cli, env={**env, "CDS_KNOWLEDGE_DIR": candidate},
                                        capture_output=True, cwd=ROOT).returncode == 0:
            return candidate, f"{candidate} (the repository's knowledge/ does not load yet)"
    raise SystemExit("bench: knowledge/ does not load (cds-service knowledge check) and no working CDS_KNOWLEDGE_DIR")


def startup(env: dict[str, str], runs: int = 3) -> dict[str, Any]:
    """A fresh interpreter until ``create_app`` has returned (wall time, seen from here: the child
    says so on a line of its own), and its imports and ``create_app`` timed inside. The
    interpreter's exit afterwards is not start-up and is not counted."""
    code = ("import time; t0 = time.perf_counter(); from cds_service import create_app; t1 = time.perf_counter(); "
            "create_app({'LOG_LEVEL': 'ERROR'}); t2 = time.perf_counter(); print(t1 - t0, t2 - t1, flush=True)")
    walls, imports, creates = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen([PY, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=ROOT)
        line = proc.stdout.readline() if proc.stdout else ""
        walls.append(time.perf_counter() - t0)
        rest, err = proc.communicate(timeout=60)
        if proc.returncode != 0 or not line.strip():
            raise RuntimeError(f"start-up run failed: {(line + rest + err)[-2000:]}")
        i, c = (float(x) for x in line.split()[-2:])
        imports.append(i)
        creates.append(c)
    return {"runs": runs, "wall_s": round(statistics.median(walls), 3), "import_s": round(statistics.median(imports), 3),
            "create_app_s": round(statistics.median(creates), 3), "all_wall_s": [round(w, 3) for w in walls]}


def micro(env: dict[str, str], seconds: float) -> dict[str, Any]:
    out = subprocess.run([PY, str(HERE / "micro.py"), "--seconds", str(seconds)], env=env, capture_output=True,
                         text=True, cwd=ROOT, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"micro-benchmarks failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_call(env: dict[str, str], tmp: Path, path: str, body: bytes, warm_calls: int = 15) -> dict[str, Any]:
    """A fresh service with one worker: its first hook call against the median of the next ones."""
    port, log = free_port(), tmp / "first-call.log"
    proc = start([PY, "-m", "cds_service", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                 env, log)
    try:
        wait_ready(port, proc, log)
        status, _, first = post(port, path, body)
        warm = [post(port, path, body)[2] for _ in range(warm_calls)]
    finally:
        stop(proc)
    if status != 200:
        raise RuntimeError(f"first call: the service answered {status}")
    median = statistics.median(warm)
    return {"first_ms": round(first * 1000, 2), "warm_median_ms": round(median * 1000, 2),
            "ratio": round(first / median, 2), "warm_calls": warm_calls}


ISSUER = "https://bench-ehr.example"


def auth_setup() -> tuple[Any, dict[str, str]]:
    """A bench issuer: an ES384 private key and the CDS_ settings that trust its public key (pinned)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "bench", "alg": "ES384", "use": "sig"})
    return key, {"CDS_AUTH_REQUIRED": "true", "CDS_TRUSTED_ISSUERS": json.dumps({ISSUER: {"keys": [jwk]}})}


def write_tokens(key: Any, audience: str, n: int, target: Path) -> Path:
    """``n`` client JWTs as an EHR sends them (CDS Hooks 2.0), each with its own jti, one per line."""
    import uuid

    import jwt

    now = int(time.time())
    header = {"kid": "bench", "typ": "JWT"}
    lines = (jwt.encode({"iss": ISSUER, "sub": "bench-client", "aud": audience, "iat": now, "exp": now + 600,
                         "jti": str(uuid.uuid4())}, key, algorithm="ES384", headers=header) for _ in range(n))
    target.write_text("\n".join(lines) + "\n")
    return target


def auth_cost(load: "Load", env: dict[str, str], tmp: Path, case: dict[str, Any], svc_port: int, svc_pid: int,
              seconds: int, rounds: int) -> dict[str, Any]:
    """Auth on (a second service requiring a JWT per call) against auth off, the same case, in turn."""
    port, log = free_port(), tmp / "service-auth.log"
    key, settings = auth_setup()
    proc = start([PY, "-m", "cds_service", "serve", "--host", "127.0.0.1", "--port", str(port)],
                 {**env, **settings, "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}, log)
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    try:
        wait_ready(port, proc, log)
        status, _, _ = post(port, case["path"], case["body_file"].read_bytes(), case["id"])
        if status != 401:  # else the auth-on figures would measure nothing
            raise RuntimeError(f"auth on: a call without a token was answered {status}, not 401")
        audience = f"http://127.0.0.1:{port}{case['path']}"
        # more tokens than a run can send: auth on is not faster than the auth-off rate seen so far
        per_run = int(case["service"]["load"]["req_per_s"] * 1.5 * seconds) + 300
        load.run(port, case["path"], case["body_file"], case["id"], CONNECTIONS, 1,
                 tokens=write_tokens(key, audience, per_run // seconds + 300, tmp / "tokens-warm.txt"))
        for i in range(rounds):
            runs["off"].append(load.run(svc_port, case["path"], case["body_file"], case["id"], CONNECTIONS, seconds,
                                        svc_pid))
            runs["on"].append(load.run(port, case["path"], case["body_file"], case["id"], CONNECTIONS, seconds,
                                       proc.pid, tokens=write_tokens(key, audience, per_run, tmp / f"tokens-{i}.txt")))
    finally:
        stop(proc)
    on, off = (max(runs[k], key=lambda r: r["req_per_s"]) for k in ("on", "off"))
    return {"case": case["id"], "on": on, "off": off, "ratio": _ratio(on["req_per_s"], off["req_per_s"]),
            "rounds": runs}


def slowest_fetch(port: int, patient_id: str, templates: dict[str, str], samples: int = 5) -> dict[str, Any]:
    """Each prefetch query the service would make, fetched directly (keep-alive), median of ``samples``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    per_query: dict[str, float] = {}
    for key, template in templates.items():
        path = "/" + template.replace("{{context.patientId}}", patient_id)
        times = []
        for _ in range(samples):
            t0 = time.perf_counter()
            conn.request("GET", path, headers={"Accept": "application/fhir+json", "Authorization": "Bearer bench"})
            response = conn.getresponse()
            response.read()
            times.append(time.perf_counter() - t0)
            if response.status != 200:
                raise RuntimeError(f"fake FHIR server answered {response.status} for {path}")
        per_query[key] = round(statistics.median(times) * 1000, 2)
    conn.close()
    return {"per_query_ms": per_query, "slowest_ms": max(per_query.values())}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mb": mem, "os": os_name, "kernel": platform.release(),
            "virtualised": Path("/sys/hypervisor").exists() or "hypervisor" in Path("/proc/cpuinfo").read_text()}


def versions(load: Load) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for dist in ("cds-service", "Flask", "Werkzeug", "gunicorn", "jsonschema", "fhir.resources", "requests", "orjson"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = "absent"
    found["load generator"] = load.name
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "cds_service", "knowledge"], capture_output=True,
                           text=True, cwd=ROOT)
    if git.returncode == 0:
        found["commit"] = git.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")
    return found


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


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
            "req_per_s": _ratio(s["load"]["req_per_s"], b["load"]["req_per_s"]),
            "load_p50": _ratio(s["load"]["p50_ms"], b["load"]["p50_ms"]),
            "load_p99": _ratio(s["load"]["p99_ms"], b["load"]["p99_ms"]),
            "single_p50": _ratio(s["single"]["p50_ms"], b["single"]["p50_ms"]),
            "single_p99": _ratio(s["single"]["p99_ms"], b["single"]["p99_ms"]),
            "cpu_per_request": _ratio(s["load"]["cpu_ms_per_request"] or 0, b["load"]["cpu_ms_per_request"] or 0),
            "req_per_s_vs_parsing_baseline": _ratio(s["load"]["req_per_s"], case["baseline_parse"]["load"]["req_per_s"]),
        }
        if "node" in case:
            case["ratio"]["req_per_s_vs_node"] = _ratio(s["load"]["req_per_s"], case["node"]["load"]["req_per_s"])
            case["ratio"]["cpu_per_request_vs_node"] = _ratio(s["load"]["cpu_ms_per_request"] or 0,
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
    discovered = json.loads(_get(svc_port, "/cds-services"))
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


def previous_results(folder: Path) -> dict[str, Any] | None:
    """The results.json this run will replace (for the no-regression target), if readable."""
    try:
        return json.loads((folder / "results.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


def sent_resources(body: bytes) -> int:
    """Resources the request carries (its prefetch and draft orders), fewer than the record holds:
    the prefetch keeps only what each discovery template asks for."""
    request = json.loads(body)
    count = 0
    for value in [*request.get("prefetch", {}).values(), request.get("context", {}).get("draftOrders")]:
        if isinstance(value, dict):
            count += len(value.get("entry", [])) if value.get("resourceType") == "Bundle" else 1
    return count


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    data = conn.getresponse().read()
    conn.close()
    return data


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _cpu_of(case: dict[str, Any], server: str) -> float | None:
    return (case.get(server) or {}).get("load", {}).get("cpu_ms_per_request")


FLOOR_SHARE = 0.5  # patient-view ≈300 KB req/s against the orjson floor (issue #25)
SMALL_CPU_MS = 2.0  # patient-view 18 KB, CPU per call on one connection
CONCURRENCY_COST = 1.2  # CPU per call under 8 connections against one connection
SYNTHEA_REGRESSION = 1.1  # a Synthea record's CPU ÷ orjson floor against the previous run's


def _cpu_single(case: dict[str, Any]) -> float | None:
    """The service's CPU per call on one connection: the lowest over the rounds (a busy machine only adds)."""
    values = [r["cpu_ms_per_request"] for r in case["service"]["rounds"]["single"] if r.get("cpu_ms_per_request")]
    return min(values) if values else None


def _cpu_loaded(case: dict[str, Any]) -> float | None:
    """The same under the 8-connection load."""
    values = [r["cpu_ms_per_request"] for r in case["service"]["rounds"]["load"] if r.get("cpu_ms_per_request")]
    return min(values) if values else None


def concurrency_cost(case: dict[str, Any]) -> float | None:
    """CPU per call under 8 connections ÷ on one connection, each the lowest of its rounds."""
    one, eight = _cpu_single(case), _cpu_loaded(case)
    return _ratio(eight, one) if one and eight else None


def row_targets(case: dict[str, Any]) -> dict[str, bool | None]:
    """Issue #25's per-case targets: the orjson-floor share (patient-view ≈300 KB only) and the cost of
    concurrency (every case): met, missed, or None (not measured or not a target for this case)."""
    floor = case["ratio"].get("req_per_s_vs_parsing_baseline")
    conc = concurrency_cost(case)
    pv_mid = case["hook"] == "patient-view" and case["size"] == TARGET_SIZE
    return {"floor": None if floor is None or not pv_mid else floor >= FLOOR_SHARE,
            "concurrency": None if conc is None else conc <= CONCURRENCY_COST}


def _floor_share_of_cpu(case: dict[str, Any]) -> float | None:
    svc, floor = _cpu_of(case, "service"), _cpu_of(case, "baseline_parse")
    return _ratio(svc, floor) if svc and floor else None


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
        add(f"patient-view {TARGET_SIZE} ({_kb(mid['body_bytes'])} body): req/s ÷ orjson floor, same server settings",
            share, f"≥ {FLOOR_SHARE}", None if share is None else share >= FLOOR_SHARE)
    small = by.get(("patient-view", SMALL_SIZE))
    if small:
        cpu = _cpu_single(small)
        add(f"patient-view {SMALL_SIZE} ({_kb(small['body_bytes'])} body): CPU ms/call, one connection", cpu,
            f"≤ {SMALL_CPU_MS}", None if cpu is None else cpu <= SMALL_CPU_MS)
    for hook in payloads.HOOKS:
        m, big = by.get((hook, TARGET_SIZE)), by.get((hook, BIG_SIZE))
        if m and big:
            k = _ratio(_cpu_of(big, "service") or 0, _cpu_of(m, "service") or 0)
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
            add(f"{name}: the previous run sent another body ({_kb(earlier.get('body_bytes') or 0)}), not compared",
                None, f"≤ {SYNTHEA_REGRESSION}", None)
            continue
        now, then = _floor_share_of_cpu(case), _floor_share_of_cpu(earlier) if earlier else None
        k = _ratio(now, then) if now and then else None
        add(f"{name} against the previous run's ({_x(then)})", k, f"≤ {SYNTHEA_REGRESSION}",
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


# ---------------------------------------------------------------- reports

def _ms(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _kb(n: int) -> str:
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MB"


def _cpu(run: dict[str, Any] | None) -> str:
    v = (run or {}).get("load", {}).get("cpu_ms_per_request")
    return "–" if v is None else f"{v:.2f}"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _met(v: bool | None) -> str:
    return "" if v is None else ("met" if v else "**missed**")


def _record(case: dict[str, Any]) -> str:
    """The record's label (its whole size), then the body actually sent: smaller, since the
    Observations are only those the discovery template's codes ask for."""
    name = case["size"].replace("synthea:", "Synthea ")
    n = case["counts"]
    sent = case.get("sent_resources")
    medications = sum(n.get(kind, 0) for kind in ("MedicationRequest", "MedicationStatement", "MedicationDispense"))
    return (f"{name} ({n['resources']} res.: {n.get('Observation', 0)} obs, {n.get('Condition', 0)} cond, "
            f"{medications} med): body {_kb(case['body_bytes'])}" + (f", {sent} res." if sent else ""))


def table(result: dict[str, Any]) -> str:
    rows = [
        "| hook | record (its resources): request body sent (its resources) | CPU ms/call svc | bare | orjson floor | Node | req/s svc "
        "| ÷ bare | ÷ orjson floor | ÷ Node | 1-conn p50 / p99 ms svc | 1-conn p50 ms bare | 1-conn CPU ms/call svc "
        "| CPU 8 ÷ 1 conn | ≥ 0.5 floor | ≤ 1.2 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|",
    ]
    for c in result["cases"]:
        s, r = c["service"], c["ratio"]
        runs = [c[k][m] for k in ("service", "baseline", "baseline_parse", "node") if k in c for m in c[k]
                if m in ("load", "single")]
        flag = "" if all(run["ok"] for run in runs) else " ⚠ errors"
        met = row_targets(c)
        rows.append(
            f"| {c['hook']} | {_record(c)} | {_cpu(s)} | {_cpu(c['baseline'])} | {_cpu(c['baseline_parse'])} | "
            f"{_cpu(c.get('node'))} | {s['load']['req_per_s']:.0f} | {_x(r['req_per_s'])} | "
            f"**{_x(r.get('req_per_s_vs_parsing_baseline'))}** | {_x(r.get('req_per_s_vs_node'))} | "
            f"{_ms(s['single']['p50_ms'])} / {_ms(s['single']['p99_ms'])} | {_ms(c['baseline']['single']['p50_ms'])} | "
            f"{_x(_cpu_single(c))} | {_x(concurrency_cost(c))} | {_met(met.get('floor'))} | {_met(met.get('concurrency'))} |{flag}"
        )
    return "\n".join(rows)


def growth_table(result: dict[str, Any]) -> str:
    """patient-view over every record, smallest first: how the cost grows with the chart."""
    pv = sorted((c for c in result["cases"] if c["hook"] == "patient-view"), key=lambda c: c["body_bytes"])
    rows = ["| record | body KB | resources sent | CPU ms/call svc | orjson floor | Node | svc µs per resource | "
            "svc µs per KB | cards |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in pv:
        cpu = _cpu_of(c, "service") or 0
        sent = c.get("sent_resources") or c["counts"]["resources"]
        rows.append(f"| {c['size'].replace('synthea:', 'Synthea ')} | {c['body_bytes'] / 1024:.0f} | "
                    f"{sent} | {_cpu(c['service'])} | {_cpu(c['baseline_parse'])} | "
                    f"{_cpu(c.get('node'))} | {cpu * 1000 / sent:.0f} | "
                    f"{cpu * 1000 / (c['body_bytes'] / 1024):.1f} | {len(c['cards'])} |")
    return "\n".join(rows)


def targets_table(result: dict[str, Any]) -> str:
    rows = ["| target | measured | limit | met |", "|---|---:|---:|:---:|"]
    for t in result["targets"]:
        rows.append(f"| {t['target']} | {'–' if t['value'] is None else t['value']} | {t['limit']} | "
                    f"{_met(t['met']) or 'not measured'} |")
    return "\n".join(rows)


def header(result: dict[str, Any]) -> str:
    m, v = result["machine"], result["versions"]
    return (f"{result['date']} on {m['cores']} cores ({m['cpu']}{', virtualised' if m['virtualised'] else ''}), "
            f"{m['memory_mb']} MB, {m['os']}, Linux {m['kernel']}; Python {v['python']}, Flask {v['Flask']}, "
            f"Werkzeug {v['Werkzeug']}, gunicorn {v['gunicorn']}, {v['load generator']}; "
            f"cds-service {v.get('commit', v['cds-service'])}; knowledge: {result['knowledge']}; "
            f"load average before/after {result['loadavg_before']} / {result['loadavg_after']}")


def markdown(result: dict[str, Any]) -> str:
    out = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`bench/run.py`); the same data is in `results.json`. Do not edit by hand.",
        "",
        header(result) + ".",
        "",
        "The machine is shared (other work runs on the same 2 cores; see the load averages): figures are "
        "noisy, req/s and latencies most, CPU per call least.",
        "",
        "## The service against three references",
        "",
        f"Complete prefetch. Service: {result['settings']['service']}. *Bare*: {result['settings']['baseline']}. "
        f"*orjson floor*: {result['settings']['baseline_parse']}. *Node*: {result['settings']['node']}. "
        f"Load: {result['settings']['load']}. *÷* columns: the service's req/s divided by the reference's. "
        "*CPU ms/call* is the server's user + system CPU (master and workers, from /proc) per request under the "
        "8-connection load: on a busy machine it moves much less than req/s and latency do. Latencies are as seen "
        "by the load generator (loopback), which shares the two cores with the servers. The last two columns are "
        "issue #25's: req/s ≥ 0.5 × the orjson floor (patient-view ≈300 KB only) and CPU per call under 8 "
        "connections ≤ 1.2 × one connection (*1-conn CPU* and *CPU 8 ÷ 1 conn* take the lowest of the rounds of "
        "each) (met / **missed**). The *record* is named by its whole size; the request body sent is smaller "
        "(its size follows the name), since prefetch carries only the Observations whose codes the discovery "
        "template asks for, as an EHR's FHIR server answers the template. Records: "
        "`bench/payloads.py` (chart-shaped: the MCAS + MS persona with a long chart drawn from Synthea; Synthea: "
        "four synthetic patients' own records, `bench/data/synthea/`).",
        "",
        table(result),
        "",
        "Cards returned (rule ids): " + "; ".join(
            f"{c['hook']}: {', '.join(c['cards']) or 'none'}" for c in result["cases"] if c["size"] == TARGET_SIZE) + ".",
        "",
        "## Cost against chart size (patient-view)",
        "",
        "Every record, smallest first (by the body sent): the service's CPU per call against the request's size "
        "and the resources it carries, "
        "beside the two references that only read the body.",
        "",
        growth_table(result),
        "",
        "## Targets",
        "",
        targets_table(result),
        "",
        "## Stages, in process (median µs of CPU per call)",
        "",
        "`bench/micro.py`: each stage the endpoint runs, timed alone with `time.process_time` (CPU, user + "
        "system) over many iterations (no HTTP, no gunicorn; `results.json` also has the wall time); *parse* uses "
        f"the service's parser ({result['micro'].get('parser', 'json')}); *storage* is the card record written "
        "once the answer is sent (SQLite); *log line* and *metrics* are what one call logs and counts "
        "(Prometheus multiprocess mode, as under `serve`). *Whole call* is the endpoint through Flask's test "
        "client (it also pays for the test client, freeing the parsed body and garbage collection).",
        "",
    ]
    cases = result["micro"]["cases"]
    names = list(cases[0]["stages"]) if cases else []
    out.append("| hook | prefetch | " + " | ".join(names) + " |")
    out.append("|---|---|" + "---:|" * len(names))
    for c in cases:
        out.append(f"| {c['hook']} | {c['size']} | " + " | ".join(f"{c['stages'][n].get('cpu_median_us', c['stages'][n]['median_us']):.0f}" for n in names) + " |")
    out += [
        "",
        "## FHIR fallback (no prefetch)",
        "",
        f"A local FHIR server (`bench/slowfhir.py`) answers every query after {FALLBACK_DELAY_MS:.0f} ms with the "
        f"{FALLBACK_SIZE} record; the call sends `fhirAuthorization` with a dummy token. *Slowest fetch* is the "
        "slowest of the service's prefetch queries fetched directly (median of 5); *added* is the service's "
        "one-connection latency minus it.",
        "",
        "| hook | queries | slowest fetch ms | service p50 / p99 ms | added p50 / p99 ms | cards |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for fb in result["fallback"]:
        s = fb["service"]
        out.append(f"| {fb['hook']} | {fb['queries']} | {fb['fetch']['slowest_ms']:.1f} | {_ms(s['p50_ms'])} / "
                   f"{_ms(s['p99_ms'])} | {_ms(fb['added_p50_ms'])} / {_ms(fb['added_p99_ms'])} | {len(fb['cards'])} |")
    boot, rss, first, auth = result["startup"], result["rss"], result["first_call"], result["auth"]
    out += [
        "",
        "## Start-up, first call, authentication, memory",
        "",
        f"- First call of a fresh worker: a service with `--workers 1`, its first {first['case']} call "
        f"{first['first_ms']:.1f} ms against a median of {first['warm_median_ms']:.1f} ms over the next "
        f"{first['warm_calls']} (×{first['ratio']:.2f}; new connection each, one at a time).",
        (f"- Authentication on: a second service with `CDS_AUTH_REQUIRED=true` trusting a bench issuer (ES384, key "
         f"pinned in `CDS_TRUSTED_ISSUERS`), each request with its own client JWT (`bench/post.lua`), against the "
         f"auth-off service in turn, {auth['case']}, {CONNECTIONS} connections: {auth['on']['req_per_s']:.0f} "
         f"against {auth['off']['req_per_s']:.0f} req/s (×{auth['ratio']:.2f}); CPU ms/call "
         f"{_x(auth['on']['cpu_ms_per_request'])} against {_x(auth['off']['cpu_ms_per_request'])}."
         if "ratio" in auth else f"- Authentication on: not measured ({auth['skipped']})."),
        f"- Start-up, fresh process until `create_app` has returned (median of {boot['runs']}): {boot['wall_s']:.2f} s wall, of which "
        f"imports {boot['import_s']:.2f} s and `create_app` (knowledge compile, storage) {boot['create_app_s']:.2f} s.",
        f"- Worker memory after the load: largest VmRSS {rss['max_worker_rss_mb']:.0f} MB, largest PSS "
        f"{rss['max_worker_pss_mb']:.0f} MB (preload shares the master's pages); master VmRSS "
        f"{rss['master'].get('VmRSS', 0):.0f} MB.",
    ]
    fc = result.get("forecast")
    if fc:
        out.append(
            f"- Forecast (`cds-service forecast --jobs {fc['jobs']}`, `bench/forecast_bench.py`): {fc['patients']} "
            f"re-identified Synthea patients ({fc['export_mb']} MB of NDJSON, {fc['orders']} orders replayed) in "
            f"{fc['wall_s']:.1f} s: {fc['patients_per_s_per_core']:.1f} patients/s per core, "
            f"{fc['cpu_ms_per_patient']:.0f} CPU ms per patient; peak memory of the largest process "
            f"{fc['peak_rss_mb']:.0f} MB.")
    out.append("")
    return "\n".join(out)


def readme_block(result: dict[str, Any]) -> str:
    met = sum(1 for t in result["targets"] if t["met"])
    missed = [t["target"] for t in result["targets"] if t["met"] is False]
    return "\n".join([
        README_BEGIN,
        f"Latest `make bench` ({header(result)}; a shared machine: figures are noisy):",
        "",
        table(result),
        "",
        f"Targets met: {met} of {len(result['targets'])}; missed: {len(missed)} (each target with its figure, the cost "
        "against chart size, stages, FHIR fallback, first call, authentication, start-up and memory in "
        "[`bench/results.md`](bench/results.md)).",
        README_END,
    ])


def update_readme(result: dict[str, Any]) -> bool:
    readme = ROOT / "README.md"
    text = readme.read_text("utf-8")
    if README_BEGIN not in text or README_END not in text:
        print(f"bench: README.md has no {README_BEGIN} ... {README_END} markers; not updated", flush=True)
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(head + readme_block(result) + tail, "utf-8")
    return True


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
