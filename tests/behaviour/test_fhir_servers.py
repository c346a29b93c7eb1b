"""Which FHIR servers a call may make the service read (issue 13): bound to the JWT's issuer.

Two EHRs (issuers) each have their own loopback FHIR server (``fakefhir.FakeFhir``:
it answers searches with a persona's resources and remembers what it was asked). With authentication on, a call is read from
its fhirServer only when that base URL is listed for the issuer of its
verified JWT (``ISSUER_FHIR_SERVERS``); otherwise nothing is fetched, the
answer is a 412 saying so when required data is missing, and prefetch is still
used. With authentication off, a host that resolves to a loopback, private or
link-local address is refused at connect time unless the server is listed.
"""
from __future__ import annotations

import socket

import pytest
from fakefhir import FakeFhir
from helpers import request_fixture, rule_ids
from test_auth import BASE, JWKS, token

from cds_service import create_app
from cds_service.fhirfetch.transport import AddressRefused, public_address

EHR_A = "https://ehr-a.hospital.example"
EHR_B = "https://ehr-b.hospital.example"
ACCESS_TOKEN = "dummy-access-token-for-binding-tests"
ORDER_SELECT = "back-pain-order-select"
FIXTURE = "order-select/mcas-adult--succinylcholine.json"


@pytest.fixture(scope="module")
def servers():
    with FakeFhir() as a, FakeFhir() as b:
        yield a, b


@pytest.fixture
def secure(app_config, servers):
    a, b = servers
    for server in servers:
        server.asked.clear()
    return create_app({**app_config, "AUTH_REQUIRED": True,
                       "TRUSTED_ISSUERS": {EHR_A: JWKS, EHR_B: JWKS, "https://ehr-c.hospital.example": JWKS},
                       "ISSUER_FHIR_SERVERS": {EHR_A: [a.url()], EHR_B: [b.url() + "/"]}}).test_client()


def _call(client, issuer: str, server: str, drop: tuple[str, ...] = ("conditions",)):
    body = request_fixture(FIXTURE)
    for key in drop:
        del body["prefetch"][key]
    body["fhirServer"] = server
    body["fhirAuthorization"] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-back-pain"}
    jwt = token(f"{BASE}/cds-services/{ORDER_SELECT}", iss=issuer)
    return client.post(f"/cds-services/{ORDER_SELECT}", json=body, headers={"Authorization": f"Bearer {jwt}"})


def test_each_issuer_reads_its_own_fhir_server_with_the_calls_token(secure, servers):
    a, b = servers
    for issuer, server in ((EHR_A, a), (EHR_B, b)):
        response = _call(secure, issuer, server.url())
        assert response.status_code == 200, response.get_json()
        assert "mcas.neuromuscular-blocker" in rule_ids(response.get_json()["cards"])
        assert server.asked and server.asked[-1][1] == f"Bearer {ACCESS_TOKEN}"


@pytest.mark.parametrize("issuer", [EHR_A, "https://ehr-c.hospital.example"])  # another's server; none listed
def test_a_fhir_server_not_listed_for_the_issuer_is_not_read_and_the_412_says_so(secure, servers, service_log, issuer):
    a, b = servers
    response = _call(secure, issuer, b.url())
    assert response.status_code == 412
    problem = response.get_json()["issue"][0]["diagnostics"]
    assert "conditions" in problem and "not among the FHIR servers allowed for this client's issuer" in problem
    assert b.asked == [] and a.asked == []  # no request at all, so the token went nowhere
    assert any("fhirServer is not listed for the client's issuer" in line for line in service_log)


def test_prefetch_is_still_used_when_the_fhir_server_is_not_listed(secure, servers):
    a, b = servers
    response = _call(secure, EHR_A, b.url(), drop=())
    assert response.status_code == 200, response.get_json()
    assert rule_ids(response.get_json()["cards"]) == ["mcas.neuromuscular-blocker"]
    assert b.asked == []


def test_listed_base_urls_match_without_regard_to_a_trailing_slash(secure, servers):
    a, b = servers
    assert _call(secure, EHR_A, a.url() + "/").status_code == 200
    assert _call(secure, EHR_B, b.url()).status_code == 200  # listed with a trailing slash
    assert _call(secure, EHR_A, a.url() + "/other").status_code == 412  # a path below is another server


@pytest.fixture
def open_client(app_config):
    return create_app({**app_config, "AUTH_REQUIRED": False}).test_client()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_without_authentication_an_unlisted_loopback_server_is_refused_at_connect_time(open_client, servers,
                                                                                       service_log, host):
    a, _ = servers
    a.asked.clear()
    body = request_fixture(FIXTURE)
    del body["prefetch"]["conditions"]
    body["fhirServer"] = a.url(host)
    body["fhirAuthorization"] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-back-pain"}
    response = open_client.post(f"/cds-services/{ORDER_SELECT}", json=body)
    assert response.status_code == 412
    assert a.asked == []
    assert any("resolves to a non-public address and the server is not listed" in line for line in service_log)


def test_without_authentication_a_listed_open_server_is_read(app_config, servers):
    a, _ = servers
    client = create_app({**app_config, "AUTH_REQUIRED": False, "OPEN_FHIR_SERVERS": [a.url()]}).test_client()
    body = request_fixture(FIXTURE)
    del body["prefetch"]["conditions"]
    body["fhirServer"] = a.url()
    response = client.post(f"/cds-services/{ORDER_SELECT}", json=body)
    assert response.status_code == 200, response.get_json()
    assert "mcas.neuromuscular-blocker" in rule_ids(response.get_json()["cards"])


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "fe80::1", "100.64.0.1", "0.0.0.0", "::ffff:127.0.0.1", "fd00::1"])
def test_non_public_addresses_are_refused(address):
    """Literal addresses: resolving them asks no DNS server and nothing is connected to."""
    with pytest.raises(AddressRefused):
        public_address(address, 80)


def test_a_name_resolving_to_a_public_and_a_private_address_is_refused(monkeypatch):
    """A DNS answer that mixes in one internal address is refused whole (DNS is stubbed; nothing connects)."""
    answer = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)),
              (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 443))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answer)
    with pytest.raises(AddressRefused):
        public_address("fhir.mixed.example", 443)


@pytest.mark.parametrize("configured", ['["https://fhir.example"]', '{"https://ehr": [', {"https://ehr": [1]},
                                        {"https://ehr": ["ftp://x"]}])
def test_a_malformed_issuer_server_list_stops_start_up(app_config, configured):
    with pytest.raises(ValueError, match="ISSUER_FHIR_SERVERS"):
        create_app({**app_config, "ISSUER_FHIR_SERVERS": configured})
