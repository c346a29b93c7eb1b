"""The knowledge folder: loader checks, ICD-10-CM codes against the official tabular,
code provenance, and the rule table in docs/knowledge.md."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from cds_service.errors import KnowledgeError
from cds_service.knowledge.loader import CODE_SOURCE, load_knowledge, rule_table
from cds_service.settings import knowledge_dir

ROOT = Path(__file__).resolve().parents[2]
KNOWLEDGE = knowledge_dir(os.environ.get("CDS_KNOWLEDGE_DIR"))
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(KNOWLEDGE)


@pytest.fixture(scope="module")
def icd():
    """The official ICD-10-CM tabular: its import reads the whole of it (~2 s), so it happens in the
    process that runs these tests, not in every process that merely collects this module."""
    import simple_icd_10_cm

    return simple_icd_10_cm


def _valuesets():
    return {p.stem: json.loads(p.read_text()) for p in sorted((KNOWLEDGE / "valuesets").glob("*.json"))}


def _icd_codes():
    for vid, vs in _valuesets().items():
        for part in ("include", "exclude"):
            for inc in vs["compose"].get(part, []):
                if inc.get("system") == ICD10CM:
                    for concept in inc.get("concept", []):
                        yield vid, concept["code"]
                    for flt in inc.get("filter", []):
                        yield vid, flt["value"]


def test_knowledge_loads_and_has_both_modules(knowledge):
    summary = knowledge.summary()
    assert set(knowledge.modules) == {"mcas", "ms-lbp"}
    assert summary["rules"] >= 23 and summary["valuesets"] >= 40


def test_icd10cm_version_is_the_fy2026_tabular(icd):
    assert icd.is_valid_item("G35.A") and not icd.is_leaf("G35")


@pytest.mark.parametrize("vid, code", sorted(set(_icd_codes())))
def test_every_icd10cm_code_is_in_the_official_tabular(icd, vid, code):
    assert icd.is_valid_item(code), f"{vid}: {code} is not an ICD-10-CM FY2026 code"


def test_every_code_names_a_known_source():
    sources = set(yaml.safe_load((KNOWLEDGE / "terminology-sources.yaml").read_text())["sources"])
    for vid, vs in _valuesets().items():
        for part in ("include", "exclude"):
            for inc in vs["compose"].get(part, []):
                for element in inc.get("concept", []) + inc.get("filter", []):
                    keys = {k.strip() for e in element.get("extension", []) if e["url"] == CODE_SOURCE
                            for k in e["valueString"].split(",")}
                    assert keys and keys <= sources, f"{vid}: {element}"


def test_mcas_gate_excludes_hereditary_alpha_tryptasemia(knowledge):
    vs = knowledge.terminology.valuesets["mast-cell-disorders"]
    assert vs.contains(ICD10CM, "D89.42") and vs.contains(ICD10CM, "D89.40")
    assert not vs.contains(ICD10CM, "D89.44")


def test_ms_matches_old_and_new_icd_codes(knowledge):
    vs = knowledge.terminology.valuesets["multiple-sclerosis"]
    assert all(vs.contains(ICD10CM, c) for c in ("G35", "G35.A", "G35.B1", "G35.D", "G35D"))
    assert not vs.contains(ICD10CM, "G36.0")


def test_rule_table_in_docs_is_current(knowledge):
    text = (ROOT / "docs" / "knowledge.md").read_text()
    table = re.search(r"<!-- rules:start -->\n(.*?)<!-- rules:end -->", text, re.S)
    assert table and table.group(1) == rule_table(knowledge), "run: cds-service knowledge table"


def _broken_copy(tmp_path: Path) -> Path:
    target = tmp_path / "knowledge"
    shutil.copytree(KNOWLEDGE, target)
    return target


def test_unknown_value_set_stops_start_up_naming_file_and_path(tmp_path):
    target = _broken_copy(tmp_path)
    module = target / "modules" / "mcas.yaml"
    module.write_text(module.read_text().replace("{medication: mcas-degranulating-neuromuscular-blockers}",
                                                 "{medication: no-such-set}", 1))
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(target)
    assert any("modules/mcas.yaml" in p and "rule mcas.neuromuscular-blocker: when" in p and "no-such-set" in p
               for p in error.value.problems), error.value.problems


def test_duplicate_rule_id_and_unknown_reference_are_refused(tmp_path):
    target = _broken_copy(tmp_path)
    module = target / "modules" / "ms-lbp.yaml"
    text = module.read_text().replace("id: ms-lbp.bed-rest", "id: ms-lbp.red-flags")
    text = text.replace("recommendation: no-routine-imaging}", "recommendation: nowhere}")
    module.write_text(text)
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(target)
    assert any("nowhere" in p for p in error.value.problems)


def test_code_without_source_is_refused(tmp_path):
    target = _broken_copy(tmp_path)
    path = target / "valuesets" / "multiple-sclerosis.json"
    vs = json.loads(path.read_text())
    vs["compose"]["include"][-1]["concept"][0].pop("extension")
    path.write_text(json.dumps(vs))
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(target)
    assert any("valuesets/multiple-sclerosis.json" in p and "code-source" in p for p in error.value.problems)


def test_knowledge_check_command_prints_a_summary(runner):
    from cds_service.cli import main

    result = runner.invoke(main, ["knowledge", "check"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["status"] == "ok" and summary["rules"] >= 23 and summary["codes"] > 100


def _edit_brands(tmp_path: Path, change) -> list[str]:
    target = _broken_copy(tmp_path)
    path = target / "rxnorm-brands.json"
    table = json.loads(path.read_text())
    change(next(b for b in table["brands"] if b["name"] == "MS Contin"))
    path.write_text(json.dumps(table))
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(target)
    return error.value.problems


def test_a_brand_must_map_to_an_ingredient_of_the_value_sets_it_names(tmp_path):
    problems = _edit_brands(tmp_path, lambda brand: brand.update(valuesets=["h2-antihistamines"]))
    assert any("rxnorm-brands.json" in p and "7052 is not in value set 'h2-antihistamines'" in p for p in problems), problems


def test_a_brand_row_with_an_unknown_key_is_refused(tmp_path):
    problems = _edit_brands(tmp_path, lambda brand: brand.update(nickname="Ms C"))
    assert any("rxnorm-brands.json" in p and "nickname" in p for p in problems), problems


def test_the_steroid_card_knows_premedication_by_the_premedication_rules_own_triggers():
    """ms-lbp.corticosteroid-for-back-pain is silent when a steroid is drafted with a procedure
    that mcas.procedure-premedication premedicates for; the two lists live in two module files
    and must stay equal, or a premedicated procedure would again draw a steroid warning."""
    def rule(module, rule_id):
        rules = yaml.safe_load((KNOWLEDGE / "modules" / f"{module}.yaml").read_text())["rules"]
        return next(r for r in rules if r["id"] == rule_id)

    triggers = rule("mcas", "mcas.procedure-premedication")["when"]
    silenced = rule("ms-lbp", "ms-lbp.corticosteroid-for-back-pain")["unless"]["any"]
    assert {"drafted_with": triggers} in silenced


@pytest.mark.parametrize("title", ["2026-11-30", "12"])
def test_a_yaml_value_of_the_wrong_type_is_named_not_a_crash(tmp_path, title):
    """An unquoted date or number where text belongs (YAML reads them as a date and an int) is
    refused with the file, the rule and the key, like any other mistake."""
    target = _broken_copy(tmp_path)
    module = target / "modules" / "mcas.yaml"
    module.write_text(module.read_text().replace(
        "title: Degranulating neuromuscular blocker in mast cell disease", f"title: {title}", 1))
    with pytest.raises(KnowledgeError) as error:
        load_knowledge(target)
    assert any("modules/mcas.yaml" in p and "rule mcas.neuromuscular-blocker: title" in p
               for p in error.value.problems), error.value.problems
