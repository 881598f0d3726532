"""Fractional GPUs: two trials of ``gpu: 0.5`` share one GPU at the same time (needs CUDA)."""

from __future__ import annotations

import io
import json

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.ray]


@pytest.fixture(scope="module")
def local_ray_settings():
    """`local_ray` here: one GPU for both trials, CPUs to spare."""
    return {"num_cpus": 4, "num_gpus": 1}


@pytest.mark.timeout(600)
def test_two_trials_share_one_gpu(tmp_path, tiny_sweep, local_ray):
    import torch

    from bench.sweep.run import run_sweep
    from bench.sweep.spec import load_spec

    spec = load_spec(tiny_sweep(tmp_path, name="halfgpu", experiment="tests-gpu",
                                synthetic={"clips_per_class": 4, "size": [64, 48], "length_scale": 0.4},
                                clip_len=8, image_size=56, train={"batch_size": 4},
                                resources={"cpu": 1, "gpu": 0.5}, reuse_actors=False))
    o = run_sweep(spec, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", stream=io.StringIO())
    assert o.ok and len(o.trials) == 2
    spans = []
    for t in o.trials:
        (start,) = [json.loads(x) for x in (t.dir / "node.json").read_text().splitlines()]
        assert start["resources"].get("GPU") == 0.5
        assert t.config["use_gpu"] is True and t.last_epoch == 3
        first, last = t.results[0], t.results[-1]
        spans.append((start["time"], float(last["timestamp"])))
        assert first["params"] > 0
        # trained on the GPU, not only holding Ray's GPU resource: the saved weights are CUDA tensors
        state = torch.load(t.checkpoint / "state.pt", weights_only=True)      # no map_location
        assert {v.device.type for v in state["model"].values() if isinstance(v, torch.Tensor)} == {"cuda"}
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1          # both held half of the one GPU at the same time
    assert torch.cuda.device_count() >= 1
