"""A sweep driver killed with SIGKILL mid-sweep resumes with --resume: the finished trial is
not re-run, the interrupted one continues from its checkpoint, MLflow has no duplicate run
and every epoch exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

BENCH = [sys.executable, "-m", "bench"]
# Enough epochs that the second trial is still running when the kill lands, 2 s after its
# 2nd epoch (Tune's 1 s snapshot must catch up first): on a fast machine 12 were all done by then.
EPOCHS = 40


@pytest.mark.timeout(400)
def test_killed_driver_resumes_without_duplicates(short_tmp, tiny_sweep, kill_driver_when):
    tmp = short_tmp          # Ray's socket paths (RAY_TMPDIR below) must stay short
    # one trial at a time, a (first) then convlstm: the kill falls while a is done, convlstm not
    sweep = tiny_sweep(tmp, name="killme", epochs=EPOCHS, synthetic={"clips_per_class": 4}, max_concurrent_trials=1)
    uri = f"sqlite:///{tmp}/mlflow.db"
    env = dict(os.environ, RAY_TMPDIR=str(tmp / "rt"))
    (tmp / "rt").mkdir()
    # trial 1 (a) has finished and trial 2 (convlstm) reported its 2nd epoch: kill -9
    seen = kill_driver_when([*BENCH, "sweep", str(sweep), "--tracking-uri", uri],
                            lambda seen: "pretrain-convlstm" in seen[-1] and f"epoch 2/{EPOCHS}" in seen[-1],
                            cwd=tmp, env=env, ray_tmp=tmp / "rt")
    assert any("pretrain-a-rgb" in x and "done" in x for x in seen), "".join(seen)

    r = subprocess.run([*BENCH, "sweep", str(sweep), "--tracking-uri", uri, "--resume"],
                       capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pretrain: resuming unfinished trials" in r.stdout
    assert "pretrain-a-rgb" not in r.stdout.split("resuming unfinished trials")[1].split("leaderboard")[0]

    from bench.sweep.results import read_sweep

    _, trials = read_sweep(tmp / "runs" / "killme")
    by_cell = {t.combo[0]: t for t in trials}
    if set(by_cell) != {"a", "convlstm"}:         # seen once in CI: say what was on disk
        from bench.sweep.results import _statuses, unit_dirs

        units = unit_dirs(tmp / "runs" / "killme")
        listing = {str(u.name): sorted(x.name for x in u.iterdir()) for u in units}
        trial_files = {str(d.relative_to(tmp)): sorted(x.name for x in d.iterdir())
                       for u in units for d in u.iterdir() if d.is_dir()}
        pytest.fail(f"trials read: {sorted(by_cell)}; units: {listing}; trial dirs: {trial_files}; "
                    f"statuses: {[_statuses(u) for u in units]}\nresumed run:\n{r.stdout[-3000:]}")
    for t in trials:
        assert t.status == "TERMINATED" and t.last_epoch == EPOCHS
    # the finished trial ran once; the interrupted one started twice and did not start over
    assert len((by_cell["a"].dir / "node.json").read_text().splitlines()) == 1
    assert [r["epoch"] for r in by_cell["a"].results] == list(range(1, EPOCHS + 1))
    assert len((by_cell["convlstm"].dir / "node.json").read_text().splitlines()) == 2
    epochs = [r["epoch"] for r in by_cell["convlstm"].results]
    assert epochs.count(1) == 1 and epochs.count(2) == 1 and sorted(set(epochs)) == list(range(1, EPOCHS + 1))

    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    runs = c.search_runs([c.get_experiment_by_name("tests").experiment_id], max_results=100)
    assert sorted(r.data.tags["bench.kind"] for r in runs) == ["sweep", "trial", "trial"]
    for r in runs:
        assert r.info.status == "FINISHED"
        if r.data.tags["bench.kind"] == "trial":
            assert sorted(m.step for m in c.get_metric_history(r.info.run_id, "epoch")) == list(range(1, EPOCHS + 1))
    meta = json.loads((tmp / "runs" / "killme" / "sweep.json").read_text())
    assert meta["units"]["pretrain"]["state"] == "done"
