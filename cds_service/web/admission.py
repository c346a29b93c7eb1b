"""Admission by memory: a hook call's body is parsed only when this worker has room for it.

``admit(raw)`` is called with the raw body before it is parsed: a body shaped like no FHIR
record (too many objects or strings for its size) is a 413; a body that does not fit the
worker's budget (``PARSE_BUDGET_BYTES``, estimated parsed bytes: cds_service/memory.py) waits
up to ``WAIT_SECONDS`` for calls in flight to finish, then is a 503 with Retry-After. The call's
ticket is the current one while it runs (its FHIR answers are charged to it) and is released
once the answer is sent; after a large call, freed memory goes back to the operating system.
"""
from __future__ import annotations

import os
import threading
from typing import Any

from flask import after_this_request, current_app, g

from cds_service import memory
from cds_service.errors import Overloaded, PayloadTooLarge

WAIT_SECONDS = 0.5  # a quarter of the call budget: long enough for a large call to finish
LARGE = 64 * 1024 * 1024  # estimated bytes after which the heap is trimmed once the call ends
_making = threading.Lock()


def admit(raw: bytes) -> None:
    """Admit the current call's body, or raise PayloadTooLarge (413) / Overloaded (503)."""
    try:
        size = memory.check_shape(raw)
    except memory.ShapeRefused as exc:
        raise PayloadTooLarge(f"the request body is refused: {exc}") from exc
    try:
        ticket = budget().admit(size, WAIT_SECONDS)
    except memory.Busy:
        raise Overloaded("this instance is parsing as many large charts as it has memory for; call again",
                         retry_after=1) from None
    memory.current.set(ticket)
    g.memory_ticket = ticket

    @after_this_request
    def _release_when_sent(response: Any) -> Any:
        g.memory_ticket = None  # the response now owns the release
        response.call_on_close(lambda: _release(ticket))
        return response


def release_unsent(exc: BaseException | None = None) -> None:
    """Teardown: a ticket no response took (the call failed before answering) is released here."""
    memory.current.set(None)  # gthread threads serve call after call: no ticket outlives its call
    ticket = g.pop("memory_ticket", None)
    if ticket is not None:
        _release(ticket)


def _release(ticket: memory.Ticket) -> None:
    held = ticket.held
    ticket.release()
    if held >= LARGE:
        memory.give_back()


def budget() -> memory.Budget:
    """This app's budget in this process, made after a fork (each gunicorn worker has its own)."""
    with _making:  # two first calls at once must not make two budgets
        made = current_app.extensions.get("cds_parse_budget")
        if made is None or made[0] != os.getpid():
            made = (os.getpid(), memory.Budget(int(current_app.config["PARSE_BUDGET_BYTES"])))
            current_app.extensions["cds_parse_budget"] = made
        return made[1]
