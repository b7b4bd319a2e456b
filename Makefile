# distill: every target a user needs. `make help` lists them.
# The two README commands are `make reproduce` and `make test`; both install first.

PYTHON      ?= python3
VENV        ?= .venv
BIN         := $(VENV)/bin
# A GPU user picks a CUDA build, e.g. TORCH_SPEC=torch==2.13.0 TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cu124
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
PRESET      ?= tiny
TEACHER     ?=
MIX         ?= etd
PORT        ?= 5005
# The team's tracking server (`make server`): MLflow on PostgreSQL, everything under SERVER_DIR.
SERVER_DIR  ?= .server
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5001
# Artifact store of the server: empty means $(SERVER_DIR)/artifacts; s3://bucket/prefix for an
# S3-compatible bucket (export MLFLOW_S3_ENDPOINT_URL and AWS_* credentials; pip install boto3).
SERVER_ARTIFACTS ?=
# More `mlflow server` options, e.g. SERVER_OPTS="--allowed-hosts mlflow.lab.example" for a host name.
SERVER_OPTS ?=

# Data: ./data if present, else the shared copy beside this checkout (see README "Data").
DISTILL_DATA_DIR ?= $(firstword $(wildcard data) $(wildcard ../shared/data) data)
MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db
export DISTILL_DATA_DIR MLFLOW_TRACKING_URI
export MLFLOW_DISABLE_TELEMETRY = true
export PATH := $(abspath $(BIN)):$(PATH)

TEACHER_OPT := $(if $(TEACHER),--teacher $(TEACHER),)

.PHONY: help install test test-all reproduce problems overlap generate verify mix train rl evaluate evaluate-base register promote report compare serve ui server server-stop bench gpu-bundle clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

install: $(VENV)/.installed ## create .venv: torch first (TORCH_SPEC), then distill with test extras

test: install ## run the default test suite (offline, CPU, under 10 minutes)
	$(BIN)/python -m pytest -q

test-all: install ## run every test, the slow ones too
	$(BIN)/python -m pytest -q -m "slow or not slow"

reproduce: install ## the whole study as one MLflow run tree, then reports/ (PRESET=tiny, TEACHER=gold)
	$(BIN)/distill reproduce --preset $(PRESET) $(TEACHER_OPT)

problems: install ## list the benchmark data sets and their counts
	$(BIN)/distill problems

overlap: install ## n-gram overlap between training questions and the test sets
	$(BIN)/distill overlap --preset $(PRESET)

generate: install ## teacher -> raw samples for every form
	$(BIN)/distill generate --preset $(PRESET) $(TEACHER_OPT)

verify: install ## raw samples -> verified CoTD / PoTD / EoTD sets
	$(BIN)/distill verify --preset $(PRESET)

mix: install ## verified sets -> a training mix (MIX=etd|cot|pot|eot|cot+eot...)
	$(BIN)/distill mix --preset $(PRESET) --mix $(MIX)

train: install ## fine-tune a student on MIX
	$(BIN)/distill train --preset $(PRESET) --mix $(MIX)

rl: install ## GRPO after SFT: the student of MIX, the verifiers as reward -> student MIX-grpo (causal students)
	$(BIN)/distill rl --preset $(PRESET) --mix $(MIX)

evaluate: install ## evaluate the student trained on MIX on the four test sets (MIX=etd-grpo: the rl stage's; SAMPLES=4: also maj@4, pass@4)
	$(BIN)/distill evaluate --preset $(PRESET) --mix $(MIX) $(if $(SAMPLES),--samples $(SAMPLES))

evaluate-base: install ## the starting point: train.student as it comes, untrained, with MIX's forms (eval/MIX-base/)
	$(BIN)/distill evaluate --untrained --preset $(PRESET) --mix $(MIX)

register: install ## register the evaluated student of MIX as a version of distill-student
	$(BIN)/distill register --preset $(PRESET) --mix $(MIX)

promote: install ## give the best ETD student (on validation accuracy) the alias `champion`
	$(BIN)/distill promote --preset $(PRESET)

report: install ## write reports/results.md and plots from the MLflow store
	$(BIN)/distill report --preset $(PRESET)

compare: install ## the four students side by side (95% intervals) and the MLflow UI link to them
	$(BIN)/distill compare --preset $(PRESET)

serve: install ## serve models:/distill-student@champion on PORT
	$(BIN)/mlflow models serve -m models:/distill-student@champion --env-manager local --host 127.0.0.1 --port $(PORT)

ui: install ## the MLflow UI on 127.0.0.1:5000 (one worker, about 0.5 GB)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) --workers 1 --host 127.0.0.1 --port 5000

server: install ## MLflow tracking server on PostgreSQL (.server/) at http://SERVER_HOST:SERVER_PORT
	$(BIN)/python -m distill.tracking_server start --dir $(SERVER_DIR) --host $(SERVER_HOST) --port $(SERVER_PORT) \
		$(if $(SERVER_ARTIFACTS),--artifacts $(SERVER_ARTIFACTS),) $(if $(SERVER_OPTS),-- $(SERVER_OPTS),)

server-stop: ## stop the tracking server of `make server` and its PostgreSQL (the data stays in .server/)
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) -m distill.tracking_server stop --dir $(SERVER_DIR)

bench: install ## run the speed benchmarks in benchmarks/ (each prints a ratio)
	for b in $(filter-out benchmarks/gpu_bundle.py,$(wildcard benchmarks/*.py)); do $(BIN)/python $$b || exit 1; done

# TARGET_PACKAGES: the GPU machine's `pip freeze` (only what it lacks is carried, besides transformers & co.)
TARGET_PACKAGES ?=
gpu-bundle: install ## .device/: wheels, data and run.sh for an offline GPU machine whose Python has torch (README "On a GPU")
	$(BIN)/python benchmarks/gpu_bundle.py --data-dir $(DISTILL_DATA_DIR) $(if $(TARGET_PACKAGES),--target-packages $(TARGET_PACKAGES),)

clean: ## remove run outputs (runs/, mlruns/, mlflow.db), keep .venv
	rm -rf runs mlruns mlflow.db .pytest_cache
