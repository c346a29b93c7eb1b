"""The shape of what an EHR sends: hook requests and feedback.

Only this module knows the request JSON Schemas (``schemas/*.json``, Draft
2020-12, compiled once at import). It turns a validation failure into
``InvalidRequest`` with the JSON path of the problem; it does not look at
prefetch contents or FHIR resources beyond their envelope.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from .errors import InvalidRequest

SUPPORTED_HOOKS = ("patient-view", "order-select", "order-sign")


def _load_schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files(__package__).joinpath("schemas", name).read_text("utf-8"))


_REQUEST_SCHEMA = _load_schema("hook-request.schema.json")
_ENVELOPE = Draft202012Validator(_REQUEST_SCHEMA)
_CONTEXTS = {
    hook: Draft202012Validator({"$defs": _REQUEST_SCHEMA["$defs"], "$ref": f"#/$defs/{hook}"})
    for hook in SUPPORTED_HOOKS
}
_FEEDBACK = Draft202012Validator(_load_schema("feedback.schema.json"))


@dataclass(frozen=True)
class HookRequest:
    """A validated service call; ``body`` keeps everything the EHR sent."""

    hook: str
    hook_instance: str
    context: dict[str, Any]
    prefetch: dict[str, Any]
    fhir_server: str | None
    access_token: str | None

    @property
    def patient_id(self) -> str:
        return self.context["patientId"]


def _raise_first(validator: Draft202012Validator, instance: Any, prefix: str = "$") -> None:
    error = best_match(validator.iter_errors(instance))
    if error is None:
        return
    path = prefix + error.json_path[1:]
    raise InvalidRequest(f"{path}: {error.message}", location=path)


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
        raise InvalidRequest(
            f"$.hook: this service answers '{expected_hook}', not '{body['hook']}'", location="$.hook"
        )
    _raise_first(_CONTEXTS[expected_hook], body["context"], prefix="$.context")
    authorization = body.get("fhirAuthorization") or {}
    return HookRequest(
        hook=body["hook"],
        hook_instance=body["hookInstance"],
        context=body["context"],
        prefetch=body.get("prefetch") or {},
        fhir_server=(body.get("fhirServer") or "").rstrip("/") or None,
        access_token=authorization.get("access_token"),
    )


def parse_feedback(body: Any) -> list[dict[str, Any]]:
    """Validate a feedback body and return its items. Raises InvalidRequest (400)."""
    if not isinstance(body, dict):
        raise InvalidRequest("$: the feedback body must be a JSON object", location="$")
    _raise_first(_FEEDBACK, body)
    return body["feedback"]
