"""Promote stage: the best registered student of a mix gets the alias ``champion``, only if it beats
the current one.

Reads the versions of ``cfg.promote.model_name`` and their tags (written by the register stage).
Candidates are the versions tagged ``distill.mix == cfg.promote.mix`` (default etd) that carry the
metric ``cfg.promote.metric`` as a tag (default ``gsm8k/best/accuracy``). The candidate with the
highest value (a tie goes to the older version) gets the alias ``cfg.promote.alias`` when there is
no champion yet, or when its value is strictly higher than the champion's value of the same metric
(a champion without that tag counts as beaten). Aliases, not the deprecated model stages.

Logs an MLflow run ``promote`` (tags distill.stage=promote, distill.preset, distill.mix,
distill.promote.decision, distill.promote.reason, distill.champion.version; params metric, mix,
alias; metrics promote/candidates, promote/best, promote/champion; the decision as promote/decision.json),
writes ``promote/decision.json`` under run_dir and returns it:
{"decision": "promoted"|"kept"|"none", "reason", "model_name", "alias", "metric", "mix",
"version" (the champion after the decision, or null), "previous" (before), "best" {"version", "value"},
"candidates": [{"version", "value", "train_run_id"}], "run_id"}.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from distill.config import Config
from distill.files import write_json


def run(cfg: Config, run_dir: Path, tracker=None, *, metric: str | None = None, mix: str | None = None,
        log=print) -> dict:
    """Decide and (maybe) move the alias; the decision and its reason are logged and returned."""
    import mlflow
    from mlflow.exceptions import MlflowException

    pc = cfg.promote
    metric = metric or pc.metric
    mix = mix or pc.mix
    client = mlflow.MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.tracking_uri)
    try:
        versions = client.search_model_versions(f"name='{pc.model_name}'")
    except MlflowException:
        versions = []
    candidates = []
    for mv in versions:
        if mv.tags.get("distill.mix") != mix:
            continue
        value = _value(mv.tags.get(metric))
        if value is not None:
            candidates.append({"version": int(mv.version), "value": value,
                               "train_run_id": mv.tags.get("distill.train_run_id") or mv.run_id})
    candidates.sort(key=lambda c: c["version"])
    try:
        current = client.get_model_version_by_alias(pc.model_name, pc.alias)
    except MlflowException:
        current = None
    previous = None if current is None else {"version": int(current.version),
                                            "value": _value(current.tags.get(metric)),
                                            "mix": current.tags.get("distill.mix")}
    best = max(candidates, key=lambda c: c["value"], default=None)  # max keeps the first (older) of ties

    if best is None:
        decision = "none"
        reason = (f"no version of {pc.model_name!r} with distill.mix={mix!r} carries the tag {metric!r} "
                  f"({len(versions)} versions in all); register an evaluated {mix} student first")
    elif previous is None:
        decision = "promoted"
        reason = f"no {pc.alias} yet; version {best['version']} has the best {metric} = {best['value']:.4f}"
    elif previous["version"] == best["version"]:
        decision = "kept"
        reason = f"version {best['version']} is already {pc.alias} and still the best ({metric} = {best['value']:.4f})"
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
                              "metric": metric, "mix": mix, "version": champion, "previous": previous,
                              "best": best, "candidates": candidates, "run_id": None}
    if tracker is not None:
        tags = {"distill.stage": "promote", "distill.preset": cfg.preset, "distill.mix": mix,
                "distill.promote.decision": decision, "distill.promote.reason": reason[:5000],
                "distill.champion.version": "" if champion is None else str(champion)}
        with tracker.run("promote", tags, nested=True):
            result["run_id"] = tracker.run_id
            tracker.log_params({"promote.metric": metric, "promote.mix": mix, "promote.alias": pc.alias,
                                "promote.model_name": pc.model_name})
            metrics = {"promote/candidates": len(candidates)}
            if best is not None:
                metrics["promote/best"] = best["value"]
            if champion is not None:
                value = best["value"] if decision == "promoted" else (previous or {}).get("value")
                if value is not None:
                    metrics["promote/champion"] = value
            tracker.log_metrics(metrics)
            tracker.log_dict(result, "promote/decision.json")
    write_json(Path(run_dir) / "promote" / "decision.json", result)
    log(f"promote: {decision}: {reason}")
    return result


def _value(tag: str | None) -> float | None:
    """A metric tag as a number; a missing or non-numeric tag counts as no value."""
    try:
        value = float(tag) if tag is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None
