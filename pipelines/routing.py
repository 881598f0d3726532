"""Which backend decodes a dataset: "auto" probes codecs and picks, a forced name is checked.

Rules, from two runs of ``bench perf data --repeats 5`` on the 2-core CPU machine (decode-only
clips/s of 16-frame clips; backends interleaved on the same files; ratio to PyAV in the same
run, run 1 / run 2). The machine was shared (load 7-9), so ratios within ~0.7-1.3x are
noise: PyAV and OpenCV read JPG folders with the same ``cv2.imread`` code and still came
out 0.66-1.27x apart.

==================  ===========  ===========  ===========================================
case (320x240)      OpenCV       DALI-CPU     auto on a CPU host
==================  ===========  ===========  ===========================================
MJPEG, 40 frames    1.21 / 0.81  0.47 / 0.37  pyav: decodes only the requested packets
MJPEG, 200 frames   0.25 / 0.38  0.16 / 0.27  (intra-only), which wins as sampling thins
VP9, 40 frames      1.05 / 1.16  0.36 / 0.50  opencv (ties PyAV here; 2x in STACK_NOTES'
VP9, 200 frames     0.78 / 0.90  0.64 / 0.76  whole-video decode on an idle machine)
H.264, 40 frames    0.99 / 0.73  n/a          opencv (as VP9; DALI-CPU cannot decode it)
MPEG-4/XVID, 40 fr  1.98 / 1.61  n/a          opencv: consistently faster
JPG, 176x100 x 36   1.27 / 0.66  1.12 / 0.54  opencv (``cv2.imread``; DALI no faster)
real VP9 / H.264    0.76-1.10 / 0.95-1.27     opencv
==================  ===========  ===========  ===========================================

- A visible GPU: ``dali-gpu`` (NVDEC + nvJPEG decode every codec the suites use).
- DALI on CPU is never the automatic choice: slower than PyAV/OpenCV in every case measured
  (it decodes MJPEG/VP8/VP9 and JPG, but drives FFmpeg with more overhead for short clips),
  and ``import nvidia.dali`` costs 2-8 s in every process (each trial of a sweep).
  It stays available as a forced backend and is checked for equal output.
- Depth (8-bit gray): PyAV's ``to_ndarray("gray")`` is exact, OpenCV's BGR->gray within ~1.

A forced backend never silently drops a file: a codec it cannot decode raises DataError naming
the file and codec. "auto" routes such files (in a mixed dataset) to the CPU fallback instead.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from dataclasses import dataclass

from pipelines._media import Media
from pipelines.dali import GPU_VIDEO_CODECS, IMAGE_CODECS

BACKENDS = ("auto", "dali-gpu", "dali-cpu", "pyav", "opencv")

# Measured choice on a CPU-only host, per codec family (see the module docstring).
AUTO_CPU: dict[str, str] = {
    "mjpeg": "pyav", "vp8": "opencv", "vp9": "opencv", "h264": "opencv", "hevc": "opencv",
    "mpeg4": "opencv", "jpeg": "opencv", "png": "opencv",
}
CPU_FALLBACK = "opencv"   # unlisted codecs, mixed datasets, and files DALI cannot take under "auto"


@dataclass(frozen=True, slots=True)
class Choice:
    backend: str
    reason: str


def dali_installed() -> bool:
    """Whether nvidia.dali can be imported, without paying for the import."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):
        return False


def codecs_of(media: list[Media]) -> Counter[str]:
    return Counter(m.codec or "?" for m in media)


def choose(media: list[Media], *, gpu: bool, dali: bool) -> Choice:
    """The backend for a dataset whose probed files are ``media`` (a spread-out handful)."""
    codecs = codecs_of(media)
    seen = ", ".join(f"{c} x{n}" for c, n in sorted(codecs.items())) or "nothing probed"
    if gpu and dali and codecs and all(c in GPU_VIDEO_CODECS | IMAGE_CODECS for c in codecs):
        return Choice("dali-gpu", f"GPU visible; NVDEC/nvJPEG decode {seen}")
    if not codecs:
        return Choice(CPU_FALLBACK, "no file could be probed; the fallback decoder reads anything")
    picks = {AUTO_CPU.get(c, CPU_FALLBACK) for c in codecs}
    pick = picks.pop() if len(picks) == 1 else CPU_FALLBACK   # mixed: the one that reads all
    if pick.startswith("dali") and not dali:
        pick = CPU_FALLBACK
    why = f"fastest measured CPU decoder for {seen}"
    if gpu:
        why += ("; GPU visible but DALI is not installed" if not dali
                else "; GPU visible but NVDEC/nvJPEG cannot decode them all")
    return Choice(pick, why)
