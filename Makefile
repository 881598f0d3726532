# Two commands on a fresh clone (see README): `make run` and `make test`.
# Everything installs into a local virtualenv; nothing is installed by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test test-all clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned resolve would pull the CUDA build and its gigabytes.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# The main job: synthetic data, a sweep of every cell x RGB/depth x 2 seeds on a local Ray,
# tracked in ./mlflow.db, then a leaderboard.
run: setup
	$(VENV)/bin/bench run

# The default suite (slow and GPU tests deselected; GPU tests also skip themselves without CUDA).
test: setup
	$(PY) -m pytest -m "not slow and not gpu" --timeout=900 $(PYTEST_ARGS)

test-all: setup
	sh dashboards/install_chromium.sh
	$(PY) -m pytest --timeout=1800 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
