"""The ``cds-service`` command: serve, knowledge check, feedback stats."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from .errors import KnowledgeError


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    """Gunicorn with the app built and warmed once in the master and shared by forked workers.

    Settings, lowest first: ``serve``'s defaults, then ``GUNICORN_CMD_ARGS``, then the options
    given on the command line (gunicorn's own CLI orders them the same way).
    """

    def __init__(self, defaults: dict[str, Any], explicit: dict[str, Any]) -> None:
        self.defaults, self.explicit = defaults, explicit
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.defaults.items():
            self.cfg.set(key, value)
        from_env = self.cfg.parser().parse_args(self.cfg.get_cmd_args_from_env())
        for key, value in vars(from_env).items():
            if value is not None and key != "args":
                self.cfg.set(key.lower(), value)
        for key, value in self.explicit.items():
            self.cfg.set(key, value)
        if self.cfg.settings["worker_class"].get() == "sync":
            self.cfg.set("threads", 1)  # gunicorn would quietly run gthread for sync with threads > 1

    def load(self) -> Any:
        import gc

        from . import create_app
        from .warm import warm

        # An operator's CDS_FHIR_FETCH_THREADS wins; else every thread can fetch all its keys at once.
        os.environ.setdefault("CDS_FHIR_FETCH_THREADS", str(self.cfg.threads * _FETCHES_PER_CALL))
        app = create_app()
        warm(app)
        gc.collect()
        gc.freeze()  # what the warm-up touched stays shared with the workers (see create_app)
        return app

    def reload(self) -> None:
        """SIGHUP: build the app again (knowledge included) before new workers are forked; the
        old workers finish their calls and stop. Broken knowledge keeps the running app."""
        super().reload()
        try:
            self.callable = self.load()
        except KnowledgeError as exc:
            print(f"SIGHUP: knowledge not reloaded, the running version is kept: {exc}", file=sys.stderr)
        except Exception as exc:  # e.g. storage unreachable: the name only, a message may hold a URL
            print(f"SIGHUP: not reloaded ({type(exc).__name__}), the running version is kept", file=sys.stderr)


@click.group()
def main() -> None:
    """CDS Hooks 2.0 service for back pain in MCAS and in multiple sclerosis."""


# serve's option -> gunicorn setting. The defaults are the documented production ones
# (docs/operations.md): threaded workers, so a caller waiting on a slow FHIR server holds one
# thread, not a whole worker; recycled now and then against memory creep.
_SERVE_SETTINGS = {
    "workers": "workers", "worker_class": "worker_class", "threads": "threads", "timeout": "timeout",
    "graceful_timeout": "graceful_timeout", "keep_alive": "keepalive", "backlog": "backlog",
    "max_requests": "max_requests", "max_requests_jitter": "max_requests_jitter",
}
# Each call fetches at most this many prefetch keys at once (discovery.TEMPLATES plus observations).
_FETCHES_PER_CALL = 5


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=lambda: (os.cpu_count() or 1) * 2, show_default="2 x cores", type=int)
@click.option("--worker-class", type=click.Choice(["gthread", "sync"]), default="gthread", show_default=True,
              help="gthread: each worker serves --threads calls at once; sync: one call per worker.")
@click.option("--threads", default=16, show_default=True, type=click.IntRange(1),
              help="Calls served at once per gthread worker; also sizes the FHIR fetch pool.")
@click.option("--timeout", default=30, show_default=True, type=click.IntRange(1),
              help="Seconds a silent worker lives before the master restarts it.")
@click.option("--graceful-timeout", default=30, show_default=True, type=click.IntRange(1),
              help="Seconds workers get on SIGTERM or SIGHUP to finish the calls they accepted.")
@click.option("--keep-alive", default=75, show_default=True, type=click.IntRange(0),
              help="Seconds an idle connection is kept (gthread); longer than the front's upstream keepalive.")
@click.option("--backlog", default=2048, show_default=True, type=click.IntRange(1),
              help="Connections the kernel queues before a worker accepts them.")
@click.option("--max-requests", default=10000, show_default=True, type=click.IntRange(0),
              help="A worker is replaced after this many calls (0: never).")
@click.option("--max-requests-jitter", default=1000, show_default=True, type=click.IntRange(0),
              help="Up to this many calls added at random, so workers are not all replaced at once.")
def serve(host: str, port: int, **options: Any) -> None:
    """Serve the CDS service under gunicorn (settings also from GUNICORN_CMD_ARGS)."""
    given = _given_on_command_line(options)
    settings = {_SERVE_SETTINGS[name]: value for name, value in options.items()}
    defaults = {
        **settings,
        "bind": f"{host}:{port}",
        "preload_app": True,
        # gunicorn 27 listens on ~/.gunicorn/gunicorn.ctl by default: unused here, shared by every instance
        # on a host, and not writable on a read-only root filesystem.
        "control_socket_disable": True,
        "accesslog": None,  # access lines carry full URLs; the service logs what is safe
        "errorlog": "-",
        "loglevel": "warning",
    }
    explicit = {_SERVE_SETTINGS[name]: settings[_SERVE_SETTINGS[name]] for name in given}
    if _given_on_command_line(("host", "port")):
        explicit["bind"] = defaults["bind"]
    _Gunicorn(defaults, explicit).run()


def _given_on_command_line(names: Any) -> set[str]:
    context = click.get_current_context()
    return {name for name in names if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}


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
    from . import create_app

    app = create_app({"LOG_LEVEL": "ERROR"})
    click.echo(json.dumps(app.extensions["cds"].storage.stats(), indent=2, sort_keys=True))
