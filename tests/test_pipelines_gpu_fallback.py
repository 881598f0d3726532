"""`auto` with a GPU: one file per (container, codec) goes through DALI's GPU decoder at loader
construction, and what fails there goes to the CPU decoders, with the reason -- telling the
machine's failures (no driver, a pipeline that does not build, a codec this GPU's NVDEC lacks)
from bad files. Runs on a CPU: a stand-in for the GPU decoder behaves as a GPU's would
(decodes by PyAV, or fails the way DALI does); the real GPU path is in test_sweep_gpu.py."""

from __future__ import annotations

import logging

import pytest
from test_pipelines import frames_for, make_index, write_video

import pipelines.dali as dali_mod
import pipelines.loader as loader_mod
from bench.errors import DataError
from pipelines import make_loader
from pipelines.decoders import decode_pyav


class FakeGpuDecoder:
    """DaliDecoder's interface; ``fails``: codecs it returns a DataError for (an NVDEC that lacks
    them); ``broken``: every decode raises, as a pipeline that does not build."""

    fails: frozenset = frozenset()
    broken: str | None = None

    def __init__(self, *, device, max_batch, clip_len, num_threads=1, device_id=None):
        self.device, self.name = device, f"dali-{device}"
        self.decoded = 0

    def supports(self, codec):
        return True

    def describe_codecs(self):
        return "everything"

    def decode(self, requests):
        if self.broken:
            raise RuntimeError(self.broken)
        out = []
        for r in requests:
            if r.media.codec in self.fails:
                out.append(DataError(r.media.path, f"nvdec: unsupported codec {r.media.codec}"))
            else:
                self.decoded += 1
                out.append(decode_pyav(r))
        return out


@pytest.fixture
def fake_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(dali_mod, "gpu_visible", lambda: True)
    monkeypatch.setattr(loader_mod, "dali_installed", lambda: True)
    monkeypatch.setattr(dali_mod, "DaliDecoder", FakeGpuDecoder)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    FakeGpuDecoder.fails, FakeGpuDecoder.broken = frozenset(), None
    return FakeGpuDecoder


def _mixed(tmp_path):
    paths = [write_video(tmp_path / f"m{i}.avi", "mjpeg", frames_for(12, seed=i)) for i in range(2)]
    paths += [write_video(tmp_path / f"x{i}.mp4", "h264", frames_for(12, seed=10 + i)) for i in range(2)]
    return make_index(paths)


def test_a_codec_the_gpu_cannot_read_goes_to_the_cpu_with_a_warning(tmp_path, fake_gpu, caplog):
    fake_gpu.fails = frozenset({"h264"})
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        loader = make_loader(_mixed(tmp_path), backend="auto", clip_len=4, batch_size=4)
    assert loader.backend == "dali-gpu"
    assert "h264 in mp4: the GPU decoder failed on a file the CPU decodes" in caplog.text
    assert "unsupported codec h264" in caplog.text
    batches = list(loader)
    assert sum(len(b["sample_id"]) for b in batches) == 4 and not loader.skipped
    assert loader.decoded_by == {"dali-gpu": 2, "opencv": 2}


def test_an_environment_failure_sends_everything_to_the_cpu_and_blames_no_file(tmp_path, fake_gpu, caplog):
    fake_gpu.broken = "CUDA driver version is insufficient for CUDA runtime version"
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        loader = make_loader(_mixed(tmp_path), backend="auto", clip_len=4, batch_size=4)
    assert loader.backend in ("pyav", "opencv")
    assert "CUDA driver version is insufficient" in loader.backend_reason
    assert "does not work here" in caplog.text
    assert sum(len(b["sample_id"]) for b in loader) == 4 and not loader.skipped


def test_a_forced_dali_gpu_fails_with_the_environments_reason(tmp_path, fake_gpu):
    fake_gpu.broken = "nvdec: no decoder available on this device"
    with pytest.raises(ValueError, match=r"'dali-gpu' cannot decode on this machine: RuntimeError: nvdec: no decoder"):
        make_loader(_mixed(tmp_path), backend="dali-gpu", clip_len=4)
    fake_gpu.broken, fake_gpu.fails = None, frozenset({"h264"})
    with pytest.raises(DataError, match=r"x\d\.mp4.*cannot read h264 in mp4"):
        make_loader(_mixed(tmp_path), backend="dali-gpu", clip_len=4)


def test_a_bad_file_is_not_blamed_on_the_gpu(tmp_path, fake_gpu):
    """A file no decoder reads keeps its group on the GPU; it is reported when loaded."""
    fake_gpu.fails = frozenset({"mjpeg"})         # fails on the GPU ...
    paths = [write_video(tmp_path / f"m{i}.avi", "mjpeg", frames_for(12, seed=i)) for i in range(2)]
    index = make_index(paths)
    real = loader_mod.DECODERS[loader_mod.CPU_FALLBACK]
    try:                                          # ... and on the CPU: the file is bad
        loader_mod.DECODERS[loader_mod.CPU_FALLBACK] = lambda req: (_ for _ in ()).throw(DataError(req.media.path, "bad"))
        loader = make_loader(index, backend="auto", clip_len=4)
    finally:
        loader_mod.DECODERS[loader_mod.CPU_FALLBACK] = real
    assert loader.backend == "dali-gpu" and not loader._gpu_refused
