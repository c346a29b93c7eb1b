"""Errors that become HTTP answers, and the one that stops start-up.

    CdsError                 base; ``status`` and ``to_json()`` (an OperationOutcome)
    ├── InvalidRequest       400  malformed body, wrong hook, bad context, bad feedback
    ├── AuthenticationFailed 401  names the cause (never the token) in the body and the challenge
    ├── Forbidden            403  /metrics from an address not allowed; a cross-site preview post
    ├── UnknownService       404  no service with that id
    ├── UnknownRule          404  no rule with that id (the rule pages)
    ├── PayloadTooLarge      413  body over MAX_CONTENT_LENGTH, or more JSON objects than a record has
    ├── PrefetchUnavailable  412  data the rules need could not be had
    ├── StorageUnavailable   503  feedback could not be stored just now (Retry-After)
    └── Overloaded           503  this worker's parsing budget stayed full (Retry-After)
    KnowledgeError           start-up: a broken knowledge file (names file and path)
    StorageUnusable          start-up: the database cannot be written (names the database and why)
    SettingsInvalid          start-up: a CDS_* variable has a bad value (names the variable, not the value)

Every error body is JSON; the messages never contain request data beyond a
JSON path, so they are safe to log.
"""
from __future__ import annotations

import difflib
from typing import Any, ClassVar, Iterable


class CdsError(Exception):
    status: ClassVar[int] = 500
    issue_code: ClassVar[str] = "exception"

    def __init__(self, message: str, *, location: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location

    def headers(self) -> dict[str, str]:
        """Headers the answer must carry besides the JSON body."""
        return {}

    def to_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": "error", "code": self.issue_code, "diagnostics": self.message}
        if self.location:
            issue["expression"] = [self.location]
        return {"resourceType": "OperationOutcome", "issue": [issue]}


class InvalidRequest(CdsError):
    status = 400
    issue_code = "invalid"


class AuthenticationFailed(CdsError):
    status = 401
    issue_code = "login"

    def __init__(self, reason: str, *, token_given: bool = True) -> None:
        # The cause is told to the client (body and challenge) and logged: an informaticist must
        # see why, not an empty screen. Reasons name claims and settings, never the token.
        super().__init__(f"Authentication failed: {reason}")
        self.reason = reason
        self.token_given = token_given

    def headers(self) -> dict[str, str]:
        # RFC 6750 section 3: a challenge on every 401; the error code only when a token was sent.
        challenge = 'Bearer realm="cds-service"'
        if not self.token_given:
            return {"WWW-Authenticate": challenge}
        return {"WWW-Authenticate": f'{challenge}, error="invalid_token", error_description="{_rfc6750(self.reason)}"'}


def _rfc6750(text: str) -> str:
    """error_description's characters (RFC 6750 section 3): printable ASCII without '"' or '\\'."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)


class Forbidden(CdsError):
    status = 403
    issue_code = "forbidden"


class UnknownService(CdsError):
    status = 404
    issue_code = "not-found"


class UnknownRule(CdsError):
    status = 404
    issue_code = "not-found"


class PayloadTooLarge(CdsError):
    status = 413
    issue_code = "too-costly"


class PrefetchUnavailable(CdsError):
    status = 412
    issue_code = "processing"


class Unavailable(CdsError):
    """503 with ``Retry-After``: the call may succeed a few seconds from now."""

    status = 503
    issue_code = "transient"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class StorageUnavailable(Unavailable):
    """Feedback could not be stored (the database is locked, hung or refusing)."""


class KnowledgeError(Exception):
    """A knowledge file is missing, malformed or inconsistent; the service must not start."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("Knowledge is invalid:\n  " + "\n  ".join(problems))
        self.problems = problems


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a near-miss of one of ``choices``, else ''."""
    if not isinstance(word, str) or word.startswith("TODO"):  # a skeleton's blank: nothing is near it
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class StorageUnusable(Exception):
    """The database cannot be written at start-up; the service must not start on it."""


class SettingsInvalid(ValueError):
    """A ``CDS_*`` setting has a value of the wrong type or out of range; the service must not start.
    Each problem names the variable and what is wrong, never the value (it may be a secret)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("Settings are invalid:\n  " + "\n  ".join(problems))
        self.problems = problems
class Overloaded(Unavailable):
    """Too many large bodies being parsed in this worker at once: call again shortly."""
