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


# Words naming the same moment count once, and times joined by "or" are one time: counting them
# twice doubled the daily units and halved the planned course (20 tablets read as 10 days).
@pytest.mark.parametrize("sig, daily", [
    ("take 1 tablet every evening at bedtime", 15),
    ("1 tablet nightly at bedtime", 15),
    ("15 mg in the evening before bed", 15),
    ("15 mg with supper at night", 15),
    ("1 tablet in the morning or at bedtime", 15),
    ("1 tablet with breakfast or dinner", 15),
    ("15 mg in the evening or at bedtime", 15),
    ("1 tablet daily in the morning or at bedtime", 15),
    ("1 tablet in the morning and every evening at bedtime", 30),
    ("1 tablet with breakfast, or lunch or dinner", None),  # a comma and an "or": unsure
])
def test_words_of_one_moment_and_times_joined_by_or_count_once(dialect, sig, daily):
    dose = read(_order({"text": sig}, dispenseRequest={"quantity": {"value": 20}}), MORPHINE_15, dialect)
    assert dose.daily_dose_mg == daily
    if daily is None:
        assert dose.dose_unread and dose.planned_days is None
    else:
        assert not dose.dose_unread and dose.planned_days == 20 * 15 / daily


@pytest.mark.parametrize("sig", [
    "1 tablet every morning at bedtime",  # two moments written as one
    "1 tablet in the morning and/or at bedtime",
    "200 mg with meals or at bedtime",
])
def test_times_it_cannot_tell_one_from_two_leave_the_dose_unread_never_doubled(dialect, sig):
    dose = read(_order({"text": sig}), MORPHINE_15, dialect)
    assert dose.dose_unread and dose.daily_dose_mg is None


def test_an_amount_paired_with_one_moment_named_twice_is_still_paired(dialect):
    dose = read(_order({"text": "200 mg in the morning and 400 mg every evening at bedtime"}), None, dialect)
    assert (dose.single_dose_mg, dose.daily_dose_mg, dose.dose_unread) == (400, 600, False)


@pytest.mark.parametrize("sig", ["70 mg once weekly, 30 minutes before breakfast", "10 mg with a meal",
                                 "10 mg with food"])
def test_meal_words_of_a_weekly_sig_or_take_with_food_give_no_daily_count(dialect, sig):
    dose = read(_order({"text": sig}), None, dialect)
    assert dose.daily_dose_mg is None and not dose.dose_unread


# Different amounts at different times of day: each amount paired with one time is taken once a
# day, and the daily dose is their sum (it was the first amount times the count of times).
@pytest.mark.parametrize("sig, single, daily", [
    ("200 mg in the morning and 400 mg at bedtime", 400, 600),
    ("Take 200 mg by mouth every morning and 400 mg at bedtime", 400, 600),
    ("800 mg in the morning and 1600 mg at noon and 800 mg at bedtime", 1600, 3200),
    ("800 mg in the morning, 1600 mg at noon and 1200 mg at bedtime", 1600, 3600),
    ("100 mg with breakfast and 200 mg with supper", 200, 300),
    ("300 mg before breakfast, 300 mg before lunch and 600 mg at bedtime", 600, 1200),
    ("2 tablets (30 mg) in the morning and 1 tablet (15 mg) at bedtime", 30, 45),
    ("200 mg in the morning and 400 mg once daily in the evening", 400, 600),
    ("0.2 g in the morning and 400 mg at bedtime", 400, 600),
])
def test_an_amount_for_each_time_of_day_is_summed(dialect, sig, single, daily):
    dose = read(_order({"text": sig}), MORPHINE_15, dialect)
    assert (dose.single_dose_mg, dose.daily_dose_mg, dose.dose_unread) == (single, daily, False)


# Different amounts the words do not pair with one time each: unread (the card asks to check the
# dose), never the first amount times the count; the largest stands for the single dose.
@pytest.mark.parametrize("sig, single", [
    ("200 mg twice daily, may increase to 400 mg twice daily", 400),
    ("400 mg daily for 7 days, then 800 mg daily", 800),
    ("200 mg in the morning and 400 mg twice daily", 400),  # a count in a part
    ("200 mg at bedtime and 400 mg at bedtime", 400),  # the same time twice
    ("In the morning take 200 mg and at bedtime take 400 mg", 400),  # the time before its amount
    ("200 mg AM and 400 mg PM", 400),  # times the reader does not know
    ("200 mg with meals and 400 mg at bedtime", 400),  # "meals" is three times
    ("200 mg in the morning and 400 mg at bedtime once weekly", 400),
    ("5 mg three times daily; may increase to 10 mg three times daily", 10),
    ("200 mg in the morning and 0.4 g at bedtime every 6 hours", 400),
])
def test_different_amounts_it_cannot_pair_leave_the_dose_unread_not_read_low(dialect, sig, single):
    dose = read(_order({"text": sig}), None, dialect)
    assert dose.dose_unread and dose.daily_dose_mg is None and dose.single_dose_mg == single


# A stated maximum or daily total is not a second amount; the same dose said again in brackets,
# and a strength beside a tablet count, are not either. A stated daily maximum counts as
# maxDosePerPeriod does: the daily dose is the schedule's or the maximum, the higher.
@pytest.mark.parametrize("sig, single, daily", [
    ("800 mg three times daily, max 3200 mg/day", 800, 3200),
    ("800 mg TID (maximum 3200 mg per day)", 800, 3200),
    ("400 mg every 6 hours as needed, not to exceed 3200 mg in 24 hours", 400, 3200),
    ("400 mg every 6 hours. Do not exceed 1600 mg a day", 400, 1600),
    ("10 mg every 6 hours, no more than 40 mg per day", 10, 40),
    ("10 mg every 6 hours as needed, up to 40 mg per day", 10, 40),
    ("800 mg three times daily (2400 mg/day)", 800, 2400),
    ("1 tablet (15 mg) every 6 hours", 15, 60),
    ("2 tablets = 30 mg twice daily", 30, 60),
    ("15 mg tablet: take 1 tablet every 6 hours", 15, 60),
    ("200 mg in the morning and 200 mg at bedtime", 200, 400),
    ("200 mg in the morning and at bedtime", 200, 400),
])
def test_a_stated_maximum_or_the_same_dose_said_again_is_not_a_second_amount(dialect, sig, single, daily):
    dose = read(_order({"text": sig}), MORPHINE_15, dialect)
    assert (dose.single_dose_mg, dose.daily_dose_mg, dose.dose_unread) == (single, daily, False)


# "every 24 hours" is a dosing interval, once a day as "q24h" is; only a limit word ("not to
# exceed", "max", "up to") or "in/per 24 hours" makes an amount a daily maximum or total.
@pytest.mark.parametrize("sig, single, daily", [
    ("1200 mg every 24 hours", 1200, 1200),
    ("take 1 tablet every 24 hours", 15, 15),
    ("1 tablet once every 24 hours", 15, 15),
    ("15 mg q24h", 15, 15),
    ("15 mg every 24 hrs", 15, 15),
])
def test_every_24_hours_is_once_a_day_not_a_maximum(dialect, sig, single, daily):
    dose = read(_order({"text": sig}, dispenseRequest={"quantity": {"value": 30}}), MORPHINE_15, dialect)
    assert (dose.single_dose_mg, dose.daily_dose_mg, dose.dose_unread) == (single, daily, False)
    assert dose.planned_days == 30 * 15 / daily


def test_a_limit_word_before_every_24_hours_is_still_a_maximum(dialect):
    dose = read(_order({"text": "15 mg every 6 hours, not to exceed 60 mg every 24 hours"}), MORPHINE_15, dialect)
    assert (dose.single_dose_mg, dose.dose_unread) == (15, False)


# A range of intervals is read at its shortest, the most doses a day the prescriber allows, and a
# range of amounts at its upper amount: a pharmacist checks the maximum possible dose (a range of
# intervals gave no frequency, so no daily dose, and was not marked unread).
@pytest.mark.parametrize("sig, single, daily", [
    ("1 tablet every 4-6 hours", 15, 90),
    ("15 mg q4-6h", 15, 90),
    ("15 mg q 4-6 h as needed", 15, 90),
    ("15 mg every 4 to 6 hours", 15, 90),
    ("15 mg every 6-8 hours", 15, 60),
    ("15 mg every 8\u201312 hours", 15, 45),
    ("1-2 tablets every 8 hours", 30, 90),
    ("1 to 2 tablets every 4-6 hours as needed", 30, 180),
    ("1 or 2 tablets twice daily", 30, 60),
])
def test_ranges_are_read_at_the_most_the_prescriber_allows(dialect, sig, single, daily):
    dose = read(_order({"text": sig}), MORPHINE_15, dialect)
    assert (dose.single_dose_mg, dose.daily_dose_mg, dose.dose_unread) == (single, daily, False)


# How long a supply lasts is read at the range's other end: the fewest doses a day, the lowest
# amount. Read at the most, "1 tablet every 4-6 hours" with 60 tablets lasted 10 days where it may
# last 15, and the course rules (a muscle relaxant past two weeks) stayed silent.
@pytest.mark.parametrize("sig, days", [
    ("1 tablet every 4-6 hours", 15),
    ("1 tablet q4-6h as needed", 15),
    ("1 tablet every 6-8 hours", 20),
    ("1 to 2 tablets every 8 hours", 20),  # 60 tablets at 1 a dose, 3 a day
    ("1 tablet every 6 hours", 15),  # no range: as before
])
def test_a_supply_of_ranges_lasts_as_long_as_its_fewest_doses(dialect, sig, days):
    dose = read(_order({"text": sig}, dispenseRequest={"quantity": {"value": 60}}), MORPHINE_15, dialect)
    assert dose.planned_days == days


def test_structured_ranges_count_the_supply_at_their_low_end_and_the_daily_dose_at_their_high_end():
    ranged = {"doseAndRate": [{"doseRange": {"low": {"value": 1, "unit": "tablet"}, "high": {"value": 2, "unit": "tablet"}}}],
              "timing": {"repeat": {"frequency": 3, "frequencyMax": 4, "period": 1, "periodUnit": "d"}}}
    dose = read(_order(ranged, dispenseRequest={"quantity": {"value": 60}}), MORPHINE_15)
    assert (dose.daily_dose_mg, dose.planned_days) == (120, 20)  # 2 x 4 x 15 mg; 60 tablets / (1 x 3)


def test_a_maximum_is_not_the_dose_nor_a_count_but_the_daily_dose_when_higher(dialect):
    dose = read(_order({"text": "Max 3200 mg/day. Take 800 mg three times daily"}), None, dialect)
    assert (dose.single_dose_mg, dose.daily_dose_mg, dose.dose_unread) == (800, 3200, False)  # was 3200 x 3
    # "daily" of the maximum is not "once daily" (it was read as one tablet a day); the maximum in
    # tablets is 6 x 15 mg
    dose = read(_order({"text": "1 tablet every 4-6 hours, maximum daily dose of 6 tablets"}), MORPHINE_15, dialect)
    assert (dose.single_dose_mg, dose.daily_dose_mg) == (15, 90)
    dose = read(_order({"text": "as directed, not to exceed 3200 mg/day"}), None, dialect)  # only a maximum
    assert (dose.single_dose_mg, dose.daily_dose_mg, dose.dose_unread) == (3200, 3200, False)


# A daily maximum written in the sig counts as the same maximum in maxDosePerPeriod does: a
# pharmacist checks the most the prescriber allows (it was discarded: 3200 mg, no warning).
@pytest.mark.parametrize("sig, single, daily", [
    ("800 mg every 6 hours as needed, max 4000 mg per day", 800, 4000),
    ("as directed, max 4800 mg/day", 4800, 4800),
    ("1 tablet every 6 hours, max 6 tablets per day", 15, 90),
    ("1 tablet every 6 hours as needed, not to exceed 6 tablets in 24 hours", 15, 90),
    ("200 mg in the morning and 400 mg at bedtime (max 3200 mg/day)", 400, 3200),
    ("800 mg three times daily, max 800 mg per dose", 800, 2400),  # not a daily maximum
    ("800 mg every 6 hours, max 2400 mg per day", 800, 3200),  # the schedule is higher
])
def test_a_daily_maximum_in_the_sig_counts_as_max_dose_per_period(dialect, sig, single, daily):
    dose = read(_order({"text": sig}), MORPHINE_15, dialect)
    assert (dose.single_dose_mg, dose.daily_dose_mg, dose.dose_unread) == (single, daily, False)


def test_the_sig_maximum_reads_as_the_structured_one(dialect):
    structured = _instruction(800, frequency=4, maxDosePerPeriod=[{"numerator": {"value": 4000, "unit": "mg"},
                                                                   "denominator": {"value": 1, "unit": "d"}}])
    in_words = {"text": "800 mg every 6 hours as needed, max 4000 mg per day"}
    assert read(_order(in_words), None, dialect).daily_dose_mg == read(_order(structured), None).daily_dose_mg == 4000


def test_a_maximum_in_tablets_of_a_product_of_unknown_strength_is_unread(dialect):
    dose = read(_order({"text": "800 mg every 6 hours, max 6 tablets per day"}), None, dialect)
    assert dose.dose_unread and dose.single_dose_mg == 800


def test_a_sig_maximum_does_not_shorten_the_course(dialect):
    sig = {"text": "1 tablet daily, max 4 tablets per day"}
    dose = read(_order(sig, dispenseRequest={"quantity": {"value": 30}}), MORPHINE_15, dialect)
    assert (dose.daily_dose_mg, dose.planned_days) == (60, 30)


def test_paired_amounts_keep_the_instruction_sequence_and_count_tablets(dialect):
    sig = {"text": "2 tablets in the morning and 1 tablet at bedtime", "sequence": 1}
    counted = {"dispenseRequest": {"quantity": {"value": 90}}}
    dose = read(_order(sig, **counted), MORPHINE_15, dialect)
    assert (dose.single_dose_mg, dose.daily_dose_mg, dose.planned_days) == (30, 45, 30)  # 90 tablets / 3 a day


# A fraction is its value: "1/2 tablet" is half a tablet (it was read as its denominator, two
# tablets, four times the dose and a quarter of the course); "½" was not read at all.
@pytest.mark.parametrize("sig, single", [
    ("1/2 tablet twice daily", 7.5), ("½ tablet twice daily", 7.5), ("1 1/2 tablets twice daily", 22.5),
    ("1½ tablets twice daily", 22.5), ("take 1/2 tab by mouth twice daily", 7.5), ("0.5 tablet twice daily", 7.5),
    ("1/2-1 tablet twice daily", 15),  # a range at its upper amount
])
def test_a_fraction_of_a_tablet_is_read_as_its_value(dialect, sig, single):
    dose = read(_order({"text": sig}, dispenseRequest={"quantity": {"value": 30}}), MORPHINE_15, dialect)
    assert (dose.single_dose_mg, dose.daily_dose_mg, dose.dose_unread) == (single, 2 * single, False)
    assert dose.planned_days == pytest.approx(30 / (2 * single / 15))


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


# A part of the day written alone is a time too: "in the morning and evening" read as once a day
# halved the daily dose and doubled the course (a review found it after the meal-word change).
@pytest.mark.parametrize("sig, per_day", [
    ("take 1 tablet in the morning and evening", 2),
    ("take 1 tablet each morning and evening", 2),
    ("1 tablet morning and night", 2),
    ("1 tablet twice a day (morning and bedtime)", 2),
    ("take 1 tablet every evening at bedtime", 1),
    ("1 tablet at bedtime as needed for sleep at night", 1),
    ("take 1 tablet in the morning before breakfast", 1),
])
def test_parts_of_the_day_written_alone_are_counted(dialect, sig, per_day):
    dose = read(_order({"text": sig}), MORPHINE_15, dialect)
    assert (dose.daily_dose_mg, dose.dose_unread) == (15 * per_day, False)
