"""``bench data check``: every problem listed, exit 0 on a clean copy and 1 on a broken one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _helpers_data import (
    REAL,
    make_framelist,
    make_isogd,
    make_isogd_from,
    make_jester,
    problem_files,
    pyav_frames,
    truncate_half,
    write_h264_no_picture_packet,
    write_undecodable_mpeg4_avi,
    write_video,
)

from bench.cli import main
from bench.data.check import check_dataset
from bench.data.formats import load_index, write_index_cache
from bench.data.index import DatasetIndex, Sample


def _problems_by_file(problems) -> dict[str, str]:
    return {f"{p.path}:{p.line}" if p.line else p.path: p.reason for p in problems}


def test_clean_datasets_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    iso = make_isogd(tmp_path / "iso")
    assert main(["data", "check", str(iso), "--format", "isogd"]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "6 samples, 12 files/folders" in out
    jes = make_jester(tmp_path / "jes")
    assert main(["data", "check", str(jes), "--format", "jester", "--deep"]) == 0
    assert "6 samples" in capsys.readouterr().out
    fl = make_framelist(tmp_path / "fl")
    assert main(["data", "check", str(fl), "--format", "framelist"]) == 0


def test_broken_isogd_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_isogd(tmp_path, frames={"train": [6, 6, 6, 6, 6], "valid": [5], "test": [4]})
    t = root / "train/001"
    (t / "M_00001.avi").unlink()                                 # missing
    (t / "K_00002.avi").write_bytes(os.urandom(4096))            # corrupt
    truncate_half(t / "M_00003.avi")                             # truncated
    write_video(t / "K_00004.avi", 0)                            # zero frames
    shutil.copyfile(REAL / "mp4/zoom_in_out.mp4", t / "M_00005.avi")   # a real H.264 file is fine
    lst = root / "valid_list.txt"
    lst.write_text(lst.read_text() + "valid/001/M_00009.avi 3\n../x/M_1.avi valid/001/K_1.avi 2\n")

    assert main(["data", "check", str(root), "--format", "isogd"]) == 1
    out = capsys.readouterr().out
    expected = {
        f"{t / 'M_00001.avi'}: missing video file": True,
        f"{t / 'K_00002.avi'}: not a readable video": True,
        f"{t / 'M_00003.avi'}: ": True,
        f"{t / 'K_00004.avi'}: video has zero frames": True,
        f"{lst}:2: expected 3 fields": True,
        f"{lst}:3: path '../x/M_1.avi' points outside the dataset root": True,
    }
    for prefix in expected:
        assert any(line.startswith(prefix) for line in out.splitlines()), (prefix, out)
    assert "M_00005" not in out
    assert f"listed at {root / 'train_list.txt'}:1" in out  # file problems say which line listed them
    assert "6 problem(s) found" in out

    problems = check_dataset("isogd", root, splits=["train"])
    assert sorted(Path(p.path).name for p in problems) == ["K_00002.avi", "K_00004.avi", "M_00001.avi",
                                                          "M_00003.avi"]


def test_broken_jester_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_jester(tmp_path, clips={"train": {"1": 5, "2": 5, "3": 5, "4": 5, "5": 5}, "valid": {"9": 3}})
    frames = root / "20bn-jester-v1"
    (frames / "1/00003.jpg").unlink()                                  # gap
    for f in (frames / "2").iterdir():                                 # empty folder
        f.unlink()
    shutil.rmtree(frames / "3")                                        # missing folder
    jpg = frames / "4/00002.jpg"
    jpg.write_bytes(jpg.read_bytes()[:60])                             # truncated JPG
    (frames / "5/00004.jpg").write_bytes(os.urandom(300))              # not a JPG at all
    csv_ = root / "jester-v1-validation.csv"
    csv_.write_text(csv_.read_text() + "10;Waving Goodbye\n")          # unknown label name

    assert main(["data", "check", str(root), "--format", "jester"]) == 1
    found = _problems_by_file(check_dataset("jester", root))
    assert found[str(frames / "1/00003.jpg")].startswith("missing frame image 3")
    assert found[str(frames / "2")].startswith("empty frame folder")
    assert found[str(frames / "3")].startswith("missing frame folder")
    assert found[str(frames / "4/00002.jpg")].startswith("truncated JPEG")
    assert found[str(frames / "5/00004.jpg")].startswith("not a JPEG")
    assert found[f"{csv_}:2"] == "unknown label name 'Waving Goodbye' (not in jester-v1-labels.csv)"
    assert len(found) == 6
    out = capsys.readouterr().out
    assert "6 problem(s) found" in out and f"{csv_}:2: unknown label name 'Waving Goodbye'" in out


def test_framelist_count_mismatch_and_workers(tmp_path: Path) -> None:
    root = make_framelist(tmp_path, counts=[4, 6, 3])
    (root / "frames/clip1/000006.jpg").unlink()
    lst = root / "train_list.txt"
    serial = check_dataset("framelist", root, workers=1)
    assert [(p.path, p.line) for p in serial] == [(str(lst), 2)]
    assert "list says 6 frames" in serial[0].reason and "has 5" in serial[0].reason
    parallel = check_dataset("framelist", root, workers=2)
    assert [str(p) for p in parallel] == [str(p) for p in serial]


def test_nothing_to_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path), "--format", "isogd"]) == 1
    assert "no split list found" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "absent"), "--format", "jester"]) == 1
    assert main(["data", "check", str(tmp_path), "--format", "isogd", "--split", "valid"]) == 1
    assert "valid_list.txt: missing list file" in capsys.readouterr().out


@pytest.fixture(scope="module")
def problem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return problem_files(tmp_path_factory.mktemp("problem"))


def test_real_world_files_are_clean_and_broken_ones_all_listed(
        problem: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Latin-1 metadata, audio, placeholder and no-picture packets are not problems; an
    undecodable file and junk are, each listed with its line, and the check ends with a
    verdict (exit 1), not a traceback."""
    junk = tmp_path / "junk.avi"
    junk.write_bytes(os.urandom(5000))
    videos = [*problem.values(), write_undecodable_mpeg4_avi(tmp_path / "undecodable.avi"), junk]
    root = tmp_path / "iso"
    make_isogd_from(root, videos)
    bad = {len(problem) + 1: "cannot decode frame 6", len(problem) + 2: "not a readable video"}
    for deep in ([], ["--deep"]):
        assert main(["data", "check", str(root), "--format", "isogd", *deep]) == 1
        out = capsys.readouterr().out.splitlines()
        problems = [line for line in out if not line.startswith("checked ")]
        assert len(problems) == 2 * len(bad), out           # RGB and depth copy of each
        for i, why in bad.items():
            for prefix in ("M", "K"):
                name = f"{prefix}_{i:05d}{videos[i - 1].suffix}"
                assert any(name in line and why in line and f"train_list.txt:{i})" in line
                           for line in problems), (name, out)
        assert out[-1].endswith(f"{2 * len(bad)} problem(s) found")


def test_any_exception_while_checking_is_listed_with_the_rest(
        problem: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from bench.data import probe

    root = tmp_path / "iso"
    make_isogd_from(root, [problem["mp4_audio"], problem["divx_packed"]], depth=False)
    truncate_half(root / "train/001/M_00001.mp4")
    real = probe.probe_video

    def failing(path, **kwargs):
        if Path(path).name == "M_00002.avi":
            raise UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "unexpected end of data")
        return real(path, **kwargs)

    monkeypatch.setattr(probe, "probe_video", failing)
    assert main(["data", "check", str(root), "--format", "isogd"]) == 1
    out = capsys.readouterr().out
    assert f"{root / 'train/001/M_00001.mp4'}: " in out
    assert f"{root / 'train/001/M_00002.avi'}: cannot check it: UnicodeDecodeError" in out
    assert "train_list.txt:2)" in out and "2 problem(s) found" in out


def test_deep_compares_probed_with_decoded_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mid-stream H.264 packet of ordinary size with no picture: the quick probe counts it
    (it decodes the last GOP only), ``--deep`` decodes everything and says so."""
    mid = write_h264_no_picture_packet(tmp_path / "mid.mp4", 24, which=9, gop=8, noise=True)
    assert len(pyav_frames(mid)) == 23
    root = tmp_path / "iso"
    make_isogd_from(root, [mid], depth=False)
    assert main(["data", "check", str(root), "--format", "isogd"]) == 0
    assert main(["data", "check", str(root), "--format", "isogd", "--deep"]) == 1
    out = capsys.readouterr().out
    assert (f"{root / 'train/001/M_00001.mp4'}: frame count: the probe counts 24 frames, a full "
            f"decode gives 23; the container header states 24 (listed at ") in out


def test_check_compares_the_index_cache(problem: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A cache holding packet counts (what probing stored before counts were decodable frames)
    makes the loader ask for frames that are not there: the check names the sample and line."""
    root = tmp_path / "iso"
    ids = make_isogd_from(root, [problem["divx_packed"], problem["mp4_audio"]], depth=False)
    index = load_index("isogd", root, "train", use_cache=False)
    stale = DatasetIndex(index.format, index.root, index.split, index.classes,
                         [Sample(s.sample_id, s.label, s.paths, n, s.source)
                          for s, n in zip(index.samples, [13, 20])])
    cache = write_index_cache(stale)
    for deep in ([], ["--deep"]):
        assert main(["data", "check", str(root), "--format", "isogd", *deep]) == 1
        out = capsys.readouterr().out
        assert (f"{cache}: sample {ids[0]!r} (listed at {root / 'train_list.txt'}:1): the index "
                f"cache states 13 frames, its files") in out and "1 problem(s) found" in out
    write_index_cache(load_index("isogd", root, "train", probe=True))
    assert main(["data", "check", str(root), "--format", "isogd", "--deep"]) == 0
