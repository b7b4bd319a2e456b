"""Stages: each a plain function ``run(cfg, run_dir, tracker=None, **stage_args) -> dict`` that the CLI,
the Makefile and the MLproject entry points call. See each module's docstring for its data contract."""
