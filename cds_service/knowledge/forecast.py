"""Alert-burden forecast: how often each rule would fire on a hospital's own patients.

``cds-service forecast EXPORT`` reads a FHIR Bulk Data export (the ``$export`` layout: one
NDJSON file per resource type, ``Patient.ndjson``, ``Condition.ndjson``, ...) or a folder of
patient Bundles (``*.json``, ``*.json.gz``: one patient each). For every patient it runs
``patient-view`` once (a chart open), and ``order-select`` once for each of the patient's
MedicationRequests and ServiceRequests, replayed as a draft against the rest of the record
(an order being entered now). It reports per rule: patients with a card, cards per 1,000 chart
opens and per 1,000 orders, by indicator, the most frequent triggering items, and how many
cards a chart open shows.

No drift from the live service: each call is built by ``evaluate.request_from_bundle`` and
decided by ``pipeline.answer`` (what ``POST /cds-services/{id}`` runs), with the site overlay
applied; a silent rule's findings are counted apart ("would have shown"), an off rule not at all.

Memory is bounded by one patient: NDJSON files are not sorted by patient, so each line's byte
offset is first indexed by patient in a SQLite file on disk; a worker then reads one patient's
lines, decides, and returns counts only. ``--jobs`` worker processes (default: every core).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import multiprocessing
import os
import sqlite3
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson

from cds_service.core.cards import item_key
from cds_service.core.rules import Knowledge
from cds_service.core.site import SitePolicy
from cds_service.errors import CdsError
from cds_service.fhirfetch.gather import NO_FETCH
from cds_service.knowledge.discovery import prefetch_templates
from cds_service.knowledge.evaluate import request_from_bundle, service_for_hook
from cds_service.pipeline import answer

ORDER_TYPES = ("MedicationRequest", "ServiceRequest")
PATIENT_LEVEL = "(patient-level)"


# ---------------------------------------------------------------- the index on disk

def _patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource belongs to (``Patient/x``, ``urn:uuid:x`` or a full URL)."""
    if resource.get("resourceType") == "Patient":
        return resource.get("id") if isinstance(resource.get("id"), str) else None
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            text = str(ref["reference"])
            if text.startswith("urn:uuid:"):
                return text[len("urn:uuid:"):]
            if "Patient/" in text:
                return text.rsplit("Patient/", 1)[1].split("/")[0] or None
    return None


def _open_bundle(path: Path) -> Any:
    raw = path.read_bytes()
    return orjson.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw)


def build_index(export: Path, index: Path) -> int:
    """Index every resource of the export by patient (file and byte offset); the patient count.

    Raises CdsError when the folder holds neither NDJSON files nor Bundles."""
    ndjson = sorted(export.glob("*.ndjson"))
    bundles = sorted([*export.glob("*.json"), *export.glob("*.json.gz")])
    if not ndjson and not bundles:
        raise CdsError(f"{export}: no *.ndjson files (a Bulk Data export) and no *.json Bundles")
    db = sqlite3.connect(index)
    db.executescript("CREATE TABLE file (id INTEGER PRIMARY KEY, path TEXT, kind TEXT);"
                     "CREATE TABLE res (patient TEXT, file INTEGER, offset INTEGER, length INTEGER);"
                     "CREATE TABLE patient (id TEXT PRIMARY KEY)")
    for number, path in enumerate(ndjson or bundles):
        db.execute("INSERT INTO file VALUES (?, ?, ?)", (number, str(path), "ndjson" if ndjson else "bundle"))
        rows = _ndjson_rows(path, number) if ndjson else _bundle_rows(path, number)
        db.executemany("INSERT INTO res VALUES (?, ?, ?, ?)", rows)
    db.execute("CREATE INDEX res_patient ON res (patient)")
    db.execute("INSERT INTO patient SELECT DISTINCT patient FROM res WHERE patient IS NOT NULL")
    db.commit()
    count = db.execute("SELECT COUNT(*) FROM patient").fetchone()[0]
    db.close()
    return int(count)


def _ndjson_rows(path: Path, number: int) -> Iterator[tuple[str | None, int, int, int]]:
    offset = 0
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                try:
                    patient = _patient_of(orjson.loads(line))
                except orjson.JSONDecodeError:
                    patient = None  # an unreadable line belongs to no patient: counted as skipped
                yield patient, number, offset, len(line)
            offset += len(line)


def _bundle_rows(path: Path, number: int) -> Iterator[tuple[str | None, int, int, int]]:
    """A Bundle file is one patient's record: indexed whole (offset -1)."""
    try:
        resources = _open_bundle(path).get("entry") or []
        patient = next((e["resource"].get("id") for e in resources
                        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                        and e["resource"].get("resourceType") == "Patient"), None)
    except (orjson.JSONDecodeError, OSError, AttributeError, EOFError):
        patient = None
    yield patient, number, -1, 0


def _record(db: sqlite3.Connection, files: dict[int, tuple[str, str]], patient: str) -> list[dict[str, Any]]:
    """One patient's resources, read from the export by their offsets."""
    resources: list[dict[str, Any]] = []
    rows = db.execute("SELECT file, offset, length FROM res WHERE patient = ? ORDER BY file, offset", (patient,))
    for number, offset, length in rows:
        path, kind = files[number]
        if kind == "bundle":
            entries = _open_bundle(Path(path)).get("entry") or []
            resources += [e["resource"] for e in entries if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
            continue
        with open(path, "rb") as f:
            f.seek(offset)
            resources.append(orjson.loads(f.read(length)))
    return resources


# ---------------------------------------------------------------- one patient, as the service decides

@dataclass
class Tally:
    """Counts only (no patient data): what one patient, or the whole export, gave."""

    patients: int = 0
    chart_opens: int = 0
    orders: int = 0
    failed_patients: int = 0  # a record the service could not decide on: never counted as "no card"
    per_open: Counter[int] = field(default_factory=Counter)  # shown cards per chart open -> opens
    # (rule, mode "shown" | "silent", hook kind "view" | "order") -> findings
    findings: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    indicators: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (rule, mode, indicator)
    items: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (rule, mode, item key)
    patients_with: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule, mode) -> patients

    def add(self, other: "Tally") -> None:
        self.patients += other.patients
        self.chart_opens += other.chart_opens
        self.orders += other.orders
        self.failed_patients += other.failed_patients
        self.per_open.update(other.per_open)
        self.findings.update(other.findings)
        self.indicators.update(other.indicators)
        self.items.update(other.items)
        self.patients_with.update(other.patients_with)


def forecast_patient(resources: list[dict[str, Any]], knowledge: Knowledge, site: SitePolicy,
                     now: datetime) -> Tally:
    """patient-view once, and order-select for each MedicationRequest and ServiceRequest as a draft."""
    tally = Tally(patients=1)
    fired: set[tuple[str, str]] = set()
    try:
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
        _decide(request_from_bundle(bundle, "patient-view", []), "view", knowledge, site, now, tally, fired)
        for n, order in enumerate(r for r in resources if r.get("resourceType") in ORDER_TYPES):
            rest = [r for r in resources if r is not order]  # the record as it was before this order
            draft = {**order, "id": str(order.get("id") or f"order-{n}")}
            body = request_from_bundle({"resourceType": "Bundle", "entry": [{"resource": r} for r in rest]},
                                       "order-select", [draft])
            _decide(body, "order", knowledge, site, now, tally, fired)
    except CdsError:  # no Patient, data the service refuses: said, not taken as "no card"
        return Tally(patients=1, failed_patients=1)
    tally.patients_with.update(fired)
    return tally


def _decide(body: dict[str, Any], kind: str, knowledge: Knowledge, site: SitePolicy, now: datetime,
            tally: Tally, fired: set[tuple[str, str]]) -> None:
    service = service_for_hook(knowledge, body["hook"])
    decision = answer(knowledge, service, body, templates=prefetch_templates(service, knowledge.terminology),
                      policy=NO_FETCH, clock=lambda: now, rules_url=None, site=site).decision
    if kind == "view":
        tally.chart_opens += 1
        tally.per_open[len(decision.cards)] += 1
    else:
        tally.orders += 1
    found = [(f.rule.id, "shown", f.indicator, item_key(f, knowledge.terminology)) for f in decision.findings]
    found += [(s.rule_id, "silent", s.indicator, s.item_key) for s in decision.silent]
    for rule_id, mode, indicator, item in found:
        tally.findings[(rule_id, mode, kind)] += 1
        tally.indicators[(rule_id, mode, indicator)] += 1
        tally.items[(rule_id, mode, _item_label(item, knowledge))] += 1
        fired.add((rule_id, mode))


_NAMES: dict[int, dict[str, str]] = {}  # id(terminology) -> RxNorm ingredient rxcui -> name


def _item_label(item: str, knowledge: Knowledge) -> str:
    """An item key as a reader knows it: RxNorm ingredients with their names ("7258 naproxen")."""
    if not item:
        return PATIENT_LEVEL
    names = _NAMES.get(id(knowledge.terminology))
    if names is None:
        names = {i.rxcui: i.name for p in knowledge.terminology.products.values() for i in p.ingredients}
        _NAMES.clear()
        _NAMES[id(knowledge.terminology)] = names
    parts = item.split("+")
    if all(part in names for part in parts):
        return f"{item} {' + '.join(names[part] for part in parts)}"
    return item


# ---------------------------------------------------------------- the whole export, on every core

_WORKER: dict[str, Any] = {}


def _start_worker(index: str, knowledge_path: str, site_path: str | None, now: datetime) -> None:
    from cds_service.knowledge.loader import load_knowledge
    from cds_service.knowledge.site import load_site

    knowledge = load_knowledge(Path(knowledge_path))
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    files = {n: (p, k) for n, p, k in db.execute("SELECT id, path, kind FROM file")}
    _WORKER.update(knowledge=knowledge, site=load_site(site_path, knowledge), now=now, db=db, files=files)


def _run_batch(patients: list[str]) -> Tally:
    tally = Tally()
    for patient in patients:
        resources = _record(_WORKER["db"], _WORKER["files"], patient)
        tally.add(forecast_patient(resources, _WORKER["knowledge"], _WORKER["site"], _WORKER["now"]))
    return tally


def run_forecast(export: Path, knowledge_path: Path, site_path: str | None, now: datetime, jobs: int | None = None,
                 progress: Callable[[int, int], None] | None = None, batch: int = 8) -> "Forecast":
    """Index the export, then decide every patient in ``jobs`` processes; ``progress(done, total)``
    after each batch of patients (``done`` in that batch)."""
    jobs = max(1, jobs or os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="cds-forecast-") as scratch:
        index = Path(scratch) / "index.sqlite3"
        patients = build_index(export, index)
        if progress:
            progress(0, patients)
        total = Tally()
        args = (str(index), str(knowledge_path), site_path, now)
        batches = _batches(index, batch)
        if jobs == 1:
            _start_worker(*args)
            results: Iterable[Tally] = map(_run_batch, batches)
        else:
            pool = multiprocessing.get_context("spawn").Pool(jobs, _start_worker, args)
            results = pool.imap_unordered(_run_batch, batches)
        try:
            for tally in results:
                total.add(tally)
                if progress:
                    progress(tally.patients, patients)
        finally:
            if jobs == 1:
                _WORKER.get("db") and _WORKER["db"].close()
                _WORKER.clear()
            else:
                pool.close()
                pool.join()
        unread = patients - total.patients
        return Forecast(total, unread)


def _batches(index: Path, size: int) -> Iterator[list[str]]:
    db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
    try:
        cursor = db.execute("SELECT id FROM patient ORDER BY id")
        while rows := cursor.fetchmany(size):
            yield [r[0] for r in rows]
    finally:
        db.close()


# ---------------------------------------------------------------- the report

@dataclass
class Forecast:
    tally: Tally
    unread: int = 0  # patients indexed but not decided (should stay 0)

    def rows(self, top: int = 3) -> list[dict[str, Any]]:
        """One row per rule and mode (shown, silent): patients, per 1,000 opens/orders, indicators, top items."""
        t = self.tally
        keys = sorted({(rule, mode) for rule, mode, _ in t.findings}, key=lambda k: (k[1] != "shown", k[0]))
        out = []
        for rule, mode in keys:
            view, order = t.findings[(rule, mode, "view")], t.findings[(rule, mode, "order")]
            items = Counter({item: n for (r, m, item), n in t.items.items() if (r, m) == (rule, mode)})
            out.append({
                "rule": rule, "mode": mode, "patients": t.patients_with[(rule, mode)],
                "chart_open_cards": view, "order_cards": order,
                "per_1000_chart_opens": round(view * 1000 / t.chart_opens, 1) if t.chart_opens else None,
                "per_1000_orders": round(order * 1000 / t.orders, 1) if t.orders else None,
                "by_indicator": {ind: n for (r, m, ind), n in sorted(t.indicators.items()) if (r, m) == (rule, mode)},
                "top_items": [{"item": item, "count": n} for item, n in items.most_common(top)],
            })
        return out

    def summary(self) -> dict[str, Any]:
        t = self.tally
        return {"patients": t.patients, "failed_patients": t.failed_patients, "unread_patients": self.unread,
                "chart_opens": t.chart_opens, "orders": t.orders,
                "cards_per_chart_open": {str(k): v for k, v in sorted(t.per_open.items())}}


def as_json(forecast: Forecast) -> str:
    return json.dumps({**forecast.summary(), "rules": forecast.rows()}, indent=2)


def as_csv(forecast: Forecast) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rule", "mode", "patients", "chart_open_cards", "order_cards", "per_1000_chart_opens",
                     "per_1000_orders", "critical", "warning", "info", "top_items"])
    for r in forecast.rows():
        ind = r["by_indicator"]
        writer.writerow([r["rule"], r["mode"], r["patients"], r["chart_open_cards"], r["order_cards"],
                         "" if r["per_1000_chart_opens"] is None else r["per_1000_chart_opens"],
                         "" if r["per_1000_orders"] is None else r["per_1000_orders"],
                         ind.get("critical", 0), ind.get("warning", 0), ind.get("info", 0),
                         "; ".join(f"{x['item']} ({x['count']})" for x in r["top_items"])])
    return out.getvalue()


def as_text(forecast: Forecast) -> str:
    s = forecast.summary()
    lines = [f"Forecast: {s['patients']} patients, {s['chart_opens']} chart opens, {s['orders']} orders replayed"]
    if s["failed_patients"] or s["unread_patients"]:
        lines.append(f"NOT EVALUATED: {s['failed_patients']} patients the service refused, "
                     f"{s['unread_patients']} not read: their cards are unknown, not zero")
    lines.append("cards shown per chart open: " + ", ".join(f"{k}: {v}" for k, v in s["cards_per_chart_open"].items()))
    rows = forecast.rows()
    if not rows:
        return "\n".join(lines + ["", "No rule fired on this export."])
    width = max(len(r["rule"]) for r in rows)
    lines += ["", f"{'rule'.ljust(width)}  mode    patients  /1000 opens  /1000 orders  critical/warning/info  top items"]
    for r in rows:
        ind = r["by_indicator"]
        tiers = f"{ind.get('critical', 0)}/{ind.get('warning', 0)}/{ind.get('info', 0)}"
        top = "; ".join(f"{x['item']} ({x['count']})" for x in r["top_items"])
        lines.append(f"{r['rule'].ljust(width)}  {r['mode']:<6}  {r['patients']:8d}  {_num(r['per_1000_chart_opens']):>11}"
                     f"  {_num(r['per_1000_orders']):>12}  {tiers:>21}  {top}")
    if any(r["mode"] == "silent" for r in rows):
        lines.append("(silent: the site's silent rules; what they would have shown, never shown)")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def draw_chart(forecast: Forecast, path: str) -> None:
    """Per rule: cards per 1,000 chart opens and per 1,000 orders (silent rules hatched); and the
    distribution of cards per chart open. Needs matplotlib (the ``report`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(reversed(forecast.rows())) or [{"rule": "(no card)", "mode": "shown", "per_1000_chart_opens": 0,
                                                "per_1000_orders": 0}]
    names = [f"{r['rule']}{' (silent)' if r['mode'] == 'silent' else ''}" for r in rows]
    with plt.rc_context({"svg.fonttype": "none"}):
        fig, (bars, spread) = plt.subplots(2, 1, figsize=(11, 3 + 0.4 * len(rows) + 3),
                                           gridspec_kw={"height_ratios": [max(2, 0.4 * len(rows)), 2.5]})
        y = range(len(rows))
        hatch = ["//" if r["mode"] == "silent" else "" for r in rows]
        bars.barh([i + 0.2 for i in y], [r["per_1000_chart_opens"] or 0 for r in rows], height=0.4,
                  color="#1f6fb2", label="per 1,000 chart opens", hatch=hatch)
        bars.barh([i - 0.2 for i in y], [r["per_1000_orders"] or 0 for r in rows], height=0.4,
                  color="#d9822b", label="per 1,000 orders", hatch=hatch)
        bars.set_yticks(list(y), names, fontsize=8)
        bars.set_title(f"Forecast cards per rule, {forecast.tally.patients} patients (hatched: silent)", fontsize=10)
        bars.legend(fontsize=8)
        per_open = forecast.tally.per_open
        counts = sorted(per_open)
        spread.bar([str(c) for c in counts], [per_open[c] for c in counts], color="#2e8b57")
        spread.set_xlabel("cards shown at one chart open")
        spread.set_ylabel("chart opens")
        fig.tight_layout()
        fig.savefig(path, metadata={"Date": None} if path.endswith(".svg") else None)
        plt.close(fig)


def by_rule(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{rule: {mode: patients}}``: the short form tests and the docs compare."""
    found: dict[str, Any] = defaultdict(dict)
    for r in rows:
        found[r["rule"]][r["mode"]] = r["patients"]
    return dict(found)
