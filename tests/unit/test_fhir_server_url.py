"""``fhirServer`` is normalised in one place (core.hooks.fhir_base_url); what no HTTP client
could connect to is a 400 naming ``$.fhirServer``, never a 500 (issue 24, item 6)."""
from __future__ import annotations

import pytest
from helpers import request_fixture

from cds_service.core.hooks import base_url, fhir_base_url

ORDER_SELECT = "back-pain-order-select"
MALFORMED = {
    "label-over-63": "https://" + "a" * 64 + ".hospital.example/fhir",
    "open-bracket": "http://[host/fhir",
    "full-width-hash": "http://ehr\uff03.hospital.example/fhir",
    "bad-port": "https://ehr.hospital.example:99999/fhir",
    "fragment": "https://ehr.hospital.example/fhir#x",
}


@pytest.mark.parametrize("server", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_fhir_server_is_a_400_naming_it(client, server):
    body = request_fixture("order-select/mcas-adult--succinylcholine.json")
    del body["prefetch"]["medications"]  # so that the server would be read
    body["fhirServer"] = server
    body["fhirAuthorization"] = {"access_token": "dummy", "token_type": "Bearer", "expires_in": 300,
                                 "scope": "patient/*.read", "subject": "cds-back-pain"}
    response = client.post(f"/cds-services/{ORDER_SELECT}", json=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["$.fhirServer"]


@pytest.mark.parametrize("written", ["https://EHR.Hospital.example/FHIR/R4/", " https://ehr.hospital.example/FHIR/R4 "])
def test_one_normal_form_for_calls_and_configured_lists(written):
    assert fhir_base_url(written) == "https://ehr.hospital.example/FHIR/R4"  # the path's case is kept
    assert base_url(written) == fhir_base_url(written)


def test_a_configured_value_that_is_no_base_url_matches_nothing():
    assert base_url("http://[host") == "" and base_url(None) == ""
