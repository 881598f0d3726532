"""Restoring a trial from the newest checkpoint its result.json reports: when the snapshot names
a checkpoint that retention has since deleted (ray-project/ray#27790), and when Tune offers an
older one because the node died before Tune registered the newest (tests/test_storage_s3_resume.py
runs that case on two nodes)."""

from __future__ import annotations

import json

import pyarrow.fs as pafs
import pytest

from bench.sweep.trainable import newest_reported_checkpoint

pytest.importorskip("ray")


def _trial_dir(tmp_path, reported: list[int], present: list[int], torn_last_line: bool = False):
    trial = tmp_path / "pretrain" / "pretrain-a-rgb-s0-0001"
    trial.mkdir(parents=True)
    for k in present:
        (trial / f"checkpoint_{k:06d}").mkdir()
        (trial / f"checkpoint_{k:06d}" / "state.pt").write_bytes(b"x")
    rows = [json.dumps({"epoch": k, "training_iteration": k, "checkpoint_dir_name": f"checkpoint_{k:06d}"})
            for k in reported]
    text = "\n".join(rows) + "\n"
    if torn_last_line:
        text += '{"epoch": 99, "checkpoint_dir_na'
    (trial / "result.json").write_text(text)
    return trial


def _result(trial, k: int):
    from ray import tune
    from ray.train._internal.session import _TrainingResult

    ckpt = tune.Checkpoint(str(trial / f"checkpoint_{k:06d}"), filesystem=pafs.LocalFileSystem())
    return _TrainingResult(checkpoint=ckpt, metrics={"training_iteration": k})


def test_a_deleted_checkpoint_is_replaced_by_the_newest_reported_one(tmp_path):
    # the snapshot named checkpoint 5; the trial went on to 7 and retention (2 kept) deleted 5.
    # checkpoint 8 exists on disk but was never reported (cut by the kill): not trusted.
    trial = _trial_dir(tmp_path, reported=[1, 2, 3, 4, 5, 6, 7], present=[6, 7, 8], torn_last_line=True)
    out = newest_reported_checkpoint(_result(trial, 5))
    assert out.checkpoint.path == str(trial / "checkpoint_000007")
    assert out.metrics["training_iteration"] == 7 and out.metrics["epoch"] == 7


def test_an_existing_checkpoint_is_restored_as_named(tmp_path):
    trial = _trial_dir(tmp_path, reported=[1, 2, 3], present=[2, 3])
    res = _result(trial, 3)
    assert newest_reported_checkpoint(res) is res


def test_a_newer_reported_checkpoint_wins_over_the_one_tune_registered(tmp_path):
    # the node died after epoch 3's result reached the driver, before Tune's `save` registered its
    # checkpoint: Tune offers 2; 3 is reported and persisted, so the trial goes on from it
    trial = _trial_dir(tmp_path, reported=[1, 2, 3], present=[1, 2, 3])
    out = newest_reported_checkpoint(_result(trial, 2))
    assert out.checkpoint.path == str(trial / "checkpoint_000003") and out.metrics["epoch"] == 3


def test_a_checkpoint_written_but_never_reported_is_not_used(tmp_path):
    # 4 was persisted, but its result never reached the log (the node died in between): its
    # epoch must run again, so the restore stays on 3
    trial = _trial_dir(tmp_path, reported=[1, 2, 3], present=[2, 3, 4], torn_last_line=True)
    res = _result(trial, 3)
    assert newest_reported_checkpoint(res) is res


def test_no_surviving_checkpoint_leaves_the_result_for_tune_to_refuse(tmp_path):
    trial = _trial_dir(tmp_path, reported=[1, 2], present=[])
    res = _result(trial, 2)
    assert newest_reported_checkpoint(res) is res


def test_restoring_a_newer_checkpoint_moves_the_next_checkpoints_name_past_it(tmp_path):
    """Tune registered up to checkpoint 1, the trial restores from 3: its next checkpoint must be
    checkpoint_000004, not a rewrite of 2 or 3 (Ray's index only moves with registrations)."""
    from ray.train._internal.storage import StorageContext

    from bench.sweep.trainable import advance_checkpoint_index

    trial = _trial_dir(tmp_path, reported=[1, 2, 3], present=[1, 2, 3])
    out = newest_reported_checkpoint(_result(trial, 1))
    ctx = StorageContext(storage_path=str(tmp_path / "store"), experiment_dir_name="e", trial_dir_name="t",
                         current_checkpoint_index=1)
    advance_checkpoint_index(ctx, out)
    ctx._update_checkpoint_index({})
    assert ctx.checkpoint_dir_name == "checkpoint_000004"
    advance_checkpoint_index(ctx, _result(trial, 2))          # never backwards
    assert ctx.current_checkpoint_index == 4


# ------------------------------------------------------------------ retention (CheckpointRetention)
def _names(trial) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in trial.glob("checkpoint_*"))


def test_retention_keeps_the_newest_checkpoint_the_stored_result_json_names(tmp_path):
    # the driver has registered checkpoints up to 6, but the stored result.json (uploaded in the
    # background) names only up to 3: 3 is what a restore after a kill now would need
    from bench.sweep.trainable import prune_checkpoints

    trial = _trial_dir(tmp_path, reported=[0, 1, 2, 3], present=[0, 1, 2, 3, 4, 5, 6])
    deleted = prune_checkpoints(pafs.LocalFileSystem(), str(trial), keep=2)
    assert _names(trial) == [3, 4, 5, 6]
    assert deleted == ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]
    # that restore finds it
    res = newest_reported_checkpoint(_result(trial, 1))
    assert res.checkpoint.path == str(trial / "checkpoint_000003")


def test_retention_once_result_json_caught_up_keeps_the_newest_two(tmp_path):
    from bench.sweep.trainable import prune_trial_dir

    trial = _trial_dir(tmp_path, reported=[1, 2, 3, 4, 5, 6], present=[3, 4, 5, 6])
    assert prune_trial_dir(trial, keep=2) == ["checkpoint_000003", "checkpoint_000004"]
    assert _names(trial) == [5, 6]
    assert prune_trial_dir(trial, keep=2) == []


def test_retention_deletes_nothing_before_result_json_names_a_checkpoint(tmp_path):
    from bench.sweep.trainable import prune_trial_dir

    trial = _trial_dir(tmp_path, reported=[], present=[0, 1, 2, 3])
    (trial / "result.json").unlink()
    assert prune_trial_dir(trial, keep=1) == [] and _names(trial) == [0, 1, 2, 3]
    (trial / "result.json").write_text('{"epoch": 1, "training_iteration": 1}\n')     # no checkpoint named
    assert prune_trial_dir(trial, keep=1) == [] and _names(trial) == [0, 1, 2, 3]


def test_retention_callback_prunes_the_trial_tune_hands_it(tmp_path):
    from types import SimpleNamespace

    from bench.sweep.retention import CheckpointRetention

    trial_dir = _trial_dir(tmp_path, reported=[1, 2, 3, 4], present=[1, 2, 3, 4])
    trial = SimpleNamespace(storage=SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(),
                                                    trial_fs_path=str(trial_dir)))
    cb = CheckpointRetention(2)
    cb.on_checkpoint(iteration=4, trials=[trial], trial=trial, checkpoint=None)
    assert _names(trial_dir) == [3, 4]
    import pickle

    assert pickle.loads(pickle.dumps(cb)).keep == 2       # Tune pickles it into tuner.pkl
