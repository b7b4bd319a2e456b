"""Results report, built from the MLflow store alone (never from run_dir), so it describes exactly
the runs that are tracked.

Reads: the newest parent run ``reproduce-<preset>`` (tag distill.stage=reproduce; or the one given
by ``parent_run_id``) and the step runs its ``distill.step.<step>.run_id`` tags name; without a
parent, the newest run of each stage (and mix) with tag distill.preset=<preset>. From them:
evaluate metrics ``<test_set>/n``, ``<test_set>/<name>/{accuracy,ci_low,ci_high}`` and
``.../failures/<reason>``, the tag ``distill.selected_form`` and the per-problem artifacts
``eval/<test_set>/correct.json`` (for the paired tests), verify metrics
``verify/<form>/{drop_rate,kept,dropped/<reason>,repaired}`` and param ``verify.strict``, mix metrics
``mix/overlap/<test_set>`` and ``mix/removed_overlap`` and params ``mix.val_fraction``,
``mix.decontaminate``, train metric histories ``train/loss`` and ``val/loss``, the parent's
``baseline/<test_set>/{accuracy,n}`` and ``wall_seconds/<step>``, and the registry's versions of the
student model and its champion alias. An empty store gives a results.md that says so.

Significance: two sets of answers to the same problems (two students' selected forms, or two forms
of the ETD student) are compared per test set with the exact McNemar test (distill.scoring.mcnemar);
a difference is called significant at p < 0.05, with no correction for the number of comparisons
(the table shows every p-value, so a reader can apply one).

Writes (``output_dir``, default reports/): ``results.md`` and the plots ``accuracy.png``,
``drop_rates.png``, ``training_curves.png``. Every table is sorted and no clock time is printed,
so regenerating from the same store gives the same results.md byte for byte.

mlflow is imported here only to read the store (logging goes through distill.tracking).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.files import DataError, atomic_write_text, read_json

MIXES = ("cot", "pot", "eot", "etd")
STUDENT_NAMES = {"cot": "CoTD", "pot": "PoTD", "eot": "EoTD", "etd": "ETD"}
TEST_SET_ORDER = ("gsm8k", "asdiv", "svamp", "multiarith")
FORM_ORDER = ("cot", "pot", "eot", "vote", "fallback", "selected")
OURS_NOTE = {"vote": "majority vote of the forms (ours)", "fallback": "first form that gives an answer (ours)",
             "selected": "the form chosen on the validation split"}
ALPHA = 0.05
"""Significance level of the paired tests."""

PAPER_CITATION = ("Zhu, Li, Liu, Ma, Wang: Distilling Mathematical Reasoning Capabilities into Small Language "
                  "Models, arXiv 2401.11864 (2024; Neural Networks 2024), headline GSM8K results "
                  "(CodeT5 students, gpt-3.5-turbo teacher)")
# GSM8K test accuracy (%) as reported in PAPER_CITATION; keys: none = the student without distillation.
PAPER_GSM8K = {
    "CodeT5-Small (60M)": {"none": 1.1, "eot": 18.87, "etd": 33.58},
    "CodeT5-Base (220M)": {"etd": 40.63},
    "CodeT5-Large (770M)": {"etd": 42.45},
}
PLOTS = ("accuracy.png", "drop_rates.png", "training_curves.png")


@dataclass
class RunView:
    run_id: str
    name: str
    tags: dict
    params: dict
    metrics: dict
    history: dict = field(default_factory=dict)
    """metric name -> [(step, value)], for the training curves."""


@dataclass
class Results:
    preset: str
    experiment: str
    parent: RunView | None
    steps: dict[str, RunView]
    """step name (generate, verify, mix-cot, train-etd, evaluate-eot, promote...) -> its run."""
    model_name: str
    versions: list[dict]
    """registered versions of our train runs: {"version", "run_id", "mix", "aliases"}."""
    baseline: dict
    """{"answer": str, "accuracy": {test_set: float}, "n": {test_set: int}} (may be empty)."""
    correct: dict = field(default_factory=dict)
    """mix -> test_set -> {"problem_ids": [...], "correct": {name: [0/1]}} (eval/<test_set>/correct.json)."""
    empty: bool = False
    """True when the store holds no run of this experiment at all."""

    def evaluations(self) -> dict[str, RunView]:
        return {m: self.steps[f"evaluate-{m}"] for m in MIXES if f"evaluate-{m}" in self.steps}


def _view(client, run, history: tuple[str, ...] = ()) -> RunView:
    hist = {}
    for key in history:
        if key in run.data.metrics:
            points = client.get_metric_history(run.info.run_id, key)
            hist[key] = sorted((p.step, p.timestamp, p.value) for p in points)
            hist[key] = [(s, v) for s, _, v in hist[key]]
    return RunView(run.info.run_id, run.info.run_name or "", dict(run.data.tags), dict(run.data.params),
                   dict(run.data.metrics), hist)


def collect(cfg: Config, parent_run_id: str | None = None) -> Results:
    """Read everything the report shows from the tracking store of cfg."""
    import mlflow

    client = mlflow.MlflowClient(cfg.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    if parent_run_id:
        # the parent's own experiment: under `mlflow run` without --experiment-name it is Default
        try:
            experiment = client.get_experiment(client.get_run(parent_run_id).info.experiment_id)
        except Exception:
            raise DataError(f"run {parent_run_id} is not in {cfg.tracking_uri}") from None
    if experiment is None:
        return Results(cfg.preset, cfg.tracking.experiment, None, {}, cfg.promote.model_name, [], {}, empty=True)
    exp_ids = [experiment.experiment_id]

    def view(run_id: str) -> RunView | None:
        try:
            run = client.get_run(run_id)
        except Exception:  # a step run deleted from the store: shown as missing, not fatal
            return None
        hist = ("train/loss", "val/loss") if run.data.tags.get("distill.stage") == "train" else ()
        return _view(client, run, hist)

    parent = None
    if parent_run_id:
        parent = view(parent_run_id)
        if parent is None:
            raise DataError(f"run {parent_run_id} is not in {cfg.tracking_uri}")
    else:
        found = client.search_runs(
            exp_ids, f"tags.`distill.stage` = 'reproduce' and tags.`distill.preset` = '{cfg.preset}'",
            order_by=["attributes.start_time DESC"], max_results=1)
        parent = _view(client, found[0]) if found else None

    steps: dict[str, RunView] = {}
    if parent is not None:
        prefix, suffix = "distill.step.", ".run_id"
        for key, run_id in sorted(parent.tags.items()):
            # the report's own run is left out, so the report written inside reproduce and one
            # regenerated later from the same store are the same file
            if key.startswith(prefix) and key.endswith(suffix) and key != f"{prefix}report{suffix}":
                found_view = view(run_id)
                if found_view is not None:
                    steps[key[len(prefix):-len(suffix)]] = found_view
    else:
        # no reproduce run: the newest run of each stage (and mix) of this preset
        runs = client.search_runs(exp_ids, f"tags.`distill.preset` = '{cfg.preset}'",
                                  order_by=["attributes.start_time DESC"], max_results=5000)
        for run in runs:
            stage = run.data.tags.get("distill.stage")
            if not stage or stage in ("reproduce", "report"):
                continue
            mix = run.data.tags.get("distill.mix")
            name = f"{stage}-{mix}" if mix and stage in ("mix", "train", "evaluate") else stage
            if name not in steps:
                found_view = view(run.info.run_id)
                if found_view is not None:
                    steps[name] = found_view

    versions = _versions(client, cfg.promote.model_name, steps)
    baseline = _baseline(parent) if parent is not None else {}
    if not baseline.get("accuracy"):
        from distill.stages.reproduce import constant_baseline

        try:
            computed = constant_baseline(cfg)
        except (DataError, ValueError, OSError):
            computed = None
        if computed:
            baseline = {"answer": f"{computed['answer']:g}", "accuracy": computed["accuracy"], "n": computed["n"],
                        "source": "computed from the data files (no reproduce run in the store)"}
    if parent is None and not steps:
        return Results(cfg.preset, experiment.name, None, {}, cfg.promote.model_name, [], {}, empty=True)
    correct = {}
    for name, run in steps.items():
        if name.startswith("evaluate-"):
            correct[name.split("-", 1)[1]] = _correctness(cfg, run.run_id)
    return Results(cfg.preset, experiment.name, parent, steps, cfg.promote.model_name, versions, baseline,
                   correct)


def _correctness(cfg: Config, run_id: str) -> dict:
    """test_set -> the evaluate run's eval/<test_set>/correct.json; test sets without one are left out."""
    import tempfile

    import mlflow

    client = mlflow.MlflowClient(cfg.tracking_uri)
    out = {}
    try:
        folders = [a.path for a in client.list_artifacts(run_id, "eval") if a.is_dir]
    except Exception:  # noqa: BLE001 - no artifacts (an old run): no paired tests for it
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        for folder in sorted(folders):
            if not any(a.path == f"{folder}/correct.json" for a in client.list_artifacts(run_id, folder)):
                continue
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{folder}/correct.json",
                                                       dst_path=tmp, tracking_uri=cfg.tracking_uri)
            out[folder.split("/", 1)[1]] = read_json(path)
    return out


def _baseline(parent: RunView) -> dict:
    acc = {k.split("/")[1]: v for k, v in parent.metrics.items()
           if k.startswith("baseline/") and k.endswith("/accuracy")}
    n = {k.split("/")[1]: int(v) for k, v in parent.metrics.items() if k.startswith("baseline/") and k.endswith("/n")}
    return {"answer": parent.params.get("baseline.answer", "?"), "accuracy": acc, "n": n,
            "source": f"logged on the reproduce run from the first {parent.params.get('baseline.train_n', '?')} "
                      "training problems"}


def _versions(client, model_name: str, steps: dict[str, RunView]) -> list[dict]:
    train_runs = {v.run_id: name.split("-", 1)[1] for name, v in steps.items() if name.startswith("train-")}
    try:
        found = client.search_model_versions(f"name='{model_name}'")
        # search results carry no aliases in MLflow 3; the registered model has them all
        aliases = dict(getattr(client.get_registered_model(model_name), "aliases", {}) or {})
    except Exception:  # no such registered model yet
        return []
    rows = []
    for mv in found:
        if mv.run_id in train_runs:
            rows.append({"version": int(mv.version), "run_id": mv.run_id, "mix": train_runs[mv.run_id],
                         "aliases": sorted(a for a, v in aliases.items() if str(v) == str(mv.version))})
    return sorted(rows, key=lambda r: r["version"])


# --- tables -------------------------------------------------------------------------------------

def _order(items, order) -> list:
    items = set(items)
    return [x for x in order if x in items] + sorted(items - set(order))


def accuracies(results: Results) -> dict[tuple[str, str], dict[str, float]]:
    """(mix, form) -> {test_set: accuracy}; a one-form student's "selected" (its only form again) is left out."""
    return {key: {ts: cell["accuracy"] for ts, cell in row.items()} for key, row in intervals(results).items()}


def intervals(results: Results) -> dict[tuple[str, str], dict[str, dict]]:
    """(mix, form) -> {test_set: {"accuracy", "ci_low", "ci_high", "n"}} (bounds and n None when not logged)."""
    table: dict[tuple[str, str], dict[str, dict]] = {}
    for mix, run in results.evaluations().items():
        m = run.metrics
        for key, value in m.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == "accuracy":
                ts, name = parts[0], parts[1]
                n = m.get(f"{ts}/n")
                table.setdefault((mix, name), {})[ts] = {
                    "accuracy": value, "ci_low": m.get(f"{ts}/{name}/ci_low"), "ci_high": m.get(f"{ts}/{name}/ci_high"),
                    "n": None if n is None else int(n)}
    for mix in {m for m, _ in table}:
        if len({f for m, f in table if m == mix and f in ("cot", "pot", "eot")}) <= 1:
            table.pop((mix, "selected"), None)
    return table


def selected_forms(results: Results) -> dict[str, str]:
    """mix -> the form its evaluate run says was chosen on validation (tag distill.selected_form)."""
    return {mix: run.tags["distill.selected_form"] for mix, run in results.evaluations().items()
            if run.tags.get("distill.selected_form")}


def sets_of(results: Results) -> list[str]:
    names = {ts for row in accuracies(results).values() for ts in row} | set(results.baseline.get("accuracy", {}))
    return _order(names, TEST_SET_ORDER)


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _cell(cell: dict | None) -> str:
    """"acc [lo, hi]" in percent; the bounds are left out when the run logged none."""
    if cell is None:
        return "–"
    if cell.get("ci_low") is None or cell.get("ci_high") is None:
        return _pct(cell["accuracy"])
    return f"{_pct(cell['accuracy'])} [{100 * cell['ci_low']:.1f}, {100 * cell['ci_high']:.1f}]"


def _limit(results: Results) -> str | None:
    """What the evaluate runs scored, or None when there is no evaluate run (nothing to claim)."""
    runs = results.evaluations().values()
    if not runs:
        return None
    limits = sorted({run.params.get("evaluate.limit", "") for run in runs})
    limits = [x for x in limits if x not in ("", "None")]
    if not limits:
        return "every problem of each test set (`evaluate.limit` unset)"
    return f"the first {', '.join(limits)} problems of each test set (`evaluate.limit`)"


def _ns(results: Results, sets: list[str]) -> dict[str, str]:
    """test_set -> its n as logged by the evaluate runs ("500", or "500/3" when students differ)."""
    out = {}
    for ts in sets:
        ns = sorted({int(run.metrics[f"{ts}/n"]) for run in results.evaluations().values() if f"{ts}/n" in run.metrics})
        out[ts] = "/".join(str(n) for n in ns) if ns else "?"
    return out


def _empty(results: Results) -> str:
    return "\n".join([
        f"# Results: preset `{results.preset}`", "",
        f"Nothing to report yet: the tracking store holds no run of preset `{results.preset}` in experiment "
        f"`{results.experiment}`. Run `make reproduce` (or `distill reproduce --preset {results.preset}`), or point "
        "MLFLOW_TRACKING_URI at the store that holds the runs, then `distill report` again.", ""])


def render(results: Results) -> str:
    """results.md as text; deterministic for a given store."""
    if results.empty:
        return _empty(results)
    cells = intervals(results)
    sets = sets_of(results)
    ns = _ns(results, sets)
    chosen = selected_forms(results)
    p = results.parent
    out = [f"# Results: preset `{results.preset}`", ""]
    out.append("Generated by `distill report` from the MLflow store "
               f"(experiment `{results.experiment}`). Regenerating it from the same store gives this file.")
    out.append("")
    if p is not None:
        out += [f"- reproduce run: `{p.run_id}` ({p.name})",
                f"- teacher: `{p.tags.get('distill.teacher', '?')}`, student: `{p.tags.get('distill.student', '?')}`, "
                f"config digest `{p.tags.get('distill.config_digest', '?')}`"]
    else:
        out.append("- no `reproduce` run in the store: the newest run of each stage of this preset is shown")
    limit = _limit(results)
    if limit:
        out.append(f"- evaluated on {limit}; n per test set: "
                   + ", ".join(f"{ts} {ns[ts]}" for ts in sets))
    out.append("")

    out += ["## Accuracy (%), with 95% Wilson intervals", "",
            "Each student is asked for every form it was trained on; a prediction is correct when it is "
            "within 1e-3 of the gold answer, and a missing or unparseable answer is wrong. Each cell is "
            "accuracy [95% Wilson interval]; n is in the column head. `selected` is the form chosen on the "
            "validation split (the train stage's validation accuracy per form), named in the row; no number "
            "here was chosen on a test set.", ""]
    out.append("| student | form | " + " | ".join(f"{ts} (n={ns[ts]})" for ts in sets) + " |")
    out.append("|---|---|" + "---:|" * len(sets))
    for mix in _order({m for m, _ in cells}, MIXES):
        for form in _order({f for m, f in cells if m == mix}, FORM_ORDER):
            if form == "selected":
                label = f"selected = {chosen.get(mix, '?')} — {OURS_NOTE['selected']}"
            else:
                label = f"{form} — {OURS_NOTE[form]}" if form in OURS_NOTE else form
            row = cells[(mix, form)]
            out.append(f"| {STUDENT_NAMES.get(mix, mix)} (`{mix}`) | {label} | "
                       + " | ".join(_cell(row.get(ts)) for ts in sets) + " |")
    base = _baseline_cells(results)
    if base:
        b = results.baseline
        out.append(f"| constant answer {b['answer']} | — | " + " | ".join(_cell(base.get(ts)) for ts in sets) + " |")
        out += ["", f"The constant-answer row always answers {b['answer']}, the most common answer of the "
                f"training problems ({b.get('source', '')}), on the same problems "
                "(n: " + ", ".join(f"{ts} {c['n']}" for ts, c in base.items()) + "): a student at or below it has "
                "learned only the prior."]
    if not cells:
        out += ["", "No evaluation runs found yet."]
    out.append("")

    out += _paper_table(results, cells, chosen)
    out += _significance(results, sets)
    out += _choices(results)
    out += _drop_table(results)
    out += _failure_table(results, sets)
    out += _training_table(results)
    out += _runs_table(results)
    out += ["## Plots", ""] + [f"![{name[:-4]}]({name})" for name in PLOTS]
    return "\n".join(out) + "\n"


def _baseline_cells(results: Results) -> dict[str, dict]:
    """test_set -> the constant answer's {"accuracy", "ci_low", "ci_high", "n"} (its n from the parent run)."""
    from distill.scoring import wilson

    b = results.baseline
    out = {}
    for ts, acc in sorted(b.get("accuracy", {}).items()):
        n = b.get("n", {}).get(ts)
        cell = {"accuracy": acc, "ci_low": None, "ci_high": None, "n": n}
        if n:
            cell["ci_low"], cell["ci_high"] = wilson(round(acc * n), n)
        out[ts] = cell
    return {ts: out[ts] for ts in _order(out, TEST_SET_ORDER)}


def _paper_table(results: Results, cells, chosen: dict[str, str]) -> list[str]:
    out = ["## Beside the paper (GSM8K test accuracy, %)", "",
           f"The paper's numbers: {PAPER_CITATION}; – means not reported. Which form the paper's ETD figure "
           "uses is not known; ours is the ETD student's form chosen on the validation split (named), with "
           "its 95% interval. The paper's students are 60M-770M CodeT5 models trained on a GPU; ours is the "
           "student of this preset, so only the ordering of the columns is comparable, not the level.", ""]
    out.append("| student | no distillation | CoTD | PoTD | EoTD | ETD |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for student, nums in PAPER_GSM8K.items():
        out.append(f"| {student}, paper | " + " | ".join(
            "–" if k not in nums else f"{nums[k]:.2f}" for k in ("none", "cot", "pot", "eot", "etd")) + " |")
    ours = [_cell(cells.get((mix, mix), {}).get("gsm8k")) for mix in ("cot", "pot", "eot")]
    etd = cells.get(("etd", "selected"), {}).get("gsm8k")
    etd_cell = _cell(etd) + (f" ({chosen['etd']})" if etd is not None and chosen.get("etd") else "")
    p = results.parent
    student = p.tags.get("distill.student", "?") if p else "?"
    sizes = sorted({int(run.params["train.n_params"]) for name, run in results.steps.items()
                    if name.startswith("train-") and run.params.get("train.n_params", "").isdigit()})
    student += f"` ({'/'.join(_millions(n) for n in sizes)} params)" if sizes else "`"
    base = _baseline_cells(results).get("gsm8k")
    out.append(f"| ours: `{student}, preset `{results.preset}` | {_cell(base)} (constant answer) | "
               + " | ".join(ours) + f" | {etd_cell} |")
    return out + [""]


def paired_tests(results: Results) -> list[dict]:
    """Every paired comparison the report shows: {"what", "a", "b", "test_set", "a_acc", "b_acc", "n",
    "a_only", "b_only", "p_value"}; students by their selected answers (a one-form student's only form),
    and the ETD student's forms and combinations against each other, on the same problems."""
    from itertools import combinations

    from distill.scoring import mcnemar

    chosen = selected_forms(results)
    rows = []

    def answers(mix: str, ts: str, name: str):
        data = results.correct.get(mix, {}).get(ts)
        if not data:
            return None, None
        correct = data.get("correct", {})
        if name == "selected" and "selected" not in correct and len(correct) == 1:
            name = next(iter(correct))  # a one-form student: its only form is its answer
        return data.get("problem_ids"), correct.get(name)

    def add(what, a_label, b_label, ts, a, b):
        (ids_a, xs), (ids_b, ys) = a, b
        if xs is None or ys is None or ids_a != ids_b:
            return  # not the same problems: no paired test
        test = mcnemar(xs, ys)
        rows.append({"what": what, "a": a_label, "b": b_label, "test_set": ts, "a_acc": sum(xs) / len(xs) if xs else 0.0,
                     "b_acc": sum(ys) / len(ys) if ys else 0.0, **test})

    sets = _order({ts for per in results.correct.values() for ts in per}, TEST_SET_ORDER)
    mixes = _order(results.correct, MIXES)
    for ts in sets:
        for a, b in combinations(mixes, 2):
            label = lambda m: f"{STUDENT_NAMES.get(m, m)} ({chosen.get(m, 'selected')})"  # noqa: E731
            add("students", label(a), label(b), ts, answers(a, ts, "selected"), answers(b, ts, "selected"))
        forms = _order(set(results.correct.get("etd", {}).get(ts, {}).get("correct", {})) - {"selected"}, FORM_ORDER)
        for a, b in combinations(forms, 2):
            add("ETD forms", a, b, ts, answers("etd", ts, a), answers("etd", ts, b))
    return rows


def _significance(results: Results, sets: list[str]) -> list[str]:
    rows = paired_tests(results)
    out = ["## Which differences are significant (paired, same problems)", "",
           "Exact McNemar test on the problems where exactly one side is right. Each cell: a − b in "
           "percentage points, (a only / b only) discordant problems, the two-sided p-value, and **sig** "
           f"when p < {ALPHA}. No correction for the number of comparisons (about 1 in 20 cells falls below "
           f"{ALPHA} by chance alone). Students are compared by their selected form (the only form of a "
           "one-form student).", ""]
    if not rows:
        return out + ["No per-problem results (eval/<test_set>/correct.json) in the evaluate runs.", ""]
    cols = [ts for ts in sets if any(r["test_set"] == ts for r in rows)]
    pairs: dict[tuple[str, str, str], dict[str, dict]] = {}
    for r in rows:
        pairs.setdefault((r["what"], r["a"], r["b"]), {})[r["test_set"]] = r
    out += ["| compared | a | b | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    for (what, a, b), by_set in pairs.items():
        cells = []
        for ts in cols:
            r = by_set.get(ts)
            if r is None:
                cells.append("–")
                continue
            diff = 100 * (r["a_acc"] - r["b_acc"])
            cells.append(f"{diff:+.1f} ({r['a_only']}/{r['b_only']}) p {r['p_value']:.2g}"
                         + (" **sig**" if r["p_value"] < ALPHA else ""))
        out.append(f"| {what} | {a} | {b} | " + " | ".join(cells) + " |")
    return out + [""]


def _choices(results: Results) -> list[str]:
    """Every choice of ours that the paper does not state, with what the runs logged about it."""
    out = ["## Choices of ours the paper does not state", ""]
    mixes = {name.split("-", 1)[1]: run for name, run in results.steps.items() if name.startswith("mix-")}
    mix_run = mixes.get("etd") or next(iter(mixes.values()), None)
    if mix_run is not None:
        overlap = {k.split("/", 2)[2]: int(v) for k, v in mix_run.metrics.items() if k.startswith("mix/overlap/")}
        on = mix_run.params.get("mix.decontaminate", "?")
        removed = mix_run.metrics.get("mix/removed_overlap")
        out.append(f"- **Decontamination** (`mix.decontaminate={on}`, word {mix_run.params.get('mix.overlap_n', '?')}"
                   "-grams): training questions overlapping a test set, per test set: "
                   + (", ".join(f"{ts} {overlap[ts]}" for ts in _order(overlap, TEST_SET_ORDER)) or "none logged")
                   + (f"; {int(removed)} training rows removed from the {mix_run.tags.get('distill.mix', '?')} mix"
                      if removed is not None else "") + ".")
        out.append(f"- **Validation split**: `mix.val_fraction={mix_run.params.get('mix.val_fraction', '?')}` of the "
                   f"training *questions* (all forms of a question go to the same side, seed "
                   f"`{mix_run.params.get('mix.seed', '?')}`); never a test question. The forms and the champion "
                   "are chosen on it; test sets are only reported.")
    else:
        out.append("- **Decontamination** and **validation split**: no mix run found.")
    verify = results.steps.get("verify")
    if verify is not None:
        strict = verify.params.get("verify.strict", "?")
        repaired = {k.split("/")[1]: int(v) for k, v in verify.metrics.items()
                    if k.startswith("verify/") and k.endswith("/repaired")}
        rescued = (", ".join(f"{f} {repaired[f]}" for f in _order(repaired, FORM_ORDER)) if repaired
                   else "not recorded")
        out.append(f"- **Repair rules** of the verifiers: `verify.strict={strict}` "
                   f"({'off' if strict == 'True' else 'on'}); kept samples that strict mode would have "
                   f"dropped, per form: {rescued}.")
    else:
        out.append("- **Repair rules**: no verify run found.")
    out.append("- **Input truncation**: inputs longer than `max_source_len` lose tokens on the left (the start "
               "of the question), so the form's instruction at the end is always kept (training and decoding).")
    trains = {name.split("-", 1)[1]: run for name, run in results.steps.items() if name.startswith("train-")}
    if trains:
        run = trains.get("etd") or next(iter(trains.values()))
        out.append("- **Checkpoint selection**: the student is the checkpoint with the lowest validation loss "
                   f"(evaluated each epoch); budget `train.max_steps={run.params.get('train.max_steps') or 'none'}`, "
                   f"`train.max_minutes={run.params.get('train.max_minutes') or 'none'}`.")
        val = {k.split("/")[1]: v for k, v in run.metrics.items() if k.startswith("val/") and k.endswith("/accuracy")}
        shown = ", ".join(f"{f} {_pct(val[f])}%" for f in _order(val, FORM_ORDER)) or "not logged"
        out.append("- **Form selection**: the ETD student's `selected` form is the one with the highest "
                   f"validation accuracy on `train.val_generate_limit={run.params.get('train.val_generate_limit', '?')}` "
                   f"validation rows (ties to EoT, PoT, CoT); here {shown} (train run of "
                   f"{STUDENT_NAMES.get(run.tags.get('distill.mix', ''), 'the student')}), selected "
                   f"{selected_forms(results).get('etd', '?')}. Promotion ranks on that validation accuracy.")
    evals = results.evaluations()
    if evals:
        run = evals.get("etd") or next(iter(evals.values()))
        out.append(f"- **Decoding**: greedy, at most `evaluate.max_new_tokens={run.params.get('evaluate.max_new_tokens', '?')}` "
                   f"new tokens, inputs cut to `evaluate.max_source_len={run.params.get('evaluate.max_source_len', '?')}`; "
                   "vote and fallback are our own combinations (distill/scoring.py).")
    return out + [""]


def drop_rates(results: Results) -> dict[str, dict]:
    """form -> {"kept", "drop_rate", "reasons": {reason: count}} from the verify run."""
    run = results.steps.get("verify")
    forms: dict[str, dict] = defaultdict(lambda: {"kept": None, "drop_rate": None, "reasons": {}})
    if run is None:
        return {}
    for key, value in run.metrics.items():
        parts = key.split("/")
        if parts[0] != "verify" or len(parts) < 3:
            continue
        if parts[2] == "drop_rate":
            forms[parts[1]]["drop_rate"] = value
        elif parts[2] == "kept":
            forms[parts[1]]["kept"] = int(value)
        elif parts[2] == "dropped" and len(parts) == 4:
            forms[parts[1]]["reasons"][parts[3]] = int(value)
    return dict(forms)


def _drop_table(results: Results) -> list[str]:
    drops = drop_rates(results)
    out = ["## Verified data: drop rate per form and reason", ""]
    if not drops:
        return out + ["No verify run found.", ""]
    reasons = sorted({r for d in drops.values() for r in d["reasons"]})
    out.append("| form | samples | kept | drop rate (%) | " + " | ".join(reasons) + " |")
    out.append("|---|---:|---:|---:|" + "---:|" * len(reasons))
    for form in _order(drops, FORM_ORDER):
        d = drops[form]
        dropped = sum(d["reasons"].values())
        n = (d["kept"] or 0) + dropped
        out.append(f"| {form} | {n} | {d['kept'] if d['kept'] is not None else '–'} | {_pct(d['drop_rate'])} | "
                   + " | ".join(str(d["reasons"].get(r, 0)) for r in reasons) + " |")
    return out + [""]


def _failure_table(results: Results, sets: list[str]) -> list[str]:
    """(student, form) x test set: how many predictions were wrong or gave no usable answer, and why."""
    cells: dict[tuple[str, str], dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for mix, run in results.evaluations().items():
        for key, value in run.metrics.items():
            parts = key.split("/")
            if len(parts) == 4 and parts[2] == "failures" and value:
                cells[(mix, parts[1])][parts[0]][parts[3]] = int(value)
    if not cells:
        return []
    out = ["## Answers that were not correct, by status (wrong_answer, or no usable answer and why)", "",
           "| student | form | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    for mix in _order({m for m, _ in cells}, MIXES):
        for form in _order({f for m, f in cells if m == mix}, FORM_ORDER):
            row = cells[(mix, form)]
            out.append(f"| {STUDENT_NAMES.get(mix, mix)} | {form} | " + " | ".join(
                ", ".join(f"{n} {reason}" for reason, n in sorted(row.get(ts, {}).items())) or "0"
                for ts in sets) + " |")
    return out + [""]


def _training_table(results: Results) -> list[str]:
    trains = {name.split("-", 1)[1]: run for name, run in results.steps.items() if name.startswith("train-")}
    if not trains:
        return []
    out = ["## Training", "", "| student | steps | last train/loss | best val/loss | lr | epochs | max_steps |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for mix in _order(trains, MIXES):
        run = trains[mix]
        loss = run.history.get("train/loss", [])
        val = [v for _, v in run.history.get("val/loss", [])]
        out.append(f"| {STUDENT_NAMES.get(mix, mix)} | {loss[-1][0] if loss else '–'} | "
                   f"{f'{loss[-1][1]:.4f}' if loss else '–'} | {f'{min(val):.4f}' if val else '–'} | "
                   f"{run.params.get('train.lr', '–')} | {run.params.get('train.epochs', '–')} | "
                   f"{run.params.get('train.max_steps', '–') or '–'} |")
    return out + [""]


def _runs_table(results: Results) -> list[str]:
    from distill.stages.reproduce import plan

    order = {s.name: i for i, s in enumerate(plan())}
    wall = {k.split("/", 1)[1]: v for k, v in (results.parent.metrics if results.parent else {}).items()
            if k.startswith("wall_seconds/")}
    # the report's own step and the total are left out: both are logged after this file is written
    names = (set(results.steps) | set(wall)) - {"report", "total"}
    out = ["## Runs that produced these numbers", "", "| step | run name | run id | wall time (s) |",
           "|---|---|---|---:|"]
    for name in sorted(names, key=lambda n: (order.get(n, 99), n)):
        run = results.steps.get(name)
        seconds = wall.get(name)
        out.append(f"| {name} | {run.name if run else '–'} | {f'`{run.run_id}`' if run else '(no run of its own)'} | "
                   f"{f'{seconds:.1f}' if seconds is not None else '–'} |")
    if wall:
        out.append(f"| **all steps above** | | | {sum(wall.get(n, 0.0) for n in names):.1f} |")
    out.append("")
    if results.versions:
        champion = [v["version"] for v in results.versions if "champion" in v["aliases"]]
        out += [f"Registered model `{results.model_name}`"
                + (f" (`models:/{results.model_name}@champion` is version {champion[0]})" if champion else "")
                + ":", "", "| version | student | train run | aliases |",
                "|---:|---|---|---|"]
        for v in results.versions:
            out.append(f"| {v['version']} | {STUDENT_NAMES.get(v['mix'], v['mix'])} | `{v['run_id']}` | "
                       f"{', '.join(v['aliases']) or '–'} |")
        out.append("")
    return out


# --- plots --------------------------------------------------------------------------------------
# drawn by distill/plots.py (legends, n, 95% intervals, the baseline line, smoothed losses)


def write(results: Results, output_dir: str | Path) -> list[Path]:
    from distill import plots

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [atomic_write_text(out / "results.md", render(results))]
    if results.empty:  # nothing to plot: results.md says so
        return paths
    for name in PLOTS:
        paths.append(plots.PLOTS[name](results, out / name))
    return paths


def run(cfg: Config, run_dir: Path | None = None, tracker=None, *, output_dir: str | Path = "reports",
        parent_run_id: str | None = None) -> dict:
    """Write results.md and the plots to output_dir from cfg's tracking store.

    With a tracker (inside `distill reproduce`) it opens a nested run "report" and logs the files
    as its artifacts; on its own (`distill report`) it only reads the store.
    """
    results = collect(cfg, parent_run_id)
    paths = write(results, output_dir)
    summary = {"output_dir": str(output_dir), "files": [p.name for p in paths],
               "parent_run_id": results.parent.run_id if results.parent else None,
               "students": sorted(results.evaluations())}
    if tracker is not None:
        tags = {"distill.stage": "report", "distill.preset": cfg.preset}
        with tracker.run("report", tags, nested=True) as active:
            for path in paths:
                tracker.log_artifact(path, "report")
            summary["run_id"] = active.info.run_id
    return summary
