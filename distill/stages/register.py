"""Register stage: an evaluated student becomes a version of the registered model ``distill-student``.

Reads (under ``run_dir``):
  - ``eval/<mix>/summary.json`` (the evaluate stage): ``train_run_id``, ``forms`` {form: {"version"}},
    ``data_digest``, ``metrics`` {"<test_set>/<form>/accuracy": value, ...}, ``run_id`` (the evaluate run);
  - ``students/<mix>/summary.json`` for the train run id when the evaluation summary has none;
  - ``generate_summary.json`` when present (the teacher).

``<mix>`` is a student's name: ``etd``, or ``etd-grpo`` for the rl stage's student, whose card names
the rl run as its ``train_run_id`` (so the rl run's model and validation accuracy are read, never the
SFT parent's); its version is tagged ``distill.mix`` = etd (the mix alone, so promote counts it among
etd's candidates) and ``distill.variant`` = grpo (only variants carry that tag).

Registers the train run's logged model ``runs:/<train_run_id>/model`` (distill.serving.logged_model.log_student;
MLflow 3 registers it by its id, models:/m-...) as a new version of ``cfg.promote.model_name``, tagged with:
  ``distill.mix``, ``distill.forms`` ("cot,pot,eot"), ``distill.form_versions`` ("cot=1,eot=1,pot=1"),
  ``distill.data_digest`` (the training mix),
  ``distill.teacher``, ``distill.preset``, ``distill.train_run_id``, ``distill.eval_run_id``,
  ``distill.eval_limit`` (the evaluation protocol: first N problems of each test set, or "all"),
  ``distill.commit`` (git commit of the code registering it), ``distill.selected_form`` (the form
  chosen on the validation split), ``val/selected/accuracy`` (that form's validation accuracy, read
  from the train run's metric ``val/<form>/accuracy``: what distill promote ranks on), and
  ``<test_set>/selected/accuracy`` per test set (reported, and checked by promote for complete
  coverage; never used to rank).

The version's description is its model card for people (``description``): what the student is, its
form chosen on validation and that form's validation accuracy, its test accuracies with n and 95%
intervals, the teacher, the data digest and how to serve and call it (the curl line), so the
registry page says what the version is and how good it is without the report.

Resume: a train run that already has a version gets its tags and description refreshed, not a second version; the
look-up and the registration hold the store's registry lock (distill.tracking.registry_lock), so two
registrations of one student (two reproduces on one store) make one version. The evaluation summary
must be of the student in ``students/<mix>/``: one left by an earlier student (its evaluation was
killed before it wrote a new one) is refused, naming `distill evaluate`.
Opens no MLflow run of its own. Writes ``register/<mix>.json`` {"model_name", "version", "model_uri",
"train_run_id", "tags"} and returns it (the key ``train_run_id``, never ``run_id``: the run is not ours).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from distill.config import Config
from distill.files import DataError, read_json, read_record, write_json
from distill.layout import RunFolder
from distill.scoring import parsed_metrics
from distill.tracking import registry_lock, writing


def run(cfg: Config, run_dir: Path, tracker=None, *, train_run_id: str | None = None,
        eval_summary: Mapping[str, Any] | None = None, log=print) -> dict:
    """Register the student of ``mix.mix`` (etd, etd-grpo); return {"model_name", "version", ...}."""
    with writing(run_dir, tracker, "register"), registry_lock(cfg.tracking_uri):
        return _run(cfg, Path(run_dir), train_run_id=train_run_id, eval_summary=eval_summary, log=log)


def check_evaluation(cfg: Config, run_dir: Path, mix: str, eval_summary: Mapping[str, Any]) -> None:
    """The evaluation summary must be of the student now in ``students/<mix>/`` when it evaluated that
    folder: the card it recorded is the card on disk (which names the train run, data and best loss)."""
    folder = RunFolder(run_dir).student(mix)
    student = eval_summary.get("student") or {}
    if str(student.get("source")) != str(folder) or not (folder / "card.json").exists():
        return  # another student was evaluated on purpose (--student), or there is none here to compare
    if student.get("card") != read_record(folder / "card.json"):
        raise DataError(f"{RunFolder(run_dir).eval(mix) / 'summary.json'} is the evaluation of an earlier student "
                        f"(train run {eval_summary.get('train_run_id')}), not of the one in {folder} "
                        f"(train run {read_record(folder / 'card.json').get('train_run_id')}); evaluate it first: "
                        f"distill evaluate --preset {cfg.preset} --mix {mix}")


def _run(cfg: Config, run_dir: Path, *, train_run_id: str | None = None,
         eval_summary: Mapping[str, Any] | None = None, log=print) -> dict:
    import mlflow

    mix = cfg.mix.mix
    refuse_base(mix, eval_summary)
    if eval_summary is None:
        eval_summary = read_json(RunFolder(run_dir).eval(mix) / "summary.json",
                                 f"evaluate the student first: distill evaluate --preset {cfg.preset} --mix {mix}")
        if not train_run_id:
            check_evaluation(cfg, run_dir, mix, eval_summary)
    refuse_base(mix, eval_summary)
    train_run_id = train_run_id or eval_summary.get("train_run_id") or _student_run_id(run_dir, mix)
    if not train_run_id:
        raise DataError(f"no training run id for mix {mix!r} in eval/{mix}/summary.json or "
                        f"students/{mix}/summary.json; "
                        f"train with MLflow tracking on: distill train --preset {cfg.preset} --mix {mix}")

    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    try:
        train_run = client.get_run(train_run_id)
    except Exception as exc:  # noqa: BLE001 - MlflowException or a store error; both mean "not in this store"
        raise DataError(f"training run {train_run_id} is not in the tracking store {cfg.tracking_uri} ({exc}); "
                        "register against the store the student was trained with (MLFLOW_TRACKING_URI)") from None
    model_uri = f"runs:/{train_run_id}/model"
    tags = version_tags(cfg, run_dir, mix, train_run_id, eval_summary, train_run.data.tags, train_run.data.metrics)

    name = cfg.promote.model_name
    existing = _version_of_run(client, name, train_run_id)
    if existing is None:
        _ensure_registered_model(client, name)
        mlflow.set_tracking_uri(cfg.tracking_uri)
        mlflow.set_registry_uri(cfg.tracking_uri)
        try:
            version = mlflow.register_model(_logged_model_uri(client, train_run, model_uri), name, tags=tags).version
        except Exception as exc:  # noqa: BLE001 - the usual cause: the train run logged no model
            raise DataError(f"cannot register {model_uri} as {name!r}: {str(exc).splitlines()[0]}; the train run "
                            "must log the student (distill.serving.logged_model.log_student)") from None
        log(f"register: {model_uri} -> {name} version {version}")
    else:
        version = existing
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        log(f"register: {model_uri} is already {name} version {version}; tags refreshed")
    client.update_model_version(name, version, description=description(
        name, version, tags, eval_summary, train_run.data.metrics))
    summary = {"model_name": name, "version": int(version), "model_uri": f"models:/{name}/{version}",
               "train_run_id": train_run_id, "mix": mix, "tags": tags}
    write_json(RunFolder(run_dir).registered(mix), summary)
    return summary


def refuse_base(name: str, eval_summary: Mapping[str, Any] | None = None) -> None:
    """An untrained base student (``<mix>-base``, or an evaluation whose student card says variant
    base) measures the starting point of the study: it is never registered, so never a champion."""
    from distill.thoughts import parse_student

    card = ((eval_summary or {}).get("student") or {}).get("card") or {}
    if parse_student(name)[1] == "base" or "base" in ((eval_summary or {}).get("variant"), card.get("variant")):
        raise DataError(f"{name}: an untrained base student is the study's starting point, not a candidate; "
                        "register a trained student (its mix, or <mix>-grpo)")


def version_tags(cfg: Config, run_dir: Path, mix: str, train_run_id: str, eval_summary: Mapping[str, Any],
                 train_tags: Mapping[str, str], val_metrics: Mapping[str, float] | None = None) -> dict[str, str]:
    """Every tag a registered version carries (see the module docstring); ``val_metrics`` are the
    train run's metrics (``val/<form>/accuracy``)."""
    val_metrics = val_metrics or {}
    from distill.tracking import git_commit

    card = (eval_summary.get("student") or {}).get("card") or {}
    forms = eval_summary.get("forms") or card.get("forms") or {}
    versions = {f: (info or {}).get("version") for f, info in forms.items()}
    from distill.thoughts import parse_student

    # the mix alone (etd) for every variant of it (etd-grpo): promote's candidates of a mix are all of them
    base_mix, variant = parse_student(mix)
    tags = {
        "distill.mix": base_mix,
        "distill.forms": ",".join(forms),
        "distill.form_versions": ",".join(f"{f}={v}" for f, v in sorted(versions.items())),
        "distill.data_digest": str(eval_summary.get("data_digest") or card.get("data_digest") or ""),
        "distill.teacher": _teacher(cfg, run_dir, train_tags),
        "distill.preset": str(eval_summary.get("preset") or cfg.preset),
        "distill.student": str(card.get("student") or train_tags.get("distill.student", "")),
        "distill.train_run_id": train_run_id,
        "distill.eval_run_id": str(eval_summary.get("run_id") or ""),
        "distill.eval_limit": str(eval_summary.get("limit") or "all"),
        "distill.commit": git_commit(),
    }
    if variant:
        tags["distill.variant"] = variant
    # the verified sets' own digests stay on the verify run and in the card's data digest: a version
    # carries only what a reader of the registry needs (a screen of digests hid the accuracies)
    selected = eval_summary.get("selected_form") or card.get("best_form")
    if selected:
        tags["distill.selected_form"] = str(selected)
        if val_metrics.get(f"val/{selected}/accuracy") is not None:
            tags["val/selected/accuracy"] = repr(float(val_metrics[f"val/{selected}/accuracy"]))
    for key, value in parsed_metrics(eval_summary.get("metrics") or {}):
        if key.plain and (key.name, key.stat) == ("selected", "accuracy"):
            tags[str(key)] = repr(float(value))
    return tags


CALL_QUESTION = "Tom has 3 boxes of 12 pencils and gives away 7 pencils. How many pencils does he have left?"


def description(name: str, version, tags: Mapping[str, str], eval_summary: Mapping[str, Any],
                val_metrics: Mapping[str, float] | None = None, port: int = 5005) -> str:
    """The version's model card in Markdown (MLflow shows it on the version's page)."""
    import json

    card = (eval_summary.get("student") or {}).get("card") or {}
    metrics = eval_summary.get("metrics") or {}
    val_metrics = val_metrics or {}
    selected = tags.get("distill.selected_form") or ""
    forms = tags.get("distill.forms", "")
    kind = card.get("kind") or ("causal" if "causal" in str(card.get("student", "")) else "seq2seq")
    size = f", {int(card['n_params']):,} parameters" if card.get("n_params") else ""
    lora = " (LoRA adapter)" if card.get("lora") else ""
    after = (" then trained by GRPO with the forms' verifiers as the reward (`distill rl`, parent train run "
             f"`{(card.get('parent') or {}).get('train_run_id') or '?'}`)" if tags.get("distill.variant") == "grpo" else "")
    variant = f"-{tags['distill.variant']}" if tags.get("distill.variant") else ""
    lines = [f"**{tags.get('distill.mix', '?')}{variant} student** `{tags.get('distill.student') or '?'}`: a {kind} model"
             f"{size}{lora}, fine-tuned on the teacher's verified reasoning in {forms.replace(',', ', ') or '?'} (form "
             f"versions {tags.get('distill.form_versions', '?')}){after}; preset `{tags.get('distill.preset', '?')}`.", ""]
    if selected:
        val = tags.get("val/selected/accuracy")
        val_text = f"validation accuracy {float(val):.1%}" if val is not None else "no validation accuracy logged"
        lines.append(f"- **Selected form: {selected}**, chosen on the validation split ({val_text}); "
                     "requests that name no `thought` are answered in it.")
        others = {f: v for f in forms.split(",") if f and f != selected
                  and (v := val_metrics.get(f"val/{f}/accuracy")) is not None}
        if others:
            lines.append("  Other forms on validation: " + ", ".join(f"{f} {v:.1%}" for f, v in others.items()) + ".")
    else:
        lines.append("- **Selected form: none** (no validation accuracy per form); requests that name no "
                     "`thought` are answered in eot when trained, else the first form.")
    limit = eval_summary.get("limit")
    tests = []
    reported = [k.scope for k, _ in parsed_metrics(metrics) if k.plain and (k.name, k.stat) == ("selected", "accuracy")]
    for test_set in dict.fromkeys([*(t for t in (eval_summary.get("test_sets") or {}) if t in reported), *reported]):
        acc = metrics.get(f"{test_set}/selected/accuracy")
        if acc is None:
            continue
        low, high = metrics.get(f"{test_set}/selected/ci_low"), metrics.get(f"{test_set}/selected/ci_high")
        n = metrics.get(f"{test_set}/n")
        interval = f" [{low:.1%}, {high:.1%}]" if low is not None and high is not None else ""
        tests.append(f"{test_set} {acc:.1%}{interval}" + (f" (n = {int(n)})" if n is not None else ""))
    if tests:
        lines.append(f"- **Test accuracy** of {selected or 'the selected form'} (95% Wilson intervals; reported, "
                     "never used to choose): " + "; ".join(tests) + "."
                     + (f" First {limit} problems of each test set." if limit else ""))
    lines += [f"- **Teacher**: {tags.get('distill.teacher', '?')}. **Data digest** (the training mix): "
              f"`{tags.get('distill.data_digest') or '?'}`. Train run `{tags.get('distill.train_run_id', '?')}`, "
              f"evaluate run `{tags.get('distill.eval_run_id') or '?'}`, commit `{tags.get('distill.commit', '?')}`.",
              "", "**Serve and call it** (the model carries the distill package; see the README, \"Deploying the champion\"):",
              "", "```sh",
              f"mlflow models serve -m models:/{name}/{version} --env-manager virtualenv --host 127.0.0.1 --port {port}",
              f"curl -s http://127.0.0.1:{port}/invocations -H 'Content-Type: application/json' \\",
              "  -d '" + json.dumps({"dataframe_records": [{"question": CALL_QUESTION, "thought": selected or "eot"}]})
              + "'", "```", "",
              "Each row answers with `answer` (a number or null), `thought` and `versions` (the form that "
              "answered), `reasoning` (the student's text), `status` (`ok`, `no_answer`, `parse_error`, "
              "`exec_error`, `timeout`, `unsafe`), `reason` and `device` (where it ran)."]
    return "\n".join(lines)


def _teacher(cfg: Config, run_dir: Path, train_tags: Mapping[str, str]) -> str:
    if train_tags.get("distill.teacher"):
        return train_tags["distill.teacher"]
    gen = RunFolder(run_dir).generate_summary
    if gen.exists():
        teacher = read_json(gen).get("teacher")
        if teacher:
            return str(teacher)
    return cfg.teacher.name if cfg.teacher.name == "gold" else f"{cfg.teacher.name}:{cfg.teacher.model}"


def _student_run_id(run_dir: Path, mix: str) -> str | None:
    path = RunFolder(run_dir).student(mix) / "summary.json"
    return read_json(path, default={}).get("run_id")


def _logged_model_uri(client, train_run, model_uri: str) -> str:
    """models:/<model id> of the train run's logged model named "model" (MLflow 3 keeps logged models
    apart from run artifacts); the runs:/ URI when there is none, so that MLflow names the error."""
    for output in getattr(train_run.outputs, "model_outputs", None) or []:
        if client.get_logged_model(output.model_id).name == "model":
            return f"models:/{output.model_id}"
    return model_uri


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="Students distilled from a teacher (distill); "
                                                         "the alias `champion` marks the one served.")


def _version_of_run(client, name: str, train_run_id: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name='{name}' and run_id='{train_run_id}'")
    except MlflowException:
        return None
    return min((mv.version for mv in found), key=int, default=None)
