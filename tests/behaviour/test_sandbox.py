"""What tripped a clinical informaticist in the CDS Hooks sandbox (issue 12, item 1): a discovery
URL with a trailing slash, a second host name for the service, 401s without a challenge, and the
sandbox's default DSTU2 FHIR server."""
from __future__ import annotations

import pytest
from conformance import assert_conformant
from helpers import request_fixture, rule_ids
from test_auth import ISSUER, JWKS, token

from cds_service import create_app

ORIGIN = "http://localhost:8090"


def test_doubled_slash_preflight_is_answered_without_a_redirect(client):
    response = client.options("/cds-services//back-pain-patient-view", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert 200 <= response.status_code < 300
    assert "Location" not in response.headers
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)


def test_doubled_slash_service_call_gets_the_cards(client):
    body = request_fixture("patient-view/mcas-adult--chart-open.json")
    plain = client.post("/cds-services/back-pain-patient-view", json=body).get_json()["cards"]
    doubled = client.post("/cds-services//back-pain-patient-view", json=body, headers={"Origin": ORIGIN})
    assert doubled.status_code == 200
    assert doubled.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    assert plain and rule_ids(doubled.get_json()["cards"]) == rule_ids(plain)


@pytest.fixture
def aliased(app_config):
    config = {**app_config, "AUTH_REQUIRED": True, "TRUSTED_ISSUERS": {ISSUER: JWKS},
              "PUBLIC_BASE_URL": "http://127.0.0.1:8080, http://localhost:8080/"}
    return create_app(config)


def test_each_public_base_url_is_an_accepted_audience(aliased):
    client = aliased.test_client()
    for base in ("http://127.0.0.1:8080", "http://localhost:8080"):
        assert client.get("/cds-services", headers={"Authorization": f"Bearer {token(base + '/cds-services')}"}
                          ).status_code == 200
    other = client.get("/cds-services", headers={"Authorization": f"Bearer {token('http://evil:8080/cds-services')}"})
    assert other.status_code == 401


def _signed_call(app, fixture: str, path: str, audience: str):
    return app.test_client().post(path, json=request_fixture(fixture),
                                  headers={"Authorization": f"Bearer {token(audience)}"})


def test_card_links_use_the_first_public_base_url(aliased):
    response = _signed_call(aliased, "order-select/mcas-adult--morphine.json", "/cds-services/back-pain-order-select",
                            "http://127.0.0.1:8080/cds-services/back-pain-order-select")
    assert response.status_code == 200
    (card,) = response.get_json()["cards"]
    assert card["source"]["url"] == "http://127.0.0.1:8080/rules/mcas.histamine-releasing-opioid"


def test_public_base_url_as_a_json_list_from_the_environment(app_config, monkeypatch):
    monkeypatch.setenv("CDS_PUBLIC_BASE_URL", '["http://a.example", "http://b.example/"]')
    app = create_app(app_config)
    assert app.config["PUBLIC_BASE_URLS"] == ("http://a.example", "http://b.example")


def test_the_audience_may_name_the_path_as_the_sandbox_sent_it(aliased):
    response = _signed_call(aliased, "patient-view/mcas-adult--chart-open.json", "/cds-services//back-pain-patient-view",
                            "http://localhost:8080/cds-services//back-pain-patient-view")
    assert response.status_code == 200


def test_401_without_a_token_carries_a_bearer_challenge(aliased):
    response = aliased.test_client().get("/cds-services")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="cds-service"'


def test_401_with_a_bad_token_says_invalid_token_and_why(aliased):
    response = aliased.test_client().get("/cds-services", headers={"Authorization": "Bearer not.a.jwt"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == ('Bearer realm="cds-service", error="invalid_token",'
                                                    ' error_description="the token is not a well-formed JWT (DecodeError)"')
    assert "not.a.jwt" not in response.get_data(as_text=True)


def _dstu2_order_select() -> dict:
    """The MCAS morphine call as the sandbox sends it with its default DSTU2 FHIR server:
    a MedicationOrder draft and a record whose statuses are plain codes."""
    body = request_fixture("order-select/mcas-adult--morphine.json")
    draft = body["context"]["draftOrders"]["entry"][0]["resource"]
    draft.update({"resourceType": "MedicationOrder", "id": "order-123", "dateWritten": draft.pop("authoredOn"),
                  "patient": draft.pop("subject")})
    draft.pop("intent")
    body["context"]["selections"] = ["MedicationOrder/order-123"]
    for entry in body["prefetch"]["conditions"]["entry"]:
        entry["resource"]["clinicalStatus"] = "active"
        entry["resource"]["verificationStatus"] = "confirmed"
    return body


def test_dstu2_call_gets_one_card_naming_fhir_r4(hooks):
    response = hooks.call(_dstu2_order_select())
    assert response.status_code == 200
    body = response.get_json()
    assert_conformant(body)
    (card,) = body["cards"]
    assert card["indicator"] == "warning"
    assert "FHIR R4" in card["summary"] and "DSTU2" in card["summary"]
    assert "MedicationOrder" in card["detail"] and "Change FHIR Server" in card["detail"]


def test_dstu2_record_alone_is_recognised(hooks):
    body = request_fixture("patient-view/mcas-adult--chart-open.json")
    for entry in body["prefetch"]["conditions"]["entry"]:
        entry["resource"]["clinicalStatus"] = "active"
    (card,) = hooks.cards(body)
    assert "statuses as plain codes" in card["detail"]


def test_r4_call_does_not_get_the_version_card(hooks):
    cards = hooks.cards(request_fixture("order-select/mcas-adult--morphine.json"))
    assert rule_ids(cards) == ["mcas.histamine-releasing-opioid"]
