"""The bench's harness: starting and stopping the processes it measures (each in its own process
group, all stopped at the end), talking to them on loopback, the load generators (wrk, else
``pyload.py``), CPU and memory read from /proc, and what the machine is. Nothing here knows the
service or its records: ``scenarios.py`` does."""
from __future__ import annotations

import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE.parent / "tests"))
from fakefhir import free_port  # noqa: E402,F401 (one copy, shared with the tests)

PY = sys.executable
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



def http_get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    data = conn.getresponse().read()
    conn.close()
    return data



# ---------------------------------------------------------------- the machine

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


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None
