"""The one number normaliser, on the odd cases that really occur in the benchmark files and in model output."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from distill.answers import TOLERANCE, answers_match, last_number, numbers_in, parse_number


@pytest.mark.parametrize("text, expected", [
    # GSM8K gold answers: thousands separators (train line 346 is "#### 1,080"), negatives
    ("1,080", 1080), ("109,200,000", 109200000), ("-10", -10), ("18", 18),
    # ASDiv <Answer>: units in parentheses, decimals, a double space, a decimal that is an integer
    ("9 (apples)", 9), ("0.46 (dollars)", 0.46), ("3.333 (minutes)", 3.333), ("14  (seats)", 14),
    ("65.0 (dollars)", 65), ("12.5 (kilograms of granola)", 12.5), ("52 (page number)", 52),
    # ASDiv bare fractions ("Find the fraction.") and a parenthesised negative fraction (nluds-1331)
    ("5/2", 2.5), ("3/7", 3 / 7), ("-(1/3)", -1 / 3),
    # SVAMP and MultiArith store floats
    (51.0, 51), (39, 39),
    # model output
    ("$18", 18), ("$1,080.00", 1080), ("18.", 18), ("$18.00.", 18), ("12 dollars", 12), ("25%", 25),
    ("25 %", 25), ("−3", -3), ("-$5", -5), ("1 1/2", 1.5), ("-1/2", -0.5), (".5", 0.5), ("= 42", 42),
    ("\u00a07", 7),
])
def test_parse_number_reads_the_forms_found_in_the_data_and_in_model_output(text, expected):
    assert parse_number(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", [
    # ASDiv non-numeric answers: ratios and clock times must not become a number
    "3:4", "17:12", "5:45", "3:30 p.m.", "9:03:36 a.m.", "11:55 p.m. on 24 December 2014.",
    # ordinals, names, yes/no, comparisons, several answers
    "6th", "The 60th caller.", "Mrs. Hilt", "Yes", "They are equal", "Vendor 2",
    "5 (years old); 15 (years old); 20 (years old)", "11; 12; 13",
    # free text with several numbers, empty input, nonsense, division by zero, European decimals
    "The answer is 5 or 6", "10 apples and 5 pears", "", "   ", None, True, float("nan"), "1/0", "1,5", "- 5",
])
def test_parse_number_refuses_what_is_not_exactly_one_number(text):
    assert parse_number(text) is None


def test_numbers_in_treats_a_spaced_dash_as_an_operator_not_a_sign():
    # GSM8K train line 21 writes "20 − 13 = <<20-13=7>>7" with U+2212 between spaces
    assert numbers_in("The number of rose stamps is 20 − 13 = <<20-13=7>>7.") == [20, 13, 20, 13, 7, 7]
    assert numbers_in("she owes -5 and −3, or -$4") == [-5, -3, -4]


def test_last_number_is_the_fallback_answer_of_free_text():
    assert last_number("She pays 3 * $4 = $12. The answer is $1,080.") == 1080
    assert last_number("no digits here") is None


def test_answers_match_within_one_thousandth_and_never_on_a_missing_answer():
    assert TOLERANCE == 1e-3
    assert answers_match(0.4286, parse_number("3/7"))
    assert answers_match(18.0009, 18)
    assert not answers_match(18.001, 18)
    assert not answers_match(None, 18)
    assert not answers_match(18, None)
    assert not answers_match(float("nan"), 18)
    assert not answers_match(float("inf"), 18)


def test_every_gold_answer_in_the_real_files_parses(data_dir):
    for split in ("train", "test"):
        for line in (data_dir / "gsm8k" / f"{split}.jsonl").read_text().splitlines():
            final = json.loads(line)["answer"].rsplit("####", 1)[1]
            assert parse_number(final) == int(final.replace(",", "")), final
    for row in json.loads((data_dir / "svamp" / "SVAMP.json").read_text()):
        assert parse_number(row["Answer"]) == row["Answer"]


def test_asdiv_answers_split_into_numbers_ratios_times_and_words_as_read_by_hand(data_dir):
    answers = [node.findtext("Answer") for node in ET.parse(data_dir / "asdiv" / "ASDiv.xml").getroot().iter("Problem")]
    refused = [a for a in answers if parse_number(a) is None and ";" not in a]
    assert len(refused) == 122
    # everything refused is a name, yes/no, clock time, ratio, date or ordinal: none has a plain number
    assert all(":" in a or not any(c.isdigit() for c in a) or a.endswith(("th", "st", "rd", "th caller."))
               or a in ("Vendor 2", "11:55 p.m. on 24 December 2014.") for a in refused), refused
    numeric = [parse_number(a) for a in answers if parse_number(a) is not None]
    assert len(numeric) == 2093
    assert sum(v != int(v) for v in numeric) == 69  # 60 decimals, 8 fractions, -(1/3)


def test_numbers_too_large_for_a_float_give_no_answer_instead_of_crashing():
    # seen in a tiny student's CoT output during `make reproduce`: a 400-digit number over a fraction
    huge = "9" * 400
    assert last_number(f"so it is {huge} apples") is None
    assert parse_number("1" + "0" * 200 + "/0.0000001") == pytest.approx(1e207)
    assert parse_number("9" * 5000) is None
    assert numbers_in(f"2 then {huge}/3 then 5") == [2.0, 5.0]
