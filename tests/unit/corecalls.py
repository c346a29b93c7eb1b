"""Service calls from the request fixtures, for the unit tests of cards and decision: parsed as the
service parses them, with the facts the rules read (no Flask app, no server)."""
from __future__ import annotations

from typing import Any

from coreknowledge import NOW, knowledge
from helpers import request_fixture

from cds_service.core.facts import Facts, build_facts
from cds_service.core.hooks import HookRequest, parse_hook_request
from cds_service.core.rules import Service

SERVICE_OF = {"patient-view": "back-pain-patient-view", "order-select": "back-pain-order-select",
              "order-sign": "back-pain-order-sign"}
MORPHINE = "order-select/mcas-adult--morphine.json"  # a warning: morphine in mast cell disease
SUCCINYLCHOLINE = "order-select/mcas-adult--succinylcholine.json"  # a critical with two swaps
CHART_OPEN = "patient-view/mcas-adult--chart-open.json"


def body(fixture: str) -> dict[str, Any]:
    return request_fixture(fixture)


def call(request_body: dict[str, Any]) -> tuple[Service, HookRequest]:
    service = knowledge().services[SERVICE_OF[request_body["hook"]]]
    return service, parse_hook_request(request_body, service.hook)


def facts(request_body: dict[str, Any]) -> Facts:
    _, request = call(request_body)
    return build_facts(request.hook, request.context, request.prefetch, knowledge().terminology, NOW)
