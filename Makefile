# `make demo` and `make test` do all set-up on a fresh machine with only Python:
# each creates .venv if missing and installs the project with what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install test test-slow lint demo test-interop clean paper-digits

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" tests

# The minutes-long checks (marked slow); CI runs them as its second step. One process per
# file: TensorFlow keeps what a deep export or a journey allocated, and several files' worth in
# one process outgrows a 24 GiB machine. Every file runs; the step fails if any did.
SLOW_TEST_FILES = $(shell grep -l 'pytest.mark.slow' tests/test_*.py)
test-slow: $(STAMP)
	failed=""; for file in $(SLOW_TEST_FILES); do \
		$(BIN)/python -m pytest -m slow $$file; rc=$$?; \
		test $$rc -eq 0 -o $$rc -eq 5 || failed="$$failed $$file"; \
	done; test -z "$$failed" || { echo "slow checks failed in:$$failed"; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(STAMP)
	$(BIN)/python train/cifar10.py --demo

# Figs. 6 and 7 and Table 6 of section 4.2 in miniature (PAPER.md): plain and residual nets of
# 20 and 56 layers trained on the bundled digits with one recipe (`make demo`'s: section 4.2's
# shrunk to 450 iterations of batch 64), then compared. Rerunning resumes finished runs. Another
# recipe: e.g. PAPER_DIGITS_EXTRA=--error_warmup PAPER_DIGITS_DIR=runs/warmup PAPER_DIGITS_FIGURES=figures/warmup
PAPER_DIGITS_DIR := runs/paper-digits
PAPER_DIGITS_FIGURES := figures/digits
PAPER_DIGITS_MODELS := plain20 resnet20 plain56 resnet56
PAPER_DIGITS_RECIPE := --dataset digits --batch_size 64 --train_steps 450 --lr_boundaries 300,400 \
	--checkpoint_interval 150 --eval_interval 25 --log_interval 15 --seed 0 --deterministic $(PAPER_DIGITS_EXTRA)
PAPER_DIGITS_RUNS := $(foreach m,$(PAPER_DIGITS_MODELS),$(PAPER_DIGITS_DIR)/$(m))
comma := ,
space := $(subst ,, )

paper-digits: $(STAMP)
	for m in $(PAPER_DIGITS_MODELS); do \
		$(BIN)/python train/cifar10.py $(PAPER_DIGITS_RECIPE) --model $$m --model_dir $(PAPER_DIGITS_DIR)/$$m || exit 1; \
	done
	mkdir -p $(dir $(PAPER_DIGITS_FIGURES))
	$(BIN)/python train/compare.py --runs $(subst $(space),$(comma),$(PAPER_DIGITS_RUNS)) \
		--output $(PAPER_DIGITS_FIGURES)_fig6.png --table $(PAPER_DIGITS_FIGURES)_table6.md
	$(BIN)/python train/responses.py $(addprefix --model_dir ,$(PAPER_DIGITS_RUNS)) \
		--output $(PAPER_DIGITS_FIGURES)_fig7.png --table $(PAPER_DIGITS_FIGURES)_fig7.md --log_scale

# torchvision comparisons (tests/test_convert.py) in their own environment, so the main one
# stays free of torch. The pins are builds that run on the CPU: on x86_64 PyPI's default
# (CUDA-capable) wheels, on aarch64 its CPU wheels. Override with INTEROP_TORCH=...
INTEROP := .venv-interop
INTEROP_STAMP := $(INTEROP)/.installed-interop
INTEROP_TORCH ?= $(if $(filter aarch64 arm64,$(shell uname -m)),torch==2.9.1 torchvision==0.24.1,torch==2.14.1 torchvision==0.29.1)

$(INTEROP_STAMP): pyproject.toml
	test -x $(INTEROP)/bin/python || $(PYTHON) -m venv $(INTEROP)
	$(INTEROP)/bin/python -m pip install -q -e '.[dev,interop]' $(INTEROP_TORCH)
	touch $(INTEROP_STAMP)

test-interop: $(INTEROP_STAMP)
	$(INTEROP)/bin/python -m pytest tests/test_convert.py

clean:
	rm -rf $(VENV) $(INTEROP) runs build *.egg-info
