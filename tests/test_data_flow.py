"""Optical flow: the 8-bit encoding, the estimators, and the dataset writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.data import flow, synth
from bench.data.formats import load_index
from bench.data.probe import list_frame_files, probe_video

SMALL = dict(num_classes=2, clips_per_class=2, valid_clips_per_class=1, test_clips_per_class=1,
             size=(64, 48), length_scale=0.25, progress=False)


def _texture(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth random texture: every pixel has gradients, so flow is well defined."""
    import cv2

    low = np.random.default_rng(seed).uniform(0, 255, (h // 8, w // 8)).astype(np.float32)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def _decode_rgb(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


# -- encoding ---------------------------------------------------------------------------------

def test_encoding_matches_the_documented_formula() -> None:
    f = np.array([[[0.0, 0.0], [3.0, -3.0], [20.0, -20.0], [50.0, -50.0]]], dtype=np.float32)
    enc = flow.encode_flow(f)
    assert enc.dtype == np.uint8 and enc.shape == (1, 4, 3)
    assert enc[0, :, 0].tolist() == [128, round(128 + 3 * 6.4), 255, 255]
    assert enc[0, :, 1].tolist() == [128, round(128 - 3 * 6.4), 0, 0]
    assert (enc[..., 2] == 128).all()
    np.testing.assert_allclose(flow.decode_flow(enc)[0, :2], f[0, :2], atol=0.5 / 6.4)
    with pytest.raises(ValueError, match="2 channels"):
        flow.encode_flow(np.zeros((4, 4, 3)))


# -- estimators -------------------------------------------------------------------------------

def _available_cpu_methods() -> list[str]:
    import cv2

    return ["dis", "farneback"] + (["tvl1"] if hasattr(cv2, "optflow") else [])


@pytest.mark.parametrize("method", _available_cpu_methods())
def test_shift_right_and_static(method: str) -> None:
    a = _texture()
    b = np.roll(a, 3, axis=1)                       # content moves +3 px in x
    c = np.roll(a, 2, axis=0)                       # content moves +2 px in y
    enc = flow.compute_flow(np.stack([a, b, b, c]), method=method)
    assert enc.shape == (4, 96, 128, 3)
    inner = (slice(16, -16), slice(16, -16))        # away from the wrapped border
    assert (enc[0] == 128).all()                    # flow(0) is defined as zero motion
    shift_x, static, shift_y = enc[1][inner], enc[2][inner], enc[3][inner]
    assert shift_x[..., 0].mean() > 128 + 2.5 * 6.4     # ~147 expected
    assert abs(shift_x[..., 1].mean() - 128) < 2
    assert np.abs(static[..., :2].astype(int) - 128).mean() < 1
    # b -> c moves -3 px in x and +2 px in y
    assert shift_y[..., 0].mean() < 128 - 2.5 * 6.4 and shift_y[..., 1].mean() > 128 + 1.5 * 6.4


def test_tvl1_needs_opencv_contrib() -> None:
    import cv2

    if hasattr(cv2, "optflow"):
        assert flow.FlowEstimator("tvl1").method == "tvl1"
    else:
        with pytest.raises(ValueError, match="opencv-contrib"):
            flow.FlowEstimator("tvl1")
    with pytest.raises(ValueError, match="method"):
        flow.FlowEstimator("raft")


def test_single_frame_gives_one_zero_frame() -> None:
    out = flow.compute_flow(_texture()[None])
    assert out.shape == (1, 96, 128, 3) and (out == 128).all()


@pytest.mark.gpu
def test_dali_gpu_flow_shift() -> None:
    a = np.stack([_texture(240, 320)] * 3, axis=-1)
    b = np.roll(a, 4, axis=1)
    enc = flow.compute_flow(np.stack([a, b, b]), method="dali")
    inner = (slice(32, -32), slice(32, -32))
    assert enc[1][inner][..., 0].mean() > 128 + 3 * 6.4
    assert abs(enc[1][inner][..., 1].mean() - 128) < 3
    assert np.abs(enc[2][inner][..., :2].astype(int) - 128).mean() < 2


def test_dali_refused_without_gpu(tmp_path: Path) -> None:
    if flow.gpu_flow_available():
        pytest.skip("a GPU is visible: the refusal path does not apply")
    with pytest.raises(ValueError, match="GPU"):
        flow.compute_flow(np.zeros((2, 32, 32), np.uint8), method="dali")
    with pytest.raises(ValueError, match="GPU"):
        flow.compute_flow_dataset("isogd", tmp_path, method="dali", progress=False)


# -- datasets ---------------------------------------------------------------------------------

@pytest.fixture()
def isogd_root(tmp_path: Path) -> Path:
    return synth.synthesize("isogd", tmp_path / "iso", seed=1, **SMALL)


def test_isogd_flow_beside_rgb_same_codec_and_frames(isogd_root: Path) -> None:
    r = flow.compute_flow_dataset("isogd", isogd_root, progress=False)
    assert (r.computed, r.skipped) == (8, 0)
    total = 0
    for split in ("train", "valid", "test"):
        index = load_index("isogd", isogd_root, split)
        assert index.modalities == ("rgb", "depth", "flow")     # the reader finds it
        for s in index.samples:
            rgb, fl = probe_video(s.paths["rgb"]), probe_video(s.paths["flow"])
            assert s.paths["flow"].name == s.paths["rgb"].name.replace("M_", "F_")
            assert fl.codec == rgb.codec == "mjpeg"
            assert (fl.num_frames, fl.width, fl.height) == (rgb.num_frames, rgb.width, rgb.height)
            total += rgb.num_frames - 1
    assert r.pairs == total and r.pairs_per_second > 0
    # the flow of "swipe right" points right, of "swipe left" left (first frame: zero motion)
    right = _decode_rgb(isogd_root / "train/001/F_00001.avi").astype(int) - 128
    left = _decode_rgb(isogd_root / "train/001/F_00002.avi").astype(int) - 128
    assert np.abs(right[0]).mean() < 3
    moving_r, moving_l = np.abs(right[..., 0]) > 6, np.abs(left[..., 0]) > 6
    assert right[..., 0][moving_r].mean() > 3 and left[..., 0][moving_l].mean() < -3
    # a second run finds everything done
    again = flow.compute_flow_dataset("isogd", isogd_root, progress=False)
    assert (again.computed, again.skipped, again.pairs) == (0, 8, 0)


def test_isogd_codec_override_and_split_choice(isogd_root: Path) -> None:
    r = flow.compute_flow_dataset("isogd", isogd_root, splits=["valid"], codec="mpeg4", progress=False)
    assert r.computed == 2
    assert probe_video(isogd_root / "valid/001/F_00001.avi").codec == "mpeg4"
    assert not list((isogd_root / "train").rglob("F_*"))
    with pytest.raises(ValueError, match="codec"):
        flow.compute_flow_dataset("isogd", isogd_root, codec="theora", progress=False)


def test_interrupted_isogd_run_is_invisible_then_resumes(isogd_root: Path, monkeypatch) -> None:
    """The first listed sample's F_ file (what the reader checks) is written last."""
    real = flow._flow_one
    calls = []

    def flaky(task):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(task.dst)
        return real(task)

    monkeypatch.setattr(flow, "_flow_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        flow.compute_flow_dataset("isogd", isogd_root, splits=["train"], progress=False)
    assert len(list((isogd_root / "train").rglob("F_*.avi"))) == 2
    assert not (isogd_root / "train/001/F_00001.avi").exists()
    assert load_index("isogd", isogd_root, "train").modalities == ("rgb", "depth")
    monkeypatch.setattr(flow, "_flow_one", real)
    r = flow.compute_flow_dataset("isogd", isogd_root, splits=["train"], progress=False)
    assert (r.computed, r.skipped) == (2, 2)
    assert load_index("isogd", isogd_root, "train").modalities == ("rgb", "depth", "flow")


def test_jester_flow_folders_with_workers(tmp_path: Path) -> None:
    root = synth.synthesize("jester", tmp_path / "j", seed=2, modalities=("rgb",), **SMALL)
    r = flow.compute_flow_dataset("jester", root, workers=2, progress=False)
    assert (r.computed, r.skipped) == (8, 0)
    assert not (root / "20bn-jester-v1-flow.partial").exists()
    index = load_index("jester", root, "train")
    assert index.modalities == ("rgb", "flow")
    for s in index.samples:
        rgb, fl = list_frame_files(s.paths["rgb"]), list_frame_files(s.paths["flow"])
        assert [p.name for p in fl] == [p.name for p in rgb]
    # resumable: a removed folder is recomputed, the rest skipped
    import shutil

    shutil.rmtree(root / "20bn-jester-v1-flow" / "3")
    again = flow.compute_flow_dataset("jester", root, progress=False)
    assert (again.computed, again.skipped) == (1, 7)
    assert len(list_frame_files(root / "20bn-jester-v1-flow" / "3")) == len(
        list_frame_files(root / "20bn-jester-v1" / "3"))


def test_cli_flow(isogd_root: Path, capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main

    assert main(["data", "flow", "--format", "isogd", "--root", str(isogd_root), "--splits", "test",
                 "--method", "farneback"]) == 0
    assert "pairs/s" in capsys.readouterr().out
    assert (isogd_root / "test/001/F_00001.avi").is_file()
    assert main(["data", "flow", "--format", "isogd", "--root", str(isogd_root / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
