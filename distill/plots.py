"""The report's plots, drawn from a ``distill.results.Results`` (the MLflow store's view); no query here.

What each plot promises a reader, so that no difference is read into noise: a legend; n in every title or label; 95% confidence
intervals as error bars; the training prior's constant ("always 4") and the per-test-set oracle constant
(the best single answer, chosen on the test labels: a bound, not a model) as lines with their own legend
entries; a degenerate student's bar (one answer to more than 90% of the set) hatched and labelled with
its constant, since its height is that constant's; the x labels name the selected form; a bar
that scored 0 is marked "0" and a value that was never measured says "n/a"; the accuracy axis
starts at 0 and ends above the highest interval, so noise does not look like a difference; loss
curves are smoothed (EMA) with the raw curve faint, one panel per student, because per-token losses
of different forms (text, Python, equations) are not on one scale; a curve of one or two points is
drawn as points (a line between two points would look like a measured trend); each panel's title
says how far training got and what stopped it.

Data contract: reads ``Results.steps`` (evaluate runs' metrics ``<test_set>/<form>/accuracy``,
``<test_set>/<form>/ci_low``, ``<test_set>/<form>/ci_high``, ``<test_set>/n``; the verify run's
``verify/<form>/...``; train runs' histories ``train/loss``, ``val/loss`` and params
``train.steps_per_epoch``, ``train.epochs``, ``train.train_examples``, metric ``train/epochs_run`` and
tag ``distill.stopped``), ``Results.baseline``, and ``Results.correct`` (answers and golds: degenerate
bars and the oracle constant).
Writes one PNG per function (deterministic: no timestamp in the file's metadata).
"""
from __future__ import annotations

import math
from pathlib import Path

from distill.results import (FORM_ORDER, STUDENT_NAMES, STUDENTS, Results, accuracies, drop_rates, in_order,
                             oracle_cells, profiles, selected_forms, sets_of)
from distill.scoring import DEGENERATE_SHARE, format_answer
from distill.thoughts import named_mixes

COLORS = {"cot": "tab:blue", "pot": "tab:orange", "eot": "tab:green", "etd": "tab:purple"}
VARIANT_SHADES = {"base": 0.55, "grpo": -0.3}
"""A variant's bars in its mix's colour, lighter (the untrained base) or darker (after RL)."""


def student_color(name: str):
    """The bar colour of a student: its mix's, shaded by its variant (distill.thoughts.parse_student)."""
    from matplotlib.colors import to_rgb

    from distill.thoughts import parse_student

    try:
        mix, variant = parse_student(name)
    except ValueError:
        return "gray"
    color = COLORS.get(mix, "gray")
    shade = VARIANT_SHADES.get(variant, 0.0)
    if not shade:
        return color
    toward = 1.0 if shade > 0 else 0.0  # white for lighter, black for darker
    return tuple(c + abs(shade) * (toward - c) for c in to_rgb(color))
Z95 = 1.959963984540054
"""The normal quantile of a two-sided 95% interval."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    _pyplot().close(fig)
    return path


def wilson(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (Wilson 1927): unlike accuracy +- 1.96 SE it stays
    inside [0, 1] and is not zero-width at 0 correct, which is where the tiny students are."""
    if n <= 0:
        return (0.0, 1.0)
    p = min(max(accuracy, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # at 0 (or n) correct the bound is exactly 0 (or 1); rounding would leave 1e-18
    return (0.0 if p == 0 else max(0.0, centre - half), 1.0 if p == 1 else min(1.0, centre + half))


def accuracy_cells(results: Results) -> dict[tuple[str, str, str], dict]:
    """(mix, form, test_set) -> {"accuracy", "n", "ci_low", "ci_high", "ci"}, all fractions.

    The interval is the evaluate run's ``ci_low``/``ci_high`` when logged ("logged"), else a Wilson
    interval from the accuracy and n ("wilson"), else None when n is unknown. n is the evaluate run's
    ``<test_set>/n``, else the baseline's n for that test set (the same first ``evaluate.limit``
    problems), else None.
    """
    base_n = results.baseline.get("n", {}) or {}
    runs = results.evaluations()
    cells = {}
    for (mix, form), row in accuracies(results).items():
        metrics = runs[mix].metrics
        for ts, acc in row.items():
            n = metrics.get(f"{ts}/n", base_n.get(ts))
            n = int(n) if n is not None else None
            lo, hi = metrics.get(f"{ts}/{form}/ci_low"), metrics.get(f"{ts}/{form}/ci_high")
            how = "logged"
            if lo is None or hi is None:
                lo, hi = wilson(acc, n) if n else (None, None)
                how = "wilson" if n else None
            cells[(mix, form, ts)] = {"accuracy": acc, "n": n, "ci_low": lo, "ci_high": hi, "ci": how}
    return cells


def _answers_name(results: Results, mix: str, form: str, ts: str) -> str:
    """The name of a (mix, form) cell in correct.json's answers: a one-form student's "selected" is its form."""
    answers = (results.correct.get(mix, {}).get(ts) or {}).get("answers") or {}
    return next(iter(answers)) if form == "selected" and "selected" not in answers and len(answers) == 1 else form


def _bar_label(mix: str, form: str, chosen: dict[str, str]) -> str:
    """"ETD selected (eot)": the selected form named, so the label says which answers the bar is."""
    name = STUDENT_NAMES.get(mix, mix)
    return f"{name} selected ({chosen.get(mix, '?')})" if form == "selected" else f"{name} {form}"


def _bar_keys(results: Results) -> list[tuple[str, str]]:
    acc = accuracies(results)
    return [(m, f) for m in in_order({m for m, _ in acc}, STUDENTS) for f in in_order({f for mm, f in acc if mm == m}, FORM_ORDER)]


def accuracy_figure(results: Results):
    """One panel per test set (n in its title): a bar per (student, form) with its 95% interval, the
    constant answer as a dashed line; "0" over a bar that scored nothing, "n/a" where nothing was measured."""
    # over 80 lines: one matplotlib figure drawn top to bottom (panels, bars, intervals, constants,
    # labels, legend); the numbers come from distill.results, only the drawing is here
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    cells = accuracy_cells(results)
    keys = _bar_keys(results)
    sets = sets_of(results) or ["gsm8k"]
    oracle = oracle_cells(results)
    prof = profiles(results)
    chosen = selected_forms(results)
    tops = [c["ci_high"] if c["ci_high"] is not None else c["accuracy"] for c in cells.values()]
    tops += list(results.baseline.get("accuracy", {}).values()) + [o["accuracy"] for o in oracle.values()]
    # 0 to 1.2 x the highest interval end (at least 10%): every bar's interval is on screen and a
    # 1-point gap between two bars whose intervals overlap does not fill the panel
    ymax = min(100.0, max(10.0, 120 * max(tops, default=0.0)))
    if any(p["degenerate"] for p in prof.values()):
        ymax = min(100.0, ymax * 1.5)  # room for the rotated "= always A" over a degenerate bar
    # two panels a row: four test sets of nine bars each stay readable on one page
    ncols = min(2, len(sets))
    nrows = math.ceil(len(sets) / ncols)
    width = max(3.6, 0.45 * len(keys) + 1.4)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.6 * nrows + 1.0), sharey=True, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(sets):]:
        ax.set_visible(False)
    cis = set()
    degenerate_seen = False
    for ax, ts in zip(flat, sets):
        ns = {c["n"] for (m, f, t), c in cells.items() if t == ts and c["n"]}
        base_n = results.baseline.get("n", {}).get(ts)
        ns |= {base_n} if base_n and not ns else set()
        n_text = f"n={'/'.join(f'{n:,}' for n in sorted(ns))}" if ns else "n unknown"
        for i, (mix, form) in enumerate(keys):
            cell = cells.get((mix, form, ts))
            color = student_color(mix)
            if cell is None:
                ax.text(i, ymax * 0.01, "n/a", ha="center", va="bottom", fontsize=7, color="dimgray", rotation=90)
                continue
            value = 100 * cell["accuracy"]
            p = prof.get((mix, _answers_name(results, mix, form, ts), ts))
            flat_answers = bool(p and p["degenerate"])
            ax.bar(i, value, color=color, edgecolor="black", linewidth=0.4, hatch="////" if flat_answers else None,
                   alpha=0.55 if flat_answers else 1.0)
            if flat_answers:
                degenerate_seen = True
            if cell["ci_low"] is not None:
                cis.add(cell["ci"])
                # clipped at 0: rounding can put an interval end a hair inside the accuracy
                low, high = max(0.0, value - 100 * cell["ci_low"]), max(0.0, 100 * cell["ci_high"] - value)
                ax.errorbar(i, value, yerr=[[low], [high]],
                            fmt="none", ecolor="black", elinewidth=0.9, capsize=3)
            if cell["accuracy"] == 0:
                # a zero-height bar is invisible: mark it, so it does not read as missing data
                ax.plot([i], [0], marker="o", markersize=5, color=color, markeredgecolor="black",
                        markeredgewidth=0.6, clip_on=False, zorder=3)
            top = 100 * cell["ci_high"] if cell["ci_high"] is not None else value
            label = f"{value:.0f}" if value == 0 else f"{value:.1f}"
            if flat_answers:
                label += f" = always {format_answer(p['top_answer'])}"
            ax.text(i, top + ymax * 0.015, label, ha="center", va="bottom", fontsize=6.5,
                    rotation=90 if flat_answers else 0)
        base = results.baseline.get("accuracy", {}).get(ts)
        if base is not None:
            ax.axhline(100 * base, color="black", linestyle="--", linewidth=1)
        if ts in oracle:
            ax.axhline(100 * oracle[ts]["accuracy"], color="tab:red", linestyle=":", linewidth=1.4)
        ax.set_xticks(range(len(keys)), [_bar_label(m, f, chosen) for m, f in keys],
                      rotation=60, ha="right", fontsize=7)
        ax.set_xlim(-0.7, len(keys) - 0.3)
        oracle_text = (f"; oracle: always {oracle[ts]['answer']} = {100 * oracle[ts]['accuracy']:.1f}%"
                       if ts in oracle else "")
        ax.set_title(f"{ts} ({n_text}{oracle_text})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylim(0, ymax)
    for row in axes:
        row[0].set_ylabel("accuracy (%)")
    handles = [Patch(facecolor=student_color(m), edgecolor="black", label=STUDENT_NAMES.get(m, m))
               for m in dict.fromkeys(m for m, _ in keys)]
    if results.baseline.get("accuracy"):
        handles.append(Line2D([], [], color="black", linestyle="--",
                              label=f"always answering {results.baseline.get('answer', '?')} (training prior)"))
    if oracle:
        handles.append(Line2D([], [], color="tab:red", linestyle=":", linewidth=1.4,
                              label="oracle: best constant per test set (chosen on test labels; a bound, not a model)"))
    if degenerate_seen:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="////",
                             label=f"degenerate: one answer to >{100 * DEGENERATE_SHARE:.0f}% "
                                   "(accuracy = its constant's)"))
    if cis:
        handles.append(Line2D([], [], color="black", marker="|", linestyle="none", markersize=10,
                              label="95% CI" + (" (Wilson)" if cis == {"wilson"} else "")))
    if not keys:
        axes[0][0].text(0.5, 0.5, "no evaluation runs yet", transform=axes[0][0].transAxes, ha="center")
    if any(c["accuracy"] == 0 for c in cells.values()):
        handles.append(Line2D([], [], color="gray", marker="o", markeredgecolor="black", linestyle="none",
                              markersize=5, label="scored 0 (n/a = not evaluated)"))
    fig.suptitle(f"Test accuracy by student and form, preset {results.preset}", fontsize=10)
    if handles:
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.965), fontsize=7,
                   ncol=min(len(handles), 3), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.8 / fig.get_figheight()))
    return fig


def _teacher(results: Results) -> str:
    """The teacher's name (tag distill.teacher of the reproduce or generate run), or "" when not logged."""
    for run in (results.parent, results.steps.get("generate")):
        if run is not None and run.tags.get("distill.teacher"):
            return run.tags["distill.teacher"]
    return ""


REASON_NOTES = {
    "teacher_failed": lambda teacher: (
        "teacher_failed: the gold teacher could not derive this form (no GSM8K calculator annotation, "
        "or a step it cannot read)" if teacher == "gold" else
        "teacher_failed: the teacher gave no usable completion (error, refusal or empty)"),
    "wrong_answer": lambda teacher: "wrong_answer: ran, but not to the gold answer",
}
"""Legend text per drop reason, where the status name alone does not say what failed."""


def drop_rates_figure(results: Results):
    """A stacked bar per form (n samples in its label): the share of teacher samples dropped, by reason."""
    plt = _pyplot()
    drops = drop_rates(results)
    forms = in_order(drops, FORM_ORDER)
    reasons = sorted({r for d in drops.values() for r in d["reasons"] if d["reasons"][r]})
    totals = {f: (drops[f]["kept"] or 0) + sum(drops[f]["reasons"].values()) for f in forms}
    shares = {f: 100 * sum(drops[f]["reasons"].values()) / totals[f] if totals[f] else 0.0 for f in forms}
    fig, ax = plt.subplots(figsize=(6, 5))
    bottom = [0.0] * len(forms)
    for reason in reasons:
        part = [100 * drops[f]["reasons"].get(reason, 0) / totals[f] if totals[f] else 0.0 for f in forms]
        ax.bar(range(len(forms)), part, bottom=bottom, label=reason, edgecolor="black", linewidth=0.4)
        bottom = [b + s for b, s in zip(bottom, part)]
    ymax = max(5.0, 1.3 * max(shares.values(), default=0.0))
    for i, f in enumerate(forms):
        dropped = sum(drops[f]["reasons"].values())
        ax.text(i, shares[f] + ymax * 0.02, f"{shares[f]:.2f}% ({dropped:,})" if dropped else "0 dropped",
                ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(forms)), [f"{f}\n(n={totals[f]:,} samples)" for f in forms], fontsize=8)
    ax.set_ylim(0, ymax)
    ax.set_ylabel("dropped samples (% of the form's samples)")
    ax.set_title(f"Verification: samples dropped per form and reason ({results.preset})", fontsize=10)
    if reasons:
        handles, labels = ax.get_legend_handles_labels()
        import textwrap

        ax.legend(handles, [textwrap.fill(REASON_NOTES.get(r, lambda t: r)(_teacher(results)), 70) for r in labels],
                  title="reason", fontsize=7, title_fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2),
                  frameon=False)
    if not forms:
        ax.text(0.5, 0.5, "no verify run yet", transform=ax.transAxes, ha="center")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing): the first
    points are not pulled towards 0."""
    out, s = [], 0.0
    for t, v in enumerate(values, 1):
        s = weight * s + (1 - weight) * v
        out.append(s / (1 - weight ** t) if weight > 0 else v)
    return out


def _smoothing_weight(n_points: int) -> float:
    # about 20 points of memory on a long curve; less on a short one, so a 3-step run stays visible
    return 0.0 if n_points < 5 else min(0.95, 1 - 2.0 / max(n_points / 5, 2))


def val_points(run, train_points: list[tuple[int, float]]) -> tuple[list[tuple[int, float]], str]:
    """val/loss as (optimizer step, value) and how its x was obtained.

    A store written before val/loss moved to the optimizer-step axis has it at step = epoch (0..epochs);
    drawn as logged, it is squashed at x = 0 beside train/loss. Those points are placed at
    epoch x train.steps_per_epoch (clipped to the last training step, where a max_steps budget stopped
    the epoch early), and the legend says so.
    """
    points = list(run.history.get("val/loss", []))
    if not points:
        return [], ""
    try:
        epochs = int(run.params.get("train.epochs", ""))
        per_epoch = int(run.params.get("train.steps_per_epoch", ""))
    except ValueError:
        return points, "at its logged step"
    last = max((s for s, _ in train_points), default=0)
    if max(s for s, _ in points) <= epochs < last:
        return [(min(s * per_epoch, last), v) for s, v in points], "logged per epoch, drawn at epoch x steps/epoch"
    return points, "at its logged step"


MAX_POINTS_ONLY = 2
"""A curve of at most this many points is drawn as points: a line through two points is no trend."""


def _what_ran(run) -> str:
    """", 0.41 of 10 epochs (stopped: max_minutes)" from the train run's train/epochs_run and distill.stopped."""
    epochs = run.metrics.get("train/epochs_run")
    stopped = run.tags.get("distill.stopped")
    if epochs is None and not stopped:
        return ""
    text = f"\n{epochs:.2f} of {run.params.get('train.epochs', '?')} epochs" if epochs is not None else "\n"
    return text + (f" (stopped: {stopped})" if stopped else "")


def training_figure(results: Results):
    """One panel per student: train/loss raw (faint) and smoothed, val/loss as markers, on one step axis."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    trains = {name.split("-", 1)[1]: run for name, run in results.steps.items() if name.startswith("train-")}
    mixes = in_order(trains, named_mixes()) or ["-"]
    ncols = min(2, len(mixes))
    nrows = math.ceil(len(mixes) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 3.1 * nrows + 1.0), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(mixes):]:
        ax.set_visible(False)
    weights, hows, short = set(), set(), set()
    for ax, mix in zip(flat, mixes):
        run = trains.get(mix)
        color = COLORS.get(mix, "gray")
        if run is None:
            ax.text(0.5, 0.5, "no train runs yet", transform=ax.transAxes, ha="center")
            continue
        raw = run.history.get("train/loss", [])
        if len(raw) > MAX_POINTS_ONLY:
            steps, values = [s for s, _ in raw], [v for _, v in raw]
            weight = _smoothing_weight(len(values))
            weights.add(weight)
            ax.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
            ax.plot(steps, ema(values, weight), color=color, linewidth=1.8)
        elif raw:  # one or two points: no line that would look like a measured trend
            ax.plot([s for s, _ in raw], [v for _, v in raw], color=color, marker="s", markersize=5, linestyle="none")
            short.add("train")
        val, how = val_points(run, raw)
        if val:
            hows.add(how)
            few = len(val) <= MAX_POINTS_ONLY
            short |= {"val"} if few else set()
            ax.plot([s for s, _ in val], [v for _, v in val], color="black", marker="o", markersize=4,
                    linestyle="none" if few else ":", linewidth=0.8)
        if not raw and not val:
            ax.text(0.5, 0.5, "no loss logged (n/a)", transform=ax.transAxes, ha="center")
        examples = run.params.get("train.train_examples")
        ax.set_title(f"{STUDENT_NAMES.get(mix, mix)} ({mix})" + (f", n={int(examples):,} train rows"
                                                                  if str(examples or "").isdigit() else "")
                     + _what_ran(run), fontsize=9)
        ax.grid(alpha=0.3)
    for ax in flat[len(mixes) - ncols:len(mixes)]:
        ax.set_xlabel("optimizer step")
    for row in axes:
        row[0].set_ylabel("loss per target token")
    smooth = ", ".join(f"{w:.2f}" for w in sorted(weights))
    handles = [Line2D([], [], color="gray", alpha=0.3, label="train/loss, raw")] if any(weights) else []
    handles += [Line2D([], [], color="gray", linewidth=1.8, label=f"train/loss, EMA (weight {smooth})" if smooth
                      and smooth != "0.00" else "train/loss"),
               Line2D([], [], color="black", marker="o", markersize=4, linestyle="none" if short == {"val"} else ":",
                      label="val/loss" + (" (logged per epoch; drawn at epoch x steps/epoch)"
                                          if "logged per epoch, drawn at epoch x steps/epoch" in hows else "")
                      + (" (points only: too few for a trend)" if "val" in short else ""))]
    if "train" in short:
        handles.append(Line2D([], [], color="gray", marker="s", markersize=5, linestyle="none",
                              label="train/loss, one or two points (no line drawn)"))
    fig.suptitle(f"Training curves ({results.preset}); each panel has its own y-axis: the forms' "
                 "targets differ, so their per-token losses are not on one scale", fontsize=9)
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / fig.get_figheight()),
               fontsize=7, ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return fig


def plot_accuracy(results: Results, path: Path) -> Path:
    """accuracy_figure as a PNG at path."""
    return _save(accuracy_figure(results), path)


def plot_drop_rates(results: Results, path: Path) -> Path:
    """drop_rates_figure as a PNG at path."""
    return _save(drop_rates_figure(results), path)


def plot_training(results: Results, path: Path) -> Path:
    """training_figure as a PNG at path."""
    return _save(training_figure(results), path)


PLOTS = {"accuracy.png": plot_accuracy, "drop_rates.png": plot_drop_rates, "training_curves.png": plot_training}
"""File name -> plot function, in the order results.md shows them."""
