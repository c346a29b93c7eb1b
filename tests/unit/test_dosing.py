"""cds_service.core.dosing: an order's single and daily dose in mg, planned days, start and route, read
as a pharmacist would; anything unreadable is None (never a guess)."""
from __future__ import annotations

from datetime import date

import pytest
from coreknowledge import knowledge
from hypothesis import given
from hypothesis import strategies as st

from cds_service.core.dialect import Dialect
from cds_service.core.dosing import read, route, route_of_word
from cds_service.core.terminology import Ingredient, Product

MORPHINE_15 = Product("892582", "morphine sulfate 15 MG Oral Tablet", "oral", "Oral Tablet",
                      (Ingredient("7052", "morphine", 15, "mg"),))
UCUM = "http://unitsofmeasure.org"


def _order(*instructions, **more):
    return {"resourceType": "MedicationRequest", "dosageInstruction": list(instructions), **more}


def _instruction(value, unit="mg", frequency=1, period=1, period_unit="d", **more):
    return {"doseAndRate": [{"doseQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}}],
            "timing": {"repeat": {"frequency": frequency, "period": period, "periodUnit": period_unit}}, **more}


@pytest.fixture(scope="module")
def dialect() -> Dialect:
    return knowledge().terminology.dialect


@given(st.floats(min_value=0.5, max_value=500), st.integers(min_value=1, max_value=6))
def test_daily_dose_is_dose_times_frequency_and_scales_with_the_dose(dose, per_day):
    one = read(_order(_instruction(dose, frequency=per_day)), None)
    double = read(_order(_instruction(2 * dose, frequency=per_day)), None)
    assert one.single_dose_mg == pytest.approx(dose)
    assert one.daily_dose_mg == pytest.approx(dose * per_day)
    assert double.daily_dose_mg == pytest.approx(2 * one.daily_dose_mg)


def test_the_same_dose_in_g_ug_or_tablets_is_the_same_mg(dialect):
    in_mg = read(_order(_instruction(15, "mg", 4)), MORPHINE_15, dialect)
    for instruction in (_instruction(0.015, "g", 4), _instruction(15000, "ug", 4), _instruction(1, "{tablet}", 4)):
        same = read(_order(instruction), MORPHINE_15, dialect)
        assert same.single_dose_mg == pytest.approx(in_mg.single_dose_mg)
        assert same.daily_dose_mg == pytest.approx(60)


def test_a_tablet_dose_of_a_product_of_unknown_strength_is_unread(dialect):
    dose = read(_order(_instruction(1, "{tablet}")), None, dialect)
    assert dose.single_dose_mg is None and dose.dose_unread


def test_a_unit_the_dialect_does_not_know_is_unread_never_taken_for_a_tablet(dialect):
    order = _order({"doseAndRate": [{"doseQuantity": {"value": 1, "system": "http://snomed.info/sct", "code": "999999"}}]})
    dose = read(order, MORPHINE_15, dialect)
    assert dose.single_dose_mg is None and dose.dose_unread


def test_frequency_upper_bounds_and_max_dose_per_period_give_the_higher_daily_dose():
    ranged = {"doseAndRate": [{"doseRange": {"low": {"value": 5, "unit": "mg"}, "high": {"value": 10, "unit": "mg"}}}],
              "timing": {"repeat": {"frequency": 3, "frequencyMax": 4, "period": 1, "periodUnit": "d"}}}
    assert read(_order(ranged), None).daily_dose_mg == 40
    capped = _instruction(10, frequency=1, maxDosePerPeriod=[{"numerator": {"value": 60, "unit": "mg"},
                                                              "denominator": {"value": 1, "unit": "d"}}])
    assert read(_order(capped), None).daily_dose_mg == 60


def test_instructions_given_together_add_up_and_sequences_do_not():
    together = read(_order(_instruction(10, frequency=1), _instruction(5, frequency=2)), None)
    assert together.daily_dose_mg == 20
    steps = read(_order(_instruction(10, frequency=1, sequence=1), _instruction(5, frequency=2, sequence=2)), None)
    assert steps.daily_dose_mg == 10  # a taper: the highest step, not the sum


@pytest.mark.parametrize("code, per_day", [("BID", 2), ("TID", 3), ("QID", 4), ("Q6H", 4)])
def test_timing_abbreviation_codes_give_the_doses_a_day(code, per_day):
    instruction = {"doseAndRate": [{"doseQuantity": {"value": 10, "unit": "mg"}}],
                   "timing": {"code": {"coding": [{"code": code}]}}}
    assert read(_order(instruction), None).daily_dose_mg == 10 * per_day


@pytest.mark.parametrize("sig, daily", [
    ("10 mg PO TID", 30), ("take 10 mg by mouth four times daily", 40), ("10 mg 5x daily", 50),
    ("10 mg every 6 hours", 40), ("10 mg twice a day", 20), ("10 mg daily", 10),
])
def test_a_sig_written_only_in_words_is_read(dialect, sig, daily):
    dose = read(_order({"text": sig}), None, dialect)
    assert dose.single_dose_mg == 10 and dose.daily_dose_mg == daily and not dose.dose_unread


# Meal and sleep times in words (FHIR event timing ACM/ACD/ACV/HS written out). Gastrocrom's label:
# 200 mg four times daily, 30 minutes before meals and at bedtime.
@pytest.mark.parametrize("sig, daily", [
    ("200 mg by mouth four times daily before meals and at bedtime", 800),
    ("200 mg 30 minutes before meals and at bedtime", 800),
    ("200 mg PO AC & HS", 800),
    ("200 mg a.c. and h.s.", 800),
    ("200 mg before meals", 600),
    ("200 mg with each meal", 600),
    ("200 mg after meals", 600),
    ("200 mg with two meals", 400),
    ("200 mg 30 minutes before breakfast", 200),
    ("200 mg before breakfast and dinner", 400),
    ("200 mg with breakfast, lunch and supper", 600),
    ("200 mg every morning and at bedtime", 400),
    ("200 mg in the morning before breakfast", 200),  # one morning dose, not two
    ("200 mg at bedtime", 200),
    ("200 mg nightly", 200),
])
def test_meal_and_bedtime_words_count_the_doses_a_day(dialect, sig, daily):
    dose = read(_order({"text": sig}), None, dialect)
    assert dose.single_dose_mg == 200 and dose.daily_dose_mg == daily and not dose.dose_unread


@pytest.mark.parametrize("sig, daily", [
    ("200 mg twice daily with meals", 400),  # "with meals" says with food; the count stands
    ("200 mg three times daily with meals", 600),
    ("200 mg every 8 hours with food", 600),
    ("200 mg daily with breakfast", 200),
    ("200 mg twice daily before breakfast and at bedtime", 400),
    ("200 mg four times daily", 800),
    ("200 mg daily", 200),
])
def test_a_stated_count_wins_over_meal_words_and_agrees_with_them(dialect, sig, daily):
    dose = read(_order({"text": sig}), None, dialect)
    assert dose.daily_dose_mg == daily and not dose.dose_unread


def test_one_tablet_twice_daily_with_meals_stays_two_tablets_a_day(dialect):
    dose = read(_order({"text": "1 tablet twice daily with meals"}), MORPHINE_15, dialect)
    assert dose.single_dose_mg == 15 and dose.daily_dose_mg == 30 and not dose.dose_unread


@pytest.mark.parametrize("sig", [
    "200 mg three times daily with meals and at bedtime",  # three or four?
    "200 mg twice daily with meals and at bedtime",
    "200 mg TID and at bedtime",
    "200 mg every 6 hours and at bedtime",
    "200 mg with meals and snacks",  # no sig says how many snacks
    "200 mg with meals (breakfast and dinner)",
])
def test_meal_words_that_do_not_settle_the_count_leave_the_dose_unread_not_read_low(dialect, sig):
    dose = read(_order({"text": sig}), None, dialect)
    assert dose.dose_unread and dose.daily_dose_mg is None and dose.single_dose_mg == 200


@pytest.mark.parametrize("sig", ["70 mg once weekly, 30 minutes before breakfast", "10 mg with a meal",
                                 "10 mg with food"])
def test_meal_words_of_a_weekly_sig_or_take_with_food_give_no_daily_count(dialect, sig):
    dose = read(_order({"text": sig}), None, dialect)
    assert dose.daily_dose_mg is None and not dose.dose_unread


def test_a_sig_without_a_dose_is_unread_not_no_dose():
    assert read(_order({"text": "as directed"}), None).dose_unread
    assert not read(_order(), None).dose_unread


def test_planned_days_from_supply_and_refills_bounds_or_quantity():
    supply = {"dispenseRequest": {"expectedSupplyDuration": {"value": 30, "unit": "days"}, "numberOfRepeatsAllowed": 2}}
    assert read(_order(_instruction(10), **supply), None).planned_days == 90
    bounded = _instruction(10)
    bounded["timing"]["repeat"]["boundsDuration"] = {"value": 2, "code": "wk"}
    assert read(_order(bounded), None).planned_days == 14
    counted = {"dispenseRequest": {"quantity": {"value": 60}}}
    assert read(_order(_instruction(15, frequency=4), **counted), MORPHINE_15).planned_days == 15  # 60 tablets / 4 a day


def test_start_is_the_validity_period_or_the_bounds_period():
    order = _order(_instruction(10), dispenseRequest={"validityPeriod": {"start": "2026-11-20"}})
    assert read(order, None).start == date(2026, 11, 20)
    bounded = _instruction(10)
    bounded["timing"]["repeat"]["boundsPeriod"] = {"start": "2026-11-01", "end": "2026-11-08"}
    assert read(_order(bounded), None).start == date(2026, 11, 1)
    assert read(_order(bounded), None).planned_days == 7


def test_the_orders_own_route_comes_before_the_products(dialect):
    epidural = _order({"route": {"coding": [{"system": "http://snomed.info/sct", "code": "404820008"}]}})
    injectable = Product("1", "methylprednisolone injectable", "parenteral", "Injectable", ())
    assert route(epidural, injectable, "", dialect) == "neuraxial"
    assert route(_order(), injectable, "", dialect) == "parenteral"
    assert route(_order({"text": "4 mg IV push"}), None, "", dialect) == "parenteral"
    v2 = _order({"route": {"coding": [{"system": "urn:oid:2.16.840.1.113883.12.162", "code": "PO"}]}})
    assert route(v2, None, "", dialect) == "oral"


@pytest.mark.parametrize("text, found", [
    ("epidural steroid injection", "neuraxial"), ("intravenous", "parenteral"), ("diclofenac gel", "topical"),
    ("ibuprofen Liqui-Gels", None), ("fentanyl patch", "transdermal"), ("ketorolac", None),
])
def test_route_words_most_specific_first_and_short_forms_as_whole_words(text, found):
    assert route_of_word(text) == found
