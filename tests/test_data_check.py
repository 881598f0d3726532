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
    make_jester,
    truncate_half,
    write_video,
)

from bench.cli import main
from bench.data.check import check_dataset


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
