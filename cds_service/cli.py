"""The ``cds-service`` command: serve, knowledge check, feedback stats."""
from __future__ import annotations

import gc
import json
import os
import sys
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from .errors import KnowledgeError


class _Gunicorn(BaseApplication):
    """Gunicorn with the app built once in the master and shared by forked workers."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from . import create_app

        app = create_app()
        # The compiled knowledge lives as long as the process: move it out of the garbage
        # collector's sight, so the collections a large request body triggers stay short (and
        # forked workers keep sharing those pages instead of touching them). Done here, in the
        # server's master, not in create_app: a factory must not change the whole process.
        gc.collect()
        gc.freeze()
        return app


@click.group()
def main() -> None:
    """CDS Hooks 2.0 service for back pain in MCAS and in multiple sclerosis."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=lambda: (os.cpu_count() or 1) * 2, show_default="2 x cores", type=int)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the CDS service under gunicorn."""
    _Gunicorn({
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": "sync",
        "preload_app": True,
        "timeout": 30,
        "graceful_timeout": 10,
        "accesslog": None,  # access lines carry full URLs; the service logs what is safe
        "errorlog": "-",
        "loglevel": "warning",
    }).run()


@main.group()
def knowledge() -> None:
    """Knowledge commands."""


@knowledge.command("check")
def knowledge_check() -> None:
    """Validate knowledge/ as start-up does and print a summary."""
    try:
        loaded = _knowledge()
    except KnowledgeError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(json.dumps({"status": "ok", **loaded.summary()}, indent=2))


@knowledge.command("table")
def knowledge_table() -> None:
    """Print the Markdown rule table that docs/knowledge.md carries."""
    from .knowledge import rule_table

    click.echo(rule_table(_knowledge()), nl=False)


def _knowledge() -> Any:
    """The knowledge create_app would load: the same configuration layering, the same loader."""
    from .config import knowledge_dir, settings
    from .knowledge import load_knowledge

    return load_knowledge(knowledge_dir(settings()["KNOWLEDGE_DIR"]))


@main.group()
def feedback() -> None:
    """Feedback commands."""


@feedback.command("stats")
def feedback_stats() -> None:
    """Per rule id: cards issued, accepted, overridden, and the override reasons, as JSON."""
    from . import create_app

    app = create_app({"LOG_LEVEL": "ERROR"})
    click.echo(json.dumps(app.extensions["cds"].storage.stats(), indent=2, sort_keys=True))
