"""cds_service.core.conditions.registry: the words of the rule language, and the fix a knowledge
author is told for a condition that cannot be compiled, with where it is."""
from __future__ import annotations

import pytest
from coreknowledge import condition

from cds_service.core.conditions import (
    ConditionError,
    condition_words,
    logic,
    medications,
    observations,
    patient,
    procedures,
    suggest_word,
)


def test_every_family_word_is_in_the_vocabulary_once():
    families = [logic.WORDS, patient.WORDS, medications.WORDS, procedures.WORDS, observations.WORDS]
    words = [w for family in families for w in family]
    assert len(words) == len(set(words))
    assert condition_words() == sorted(words)


@pytest.mark.parametrize("spec", [{}, {"condition": "multiple-sclerosis", "allergy": "nsaid-allergy"}, "condition", None])
def test_a_condition_is_a_mapping_with_one_key(spec):
    with pytest.raises(ConditionError, match="exactly one key"):
        condition(spec)


def test_an_unknown_word_suggests_the_word_meant_and_lists_the_known_ones():
    with pytest.raises(ConditionError) as raised:
        condition({"conditon": "multiple-sclerosis"})
    assert "did you mean 'condition'" in raised.value.message and "known:" in raised.value.message


@pytest.mark.parametrize("word, meant", [
    ("observation_greater_than", "observation_at_least"), ("observation_less_than", "observation_below"),
    ("lab_max", "observation_at_most"),
])
def test_a_misspelt_comparison_keeps_its_direction(word, meant):
    assert f"'{meant}'" in suggest_word(word)


def test_an_error_deep_inside_names_its_path():
    spec = {"all": [{"condition": "multiple-sclerosis"},
                    {"not": {"observation_below": {"valueset": "kidney-function", "value": "< 30"}}}]}
    with pytest.raises(ConditionError) as raised:
        condition(spec)
    assert raised.value.where == "all[1].not.observation_below.value"
    assert "write the number alone" in raised.value.message


@pytest.mark.parametrize("spec, fix", [
    ({"age_at_least": "65"}, "not a number"),
    ({"condition": {"valueset": "multiple-sclerosis", "since": 3}}, "unknown key 'since'"),
    ({"condition": {"label": "MS"}}, "missing key 'valueset'"),
    ({"condition": "multiple-sclerosys"}, "did you mean 'multiple-sclerosis'"),
    ({"route": ["by mouth"]}, "unknown route"),
    ({"route": ["intravenous"]}, "did you mean 'parenteral'"),
    ({"observation_recorded": {"valueset": "body-weight", "units": ["lbs"]}}, "'[lb_av]'"),
])
def test_each_authoring_mistake_gets_its_fix(spec, fix):
    with pytest.raises(ConditionError) as raised:
        condition(spec)
    assert fix in raised.value.message


def test_a_compiled_condition_carries_the_data_it_reads():
    predicate = condition({"all": [{"condition": "multiple-sclerosis"}, {"allergy": "nsaid-allergy"}]})
    assert predicate.needs == {"conditions", "allergies"}
    assert predicate.valuesets == {"multiple-sclerosis", "nsaid-allergy"}
    recent = condition({"active_medication": {"valueset": "aspirin", "recent_days": 30}})
    assert recent.needs == {"medications"} and recent.wants == {"medicationStatements", "medicationDispenses"}
