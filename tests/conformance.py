"""Checks every CDS Hooks 2.0 response must pass.

Used by the tests on every response they get, so a rule added later cannot
emit a non-conformant card unnoticed.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

# A canonical lower-case UUID of the RFC 4122 / 9562 layout (its variant bits 10), any version: the
# service sends version 7 (time-ordered, for storage), the spec and the sandbox take any uuid string.
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RAW_HTML = re.compile(r"<\s*/?\s*[A-Za-z][^>]*>")


def find_empty(value: Any, path: str = "$") -> list[str]:
    """Paths of every null, "", [] or {} (the spec forbids them except top-level cards: [])."""
    found = []
    if value is None or value == "" or value == [] or value == {}:
        found.append(path)
    elif isinstance(value, dict):
        for key, item in value.items():
            found += find_empty(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += find_empty(item, f"{path}[{i}]")
    return found


def is_absolute_url(value: str) -> bool:
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def assert_conformant(body: dict[str, Any]) -> None:
    assert isinstance(body.get("cards"), list)
    assert "systemActions" not in body or body["systemActions"]
    for key, value in body.items():
        if key != "cards":
            assert find_empty(value, f"$.{key}") == []
    uuids = [card["uuid"] for card in body["cards"]]
    assert len(set(uuids)) == len(uuids)
    for card in body["cards"]:
        assert_card(card)


def assert_card(card: dict[str, Any]) -> None:
    assert find_empty(card) == [], find_empty(card)
    assert UUID.match(card["uuid"])
    assert 1 <= len(card["summary"]) <= 139, card["summary"]
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["source"]["label"]
    assert is_absolute_url(card["source"]["url"])
    assert card["source"]["topic"]["code"]
    assert not RAW_HTML.search(card.get("detail", "")), card.get("detail")
    assert "actionSelectionBehavior" not in str(card)
    if card["indicator"] != "info":
        assert card["overrideReasons"]
    for reason in card.get("overrideReasons", []):
        assert reason["system"] and reason["code"] and reason["display"]
    if "suggestions" in card:
        assert card["selectionBehavior"] in ("at-most-one", "any")
        if card["selectionBehavior"] == "at-most-one":
            assert sum(1 for s in card["suggestions"] if s.get("isRecommended")) <= 1
    for suggestion in card.get("suggestions", []):
        assert suggestion["label"] and UUID.match(suggestion["uuid"])
        for action in suggestion["actions"]:
            assert action["type"] in ("create", "update", "delete")
            assert action["description"]
            if action["type"] == "delete":
                assert re.match(r"^[A-Za-z]+/[A-Za-z0-9\-.]+$", action["resourceId"]) and "resource" not in action
            else:
                assert action["resource"]["resourceType"]
                if action["resource"]["resourceType"] == "MedicationRequest":
                    concept = action["resource"]["medicationCodeableConcept"]
                    assert concept["text"] and concept["coding"][0]["code"]
                    assert concept["coding"][0]["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
    for link in card.get("links", []):
        assert link["label"] and is_absolute_url(link["url"]) and link["type"] in ("absolute", "smart")
        assert link["type"] == "smart" or "appContext" not in link
