"""cds_service.core.fhir: FHIR R4 JSON read tolerantly (odd input reads as absent, never raises), and
DSTU2/STU3 data recognised so that it is never read as an all clear."""
from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cds_service.core.fhir import (
    as_list,
    codings,
    concept_text,
    first_code,
    has_code,
    holds_outcome,
    next_link,
    number,
    obj,
    objects,
    parse_date,
    pre_r4_sign,
    reference_to,
    resources_in,
    validate_resource,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_nothing_here_raises_on_odd_input(value):
    as_list(value), obj(value, "a"), objects(value), resources_in(value), holds_outcome(value)
    next_link(value), codings(value), has_code(value, frozenset({"x"})), concept_text(value)
    first_code(value, "s"), parse_date(value), number(value)
    if isinstance(value, dict):
        reference_to(value)
        pre_r4_sign(value, {"x": value})


def test_a_single_object_where_an_array_is_due_reads_as_an_array_of_one():
    assert as_list({"a": 1}) == [{"a": 1}] and as_list(None) == [] and as_list([1]) == [1]
    concept = {"coding": {"system": "s", "code": " c ", "display": "d"}}
    assert codings(concept) == (("s", "c", "d"),)
    assert codings([concept, {"coding": [{"code": ""}, {"system": "s"}, "junk"]}]) == (("s", "c", "d"),)
    assert has_code(concept, frozenset({" c "})) and not has_code(concept, frozenset({"c2"}))


def test_concept_text_prefers_text_then_the_first_display():
    assert concept_text({"text": " MRI ", "coding": [{"code": "1", "display": "other"}]}) == "MRI"
    assert concept_text({"text": " ", "coding": [{"code": "1"}, {"code": "2", "display": "D"}]}) == "D"
    assert concept_text({}) == ""


def test_first_code_takes_a_code_of_the_system_or_without_one():
    concept = {"coding": [{"system": "other", "code": "x"}, {"code": "active"}]}
    assert first_code(concept, "wanted") == "active"
    assert first_code({"coding": [{"system": "other", "code": "x"}]}, "wanted") is None


def test_resources_in_a_bundle_or_alone():
    res = {"resourceType": "Condition", "id": "1"}
    bundle = {"resourceType": "Bundle", "entry": [{"resource": res}, {"resource": "x"}, "junk", {}]}
    assert resources_in(bundle) == [res]
    assert resources_in(res) == [res]
    assert resources_in({"id": "1"}) == []


def test_a_failed_prefetch_is_recognised_by_its_operation_outcome():
    outcome = {"resourceType": "OperationOutcome"}
    assert holds_outcome(outcome)
    assert holds_outcome({"resourceType": "Bundle", "entry": [{"resource": outcome}]})
    assert not holds_outcome({"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Condition"}}]})


def test_next_link_of_a_paginated_bundle():
    bundle = {"link": [{"relation": "self", "url": "a"}, {"relation": "next", "url": "b"}]}
    assert next_link(bundle) == "b"
    assert next_link({"link": [{"relation": "next", "url": 5}]}) is None


@pytest.mark.parametrize("value, day", [
    ("2026-11-23", date(2026, 11, 23)), ("2026-11-23T10:00:00Z", date(2026, 11, 23)),
    ("2026-11", date(2026, 11, 1)), ("2026", date(2026, 1, 1)),
    ("2026-02-30", None), ("23/11/2026", None), (20261123, None), (None, None),
])
def test_partial_dates_read_as_their_first_day_and_malformed_ones_as_absent(value, day):
    assert parse_date(value) == day


def test_number_and_reference():
    assert number(True) is None and number("5") is None and number(5) == 5.0
    assert reference_to({"resourceType": "MedicationRequest", "id": "m1"}) == "MedicationRequest/m1"
    assert reference_to({"resourceType": "MedicationRequest", "id": ""}) is None


@pytest.mark.parametrize("resource", [
    {"resourceType": "MedicationOrder", "id": "1"},
    {"resourceType": "Condition", "clinicalStatus": "active"},
    {"resourceType": "AllergyIntolerance", "substance": {"text": "penicillin"}},
])
def test_pre_r4_data_in_the_record_or_the_drafts_is_recognised(resource):
    bundle = {"resourceType": "Bundle", "entry": [{"resource": resource}]}
    assert pre_r4_sign({}, {"conditions": bundle})
    assert pre_r4_sign({"draftOrders": bundle}, {})


def test_r4_data_shows_no_pre_r4_sign():
    r4 = {"resourceType": "Condition", "clinicalStatus": {"coding": [{"code": "active"}]}}
    draft = {"resourceType": "MedicationRequest", "status": "draft"}
    assert pre_r4_sign({"draftOrders": {"resourceType": "Bundle", "entry": [{"resource": draft}]}},
                       {"conditions": {"resourceType": "Bundle", "entry": [{"resource": r4}]}}) is None


def test_validate_resource_names_the_type_of_an_invalid_resource():
    validate_resource({"resourceType": "MedicationRequest", "status": "draft", "intent": "proposal",
                       "subject": {"reference": "Patient/p"}, "medicationCodeableConcept": {"text": "x"}})
    with pytest.raises(ValueError, match="MedicationRequest"):
        validate_resource({"resourceType": "MedicationRequest", "status": "not-a-status"})
    with pytest.raises(ValueError):
        validate_resource({"resourceType": "NoSuchResource"})
