"""Stages: each a plain function ``run(cfg, run_dir, tracker=None, **stage_args) -> dict`` that the CLI,
the Makefile and the MLproject entry points call. Every setting, the mix included, comes in ``cfg``;
``stage_args`` are only what is no setting (evaluate's ``student``, a ``shard``, a ``log`` function).
A tracker of None means tracking is off (the stage logs to distill.tracking.NullTracker, which records
nothing). See each module's docstring for its data contract.

This file owns the order of the pipeline (``pipeline``): `distill reproduce` runs its steps in it and
the report lists their runs in it, without either stage importing the other. Reads and writes nothing."""
from __future__ import annotations

STAGES = ("generate", "verify", "mix", "train", "evaluate", "register", "promote", "report")
"""Every stage of the study, in the order `distill reproduce` runs them."""
PER_MIX = ("mix", "train", "evaluate", "register")
"""The stages that run once per mix (step ``<stage>-<mix>``)."""


def pipeline(mixes: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
    """The steps in order as (step name, stage, mix): each stage for every mix before the next stage starts."""
    steps: list[tuple[str, str, str | None]] = []
    for stage in STAGES:
        steps += [(f"{stage}-{m}", stage, m) for m in mixes] if stage in PER_MIX else [(stage, stage, None)]
    return steps
