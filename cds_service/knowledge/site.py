"""The site overlay (``CDS_SITE_CONFIG``): one hospital's choices per rule, checked against the knowledge.

A YAML file the pharmacy and therapeutics committee owns, read at start-up (and again on
SIGHUP, with the knowledge) and by ``cds-service knowledge check``::

    site: Example General Hospital          # optional: shown on the rule pages
    rules:
      mcas.nsaid-caution:
        mode: silent                        # active | silent | off
        override_window_days: 14            # this rule's override window (0: never hidden)
        note: "Silent from 2026-12-01, P&T"  # shown on the rule page

Every problem names the file, the key and the rule id, and stops start-up: an unknown rule id
(a typo would otherwise leave the rule as it was), a wrong mode, or an ``indicator`` that would
lower a card's tier (a site may not make a critical card a warning; the tier is the knowledge's).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cds_service.core.rules import Knowledge, Problems
from cds_service.core.site import MODES, NO_SITE, SitePolicy
from cds_service.errors import KnowledgeError, did_you_mean

SEVERITY = {"critical": 0, "warning": 1, "info": 2}
TOP_KEYS = {"site", "rules"}
RULE_KEYS = {"mode", "override_window_days", "note", "indicator"}


def load_site(path: str | os.PathLike[str] | None, knowledge: Knowledge) -> SitePolicy:
    """The site's policy (``NO_SITE`` when no file is configured); KnowledgeError naming every problem."""
    if not path:
        return NO_SITE
    problems = Problems()
    where = str(path)
    data = _read(Path(path), where, problems)
    policy = _policy(data, where, knowledge, problems) if data is not None else NO_SITE
    if problems:
        raise KnowledgeError(problems)
    return policy


def _read(path: Path, where: str, problems: Problems) -> dict[str, Any] | None:
    if not path.is_file():
        problems.add(where, "$", "the site overlay file does not exist (CDS_SITE_CONFIG)")
        return None
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.add(where, "$", f"not valid YAML: {str(exc).splitlines()[0]}")
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.add(where, "$", "the overlay is a mapping with the keys 'site' and 'rules'")
        return None
    return data


def _policy(data: dict[str, Any], where: str, knowledge: Knowledge, problems: Problems) -> SitePolicy:
    for key in sorted(set(data) - TOP_KEYS, key=str):
        problems.add(where, str(key), f"unknown key{did_you_mean(key, TOP_KEYS)} (known: {sorted(TOP_KEYS)})")
    if "site" in data and not isinstance(data["site"], str):
        problems.add(where, "site", "the site's name is a string")
    rules_spec = data.get("rules") or {}
    if not isinstance(rules_spec, dict):
        problems.add(where, "rules", "a mapping of rule id -> settings")
        return NO_SITE
    rules = {rule.id: rule for module in knowledge.modules.values() for rule in module.rules}
    modes, days, notes = {}, {}, {}
    for rule_id, spec in rules_spec.items():
        key = f"rules.{rule_id}"
        if rule_id not in rules:
            problems.add(where, key, f"rule {rule_id}: no such rule in the knowledge{did_you_mean(rule_id, rules)}")
            continue
        if not isinstance(spec, dict):
            problems.add(where, key, f"rule {rule_id}: give a mapping with any of {sorted(RULE_KEYS)}")
            continue
        for unknown in sorted(set(spec) - RULE_KEYS, key=str):
            problems.add(where, f"{key}.{unknown}", f"rule {rule_id}: unknown key{did_you_mean(unknown, RULE_KEYS)}")
        mode = spec.get("mode", "active")
        if mode is False:  # YAML 1.1 reads an unquoted `off` as false: the author meant off
            mode = "off"
        if mode not in MODES:
            problems.add(where, f"{key}.mode", f"rule {rule_id}: mode is one of {', '.join(MODES)}, not {mode!r}")
        elif mode != "active":
            modes[rule_id] = mode
        if "override_window_days" in spec:
            value = spec["override_window_days"]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3650:
                problems.add(where, f"{key}.override_window_days", f"rule {rule_id}: a whole number of days, 0 to 3650")
            else:
                days[rule_id] = value
        if "note" in spec:
            if not isinstance(spec["note"], str) or not spec["note"].strip() or len(spec["note"]) > 500:
                problems.add(where, f"{key}.note", f"rule {rule_id}: a note is text of 1 to 500 characters")
            else:
                notes[rule_id] = spec["note"].strip()
        if "indicator" in spec:
            _check_tier(spec["indicator"], rules[rule_id], where, f"{key}.indicator", problems)
    return SitePolicy(modes, days, notes, where)


def _check_tier(wanted: Any, rule: Any, where: str, key: str, problems: Problems) -> None:
    """A site may restate a rule's tier, never lower it; raising it is for the knowledge authors."""
    tiers = {rule.indicator, *(ind for _, ind in rule.indicator_when)}
    if wanted not in SEVERITY:
        problems.add(where, key, f"rule {rule.id}: indicator is one of {', '.join(SEVERITY)}")
    elif "critical" in tiers and wanted != "critical":
        problems.add(where, key, f"rule {rule.id}: a site may not lower a critical card's tier to {wanted}")
    elif wanted != rule.indicator:
        problems.add(where, key, f"rule {rule.id}: the card's tier is {rule.indicator}; a site may not change it"
                     " (ask the knowledge authors)")
