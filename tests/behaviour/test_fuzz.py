"""Hostile input: whatever arrives, the answer is JSON and never a 5xx.

(a) hypothesis: random JSON, hook-shaped bodies with junk in every slot
    (wrong resource types in prefetch, random draftOrders entries, invalid
    dates, deep nesting, long arrays), valid fixtures with random sub-values
    replaced, random feedback, random bytes; posted to every service and to
    feedback through the Flask test client.
(b) schemathesis: positive and negative cases generated from docs/openapi.yaml,
    sent to the Flask app over WSGI; checks ``not_a_server_error``, that the content type is one
    the document declares for the answer, and that every error is JSON.
(c) explicit cases: invalid UTF-8, lone surrogates, NaN, 10,000-deep nesting,
    100,000 selections, a body over MAX_CONTENT_LENGTH, malformed dates in every
    date field of the prefetched and draft resources.

No network: every test runs inside a ``responses`` mock with no registered
URLs, so a fetch from a random ``fhirServer`` fails fast (as a FetchFailed).
Every request is counted; the totals (by status) are printed at the end of the
run as ``fuzz: ...`` and each test asserts it really sent requests.
"""
from __future__ import annotations

import base64
import copy
import io
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import responses
from helpers import FIXTURES, NOW, SERVICES, request_fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service import create_app

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "docs" / "openapi.yaml"
SERVICE_IDS = tuple(SERVICES.values())
SERVICE_PATH = {hook: f"/cds-services/{service}" for hook, service in SERVICES.items()}
HOOK_FIXTURES = sorted(str(p.relative_to(FIXTURES / "requests")) for p in (FIXTURES / "requests").glob("*/*.json"))
FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.large_base_example])

COUNTS: Counter[str] = Counter()  # "<test>" -> requests sent; "<test>:<status>" -> by status


# --------------------------------------------------------------------------- app, client, bookkeeping

@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    app = create_app({
        "TESTING": True,
        "AUTH_REQUIRED": False,
        "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.sqlite3'}",
        "CLOCK": lambda: NOW,
        "OPEN_FHIR_SERVERS": ["http://127.0.0.1:8081"],
        "CALL_BUDGET_SECONDS": 0.5,
        "FHIR_TIMEOUT_SECONDS": 0.2,
    })
    with responses.RequestsMock(assert_all_requests_are_fired=False):  # no network, ever
        yield app


@pytest.fixture(scope="module")
def fuzz_client(fuzz_app):
    return fuzz_app.test_client()


@pytest.fixture(scope="module", autouse=True)
def _report_counts(request):
    yield
    total = sum(v for k, v in COUNTS.items() if ":" not in k)
    five = sum(v for k, v in COUNTS.items() if ":5" in k)
    by_status = Counter()
    for key, value in COUNTS.items():
        if ":" in key:
            by_status[key.rsplit(":", 1)[1]] += value
    line = f"fuzz: {total} requests, {five} with a 5xx; by status {dict(sorted(by_status.items()))}; " \
           f"by test {dict(sorted((k, v) for k, v in COUNTS.items() if ':' not in k))}"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():  # straight to the terminal, also under -q
            print(f"\n{line}", file=sys.stderr)
    else:  # pragma: no cover
        print(line, file=sys.stderr)
    if os.environ.get("FUZZ_COUNTS_FILE"):
        Path(os.environ["FUZZ_COUNTS_FILE"]).write_text(json.dumps(dict(COUNTS), indent=1, sort_keys=True))


def _strict_json(data: bytes) -> Any:
    """Parse as RFC 8259 JSON: no NaN/Infinity, valid UTF-8."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"non-standard JSON constant {constant}")
    return json.loads(data.decode("utf-8"), parse_constant=refuse)


def check(response, test: str) -> Any:
    """Every answer: below 500, JSON, parseable as strict JSON; an error is an OperationOutcome."""
    COUNTS[test] += 1
    COUNTS[f"{test}:{response.status_code}"] += 1
    assert response.status_code < 500, response.get_data()[:2000]
    assert response.mimetype == "application/json", response.mimetype
    body = _strict_json(response.get_data())
    if response.status_code >= 400:
        assert body["resourceType"] == "OperationOutcome"
    return body


def post(client, path: str, body: Any) -> Any:
    """Post any Python value as JSON, with the deep nestings ``deep()`` stands for written out."""
    return client.post(path, data=encode(body), content_type="application/json")


# --------------------------------------------------------------------------- strategies

BAD_DATES = [
    "", " ", "2026", "2026-02-30", "2026-13-01", "2026-00-10", "0000-01-01", "0001-01-01", "9999-12-31",
    "10000-01-01", "-2026-01-01", "2026-1-1", "2026/11/23", "23.11.2026", "2026-11-23T25:61:61Z",
    "2026-11-23T12:00:00+25:00", "2026-11-23T12:00:00.99999999999999999999Z", "2026-11-23T12:00",
    "\u0662\u0660\u0662\u0666-\u0661\u0661-\u0662\u0663", "\uff12\uff10\uff12\uff16-11-23",
    "99999999999999999999-01-01", "2026-11-23\x00", "NaN", "today", "1e10",
]
NOT_STRINGS = [None, True, 0, -1, 20261123, 1.5, [], {}, ["2026-11-23"], {"start": "2026-11-23"}]
RESOURCE_TYPES = ["MedicationRequest", "MedicationOrder", "ServiceRequest", "NutritionOrder", "Condition",
                  "Observation", "Patient", "AllergyIntolerance", "OperationOutcome", "Bundle", "Medication",
                  "", "medicationrequest", "Unknown"]
FHIR_IDS = ["mcas-adult", "ms-lbp-adult", "no-condition-adult", "x", "a" * 64, "a" * 65, "..", "-", "ä", ""]

scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2 ** 80), max_value=2 ** 80)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
           | st.sampled_from(BAD_DATES) | st.sampled_from(RESOURCE_TYPES))
json_values = st.recursive(
    scalars,
    lambda children: (st.lists(children, max_size=6)
                      | st.dictionaries(st.text(max_size=12) | st.sampled_from(["resourceType", "entry", "resource",
                                                                                  "coding", "code", "system", "id"]),
                                        children, max_size=6)),
    max_leaves=40,
)
DEEP = re.compile(r'"@@DEEP-(\d+)-(array|object)@@"')


@st.composite
def deep(draw) -> str:
    """Arrays or objects nested 1..1200 deep (around Python's recursion limit).

    A placeholder string stands for the nesting until ``encode`` writes the JSON text, so
    neither the strategies nor json.dumps in the test recurse that deep."""
    return f"@@DEEP-{draw(st.integers(min_value=1, max_value=1200))}-{draw(st.sampled_from(['array', 'object']))}@@"


def _nested(match: re.Match[str]) -> str:
    depth = int(match[1])
    return "[" * depth + "1" + "]" * depth if match[2] == "array" else '{"a":' * depth + "1" + "}" * depth


def encode(body: Any) -> str:
    return DEEP.sub(_nested, json.dumps(body))


not_strings = st.sampled_from(NOT_STRINGS).map(copy.deepcopy)  # fresh lists and dicts: the mutations edit them
junk = json_values | not_strings | deep()
dates = st.sampled_from(BAD_DATES) | not_strings | st.dates().map(str) | st.text(max_size=12)


_CODE_TEXT = st.text(max_size=10)


def codeable(draw_codes=_CODE_TEXT):
    coding = st.fixed_dictionaries({}, optional={
        "system": st.sampled_from(["http://www.nlm.nih.gov/research/umls/rxnorm", "http://snomed.info/sct",
                                   "http://loinc.org", "http://hl7.org/fhir/sid/icd-10-cm", ""]) | junk,
        "code": st.sampled_from(["892582", "1594589", "1010600", "24700007", "109995007", "279039007",
                                 "21582-6", "D89.40", "G35", "M54.50"]) | draw_codes | junk,
        "display": st.text(max_size=20) | junk,
    })
    return st.fixed_dictionaries({}, optional={"coding": st.lists(coding, max_size=3) | coding | junk,
                                                "text": st.text(max_size=20) | junk}) | junk


@st.composite
def resource(draw, rtype: str | None = None) -> Any:
    """A FHIR-ish resource: of ``rtype`` mostly (when given), with junk in any field."""
    types = st.sampled_from(RESOURCE_TYPES) | junk
    rtype = draw(st.just(rtype) | st.just(rtype) | st.just(rtype) | types if rtype else types)
    fields = draw(st.fixed_dictionaries({}, optional={
        "id": st.sampled_from(FHIR_IDS) | junk,
        "status": st.sampled_from(["draft", "active", "on-hold", "completed", "entered-in-error", "final"]) | junk,
        "intent": st.just("order") | junk,
        "code": codeable(), "medicationCodeableConcept": codeable(), "medicationReference": junk,
        "clinicalStatus": codeable() | st.sampled_from(["active", "resolved"]),
        "verificationStatus": codeable() | st.sampled_from(["confirmed", "refuted", "provisional"]),
        "category": codeable() | st.lists(codeable(), max_size=2), "reasonCode": codeable(),
        "authoredOn": dates, "dateWritten": dates, "birthDate": dates, "onsetDateTime": dates,
        "onsetPeriod": st.fixed_dictionaries({"start": dates}) | junk, "recordedDate": dates,
        "abatementDateTime": dates, "effectiveDateTime": dates, "issued": dates,
        "effectivePeriod": st.fixed_dictionaries({"start": dates, "end": dates}) | junk,
        "valueQuantity": st.fixed_dictionaries({}, optional={"value": junk | st.floats(allow_nan=False),
                                                             "unit": junk, "code": junk}) | junk,
        "referenceRange": st.lists(st.fixed_dictionaries({}, optional={"low": junk, "high": junk}) | junk,
                                   max_size=2) | junk,
        "interpretation": codeable() | st.lists(codeable(), max_size=2),
        "dosageInstruction": st.lists(st.fixed_dictionaries({}, optional={
            "route": codeable(), "text": junk,
            "timing": st.fixed_dictionaries({}, optional={"repeat": st.fixed_dictionaries({}, optional={
                "frequency": junk, "period": junk, "periodUnit": junk,
                "boundsPeriod": st.fixed_dictionaries({}, optional={"start": dates, "end": dates}) | junk,
                "boundsDuration": junk}) | junk, "event": st.lists(dates, max_size=2) | junk}) | junk,
            "doseAndRate": st.lists(st.fixed_dictionaries({}, optional={
                "doseQuantity": st.fixed_dictionaries({}, optional={"value": junk, "unit": junk, "code": junk}),
                "doseRange": junk}) | junk, max_size=2) | junk,
        }) | junk, max_size=3) | junk,
        "dispenseRequest": st.fixed_dictionaries({}, optional={
            "validityPeriod": st.fixed_dictionaries({}, optional={"start": dates, "end": dates}) | junk,
            "expectedSupplyDuration": junk, "quantity": junk, "numberOfRepeatsAllowed": junk}) | junk,
        "reaction": st.lists(st.fixed_dictionaries({}, optional={"substance": codeable()}) | junk,
                             max_size=2) | junk,
        "subject": junk, "extra": junk,
    }))
    return {"resourceType": rtype, **fields}


@st.composite
def bundle(draw, rtype: str | None = None) -> Any:
    entries = st.lists(st.fixed_dictionaries({"resource": resource(rtype) | resource(rtype) | junk},
                                             optional={"search": junk, "fullUrl": junk}) | junk, max_size=5)
    body: dict[str, Any] = {"resourceType": draw(st.just("Bundle") | st.just("Bundle") | junk)}
    body.update(draw(st.fixed_dictionaries({}, optional={
        "type": st.just("searchset") | junk,
        "entry": entries | entries | entries | resource(rtype) | junk,
        "link": st.lists(st.fixed_dictionaries({"relation": st.just("next") | junk,
                                                "url": st.sampled_from(["http://127.0.0.1:8081/Condition?page=2",
                                                                        "https://evil.example.com/x", ""]) | junk}),
                         max_size=2) | junk,
    })))
    return body


PREFETCH_TYPES = {"patient": "Patient", "conditions": "Condition", "medications": "MedicationRequest",
                  "allergies": "AllergyIntolerance", "observations": "Observation"}


def prefetch_value(rtype: str | None) -> st.SearchStrategy:
    """An object or null (what the envelope allows), junk inside."""
    return (bundle(rtype) | bundle(rtype) | bundle(rtype) | resource(rtype) | st.none() | bundle()
            | st.dictionaries(st.text(max_size=8), junk, max_size=4))


prefetch = (st.fixed_dictionaries({"conditions": prefetch_value("Condition")},
                                  optional={k: prefetch_value(t) for k, t in PREFETCH_TYPES.items()
                                            if k != "conditions"} | {"other": prefetch_value(None)})
            | st.dictionaries(st.sampled_from(list(PREFETCH_TYPES)) | st.text(max_size=8), prefetch_value(None),
                              max_size=6))
extension = st.dictionaries(st.text(max_size=12), junk, max_size=4)


VALID_IDS = ["mcas-adult", "ms-lbp-adult", "no-condition-adult", "x", "a" * 64]


@st.composite
def hook_body(draw) -> tuple[str, Any]:
    """A body whose envelope passes the schema (mostly), with junk inside the resources it carries.

    One request in five also has one envelope member replaced by junk; envelope-level
    junk alone is what the random-JSON and schemathesis tests send.
    """
    hook = draw(st.sampled_from(list(SERVICES)))
    service = SERVICES[hook]
    selections = st.lists(st.sampled_from(["MedicationRequest/request-1", "ServiceRequest/x", "MedicationRequest/a",
                                           "MedicationOrder/request-1"]), min_size=1, max_size=4)
    draft = {"resourceType": "Bundle", **draw(st.fixed_dictionaries({}, optional={
        "type": st.just("collection") | junk,
        "entry": st.lists(st.fixed_dictionaries({"resource": resource("MedicationRequest") | resource("ServiceRequest")
                                                 | resource() | junk}) | junk, max_size=4) | resource() | junk,
    }))}
    context = {
        "patientId": draw(st.sampled_from(VALID_IDS)),
        "userId": draw(st.sampled_from(["Practitioner/p1", "PractitionerRole/r-1"])),
        **draw(st.fixed_dictionaries({}, optional={"encounterId": st.sampled_from(VALID_IDS), "extension": junk})),
    }
    if hook != "patient-view":
        context["draftOrders"] = draft
    if hook == "order-select":
        context["selections"] = draw(selections)
    body = {"hook": hook, "hookInstance": draw(st.uuids().map(str)),
            "context": context, "prefetch": draw(prefetch)}
    body.update(draw(st.fixed_dictionaries({}, optional={
        "fhirServer": st.sampled_from(["http://127.0.0.1:8081", "https://ehr.example.org/fhir",
                                       "http://127.0.0.1:8081/"]),
        "extension": extension,
    })))
    if "fhirServer" in body and draw(st.booleans()):
        body["fhirAuthorization"] = {"access_token": draw(st.text(min_size=1, max_size=8)), "token_type": "Bearer",
                                     "expires_in": 300, "scope": "patient/*.read", "subject": "cds"}
    if draw(st.integers(0, 4)) == 0:  # now and then, one envelope member is junk too
        where = draw(st.sampled_from(["hook", "hookInstance", "fhirServer", "fhirAuthorization", "prefetch", "context",
                                      "context.patientId", "context.userId", "context.selections",
                                      "context.draftOrders", "service"]))
        if where == "service":
            service = draw(st.sampled_from(SERVICE_IDS))
        elif where.startswith("context."):
            context[where.split(".", 1)[1]] = draw(junk)
        else:
            body[where] = draw(junk)
    return service, body


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, prefix + (index,))
    return found


def _replace(node: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = node
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return node


FIXTURE_CACHE = {name: request_fixture(name) for name in HOOK_FIXTURES}


@st.composite
def mutated_fixture(draw) -> tuple[str, Any]:
    """A valid fixture request with 1..6 random sub-values replaced (or deleted, or wrapped in a list)."""
    name = draw(st.sampled_from(HOOK_FIXTURES))
    body = copy.deepcopy(FIXTURE_CACHE[name])
    for _ in range(draw(st.integers(1, 6))):
        paths = _paths(body)
        path = draw(st.sampled_from(paths[1:] or paths))
        action = draw(st.sampled_from(["junk", "junk", "date", "delete", "wrap", "empty", "type", "deep"]))
        if action == "delete" and path:
            body = _replace(body, path, None, delete=True)
            continue
        current = body
        for step in path:
            current = current[step]
        body = _replace(body, path, _new_value(draw, action, current), delete=False)
    service = SERVICES.get(FIXTURE_CACHE[name]["hook"])
    return service, body


def _new_value(draw, action: str, current: Any) -> Any:
    """What replaces ``current`` for the action drawn (only that action's value is drawn)."""
    return {
        "junk": lambda: draw(junk),
        "date": lambda: draw(dates),
        "wrap": lambda: [copy.deepcopy(current)],
        "empty": lambda: type(current)() if isinstance(current, (dict, list, str)) else None,
        "type": lambda: draw(st.sampled_from(RESOURCE_TYPES)),
        "deep": lambda: draw(deep()),
        "delete": lambda: None,
    }[action]()


feedback_item = st.fixed_dictionaries({}, optional={
    "card": st.uuids().map(str) | st.uuids().map(lambda u: f"urn:uuid:{u}") | junk,
    "outcome": st.sampled_from(["accepted", "overridden", "dismissed"]) | junk,
    "outcomeTimestamp": st.sampled_from(["2026-11-23T12:00:00Z", "2026-11-23T12:00:00.5+01:00"])
    | st.sampled_from(BAD_DATES) | junk,
    "acceptedSuggestions": st.lists(st.fixed_dictionaries({"id": st.uuids().map(str) | junk}) | junk,
                                    max_size=3) | junk,
    "overrideReason": st.fixed_dictionaries({}, optional={
        "reason": st.fixed_dictionaries({"code": st.text(max_size=300) | junk},
                                        optional={"system": junk, "display": junk}) | junk,
        "userComment": st.text(max_size=50) | junk}) | junk,
}) | junk
feedback_body = st.fixed_dictionaries({"feedback": st.lists(feedback_item, max_size=5) | junk},
                                      optional={"extra": junk}) | junk


# --------------------------------------------------------------------------- (a) hypothesis

@FUZZ
@given(service=st.sampled_from(SERVICE_IDS + ("no-such-service",)), body=json_values | deep())
def test_random_json_to_every_service_and_feedback(fuzz_client, service, body):
    check(post(fuzz_client, f"/cds-services/{service}", body), "random-json")
    check(post(fuzz_client, f"/cds-services/{service}/feedback", body), "random-json")


@settings(FUZZ, max_examples=500)
@given(case=hook_body())
def test_hook_shaped_bodies_with_junk_everywhere(fuzz_client, case):
    service, body = case
    check(post(fuzz_client, f"/cds-services/{service}", body), "hook-shaped")


@settings(FUZZ, max_examples=600)
@given(case=mutated_fixture())
def test_valid_fixtures_with_random_sub_values_replaced(fuzz_client, case):
    service, body = case
    check(post(fuzz_client, f"/cds-services/{service}", body), "mutated-fixture")


@FUZZ
@given(service=st.sampled_from(SERVICE_IDS), body=feedback_body)
def test_feedback_with_junk(fuzz_client, service, body):
    check(post(fuzz_client, f"/cds-services/{service}/feedback", body), "feedback")


@settings(FUZZ, max_examples=80)
@given(service=st.sampled_from(SERVICE_IDS), raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | json_values.map(lambda v: json.dumps(v).encode()[: len(json.dumps(v)) // 2]))
def test_random_bytes(fuzz_client, service, raw):
    check(fuzz_client.post(f"/cds-services/{service}", data=raw, content_type="application/json"), "random-bytes")
    check(fuzz_client.post(f"/cds-services/{service}/feedback", data=raw, content_type="application/json"),
          "random-bytes")


PROPERTY_TESTS = {
    "test_random_json_to_every_service_and_feedback": "random-json",
    "test_hook_shaped_bodies_with_junk_everywhere": "hook-shaped",
    "test_valid_fixtures_with_random_sub_values_replaced": "mutated-fixture",
    "test_feedback_with_junk": "feedback",
    "test_random_bytes": "random-bytes",
    "test_random_authorization_and_request_id_headers_are_401": "auth-headers",
}


b64 = st.binary(max_size=60).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode())
jose_json = st.dictionaries(st.sampled_from(["alg", "typ", "kid", "jku", "iss", "aud", "exp", "iat", "jti", "crit"])
                            | st.text(max_size=5), scalars | st.sampled_from(["ES384", "JWT", "none", "HS256"]),
                            max_size=6) | json_values
jose_part = jose_json.map(lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=").decode())
latin1 = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)


@pytest.fixture(scope="module")
def secure_client(tmp_path_factory):
    app = create_app({"TESTING": True, "AUTH_REQUIRED": True, "CLOCK": lambda: NOW,
                      "DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('fuzz-auth') / 'auth.sqlite3'}",
                      "TRUSTED_ISSUERS": {"https://ehr.example.org": {"keys": [{
                          "kty": "EC", "crv": "P-384", "kid": "k1", "alg": "ES384",
                          "x": "dw_JGR8nB2I6XveNxUOl2qk699ZPLM2nYI5STSdiEl9avAkrm3CkfYMbrrjr8laB",
                          "y": "Sm3mLE-n1zYNla_aiE3cb3nZsL51RbC7ysw3q8aJLxGm-hx79RPMYpITDjp7kgzy"}]}}})
    with responses.RequestsMock(assert_all_requests_are_fired=False):  # a jku or JWKS fetch goes nowhere
        yield app.test_client()


@FUZZ
@given(path=st.sampled_from(["/cds-services", "/cds-services/back-pain-order-sign",
                             "/cds-services/back-pain-order-sign/feedback"]),
       authorization=st.one_of(
           latin1,
           st.tuples(jose_part, jose_part, b64).map(lambda t: "Bearer " + ".".join(t)),
           st.tuples(jose_part, jose_part).map(lambda t: "Bearer " + ".".join(t) + "."),
           st.lists(b64 | jose_part, max_size=6).map(lambda parts: "Bearer " + ".".join(parts)),
           latin1.map(lambda t: "bearer " + t)),
       request_id=latin1)
def test_random_authorization_and_request_id_headers_are_401(secure_client, path, authorization, request_id):
    headers = {"Authorization": authorization, "X-Request-ID": request_id}
    if path == "/cds-services":
        response = secure_client.get(path, headers=headers)
    else:
        response = secure_client.post(path, data=b"{}", content_type="application/json", headers=headers)
    check(response, "auth-headers")
    assert response.status_code == 401
    rid = response.headers["X-Request-ID"]
    assert 0 < len(rid) <= 64 and rid.replace("-", "").isalnum()


def test_counts_were_recorded(request):
    """Runs after the property tests in this module: those selected really sent requests."""
    selected = {item.originalname for item in request.session.items if item.module is request.module}
    for test, name in PROPERTY_TESTS.items():
        if test in selected:
            assert COUNTS[name] >= 20, (name, COUNTS[name])
    assert not any(k.rsplit(":", 1)[1].startswith("5") for k in COUNTS if ":" in k)


# --------------------------------------------------------------------------- (b) schemathesis

import schemathesis  # noqa: E402
from schemathesis.checks import content_type_conformance, not_a_server_error  # noqa: E402

API = schemathesis.openapi.from_path(OPENAPI)


@API.parametrize()
@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
def test_schemathesis_no_server_error_and_json(case, fuzz_app):
    response = case.call(app=fuzz_app)
    COUNTS["schemathesis"] += 1
    COUNTS[f"schemathesis:{response.status_code}"] += 1
    # every answer has a content type the OpenAPI document declares for it (JSON, or the icon's SVG,
    # the rule pages' HTML, the Prometheus text); an error is always JSON (below)
    case.validate_response(response, checks=[not_a_server_error, content_type_conformance])
    if response.status_code >= 400 and case.method.upper() not in ("OPTIONS", "HEAD"):  # preflights, HEAD: no body
        content_type = response.headers.get("content-type") or [""]  # schemathesis: lower-case names, lists
        assert content_type[0].split(";")[0].strip() == "application/json", (case.method, response.status_code)
    if response.status_code >= 400 and case.method.upper() not in ("OPTIONS", "HEAD"):
        assert _strict_json(response.content)["resourceType"] == "OperationOutcome"


# --------------------------------------------------------------------------- (c) explicit cases

@pytest.mark.parametrize("path", ["/cds-services/back-pain-order-sign", "/cds-services/back-pain-order-sign/feedback"])
@pytest.mark.parametrize("raw", [
    b'{"hook": "\xff\xfe"}', b"\xc3\x28", b"\xed\xa0\x80", b"\xef\xbb\xbf{}", b"\x00", b"",
    b'{"hook": "order-sign", "hookInstance": "\\ud800", "context": {}}',
], ids=["ff-fe", "bad-continuation", "encoded-surrogate", "bom", "nul", "empty", "escaped-lone-surrogate"])
def test_invalid_utf8_and_odd_bytes_are_4xx(fuzz_client, path, raw):
    response = fuzz_client.post(path, data=raw, content_type="application/json")
    check(response, "explicit")
    assert 400 <= response.status_code < 500


@pytest.mark.parametrize("hook_file", ["order-sign/mcas-adult--three-drafts.json",
                                       "order-select/mcas-adult--succinylcholine.json",
                                       "patient-view/mcas-adult--chart-open.json"])
def test_lone_surrogates_in_strings_that_are_stored_are_400(fuzz_client, hook_file):
    """'\\ud800' is a legal JSON escape but not a Unicode character: it cannot be stored or logged as UTF-8."""
    body = request_fixture(hook_file)
    raw = json.dumps(body).replace(body["hookInstance"], "\\ud800" + body["hookInstance"][6:])
    response = fuzz_client.post(SERVICE_PATH[body["hook"]], data=raw, content_type="application/json")
    check(response, "explicit")
    assert response.status_code == 400


def test_lone_surrogates_in_feedback_are_400(fuzz_client):
    raw = json.dumps({"feedback": [{"card": "12345678-1234-1234-1234-123456789012", "outcome": "overridden",
                                    "outcomeTimestamp": "2026-11-23T12:00:00Z",
                                    "overrideReason": {"reason": {"code": "x\ud800"}, "userComment": "\udfff"}}]})
    response = fuzz_client.post("/cds-services/back-pain-order-sign/feedback", data=raw,
                                content_type="application/json")
    check(response, "explicit")
    assert response.status_code == 400


def test_valid_surrogate_pairs_are_fine(fuzz_client):
    body = request_fixture("order-sign/mcas-adult--three-drafts.json")
    body["context"]["draftOrders"]["entry"][0]["resource"]["note"] = [{"text": "\U0001F600 ok"}]
    raw = json.dumps(body)  # ensure_ascii: the emoji goes out as a \\ud83d\\ude00 pair
    assert "\\ud83d\\ude00" in raw
    response = fuzz_client.post("/cds-services/back-pain-order-sign", data=raw, content_type="application/json")
    check(response, "explicit")
    assert response.status_code == 200


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_400(fuzz_client, constant):
    body = request_fixture("order-sign/mcas-adult--three-drafts.json")
    raw = json.dumps(body).replace('"frequency": 4', f'"frequency": {constant}')
    assert constant in raw
    response = fuzz_client.post("/cds-services/back-pain-order-sign", data=raw, content_type="application/json")
    check(response, "explicit")
    assert response.status_code == 400


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1e-999", "123456789012345678901234567890", "0.0", "-0"])
@pytest.mark.parametrize("field", ['"frequency": 4', '"period": 1', '"value": 1', '"value": 5'])
def test_extreme_numbers_in_doses_are_not_5xx(fuzz_client, number, field):
    body = request_fixture("order-sign/mcas-adult--three-drafts.json")
    raw = json.dumps(body).replace(field, field.split(":")[0] + ": " + number)
    response = fuzz_client.post("/cds-services/back-pain-order-sign", data=raw, content_type="application/json")
    check(response, "explicit")


@pytest.mark.parametrize("opener, closer", [(b"[", b"]"), (b'{"a":', b"}")], ids=["array", "object"])
@pytest.mark.parametrize("depth", [10_000, 100_000])
@pytest.mark.parametrize("path", ["/cds-services/back-pain-order-sign", "/cds-services/back-pain-order-sign/feedback"])
def test_very_deep_nesting_is_400_not_500(fuzz_client, opener, closer, depth, path):
    raw = opener * depth + b"1" + closer * depth
    response = fuzz_client.post(path, data=raw, content_type="application/json")
    check(response, "explicit")
    assert response.status_code == 400


@pytest.mark.parametrize("depth", [50, 500, 900, 960, 990, 1000, 1200, 10_000])
@pytest.mark.parametrize("where", ["extension", "prefetch", "draft", "draft-resource", "selections", "context"])
def test_deep_nesting_inside_a_valid_request_is_not_5xx(fuzz_client, depth, where):
    body = request_fixture("order-sign/mcas-adult--three-drafts.json")
    marker = "DEEP_MARKER_VALUE"
    if where == "extension":
        body["extension"] = marker
    elif where == "prefetch":
        body["prefetch"]["conditions"]["entry"][0]["resource"]["code"] = marker
    elif where == "draft":
        body["context"]["draftOrders"]["entry"] = marker
    elif where == "draft-resource":
        body["context"]["draftOrders"]["entry"][0]["resource"]["dosageInstruction"] = marker
    elif where == "selections":
        body["context"]["selections"] = marker
    else:
        body["context"]["extension"] = marker
    raw = json.dumps(body).replace(f'"{marker}"', "[" * depth + "1" + "]" * depth)
    response = fuzz_client.post("/cds-services/back-pain-order-sign", data=raw, content_type="application/json")
    check(response, "explicit")


def test_a_hundred_thousand_selections(fuzz_client):
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    body["context"]["selections"] = [f"MedicationRequest/r{i}" for i in range(100_000)]
    response = post(fuzz_client, "/cds-services/back-pain-order-select", body)
    check(response, "explicit")
    assert response.status_code in (200, 400)


def test_a_hundred_thousand_junk_selections(fuzz_client):
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    body["context"]["selections"] = [{"x": i} for i in range(100_000)]
    response = post(fuzz_client, "/cds-services/back-pain-order-select", body)
    check(response, "explicit")
    assert response.status_code == 400
    assert len(response.get_data()) < 10_000  # the error does not echo the array back


def test_a_hundred_thousand_draft_entries(fuzz_client):
    body = request_fixture("order-sign/mcas-adult--three-drafts.json")
    body["context"]["draftOrders"]["entry"] = [{"resource": {"resourceType": "NutritionOrder"}}] * 100_000
    check(post(fuzz_client, "/cds-services/back-pain-order-sign", body), "explicit")


def test_a_hundred_thousand_feedback_items(fuzz_client):
    """Over the schema's maxItems (100); small items, so the body stays under MAX_CONTENT_LENGTH."""
    response = post(fuzz_client, "/cds-services/back-pain-order-sign/feedback", {"feedback": [{}] * 100_000})
    check(response, "explicit")
    assert response.status_code == 400
    assert len(response.get_data()) < 10_000  # the error does not echo the array back


@pytest.mark.parametrize("path", ["/cds-services/back-pain-order-sign", "/cds-services/back-pain-order-sign/feedback",
                                  "/cds-services/no-such-service"])
def test_body_over_max_content_length_is_413(fuzz_app, fuzz_client, path):
    limit = fuzz_app.config["MAX_CONTENT_LENGTH"]
    raw = b'{"hook": "' + b"x" * limit + b'"}'
    response = fuzz_client.post(path, data=raw, content_type="application/json")
    check(response, "explicit")
    # an unknown service is refused (404) before its body is read
    assert response.status_code in ({404, 413} if "no-such" in path else {413})


def test_body_over_max_content_length_without_content_length_is_413(fuzz_app, fuzz_client):
    """A chunked upload: no Content-Length to refuse on, the size is found while reading."""
    limit = fuzz_app.config["MAX_CONTENT_LENGTH"]
    raw = b'{"hook": "' + b"x" * limit + b'"}'
    response = fuzz_client.post("/cds-services/back-pain-order-sign", input_stream=io.BytesIO(raw),
                                content_type="application/json", headers={"Transfer-Encoding": "chunked"},
                                environ_overrides={"wsgi.input_terminated": True})
    check(response, "explicit")
    assert response.status_code == 413


DATE_FIELDS = {
    "MedicationRequest": [("authoredOn",), ("dateWritten",), ("dispenseRequest", "validityPeriod", "start"),
                          ("dispenseRequest", "validityPeriod", "end"),
                          ("dosageInstruction", 0, "timing", "repeat", "boundsPeriod", "start"),
                          ("dosageInstruction", 0, "timing", "repeat", "boundsPeriod", "end"),
                          ("dosageInstruction", 0, "timing", "event", 0)],
    "Condition": [("onsetDateTime",), ("onsetPeriod", "start"), ("onsetPeriod", "end"), ("recordedDate",),
                  ("abatementDateTime",), ("abatementPeriod", "start")],
    "Observation": [("effectiveDateTime",), ("effectivePeriod", "start"), ("effectivePeriod", "end"),
                    ("effectiveInstant",), ("issued",)],
    "Patient": [("birthDate",), ("deceasedDateTime",)],
    "AllergyIntolerance": [("onsetDateTime",), ("recordedDate",), ("lastOccurrence",)],
}
PERIOD_FIELDS = {"onsetPeriod", "effectivePeriod", "abatementPeriod", "validityPeriod", "boundsPeriod"}


def _set_path(resource: dict, path: tuple, value: Any) -> None:
    node: Any = resource
    for step, nxt in zip(path, path[1:], strict=False):  # each step with the one after it
        if isinstance(step, int):
            while len(node) <= step:
                node.append({} if not isinstance(nxt, int) else [])
            node = node[step]
        else:
            if not isinstance(node.get(step), (dict, list)):
                node[step] = [] if isinstance(nxt, int) else {}
            node = node[step]
    last = path[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value


def _resources(body: dict) -> list[dict]:
    found = []
    for value in list(body.get("prefetch", {}).values()) + [body["context"].get("draftOrders")]:
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            found += [e["resource"] for e in value.get("entry", []) if isinstance(e.get("resource"), dict)]
        elif isinstance(value, dict):
            found.append(value)
    return found


def _add_missing_resources(body: dict) -> None:
    """Make sure each resource type with date fields is present in the prefetch at least once."""
    present = {r.get("resourceType") for r in _resources(body)}
    key_of = {"Condition": "conditions", "Observation": "observations", "MedicationRequest": "medications",
              "AllergyIntolerance": "allergies"}
    for rtype, key in key_of.items():
        if rtype not in present:
            bundle = body["prefetch"].setdefault(key, {"resourceType": "Bundle", "type": "searchset", "entry": []})
            if isinstance(bundle, dict):
                bundle.setdefault("entry", []).append({"resource": {
                    "resourceType": rtype, "id": "added", "status": "active",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "21582-6"}]}}})


@pytest.mark.parametrize("bad", BAD_DATES + NOT_STRINGS, ids=lambda v: repr(v)[:30])
@pytest.mark.parametrize("hook_file", ["order-sign/mcas-adult--three-drafts.json",
                                       "patient-view/ms-lbp-adult--chart-open.json",
                                       "patient-view/mcas-ms-older-adult--chart-open.json"])
def test_malformed_dates_in_every_date_field(fuzz_client, hook_file, bad):
    body = request_fixture(hook_file)
    _add_missing_resources(body)
    for res in _resources(body):
        for path in DATE_FIELDS.get(res.get("resourceType"), []):
            _set_path(res, path, copy.deepcopy(bad))
    response = post(fuzz_client, SERVICE_PATH[body["hook"]], body)
    check(response, "explicit")
    assert response.status_code == 200 or 400 <= response.status_code < 500


@pytest.mark.parametrize("bad", NOT_STRINGS[:6] + ["2026-11-23", "x"], ids=lambda v: repr(v)[:30])
@pytest.mark.parametrize("hook_file", ["order-sign/mcas-adult--three-drafts.json",
                                       "patient-view/ms-lbp-adult--chart-open.json",
                                       "patient-view/mcas-ms-older-adult--chart-open.json"])
def test_periods_that_are_not_objects(fuzz_client, hook_file, bad):
    """onsetPeriod, effectivePeriod, validityPeriod... as a string, number, list or null."""
    body = request_fixture(hook_file)
    _add_missing_resources(body)
    for res in _resources(body):
        for path in DATE_FIELDS.get(res.get("resourceType"), []):
            for depth, step in enumerate(path):
                if step in PERIOD_FIELDS:
                    _set_path(res, path[: depth + 1], copy.deepcopy(bad))
                    break
    response = post(fuzz_client, SERVICE_PATH[body["hook"]], body)
    check(response, "explicit")
    assert response.status_code == 200 or 400 <= response.status_code < 500


@pytest.mark.parametrize("hook_file", HOOK_FIXTURES)
@pytest.mark.parametrize("wrong", ["Patient", "OperationOutcome", "Bundle-of-wrong", "list", "string"])
def test_prefetch_of_the_wrong_resource_types(fuzz_client, hook_file, wrong):
    body = request_fixture(hook_file)
    others = list(_resources(body))
    for key in list(body.get("prefetch", {})):
        if wrong == "Patient":
            body["prefetch"][key] = {"resourceType": "Patient", "id": "p", "birthDate": "2026-02-30"}
        elif wrong == "OperationOutcome":
            body["prefetch"][key] = {"resourceType": "OperationOutcome", "issue": []}
        elif wrong == "Bundle-of-wrong":  # every resource moved to a key where it does not belong
            body["prefetch"][key] = {"resourceType": "Bundle", "entry": [{"resource": r} for r in others]}
        elif wrong == "list":
            body["prefetch"][key] = [{"resourceType": "Bundle"}]
        else:
            body["prefetch"][key] = "Bundle"
    response = post(fuzz_client, SERVICE_PATH[body["hook"]], body)
    check(response, "explicit")


def test_explicit_cases_sent_requests(request):
    selected = [item for item in request.session.items if item.module is request.module]
    if len(selected) > 300:  # the whole module ran
        assert COUNTS["explicit"] > 300
