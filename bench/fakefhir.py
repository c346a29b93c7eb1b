"""A local FHIR R4 server for the fallback benchmark: every answer after a fixed delay.

Serves the benchmark patient (``payloads.record``) for the reads and searches
the service's prefetch templates make (``Patient/{id}``, ``Condition?patient=``,
``MedicationRequest?patient=``, ``AllergyIntolerance?patient=``,
``Observation?patient=``), each after ``--delay-ms`` (default 50), HTTP/1.1
keep-alive, one thread per connection (``tests/fakefhir.FakeFhir``, the tests' own fake
server). Responses are serialised once at start.

    python bench/fakefhir.py --port 9002 --chart 300KB --delay-ms 50
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chart", default="300KB", choices=payloads.CHARTS)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    data = payloads.record(args.chart)
    patient = data["patient"]
    answers = {f"Patient/{patient['id']}": json.dumps(patient, separators=(",", ":")).encode()}
    for kind, key in payloads.KEY_OF.items():
        answers[kind] = json.dumps(data[key], separators=(",", ":")).encode()
    # Resource types the chart has none of (statements, dispenses): an empty searchset, as a
    # FHIR server answers a search that finds nothing.
    empty = b'{"resourceType":"Bundle","type":"searchset","total":0,"entry":[]}'
    delay = args.delay_ms / 1000.0

    def answer(exchange: Exchange) -> None:
        started = time.perf_counter()
        path = urlsplit(exchange.path).path.strip("/")
        body = answers.get(path, empty if path[:1].isupper() and "/" not in path else None)
        # fixed service time, whatever the size of the answer
        time.sleep(max(0.0, delay - (time.perf_counter() - started)))
        if body is None:
            exchange.send(404, b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}')
        else:
            exchange.send(200, body)

    with FakeFhir(answer, host=args.host, port=args.port, remember=False) as server:
        server.stop.wait()  # until the benchmark ends the process


if __name__ == "__main__":
    main()
