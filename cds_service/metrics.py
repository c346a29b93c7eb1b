"""What the service counts, in Prometheus metrics (docs/metrics.md lists each one, with alerts
and the runbook). No Flask here: the FHIR client and storage count through these functions, and
``web/metrics.py`` serves ``/metrics``. Labels are bounded: service ids, hooks, status codes, rule
ids, indicators, outcomes, prefetch keys and storage operations; never a patient, a token or a
request id. ``prometheus_client`` is imported when the first metric is made, after
``PROMETHEUS_MULTIPROC_DIR`` is set (web/metrics.py).
"""
from __future__ import annotations

from typing import Iterable

# From a millisecond (evaluation) to past the call budget (a slow FHIR server)
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.calls = Counter("cds_calls_total", "Service and feedback calls answered, by status",
                             ["service", "hook", "status"])
        self.seconds = Histogram("cds_call_stage_seconds", "Time spent per stage of a service call",
                                 ["service", "stage"], buckets=BUCKETS)
        self.cards = Counter("cds_cards_total", "Cards returned, by rule and indicator", ["rule_id", "indicator"])
        self.feedback = Counter("cds_feedback_total", "Feedback items stored, by the rule of the card and outcome",
                                ["rule_id", "outcome"])
        self.fhir_failures = Counter("cds_fhir_fetch_failures_total",
                                     "Prefetch keys that could not be fetched from the FHIR server",
                                     ["prefetch_key", "kind"])
        self.checks_not_run = Counter("cds_checks_not_run_total",
                                      "Calls answered with the checks-not-run card, by prefetch key lacked",
                                      ["service", "prefetch_key"])
        self.storage_failures = Counter("cds_storage_failures_total",
                                        "Database writes that failed (the call still answered)", ["operation"])


_metrics: _Metrics | None = None


def get() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


# ---------------------------------------------------------------- what the service counts

def call_stages(service_id: str, **seconds: float) -> None:
    """Stage timings of one service call (prefetch, evaluate, store)."""
    histogram = get().seconds
    for stage, value in seconds.items():
        histogram.labels(service_id, stage).observe(value)


def cards_returned(answered: Iterable[tuple[str, str]]) -> None:
    """(topic code, indicator) per card answered (``Decision.answered``)."""
    counter = get().cards
    for topic, indicator in answered:
        counter.labels(topic, indicator).inc()


def feedback_stored(outcomes: Iterable[tuple[str, str]]) -> None:
    """(rule id, outcome) per stored feedback item."""
    counter = get().feedback
    for rule_id, outcome in outcomes:
        counter.labels(rule_id, outcome).inc()


def fhir_fetch_failed(prefetch_key: str, kind: str) -> None:
    """``kind``: ``timeout`` (the call's budget ran out), ``error`` (refused, bad answer, broken
    connection, ...) or ``busy`` (not tried: the server's bulkhead was full)."""
    get().fhir_failures.labels(prefetch_key, kind).inc()


def checks_not_run(service_id: str, prefetch_keys: Iterable[str]) -> None:
    """A call whose card says checks did not run, once per prefetch key that kept them from running."""
    counter = get().checks_not_run
    for key in prefetch_keys:
        counter.labels(service_id, key).inc()


def storage_failed(operation: str, count: int = 1) -> None:
    get().storage_failures.labels(operation).inc(count)
