"""Command line: a thin click group, one command per stage. Each command builds a Config and
calls the stage's ``run(cfg, run_dir, tracker)``; no logic lives here.
"""
from __future__ import annotations

import functools
import json
import os
import sys

import click

from distill import config as config_mod
from distill.config import Config, ConfigError
from distill.files import DataError


def common_options(fn):
    """--preset, --set key=value (repeatable) and --data-dir, shared by every stage command."""

    @click.option("--preset", default="tiny", show_default=True,
                  help="Experiment preset: a name in mlprojects/ or a YAML path.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="Override a config value, e.g. --set train.epochs=2 (repeatable).")
    @click.option("--overrides", "override_list", default="", metavar="K=V,K=V",
                  help="Comma-separated overrides (the MLproject form of --set).")
    @click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                  help="Benchmark data folder (default: $DISTILL_DATA_DIR, else data.data_dir).")
    @functools.wraps(fn)
    def wrapper(*args, preset, overrides, override_list, data_dir, **kwargs):
        items = list(overrides) + [o for o in override_list.split(",") if o.strip()]
        return fn(*args, cfg_args=(preset, items, data_dir), **kwargs)

    return wrapper


def load(preset: str, overrides=(), data_dir: str | None = None, **extra: object) -> Config:
    """Config from a preset and overrides; CLI flags given as extra={"train.lr": ...} win.

    A command decorated with @common_options receives ``cfg_args`` and calls
    ``load(*cfg_args, **{"train.lr": lr, ...})``; empty strings (MLproject defaults) count as unset.
    """
    items = list(overrides)
    if data_dir:
        os.environ[config_mod.DATA_DIR_ENV] = data_dir
    items += [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in extra.items() if v not in (None, "")]
    try:
        return config_mod.load_config(preset, items)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def tracker_for(cfg: Config):
    from distill.tracking import Tracker

    return Tracker(cfg.tracking_uri, cfg.tracking.experiment)


class _Group(click.Group):
    """Turns expected errors (bad data, bad config) into one clear line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (DataError, ConfigError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="distill")
def main():
    """Distill math reasoning (CoT, PoT, EoT) from a teacher LLM into a small seq2seq student.

    Stages, in order: generate -> verify -> mix -> train -> evaluate -> promote -> report.
    `distill reproduce` runs them all as one MLflow run tree.
    """


# --- problems (data sets) -------------------------------------------------------------------

@main.command()
@click.argument("dataset", required=False)
@click.option("--split", default="test", show_default=True, help="train or test (gsm8k has both).")
@click.option("--head", type=int, default=0, help="Show the first N records.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Benchmark data folder (default: $DISTILL_DATA_DIR, else ./data).")
@click.option("--json", "as_json", is_flag=True, help="Print records as JSON lines.")
def problems(dataset, split, head, data_dir, as_json):
    """List the data sets with their counts, or show records of one (DATASET)."""
    from distill import problems as problems_mod

    data_dir = data_dir or os.environ.get(config_mod.DATA_DIR_ENV) or "data"
    if dataset is None:
        click.echo(f"data directory: {data_dir}")
        click.echo(f"{'dataset':<12}{'split':<7}{'problems':>9}{'excluded':>10}  description")
        for name, bench in problems_mod.LOADERS.items():
            for sp in bench.splits:
                loaded = problems_mod.load(name, sp, data_dir)
                reasons = {}
                for e in loaded.excluded:
                    reasons[e.reason] = reasons.get(e.reason, 0) + 1
                note = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
                click.echo(f"{name:<12}{sp:<7}{len(loaded.problems):>9,}{len(loaded.excluded):>10}  "
                           f"{bench.description}{f' ({note})' if note else ''}")
        return
    try:
        loaded = problems_mod.load(dataset, split, data_dir)
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise click.BadParameter(str(exc)) from None
    for p in loaded.problems[: head or len(loaded.problems)]:
        if as_json:
            click.echo(json.dumps(p.to_dict(), ensure_ascii=False))
        else:
            click.echo(f"[{p.id}] answer={p.answer:g}\n  {p.question}")
            if p.rationale:
                click.echo("  rationale: " + p.rationale.replace("\n", "\n             "))
    if not head:
        click.echo(f"{len(loaded.problems)} problems, {len(loaded.excluded)} excluded", err=True)


# --- overlap (decontamination report) -------------------------------------------------------
# --- verify (file mode and stage) -----------------------------------------------------------
# --- generate -------------------------------------------------------------------------------
# --- mix ------------------------------------------------------------------------------------
# --- train ----------------------------------------------------------------------------------
# --- evaluate -------------------------------------------------------------------------------
# --- register / promote ---------------------------------------------------------------------
# --- report / reproduce ---------------------------------------------------------------------


if __name__ == "__main__":
    main()
