"""Patient facts: one pass over the FHIR data of a call, computed once.

Sans-IO and clock-free: ``build_facts`` takes the hook context, the resources
per prefetch key, the terminology and ``now``. It reads dicts through
``fhir.py``'s tolerant helpers; a malformed element reads as absent. It does
not decide anything clinical: the rules do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from . import dosing
from .fhir import codings, concept_text, first_code, number, obj, objects, string, parse_date, reference_to, resources_in
from .terminology import LOINC, Coding, Terminology

CLINICAL_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
ACTIVE_CONDITION = {"active", "recurrence", "relapse"}
NOT_TRUE = {"refuted", "entered-in-error"}
SUSPECTED = {"provisional", "differential", "unconfirmed"}
ACTIVE_MEDICATION = {"active", "on-hold"}
MEDICATION_ORDERS = {"MedicationRequest", "MedicationOrder"}
SERVICE_ORDERS = {"ServiceRequest", "ProcedureRequest"}
DEAD_OBSERVATION = {"entered-in-error", "cancelled"}


@dataclass(frozen=True)
class ConditionFact:
    codings: tuple[Coding, ...]
    text: str
    onset: date | None
    suspected: bool
    relapsing: bool = False  # clinicalStatus "relapse": how a relapse is recorded when no code names it


@dataclass(frozen=True)
class MedicationFact:
    """A medication order, drafted or active, with what the rules ask of it."""

    ref: str | None
    kind: str  # "draft" (in draftOrders) or "active" (on the patient's record)
    codings: tuple[Coding, ...]
    text: str
    status: str
    route: str | None
    start: date | None
    planned_days: float | None
    single_dose_mg: float | None
    daily_dose_mg: float | None
    reason_codings: tuple[Coding, ...]

    @property
    def name(self) -> str:
        return self.text or "this medication"


@dataclass(frozen=True)
class ServiceRequestFact:
    ref: str | None
    codings: tuple[Coding, ...]
    text: str
    status: str
    reason_codings: tuple[Coding, ...]

    @property
    def name(self) -> str:
        return self.text or "this order"


@dataclass(frozen=True)
class ObservationFact:
    code: str
    text: str
    value: float | None
    unit: str
    when: date | None
    interpretation: tuple[str, ...]
    range_high: float | None


@dataclass(frozen=True)
class Facts:
    now: datetime
    hook: str
    patient_id: str
    age_years: int | None
    conditions: tuple[ConditionFact, ...]
    allergies: tuple[tuple[Coding, ...], ...]
    active_medications: tuple[MedicationFact, ...]
    draft_medications: tuple[MedicationFact, ...]
    draft_service_requests: tuple[ServiceRequestFact, ...]
    latest_observations: dict[str, ObservationFact]
    available: frozenset[str]
    # Every draft order of the request (order-select: not only the selected ones), for the
    # conditions that look at the other orders being signed together (draft_medication, ...).
    all_drafts: tuple[MedicationFact | ServiceRequestFact, ...] = ()
    # Matches of record lookups by value set, shared by the rules of this one call (many rules
    # ask "does the patient have X?" for the same X); never shared between calls.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def today(self) -> date:
        return self.now.date()


def build_facts(
    hook: str,
    context: dict[str, Any],
    data: dict[str, Any],
    terminology: Terminology,
    now: datetime,
) -> Facts:
    """Facts for one call.

    ``data`` maps each prefetch key that could be had to its value; a key that
    is absent was unavailable, and rules that read it are not evaluated.
    """
    drafts = resources_in(context.get("draftOrders"))
    focus = _focus(hook, context, drafts)
    return Facts(
        now=now,
        hook=hook,
        patient_id=context.get("patientId", ""),
        age_years=_age(data.get("patient"), now.date()),
        conditions=tuple(c for r in resources_in(data.get("conditions")) if (c := _condition(r))),
        allergies=tuple(a for r in resources_in(data.get("allergies")) if (a := _allergy(r))),
        active_medications=tuple(
            _medication(r, terminology, "active")
            for r in resources_in(data.get("medications"))
            if _among(r.get("resourceType"), MEDICATION_ORDERS) and _among(r.get("status"), ACTIVE_MEDICATION)
        ),
        draft_medications=tuple(
            _medication(r, terminology, "draft") for r in focus if _among(r.get("resourceType"), MEDICATION_ORDERS)
        ),
        draft_service_requests=tuple(
            _service_request(r) for r in focus if _among(r.get("resourceType"), SERVICE_ORDERS)
        ),
        latest_observations=_latest_observations(resources_in(data.get("observations")), terminology.loinc_codes),
        available=frozenset(data),
        all_drafts=tuple(_medication(r, terminology, "draft") if _among(r.get("resourceType"), MEDICATION_ORDERS)
                         else _service_request(r) for r in drafts
                         if _among(r.get("resourceType"), MEDICATION_ORDERS | SERVICE_ORDERS)),
    )


def _among(value: Any, group: set[str]) -> bool:
    """``value in group`` for a string; False for a list or object (unhashable) or anything else."""
    return isinstance(value, str) and value in group


def _focus(hook: str, context: dict[str, Any], drafts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """order-select: only the selected drafts get cards; order-sign: all of them (any status)."""
    if hook != "order-select":
        return drafts if hook == "order-sign" else []
    selected = {s for s in context.get("selections", []) if isinstance(s, str)}
    return [d for d in drafts if reference_to(d) in selected]


def _age(patient: Any, today: date) -> int | None:
    resources = resources_in(patient)
    born = parse_date(resources[0].get("birthDate")) if resources else None
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def _status(value: Any, system: str) -> str | None:
    """A status CodeableConcept (R4) or plain string (DSTU2)."""
    if isinstance(value, str):
        return value
    return first_code(value, system)


def _condition(res: dict[str, Any]) -> ConditionFact | None:
    if res.get("resourceType") != "Condition":
        return None
    clinical = _status(res.get("clinicalStatus"), CLINICAL_STATUS)
    verification = _status(res.get("verificationStatus"), VERIFICATION_STATUS)
    if verification in NOT_TRUE:
        return None
    if clinical is None and (res.get("abatementDateTime") or res.get("abatementPeriod")):
        return None  # no status but an end date: resolved
    if clinical is not None and clinical not in ACTIVE_CONDITION:
        return None
    onset = parse_date(res.get("onsetDateTime")) or parse_date(obj(res, "onsetPeriod").get("start"))
    return ConditionFact(
        codings=codings(res.get("code")),
        text=concept_text(res.get("code")),
        onset=onset or parse_date(res.get("recordedDate")),
        suspected=verification in SUSPECTED,
        relapsing=clinical == "relapse",
    )


def _allergy(res: dict[str, Any]) -> tuple[Coding, ...] | None:
    if res.get("resourceType") != "AllergyIntolerance":
        return None
    if _status(res.get("verificationStatus"), ALLERGY_VERIFICATION) in NOT_TRUE:
        return None
    if _status(res.get("clinicalStatus"), ALLERGY_CLINICAL) in {"inactive", "resolved"}:
        return None
    substances = [res.get("code")] + [r.get("substance") for r in objects(res.get("reaction"))]
    return codings(substances)


def _medication(res: dict[str, Any], terminology: Terminology, kind: str) -> MedicationFact:
    concept = res.get("medicationCodeableConcept")
    reference = res.get("medicationReference")
    coded = codings(concept)
    text = concept_text(concept) or (reference.get("display", "") if isinstance(reference, dict) else "")
    product = next((terminology.products[c] for s, c, _ in coded if c in terminology.products), None)
    dose = dosing.read(res, product)
    return MedicationFact(
        ref=reference_to(res),
        kind=kind,
        codings=coded,
        text=string(text),
        status=string(res.get("status")),
        route=dosing.route(res, product, string(text)),
        start=dose.start or parse_date(res.get("authoredOn")) or parse_date(res.get("dateWritten")),
        planned_days=dose.planned_days,
        single_dose_mg=dose.single_dose_mg,
        daily_dose_mg=dose.daily_dose_mg,
        reason_codings=codings(res.get("reasonCode")) + codings(res.get("reasonCodeableConcept")),
    )


def _service_request(res: dict[str, Any]) -> ServiceRequestFact:
    return ServiceRequestFact(
        ref=reference_to(res),
        codings=codings(res.get("code")),
        text=concept_text(res.get("code")),
        status=string(res.get("status")),
        reason_codings=codings(res.get("reasonCode")),
    )


def _latest_observations(resources: list[dict[str, Any]], wanted: frozenset[str]) -> dict[str, ObservationFact]:
    """The most recent observation of each LOINC code the knowledge uses; others are not read
    further (an EHR may send hundreds of vital signs that no rule looks at)."""
    latest: dict[str, ObservationFact] = {}
    for res in resources:
        if res.get("resourceType") != "Observation" or _among(res.get("status"), DEAD_OBSERVATION):
            continue
        if not _mentions(res.get("code"), wanted):
            continue  # the common case, kept cheap: most observations are codes no rule reads
        coded = [c for c in codings(res.get("code")) if c[1] in wanted and c[0] in (LOINC, "")]
        for obs in _observation(res, coded):
            current = latest.get(obs.code)
            if current is None or (obs.when or date.min) > (current.when or date.min):
                latest[obs.code] = obs
    return latest


def _mentions(concept: Any, wanted: frozenset[str]) -> bool:
    """Whether a CodeableConcept carries any of the wanted codes (a quick look, no copies)."""
    for cc in objects(concept):
        for coding in objects(cc.get("coding")):
            code = coding.get("code")
            if isinstance(code, str) and code in wanted:
                return True
    return False


def _observation(res: dict[str, Any], coded: list[Coding]) -> list[ObservationFact]:
    if not coded:
        return []
    quantity = obj(res, "valueQuantity")
    ranges = objects(res.get("referenceRange"))
    high = number(obj(ranges[0], "high").get("value")) if ranges else None
    when = (
        parse_date(res.get("effectiveDateTime"))
        or parse_date(obj(res, "effectivePeriod").get("start"))
        or parse_date(res.get("issued"))
    )
    unit = string(quantity.get("code")) or string(quantity.get("unit"))
    return [
        ObservationFact(
            code=code,
            text=concept_text(res.get("code")) or display or code,
            value=number(quantity.get("value")),
            unit=unit,
            when=when,
            interpretation=tuple(c for _, c, _ in codings(res.get("interpretation"))),
            range_high=high,
        )
        for system, code, display in coded
    ]
