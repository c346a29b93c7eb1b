"""A local FHIR R4 server for the fallback benchmark: every answer after a fixed delay.

Serves the benchmark patient (``payloads.record``) for the reads and searches
the service's prefetch templates make (``Patient/{id}`` and the searches, answered as
``payloads.search`` answers them: by type, ``status`` and ``code``), each after ``--delay-ms`` (default 50), HTTP/1.1
keep-alive, one thread per connection. Responses are serialised once at start.

    python bench/fakefhir.py --port 9002 --chart 300KB --delay-ms 50
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import payloads  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chart", default="300KB", choices=payloads.CHARTS)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    data = payloads.record(args.chart)
    patient = f"Patient/{data['Patient']['id']}"
    kinds = {"Patient", *payloads.RESOURCE_TYPES}
    answers: dict[str, bytes] = {}  # each query answered as payloads.search answers it, serialised once

    def answer(path: str, query: str) -> bytes | None:
        if path.split("/")[0] not in kinds or ("/" in path and path != patient):
            return None
        key = f"{path}?{query}"
        if key not in answers:
            answers[key] = json.dumps(payloads.search(key, data), separators=(",", ":")).encode()
        return answers[key]

    delay = args.delay_ms / 1000.0

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

        def do_GET(self) -> None:  # noqa: N802
            started = time.perf_counter()
            url = urlsplit(self.path)
            body = answer(url.path.strip("/"), url.query)
            # fixed service time, whatever the size of the answer
            time.sleep(max(0.0, delay - (time.perf_counter() - started)))
            if body is None:
                body, status = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}', 404
            else:
                status = 200
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
