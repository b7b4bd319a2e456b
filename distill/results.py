"""The study's results as one value: the MLflow run tree (and the data files, for the baseline) read
into ``Results``, and the numbers derived from it. The report's tables (distill/stages/report.py), its
plots (distill/plots.py) and ``distill compare`` (distill/compare.py) all read this value; none of
them queries the store itself.

Reads (never run_dir): the newest parent run ``reproduce-<preset>`` (tag distill.stage=reproduce; or
the one given by ``parent_run_id``) and the step runs its ``distill.step.<step>.run_id`` tags name;
without a parent, the newest run of each stage (and mix) with tag distill.preset=<preset>. From them:
evaluate metrics ``<test_set>/n``, ``<test_set>/<name>/{accuracy,ci_low,ci_high}`` and
``.../failures/<reason>``, the tag ``distill.selected_form`` and the per-problem artifacts
``eval/<test_set>/correct.json`` (correct, answers and gold: the paired tests, the answer profiles and
the oracle constant), verify metrics
``verify/<form>/{drop_rate,kept,dropped/<reason>,repaired}`` and param ``verify.strict``, mix metrics
``mix/overlap/<test_set>`` and ``mix/removed_overlap`` and params ``mix.val_fraction``,
``mix.decontaminate``, train metric histories ``train/loss`` and ``val/loss``, train metrics
``train/steps_run``, ``train/epochs_run``, ``val/<form>/accuracy`` and tag ``distill.stopped``, the parent's
``baseline/<test_set>/{accuracy,n}`` and ``wall_seconds/<step>``, and the registry's versions of the
student model and its champion alias. Without a baseline on a parent run, the constant-answer
baseline is computed from the data files (``constant_baseline``, which ``distill reproduce`` also
logs on its parent run). Writes nothing.

What a student learned: ``profiles`` characterises each student's answers per form and test set (the
number of distinct answers, the share of the most common one, the accuracy of always giving it: its
own constant) from the ``answers`` and ``gold`` lists of ``correct.json``; ``degenerate`` names the
(student, form, test set) cells whose most common answer covers more than
distill.scoring.DEGENERATE_SHARE of the problems. ``oracle_cells`` is the best single constant on each
test set, chosen on that set's labels: a bound for any constant predictor, never a model.

Significance: two sets of answers to the same problems (two students' selected forms, or two forms
of the ETD student) are compared per test set with the exact McNemar test (distill.scoring.mcnemar).

Students: a mix's evaluate run is ``evaluate-<mix>``; a student with a variant (distill.thoughts
VARIANTS) is ``evaluate-<mix>-<variant>``, tagged ``distill.variant``: ``<mix>-base`` (the configured
student untrained, the starting point) and ``<mix>-grpo`` (after RL). ``gains`` pairs a mix's students
(SFT over base, RL over SFT, RL over base) on the same problems; the base is taken in the form its
trained student chose on validation (``trained_sibling_form``).

mlflow is imported here only to read the store (logging goes through distill.tracking).

One module over 450 lines on purpose: every number the report, the plots and ``distill compare``
show is derived here from the one ``Results`` value, so a reader finds each number's rule in one
place; each derivation is a small function.
"""
from __future__ import annotations

import os
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field

from distill.config import Config
from distill.files import DataError, read_json
from distill.scoring import by_name, parse_sample_name, parsed_metrics
from distill.thoughts import VARIANTS, combine_order, form_names, get_form, named_mixes, parse_student, student_name

MIX_NAMES = {**{name: get_form(name).dataset for name in form_names()}, "etd": "ETD"}
VARIANT_NAMES = {"base": "{} base (untrained)", "grpo": "{}+GRPO"}
"""How a variant's student is called in tables: the mix's name in the braces (``ETD base (untrained)``)."""
VARIANT_ORDER = ("base", "", "grpo")
"""A mix's students in the order of the study: the starting point, after SFT, after RL."""
STUDENT_NAMES = {**MIX_NAMES, **{student_name(m, v): VARIANT_NAMES.get(v, "{}-" + v).format(MIX_NAMES[m])
                                 for m in named_mixes() for v in VARIANTS if v}}
STUDENTS = tuple(student_name(m, v) for m in named_mixes()
                 for v in VARIANT_ORDER + tuple(v for v in VARIANTS if v not in VARIANT_ORDER))
"""Every student name the report knows (distill.thoughts.parse_student), in table order: per mix its
base, its SFT student and its GRPO student."""
TEST_SET_ORDER = ("gsm8k", "asdiv", "svamp", "multiarith")
FORM_ORDER = (*form_names(), "vote", "fallback", "selected")
"""The forms, then the rows derived from them, in the order every table and plot shows them."""


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
        """student name (``etd``, ``etd-base``, ``etd-grpo``) -> its evaluate run, in STUDENTS order."""
        return {m: self.steps[f"evaluate-{m}"] for m in STUDENTS if f"evaluate-{m}" in self.steps}


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
    # over 80 lines: one pass over the store (the parent run, its steps or each stage's newest run, the
    # per-problem artifacts, the registry) that fills the one Results value; the rules live elsewhere
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
            name = _step_name(stage, run.data.tags)
            if name not in steps:
                found_view = view(run.info.run_id)
                if found_view is not None:
                    steps[name] = found_view

    versions = _versions(client, cfg.promote.model_name, steps)
    baseline = _baseline(parent) if parent is not None else {}
    if not baseline.get("accuracy"):
        try:
            computed = constant_baseline(cfg)
        except (DataError, ValueError, OSError):
            computed = None
        if computed:
            baseline = {"answer": f"{computed['answer']:g}", "accuracy": computed["accuracy"], "n": computed["n"],
                        "oracle": computed["oracle"],
                        "source": "computed from the data files (no reproduce run in the store)"}
    if parent is None and not steps:
        return Results(cfg.preset, experiment.name, None, {}, cfg.promote.model_name, [], {}, empty=True)
    correct = {}
    for name, run in steps.items():
        if name.startswith("evaluate-"):
            correct[name.split("-", 1)[1]] = _correctness(cfg, run.run_id)
    golds = {ts for per in correct.values() for ts, data in per.items() if data.get("gold")}
    if not baseline.get("oracle") and not golds and correct:
        # evaluate runs that predate the golds in correct.json: the oracle from the data files
        from dataclasses import replace

        limits = {run.params.get("evaluate.limit", "") for name, run in steps.items() if name.startswith("evaluate-")}
        limit = int(next(iter(limits))) if len(limits) == 1 and next(iter(limits)).isdigit() else cfg.evaluate.limit
        try:  # on the problems the evaluate runs scored (their evaluate.limit)
            baseline["oracle"] = constant_baseline(replace(cfg, evaluate=replace(cfg.evaluate, limit=limit)))["oracle"]
        except (DataError, ValueError, OSError):
            pass  # no data files here either: no oracle row
    return Results(cfg.preset, experiment.name, parent, steps, cfg.promote.model_name, versions, baseline,
                   correct)


def _step_name(stage: str, tags: dict) -> str:
    """A run's step name without a reproduce parent: ``train-etd``, ``evaluate-etd-grpo`` (the mix and
    variant tags: two students of one mix are two steps), or the stage."""
    mix = tags.get("distill.mix")
    if not mix or stage not in ("mix", "train", "evaluate", "rl"):
        return stage
    variant = tags.get("distill.variant", "")
    return f"{stage}-{student_name(mix, variant) if variant in VARIANTS else mix + '-' + variant}"


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
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bars():
        for folder in sorted(folders):
            if not any(a.path == f"{folder}/correct.json" for a in client.list_artifacts(run_id, folder)):
                continue
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{folder}/correct.json",
                                                       dst_path=tmp, tracking_uri=cfg.tracking_uri)
            out[folder.split("/", 1)[1]] = read_json(path)
    return out


@contextmanager
def _no_progress_bars():
    """MLflow draws a progress bar per downloaded artifact (16 before `distill compare`'s table);
    a few small JSON files need none."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _baseline(parent: RunView) -> dict:
    acc = by_name(parent.metrics, "baseline", "accuracy")
    n = {ts: int(v) for ts, v in by_name(parent.metrics, "baseline", "n").items()}
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


def constant_baseline(cfg: Config) -> dict:
    """Accuracy of always answering the most common answer of the training problems this run uses.

    A student that learned only the prior scores this. Returns {"answer", "train_n",
    "accuracy": {test_set: acc on the evaluated problems}, "n": {test_set: n}}; the evaluated
    problems are the first ``evaluate.limit`` of each set, as the evaluate stage takes them.
    Ties between equally common answers go to the smaller number, so the result is deterministic.
    "oracle": {test_set: {"answer", "accuracy", "n"}} is the best constant of each test set, chosen on
    its labels (a bound for constant predictors, shown beside this one, never a model).
    """
    from collections import Counter

    from distill.answers import answers_match
    from distill.problems import evaluated_problems, load
    from distill.scoring import format_answer, oracle_constant

    train = load(cfg.data.train_set, "train", cfg.data_path, hub=cfg.data.hub).problems
    if cfg.data.limit_train:
        train = train[: cfg.data.limit_train]
    counts = Counter(p.answer for p in train)
    answer = min(counts, key=lambda a: (-counts[a], a))
    accuracy, sizes, oracle = {}, {}, {}
    for name in cfg.data.test_sets:
        problems = evaluated_problems(cfg, name)
        sizes[name] = len(problems)
        accuracy[name] = sum(answers_match(answer, p.answer) for p in problems) / max(len(problems), 1)
        best = oracle_constant([p.answer for p in problems])
        oracle[name] = {"answer": format_answer(best["answer"]), "accuracy": best["accuracy"], "n": best["n"]}
    return {"answer": answer, "train_n": len(train), "accuracy": accuracy, "n": sizes, "oracle": oracle}


# --- numbers derived from the runs ----------------------------------------------------------------

def in_order(items, order) -> list:
    """``items`` in the order of ``order``, the ones it does not name after them, sorted."""
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
        for key, value in parsed_metrics(m):
            if key.plain and key.stat == "accuracy":
                ts, name = key.scope, key.name
                n = m.get(f"{ts}/n")
                table.setdefault((mix, name), {})[ts] = {
                    "accuracy": value, "ci_low": m.get(f"{ts}/{name}/ci_low"), "ci_high": m.get(f"{ts}/{name}/ci_high"),
                    "n": None if n is None else int(n)}
    for mix in {m for m, _ in table}:
        if len({f for m, f in table if m == mix and f in form_names()}) <= 1:
            table.pop((mix, "selected"), None)
    return table


def selected_forms(results: Results) -> dict[str, str]:
    """mix -> the form its evaluate run says was chosen on validation (tag distill.selected_form)."""
    return {mix: run.tags["distill.selected_form"] for mix, run in results.evaluations().items()
            if run.tags.get("distill.selected_form")}


def sets_of(results: Results) -> list[str]:
    names = {ts for row in accuracies(results).values() for ts in row} | set(results.baseline.get("accuracy", {}))
    return in_order(names, TEST_SET_ORDER)


def baseline_cells(results: Results) -> dict[str, dict]:
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
    return {ts: out[ts] for ts in in_order(out, TEST_SET_ORDER)}


def primary_form(results: Results, mix: str) -> tuple[str, str] | None:
    """(metric form, label) of the student's one headline number, chosen without a test set: the form
    chosen on the validation split (``selected``), a one-form student's only form, else the form ranked
    first in the combinations (eot)."""
    run = results.evaluations().get(mix)
    if run is None:
        return None
    forms = set(by_name(run.metrics, None, "accuracy"))
    sibling = trained_sibling_form(results, mix)
    if sibling is not None and sibling[0] in forms:  # an untrained base: asked in its trained student's form
        return sibling[0], f"{sibling[0]} ({STUDENT_NAMES.get(sibling[1], sibling[1])}'s form, chosen on validation)"
    selected = run.tags.get("distill.selected_form")
    trained = sorted(forms & set(form_names()))
    if len(trained) == 1:  # a one-form student: its "selected" is that form again (the report shows it once)
        return trained[0], trained[0]
    if "selected" in forms:
        return "selected", f"{selected or '?'} (chosen on validation)"
    if selected in forms:
        return selected, f"{selected} (chosen on validation)"
    first = combine_order()[0]
    if first in forms:
        return first, f"{first} (no validation choice logged)"
    return (trained[0], trained[0]) if trained else None


def trained_sibling_form(results: Results, name: str) -> tuple[str, str] | None:
    """For an untrained base student (``etd-base``): (the form, the trained student) whose headline
    answers it is compared with: the form its SFT student chose on validation (else its GRPO
    student's; a one-form student's only form). None for any other student, or without a trained one.
    So the base's number is taken in a form chosen on validation, never on a test set."""
    mix, variant = parse_student(name)
    if variant != "base":
        return None
    for sibling in (mix, student_name(mix, "grpo")):
        run = results.evaluations().get(sibling)
        if run is None:
            continue
        forms = sorted(set(by_name(run.metrics, None, "accuracy")) & set(form_names()))
        chosen = run.tags.get("distill.selected_form") or (forms[0] if len(forms) == 1 else None)
        if chosen:
            return chosen, sibling
    return None


def profiles(results: Results) -> dict[tuple[str, str, str], dict]:
    """(mix, name, test_set) -> distill.scoring.answer_profile of that student's answers (name: a form,
    vote, fallback or selected), from correct.json's "answers" and "gold"; cells of an evaluate run
    that logged no answers (older runs) are left out."""
    from distill.scoring import answer_profile

    out = {}
    for mix, per_set in results.correct.items():
        for ts, data in per_set.items():
            golds = data.get("gold")
            for name, answers in (data.get("answers") or {}).items():
                if golds is not None and len(golds) == len(answers):
                    out[(mix, name, ts)] = answer_profile(answers, golds)
    return out


def degenerate(results: Results) -> dict[tuple[str, str], list[str]]:
    """(mix, name) -> the test sets on which its answers are (almost) one value, in test-set order."""
    found: dict[tuple[str, str], list[str]] = {}
    for (mix, name, ts), p in profiles(results).items():
        if p["degenerate"]:
            found.setdefault((mix, name), []).append(ts)
    return {k: in_order(v, TEST_SET_ORDER) for k, v in found.items()}


def headline_name(results: Results, mix: str) -> str | None:
    """The answer name (form or "selected") of the student's headline number, as in correct.json."""
    chosen = primary_form(results, mix)
    return chosen[0] if chosen else None


def oracle_cells(results: Results) -> dict[str, dict]:
    """test_set -> the best single constant on that test set's labels: {"answer" (text), "accuracy",
    "ci_low", "ci_high", "n"}; from the golds of the evaluated problems (correct.json), else from the
    data files (``Results.baseline["oracle"]``). Chosen on the test labels: a bound, never a model."""
    from distill.scoring import format_answer, oracle_constant, wilson

    out = {}
    for per_set in results.correct.values():
        for ts, data in per_set.items():
            if ts not in out and data.get("gold"):
                o = oracle_constant(data["gold"])
                out[ts] = {"answer": format_answer(o["answer"]), "accuracy": o["accuracy"], "n": o["n"],
                           "correct": o["correct"]}
    for ts, o in (results.baseline.get("oracle") or {}).items():
        out.setdefault(ts, dict(o))
    for cell in out.values():
        n = cell.get("n")
        cell["ci_low"], cell["ci_high"] = wilson(round(cell["accuracy"] * n), n) if n else (None, None)
    return {ts: out[ts] for ts in in_order(out, TEST_SET_ORDER)}


def validation_choice(results: Results, mix: str = "etd") -> dict | None:
    """How the student's form was chosen on the validation split: {"accuracy": {form: value}, "selected",
    "tied": [forms sharing the highest accuracy] (more than one = a tie), "rule"}; None without a train run."""
    run = results.steps.get(f"train-{mix}")
    if run is None:
        return None
    val = by_name(run.metrics, "val", "accuracy")
    top = max(val.values(), default=None)
    order = combine_order()
    tied = in_order([f for f, v in val.items() if v == top], order) if val else []
    return {"accuracy": val, "selected": selected_forms(results).get(mix), "tied": tied,
            "rule": "ties go to " + ", then ".join(get_form(f).title for f in order)}


def paired_tests(results: Results) -> list[dict]:
    """Every paired comparison the report shows: {"what", "a", "b", "test_set", "a_acc", "b_acc", "n",
    "a_only", "b_only", "p_value"}; students by their selected answers (a one-form student's only form),
    and the ETD student's forms and combinations against each other, on the same problems."""
    from itertools import combinations

    from distill.scoring import format_answer, mcnemar

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

    profile = profiles(results)

    def is_degenerate(mix: str, ts: str, name: str) -> bool:
        data = results.correct.get(mix, {}).get(ts) or {}
        if name == "selected" and "selected" not in (data.get("correct") or {}) and len(data.get("correct") or {}) == 1:
            name = next(iter(data["correct"]))
        return bool(profile.get((mix, name, ts), {}).get("degenerate"))

    def add(what, a_label, b_label, ts, a, b, degenerate=(False, False)):
        (ids_a, xs), (ids_b, ys) = a, b
        if xs is None or ys is None or ids_a != ids_b:
            return  # not the same problems: no paired test
        test = mcnemar(xs, ys)
        rows.append({"what": what, "a": a_label, "b": b_label, "test_set": ts, "a_acc": sum(xs) / len(xs) if xs else 0.0,
                     "b_acc": sum(ys) / len(ys) if ys else 0.0, "a_degenerate": degenerate[0],
                     "b_degenerate": degenerate[1], **test})

    def label(mix: str) -> str:
        sibling = trained_sibling_form(results, mix)  # an untrained base: its trained student's form
        return f"{STUDENT_NAMES.get(mix, mix)} ({sibling[0] if sibling else chosen.get(mix, 'selected')})"

    sets = in_order({ts for per in results.correct.values() for ts in per}, TEST_SET_ORDER)
    students = in_order(results.correct, STUDENTS)
    # the mixes' SFT students against each other; a base or RL student is paired with its own mix's (gains)
    mixes = [m for m in students if parse_student(m)[1] == ""]
    for ts in sets:
        for a, b in combinations(mixes, 2):
            add("students", label(a), label(b), ts, answers(a, ts, "selected"), answers(b, ts, "selected"),
                (is_degenerate(a, ts, "selected"), is_degenerate(b, ts, "selected")))
        forms = in_order(set(results.correct.get("etd", {}).get(ts, {}).get("correct", {})) - {"selected"}, FORM_ORDER)
        for a, b in combinations(forms, 2):
            add("ETD forms", a, b, ts, answers("etd", ts, a), answers("etd", ts, b),
                (is_degenerate("etd", ts, a), is_degenerate("etd", ts, b)))
        # each student against always giving its own most common answer: did it learn more than that?
        for mix in students:
            sibling = trained_sibling_form(results, mix)
            name = sibling[0] if sibling else "selected"
            ids, xs = answers(mix, ts, name)
            data = results.correct.get(mix, {}).get(ts) or {}
            if "selected" not in (data.get("correct") or {}) and len(data.get("correct") or {}) == 1:
                name = next(iter(data["correct"]))
            p = profile.get((mix, name, ts))
            if p is None or xs is None:
                continue
            add("student vs its own constant", label(mix), f"always {format_answer(p['top_answer'])}", ts,
                (ids, xs), (ids, p["own_constant_correct"]), (p["degenerate"], True))
    return rows


GAINS = (("", "base", "SFT over base"), ("grpo", "", "RL over SFT"), ("grpo", "base", "RL over base"))
"""(later variant, earlier variant, what the difference measures): the pairs of one mix's students whose
difference the report states, the later first."""


def gains(results: Results) -> list[dict]:
    """What training added, per mix and test set, on the same problems: SFT over the untrained base,
    RL (GRPO) over SFT, RL over the base, where both students were evaluated. Each student by its
    headline answers (the form chosen on the validation split, a one-form student's only form); the
    base in the form of the trained student it is paired with (never a choice on a test set). Rows:
    {"mix", "what", "a", "b" (student names, a the later), "a_form", "b_form", "test_set", "a_acc",
    "b_acc", "a_ci", "b_ci" ((low, high) Wilson), "n", "a_only", "b_only", "p_value" (exact McNemar),
    "a_degenerate", "b_degenerate"}."""
    from distill.scoring import mcnemar, wilson

    chosen = selected_forms(results)
    profile = profiles(results)
    rows = []

    def resolve(name: str, partner: str, ts: str) -> tuple[str | None, str | None]:
        """(name in correct.json, the form it stands for) of ``name``'s headline answers."""
        data = results.correct.get(name, {}).get(ts) or {}
        correct = data.get("correct") or {}
        if parse_student(name)[1] == "base":  # the base answers in its partner's chosen form
            _, form = resolve(partner, name, ts)
            return (form, form) if form in correct else (None, None)
        if "selected" in correct:
            return "selected", chosen.get(name)
        forms = [f for f in correct if f in form_names()]
        return (forms[0], forms[0]) if len(forms) == 1 else (None, None)

    for mix in in_order({parse_student(n)[0] for n in results.correct}, named_mixes()):
        for later_v, earlier_v, what in GAINS:
            a, b = student_name(mix, later_v), student_name(mix, earlier_v)
            if a not in results.correct or b not in results.correct:
                continue
            for ts in in_order(set(results.correct[a]) & set(results.correct[b]), TEST_SET_ORDER):
                (a_key, a_form), (b_key, b_form) = resolve(a, b, ts), resolve(b, a, ts)
                da, db = results.correct[a][ts], results.correct[b][ts]
                if a_key is None or b_key is None or da.get("problem_ids") != db.get("problem_ids"):
                    continue  # no headline answers, or not the same problems: no paired test
                xs, ys = da["correct"][a_key], db["correct"][b_key]
                n = len(xs)
                rows.append({"mix": mix, "what": what, "a": a, "b": b, "a_form": a_form, "b_form": b_form,
                             "test_set": ts, "a_acc": sum(xs) / n if n else 0.0, "b_acc": sum(ys) / n if n else 0.0,
                             "a_ci": wilson(sum(xs), n), "b_ci": wilson(sum(ys), n),
                             "a_degenerate": bool(profile.get((a, a_key, ts), {}).get("degenerate")),
                             "b_degenerate": bool(profile.get((b, b_key, ts), {}).get("degenerate")),
                             **mcnemar(xs, ys)})
    return rows


def drop_rates(results: Results) -> dict[str, dict]:
    """form -> {"kept", "drop_rate", "reasons": {reason: count}} from the verify run."""
    run = results.steps.get("verify")
    forms: dict[str, dict] = defaultdict(lambda: {"kept": None, "drop_rate": None, "reasons": {}})
    if run is None:
        return {}
    for key, value in parsed_metrics(run.metrics):
        if key.scope != "verify" or not key.name:
            continue
        if key.plain and key.stat == "drop_rate":
            forms[key.name]["drop_rate"] = value
        elif key.plain and key.stat == "kept":
            forms[key.name]["kept"] = int(value)
        elif key.score == "dropped":
            forms[key.name]["reasons"][key.stat] = int(value)
    return dict(forms)


# --- sampled and strict scores (evaluate.samples > 1; forms with repair rules) ----------------------

SAMPLED_KINDS = ("maj", "pass", "mean")
"""The sampled scores in the order tables show them (distill.scoring.score_samples)."""


def _cell_of(metrics: dict, prefix: str, n) -> dict:
    return {"accuracy": metrics[f"{prefix}/accuracy"], "ci_low": metrics.get(f"{prefix}/ci_low"),
            "ci_high": metrics.get(f"{prefix}/ci_high"), "n": None if n is None else int(n)}


def sampled_cells(results: Results) -> dict[tuple[str, str, str], dict[str, dict]]:
    """(mix, name, score) -> {test_set: {"accuracy", "ci_low", "ci_high", "n"}} from the evaluate runs'
    ``<test_set>/<name>/<maj|pass|mean>_at_<k>/*`` metrics; name is a form or "vote" (all forms' samples),
    score e.g. "maj_at_4". Empty when no run sampled."""
    out: dict[tuple[str, str, str], dict[str, dict]] = {}
    for mix, run in results.evaluations().items():
        for key, _ in parsed_metrics(run.metrics):
            if key.stat == "accuracy" and parse_sample_name(key.score):
                ts, name, score = key.scope, key.name, key.score
                out.setdefault((mix, name, score), {})[ts] = _cell_of(run.metrics, f"{ts}/{name}/{score}",
                                                                      run.metrics.get(f"{ts}/n"))
    return out


def strict_cells(results: Results) -> dict[tuple[str, str], dict[str, dict]]:
    """(mix, form) -> {test_set: {"lenient": cell, "strict": cell}} for the forms whose evaluate run logged
    ``<test_set>/<form>/strict/*`` beside ``<test_set>/<form>/accuracy`` (cells as ``sampled_cells``)."""
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for mix, run in results.evaluations().items():
        m = run.metrics
        for key, _ in parsed_metrics(m):
            if key.score == "strict" and key.stat == "accuracy" and f"{key.scope}/{key.name}/accuracy" in m:
                ts, form = key.scope, key.name
                n = m.get(f"{ts}/n")
                out.setdefault((mix, form), {})[ts] = {"lenient": _cell_of(m, f"{ts}/{form}", n),
                                                       "strict": _cell_of(m, f"{ts}/{form}/strict", n)}
    return out


def score_label(score: str) -> str:
    """"maj_at_4" -> "maj@4" (human text; MLflow metric names cannot hold '@')."""
    return score.replace("_at_", "@")
