"""The shape of what an EHR sends: hook requests and feedback.

Only this module knows the request JSON Schemas (``schemas/*.json``, Draft
2020-12, compiled once at import). It turns a validation failure into
``InvalidRequest`` with the JSON path of the problem; it does not look at
prefetch contents or FHIR resources beyond their envelope.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from itertools import islice
from typing import Any, cast
from urllib.parse import urlsplit

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from cds_service.errors import InvalidRequest

# The one definition of the hooks this service answers and of the prefetch keys it uses: every
# other module (discovery, the CLI, the pages, offline evaluation, the case builder) derives from these.
SUPPORTED_HOOKS = ("patient-view", "order-select", "order-sign")
ORDER_HOOKS = ("order-select", "order-sign")
# Prefetch key -> the FHIR resource type it holds (a read for "patient", a searchset for the others).
PREFETCH_RESOURCE = {
    "patient": "Patient",
    "conditions": "Condition",
    "medications": "MedicationRequest",
    "allergies": "AllergyIntolerance",
    "observations": "Observation",
    "medicationStatements": "MedicationStatement",
    "medicationDispenses": "MedicationDispense",
}
# Resource type -> the prefetch key a record's resources of that type go under.
PREFETCH_KEY_OF = {kind: key for key, kind in PREFETCH_RESOURCE.items() if key != "patient"}


def _load_schema(name: str) -> dict[str, Any]:
    return cast(dict[str, Any], json.loads(resources.files(__package__).joinpath("schemas", name).read_text("utf-8")))


@dataclass(frozen=True)
class _Schema:
    """A request schema compiled twice: jsonschema-rs answers "valid?" for every call in
    microseconds; jsonschema, the reference, judges a body the first found wrong and says why."""

    fast: Any
    explaining: Draft202012Validator

    @classmethod
    def of(cls, schema: dict[str, Any]) -> _Schema:
        return cls(jsonschema_rs.validator_for(schema), Draft202012Validator(schema))


_REQUEST_SCHEMA = _load_schema("hook-request.schema.json")
_ENVELOPE = _Schema.of(_REQUEST_SCHEMA)
_CONTEXTS = {
    hook: _Schema.of({"$defs": _REQUEST_SCHEMA["$defs"], "$ref": f"#/$defs/{hook}"})
    for hook in SUPPORTED_HOOKS
}
_FEEDBACK = _Schema.of(_load_schema("feedback.schema.json"))


@dataclass(frozen=True)
class HookRequest:
    """A validated service call: the members of the body the service reads."""

    hook: str
    hook_instance: str
    context: dict[str, Any]
    prefetch: dict[str, Any]
    fhir_server: str | None
    access_token: str | None


def _raise_first(schema: _Schema, instance: Any, prefix: str = "$") -> None:
    if schema.fast.is_valid(instance):
        return
    # iter_errors is lazy: judging only the first errors keeps a body with 100,000 bad items cheap
    try:
        error = best_match(islice(schema.explaining.iter_errors(instance), 50))
    except RecursionError as exc:  # jsonschema repr()s the offending value: ~1000 levels deep is too deep
        raise InvalidRequest(f"{prefix}: nested too deeply", location=prefix) from exc
    if error is None:
        return
    path = prefix + "".join(_step(step) for step in error.absolute_path)
    raise InvalidRequest(f"{path}: {_problem(error)}", location=path)


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _step(step: Any) -> str:
    """One step of the JSON path; a member name that is not a plain identifier (it came from the
    request, e.g. a prefetch key, and may hold anything) is not repeated."""
    if isinstance(step, int):
        return f"[{step}]"
    return f".{step}" if _NAME.match(step) else "[*]"


def _problem(error: ValidationError) -> str:
    """What is wrong, in words taken from the schema only: jsonschema's own messages quote the
    offending value (a patient id, a token, a whole resource), and these messages are logged."""
    kind = error.validator
    expected: Any = error.validator_value  # this keyword's value in our schema
    if kind in ("required", "dependentRequired"):
        return error.message  # names a member from the schema
    if kind == "type":
        return "must be of type " + " or ".join(expected if isinstance(expected, list) else [expected])
    if kind == "const":
        return f"must be {json.dumps(expected)}"
    if kind == "enum":
        return "must be one of " + ", ".join(json.dumps(v) for v in expected)
    if kind == "pattern":
        return f"does not match the pattern {expected}"
    limits = {"minLength": "at least {} characters", "maxLength": "at most {} characters",
              "minItems": "at least {} items", "maxItems": "at most {} items",
              "minProperties": "at least {} members", "maxProperties": "at most {} members"}
    if kind in limits:
        return "must have " + limits[kind].format(expected)
    if kind in ("anyOf", "oneOf"):
        return "does not match any of the allowed forms"
    return f"is not valid ({kind})"


def parse_hook_request(body: Any, expected_hook: str) -> HookRequest:
    """Validate a service call for a service whose hook is ``expected_hook``.

    Raises InvalidRequest (400) for a body that is not an object, a missing
    member, a hook other than the service's, or a context that does not fit
    the hook.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("$: the request body must be a JSON object", location="$")
    _raise_first(_ENVELOPE, body)
    if body["hook"] != expected_hook:
        raise InvalidRequest(f"$.hook: this service answers '{expected_hook}' only", location="$.hook")
    _raise_first(_CONTEXTS[expected_hook], body["context"], prefix="$.context")
    authorization = body.get("fhirAuthorization") or {}
    return HookRequest(
        hook=body["hook"],
        hook_instance=body["hookInstance"],
        context=body["context"],
        prefetch=body.get("prefetch") or {},
        fhir_server=_fhir_server(body.get("fhirServer")),
        access_token=authorization.get("access_token"),
    )


def fhir_base_url(url: str) -> str:
    """A FHIR base URL as every list and every fetch compares it: scheme and host in lower case,
    no trailing slash. The one place a ``fhirServer`` or a configured server is normalised.
    Raises ValueError for what no HTTP client could connect to (a bad IPv6 literal, a host label
    over 63 characters, characters that normalise to a delimiter, a bad port) or a query or fragment."""
    parts = urlsplit(url.strip())  # ValueError: "[host", a full-width '＃' that NFKC makes '#'
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL with a host")
    if parts.query or parts.fragment or url.strip().endswith(("?", "#")):
        raise ValueError("a base URL has no query or fragment")
    parts.port  # noqa: B018 (ValueError for a port out of range or not a number)
    try:
        parts.hostname.encode("idna")  # UnicodeError: an empty label or one over 63 characters
    except UnicodeError as exc:
        raise ValueError("the host is not a valid domain name") from exc
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def base_url(url: str | None) -> str:
    """``fhir_base_url`` for configured lists: "" for anything that is not a usable base URL."""
    try:
        return fhir_base_url(url or "")
    except ValueError:
        return ""


def _fhir_server(value: str | None) -> str | None:
    if not (value or "").strip():
        return None
    try:
        return fhir_base_url(value or "")
    except ValueError as exc:
        raise InvalidRequest(f"$.fhirServer: not a usable FHIR base URL ({exc})", location="$.fhirServer") from exc


def parse_feedback(body: Any) -> list[dict[str, Any]]:
    """Validate a feedback body and return its items. Raises InvalidRequest (400)."""
    if not isinstance(body, dict):
        raise InvalidRequest("$: the feedback body must be a JSON object", location="$")
    _raise_first(_FEEDBACK, body)
    return cast(list[dict[str, Any]], body["feedback"])
