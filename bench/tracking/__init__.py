"""Experiment tracking: the only package that imports mlflow, and the only one that knows how
runs are laid out in it.

- `bench.tracking.uri`: which store to use (a local SQLite file by default -- MLflow 3 has
  no file store), and a fast check of it: every mistake in a tracking URI (unknown scheme, dead
  server, missing folder, database without its driver) is one `TrackingUnavailable` line.
- `bench.tracking.records`: the run layout -- tag names, run kinds, how a config becomes
  params and how params come back as a typed config -- shared by every writer and the reader.
- `bench.tracking.store`: `Tracker`, idempotent MLflow writes keyed by tags (one parent run
  per sweep, one nested run per trial, metrics stepped by epoch and never logged twice).
- `bench.tracking.callback`: the Ray Tune callback that drives `Tracker` from the sweep
  driver, survives retries, restores and a tracking server that goes away.
- `bench.tracking.sync`: `bench sync`, which replays a sweep's Tune storage into MLflow.
- `bench.tracking.reader`: a sweep read back (`find_sweep`, `read_trials`): typed trial
  records and their downloaded score files, for `bench report`.
- `bench.tracking.datasets`: a trial's splits as MLflow dataset inputs (the UI's Dataset column).
- `bench.tracking.leaderboard`: the leaderboard run a report writes, its rows as entry runs
  (`records.LEADERBOARD_FILTER` shows the newest), and the newest of each.

mlflow (and ray) are imported inside functions, so importing this package costs nothing.
"""
