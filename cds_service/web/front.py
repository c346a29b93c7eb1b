"""What the front (deploy/nginx.conf) tells the service about a call.

nginx stamps each request with ``X-Request-Start: t=<seconds since the epoch, with
milliseconds>`` (``$msec``) when it has read it. The difference to now is the time the call
spent queued before a worker took it; the call budget is spent from that moment, so a call that
waited does not then wait its full budget again for FHIR servers. The header is only believed
when the operator says every request passes through such a front (``TRUST_REQUEST_START``):
a client could otherwise send any value.
"""
from __future__ import annotations

import time

# A stamp further off than this is a wrong clock, not a queue: it is ignored.
_PLAUSIBLE_SECONDS = 300.0


def queued_seconds(stamp: str | None, now: float | None = None) -> float:
    """Seconds between the front's ``X-Request-Start`` stamp and now; 0 without a usable stamp."""
    stamp = (stamp or "").strip()
    if stamp.startswith("t="):
        stamp = stamp[2:]
    try:
        received = float(stamp)
    except ValueError:
        return 0.0
    waited = (time.time() if now is None else now) - received
    return waited if 0.0 < waited <= _PLAUSIBLE_SECONDS else 0.0
