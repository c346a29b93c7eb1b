"""What a knowledge author sees for each mistake of issue 22: the file, the rule or case, the key
path and the fix, from `knowledge check`, `knowledge test RULE` and `evaluate`; lab units
matched as UCUM means them; explain says why a result did not count."""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from case_cards import CASES
from helpers import FIXTURES, NOW, ROOT

from cds_service.errors import KnowledgeError
from cds_service.knowledge.cases import CaseError, read_cases, run_case
from cds_service.knowledge.loader import load_knowledge
from cds_service.settings import knowledge_dir

KNOWLEDGE = knowledge_dir(os.environ.get("CDS_KNOWLEDGE_DIR"))
# The weight band of the auto-injector note (the first of its two places in mcas.yaml).
WEIGHT = "{observation_below: {valueset: body-weight, value: 30, units: [kg]}}"
NOTE = "rule mcas.epinephrine-autoinjector: card.notes[0].when.all[0].not.any[0]"


def _edited(tmp_path: Path, file: str, old: str, new: str) -> Path:
    target = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE, target)
    path = target / file
    text = path.read_text()
    assert old in text, f"the test's anchor is gone from {file}"
    path.write_text(text.replace(old, new, 1))
    return target


def _problems(tmp_path: Path, file: str, old: str, new: str) -> list[str]:
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(_edited(tmp_path, file, old, new))
    return error.value.problems


@pytest.mark.parametrize("new, message", [
    (WEIGHT.replace("observation_below", "observation_less_than"),
     "'observation_less_than' is not one of: "),
    (WEIGHT.replace("value: 30", "when: 30"),
     f"modules/mcas.yaml: {NOTE}.observation_below.when: unknown key 'when' (keys: valueset, value; optional: units, of, label)"),
    (WEIGHT.replace("value: 30, ", ""),
     f"modules/mcas.yaml: {NOTE}.observation_below: missing key 'value' (keys: valueset, value; optional: units, of, label)"),
    (WEIGHT.replace("value: 30", "value: '< 80'"),
     f"modules/mcas.yaml: {NOTE}.observation_below.value: '< 80' is not a number: write the number alone (e.g. value: 30); "
     "the condition word says the comparison"),
    (WEIGHT.replace("[kg]", "[kilograms]"),
     f"modules/mcas.yaml: {NOTE}.observation_below.units[0]: 'kilograms' is not a UCUM code: write 'kg' "
     "(results written 'kilograms' still count)"),
])
def test_a_mistake_inside_a_condition_names_the_full_key_path_and_the_fix(tmp_path, new, message):
    problems = _problems(tmp_path, "modules/mcas.yaml", WEIGHT, new)
    assert any(p.startswith(message) or (message in p) for p in problems), problems


RECENT = "{active_medication: {valueset: epinephrine-auto-injectors, recent_days: 365}}"


@pytest.mark.parametrize("old, new, message", [
    (RECENT, RECENT.replace("recent_days", "recentdays"),
     "modules/mcas.yaml: rule mcas.epinephrine-autoinjector: when.not.active_medication.recentdays: unknown key "
     "'recentdays' (did you mean 'recent_days'?) (keys: valueset; optional: label, routes, for_days_at_least, recent_days)"),
    (RECENT, RECENT.replace("365", "'a year'"),
     "modules/mcas.yaml: rule mcas.epinephrine-autoinjector: when.not.active_medication.recent_days: 'a year' is not a "
     "number: write the number alone (e.g. recent_days: 30)"),
    ("{age_at_least: 18}", "{age_at_least: '18 years'}",
     "modules/mcas.yaml: rule mcas.epinephrine-autoinjector: card.notes[0].when.all[1].not.age_at_least: '18 years' is "
     "not a number: write the number alone, e.g. {age_at_least: 18}"),
])
def test_other_words_refuse_unknown_keys_and_texts_for_numbers(tmp_path, old, new, message):
    assert _problems(tmp_path, "modules/mcas.yaml", old, new) == [message]


def test_did_you_mean_keeps_the_direction_of_a_comparison(tmp_path):
    problems = _problems(tmp_path, "modules/mcas.yaml", WEIGHT, WEIGHT.replace("observation_below", "observation_less_than"))
    assert problems[0].endswith("(did you mean 'observation_below'?)"), problems[0]
    above = _problems(tmp_path / "2", "modules/mcas.yaml", WEIGHT, WEIGHT.replace("observation_below", "observation_greater_than"))
    assert "(did you mean 'observation_at_least'?" in above[0]


def test_a_valueset_error_names_its_place_inside_the_resource(tmp_path):
    path = "valuesets/body-weight.json"
    resource = json.loads((KNOWLEDGE / path).read_text())
    broken = copy.deepcopy(resource)
    broken["compose"]["include"][0]["concept"][0] = "29463-7"
    problems = _problems(tmp_path, path, (KNOWLEDGE / path).read_text(), json.dumps(broken))
    assert problems == ["valuesets/body-weight.json: $.compose.include[0].concept[0]: not a valid FHIR R4 ValueSet: an "
                        "object is expected here, not the bare string '29463-7' (e.g. {\"code\": \"29463-7\", \"display\": \"...\"})"]


def test_a_case_with_code_instead_of_loinc_names_the_case_and_the_fix(tmp_path):
    case = {"id": "weight-by-code", "rule": "mcas.epinephrine-autoinjector", "description": "d", "hook": "patient-view",
            "patient": "mcas-adult", "record": {"observations": [{"code": "29463-7", "value": 22, "date": "2026-10-01"}]},
            "expect": []}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({"cases": [case]}))
    with pytest.raises(CaseError) as error:
        read_cases(tmp_path, FIXTURES)
    assert error.value.problems == [
        "x.yaml: case weight-by-code: record.observations[0].code: unknown key (an observation names its LOINC code with "
        "loinc: (e.g. loinc: 29463-7))",
        "x.yaml: case weight-by-code: record.observations[0]: missing key 'loinc' (keys: loinc, date; optional: "
        "value, result, text, unit, unit_text, interpretation, comparator, status)"]


def test_evaluate_on_broken_knowledge_exits_2_with_the_text_of_knowledge_check(tmp_path, runner):
    from cds_service.cli import main

    broken = _edited(tmp_path, "modules/mcas.yaml", WEIGHT, WEIGHT.replace("value: 30", "value: '< 80'"))
    env = {"CDS_KNOWLEDGE_DIR": str(broken)}
    request = FIXTURES / "requests" / "order-select" / "mcas-adult--morphine.json"
    evaluated = runner.invoke(main, ["evaluate", str(request)], env=env)
    checked = runner.invoke(main, ["knowledge", "check"], env=env)
    assert evaluated.exit_code == 2 and checked.exit_code == 1
    assert "'< 80' is not a number" in evaluated.output and evaluated.output == checked.output


def _without_negative_cases(tmp_path: Path, rule: str) -> Path:
    cases = tmp_path / "cases"
    cases.mkdir()
    for path in sorted((ROOT / "tests" / "cases").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        data["cases"] = [c for c in data["cases"] if not (c["rule"] == rule and not c["expect"])]
        (cases / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return cases


def test_knowledge_check_and_knowledge_test_catch_a_rule_without_a_negative_case(tmp_path, runner):
    from cds_service.cli import main

    env = {"CDS_RULE_CASES_DIR": str(_without_negative_cases(tmp_path, "mcas.cromolyn-onset")),
           "CDS_PREVIEW_FIXTURES_DIR": str(FIXTURES)}
    message = ("modules/mcas.yaml: rule mcas.cromolyn-onset: no negative case on order-select for a patient its module "
               "applies to: add the closest case with hook: order-select in which its card must not show")
    checked = runner.invoke(main, ["knowledge", "check"], env=env)
    assert checked.exit_code == 1 and message in checked.output, checked.output
    tested = runner.invoke(main, ["knowledge", "test", "mcas.cromolyn-onset"], env=env)
    assert tested.exit_code == 1 and message in tested.output, tested.output
    other = runner.invoke(main, ["knowledge", "test", "mcas.neuromuscular-blocker"], env=env)
    assert other.exit_code == 0, other.output


def test_knowledge_check_refuses_a_detail_that_does_not_start_with_what_to_do(tmp_path, runner):
    from cds_service.cli import main

    broken = _edited(tmp_path, "modules/mcas.yaml", "        Ask the patient to take it", "        Why wait: ask the patient to take it")
    checked = runner.invoke(main, ["knowledge", "check"], env={"CDS_KNOWLEDGE_DIR": str(broken)})
    assert checked.exit_code == 1
    assert "modules/mcas.yaml: rule mcas.cromolyn-onset: card.detail: starts with 'Why'; start with what to do, one of: " \
           "Add, Advise" in checked.output, checked.output
    fixed = _edited(tmp_path / "2", "modules/mcas.yaml", "        Ask the patient to take it", "        Do not judge it early: ask the patient to take it")
    assert runner.invoke(main, ["knowledge", "check"], env={"CDS_KNOWLEDGE_DIR": str(fixed)}).exit_code == 0


# --- units: the same weight written three ways counts; another unit never does ------------------

def _weight_case(**unit):
    case = copy.deepcopy(next(c for c in CASES if c["id"] == "mcas-epinephrine-child-22-kg"))
    weight = next(o for o in case["record"]["observations"] if o["loinc"] == "29463-7")
    weight.pop("unit")
    weight.update(unit)
    return case


@pytest.mark.parametrize("unit", [{"unit": "kg"}, {"unit": None, "unit_text": "kg"}, {"unit": None, "unit_text": "kilograms"},
                                  {"unit": "kg", "unit_text": "kilogram"}])
def test_a_weight_counts_whether_its_unit_is_the_ucum_code_or_the_text(app, unit):
    outcome = run_case(app.extensions["cds"].knowledge, _weight_case(**unit), FIXTURES, NOW)
    assert outcome.problems == []


def test_a_weight_in_another_unit_does_not_count_and_explain_says_why(app):
    knowledge = app.extensions["cds"].knowledge
    outcome = run_case(knowledge, _weight_case(unit="[lb_av]"), FIXTURES, NOW)
    assert outcome.problems, "22 [lb_av] must not be read as 22 kg"
    assert "(found Body weight: 22 lb on 2026-10-01; its unit '[lb_av]' is not one of [kg], so it does not count)" \
        in outcome.problems[-1]


def test_explain_says_why_the_indicator_and_which_notes_and_suggestions_apply(app):
    outcome = run_case(app.extensions["cds"].knowledge, _weight_case(unit="kg"), FIXTURES, NOW)
    from cds_service.knowledge.cases import build_request
    from cds_service.knowledge.evaluate import explain_request

    text = explain_request(app.extensions["cds"].knowledge, build_request(outcome.case, FIXTURES),
                           ["mcas.epinephrine-autoinjector"], NOW)
    assert "=> indicator warning" in text
    assert "suggestion 'Order two 0.15 mg epinephrine auto-injectors' shown when: held" in text
    assert "held: {observation_below: {valueset: body-weight, value: 30, units: [kg]}} (Most recent Body weight: 22 kg" in text


# --- brands from RxNorm's brand relations --------------------------------------------------------

def test_add_brand_rebuilds_a_brand_row_from_a_release_with_its_source(tmp_path, runner):
    from cds_service.cli import main

    knowledge = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE, knowledge)
    path = knowledge / "rxnorm-brands.json"
    table = json.loads(path.read_text())
    abstral = next(b for b in table["brands"] if b["name"] == "Abstral")
    table["brands"].remove(abstral)
    path.write_text(json.dumps(table, indent=1, ensure_ascii=False) + "\n")
    args = ["knowledge", "add-brand", "--ingredient", "4337", "--valueset", "opioid-alternatives-mcas",
            "--rrf", str(ROOT / "tests" / "rrf"), "--source", "RXP"]
    without = path.read_text()
    wrong_set = runner.invoke(main, [*args[:5], "cromolyn", *args[6:]], env={"CDS_KNOWLEDGE_DIR": str(knowledge)})
    assert wrong_set.exit_code != 0 and "ingredient 4337 is not in value set 'cromolyn'" in wrong_set.output
    assert path.read_text() == without  # kept only when the knowledge still loads
    result = runner.invoke(main, args, env={"CDS_KNOWLEDGE_DIR": str(knowledge)})
    assert result.exit_code == 0 and "added 1 brands (Abstral)" in result.output, result.output
    rebuilt = next(b for b in json.loads(path.read_text())["brands"] if b["name"] == "Abstral")
    assert {**rebuilt, "sbds": rebuilt["sbds"][:1]} == {**abstral, "sbds": abstral["sbds"][:1]}  # the fixture has one SBD


def test_a_brand_naming_two_ingredients_is_left_out():
    """Synthetic identifiers (not RxNorm codes): a combination product's brand links to two ingredients."""
    from cds_service.knowledge.products import Release, brands_for

    release = Release()
    for rxcui, tty, name in [("1", "IN", "first"), ("2", "IN", "second"), ("10", "BN", "Single"), ("11", "BN", "Combo")]:
        release.concepts[rxcui] = (tty, name)
    for one, two in [("1", "10"), ("1", "11"), ("2", "11")]:
        release.links[one].add(two)
        release.links[two].add(one)
    rows, left_out = brands_for(release, "1", ["some-set"], "KEY")
    assert [r["name"] for r in rows] == ["Single"] and left_out == ["Combo"]


def test_knowledge_test_catches_an_unsafe_suggestion(tmp_path, runner):
    """The fentanyl-injection swap offered whatever the route: an oral morphine draft would get a
    one-click injection, which knowledge test reports as the test suite does."""
    from cds_service.cli import main

    knowledge = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE, knowledge)
    path = knowledge / "modules" / "mcas.yaml"
    module = yaml.safe_load(path.read_text())
    rule = next(r for r in module["rules"] if r["id"] == "mcas.histamine-releasing-opioid")
    for item in rule["suggestions"]["items"]:
        item.pop("when", None)
    path.write_text(yaml.safe_dump(module, sort_keys=False))
    result = runner.invoke(main, ["knowledge", "test", "mcas.histamine-releasing-opioid"],
                           env={"CDS_KNOWLEDGE_DIR": str(knowledge)})
    assert result.exit_code == 1 and "replaces a oral order with a parenteral product" in result.output, result.output


@pytest.mark.parametrize("named, flagged", [(True, False), (False, True)])
def test_a_delete_is_checked_against_the_card_as_read_so_a_bracketed_brand_name_passes(app, named, flagged):
    from cds_service.core.cards import escape
    from cds_service.knowledge.cases import build_request
    from cds_service.knowledge.safety import suggestion_violations

    name = "dalfampridine 10 MG 12HR Extended Release Oral Tablet [Ampyra]"  # an order known by its text only
    request = build_request({"hook": "order-sign", "patient": "ms-lbp-adult", "drafts": [{"medication": {"text": name}}]},
                            FIXTURES)
    card = {"source": {"topic": {"code": "ms-lbp.example"}}, "summary": "s",
            "detail": f"Review {escape(name) if named else 'the order'}.",
            "suggestions": [{"label": "Remove", "actions": [{"type": "delete", "resourceId": "MedicationRequest/request-1"}]}]}
    found = suggestion_violations("c", request, [card], app.extensions["cds"].knowledge, NOW)
    assert any("which the card does not name" in v for v in found) is flagged, found
