"""The teacher's few-shot exemplars: eight word problems written by this project in the style of
GSM8K's training set (never taken from a test set), each solved in all three forms.

METHOD.md: "few-shot prompts (about 8 exemplars per form, written by this project)". Every solution
here is checked by its own form's verifier in the tests, so a prompt never teaches a wrong answer.
Data and one function (``messages``); reads and writes nothing.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exemplar:
    question: str
    answer: float
    cot: str
    pot: str
    eot: str


EXEMPLARS: tuple[Exemplar, ...] = (
    Exemplar(
        "A baker makes 36 muffins in the morning and 24 muffins in the afternoon. She packs them in boxes "
        "of 6. How many boxes does she fill?",
        10,
        "The baker makes 36 + 24 = 60 muffins.\nEach box holds 6 muffins, so she fills 60 / 6 = 10 boxes.\n"
        "The answer is 10.",
        "morning_muffins = 36\nafternoon_muffins = 24\nmuffins_per_box = 6\n"
        "total_muffins = morning_muffins + afternoon_muffins\nans = total_muffins / muffins_per_box",
        "% The baker makes 36 muffins in the morning and 24 in the afternoon:\n"
        "total_muffins = 36 + 24\n% She packs them in boxes of 6:\nboxes = total_muffins / 6\n"
        "% How many boxes does she fill? The answer is boxes:\nans = boxes",
    ),
    Exemplar(
        "Tom has 3 times as many stickers as Ana. Together they have 48 stickers. How many stickers does "
        "Tom have?",
        36,
        "Let Ana have some stickers; Tom has 3 times as many, so together they have 4 times Ana's stickers.\n"
        "Ana has 48 / 4 = 12 stickers.\nTom has 3 * 12 = 36 stickers.\nThe answer is 36.",
        "total_stickers = 48\n# Tom has 3 parts and Ana 1 part of the total\nana_stickers = total_stickers / (3 + 1)\n"
        "tom_stickers = 3 * ana_stickers\nans = tom_stickers",
        "% Let the number of Ana's stickers be x:\nana = x\n% Tom has 3 times as many stickers as Ana:\n"
        "tom = 3 * ana\n% Together they have 48 stickers:\ntom + ana = 48\n"
        "% How many stickers does Tom have? The answer is tom:\nans = tom",
    ),
    Exemplar(
        "A shirt costs $25. During a sale every shirt is 20% off. Maria buys 3 shirts during the sale. "
        "How much does she pay?",
        60,
        "The discount on one shirt is 25 * 20 / 100 = $5.\nOne shirt costs 25 - 5 = $20 during the sale.\n"
        "Three shirts cost 3 * 20 = $60.\nThe answer is 60.",
        "shirt_price = 25\ndiscount_percent = 20\nshirts = 3\n"
        "sale_price = shirt_price * (1 - discount_percent / 100)\nans = shirts * sale_price",
        "% A shirt costs $25:\nshirt_price = 25\n% Every shirt is 20% off:\n"
        "sale_price = shirt_price - shirt_price * 20 / 100\n% Maria buys 3 shirts:\ntotal_cost = 3 * sale_price\n"
        "% How much does she pay? The answer is total_cost:\nans = total_cost",
    ),
    Exemplar(
        "Liam reads 15 pages on Monday. On Tuesday he reads twice as many pages as on Monday, and on "
        "Wednesday he reads 10 fewer pages than on Tuesday. How many pages does he read in the three days?",
        65,
        "On Tuesday Liam reads 2 * 15 = 30 pages.\nOn Wednesday he reads 30 - 10 = 20 pages.\n"
        "In the three days he reads 15 + 30 + 20 = 65 pages.\nThe answer is 65.",
        "monday = 15\ntuesday = 2 * monday\nwednesday = tuesday - 10\nans = monday + tuesday + wednesday",
        "% Liam reads 15 pages on Monday:\nmonday = 15\n% On Tuesday he reads twice as many pages as on Monday:\n"
        "tuesday = 2 * monday\n% On Wednesday he reads 10 fewer pages than on Tuesday:\nwednesday = tuesday - 10\n"
        "% How many pages does he read in the three days? The answer is total:\n"
        "total = monday + tuesday + wednesday\nans = total",
    ),
    Exemplar(
        "A farmer keeps chickens and cows. The animals have 20 heads and 56 legs in total. How many cows "
        "does the farmer keep?",
        8,
        "If all 20 animals were chickens, they would have 20 * 2 = 40 legs.\n"
        "There are 56 - 40 = 16 extra legs, and each cow adds 2 extra legs.\n"
        "So there are 16 / 2 = 8 cows.\nThe answer is 8.",
        "heads = 20\nlegs = 56\n# every animal has at least 2 legs; each cow has 2 more\n"
        "extra_legs = legs - 2 * heads\ncows = extra_legs / 2\nans = cows",
        "% Let the number of cows be x:\ncows = x\n% The animals have 20 heads:\nchickens + cows = 20\n"
        "% They have 56 legs; a chicken has 2 legs and a cow 4:\n2 * chickens + 4 * cows = 56\n"
        "% How many cows does the farmer keep? The answer is cows:\nans = cows",
    ),
    Exemplar(
        "Sara earns $12 an hour. She works 8 hours a day for 5 days and then spends $150 on groceries. "
        "How much of her earnings does she have left?",
        330,
        "Sara earns 12 * 8 = $96 a day.\nIn 5 days she earns 96 * 5 = $480.\n"
        "After groceries she has 480 - 150 = $330 left.\nThe answer is 330.",
        "hourly_wage = 12\nhours_per_day = 8\ndays = 5\ngroceries = 150\n"
        "earnings = hourly_wage * hours_per_day * days\nans = earnings - groceries",
        "% Sara earns $12 an hour and works 8 hours a day for 5 days:\nearnings = 12 * 8 * 5\n"
        "% She spends $150 on groceries:\nleft = earnings - 150\n"
        "% How much does she have left? The answer is left:\nans = left",
    ),
    Exemplar(
        "A water tank holds 400 liters when full. It is 3/4 full, and then 120 liters are used. How many "
        "liters are left in the tank?",
        180,
        "The tank holds 400 * 3 / 4 = 300 liters.\nAfter 120 liters are used, 300 - 120 = 180 liters are left.\n"
        "The answer is 180.",
        "from fractions import Fraction\n\ncapacity = 400\nwater = capacity * Fraction(3, 4)\n"
        "used = 120\nans = water - used",
        "% A water tank holds 400 liters when full and is 3/4 full:\nwater = 400 * 3 / 4\n"
        "% Then 120 liters are used:\nremaining = water - 120\n"
        "% How many liters are left in the tank? The answer is remaining:\nans = remaining",
    ),
    Exemplar(
        "Jake is 4 years older than his sister. In 6 years the sum of their ages will be 40. How old is "
        "Jake now?",
        16,
        "In 6 years both are 6 years older, so the sum of their ages now is 40 - 6 - 6 = 28.\n"
        "Without Jake's extra 4 years the sum would be 28 - 4 = 24, so his sister is 24 / 2 = 12.\n"
        "Jake is 12 + 4 = 16 years old.\nThe answer is 16.",
        "age_gap = 4\nyears_ahead = 6\nfuture_sum = 40\nsum_now = future_sum - 2 * years_ahead\n"
        "sister_age = (sum_now - age_gap) / 2\nans = sister_age + age_gap",
        "% Let the sister's age now be x:\nsister = x\n% Jake is 4 years older than his sister:\njake = sister + 4\n"
        "% In 6 years the sum of their ages will be 40:\n(jake + 6) + (sister + 6) = 40\n"
        "% How old is Jake now? The answer is jake:\nans = jake",
    ),
)


def messages(system: str, form: str, question: str) -> list[dict]:
    """system + (question, solution) pairs of every exemplar in ``form`` + the question."""
    out = [{"role": "system", "content": system}]
    for ex in EXEMPLARS:
        out.append({"role": "user", "content": f"Question: {ex.question}"})
        out.append({"role": "assistant", "content": getattr(ex, form)})
    out.append({"role": "user", "content": f"Question: {question}"})
    return out
