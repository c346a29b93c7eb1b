"""Prefetch and the FHIR fallback.

The FHIR server is mocked at the transport with ``responses``; the service's
own functions are never patched.
"""
from __future__ import annotations

import json

import pytest
import responses
from helpers import persona, request_fixture, rule_ids, searchset

from cds_service import create_app

FHIR = "https://ehr.example.org/fhir"
TOKEN = "secret-access-token-123"


def _with_authorization(body):
    body["fhirServer"] = FHIR
    body["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-back-pain"}
    return body


def _mock_conditions(rsps, name="mcas-adult"):
    return rsps.get(f"{FHIR}/Condition", json=searchset(persona(name, "Condition")))


OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}


@pytest.mark.parametrize("sent", ["missing", None, OUTCOME, searchset([OUTCOME])])
@responses.activate
def test_unusable_prefetch_is_fetched_with_the_bearer_token(hooks, sent):
    body = _with_authorization(request_fixture("order-select/mcas-adult--succinylcholine.json"))
    if sent == "missing":
        del body["prefetch"]["conditions"]
    else:
        body["prefetch"]["conditions"] = sent
    call = _mock_conditions(responses)
    cards = hooks.cards(body)
    assert "mcas.neuromuscular-blocker" in rule_ids(cards)
    assert call.call_count == 1
    assert responses.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert "patient=mcas-adult" in responses.calls[0].request.url


@responses.activate
def test_complete_prefetch_needs_no_fhir_call(hooks):
    body = _with_authorization(request_fixture("order-select/mcas-adult--succinylcholine.json"))
    assert rule_ids(hooks.cards(body)) == ["mcas.neuromuscular-blocker"]
    assert len(responses.calls) == 0


@responses.activate
def test_paginated_prefetch_bundle_is_followed_on_the_same_server(hooks):
    body = _with_authorization(request_fixture("order-select/mcas-adult--succinylcholine.json"))
    conditions = persona("mcas-adult", "Condition")
    body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset",
                                      "link": [{"relation": "next", "url": f"{FHIR}/Condition?page=2"}],
                                      "entry": []}
    responses.get(f"{FHIR}/Condition", json=searchset(conditions))
    cards = hooks.cards(body)
    assert "mcas.neuromuscular-blocker" in rule_ids(cards)
    assert "page=2" in responses.calls[0].request.url


@responses.activate
def test_next_link_to_another_server_is_not_followed_and_token_not_sent(hooks):
    body = _with_authorization(request_fixture("order-select/mcas-adult--succinylcholine.json"))
    body["prefetch"]["conditions"] = {"resourceType": "Bundle", "type": "searchset", "entry": [],
                                      "link": [{"relation": "next", "url": "https://evil.example.com/Condition"}]}
    cards = hooks.cards(body)
    assert len(responses.calls) == 0
    assert cards == []  # the first (empty) page is all we trust


def test_missing_required_data_without_fhir_access_is_412(hooks):
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    del body["prefetch"]["conditions"]
    response = hooks.call(body)
    assert response.status_code == 412
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "conditions" in outcome["issue"][0]["diagnostics"]


@responses.activate
def test_fhir_server_error_for_required_data_is_412(hooks):
    body = _with_authorization(request_fixture("order-select/mcas-adult--succinylcholine.json"))
    del body["prefetch"]["conditions"]
    responses.get(f"{FHIR}/Condition", status=503)
    assert hooks.call(body).status_code == 412


@responses.activate
def test_optional_data_missing_skips_only_the_rules_that_read_it(hooks):
    body = _with_authorization(request_fixture("patient-view/mcas-adult--chart-open.json"))
    del body["prefetch"]["medications"]
    responses.get(f"{FHIR}/MedicationRequest", status=500)
    response = hooks.call(body)
    assert response.status_code == 200
    ids = rule_ids(response.get_json()["cards"])
    assert "mcas.epinephrine-autoinjector" not in ids  # reads medications: not guessed


def test_no_unauthenticated_fetch_unless_server_is_allow_listed(hooks):
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    body["fhirServer"] = FHIR
    del body["prefetch"]["conditions"]
    with responses.RequestsMock() as rsps:  # fails the test on any unexpected call
        assert hooks.call(body).status_code == 412
        assert len(rsps.calls) == 0


@responses.activate
def test_open_test_server_may_be_read_without_a_token(app_config):
    client = create_app({**app_config, "OPEN_FHIR_SERVERS": [FHIR]}).test_client()
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    body["fhirServer"] = FHIR
    del body["prefetch"]["conditions"]
    _mock_conditions(responses)
    response = client.post("/cds-services/back-pain-order-select", json=body)
    assert response.status_code == 200
    assert "Authorization" not in responses.calls[0].request.headers


def test_null_prefetch_without_fhir_access_means_no_data(hooks):
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    body["prefetch"]["conditions"] = None
    assert hooks.cards(body) == []  # the EHR says: no conditions, so no mast cell disorder


class _Answer:
    """A response as a Transport returns it: a status, headers and an unread body stream."""

    def __init__(self, status: int, body: dict) -> None:
        import io

        self.status_code, self._body = status, io.BytesIO(json.dumps(body).encode())
        self.headers: dict[str, str] = {}
        self.raw = self

    def read(self, size: int, decode_content: bool = True) -> bytes:
        return self._body.read(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


class _RecordingTransport:
    """A FHIR server in memory: answers Condition searches with a persona, remembers the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict, float]] = []
        self.public_only: list[bool] = []

    def get(self, url, headers, timeout, public_only):
        self.calls.append((url, dict(headers), timeout))
        self.public_only.append(public_only)
        return _Answer(200, searchset(persona("mcas-adult", "Condition")))


def test_the_transport_is_swappable_and_gets_url_token_and_a_bounded_timeout(app):
    from cds_service.core.hooks import parse_hook_request
    from cds_service.fhirfetch.gather import gather

    rt = app.extensions["cds"]
    service = rt.knowledge.services["back-pain-patient-view"]
    body = _with_authorization(request_fixture("patient-view/mcas-adult--chart-open.json"))
    body["prefetch"].pop("conditions")
    transport = _RecordingTransport()
    data = gather(parse_hook_request(body, service.hook), rt.prefetch[service.id], service.required_prefetch,
                  rt.fetch_policy, transport).data
    assert [c["resource"]["id"] for c in data["conditions"]["entry"]] == [c["id"] for c in persona("mcas-adult", "Condition")]
    (url, headers, timeout), = transport.calls
    assert url.startswith(f"{FHIR}/Condition?patient=") and headers["Authorization"] == f"Bearer {TOKEN}"
    assert 0 < timeout <= rt.fetch_policy.timeout_seconds
    assert transport.public_only == [True]  # an unlisted server (authentication off): public addresses only


def test_a_server_not_listed_for_the_issuer_is_named_as_the_reason_data_is_missing(app):
    """The checks-not-run card must point at what an informaticist can fix: with authentication
    on, a fhirServer that is not the issuer's is the reason, not "not sent by the EHR" alone."""
    import dataclasses

    from cds_service.core.hooks import parse_hook_request
    from cds_service.fhirfetch.gather import NOT_ALLOWED, gather

    rt = app.extensions["cds"]
    service = rt.knowledge.services["back-pain-patient-view"]
    body = _with_authorization(request_fixture("patient-view/mcas-adult--chart-open.json"))
    body["prefetch"].pop("observations")
    bound = dataclasses.replace(rt.fetch_policy, bind_to_issuers=True,
                                issuer_servers={"https://ehr.example": frozenset({"https://other.example/fhir"})})
    found = gather(parse_hook_request(body, service.hook), rt.prefetch[service.id], service.required_prefetch,
                   bound, _RecordingTransport(), issuer="https://ehr.example")
    assert found.unavailable == {"observations": NOT_ALLOWED} and "CDS_ISSUER_FHIR_SERVERS" in NOT_ALLOWED
