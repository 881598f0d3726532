"""``bench data prepare`` on small archives in the real download layouts."""

from __future__ import annotations

import shutil
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import polars as pl
import pytest
from _helpers_data import (
    REAL,
    make_isogd,
    make_isogd_from,
    make_jester,
    problem_files,
    pyav_frames,
    write_undecodable_mpeg4_avi,
)

import bench.data.prepare as prep
from bench.cli import main
from bench.data.formats import CACHE_COUNT_KEY, CACHE_COUNT_VALUE, load_index
from bench.data.probe import probe_video
from bench.errors import DataError

JESTER_CLIPS = {"train": {"101": 5, "102": 6, "103": 4, "104": 5}, "valid": {"201": 5, "202": 7},
                "test": {"301": 4}}
CSV_NAMES = ("jester-v1-labels.csv", "jester-v1-train.csv", "jester-v1-validation.csv", "jester-v1-test.csv")


def _jester_download(tmp_path: Path, *, parts: int = 3) -> tuple[Path, Path]:
    """Downloads folder: one tar.gz of 20bn-jester-v1/ cut into parts 00.., plus the CSVs."""
    stage = make_jester(tmp_path / "stage", clips=JESTER_CLIPS)
    src = tmp_path / "downloads"
    src.mkdir()
    with tarfile.open(tmp_path / "all.tgz", "w:gz") as tar:
        tar.add(stage / "20bn-jester-v1", arcname="20bn-jester-v1")
    data = (tmp_path / "all.tgz").read_bytes()
    step = -(-len(data) // parts)
    for i in range(parts):
        (src / f"20bn-jester-v1-{i:02d}").write_bytes(data[i * step:(i + 1) * step])
    for name in CSV_NAMES:
        shutil.copyfile(stage / name, src / name)
    return src, stage


def test_jester_prepare_from_parts(tmp_path: Path) -> None:
    src, stage = _jester_download(tmp_path)
    root = tmp_path / "jester"
    summary = prep.prepare("jester", src, root)
    assert summary["counts"] == {"train": 4, "valid": 2, "test": 1}
    assert summary["extracted"]["written"] == sum(n for clips in JESTER_CLIPS.values() for n in clips.values())
    assert (root / "20bn-jester-v1/202/00007.jpg").read_bytes() == (stage / "20bn-jester-v1/202/00007.jpg").read_bytes()
    assert not list(root.glob("*.tgz")) and not list(root.glob("20bn-jester-v1-0*"))  # parts never joined
    cache = pl.read_parquet(root / ".bench/index-train.parquet")
    assert cache["sample_id"].to_list() == ["101", "102", "103", "104"]
    assert cache["num_frames"].to_list() == [5, 6, 4, 5]
    assert cache["rgb"].to_list()[0] == "20bn-jester-v1/101"
    valid = load_index("jester", root, "valid")
    assert [(s.sample_id, s.num_frames) for s in valid.samples] == [("201", 5), ("202", 7)]


def test_jester_count_verification_error(tmp_path: Path) -> None:
    src, stage = _jester_download(tmp_path)
    csv_ = src / "jester-v1-validation.csv"
    csv_.write_text(csv_.read_text() + "999;Drumming Fingers\n")
    with pytest.raises(DataError, match=r"1 of 3 listed samples are not.*20bn-jester-v1/999") as e:
        prep.prepare("jester", src, tmp_path / "jester")
    assert e.value.path == str(tmp_path / "jester/jester-v1-validation.csv")
    shutil.copyfile(stage / "jester-v1-validation.csv", tmp_path / "jester/jester-v1-validation.csv")
    assert prep.verify_counts("jester", tmp_path / "jester") == {"train": 4, "valid": 2, "test": 1}
    with pytest.raises(DataError, match="not the full official jester release.*train: 4 listed, official 118,562"):
        prep.verify_counts("jester", tmp_path / "jester", full=True)


def test_jester_missing_or_truncated_parts(tmp_path: Path) -> None:
    src, _ = _jester_download(tmp_path, parts=3)
    (src / "20bn-jester-v1-02").rename(tmp_path / "last-part")
    with pytest.raises(DataError, match="truncated or corrupt") as e:
        prep.prepare("jester", src, tmp_path / "a")
    assert e.value.path == str(src / "20bn-jester-v1-00")
    assert not (tmp_path / "a/.bench/prepare/20bn-jester-v1-00.done").exists()
    (tmp_path / "last-part").rename(src / "20bn-jester-v1-02")
    (src / "20bn-jester-v1-01").unlink()
    with pytest.raises(DataError, match="missing archive part") as e:
        prep.prepare("jester", src, tmp_path / "b")
    assert e.value.path == str(src / "20bn-jester-v1-01")


def test_jester_resume_after_interruption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, stage = _jester_download(tmp_path)
    root = tmp_path / "jester"
    total = sum(n for clips in JESTER_CLIPS.values() for n in clips.values())
    real_write = prep._write_member
    written: list[Path] = []

    def interrupted(f, dest: Path, size: int) -> None:
        if len(written) == 9:  # the 10th member: half written, then the process dies
            dest.write_bytes(f.read(size // 2))
            raise KeyboardInterrupt
        written.append(dest)
        real_write(f, dest, size)

    monkeypatch.setattr(prep, "_write_member", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare("jester", src, root)
    partial = sorted(set((root / "20bn-jester-v1").rglob("*.jpg")) - set(written))
    assert len(partial) == 1 and 0 < partial[0].stat().st_size < (stage / partial[0].relative_to(root)).stat().st_size

    rewritten: list[Path] = []

    def counting(f, dest: Path, size: int) -> None:
        rewritten.append(dest)
        real_write(f, dest, size)

    monkeypatch.setattr(prep, "_write_member", counting)
    summary = prep.prepare("jester", src, root)
    assert summary["extracted"] == {"written": total - 9, "skipped": 9, "csv": 0}
    assert partial[0] in rewritten and not set(written) & set(rewritten)
    for f in (root / "20bn-jester-v1").rglob("*.jpg"):
        assert f.read_bytes() == (stage / f.relative_to(root)).read_bytes()
    rewritten.clear()
    prep.prepare("jester", src, root)  # done-marker: the archive is not even opened
    assert rewritten == []


def _isogd_download(tmp_path: Path, *, with_test_list: bool = True) -> tuple[Path, Path]:
    stage = make_isogd(tmp_path / "stage", frames={"train": [6, 7, 8], "valid": [5, 6], "test": [4]},
                       num_classes=249, with_classes_file=False)
    src = tmp_path / "downloads"
    src.mkdir()
    with zipfile.ZipFile(src / "IsoGD_phase_1.zip", "w") as z:
        for f in sorted((stage / "train").rglob("*.avi")) + sorted((stage / "valid").rglob("*.avi")):
            z.write(f, "IsoGD_phase_1/" + str(f.relative_to(stage)))
        z.write(stage / "train_list.txt", "IsoGD_phase_1/train_list.txt")
        z.writestr("IsoGD_phase_1/readme.txt", "not kept")
    with zipfile.ZipFile(src / "IsoGD_phase_2.zip", "w") as z:
        for f in sorted((stage / "test").rglob("*.avi")):
            z.write(f, str(f.relative_to(stage)))
    shutil.copyfile(stage / "valid_list.txt", src / "valid_list.txt")
    if with_test_list:
        shutil.copyfile(stage / "test_list.txt", src / "test_list.txt")
    return src, stage


def test_isogd_prepare_from_zips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, stage = _isogd_download(tmp_path)
    root = tmp_path / "isogd"
    assert main(["data", "prepare", "--format", "isogd", "--src", str(src), "--root", str(root)]) == 0
    assert "train 3, valid 2, test 1 samples" in capsys.readouterr().out
    assert (root / "train/001/K_00003.avi").read_bytes() == (stage / "train/001/K_00003.avi").read_bytes()
    assert not (root / "IsoGD_phase_1").exists() and not (root / "readme.txt").exists()
    for split, frames in {"train": [6, 7, 8], "valid": [5, 6], "test": [4]}.items():
        index = load_index("isogd", root, split)
        assert [s.num_frames for s in index.samples] == frames
    assert load_index("isogd", root, "test").samples[0].label == -1


def test_isogd_missing_list_falls_back_to_official_and_fails_counts(tmp_path: Path) -> None:
    src, _ = _isogd_download(tmp_path, with_test_list=False)
    root = tmp_path / "isogd"
    with pytest.raises(DataError, match=r"6270 of 6271 listed samples") as e:
        prep.prepare("isogd", src, root)
    assert e.value.path == str(root / "test_list.txt")  # the packaged official test list was used
    assert len((root / "test_list.txt").read_text().splitlines()) == 6_271


def test_isogd_transcode(tmp_path: Path) -> None:
    src, _ = _isogd_download(tmp_path)
    root = tmp_path / "isogd"
    prep.prepare("isogd", src, root, transcode="vp9")
    lines = (root / "train_list.txt").read_text().split("\n")
    assert lines[0] == "train/001/M_00001.webm train/001/K_00001.webm 1"
    assert (root / "train_list.txt.orig").read_text().startswith("train/001/M_00001.avi")
    assert not list(root.rglob("*.avi"))
    index = load_index("isogd", root, "train")
    assert [s.sample_id for s in index.samples] == ["train/001/M_00001", "train/001/M_00002", "train/001/M_00003"]
    assert [s.num_frames for s in index.samples] == [6, 7, 8]
    assert {probe_video(p).codec for s in index.samples for p in s.paths.values()} == {"vp9"}
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.webm")}
    prep.prepare("isogd", src, root, transcode="vp9")  # resumed/re-run: nothing re-encoded
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.webm")} == before


def test_transcode_real_h264_to_mjpeg_in_place(tmp_path: Path) -> None:
    root = make_isogd(tmp_path, frames={"train": [6]})
    shutil.copyfile(REAL / "mp4/zoom_in_out.mp4", root / "train/001/M_00001.avi")  # H.264 inside .avi
    assert probe_video(root / "train/001/M_00001.avi").codec == "h264"
    assert prep.transcode_isogd(root, "mjpeg") == 2
    info = probe_video(root / "train/001/M_00001.avi")
    assert (info.codec, info.num_frames, info.width, info.height) == ("mjpeg", 29, 488, 316)


def test_flow_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    src, _ = _isogd_download(tmp_path)
    calls = []
    fake = types.ModuleType("bench.data.flow")
    fake.compute_flow_dataset = lambda fmt, root, *, workers: calls.append((fmt, Path(root), workers))
    monkeypatch.setitem(sys.modules, "bench.data.flow", fake)
    prep.prepare("isogd", src, tmp_path / "isogd", flow=True)
    assert calls == [("isogd", tmp_path / "isogd", 1)]
    lacking = types.ModuleType("bench.data.flow")
    lacking.add_cli = lambda sub: None  # the CLI still builds; only the flow function is absent
    monkeypatch.setitem(sys.modules, "bench.data.flow", lacking)
    assert main(["data", "prepare", "--format", "isogd", "--src", str(src), "--root",
                 str(tmp_path / "isogd"), "--flow"]) == 2
    assert "--flow needs bench.data.flow.compute_flow_dataset" in capsys.readouterr().err


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="transcode"):
        prep.prepare("jester", tmp_path, tmp_path / "r", transcode="vp9")
    with pytest.raises(DataError, match="downloads folder does not exist"):
        prep.prepare("isogd", tmp_path / "absent", tmp_path / "r")
    with pytest.raises(DataError, match="no IsoGD archive"):
        prep.prepare("isogd", tmp_path, tmp_path / "r")
    with pytest.raises(DataError, match="no Jester archive"):
        prep.prepare("jester", tmp_path, tmp_path / "r")


def test_isogd_resume_rewrites_only_partial_members(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, stage = _isogd_download(tmp_path)
    root = tmp_path / "isogd"
    prep.prepare("isogd", src, root)
    (root / ".bench/prepare/IsoGD_phase_1.zip.done").unlink()   # as if killed inside phase 1
    partial = root / "valid/001/M_00002.avi"
    partial.write_bytes(partial.read_bytes()[:100])
    real_write = prep._write_member
    written: list[Path] = []
    monkeypatch.setattr(prep, "_write_member", lambda f, dest, size: (written.append(dest), real_write(f, dest, size)))
    summary = prep.prepare("isogd", src, root)
    assert written == [partial]
    assert summary["extracted"] == {"written": 1, "skipped": 10, "ignored": 1}
    assert partial.read_bytes() == (stage / "valid/001/M_00002.avi").read_bytes()


def test_archive_member_outside_root_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "downloads"
    src.mkdir()
    with zipfile.ZipFile(src / "IsoGD_phase_1.zip", "w") as z:
        z.writestr("../train/001/M_00001.avi", b"x")
    with pytest.raises(DataError, match="outside the dataset root") as e:
        prep.prepare("isogd", src, tmp_path / "isogd")
    assert e.value.path == str(src / "IsoGD_phase_1.zip")
    assert not (tmp_path / "train").exists()


def test_jester_archive_cut_anywhere_is_reported_as_truncated(tmp_path: Path) -> None:
    """Wherever a download stops short -- inside a member, on a tar header -- extraction fails
    naming the archive, instead of ending early and leaving part of the dataset behind."""
    src, _ = _jester_download(tmp_path, parts=1)
    data = (src / "20bn-jester-v1-00").read_bytes()
    for k, frac in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]):
        (src / "20bn-jester-v1-00").write_bytes(data[:int(len(data) * frac)])
        with pytest.raises(DataError, match="truncated or corrupt") as e:
            prep.extract_jester(src, tmp_path / f"out{k}")
        assert e.value.path == str(src / "20bn-jester-v1-00")


def _zip_isogd(stage: Path, src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src / "IsoGD_phase_1.zip", "w") as z:
        for f in sorted((stage / "train").rglob("*")):
            if f.is_file():
                z.write(f, "IsoGD_phase_1/" + str(f.relative_to(stage)))
        z.write(stage / "train_list.txt", "IsoGD_phase_1/train_list.txt")


def test_index_holds_decodable_frames_of_real_world_files(tmp_path: Path) -> None:
    """Placeholder and no-picture packets, edit lists, Latin-1 metadata and audio: the index
    cache stores what PyAV decodes, and a cached loader keeps every sample, however long its
    clips (the last frame of each video is requested)."""
    from pipelines import make_loader

    files = problem_files(tmp_path / "files")
    stage = tmp_path / "stage"
    ids = make_isogd_from(stage, list(files.values()), num_classes=249)
    _zip_isogd(stage, tmp_path / "downloads")
    root = tmp_path / "isogd"
    prep.prepare("isogd", tmp_path / "downloads", root)
    cache = root / ".bench/index-train.parquet"
    assert pl.read_parquet_metadata(cache)[CACHE_COUNT_KEY] == CACHE_COUNT_VALUE
    df = pl.read_parquet(cache)
    stored = dict(zip(df["sample_id"].to_list(), df["num_frames"].to_list()))
    decoded = {i: len(pyav_frames(p)) for i, p in zip(ids, files.values())}
    assert stored == decoded
    packets = {i: probe_video(p).packets for i, p in zip(ids, files.values())}
    assert sum(packets[i] != decoded[i] for i in ids) == 4     # where counting packets went wrong
    index = load_index("isogd", root, "train")
    assert {s.sample_id: s.num_frames for s in index.samples} == decoded
    loader = make_loader(index, backend="pyav", clip_len=32, size=16, batch_size=4, cache=True,
                         on_error="skip")
    got = [s for b in loader for s in b["sample_id"]]
    assert loader.skipped == [] and sorted(got) == sorted(ids)


def test_unreadable_samples_are_all_listed_and_no_index_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = problem_files(tmp_path / "files")
    junk = tmp_path / "junk.avi"
    junk.write_bytes(bytes(range(256)) * 20)
    videos = [files["latin1_mpeg4"], write_undecodable_mpeg4_avi(tmp_path / "undecodable.avi"),
              files["divx_packed"], junk]
    stage = tmp_path / "stage"
    make_isogd_from(stage, videos, num_classes=249)
    _zip_isogd(stage, tmp_path / "downloads")
    root = tmp_path / "isogd"
    assert main(["data", "prepare", "--format", "isogd", "--src", str(tmp_path / "downloads"),
                 "--root", str(root)]) == 2
    captured = capsys.readouterr()
    assert "2 of 4 samples are unreadable" in captured.err
    lst = root / "train_list.txt"
    for i, why in ((2, "cannot decode frame 6"), (4, "not a readable video")):
        assert any(f"M_{i:05d}" in line and why in line and f"{lst}:{i})" in line
                   for line in captured.err.splitlines()), captured.err
    assert "Traceback" not in captured.err
    assert not (root / ".bench/index-train.parquet").exists()
