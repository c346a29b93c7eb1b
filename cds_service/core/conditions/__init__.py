"""The rule condition vocabulary, compiled to small predicates.

Each condition in a knowledge file is a one-key mapping (``{condition:
multiple-sclerosis}``); ``compile_condition`` turns it into a ``Predicate``:
a function of (facts, item) that returns the evidence lines when it holds and
None when it does not. ``item`` is the order (draft or active medication, or
service request) the rule is looking at, or None for patient-level rules.
Each compiled predicate also carries the data keys it reads, so rules whose
data could not be had are skipped rather than guessed. The vocabulary is
documented in docs/knowledge.md; adding a word means adding a compiler to its family's module and its WORDS.
Every compiler takes the condition's argument and one ``CompileContext``
(terminology and observation thresholds), as jsonschema's keyword functions
take their validator.


The families: ``logic`` (all, any, not), ``patient``, ``medications``, ``procedures``, ``observations``;
``text`` holds phrase matching with negation; ``base`` what they share; ``registry`` the words.
"""
from __future__ import annotations

from cds_service.core.conditions.base import (
    CompileContext,
    ConditionError,
    Evidence,
    Predicate,
    describe,
)
from cds_service.core.conditions.registry import compile_condition, condition_words, suggest_word

__all__ = ["CompileContext", "ConditionError", "Evidence", "Predicate", "compile_condition", "condition_words", "describe", "suggest_word"]
