"""Promote stage: the best registered student of a mix gets the alias ``champion``, only if it beats
the current one, judged on the VALIDATION split (test sets are reported, never used to choose).

Reads the versions of ``cfg.promote.model_name`` and their tags (written by the register stage).
The ranking metric ``cfg.promote.metric`` (default ``val/selected/accuracy``: the validation accuracy
of the form chosen on validation) must name a validation accuracy, ``val/.../accuracy``; a test
metric is refused when the config is built (distill.config.check). Candidates are the versions that
  - are tagged ``distill.mix == cfg.promote.mix`` (default etd): every variant of the mix, its SFT
    student and its GRPO student (``distill.variant`` grpo) alike; a name with a variant
    (promote.mix=etd-grpo) narrows the candidates to that variant,
  - were produced under the same protocol: ``distill.preset == cfg.preset`` and ``distill.eval_limit``
    equal to ``cfg.evaluate.limit`` ("all" for no limit), so a smoke run never competes with a full one,
  - cover every test set of ``cfg.data.test_sets`` (a ``<test_set>/selected/accuracy`` tag each),
  - carry the metric as a tag.
Every other version is listed under "excluded" with the reason. The candidate with the highest value
(a tie goes to the older version) gets the alias ``cfg.promote.alias`` when there is no champion yet,
or when its value is strictly higher than the champion's value of the same metric (a comparable
champion without that tag counts as beaten; a champion of another mix under the same protocol is
compared the same way). A champion that is not comparable (another preset or
evaluation protocol, or incomplete coverage) is replaced only by a candidate evaluated on strictly
more problems per test set (a larger ``eval_limit``, "all" being the largest); otherwise it is kept,
so a smaller protocol never takes the alias from a larger one. Aliases, not the deprecated stages.
The read of the versions and the champion and the move of the alias hold the store's registry lock
(distill.tracking.registry_lock): two promotions cannot interleave.

Logs an MLflow run ``promote`` (tags distill.stage=promote, distill.preset, distill.mix,
distill.promote.decision, distill.promote.reason, distill.champion.version; params metric, mix,
alias, eval_limit; metrics promote/candidates, promote/best, promote/champion; the decision as
promote/decision.json), writes ``promote/decision.json`` under run_dir and returns it:
{"decision": "promoted"|"kept"|"none", "reason", "model_name", "alias", "metric", "mix", "preset",
"eval_limit", "version" (the champion after the decision, or null), "previous" (before), "best"
{"version", "value"}, "candidates": [{"version", "value", "train_run_id"}], "excluded": [{"version",
"why"}], "run_id"}.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from distill.config import Config
from distill.files import write_json
from distill.layout import RunFolder
from distill.tracking import registry_lock, tracker_or_null, writing


def protocol(cfg: Config) -> dict[str, str]:
    """What a comparable version was produced under: preset and evaluation limit, as register tags them."""
    return {"distill.preset": cfg.preset, "distill.eval_limit": str(cfg.evaluate.limit or "all")}


def exclusion(tags: Mapping[str, str], cfg: Config, metric: str) -> str | None:
    """Why a version of the right mix cannot compete under cfg's protocol; None when it can."""
    for key, want in protocol(cfg).items():
        if tags.get(key) != want:
            return f"{key}={tags.get(key)!r}, not {want!r}"
    missing = [t for t in cfg.data.test_sets if _value(tags.get(f"{t}/selected/accuracy")) is None]
    if missing:
        return f"no {'/'.join(missing)} selected accuracy (evaluation incomplete)"
    if _value(tags.get(metric)) is None:
        return f"no {metric} tag"
    return None


def _size(limit: str | None) -> float:
    """Problems per test set of an eval_limit tag: "all" is the largest, a missing tag the smallest."""
    if limit == "all":
        return math.inf
    try:
        return float(limit)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return -math.inf


def run(cfg: Config, run_dir: Path, tracker=None, *, log=print) -> dict:
    """Decide and (maybe) move the alias; the decision and its reason are logged and returned."""
    tracker = tracker_or_null(tracker)
    with writing(run_dir, tracker, "promote"), registry_lock(cfg.tracking_uri):
        return _run(cfg, run_dir, tracker, log=log)


def _run(cfg: Config, run_dir: Path, tracker=None, *, log=print) -> dict:
    # over 80 lines: one decision read top to bottom (candidates, champion, compare, move the alias,
    # record); its parts share the registry client and the protocol filter, and each is a few lines
    import mlflow
    from mlflow.exceptions import MlflowException

    pc = cfg.promote
    metric = pc.metric  # a validation accuracy: distill.config.check refuses any other
    from distill.thoughts import parse_student

    mix, variant = parse_student(pc.mix)  # etd-grpo: only etd's grpo versions compete
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    try:
        versions = client.search_model_versions(f"name='{pc.model_name}'")
    except MlflowException:
        versions = []
    candidates, excluded = [], []
    for mv in versions:
        if mv.tags.get("distill.mix") != mix or (variant and mv.tags.get("distill.variant", "") != variant):
            continue
        why = exclusion(mv.tags, cfg, metric)
        if why:
            excluded.append({"version": int(mv.version), "why": why})
        else:
            candidates.append({"version": int(mv.version), "value": _value(mv.tags.get(metric)),
                               "variant": mv.tags.get("distill.variant", ""),
                               "train_run_id": mv.tags.get("distill.train_run_id") or mv.run_id})
    candidates.sort(key=lambda c: c["version"])
    excluded.sort(key=lambda c: c["version"])
    try:
        current = client.get_model_version_by_alias(pc.model_name, pc.alias)
    except MlflowException:
        current = None
    previous = None
    if current is not None:
        # another mix under the same protocol is compared on the metric, as before; another protocol is not
        why = exclusion(current.tags, cfg, metric)
        comparable = why is None or why == f"no {metric} tag"
        previous = {"version": int(current.version), "value": _value(current.tags.get(metric)),
                    "mix": current.tags.get("distill.mix"), "comparable": comparable,
                    "eval_limit": current.tags.get("distill.eval_limit"), "preset": current.tags.get("distill.preset")}
        if not comparable:
            previous["why"] = why
    best = max(candidates, key=lambda c: c["value"], default=None)  # max keeps the first (older) of ties
    where = f"preset {cfg.preset}, eval_limit {protocol(cfg)['distill.eval_limit']}"

    if best is None:
        decision = "none"
        reason = (f"no version of {pc.model_name!r} with distill.mix={mix!r} can compete under {where} on {metric!r} "
                  f"({len(versions)} versions in all, {len(excluded)} of mix {mix} excluded"
                  + (f", e.g. version {excluded[-1]['version']}: {excluded[-1]['why']}" if excluded else "") + "); "
                  f"register an evaluated {mix} student first (distill register --preset {cfg.preset} --mix {mix})")
    elif previous is None:
        decision = "promoted"
        reason = f"no {pc.alias} yet; version {best['version']} has the best {metric} = {best['value']:.4f} ({where})"
    elif previous["version"] == best["version"]:
        decision = "kept"
        reason = f"version {best['version']} is already {pc.alias} and still the best ({metric} = {best['value']:.4f})"
    elif not previous["comparable"]:
        ours, theirs = _size(protocol(cfg)["distill.eval_limit"]), _size(previous["eval_limit"])
        if ours > theirs:
            decision = "promoted"
            reason = (f"version {best['version']} ({metric} = {best['value']:.4f}, {where}) replaces {pc.alias} "
                      f"version {previous['version']}, which was evaluated under a smaller protocol ({previous['why']})")
        else:
            decision = "kept"
            reason = (f"{pc.alias} version {previous['version']} is not comparable ({previous['why']}) and was not "
                      f"evaluated on fewer problems than {where}; a run of another protocol does not replace it")
    elif previous["value"] is None or best["value"] > previous["value"]:
        decision = "promoted"
        was = "has no such tag" if previous["value"] is None else f"{previous['value']:.4f}"
        reason = (f"version {best['version']} ({metric} = {best['value']:.4f}) beats {pc.alias} "
                  f"version {previous['version']} ({was})")
    else:
        decision = "kept"
        reason = (f"best candidate version {best['version']} ({metric} = {best['value']:.4f}) does not beat "
                  f"{pc.alias} version {previous['version']} ({previous['value']:.4f})")
    if decision == "promoted":
        client.set_registered_model_alias(pc.model_name, pc.alias, str(best["version"]))
    champion = best["version"] if decision == "promoted" else (previous or {}).get("version")

    result: dict[str, Any] = {"decision": decision, "reason": reason, "model_name": pc.model_name, "alias": pc.alias,
                              "metric": metric, "mix": mix, "preset": cfg.preset,
                              "eval_limit": protocol(cfg)["distill.eval_limit"], "version": champion,
                              "previous": previous, "best": best, "candidates": candidates, "excluded": excluded,
                              "run_id": None}
    tags = {"distill.stage": "promote", "distill.preset": cfg.preset, "distill.mix": mix,
            "distill.promote.decision": decision, "distill.promote.reason": reason[:5000],
            "distill.champion.version": "" if champion is None else str(champion)}
    with tracker.run("promote", tags, nested=True):
        result["run_id"] = tracker.run_id
        tracker.log_params({"promote.metric": metric, "promote.mix": mix, "promote.alias": pc.alias,
                            "promote.model_name": pc.model_name,
                            "promote.eval_limit": protocol(cfg)["distill.eval_limit"]})
        metrics = {"promote/candidates": len(candidates)}
        if best is not None:
            metrics["promote/best"] = best["value"]
        if champion is not None:
            value = best["value"] if decision == "promoted" else (previous or {}).get("value")
            if value is not None:
                metrics["promote/champion"] = value
        tracker.log_metrics(metrics)
        tracker.log_dict(result, "promote/decision.json")
    write_json(RunFolder(run_dir).decision, result)
    log(f"promote: {decision}: {reason}")
    return result


def _value(tag: str | None) -> float | None:
    """A metric tag as a number; a missing or non-numeric tag counts as no value."""
    try:
        value = float(tag) if tag is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
