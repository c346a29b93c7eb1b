"""Patient facts: the FHIR data of a call, each part read once, when a rule first asks for it.

Sans-IO and clock-free: ``build_facts`` takes the hook context, the resources
per prefetch key, the terminology and ``now``. It reads dicts through
``fhir.py``'s tolerant helpers; a malformed element reads as absent. It does
not decide anything clinical: the rules do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from typing import Any, Callable, Mapping, cast

from cds_service.core import dosing
from cds_service.core.dialect import Dialect
from cds_service.core.fhir import (
    codings,
    concept_text,
    first_code,
    has_code,
    number,
    obj,
    objects,
    parse_date,
    reference_to,
    resources_in,
    string,
)
from cds_service.core.terminology import LOINC, Brand, Coding, Match, Terminology

CLINICAL_STATUS = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
ALLERGY_CLINICAL = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
ACTIVE_CONDITION = {"active", "recurrence", "relapse", "absent"}  # "absent": no clinicalStatus, no end date
NOT_TRUE = {"refuted", "entered-in-error"}
SUSPECTED = {"provisional", "differential", "unconfirmed"}
ACTIVE_MEDICATION = {"active", "on-hold"}
MEDICATION_ORDERS = {"MedicationRequest", "MedicationOrder"}
SERVICE_ORDERS = {"ServiceRequest", "ProcedureRequest"}
DEAD_OBSERVATION = {"entered-in-error", "cancelled"}
RESULT_STATUS = {"final", "amended", "corrected"}  # a result that "exists" (observation_recorded)
# The data key under which fhirfetch puts the Medications that draft orders name only by a
# reference to the FHIR server (read within the call budget).
MEDICATION_REFERENCES = "medicationReferences"
CURRENT_STATEMENT = {"active", "intended"}  # a MedicationStatement the patient takes now or will


@dataclass(frozen=True)
class ConditionFact:
    codings: tuple[Coding, ...]
    text: str
    onset: date | None
    suspected: bool
    relapsing: bool = False  # clinicalStatus "relapse": how a relapse is recorded when no code names it
    clinical: str = "absent"  # clinicalStatus; "absent" when not recorded, "resolved" when only an end date is
    # A relapsing chronic disease (dialects.yaml remission_counts_for): "remission" is still the disease.
    chronic: bool = False
    # An encounter diagnosis with no clinicalStatus, older than the dialect's recency: a past visit's
    # diagnosis, not a current problem.
    stale: bool = False

    @property
    def current(self) -> bool:
        if self.clinical == "remission":
            return self.chronic
        return self.clinical in ACTIVE_CONDITION and not self.stale


@dataclass(frozen=True)
class AllergyFact:
    """An allergy or intolerance that holds (not refuted, not resolved): its codes and words."""

    codings: tuple[Coding, ...]
    text: str  # the allergen's text and the reactions' substance texts

    @property
    def name(self) -> str:
        return self.text or next((d or c for _, c, d in self.codings if d or c), "a recorded allergen")

    @property
    def words(self) -> str:
        return " ".join([self.text, *(display for _, _, display in self.codings)])


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
    # The value sets it is in, and why (``Terminology.medication_sets``): every rule asks of the
    # same orders, so each is matched once per call, not once per rule.
    sets: Mapping[str, Match] = field(compare=False, repr=False)
    brands: tuple[Brand, ...] = ()  # brand names in its text, read only when it has no RxNorm code we know
    # What the prescriber wrote about it: the reason's text and displays, and its notes (read by
    # reason_named and order_says).
    stated_texts: tuple[str, ...] = ()
    reason_text: str = ""  # a reason given in words only is still a reason (no_reason is false)
    dose_unread: bool = False  # a dose is written that cannot be read as an amount (unit unknown, sig words)
    # A medicationReference that names a Medication neither contained, in draftOrders nor in the
    # prefetch: the drug is unknown, so no rule can clear it.
    unresolved_reference: bool = False

    @property
    def name(self) -> str:
        return self.text or "this medication"


class RecentMedication:
    """A prescription, dispense or statement of the past (R8): ``when`` is its date, None for a
    MedicationStatement the patient takes now (active) or is about to (intended). Its medication
    is read only when asked (a long record holds years of completed prescriptions that no
    window reaches)."""

    __slots__ = ("when", "source", "_read", "_medication")

    def __init__(self, when: date | None, source: str, read: Callable[[], MedicationFact]) -> None:
        self.when, self.source, self._read = when, source, read
        self._medication: MedicationFact | None = None

    @property
    def medication(self) -> MedicationFact:
        if self._medication is None:
            self._medication = self._read()
        return self._medication


@dataclass(frozen=True)
class ServiceRequestFact:
    ref: str | None
    codings: tuple[Coding, ...]
    text: str
    status: str
    reason_codings: tuple[Coding, ...]
    details: tuple[str, ...] = ()  # orderDetail texts: read by procedure_named with the code text
    category: tuple[Coding, ...] = ()
    reason_text: str = ""  # a reason given in words only: still a reason (no_reason is false)

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
    unit_text: str = ""  # valueQuantity.unit when a code is given too: either may name the unit (core/units.py)
    coded_value: tuple[str, ...] = ()  # codes of a valueCodeableConcept (a qualitative result)
    comparator: str = ""  # valueQuantity.comparator: "<7.9" is a bound, not a value
    # The codings of a valueCodeableConcept, systems canonical (a coded answer read against a value
    # set: a pregnancy status "Pregnant"); ``coded_value`` holds their codes alone.
    value_codings: tuple[Coding, ...] = ()
    status: str = ""  # the observation's status ("final", "preliminary", ...)
    # The effective time, when the record gives it with a time and a zone (``when`` is its day):
    # an observation dated after the call's now is not yet a fact.
    at: datetime | None = None

    @property
    def units(self) -> tuple[str, ...]:
        """Every unit the result names: its code, then its text."""
        return tuple(u for u in (self.unit, self.unit_text) if u)


class FactsError(Exception):
    """Reading the record into facts failed: a bug in a reader, which fails the whole call (the
    engine lets it through) rather than silently dropping the rules that asked."""


class _ReadOnce:
    """A part of the record read into facts on first use, then kept in the instance's __dict__,
    where later look-ups find it without a call (a non-data descriptor, as
    functools.cached_property, but without the lock that one holds across every instance on
    Python 3.11: one call's facts belong to one thread)."""

    def __init__(self, read: Callable[[Facts], Any]) -> None:
        self.read, self.name, self.__doc__ = read, read.__name__, read.__doc__

    def __get__(self, facts: Facts | None, owner: type | None = None) -> Any:
        if facts is None:
            return self
        try:
            value = self.read(facts)
        except Exception as exc:
            raise FactsError(f"reading {self.name} failed ({type(exc).__name__})") from exc
        facts.__dict__[self.name] = value  # the frozen dataclass's own __setattr__ is not used
        return value


@dataclass(frozen=True)
class _Record:
    """The call's FHIR data, kept to be read into facts when a rule first asks for them."""

    data: dict[str, Any]
    terminology: Terminology
    library: _MedicationLibrary

    def resources(self, key: str) -> list[dict[str, Any]]:
        return resources_in(self.data.get(key))

    def medication(self, res: dict[str, Any], kind: str) -> MedicationFact:
        return _medication(res, self.terminology, kind, self.library)


@dataclass(frozen=True)
class Facts:
    """What the rules ask of one call. The orders being drafted are read at once; the rest of the
    record (conditions, allergies, medications, observations) when a rule first asks, and once:
    a module whose gate stays shut, the common case on an ordinary chart, reads nothing more."""

    now: datetime
    hook: str
    patient_id: str
    age_years: int | None
    draft_medications: tuple[MedicationFact, ...]
    draft_service_requests: tuple[ServiceRequestFact, ...]
    available: frozenset[str]
    record: _Record = field(compare=False, repr=False)
    # Every draft order of the request (order-select: not only the selected ones), for the
    # conditions that look at the other orders being signed together (draft_medication, ...).
    all_drafts: tuple[MedicationFact | ServiceRequestFact, ...] = ()
    # Matches of record lookups by value set, shared by the rules of this one call (many rules
    # ask "does the patient have X?" for the same X); never shared between calls.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def today(self) -> date:
        return self.now.date()

    @_ReadOnce
    def past_conditions(self) -> tuple[ConditionFact, ...]:
        """Conditions of any clinical status but refuted or entered in error, for `statuses` (R13)."""
        terminology = self.record.terminology
        return tuple(c for r in self.record.resources("conditions") if (c := _condition(r, terminology, self.today)))

    @_ReadOnce
    def conditions(self) -> tuple[ConditionFact, ...]:
        return tuple(c for c in self.past_conditions if c.current)

    @_ReadOnce
    def allergies(self) -> tuple[tuple[Coding, ...], ...]:
        dialect = self.record.terminology.dialect
        return tuple(dialect.codings(a) for r in self.record.resources("allergies") if (a := _allergy(r)))

    @_ReadOnce
    def allergy_records(self) -> tuple[AllergyFact, ...]:
        """The allergies with their words too (the suggestion screen reads one coded only as text)."""
        return tuple(a for r in self.record.resources("allergies") if (a := _allergy_record(r)))

    @_ReadOnce
    def active_medications(self) -> tuple[MedicationFact, ...]:
        return tuple(
            self.record.medication(r, "active")
            for r in self.record.resources("medications")
            if _among(r.get("resourceType"), MEDICATION_ORDERS) and _among(r.get("status"), ACTIVE_MEDICATION)
            and not _not_to_be_done(r)
        )

    @_ReadOnce
    def recent_medications(self) -> tuple[RecentMedication, ...]:
        return _recent_medications(
            [r for key in ("medications", "medicationStatements", "medicationDispenses")
             for r in self.record.resources(key)],
            self.record.medication,
        )

    @_ReadOnce
    def _observed(self) -> _Observations:
        return _observations(self.record.resources("observations"), self.record.terminology.loinc_codes,
                             self.record.terminology.dialect)

    @_ReadOnce
    def latest_observations(self) -> dict[str, ObservationFact]:
        return {code: day[0] for code, day in self._observed.latest_day.items()}

    @property
    def latest_day_observations(self) -> dict[str, tuple[ObservationFact, ...]]:
        """Every observation of a code on that code's latest day (a DXA exam reports several sites)."""
        return cast(dict[str, tuple[ObservationFact, ...]], self._observed.latest_day)

    def observations_of(self, codes: frozenset[str]) -> tuple[ObservationFact, ...]:
        """Every observation of these LOINC codes, of any day (not entered in error or cancelled),
        in record order: for a reader that must look past the latest one (a pregnancy status that
        does not answer). Read on demand, once per call and set of codes."""
        key = ("facts.observations_of", codes)
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = _every_observation(self.record.resources("observations"), codes,
                                                        self.record.terminology.dialect)
        return cast(tuple[ObservationFact, ...], found)

    @property
    def recorded_units(self) -> dict[str, frozenset[str]]:
        """Units of the results with a value and a final status, by code: "a result exists" (R15)."""
        return cast(dict[str, frozenset[str]], self._observed.recorded_units)


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
    drafts = [r for r in resources_in(context.get("draftOrders")) if not _not_to_be_done(r)]
    focus = _focus(hook, context, drafts)
    record = _Record(data, terminology, _MedicationLibrary(context.get("draftOrders"), data.get("medications"),
                                                        data.get(MEDICATION_REFERENCES)))
    # Each draft order is read once: the focus (the selection, or every draft at signing) and the
    # conditions that look at the other drafts of the request share the same facts.
    draft_facts: dict[int, MedicationFact | ServiceRequestFact] = {
        id(r): record.medication(r, "draft") if _among(r.get("resourceType"), MEDICATION_ORDERS) else _service_request(r, terminology.dialect)
        for r in drafts if _among(r.get("resourceType"), MEDICATION_ORDERS | SERVICE_ORDERS)
    }
    focused = [draft_facts[id(r)] for r in focus if id(r) in draft_facts]
    return Facts(
        now=now,
        hook=hook,
        patient_id=context.get("patientId", ""),
        age_years=_age(data.get("patient"), now.date()),
        draft_medications=tuple(f for f in focused if isinstance(f, MedicationFact)),
        draft_service_requests=tuple(f for f in focused if isinstance(f, ServiceRequestFact)),
        available=frozenset(data),
        record=record,
        all_drafts=tuple(draft_facts.values()),
    )


def _not_to_be_done(res: dict[str, Any]) -> bool:
    """An order that says NOT to do something (``doNotPerform``: "do not give morphine"): no rule
    is about it, and it must never be deleted or replaced from a card, nor count as given."""
    return res.get("doNotPerform") is True


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


def _condition(res: dict[str, Any], terminology: Terminology, today: date) -> ConditionFact | None:
    """Any condition not refuted or entered in error, with its clinical status (the rules choose
    which statuses count: current ones by default), read through the dialect: codings under an
    OID or WHO ICD-10, a problem written only as text ("MCAS"), "remission" of a relapsing
    chronic disease, and an encounter diagnosis with no status counted only while recent."""
    if res.get("resourceType") != "Condition":
        return None
    clinical = _status(res.get("clinicalStatus"), CLINICAL_STATUS)
    verification = _status(res.get("verificationStatus"), VERIFICATION_STATUS)
    if verification in NOT_TRUE:
        return None
    if clinical is None:
        clinical = "resolved" if res.get("abatementDateTime") or res.get("abatementPeriod") else "absent"
    onset = parse_date(res.get("onsetDateTime")) or parse_date(obj(res, "onsetPeriod").get("start"))
    dialect = terminology.dialect
    coded = dialect.codings(codings(res.get("code")))
    text = concept_text(res.get("code"))
    if text and not terminology.knows_code(coded):
        coded += dialect.condition_codings(text)
    sets = frozenset().union(*(terminology.valuesets_of(system, code) for system, code, _ in coded))
    chronic = bool(sets & dialect.remission_sets)
    when = onset or parse_date(res.get("recordedDate"))
    return ConditionFact(
        codings=coded,
        text=text,
        onset=when,
        suspected=verification in SUSPECTED,
        relapsing=clinical == "relapse",
        clinical=clinical,
        chronic=chronic,
        stale=clinical == "absent" and not chronic and _old_encounter_diagnosis(res, when, today, dialect, sets),
    )


def _old_encounter_diagnosis(res: dict[str, Any], when: date | None, today: date, dialect: Dialect,
                             sets: frozenset[str]) -> bool:
    """An encounter diagnosis (category encounter-diagnosis) dated more than the dialect's recency
    before today, or not dated at all: it says what a visit was for, not what the patient has now.
    A value set with a recency of its own (a pregnancy: 280 days) is held that long; of several,
    the longest."""
    if dialect.encounter_recent_days is None:
        return False
    if not any(code == "encounter-diagnosis" for _, code, _ in codings(res.get("category"))):
        return False
    recent = max((days for vid, days in dialect.encounter_recent_days_for.items() if vid in sets),
                 default=dialect.encounter_recent_days)
    return when is None or (today - when).days > recent


def _allergy(res: dict[str, Any]) -> tuple[Coding, ...] | None:
    if res.get("resourceType") != "AllergyIntolerance":
        return None
    if _status(res.get("verificationStatus"), ALLERGY_VERIFICATION) in NOT_TRUE:
        return None
    if _status(res.get("clinicalStatus"), ALLERGY_CLINICAL) in {"inactive", "resolved"}:
        return None
    substances = [res.get("code")] + [r.get("substance") for r in objects(res.get("reaction"))]
    return codings(substances)


def _allergy_record(res: dict[str, Any]) -> AllergyFact | None:
    coded = _allergy(res)
    if coded is None:
        return None
    substances = [res.get("code")] + [r.get("substance") for r in objects(res.get("reaction"))]
    texts = dict.fromkeys(t for s in substances if (t := concept_text(s)))
    return AllergyFact(coded, "; ".join(texts)) if coded or texts else None


class _MedicationLibrary:
    """Medication resources a ``medicationReference`` may name (R1), other than contained ones:
    the draftOrders Bundle (by fullUrl or ``Medication/<id>``), then the prefetch's ``include``."""

    def __init__(self, *bundles: Any) -> None:
        self._by_reference: dict[str, dict[str, Any]] = {}
        for bundle in bundles:
            for entry in objects(bundle.get("entry")) if isinstance(bundle, dict) else []:
                res = entry.get("resource")
                if not isinstance(res, dict) or res.get("resourceType") != "Medication":
                    continue
                for key in (string(entry.get("fullUrl")), reference_to(res)):
                    if key:
                        self._by_reference.setdefault(key, res)

    def resolve(self, order: dict[str, Any], reference: str) -> dict[str, Any] | None:
        if reference.startswith("#"):
            return next((r for r in objects(order.get("contained"))
                         if r.get("resourceType") == "Medication" and f"#{string(r.get('id'))}" == reference), None)
        if (found := self._by_reference.get(reference)) is not None:
            return found
        tail = "/".join(reference.rstrip("/").split("/")[-2:])  # an absolute URL ending Medication/<id>
        return self._by_reference.get(tail)


def _medication(res: dict[str, Any], terminology: Terminology, kind: str, library: _MedicationLibrary) -> MedicationFact:
    concept = res.get("medicationCodeableConcept")
    reference = obj(res, "medicationReference")
    if not concept and (target := string(reference.get("reference"))):
        medication = library.resolve(res, target)
        concept = medication.get("code") if medication else None
    coded = terminology.product_codings(codings(concept))
    text = string(concept_text(concept) or reference.get("display"))
    product = next((terminology.products[c] for _, c, _ in coded if c in terminology.products), None)
    dose = dosing.read(res, product, terminology.dialect)
    brands = () if terminology.knows_rxnorm(coded) else terminology.brands.find(
        " ".join([text] + [display for _, _, display in coded]))
    sets = terminology.medication_sets(coded, text, brands)
    return MedicationFact(
        ref=reference_to(res),
        kind=kind,
        codings=coded,
        text=text,
        status=string(res.get("status")),
        route=dosing.route(res, product, text, terminology.dialect),
        start=dose.start or parse_date(res.get("authoredOn")) or parse_date(res.get("dateWritten")),
        planned_days=dose.planned_days,
        single_dose_mg=dose.single_dose_mg,
        daily_dose_mg=dose.daily_dose_mg,
        dose_unread=dose.dose_unread,
        unresolved_reference=bool(not concept and reference.get("reference")),
        reason_codings=terminology.dialect.codings(codings(res.get("reasonCode")) + codings(res.get("reasonCodeableConcept"))),
        brands=brands,
        stated_texts=_stated_texts(res),
        reason_text=concept_text(res.get("reasonCode")) or concept_text(res.get("reasonCodeableConcept")),
        sets=sets,
    )


def _stated_texts(res: dict[str, Any]) -> tuple[str, ...]:
    """The words of an order's reason (text and coding displays) and of its notes."""
    reasons = [*objects(res.get("reasonCode")), *objects(res.get("reasonCodeableConcept"))]
    words = [t for cc in reasons for t in (string(cc.get("text")), *(d for _, _, d in codings(cc)))]
    words += [string(note.get("text")) for note in objects(res.get("note"))]
    return tuple(w for w in words if w)


def _recent_medications(
    resources: list[dict[str, Any]], read: Callable[[dict[str, Any], str], MedicationFact]
) -> tuple[RecentMedication, ...]:
    """Completed prescriptions, completed dispenses and statements, each with its date (R8)."""
    found = []
    for res in resources:
        rtype, status = res.get("resourceType"), res.get("status")
        if _among(rtype, MEDICATION_ORDERS) and status == "completed":
            when = parse_date(res.get("authoredOn")) or parse_date(
                obj(obj(res, "dispenseRequest"), "validityPeriod").get("start"))
            source = "completed prescription"
        elif rtype == "MedicationDispense" and status == "completed":
            when, source = parse_date(res.get("whenHandedOver")), "dispensed"
        elif rtype == "MedicationStatement" and _among(status, CURRENT_STATEMENT | {"completed"}):
            period = obj(res, "effectivePeriod")
            when = None if status in CURRENT_STATEMENT else (
                parse_date(res.get("effectiveDateTime")) or parse_date(period.get("end"))
                or parse_date(period.get("start")) or parse_date(res.get("dateAsserted")))
            source = "medication statement"
        else:
            continue
        if when is None and not (rtype == "MedicationStatement" and status in CURRENT_STATEMENT):
            continue  # a past prescription with no date cannot be placed in any window
        found.append(RecentMedication(when, source, partial(read, res, "recent")))
    return tuple(found)


def _service_request(res: dict[str, Any], dialect: Dialect) -> ServiceRequestFact:
    return ServiceRequestFact(
        ref=reference_to(res),
        codings=dialect.codings(codings(res.get("code"))),
        text=concept_text(res.get("code")),
        status=string(res.get("status")),
        reason_codings=dialect.codings(codings(res.get("reasonCode"))),
        reason_text=concept_text(res.get("reasonCode")),
        details=tuple(t for d in objects(res.get("orderDetail")) if (t := concept_text(d))),
        category=dialect.codings(codings(res.get("category"))),
    )


@dataclass
class _Observations:
    latest_day: dict[str, tuple[ObservationFact, ...]]
    recorded_units: dict[str, frozenset[str]]


def _observations(resources: list[dict[str, Any]], wanted: frozenset[str], dialect: Dialect) -> _Observations:
    """Per LOINC code the knowledge uses: every observation of its latest day (in file order, so the
    first is "the latest"), and the units of its final results. Other codes are not read further
    (an EHR may send hundreds of vital signs that no rule looks at)."""
    latest: dict[str, list[ObservationFact]] = {}
    units: dict[str, set[str]] = {}
    for res in resources:
        if res.get("resourceType") != "Observation" or _among(res.get("status"), DEAD_OBSERVATION):
            continue
        if not has_code(res.get("code"), wanted):
            continue  # the common case, kept cheap: most observations are codes no rule reads
        coded = [c for c in codings(res.get("code")) if c[1] in wanted and dialect.system(c[0]) in (LOINC, "")]
        final = _among(res.get("status"), RESULT_STATUS)
        for obs in _observation(res, coded, dialect):
            if final and obs.value is not None:
                units.setdefault(obs.code, set()).update(obs.units)
            day = latest.get(obs.code)
            if day is None or (obs.when or date.min) > (day[0].when or date.min):
                latest[obs.code] = [obs]
            elif (obs.when or date.min) == (day[0].when or date.min):
                day.append(obs)
    return _Observations({c: tuple(d) for c, d in latest.items()}, {c: frozenset(u) for c, u in units.items()})


def _every_observation(resources: list[dict[str, Any]], codes: frozenset[str],
                       dialect: Dialect) -> tuple[ObservationFact, ...]:
    found: list[ObservationFact] = []
    for res in resources:
        if res.get("resourceType") != "Observation" or _among(res.get("status"), DEAD_OBSERVATION):
            continue
        if has_code(res.get("code"), codes):
            coded = [c for c in codings(res.get("code")) if c[1] in codes and dialect.system(c[0]) in (LOINC, "")]
            found += _observation(res, coded, dialect)
    return tuple(found)


def _observation(res: dict[str, Any], coded: list[Coding], dialect: Dialect) -> list[ObservationFact]:
    if not coded:
        return []
    value = dialect.codings(codings(res.get("valueCodeableConcept")))
    quantity = obj(res, "valueQuantity")
    ranges = objects(res.get("referenceRange"))
    high = number(obj(ranges[0], "high").get("value")) if ranges else None
    effective = next((v for v in (res.get("effectiveDateTime"), obj(res, "effectivePeriod").get("start"),
                                   res.get("issued")) if parse_date(v) is not None), None)
    when = parse_date(effective)
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
            unit_text=string(quantity.get("unit")) if quantity.get("code") else "",
            coded_value=tuple(c for _, c, _ in value),
            value_codings=value,
            comparator=string(quantity.get("comparator")),
            status=string(res.get("status")),
            at=_instant(effective),
        )
        for system, code, display in coded
    ]


def _instant(value: Any) -> datetime | None:
    """A FHIR dateTime with a time and a zone as an aware datetime; None for a date alone, a time
    with no zone, or anything malformed."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        found = datetime.fromisoformat(value)
    except ValueError:
        return None
    return found if found.tzinfo is not None else None
