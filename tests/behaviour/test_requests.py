"""Service call validation and error answers."""
from __future__ import annotations

import pytest
from helpers import request_fixture


def _problem(response) -> str:
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("body", [[], "text", 3, None])
def test_body_that_is_not_an_object_is_400(client, body):
    response = client.post("/cds-services/back-pain-patient-view", json=body)
    assert response.status_code == 400
    assert response.mimetype == "application/json"


def test_invalid_json_is_400_not_500(client):
    response = client.post("/cds-services/back-pain-patient-view", data=b"{not json",
                           content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in _problem(response)


def test_invalid_utf8_is_400(client):
    response = client.post("/cds-services/back-pain-patient-view", data=b'{"hook": "\xff\xfe"}',
                           content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("member", ["hook", "hookInstance", "context"])
def test_missing_required_member_is_400_naming_it(client, member):
    body = request_fixture("patient-view/mcas-adult--chart-open.json")
    del body[member]
    response = client.post("/cds-services/back-pain-patient-view", json=body)
    assert response.status_code == 400
    assert member in _problem(response)


def test_hook_that_is_not_the_services_is_400(client):
    body = request_fixture("patient-view/mcas-adult--chart-open.json")
    response = client.post("/cds-services/back-pain-order-sign", json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["$.hook"]


def test_fhir_authorization_without_fhir_server_is_400(client):
    body = request_fixture("patient-view/mcas-adult--chart-open.json")
    del body["fhirServer"]
    body["fhirAuthorization"] = {"access_token": "t", "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds"}
    assert client.post("/cds-services/back-pain-patient-view", json=body).status_code == 400


def test_token_type_other_than_bearer_is_400(client):
    body = request_fixture("patient-view/mcas-adult--chart-open.json")
    body["fhirAuthorization"] = {"access_token": "t", "token_type": "MAC", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds"}
    response = client.post("/cds-services/back-pain-patient-view", json=body)
    assert response.status_code == 400
    assert "token_type" in _problem(response)


@pytest.mark.parametrize("hook_file, field", [
    ("patient-view/mcas-adult--chart-open.json", "patientId"),
    ("patient-view/mcas-adult--chart-open.json", "userId"),
    ("order-select/mcas-adult--succinylcholine.json", "selections"),
    ("order-select/mcas-adult--succinylcholine.json", "draftOrders"),
    ("order-sign/mcas-adult--three-drafts.json", "draftOrders"),
])
def test_missing_context_field_is_400_with_its_path(client, hook_file, field):
    body = request_fixture(hook_file)
    del body["context"][field]
    service = {"patient-view": "back-pain-patient-view", "order-select": "back-pain-order-select",
               "order-sign": "back-pain-order-sign"}[body["hook"]]
    response = client.post(f"/cds-services/{service}", json=body)
    assert response.status_code == 400
    assert field in _problem(response)
    assert response.get_json()["issue"][0]["expression"][0].startswith("$.context")


def test_user_id_must_be_a_type_and_id(client):
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    body["context"]["userId"] = "COREPRACTITIONER1"
    response = client.post("/cds-services/back-pain-order-select", json=body)
    assert response.status_code == 400
    assert "$.context.userId" in _problem(response)


def test_unknown_members_and_extensions_are_ignored(hooks):
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    body["extension"] = {"com.example.flag": True}
    body["somethingNew"] = [1, 2]
    body["context"]["somethingElse"] = {"x": 1}
    assert hooks.call(body).status_code == 200


def test_unknown_route_and_wrong_method_are_json(client):
    response = client.get("/nowhere")
    assert response.status_code == 404 and response.mimetype == "application/json"
    response = client.get("/cds-services/back-pain-order-select")
    assert response.status_code == 405 and response.mimetype == "application/json"


def test_body_over_the_configured_size_is_413(app_config):
    from cds_service import create_app

    client = create_app({**app_config, "MAX_CONTENT_LENGTH": 1000}).test_client()
    body = request_fixture("patient-view/mcas-adult--chart-open.json")
    response = client.post("/cds-services/back-pain-patient-view", json=body)
    assert response.status_code == 413
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_double_slash_is_not_redirected(client):
    response = client.post("/cds-services//back-pain-patient-view", json={})
    assert response.status_code in (400, 404)
    assert "Location" not in response.headers


@pytest.mark.parametrize("server", ["https://ehr.example/fhir\x1f", "https://ehr.example/fhir\x85",
                                    "https://ehr.example/\x00fhir", "https://ehr example/fhir"])
def test_fhir_server_with_a_control_character_or_space_is_400(client, server):
    """Whatever schema engine answers first, a fhirServer the service could not fetch from as
    written is refused with the member named."""
    body = request_fixture("patient-view/mcas-adult--chart-open.json")
    body["fhirServer"] = server
    response = client.post("/cds-services/back-pain-patient-view", json=body)
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["$.fhirServer"]
