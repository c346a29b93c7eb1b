"""What a knowledge author sees for each mistake of issue 15: the file, the rule id, the key and
the fix, with "did you mean" for near-misses, and no knock-on errors."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

from cds_service.core.dosing import ROUTES
from cds_service.errors import KnowledgeError
from cds_service.knowledge.loader import load_knowledge
from cds_service.settings import knowledge_dir

ROUTE_WORDS = ", ".join(ROUTES)  # the one route vocabulary, as knowledge check lists it

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
                      f"{ROUTE_WORDS} (did you mean 'parenteral'? intravenous orders count as parenteral)"),
    ("parenteral", "modules/mcas.yaml: rule mcas.cromolyn-onset: when.all[1].route: takes a list, e.g. [parenteral], "
                   "not the word 'parenteral'"),
    ("[parenterl]", "modules/mcas.yaml: rule mcas.cromolyn-onset: when.all[1].route[0]: 'parenterl' is not one of: "
                    f"{ROUTE_WORDS} (did you mean 'parenteral'?)"),
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
    text = (ROOT / "knowledge/modules/mcas.yaml").read_text()
    opened = text[: text.index("        - {route: [oral]}\n    indicator: info\n")].count("\n") + 1  # 1-based
    problems = _problems(tmp_path, "modules/mcas.yaml", "        - {route: [oral]}\n    indicator: info\n",
                         "        - {route: [oral]\n    indicator: info\n")
    assert problems == [f"modules/mcas.yaml: line {opened + 1}, column 5: not valid YAML: did not find expected ',' "
                        f"or '}}' (while parsing a flow mapping at line {opened})"]


def test_a_misspelt_value_set_gets_a_did_you_mean(tmp_path):
    problems = _problems(tmp_path, "modules/mcas.yaml", "{medication: cromolyn}", "{medication: cromolin}")
    assert problems == ["modules/mcas.yaml: rule mcas.cromolyn-onset: when.all[0].medication: unknown value set 'cromolin' "
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
                        "mcas-back-pain#cromolyn-onsets (did you mean 'cromolyn-onset'?)"]


def test_a_failing_case_says_which_condition_held_and_which_did_not(app):
    from collections import Counter

    from casebuilder import explain_case

    case = {"id": "eye-drops", "rule": "mcas.cromolyn-onset", "hook": "order-select", "patient": "mcas-adult",
            "drafts": [{"medication": {"rxcui": "831109", "text": "cromolyn sodium 40 MG/ML Ophthalmic Solution"}}],
            "expect": [{"rule": "mcas.cromolyn-onset", "indicator": "info"}, {"rule": "mcas.cromolyn-onsett", "indicator": "info"}]}
    text = explain_case(app, case, Counter(), Counter((e["rule"], e["indicator"]) for e in case["expect"]))
    assert "held: {medication: cromolyn} (Draft order: cromolyn sodium 40 MG/ML Ophthalmic Solution (RxNorm 831109))" in text
    assert "not held: {route: [oral]} (route ophthalmic not in [oral])" in text
    assert "=> does not fire" in text
    assert "mcas.cromolyn-onsett: no such rule (did you mean 'mcas.cromolyn-onset'?)" in text


def test_evaluate_explain_prints_the_same_explanation(runner):
    from helpers import FIXTURES

    from cds_service.cli import main

    request = FIXTURES / "requests" / "order-select" / "mcas-adult--morphine.json"
    result = runner.invoke(main, ["evaluate", str(request), "--now", "2026-11-23", "--explain", "mcas.cromolyn-onset"])
    assert result.exit_code == 1, result.output
    assert "not held: {medication: cromolyn} (morphine sulfate 15 MG Oral Tablet (892582) is not in value set cromolyn)" \
        in result.output


# --- the worked example of docs/knowledge.md, the author commands ---------------------------------

EXAMPLE = re.compile(r"<!-- example: (create|append) (\S+) -->\n```\w*\n(.*?)```", re.S)


def _copies(tmp_path: Path) -> tuple[Path, Path]:
    knowledge, cases = tmp_path / "knowledge", tmp_path / "tests" / "cases"
    shutil.copytree(KNOWLEDGE, knowledge)
    shutil.copytree(ROOT / "tests" / "cases", cases)
    return knowledge, cases


def _example_text(n: int) -> str:
    """The section of docs/knowledge.md that holds worked example ``n`` (1 or 2)."""
    text = (ROOT / "docs" / "knowledge.md").read_text()
    first, second = text.split("## Worked example 2", 1)
    return first if n == 1 else second.split("\n## ", 1)[0]


def _apply(tmp_path: Path, steps: list[tuple[str, str, str]]) -> None:
    for verb, path, block in steps:
        target = tmp_path / path
        target.write_text(block if verb == "create" else target.read_text().rstrip("\n") + "\n" + block)


def test_the_worked_example_in_the_docs_works_end_to_end(tmp_path, runner):
    from casebuilder import build_request
    from helpers import NOW

    from cds_service.cli import main
    from cds_service.knowledge.evaluate import evaluate_request
    from cds_service.knowledge.loader import rule_table

    knowledge, cases = _copies(tmp_path)
    steps = EXAMPLE.findall(_example_text(1))
    assert [(verb, path) for verb, path, _ in steps] == [
        ("create", "knowledge/valuesets/vancomycin.json"), ("append", "knowledge/guidelines.yaml"),
        ("append", "knowledge/modules/mcas.yaml"), ("append", "tests/cases/mcas.yaml")]
    _apply(tmp_path, steps)
    result = runner.invoke(main, ["knowledge", "add-products", "--ingredient", "11124", "--rrf",
                                  str(ROOT / "tests" / "rrf"), "--source", "RXP"], env={"CDS_KNOWLEDGE_DIR": str(knowledge)})
    assert result.exit_code == 0, result.output
    assert "added 4 products (201848, 313570, 1807511, 1807513)" in result.output

    loaded = load_knowledge(knowledge)
    assert "| `mcas.vancomycin-infusion` | OS SG | IV vancomycin in mast cell disease | warning | " \
           "local-mcas-practice#vancomycin-slow-infusion |" in rule_table(loaded)
    example = [c for c in yaml.safe_load((cases / "mcas.yaml").read_text())["cases"] if "vancomycin" in c["id"]]
    assert len(example) == 2
    for case in example:
        cards = evaluate_request(loaded, build_request(case), NOW, "http://localhost/rules").cards
        assert [(c["source"]["topic"]["code"], c["indicator"]) for c in cards] == \
               [(e["rule"], e["indicator"]) for e in case["expect"]], case["id"]
        for card in cards:
            assert card["source"]["label"] == "Local practice: mast cell disease (P&T committee)"
            assert "MCAS (guideline summary" not in card["detail"]


def test_a_local_source_must_say_so_on_its_label(tmp_path):
    problems = _problems(tmp_path, "guidelines.yaml", '    label: "Back pain in MCAS (guideline summary)"',
                         '    kind: local\n    approved_by: P&T committee\n    label: "Back pain in MCAS (guideline summary)"')
    assert problems == ["guidelines.yaml: guideline mcas-back-pain: label: a local source's label must say 'local': "
                        "cards show it as their source"]


def test_new_rule_writes_a_skeleton_that_the_check_refuses_until_filled(tmp_path, runner):
    from cds_service.cli import main

    knowledge, cases = _copies(tmp_path)
    result = runner.invoke(main, ["knowledge", "new-rule", "mcas", "mcas.vancomycin-infusion", "--cases-dir", str(cases)],
                           env={"CDS_KNOWLEDGE_DIR": str(knowledge)})
    assert result.exit_code == 0, result.output
    module = yaml.safe_load((knowledge / "modules" / "mcas.yaml").read_text())
    assert module["rules"][-1]["id"] == "mcas.vancomycin-infusion"
    stubs = [c for c in yaml.safe_load((cases / "mcas.yaml").read_text())["cases"] if c["rule"] == "mcas.vancomycin-infusion"]
    assert [c["id"] for c in stubs] == ["mcas-vancomycin-infusion-fires", "mcas-vancomycin-infusion-silent"]
    assert stubs[0]["expect"] and stubs[1]["expect"] == []
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(knowledge)
    todo = [p for p in error.value.problems if "still says TODO" in p]
    assert "modules/mcas.yaml: rule mcas.vancomycin-infusion: title: still says TODO: fill it in " \
           "(cds-service knowledge new-rule left it)" in todo and len(todo) == 6
    again = runner.invoke(main, ["knowledge", "new-rule", "mcas", "mcas.vancomycin-infusion", "--cases-dir", str(cases)],
                          env={"CDS_KNOWLEDGE_DIR": str(knowledge)})
    assert again.exit_code != 0 and "already has a rule mcas.vancomycin-infusion" in again.output


def test_table_write_replaces_only_the_table(tmp_path, runner):
    from cds_service.cli import main

    doc = tmp_path / "knowledge.md"
    doc.write_text("# Title\n\n<!-- rules:start -->\n| stale |\n<!-- rules:end -->\n\nafter\n")
    result = runner.invoke(main, ["knowledge", "table", "--write", str(doc)])
    assert result.exit_code == 0 and "rule table updated" in result.output, result.output
    text = doc.read_text()
    assert "| stale |" not in text and "| `mcas.cromolyn-onset` |" in text and text.endswith("<!-- rules:end -->\n\nafter\n")
    assert "already current" in runner.invoke(main, ["knowledge", "table", "--write", str(doc)]).output


def test_add_products_keeps_the_table_when_the_result_would_not_load(tmp_path, runner):
    from cds_service.cli import main

    knowledge, _ = _copies(tmp_path)
    before = (knowledge / "rxnorm-products.json").read_text()
    result = runner.invoke(main, ["knowledge", "add-products", "--ingredient", "11124", "--rrf",
                                  str(ROOT / "tests" / "rrf"), "--source", "NO-SUCH-SOURCE"],
                           env={"CDS_KNOWLEDGE_DIR": str(knowledge)})
    assert result.exit_code != 0 and "source 'NO-SUCH-SOURCE' is not in terminology-sources.yaml" in result.output
    assert (knowledge / "rxnorm-products.json").read_text() == before


def test_every_vocabulary_word_is_listed_in_the_docs():
    from cds_service.core.conditions import condition_words
    from cds_service.core.dosing import ROUTES

    text = (ROOT / "docs" / "knowledge.md").read_text()
    table = re.search(r"\| condition \| argument .*?\n\n", text, re.S).group(0)
    listed = set(re.findall(r"^\| `(\w+)`(?: / `(\w+)`)?", table, re.M))
    assert {w for pair in listed for w in pair if w} == set(condition_words())
    routes = re.search(r"^\| `route` and `active_medication.routes` \| (.*)$", text, re.M).group(1)
    assert re.findall(r"`(\w+)`", routes.split("(")[0]) == list(ROUTES)


def test_file_headers_point_only_at_files_in_the_repository():
    """A header that sends a reader to a note outside the repository leaves them stranded."""
    names = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    headers = [*ROOT.glob("cds_service/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("tests/cases/**/*.yaml"),
               *ROOT.glob("knowledge/**/*.yaml"), *ROOT.glob("bench/**/*.py"), *ROOT.glob("fhir_fixtures/*.md")]
    stranded = []
    for path in headers:
        head = "\n".join(path.read_text("utf-8").splitlines()[:25])
        for ref in set(re.findall(r"[\w./-]*\w\.md\b", head)):
            if not ((ROOT / ref).exists() if "/" in ref else ref in names):
                stranded.append(f"{path.relative_to(ROOT)}: {ref}")
    assert stranded == []


def test_the_schema_and_the_cards_share_one_summary_limit():
    import json

    from cds_service.core.cards import SUMMARY_LIMIT

    schema = json.loads((KNOWLEDGE / "schema" / "module.schema.json").read_text())
    assert schema["$defs"]["rule"]["properties"]["card"]["properties"]["summary"]["maxLength"] == SUMMARY_LIMIT == 139


def test_the_second_worked_example_a_two_tier_lab_rule_works_from_the_docs_alone(tmp_path, runner):
    """Applied as an author would: every block of example 2, then knowledge check and knowledge
    test RULE, with no failed run the docs did not predict."""
    from helpers import FIXTURES, NOW

    from cds_service.cli import main
    from cds_service.knowledge.cases import read_cases, run_case
    from cds_service.knowledge.discovery import prefetch_templates
    from cds_service.knowledge.loader import rule_table

    knowledge, cases = _copies(tmp_path)
    steps = EXAMPLE.findall(_example_text(2))
    assert [(verb, path) for verb, path, _ in steps] == [
        ("append", "knowledge/terminology-sources.yaml"), ("create", "knowledge/valuesets/egfr.json"),
        ("append", "knowledge/guidelines.yaml"), ("append", "knowledge/modules/ms-lbp.yaml"),
        ("create", "tests/cases/ms-lbp-nsaid-egfr.yaml")]
    _apply(tmp_path, steps)
    env = {"CDS_KNOWLEDGE_DIR": str(knowledge), "CDS_RULE_CASES_DIR": str(cases), "CDS_PREVIEW_FIXTURES_DIR": str(FIXTURES)}
    check = runner.invoke(main, ["knowledge", "check"], env=env)
    assert check.exit_code == 0 and '"status": "ok"' in check.output, check.output
    tested = runner.invoke(main, ["knowledge", "test", "ms-lbp.nsaid-reduced-egfr"], env=env)
    assert tested.exit_code == 0 and "5 case(s) pass" in tested.output, tested.output

    loaded = load_knowledge(knowledge)
    assert "| `ms-lbp.nsaid-reduced-egfr` | OS SG | NSAID with reduced kidney function (eGFR) in MS | warning/critical |" \
        in rule_table(loaded)
    order_select = next(s for s in loaded.services.values() if s.hook == "order-select")
    assert "http://loinc.org|98979-8" in prefetch_templates(order_select, loaded.terminology)["observations"]
    example = [c for c in read_cases(cases, FIXTURES) if c["rule"] == "ms-lbp.nsaid-reduced-egfr"]
    outcomes = {c["id"]: run_case(loaded, c, FIXTURES, NOW) for c in example}
    assert {k: o.problems for k, o in outcomes.items()} == {k: [] for k in outcomes}
    critical = outcomes["ms-nsaid-egfr-25-critical"].cards[0]
    assert critical["source"]["label"] == "Local practice: drugs and kidney function (P&T committee)"


def test_an_encounter_diagnosis_recency_of_an_unknown_value_set_is_refused(tmp_path):
    problems = _problems(tmp_path, "dialects.yaml", "encounter_diagnosis_recent_days_for: {pregnancy: 280}",
                         "encounter_diagnosis_recent_days_for: {pregnancey: 280}")
    assert problems == ["dialects.yaml: $.conditions.encounter_diagnosis_recent_days_for: unknown value set 'pregnancey'"]
