"""The ``cds-service`` command: serve, knowledge (check, test, table, new-rule, add-products, add-brand), evaluate,
feedback (stats, report), storage prune, staff hash."""
from __future__ import annotations

import gc
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from cds_service.core.hooks import SUPPORTED_HOOKS
from cds_service.errors import KnowledgeError, SettingsInvalid, StorageUnusable


class _Gunicorn(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
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
        self.cfg.set("post_worker_init", self.warm_worker)

    def warm_worker(self, worker: Any) -> None:
        """gunicorn's post_worker_init: the master's warm-up once more, in the worker before it
        takes a call, so that the pages a decision touches are copied from the master
        (copy-on-write) and the worker's own memory grown now, not during a clinician's first call."""
        from cds_service.web.warm import warm

        warm(worker.wsgi)
        worker.wsgi.extensions["cds"].verifier.fetch_keys()  # JWKS URLs read before the first call needs them

    def load(self) -> Any:
        try:
            return self._build()
        except (KnowledgeError, SettingsInvalid, StorageUnusable) as exc:
            raise RuntimeError(str(exc)) from None  # gunicorn prints "Error: <message>" and exits 1

    def _build(self) -> Any:
        from cds_service import create_app
        from cds_service.web.warm import warm

        # An operator's CDS_FHIR_FETCH_THREADS wins; else every thread can fetch all its keys at once.
        os.environ.setdefault("CDS_FHIR_FETCH_THREADS", str(self.cfg.threads * _FETCHES_PER_CALL))
        app = create_app()
        warm(app)
        # No database connection crosses the fork: SQLite's docs warn against using one in a child
        # (its locks live in the process that opened it); each worker opens its own on first use.
        app.extensions["cds"].storage.close()
        # The compiled knowledge lives as long as the process: move it (and what the warm-up
        # touched) out of the garbage collector's sight, so the collections a large request body
        # triggers stay short and forked workers keep sharing those pages. Done here, in the
        # server's master, not in create_app: a factory must not change the whole process.
        gc.unfreeze()  # on SIGHUP: the app built before, once replaced, must be collectable
        gc.collect()
        gc.freeze()
        # A parsed chart is thousands of dicts and lists, freed by reference counting when the
        # call ends: at the default threshold (700) each 300 KB patient-view call ran 2 young
        # collections (230-290 us of CPU); at this one, none. Cyclic garbage waits a little longer.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        return app

    def reload(self) -> None:
        """SIGHUP: build the app again (knowledge included) before new workers are forked; the
        old workers finish their calls and stop. Broken knowledge keeps the running app."""
        super().reload()
        try:
            self.callable = self._build()
        except KnowledgeError as exc:  # names the file and key at fault: no secret, no patient
            _reload_log.error("SIGHUP: knowledge not reloaded, the running version is kept",
                              extra={"event": "reload_failed", "error": str(exc)})
        except Exception as exc:  # e.g. storage unreachable: the name only, a message may hold a URL
            _reload_log.error("SIGHUP: not reloaded, the running version is kept",
                              extra={"event": "reload_failed", "error": type(exc).__name__})


# A failed reload is an ERROR line of the service's JSON log (what log alerting reads), not bare stderr.
_reload_log = logging.getLogger("cds_service.reload")


class _Commands(click.Group):
    """Every command: a bad CDS_* setting is one JSON line on stderr naming each variable and what
    is wrong with it (never its value), and exit code 2; no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsInvalid as exc:
            click.echo(json.dumps({"error": "invalid settings", "problems": exc.problems}), err=True)
            sys.exit(2)


@click.group(cls=_Commands)
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
# Allocations (net of frees) between young-generation collections in a server worker (gc.set_threshold).
GC_YOUNG_THRESHOLD = 10_000
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
    from cds_service.settings import settings as service_settings
    from cds_service.web.metrics import gunicorn_hooks

    service_settings()  # a bad CDS_* value stops here, before gunicorn starts (SettingsInvalid)

    metrics_hooks = gunicorn_hooks()  # before the app (and prometheus_client) is loaded in this master
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
        **metrics_hooks,
    }
    explicit = {_SERVE_SETTINGS[name]: settings[_SERVE_SETTINGS[name]] for name in given}
    if _given_on_command_line(("host", "port")):
        explicit["bind"] = defaults["bind"]
    master = os.getpid()
    try:
        _Gunicorn(defaults, explicit).run()
    finally:
        # A start that fails (the app does not load, the port is taken) never reaches gunicorn's
        # on_exit: remove the temporary metrics directory here too. Only in this process: a forked
        # worker's exit unwinds through this frame as well, while the master still uses it.
        if os.getpid() == master and "on_exit" in metrics_hooks:
            metrics_hooks["on_exit"](None)


def _given_on_command_line(names: Any) -> set[str]:
    context = click.get_current_context()
    return {name for name in names if context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}


@main.group()
def knowledge() -> None:
    """Knowledge commands."""


@knowledge.command("check")
@click.option("--site", "site_file", type=click.Path(dir_okay=False), default=None,
              help="A site overlay to check with it (default: CDS_SITE_CONFIG, when set).")
def knowledge_check(site_file: str | None) -> None:
    """Validate knowledge/ (and the site overlay) as start-up does, then every check an author can
    trip (card style, paired cases, case files, discovery prefetch); print a summary, or every problem."""
    from cds_service.knowledge.checks import author_problems
    from cds_service.knowledge.site import load_site
    from cds_service.settings import settings

    loaded = _loaded_or_exit()
    try:
        site = load_site(site_file or settings()["SITE_CONFIG"], loaded)
    except KnowledgeError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    cases_dir, fixtures = _case_folders()
    problems = author_problems(loaded, cases_dir, fixtures, _CASE_CLOCK)
    if problems:
        click.echo("Knowledge checks failed:\n  " + "\n  ".join(problems), err=True)
        sys.exit(1)
    overlay = {"site": {"file": site.source, "modes": site.modes}} if site.source else {}
    click.echo(json.dumps({"status": "ok", **loaded.summary(), **overlay,
                           "cases_checked": str(cases_dir) if cases_dir else "none (no case folder)"}, indent=2))


@knowledge.command("test")
@click.argument("rule_id")
def knowledge_test(rule_id: str) -> None:
    """Run one rule's cases offline (seconds, not the whole suite) and the checks of knowledge check
    for it; exit 0 when all pass, 1 when not."""
    from cds_service.errors import did_you_mean
    from cds_service.knowledge.cases import CaseError
    from cds_service.knowledge.checks import run_rule_checks

    loaded = _loaded_or_exit()
    rules = {r.id for m in loaded.modules.values() for r in m.rules}
    if rule_id not in rules:
        raise click.ClickException(f"no such rule '{rule_id}'{did_you_mean(rule_id, rules)}")
    cases_dir, fixtures = _case_folders()
    if cases_dir is None or fixtures is None:
        raise click.ClickException("no case folder: set CDS_RULE_CASES_DIR and CDS_PREVIEW_FIXTURES_DIR")
    try:
        count, problems = run_rule_checks(loaded, rule_id, cases_dir, fixtures, _CASE_CLOCK)
    except CaseError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    if problems:
        click.echo(f"{rule_id}: {len(problems)} problem(s) in {count} case(s):\n  " + "\n  ".join(problems), err=True)
        sys.exit(1)
    click.echo(f"{rule_id}: {count} case(s) pass, and its checks")


# Cases are written for a pinned clock (docs/knowledge.md, "The case format").
_CASE_CLOCK = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def _loaded_or_exit() -> Any:
    try:
        return _knowledge()
    except KnowledgeError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


def _case_folders() -> tuple[Path | None, Path | None]:
    """The case files and the personas they name: the checkout's, or CDS_RULE_CASES_DIR and CDS_PREVIEW_FIXTURES_DIR."""
    from cds_service.settings import settings

    config = settings()
    return config["RULE_CASES_DIR"], config["PREVIEW_FIXTURES_DIR"]


@knowledge.command("table")
@click.option("--write", "doc", is_flag=False, flag_value="docs/knowledge.md", default=None, metavar="[FILE]",
              help="Replace the table between the rules:start/rules:end markers of FILE (default docs/knowledge.md).")
def knowledge_table(doc: str | None) -> None:
    """Print the Markdown rule table that docs/knowledge.md carries (or write it there)."""
    from cds_service.knowledge.authoring import write_rule_table
    from cds_service.knowledge.loader import rule_table

    table = rule_table(_knowledge())
    if doc is None:
        click.echo(table, nl=False)
        return
    try:
        changed = write_rule_table(Path(doc), table)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{doc}: {'rule table updated' if changed else 'rule table already current'}")


@knowledge.command("new-rule")
@click.argument("module")
@click.argument("rule_id")
@click.option("--cases-dir", default="tests/cases", show_default=True, type=click.Path(file_okay=False),
              help="Where the module's case file is.")
def knowledge_new_rule(module: str, rule_id: str, cases_dir: str) -> None:
    """Append a commented rule skeleton to modules/MODULE.yaml and a positive and a negative
    case stub to CASES_DIR/MODULE.yaml; then fill in every TODO."""
    from cds_service.knowledge.authoring import new_rule
    from cds_service.settings import knowledge_dir, settings

    try:
        written = new_rule(knowledge_dir(settings()["KNOWLEDGE_DIR"]), Path(cases_dir), module, rule_id)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    for path in written:
        click.echo(f"appended to {path}")
    click.echo("next: fill in each TODO, then run cds-service knowledge check and make test")


@knowledge.command("add-products")
@click.option("--ingredient", "ingredients", required=True, multiple=True, metavar="RXCUI",
              help="An RxNorm ingredient (TTY IN). Repeatable.")
@click.option("--rrf", required=True, type=click.Path(exists=True, file_okay=False),
              help="The rrf/ folder of an RxNorm release (RXNCONSO.RRF, RXNREL.RRF): see cds_service/knowledge/products.py.")
@click.option("--source", required=True, metavar="KEY", help="Its key in terminology-sources.yaml (add it there first).")
def knowledge_add_products(ingredients: tuple[str, ...], rrf: str, source: str) -> None:
    """Add every product (SCD, SBD) of an ingredient to rxnorm-products.json, sorted, and keep
    the change only if the knowledge folder still passes knowledge check."""
    from cds_service.knowledge.products import RrfError, dump, merge, products_for, read_release
    from cds_service.settings import knowledge_dir, settings

    directory = knowledge_dir(settings()["KNOWLEDGE_DIR"])
    path = directory / "rxnorm-products.json"
    before = path.read_text("utf-8")
    try:
        release = read_release(Path(rrf))
        rows = [row for rxcui in ingredients for row in products_for(release, rxcui, source)]
    except RrfError as exc:
        raise click.ClickException(str(exc)) from exc
    table, added, kept = merge(json.loads(before), rows)
    _write_if_knowledge_loads(path, dump(table), before, directory)
    click.echo(f"added {len(added)} products ({', '.join(added) or 'none'}); already there: {len(kept)}")


def _write_if_knowledge_loads(path: Path, text: str, before: str, directory: Path) -> None:
    """Write a generated table, and keep it only if the knowledge folder still loads (else the
    file is restored and the command fails with every problem)."""
    from cds_service.knowledge.loader import load_knowledge

    path.write_text(text, "utf-8")
    try:
        load_knowledge(directory)
    except KnowledgeError as exc:
        path.write_text(before, "utf-8")
        click.echo(str(exc), err=True)
        raise click.ClickException(f"{path.name} left unchanged") from exc


@knowledge.command("add-brand")
@click.option("--ingredient", "ingredients", required=True, multiple=True, metavar="RXCUI",
              help="An RxNorm ingredient (TTY IN) already in the value sets named. Repeatable.")
@click.option("--valueset", "valuesets", required=True, multiple=True, metavar="ID",
              help="A medication value set holding the ingredient, which the brand then matches. Repeatable.")
@click.option("--rrf", required=True, type=click.Path(exists=True, file_okay=False),
              help="The rrf/ folder of an RxNorm release (RXNCONSO.RRF, RXNREL.RRF).")
@click.option("--source", required=True, metavar="KEY", help="Its key in terminology-sources.yaml.")
def knowledge_add_brand(ingredients: tuple[str, ...], valuesets: tuple[str, ...], rrf: str, source: str) -> None:
    """Add the brand names (TTY BN) of an ingredient to rxnorm-brands.json from RxNorm's brand
    relations, each naming this ingredient only, with its branded products and SOURCE; keep the
    change only if the knowledge folder still passes knowledge check."""
    from cds_service.knowledge.products import RrfError, brands_for, merge_brands, read_release
    from cds_service.settings import knowledge_dir, settings

    directory = knowledge_dir(settings()["KNOWLEDGE_DIR"])
    path = directory / "rxnorm-brands.json"
    before = path.read_text("utf-8")
    try:
        release = read_release(Path(rrf))
        found = [brands_for(release, rxcui, list(valuesets), source) for rxcui in ingredients]
    except RrfError as exc:
        raise click.ClickException(str(exc)) from exc
    table, added, kept = merge_brands(json.loads(before), [row for rows, _ in found for row in rows])
    _write_if_knowledge_loads(path, json.dumps(table, indent=1, ensure_ascii=False) + "\n", before, directory)
    left_out = sorted(name for _, names in found for name in names)
    click.echo(f"added {len(added)} brands ({', '.join(added) or 'none'}); already there: {len(kept)}"
               + (f"; left out, naming more than one ingredient: {', '.join(left_out)}" if left_out else ""))


def _knowledge() -> Any:
    """The knowledge create_app would load: the same configuration layering, the same loader."""
    from cds_service.knowledge.loader import load_knowledge
    from cds_service.settings import knowledge_dir, settings

    return load_knowledge(knowledge_dir(settings()["KNOWLEDGE_DIR"]))


@main.command("evaluate")
@click.argument("request_file", required=False, type=click.File("rb"))
@click.option("--bundle", type=click.File("rb"), help="A FHIR Bundle with the patient's record (instead of a request file).")
@click.option("--hook", type=click.Choice(SUPPORTED_HOOKS), help="With --bundle.")
@click.option("--draft", "drafts", multiple=True, type=click.File("rb"),
              help="A draft order: a resource, a Bundle of them, or a hook request (its draftOrders). Repeatable.")
@click.option("--now", "now_text", metavar="DATETIME", help="Evaluate as of this date or time (ISO 8601; default: now, UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the cards, the rules that fired and their evidence.")
@click.option("--explain", "explain_ids", multiple=True, metavar="RULE_ID",
              help="Also say which of this rule's conditions held and which did not. Repeatable.")
def evaluate_command(request_file: Any, bundle: Any, hook: str | None, drafts: tuple[Any, ...], now_text: str | None,
                     as_json: bool, explain_ids: tuple[str, ...]) -> None:
    """Run one hook request through the rules, offline, and print the cards.

    Give a CDS Hooks request file, or --bundle with --hook (and --draft files). No FHIR server is
    called: the data is the request's prefetch. Exit status: 0 no card, 1 at least one card,
    2 bad input (like diff and linters: non-zero means "look at this").
    """
    from cds_service.knowledge.evaluate import evaluate_from_files

    sys.exit(evaluate_from_files(request_file, bundle, hook, drafts, now_text, as_json, click.echo, explain_ids))


@main.group()
def feedback() -> None:
    """Feedback commands."""


@feedback.command("stats")
def feedback_stats() -> None:
    """Per rule id: cards issued, accepted, overridden, and the override reasons, as JSON."""
    click.echo(json.dumps(_storage().stats(), indent=2, sort_keys=True))


@feedback.command("report")
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), help="From this date (UTC), inclusive.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), help="To this date (UTC), exclusive.")
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text", show_default=True)
@click.option("--flag-above", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Flag a rule for review when its override rate is above this.")
@click.option("--min-feedback", type=click.IntRange(1), default=5, show_default=True,
              help="...and at least this many of its cards were accepted or overridden.")
@click.option("--chart", type=click.Path(dir_okay=False, writable=True),
              help="Also draw the report to this .svg or .png file (needs the 'report' extra: matplotlib).")
@click.option("--by-version", is_flag=True, help="Instead: override rates per knowledge release, all rules and each rule.")
def feedback_report(since: Any, until: Any, fmt: str, flag_above: float, min_feedback: int, chart: str | None,
                    by_version: bool) -> None:
    """Per rule over a period: issued, accepted, overridden, override rate, top override reasons,
    silent findings (would have shown) and both per 1,000 calls, trend by ISO week, and the rules
    flagged for review."""
    from datetime import timezone

    from cds_service.storage import silent
    from cds_service.storage.report import (
        as_csv,
        as_json,
        as_text,
        build_report,
        by_release,
        draw_chart,
        releases_as,
        utc_stamp,
    )

    if chart and not chart.endswith((".svg", ".png")):
        raise click.UsageError("--chart must name a .svg or .png file")
    since = since.replace(tzinfo=timezone.utc) if since else None
    until = until.replace(tzinfo=timezone.utc) if until else None
    store = _storage()
    history = store.card_history(utc_stamp(since), utc_stamp(until))
    golive = silent.history(store, utc_stamp(since), utc_stamp(until))
    if by_version:
        rows = by_release({**history, "issued": golive["issued"]}, golive["releases"], since, until)
        click.echo(releases_as(rows, fmt), nl=fmt != "csv")
        return
    report = build_report(history, since, until, flag_above, min_feedback, golive=golive)
    click.echo({"text": as_text, "csv": as_csv, "json": as_json}[fmt](report), nl=fmt != "csv")
    if chart:
        try:
            draw_chart(report, chart)
        except ImportError as exc:
            raise click.ClickException("--chart needs matplotlib: pip install 'cds-service[report]'") from exc


@main.command("forecast")
@click.argument("export", type=click.Path(exists=True, file_okay=False))
@click.option("--jobs", type=click.IntRange(1), default=None, help="Worker processes (default: every core).")
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text", show_default=True)
@click.option("--chart", type=click.Path(dir_okay=False, writable=True),
              help="Also draw the forecast to this .svg or .png file (needs the 'report' extra: matplotlib).")
@click.option("--site", "site_file", type=click.Path(dir_okay=False), default=None,
              help="The site overlay to apply (default: CDS_SITE_CONFIG, when set).")
@click.option("--now", "now_text", metavar="DATETIME", help="Decide as of this date or time (ISO 8601; default: now).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def forecast_command(export: str, jobs: int | None, fmt: str, chart: str | None, site_file: str | None,
                     now_text: str | None, quiet: bool) -> None:
    """How often each rule would fire on EXPORT: a FHIR Bulk Data export (one NDJSON file per
    resource type) or a folder of patient Bundles. patient-view per patient, order-select per
    MedicationRequest and ServiceRequest replayed as a draft; the site overlay applied."""
    from pathlib import Path

    from cds_service.errors import CdsError
    from cds_service.knowledge import forecast
    from cds_service.knowledge.evaluate import _parse_now
    from cds_service.knowledge.site import load_site
    from cds_service.settings import knowledge_dir, settings

    if chart and not chart.endswith((".svg", ".png")):
        raise click.UsageError("--chart must name a .svg or .png file")
    config = settings()
    site_path = site_file or config["SITE_CONFIG"]
    try:
        now = _parse_now(now_text)
        loaded = _knowledge()
        load_site(site_path, loaded)  # a wrong overlay is said before any patient is read
        with click.progressbar(length=1, label="patients", file=sys.stderr, hidden=quiet,
                               show_pos=True) as bar:
            def advance(done: int, total: int) -> None:
                bar.length = max(total, 1)
                bar.update(done)

            result = forecast.run_forecast(Path(export), knowledge_dir(config["KNOWLEDGE_DIR"]), site_path, now,
                                           jobs, advance)
    except KnowledgeError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except CdsError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)
    click.echo({"text": forecast.as_text, "csv": forecast.as_csv, "json": forecast.as_json}[fmt](result),
               nl=fmt != "csv")
    if chart:
        try:
            forecast.draw_chart(result, chart)
        except ImportError as exc:
            raise click.ClickException("--chart needs matplotlib: pip install 'cds-service[report]'") from exc


@main.group()
def staff() -> None:
    """Staff sign-in for the rule pages' use counts and the preview console."""


@staff.command("hash")
@click.password_option(prompt="Staff password", help="Read from the terminal when not given.")
def staff_hash(password: str) -> None:
    """Print a password hash for CDS_STAFF_USERS ('{"name": "<hash>"}')."""
    from werkzeug.security import generate_password_hash

    click.echo(generate_password_hash(password))


@main.group()
def storage() -> None:
    """Storage commands."""


@storage.command("prune")
def storage_prune() -> None:
    """Delete issued cards, feedback and JWT ids past their retention now; rows deleted per table, as JSON."""

    store = _storage()
    click.echo(json.dumps(store.prune(), indent=2, sort_keys=True))


def _storage() -> Any:
    """The storage the service would use, configured as ``serve`` configures it."""
    from cds_service import create_app

    try:
        app = create_app({"LOG_LEVEL": "ERROR", "PRUNE_INTERVAL_SECONDS": 0})
    except (KnowledgeError, StorageUnusable) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    return app.extensions["cds"].storage
