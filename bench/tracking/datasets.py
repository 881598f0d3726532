"""A trial's data as MLflow dataset inputs: what the runs table's Dataset column shows.

One input per split a trial reads (its ``train_split`` and ``val_split``; a leaderboard entry
run: the validation split its numbers come from), logged through
``MlflowClient.log_inputs`` as an `mlflow.data.meta_dataset.MetaDataset` (the data itself stays
where it is):

- name: the sweep's dataset name (``synthetic-isogd``), with `` (synthetic)`` appended when the
  root holds ``SYNTHETIC.json`` and the name does not say so already -- generated data is never
  shown as if it were the real set;
- context (MLflow's ``mlflow.data.context`` input tag): the split, ``train`` / ``valid``;
- digest: SHA-256 of the split's list files (`bench.data.formats.default_list_files`) and of
  ``SYNTHETIC.json``, so two runs on the same files show the same digest and a changed list a
  new one; when the driver cannot read them (a root only the workers mount), a digest of the
  description instead, and the profile says ``"digest_of": "description"``;
- source: the root, as a local path; profile (JSON): format, split, synthetic, list lines.

MLflow stores a dataset once per experiment (by name and digest) and an input once per run,
so logging the same inputs again (a resumed trial, `bench sync`) adds nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.tracking.records import is_synthetic

CONTEXT_TAG = "mlflow.data.context"     # MLflow's own input tag
SYNTHETIC_TAG = "synthetic"             # input tag: "true" / "false"
SYNTHETIC_FILE = "SYNTHETIC.json"


@dataclass(frozen=True)
class DatasetRef:
    """One split of a trial's dataset, as it is shown in MLflow."""

    name: str
    split: str
    format: str
    root: str
    synthetic: bool
    digest: str
    profile: dict[str, Any]


def _files_digest(fmt: str, root: Path, split: str) -> tuple[str, int] | None:
    """(digest, lines of the split's first list file), or None when they cannot be read here."""
    from bench.data.formats import default_list_files

    try:
        files = default_list_files(fmt, root, split)
    except ValueError:
        return None
    h = hashlib.sha256()
    lines = 0
    try:
        for i, f in enumerate(files):
            data = f.read_bytes()
            h.update(f.name.encode() + b"\0" + data + b"\0")
            if i == 0:
                lines = sum(1 for x in data.splitlines() if x.strip())
    except OSError:
        return None
    marker = root / SYNTHETIC_FILE
    if marker.is_file():
        try:
            h.update(marker.read_bytes())
        except OSError:
            pass
    return h.hexdigest()[:10], lines


def trial_datasets(config: Mapping[str, Any], splits: Sequence[str] | None = None) -> list[DatasetRef]:
    """The splits a trial's config reads (train, then validation; or ``splits``), described for
    MLflow."""
    sweep = config.get("sweep") or {}
    fmt = str(config.get("dataset") or "")
    root_s = config.get("root")
    if not fmt or not root_s:
        return []
    root = Path(str(root_s))
    synthetic = is_synthetic(str(root_s))
    base = str(sweep.get("dataset") or fmt)
    name = base + (" (synthetic)" if synthetic and "synth" not in base.lower() else "")
    out = []
    if splits is None:
        splits = (str(config.get("train_split") or "train"), str(config.get("val_split") or "valid"))
    for split in dict.fromkeys(splits):
        profile: dict[str, Any] = {"format": fmt, "split": split, "synthetic": synthetic}
        found = _files_digest(fmt, root, split)
        if found is not None:
            digest, lines = found
            profile["samples"] = lines
            profile["digest_of"] = "list files"
        else:
            desc = json.dumps({"name": base, "format": fmt, "root": str(root), "split": split}, sort_keys=True)
            digest = hashlib.sha256(desc.encode()).hexdigest()[:10]
            profile["digest_of"] = "description"
        out.append(DatasetRef(name=name, split=split, format=fmt, root=str(root), synthetic=synthetic,
                              digest=digest, profile=profile))
    return out


def dataset_inputs(refs: list[DatasetRef]) -> list[Any]:
    """``mlflow.entities.DatasetInput`` of each ref (a `MetaDataset` with the ref's digest)."""
    from mlflow.data.meta_dataset import MetaDataset  # heavy
    from mlflow.data.sources import LocalArtifactDatasetSource
    from mlflow.entities import Dataset, DatasetInput, InputTag

    out = []
    for r in refs:
        d = MetaDataset(LocalArtifactDatasetSource(r.root), name=r.name, digest=r.digest).to_dict()
        entity = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"], source=d["source"],
                         profile=json.dumps(r.profile))
        out.append(DatasetInput(dataset=entity, tags=[InputTag(CONTEXT_TAG, r.split),
                                                      InputTag(SYNTHETIC_TAG, str(r.synthetic).lower())]))
    return out
