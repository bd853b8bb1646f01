# Trace-based distillation study: `make help` lists the targets.
#
#   make reproduce                  # the quick profile (offline, embedded SmolLM2), from nothing
#   make reproduce PROFILE=paper    # hub data, Llama-3.2-1B + Qwen3-1.7B, QLoRA on one GPU
#   make data DATA_DIR=../shared/data   # real bAbI / CoTempQA files instead of the generators
#   make test                       # unit tests + the six notebooks on the smoke profile
#
# Setup (`make env`, also run by every target that needs .venv): Python 3.10-3.13 (PYTHON=...).
# The exact CPU versions of the offline default and CI are in requirements/cpu.lock (Python 3.10:
# requirements/cpu-py310.lock), applied as
# pip constraints; pyproject.toml holds the ranges. Where PYTHON already imports a CUDA torch
# inside pyproject's range (Colab, a lab conda env), .venv sees it (--system-site-packages) and no
# second torch is installed; otherwise TORCH_SPEC is. Where `python -m venv` lacks ensurepip
# (Colab's python3), requirements/env.py falls back to virtualenv. On a lab GPU without torch:
#   make env TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"  # CUDA 12.x driver
#   make env TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu130"  # CUDA 13 driver
# (torch 2.13 has no cu128 build; the plain PyPI Linux wheel is the cu130 one.)
#
# Every stage runs its notebook with papermill into outputs/<profile>/ and depends on the
# previous stage, so finished stages are skipped on a rerun; inside a stage, artifacts made
# with the same config are skipped too (stamp.json), so a changed parameter recomputes only
# what depends on it.

PROFILE    ?= quick
PYTHON     ?= python3
VENV       ?= .venv
# The CPU pin of requirements/cpu.lock (the CPU index where it is reachable, else the local or PyPI
# wheel); CUDA builds: see the header. REUSE_TORCH=no installs TORCH_SPEC even where PYTHON has a
# CUDA torch (a TORCH_SPEC given on the command line implies it).
TORCH_SPEC ?= torch==2.13.0 --extra-index-url https://download.pytorch.org/whl/cpu
REUSE_TORCH ?= $(if $(filter file,$(origin TORCH_SPEC)),auto,no)
DATA_DIR   ?=
KERNEL     := trace-study

PY  := $(VENV)/bin/python
OUT := outputs/$(PROFILE)

# The offline profiles never touch the hub (each lookup would otherwise hang before failing).
ifneq ($(filter $(PROFILE),paper colab),)
HF_OFFLINE_DEFAULT := 0
else
HF_OFFLINE_DEFAULT := 1
endif
export HF_HUB_OFFLINE      ?= $(HF_OFFLINE_DEFAULT)
export HF_DATASETS_OFFLINE ?= $(HF_OFFLINE_DEFAULT)
export TOKENIZERS_PARALLELISM ?= false
export PYTHONUNBUFFERED := 1
# No MPLBACKEND for the kernels: ipykernel then picks its inline backend, so the executed
# notebooks keep their plots (Agg here dropped every inline figure). `python -m helpers.figures`
# selects Agg itself and needs no display.
unexport MPLBACKEND

# Parameters: profiles/defaults.yaml, then profiles/$(PROFILE).yaml, then these overrides for the
# whole run; each notebook gets only the keys of its parameters cell (`python -m helpers.config
# params`, written beside the executed notebook as <notebook>.params.yaml).
PM_SET := $(if $(DATA_DIR),--set data_source=local --set data_dir=$(abspath $(DATA_DIR)),)
PROFILE_FILES := profiles/defaults.yaml profiles/$(PROFILE).yaml
PAPERMILL = $(PY) -m papermill -k $(KERNEL) --cwd notebooks --progress-bar --log-output
# the study package, subpackages included (helpers/engine/, helpers/qa/); benchmarks/ is not in
# it: editing the benchmark re-runs no notebook
SRC := $(sort $(shell find src/helpers -name '*.py' -not -path '*/__pycache__/*')) pyproject.toml
ENV_STAMP := $(VENV)/.installed
FIGS := accuracy_by_condition step_accuracy contingency_heatmaps forest_phi_or accuracy_by_category key_steps

.DEFAULT_GOAL := help
.PHONY: help env data decompose traces sft eval correlation figures reproduce test unit smoke bench gpu-check original clean clean-all $(addprefix fig-,$(FIGS)) FORCE

help: ## list the targets
	@echo "Trace-based distillation study (PROFILE=$(PROFILE); smoke | quick | colab | paper)"
	@grep -hE '^[a-zA-Z0-9_%-]+:.*?## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-24s %s\n", $$1, $$2}'
	@echo "Variables: PROFILE=$(PROFILE)  DATA_DIR=<dir with babi/ and cotempqa/>  PYTHON=$(PYTHON) (3.10-3.13)"
	@echo "  TORCH_SPEC=\"$(TORCH_SPEC)\" (CUDA: torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126 or cu130)"
	@echo "  REUSE_TORCH=$(REUSE_TORCH) (auto: keep PYTHON's CUDA torch when it is in pyproject's range; no: install TORCH_SPEC)"

# ---------------------------------------------------------------------------------- env
env: $(ENV_STAMP) ## create .venv (Python 3.10-3.13, locked pins, kernel); reuses a CUDA torch; no-op when up to date

$(ENV_STAMP): pyproject.toml requirements/cpu.lock requirements/cpu-py310.lock requirements/env.py
	$(PYTHON) requirements/env.py --venv $(VENV) --torch-spec "$(TORCH_SPEC)" --reuse-torch $(REUSE_TORCH) --kernel $(KERNEL)
	touch $@

# -------------------------------------------------------------------------------- stages
# The parameters a stage ran with: rewritten only when they change, so a new DATA_DIR reruns.
$(OUT)/.params: FORCE | $(ENV_STAMP)
	@mkdir -p $(OUT)
	@echo "$(PM_SET)" | cmp -s - $@ || echo "$(PM_SET)" > $@

define stage
$(OUT)/$(1).ipynb: notebooks/$(1).ipynb $(PROFILE_FILES) $(OUT)/.params $(SRC) $(2) | $(ENV_STAMP)
	$$(PY) -m helpers.config params $(PROFILE) notebooks/$(1).ipynb $$(PM_SET) > $(OUT)/$(1).params.yaml
	$$(PAPERMILL) -f $(OUT)/$(1).params.yaml notebooks/$(1).ipynb $$@.tmp.ipynb
	mv $$@.tmp.ipynb $$@
endef
$(eval $(call stage,01_data,))
$(eval $(call stage,02_decompose,$(OUT)/01_data.ipynb))
$(eval $(call stage,03_traces,$(OUT)/02_decompose.ipynb))
$(eval $(call stage,04_sft,$(OUT)/03_traces.ipynb))
$(eval $(call stage,05_eval,$(OUT)/04_sft.ipynb))
$(eval $(call stage,06_correlation,$(OUT)/05_eval.ipynb))

data: $(OUT)/01_data.ipynb ## 01: load / generate the three datasets (DATA_DIR=<dir> for real files)
decompose: $(OUT)/02_decompose.ipynb ## 02: rule-based decomposition (label + relevant facts)
traces: $(OUT)/03_traces.ipynb ## 03: vanilla / correct / incorrect (+ ablation) trace sets
sft: $(OUT)/04_sft.ipynb ## 04: fine-tune one student per dataset, model, condition, seed
eval: $(OUT)/05_eval.ipynb ## 05: generate on the test splits and score answers and traces
correlation: $(OUT)/06_correlation.ipynb ## 06: statistics, tables and every figure
reproduce: correlation ## run all six stages in order (default profile: quick)
	@echo "Figures in figures/$(PROFILE)/, tables in results/$(PROFILE)/, notebooks in $(OUT)/"

# ------------------------------------------------------------------------------- figures
figures: $(addprefix fig-,$(FIGS)) ## redraw every figure from results/<profile>/items.parquet (one: make fig-<name>)

$(addprefix fig-,$(FIGS)): fig-%: $(OUT)/05_eval.ipynb
	$(PY) -m helpers.figures $* --profile $(PROFILE)

# ------------------------------------------------------------- the original's outputs
# A checkout of the original study's repository (its published prediction files, test CSVs
# and committed confusion matrices), or a commit of it to download where a network exists.
ORIGINAL_DIR    ?=
ORIGINAL_COMMIT ?=
ORIGINAL_URL    := https://github.com/sbhambr1/Trace_Check_QA/archive/$(ORIGINAL_COMMIT).tar.gz

original: | $(ENV_STAMP) ## re-score the original's published outputs (ORIGINAL_DIR=<checkout> or ORIGINAL_COMMIT=<sha>): results/original/, shown in 06
ifneq ($(ORIGINAL_DIR),)
	$(PY) -m helpers.rescore --original-dir $(abspath $(ORIGINAL_DIR)) --out results/original
else ifneq ($(ORIGINAL_COMMIT),)
	mkdir -p data/original
	test -d data/original/Trace_Check_QA-$(ORIGINAL_COMMIT) || \
		curl -fL $(ORIGINAL_URL) | tar -xz -C data/original
	$(PY) -m helpers.rescore --original-dir data/original/Trace_Check_QA-$(ORIGINAL_COMMIT) --out results/original
else
	@echo "make original needs ORIGINAL_DIR=<checkout of https://github.com/sbhambr1/Trace_Check_QA>" >&2
	@echo "  (git clone https://github.com/sbhambr1/Trace_Check_QA), or ORIGINAL_COMMIT=<full sha> to download it" >&2
	@exit 2
endif

# --------------------------------------------------------------------------------- tests
test: $(ENV_STAMP) ## unit tests + a papermill run of all six notebooks on the smoke profile
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

unit: $(ENV_STAMP) ## unit tests only (no notebooks)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m "not notebooks"

smoke: ## run the whole study on the smoke profile (tiny model, seconds per notebook)
	$(MAKE) reproduce PROFILE=smoke

bench: $(ENV_STAMP) ## speed benchmark, fast engine vs the straightforward way: results/bench/bench.{json,md}
	$(PY) benchmarks/bench.py --profile $(PROFILE)

gpu-check: $(ENV_STAMP) ## on a CUDA GPU (<= 8 min, no network): QLoRA train/save/merge, generation engine vs generate, speed: results/gpu_check.json
	$(PY) benchmarks/gpu_check.py

clean: ## remove this profile's generated data, runs, results, figures and executed notebooks
	rm -rf data/$(PROFILE) runs/$(PROFILE) results/$(PROFILE) figures/$(PROFILE) $(OUT)

clean-all: ## also remove the environment and the converted models
	rm -rf data runs results outputs figures/smoke models $(VENV)
