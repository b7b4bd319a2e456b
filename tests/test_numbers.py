"""distill.thoughts.numbers: which numbers a target writes outside its equations or code that its
question does not state (the gold teacher's rule for EoT comments and the verify metric)."""
from __future__ import annotations

from fractions import Fraction

from distill.thoughts import get_form
from distill.thoughts.exemplars import EXEMPLARS
from distill.thoughts.numbers import absent_from, computed_in_text, numbers, question_values


def test_numbers_are_read_as_written_with_thousands_commas_currency_and_decimals():
    assert numbers("She paid $1,000 and 2.50 for 3 items, then .5 more on 12/25.") == [
        "1,000", "2.50", "3", ".5", "12", "25"]


def test_digits_inside_a_name_are_not_numbers():
    assert numbers("The answer is v3: apples_2 and x2 are names") == []


def test_a_question_states_its_numbers_and_the_values_of_its_fractions_and_percentages():
    values = question_values("A tank is 3/4 full; 50% of $1,200 was spent.")
    assert {Fraction(3), Fraction(4), Fraction(3, 4), Fraction(50), Fraction(1, 2), Fraction(1200)} <= values


def test_a_number_format_does_not_make_a_question_number_computed():
    question = "He earns $1,000 a month and saves 1/2 of it, 50% of what he saved last year, or 2.5 times more."
    assert absent_from("He earns 1000 dollars, saves 0.5 of it, 50 percent, 2.50 times", question) == []
    assert absent_from("He saves 500 a month", question) == ["500"]


def test_of_the_exemplars_only_cot_computes_in_text_and_pot_and_eot_comments_add_only_constants_of_the_world():
    flagged = {(k, name): found for k, ex in enumerate(EXEMPLARS) for name in ("cot", "pot", "eot")
               if (found := computed_in_text(get_form(name), get_form(name).exemplars[k], ex.question))}
    assert {k for k, name in flagged if name == "cot"} == set(range(len(EXEMPLARS)))
    # a number the question does not state is counted even when it is knowledge, not a result:
    # Ana's 1 part of the stickers, a chicken's 2 legs and a cow's 4
    assert {key: found for key, found in flagged.items() if key[1] != "cot"} == {
        (1, "pot"): ["1"], (4, "pot"): ["2", "2"], (4, "eot"): ["2", "4"]}


def test_a_cot_target_computes_in_text_and_an_eot_with_a_result_in_a_comment_is_caught():
    q = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."
    assert computed_in_text(get_form("cot"), "48/2 = 24 clips in May.\nThe answer is 72.", q) == ["2", "24", "72"]
    leaky = "% Natalia sold 24 clips in May.\nclips_in_may = 48 / 2\nans = clips_in_may"
    assert computed_in_text(get_form("eot"), leaky, q) == ["24"]
