"""Results report, built from the MLflow store alone (never from run_dir), so it describes exactly
the runs that are tracked.

Reads: the newest parent run ``reproduce-<preset>`` (tag distill.stage=reproduce; or the one given
by ``parent_run_id``) and the step runs its ``distill.step.<step>.run_id`` tags name; without a
parent, the newest run of each stage (and mix) with tag distill.preset=<preset>. From them:
evaluate metrics ``<test_set>/<form>/accuracy`` and ``.../failures/<reason>``, verify metrics
``verify/<form>/{drop_rate,kept,dropped/<reason>}``, train metric histories ``train/loss`` and
``val/loss``, the parent's ``baseline/<test_set>/accuracy`` and ``wall_seconds/<step>``, and the
registry's versions of the student model and its champion alias.

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
from distill.files import DataError, atomic_write_text

MIXES = ("cot", "pot", "eot", "etd")
STUDENT_NAMES = {"cot": "CoTD", "pot": "PoTD", "eot": "EoTD", "etd": "ETD"}
TEST_SET_ORDER = ("gsm8k", "asdiv", "svamp", "multiarith")
FORM_ORDER = ("cot", "pot", "eot", "vote", "fallback", "best")
OURS_NOTE = {"vote": "majority vote of the forms (ours)", "fallback": "first form that gives an answer (ours)",
             "best": "best single form on this test set"}

# METHOD.md, "The paper's headline results": GSM8K test accuracy (%), Zhu et al. 2024 (arXiv 2401.11864).
PAPER_GSM8K = {
    "CodeT5-Small (60M)": {"none": 1.1, "eot": 18.87, "etd": 33.58},
    "CodeT5-Base (220M)": {"etd": 40.63},
    "CodeT5-Large (770M)": {"etd": 42.45},
}
PLOTS = ("accuracy.png", "drop_rates.png", "training_curves.png")
COLORS = {"cot": "tab:blue", "pot": "tab:orange", "eot": "tab:green", "etd": "tab:purple"}


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
        raise DataError(f"no experiment {cfg.tracking.experiment!r} in {cfg.tracking_uri}: "
                        "run `make reproduce` (or `distill reproduce`) first, or point MLFLOW_TRACKING_URI "
                        "at the store that holds the runs")
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
    return Results(cfg.preset, experiment.name, parent, steps, cfg.promote.model_name, versions, baseline)


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
    """(mix, form) -> {test_set: accuracy}; a one-form student's "best" (its only form again) is left out."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    for mix, run in results.evaluations().items():
        for key, value in run.metrics.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == "accuracy":
                table.setdefault((mix, parts[1]), {})[parts[0]] = value
    for mix in {m for m, _ in table}:
        if len({f for m, f in table if m == mix and f in ("cot", "pot", "eot")}) <= 1:
            table.pop((mix, "best"), None)
    return table


def sets_of(results: Results) -> list[str]:
    names = {ts for row in accuracies(results).values() for ts in row} | set(results.baseline.get("accuracy", {}))
    return _order(names, TEST_SET_ORDER)


def _millions(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _limit(results: Results) -> str:
    limits = sorted({run.params.get("evaluate.limit", "") for run in results.evaluations().values()})
    if not limits and results.parent is not None:
        limits = [results.parent.params.get("evaluate.limit", "")]
    limits = [x for x in limits if x not in ("", "None")]
    if not limits:
        return "every problem of each test set (no limit)"
    return f"the first {', '.join(limits)} problems of each test set (`evaluate.limit`)"


def render(results: Results) -> str:
    """results.md as text; deterministic for a given store."""
    acc = accuracies(results)
    sets = sets_of(results)
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
    out.append(f"- evaluated on {_limit(results)}")
    out.append("")

    out += ["## Accuracy (%)", "",
            "Each student is asked for every form it was trained on; a prediction is correct when it is "
            "within 1e-3 of the gold answer, and a missing or unparseable answer is wrong.", ""]
    out.append("| student | form | " + " | ".join(sets) + " |")
    out.append("|---|---|" + "---:|" * len(sets))
    for mix in _order({m for m, _ in acc}, MIXES):
        for form in _order({f for m, f in acc if m == mix}, FORM_ORDER):
            label = f"{form} — {OURS_NOTE[form]}" if form in OURS_NOTE else form
            row = acc[(mix, form)]
            out.append(f"| {STUDENT_NAMES.get(mix, mix)} (`{mix}`) | {label} | "
                       + " | ".join(_pct(row.get(ts)) for ts in sets) + " |")
    if results.baseline.get("accuracy"):
        b = results.baseline
        out.append(f"| constant answer {b['answer']} | — | "
                   + " | ".join(_pct(b["accuracy"].get(ts)) for ts in sets) + " |")
        out += ["", f"The constant-answer row always answers {b['answer']}, the most common answer of the "
                f"training problems ({b.get('source', '')}): a student at or below it has learned only the prior."]
    if not acc:
        out += ["", "No evaluation runs found yet."]
    out.append("")

    out += ["## Beside the paper (GSM8K test accuracy, %)", "",
            "The paper's numbers are from METHOD.md (Zhu et al. 2024, CodeT5 students, gpt-3.5-turbo teacher); "
            "– means not reported. Which form the paper's ETD figure uses is not known, so ours shows the best "
            "single form and names it.", ""]
    out.append("| student | no distillation | CoTD | PoTD | EoTD | ETD |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for student, nums in PAPER_GSM8K.items():
        out.append(f"| {student}, paper | " + " | ".join(
            "–" if k not in nums else f"{nums[k]:.2f}" for k in ("none", "cot", "pot", "eot", "etd")) + " |")
    ours = []
    for mix in ("cot", "pot", "eot"):
        ours.append(_pct(acc.get((mix, mix), {}).get("gsm8k")))
    etd = results.steps.get("evaluate-etd")
    best_form = etd.tags.get("distill.best_form.gsm8k") if etd else None
    etd_value = acc.get(("etd", "best"), {}).get("gsm8k")
    etd_cell = _pct(etd_value) + (f" ({best_form})" if best_form and etd_value is not None else "")
    student = p.tags.get("distill.student", "?") if p else "?"
    sizes = sorted({int(run.params["train.n_params"]) for name, run in results.steps.items()
                    if name.startswith("train-") and run.params.get("train.n_params", "").isdigit()})
    if sizes:
        student += f"` ({'/'.join(_millions(n) for n in sizes)} params)"
    else:
        student += "`"
    base = results.baseline.get("accuracy", {}).get("gsm8k")
    out.append(f"| ours: `{student}, preset `{results.preset}` | {_pct(base)} (constant answer) | "
               + " | ".join(ours) + f" | {etd_cell} |")
    out.append("")

    out += _drop_table(results)
    out += _failure_table(results, sets)
    out += _training_table(results)
    out += _runs_table(results)
    out += ["## Plots", ""] + [f"![{name[:-4]}]({name})" for name in PLOTS]
    return "\n".join(out) + "\n"


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
