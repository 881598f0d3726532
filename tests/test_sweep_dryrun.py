"""`bench sweep FILE --dry-run`: the checks that refuse what would fail on the cluster, the
plan and its estimate; nothing started, nothing written. The two-node checks (a shared
storage marker read on every node, datasets compared per node) are in test_multinode.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.sweep.dryrun import Node, concurrent_trials, make_plan, trial_bundles
from bench.sweep.spec import load_spec

BENCH = [sys.executable, "-m", "bench"]
REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_default_dry_run_prints_plan_and_estimate_and_writes_nothing(tmp_path):
    default = REPO / "bench" / "configs" / "default.yaml"
    before = _files(tmp_path)
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([*BENCH, "sweep", str(default), "--dry-run", "--json", "--price-per-node-hour", "2.5"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    plan = json.loads(r.stdout)
    spec = load_spec(default)
    per_stage = [len(spec.combos(st)) for st in spec.stages]
    assert plan["trials"] == sum(per_stage) and [s["trials"] for s in plan["stages"]] == per_stage
    assert [s["name"] for s in plan["stages"]] == [st.name for st in spec.stages]
    assert {c["name"]: c["ok"] for c in plan["checks"]} == {"config": True, "storage": True, "datasets": True,
                                                             "resources": True}
    est = plan["estimate"]
    assert set(est) >= {"wall_s", "gpu_hours", "cpu_hours", "cost", "source"}
    assert est["wall_s"] > 0 and est["gpu_hours"] == 0 and est["cpu_hours"] > 0
    assert est["cost"] == pytest.approx(2.5 * est["wall_s"] / 3600, abs=0.01)
    assert est["source"].startswith(("bench perf network", "calibration"))
    # per stage: trials x trial time over the slots that run at once bounds the stage's wall time
    for s in plan["stages"]:
        longest = max(s["trial_s"].values())
        assert s["wall_s"] >= longest and s["wall_s"] <= s["trials"] * longest
    assert _files(tmp_path) == before          # no runs/, no data/, no mlflow.db


def test_a_trial_that_fits_no_node_is_refused_naming_the_bundle(tmp_path, tiny_sweep):
    sweep = tiny_sweep(tmp_path, resources={"cpu": 64})
    r = subprocess.run([*BENCH, "sweep", str(sweep), "--dry-run"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert r.returncode == 2
    assert "[FAILED] resources" in r.stdout and "CPU 64" in r.stdout and "fits no node" in r.stdout
    assert "check 'resources' failed" in r.stderr


def test_a_storage_that_is_not_a_folder_is_refused(tmp_path, tiny_sweep):
    (tmp_path / "afile").write_text("x")
    spec = load_spec(tiny_sweep(tmp_path, storage=str(tmp_path / "afile" / "runs")))
    plan = make_plan(spec, nodes=[Node("n", "127.0.0.1", {"CPU": 2.0})], estimate_cost=False, connected=False)
    storage = next(c for c in plan.checks if c.name == "storage")
    assert not storage.ok and "afile" in storage.detail and "not a folder" in storage.detail


def test_custom_resources_missing_from_the_cluster_are_refused(tmp_path, tiny_sweep):
    spec = load_spec(tiny_sweep(tmp_path, resources={"cpu": 1, "custom": {"accelerator_x": 1}}))
    plan = make_plan(spec, nodes=[Node("n", "127.0.0.1", {"CPU": 8.0})], estimate_cost=False, connected=False)
    assert not plan.ok and "accelerator_x 1" in plan.failed()[0].detail
    plan = make_plan(spec, nodes=[Node("n", "127.0.0.1", {"CPU": 8.0, "accelerator_x": 3.0})], estimate_cost=False, connected=False)
    assert plan.ok and plan.max_concurrent_trials == 2      # the file's max_concurrent_trials: 2


def test_concurrency_is_what_fits_and_unset_max_concurrent_trials_takes_it(tmp_path, tiny_sweep):
    # 2 workers x (2 CPU, 1 GPU) a trial, plus the trial's token driver share
    spec = load_spec(tiny_sweep(tmp_path, max_concurrent_trials=None, train={"batch_size": 4},
                                resources={"cpu": 2, "gpu": 1, "workers": 2}))
    bundles = trial_bundles(spec)
    assert bundles[0] == {"CPU": 0.01} and bundles[1:] == [{"CPU": 2.0, "GPU": 1.0}] * 2
    nodes = [Node("a", "10.0.0.1", {"CPU": 8.0, "GPU": 4.0}), Node("b", "10.0.0.2", {"CPU": 4.0, "GPU": 1.0})]
    # trial 1 on node a; trial 2's drivers share leaves a 1.98 CPUs, so its second worker goes to
    # b; a third trial finds no GPU for a worker (a's CPUs are short, b has no GPU left)
    assert concurrent_trials(bundles, nodes) == 2
    assert concurrent_trials(bundles, nodes + [Node("c", "10.0.0.3", {"CPU": 4.0, "GPU": 2.0})]) == 3
    plan = make_plan(spec, nodes=nodes, estimate_cost=False, connected=False)
    assert plan.ok and plan.max_concurrent_trials == 2 and plan.derived_concurrency
    assert all(s.concurrent == 2 for s in plan.stages)


@pytest.mark.parametrize("uri", ["s3://bench/runs", "gs://bucket/ray_results"])
def test_object_store_storage_is_a_uri_not_a_local_folder(tmp_path, tiny_sweep, uri):
    """``storage: s3://...`` stays a URI (a `RemotePath`, resolved on first use: parsing makes no
    request); the sweep folder is a URI under it, not ``<cwd>/s3:/...``."""
    from bench.storage import RemotePath

    spec = load_spec(tiny_sweep(tmp_path, storage=uri))
    assert isinstance(spec.storage, RemotePath) and str(spec.storage) == uri
    assert str(spec.sweep_dir) == f"{uri}/tiny"
    assert str(load_spec(tiny_sweep(tmp_path, file="ok.yaml")).with_storage(uri + "/x").storage) == uri + "/x"
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "gs:").exists()


def test_unknown_storage_scheme_is_refused_naming_the_field(tmp_path, tiny_sweep):
    from bench.errors import ConfigError

    sweep = tiny_sweep(tmp_path, storage="nope://bucket/runs")
    with pytest.raises(ConfigError, match=r"tiny.yaml:\d+: storage: 'nope://bucket/runs': no filesystem takes nope://"):
        load_spec(sweep)


def test_dry_run_fails_the_storage_check_when_the_bucket_cannot_be_reached(tmp_path, tiny_sweep, free_port):
    """An S3 endpoint nobody listens on: the dry run says which check failed and why, no
    Traceback, and writes nothing locally."""
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_ACCESS_KEY_ID="k",
               AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="us-east-1", AWS_MAX_ATTEMPTS="1")
    r = subprocess.run([*BENCH, "sweep", str(tiny_sweep(tmp_path, file="ok.yaml")), "--storage", "s3://bench/runs",
                        "--dry-run"], capture_output=True, text=True, cwd=tmp_path, timeout=180, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "check 'storage' failed: s3://bench/runs: cannot write there" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "runs").exists()
