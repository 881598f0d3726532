"""bench perf data: the pipeline benchmark writes the rows it measured (tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_pipelines import frames_for, make_index, write_jpgs, write_video

from bench.perf import data as perf


def test_time_case_rows_compare_backends_side_by_side(tmp_path):
    paths = [write_video(tmp_path / f"v{i}.avi", "mjpeg", frames_for(20, seed=i)) for i in range(2)]
    case = perf.Case("tiny-mjpeg", make_index(paths), "mjpeg", 20, "96x64")
    rows = perf.time_case(case, ["pyav", "opencv"], clip_len=4, batch_size=2, num_workers=0, repeats=2)
    assert [r["backend"] for r in rows] == ["pyav", "opencv"]
    for r in rows:
        assert r["kind"] == "decode" and r["clips"] == 2 and r["repeats"] == 2
        assert 0 < r["decode_min"] <= r["decode_clips_per_s"] <= r["decode_max"]
        assert r["loader_clips_per_s"] > 0 and r["first_epoch_s"] > 0
        assert r["uint8_handover_clips_per_s"] > 0       # before and after, side by side
        assert r["handover_vs_loader"] == pytest.approx(r["uint8_handover_clips_per_s"] / r["loader_clips_per_s"],
                                                        abs=0.01)
    assert rows[0]["decode_vs_pyav"] == 1.0
    assert rows[1]["decode_vs_pyav"] == pytest.approx(
        rows[1]["decode_clips_per_s"] / rows[0]["decode_clips_per_s"], abs=0.01)


def test_codec_filter_leaves_dali_cpu_out_of_h264():
    assert not perf._supported("dali-cpu", "h264")
    assert perf._supported("dali-cpu", "vp9") and perf._supported("dali-gpu", "h264")
    assert perf._supported("opencv", "mpeg4")


def test_jester_sized_index_timing():
    (row,) = perf.time_index(3000, 1)
    assert row["kind"] == "index" and row["clips"] == 3000 and row["seconds"] > 0


def _jester_root(root: Path, n: int) -> Path:
    root.mkdir()
    (root / "jester-v1-labels.csv").write_text("Swiping Left\nSwiping Right\n")
    (root / "jester-v1-validation.csv").write_text(
        "".join(f"{100 + i};{'Swiping Left' if i % 2 else 'Swiping Right'}\n" for i in range(n)))
    for i in range(n):
        write_jpgs(root / "20bn-jester-v1" / str(100 + i), frames_for(12, seed=i))
    return root


def test_cli_on_a_dataset_writes_markdown_and_json(tmp_path, capsys):
    from bench.cli import main

    root = _jester_root(tmp_path / "jester", 3)
    out = tmp_path / "perf"
    rc = main(["perf", "data", "--root", str(root), "--format", "jester", "--split", "valid",
               "--repeats", "1", "--clip-len", "4", "--backends", "pyav,opencv,nonsense",
               "--index-clips", "400", "--out", str(out)])
    assert rc == 0
    rows = json.loads((out / "data.json").read_text())
    assert all(isinstance(r, dict) and all(not isinstance(v, (dict, list)) for v in r.values())
               for r in rows)                                   # flat dicts, one per row
    dec = [r for r in rows if r["kind"] == "decode"]
    assert {r["backend"] for r in dec} == {"pyav", "opencv"} and all(r["clips"] == 3 for r in dec)
    assert dec[0]["codec"] == "jpeg"
    assert [r["clips"] for r in rows if r["kind"] == "index"] == [400]
    md = (out / "data.md").read_text()
    assert "| case | codec |" in md and "jester-400" in md
    captured = capsys.readouterr()
    assert md.strip() in captured.out and "leaving out nonsense" in captured.err


def test_cli_root_needs_format(tmp_path, capsys):
    from bench.cli import main

    assert main(["perf", "data", "--root", str(tmp_path)]) == 2
    assert "--format" in capsys.readouterr().err
