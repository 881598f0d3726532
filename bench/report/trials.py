"""A sweep's trials as one polars table, from MLflow or, when the store is gone, from Ray Tune.

Both sources give the same columns (`TRIAL_COLUMNS`), so everything downstream -- seeds
aggregated, modalities fused, cells compared -- is computed once, whatever the records came
from. One row per trial: who it is (sweep, dataset, stage, cell, modality, seed), how it
ended (status, last epoch of how many), its final-epoch metrics, and where its final
per-sample validation scores are on local disk (``scores_path``; "" when it has none).

Which trial counts (`select_trials`): finished trials only; when a hyperparameter search ran
several trials for one (dataset, stage, cell, modality, seed), the one with the best
*final-epoch* val_top1 among those that ran every epoch (a trial the scheduler stopped early
only when none did) -- the same rule as the sweep's own leaderboard
(`bench.sweep.leaderboard`). Every searchable key (`SEARCHED`) is a column, so the trials
table shows each trial's configuration and each row says why it was not selected. The final epoch, not the best one: picking epochs on the
validation split would select on this benchmark's test data.

MLflow records are read, and typed, by `bench.tracking.reader` (`bench.report.store` turns them
into rows); this module reads the Tune storage through `bench.sweep.results`.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Iterable, Mapping

import polars as pl

from bench.storage import RemotePath, location
from bench.sweep.results import read_sweep

# name -> polars dtype: the contract between the loaders and the report.
TRIAL_COLUMNS: dict[str, Any] = {
    "sweep": pl.String, "run_id": pl.String, "trial_name": pl.String, "unit": pl.String,
    "dataset": pl.String, "dataset_format": pl.String, "root": pl.String, "synthetic": pl.Boolean,
    "split": pl.String, "stage": pl.String, "preset": pl.String, "cell": pl.String,
    "modality": pl.String, "seed": pl.Int64, "status": pl.String, "finished": pl.Boolean,
    "epochs": pl.Int64, "last_epoch": pl.Int64,
    "val_top1": pl.Float64, "val_top5": pl.Float64, "val_loss": pl.Float64,
    "train_top1": pl.Float64, "train_loss": pl.Float64, "best_val_top1": pl.Float64,
    "params": pl.Float64, "macs_per_clip": pl.Float64, "train_clips_per_s": pl.Float64,
    "num_val_samples": pl.Float64, "num_skipped": pl.Float64,
    "lr": pl.Float64, "batch_size": pl.Int64, "weight_decay": pl.Float64, "momentum": pl.Float64,
    "lr_end": pl.Float64, "lr_power": pl.Float64, "stopped_early": pl.Boolean,
    "num_classes": pl.Int64, "scores_path": pl.String,
}
# The keys a search may vary (bench.sweep.spec.SEARCHABLE), each a column of the trials table.
SEARCHED = ("lr", "weight_decay", "batch_size", "momentum", "lr_end", "lr_power")
KEY = ("dataset", "stage", "cell", "modality", "seed")
FINISHED = ("FINISHED", "TERMINATED")
_FINAL_METRICS = ("val_top1", "val_top5", "val_loss", "train_top1", "train_loss", "params",
                  "macs_per_clip", "num_val_samples", "num_skipped")


def empty_trials() -> pl.DataFrame:
    return pl.DataFrame(schema=TRIAL_COLUMNS)


def trials_frame(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows (dicts with any subset of `TRIAL_COLUMNS`) -> the typed table, missing -> null."""
    rows = [{k: r.get(k) for k in TRIAL_COLUMNS} for r in rows]
    if not rows:
        return empty_trials()
    return pl.DataFrame(rows, schema=TRIAL_COLUMNS, strict=False)


def _num(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _int(v: Any) -> int | None:
    f = _num(v)
    return None if math.isnan(f) else int(f)


def _bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if v is None:
        return None
    s = str(v).strip().lower()
    return True if s in ("true", "1", "yes") else False if s in ("false", "0", "no") else None


def _median(values: Iterable[Any]) -> float:
    vals = [f for f in (_num(v) for v in values) if not math.isnan(f)]
    return float(statistics.median(vals)) if vals else math.nan


def _is_synthetic(root: str | None) -> bool | None:
    if not root:
        return None
    return (Path(root) / "SYNTHETIC.json").is_file()


def _first(*values: Any) -> Any:
    """The first value that is there: None and "" are not."""
    return next((v for v in values if v is not None and v != ""), None)


def row_from_record(*, config: Mapping[str, Any], tags: Mapping[str, Any], final: Mapping[str, Any],
                    history: Mapping[str, list[Any]], status: str, run_id: str = "",
                    trial_name: str = "", scores_path: str | Path | None = None,
                    num_classes: int | None = None) -> dict[str, Any]:
    """One trial row from whichever source: its config (TrainConfig fields + ``sweep`` dict),
    tags (MLflow's; may be empty), final-epoch metrics and per-epoch ``history``.

    Values come typed: from MLflow through `bench.tracking.reader` (params by TrainConfig's
    field types, None for what was missing; tags likewise), from Tune as its JSON holds them.
    A tag, when the run has it, wins over the config value it was copied from."""
    sweep = config.get("sweep") if isinstance(config.get("sweep"), Mapping) else {}
    root = _first(config.get("root"))
    synthetic = _bool(tags.get("synthetic"))
    if synthetic is None:
        synthetic = _is_synthetic(root)
    epochs = _int(config.get("epochs"))
    last = _int(final.get("epoch"))
    st = str(status or "UNKNOWN").upper()
    finished = st in FINISHED or (st == "UNKNOWN" and epochs is not None and last is not None and last >= epochs)
    row: dict[str, Any] = {
        "sweep": _first(tags.get("sweep"), sweep.get("name")),
        "run_id": run_id,
        "trial_name": trial_name or _first(tags.get("trial_name")) or "",
        "unit": _first(tags.get("unit"), sweep.get("unit")),
        "dataset": _first(tags.get("dataset"), sweep.get("dataset"), config.get("dataset")),
        "dataset_format": _first(tags.get("dataset_format"), config.get("dataset")),
        "root": root,
        "synthetic": synthetic,
        "split": _first(config.get("val_split")) or "valid",
        "stage": _first(tags.get("stage"), config.get("stage")),
        "preset": _first(tags.get("preset"), config.get("preset")),
        "cell": _first(tags.get("cell"), config.get("cell")),
        "modality": _first(tags.get("modality"), config.get("modality")),
        "seed": _int(_first(tags.get("seed"), config.get("seed"))),
        "status": st,
        "finished": bool(finished),
        "epochs": epochs,
        "last_epoch": last,
        "best_val_top1": max((f for f in map(_num, history.get("val_top1", [])) if not math.isnan(f)),
                             default=math.nan),
        "train_clips_per_s": _median(history.get("train_clips_per_s", [])),
        "lr": _num(config.get("lr")),
        "batch_size": _int(config.get("batch_size")),
        "weight_decay": _num(config.get("weight_decay")),
        "momentum": _num(config.get("momentum")),
        "lr_end": _num(config.get("lr_end")),
        "lr_power": _num(config.get("lr_power")),
        "stopped_early": bool(finished and epochs is not None and last is not None and last < epochs),
        "num_classes": num_classes if num_classes is not None else _int(config.get("num_classes")),
        "scores_path": str(scores_path) if scores_path else "",
    }
    for k in _FINAL_METRICS:
        row[k] = _num(final.get(k))
    return row


def scores_num_classes(path: str | Path | None) -> int | None:
    """Class count from a score table's ``probs`` width (when the config left it to the data)."""
    if not path:
        return None
    import pyarrow.parquet as pq  # heavy

    t = pq.read_table(path, columns=["probs"])
    if t.num_rows == 0:
        return None
    return len(t.column("probs")[0].as_py())


def load_trials_tune(sweep_dir: str | Path | RemotePath, *, scores_dir: str | Path | None = None
                     ) -> tuple[pl.DataFrame, dict[str, Any]]:
    """``(trials, sweep meta)`` from a sweep folder of Ray Tune storage (``<storage>/<name>``, a
    folder or a URI).

    Uses `bench.sweep.results.read_sweep` (the sweep's own reader); a trial's scores are the
    ``val_scores.parquet`` of its newest checkpoint, i.e. of its last epoch. From a bucket, each
    score file is copied into ``scores_dir`` (the caller's temporary folder; required then)."""
    sweep_dir = location(sweep_dir)
    if isinstance(sweep_dir, RemotePath) and scores_dir is None:
        raise ValueError(f"{sweep_dir}: reading score files from object storage needs a local scores_dir")
    meta, records = read_sweep(sweep_dir)
    rows = []
    for t in records:
        by_epoch = t.by_epoch
        final = t.final or {}
        history: dict[str, list[Any]] = {}
        for r in by_epoch.values():
            for k, v in r.items():
                history.setdefault(k, []).append(v)
        ck = t.checkpoint
        scores = ck / "val_scores.parquet" if ck is not None and (ck / "val_scores.parquet").is_file() else None
        if isinstance(scores, RemotePath):
            scores = scores.download(Path(scores_dir) / f"{t.unit}-{t.name}.parquet")
        cfg = dict(t.config)
        cfg.setdefault("sweep", {}).setdefault("name", meta.get("name"))
        rows.append(row_from_record(config=cfg, tags={}, final=final, history=history, status=t.status,
                                    trial_name=t.name, scores_path=scores,
                                    num_classes=_int(cfg.get("num_classes")) or scores_num_classes(scores)))
    return trials_frame(rows), meta


def select_trials(trials: pl.DataFrame) -> pl.DataFrame:
    """``trials`` plus ``selected`` (the one trial per `KEY` that counts), ``n_candidates`` (its
    eligible trials) and ``reason`` (why a row is not selected; null when it is).

    Eligible: finished with a final val_top1. Among several (a hyperparameter search), the
    best final val_top1 of the trials that ran every epoch wins (those stopped early compete
    only when no trial of that seed ran to the end); ties go to the first trial name."""
    reason = (pl.when(~pl.col("finished")).then(pl.lit("not finished (status ") + pl.col("status") + pl.lit(")"))
              .when(pl.col("val_top1").is_null() | pl.col("val_top1").is_nan()).then(pl.lit("no final val_top1"))
              .otherwise(pl.lit(None, dtype=pl.String)))
    t = trials.with_row_index("_row").with_columns(reason.alias("reason"))
    t = t.with_columns(pl.col("stopped_early").fill_null(False))
    eligible = (t.filter(pl.col("reason").is_null())
                .sort(["stopped_early", "val_top1", "trial_name"], descending=[False, True, False])
                .with_columns(pl.int_range(pl.len()).over(list(KEY)).alias("_rank"),
                              pl.len().over(list(KEY)).cast(pl.Int64).alias("n_candidates"))
                .select("_row", "_rank", "n_candidates"))
    out = t.join(eligible, on="_row", how="left").with_columns(
        (pl.col("_rank") == 0).fill_null(False).alias("selected"))
    winner = (out.filter(pl.col("selected"))
              .select(*KEY, pl.col("trial_name").alias("_winner"), pl.col("val_top1").alias("_winner_top1"),
                      pl.col("stopped_early").alias("_winner_stopped")))
    out = out.join(winner, on=list(KEY), how="left", nulls_equal=True)
    beaten = (pl.lit("another configuration of this seed's search was selected: ") + pl.col("_winner")
              + pl.lit(" (final val_top1 ") + (pl.col("_winner_top1") * 100).round(2).cast(pl.String)
              + pl.lit("% vs ") + (pl.col("val_top1") * 100).round(2).cast(pl.String) + pl.lit("%)"))
    stopped = (pl.lit("stopped early by the scheduler at epoch ") + pl.col("last_epoch").cast(pl.String)
               + pl.lit(" of ") + pl.col("epochs").cast(pl.String)
               + pl.lit("; a trial that ran every epoch was selected: ") + pl.col("_winner"))
    out = out.with_columns(
        pl.when(pl.col("reason").is_null() & ~pl.col("selected") & pl.col("stopped_early") & ~pl.col("_winner_stopped"))
        .then(stopped)
        .when(pl.col("reason").is_null() & ~pl.col("selected"))
        .then(beaten)
        .otherwise(pl.col("reason")).alias("reason"))
    return out.sort("_row").drop("_row", "_rank", "_winner", "_winner_top1", "_winner_stopped")
