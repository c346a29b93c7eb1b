"""cds_service.core.rules: the compiler turns a module's validated YAML into rules, and tells a
knowledge author every problem at once (file, path, fix) instead of stopping at the first."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from coreknowledge import knowledge

from cds_service.core.rules import Problems, RuleCompiler


def _yaml(name: str) -> Any:
    return yaml.safe_load((knowledge().directory / name).read_text("utf-8"))


@pytest.fixture(scope="module")
def mcas() -> dict[str, Any]:
    return _yaml("modules/mcas.yaml")


def _compiler(problems: Problems) -> RuleCompiler:
    thresholds = (_yaml("observation-thresholds.yaml") or {}).get("thresholds", {})
    reasons = _yaml("services.yaml")["override_reasons"]["codes"]
    return RuleCompiler(knowledge().terminology, thresholds, _yaml("guidelines.yaml")["guidelines"], reasons,
                        problems, screen_reads=(frozenset({"allergies"}), frozenset({"screen-set"})))


def _rule(mcas: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return copy.deepcopy(next(r for r in mcas["rules"] if r["id"] == rule_id))


def _problems_of(mcas: dict[str, Any], rule: dict[str, Any]) -> Problems:
    problems = Problems()
    _compiler(problems).rule("mcas", rule, "modules/mcas.yaml", f"rule {rule['id']}:")
    return problems


def test_the_repositorys_modules_compile_without_a_problem(mcas):
    problems = Problems()
    module = _compiler(problems).module("mcas.yaml", copy.deepcopy(mcas))
    assert list(problems) == []
    assert [r.id for r in module.rules] == [r["id"] for r in mcas["rules"]]
    assert all(r.module == "mcas" and r.id.startswith("mcas.") for r in module.rules)


def test_a_rule_reads_what_its_conditions_read(mcas):
    problems = Problems()
    rule = _compiler(problems).rule("mcas", _rule(mcas, "mcas.nsaid-caution"), "f", "p")
    assert {"nsaids-non-aspirin", "nsaid-allergy"} <= rule.valuesets
    assert rule.indicator == "info" and [i for _, i in rule.indicator_when] == ["warning"]
    assert [code for code, _ in rule.override_reasons] == ["tolerated-before", "benefit-outweighs-risk",
                                                          "palliative-care"]


def test_a_rule_that_creates_a_medication_also_reads_what_the_screen_reads(mcas):
    problems = Problems()
    compiler = _compiler(problems)
    creating = compiler.rule("mcas", _rule(mcas, "mcas.neuromuscular-blocker"), "f", "p")
    assert "screen-set" in creating.valuesets and "allergies" in creating.wants | creating.needs
    plain = compiler.rule("mcas", _rule(mcas, "mcas.aspirin-controlled-setting"), "f", "p")
    assert "screen-set" not in plain.valuesets


@pytest.mark.parametrize("edit, expected", [
    (lambda r: r["card"].update(summary="{patient} takes {item}"), "unknown placeholder {patient}"),
    (lambda r: r["card"].update(detail="TODO: write the detail"), "still says TODO"),
    (lambda r: r.update(override_reasons=["tolerated-befor"]), "unknown override reason 'tolerated-befor'"),
    (lambda r: r.pop("override_reasons"), "needs override_reasons"),
    (lambda r: r.update(id="ms-lbp.nsaid-caution"), "start with 'mcas.'"),
    (lambda r: r["reference"].update(recommendation="no-such-thing"), "unknown recommendation"),
    (lambda r: r.update(when={"medication": "no-such-valueset"}), "when"),
])
def test_each_authoring_mistake_is_reported_with_where_it_is(mcas, edit, expected):
    rule = _rule(mcas, "mcas.nsaid-caution")
    edit(rule)
    problems = _problems_of(mcas, rule)
    assert problems and any(expected in p for p in problems), list(problems)
    assert all(p.startswith(f"modules/mcas.yaml: rule {rule['id']}") for p in problems)


def test_a_typo_in_a_reason_suggests_the_known_one(mcas):
    rule = _rule(mcas, "mcas.nsaid-caution")
    rule["override_reasons"] = ["tolerated-befor"]
    assert any("tolerated-before" in p.split("'tolerated-befor'", 1)[1] for p in _problems_of(mcas, rule))


def test_suggestion_mistakes_are_reported(mcas):
    rule = _rule(mcas, "mcas.neuromuscular-blocker")
    items = rule["suggestions"]["items"]
    items[0]["actions"][1]["create_medication"]["rxcui"] = "0000000"
    items[0]["recommended"] = items[1]["recommended"] = True
    rule["for_each"] = {}
    problems = _problems_of(mcas, rule)
    assert any("rxcui 0000000 is not in rxnorm-products.json" in p for p in problems)
    assert any("at-most-one allows one recommended" in p for p in problems)
    assert any("delete_item needs a rule that looks at draft orders" in p for p in problems)


def test_all_problems_of_a_module_are_reported_at_once(mcas):
    data = copy.deepcopy(mcas)
    data["rules"][0]["card"]["summary"] = "{nope}"
    data["rules"][1]["override_reasons"] = ["nope"]
    problems = Problems()
    _compiler(problems).module("mast-cell.yaml", data)
    assert len(problems) >= 3
    assert any("must live in mcas.yaml" in p for p in problems)


def test_problems_read_file_path_message():
    problems = Problems()
    problems.add("modules/x.yaml", "rule x.y:", "bad")
    assert problems == ["modules/x.yaml: rule x.y: bad"]


def test_the_knowledge_summary_counts_what_was_compiled():
    k = knowledge()
    summary = k.summary()
    assert summary["modules"] == len(k.modules) == 2
    assert summary["rules"] == sum(len(m.rules) for m in k.modules.values()) > 0
    assert summary["release"] == k.release != ""
    assert set(k.services) == {"back-pain-patient-view", "back-pain-order-select", "back-pain-order-sign"}
