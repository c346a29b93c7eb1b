"""The baseline: a bare Flask app under exactly the service's gunicorn settings.

It takes the same request (the same path and body), reads the whole body, and
answers with the bytes the real service answered for that case (captured by
``run.py`` into ``BENCH_RESPONSES``, one ``<case>.json`` per ``X-Bench-Case``
header value). No JSON parsing, no CDS work. With ``BENCH_BASELINE_PARSE=1`` it also
parses the body with the parser the service uses (a reference point: how much of the
gap is JSON parsing alone). It is served through
``cds_service.cli``'s own ``serve`` command with only the app swapped, so the
gunicorn options (workers, worker class, preload, timeouts, logging) are the
service's production options, not a copy of them.

    python bench/baseline.py --host 127.0.0.1 --port 9001
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from flask import Flask, Response, request


def create_baseline_app() -> Flask:
    folder = Path(os.environ["BENCH_RESPONSES"])
    answers = {p.stem: p.read_bytes() for p in folder.glob("*.json")}
    parse = service_parser() if os.environ.get("BENCH_BASELINE_PARSE") else None
    app = Flask("bench_baseline")

    @app.post("/cds-services/<service_id>")
    def hook(service_id: str) -> Any:
        raw = request.get_data(cache=False)  # receive the whole body, as the service does
        if parse is not None:
            parse(raw)
        body = answers.get(request.headers.get("X-Bench-Case", ""))
        if body is None:
            return Response(b'{"error":"unknown X-Bench-Case"}', status=400, mimetype="application/json")
        return Response(body, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Any:
        return Response(b'{"status":"ok"}', mimetype="application/json")

    return app


def service_parser() -> Any:
    """The JSON parser the service's endpoint uses (orjson when its api module imports it)."""
    import json

    from cds_service.web import api

    return getattr(getattr(api, "orjson", None), "loads", None) or json.loads


def main(argv: list[str]) -> None:
    from cds_service import cli

    class Baseline(cli._Gunicorn):  # the service's gunicorn application, loading the baseline app
        def load(self) -> Any:
            return create_baseline_app()

        def warm_worker(self, worker: Any) -> None:
            """A bare app has nothing to warm."""

    cli._Gunicorn = Baseline  # serve() builds its options and instantiates the class from module globals
    cli.main(["serve", *argv], prog_name="bench-baseline")


if __name__ == "__main__":
    main(sys.argv[1:])
