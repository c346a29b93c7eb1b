"""cds_service.core.silencing: an override with a reason silences the same drug by the same route at
the same or a lower dose, and nothing it did not cover."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cds_service.core.silencing import UNKNOWN, medication_key, parse_medication_key, silenced

RULE = "mcas.histamine-releasing-opioid"
doses = st.floats(min_value=0.001, max_value=10_000, allow_nan=False)


@given(doses, st.sampled_from(["oral", "parenteral", None]), st.sampled_from(["7052", "7052,161"]))
def test_a_medication_key_round_trips(dose, route, ingredients):
    item = parse_medication_key(medication_key(ingredients, route, dose))
    assert item is not None
    assert (item.ingredients, item.route) == (ingredients, route or UNKNOWN)
    assert item.dose_mg == float(f"{dose:g}")


def test_an_order_whose_route_or_dose_is_unread_has_question_marks_in_its_key():
    assert medication_key("7052", None, None) == "7052|?|?"
    assert medication_key("7052", "oral", 15.0) == "7052|oral|15"


@given(earlier=doses, now=doses)
def test_an_override_covers_the_same_drug_and_route_up_to_its_dose(earlier, now):
    overridden = {(RULE, medication_key("7052", "oral", earlier))}
    covered = silenced(RULE, medication_key("7052", "oral", now), overridden)
    assert covered == (float(f"{now:g}") <= float(f"{earlier:g}"))


def test_another_route_drug_or_rule_is_shown_again():
    overridden = {(RULE, "7052|oral|15")}
    assert silenced(RULE, "7052|oral|15", overridden)
    assert not silenced(RULE, "7052|parenteral|5", overridden)
    assert not silenced(RULE, "3423|oral|5", overridden)  # hydromorphone is not morphine
    assert not silenced("ms-lbp.other-rule", "7052|oral|5", overridden)


def test_an_order_whose_route_or_dose_cannot_be_read_is_never_silenced():
    overridden = {(RULE, "7052|oral|15"), (RULE, "7052|?|?")}
    assert not silenced(RULE, "7052|?|10", overridden)
    assert not silenced(RULE, "7052|oral|?", overridden)


def test_other_items_silence_only_themselves():
    assert silenced("ms-lbp.mri", "72158", {("ms-lbp.mri", "72158")})
    assert not silenced("ms-lbp.mri", "72148", {("ms-lbp.mri", "72158")})
    assert silenced("mcas.patient", "", {("mcas.patient", "")})
    assert parse_medication_key("72158") is None and parse_medication_key("|oral|5") is None
    assert parse_medication_key("7052|oral|lots") is None
