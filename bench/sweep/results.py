"""A sweep's results as Ray Tune left them on disk -- the source of truth for everything else.

Layout of a sweep folder (``<storage>/<name>/``)::

    sweep.json            id, name, stages, units and their state (written by the driver)
    sweep.yaml            the sweep file as it was run
    leaderboard.csv       written at the end
    <unit>/               one Tune experiment per stage ("pretrain", "finetune"), or per
                          stage and (cell, modality, seed) with Optuna ("pretrain-a-rgb-s0")
      experiment_state-*.json, tuner.pkl, ...           Tune's own
      <trial name>/                                     e.g. pretrain-a-rgb-s0-3f2a1_00004
        params.json, result.json (one line per report), node.json (where it ran)
        checkpoint_000000/ ... state.pt, val_scores.parquet, metrics.json

MLflow mirrors this (`bench.tracking`); when the two disagree -- a tracking server was down
-- `bench sync` replays this into MLflow. Reading needs no running Ray. The folder is a local
path or a URI (``s3://bucket/runs/<name>``): every function here takes either, through
`bench.storage.location`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.storage import RemotePath, location, write_text_atomic
from bench.train.layout import STATE_FILE

SweepPath = Path | RemotePath

SWEEP_JSON = "sweep.json"
SWEEP_YAML = "sweep.yaml"
_CKPT_RE = re.compile(r"^checkpoint_(\d+)$")


@dataclass
class TrialRecord:
    unit: str
    dir: SweepPath
    name: str
    trial_id: str
    config: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    status: str = "UNKNOWN"     # Tune's: TERMINATED, ERROR, RUNNING, PENDING, PAUSED; or UNKNOWN

    @property
    def by_epoch(self) -> dict[int, dict[str, Any]]:
        """The latest result of each epoch (an epoch re-run after a restore replaces the first)."""
        out: dict[int, dict[str, Any]] = {}
        for r in self.results:
            if r.get("epoch") is not None:
                out[int(r["epoch"])] = r
        return dict(sorted(out.items()))

    @property
    def final(self) -> dict[str, Any] | None:
        e = self.by_epoch
        return e[max(e)] if e else None

    @property
    def last_epoch(self) -> int:
        return max(self.by_epoch, default=0)

    @property
    def combo(self) -> tuple[str, str, int]:
        return (str(self.config.get("cell")), str(self.config.get("modality")), int(self.config.get("seed", 0)))

    @property
    def stage(self) -> str:
        return str(self.config.get("stage"))

    @property
    def finished(self) -> bool:
        return self.status == "TERMINATED"

    @property
    def checkpoint(self) -> SweepPath | None:
        """The newest checkpoint holding a model (Tune's ``checkpoint_NNNNNN``, or for DDP
        trials the ``checkpoint_path`` Ray Train reported)."""
        found = []
        for p in self.dir.iterdir() if self.dir.is_dir() else []:
            m = _CKPT_RE.match(p.name)
            if m and (p / STATE_FILE).is_file():
                found.append((int(m.group(1)), p))
        if found:
            return max(found)[1]
        for r in reversed(self.results):
            if r.get("checkpoint_path"):
                # Ray Train reports the path on the storage filesystem (for S3, bucket/key)
                try:
                    ck = (self.dir.at_fs_path(str(r["checkpoint_path"])) if isinstance(self.dir, RemotePath)
                          else Path(r["checkpoint_path"]))
                except ValueError:        # outside this storage (the sweep was copied elsewhere)
                    continue
                if ck.is_dir():
                    return ck
        return None

    def best(self, metric: str = "val_top1") -> float:
        vals = [r[metric] for r in self.by_epoch.values() if _num(r.get(metric))]
        return max(vals) if vals else math.nan


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def read_results(path: SweepPath) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            r = json.loads(line)
        except ValueError:      # a line cut short by a kill
            continue
        r.pop("config", None)
        out.append(r)
    return out


def _statuses(unit_dir: SweepPath) -> dict[str, str]:
    """trial_id -> Tune status, from the experiment state (empty when there is none yet)."""
    if not any(unit_dir.glob("experiment_state-*.json")):
        return {}
    try:
        from ray.tune import ExperimentAnalysis  # heavy

        analysis = ExperimentAnalysis(str(unit_dir.resolve()))      # a URI too: Ray's own filesystem
        return {t.trial_id: str(t.status) for t in analysis.trials}
    except Exception:  # noqa: BLE001 -- a half-written state: statuses stay UNKNOWN
        return {}


def read_unit(unit_dir: str | SweepPath) -> list[TrialRecord]:
    unit_dir = location(unit_dir)
    statuses = _statuses(unit_dir)
    out: list[TrialRecord] = []
    for d in sorted(p for p in unit_dir.iterdir() if p.is_dir() and (p / "params.json").is_file()):
        try:
            config = json.loads((d / "params.json").read_text())
        except ValueError:
            continue
        results = read_results(d / "result.json")
        trial_id = next((str(r["trial_id"]) for r in results if r.get("trial_id")), "")
        if not trial_id:
            m = re.search(r"-([0-9a-f]{5}_\d{5}|[0-9a-f]{8})$", d.name)
            trial_id = m.group(1) if m else d.name
        if statuses and trial_id not in statuses:
            continue                # not part of this experiment (left by an abandoned start)
        out.append(TrialRecord(unit=unit_dir.name, dir=d, name=d.name, trial_id=trial_id,
                               config=config, results=results,
                               status=statuses.get(trial_id, "UNKNOWN")))
    return out


def read_meta(sweep_dir: str | SweepPath) -> dict[str, Any]:
    f = location(sweep_dir) / SWEEP_JSON
    try:
        return json.loads(f.read_text())
    except (FileNotFoundError, NotADirectoryError):      # an unreachable store says so itself
        raise FileNotFoundError(f"{f}: not a sweep folder (no {SWEEP_JSON})") from None


def write_meta(sweep_dir: str | SweepPath, meta: dict[str, Any]) -> None:
    write_text_atomic(location(sweep_dir) / SWEEP_JSON, json.dumps(meta, indent=1, sort_keys=True) + "\n")


def unit_dirs(sweep_dir: str | SweepPath, meta: dict[str, Any] | None = None) -> list[SweepPath]:
    """The sweep's Tune experiments, in the order they ran."""
    sweep_dir = location(sweep_dir)
    meta = meta if meta is not None else read_meta(sweep_dir)
    names = list(meta.get("units", {}))
    return [sweep_dir / n for n in names if (sweep_dir / n).is_dir()]


def read_sweep(sweep_dir: str | SweepPath) -> tuple[dict[str, Any], list[TrialRecord]]:
    meta = read_meta(sweep_dir)
    trials: list[TrialRecord] = []
    for u in unit_dirs(sweep_dir, meta):
        trials.extend(read_unit(u))
    return meta, trials


def final_checkpoints(trials: list[TrialRecord], *, stage: str = "pretrain"
                      ) -> dict[tuple[str, str, int], tuple[SweepPath, float]]:
    """(cell, modality, seed) -> (final checkpoint, its val_top1) of the ``stage`` trials; when a
    search ran several trials per combination, the one with the best final val_top1."""
    out: dict[tuple[str, str, int], tuple[Path, float]] = {}
    for t in trials:
        if t.stage != stage:
            continue
        ck = t.checkpoint
        if ck is None:
            continue
        score = (t.final or {}).get("val_top1")
        score = float(score) if _num(score) else -1.0
        if t.combo not in out or score > out[t.combo][1]:
            out[t.combo] = (ck, score)
    return out


def trial_span(t: TrialRecord) -> tuple[float, float] | None:
    """(first start, last report) of a trial in seconds since the epoch: its first line in
    ``node.json`` and its last result's timestamp; None when either is missing."""
    try:
        first = json.loads((t.dir / "node.json").read_text().splitlines()[0])["time"]
    except (OSError, ValueError, IndexError, KeyError):
        return None
    stamps = [r["timestamp"] for r in t.results if isinstance(r.get("timestamp"), (int, float))]
    return (float(first), float(max(stamps))) if stamps else None


def stage_barrier(trials: list[TrialRecord], *, slots: int) -> dict[str, float] | None:
    """What waiting for the whole pre-train stage costs a two-stage sweep: the trial slots left
    idle between the first finished pre-train trial and the first fine-tune start (the slots
    the pre-train stage's last trials do not use), beside the sweep's slot-time
    (``slots`` x its span). None without both stages."""
    spans = {t.name: trial_span(t) for t in trials}
    pre = [spans[t.name] for t in trials if t.stage == "pretrain" and spans[t.name]]
    fine = [spans[t.name] for t in trials if t.stage == "finetune" and spans[t.name]]
    if not pre or not fine:
        return None
    lo, hi = min(end for _, end in pre), min(start for start, _ in fine)
    if hi <= lo:
        idle = 0.0
    else:
        busy = sum(max(0.0, min(end, hi) - max(start, lo)) for start, end in pre)
        idle = max(0.0, slots * (hi - lo) - busy)
    span = max(end for _, end in pre + fine) - min(start for start, _ in pre + fine)
    total = slots * span
    return {"idle_slot_s": idle, "sweep_slot_s": total, "fraction": idle / total if total else 0.0,
            "barrier_s": max(0.0, hi - lo)}
