"""Which backend decodes a dataset: "auto" probes codecs and picks, a forced name is checked.

Measured on the 2-core CPU machine with ``bench perf data`` (see docs/perf/data.md; median
clips/s, 16-frame clips, same files, one run):

- A visible GPU: ``dali-gpu`` (NVDEC + nvJPEG decode every codec the suites use).
- No GPU: OpenCV for every codec and for JPG folders. DALI's CPU decoder reads MJPEG/VP8/VP9
  and JPG/PNG, but on short clips (tens of frames, 16-32 sampled: Jester, IsoGD) it is not
  faster than OpenCV's sequential grab/retrieve, and importing DALI costs 3-8 s per process
  (every trial of a sweep). PyAV is the slowest of the three; it stays as the exact reader of
  8-bit depth (``to_ndarray("gray")``) and as a forced choice.
- H.264, MPEG-4 Part 2 (XVID), HEVC, AV1 without a GPU: OpenCV (DALI-CPU cannot decode them;
  its reader would skip the files silently).

A forced backend never silently drops a file: a codec it cannot decode raises DataError naming
the file and codec. "auto" routes such files (in a mixed dataset) to the CPU fallback instead.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from dataclasses import dataclass

from pipelines._media import Media
from pipelines.dali import CPU_VIDEO_CODECS, GPU_VIDEO_CODECS, IMAGE_CODECS

BACKENDS = ("auto", "dali-gpu", "dali-cpu", "pyav", "opencv")

# Measured choice on a CPU-only host, per codec family (see the module docstring).
AUTO_CPU: dict[str, str] = {
    "mjpeg": "opencv", "vp8": "opencv", "vp9": "opencv", "jpeg": "opencv", "png": "opencv",
}
CPU_FALLBACK = "opencv"   # every other codec on a CPU host, and files DALI cannot take under "auto"


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
    if len(picks) == 1:
        pick = picks.pop()
    else:  # a mixed dataset: the decoder that reads everything
        pick = CPU_FALLBACK
    if pick.startswith("dali") and not dali:
        pick = CPU_FALLBACK
    cpu_ok = all(c in CPU_VIDEO_CODECS | IMAGE_CODECS for c in codecs)
    why = ("fastest measured CPU decoder for these codecs" if cpu_ok
           else "DALI on CPU cannot decode these codecs")
    if gpu and not dali:
        why += "; GPU visible but DALI is not installed"
    return Choice(pick, f"{why} ({seen})")
