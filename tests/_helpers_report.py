"""Hand-made sweeps with known answers, written in the real record layouts.

Not tests themselves: helpers imported by tests/test_report*.py. Score tables are built so
that each trial's accuracy is exactly what the test says (a chosen set of clips is right), and
written with the training loop's own writer (`bench.train.loop.write_val_scores`); MLflow runs
are written with `bench.tracking` (the sweep's own writer), Tune folders in the layout that
`bench.sweep.results.read_sweep` reads.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TrialSpec:
    cell: str
    modality: str
    seed: int
    correct: np.ndarray                 # (N,) bool: which clips this trial gets right
    labels: np.ndarray                  # (N,) int
    num_classes: int
    stage: str = "pretrain"
    epochs: int = 2
    last_epoch: int | None = None       # < epochs: an unfinished trial
    lr: float = 0.01
    probs: np.ndarray | None = None     # overrides the probabilities built from `correct`
    params: int = 1000
    macs: int = 50_000
    clips_per_s: tuple[float, ...] = (10.0, 12.0)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.cell}-{self.modality}-s{self.seed}-lr{self.lr:g}"


def _h(s: str) -> int:
    """A stable hash (Python's hash() of a str changes between processes)."""
    return zlib.crc32(s.encode())


def sample_ids(n: int) -> list[str]:
    return [f"valid/{i // 100:03d}/M_{i:05d}" for i in range(n)]


def mask(n: int, right: list[int] | np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[np.asarray(right, dtype=int)] = True
    return m


def probs_from(correct: np.ndarray, labels: np.ndarray, num_classes: int, *,
               right_conf: float = 0.7, wrong_conf: float = 0.45, seed: int = 0) -> np.ndarray:
    """Class probabilities whose argmax is the label exactly where ``correct``.

    Right: the label gets ``right_conf``. Wrong: another class gets ``wrong_conf`` and the label
    is the runner-up -- a confident-when-right, hesitant-when-wrong model, as trained ones are."""
    rng = np.random.default_rng(seed)
    n, c = labels.size, num_classes
    p = np.zeros((n, c))
    for i in range(n):
        rest = rng.dirichlet(np.ones(c - 1)) if c > 1 else np.zeros(0)
        others = [k for k in range(c) if k != labels[i]]
        if correct[i]:
            p[i, labels[i]] = right_conf
            p[i, others] = rest * (1 - right_conf)
        else:
            wrong = others[rng.integers(len(others))]
            p[i, wrong] = wrong_conf
            p[i, labels[i]] = (1 - wrong_conf) * 0.6
            left = [k for k in others if k != wrong]
            if left:
                p[i, left] = rng.dirichlet(np.ones(len(left))) * (1 - wrong_conf) * 0.4
            else:
                p[i, labels[i]] = 1 - wrong_conf
    return p.astype(np.float32)


def write_scores(path: Path, spec: TrialSpec) -> Path:
    from bench.train.loop import write_val_scores

    probs = spec.probs if spec.probs is not None else probs_from(
        spec.correct, spec.labels, spec.num_classes, seed=_h(f"{spec.cell}/{spec.modality}/{spec.seed}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_val_scores(path, sample_ids=sample_ids(spec.labels.size), labels=spec.labels,
                     preds=probs.argmax(1), probs=probs)
    return path


def dataset_root(tmp: Path, *, synthetic: bool = True, num_classes: int | None = None) -> Path:
    """A dataset root as the report finds it: ``SYNTHETIC.json`` when synthetic, and
    ``classes.txt`` naming ``num_classes`` classes (the generator's names) when given."""
    from bench.data.synth import class_names

    root = tmp / ("synthetic-isogd" if synthetic else "real-isogd")
    root.mkdir(parents=True, exist_ok=True)
    if synthetic:
        (root / "SYNTHETIC.json").write_text(json.dumps({"synthetic": True}))
    if num_classes is not None:
        (root / "classes.txt").write_text("".join(f"{n}\n" for n in class_names(num_classes)))
    return root


def _num_classes(specs: list[TrialSpec]) -> int | None:
    counts = {s.num_classes for s in specs}
    return counts.pop() if len(counts) == 1 else None


def config_of(spec: TrialSpec, *, root: Path, sweep: str, sweep_id: str) -> dict[str, Any]:
    return {"dataset": "isogd", "root": str(root), "train_split": "train", "val_split": "valid",
            "modality": spec.modality, "cell": spec.cell, "preset": "small", "num_classes": spec.num_classes,
            "epochs": spec.epochs, "batch_size": 4, "lr": spec.lr, "seed": spec.seed, "stage": spec.stage,
            "sweep": {"name": sweep, "id": sweep_id, "unit": spec.stage, "dataset": "isogd"}, **spec.extra}


def results_of(spec: TrialSpec) -> list[dict[str, Any]]:
    last = spec.last_epoch if spec.last_epoch is not None else spec.epochs
    out = []
    for e in range(1, last + 1):
        final = e == last
        out.append({"epoch": e, "val_top1": spec.accuracy if final else spec.accuracy / 2,
                    "val_top5": min(1.0, spec.accuracy + 0.1) if final else 0.5, "val_loss": 1.0,
                    "train_top1": 0.5, "train_loss": 1.0, "lr": spec.lr,
                    "train_clips_per_s": spec.clips_per_s[(e - 1) % len(spec.clips_per_s)],
                    "epoch_time_s": 1.0, "params": spec.params, "macs_per_clip": spec.macs,
                    "num_train_samples": 10, "num_val_samples": int(spec.labels.size), "num_skipped": 0,
                    "trial_id": f"abcde_{_h(spec.name) % 100000:05d}", "training_iteration": e})
    return out


def write_mlflow_sweep(tracking_uri: str, tmp: Path, specs: list[TrialSpec], *, sweep: str = "demo",
                       experiment: str = "gesturebench-test", synthetic: bool = True) -> None:
    """The sweep as `bench.tracking` records it: parent run, nested trial runs with the tags,
    params and run names `bench.tracking.records` makes, per-epoch metrics (step = epoch) with
    their percent twins, the dataset inputs, the final scores.

    Written with one ``log_batch`` per run rather than through `Tracker`'s idempotent
    find-or-create calls, which cost seconds per run on a loaded 2-core machine."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from bench.tracking import records
    from bench.tracking.store import Tracker

    root = dataset_root(tmp, synthetic=synthetic, num_classes=_num_classes(specs))
    sweep_id = f"{sweep}-0001"
    client = MlflowClient(tracking_uri)
    tracker = Tracker(tracking_uri, experiment)
    exp_id = tracker.experiment_id     # the artifact location and experiment kind Tracker gives
    parent = client.create_run(exp_id, run_name=sweep, tags={
        **records.parent_tags(name=sweep, stages=sorted({s.stage for s in specs})), **records.parent_key(sweep_id)})
    pid = parent.info.run_id
    for spec in specs:
        cfg = config_of(spec, root=root, sweep=sweep, sweep_id=sweep_id)
        tags = {**records.trial_tags(cfg, trial_id=spec.name, parent_run_id=pid), **records.trial_key(cfg, spec.name)}
        epochs = results_of(spec)
        run = client.create_run(exp_id, run_name=records.trial_run_name(cfg, epochs[-1]["val_top1"]), tags=tags)
        rid = run.info.run_id
        params = [Param(k, v) for k, v in records.param_strings(records.trial_params(cfg)).items()]
        metrics = []
        for r in epochs:
            values = {k: float(v) for k, v in r.items() if k not in ("trial_id", "training_iteration")}
            values.update(records.pct_metrics(values))
            metrics += [Metric(k, v, 0, int(r["epoch"])) for k, v in values.items()]
        client.log_batch(rid, metrics=metrics, params=params, tags=[])
        tracker.log_datasets(rid, cfg)
        unfinished = spec.last_epoch is not None and spec.last_epoch < spec.epochs
        if not unfinished:
            client.log_artifact(rid, str(write_scores(tmp / "scores" / spec.name / "val_scores.parquet", spec)))
            client.set_terminated(rid, "FINISHED")
    client.set_terminated(pid, "FINISHED")


def write_tune_sweep(sweep_dir: Path, tmp: Path, specs: list[TrialSpec], *, sweep: str = "demo",
                     synthetic: bool = True) -> Path:
    """The sweep as Ray Tune leaves it on disk (what `bench.sweep.results.read_sweep` reads)."""
    root = dataset_root(tmp, synthetic=synthetic, num_classes=_num_classes(specs))
    sweep_id = f"{sweep}-0001"
    units = sorted({s.stage for s in specs})
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "sweep.json").write_text(json.dumps(
        {"name": sweep, "sweep_id": sweep_id, "stages": units, "units": {u: {"state": "done"} for u in units}}))
    for spec in specs:
        d = sweep_dir / spec.stage / f"{spec.name}_{_h(spec.name) % 100000:05d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "params.json").write_text(json.dumps(config_of(spec, root=root, sweep=sweep, sweep_id=sweep_id)))
        res = results_of(spec)
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in res))
        ck = d / f"checkpoint_{len(res) - 1:06d}"
        ck.mkdir()
        (ck / "state.pt").write_bytes(b"placeholder: the report never loads it")
        write_scores(ck / "val_scores.parquet", spec)
    return sweep_dir


def tick_labels(ax: Any, which: str = "x") -> list[Any]:
    """The tick labels of ``ax`` a reader sees: visible, non-empty, at a tick inside the view."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    out = []
    for tick in axis.get_major_ticks() + axis.get_minor_ticks():
        label = tick.label1
        if tick.get_visible() and label.get_visible() and label.get_text().strip() and lo <= tick.get_loc() <= hi:
            out.append(label)
    return out


def text_boxes(fig: Any) -> list[tuple[str, Any]]:
    """``(text, display-space bbox)`` of every text of a drawn figure a reader sees: tick labels
    (`tick_labels`), point labels, titles, axis and legend labels."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks, seen = [], set()
    for ax in fig.axes:
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                seen.update((id(tick.label1), id(tick.label2)))
            ticks += tick_labels(ax, which)
    others = [t for t in fig.findobj(Text)
              if id(t) not in seen and t.get_visible() and t.get_text().strip()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in ticks + others]


def overlapping_texts(fig: Any, *, tolerance: float = 0.5) -> list[tuple[str, str]]:
    """Pairs of texts of ``fig`` whose boxes share more than ``tolerance`` pixels each way."""
    boxes = text_boxes(fig)
    bad = []
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            if min(a.x1, b.x1) - max(a.x0, b.x0) > tolerance and min(a.y1, b.y1) - max(a.y0, b.y0) > tolerance:
                bad.append((ta, tb))
    return bad
