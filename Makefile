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

# The suite: everything but the GPU tests (about 21 min on 2 cores, setup included; the slow ones -- S3, two-node
# Ray, a killed driver, the MLflow UI in headless Chromium -- are the checks users rely on most).
# Quicker: make test PYTEST_ARGS='-m "not slow and not gpu"'. Chromium and PostgreSQL come from Debian.
test: setup
	sh dashboards/install_chromium.sh || echo "chromium could not be installed: the browser test will skip"
	sh dashboards/install_postgres.sh || echo "postgresql could not be installed: the team-server test will skip"
	$(PY) -m pytest -m "not gpu" --timeout=900 --durations=15 $(PYTEST_ARGS)

# Everything, GPU tests included (they skip themselves where no CUDA device is visible).
test-all: setup
	sh dashboards/install_chromium.sh
	$(PY) -m pytest --timeout=1800 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
