"""cds_service.core.conditions.base: what every condition word shares: argument checking with the
fix, where an error is, evidence text for a match, and facts computed once per call."""
from __future__ import annotations

from datetime import date

import pytest
from coreknowledge import facts_of, knowledge

from cds_service.core.conditions.base import (
    ConditionError,
    Predicate,
    arguments,
    combined,
    date_text,
    describe,
    number,
    remember,
    valueset_arg,
)
from cds_service.core.terminology import ICD10CM, Match


def test_arguments_accepts_required_and_optional_keys_only():
    assert arguments("w", {"valueset": "x", "label": "y"}, ("valueset",), ("label",)) == {"valueset": "x", "label": "y"}
    with pytest.raises(ConditionError, match="unknown key 'lable' .*did you mean 'label'"):
        arguments("w", {"valueset": "x", "lable": "y"}, ("valueset",), ("label",))
    with pytest.raises(ConditionError, match="missing key 'valueset'"):
        arguments("w", {}, ("valueset",))
    with pytest.raises(ConditionError, match="takes a mapping"):
        arguments("w", "x", ("valueset",))


@pytest.mark.parametrize("value", ["< 80", True, None, [30]])
def test_number_refuses_what_is_not_a_number_with_the_fix(value):
    with pytest.raises(ConditionError) as raised:
        number({"value": value}, "value")
    assert raised.value.where == "value" and "write the number alone" in raised.value.message


def test_number_reads_ints_and_floats():
    assert number({"value": 30}, "value") == 30.0 and number({"value": 1.5}, "value") == 1.5


def test_an_error_found_inside_reads_outwards_as_a_path():
    error = ConditionError("bad", ("value",)).inside("observation_below").inside("[2]").inside("any")
    assert error.where == "any[2].observation_below.value" and error.message == "bad"


def test_describe_says_how_a_coding_matched_or_that_a_name_did():
    assert describe(Match("MS", "G35", ICD10CM)) == "ICD-10-CM G35"
    assert "matched by name 'morphine'" in describe(Match("morphine", None, None, by_name=True))
    assert date_text(date(2026, 1, 2)) == "2026-01-02" and date_text(None) == "date not recorded"


def test_valueset_arg_reads_a_name_or_a_labelled_mapping_and_refuses_an_unknown_set():
    terminology = knowledge().terminology
    assert valueset_arg("multiple-sclerosis", terminology) == ("multiple-sclerosis", None)
    assert valueset_arg({"valueset": "multiple-sclerosis", "label": "MS"}, terminology) == ("multiple-sclerosis", "MS")
    with pytest.raises(ConditionError, match="did you mean 'multiple-sclerosis'"):
        valueset_arg("multiple-sclerosys", terminology)


def test_remember_computes_once_per_call():
    facts = facts_of("patient-view")
    calls = []
    assert remember(facts, "k", lambda: calls.append(1) or "v") == "v"
    assert remember(facts, "k", lambda: calls.append(1) or "w") == "v"
    assert calls == [1]
    assert "k" not in facts_of("patient-view").memo  # a new call starts afresh


def test_combined_reads_what_its_parts_read():
    one = Predicate(lambda f, i: [], frozenset({"conditions"}), frozenset({"a"}))
    two = Predicate(lambda f, i: [], frozenset({"allergies"}), frozenset({"b"}), frozenset({"observations"}))
    both = combined(lambda f, i: [], [one, two])
    assert (both.needs, both.valuesets, both.wants) == ({"conditions", "allergies"}, {"a", "b"}, {"observations"})
