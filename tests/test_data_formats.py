"""Readers for the real formats (bench.data.formats) and probing (bench.data.probe).

Uses the real split metadata packaged in bench/resources, the real footage in
tests/data/real-gestures, and real broken files made from them.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest
from _helpers_data import (
    REAL,
    REAL_FRAME_COUNTS,
    REAL_JPG_DIR,
    copy_real_jester_layout,
    jester_labels,
    make_framelist,
    make_isogd,
    make_jester,
    truncate_half,
    write_jester_validation_csv,
    write_video,
)

from bench.data.formats import (
    load_index,
    read_cached_counts,
    read_framelist,
    read_isogd_list,
    read_jester,
    write_index_cache,
)
from bench.data.index import NO_LABEL
from bench.data.probe import list_frame_files, probe_video, scan_frame_folder
from bench.errors import DataError

RES = files("bench") / "resources"


# ------------------------------------------------------------------ probing real footage


@pytest.mark.parametrize("name, frames, size", [("swipe_up_down", 57, (446, 296)), ("zoom_in_out", 29, (488, 316))])
def test_probe_real_h264_and_vp9(name: str, frames: int, size: tuple[int, int]) -> None:
    mp4 = probe_video(REAL / "mp4" / f"{name}.mp4")
    webm = probe_video(REAL / "webm" / f"{name}.webm")
    assert (mp4.codec, mp4.num_frames, (mp4.width, mp4.height)) == ("h264", frames, size)
    assert (webm.codec, webm.num_frames, (webm.width, webm.height)) == ("vp9", frames, size)
    assert webm.fps == pytest.approx(16.67, abs=0.01)
    # decoding every frame agrees with the packet count
    assert probe_video(REAL / "webm" / f"{name}.webm", verify="full").num_frames == frames


def test_probe_mjpeg_avi(tmp_path: Path) -> None:
    info = probe_video(write_video(tmp_path / "x.avi", 7))
    assert (info.codec, info.num_frames, info.width, info.height, info.fps) == ("mjpeg", 7, 32, 24, 10.0)


def test_list_frame_files_real_jester_folders() -> None:
    counts = {d.name: len(list_frame_files(d)) for d in REAL_JPG_DIR.iterdir()}
    assert counts == REAL_FRAME_COUNTS
    frames = list_frame_files(REAL_JPG_DIR / "5")
    assert [f.name for f in frames[:2]] == ["00001.jpg", "00002.jpg"] and frames[-1].name == "00015.jpg"


# ------------------------------------------------------------------ probing broken files


def test_probe_missing_video(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing video") as e:
        probe_video(tmp_path / "nope.avi")
    assert e.value.path == str(tmp_path / "nope.avi")


def test_probe_corrupt_video_random_bytes(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.avi"
    bad.write_bytes(os.urandom(20_000))
    with pytest.raises(DataError, match="not a readable video") as e:
        probe_video(bad)
    assert e.value.path == str(bad)


@pytest.mark.parametrize("src", [REAL / "mp4" / "swipe_up_down.mp4", REAL / "webm" / "swipe_up_down.webm",
                                 REAL / "webm" / "zoom_in_out.webm", None])
def test_probe_truncated_video(tmp_path: Path, src: Path | None) -> None:
    if src is None:
        src = write_video(tmp_path / "full.avi", 12)
    cut = tmp_path / f"half{src.suffix}"
    shutil.copyfile(src, cut)
    truncate_half(cut)
    with pytest.raises(DataError, match="truncated|corrupt|damaged") as e:
        probe_video(cut, verify="none")
    assert e.value.path == str(cut)


def test_probe_video_missing_its_last_bytes(tmp_path: Path) -> None:
    """A download that stopped a few hundred bytes short still fails (the last frame is lost)."""
    for src in (REAL / "webm" / "swipe_up_down.webm", write_video(tmp_path / "full.avi", 12)):
        cut = tmp_path / f"cut{src.suffix}"
        cut.write_bytes(src.read_bytes()[:-300])
        with pytest.raises(DataError, match="truncated|damaged"):
            probe_video(cut)


def test_probe_zero_frame_video(tmp_path: Path) -> None:
    empty = write_video(tmp_path / "zero.avi", 0)
    assert empty.stat().st_size > 0  # a real container with a stream, just no frames
    with pytest.raises(DataError, match="zero frames") as e:
        probe_video(empty)
    assert e.value.path == str(empty)
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        probe_video(tmp_path / "empty.avi")


def test_frame_folder_gap_empty_missing(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    shutil.copytree(REAL_JPG_DIR / "3", clip)
    (clip / "00007.jpg").unlink()
    (clip / "00020.jpg").unlink()
    (clip / "00021.jpg").unlink()
    with pytest.raises(DataError, match="missing frame image 7") as e:
        list_frame_files(clip)
    assert e.value.path == str(clip / "00007.jpg")
    files_, problems = scan_frame_folder(clip)
    assert len(files_) == 26
    assert [p.path for p in problems] == [str(clip / "00007.jpg"), str(clip / "00020.jpg")]
    assert "20..21" in problems[1].reason

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty frame folder"):
        list_frame_files(tmp_path / "empty")
    with pytest.raises(DataError, match="missing frame folder"):
        list_frame_files(tmp_path / "absent")
    (clip / "00001.jpg").unlink()
    with pytest.raises(DataError, match="missing frame image") as e:
        list_frame_files(clip)
    assert e.value.path == str(clip / "00001.jpg")


# ------------------------------------------------------------------ IsoGD, real metadata


@pytest.mark.parametrize("split, lines", [("train", 35_878), ("valid", 5_784), ("test", 6_271)])
def test_isogd_real_lists(tmp_path: Path, split: str, lines: int) -> None:
    shutil.copyfile(RES / f"isogd/{split}_list.txt", tmp_path / f"{split}_list.txt")
    index = load_index("isogd", tmp_path, split)
    assert len(index) == lines
    assert index.num_classes == 249 and index.modalities == ("rgb", "depth")
    labels = Counter(s.label for s in index.samples)
    if split == "test":
        assert set(labels) == {NO_LABEL}
    else:
        assert min(labels) == 0 and max(labels) == 248
        # the 0-based labels agree with the packaged frame_counts.csv, video by video
        with (RES / "isogd/frame_counts.csv").open() as f:
            truth = {r["video"]: int(r["label"]) for r in csv.DictReader(f) if r["split"] == split}
        agree = sum(truth.get(s.sample_id.rsplit("/", 1)[1]) == s.label for s in index.samples)
        assert agree == len(truth)
    first = index.samples[0]
    assert first.sample_id == f"{split}/001/M_00001"
    assert first.paths["rgb"] == tmp_path / f"{split}/001/M_00001.avi"
    assert first.paths["depth"] == tmp_path / f"{split}/001/K_00001.avi"
    assert first.source == f"{tmp_path / f'{split}_list.txt'}:1"


def test_isogd_flow_beside_rgb(tmp_path: Path) -> None:
    root = make_isogd(tmp_path, frames={"train": [4, 5]})
    assert load_index("isogd", root, "train").modalities == ("rgb", "depth")
    index = load_index("isogd", root, "train", modalities=["rgb", "flow"])
    assert index.samples[1].paths["flow"] == root / "train/001/F_00002.avi"
    assert index.modalities == ("rgb", "flow")
    write_video(root / "train/001/F_00001.avi", 4)  # flow present -> picked up by default
    assert load_index("isogd", root, "train").modalities == ("rgb", "depth", "flow")
    assert load_index("isogd", root, "train").classes == [f"gesture_{i}" for i in range(4)]


def test_isogd_probe_and_cache(tmp_path: Path) -> None:
    root = make_isogd(tmp_path, frames={"train": [6, 7, 8]})
    assert [s.num_frames for s in load_index("isogd", root, "train").samples] == [None] * 3
    probed = load_index("isogd", root, "train", probe=True)
    assert [s.num_frames for s in probed.samples] == [6, 7, 8]
    cache = write_index_cache(probed)
    assert cache == root / ".bench/index-train.parquet"
    assert [s.num_frames for s in load_index("isogd", root, "train").samples] == [6, 7, 8]
    assert load_index("isogd", root, "train", use_cache=False).samples[0].num_frames is None
    # a list edited after the cache was written makes the cache stale
    t = cache.stat().st_mtime + 5
    os.utime(root / "train_list.txt", (t, t))
    assert read_cached_counts(root, "train", newer_than=[root / "train_list.txt"]) is None
    assert load_index("isogd", root, "train").samples[0].num_frames is None


def test_cache_written_with_packet_counts_is_ignored(tmp_path: Path) -> None:
    """A cache without the decodable-frames mark (written when probing counted packets) would
    state too many frames for DivX/XviD files: it is ignored, with a warning saying what to do."""
    import polars as pl

    root = make_isogd(tmp_path, frames={"train": [6, 7, 8]})
    cache = write_index_cache(load_index("isogd", root, "train", probe=True))
    assert read_cached_counts(root, "train") == {"train/001/M_00001": 6, "train/001/M_00002": 7,
                                                 "train/001/M_00003": 8}
    pl.read_parquet(cache).write_parquet(cache)          # the same table, without the mark
    with pytest.warns(UserWarning, match="counts packets, not decodable frames; run `bench data prepare`"):
        assert read_cached_counts(root, "train") is None
    with pytest.warns(UserWarning):
        assert load_index("isogd", root, "train").samples[0].num_frames is None


def test_probe_true_names_broken_file_and_line(tmp_path: Path) -> None:
    root = make_isogd(tmp_path, frames={"train": [6, 7, 8]})
    (root / "train/001/K_00002.avi").write_bytes(os.urandom(3000))
    with pytest.raises(DataError) as e:
        load_index("isogd", root, "train", probe=True)
    assert e.value.path == str(root / "train/001/K_00002.avi")
    assert "train_list.txt:2" in e.value.reason


# ------------------------------------------------------------------ Jester


def test_jester_real_validation_metadata(tmp_path: Path) -> None:
    root = write_jester_validation_csv(tmp_path)
    index = load_index("jester", root, "valid")
    assert len(index) == 14_787
    assert index.classes == jester_labels() and index.num_classes == 27
    with (RES / "jester/valid_frame_counts.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [s.sample_id for s in index.samples] == [r["id"] for r in rows]
    assert [s.label for s in index.samples] == [int(r["label"]) for r in rows]
    frames = [int(r["frames"]) for r in rows]
    assert (min(frames), max(frames)) == (13, 67)
    assert index.samples[0].paths == {"rgb": root / "20bn-jester-v1" / rows[0]["id"]}


def test_jester_over_real_frames(tmp_path: Path) -> None:
    names = [ln.split(";")[1] for ln in (REAL / "jester_layout/labels.csv").read_text().split()]
    root = copy_real_jester_layout(tmp_path, names=names)
    index = load_index("jester", root, "train", probe=True)
    assert {s.sample_id: s.num_frames for s in index.samples} == REAL_FRAME_COUNTS
    assert [index.classes[s.label] for s in index.samples] == names
    write_index_cache(index)
    assert [s.num_frames for s in load_index("jester", root, "train").samples] == [56, 57, 29, 30, 15]


def test_jester_extra_modalities_and_test_split(tmp_path: Path) -> None:
    root = make_jester(tmp_path)
    test = load_index("jester", root, "test")
    assert [s.label for s in test.samples] == [NO_LABEL] and test.modalities == ("rgb",)
    (root / "20bn-jester-v1-flow").mkdir()
    assert load_index("jester", root, "train").modalities == ("rgb", "flow")
    with pytest.raises(DataError, match="modality 'depth'"):
        load_index("jester", root, "train", modalities=["rgb", "depth"])


def test_jester_sized_index_builds_fast(tmp_path: Path) -> None:
    """All 148,092 clips of Jester (real validation ids, train/test sized like the release)."""
    root = write_jester_validation_csv(tmp_path)
    labels = jester_labels()
    (root / "jester-v1-train.csv").write_text("".join(f"{200_000 + i};{labels[i % 27]}\n" for i in range(118_562)))
    (root / "jester-v1-test.csv").write_text("".join(f"{400_000 + i}\n" for i in range(14_743)))
    t0, c0 = time.perf_counter(), time.process_time()
    sizes = {split: len(load_index("jester", root, split)) for split in ("train", "valid", "test")}
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"jester-sized index: {sum(sizes.values())} clips in {wall:.2f} s wall, {cpu:.2f} s CPU")
    assert sizes == {"train": 118_562, "valid": 14_787, "test": 14_743}
    assert sum(sizes.values()) == 148_092


# ------------------------------------------------------------------ frame lists


def test_framelist(tmp_path: Path) -> None:
    root = make_framelist(tmp_path, counts=[4, 6])
    index = load_index("framelist", root, "train")
    assert [(s.sample_id, s.num_frames, s.label) for s in index.samples] == [("frames/clip0", 4, 0),
                                                                            ("frames/clip1", 6, 1)]
    assert index.classes == ["0", "1"]
    assert [f.name for f in list_frame_files(index.samples[1].paths["rgb"])][:1] == ["000001.jpg"]
    assert [s.num_frames for s in load_index("framelist", root, "train", probe=True).samples] == [4, 6]
    (root / "train_list.txt").write_text("frames/clip0 5 0\n")
    with pytest.raises(DataError, match="list says 5 frames") as e:
        load_index("framelist", root, "train", probe=True)
    assert (e.value.path, e.value.line) == (str(root / "train_list.txt"), 1)
    with pytest.raises(ValueError, match="modalities"):
        load_index("framelist", root, "train", modalities=["depth"])


# ------------------------------------------------------------------ malformed metadata


ISOGD_BAD = [
    ("train/001/M_00001.avi train/001/K_00001.avi", "expected 3 fields"),
    ("train/001/M_00001.avi train/001/K_00001.avi 26 extra", "expected 3 fields"),
    ("train/001/M_00001.avi train/001/K_00001.avi x", "label must be an integer"),
    ("train/001/M_00001.avi train/001/K_00001.avi 250", "out of range 1..249"),
    ("train/001/M_00001.avi train/001/K_00001.avi 0", "out of range"),
    ("/data/train/001/M_00001.avi train/001/K_00001.avi 3", "outside the dataset root"),
    ("../other/M_00001.avi train/001/K_00001.avi 3", "outside the dataset root"),
    ("train/001/M_00001.avi train/../../K_00001.avi 3", "outside the dataset root"),
]


@pytest.mark.parametrize("line, why", ISOGD_BAD)
def test_isogd_malformed_line_names_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    lst = tmp_path / "train_list.txt"
    lst.write_text("train/001/M_00002.avi train/001/K_00002.avi 4\n\n" + line + "\n")
    with pytest.raises(DataError, match=why) as e:
        load_index("isogd", tmp_path, "train")
    assert (e.value.path, e.value.line) == (str(lst), 3)
    assert str(e.value).startswith(f"{lst}:3: ")


def test_isogd_duplicate_and_collecting(tmp_path: Path) -> None:
    lst = tmp_path / "train_list.txt"
    good = "train/001/M_00001.avi train/001/K_00001.avi 4"
    lst.write_text(f"{good}\n{good}\nonly-one-field\n")
    errors: list[DataError] = []
    index = read_isogd_list(lst, root=tmp_path, split="train", on_error=errors.append)
    assert len(index) == 1
    assert [(e.line, e.reason.split(" ")[0]) for e in errors] == [(2, "sample"), (3, "expected")]
    assert "listed twice (first at line 1)" in errors[0].reason


JESTER_BAD = [
    ("12;Swiping Sideways", "unknown label name 'Swiping Sideways'"),
    ("12", "expected 'id;Label Name'"),
    (";Drumming Fingers", "empty clip id"),
    ("../etc;Drumming Fingers", "outside the frames folder"),
    ("12;Drumming Fingers;x", "extra fields"),
]


@pytest.mark.parametrize("line, why", JESTER_BAD)
def test_jester_malformed_line(tmp_path: Path, line: str, why: str) -> None:
    root = make_jester(tmp_path, clips={"train": {"101": 3}})
    csv_ = root / "jester-v1-train.csv"
    csv_.write_text(csv_.read_text() + line + "\n")
    with pytest.raises(DataError, match=why) as e:
        read_jester(root, "train")
    assert (e.value.path, e.value.line) == (str(csv_), 2)


def test_jester_missing_labels_file(tmp_path: Path) -> None:
    root = make_jester(tmp_path, clips={"train": {"101": 3}})
    (root / "jester-v1-labels.csv").unlink()
    with pytest.raises(DataError, match="missing list file") as e:
        load_index("jester", root, "train")
    assert e.value.path == str(root / "jester-v1-labels.csv")


FRAMELIST_BAD = [
    ("frames/clip0 4", "expected 3 fields"),
    ("frames/clip0 0 1", "frame count must be >= 1"),
    ("frames/clip0 four 1", "frame count must be an integer"),
    ("frames/clip0 4 -1", "label must be >= 0"),
    ("/abs/clip0 4 1", "outside the dataset root"),
]


@pytest.mark.parametrize("line, why", FRAMELIST_BAD)
def test_framelist_malformed_line(tmp_path: Path, line: str, why: str) -> None:
    lst = tmp_path / "train_list.txt"
    lst.write_text(line + "\n")
    with pytest.raises(DataError, match=why) as e:
        read_framelist(lst)
    assert (e.value.path, e.value.line) == (str(lst), 1)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        load_index("ucf101", tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        load_index("isogd", tmp_path, "holdout")
    with pytest.raises(DataError, match="missing list file"):
        load_index("isogd", tmp_path, "valid")
    with pytest.raises(DataError, match="not a directory"):
        load_index("isogd", tmp_path / "absent", "valid")
    assert load_index("jester", make_jester(tmp_path / "j"), "validation").split == "valid"


def test_isogd_rgb_only_copy_is_detected_as_rgb_only(tmp_path) -> None:
    from bench.data.synth import synthesize

    root = synthesize("isogd", tmp_path / "d", num_classes=2, clips_per_class=1, valid_clips_per_class=1,
                      test_clips_per_class=0, size=(48, 32), length_scale=0.2, modalities=("rgb",),
                      progress=False)
    index = load_index("isogd", root, "train")
    assert index.modalities == ("rgb",)
    assert all(set(s.paths) == {"rgb"} for s in index.samples)
