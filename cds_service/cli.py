"""The ``cds-service`` command: serve, knowledge check, feedback stats, storage prune."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from .errors import KnowledgeError, StorageUnusable


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    """Gunicorn with the app built once in the master and shared by forked workers."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from . import create_app

        try:
            return create_app()
        except (KnowledgeError, StorageUnusable) as exc:
            raise RuntimeError(str(exc)) from None  # gunicorn prints "Error: <message>" and exits 1


@click.group()
def main() -> None:
    """CDS Hooks 2.0 service for back pain in MCAS and in multiple sclerosis."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=lambda: (os.cpu_count() or 1) * 2, show_default="2 x cores", type=int)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the CDS service under gunicorn."""
    from .metrics import gunicorn_hooks

    metrics_hooks = gunicorn_hooks()  # before the app (and prometheus_client) is loaded in this master
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
        **metrics_hooks,
    }).run()


@main.group()
def knowledge() -> None:
    """Knowledge commands."""


@knowledge.command("check")
def knowledge_check() -> None:
    """Validate knowledge/ as start-up does and print a summary."""
    from .config import knowledge_dir
    from .knowledge import load_knowledge

    try:
        loaded = load_knowledge(knowledge_dir(os.environ.get("CDS_KNOWLEDGE_DIR")))
    except KnowledgeError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(json.dumps({"status": "ok", **loaded.summary()}, indent=2))


@knowledge.command("table")
def knowledge_table() -> None:
    """Print the Markdown rule table that docs/knowledge.md carries."""
    from .config import knowledge_dir
    from .knowledge import load_knowledge, rule_table

    click.echo(rule_table(load_knowledge(knowledge_dir(os.environ.get("CDS_KNOWLEDGE_DIR")))), nl=False)


@main.group()
def feedback() -> None:
    """Feedback commands."""


@feedback.command("stats")
def feedback_stats() -> None:
    """Per rule id: cards issued, accepted, overridden, and the override reasons, as JSON."""
    click.echo(json.dumps(_storage().stats(), indent=2, sort_keys=True))


@main.group()
def storage() -> None:
    """Storage commands."""


@storage.command("prune")
def storage_prune() -> None:
    """Delete issued cards, feedback and JWT ids past their retention now; rows deleted per table, as JSON."""
    click.echo(json.dumps(_storage().prune(), indent=2, sort_keys=True))


def _storage() -> Any:
    """The storage the service would use, configured as ``serve`` configures it."""
    from . import create_app

    try:
        app = create_app({"LOG_LEVEL": "ERROR", "PRUNE_INTERVAL_SECONDS": 0})
    except (KnowledgeError, StorageUnusable) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    return app.extensions["cds"].storage
