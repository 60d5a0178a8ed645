# `make demo` and `make test` do all set-up on a fresh machine with only Python:
# each creates .venv if missing and installs the project with what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install test test-slow lint demo test-interop clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" tests

# The minutes-long checks (marked slow); CI runs them as its second step.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow tests; rc=$$?; test $$rc -eq 0 -o $$rc -eq 5

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(STAMP)
	$(BIN)/python train/cifar10.py --demo

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
