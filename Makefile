# The README's two commands are `make repro` and `make test`; everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
# Stages run `python`: the virtualenv's must come first.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help install repro test lint lock params insurance-data notebooks bench tune-worker bench-tune serve bench-serve s3 s3-stop s3-status bench-storage clean-venv

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --compile-bytecode --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)  ## create .venv from the lock file (idempotent)

repro: install  ## install, then run the whole DVC pipeline on params.yaml
	$(BIN)/dvc repro

test: install  ## install, then run the test suite
	$(BIN)/ruff check src serve tests bench scripts devtools
	$(BIN)/python -m pytest -n 2 --dist loadgroup

params: install  ## recompose params.yaml from conf/ (what `dvc exp run` does), e.g. make params O="dataset=insurance"
	$(BIN)/python -m medcast.config $(O)

insurance-data: install  ## copy the insurance table into data/raw and track it: make insurance-data CSV=path/to/insurance.csv
	@test -n "$(CSV)" || { echo "usage: make insurance-data CSV=path/to/insurance.csv"; exit 2; }
	cp "$(CSV)" data/raw/insurance.csv
	$(BIN)/dvc add data/raw/insurance.csv

notebooks: install  ## execute notebooks/*.ipynb top to bottom → reports/notebooks/ (after make repro)
	$(BIN)/python -m medcast.notebooks

tune-worker: install  ## join the running tune stage's study (tune.storage on PostgreSQL) from this machine
	$(BIN)/python -m medcast.tune --worker

bench-tune: install  ## trials/s of distributed tuning with 1, 2, 3 processes (PostgreSQL on 127.0.0.1)
	$(BIN)/python -m bench.tune_workers $(ARGS)

bench: install  ## quality and speed figures of the default protocol (needs data/raw/insurance.csv)
	$(BIN)/python -m bench.quality

s3: install  ## start the local S3 server (SeaweedFS in .s3/), create the bucket, point DVC at it
	$(BIN)/python -m scripts.s3 start

s3-stop:  ## stop the local S3 server by its pid (data stays in .s3/data)
	$(BIN)/python -m scripts.s3 stop

s3-status:  ## is the local S3 server running?
	$(BIN)/python -m scripts.s3 status

bench-storage: install  ## push/pull MB/s and fresh-clone restore time against a fresh local S3 (ARGS="--dummy-mb 64")
	$(BIN)/python -m bench.storage $(ARGS)

serve: install  ## run the prediction service on 127.0.0.1:8000 (MEDCAST_* settings: python -m serve --help)
	$(BIN)/python -m serve

bench-serve: install  ## service throughput/latency/cold start over loopback; asserts every 2xx is logged
	$(BIN)/python -m bench.serve

lint: install  ## ruff
	$(BIN)/ruff check src serve tests bench scripts devtools

lock:  ## re-resolve requirements.lock from pyproject.toml
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean-venv:  ## remove the virtualenv
	rm -rf $(VENV)
