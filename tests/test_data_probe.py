"""Frame counts and errors on the kinds of video real datasets hold and the suite never writes.

IsoGD is XviD AVI, HMDB51-style AVIs carry Latin-1 INFO chunks, phone and web footage is
H.264 MP4 with audio, edit lists and trailing packets. Each kind is generated here
(``_helpers_data``) and every count is checked against what an independent PyAV decode
(``av.open(metadata_errors="ignore")``, ``decode(video=0)``) returns for that file.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from _helpers_data import (
    REAL,
    problem_files,
    pyav_frames,
    truncate_half,
    write_h264_no_picture_packet,
    write_undecodable_mpeg4_avi,
    write_video,
)

from bench.data import probe
from bench.data.probe import count_decoded_frames, open_video, probe_video, read_codec
from bench.errors import DataError

# name: (codec, packets: non-empty video packets not marked discard, frames a full decode returns)
EXPECTED = {
    "latin1_mpeg4": ("mpeg4", 12, 12),
    "latin1_mjpeg": ("mjpeg", 12, 12),
    "mp4_audio": ("h264", 20, 20),
    "mp4_no_picture_last": ("h264", 20, 19),        # last packet: filler + end of sequence
    "mp4_no_picture_last_gop": ("h264", 24, 23),    # the same after several GOPs
    "mp4_empty_last_sample": ("h264", 20, 20),      # the header lists a 21st, empty sample
    "mp4_edit_list": ("h264", 18, 18),              # 20 packets, first and last marked discard
    "mp4_rotated": ("h264", 12, 12),
    "divx_packed": ("mpeg4", 13, 12),               # packed B-frames, a trailing placeholder
    "xvid_drop_frames": ("mpeg4", 13, 12),          # a 1-byte drop frame, an empty chunk
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return problem_files(tmp_path_factory.mktemp("problem"))


@pytest.mark.parametrize("name", EXPECTED)
def test_count_is_what_a_full_pyav_decode_returns(files: dict[str, Path], name: str) -> None:
    path = files[name]
    codec, packets, frames = EXPECTED[name]
    assert len(pyav_frames(path)) == frames            # the premise: what PyAV itself returns
    for verify in ("none", "tail", "full"):
        info = probe_video(path, verify=verify)
        assert (info.codec, info.num_frames, info.packets) == (codec, frames, packets), verify
    assert count_decoded_frames(path) == frames


def test_counts_that_differ_from_the_container_are_marked_decoded(files: dict[str, Path]) -> None:
    info = probe_video(files["divx_packed"])
    assert (info.header_frames, info.packets, info.num_frames, info.counted) == (13, 13, 12, "decode")
    info = probe_video(files["xvid_drop_frames"])
    assert (info.header_frames, info.num_frames) == (14, 12)   # the empty chunk is an index entry
    info = probe_video(files["mp4_empty_last_sample"])
    assert (info.header_frames, info.num_frames) == (21, 20)   # not "truncated"
    assert probe_video(files["latin1_mjpeg"]).counted == "packets"   # intra-only: packets are frames


@pytest.mark.parametrize("name", ["latin1_mpeg4", "latin1_mjpeg"])
def test_latin1_metadata_is_read_leniently(files: dict[str, Path], name: str) -> None:
    path = files[name]
    with pytest.raises(UnicodeDecodeError):     # PyAV's default: strict UTF-8
        av.open(str(path)).close()
    with open_video(path) as c:
        assert c.metadata["artist"] == "caf"    # the undecodable byte is dropped
    assert read_codec(path) == EXPECTED[name][0]


def test_audio_track_is_not_counted(files: dict[str, Path]) -> None:
    path = files["mp4_audio"]
    with av.open(str(path)) as c:
        audio = sum(1 for p in c.demux(audio=0) if p.size)
    assert audio > 20 and probe_video(path).num_frames == 20


def test_intra_only_probe_decodes_nothing(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(probe, "_decode", no_decoding)
    assert probe_video(files["latin1_mjpeg"], verify="none").num_frames == 12
    with pytest.raises(DataError, match="AssertionError"):  # other codecs are decoded to be counted
        probe_video(files["mp4_audio"], verify="none")


def test_undecodable_mpeg4_is_a_dataerror_naming_the_frame(tmp_path: Path) -> None:
    path = write_undecodable_mpeg4_avi(tmp_path / "bad.avi")
    with pytest.raises(av.error.InvalidDataError):
        pyav_frames(path)
    for verify in ("none", "tail", "full"):
        with pytest.raises(DataError, match="cannot decode frame 6") as e:
            probe_video(path, verify=verify)
        assert e.value.path == str(path)


def test_no_picture_packet_before_the_last_gop_is_found_by_a_full_decode(tmp_path: Path) -> None:
    """The quick probe decodes only the last GOP of H.264: a mid-stream packet of ordinary size
    without a picture is counted. ``verify="full"`` (``bench data check --deep``) finds it."""
    path = write_h264_no_picture_packet(tmp_path / "mid.mp4", 24, which=9, gop=8, noise=True)
    assert len(pyav_frames(path)) == 23
    assert probe_video(path).num_frames == 24
    assert probe_video(path, verify="full").num_frames == 23


def _damaged(src: Path, dst: Path, how: str) -> Path:
    data = bytearray(src.read_bytes())
    if how == "half":
        dst.write_bytes(bytes(data))
        return truncate_half(dst)
    if how == "tail":
        dst.write_bytes(bytes(data[:-200]))
        return dst
    mid = len(data) // 2                                   # "noise": 64 random bytes mid-file
    data[mid:mid + 64] = np.random.default_rng(1).integers(0, 256, 64, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("how", ["half", "tail", "noise"])
def test_damaged_files_fail_only_as_dataerror(files: dict[str, Path], tmp_path: Path, how: str) -> None:
    """Whatever a damaged file makes FFmpeg or PyAV raise, the probe raises a DataError naming
    it; with ``verify="full"`` a count it returns is the one PyAV's own decode gives."""
    for name, src in files.items():
        path = _damaged(src, tmp_path / f"{name}-{how}{src.suffix}", how)
        for verify in ("none", "tail", "full"):
            try:
                info = probe_video(path, verify=verify)
            except DataError as e:
                assert e.path == str(path), (name, verify, e)
                continue
            if verify == "full":
                assert info.num_frames == len(pyav_frames(path)), name


@pytest.mark.parametrize("exc", [UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "unexpected end of data"),
                                 ValueError("bad value"), IndexError("list index out of range"),
                                 av.error.InvalidDataError(1094995529, "Invalid data")])
def test_any_exception_from_pyav_is_a_dataerror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                exc: Exception) -> None:
    path = write_video(tmp_path / "x.avi", 4)

    def failing_open(*args, **kwargs):
        raise exc

    monkeypatch.setattr(av, "open", failing_open)
    for call in (probe_video, read_codec, count_decoded_frames):
        with pytest.raises(DataError) as e:
            call(path)
        assert e.value.path == str(path)


@pytest.mark.parametrize("name", ["swipe_up_down", "zoom_in_out"])
def test_real_footage_counts_equal_a_full_decode(name: str) -> None:
    for path in (REAL / "mp4" / f"{name}.mp4", REAL / "webm" / f"{name}.webm"):
        frames = len(pyav_frames(path))
        assert {probe_video(path, verify=v).num_frames for v in ("none", "tail", "full")} == {frames}
