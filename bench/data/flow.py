"""Optical flow as a third modality, computed from RGB and stored in the dataset's own layout.

Why: IsoGD ships no flow (the paper's Table 2 flow column is computed from RGB), and the
suite's readers, pipelines and models treat flow like any other 3-channel 8-bit modality --
so flow is written once, as images/videos beside RGB, and never recomputed per epoch.

Layout (what ``bench.data.formats`` reads):
- IsoGD: ``train/001/F_00001.avi`` beside ``M_00001.avi``, same codec as the RGB video
  (probed per file) unless ``codec`` is given, same frame rate.
- Jester: ``20bn-jester-v1-flow/<id>/00001.jpg ...``, like the RGB folders.

Encoding (the suite's convention, decoded like RGB with mean 128 subtracted)::

    ch0 (R) = dx, ch1 (G) = dy, ch2 (B) = 128
    value   = clip(round(128 + f * 128 / 20), 0, 255)

so 128 is "no motion", +-20 px per frame saturates, and one code step is 0.156 px. ``dx`` > 0
is motion to the right, ``dy`` > 0 motion down (image coordinates).

Frame count: a video of N RGB frames gives N flow frames. Flow frame ``t`` (t >= 1) is the
motion from RGB frame ``t - 1`` to frame ``t``; flow frame 0 is defined as zero motion (all
128), so frame indices of RGB and flow line up one to one and the paper's frame sampling
picks the same instants in both. A 1-frame video gives one all-128 frame.

Methods (CPU, OpenCV; rates measured on a 2-core CPU):
- ``dis`` (default): DIS, FAST preset -- ~2,700 pairs/s at 112x112 on 2 cores. On a synthetic
  swipe its mean per-frame flow tracked the true hand velocity (r = 0.92) about as well as
  ULTRAFAST (0.93) and better than MEDIUM (0.79), at 3x MEDIUM's speed.
- ``farneback``: Farneback (0.5, 3, 15, 3, 5, 1.2) -- ~370 pairs/s, smoothest fields.
- ``tvl1``: Dual TV-L1 (nscales 3, warps 3, epsilon 0.02) -- only with opencv-contrib
  (``cv2.optflow``); ~27 pairs/s.
- ``dali``: DALI's ``fn.optical_flow`` on the GPU's optical-flow engine (Turing or newer),
  output grid 4 upsampled to full size; refused where no CUDA GPU is visible.

Resumable: each output is written under a temporary name and renamed when complete, and an
existing output is skipped. Readers detect the flow modality from what exists (IsoGD: the
first listed sample's ``F_`` file; Jester: the ``20bn-jester-v1-flow`` folder), so the first
sample of every IsoGD split is written last, and Jester folders go to
``20bn-jester-v1-flow.partial/`` until every requested split is done -- a half-finished run
never looks like a finished one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.data.formats import (
    ISOGD_LISTS,
    ISOGD_PREFIX,
    JESTER_CSVS,
    JESTER_DIRS,
    SPLITS,
    load_index,
    normalize_split,
)
from bench.data.probe import list_frame_files, open_video
from bench.data.synth import CODECS, write_jpg_folder, write_video
from bench.errors import CLIError, DataError

METHODS = ("dis", "farneback", "tvl1", "dali")
FLOW_BOUND = 20.0            # px per frame that saturates the 8-bit code
FLOW_SCALE = 128.0 / FLOW_BOUND
JPEG_QUALITY = 95            # flow fields are smooth; keep the JPEG error well under a code step
_PARTIAL = ".partial"
_CODEC_OF_DECODER = {"mjpeg": "mjpeg", "vp9": "vp9", "mpeg4": "mpeg4", "h264": "h264"}


# ---------------------------------------------------------------------------------------------
# encoding


def encode_flow(flow: np.ndarray) -> np.ndarray:
    """(..., H, W, 2) float flow in px -> (..., H, W, 3) uint8 in the suite's encoding."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.shape[-1] != 2:
        raise ValueError(f"flow must end in 2 channels (dx, dy), got shape {flow.shape}")
    out = np.full(flow.shape[:-1] + (3,), 128, dtype=np.uint8)
    out[..., :2] = np.clip(np.rint(128.0 + flow * FLOW_SCALE), 0, 255).astype(np.uint8)
    return out


def decode_flow(img: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., H, W, 2) float32 px (saturated values stay at +-20)."""
    img = np.asarray(img)
    return (img[..., :2].astype(np.float32) - 128.0) / FLOW_SCALE


# ---------------------------------------------------------------------------------------------
# estimators


class FlowEstimator:
    """Dense flow between consecutive grayscale frames with one method; reusable per video."""

    def __init__(self, method: str = "dis") -> None:
        import cv2  # heavy

        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        self._dali = None
        if method == "dis":
            self._impl = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        elif method == "tvl1":
            if not hasattr(cv2, "optflow"):
                raise ValueError("method 'tvl1' needs cv2.optflow (opencv-contrib-python-headless); "
                                 "this OpenCV has none -- use 'dis' or 'farneback'")
            self._impl = cv2.optflow.DualTVL1OpticalFlow_create(nscales=3, warps=3, epsilon=0.02)
        elif method == "dali":
            self._dali = _DaliFlow()
        else:
            self._impl = None

    def pair(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """(H, W) uint8 x 2 -> (H, W, 2) float32: where each pixel of ``prev`` went in ``nxt``."""
        import cv2  # heavy

        if self.method == "farneback":
            return cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        if self.method == "dali":
            rgb = np.stack([prev, nxt])[..., None].repeat(3, axis=-1)
            return self._dali.sequence(rgb)[0]
        return self._impl.calc(prev, nxt, None)

    def sequence(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W) gray or (N, H, W, 3) RGB uint8 -> (N, H, W, 3) uint8 encoded flow,
        frame 0 all 128 (zero motion), frame t the motion from t-1 to t."""
        import cv2  # heavy

        frames = np.asarray(frames)
        if frames.ndim not in (3, 4) or len(frames) == 0 or frames.dtype != np.uint8:
            raise ValueError(f"expected (N,H,W) or (N,H,W,3) uint8 frames, got {frames.dtype} {frames.shape}")
        n, h, w = frames.shape[:3]
        out = np.full((n, h, w, 3), 128, dtype=np.uint8)
        if n < 2:
            return out
        if self.method == "dali":
            rgb = frames if frames.ndim == 4 else frames[..., None].repeat(3, axis=-1)
            out[1:] = encode_flow(self._dali.sequence(rgb))
            return out
        gray = frames if frames.ndim == 3 else np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
        for t in range(1, n):
            out[t] = encode_flow(self.pair(gray[t - 1], gray[t]))
        return out


def compute_flow(frames: np.ndarray, *, method: str = "dis") -> np.ndarray:
    """Encoded flow (N, H, W, 3) uint8 for N RGB (or gray) frames; see the module docstring."""
    return FlowEstimator(method).sequence(frames)


def gpu_flow_available() -> bool:
    """Whether DALI's optical-flow operator can run: a CUDA GPU is visible (it still needs
    the optical-flow engine of Turing or newer; DALI reports otherwise when it is built)."""
    try:
        import torch  # heavy
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


class _DaliFlow:
    """DALI ``fn.optical_flow`` on GPU 0, fed one frame sequence at a time."""

    def __init__(self, output_grid: int = 4) -> None:
        if not gpu_flow_available():
            raise ValueError("method 'dali' needs a CUDA GPU (DALI's optical_flow is GPU only); "
                             "none is visible -- use 'dis' or 'farneback'")
        from nvidia.dali import fn, pipeline_def  # heavy

        self.grid = output_grid

        @pipeline_def(batch_size=1, num_threads=1, device_id=0, prefetch_queue_depth=1)
        def pipe():
            seq = fn.external_source(name="seq", layout="FHWC", device="cpu")
            return fn.optical_flow(seq.gpu(), output_grid=output_grid)

        self._pipe = pipe()
        self._pipe.build()

    def sequence(self, rgb: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N-1, H, W, 2) float32 px at full resolution."""
        import cv2  # heavy

        self._pipe.feed_input("seq", [np.ascontiguousarray(rgb)])
        (out,) = self._pipe.run()
        small = np.asarray(out.as_cpu()[0], dtype=np.float32)  # (N-1, H/grid, W/grid, 2)
        h, w = rgb.shape[1:3]
        # DALI's vectors are in input-resolution pixels already: resize the grid, not the values
        return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in small])


# ---------------------------------------------------------------------------------------------
# reading RGB and writing flow


def read_video_gray(path: str | Path) -> tuple[np.ndarray, str, int]:
    """All frames of a video as (N, H, W) uint8 luma, its codec (FFmpeg decoder name) and
    its integer frame rate."""
    try:
        with open_video(path) as container:
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            rate = stream.average_rate
            frames = [_luma(f) for f in container.decode(stream)]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 -- a decoder, container or metadata failure names this file
        raise DataError(path, f"cannot decode video: {type(e).__name__}: {e}") from None
    if not frames:
        raise DataError(path, "video has no decodable frames")
    fps = int(round(float(rate))) if rate else 10
    return np.stack(frames), codec, max(1, fps)


_PLANAR_LUMA = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray")


def _luma(frame) -> np.ndarray:
    """The Y plane as is (4x faster than ``to_ndarray(format="gray")`` here). Limited-range
    video keeps its 16..235 scale: flow estimation does not care about a gain and offset."""
    if frame.format.name in _PLANAR_LUMA:
        plane = frame.planes[0]
        buf = np.frombuffer(plane, dtype=np.uint8).reshape(frame.height, plane.line_size)
        return buf[:, : frame.width].copy()
    return frame.to_ndarray(format="gray")


def read_jpg_folder_gray(folder: str | Path) -> np.ndarray:
    """Frames of a Jester-style folder as (N, H, W) uint8 luma, in frame-number order."""
    import cv2  # heavy

    frames = []
    for f in list_frame_files(folder):
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise DataError(f, "cannot decode JPEG frame")
        if frames and img.shape != frames[0].shape:
            raise DataError(f, f"frame size {img.shape[::-1]} differs from the first frame's "
                               f"{frames[0].shape[::-1]}")
        frames.append(img)
    return np.stack(frames)


@dataclass(frozen=True, slots=True)
class _FlowTask:
    src: str        # RGB video or frame folder
    dst: str        # flow video or frame folder
    done: str       # an existing output here also counts as done (Jester's final folder)
    kind: str       # "video" | "jpg"
    last: bool = False  # written after every other task (IsoGD: each split's first sample)


@dataclass(frozen=True, slots=True)
class FlowSummary:
    computed: int       # outputs written by this run
    skipped: int        # outputs that already existed
    pairs: int          # frame pairs computed by this run
    seconds: float
    method: str

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0


_WORKER: dict = {}


def _init_worker(method: str, codec: str | None, threads: int | None) -> None:
    import cv2  # heavy

    if threads is not None:
        cv2.setNumThreads(threads)  # one process per core: no oversubscription
    _WORKER.update(method=method, codec=codec, estimator=None)


def _flow_one(task: _FlowTask) -> int:
    """Compute and write one sample's flow; returns the number of pairs computed."""
    if _WORKER["estimator"] is None:
        _WORKER["estimator"] = FlowEstimator(_WORKER["method"])
    est: FlowEstimator = _WORKER["estimator"]
    dst = Path(task.dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if task.kind == "video":
        gray, src_codec, fps = read_video_gray(task.src)
        codec = _WORKER["codec"] or _CODEC_OF_DECODER.get(src_codec)
        if codec is None:
            from bench.errors import DataError

            raise DataError(task.src, f"no encoder for the input's codec {src_codec!r}; pass codec= "
                                      f"(one of {sorted(_CODEC_OF_DECODER)})")
        write_video(dst, est.sequence(gray), codec=codec, fps=fps)
    else:
        gray = read_jpg_folder_gray(task.src)
        write_jpg_folder(dst, est.sequence(gray), quality=JPEG_QUALITY)
    return len(gray) - 1


def _is_done(task: _FlowTask) -> bool:
    return os.path.exists(task.dst) or os.path.exists(task.done)


def _flow_tasks(fmt: str, root: Path, split: str) -> list[_FlowTask]:
    index = load_index(fmt, root, split, modalities=("rgb",), use_cache=False)
    tasks = []
    if fmt == "isogd":
        for s in index.samples:
            rgb = s.paths["rgb"]
            if not rgb.name.startswith(ISOGD_PREFIX["rgb"]):
                where, _, line = s.source.rpartition(":")
                raise DataError(where or rgb, f"cannot place flow beside {rgb.name!r}: RGB file name "
                                "does not start with 'M_'", line=int(line) if line.isdigit() else None)
            dst = rgb.with_name(ISOGD_PREFIX["flow"] + rgb.name[len(ISOGD_PREFIX["rgb"]):])
            # readers detect flow by the first listed sample's F_ file: write it last
            tasks.append(_FlowTask(str(rgb), str(dst), str(dst), "video", last=not tasks))
    else:
        final = root / JESTER_DIRS["flow"]
        partial = root / (JESTER_DIRS["flow"] + _PARTIAL)
        for s in index.samples:
            tasks.append(_FlowTask(str(s.paths["rgb"]), str(partial / s.sample_id),
                                   str(final / s.sample_id), "jpg"))
    return tasks


def _available_splits(fmt: str, root: Path) -> list[str]:
    files = ISOGD_LISTS if fmt == "isogd" else JESTER_CSVS
    return [s for s in SPLITS if (root / files[s]).is_file()]


def compute_flow_dataset(fmt: str, root: str | Path, *, workers: int = 1, method: str = "dis",
                         splits: Sequence[str] | None = None, progress: bool = True,
                         codec: str | None = None) -> FlowSummary:
    """Compute the flow modality of every sample of ``splits`` (default: every split whose
    list exists) of the ``fmt`` dataset at ``root``; skips outputs that already exist."""
    from tqdm import tqdm  # heavy

    if fmt not in ("isogd", "jester"):
        raise ValueError(f"format must be 'isogd' or 'jester', got {fmt!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if codec is not None and codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if method == "dali":
        if not gpu_flow_available():
            raise ValueError("method 'dali' needs a CUDA GPU; none is visible -- use 'dis' or 'farneback'")
        workers = 1  # one pipeline owns the GPU's optical-flow engine
    FlowEstimator(method if method != "dali" else "farneback")  # fail early (e.g. tvl1 missing)
    root = Path(root).absolute()
    if not root.is_dir():
        raise DataError(root, "dataset root is not a directory")
    split_list = [normalize_split(s) for s in splits] if splits else _available_splits(fmt, root)
    if not split_list:
        raise DataError(root, f"no {fmt} split lists found")
    tasks = [t for s in split_list for t in _flow_tasks(fmt, root, s)]
    todo = [t for t in tasks if not _is_done(t)]
    skipped = len(tasks) - len(todo)

    # the tasks marked `last` go in a second wave, after every other output is on disk
    waves = [[t for t in todo if not t.last], [t for t in todo if t.last]]
    t0 = time.perf_counter()
    pairs = 0
    bar = tqdm(total=len(todo), desc=f"flow {fmt} ({method})", unit="clip",
               disable=None if progress else True)
    try:
        if workers == 1 or len(todo) <= 1:
            _init_worker(method, codec, None)
            for wave in waves:
                for t in wave:
                    pairs += _flow_one(t)
                    bar.update()
        else:
            import multiprocessing as mp

            # spawn: the parent may hold threads (torch, Ray) that fork would copy half-locked
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(method, codec, 1)) as pool:
                for wave in waves:
                    chunk = max(1, len(wave) // (8 * workers))
                    for n in pool.imap_unordered(_flow_one, wave, chunksize=chunk):
                        pairs += n
                        bar.update()
    finally:
        bar.close()
    if fmt == "jester":
        _publish_jester(root / JESTER_DIRS["flow"])
    return FlowSummary(len(todo), skipped, pairs, time.perf_counter() - t0, method)


def _publish_jester(final: Path) -> None:
    """Move finished folders from ``<flow>.partial`` into the folder readers look for."""
    partial = final.with_name(final.name + _PARTIAL)
    if not partial.is_dir():
        return
    if not final.exists():
        os.replace(partial, final)
        return
    for entry in partial.iterdir():
        if entry.name.startswith("."):
            continue  # an interrupted folder (".<id>.tmp")
        target = final / entry.name
        if target.exists():
            shutil.rmtree(target)
        os.replace(entry, target)
    shutil.rmtree(partial)


# ---------------------------------------------------------------------------------------------
# CLI


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flow", help="compute the optical-flow modality from RGB (resumable)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--format", required=True, choices=("isogd", "jester"))
    p.add_argument("--root", required=True, type=Path, help="dataset root")
    p.add_argument("--workers", type=int, default=1, help="processes (one per core)")
    p.add_argument("--method", choices=METHODS, default="dis",
                   help="dis (DIS fast, default), farneback, tvl1 (needs opencv-contrib), dali (GPU)")
    p.add_argument("--splits", default=None, help="comma-separated, e.g. train,valid (default: all listed)")
    p.add_argument("--codec", default=None, help="IsoGD flow video codec (default: the RGB video's)")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:

    splits = [s.strip() for s in args.splits.split(",") if s.strip()] if args.splits else None
    try:
        r = compute_flow_dataset(args.format, args.root, workers=args.workers, method=args.method,
                                 splits=splits, codec=args.codec)
    except ValueError as e:  # DataError is a ValueError too: both name what is wrong
        raise CLIError(str(e)) from None
    print(f"flow ({r.method}): {r.computed} computed, {r.skipped} already present; "
          f"{r.pairs} pairs in {r.seconds:.1f} s ({r.pairs_per_second:.0f} pairs/s)")
    return 0
