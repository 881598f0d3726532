"""Sweeps: a YAML file -> Ray Tune experiments over cells x modalities x seeds -> MLflow.

- `bench.sweep.spec`: the sweep file schema (validated into frozen dataclasses at load time).
- `bench.sweep.run`: the driver (datasets, Ray, one Tune experiment per stage, resume).
- `bench.sweep.trainable`: the function each trial runs (wraps `bench.train.trainable.trial_fn`).
- `bench.sweep.results`: reading a sweep's Tune storage (the source of truth).
- `bench.sweep.leaderboard`, `bench.sweep.progress`: what the command prints.
- `bench.sweep.cli`: ``bench sweep FILE``, ``bench run``, ``bench sync``.

``bench run`` with no arguments runs ``bench/configs/default.yaml``: it generates a synthetic
IsoGD-layout dataset in ``./data/synthetic-isogd`` if missing, writes Tune results under
``./runs/default-<timestamp>/`` and MLflow records to ``./mlflow.db`` (artifacts in
``./mlruns/``), all relative to the working directory.
"""
