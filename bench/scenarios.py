"""What ``make bench`` measures besides the load runs, each a function that returns figures: the
service's environment, start-up, the in-process stages (``micro.py``), the first call of a fresh
worker, authentication on against off, the slowest single FHIR fetch; and the constants of the
run (records, connections, workers)."""
from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import HERE, PY, ROOT, Load, free_port, post, ratio, start, stop, wait_ready

CONNECTIONS = 8
WORKERS = (os.cpu_count() or 1) * 2  # the service's default (cds-service serve): the Node reference gets as many
FALLBACK_DELAY_MS = 50.0
FALLBACK_SIZE = "300KB"
SMALL_SIZE = "18KB"
TARGET_SIZE = "300KB"
BIG_SIZE = "1MB"
AUTH_CASE = "pv-18KB"  # auth costs most, relatively, where the rest is cheap
FIRST_CALL_CASE = "pv-300KB"
SHORT = {"patient-view": "pv", "order-select": "os", "order-sign": "sg"}

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
    return {"case": case["id"], "on": on, "off": off, "ratio": ratio(on["req_per_s"], off["req_per_s"]),
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



def sent_resources(body: bytes) -> int:
    """Resources the request carries (its prefetch and draft orders), fewer than the record holds:
    the prefetch keeps only what each discovery template asks for."""
    request = json.loads(body)
    count = 0
    for value in [*request.get("prefetch", {}).values(), request.get("context", {}).get("draftOrders")]:
        if isinstance(value, dict):
            count += len(value.get("entry", [])) if value.get("resourceType") == "Bundle" else 1
    return count

