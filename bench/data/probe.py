"""What is inside a video file or a frame folder, and whether it is whole.

Readers, pipelines and ``bench data check`` all need the same three facts about a sample
before decoding it: the codec (DALI on CPU cannot decode H.264 / MPEG-4 Part 2, so the
pipeline choice depends on it), the number of decodable frames (the paper's frame sampling
needs it up front), and whether the file is damaged. A damaged file must fail here, naming
the file, rather than as a silent short clip in the middle of a training run.

Frame counts are the frames a decoder returns, which is what every reader indexes, and they
are not always the packet count:

- the container header is no count at all: WebM carries none, and an AVI's header still
  claims the full count when the file was cut short (it is used the other way round, as the
  number of index entries the packets must reach);
- packets can carry no picture. DivX/XviD AVIs hold 1-byte drop-frame packets and "N-VOP"
  placeholders (packed-bitstream B-frames), MP4 files can end with a packet that holds no
  picture (an end-of-sequence NAL unit), and edit lists mark packets that are decoded only as
  references (``is_discard``).

So the count is taken from packets only where a packet is a picture (``INTRA_ONLY``: MJPEG;
no decoding, the probe stays fast), from decoding every packet for the codecs whose packets
can be empty anywhere in the stream (``DECODE_TO_COUNT``: MPEG-4 Part 2 and relatives, VP8),
and otherwise (H.264, HEVC, VP9, AV1, ...) from the packets verified by decoding the last GOP,
which is where a stream's delayed or missing last pictures show: when the frames it yields
differ from its packets, when packets are marked discard, when one before it is
placeholder-sized, the whole stream is decoded. Decoding is what the readers do, so the count
is the number of frames of a full PyAV decode. The one case this cannot see is an H.264/HEVC
packet of ordinary size with no picture before the last GOP; ``verify="full"`` (``bench data
check --deep``) decodes everything and finds it.

Every exception from FFmpeg, PyAV or a file's metadata (bytes that are not UTF-8 in an AVI
INFO chunk are common) comes out of here as a DataError naming the file.
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
Counted = Literal["packets", "decode"]

#: Codecs whose every packet is one picture: packet k is frame k, so they are counted and
#: read by packet without decoding the rest (``pipelines.decoders`` reads them that way).
INTRA_ONLY = frozenset({"mjpeg"})

#: Codecs whose packets can hold no picture anywhere in the stream, so only decoding counts
#: their frames: MPEG-4 Part 2 and its relatives (DivX/XviD drop-frame packets and N-VOPs,
#: packed B-frames; FFmpeg's h263 decoder returns no frame for them), and VP8 (alt-ref frames
#: stored as packets of their own are never shown).
DECODE_TO_COUNT = frozenset({"mpeg4", "msmpeg4v1", "msmpeg4v2", "msmpeg4", "wmv1", "wmv2",
                             "h263", "h263i", "h263p", "flv", "vp8"})

#: A packet this small can be a placeholder (FFmpeg's MAX_NVOP_SIZE): one before the last GOP
#: makes the probe decode the whole stream instead of trusting the packet count.
PLACEHOLDER_BYTES = 19


@dataclass(frozen=True, slots=True)
class VideoInfo:
    path: Path
    codec: str          # FFmpeg's decoder name: "mjpeg", "vp9", "vp8", "h264", "mpeg4", "hevc"
    num_frames: int     # decodable frames (what a full decode returns), always >= 1
    width: int
    height: int
    fps: float          # average frame rate; 0.0 when the container does not say
    header_frames: int = 0      # the count the container states; 0 when it states none
    packets: int = 0            # non-empty video packets not marked discard
    counted: Counted = "packets"  # "decode": num_frames comes from decoding every packet


def open_video(path: str | Path):
    """``av.open`` for reading, with metadata that is not UTF-8 read leniently.

    PyAV decodes container and stream metadata as strict UTF-8 by default and raises
    UnicodeDecodeError at open for Latin-1 bytes (common in AVI INFO chunks); metadata is
    never needed here, so undecodable bytes are dropped. Any failure is a DataError.
    """
    import av  # heavy; kept local so that importing bench.data stays cheap

    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(path, f"not a readable video (corrupt or truncated): {_reason(e)}") from None
    except Exception as e:  # noqa: BLE001 -- whatever else PyAV raises at open is about this file
        raise DataError(path, f"not a readable video: {_describe(e)}") from None


def read_codec(path: str | Path) -> str:
    """The codec of a video's first video stream, from the header only (no demuxing)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing video file" if not path.exists() else "not a regular file")
    container = open_video(path)
    try:
        with container:
            if not container.streams.video:
                raise DataError(path, "no video stream in the file")
            return container.streams.video[0].codec_context.name
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 -- any failure reading the header is about this file
        raise DataError(path, f"not a readable video: {_describe(e)}") from None


def probe_video(path: str | Path, *, verify: Verify = "tail") -> VideoInfo:
    """Codec, decodable frame count, size and rate of a video; DataError when it is missing,
    damaged or unreadable in any way.

    ``verify`` decides how much is decoded beyond what the frame count needs (the last GOP, or
    every packet for ``DECODE_TO_COUNT`` codecs; nothing for intra-only ones): ``"none"``
    nothing more (an intra-only stream is then only demuxed, which still catches a
    header/packet mismatch and a stream that ends before its stated duration), ``"tail"``
    (default) also decodes the last frame of an intra-only stream, which is where a cut-off
    download breaks, and ``"full"`` decodes every frame (for ``bench data check --deep``).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "missing video file")
    if not path.is_file():
        raise DataError(path, "expected a video file, found a directory" if path.is_dir()
                        else "not a regular file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
    try:
        return _probe(path, verify)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 -- what PyAV, FFmpeg or the metadata raise is this file's
        raise DataError(path, f"not a readable video: {_describe(e)}") from None


def _probe(path: Path, verify: Verify) -> VideoInfo:
    import av

    container = open_video(path)
    with container:
        if not container.streams.video:
            raise DataError(path, "no video stream in the file")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codec = ctx.name
        width, height = ctx.width, ctx.height
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        header_frames = int(stream.frames or 0)
        intra = codec in INTRA_ONLY
        decode_every = verify == "full" or codec in DECODE_TO_COUNT

        packets = 0         # non-empty packets not marked discard
        entries = 0         # every index entry, empty and discard ones too
        discarded = 0       # decoded as references only (edit lists); their frames are dropped
        decoded = 0         # frames returned so far when every packet is decoded
        tail: list = []     # packets from the last keyframe on (from the first packet until one)
        tail_from_start = True
        irregular = False   # in front of the last GOP: a placeholder-sized packet, or no keyframe
        first_dts = last_dts = None
        data_end = 0        # the furthest byte any packet's data reaches
        end_s: float | None = None   # latest presentation end seen (decode order != display order)
        frame_s = 1.0 / fps if fps else 0.0
        try:
            # Every stream is demuxed (others only for where their data ends, see below);
            # only the video stream's packets are counted, never an audio track's.
            for packet in container.demux():
                if packet.size and packet.pos is not None and packet.pos >= 0:
                    data_end = max(data_end, packet.pos + packet.size)
                if packet.stream_index != stream.index:
                    continue
                if packet.size == 0:
                    if packet.dts is not None:
                        entries += 1
                    continue  # the flush packet at the end of the stream
                entries += 1
                if packet.is_corrupt:
                    raise DataError(path, f"damaged data in frame {entries} (corrupt or truncated file)")
                if packet.is_discard:
                    discarded += 1
                else:
                    packets += 1
                if packet.dts is not None:
                    first_dts = packet.dts if first_dts is None else first_dts
                    last_dts = packet.dts
                if packet.pts is not None and packet.time_base is not None:
                    dur = float(packet.duration * packet.time_base) if packet.duration else frame_s
                    end = float(packet.pts * packet.time_base) + dur
                    end_s = end if end_s is None else max(end_s, end)
                if decode_every:
                    decoded += _decode(path, ctx, packet, entries)
                    continue
                if packet.is_keyframe and tail:
                    # frames before a stream's first keyframe may be dropped by the decoder
                    irregular |= (any(p.size <= PLACEHOLDER_BYTES for p in tail)
                                  or (tail_from_start and not tail[0].is_keyframe))
                    tail, tail_from_start = [], False
                tail.append(packet)
            if decode_every:
                decoded += _decode(path, ctx, None, entries)
        except av.error.FFmpegError as e:
            raise DataError(path, f"read error after {entries} frames (corrupt or truncated): "
                                  f"{_reason(e)}") from None

        # An AVI demuxer skips the empty "dropped frame" chunks of its index without a packet;
        # their timestamps still advance, so the slots reached count them.
        reached = entries
        if first_dts is not None and frame_s and stream.time_base is not None:
            reached = max(reached, round(float((last_dts - first_dts) * stream.time_base) / frame_s) + 1)
        # The mov/mp4 demuxer returns no packet for a zero-size sample (what an MP4 muxer writes
        # for a packet left with no data, e.g. a last one that held only an access unit
        # delimiter), although the sample table and the duration count it. An MP4 can only be
        # cut short and still open when its index comes first; then its data runs to the end
        # of the file. Samples missing while the data stops before the end are empty ones.
        mov = "mp4" in container.format.name.split(",")
        may_be_cut = not (mov and data_end and data_end < path.stat().st_size)
        if header_frames and reached < header_frames and may_be_cut:
            raise DataError(path, f"truncated: header says {header_frames} frames, "
                                  f"file holds {reached}")
        if packets == 0:
            raise DataError(path, "video has zero frames")
        if may_be_cut:
            _check_duration(path, container, stream, end_s, frame_s)

        counted: Counted = "packets"
        frames: int | None = packets      # None: decode the whole stream to count
        if decode_every:
            frames, counted = decoded, "decode"
        elif intra:
            last = [p for p in tail[-1:] if not p.is_discard]
            if verify == "tail" and last and _decode_list(path, ctx, last, first_frame=entries) != 1:
                frames, counted = None, "decode"   # the last packet is not one picture
        else:
            got = _decode_list(path, ctx, tail, first_frame=entries - len(tail) + 1)
            if tail_from_start:      # the last GOP is the whole stream: that was a full decode
                frames, counted = got, "decode"
            elif discarded or irregular or got != sum(not p.is_discard for p in tail):
                frames, counted = None, "decode"
    if frames is None:
        frames = count_decoded_frames(path)
    if frames == 0:
        raise DataError(path, "video decodes to zero frames")
    return VideoInfo(path=path, codec=codec, num_frames=frames, width=width, height=height, fps=fps,
                     header_frames=header_frames, packets=packets, counted=counted)


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


def _decode(path: Path, ctx, packet, frame: int) -> int:
    """Frames the decoder returns for ``packet`` (None: flush); DataError naming the frame."""
    try:
        return len(ctx.decode(packet))
    except Exception as e:  # noqa: BLE001 -- a decoder error of any type is this frame's
        raise DataError(path, f"cannot decode frame {frame} (corrupt or truncated): "
                              f"{_reason(e)}") from None


def _decode_list(path: Path, ctx, packets: list, *, first_frame: int) -> int:
    """Frames that ``packets`` decode to, flush included (which surfaces an error in the very
    last frame)."""
    n = 0
    for i, packet in enumerate(packets):
        n += _decode(path, ctx, packet, first_frame + i)
    return n + _decode(path, ctx, None, first_frame + len(packets) - 1)


def count_decoded_frames(path: str | Path) -> int:
    """Frames of a full decode of the first video stream, as ``container.decode(video=0)``
    returns them (what the readers index); DataError naming the file and frame on failure."""
    path = Path(path)
    n = 0
    try:
        with open_video(path) as container:
            for _ in container.decode(video=0):
                n += 1
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 -- a decoder error of any type is this frame's
        raise DataError(path, f"cannot decode frame {n + 1} (corrupt or truncated): {_reason(e)}") from None
    return n


def _reason(e: BaseException) -> str:
    # FFmpeg errors carry the file name as a third argument; the DataError names it already.
    strerror = getattr(e, "strerror", None)
    return strerror or str(e) or type(e).__name__


def _describe(e: BaseException) -> str:
    """``TypeName: message``, for errors that are not FFmpeg's own (their type says what failed)."""
    return f"{type(e).__name__}: {_reason(e)}"


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
