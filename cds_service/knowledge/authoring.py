"""Helpers for knowledge authors: a new rule's skeleton and cases, and the rule table in the docs.

``new_rule`` appends a commented rule skeleton to ``modules/<module>.yaml`` and a positive
and a negative case stub to the module's case file. Every value left to fill in is a TODO that
``cds-service knowledge check`` (or the case tests) refuses, so a half-written rule can never
pass as a finished one. ``write_rule_table`` keeps the table of docs/knowledge.md current.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

RULE_ID = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
TABLE = re.compile(r"(<!-- rules:start -->\n)(.*?)(<!-- rules:end -->)", re.S)

SKELETON = """
  # New rule: fill in each TODO (cds-service knowledge check names the ones left).
  # The format, every condition word and a worked example: docs/knowledge.md.
  - id: {rule_id}
    title: TODO what the rule catches, under 120 characters
    hooks: [order-select, order-sign]      # patient-view | order-select | order-sign
    for_each:                              # omit for a patient-level rule (patient-view)
      order-select: draft_medications      # draft_medications | draft_service_requests | active_medications
      order-sign: draft_medications
    when:
      all:
        - {{medication: TODO-value-set-id}}  # a file in knowledge/valuesets/, without .json
        - {{route: [oral]}}                  # oral | parenteral | topical | nasal | inhaled | ophthalmic | rectal | transdermal
    indicator: info                        # info | warning | critical (warning and critical need override_reasons)
    card:
      summary: "{{item}}: TODO the risk and what to do, under 140 characters once filled"
      detail: >-
        TODO what the clinician should know and do, in your own words (Markdown, no HTML).
    reference: {{guideline: {guideline}, recommendation: TODO-recommendation-id}}
    remarks: TODO why the rule is shaped this way (read on the rule's page by informaticists).
"""

CASES = """
  # --- {rule_id} (stubs from cds-service knowledge new-rule: fill in each TODO) ---
  - id: {slug}-fires
    rule: {rule_id}
    description: TODO the situation in which the card must show
    hook: order-select
    patient: TODO-persona              # a file in fhir_fixtures/patients/, without .json
    drafts: [{{medication: {{rxcui: "TODO", text: TODO product name}}}}]
    expect: [{{rule: {rule_id}, indicator: info}}]
  - id: {slug}-silent
    rule: {rule_id}
    description: TODO the closest situation in which the card must not show
    hook: order-select
    patient: TODO-persona
    drafts: [{{medication: {{rxcui: "TODO", text: TODO product name}}}}]
    expect: []
"""


def new_rule(knowledge: Path, cases: Path, module: str, rule_id: str) -> list[Path]:
    """Append the skeleton and the case stubs; the paths written."""
    module_file = knowledge / "modules" / f"{module}.yaml"
    case_file = cases / f"{module}.yaml"
    if not module_file.exists():
        known = ", ".join(sorted(p.stem for p in (knowledge / "modules").glob("*.yaml")))
        raise ValueError(f"no module file {module_file} (modules: {known})")
    if not RULE_ID.match(rule_id) or not rule_id.startswith(f"{module}."):
        raise ValueError(f"a rule id of module {module} looks like {module}.kebab-case-slug, not {rule_id!r}")
    text = module_file.read_text("utf-8")
    data = yaml.safe_load(text) or {}
    if any(r.get("id") == rule_id for r in data.get("rules", [])):
        raise ValueError(f"{module_file} already has a rule {rule_id}")
    if list(data)[-1:] != ["rules"] or (case_file.exists() and list(yaml.safe_load(case_file.read_text("utf-8")))[-1:] != ["cases"]):
        raise ValueError("the skeleton is appended at the end: rules (and cases) must be the last key of their file")
    _append(module_file, SKELETON.format(rule_id=rule_id, guideline=data.get("guideline", "TODO-guideline")))
    if not case_file.exists():
        case_file.write_text(f"# Cases for module {module} (knowledge/modules/{module}.yaml).\ncases:\n", "utf-8")
    _append(case_file, CASES.format(rule_id=rule_id, slug=rule_id.replace(".", "-")))
    return [module_file, case_file]


def _append(path: Path, block: str) -> None:
    text = path.read_text("utf-8")
    path.write_text(text.rstrip("\n") + "\n" + block, "utf-8")


def write_rule_table(doc: Path, table: str) -> bool:
    """Replace the table between the markers of ``doc``; whether anything changed."""
    text = doc.read_text("utf-8")
    if not TABLE.search(text):
        raise ValueError(f"{doc} has no <!-- rules:start --> ... <!-- rules:end --> markers")
    updated = TABLE.sub(lambda m: m.group(1) + table + m.group(3), text, count=1)
    if updated != text:
        doc.write_text(updated, "utf-8")
    return updated != text
