# The README's two commands are `make repro` and `make test`; everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
UV_STAMP := $(VENV)/.uv-$(UV_VERSION)
# Stages run `python`: the virtualenv's must come first.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help install repro test docs lint lock params rollback params-reset push pull data insurance-data notebooks bench tune-worker bench-tune bench-scale serve bench-serve bench-ceiling s3 s3-stop s3-status bench-storage clean-venv

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

# uv itself comes from PyPI, pinned, into the virtualenv (a fresh machine needs only Python 3.11);
# the stamp is named after the version, so changing UV_VERSION installs that one.
$(UV_STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	@touch $@

# Every extra (serve, pipeline, dev) exactly as locked, and the project in editable mode.
# --locked: a uv.lock that no longer matches pyproject.toml stops here instead of being re-resolved.
$(STAMP): $(UV_STAMP) uv.lock pyproject.toml
	@$(BIN)/uv lock --check \
		|| { echo "make: uv.lock is out of date with pyproject.toml: run 'make lock', then commit uv.lock" >&2; exit 1; }
	$(BIN)/uv sync --locked --all-extras --compile-bytecode
	@touch $(STAMP)

install: $(STAMP)  ## create .venv from uv.lock, every extra (idempotent)

repro: install  ## install, then run the whole DVC pipeline on params.yaml
	$(BIN)/dvc repro

# Coverage (pyproject.toml's [tool.coverage.*]) of every process the tests start, each writing
# .coverage.* beside COVERAGE_FILE (absolute: stages and services run in temporary copies).
# pytest-cov measures the xdist workers and combines; `coverage html` and `coverage report` fold
# in the files of processes that ended after it (worker pools stopped at exit), write
# reports/coverage/index.html, print the summary and fail below fail_under (docs/coverage.md).
test: export COVERAGE_FILE := $(CURDIR)/.coverage
test: install  ## install, then run the test suite with coverage (and build the docs site, strict)
	$(BIN)/ruff check src serve tests bench scripts devtools
	$(MKDOCS) build --strict --site-dir site
	rm -f .coverage .coverage.*
	$(BIN)/python -m pytest -n 2 --dist loadgroup --cov --cov-report= --cov-fail-under=0
	$(BIN)/coverage html -q
	$(BIN)/coverage report

# The documentation site (mkdocs.yml, docs/): built without internet (no web fonts, local search).
# NO_MKDOCS_2_WARNING=1: Material for MkDocs prints a banner about its end of life on every run.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
DOCS_ADDR ?= 127.0.0.1:8080

docs: install  ## serve the documentation site on http://127.0.0.1:8080 while you edit (DOCS_ADDR=host:port)
	$(MKDOCS) serve --dev-addr $(DOCS_ADDR)

params: install  ## recompose params.yaml from conf/ (what `dvc exp run` does), e.g. make params O="dataset=insurance"
	$(BIN)/python -m medcast.config $(O)

# The raw table may live anywhere, best outside the repository (patient data never goes to git):
# it is copied into data/raw/NAME/, which DVC tracks and git ignores. A copy inside the repository
# that git would commit is named.
data: install  ## copy a table (kept anywhere, best outside the repo) into data/raw/NAME/, DVC-tracked: make data NAME=trial FILE=path/to/table.csv
	@test -n "$(NAME)" -a -n "$(FILE)" || { echo "usage: make data NAME=<dataset name> FILE=<path to a .csv/.tsv/.parquet table, best outside the repository>"; exit 2; }
	@test -f "$(FILE)" || { echo "make data: $(FILE): no such file"; exit 2; }
	@git check-ignore -q "$(FILE)" 2>/dev/null; test $$? -ne 1 || echo "make data: warning: $(FILE) is inside the repository and git does not ignore it: move it out of the repository (or into exports/, which git ignores) before any \`git add\`"
	@dest="data/raw/$(NAME)/$$(basename "$(FILE)")"; mkdir -p "data/raw/$(NAME)" && \
	  cp "$(FILE)" "$$dest" && $(BIN)/dvc add -q "$$dest" && \
	  echo "$$dest tracked by DVC (git ignores the table itself): git add data/raw/$(NAME)   # its .dvc pointer" && \
	  $(BIN)/python -m medcast.datasets check-source "$(NAME)" "$$dest"

insurance-data: install  ## the insurance table: make insurance-data CSV=path/to/insurance.csv (= make data NAME=insurance)
	@test -n "$(CSV)" || { echo "usage: make insurance-data CSV=path/to/insurance.csv"; exit 2; }
	$(MAKE) --no-print-directory data NAME=insurance FILE="$(CSV)"

rollback:  ## after a failed `dvc exp run`/`dvc repro`: params.yaml, dvc.lock and DVC outputs as git HEAD has them
	$(BIN)/python -m medcast.workspace rollback

params-reset: rollback  ## the former name of rollback

push: install  ## dvc push, once the remote's configuration and credentials check out (ARGS="-j 4")
	$(BIN)/python -m medcast.remote push $(ARGS)

pull: install  ## dvc pull, once the remote's configuration and credentials check out (ARGS="train")
	$(BIN)/python -m medcast.remote pull $(ARGS)

notebooks: install  ## execute notebooks/*.ipynb top to bottom → reports/notebooks/ (after make repro)
	$(BIN)/python -m medcast.notebooks

tune-worker: install  ## join the running tune stage's study (tune.storage on PostgreSQL) from this machine
	$(BIN)/python -m medcast.tune --worker

bench-tune: install  ## trials/s of distributed tuning with 1, 2, 3 processes (PostgreSQL on 127.0.0.1)
	$(BIN)/python -m bench.tune_workers $(ARGS)

bench-scale: install  ## stage seconds/RSS and growth exponents on generated 1×/10×/100× tables (ARGS="--scales 1,10 --compare n_jobs")
	$(BIN)/python -m bench.scale $(ARGS)

bench: install  ## quality and speed figures of the default protocol (needs data/raw/insurance/insurance.csv)
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

bench-ceiling: install  ## make serve vs its own GET /health/live and mlflow models serve (wrk; after make repro)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python -m bench.serve_ceiling

lint: install  ## ruff
	$(BIN)/ruff check src serve tests bench scripts devtools

lock: $(UV_STAMP)  ## re-resolve uv.lock after editing pyproject.toml (keeps every other pin)
	$(BIN)/uv lock

clean-venv:  ## remove the virtualenv
	rm -rf $(VENV)
