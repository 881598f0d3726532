"""The function every sweep trial runs: note where it runs, then train.

Why a wrapper around `bench.train.trainable.trial_fn`: on a multi-node cluster a result is
only interpretable with the node that produced it (timings, GPU type), and Tune's own
``node_ip`` cannot tell two nodes on one host apart. Each (re)start appends one line to
``<trial dir>/node.json`` in the sweep's storage (the folder Tune keeps the trial's
result.json in, which every node reaches: a shared filesystem or a bucket).

`trainable` is the Tune trainable built from `run_trial`. It differs from Tune's own wrapper in
one place, `restore`, which picks the checkpoint by what the trial's result.json reports
(`newest_reported_checkpoint`), in two cases where Tune's choice would lose or repeat work:

- Tune's experiment snapshot (once a second) names a trial's latest checkpoint, and checkpoint
  retention (``num_to_keep``) can delete it before the next snapshot when epochs are shorter
  than the period. A driver killed in that window leaves a snapshot whose checkpoint is gone,
  and Tune refuses to restore the trial ("does not exist on storage anymore",
  ray-project/ray#27790).
- Tune registers a checkpoint after its result, in a second call to the trial's actor. A node
  lost between the two makes Tune retry from the checkpoint before, and the reported epoch runs
  and is logged twice.

In both the trial restores from the newest checkpoint its result.json names (fully persisted
before it was reported): no epoch is re-run and none is lost.

That needs the newest checkpoint the stored result.json names to exist, which Tune's own
retention (``CheckpointConfig(num_to_keep)``) does not promise: it deletes a trial's older
checkpoints on the driver the moment a new one registers, while the result.json and snapshot that
name them are uploaded later, in the background. A driver killed while that upload is in flight
leaves storage whose every named checkpoint is gone (seen on S3: the snapshot and result.json
named checkpoint 4; 5 and 6 existed). So sweeps keep every checkpoint in Tune's view
(``num_to_keep=None``) and `bench.sweep.retention.CheckpointRetention` deletes the old ones only
once the stored result.json names a newer one (`prune_checkpoints`). The result.json read is the one in
the sweep's storage, which the driver uploads with each experiment snapshot (every second,
``TUNE_GLOBAL_CHECKPOINT_S``): a node lost within that second of a report falls back to Tune's
own choice, and that one epoch runs again (readers keep its latest result, `TrialRecord.by_epoch`).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
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
    """The `_TrainingResult` to restore a trial from: ``result`` (what Tune offers), unless the
    trial's result.json reports a newer checkpoint that exists, or ``result``'s checkpoint is
    gone and an older reported one exists; then that one, with its reported metrics.

    Why newer: Tune registers a reported checkpoint through a separate ``save`` call after the
    result itself; a node lost between the two leaves the controller offering the checkpoint
    before, and the epoch after it would run and be logged twice. A checkpoint named in
    result.json was fully persisted before it was reported (Ray uploads, then reports), and its
    epoch was logged, so resuming after it loses nothing and repeats nothing. One the trial
    wrote but never reported (cut by the kill) is not used: its epoch is not in the log."""
    import pyarrow.fs as pafs  # heavy
    from ray import tune  # heavy

    ckpt = getattr(result, "checkpoint", None)
    if ckpt is None:
        return result
    fs = ckpt.filesystem

    def exists(path: str) -> bool:
        return fs.get_file_info(path).type == pafs.FileType.Directory

    offered = ckpt.path.rstrip("/")
    offered_exists = exists(offered)
    offered_iter = (getattr(result, "metrics", None) or {}).get("training_iteration")
    trial_dir = posixpath.dirname(offered)
    rows = reported_rows(fs, trial_dir)
    if rows is None:
        return result
    for row in reversed(rows):           # the newest first
        path = posixpath.join(trial_dir, row["checkpoint_dir_name"])
        if path == offered:
            if offered_exists:
                return result
            continue
        it = row.get("training_iteration")
        newer = isinstance(it, int) and isinstance(offered_iter, int) and it > offered_iter
        if (newer or not offered_exists) and exists(path):
            why = ("is older than the newest the trial reported (its node was lost before Tune registered that one)"
                   if offered_exists else "is gone (deleted by retention after the experiment snapshot)")
            log.warning("checkpoint %s offered for the restore %s; restoring from %s", offered, why, path)
            return type(result)(checkpoint=tune.Checkpoint(path, filesystem=fs), metrics=row)
        if not newer and offered_exists:
            break
    return result


def reported_rows(fs: Any, trial_dir: str) -> list[dict[str, Any]] | None:
    """The rows of ``<trial_dir>/result.json`` on ``fs`` that name a checkpoint, oldest first
    (a line cut by a kill is skipped); None when there is no result.json."""
    try:
        with fs.open_input_stream(posixpath.join(trial_dir, "result.json")) as fh:
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except (OSError, FileNotFoundError):
        return None
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:      # a line cut by the kill
            continue
        if isinstance(row, dict) and row.get("checkpoint_dir_name"):
            rows.append(row)
    return rows


_CKPT_INDEX = re.compile(r"checkpoint_(\d+)$")


def prune_checkpoints(fs: Any, trial_dir: str, keep: int) -> list[str]:
    """Delete the checkpoints of the trial folder ``trial_dir`` (on pyarrow filesystem ``fs``) that
    are neither among the newest ``keep`` nor newer than or equal to the newest checkpoint its
    stored result.json names; return the names deleted.

    The newest named checkpoint is what `newest_reported_checkpoint` restores from when the
    snapshot's is gone, so it is never deleted; nothing is deleted while result.json names none.
    A result.json read half-written names an older checkpoint, which only deletes less."""
    import pyarrow.fs as pafs  # heavy

    rows = reported_rows(fs, trial_dir) or []
    named = [int(m.group(1)) for r in rows if (m := _CKPT_INDEX.search(str(r["checkpoint_dir_name"])))]
    if not named:
        return []
    anchor = max(named)
    found = []
    for info in fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True)):
        m = _CKPT_INDEX.search(info.base_name)
        if m and info.type == pafs.FileType.Directory:
            found.append((int(m.group(1)), info.path))
    found.sort()
    newest = {k for k, _ in found[-keep:]} if keep > 0 else set()
    deleted = []
    for k, path in found:
        if k < anchor and k not in newest:
            fs.delete_dir(path)
            deleted.append(posixpath.basename(path))
    return deleted


def prune_trial_dir(trial_dir: Path | RemotePath, keep: int) -> list[str]:
    """`prune_checkpoints` on a trial folder of the sweep's storage (a local path or a URI)."""
    if isinstance(trial_dir, RemotePath):
        return prune_checkpoints(trial_dir.fs, trial_dir.fs_path, keep)
    import pyarrow.fs as pafs  # heavy

    return prune_checkpoints(pafs.LocalFileSystem(), str(Path(trial_dir).resolve()), keep)


def advance_checkpoint_index(storage: Any, result: Any) -> None:
    """Ray names a trial's next checkpoint ``checkpoint_<index + 1>`` from the storage context's
    ``current_checkpoint_index``, which only the driver's registrations move. Restoring from a
    checkpoint the driver never registered (`newest_reported_checkpoint`) must move it past that
    checkpoint, or the next epoch's checkpoint would overwrite the one restored from (a torn
    state.pt if that write is cut) or sort below it (the final checkpoint would not be the newest)."""
    m = _CKPT_INDEX.search(str(getattr(getattr(result, "checkpoint", None), "path", "")).rstrip("/"))
    if storage is None or m is None:
        return
    storage.current_checkpoint_index = max(int(storage.current_checkpoint_index), int(m.group(1)))


def trainable(resources: dict[str, float]) -> Any:
    """The Tune trainable for `run_trial` reserving ``resources`` (see the module docstring)."""
    from ray import tune  # heavy
    from ray.tune.trainable import wrap_function  # heavy

    base = wrap_function(run_trial)

    class RunTrial(base):  # type: ignore[misc, valid-type]
        def restore(self, checkpoint_path: Any) -> Any:
            chosen = newest_reported_checkpoint(checkpoint_path)
            if chosen is not checkpoint_path:
                advance_checkpoint_index(getattr(self, "_storage", None), chosen)
            return super().restore(chosen)

    RunTrial.__name__ = RunTrial.__qualname__ = "run_trial"
    return tune.with_resources(RunTrial, resources)
