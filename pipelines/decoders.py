"""The fallback decoders: PyAV and OpenCV, reading exactly the requested frames of a clip.

They decode every codec FFmpeg knows (H.264, MPEG-4 Part 2/XVID, HEVC, VP8/9, MJPEG), which
is why "auto" falls back to them wherever DALI cannot go. Both return uint8 frames, RGB
``(T, H, W, 3)`` or, for one-channel modalities (depth), ``(T, H, W)``.

How frames are found: frame k is frame k of a full decode, as ``bench.data.probe`` counts
them. An intra-only stream (MJPEG; every packet a keyframe) maps packet k to frame k, so
PyAV decodes only the requested packets; other codecs are decoded in order up to
the last requested frame and only the requested frames are converted to RGB (the conversion,
not the decode, is what sparse sampling saves there). Frame folders are read with
``cv2.imread``, only the requested files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.probe import INTRA_ONLY, open_video
from bench.errors import DataError
from pipelines._media import Media


@dataclass(frozen=True, slots=True)
class Request:
    """Decode ``indices`` (int64, any order, repeats allowed) of ``media``."""
    media: Media
    indices: np.ndarray
    gray: bool


def _ran_out(path: Path, got: int, want: int, stated: int) -> DataError:
    return DataError(path, f"decoding stopped after {got} frames but frame {want} was requested "
                           f"(the index states {stated} frames): corrupt, truncated or shorter than listed")


def _gather(frames: dict[int, np.ndarray], indices: np.ndarray) -> np.ndarray:
    return np.stack([frames[int(i)] for i in indices])


def read_frame_files(req: Request) -> np.ndarray:
    """The requested images of a frame folder, decoded with OpenCV (BGR -> RGB)."""
    import cv2

    files = req.media.frames
    flag = cv2.IMREAD_GRAYSCALE if req.gray else cv2.IMREAD_COLOR
    out: dict[int, np.ndarray] = {}
    shape = None
    for i in sorted({int(i) for i in req.indices}):
        if not 0 <= i < len(files):
            raise DataError(req.media.path, f"frame {i} requested, the folder holds {len(files)}")
        img = cv2.imread(str(files[i]), flag)
        if img is None:
            raise DataError(files[i], "unreadable frame image (corrupt or not an image)")
        if not req.gray:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if shape is None:
            shape = img.shape
        elif img.shape != shape:
            raise DataError(files[i], f"frame size {img.shape[:2]} differs from the clip's {shape[:2]}")
        out[i] = img
    return _gather(out, req.indices)


def decode_pyav(req: Request) -> np.ndarray:
    """Requested frames of a video or frame folder with PyAV (``to_ndarray("gray")`` for depth).

    Frame k is frame k of ``container.decode(video=0)``: packets that decode to no picture
    (placeholders, edit-list references) are not frames, as in ``bench.data.probe``'s counts.
    """
    if req.media.kind == "frames":
        return read_frame_files(req)
    path, fmt = req.media.path, ("gray" if req.gray else "rgb24")
    wanted = {int(i) for i in req.indices}
    last = max(wanted)
    out: dict[int, np.ndarray] = {}
    k = -1
    try:
        with open_video(path) as container:
            if not container.streams.video:
                raise DataError(path, "no video stream in the file")
            stream = container.streams.video[0]
            if req.media.codec in INTRA_ONLY or stream.codec_context.name in INTRA_ONLY:
                ctx = stream.codec_context
                for packet in container.demux(stream):
                    if packet.size == 0 or packet.is_discard:
                        continue  # the final flush packet; references an edit list leaves out
                    k += 1
                    if k in wanted:
                        frames = ctx.decode(packet)
                        if not frames:
                            raise DataError(path, f"packet of frame {k} decodes to no picture")
                        out[k] = frames[0].to_ndarray(format=fmt)
                    if k >= last:
                        break
            else:
                for frame in container.decode(stream):
                    k += 1
                    if k in wanted:
                        out[k] = frame.to_ndarray(format=fmt)
                    if k >= last:
                        break
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 -- FFmpeg, PyAV and conversion errors alike are this file's
        raise DataError(path, f"cannot decode frame {k + 1} (corrupt or truncated): "
                              f"{_describe(e)}") from None
    if k < last:
        raise _ran_out(path, k + 1, last, req.media.num_frames)
    return _gather(out, req.indices)


def decode_opencv(req: Request) -> np.ndarray:
    """Requested frames with ``cv2.VideoCapture``: ``grab()`` every frame, ``retrieve()`` the wanted.

    Opened with OpenCV's FFmpeg backend and without its automatic rotation (a display matrix
    in an MP4 turns its frames by default), so frame k equals PyAV's frame k.
    """
    if req.media.kind == "frames":
        return read_frame_files(req)
    import cv2

    path = req.media.path
    if not path.is_file():
        raise DataError(path, "missing video file")
    wanted = {int(i) for i in req.indices}
    last = max(wanted)
    out: dict[int, np.ndarray] = {}
    k = -1
    cap = None
    try:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise DataError(path, "OpenCV cannot open the video (corrupt, truncated or unknown codec)")
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        while k < last:
            if not cap.grab():
                break
            k += 1
            if k in wanted:
                ok, bgr = cap.retrieve()
                if not ok:
                    raise DataError(path, f"cannot decode frame {k} (corrupt or truncated)")
                out[k] = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY if req.gray else cv2.COLOR_BGR2RGB)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 -- cv2.error and the like are about this file
        raise DataError(path, f"opencv cannot decode frame {k + 1}: {_describe(e)}") from None
    finally:
        if cap is not None:
            cap.release()
    if k < last:
        raise _ran_out(path, k + 1, last, req.media.num_frames)
    return _gather(out, req.indices)


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"


DECODERS = {"pyav": decode_pyav, "opencv": decode_opencv}
