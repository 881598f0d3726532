"""Which backend decodes a dataset: "auto" probes codecs and picks, a forced name is checked.

Rules, per codec family on a CPU-only host, from ``bench perf data`` (decode-only and
full-loader clips/s of 16-frame clips, backends interleaved on the same files; the table and
its command are in docs/BENCHMARKS.md, "Data pipelines"):

- MJPEG: ``pyav``, which decodes only the requested packets (intra-only), and wins as the
  sampling thins (200-frame videos).
- VP8/VP9, H.264, HEVC, MPEG-4/XviD, JPG/PNG folders: ``opencv`` (ties or beats PyAV; DALI's
  CPU decoder cannot read H.264 or MPEG-4 at all).
- A visible GPU: ``dali-gpu`` (NVDEC + nvJPEG decode every codec the suites use).
- DALI on CPU is never the automatic choice: slower than PyAV/OpenCV in every case measured
  (it decodes MJPEG/VP8/VP9 and JPG, but drives FFmpeg with more overhead for short clips),
  and ``import nvidia.dali`` costs seconds in every process (each trial of a sweep).
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

# The decode backends, defined here and imported everywhere else: "auto" chooses per dataset.
DALI_BACKENDS = ("dali-gpu", "dali-cpu")
FALLBACK_BACKENDS = ("pyav", "opencv")        # pipelines.decoders.DECODERS
BACKENDS = ("auto", *DALI_BACKENDS, *FALLBACK_BACKENDS)

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
