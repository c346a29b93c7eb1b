"""A local FHIR R4 server for the fallback benchmark: every answer after a fixed delay.

Serves the benchmark patient (``payloads.record``) for the reads and searches
the service's prefetch templates make (``Patient/{id}`` and the searches, answered as
``payloads.search`` answers them: by type, ``status`` and ``code``), each after
``--delay-ms`` (default 50), HTTP/1.1 keep-alive, one thread per connection
(``tests/fakefhir.FakeFhir``, the tests' own fake server). Each answer is serialised once.

    python bench/slowfhir.py --port 9002 --chart 300KB --delay-ms 50
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import payloads  # noqa: E402
from fakefhir import Exchange, FakeFhir  # noqa: E402 (the one fake FHIR server, shared with the tests)

NOT_FOUND = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}'


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
    delay = args.delay_ms / 1000.0

    def body_for(path: str, query: str) -> bytes | None:
        if path.split("/")[0] not in kinds or ("/" in path and path != patient):
            return None
        key = f"{path}?{query}"
        if key not in answers:
            answers[key] = json.dumps(payloads.search(key, data), separators=(",", ":")).encode()
        return answers[key]

    def answer(exchange: Exchange) -> None:
        started = time.perf_counter()
        url = urlsplit(exchange.path)
        body = body_for(url.path.strip("/").removeprefix("fhir/"), url.query)
        # fixed service time, whatever the size of the answer
        time.sleep(max(0.0, delay - (time.perf_counter() - started)))
        exchange.send(404, NOT_FOUND) if body is None else exchange.send(200, body)

    with FakeFhir(answer, host=args.host, port=args.port, remember=False) as server:
        server.stop.wait()  # until the benchmark ends the process


if __name__ == "__main__":
    main()
