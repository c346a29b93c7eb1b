"""Reading FHIR R4 JSON as real EHRs and the CDS Hooks sandbox send it.

The hot path reads plain dicts, tolerantly: an object where an array is due,
a Bundle without ``type``, empty codings, partial or malformed dates, unknown
resource types. Nothing here raises on odd input; odd input reads as absent.
Strict validation with ``fhir.resources`` (R4B models, identical to R4 for the
resources we use) is for what the service itself creates and for fixtures;
this is the only module that imports ``fhir.resources``.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def as_list(value: Any) -> list[Any]:
    """A FHIR array, also when the sender put a single object (or nothing) there."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def obj(value: Any, key: str) -> dict[str, Any]:
    """``value[key]`` when both are JSON objects, else {}: a sender may put anything anywhere."""
    child = value.get(key) if isinstance(value, dict) else None
    return child if isinstance(child, dict) else {}


def string(value: Any) -> str:
    """``value`` when it is a string, else "": the tolerant read of a FHIR string element."""
    return value if isinstance(value, str) else ""


def objects(value: Any) -> list[dict[str, Any]]:
    """The JSON objects of a FHIR array, skipping anything that is not an object."""
    if isinstance(value, list):  # the common case first: this runs for every element of a chart
        return [item for item in value if isinstance(item, dict)]
    return [value] if isinstance(value, dict) else []


def resources_in(value: Any) -> list[dict[str, Any]]:
    """The resources of a Bundle (any type, or none), or the resource itself."""
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        return [res for entry in objects(value.get("entry")) if isinstance(res := entry.get("resource"), dict)]
    return [value] if isinstance(value.get("resourceType"), str) else []


def _each(value: Any) -> Any:
    """What to loop over for a FHIR array or a single element put in its place (not copied:
    this runs for every element of a chart); the caller skips what is not an object."""
    return value if isinstance(value, list) else (value,)


def holds_outcome(value: Any) -> bool:
    """True for an OperationOutcome, or a Bundle that carries one (a failed prefetch): a look at
    every entry of a long chart that copies nothing."""
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"
    return any(isinstance(entry, dict) and isinstance(res := entry.get("resource"), dict)
               and res.get("resourceType") == "OperationOutcome" for entry in _each(value.get("entry")))


def next_link(bundle: Any) -> str | None:
    """The URL of a paginated Bundle's next page, if any."""
    if not isinstance(bundle, dict):
        return None
    for link in objects(bundle.get("link")):
        if link.get("relation") == "next" and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def codings(concept: Any) -> tuple[tuple[str, str, str], ...]:
    """(system, code, display) of every coding that has a code, across one or more CodeableConcepts."""
    if not concept:
        return ()  # the common case of an absent element (None, or empty): nothing to read
    found = []
    for cc in concept if isinstance(concept, list) else (concept,):
        if not isinstance(cc, dict) or not (listed := cc.get("coding")):
            continue
        for coding in listed if isinstance(listed, list) else (listed,):
            if not isinstance(coding, dict):
                continue
            code = coding.get("code")
            if isinstance(code, str) and (code := code.strip()):
                system, display = coding.get("system"), coding.get("display")
                found.append((system if isinstance(system, str) else "", code,
                              display if isinstance(display, str) else ""))
    return tuple(found)


def has_code(concept: Any, wanted: frozenset[str]) -> bool:
    """Whether a CodeableConcept (or several) carries any of the wanted codes, as they are
    written: a quick look that copies nothing, for every observation of a long chart."""
    for cc in _each(concept):
        if isinstance(cc, dict):
            for coding in _each(cc.get("coding")):
                if isinstance(coding, dict) and isinstance(code := coding.get("code"), str) and code in wanted:
                    return True
    return False


def concept_text(concept: Any) -> str:
    """The human text of one or more CodeableConcepts: ``text``, else the first display."""
    for cc in _each(concept):
        if isinstance(cc, dict) and isinstance(cc.get("text"), str) and cc["text"].strip():
            return str(cc["text"]).strip()
    for _, _, display in codings(concept):
        if display:
            return display
    return ""


def first_code(concept: Any, system_url: str) -> str | None:
    """The first code of a given system (or of no system) in a CodeableConcept, e.g. a status."""
    return next((code for system, code, _ in codings(concept) if not system or system == system_url), None)


def parse_date(value: Any) -> date | None:
    """A FHIR date or dateTime (partial allowed) as a date; None when absent or malformed."""
    if not isinstance(value, str):
        return None
    match = _DATE.match(value)
    if not match:
        return None
    year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
    try:
        return date(year, month, day)
    except ValueError:
        return None



def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def reference_to(resource: dict[str, Any]) -> str | None:
    """``Type/id`` of a resource, the form ``selections`` and ``resourceId`` use."""
    rtype, rid = resource.get("resourceType"), resource.get("id")
    if isinstance(rtype, str) and isinstance(rid, str) and rid:
        return f"{rtype}/{rid}"
    return None


def number(value: Any) -> float | None:
    """A JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def validate_resource(resource: dict[str, Any]) -> None:
    """Validate one resource against the FHIR R4 (R4B models) definition.

    Raises ValueError naming the resource type and the first problem.
    """
    from fhir.resources.R4B import get_fhir_model_class  # imported lazily: slow, and off the hot path

    try:
        model = get_fhir_model_class(resource["resourceType"])
        model.model_validate(resource)
    except (KeyError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"{resource.get('resourceType')}: {exc}") from exc


# Resource types that exist only before R4 (DSTU2 and STU3), and what replaced them.
_PRE_R4_TYPES = {"MedicationOrder": "MedicationRequest", "ProcedureRequest": "ServiceRequest",
                 "DiagnosticOrder": "ServiceRequest", "ReferralRequest": "ServiceRequest",
                 "DeviceUseRequest": "DeviceRequest"}
_PRE_R4_SIGNALLING = frozenset(_PRE_R4_TYPES) | {"Condition", "AllergyIntolerance"}


def pre_r4_sign(context: dict[str, Any], data: dict[str, Any]) -> str | None:
    """What shows that a call's draft orders or record are FHIR DSTU2 or STU3, or None.

    The CDS Hooks sandbox's default FHIR server is DSTU2. Read as R4, such data
    loses what the rules need without any error (the prefetch searches name R4
    types, an allergy's DSTU2 ``substance`` and ``status`` go unread), so a
    call that shows these signs is answered with one card that says so rather
    than with cards, or silence, computed from half the record.
    """
    for value in (context.get("draftOrders"), *data.values()):
        for res in resources_in(value):
            kind = res.get("resourceType")
            if not isinstance(kind, str) or kind not in _PRE_R4_SIGNALLING:
                continue  # most of a chart: observations, and R4 resources of other types
            if kind in _PRE_R4_TYPES:
                return f"{kind} resources (R4 has {_PRE_R4_TYPES[kind]})"
            if any(isinstance(res.get(f), str) for f in ("clinicalStatus", "verificationStatus")):
                return f"{kind} statuses as plain codes (R4 has CodeableConcepts)"
            if kind == "AllergyIntolerance" and ("substance" in res or "status" in res):
                return "AllergyIntolerance.substance or .status (R4 has code and clinicalStatus)"
    return None
