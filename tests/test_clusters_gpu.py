"""The GPU path a cluster's GPU node runs, on a machine with a real GPU: a short sweep on one GPU.

`clusters/sweeps/gpu-smoke.yaml`, cut down (one cell, one epoch, two batches, a smaller
synthetic H.264 dataset), through `bench sweep` on a local Ray that detects the GPU. The trial
asks for one GPU; the device is chosen at run time, so here it must be CUDA: the checkpointed
weights are CUDA tensors. (DALI's GPU decoder on the same footage is tests/test_pipelines.py's
GPU test.) Skipped where torch sees no CUDA device (conftest); the CPU side of the same code is
tests/test_multinode.py. Not run yet: no GPU was available to the session that wrote it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.gpu, pytest.mark.ray, pytest.mark.slow]

SMOKE = Path(__file__).resolve().parents[1] / "clusters" / "sweeps" / "gpu-smoke.yaml"


def test_short_sweep_on_one_gpu_trains_on_cuda(tmp_path, capsys):
    import ray
    import torch

    from bench.cli import main
    from bench.sweep.results import read_sweep

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if ray.is_initialized():
        ray.shutdown()
    doc = yaml.safe_load(SMOKE.read_text())
    ds = doc["datasets"]["synth-h264"]
    ds["root"] = str(tmp_path / "data")
    ds["synthetic"].update(num_classes=3, clips_per_class=3, valid_clips_per_class=2, size=[160, 120])
    doc["storage"] = str(tmp_path / "runs")
    doc["grid"]["cells"] = ["a"]
    doc["stages"][0]["epochs"] = 1
    doc["train"].update(batch_size=4, max_train_batches=2, max_val_batches=1, data_workers=0)
    doc["resources"] = {"cpu": 1, "gpu": 1}
    sweep = tmp_path / "gpu-smoke.yaml"
    sweep.write_text(yaml.safe_dump(doc))

    rc = main(["sweep", str(sweep), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    out = capsys.readouterr()
    _, trials = read_sweep(tmp_path / "runs" / doc["name"])
    errors = {t.name: (t.dir / "error.txt").read_text()[-1500:] for t in trials if (t.dir / "error.txt").is_file()}
    assert rc == 0 and not errors, f"bench sweep exited {rc}; {errors}\n{out.out[-3000:]}{out.err[-3000:]}"
    assert len(trials) == 1 and trials[0].status == "TERMINATED"
    t = trials[0]
    assert t.config["use_gpu"] is True
    final = t.final
    assert final is not None and math.isfinite(final["train_loss"]) and final["train_clips_per_s"] > 0
    lines = [json.loads(x) for x in (t.dir / "node.json").read_text().splitlines() if x.strip()]
    assert lines and all(line["resources"].get("GPU") == pytest.approx(1.0) for line in lines)
    state = torch.load(t.checkpoint / "state.pt", weights_only=True)     # no map_location: keep devices
    devices = {v.device.type for v in state["model"].values() if isinstance(v, torch.Tensor)}
    assert devices == {"cuda"}, f"trained on {devices}"
