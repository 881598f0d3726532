"""Experiment tracking: the only package that imports mlflow.

- `bench.tracking.uri`: which store to use (a local SQLite file by default -- MLflow 3 has
  no file store), and a fast reachability probe for servers.
- `bench.tracking.store`: `Tracker`, idempotent MLflow writes keyed by tags (one parent run
  per sweep, one nested run per trial, metrics stepped by epoch and never logged twice).
- `bench.tracking.callback`: the Ray Tune callback that drives `Tracker` from the sweep
  driver, survives retries, restores and a tracking server that goes away.
- `bench.tracking.sync`: `bench sync`, which replays a sweep's Tune storage into MLflow.

mlflow (and ray) are imported inside functions, so importing this package costs nothing.
"""
