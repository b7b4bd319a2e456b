"""distill/plots.py: the report's figures on a Results built here (no store needed)."""
from __future__ import annotations

import math

import pytest

from distill import plots
from distill.results import Results, RunView

SETS = ("gsm8k", "asdiv", "svamp", "multiarith")


def _results(*, ci: bool = False, with_baseline: bool = True, missing: str | None = None) -> Results:
    def evaluate(mix, forms, acc):
        metrics = {}
        for ts in SETS:
            metrics[f"{ts}/n"] = 100
            for form in forms:
                metrics[f"{ts}/{form}/accuracy"] = acc
                if ci:
                    metrics[f"{ts}/{form}/ci_low"], metrics[f"{ts}/{form}/ci_high"] = 0.005, 0.30
        return RunView(f"run-{mix}", f"evaluate-{mix}", {}, {}, metrics)

    def train(mix):
        loss = [(s, 6.0 * math.exp(-s / 300) + 0.5 + 0.3 * (-1) ** (s // 10)) for s in range(0, 1200, 10)]
        return RunView(f"train-{mix}", f"train-{mix}", {}, {"train.epochs": "10", "train.steps_per_epoch": "300",
                                                         "train.train_examples": "6400"}, {},
                       {"train/loss": loss, "val/loss": [(e, 6.0 * math.exp(-e) + 0.6) for e in range(4)]})

    steps = {"evaluate-cot": evaluate("cot", ["cot"], 0.0), "evaluate-pot": evaluate("pot", ["pot"], 0.02),
             "evaluate-eot": evaluate("eot", ["eot"], 0.01), "evaluate-etd": evaluate("etd", ["cot", "pot", "eot"], 0.03),
             "train-cot": train("cot"), "train-etd": train("etd"),
             "verify": RunView("v", "verify", {}, {}, {"verify/cot/kept": 7473, "verify/pot/kept": 7185,
                                                       "verify/pot/dropped/wrong_answer": 216,
                                                       "verify/pot/dropped/no_calculator_steps": 72})}
    if missing:
        del steps["evaluate-eot"].metrics[missing]
    baseline = ({"answer": "4", "accuracy": {ts: 0.01 for ts in SETS}, "n": {ts: 100 for ts in SETS}}
                if with_baseline else {})
    return Results("tiny", "distill", None, steps, "distill-student", [], baseline)


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _legend_labels(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_wilson_interval_matches_the_textbook_value_and_is_not_empty_at_zero():
    low, high = plots.wilson(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    low, high = plots.wilson(0.0, 100)
    assert low == 0.0 and high == pytest.approx(0.0370, abs=1e-4)


def test_accuracy_cells_prefer_the_logged_interval_and_fall_back_to_wilson():
    logged = plots.accuracy_cells(_results(ci=True))[("pot", "pot", "gsm8k")]
    assert (logged["ci_low"], logged["ci_high"], logged["ci"], logged["n"]) == (0.005, 0.30, "logged", 100)
    computed = plots.accuracy_cells(_results())[("pot", "pot", "gsm8k")]
    assert computed["ci"] == "wilson"
    assert (computed["ci_low"], computed["ci_high"]) == pytest.approx(plots.wilson(0.02, 100))


def test_accuracy_figure_has_a_legend_with_students_baseline_and_interval_and_n_in_titles():
    fig = plots.accuracy_figure(_results())
    labels = _legend_labels(fig)
    assert {"CoTD", "PoTD", "EoTD", "ETD", "always answering 4 (training prior)", "95% CI (Wilson)"} <= set(labels)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == [f"{ts} (n=100)" for ts in SETS]
    # the baseline is a horizontal line at 1% on every panel
    assert all(any(list(line.get_ydata()) == [1.0, 1.0] for line in ax.lines) for ax in fig.axes)


def test_accuracy_figure_marks_zero_bars_and_missing_values_differently():
    fig = plots.accuracy_figure(_results(missing="svamp/eot/accuracy"))
    texts = _texts(fig)
    assert texts.count("n/a") == 1  # EoTD on svamp was never measured
    assert texts.count("0") == len(SETS)  # CoTD scored 0 on each test set
    assert any("scored 0" in label for label in _legend_labels(fig))


def test_accuracy_axis_starts_at_zero_and_holds_every_interval():
    fig = plots.accuracy_figure(_results(ci=True))
    low, high = fig.axes[0].get_ylim()
    assert low == 0 and high >= 30  # the logged ci_high of 30% is on screen


def test_training_figure_smooths_each_student_on_its_own_panel_with_val_loss_on_the_step_axis():
    fig = plots.training_figure(_results())
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title().split(" ")[0] for ax in panels] == ["CoTD", "ETD"]
    raw, smooth, val = panels[0].lines
    assert raw.get_alpha() < 0.5 and smooth.get_alpha() in (None, 1)
    assert list(smooth.get_ydata()) != list(raw.get_ydata())
    # val/loss logged per epoch is drawn at epoch x steps_per_epoch, on the optimizer-step axis
    assert list(val.get_xdata()) == [0, 300, 600, 900]
    assert any("EMA" in label for label in _legend_labels(fig))


def test_val_loss_logged_per_step_is_drawn_where_it_was_logged():
    results = _results()
    run = results.steps["train-cot"]
    run.history["val/loss"] = [(0, 6.0), (400, 2.0), (1190, 1.0)]
    points, how = plots.val_points(run, run.history["train/loss"])
    assert points == [(0, 6.0), (400, 2.0), (1190, 1.0)] and how == "at its logged step"


def test_ema_is_bias_corrected_and_follows_a_constant():
    assert plots.ema([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])


def test_every_plot_writes_a_png_for_an_empty_store(tmp_path):
    empty = Results("tiny", "distill", None, {}, "distill-student", [], {})
    for name, plot in plots.PLOTS.items():
        path = plot(empty, tmp_path / name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_drop_rates_figure_names_n_per_form_and_the_reasons():
    fig = plots.drop_rates_figure(_results())
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cot\n(n=7,473 samples)", "pot\n(n=7,473 samples)"]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"no_calculator_steps",
                                                                  "wrong_answer: ran, but not to the gold answer"}
    assert "0 dropped" in _texts(fig) and "3.85% (288)" in _texts(fig)


def _with_answers() -> Results:
    """ETD (selected eot, chosen on validation) answers 2 to every problem of every set; CoTD answers varied
    numbers; the gold answers make 7 the best constant (3 of 10)."""
    results = _results()
    golds = [7, 7, 7, 2, 1, 3, 4, 5, 6, 8]
    for mix, answers in (("etd", {"cot": [9.0] * 10, "pot": [1.0 * i for i in range(10)], "eot": [2.0] * 10,
                                  "selected": [2.0] * 10}),
                         ("cot", {"cot": [1.0 * i for i in range(10)]})):
        results.correct[mix] = {ts: {"problem_ids": list(range(10)), "gold": golds, "answers": answers,
                                     "correct": {k: [0] * 10 for k in answers}} for ts in SETS}
        results.steps[f"evaluate-{mix}"].tags["distill.selected_form"] = "eot" if mix == "etd" else "cot"
    for ts in SETS:
        results.steps["evaluate-etd"].metrics[f"{ts}/selected/accuracy"] = 0.1
    return results


def test_accuracy_figure_hatches_degenerate_bars_names_the_selected_form_and_draws_the_oracle():
    fig = plots.accuracy_figure(_with_answers())
    ax = fig.axes[0]
    assert "ETD selected (eot)" in [t.get_text() for t in ax.get_xticklabels()]
    hatched = [bar for bar in ax.patches if bar.get_hatch()]
    assert len(hatched) == 3  # ETD's cot (always 9), eot and selected (always 2); CoTD and ETD pot are varied
    assert "10.0 = always 2" in _texts(fig) and "3.0 = always 9" in _texts(fig)
    assert ax.get_title() == "gsm8k (n=100; oracle: always 7 = 30.0%)"
    assert any(list(line.get_ydata()) == [30.0, 30.0] and line.get_linestyle() == ":" for line in ax.lines)
    labels = _legend_labels(fig)
    assert "oracle: best constant per test set (chosen on test labels; a bound, not a model)" in labels
    assert "degenerate: one answer to >90% (accuracy = its constant's)" in labels


def test_training_figure_draws_two_validation_points_as_points_and_says_what_stopped_training():
    results = _results()
    run = results.steps["train-cot"]
    run.history["val/loss"] = [(0, 6.0), (1190, 1.0)]
    run.metrics["train/epochs_run"] = 0.41
    run.tags["distill.stopped"] = "max_minutes"
    fig = plots.training_figure(results)
    panel = fig.axes[0]
    val = panel.lines[-1]
    assert list(val.get_xdata()) == [0, 1190] and val.get_linestyle() == "None"  # no line through two points
    assert panel.get_title().endswith("0.41 of 10 epochs (stopped: max_minutes)")
    assert any("points only" in label for label in _legend_labels(fig))


def test_drop_rates_legend_says_what_failed_when_the_gold_teacher_fails():
    results = _results()
    results.steps["verify"].metrics["verify/pot/dropped/teacher_failed"] = 72
    results.steps["generate"] = RunView("g", "generate", {"distill.teacher": "gold"}, {}, {})
    labels = {t.get_text() for t in plots.drop_rates_figure(results).axes[0].get_legend().get_texts()}
    assert any(label.startswith("teacher_failed: the gold teacher could not derive this form") for label in labels)
