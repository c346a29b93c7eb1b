"""cds_service.core.hooks: what an EHR sends is validated against the CDS Hooks 2.0 request and
feedback schemas; a bad body is a 400 with the JSON path of the problem and never its values."""
from __future__ import annotations

import copy

import pytest
from helpers import request_fixture

from cds_service.core.hooks import (
    ORDER_HOOKS,
    PREFETCH_KEY_OF,
    PREFETCH_RESOURCE,
    SUPPORTED_HOOKS,
    base_url,
    fhir_base_url,
    parse_feedback,
    parse_hook_request,
)
from cds_service.errors import InvalidRequest

UUID = "a712755f-6cac-44d5-99d5-269512e74f7b"
SELECT = "order-select/mcas-adult--morphine.json"


def test_a_valid_call_is_read_with_its_members():
    body = request_fixture(SELECT)
    request = parse_hook_request(body, "order-select")
    assert (request.hook, request.hook_instance) == ("order-select", body["hookInstance"])
    assert request.context == body["context"] and request.prefetch == body["prefetch"]
    assert request.fhir_server == "http://127.0.0.1:8081"
    assert request.access_token is None


def test_a_call_for_another_hook_is_refused_naming_the_services_hook():
    with pytest.raises(InvalidRequest) as raised:
        parse_hook_request(request_fixture(SELECT), "order-sign")
    assert raised.value.location == "$.hook" and "order-sign" in raised.value.message


@pytest.mark.parametrize("body", [None, [], "text", 5])
def test_a_body_that_is_not_an_object_is_refused(body):
    with pytest.raises(InvalidRequest) as raised:
        parse_hook_request(body, "order-select")
    assert raised.value.location == "$" and InvalidRequest.status == 400


def test_a_missing_member_is_named():
    body = request_fixture(SELECT)
    del body["hookInstance"]
    with pytest.raises(InvalidRequest, match="hookInstance"):
        parse_hook_request(body, "order-select")


def test_a_bad_context_gives_its_path_without_repeating_the_value():
    body = request_fixture(SELECT)
    body["context"]["patientId"] = ["SECRET-PATIENT-123"]
    with pytest.raises(InvalidRequest) as raised:
        parse_hook_request(body, "order-select")
    assert raised.value.location.startswith("$.context")
    assert "SECRET-PATIENT-123" not in raised.value.message


def test_an_order_hook_without_draft_orders_is_refused_and_patient_view_needs_none():
    body = request_fixture(SELECT)
    del body["context"]["draftOrders"]
    with pytest.raises(InvalidRequest):
        parse_hook_request(body, "order-select")
    view = request_fixture("patient-view/mcas-adult--chart-open.json")
    assert parse_hook_request(view, "patient-view").hook == "patient-view"


def test_a_prefetch_key_that_is_not_an_identifier_is_not_echoed():
    body = request_fixture(SELECT)
    body["prefetch"] = {"<script>alert(1)</script>": 5}
    try:
        parse_hook_request(body, "order-select")
    except InvalidRequest as error:
        assert "<script>" not in error.message and "<script>" not in (error.location or "")


def test_the_fhir_server_is_normalised_and_an_unusable_one_refused():
    body = request_fixture(SELECT)
    body["fhirServer"] = "https://FHIR.Example.org/r4/"
    assert parse_hook_request(body, "order-select").fhir_server == "https://fhir.example.org/r4"
    body["fhirServer"] = "ftp://fhir.example.org"
    with pytest.raises(InvalidRequest) as raised:
        parse_hook_request(body, "order-select")
    assert raised.value.location == "$.fhirServer"


@pytest.mark.parametrize("url", ["https://fhir.example.org/r4", "HTTPS://FHIR.EXAMPLE.ORG/r4/", " https://fhir.example.org/r4 "])
def test_fhir_base_url_normalises_scheme_host_and_trailing_slash_idempotently(url):
    assert fhir_base_url(url) == "https://fhir.example.org/r4"
    assert fhir_base_url(fhir_base_url(url)) == fhir_base_url(url)
    assert base_url(url) == "https://fhir.example.org/r4"


@pytest.mark.parametrize("url", ["fhir.example.org", "https://", "https://h/r4?x=1", "https://h/r4#f",
                                 "https://h:99999/r4", "https://[::1", "https://" + "a" * 64 + ".org/"])
def test_fhir_base_url_refuses_what_no_client_could_connect_to(url):
    with pytest.raises(ValueError):
        fhir_base_url(url)
    assert base_url(url) == ""


def test_feedback_is_read_item_by_item_and_an_accepted_outcome_needs_its_suggestions():
    item = {"card": UUID, "outcome": "overridden", "outcomeTimestamp": "2026-11-23T12:00:00Z",
            "overrideReason": {"reason": {"code": "benefit-outweighs-risk"}}}
    assert parse_feedback({"feedback": [item]}) == [item]
    accepted = {**copy.deepcopy(item), "outcome": "accepted"}
    del accepted["overrideReason"]
    with pytest.raises(InvalidRequest):
        parse_feedback({"feedback": [accepted]})
    accepted["acceptedSuggestions"] = [{"id": UUID}]
    assert parse_feedback({"feedback": [accepted]}) == [accepted]
    with pytest.raises(InvalidRequest):
        parse_feedback({"feedback": []})
    with pytest.raises(InvalidRequest):
        parse_feedback([item])


def test_the_hooks_and_prefetch_keys_are_one_consistent_table():
    assert set(ORDER_HOOKS) < set(SUPPORTED_HOOKS) and "patient-view" in SUPPORTED_HOOKS
    assert PREFETCH_RESOURCE["patient"] == "Patient" and "Patient" not in PREFETCH_KEY_OF
    assert all(PREFETCH_RESOURCE[key] == kind for kind, key in PREFETCH_KEY_OF.items())
