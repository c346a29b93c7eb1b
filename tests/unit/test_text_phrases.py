"""Phrases in order text as EHR order catalogues write them (issue 20): each pair changes one thing
that must, or must not, change whether the phrase counts."""
from __future__ import annotations

import pytest

from cds_service.core.conditions.text import phrase_in, phrases

CONTRAST = phrases(["contrast"])
BED_REST = phrases(["bed rest", "bedrest"])
SURGERY = phrases(["surgery"])


@pytest.mark.parametrize("given, without", [
    ("MRI LUMBAR SPINE W CONTRAST", "MRI LUMBAR SPINE WO CONTRAST"),
    ("MRI lumbar spine with contrast", "MRI lumbar spine w/o contrast"),
    ("CT abdomen with contrast", "CT abdomen w/out contrast"),
    ("CT abdomen with contrast", "CT abdomen without contrast"),
])
def test_without_written_short_negates_contrast(given, without):
    assert phrase_in([given], *CONTRAST) is not None
    assert phrase_in([without], *CONTRAST) is None


@pytest.mark.parametrize("both", ["CT abdomen w/wo contrast", "CT abdomen without and with contrast",
                                  "CT chest with and without contrast"])
def test_a_study_with_and_without_contrast_gives_contrast(both):
    assert phrase_in([both], *CONTRAST) is not None


@pytest.mark.parametrize("wanted, taken_back", [
    ("Bed rest recommended for 2 days", "Bed rest not recommended – ambulate"),
    ("Bedrest", "Bedrest contraindicated"),
    ("Bed rest is advised", "Bed rest is not advised"),
])
def test_words_just_after_a_phrase_can_take_it_back(wanted, taken_back):
    assert phrase_in([wanted], *BED_REST) is not None
    assert phrase_in([taken_back], *BED_REST) is None


def test_a_bare_not_after_a_procedure_keeps_it():
    """"Spine surgery not urgent" is still surgery: a missed premedication is the worse error."""
    assert phrase_in(["Spine surgery not urgent"], *SURGERY) is not None
    assert phrase_in(["Bed rest. Not recommended to drive"], *BED_REST) is not None  # another clause


def test_no_negations_reads_every_mention():
    patterns, _ = phrases(["referral"])
    assert phrase_in(["No referral needed"], patterns, frozenset()) is not None


@pytest.mark.parametrize("listed, text", [
    (["5-HT3 antagonist", "ondansetron"], "Ondansetron (5-HT3 antagonist) 4 mg"),
    (["bed rest", "épidurale", "surgery"], "no SURGERY; épidurale prévue"),
    (["lumbar puncture"], "Bed rest after lumbar-puncture"),
    (["MRI without contrast"], "MRI w/o contrast"),
    (["contrast", "bed rest"], "Contraste: bedrest, then bed rest"),
])
def test_searching_only_phrases_whose_first_word_is_in_the_text_finds_the_same(listed, text):
    """The phrases are searched only in texts holding their first word: the same answer as
    searching every phrase (a plain list of patterns is searched whole)."""
    keyed = phrases(listed)
    assert phrase_in([text], *keyed) == phrase_in([text], list(keyed[0]), keyed[1])
