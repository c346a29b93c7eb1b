"""The case helpers of cds_service/knowledge/cases.py (the one source of truth, which
``cds-service knowledge check`` and ``knowledge test`` use too), bound to the checkout's
fixtures and the tests' pinned clock."""
from __future__ import annotations

from collections import Counter
from typing import Any

from helpers import FIXTURES, NOW

from cds_service.knowledge import cases
from cds_service.knowledge.cases import GATE_WORDS, no_such_rule  # noqa: F401  (re-exported for the tests)


def build_request(case: dict[str, Any]) -> dict[str, Any]:
    return cases.build_request(case, FIXTURES)


def negative_kind(knowledge: Any, case: dict[str, Any]) -> str:
    return cases.negative_kind(knowledge, case, FIXTURES, NOW)


def explain_case(app: Any, case: dict[str, Any], got: Counter, want: Counter) -> str:
    """For each rule missing or unexpected, which of its conditions held and which did not."""
    return cases.explain_case(app.extensions["cds"].knowledge, case, got, want, FIXTURES, NOW)
