"""The function every sweep trial runs: note where it runs, then train.

Why a wrapper around `bench.train.trainable.trial_fn`: on a multi-node cluster a result is
only interpretable with the node that produced it (timings, GPU type), and Tune's own
``node_ip`` cannot tell two nodes on one host apart. Each (re)start appends one line to
``<trial dir>/node.json`` in the sweep's storage (the folder Tune keeps the trial's
result.json in, which every node reaches: a shared filesystem or a bucket).

`trainable` is the Tune trainable built from `run_trial`. It differs from Tune's own wrapper in
one place, `restore`: Tune's experiment snapshot (once a second) names a trial's latest
checkpoint, and checkpoint retention (``num_to_keep``) can delete that checkpoint before the
next snapshot when epochs are shorter than the period. A driver killed in that window leaves a
snapshot whose checkpoint is gone, and Tune refuses to restore the trial ("does not exist on
storage anymore", ray-project/ray#27790). The trial then restores from the newest checkpoint it
reported (named in its result.json, so fully persisted), which is newer than the lost one: no
epoch is re-run.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import socket
import time
from pathlib import Path
from typing import Any

from bench.storage import RemotePath, append_line, location
from bench.train.trainable import trial_fn

log = logging.getLogger(__name__)


def node_file(config: dict[str, Any], trial_name: str) -> Path | RemotePath | None:
    sweep = config.get("sweep") or {}
    if not sweep.get("dir") or not sweep.get("unit"):
        return None
    return location(sweep["dir"]) / sweep["unit"] / trial_name / "node.json"


def run_trial(config: dict[str, Any]) -> None:
    import ray  # heavy
    from ray import tune  # heavy

    ctx = tune.get_context()
    f = node_file(config, ctx.get_trial_name())
    if f is not None:
        rt = ray.get_runtime_context()
        line = {"node_id": rt.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
                "hostname": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                "resources": {k: v for k, v in rt.get_assigned_resources().items()}}
        try:
            f.parent.mkdir(parents=True, exist_ok=True)
            append_line(f, json.dumps(line) + "\n")
        except OSError as e:
            log.warning("could not record where the trial runs in %s: %s", f, e)   # bookkeeping only
    trial_fn(config)


def newest_reported_checkpoint(result: Any) -> Any:
    """``result`` (Tune's ``_TrainingResult`` for a restore) as it is when its checkpoint
    exists; when it has gone, the same for the newest checkpoint that the trial's result.json
    reports and that exists; ``result`` unchanged when there is none (Tune then raises)."""
    import pyarrow.fs as pafs  # heavy
    from ray import tune  # heavy

    ckpt = getattr(result, "checkpoint", None)
    if ckpt is None:
        return result
    fs = ckpt.filesystem
    if fs.get_file_info(ckpt.path).type != pafs.FileType.NotFound:
        return result
    trial_dir = posixpath.dirname(ckpt.path.rstrip("/"))
    try:
        with fs.open_input_stream(posixpath.join(trial_dir, "result.json")) as fh:
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except (OSError, FileNotFoundError):
        return result
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:      # a line cut by the kill
            continue
        if isinstance(row, dict) and row.get("checkpoint_dir_name"):
            rows.append(row)
    for row in reversed(rows):
        path = posixpath.join(trial_dir, row["checkpoint_dir_name"])
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            log.warning("checkpoint %s named by the experiment snapshot is gone (deleted by retention after "
                        "the snapshot); restoring from %s, the newest the trial reported", ckpt.path, path)
            return type(result)(checkpoint=tune.Checkpoint(path, filesystem=fs), metrics=row)
    return result


def trainable(resources: dict[str, float]) -> Any:
    """The Tune trainable for `run_trial` reserving ``resources`` (see the module docstring)."""
    from ray import tune  # heavy
    from ray.tune.trainable import wrap_function  # heavy

    base = wrap_function(run_trial)

    class RunTrial(base):  # type: ignore[misc, valid-type]
        def restore(self, checkpoint_path: Any) -> Any:
            return super().restore(newest_reported_checkpoint(checkpoint_path))

    RunTrial.__name__ = RunTrial.__qualname__ = "run_trial"
    return tune.with_resources(RunTrial, resources)
