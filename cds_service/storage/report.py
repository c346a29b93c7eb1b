"""The feedback report: how clinicians answer each rule's cards, over a period.

Per rule: cards issued, accepted and overridden, the override rate, the most
frequent override reasons, the trend by ISO week, and a flag for review when
the override rate passes a threshold on enough feedback. Printed as text,
CSV or JSON, and drawn as an SVG (or PNG) chart with matplotlib (the optional
``report`` extra).

The override rate is overridden / (accepted + overridden): cards that got no
feedback are left out, since an EHR need not send feedback for every card
and silence is neither acceptance nor override. ``issued`` shows how many
cards the rate rests on. A card counts once per outcome, however many times
its feedback was sent.
"""
from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from cds_service.core.fhir import parse_date


@dataclass
class Week:
    issued: int = 0
    accepted: int = 0
    overridden: int = 0
    silent: int = 0  # findings of the rule while silent: cards it would have shown


@dataclass
class RuleReport:
    rule: str
    issued: int = 0
    accepted: int = 0
    overridden: int = 0
    held_back: int = 0  # warning cards the override window kept from the clinician
    override_rate: float | None = None
    top_reasons: list[dict[str, Any]] = field(default_factory=list)
    weeks: dict[str, Week] = field(default_factory=dict)
    flagged: bool = False
    silent: int = 0
    shown_per_1000_calls: float | None = None
    silent_per_1000_calls: float | None = None


@dataclass
class Report:
    since: str | None
    until: str | None
    flag_above: float
    min_feedback: int
    rules: list[RuleReport]
    calls: int = 0  # hook calls in the period's weeks (all services): the per-1,000 denominator
    calls_by_week: dict[str, int] = field(default_factory=dict)

    @property
    def flagged(self) -> list[RuleReport]:
        return [r for r in self.rules if r.flagged]


def iso_week(when: datetime) -> str:
    year, week, _ = when.isocalendar()
    return f"{year}-W{week:02d}"


def _instant(text: Any) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime (a bare date is taken as midnight UTC)."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        day = parse_date(text)
        return datetime(day.year, day.month, day.day, tzinfo=timezone.utc) if day else None
    return when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)


def utc_stamp(when: datetime | None) -> str | None:
    """As storage writes instants: ISO 8601 UTC with milliseconds and Z."""
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else None


def build_report(history: dict[str, list[Any]], since: datetime | None = None, until: datetime | None = None,
                 flag_above: float = 0.5, min_feedback: int = 5, top: int = 3,
                 golive: dict[str, list[Any]] | None = None) -> Report:
    """The report over [since, until) from ``Storage.card_history`` (fetched with the same bounds)
    and, when given, ``storage.silent.history``: silent findings and calls per week."""
    rules: dict[str, RuleReport] = {}

    def rule(rule_id: str) -> RuleReport:
        return rules.setdefault(rule_id, RuleReport(rule_id))

    for rule_id, issued_at in history["issued"]:
        when = _instant(issued_at)
        if when is None or not _inside(when, since, until):
            continue
        entry = rule(rule_id)
        entry.issued += 1
        entry.weeks.setdefault(iso_week(when), Week()).issued += 1
    for rule_id, held_at in history.get("held_back", []):
        when = _instant(held_at)
        if when is not None and _inside(when, since, until):
            rule(rule_id).held_back += 1
    seen: set[tuple[str, str]] = set()
    reasons: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for rule_id, card, outcome, at, code, display in history["feedback"]:
        when = _instant(at)
        if when is None or not _inside(when, since, until) or (card, outcome) in seen:
            continue
        seen.add((card, outcome))
        entry = rule(rule_id)
        week = entry.weeks.setdefault(iso_week(when), Week())
        if outcome == "accepted":
            entry.accepted += 1
            week.accepted += 1
        elif outcome == "overridden":
            entry.overridden += 1
            week.overridden += 1
            reasons[rule_id][(code or "(none given)", display or code or "no reason given")] += 1
    calls_by_week = _calls_by_week(golive, since, until)
    for rule_id, found_at, _release in (golive or {}).get("silent", []):
        when = _instant(found_at)
        if when is None or not _inside(when, since, until):
            continue
        entry = rule(rule_id)
        entry.silent += 1
        entry.weeks.setdefault(iso_week(when), Week()).silent += 1
    calls = sum(calls_by_week.values())
    for entry in rules.values():
        entry.shown_per_1000_calls = round(entry.issued * 1000 / calls, 1) if calls else None
        entry.silent_per_1000_calls = round(entry.silent * 1000 / calls, 1) if calls else None
        answered = entry.accepted + entry.overridden
        entry.override_rate = round(entry.overridden / answered, 3) if answered else None
        entry.top_reasons = [{"code": code, "display": display, "count": n}
                             for (code, display), n in reasons[entry.rule].most_common(top)]
        entry.weeks = dict(sorted(entry.weeks.items()))
        entry.flagged = answered >= min_feedback and entry.override_rate is not None and entry.override_rate > flag_above
    ordered = sorted(rules.values(), key=lambda r: (not r.flagged, -(r.override_rate or 0), r.rule))
    return Report(utc_stamp(since), utc_stamp(until), flag_above, min_feedback, ordered, calls, calls_by_week)


def _calls_by_week(golive: dict[str, list[Any]] | None, since: datetime | None,
                   until: datetime | None) -> dict[str, int]:
    """Calls per ISO week, for the weeks that overlap [since, until) (calls are counted per week)."""
    low = iso_week(since) if since else ""
    high = iso_week(until - timedelta(microseconds=1)) if until else "\uffff"
    weeks: Counter[str] = Counter()
    for week, _release, calls in (golive or {}).get("calls", []):
        if low <= week <= high:
            weeks[week] += int(calls)
    return dict(sorted(weeks.items()))


@dataclass
class ReleaseRow:
    release: str
    rule: str  # "(all rules)" for the release's total
    issued: int = 0
    accepted: int = 0
    overridden: int = 0
    override_rate: float | None = None


def by_release(history: dict[str, list[Any]], releases: list[Any], since: datetime | None = None,
               until: datetime | None = None) -> list[ReleaseRow]:
    """Override rates per knowledge release (all rules, then each rule), oldest release first:
    whether a new release made a rule's cards more or less often overridden. ``history`` needs
    card uuids: ``issued`` rows of (rule, issued_at, uuid), as ``storage.silent.history`` gives them."""
    release_of = dict(releases)
    rows: dict[tuple[str, str], ReleaseRow] = {}
    first_seen: dict[str, str] = {}

    def row(release: str, rule_id: str) -> ReleaseRow:
        return rows.setdefault((release, rule_id), ReleaseRow(release, rule_id))

    for rule_id, issued_at, card in history["issued"]:
        when = _instant(issued_at)
        if when is None or not _inside(when, since, until):
            continue
        release = release_of.get(card, "(not recorded)")
        first_seen[release] = min(first_seen.get(release, issued_at), issued_at)
        row(release, "(all rules)").issued += 1
        row(release, rule_id).issued += 1
    seen: set[tuple[str, str, str]] = set()  # (rule or "(all rules)", card, outcome): a card counts once
    for rule_id, card, outcome, at, _code, _display in history["feedback"]:
        when = _instant(at)
        if when is None or not _inside(when, since, until) or outcome not in ("accepted", "overridden"):
            continue
        release = release_of.get(card, "(not recorded)")
        for target in ("(all rules)", rule_id):
            if (target, card, outcome) not in seen:
                seen.add((target, card, outcome))
                entry = row(release, target)
                setattr(entry, outcome, getattr(entry, outcome) + 1)
    for entry in rows.values():
        answered = entry.accepted + entry.overridden
        entry.override_rate = round(entry.overridden / answered, 3) if answered else None
    return sorted(rows.values(), key=lambda r: (first_seen.get(r.release, "\uffff"), r.release,
                                                r.rule != "(all rules)", r.rule))


def releases_as(rows: list[ReleaseRow], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["release", "rule", "issued", "accepted", "overridden", "override_rate"])
        for r in rows:
            writer.writerow([r.release, r.rule, r.issued, r.accepted, r.overridden,
                             "" if r.override_rate is None else r.override_rate])
        return out.getvalue()
    if not rows:
        return "No card was issued in this period."
    width = max(len(r.rule) for r in rows)
    lines = ["Override rate by knowledge release (oldest first)"]
    for release in dict.fromkeys(r.release for r in rows):
        lines += ["", f"release {release}", f"  {'rule'.ljust(width)}  issued  accepted  overridden  override rate"]
        lines += [f"  {r.rule.ljust(width)}  {r.issued:6d}  {r.accepted:8d}  {r.overridden:10d}  {_rate(r.override_rate):>13}"
                  for r in rows if r.release == release]
    return "\n".join(lines)


def _every_week(weeks: set[str]) -> list[str]:
    """The ISO weeks from the first to the last given, quiet weeks included (a gap is news too)."""
    if not weeks:
        return []
    first, last = (datetime.strptime(f"{w}-1", "%G-W%V-%u") for w in (min(weeks), max(weeks)))
    return [iso_week(first + timedelta(weeks=n)) for n in range((last - first).days // 7 + 1)]


def _inside(when: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or when >= since) and (until is None or when < until)


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def _per(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def as_text(report: Report) -> str:
    period = f"{report.since or 'the beginning'} to {report.until or 'now'}"
    lines = [f"Feedback report, {period}",
             f"Flagged for review: override rate above {report.flag_above:.0%} on at least "
             f"{report.min_feedback} answered cards", ""]
    if not report.rules:
        return "\n".join(lines + ["No card was issued and no feedback was received in this period."])
    width = max(len(r.rule) for r in report.rules)
    golive = bool(report.calls or any(r.silent for r in report.rules))  # calls counted (migration 006 on)
    extra = "  silent  shown/1000 calls  silent/1000 calls" if golive else ""
    lines.append(f"{'rule'.ljust(width)}  issued  accepted  overridden  override rate  held back{extra}")
    for r in report.rules:
        mark = "  << REVIEW" if r.flagged else ""
        more = (f"  {r.silent:6d}  {_per(r.shown_per_1000_calls):>16}  {_per(r.silent_per_1000_calls):>17}"
                if golive else "")
        lines.append(f"{r.rule.ljust(width)}  {r.issued:6d}  {r.accepted:8d}  {r.overridden:10d}  "
                     f"{_rate(r.override_rate):>13}  {r.held_back:9d}{more}{mark}")
    if golive:
        lines.append(f"hook calls in the period's weeks: {report.calls}")
    for r in report.rules:
        if not (r.top_reasons or r.weeks):
            continue
        lines += ["", f"{r.rule}{' (flagged for review)' if r.flagged else ''}"]
        if r.top_reasons:
            lines.append("  top override reasons: " + "; ".join(f"{x['display']} ({x['count']})" for x in r.top_reasons))
        lines.append("  by week: " + ", ".join(
            f"{week} {w.issued} issued/{w.accepted} accepted/{w.overridden} overridden"
            + (f"/{w.silent} silent" if w.silent else "") for week, w in r.weeks.items()))
    return "\n".join(lines)


def as_json(report: Report) -> str:
    body = asdict(report)
    body["flagged"] = [r.rule for r in report.flagged]
    return json.dumps(body, indent=2)


CSV_COLUMNS = ["rule", "week", "issued", "accepted", "overridden", "override_rate", "flagged", "top_override_reasons",
               "held_back", "silent", "calls", "shown_per_1000_calls", "silent_per_1000_calls"]


def as_csv(report: Report) -> str:
    """One row per rule (week "all") and one per rule and ISO week."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in report.rules:
        reasons = "; ".join(f"{x['code']} ({x['count']})" for x in r.top_reasons)
        writer.writerow([r.rule, "all", r.issued, r.accepted, r.overridden,
                         "" if r.override_rate is None else r.override_rate, r.flagged, reasons, r.held_back,
                         r.silent, report.calls, _blank(r.shown_per_1000_calls), _blank(r.silent_per_1000_calls)])
        for week, w in r.weeks.items():
            answered = w.accepted + w.overridden
            calls = report.calls_by_week.get(week, 0)
            writer.writerow([r.rule, week, w.issued, w.accepted, w.overridden,
                             round(w.overridden / answered, 3) if answered else "", "", "", "", w.silent, calls,
                             round(w.issued * 1000 / calls, 1) if calls else "",
                             round(w.silent * 1000 / calls, 1) if calls else ""])
    return out.getvalue()


def _blank(value: float | None) -> Any:
    return "" if value is None else value


def draw_chart(report: Report, path: str) -> None:
    """Two panels: per rule, accepted/overridden/no-feedback bars with the override rate (flagged
    rules in red beside the threshold); and all rules by ISO week, issued against overridden.
    The format follows the file name (.svg or .png). Needs matplotlib (the ``report`` extra)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    with plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable, smaller
        _draw(plt, report, path)


def _draw(plt: Any, report: Report, path: str) -> None:
    rules = list(reversed(report.rules)) or [RuleReport("(no data)")]
    weeks = _every_week({week for r in report.rules for week in r.weeks})
    fig, (bars, trend) = plt.subplots(2, 1, figsize=(11, 3 + 0.42 * len(rules) + 3.2),
                                      gridspec_kw={"height_ratios": [max(2, 0.42 * len(rules)), 3]})
    names = [r.rule for r in rules]
    accepted = [r.accepted for r in rules]
    overridden = [r.overridden for r in rules]
    silent = [max(0, r.issued - r.accepted - r.overridden) for r in rules]
    bars.barh(names, accepted, color="#2e8b57", label="accepted")
    bars.barh(names, overridden, left=accepted, color="#d9822b", label="overridden")
    bars.barh(names, silent, left=[a + o for a, o in zip(accepted, overridden, strict=True)], color="#c9ced6", label="no feedback")
    for i, r in enumerate(rules):
        total = max(r.issued, r.accepted + r.overridden)
        said = f"{_rate(r.override_rate)} overridden" if r.override_rate is not None else "no feedback"
        label = f"  {said}" + ("  - REVIEW" if r.flagged else "")
        bars.text(total, i, label, va="center", fontsize=8, color="#c0262d" if r.flagged else "#333333",
                  fontweight="bold" if r.flagged else "normal")
    for tick, r in zip(bars.get_yticklabels(), rules, strict=False):  # the ticks are matplotlib's: never fail a report on a count
        if r.flagged:
            tick.set_color("#c0262d")
    bars.set_xlabel("cards")
    bars.set_title(f"Cards per rule, {report.since or 'start'} to {report.until or 'now'} "
                   f"(review: override rate > {report.flag_above:.0%} on >= {report.min_feedback} answered)", fontsize=10)
    bars.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=3, fontsize=8, frameon=False)
    bars.margins(x=0.3)
    issued = [sum(r.weeks[w].issued for r in report.rules if w in r.weeks) for w in weeks]
    over = [sum(r.weeks[w].overridden for r in report.rules if w in r.weeks) for w in weeks]
    trend.plot(weeks, issued, marker="o", color="#1f6fb2", label="issued")
    trend.plot(weeks, over, marker="o", color="#d9822b", label="overridden")
    quiet = [sum(r.weeks[w].silent for r in report.rules if w in r.weeks) for w in weeks]
    if any(quiet):  # silent rules: what they would have shown, beside what was shown
        trend.plot(weeks, quiet, marker="s", linestyle="--", color="#7a5195", label="silent (would have shown)")
    trend.set_title("All rules by ISO week (shown cards and silent findings)", fontsize=10)
    trend.set_ylabel("cards")
    trend.legend(fontsize=8)
    trend.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Date": None} if path.endswith(".svg") else None)
    plt.close(fig)
