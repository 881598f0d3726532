"""DALI decoding, driven batch by batch so the loader keeps control of indices and jitter.

One small pipeline per kind of input, fed through ``external_source``:

    video:  encoded file bytes + frame indices --> fn.decoders.video(frames=idx)  --> (T, H, W, 3)
    frames: the requested JPG/PNG files, B*T    --> fn.decoders.image(RGB)         --> (H, W, 3) each

``device="cpu"`` (``device_id=None``) decodes MJPEG/VP8/VP9 and images on the host;
``device="mixed"`` decodes on the GPU with NVDEC (adds H.264, HEVC, MPEG-4 Part 2, AV1) and
nvJPEG. On the GPU the frames stay there: DALI's output goes to torch through DLPack
(``to_torch``, the default on the GPU), one device-to-device copy per clip (DALI reuses its
output buffers on the next run), and the loader's crop, resize and mean subtraction, torch ops,
run where the frames are. On the CPU the output is numpy, as the other decoders'. The loader draws the indices (the paper's jittered sampling), so the frames equal the
PyAV path's up to colour conversion (mean abs difference ~1.5 of 255, measured), and the
cropping, resizing and mean subtraction run in the one shared ``preprocess_clip``.

Why not ``fn.experimental.readers.video``: it skips files it cannot decode *silently* (only
stderr says so), and its ``uniform_sample`` has no jitter. Feeding bytes ourselves means every
sample that goes in comes out or raises: the count is checked batch by batch.

``import nvidia.dali`` costs 3-8 s, so nothing here imports it before a pipeline is built.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

import numpy as np

from bench.errors import DataError
from pipelines.decoders import Request

log = logging.getLogger("pipelines")

# What fn.decoders.video decodes, per its DALI 2.4 docstring (CPU list verified on this machine).
CPU_VIDEO_CODECS = frozenset({"mjpeg", "vp8", "vp9"})
GPU_VIDEO_CODECS = CPU_VIDEO_CODECS | {"h264", "hevc", "mpeg4", "av1"}
IMAGE_CODECS = frozenset({"jpeg", "png"})


class DaliDecoder:
    """Decodes lists of :class:`Request` in batches of at most ``max_batch`` clips.

    ``device``: "cpu" or "gpu" (mixed decoders). Not thread-safe: the loader calls it from one
    thread at a time.
    """

    def __init__(self, *, device: Literal["cpu", "gpu"], max_batch: int, clip_len: int,
                 num_threads: int = 1, device_id: int | None = None, to_torch: bool | None = None) -> None:
        self.device = device
        #: return torch tensors on the decoder's device (DLPack, no host copy) instead of numpy
        self.to_torch = device == "gpu" if to_torch is None else to_torch
        self.name = f"dali-{device}"
        self.max_batch = max(1, max_batch)
        self.max_images = max(1, max_batch * clip_len)
        self.num_threads = max(1, num_threads)
        self.device_id = device_id if device == "gpu" else None
        self.video_codecs = GPU_VIDEO_CODECS if device == "gpu" else CPU_VIDEO_CODECS
        self._pipes: dict[str, Any] = {}
        self._lock = threading.Lock()

    # --- routing -----------------------------------------------------------------------------
    def supports(self, codec: str | None) -> bool:
        return codec in self.video_codecs or codec in IMAGE_CODECS

    def describe_codecs(self) -> str:
        return ", ".join(sorted(self.video_codecs)) + " videos and JPG/PNG frame folders"

    # --- pipelines ---------------------------------------------------------------------------
    def _pipe(self, kind: str):
        if kind in self._pipes:
            return self._pipes[kind]
        from nvidia.dali import fn, pipeline_def, types

        dec_dev = "mixed" if self.device == "gpu" else "cpu"
        batch = self.max_batch if kind == "video" else self.max_images

        @pipeline_def(batch_size=batch, num_threads=self.num_threads, device_id=self.device_id,
                      prefetch_queue_depth=1, exec_dynamic=True)
        def video_pipe():
            enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
            idx = fn.external_source(name="idx", dtype=types.INT32, ndim=1)
            return fn.decoders.video(enc, frames=idx, device=dec_dev)

        @pipeline_def(batch_size=batch, num_threads=self.num_threads, device_id=self.device_id,
                      prefetch_queue_depth=1, exec_dynamic=True)
        def image_pipe():
            enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
            return fn.decoders.image(enc, device=dec_dev, output_type=types.RGB)

        pipe = video_pipe() if kind == "video" else image_pipe()
        pipe.build()
        self._pipes[kind] = pipe
        log.debug("built DALI %s pipeline on %s (batch %d, %d threads)", kind, self.device, batch,
                  self.num_threads)
        return pipe

    def _run(self, kind: str, feeds: dict[str, list[np.ndarray]]) -> list[Any]:
        """Run one batch; returns one array per fed sample (numpy on the host, or with
        ``to_torch`` a torch tensor where DALI put it), or raises RuntimeError."""
        pipe = self._pipe(kind)
        n = len(feeds["enc"])
        for name, data in feeds.items():
            pipe.feed_input(name, data)
        (out,) = pipe.run()
        if self.to_torch:
            import torch

            # a view of DALI's buffer through DLPack, cloned on its device before the next run reuses it
            got = [torch.from_dlpack(out[i]).clone() for i in range(len(out))]
            if got and got[0].is_cuda:
                # the clones are queued on torch's stream; DALI may reuse its buffers once `out`
                # is dropped, so wait for them here (once per decoded batch, in the loader's thread)
                torch.cuda.current_stream(got[0].device).synchronize()
        else:
            if hasattr(out, "as_cpu"):
                out = out.as_cpu()
            got = [np.array(out[i]) for i in range(len(out))]
        if len(got) != n:  # the reader-based DALI paths lose files silently; refuse to
            raise RuntimeError(f"DALI returned {len(got)} samples for {n} fed")
        return got

    # --- decoding ----------------------------------------------------------------------------
    def decode(self, requests: list[Request]) -> list[np.ndarray | DataError]:
        """Frames for each request (RGB ``(T,H,W,3)`` or gray ``(T,H,W)``), or the DataError."""
        with self._lock:
            results: list[np.ndarray | DataError | None] = [None] * len(requests)
            videos = [i for i, r in enumerate(requests) if r.media.kind == "video"]
            folders = [i for i, r in enumerate(requests) if r.media.kind == "frames"]
            for start in range(0, len(videos), self.max_batch):
                chunk = videos[start:start + self.max_batch]
                for i, res in zip(chunk, self._decode_videos([requests[i] for i in chunk])):
                    results[i] = res
            if folders:
                for i, res in zip(folders, self._decode_folders([requests[i] for i in folders])):
                    results[i] = res
            assert all(r is not None for r in results)
            return results  # type: ignore[return-value]

    def _decode_videos(self, reqs: list[Request]) -> list[np.ndarray | DataError]:
        out: list[np.ndarray | DataError | None] = [None] * len(reqs)
        feed: list[int] = []
        encs, idxs = [], []
        for j, r in enumerate(reqs):
            top = int(r.indices.max())
            if top >= r.media.num_frames:  # DALI would pad with black frames instead of failing
                out[j] = DataError(r.media.path, f"frame {top} requested, the video holds "
                                                 f"{r.media.num_frames}")
                continue
            try:
                encs.append(np.fromfile(r.media.path, dtype=np.uint8))
            except OSError as e:
                out[j] = DataError(r.media.path, f"cannot read the file: {e.strerror or e}")
                continue
            idxs.append(np.ascontiguousarray(r.indices, dtype=np.int32))
            feed.append(j)
        if feed:
            for j, res in zip(feed, self._run_or_isolate("video", encs, idxs, [reqs[j] for j in feed])):
                out[j] = self._finish(reqs[j], res)
        return out  # type: ignore[return-value]

    def _decode_folders(self, reqs: list[Request]) -> list[np.ndarray | DataError]:
        """All requested images of all clips go through the image decoder as one flat batch."""
        out: list[np.ndarray | DataError | None] = [None] * len(reqs)
        flat: list[tuple[int, int]] = []  # (request, frame number) per image fed
        encs = []
        for j, r in enumerate(reqs):
            files = r.media.frames
            uniq = sorted(set(int(i) for i in r.indices))
            if uniq[-1] >= len(files):
                out[j] = DataError(r.media.path, f"frame {uniq[-1]} requested, the folder holds {len(files)}")
                continue
            try:
                data = [np.fromfile(files[i], dtype=np.uint8) for i in uniq]
            except OSError as e:
                out[j] = DataError(r.media.path, f"cannot read a frame file: {e}")
                continue
            encs.extend(data)
            flat.extend((j, i) for i in uniq)
        images: list[np.ndarray | DataError] = []
        for start in range(0, len(encs), self.max_images):
            part_reqs = [reqs[j] for j, _ in flat[start:start + self.max_images]]
            images.extend(self._run_or_isolate("frames", encs[start:start + self.max_images], None,
                                               part_reqs, files=[reqs[j].media.frames[i] for j, i
                                                                 in flat[start:start + self.max_images]]))
        per_req: dict[int, dict[int, np.ndarray]] = {}
        for (j, i), img in zip(flat, images):
            if isinstance(out[j], DataError):
                continue
            if isinstance(img, DataError):
                out[j] = img
                continue
            per_req.setdefault(j, {})[i] = img
        for j, frames in per_req.items():
            if out[j] is None:
                shapes = {f.shape for f in frames.values()}
                if len(shapes) > 1:
                    out[j] = DataError(reqs[j].media.path, f"frames differ in size: {sorted(shapes)}")
                    continue
                clip = _stack([frames[int(i)] for i in reqs[j].indices])
                out[j] = _to_gray(clip) if reqs[j].gray else clip
        return out  # type: ignore[return-value]

    def _run_or_isolate(self, kind: str, encs: list[np.ndarray], idxs: list[np.ndarray] | None,
                        reqs: list[Request], files=None) -> list[np.ndarray | DataError]:
        """Run a batch; if DALI fails, rerun sample by sample so the failure names its file."""
        feeds = {"enc": encs} | ({"idx": idxs} if idxs is not None else {})
        try:
            return list(self._run(kind, feeds))
        except Exception as e:  # noqa: BLE001 -- RuntimeError from DALI, others from its bindings
            # DALI says the pipeline "is no longer valid" after an operator error; a new one
            # costs milliseconds, so never reuse it.
            self._pipes.pop(kind, None)
            if len(encs) == 1:
                path = files[0] if files else reqs[0].media.path
                return [DataError(path, f"{self.name} cannot decode it ({reqs[0].media.codec}): "
                                        f"{_first_line(e)}")]
        results: list[np.ndarray | DataError] = []
        for k in range(len(encs)):
            one = {name: [data[k]] for name, data in feeds.items()}
            results.extend(self._run_or_isolate(kind, one["enc"], one.get("idx"), [reqs[k]],
                                                [files[k]] if files else None))
        return results

    def _finish(self, req: Request, res: np.ndarray | DataError) -> np.ndarray | DataError:
        if isinstance(res, DataError):
            return res
        if res.ndim != 4 or res.shape[0] != len(req.indices):
            return DataError(req.media.path, f"{self.name} returned frames of shape {res.shape} "
                                             f"for {len(req.indices)} requested")
        return _to_gray(res) if req.gray else res


def _stack(frames: list[Any]) -> Any:
    if frames and not isinstance(frames[0], np.ndarray):
        import torch

        return torch.stack(frames)
    return np.stack(frames)


def _to_gray(clip: Any) -> Any:
    """RGB ``(T, H, W, 3)`` -> luma ``(T, H, W)`` (BT.601, as OpenCV and FFmpeg's gray output).

    DALI has no gray output for video; for gray content R = G = B and this is exact, and for a
    JPG it matches ``cv2.IMREAD_GRAYSCALE`` to rounding. A torch tensor (on the GPU) is
    converted where it is, with OpenCV's own fixed-point weights, so both give the same bytes.
    """
    if not isinstance(clip, np.ndarray):
        x = clip.to(dtype=__import__("torch").int32)
        # cv2's RGB2GRAY on uint8: 15-bit fixed point, (R*9798 + G*19235 + B*3735 + 2^14) >> 15
        # (equal to cv2 on 10^7 random pixels; tests/test_pipelines.py compares whole clips)
        y = (x[..., 0] * 9798 + x[..., 1] * 19235 + x[..., 2] * 3735 + 16384) >> 15
        return y.to(clip.dtype)
    import cv2

    t, h, w, _ = clip.shape
    return cv2.cvtColor(np.ascontiguousarray(clip).reshape(t * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(t, h, w)


def _first_line(e: BaseException) -> str:
    """The cause in DALI's error text, which otherwise repeats the pipeline's traceback."""
    text = str(e)
    if "encountered:" in text:
        text = text.rsplit("encountered:", 1)[1]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    line = lines[0]
    if line.startswith("Assert on") and "failed: " in line:
        line = line.split("failed: ", 1)[1]
    return line


def gpu_visible() -> bool:
    """A CUDA device DALI can use (checked through torch, already imported by the loader)."""
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - broken CUDA installs
        return False
