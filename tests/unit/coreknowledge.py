"""The repository's compiled knowledge for the unit tests of cds_service/core, loaded once per
test session (sans-IO: no Flask app), and facts built from a case as an EHR would send it."""
from __future__ import annotations

import functools
import os
from datetime import datetime, timezone
from typing import Any

from cds_service.core.facts import Facts, build_facts
from cds_service.core.rules import Knowledge

NOW = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)


@functools.cache
def knowledge() -> Knowledge:
    from cds_service.knowledge.loader import load_knowledge
    from cds_service.settings import knowledge_dir

    return load_knowledge(knowledge_dir(os.environ.get("CDS_KNOWLEDGE_DIR")))


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def facts_of(hook: str = "order-sign", drafts: tuple[dict[str, Any], ...] = (), **data: Any) -> Facts:
    """Facts for a patient ``p`` with ``drafts`` as the draft orders and each ``data`` member (a
    prefetch key) given as a list of resources (the patient as one resource)."""
    context: dict[str, Any] = {"patientId": "p", "userId": "Practitioner/u"}
    if hook != "patient-view":
        context["draftOrders"] = bundle(*drafts)
    prefetch = {key: value if key == "patient" else bundle(*value) for key, value in data.items()}
    return build_facts(hook, context, prefetch, knowledge().terminology, NOW)


def condition(spec: Any) -> Any:
    """The predicate of one condition of the rule language, compiled as the loader compiles it."""
    from cds_service.core.conditions import compile_condition

    context = knowledge().conditions
    assert context is not None
    return compile_condition(spec, context)


def holds(spec: Any, facts: Facts, item: Any = None) -> bool:
    return condition(spec)(facts, item) is not None
