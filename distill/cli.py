"""Command line: a thin click group, one command per stage. Each command builds a Config and
calls the stage's ``run(cfg, run_dir, tracker)``, then prints what it returned; no logic lives here.

Reads only its options (and, through the stages, what they read); writes nothing itself. It stays
one file, long as it is, because it is the one place where every command's options and help text
can be read side by side, as ``distill --help`` lists them; each command is short.
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
from distill.layout import RunFolder
from distill.thoughts import form_names


def _existing_dir(ctx, param, value):
    """--data-dir must name an existing folder: one line (via _Group) saying what to give instead."""
    if value and not os.path.isdir(value):
        raise DataError(f"--data-dir {value}: no such directory; give the folder that holds gsm8k/, svamp/, "
                        "asdiv/ and multiarith/ (README \"Data\"), or set DISTILL_DATA_DIR")
    return value


def _named_by(parser: str):
    """A --mix callback that checks the name with ``distill.thoughts.<parser>`` before anything heavy is
    imported (distill.thoughts is light: no model, no sandbox), so a typo fails at once, listing the
    valid names."""
    def check(ctx, param, value):
        if value:
            import distill.thoughts

            try:
                getattr(distill.thoughts, parser)(value)
            except ConfigError as exc:
                raise click.BadParameter(str(exc)) from None
        return value

    return check


_valid_mix = _named_by("parse_mix")
"""--mix of the stages that build a mix's data or its SFT student (mix, train, rl): a plain mix only."""
_valid_student = _named_by("parse_student")
"""--mix of the stages that take any student (evaluate, register, promote): a mix, or a mix and a
variant (etd-grpo: the rl stage's student, etd-base: the untrained one; distill.thoughts.parse_student)."""


def _preset_value(key: str, preset: str = "tiny") -> str:
    """A value of the default preset, for --help: what a setting really is when it is not given."""
    try:
        section, name = key.split(".")
        return f"{getattr(getattr(config_mod.load_config(preset), section), name):g}"
    except Exception:  # noqa: BLE001 - --help must work even with a broken preset file
        return "?"


def _split_overrides(text: str) -> list[str]:
    """The MLproject form of --set: ``k=v,k=v``. A piece without '=' continues the value before it
    (``evaluate.forms=eot,pot``), and an empty value is left out: an MLproject parameter left at its
    default "" means "the preset's value"."""
    items: list[str] = []
    for piece in (p for p in text.split(",") if p.strip()):
        if "=" not in piece and items:
            items[-1] += "," + piece
        else:
            items.append(piece)
    return [item for item in items if "=" not in item or item.partition("=")[2].strip()]


def common_options(fn):
    """--preset, --set key=value (repeatable), --overrides and --data-dir, shared by every stage command."""

    @click.option("--preset", default="tiny", show_default=True,
                  help="Experiment preset: a name in mlprojects/ or a YAML path.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="Set any config value, e.g. --set train.epochs=2 (repeatable): every setting without "
                       "a flag of its own is given this way (mlprojects/*.yaml and distill/config.py list them).")
    @click.option("--overrides", "override_list", default="", metavar="K=V,K=V",
                  help="Comma-separated --set items (the MLproject form; an empty value is left out).")
    @click.option("--data-dir", type=click.Path(file_okay=False), default=None, callback=_existing_dir,
                  help="Benchmark data folder, an existing directory: sets data.data_dir "
                       "(default: $DISTILL_DATA_DIR, else the preset's data.data_dir).")
    @functools.wraps(fn)
    def wrapper(*args, preset, overrides, override_list, data_dir, **kwargs):
        items = list(overrides) + _split_overrides(override_list)
        if data_dir:
            items.append(f"data.data_dir={json.dumps(data_dir)}")  # quoted: any folder name is a string
        return fn(*args, cfg_args=(preset, items), **kwargs)

    return wrapper


def load(preset: str, overrides=(), **flags: str) -> Config:
    """Config from a preset and overrides; the few flags a command has (``flags={"mix.mix": mix}``)
    come last and win; an empty one (not given, or an MLproject default) counts as unset.

    A command decorated with @common_options receives ``cfg_args`` and calls ``load(*cfg_args, ...)``.
    A config with problems raises one ConfigError naming them all (printed by _Group, exit status 2).
    """
    items = list(overrides) + [f"{k}={v}" for k, v in flags.items() if v not in (None, "")]
    return config_mod.load_config(preset, items)


def tracker_for(cfg: Config):
    from distill.tracking_server import check_tracking_uri
    from distill.tracking import Tracker

    check_tracking_uri(cfg.tracking_uri)  # an unreachable server: one line naming the URI, before any work
    return Tracker(cfg.tracking_uri, cfg.tracking.experiment)


MOVED_FLAGS = {
    "generate": {"--model": "teacher.model", "--base-url": "teacher.base_url", "--api-key-env": "teacher.api_key_env",
                 "--replay-file": "teacher.replay_file", "--limit": "data.limit_train", "--forms": "generate.forms",
                 "--concurrency": "teacher.concurrency", "--budget": "teacher.budget"},
    "verify": {"--strict": "verify.strict", "--timeout": "verify.timeout"},
    "overlap": {"--n": "mix.overlap_n"},
    "train": {"--student": "train.student", "--lr": "train.lr", "--epochs": "train.epochs",
              "--batch-size": "train.batch_size", "--max-steps": "train.max_steps"},
    "rl": {"--max-steps": "rl.max_steps"},
    "evaluate": {"--forms": "evaluate.forms", "--test-sets": "data.test_sets", "--limit": "evaluate.limit",
                 "--batch-size": "evaluate.batch_size", "--max-new-tokens": "evaluate.max_new_tokens"},
    "promote": {"--metric": "promote.metric"},
}
"""Flags that repeated a config key, by command: a script that still passes one is told the --set item."""


class _Group(click.Group):
    """Turns expected errors (bad data, bad config) into one clear line and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (DataError, ConfigError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except click.NoSuchOption as exc:
            key = MOVED_FLAGS.get(exc.ctx.command.name if exc.ctx else "", {}).get(exc.option_name)
            if key:
                exc.message = f"{exc.message} It is a config setting: --set {key}=VALUE"
                exc.possibilities = None
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="distill")
def main():
    """Distill math reasoning (CoT, PoT, EoT) from a teacher into a small student.

    The teacher is an LLM behind an OpenAI-compatible API, a replay of its recorded answers, or the
    offline gold teacher (derived from GSM8K's annotations); the student is a seq2seq (T5, CodeT5) or
    causal (decoder-only) model under one billion parameters.

    Stages, in order: generate -> verify -> mix -> train -> [rl] -> evaluate -> register -> promote -> report.
    `distill rl` (optional, causal students) continues a trained student with GRPO, the forms' verifiers
    as the reward, into the student <mix>-grpo, which evaluate, register and promote take like any other.
    `distill reproduce` runs them all but rl as one MLflow run tree; `make serve` then serves the champion.
    """


# --- problems (data sets) -------------------------------------------------------------------

@main.command(short_help='List the data sets with their counts, or show records of one.')
@click.argument("dataset", required=False)
@click.option("--split", default="test", show_default=True, help="train or test (gsm8k has both).")
@click.option("--head", type=int, default=0, help="Show the first N records.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, callback=_existing_dir,
              help="Benchmark data folder, an existing directory (default: $DISTILL_DATA_DIR, else ./data).")
@click.option("--json", "as_json", is_flag=True, help="Print records as JSON lines.")
def problems(dataset, split, head, data_dir, as_json):
    """List the data sets with their counts, or show records of one (DATASET)."""
    from distill import problems as problems_mod

    data_dir = config_mod.load_config(None, [f"data.data_dir={json.dumps(data_dir)}"] if data_dir else []).data_path
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

@main.command(short_help='Count training questions that overlap each test set.')
@common_options
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the JSON report (default: runs/<preset>/overlap.json).")
def overlap(cfg_args, output):
    """Exact duplicates and n-gram overlap: training questions vs each test set, and between test sets.

    Prints a table and saves the report as JSON. It removes nothing: the mix stage holds out the
    training problems it names (distill.overlap.contaminated_ids), with the same n-gram length.

    Other settings: --set key=value, e.g. --set mix.overlap_n=13 (word n-grams that count as overlap,
    default 8), --set data.test_sets=gsm8k,svamp.
    """
    from pathlib import Path

    from distill import overlap as overlap_mod
    from distill.files import write_json
    from distill.problems import load as load_set

    cfg = load(*cfg_args)
    data_dir = cfg.data_path
    train = load_set(cfg.data.train_set, "train", data_dir, hub=cfg.data.hub).problems
    tests = {name: load_set(name, "test", data_dir, hub=cfg.data.hub).problems for name in cfg.data.test_sets}
    report = overlap_mod.overlap_report(train, tests, n=cfg.mix.overlap_n, train_name=f"{cfg.data.train_set}-train")
    path = Path(output) if output else RunFolder(cfg.run_path).overlap
    write_json(path, report)
    click.echo(overlap_mod.format_table(report))
    click.echo(f"saved {path}")

# --- verify (file mode and stage) -----------------------------------------------------------

def _reasons_table(verdicts) -> str:
    """status | count | share | most common reason, one row per status (correct first)."""
    from collections import Counter

    by_status: dict[str, Counter] = {}
    for v in verdicts:
        by_status.setdefault(v.status, Counter())[v.reason] += 1
    n = max(1, len(verdicts))
    lines = [f"{'status':<14}{'count':>7}{'share':>8}  most common reason"]
    for status in sorted(by_status, key=lambda s: (s != "correct", -sum(by_status[s].values()), s)):
        reasons = by_status[status]
        count = sum(reasons.values())
        top = reasons.most_common(1)[0][0][:70] or "-"
        lines.append(f"{status:<14}{count:>7}{count / n:>8.1%}  {top}")
    return "\n".join(lines)


@main.command(short_help="Check completions against gold answers with each form's verifier.")
@click.argument("file", required=False, type=click.Path(dir_okay=False, exists=True))
@common_options
@click.option("--thought", type=click.Choice(form_names()), default=None,
              help="Form of the completions in FILE (required with FILE).")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="File mode: write one verdict per input line here (JSONL).")
@click.option("--json", "as_json", is_flag=True,
              help="File mode: print one JSON object {n, correct, accuracy, reasons} instead of a table.")
def verify(file, cfg_args, thought, output, as_json):
    """Check completions against gold answers with the form's own verifier.

    With FILE (JSONL, each line {"question", "completion", "answer" (or "gold"), "id"?}) and --thought: verify
    those lines, print accuracy and a table of reasons, and write the verdicts with --output. This is
    the code the pipeline uses, for teacher outputs produced anywhere else.

    Without FILE: the pipeline stage. Reads runs/<preset>/samples.jsonl and writes
    runs/<preset>/verified/ (kept samples per form, dropped samples, summary) and an MLflow run `verify`.

    Other settings: --set key=value, e.g. --set verify.strict=true (no fallbacks or named repair rules),
    --set verify.timeout=SECONDS (per program or equation system, default 5), --set verify.workers=N.
    """
    if file is None:
        if thought or output or as_json:
            raise click.UsageError("--thought, --output and --json need a FILE; without FILE "
                                   "`distill verify` runs the pipeline stage on runs/<preset>/samples.jsonl")
        from distill import sandbox
        from distill.stages import verify as stage

        cfg = load(*cfg_args)
        sandbox.configure(workers=cfg.verify.workers)
        click.echo(f"sandbox: {sandbox.isolation()}")
        summary = stage.run(cfg, cfg.run_path, tracker_for(cfg))
        for name, s in summary.items():
            reasons = ", ".join(f"{r} {c}" for r, c in s["reasons"].items()) or "none"
            click.echo(f"{name}: kept {s['kept']}/{s['n']} (drop rate {s['drop_rate']:.1%}; dropped: {reasons})")
        click.echo(f"saved {RunFolder(cfg.run_path).verified_dir}")
        return
    if thought is None:
        raise click.UsageError("--thought {cot,pot,eot} is required with FILE")
    from distill.stages.verify import verify_file

    cfg = load(*cfg_args)
    form, verdicts, isolation = verify_file(cfg, file, thought, output)
    n, correct = len(verdicts), sum(v.correct for v in verdicts)
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    if as_json:
        click.echo(json.dumps({"n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
                               "reasons": dict(sorted(counts.items())), "form": thought, "version": form.version,
                               "strict": cfg.verify.strict, "output": output, "sandbox": isolation}))
    else:
        click.echo(f"sandbox: {isolation}")
        click.echo(f"{thought} v{form.version}: {correct}/{n} correct ({correct / n if n else 0:.1%})")
        click.echo(_reasons_table(verdicts))
        if output:
            click.echo(f"saved {output}")

# --- generate -------------------------------------------------------------------------------

@main.command(short_help='Ask the teacher for every training problem in every form.')
@common_options
@click.option("--teacher", default="", metavar="NAME",
              help="gold (from GSM8K annotations, offline), replay (from teacher.replay_file) or openai "
                   "(any OpenAI-compatible API). Default: teacher.name of the preset.")
@click.option("--batch", type=click.Choice(["", "submit", "collect"]), default="",
              help="Use the OpenAI Batch API: submit the unanswered requests, or collect finished batches "
                   "into the completion store and write their samples.")
@click.option("--shard", default="", metavar="I/N",
              help="Only shard I of N (0 <= I < N) of the (problem, form) pairs, into samples.shard-I-of-N.jsonl; "
                   "run N of them at once (verify reads them all); with several endpoints in teacher.base_url "
                   "shard I uses endpoint number I mod their count. Each shard gets 1/N of teacher.budget.")
def generate(cfg_args, teacher, batch, shard):
    """Ask the teacher for every training problem in every form; appends runs/<preset>/samples.jsonl.

    Every API response is stored raw (teacher.store_dir) before use, so a rerun, also after a crash,
    pays for nothing twice; finished items are skipped. Logs an MLflow run `generate` with token
    counts and cost.

    Exit status: 0 when every item has a sample; 1 when some requests still failed after the retries
    (rerun to retry only those); 3 when teacher.budget stopped the run (everything paid for is kept).

    Other settings: --set key=value, e.g. --set teacher.model=NAME, teacher.base_url=http://localhost:8000/v1
    (vLLM; a list [URL,URL] for shards), teacher.api_key_env=VAR (the key itself is never stored),
    teacher.replay_file=PATH (for --teacher replay), data.limit_train=N, generate.forms=cot,eot,
    teacher.concurrency=N, teacher.budget=AMOUNT (needs teacher.prices for the model).
    """
    from distill.shards import parse_shard
    from distill.stages import generate as stage
    from distill.teachers import TeacherError

    shard = parse_shard(shard)
    cfg = load(*cfg_args, **{"teacher.name": teacher})  # an unknown teacher fails here, before the tracker
    try:
        summary = stage.run(cfg, cfg.run_path, tracker_for(cfg), batch=batch or None, shard=shard)
    except TeacherError as exc:
        raise click.ClickException(str(exc)) from None
    if "batch" in summary:
        click.echo(f"batch: {json.dumps(summary['batch'])}")
    click.echo(f"{summary['answered']}/{summary['items']} items answered ({summary['samples_ok']} samples ok, "
               f"{summary['samples_failed']} failed); "
               f"{shard.path(RunFolder(cfg.run_path).generate_summary) if shard else RunFolder(cfg.run_path).generate_summary}")
    if summary["stopped"]:
        click.echo(f"stopped: {summary['stopped']}", err=True)
        sys.exit(3)
    if summary["pending"] and not batch:
        click.echo(f"{summary['pending']} items are still unanswered (last error: {summary['last_error'] or 'none'}); "
                   "rerun the same command to retry them", err=True)
        sys.exit(1)

# --- mix ------------------------------------------------------------------------------------

MIX_HELP = "cot, pot, eot, etd (all three) or forms joined by '+', e.g. cot+eot (default: mix.mix of the preset)."


@main.command(short_help='Build a training set from verified samples (decontaminated).')
@common_options
@click.option("--mix", default="", metavar="MIX", callback=_valid_mix, help=MIX_HELP)
def mix(cfg_args, mix):
    """Build a training set from verified samples: runs/<preset>/mix/<mix>/{train,val}.jsonl.

    Removes duplicates and training questions that overlap a test set (counted, never silently),
    holds out whole training questions for validation, and logs an MLflow run mix-<mix>.

    Other settings: --set key=value, e.g. --set mix.val_fraction=0.1, mix.decontaminate=false,
    mix.overlap_n=13, mix.seed=1.
    """
    from distill.stages import mix as stage

    cfg = load(*cfg_args, **{"mix.mix": mix})
    summary = stage.run(cfg, cfg.run_path, tracker_for(cfg))
    click.echo(json.dumps({k: summary[k] for k in ("mix", "counts", "train", "val", "removed_duplicates",
                                                   "removed_overlap", "overlap_by_test_set", "digest")}, indent=2))

# --- train ----------------------------------------------------------------------------------

@main.command(short_help='Fine-tune a student on a mix.',
              epilog="Other settings: --set key=value, e.g. --set train.student=Salesforce/codet5-small (tiny: "
                     "built from a config, no download; a hub name or a local folder), --set train.lr=FLOAT "
                     f"(the preset's train.lr: {_preset_value('train.lr')} in tiny; the paper uses 5e-4), "
                     f"--set train.epochs=INT (the preset's train.epochs: {_preset_value('train.epochs')} in tiny; "
                     "the paper uses 10), --set train.batch_size=auto (sized to the GPU), --set train.max_steps=INT "
                     "(a CPU budget, as train.max_minutes).")
@common_options
@click.option("--mix", default="", metavar="MIX", callback=_valid_mix,
              help="Training mix to read from runs/<preset>/mix/<mix>/: " + MIX_HELP)
def train(cfg_args, mix):
    """Fine-tune a student on a mix; writes runs/<preset>/students/<mix>/ and an MLflow run train-<mix>.

    Resumes from the last checkpoint after an interruption and skips when the student is complete.
    Several processes (DDP; only rank 0 logs and writes): `torchrun --nproc_per_node N -m distill.cli train ...`.
    """
    from distill.stages import train as train_stage

    cfg = load(*cfg_args, **{"mix.mix": mix})
    main_process = os.environ.get("RANK", "0") == "0"
    summary = train_stage.run(cfg, cfg.run_path, tracker_for(cfg) if main_process else None)
    if main_process:
        click.echo(json.dumps(summary, indent=2))

# --- rl -------------------------------------------------------------------------------------

@main.command(short_help='Continue a trained causal student with GRPO (verifiers as reward).')
@common_options
@click.option("--mix", default="", metavar="MIX", callback=_valid_mix,
              help="Whose student to start from (runs/<preset>/students/<mix>/) and whose training problems to "
                   "use; writes the student <mix>-grpo. " + MIX_HELP)
def rl(cfg_args, mix):
    """Reinforcement learning after SFT: TRL's GRPOTrainer on the mix's training problems, each form's own
    verifier as the reward (correct 1.0, a wrong parsed answer rl.wrong_answer_reward, nothing parsed /
    unsafe / timeout 0; programs run in the sandbox). Writes runs/<preset>/students/<mix>-grpo/ and an
    MLflow run rl-<mix> (rl/<form>/reward, correct, parsed per step, KL, completion length, completions
    tables, val/<form>/accuracy before and after).

    Starts from the trained student of MIX, or from rl.start (a hub name or folder, e.g. --set
    rl.start=Qwen/Qwen2.5-0.5B-Instruct). Causal students only (TRL's GRPO). Other settings: --set key=value
    in the rl section, e.g. --set rl.max_steps=200 --set rl.num_generations=8 --set rl.beta=0.04
    (also rl.temperature, rl.lr, rl.lora_r, rl.max_completion_length, rl.use_vllm; preset qwen2.5-0.5b-grpo). Resumes after an interruption; skips when the student is complete. Then:
    distill evaluate --mix MIX-grpo, distill register --mix MIX-grpo, distill promote.
    """
    from distill.stages import rl as rl_stage

    cfg = load(*cfg_args, **{"mix.mix": mix})
    main_process = os.environ.get("RANK", "0") == "0"
    rl_stage.starting_point(cfg, cfg.run_path)  # a seq2seq or missing student: one line, before MLflow starts
    summary = rl_stage.run(cfg, cfg.run_path, tracker_for(cfg) if main_process else None)
    if main_process:
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "outputs"}, indent=2))

# --- evaluate -------------------------------------------------------------------------------

@main.command(short_help='Score a student on the test sets, per form, with 95% intervals.')
@common_options
@click.option("--mix", default="", callback=_valid_student, help="Which student: cot, pot, eot, etd or forms joined by "
              "'+', optionally with a variant: etd-grpo (the rl stage's) (default: mix.mix). With --student, the "
              "student's card.json decides.")
@click.option("--student", default="", metavar="PATH|RUN_ID|URI",
              help="A student folder, a training run id, or an MLflow model URI (models:/distill-student/3, "
                   "models:/distill-student@champion, runs:/RUN_ID/model). Default: runs/<preset>/students/<mix>/.")
@click.option("--samples", default="", metavar="K",
              help="Also draw K sampled outputs per problem and form and log maj@K, pass@K and the mean over "
                   "samples (default: evaluate.samples, 1 = greedy only); see evaluate.temperature, top_p, seed.")
@click.option("--shard", default="", metavar="I/N",
              help="Score only shard I of N (0 <= I < N) of each test set, into eval/<mix>/shard-I-of-N/ (files only, "
                   "no MLflow run); then `--merge` logs the whole.")
@click.option("--merge", is_flag=True,
              help="Join the shard folders of eval/<mix>/ (all N needed, same student and settings) and log "
                   "the evaluate-<mix> run with the metrics one process would log.")
@click.option("--untrained", is_flag=True,
              help="Evaluate train.student as it comes, before any training (the study's starting point), with "
                   "the mix's forms and instructions: written as students/<mix>-base/, results in eval/<mix>-base/, "
                   "MLflow run evaluate-<mix>-base (tag distill.variant=base). A tiny student is the untrained model "
                   "the train stage starts from (needs `distill mix`); a hub student its hub weights. Never registered.")
def evaluate(cfg_args, mix, student, samples, shard, merge, untrained):
    """Accuracy of a student per test set and thought form, plus vote and fallback combinations.

    Logs an MLflow run evaluate-<mix> (metrics <test_set>/<form>/accuracy with 95% Wilson bounds
    ci_low/ci_high and <test_set>/n, <test_set>/selected/* for the form chosen on validation, failure
    counts, prediction tables, per-problem correct.json) and writes runs/<preset>/eval/<mix>/.
    For forms with repair rules also <test_set>/<form>/strict/accuracy (no rule applied). With
    --samples K (K > 1) also K sampled outputs per problem and form: <test_set>/<form>/maj_at_K,
    pass_at_K and mean_at_K (and vote/maj_at_K over all forms), each with its 95% interval.
    A rerun resumes: answered problems (and samples) are skipped. A student whose card names a variant
    (etd-base, etd-grpo) goes to eval/<mix>-<variant>/ and evaluate-<mix>-<variant>.

    --untrained measures the starting point: the configured student before any training
    (make evaluate-base, or the MLproject entry point evaluate-base).

    Other settings: --set key=value, e.g. --set evaluate.limit=N (the first N problems of each test set),
    --set evaluate.forms=eot,pot (default: every form the student was trained on), --set
    data.test_sets=gsm8k,svamp, --set evaluate.batch_size=auto (sized to the GPU), --set
    evaluate.max_new_tokens=N (default 256).
    """
    from distill.stages import evaluate as stage

    cfg = load(*cfg_args, **{"mix.mix": mix, "evaluate.samples": samples})
    from distill.shards import parse_shard

    shard = parse_shard(shard)
    if shard and merge:
        raise click.UsageError("--shard and --merge do not go together: run each shard, then --merge once")
    if untrained and (student or shard or merge):
        raise click.UsageError("--untrained evaluates train.student as it comes: without --student, --shard or --merge")
    from distill.files import command_line, run_folder_lock

    with run_folder_lock(cfg.run_path, command_line(), shard=shard):  # the merge writes the folder too
        if merge:
            merged = stage.merge_evaluation(cfg, cfg.run_path, student or None)
            click.echo(f"merged {merged['shards']} shards ({merged['records']} answers imported)")
        if untrained:
            summary = stage.run_untrained(cfg, cfg.run_path, tracker_for(cfg))
        else:
            summary = stage.run(cfg, cfg.run_path, None if shard else tracker_for(cfg), student=student or None,
                                shard=shard)
    where = summary.get("student_name") or summary["mix"]
    forms_done = list(summary["forms"])
    extra = [k for k in ("vote", "fallback") if len(forms_done) > 1]
    selected = summary.get("selected_form")
    click.echo(f"{'test set':<12}{'n':>6}" + "".join(f"{f:>10}" for f in forms_done + extra)
               + (f"  selected ({selected}) [95% CI]" if selected else ""))
    for name, scores in summary["test_sets"].items():
        cells = [scores["forms"][f]["accuracy"] for f in forms_done] + [scores[k]["accuracy"] for k in extra]
        line = f"{name:<12}{scores['n']:>6}" + "".join(f"{c:>10.1%}" for c in cells)
        if "selected" in scores:
            s = scores["selected"]
            line += f"  {s['accuracy']:.1%} [{s['ci_low']:.1%}, {s['ci_high']:.1%}]"
        click.echo(line)
    for name, scores in summary["test_sets"].items():
        for key, s in (scores.get("sampled") or {}).get("scores", {}).items():
            click.echo(f"{name:<12}{key.replace('_at_', '@'):<18}{s['accuracy']:>7.1%} "
                       f"[{s['ci_low']:.1%}, {s['ci_high']:.1%}]  n={s['n']}")
    if shard:
        click.echo(f"eval/{where}/{shard.tag}/summary.json written; merge all {shard.count} shards with "
                   "`distill evaluate --merge` (same options, without --shard)")
        return
    if selected:
        click.echo(f"selected form {selected}: chosen on the validation split (the card's best_form), not on a test set")
    if summary.get("variant") == "base":
        click.echo(f"untrained: {summary['student']['card'].get('student')} as it comes, before any training "
                   "(the starting point; never a champion candidate)")
    click.echo(f"eval/{where}/summary.json written; MLflow run {summary['run_id']}")

# --- register / promote ---------------------------------------------------------------------

@main.command(short_help='Register an evaluated student in the MLflow model registry.')
@common_options
@click.option("--mix", default="", metavar="STUDENT", callback=_valid_student,
              help="Which student: cot, pot, eot, etd or forms joined by '+', maybe with a variant (etd-grpo) "
                   "(default: mix.mix). An untrained base (etd-base) is refused: it is never a champion candidate.")
@click.option("--train-run-id", default="", metavar="RUN_ID",
              help="The training run whose model to register (default: train_run_id of "
                   "runs/<preset>/eval/<mix>/summary.json).")
def register(cfg_args, mix, train_run_id):
    """Register the evaluated student of MIX as a new version of the registered model (promote.model_name).

    Reads runs/<preset>/eval/<mix>/summary.json and tags the version with the mix, preset, evaluation
    limit, the form selected on validation and its validation accuracy (val/selected/accuracy, from
    the train run), each test set's selected accuracy, run ids and the git commit. A student that is
    already registered gets its tags refreshed, not a second version.

    Other settings: --set key=value, e.g. --set promote.model_name=NAME (the registered model).
    """
    from distill.stages import register as stage

    cfg = load(*cfg_args, **{"mix.mix": mix})
    summary = stage.run(cfg, cfg.run_path, tracker_for(cfg), train_run_id=train_run_id or None,
                        log=lambda line: click.echo(line, err=True))
    click.echo(f"{summary['model_uri']} ({summary['model_name']} version {summary['version']}, "
               f"train run {summary['train_run_id']})")


@main.command(short_help='Make the best registered student (on validation) the champion.')
@common_options
@click.option("--mix", default="", metavar="MIX", callback=_valid_student,
              help="Candidates are the versions of this mix, every variant included (default: promote.mix, etd); "
                   "a variant name (etd-grpo) narrows them to that variant.")
def promote(cfg_args, mix):
    """Give the best registered student of MIX the alias `champion` if it beats the current champion.

    Ranks the versions of the same preset and evaluation limit that cover every test set on their
    validation accuracy tag (written by `distill register`), logs the decision and its reason in an
    MLflow run `promote` and prints them. Then serve it with
    `mlflow models serve -m models:/distill-student@champion --env-manager local` (make serve).

    Other settings: --set key=value, e.g. --set promote.metric=val/eot/accuracy (the validation accuracy
    tag to rank on, default val/selected/accuracy; a test-set metric is refused), promote.model_name.
    """
    from distill.stages import promote as stage

    cfg = load(*cfg_args, **{"promote.mix": mix})
    summary = stage.run(cfg, cfg.run_path, tracker_for(cfg), log=lambda line: None)
    click.echo(f"{summary['decision']}: {summary['reason']}")
    if summary["version"] is not None:
        click.echo(f"models:/{summary['model_name']}@{summary['alias']} -> version {summary['version']}")
# --- report / reproduce ---------------------------------------------------------------------

@main.command(short_help='Run the whole study as one MLflow run tree (resumable).')
@common_options
@click.option("--teacher", default="", help="Teacher for generate: gold (offline default), replay or openai.")
@click.option("--fresh", is_flag=True, help="Start a new parent run and run every step again (ignore done-markers).")
@click.option("--output-dir", type=click.Path(file_okay=False), default="reports", show_default=True,
              help="Where the report step writes results.md and the plots.")
def reproduce(cfg_args, teacher, fresh, output_dir):
    """The whole study as one MLflow run tree: generate, verify, mix, train, evaluate and register the
    CoTD/PoTD/EoTD/ETD students, promote the champion, write the report. A rerun resumes: finished
    steps are skipped (markers in <run_dir>/reproduce/done/).

    Other settings: --set key=value, any config value, e.g. --set evaluate.limit=100 --set train.epochs=2."""
    from distill.stages import reproduce as reproduce_mod

    cfg = load(*cfg_args, **{"teacher.name": teacher})
    reproduce_mod.offline_env(cfg)
    reproduce_mod.run(cfg, cfg.run_path, tracker_for(cfg), fresh=fresh, report_dir=output_dir,
                      log=lambda line: click.echo(line, err=False))


@main.command(short_help='Write results.md and the plots from the MLflow store.')
@common_options
@click.option("--output-dir", type=click.Path(file_okay=False), default="reports", show_default=True,
              help="Folder for results.md and the PNG plots.")
@click.option("--run-id", "parent_run_id", default=None,
              help="The reproduce run to report on (default: the newest reproduce-<preset> run).")
def report(cfg_args, output_dir, parent_run_id):
    """Write results.md (which students are degenerate, accuracy per form and student beside the paper
    and beside two constants, the training prior and the per-test-set oracle, drop rates, run ids) and
    the plots, read from the MLflow store only."""
    from distill.stages import report as report_mod

    cfg = load(*cfg_args)
    summary = report_mod.run(cfg, output_dir=output_dir, parent_run_id=parent_run_id)
    for name in summary["files"]:
        click.echo(f"{output_dir}/{name}")


@main.command(short_help='Print the students side by side, with the MLflow UI links.')
@common_options
@click.option("--run-id", "parent_run_id", default=None,
              help="The reproduce run whose students to compare (default: the newest reproduce-<preset> run).")
@click.option("--ui-url", default="http://127.0.0.1:5000", show_default=True,
              help="Where the MLflow UI runs (`make ui`).")
@click.option("--all-forms", is_flag=True, help="Also print every student x form x test set with n and its 95% interval.")
def compare(cfg_args, parent_run_id, ui_url, all_forms):
    """The four students side by side: accuracy per test set with 95% intervals, read from the store,
    and the MLflow UI links that open the same evaluate runs (table and chart view)."""
    import mlflow

    from distill import compare as compare_mod
    from distill.results import collect

    cfg = load(*cfg_args)
    results = collect(cfg, parent_run_id)
    if results.empty:
        raise DataError(f"nothing to compare yet: no run of preset {cfg.preset!r} in {cfg.tracking_uri}; "
                        "run `make reproduce` (or `distill reproduce`) first, or point MLFLOW_TRACKING_URI "
                        "at the store that holds the runs")
    for line in compare_mod.headline(results) + compare_mod.sampled_lines(results):
        click.echo(line)
    if all_forms:
        click.echo("")
        click.echo(compare_mod.markdown(compare_mod.comparison_rows(results)), nl=False)
    experiment = mlflow.MlflowClient(cfg.tracking_uri).get_experiment_by_name(results.experiment)
    parent = results.parent.run_id if results.parent else None
    click.echo("")
    click.echo(f"MLflow UI (`make ui` first), the evaluate runs{' of reproduce run ' + parent if parent else ''}:")
    click.echo(f"  table:  {compare_mod.ui_link(experiment.experiment_id, parent, cfg.preset, base=ui_url)}")
    click.echo(f"  charts: {compare_mod.ui_link(experiment.experiment_id, parent, cfg.preset, base=ui_url, charts=True)}")


if __name__ == "__main__":
    main()
