"""Card text is our own wording: no run of eight words is copied from the guideline summaries.

The summaries live beside the repository in shared/seeds/ (CI has them there too); without
them the test is skipped, with the reason.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT.parent / "shared" / "seeds"
RUN = 8


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _runs(text: str) -> set[tuple[str, ...]]:
    words = _words(text)
    return {tuple(words[i:i + RUN]) for i in range(len(words) - RUN + 1)}


def _our_texts() -> list[tuple[str, str]]:
    texts = []
    for path in sorted((ROOT / "knowledge" / "modules").glob("*.yaml")):
        for rule in yaml.safe_load(path.read_text())["rules"]:
            card = rule["card"]
            texts += [(rule["id"], card["summary"]), (rule["id"], card["detail"])]
            texts += [(rule["id"], note["text"]) for note in card.get("notes", [])]
    guidelines = yaml.safe_load((ROOT / "knowledge" / "guidelines.yaml").read_text())["guidelines"]
    for gid, guideline in guidelines.items():
        texts += [(f"{gid}#{rid}", rec["statement"]) for rid, rec in guideline["recommendations"].items()]
    return texts


@pytest.mark.skipif(not SEEDS.is_dir(), reason="shared/seeds/ is not beside the repository")
def test_no_card_or_recommendation_copies_eight_words_from_the_summaries():
    seed_runs = set().union(*(_runs(p.read_text(errors="replace")) for p in SEEDS.glob("*.txt")))
    copied = [(where, " ".join(run)) for where, text in _our_texts() for run in _runs(text) & seed_runs]
    assert copied == []


def test_the_copy_check_sees_a_copy():
    # the detector itself must work, or the test above could not fail
    sentence = "never withhold analgesics despite concerns about mast cell triggering as pain itself is a trigger"
    assert _runs(sentence) & _runs("Note: " + sentence.upper() + ".")
