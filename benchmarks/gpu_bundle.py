"""A folder that runs benchmarks/gpu.py (or any stage) on an offline GPU machine whose Python already has torch.

Compute nodes of a cluster often reach no package index, and their Python comes with torch, CUDA and an older
transformers. ``make install`` cannot run there; this script, run where ``make install`` did, writes what such
a machine needs into one ignored folder (default ``.device/``):

- ``wheels/``: a wheel of every distribution the project needs at run time that the target lacks, at the
  version installed here, for the target's Python and platform (``pip download --no-deps``). torch is never
  carried (the target's CUDA build is the point). The distributions the project is checked against
  (``PINNED``: transformers, tokenizers, huggingface-hub, accelerate, peft, kernels, trl, safetensors,
  datasets, mlflow) are carried even when the target has them, since an older transformers there is the
  usual trap. Which ones the target has comes from ``--target-packages`` (the target's ``pip freeze`` or
  a list of names); without it every needed distribution is carried.
- ``data/``: the benchmark data sets (DISTILL_DATA_DIR), which the checkout does not hold;
- ``manifest.json``: each carried distribution and its version;
- ``run.sh``: on the target, from the checkout's root: installs the wheels into a folder of their own
  (``--no-index --no-deps --target``) ahead of the target's packages on PYTHONPATH, sets
  ``HF_HUB_OFFLINE=1`` and the data folder, checks that every requirement of the project is met by what
  Python will import (``--check``: one line per missing or wrong version, exit 2, before any GPU time is
  spent), then runs ``benchmarks/gpu.py`` with the arguments given (or ``-m distill.cli ...`` after
  ``--cli``).

    python benchmarks/gpu_bundle.py --target-packages target-freeze.txt      # here, after make install
    bash .device/run.sh --presets codet5-large --out "$OUT/gpu.json"       # there, in the checkout
    bash .device/run.sh --cli train --preset qwen2.5-0.5b-lora --set train.student=/models/qwen

Downloads are resumable: wheels already in the folder are kept.
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from distill.files import atomic_write_text  # noqa: E402  (the checkout's package, installed or not)
NEVER_CARRIED = {"torch"}
"""The target's own build (CUDA) is the point; its requirements (triton, nvidia-*) stay the target's too."""
PINNED = ("transformers", "tokenizers", "huggingface-hub", "accelerate", "peft", "kernels", "trl", "safetensors",
          "datasets", "mlflow", "mlflow-skinny", "mlflow-tracing")
"""Carried at this checkout's versions even where the target has them: the project is checked against these."""
LIGHTER = {"mlflow": ("mlflow-skinny", "mlflow-tracing")}
"""Followed only through these of its requirements: mlflow's client API is mlflow-skinny's; the full mlflow adds
the tracking server, the UI and their dependencies (flask, sqlalchemy, alembic, docker, ...: about 30 MiB of
wheels), which a GPU worker that runs the benchmark or logs to a server does not import. ``--full-mlflow``
carries it all (a sqlite:// store on the worker needs sqlalchemy and alembic)."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
DATA_SETS = ("gsm8k", "asdiv", "svamp", "multiarith")


def project_requirements(setup_cfg: Path = REPO / "setup.cfg") -> list[Requirement]:
    """``install_requires`` of setup.cfg: what ``make install`` installs, less the test extras."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    lines = parser["options"]["install_requires"].splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def requirement_applies(req: Requirement, extras: set[str], python_version: str | None = None) -> bool:
    if req.marker is None:
        return True
    target = {"python_version": python_version, "python_full_version": f"{python_version}.0"} if python_version else {}
    return any(req.marker.evaluate({"extra": extra, **target}) for extra in (extras or {""}))


def closure(roots: list[Requirement], lighter: dict | None = None,
            python_version: str | None = None) -> tuple[dict[str, tuple[str, list[Requirement]]], list[str]]:
    """Every distribution the roots need at run time, through the metadata of this environment:
    {canonical name: (installed version, the requirements that asked for it)}, and the requirements that no
    installed distribution answers. torch is not followed, and a distribution of ``lighter`` only through the
    requirements it names. Markers are read for ``python_version`` (default: this Python)."""
    lighter = LIGHTER if lighter is None else lighter
    found: dict[str, tuple[str, list[Requirement]]] = {}
    missing: list[str] = []
    followed: set[tuple[str, frozenset]] = set()  # (name, extras) whose requirements are queued already
    queue = [(req, set()) for req in roots]
    while queue:
        req, parent_extras = queue.pop()
        if not requirement_applies(req, parent_extras, python_version):
            continue
        name = canonicalize_name(req.name)
        if name in NEVER_CARRIED:
            continue
        if name in found:
            found[name][1].append(req)
        key = (name, frozenset(req.extras))
        if key in followed:
            continue
        followed.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name in lighter:  # on the target: the carried substitutes stand for it
                queue += [(Requirement(sub), set()) for sub in lighter[name]]
            else:
                missing.append(str(req))
            continue
        if name not in found:
            found[name] = (dist.version, [req])
        requires = [Requirement(line) for line in dist.requires or []]
        if name in lighter:
            requires = [r for r in requires if canonicalize_name(r.name) in lighter[name]]
        queue += [(r, set(req.extras)) for r in requires]
    return found, sorted(set(missing))


def target_packages(text: str) -> dict[str, str | None]:
    """{name: version or None} from the target's ``pip freeze`` (name==version, name @ url), ``pip list`` (a
    name and a version a line) or a plain list of names (spaces, commas or lines); ``#`` starts a comment."""
    name_re = r"[A-Za-z0-9][A-Za-z0-9._-]*"
    packages: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        pinned = re.fullmatch(rf"({name_re})\s*(?:==\s*(\S+)|@\s*\S+)", line)
        listed = re.fullmatch(rf"({name_re})\s+(\d[^\s]*)", line)
        if pinned or listed:
            match = pinned or listed
            packages[canonicalize_name(match.group(1))] = match.group(2)
            continue
        for token in re.split(r"[\s,]+", line):
            token = token.rstrip(".")
            if re.fullmatch(name_re, token) and token.lower() not in {"package", "version"}:
                packages[canonicalize_name(token)] = None
    return packages


def to_carry(needed: dict[str, tuple[str, list]], target: dict[str, str | None] | None,
             pinned=PINNED, lighter=LIGHTER) -> dict[str, str]:
    """{name: version} of the wheels to carry: what the target lacks, and the pinned ones always; a ``lighter``
    distribution is left behind (its chosen requirements are carried)."""
    pinned = {canonicalize_name(p) for p in pinned}
    return {name: version for name, (version, _) in sorted(needed.items())
            if name not in lighter and (target is None or name in pinned or name not in target)}


def wheel_key(path: Path) -> tuple[str, str]:
    """(canonical name, version) of a wheel file."""
    name, version, *_ = parse_wheel_filename(path.name)
    return canonicalize_name(name), str(version)


def download(carry: dict[str, str], wheels: Path, python_version: str, platforms=PLATFORMS) -> None:
    """pip download of each ``name==version`` not yet in ``wheels`` (no dependencies: the closure is ours)."""
    wheels.mkdir(parents=True, exist_ok=True)
    have = {wheel_key(path) for path in wheels.glob("*.whl")}
    todo = [f"{name}=={version}" for name, version in carry.items() if (name, version) not in have]
    if not todo:
        return
    platform_args = [arg for platform in platforms for arg in ("--platform", platform)]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", python_version, "--implementation", "cp", *platform_args, "-d", str(wheels), *todo]
    print(f"downloading {len(todo)} wheels for Python {python_version} ...", flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit("pip download failed (above). A binary wheel with no manylinux build for these platforms "
                         "needs another --platform (e.g. manylinux_2_24_x86_64) or another --python-version.")


RUN_SH = """#!/usr/bin/env bash
# Written by benchmarks/gpu_bundle.py. On the offline GPU machine, from the checkout's root:
#   bash {folder}/run.sh [benchmarks/gpu.py arguments]      or      bash {folder}/run.sh --cli <distill arguments>
set -euo pipefail
bundle="$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)"
# one folder per bundle content, so a bundle made again never runs on the wheels of an earlier one
site="${{DISTILL_SITE:-/tmp/distill-site-$(sha256sum "$bundle/manifest.json" | cut -c1-12)}}"
python="${{PYTHON:-python3}}"
if [ ! -f "$site/.complete" ]; then
  shopt -s nullglob
  wheels=("$bundle"/wheels/*.whl)
  if [ ${{#wheels[@]}} -gt 0 ]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${{wheels[@]}}"
  fi
  mkdir -p "$site" && touch "$site/.complete"
fi
export PYTHONPATH="$site:$PWD${{PYTHONPATH:+:$PYTHONPATH}}"
export HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true PYTHONUNBUFFERED=1
export DISTILL_DATA_DIR="${{DISTILL_DATA_DIR:-$bundle/data}}"
if [ "${{1:-}}" = "--cli" ]; then
  shift
  "$python" benchmarks/gpu_bundle.py --check --cli --manifest "$bundle/manifest.json"
  exec "$python" -m distill.cli "$@"
fi
"$python" benchmarks/gpu_bundle.py --check --manifest "$bundle/manifest.json"
exec "$python" benchmarks/gpu.py --data-dir "$DISTILL_DATA_DIR" "$@"
"""


def check(manifest: Path | None, cli: bool = False) -> int:
    """On the target: every distribution the project needs at run time is importable, and each carried one is
    seen at its carried version (not shadowed); one line per problem and 2 if any. A version outside a declared
    range is a warning."""
    carried = json.loads(manifest.read_text()) if manifest is not None and manifest.exists() else {}
    lighter = {name: tuple(keep) for name, keep in carried.pop("lighter", {}).items()}
    needed, missing = closure(project_requirements(), lighter)
    problems = [f"not installed: {req}" for req in missing]
    for name, (version, asked) in needed.items():
        if name in lighter:
            continue
        for req in asked:
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                # a warning only: declared ranges are often narrower than what runs (mlflow's pyarrow<N, say);
                # a real clash fails the benchmark's first import, and then this line names the suspect
                print(f"gpu_bundle --check: warning: {name} {version} does not meet {req}", file=sys.stderr)
    for name, version in carried.items():
        try:
            seen = metadata.version(name)
        except metadata.PackageNotFoundError:
            seen = None
        if seen != version:
            problems.append(f"{name}: {seen} is imported, not the carried {version} (is the wheel folder first on "
                            f"PYTHONPATH?)")
    hint = bool(problems)
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if cli and "mlflow" in lighter and not uri.startswith(("http://", "https://", "databricks")):
        problems.append(f"the stages log to MLflow, and this bundle carries its client only (mlflow-skinny), which "
                        f"cannot open {uri or 'the default sqlite:///mlflow.db'}: export MLFLOW_TRACKING_URI=http://"
                        f"<tracking server> (README 'Team setup'), or bundle again with --full-mlflow")
    for line in problems:
        print(f"gpu_bundle --check: {line}", file=sys.stderr)
    if hint:
        print("gpu_bundle --check: rerun gpu_bundle.py here with the target's `pip freeze` as --target-packages, "
              "or --pin the distributions above, and carry the folder again", file=sys.stderr)
    if problems:
        return 2
    print(f"gpu_bundle --check: every requirement met (transformers {metadata.version('transformers')}, "
          f"torch {metadata.version('torch')})", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / ".device", help="the folder to write (default .device)")
    parser.add_argument("--target-packages", type=Path, default=None,
                        help="the target's `pip freeze` (or names): only what it lacks is carried, besides --pin")
    parser.add_argument("--pin", default=",".join(PINNED),
                        help="comma-separated distributions carried even where the target has them")
    parser.add_argument("--python-version", default="3.12", help="the target's Python (default 3.12)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DISTILL_DATA_DIR", "data")),
                        help="the data sets to copy (default DISTILL_DATA_DIR)")
    parser.add_argument("--full-mlflow", action="store_true",
                        help="carry the full mlflow (server, UI, sqlite store) instead of its client, mlflow-skinny")
    parser.add_argument("--check", action="store_true", help="on the target: are all requirements met? (run.sh)")
    parser.add_argument("--manifest", type=Path, default=None, help="with --check: the carried versions")
    parser.add_argument("--cli", action="store_true", help="with --check: the distill CLI will run (it logs to MLflow)")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.manifest, args.cli)
    target = target_packages(args.target_packages.read_text()) if args.target_packages else None
    lighter = {} if args.full_mlflow else LIGHTER
    needed, missing = closure(project_requirements(), lighter, args.python_version)
    if missing:
        raise SystemExit(f"not installed here: {', '.join(missing)}. Run `make install` first, then this script "
                         f"with .venv/bin/python.")
    carry = to_carry(needed, target, [p for p in args.pin.split(",") if p], lighter)
    created = not args.out.exists()
    args.out.mkdir(parents=True, exist_ok=True)  # a folder pattern (/.device/) matches only an existing folder
    if args.out.resolve().is_relative_to(REPO) and subprocess.run(
            ["git", "check-ignore", "-q", str(args.out)], cwd=REPO).returncode != 0:
        if created:
            args.out.rmdir()
        raise SystemExit(f"{args.out} is not ignored by git: its wheels and data must never be committed. Add it to "
                         f".gitignore or .git/info/exclude, or pick another --out.")
    sets = [name for name in DATA_SETS if (args.data_dir / name).is_dir()]
    if not sets:
        raise SystemExit(f"no data sets in {args.data_dir} ({', '.join(DATA_SETS)}): pass --data-dir ../shared/data "
                         f"or set DISTILL_DATA_DIR")
    download(carry, args.out / "wheels", args.python_version)
    for name in sets:
        shutil.copytree(args.data_dir / name, args.out / "data" / name, dirs_exist_ok=True)
    atomic_write_text(args.out / "manifest.json", json.dumps({**carry, "lighter": lighter}, indent=2) + "\n")
    run_sh = atomic_write_text(args.out / "run.sh", RUN_SH.format(folder=shlex.quote(os.path.relpath(args.out, REPO))))
    run_sh.chmod(0o755)
    stale = [p.name for p in (args.out / "wheels").glob("*.whl") if wheel_key(p) not in carry.items()]
    for name in stale:
        (args.out / "wheels" / name).unlink()
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {len(carry)} wheels ({', '.join(f'{n} {v}' for n, v in carry.items())}), data "
          f"{', '.join(sets)}; {size / 2 ** 20:.1f} MiB in all" + (f"; {len(stale)} stale wheels removed" if stale else ""))
    print(f"on the target, in the checkout: bash {os.path.relpath(run_sh, REPO)} [--presets ...]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
