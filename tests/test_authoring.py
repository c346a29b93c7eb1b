"""What a knowledge author sees for each mistake of issue 15: the file, the rule id, the key and
the fix, with "did you mean" for near-misses, and no knock-on errors."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cds_service.config import knowledge_dir
from cds_service.errors import KnowledgeError
from cds_service.knowledge import load_knowledge

KNOWLEDGE = knowledge_dir(os.environ.get("CDS_KNOWLEDGE_DIR"))
CROMOLYN_ROUTE = "        - {medication: cromolyn}\n        - {route: [oral]}\n"


def _problems(tmp_path: Path, file: str, old: str, new: str) -> list[str]:
    """The problems knowledge check reports after one edit of a copy of knowledge/."""
    target = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE, target)
    path = target / file
    text = path.read_text()
    assert old in text, f"the test's anchor is gone from {file}"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(target)
    return error.value.problems


@pytest.mark.parametrize("route, message", [
    ("[intravenous]", "modules/mcas.yaml: rule mcas.cromolyn-onset: when.all[1].route[0]: 'intravenous' is not one of: "
                      "oral, parenteral, topical, nasal, inhaled, ophthalmic, rectal, transdermal "
                      "(did you mean 'parenteral'? intravenous orders count as parenteral)"),
    ("parenteral", "modules/mcas.yaml: rule mcas.cromolyn-onset: when.all[1].route: takes a list, e.g. [parenteral], "
                   "not the word 'parenteral'"),
    ("[parenterl]", "modules/mcas.yaml: rule mcas.cromolyn-onset: when.all[1].route[0]: 'parenterl' is not one of: "
                    "oral, parenteral, topical, nasal, inhaled, ophthalmic, rectal, transdermal (did you mean 'parenteral'?)"),
])
def test_a_route_outside_the_vocabulary_is_refused_with_the_fix(tmp_path, route, message):
    problems = _problems(tmp_path, "modules/mcas.yaml", CROMOLYN_ROUTE,
                         CROMOLYN_ROUTE.replace("[oral]", route))
    assert problems == [message]


def test_an_unknown_key_names_the_rule_and_causes_no_knock_on_error(tmp_path):
    problems = _problems(tmp_path, "modules/mcas.yaml", "    remarks: Oral products only;", "    remark: Oral products only;")
    assert problems == [
        "modules/mcas.yaml: rule mcas.cromolyn-onset: unknown key 'remark' (did you mean 'remarks'?) (allowed: id, title, "
        "hooks, for_each, when, unless, indicator, indicator_when, card, suggestions, links, override_reasons, "
        "reference, remarks)",
    ]


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    problems = _problems(tmp_path, "modules/mcas.yaml", "        - {route: [oral]}\n    indicator: info\n",
                         "        - {route: [oral]\n    indicator: info\n")
    assert problems == ["modules/mcas.yaml: line 241, column 5: not valid YAML: did not find expected ',' or '}' "
                        "(while parsing a flow mapping at line 240)"]


def test_a_misspelt_value_set_gets_a_did_you_mean(tmp_path):
    problems = _problems(tmp_path, "modules/mcas.yaml", "{medication: cromolyn}", "{medication: cromolin}")
    assert problems == ["modules/mcas.yaml: rule mcas.cromolyn-onset: when: unknown value set 'cromolin' "
                        "(did you mean 'cromolyn'?)"]


def test_a_misspelt_condition_word_gets_a_did_you_mean(tmp_path):
    problems = _problems(tmp_path, "modules/mcas.yaml", "{medication: cromolyn}", "{medications: cromolyn}")
    assert len(problems) == 1, problems
    assert problems[0].startswith("modules/mcas.yaml: rule mcas.cromolyn-onset: when.all[0]: 'medications' is not one of: ")
    assert problems[0].endswith("(did you mean 'medication'?)")


def test_a_summary_over_the_card_limit_is_refused(tmp_path):
    long = "x" * 140
    problems = _problems(tmp_path, "modules/mcas.yaml",
                         'summary: "{item}: allow at least one month of daily use before judging effect"',
                         f'summary: "{long}"')
    assert problems == ["modules/mcas.yaml: rule mcas.cromolyn-onset: card.summary: 140 characters, more than 139"]


def test_a_misspelt_recommendation_gets_a_did_you_mean(tmp_path):
    problems = _problems(tmp_path, "modules/mcas.yaml", "recommendation: cromolyn-onset}", "recommendation: cromolyn-onsets}")
    assert problems == ["modules/mcas.yaml: rule mcas.cromolyn-onset: reference: unknown recommendation "
                        "mcas-back-pain#cromolyn-onsets (did you mean 'mcas-back-pain#cromolyn-onset'?)"]


def test_a_failing_case_says_which_condition_held_and_which_did_not(app):
    from casebuilder import explain_case
    from collections import Counter

    case = {"id": "eye-drops", "rule": "mcas.cromolyn-onset", "hook": "order-select", "patient": "mcas-adult",
            "drafts": [{"medication": {"rxcui": "831109", "text": "cromolyn sodium 40 MG/ML Ophthalmic Solution"}}],
            "expect": [{"rule": "mcas.cromolyn-onset", "indicator": "info"}, {"rule": "mcas.cromolyn-onsett", "indicator": "info"}]}
    text = explain_case(app, case, Counter(), Counter((e["rule"], e["indicator"]) for e in case["expect"]))
    assert "held: {medication: cromolyn} (Draft order: cromolyn sodium 40 MG/ML Ophthalmic Solution (RxNorm 831109))" in text
    assert "not held: {route: [oral]} (route ophthalmic not in [oral])" in text
    assert "=> does not fire" in text
    assert "mcas.cromolyn-onsett: no such rule (did you mean 'mcas.cromolyn-onset'?)" in text


def test_evaluate_explain_prints_the_same_explanation(runner):
    from cds_service.cli import main

    from helpers import FIXTURES

    request = FIXTURES / "requests" / "order-select" / "mcas-adult--morphine.json"
    result = runner.invoke(main, ["evaluate", str(request), "--now", "2026-11-23", "--explain", "mcas.cromolyn-onset"])
    assert result.exit_code == 1, result.output
    assert "not held: {medication: cromolyn} (morphine sulfate 15 MG Oral Tablet (892582) is not in value set cromolyn)" \
        in result.output
