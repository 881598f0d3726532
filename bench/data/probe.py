"""What is inside a video file or a frame folder, and whether it is whole.

Readers, pipelines and ``bench data check`` all need the same three facts about a sample
before decoding it: the codec (DALI on CPU cannot decode H.264 / MPEG-4 Part 2, so the
pipeline choice depends on it), the number of decodable frames (the paper's frame sampling
needs it up front), and whether the file is damaged. A damaged file must fail here, naming
the file, rather than as a silent short clip in the middle of a training run.

Frame counts come from demuxing packets, not from the container header: WebM carries no
count at all, and an AVI's header still claims the full count when the file was cut short.
The header is used the other way round -- as the count the packets must reach.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.errors import DataError

_FRAME_NAME = re.compile(r"^(\d+)\.(?:jpe?g|png)$", re.IGNORECASE)

Verify = Literal["none", "tail", "full"]


@dataclass(frozen=True, slots=True)
class VideoInfo:
    path: Path
    codec: str          # FFmpeg's decoder name: "mjpeg", "vp9", "vp8", "h264", "mpeg4", "hevc"
    num_frames: int     # decodable frames (non-empty video packets), always >= 1
    width: int
    height: int
    fps: float          # average frame rate; 0.0 when the container does not say


def probe_video(path: str | Path, *, verify: Verify = "tail") -> VideoInfo:
    """Codec, frame count, size and rate of a video; DataError when it is missing or damaged.

    ``verify`` decides how much is decoded to prove the file whole:
    ``"none"`` demuxes only (fastest; still catches a header/packet mismatch and a stream
    that ends before its stated duration), ``"tail"`` (default) also decodes from the last
    keyframe to the end, which is where a cut-off download breaks, and ``"full"`` decodes
    every frame and reports the decoded count (for ``bench data check --deep``).
    """
    import av  # heavy; kept local so that importing bench.data stays cheap

    path = Path(path)
    if not path.exists():
        raise DataError(path, "missing video file")
    if not path.is_file():
        raise DataError(path, "expected a video file, found a directory" if path.is_dir()
                        else "not a regular file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(path, f"not a readable video (corrupt or truncated): {_reason(e)}") from None
    with container:
        if not container.streams.video:
            raise DataError(path, "no video stream in the file")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        width, height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        header_frames = int(stream.frames or 0)

        frames = 0          # non-empty packets: what a decoder turns into frames
        entries = 0         # every index entry, empty ones too (AVI "dropped frame" chunks)
        tail: list = []     # packets since the last keyframe, for the tail decode
        end_s: float | None = None   # latest presentation end seen (decode order != display order)
        frame_s = 1.0 / fps if fps else 0.0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    if packet.dts is not None:
                        entries += 1
                    continue  # the flush packet at the end of the stream
                entries += 1
                frames += 1
                if packet.is_corrupt:
                    raise DataError(path, f"damaged data in frame {frames} (corrupt or truncated file)")
                if packet.pts is not None and packet.time_base is not None:
                    dur = float(packet.duration * packet.time_base) if packet.duration else frame_s
                    end = float(packet.pts * packet.time_base) + dur
                    end_s = end if end_s is None else max(end_s, end)
                if verify == "tail":
                    if packet.is_keyframe:
                        tail = []
                    tail.append(packet)
        except av.error.FFmpegError as e:
            raise DataError(path, f"read error after {frames} frames (corrupt or truncated): "
                                  f"{_reason(e)}") from None

        if header_frames and entries < header_frames:
            raise DataError(path, f"truncated: header says {header_frames} frames, "
                                  f"file holds {entries}")
        if frames == 0:
            raise DataError(path, "video has zero frames")
        _check_duration(path, container, stream, end_s, frame_s)

        if verify == "tail" and tail:
            _decode_packets(path, stream, tail, first_frame=frames - len(tail) + 1)
    if verify == "full":
        frames = _decode_all(path)
    return VideoInfo(path=path, codec=codec, num_frames=frames, width=width, height=height, fps=fps)


def _check_duration(path: Path, container, stream, end_s: float | None, frame_s: float) -> None:
    """A stream that stops more than half a frame before the stated duration was cut short.

    WebM/Matroska store no frame count, but do store the segment duration up front, so this
    is what catches a truncated .webm whose remaining clusters still parse.
    """
    if end_s is None or frame_s <= 0:
        return
    start_s = 0.0
    if stream.start_time is not None and stream.time_base is not None:
        start_s = float(stream.start_time * stream.time_base)
    if stream.duration and stream.time_base is not None:
        stated = float(stream.duration * stream.time_base)
    elif container.duration and len(container.streams) == 1:
        # Matroska states only the segment's duration; with an audio track it may be the
        # audio's, so it is trusted only for a video-only file.
        stated = container.duration / 1_000_000  # av.time_base: microseconds
    else:
        return
    ended = end_s - start_s
    if stated - ended > 0.5 * frame_s:
        raise DataError(path, f"truncated: stream ends at {ended:.3f} s, "
                              f"container says {stated:.3f} s")


def _decode_packets(path: Path, stream, packets: list, *, first_frame: int) -> None:
    import av

    ctx = stream.codec_context
    try:
        for i, packet in enumerate(packets):
            ctx.decode(packet)
        ctx.decode(None)  # flush: surfaces an error in the very last frame
    except av.error.FFmpegError as e:
        raise DataError(path, f"cannot decode frame {first_frame + i} (corrupt or truncated): "
                              f"{_reason(e)}") from None


def _decode_all(path: Path) -> int:
    import av

    n = 0
    try:
        with av.open(str(path)) as container:
            for _ in container.decode(video=0):
                n += 1
    except av.error.FFmpegError as e:
        raise DataError(path, f"cannot decode frame {n + 1} (corrupt or truncated): {_reason(e)}") from None
    if n == 0:
        raise DataError(path, "video decodes to zero frames")
    return n


def _reason(e: BaseException) -> str:
    # FFmpeg errors carry the file name as a third argument; the DataError names it already.
    strerror = getattr(e, "strerror", None)
    return strerror or str(e)


def list_frame_files(folder: str | Path) -> list[Path]:
    """The frame images of a clip folder, in frame order; DataError when missing, empty or gapped.

    Frames are numbered files (``00001.jpg`` as in Jester, ``000001.jpg`` in the frame lists
    of the paper's code); numbering starts at 1 (0 is accepted, some extractors use it) and
    must have no gaps, because a gap shifts every later frame index that sampling relies on.
    Files that are not numbered images (``.DS_Store``, thumbnails) are ignored.
    """
    files, problems = scan_frame_folder(folder)
    if problems:
        raise problems[0]
    return files


def scan_frame_folder(folder: str | Path) -> tuple[list[Path], list[DataError]]:
    """The numbered frame images of ``folder`` in order, and every numbering problem found.

    Like :func:`list_frame_files` but reports all gaps instead of the first (for
    ``bench data check``). A missing, unreadable or empty folder raises DataError.
    """
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        raise DataError(folder, "missing frame folder") from None
    except NotADirectoryError:
        raise DataError(folder, "expected a folder of frame images, found a file") from None
    except PermissionError:
        raise DataError(folder, "frame folder not readable (permission denied)") from None
    numbered: dict[int, str] = {}
    problems: list[DataError] = []
    for entry in entries:
        m = _FRAME_NAME.match(entry.name)
        if m is None:
            continue
        n = int(m.group(1))
        if n in numbered:
            problems.append(DataError(folder / entry.name, f"frame {n} appears twice "
                                                           f"({numbered[n]} and {entry.name})"))
            continue
        numbered[n] = entry.name
    if not numbered:
        raise DataError(folder, "empty frame folder (no numbered .jpg/.png frames)")
    order = sorted(numbered)
    example = numbered[order[0]]
    expected = 1 if order[0] >= 1 else 0
    for n in order:
        if n > expected:
            last = n - 1
            what = (f"missing frame image {expected}" if last == expected
                    else f"missing frame images {expected}..{last}")
            problems.append(DataError(folder / _expected_name(example, expected),
                                      f"{what} (frames present: {len(order)}, numbered up to {order[-1]})"))
        expected = n + 1
    return [folder / numbered[k] for k in order], problems


def check_image_file(path: Path, *, decode: bool = False) -> str | None:
    """Why an image frame is unreadable, or None when it looks whole.

    The cheap test reads a few bytes: a JPEG must start with SOI (FF D8) and end with EOI
    (FF D9) -- a cut-off download loses the EOI, and a JPEG decoder only warns about that.
    ``decode=True`` also decodes it with OpenCV.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 64))
            tail = f.read()
    except OSError as e:
        return f"cannot read image: {e.strerror or e}"
    if size == 0:
        return "empty image file (0 bytes)"
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        if not head.startswith(b"\xff\xd8"):
            return "not a JPEG (no start-of-image marker)"
        if b"\xff\xd9" not in tail:
            return "truncated JPEG (no end-of-image marker)"
    elif suffix == ".png" and not head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "not a PNG (bad signature)"
    if decode:
        import cv2
        import numpy as np

        img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None or img.size == 0:
            return "image does not decode"
    return None


def _expected_name(example: str, number: int) -> str:
    """The file name frame ``number`` would have, padded like ``example``."""
    stem, ext = os.path.splitext(example)
    return f"{number:0{len(stem)}d}{ext}"
