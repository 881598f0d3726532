"""The synthetic generator: real layouts, determinism, motion-only classes, codecs."""

from __future__ import annotations

import filecmp
import importlib.resources
import json
from pathlib import Path

import numpy as np
import pytest

from bench.data import synth
from bench.data.formats import load_index
from bench.data.index import NO_LABEL

SMALL = dict(num_classes=4, clips_per_class=2, valid_clips_per_class=1, test_clips_per_class=1,
             size=(64, 48), length_scale=0.25, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _decode(path: Path) -> tuple[str, str, int, np.ndarray]:
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(st)])
        return st.codec_context.name, st.codec_context.codec_tag, len(frames), frames


@pytest.fixture(scope="module")
def isogd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.synthesize("isogd", tmp_path_factory.mktemp("isogd") / "ds", seed=3, **SMALL)


@pytest.fixture(scope="module")
def jester_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth.synthesize("jester", tmp_path_factory.mktemp("jester") / "ds", seed=3, **SMALL)


# -- classes ----------------------------------------------------------------------------------

def test_class_names_unique_and_paired() -> None:
    names = synth.class_names(synth.MAX_CLASSES)
    assert len(set(names)) == synth.MAX_CLASSES
    assert names[:4] == ["swipe right", "swipe left", "swipe down", "swipe up"]
    for label in range(0, 60, 2):
        a, b = synth.gesture_class(label), synth.gesture_class(label + 1)
        assert (a.family, a.fingers, a.repeats, a.sideways) == (b.family, b.fingers, b.repeats, b.sideways)
        assert (a.member, b.member) == (0, 1)
    with pytest.raises(ValueError, match="num_classes"):
        synth.class_names(synth.MAX_CLASSES + 1)
    with pytest.raises(ValueError, match="num_classes"):
        synth.class_names(1)


# -- layouts ----------------------------------------------------------------------------------

def test_isogd_layout_and_lists(isogd_root: Path) -> None:
    root = isogd_root
    assert (root / "classes.txt").read_text().splitlines() == synth.class_names(4)
    expected = {"train": 8, "valid": 4, "test": 4}
    for split, n in expected.items():
        lines = (root / f"{split}_list.txt").read_text().splitlines()
        assert len(lines) == n
        for i, line in enumerate(lines):
            m, k, label = line.split()
            assert m == f"{split}/001/M_{i + 1:05d}.avi" and k == f"{split}/001/K_{i + 1:05d}.avi"
            assert int(label) == i % 4 + 1           # 1-based, in the labelled test list too
            assert (root / m).is_file() and (root / k).is_file()
    # 200 videos a folder, numbered per split, as in the real lists
    real = (importlib.resources.files("bench") / "resources/isogd/valid_list.txt").read_text()
    assert real.splitlines()[200].split()[0] == synth._isogd_rel("valid", 201, "M") == "valid/002/M_00201.avi"
    man = json.loads((root / "SYNTHETIC.json").read_text())
    assert man["synthetic"] is True and man["options"]["seed"] == 3
    assert man["options"]["codec"] == "mjpeg" and man["options"]["size"] == [64, 48]
    assert man["test_labels"] == {f"test/001/M_{i + 1:05d}": i % 4 for i in range(4)}
    assert man["reversal_pairs"] == [[0, 1], [2, 3]]
    names = synth.class_names(4)
    assert [(names[a], names[b]) for a, b in man["reversal_pairs"]] == [("swipe right", "swipe left"),
                                                                       ("swipe down", "swipe up")]
    assert "synthetic" in (root / "SYNTHETIC.md").read_text().lower()


def test_isogd_reads_back_through_load_index(isogd_root: Path) -> None:
    man = json.loads((isogd_root / "SYNTHETIC.json").read_text())
    for split in ("train", "valid", "test"):
        index = load_index("isogd", isogd_root, split, probe=True)
        assert index.classes == synth.class_names(4)
        assert index.modalities == ("rgb", "depth")
        ids = [f"{split}/001/M_{i + 1:05d}" for i in range(len(index))]
        assert [s.sample_id for s in index.samples] == ids
        want = [i % 4 for i in range(len(index))]             # the test list is labelled too
        assert [s.label for s in index.samples] == want
        counts = [s.num_frames for s in index.samples]
        assert sum(counts) == man["splits"][split]["frames_total"]
    # RGB and depth of a clip have the same frame count and size; depth is gray content
    s = load_index("isogd", isogd_root, "train").samples[0]
    codec, _, n_rgb, rgb = _decode(s.paths["rgb"])
    _, _, n_dep, dep = _decode(s.paths["depth"])
    assert codec == "mjpeg" and n_rgb == n_dep and rgb.shape == dep.shape == (n_rgb, 48, 64, 3)
    assert np.abs(dep[..., 0].astype(int) - dep[..., 2]).mean() < 2.0


def test_jester_layout_and_csvs(jester_root: Path) -> None:
    root = jester_root
    names = synth.class_names(4)
    assert (root / "jester-v1-labels.csv").read_text().splitlines() == names
    train = [line.split(";") for line in (root / "jester-v1-train.csv").read_text().splitlines()]
    valid = [line.split(";") for line in (root / "jester-v1-validation.csv").read_text().splitlines()]
    test = (root / "jester-v1-test.csv").read_text().splitlines()
    assert [i for i, _ in train] == [str(i) for i in range(1, 9)]           # ids unique over splits
    assert [i for i, _ in valid] == [str(i) for i in range(9, 13)]
    assert test == [str(i) for i in range(13, 17)]
    assert [n for _, n in train] == [names[i % 4] for i in range(8)]
    for clip in [i for i, _ in train + valid] + test:
        rgb = sorted((root / "20bn-jester-v1" / clip).iterdir())
        dep = sorted((root / "20bn-jester-v1-depth" / clip).iterdir())
        assert [p.name for p in rgb] == [f"{k:05d}.jpg" for k in range(1, len(rgb) + 1)]
        assert [p.name for p in dep] == [p.name for p in rgb]
    index = load_index("jester", root, "valid", probe=True)
    assert index.classes == names and index.modalities == ("rgb", "depth")
    assert [(s.sample_id, s.label) for s in index.samples] == [(str(9 + i), i) for i in range(4)]
    assert all(s.num_frames >= synth.MIN_FRAMES for s in index.samples)
    assert [s.label for s in load_index("jester", root, "test").samples] == [NO_LABEL] * 4


def test_rgb_only_and_refusals(tmp_path: Path) -> None:
    out = synth.synthesize("jester", tmp_path / "j", seed=0, modalities=("rgb",), **SMALL)
    assert not (out / "20bn-jester-v1-depth").exists()
    assert load_index("jester", out, "train").modalities == ("rgb",)
    with pytest.raises(ValueError, match="not empty"):
        synth.synthesize("jester", out, seed=0, **SMALL)
    synth.synthesize("jester", out, seed=1, overwrite=True, **{**SMALL, "num_classes": 2})
    assert (out / "jester-v1-labels.csv").read_text().splitlines() == synth.class_names(2)
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        synth.synthesize("jester", other, overwrite=True, **SMALL)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="size"):
        synth.synthesize("isogd", tmp_path / "x", **{**SMALL, "size": (63, 48)})
    with pytest.raises(ValueError, match="codec"):
        synth.synthesize("isogd", tmp_path / "x", codec="theora", **SMALL)
    with pytest.raises(ValueError, match="modalities"):
        synth.synthesize("isogd", tmp_path / "x", modalities=("depth",), **SMALL)


def test_cli_writes_dataset_and_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main

    out = tmp_path / "cli"
    rc = main(["data", "synth", "--format", "isogd", "--out", str(out), "--classes", "2",
               "--clips-per-class", "1", "--valid-clips-per-class", "1", "--test-clips-per-class", "0",
               "--size", "48x32", "--length-scale", "0.2", "--codec", "mpeg4", "--modalities", "rgb"])
    assert rc == 0 and "clips/s" in capsys.readouterr().out
    assert len((out / "train_list.txt").read_text().splitlines()) == 2
    assert (out / "test_list.txt").read_text() == ""
    assert not list(out.rglob("K_*.avi"))
    assert _decode(out / "train/001/M_00001.avi")[:2] == ("mpeg4", "XVID")
    assert main(["data", "synth", "--format", "isogd", "--out", str(out)]) == 2   # not empty
    assert "not empty" in capsys.readouterr().err


# -- determinism ------------------------------------------------------------------------------

def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path, isogd_root: Path) -> None:
    again = synth.synthesize("isogd", tmp_path / "again", seed=3, workers=2, **SMALL)
    a, b = _files(isogd_root), _files(again)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    other = synth.synthesize("isogd", tmp_path / "other", seed=4, **SMALL)
    c = _files(other)
    videos = [k for k in a if k.endswith(".avi")]
    assert all(a[k] != c[k] for k in videos)


def test_clip_rng_depends_on_split_and_index_only() -> None:
    x = synth.clip_rng(7, "train", 5).random(4)
    assert np.array_equal(x, synth.clip_rng(7, "train", 5).random(4))
    assert not np.array_equal(x, synth.clip_rng(7, "valid", 5).random(4))
    assert not np.array_equal(x, synth.clip_rng(7, "train", 6).random(4))


# -- motion is the only cue -------------------------------------------------------------------

@pytest.mark.parametrize("family", range(len(synth.FAMILIES)))
def test_pair_members_are_time_reversals(family: int) -> None:
    """Same subject, member 1 = member 0 played backwards, so a frame bag cannot separate them."""
    for seed in range(3):
        fwd = synth.hand_track(2 * family, 30, (112, 84), np.random.default_rng(seed))
        bwd = synth.hand_track(2 * family + 1, 30, (112, 84), np.random.default_rng(seed))
        for name in ("cx", "cy", "angle", "radius", "close", "spread"):
            np.testing.assert_allclose(getattr(bwd, name)[::-1], getattr(fwd, name), atol=1e-9)
        # ... and the clip actually moves (not a static pose)
        moving = [np.ptp(getattr(fwd, n)) for n in ("cx", "cy", "angle", "radius", "close", "spread")]
        assert max(moving) > 0.2


def _hand_centroids(depth: np.ndarray, track: synth.HandTrack) -> np.ndarray:
    """Hand centroid (x, y) per frame from the depth video: the hand is the nearest surface."""
    thr = synth.hand_depth_value(track.close.min()) - 10
    out = []
    for d in depth:
        ys, xs = np.nonzero(d > thr)
        assert len(xs) > 10, "hand not visible in depth"
        out.append((xs.mean(), ys.mean()))
    return np.array(out)


def test_rendered_swipes_move_opposite_ways_and_reverse() -> None:
    size, n = (112, 84), 24
    for seed in range(3):
        _, dr, tr = synth.render_clip(0, n, size, np.random.default_rng(seed))    # swipe right
        _, dl, tl = synth.render_clip(1, n, size, np.random.default_rng(seed))    # swipe left
        right, left = _hand_centroids(dr, tr), _hand_centroids(dl, tl)
        # the stroke: from the leftmost to the rightmost point (swipe right), or back (left)
        lo, hi = int(np.argmin(right[:, 0])), int(np.argmax(right[:, 0]))
        assert lo < hi and right[hi, 0] - right[lo, 0] > 0.3 * size[0]
        lo, hi = int(np.argmin(left[:, 0])), int(np.argmax(left[:, 0]))
        assert hi < lo and left[hi, 0] - left[lo, 0] > 0.3 * size[0]
        # ... between the same rest pose at both ends (so the sampler's first frame is no cue)
        np.testing.assert_allclose(right[0], right[-1], atol=0.75)
        # reversing the "swipe left" frames gives the "swipe right" motion, pixel for pixel
        np.testing.assert_allclose(left[::-1], right, atol=0.75)
        # as a bag of frames the two clips are the same: sorted x positions coincide
        np.testing.assert_allclose(np.sort(left[:, 0]), np.sort(right[:, 0]), atol=0.75)


def test_depth_brightens_as_the_hand_approaches() -> None:
    for seed in range(3):
        rgb, dep, tr = synth.render_clip(8, 30, (112, 84), np.random.default_rng(seed))   # push
        assert synth.gesture_class(8).name == "push toward camera"
        # hand depth per frame: the mean of the frame's brightest 40 pixels (the hand)
        hand = np.sort(dep.reshape(len(dep), -1), axis=1)[:, -40:].mean(axis=1)
        # the stroke: from the farthest to the nearest point, after an approach from rest
        far, near = int(np.argmin(hand)), int(np.argmax(hand))
        assert far < near and hand[near] - hand[far] > 40
        assert np.corrcoef(hand[far:near + 1], np.arange(far, near + 1))[0, 1] > 0.8
        _, dep_pull, _ = synth.render_clip(9, 30, (112, 84), np.random.default_rng(seed))
        pull = np.sort(dep_pull.reshape(30, -1), axis=1)[:, -40:].mean(axis=1)
        far, near = int(np.argmin(pull)), int(np.argmax(pull))
        assert near < far and pull[near] - pull[far] > 40
        # depth is aligned with RGB: the hand's depth pixels are skin-coloured in RGB, not background
        assert rgb.shape[:3] == dep.shape


# -- lengths ----------------------------------------------------------------------------------

def test_frame_counts_follow_the_real_distribution() -> None:
    for fmt, split, lo, hi, mean in [("isogd", "train", 9, 405, 41), ("jester", "valid", 13, 67, 36)]:
        counts = synth.frame_count_table(fmt)[split]
        assert counts.min() == lo and counts.max() == hi and abs(counts.mean() - mean) < 1.5
        rng = np.random.default_rng(0)
        for scale in (1.0, 0.5):
            draws = np.array([synth.sample_num_frames(rng, counts, scale) for _ in range(3000)])
            assert draws.min() >= max(synth.MIN_FRAMES, round(lo * scale))
            assert draws.max() <= round(hi * scale)
            assert abs(draws.mean() / (mean * scale) - 1) < 0.1
            assert (draws % 2 == 1).all()           # odd: see sample_num_frames
    rng = np.random.default_rng(0)
    assert synth.sample_num_frames(rng, np.array([9]), 0.1) == synth.MIN_FRAMES


def test_written_frame_counts_within_scaled_range(isogd_root: Path) -> None:
    man = json.loads((isogd_root / "SYNTHETIC.json").read_text())
    for split, info in man["splits"].items():
        assert synth.MIN_FRAMES <= info["frames_min"] <= info["frames_max"] <= round(405 * 0.25)


# -- codecs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("codec,decoder,tag", [("mjpeg", "mjpeg", "MJPG"), ("vp9", "vp9", "VP90"),
                                               ("mpeg4", "mpeg4", "XVID"), ("h264", "h264", "H264")])
def test_codec_round_trip(tmp_path: Path, codec: str, decoder: str, tag: str) -> None:
    rgb, dep, _ = synth.render_clip(2, 12, (64, 48), np.random.default_rng(0))
    synth.write_video(tmp_path / "M.avi", rgb, codec=codec)
    synth.write_video(tmp_path / "K.avi", dep, codec=codec)
    name, got_tag, n, frames = _decode(tmp_path / "M.avi")
    assert (name, got_tag, n) == (decoder, tag, 12)
    assert np.abs(frames.astype(int) - rgb).mean() < 12
    _, _, n_dep, dframes = _decode(tmp_path / "K.avi")
    assert n_dep == 12 and np.abs(dframes[..., 0].astype(int) - dep).mean() < 6
    assert not list(tmp_path.glob(".*"))   # no temporary file left behind
    # the same frames give the same bytes (single-threaded encoder) -- except x264, whose bytes
    # differed in about 3 of 15 runs of this test in a process that had run the model tests
    # before (never in a fresh process; cause not found, x264's floating-point rate control is
    # the suspect): there, the decoded clips must agree to a fraction of a grey level
    synth.write_video(tmp_path / "M2.avi", rgb, codec=codec)
    if codec != "h264":
        assert filecmp.cmp(tmp_path / "M.avi", tmp_path / "M2.avi", shallow=False)
    else:
        again = _decode(tmp_path / "M2.avi")[3]
        assert again.shape == frames.shape and np.abs(again.astype(int) - frames.astype(int)).mean() < 1.0


@pytest.mark.parametrize("codec", ["mjpeg", "vp9"])
def test_dali_cpu_reads_the_videos(tmp_path: Path, codec: str) -> None:
    """DALI's CPU video reader (the pipelines' no-GPU path) decodes MJPEG and VP9-in-AVI."""
    from nvidia.dali import fn, pipeline_def

    root = synth.synthesize("isogd", tmp_path / codec, codec=codec, seed=0,
                            **{**SMALL, "num_classes": 2, "valid_clips_per_class": 0,
                               "test_clips_per_class": 0, "length_scale": 0.3})
    index = load_index("isogd", root, "train", probe=True)
    files = [str(s.paths[m]) for s in index.samples for m in ("rgb", "depth")]
    seq = 8

    @pipeline_def(batch_size=2, num_threads=1, device_id=None)
    def pipe():
        video, label = fn.experimental.readers.video(device="cpu", filenames=files,
                                                     labels=list(range(len(files))),
                                                     sequence_length=seq, name="reader")
        return video, label

    p = pipe()
    p.build()
    # every file is read (none skipped): DALI counts every whole sequence of every file
    expected = sum(s.num_frames // seq for s in index.samples) * 2
    assert p.epoch_size("reader") == expected
    video, _ = p.run()
    assert np.asarray(video[0]).shape == (seq, 48, 64, 3)
