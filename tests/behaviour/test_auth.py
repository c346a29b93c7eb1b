"""Client JWTs per CDS Hooks 2.0 ("Trusting CDS Clients"): each attack refused."""
from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from helpers import request_fixture

from cds_service import create_app

ISSUER = "https://ehr.example.org"
JWKS_URL = "https://ehr.example.org/.well-known/jwks.json"
BASE = "http://localhost"
EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = ec.generate_private_key(ec.SECP384R1())


def _jwk(key, kid: str, alg: str) -> dict:
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


JWKS = {"keys": [_jwk(EC_KEY, "ec-1", "ES384"), _jwk(RSA_KEY, "rsa-1", "RS384")]}


def token(aud: str = f"{BASE}/cds-services", *, key=EC_KEY, alg="ES384", kid="ec-1", typ="JWT",
          iss=ISSUER, exp_in=300, iat_offset=0, jti=None, extra_headers=None, drop=()) -> str:
    now = int(time.time())
    claims = {"iss": iss, "aud": aud, "exp": now + exp_in, "iat": now + iat_offset, "jti": jti or str(uuid.uuid4())}
    for name in drop:
        claims.pop(name)
    headers = {"typ": typ, **({"kid": kid} if kid else {}), **(extra_headers or {})}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


@pytest.fixture
def secure(app_config):
    config = {**app_config, "AUTH_REQUIRED": True, "TRUSTED_ISSUERS": {ISSUER: {"jwks_uri": JWKS_URL, **JWKS}}}
    return create_app(config).test_client()


def _get(client, bearer: str | None):
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return client.get("/cds-services", headers=headers)


def test_valid_es384_and_rs384_tokens_are_accepted(secure):
    assert _get(secure, token()).status_code == 200
    assert _get(secure, token(key=RSA_KEY, alg="RS384", kid="rsa-1")).status_code == 200


def test_aud_may_be_an_array_containing_the_endpoint(secure):
    assert _get(secure, token(aud=[f"{BASE}/cds-services", "https://other"])).status_code == 200


def _hs256() -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": f"{BASE}/cds-services", "exp": now + 60, "iat": now, "jti": "x"},
                      "a-shared-secret-of-enough-length-32b", algorithm="HS256", headers={"kid": "ec-1"})


def _alg_none() -> str:
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT", "kid": "ec-1"}).encode())
    now = int(time.time())
    body = jwt.utils.base64url_encode(json.dumps({"iss": ISSUER, "aud": f"{BASE}/cds-services",
                                                  "exp": now + 60, "iat": now, "jti": "n"}).encode())
    return f"{header.decode()}.{body.decode()}."


ATTACKS = {
    "no token": None,
    "not a jwt": "abc.def",
    "alg none": _alg_none(),
    "alg HS256": _hs256(),
    "typ not JWT": token(typ="at+jwt"),
    "kid missing": token(kid=None),
    "kid unknown": token(kid="nope"),
    "bad signature": token(key=OTHER_KEY),
    "issuer not trusted": token(iss="https://evil.example.com"),
    "jku not allow-listed": token(extra_headers={"jku": "https://evil.example.com/jwks.json"}),
    "aud other endpoint": token(aud=f"{BASE}/cds-services/back-pain-order-select"),
    "expired beyond skew": token(exp_in=-120),
    "issued in the future": token(iat_offset=600),
    "no jti": token(drop=("jti",)),
    "lifetime over an hour": token(exp_in=7200),
}


CAUSES = {  # what the 401 says, for an informaticist to act on
    "no token": "no bearer token",
    "not a jwt": "not a well-formed JWT",
    "alg none": "algorithm 'none' is not allowed",
    "alg HS256": "algorithm 'HS256' is not allowed",
    "typ not JWT": "typ 'at+jwt' is not JWT",
    "kid missing": "names no key (kid)",
    "kid unknown": "unknown key: kid 'nope' is not a key of issuer 'https://ehr.example.org'",
    "bad signature": "signature does not verify",
    "issuer not trusted": "unknown issuer: 'https://evil.example.com' is not a trusted issuer",
    "jku not allow-listed": "jku is not the JWKS URL allow-listed",
    "aud other endpoint": "audience mismatch",
    "expired beyond skew": "expired: the token expired at",
    "issued in the future": "not yet valid",
    "no jti": "required claim jti",
    "lifetime over an hour": "lifetime (exp - iat) is over one hour",
}


@pytest.mark.parametrize("name", ATTACKS)
@responses.activate  # an unknown kid may refetch the JWKS: answer with the same keys
def test_attack_is_refused_with_401_naming_its_cause_but_not_the_token(secure, name):
    responses.get(JWKS_URL, json=JWKS)
    response = _get(secure, ATTACKS[name])
    assert response.status_code == 401
    said = response.get_json()["issue"][0]["diagnostics"]
    assert said.startswith("Authentication failed: ") and CAUSES[name] in said
    challenge = response.headers["WWW-Authenticate"]
    if ATTACKS[name] is None:
        assert challenge == 'Bearer realm="cds-service"'  # RFC 6750: no error code without a token
    else:
        assert challenge.startswith('Bearer realm="cds-service", error="invalid_token", error_description="')
        assert CAUSES[name] in challenge
        for part in ATTACKS[name].split("."):  # no part of the token, not even its signature
            assert len(part) < 8 or part not in said + challenge


def test_expiry_within_60_seconds_of_skew_is_accepted(secure):
    assert _get(secure, token(exp_in=-30)).status_code == 200


def test_replayed_jti_is_refused(secure):
    once = token()
    assert _get(secure, once).status_code == 200
    assert _get(secure, once).status_code == 401


def test_every_endpoint_needs_a_token_bound_to_its_own_url(secure):
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    url = f"{BASE}/cds-services/back-pain-order-select"
    assert secure.post("/cds-services/back-pain-order-select", json=body).status_code == 401
    ok = secure.post("/cds-services/back-pain-order-select", json=body, headers={"Authorization": f"Bearer {token(url)}"})
    assert ok.status_code == 200
    feedback = {"feedback": [{"card": ok.get_json()["cards"][0]["uuid"], "outcome": "overridden",
                              "outcomeTimestamp": "2026-11-23T12:00:00Z"}]}
    assert secure.post("/cds-services/back-pain-order-select/feedback", json=feedback,
                       headers={"Authorization": f"Bearer {token(url)}"}).status_code == 401
    assert secure.post("/cds-services/back-pain-order-select/feedback", json=feedback,
                       headers={"Authorization": f"Bearer {token(url + '/feedback')}"}).status_code == 200


def test_a_route_added_to_the_cds_blueprint_is_protected_without_any_list(app_config, monkeypatch):
    from cds_service.web import api

    # A fresh registration of the module-level blueprint, undone after the test.
    monkeypatch.setattr(api.cds, "_got_registered_once", False)
    monkeypatch.setattr(api.cds, "deferred_functions", list(api.cds.deferred_functions))
    api.cds.add_url_rule("/cds-services/new-route", "new_route", lambda: {"secret": "data"})
    config = {**app_config, "AUTH_REQUIRED": True, "TRUSTED_ISSUERS": {ISSUER: {"jwks_uri": JWKS_URL, **JWKS}}}
    client = create_app(config).test_client()
    assert client.get("/cds-services/new-route").status_code == 401
    ok = client.get("/cds-services/new-route", headers={"Authorization": f"Bearer {token(BASE + '/cds-services/new-route')}"})
    assert ok.status_code == 200 and ok.get_json() == {"secret": "data"}
    preflight = client.options("/cds-services/new-route", headers={
        "Origin": "https://sandbox.cds-hooks.org", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200
    assert client.get("/healthz").status_code == 200  # ops routes stay open


def test_public_base_url_sets_the_expected_audience(app_config):
    config = {**app_config, "AUTH_REQUIRED": True, "PUBLIC_BASE_URL": "https://cds.hospital.example/",
              "TRUSTED_ISSUERS": {ISSUER: JWKS}}
    client = create_app(config).test_client()
    assert _get(client, token()).status_code == 401
    assert _get(client, token("https://cds.hospital.example/cds-services")).status_code == 200


@responses.activate
def test_jwks_url_is_fetched_cached_and_not_hammered_on_unknown_kids(app_config):
    responses.get(JWKS_URL, json=JWKS)
    client = create_app({**app_config, "AUTH_REQUIRED": True, "JWKS_WAIT_SECONDS": 5,
                         "TRUSTED_ISSUERS": {ISSUER: JWKS_URL}}).test_client()
    assert _get(client, token()).status_code == 200
    assert _get(client, token()).status_code == 200
    for _ in range(3):
        assert _get(client, token(kid="rotated-away")).status_code == 401
    assert len(responses.calls) == 1  # fetched once; unknown kids within a minute do not refetch


def test_auth_is_required_by_default_also_when_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("CDS_AUTH_REQUIRED", raising=False)
    client = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"}).test_client()
    assert client.get("/cds-services").status_code == 401


def test_development_mode_trusts_the_sandbox_issuer_only_there(app_config):
    from cds_service.settings import SANDBOX_ISSUER

    dev = create_app({**app_config, "AUTH_REQUIRED": True, "DEVELOPMENT": True})
    prod = create_app({**app_config, "AUTH_REQUIRED": True})
    assert SANDBOX_ISSUER in dev.config["TRUSTED_ISSUERS"]
    assert SANDBOX_ISSUER not in prod.config["TRUSTED_ISSUERS"]


def test_an_audience_mismatch_names_the_audience_received_and_those_accepted(app_config):
    """The sandbox opened at localhost while the service knows only 127.0.0.1: the 401 says so."""
    config = {**app_config, "AUTH_REQUIRED": True, "PUBLIC_BASE_URL": "http://127.0.0.1:8080",
              "TRUSTED_ISSUERS": {ISSUER: JWKS}}
    client = create_app(config).test_client()
    response = _get(client, token("http://localhost:8080/cds-services"))
    assert response.status_code == 401
    for said in (response.get_json()["issue"][0]["diagnostics"], response.headers["WWW-Authenticate"]):
        assert "audience mismatch" in said
        assert "'http://localhost:8080/cds-services'" in said  # received
        assert "http://127.0.0.1:8080/cds-services" in said  # accepted
    # Both names configured, as README and SECURITY.md show: both work.
    both = create_app({**config, "PUBLIC_BASE_URL": "http://127.0.0.1:8080,http://localhost:8080"}).test_client()
    assert _get(both, token("http://localhost:8080/cds-services")).status_code == 200
    assert _get(both, token("http://127.0.0.1:8080/cds-services")).status_code == 200


def test_the_cause_of_a_401_is_logged_without_the_token(app_config, caplog):
    client = create_app({**app_config, "AUTH_REQUIRED": True, "TRUSTED_ISSUERS": {ISSUER: JWKS}}).test_client()
    expired = token(exp_in=-120)
    with caplog.at_level("WARNING"):
        assert _get(client, expired).status_code == 401
    reasons = [getattr(r, "reason", "") for r in caplog.records if r.getMessage() == "authentication failed"]
    assert reasons and reasons[0].startswith("expired: the token expired at")
    assert expired.split(".")[2] not in caplog.text


BROKEN_KEY = {"kty": "EC", "crv": "P-384", "kid": "broken", "x": "AAAA", "y": "AAAA"}  # coordinates too short


@responses.activate
def test_a_malformed_key_in_a_fetched_jwks_is_a_401_not_a_500_and_spares_the_others(app_config):
    responses.get(JWKS_URL, json={"keys": [BROKEN_KEY, *JWKS["keys"]]})
    client = create_app({**app_config, "AUTH_REQUIRED": True, "JWKS_WAIT_SECONDS": 5,
                         "TRUSTED_ISSUERS": {ISSUER: JWKS_URL}}).test_client()
    refused = _get(client, token(kid="broken"))
    assert refused.status_code == 401
    assert "unknown key" in refused.get_json()["issue"][0]["diagnostics"]
    assert _get(client, token()).status_code == 200  # the well-formed keys of the same set still verify


@responses.activate
def test_a_jwks_of_only_malformed_keys_is_a_401(app_config):
    responses.get(JWKS_URL, json={"keys": [BROKEN_KEY]})
    client = create_app({**app_config, "AUTH_REQUIRED": True, "JWKS_WAIT_SECONDS": 5,
                         "TRUSTED_ISSUERS": {ISSUER: JWKS_URL}}).test_client()
    assert _get(client, token(kid="broken")).status_code == 401


def test_a_malformed_inline_key_stops_start_up_naming_the_setting(app_config):
    from cds_service.errors import SettingsInvalid

    with pytest.raises(SettingsInvalid, match="CDS_TRUSTED_ISSUERS.*broken"):
        create_app({**app_config, "AUTH_REQUIRED": True, "TRUSTED_ISSUERS": {ISSUER: {"keys": [BROKEN_KEY]}}})


@responses.activate
def test_pinned_keys_survive_a_refetch_caused_by_an_unknown_kid(app_config):
    """An unsigned request with an unknown kid makes the service read the issuer's JWKS URL; what
    it answers (here: another key only) must not replace the keys pinned in the configuration."""
    responses.get(JWKS_URL, json={"keys": [_jwk(OTHER_KEY, "other-1", "ES384")]})
    client = create_app({**app_config, "AUTH_REQUIRED": True, "JWKS_WAIT_SECONDS": 5,
                         "TRUSTED_ISSUERS": {ISSUER: {"jwks_uri": JWKS_URL, **JWKS}}}).test_client()
    assert _get(client, "e30.e30.x").status_code == 401  # garbage: no refetch
    assert _get(client, token(key=OTHER_KEY, kid="never-seen")).status_code == 401
    assert len(responses.calls) == 1  # the unknown kid did cause a fetch
    assert _get(client, token()).status_code == 200  # the pinned EC key still verifies
    assert _get(client, token(key=RSA_KEY, alg="RS384", kid="rsa-1")).status_code == 200
    assert _get(client, token(key=OTHER_KEY, kid="other-1")).status_code == 200  # and the fetched one too


@responses.activate
def test_a_slow_jwks_server_never_holds_a_call_longer_than_the_bound(app_config):
    """JWKS are fetched in the background: a call waits for a fetch at most a moment (0.5 s by
    default), then is answered; the next call after the fetch finished uses the keys."""
    def slow(request):
        time.sleep(2.5)
        return 200, {"Content-Type": "application/json"}, json.dumps(JWKS)

    responses.add_callback(responses.GET, JWKS_URL, callback=slow)
    client = create_app({**app_config, "AUTH_REQUIRED": True, "JWKS_WAIT_SECONDS": 0.3,
                         "TRUSTED_ISSUERS": {ISSUER: JWKS_URL}}).test_client()
    started = time.monotonic()
    first = _get(client, token())
    waited = time.monotonic() - started
    assert first.status_code == 401 and "unknown key" in first.get_json()["issue"][0]["diagnostics"]
    assert waited < 1.5  # the fetch takes 2.5 s; the call did not wait for it
    deadline = time.monotonic() + 20
    while _get(client, token()).status_code != 200:
        assert time.monotonic() < deadline, "the background fetch never delivered the keys"
        time.sleep(0.2)
    assert len(responses.calls) == 1


def _verifier(fetch, wait_seconds=2.0):
    from cds_service.web.auth import Verifier

    return Verifier({ISSUER: JWKS_URL}, lambda *args: True, fetch=fetch, wait_seconds=wait_seconds)


def test_a_call_during_the_start_up_fetch_joins_it_rather_than_being_refused():
    def slowish(url):
        time.sleep(0.4)
        return JWKS

    verifier = _verifier(slowish)
    verifier.fetch_keys()  # what each worker does before its first call
    while verifier._issuers[ISSUER].asked_at == float("-inf"):  # the fetch is under way
        time.sleep(0.01)
    assert verifier.verify(token(), [f"{BASE}/cds-services"])["iss"] == ISSUER


def test_a_jwks_server_that_breaks_the_connection_is_a_401_naming_it_and_heals():
    from urllib3.exceptions import ProtocolError

    from cds_service.errors import AuthenticationFailed
    from cds_service.web import jwks

    answers = [ProtocolError("connection broken"), JWKS]

    def flaky(url):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    verifier = _verifier(flaky)
    with pytest.raises(AuthenticationFailed, match="could not be fetched: ProtocolError"):
        verifier.verify(token(), [f"{BASE}/cds-services"])
    verifier._issuers[ISSUER].asked_at -= jwks.JWKS_REFRESH_SECONDS  # a minute later
    assert verifier.verify(token(), [f"{BASE}/cds-services"])["iss"] == ISSUER
