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
    assert {"CoTD", "PoTD", "EoTD", "ETD", "constant answer 4", "95% CI (Wilson)"} <= set(labels)
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
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"no_calculator_steps", "wrong_answer"}
    assert "0 dropped" in _texts(fig) and "3.85% (288)" in _texts(fig)
