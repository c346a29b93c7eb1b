"""A Python load generator, used only when wrk is not available.

Same interface and output as ``wrk -s post.lua``: ``connections`` keep-alive
connections, each sending the body back to back for ``duration`` seconds;
prints one JSON line. It needs a core of its own more than wrk does, so its
numbers are lower than wrk's on a 2-core machine (``results.md`` says which
generator ran).

    python bench/pyload.py --url http://127.0.0.1:9000/cds-services/x --body f.json \
        --case pv-300KB --connections 8 --duration 3
"""
from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from urllib.parse import urlsplit


def run(url: str, body: bytes, case: str, connections: int, duration: float, timeout: float = 10.0) -> dict:
    parts = urlsplit(url)
    headers = {"Content-Type": "application/json", "X-Bench-Case": case, "Content-Length": str(len(body))}
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    received = [0]
    lock = threading.Lock()
    start = time.perf_counter()
    stop = start + duration

    def worker(i: int) -> None:
        conn = None
        while time.perf_counter() < stop:
            if conn is None:
                try:
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                    conn.connect()
                except OSError:
                    with lock:
                        errors["connect"] += 1
                    conn = None
                    time.sleep(0.01)
                    continue
            t0 = time.perf_counter()
            try:
                conn.request("POST", parts.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except TimeoutError:
                with lock:
                    errors["timeout"] += 1
                conn.close()
                conn = None
                continue
            except OSError:
                with lock:
                    errors["read"] += 1
                conn.close()
                conn = None
                continue
            latencies[i].append(time.perf_counter() - t0)
            with lock:
                received[0] += len(data)
                if response.status >= 400:
                    errors["status"] += 1
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    values = sorted(v for per in latencies for v in per)

    def pct(p: float) -> int:
        if not values:
            return 0
        return int(values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))] * 1e6)

    return {
        "requests": len(values), "duration_us": int(elapsed * 1e6), "bytes": received[0], "errors": errors,
        "latency_us": {"min": pct(0), "mean": (sum(values) / len(values) * 1e6) if values else 0.0,
                       "max": pct(100), "p50": pct(50), "p90": pct(90), "p99": pct(99)},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--body", required=True)
    parser.add_argument("--case", default="")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args()
    with open(args.body, "rb") as f:
        body = f.read()
    print(json.dumps(run(args.url, body, args.case, args.connections, args.duration)))


if __name__ == "__main__":
    main()
