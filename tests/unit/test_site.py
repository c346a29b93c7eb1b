"""cds_service.core.site: a site's choice per rule (active, silent, off); a rule it does not name is
active."""
from __future__ import annotations

from cds_service.core.site import MODES, NO_SITE, SitePolicy


def test_a_rule_the_site_does_not_name_is_active():
    assert NO_SITE.mode("mcas.anything") == "active"
    assert SitePolicy(modes={"a": "off"}).mode("b") == "active"
    assert NO_SITE.silent == frozenset() and NO_SITE.off == frozenset()


def test_silent_and_off_partition_the_named_rules_by_mode():
    policy = SitePolicy(modes={"a": "silent", "b": "off", "c": "silent", "d": "active"})
    assert policy.silent == {"a", "c"}
    assert policy.off == {"b"}
    assert policy.silent.isdisjoint(policy.off)
    assert all(policy.mode(rule) in MODES for rule in "abcdz")
    assert policy.mode("d") == "active" and "d" not in policy.silent | policy.off
