"""Accuracy arithmetic on a fixed set of verdicts, checked against values computed by hand."""
from __future__ import annotations

import pytest

from distill.scoring import (accuracy, answer_of, combine, correctness, failures, fallback_answer, mcnemar,
                             metrics_of, score_test_set, vote_answer, wilson)
from distill.thoughts import Verdict, combine_order


def ok(form, answer, gold):
    return Verdict("correct" if abs(answer - gold) < 1e-3 else "wrong_answer", answer, "", form, 1)


def fail(form, status="exec_error"):
    return Verdict(status, None, "boom", form, 1)


def answers(by_form):
    """The plain answers the vote and the fallback take: form -> its number, None for a failure."""
    return {form: answer_of(verdict) for form, verdict in by_form.items()}


# Six problems, hand-written; gold answers below. Columns: eot, pot, cot.
GOLDS = [10, 20, 30, 40, 50, 60]
TABLE = {
    #        p0: all right   p1: pot+cot agree   p2: all differ     p3: eot fails       p4: all fail     p5: eot+cot agree (wrong)
    "eot": [ok("eot", 10, 10), ok("eot", 21, 20), ok("eot", 31, 30), fail("eot", "parse_error"), fail("eot", "timeout"), ok("eot", 7, 60)],
    "pot": [ok("pot", 10, 10), ok("pot", 20, 20), ok("pot", 30, 30), ok("pot", 40, 40), fail("pot", "exec_error"), ok("pot", 60, 60)],
    "cot": [ok("cot", 10, 10), ok("cot", 20.0004, 20), ok("cot", 33, 30), ok("cot", 41, 40), fail("cot", "no_answer"), ok("cot", 7, 60)],
}


def test_combine_order_is_eot_then_pot_then_cot():
    assert combine_order() == ("eot", "pot", "cot")


def test_accuracy_counts_only_correct_verdicts_and_failures_as_wrong():
    # eot right on p0 only: 1/6; pot right on p0,p1,p2,p3,p5: 5/6; cot right on p0,p1 (20.0004 within 1e-3): 2/6
    assert accuracy(TABLE["eot"]) == pytest.approx(1 / 6)
    assert accuracy(TABLE["pot"]) == pytest.approx(5 / 6)
    assert accuracy(TABLE["cot"]) == pytest.approx(2 / 6)


def test_accuracy_of_nothing_is_zero():
    assert accuracy([]) == 0.0


def test_failures_count_every_status_with_zeros_for_the_absent_ones():
    assert failures(TABLE["eot"]) == {"wrong_answer": 3, "no_answer": 0, "parse_error": 1, "exec_error": 0,
                                      "timeout": 1, "unsafe": 0}
    assert failures(TABLE["pot"])["exec_error"] == 1
    assert sum(failures(TABLE["cot"]).values()) == 6 - 2


def test_vote_takes_the_majority_answer():
    # p1: eot 21, pot 20, cot 20.0004 -> 20 (two votes; cot's 20.0004 joins pot's 20)
    assert vote_answer(answers({f: TABLE[f][1] for f in TABLE})) == (20, 2)


def test_vote_tie_between_all_forms_goes_to_eot():
    # p2: 31, 30, 33 -> one vote each -> EoT's 31
    assert vote_answer(answers({f: TABLE[f][2] for f in TABLE})) == (31, 1)


def test_vote_tie_without_eot_goes_to_pot():
    # p3: eot failed, pot 40, cot 41 -> tie of one vote each -> PoT's 40
    assert vote_answer(answers({f: TABLE[f][3] for f in TABLE})) == (40, 1)


def test_vote_ignores_failed_forms_and_has_no_answer_when_all_fail():
    assert vote_answer(answers({f: TABLE[f][4] for f in TABLE})) == (None, 0)


def test_vote_majority_can_be_wrong():
    # p5: eot 7, pot 60, cot 7 -> 7 wins 2:1 although pot was right
    assert vote_answer(answers({f: TABLE[f][5] for f in TABLE})) == (7, 2)


def test_fallback_uses_eot_unless_its_solver_fails_then_pot_then_cot():
    assert fallback_answer(answers({f: TABLE[f][1] for f in TABLE})) == (21, "eot")
    assert fallback_answer(answers({f: TABLE[f][3] for f in TABLE})) == (40, "pot")
    assert fallback_answer(answers({"eot": fail("eot"), "pot": fail("pot", "timeout"), "cot": ok("cot", 3, 3)})) == (
        3, "cot")
    assert fallback_answer(answers({f: TABLE[f][4] for f in TABLE})) == (None, None)


def test_fallback_keeps_a_wrong_answer_rather_than_falling_through():
    # a wrong answer is still an answer: only failures pass the turn on
    assert fallback_answer(answers({"eot": ok("eot", 1, 2), "pot": ok("pot", 2, 2)})) == (1, "eot")


def test_combine_gives_per_problem_rows_for_vote_and_fallback():
    rows = combine(TABLE, GOLDS)
    # vote answers: 10, 20, 31, 40, None, 7 -> right on p0, p1, p3: 3/6
    assert [r["answer"] for r in rows["vote"]] == [10, 20, 31, 40, None, 7]
    assert [r["correct"] for r in rows["vote"]] == [True, True, False, True, False, False]
    # fallback answers: eot 10, eot 21, eot 31, pot 40, none, eot 7 -> right on p0, p3: 2/6
    assert [r["form"] for r in rows["fallback"]] == ["eot", "eot", "eot", "pot", None, "eot"]
    assert [r["correct"] for r in rows["fallback"]] == [True, False, False, True, False, False]


def test_combine_refuses_verdicts_that_do_not_align_with_golds():
    with pytest.raises(ValueError, match="align"):
        combine({"eot": TABLE["eot"][:3]}, GOLDS)


def test_score_test_set_gives_forms_vote_fallback_by_hand_and_no_test_chosen_best():
    scores = score_test_set(TABLE, GOLDS)
    assert scores["n"] == 6
    assert scores["forms"]["pot"]["correct"] == 5 and scores["forms"]["pot"]["n"] == 6
    assert scores["vote"]["accuracy"] == pytest.approx(3 / 6) and scores["vote"]["correct"] == 3
    assert scores["fallback"]["accuracy"] == pytest.approx(2 / 6) and scores["fallback"]["correct"] == 2
    # nothing is picked by its accuracy on this test set, and no form was selected on validation here
    assert "best" not in scores and "selected" not in scores


def test_selected_is_the_validation_choice_even_when_another_form_is_better_on_this_test_set():
    scores = score_test_set(TABLE, GOLDS, selected="eot")  # pot is best here (5/6), eot was chosen on val
    assert scores["selected"]["form"] == "eot"
    assert scores["selected"]["accuracy"] == pytest.approx(1 / 6)
    assert (scores["selected"]["ci_low"], scores["selected"]["ci_high"]) == pytest.approx(wilson(1, 6))


def test_a_selected_form_the_student_was_not_asked_for_gives_no_selected_score():
    assert "selected" not in score_test_set({"pot": TABLE["pot"]}, GOLDS, selected="eot")


def test_a_single_form_student_has_no_vote_or_fallback():
    scores = score_test_set({"eot": TABLE["eot"]}, GOLDS, selected="eot")
    assert "vote" not in scores and "fallback" not in scores
    assert scores["selected"]["accuracy"] == pytest.approx(1 / 6)


def test_metric_names_follow_the_contract():
    metrics = metrics_of("gsm8k", score_test_set(TABLE, GOLDS, selected="cot"))
    assert metrics["gsm8k/n"] == 6
    assert metrics["gsm8k/eot/accuracy"] == pytest.approx(1 / 6)
    assert metrics["gsm8k/eot/failures/timeout"] == 1
    assert metrics["gsm8k/pot/failures/unsafe"] == 0
    assert metrics["gsm8k/vote/accuracy"] == pytest.approx(0.5)
    assert metrics["gsm8k/fallback/accuracy"] == pytest.approx(1 / 3)
    assert metrics["gsm8k/selected/accuracy"] == pytest.approx(2 / 6)
    for name in ("eot", "pot", "cot", "vote", "fallback", "selected"):
        low, high = metrics[f"gsm8k/{name}/ci_low"], metrics[f"gsm8k/{name}/ci_high"]
        assert 0 <= low <= metrics[f"gsm8k/{name}/accuracy"] <= high <= 1
    assert not any("/best/" in k for k in metrics)


# Wilson score intervals (no continuity correction) published by Newcombe, Statistics in Medicine 17
# (1998) 857-872, Table I, method 3, and the textbook 0/10 and 5/10 cases.
@pytest.mark.parametrize("correct,n,low,high", [
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
    (0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (10, 10, 0.7225, 1.0)])
def test_wilson_matches_published_values(correct, n, low, high):
    assert wilson(correct, n) == pytest.approx((low, high), abs=6e-5)


def test_wilson_of_nothing_is_the_whole_range_and_bad_counts_are_refused():
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="correct <= n"):
        wilson(3, 2)


def test_exact_mcnemar_by_hand():
    # 1 vs 9 discordant: 2 * (C(10,0) + C(10,1)) / 2**10 = 22 / 1024
    a, b = [1] + [0] * 9 + [1, 0], [0] + [1] * 9 + [1, 0]
    assert mcnemar(a, b) == {"n": 12, "a_only": 1, "b_only": 9, "p_value": pytest.approx(22 / 1024)}
    assert mcnemar([0] * 5, [1] * 5)["p_value"] == pytest.approx(2 / 32)
    assert mcnemar([1, 0, 1], [1, 0, 1])["p_value"] == 1.0  # no discordant pair
    assert mcnemar([1, 0] * 3, [0, 1] * 3)["p_value"] == 1.0  # balanced: capped at 1
    # large n stays exact (2**m overflows a float) and symmetric
    big = mcnemar([1] * 700 + [0] * 619, [0] * 700 + [1] * 619)
    assert 0 < big["p_value"] < 0.05 and big["p_value"] == mcnemar([0] * 700 + [1] * 619, [1] * 700 + [0] * 619)["p_value"]


def test_mcnemar_refuses_unpaired_lists():
    with pytest.raises(ValueError, match="pair the same problems"):
        mcnemar([1, 0], [1])


def test_correctness_lists_align_with_the_scores():
    table = correctness(TABLE, GOLDS, selected="pot")
    scores = score_test_set(TABLE, GOLDS, selected="pot")
    assert table["pot"] == [1, 1, 1, 1, 0, 1] and table["selected"] == table["pot"]
    for name in ("eot", "cot"):
        assert sum(table[name]) == scores["forms"][name]["correct"]
    assert sum(table["vote"]) == scores["vote"]["correct"] and sum(table["fallback"]) == scores["fallback"]["correct"]


def test_answer_profile_counts_distinct_answers_the_most_common_share_and_its_own_constant():
    from distill.scoring import answer_profile

    golds = [2, 2, 5, 7, 2, 9, 1, 2, 3, 4]
    p = answer_profile([2.0] * 9 + [None], golds)
    assert (p["distinct"], p["top_answer"], p["top_share"]) == (2, 2.0, 0.9)
    assert p["own_constant_accuracy"] == 0.4 and p["own_constant_correct"] == [1, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    assert not p["degenerate"]  # 90% is not more than 90%
    assert answer_profile([2.0] * 10, golds)["degenerate"]
    # a student that gives no answer at all is degenerate too, and its constant scores 0
    none = answer_profile([None] * 10, golds)
    assert none["degenerate"] and none["top_answer"] is None and none["own_constant_accuracy"] == 0.0
    # 12 and 12.0004 are one answer (the 1e-3 tolerance)
    assert answer_profile([12.0, 12.0004], [1, 1])["distinct"] == 1


def test_the_oracle_constant_is_the_most_common_gold_answer_ties_to_the_smaller():
    from distill.scoring import oracle_constant

    assert oracle_constant([3, 5, 5, 3, 1]) == {"answer": 3, "accuracy": 0.4, "correct": 2, "n": 5}
    assert oracle_constant([8, 8, 8, 1])["accuracy"] == 0.75


def test_the_degenerate_tag_names_the_answers_and_the_test_sets():
    from distill.scoring import answer_profile, degenerate_tag

    golds = [1, 2, 3, 4]
    profiles = {"gsm8k": {"cot": answer_profile([2.0] * 4, golds), "pot": answer_profile([1.0, 2.0, 3.0, 4.0], golds)},
                "svamp": {"cot": answer_profile([None] * 4, golds)},
                "asdiv": {"cot": answer_profile([2.0] * 4, golds)}}
    assert degenerate_tag(profiles) == "cot: 2 on gsm8k, asdiv (100%), no answer on svamp (100%)"
    assert degenerate_tag({"gsm8k": {"pot": profiles["gsm8k"]["pot"]}}) == "no"


# --- sampled outputs: maj@k, pass@k, mean@k ----------------------------------------------------------

def _v(status: str, answer: float | None = None, form: str = "eot") -> Verdict:
    return Verdict(status, answer, "", form, 1)


def test_pass_at_k_is_the_unbiased_estimator_with_its_edge_cases():
    from distill.scoring import pass_at_k

    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2), by hand
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # k = 1: c / n
    assert pass_at_k(4, 0, 4) == 0.0  # c = 0: never
    assert pass_at_k(4, 4, 4) == 1.0  # c = n: always
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k: every draw of 3 holds a correct one
    assert pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 0, 1) == 0.0  # n == k: "any correct"
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 2)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


def test_majority_answer_ignores_missing_answers_and_gives_a_tie_to_the_answer_seen_first():
    from distill.scoring import majority_answer

    assert majority_answer([None, 3.0, 5.0, 5.0004, None, 3.0]) == (3.0, 2)  # 3 and 5 tie: 3 came first
    assert majority_answer([5.0, 3.0, 3.0, None, None, None]) == (3.0, 2)  # missing answers never win
    assert majority_answer([None, None]) == (None, 0)
    assert majority_answer([7.0, 7.0005, 2.0]) == (7.0, 2)  # grouped within 1e-3, the first value kept


def test_sampled_scores_of_two_forms_match_a_count_by_hand():
    from distill.scoring import per_problem_samples, sample_metrics, score_samples, wilson

    golds = [4.0, 10.0]
    samples = {  # two problems, k = 3 samples each
        "eot": [[_v("correct", 4.0), _v("wrong_answer", 5.0), _v("wrong_answer", 5.0)],  # maj 5: wrong; pass 1
                [_v("parse_error"), _v("correct", 10.0), _v("no_answer")]],  # maj 10 (1 vote): right
        "pot": [[_v("correct", 4.0, "pot"), _v("correct", 4.0, "pot"), _v("exec_error", None, "pot")],
                [_v("wrong_answer", 9.0, "pot"), _v("parse_error", None, "pot"), _v("wrong_answer", 8.0, "pot")]],
    }
    table = per_problem_samples(samples, golds)
    assert table["k"] == 3
    assert table["correct"]["eot/maj_at_3"] == [0, 1] and table["answers"]["eot/maj_at_3"] == [5.0, 10.0]
    assert table["correct"]["pot/maj_at_3"] == [1, 0] and table["answers"]["pot/maj_at_3"] == [4.0, 9.0]  # 9 vs 8: 9 first
    assert table["values"]["eot/pass_at_3"] == [1.0, 1.0] and table["values"]["pot/pass_at_3"] == [1.0, 0.0]
    assert table["values"]["eot/mean_at_3"] == pytest.approx([1 / 3, 1 / 3])
    assert table["values"]["pot/mean_at_3"] == pytest.approx([2 / 3, 0.0])
    # the vote over all six answers: problem 1: 4 x3 vs 5 x2 -> 4; problem 2: 10, 9, 8 one vote each -> the
    # first in the order eot, pot, cot: eot's 10 -> right
    assert table["answers"]["vote/maj_at_3"] == [4.0, 10.0] and table["correct"]["vote/maj_at_3"] == [1, 1]
    scores = score_samples(samples, golds)["scores"]
    assert list(scores) == ["eot/maj_at_3", "eot/pass_at_3", "eot/mean_at_3", "pot/maj_at_3", "pot/pass_at_3",
                            "pot/mean_at_3", "vote/maj_at_3"]
    assert scores["eot/maj_at_3"]["accuracy"] == 0.5 and scores["pot/mean_at_3"]["accuracy"] == pytest.approx(1 / 3)
    assert (scores["eot/maj_at_3"]["ci_low"], scores["eot/maj_at_3"]["ci_high"]) == pytest.approx(wilson(1, 2))
    metrics = sample_metrics("svamp", score_samples(samples, golds))
    assert metrics["svamp/vote/maj_at_3/accuracy"] == 1.0 and metrics["svamp/eot/pass_at_3/ci_high"] == 1.0
    assert metrics["svamp/pot/mean_at_3/accuracy_pct"] == 33.33
    assert not any("@" in name for name in metrics)  # MLflow refuses '@' in metric names


def test_the_interval_of_a_mean_over_samples_is_wilsons_for_0_1_values_and_not_empty_at_zero():
    from distill.scoring import mean_interval, wilson

    assert mean_interval([1.0, 0.0, 1.0, 1.0]) == pytest.approx(
        {"accuracy": 0.75, "n": 4, "ci_low": wilson(3, 4)[0], "ci_high": wilson(3, 4)[1]})
    zero = mean_interval([0.0] * 5)
    assert zero["ci_low"] == 0.0 and zero["ci_high"] > 0.3  # 5 problems right in no sample: far from sure
    half = mean_interval([0.5] * 100)
    assert half["ci_low"] < 0.5 < half["ci_high"]
    with pytest.raises(ValueError):
        mean_interval([1.5])


def test_every_metric_name_the_evaluate_stage_writes_parses_into_its_parts_and_back():
    from distill.scoring import (MetricKey, answer_profile, by_name, interval, parse_metric, parse_sample_name,
                                 profile_metrics, sample_metrics, score_samples, strict_metrics)

    scores = score_test_set(TABLE, GOLDS, selected="pot")
    answers = {"eot": [10.0, 21.0], "vote": [10.0, None]}
    written = {**metrics_of("gsm8k", scores),
               **sample_metrics("gsm8k", score_samples({"eot": [[v, v] for v in TABLE["eot"]]}, GOLDS)),
               **strict_metrics("gsm8k", {"eot": interval(2, 6)}),
               **profile_metrics("gsm8k", {n: answer_profile(a, GOLDS[:2]) for n, a in answers.items()})}
    parsed = {key: parse_metric(key) for key in written}
    assert all(parsed.values()) and all(str(k) == key for key, k in parsed.items())
    assert parsed["gsm8k/n"] == MetricKey("gsm8k", "", "", "n")
    assert parsed["gsm8k/vote/ci_low"] == MetricKey("gsm8k", "vote", "", "ci_low") and parsed["gsm8k/vote/ci_low"].plain
    assert parsed["gsm8k/eot/maj_at_2/accuracy"] == MetricKey("gsm8k", "eot", "maj_at_2", "accuracy")
    assert parsed["gsm8k/eot/strict/ci_high"].score == "strict" and not parsed["gsm8k/eot/strict/ci_high"].plain
    assert parsed["gsm8k/eot/failures/timeout"] == MetricKey("gsm8k", "eot", "failures", "timeout")
    assert by_name(written, "gsm8k", "accuracy") == {"eot": 1 / 6, "pot": 5 / 6, "cot": 2 / 6, "vote": 3 / 6,
                                                     "fallback": 2 / 6, "selected": 5 / 6}
    assert by_name({"val/eot/accuracy": 0.5, "val/loss": 1.0, "gsm8k/eot/accuracy": 0.1}, "val", "accuracy") == {"eot": 0.5}
    assert parse_sample_name("maj_at_12") == ("maj", 12) and parse_sample_name("strict") is None
    assert parse_metric("a/b/c/d/e") is None and parse_metric("loss") is None
