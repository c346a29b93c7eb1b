"""A site's choices per rule, as the decision applies them (loaded by ``knowledge/site.py``).

Sans-IO. Each rule is ``active`` (its cards are shown), ``silent`` (evaluated on every call,
its findings kept as "would have shown" and never returned) or ``off`` (not evaluated). A rule
the site does not name is active. ``override_days`` is the site's override window per rule,
in days (0: an override never hides that rule's card).
"""
from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("active", "silent", "off")


@dataclass(frozen=True)
class SitePolicy:
    modes: dict[str, str] = field(default_factory=dict)  # rule id -> silent | off (active ones left out)
    override_days: dict[str, int] = field(default_factory=dict)  # rule id -> days
    notes: dict[str, str] = field(default_factory=dict)  # rule id -> the committee's note (rule page)
    source: str = ""  # the overlay file, for the rule page and logs

    def mode(self, rule_id: str) -> str:
        return self.modes.get(rule_id, "active")

    @property
    def silent(self) -> frozenset[str]:
        return frozenset(r for r, m in self.modes.items() if m == "silent")

    @property
    def off(self) -> frozenset[str]:
        return frozenset(r for r, m in self.modes.items() if m == "off")


NO_SITE = SitePolicy()
