"""What a sweep or a trial looks like in MLflow: tags, params, run names, artifacts.

Shared by the live Tune callback and by `bench sync`, so that a run written by either one is
found and continued by the other. A trial's config carries a ``sweep`` sub-dict (ignored by
the training code, see `bench.train.config.split_config`) with the sweep's name, id, stage
unit and dataset name; everything a tag needs is therefore in Tune's own ``params.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from bench.tracking.meta import provenance_tags
from bench.train.layout import METRICS_FILE as METRICS
from bench.train.layout import VAL_SCORES_FILE as VAL_SCORES

# The keys that find a run again.
SWEEP_KEY = "sweep_id"
TRIAL_KEY = "trial_name"


def parent_key(sweep_id: str) -> dict[str, str]:
    return {SWEEP_KEY: sweep_id, "bench.kind": "sweep"}


def parent_tags(*, name: str, stages: list[str], spec_file: str | None = None) -> dict[str, str]:
    tags = {"sweep": name, "stages": ",".join(stages), **provenance_tags()}
    if spec_file:
        tags["sweep_file"] = spec_file
    return tags


def trial_key(config: Mapping[str, Any], trial_name: str) -> dict[str, str]:
    sweep = config.get("sweep") or {}
    return {SWEEP_KEY: str(sweep.get("id", "")), TRIAL_KEY: trial_name, "bench.kind": "trial"}


def is_synthetic(root: str | None) -> bool:
    return bool(root) and (Path(root) / "SYNTHETIC.json").is_file()


def trial_tags(config: Mapping[str, Any], *, trial_id: str, parent_run_id: str | None) -> dict[str, str]:
    sweep = config.get("sweep") or {}
    tags = {
        "trial_id": trial_id,
        "sweep": str(sweep.get("name", "")),
        "unit": str(sweep.get("unit", "")),
        "cell": str(config.get("cell")),
        "modality": str(config.get("modality")),
        "seed": str(config.get("seed")),
        "dataset": str(sweep.get("dataset") or config.get("dataset")),
        "dataset_format": str(config.get("dataset")),
        "stage": str(config.get("stage")),
        "preset": str(config.get("preset")),
        "synthetic": str(is_synthetic(config.get("root"))).lower(),
        **provenance_tags(),
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    return tags


def trial_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every config field (hyperparameters, data, network, execution), ``sweep.*`` included."""
    return dict(config)


def final_files(checkpoint_dir: str | Path | None) -> list[Path]:
    if not checkpoint_dir:
        return []
    d = Path(checkpoint_dir)
    return [d / VAL_SCORES, d / METRICS]


def node_tags(trial_dir: str | Path | None) -> dict[str, str]:
    """Where the trial ran (the last start), from ``node.json`` written by the trial wrapper."""
    import json

    if not trial_dir:
        return {}
    f = Path(trial_dir) / "node.json"
    try:
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return {}
    if not lines:
        return {}
    last = lines[-1]
    return {"node_id": str(last.get("node_id", "")), "node_ip": str(last.get("node_ip", "")),
            "hostname": str(last.get("hostname", "")), "starts": str(len(lines))}
