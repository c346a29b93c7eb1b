"""Client JWTs per CDS Hooks 2.0 ("Trusting CDS Clients"): each attack refused."""
from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service import create_app
from helpers import request_fixture

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


@pytest.mark.parametrize("name", ATTACKS)
@responses.activate  # an unknown kid may refetch the JWKS: answer with the same keys
def test_attack_is_refused_with_401_and_no_detail(secure, name):
    responses.get(JWKS_URL, json=JWKS)
    response = _get(secure, ATTACKS[name])
    assert response.status_code == 401
    body = response.get_json()
    assert body["issue"][0]["diagnostics"] == "Authentication required"


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
    client = create_app({**app_config, "AUTH_REQUIRED": True, "TRUSTED_ISSUERS": {ISSUER: JWKS_URL}}).test_client()
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
