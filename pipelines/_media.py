"""What a sample's file is before it is decoded: a video (with its codec) or a frame folder.

Every backend needs the same facts up front: the frame count (the paper's sampling picks
indices before decoding), and for the DALI backends the codec (DALI's CPU decoder cannot
read H.264 / MPEG-4 Part 2 / HEVC, and its reader skips such files silently, so the choice is
made here, per file, from the codec FFmpeg reports).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.errors import DataError

Kind = Literal["video", "frames"]


@dataclass(frozen=True, slots=True)
class Media:
    path: Path
    kind: Kind
    codec: str | None               # FFmpeg's name for videos, "jpeg"/"png" for frames; None: unprobed
    num_frames: int                 # frames the sampling may index: 0 .. num_frames - 1
    frames: tuple[Path, ...] = ()   # frame files of a folder, in order


def _frame_codec(files: list[Path]) -> str:
    ext = files[0].suffix.lower()
    return "png" if ext == ".png" else "jpeg"


def video_codec(path: Path) -> str:
    """The codec of a video's first video stream, read from the header only (no demuxing)."""
    from bench.data.probe import read_codec

    return read_codec(path)


class MediaResolver:
    """Resolves (and remembers) what each path is; failures are remembered too.

    ``need_codec``: probe the codec of every video (the DALI backends and "auto" routing).
    ``verify_count``: probe every video to count its decodable frames even when the index
    states a count: DALI pads frames past the end with zeros instead of failing, so its path
    must know the true count to refuse an index beyond it, as the PyAV/OpenCV decoders do when
    they run out. Counts are decodable frames (``bench.data.probe``), which is what the
    decoders index; every failure is remembered as a DataError naming the file.
    """

    def __init__(self, *, need_codec: bool, verify_count: bool) -> None:
        self.need_codec = need_codec
        self.verify_count = verify_count
        self._known: dict[Path, Media | DataError] = {}
        self._lock = threading.Lock()

    def resolve(self, path: Path, stated_frames: int | None) -> Media:
        path = Path(path)
        with self._lock:
            hit = self._known.get(path)
        if hit is None:
            try:
                hit = self._resolve(path, stated_frames)
            except DataError as e:
                hit = e
            except Exception as e:  # noqa: BLE001 -- any failure to read the file is about the file
                hit = DataError(path, f"cannot read it: {type(e).__name__}: {e}")
            with self._lock:
                self._known[path] = hit
        if isinstance(hit, DataError):
            raise hit
        return hit

    def _resolve(self, path: Path, stated: int | None) -> Media:
        from bench.data.probe import list_frame_files, probe_video

        if stated is not None and stated < 1:
            raise DataError(path, f"the index states {stated} frames; a clip needs at least one")
        if path.is_dir():
            files = list_frame_files(path)
            if stated is not None and stated != len(files):
                raise DataError(path, f"the index states {stated} frames, the folder holds {len(files)}")
            return Media(path, "frames", _frame_codec(files), len(files), tuple(files))
        if stated is None or self.verify_count:
            info = probe_video(path, verify="none")   # decodes as much as the count needs
            if stated is not None and stated > info.num_frames:
                raise DataError(path, f"the index states {stated} frames, the video holds "
                                      f"{info.num_frames}")
            return Media(path, "video", info.codec, stated or info.num_frames)
        codec = video_codec(path) if self.need_codec else None
        return Media(path, "video", codec, stated)
