"""WSGI middleware that runs before Flask routes a request.

The CDS Hooks sandbox builds service URLs by appending ``/<id>`` to the
discovery URL the user typed. A discovery URL with a trailing slash gives
``/cds-services//back-pain-patient-view``. Werkzeug's ``merge_slashes``
answers such a path with a 308 redirect, and browsers do not follow
redirects on a CORS preflight, so the sandbox would show "All clear!". This
middleware collapses repeated slashes before routing, so the path is served
as it stands. The path as sent is kept in the environ, because the client
names it in the JWT ``aud`` (see ``auth.audiences``).
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable

PATH_AS_SENT = "cds_service.path_as_sent"
_REPEATED = re.compile(r"/{2,}")


class CollapseSlashes:
    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ[PATH_AS_SENT] = path
            environ["PATH_INFO"] = _REPEATED.sub("/", path)
        return self.app(environ, start_response)
