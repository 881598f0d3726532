"""Build and load ``csrc/variant_a.cpp``, the C++ kernels of the recurrent layers on CPU:
variant (a)'s fused element-wise steps and the depthwise convolution.

The kernels are plain C functions over float pointers, so they build with the system C++
compiler in about a second, with no PyTorch headers, and load through ``ctypes``: no
``torch.utils.cpp_extension``, whose PyTorch headers take far longer to compile, in every fresh
environment. The shared object is cached under ``$GESTUREBENCH_NATIVE_CACHE`` (default
``~/.cache/gesturebench/native``), keyed by the source, the compiler, its flags and the CPU's
vector capability, and written atomically, so concurrent Ray workers share one build.

``load()`` returns None where no compiler is found or the build fails (with a warning that says
why, once a process) and where ``GESTUREBENCH_NATIVE=0`` turns the kernels off (silently);
``require()`` raises with the reason instead. Which of the two a network calls follows its
``recurrent_impl`` (``"auto"``, ``"native"``: see ``_impls.py``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE = Path(__file__).parent / "csrc" / "variant_a.cpp"

# Vector ISA flags per torch's CPU capability: the kernel is built for the machine it runs on
# (the cache key names the capability, so nodes of a cluster that share a home directory with
# different CPUs each get their own build).
_ISA_FLAGS = {"AVX512": ["-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma"],
              "AVX2": ["-mavx2", "-mfma"]}
_FLAGS = ["-O3", "-shared", "-fPIC", "-std=c++17", "-fno-math-errno", "-fno-trapping-math",
          "-ffp-contract=fast"]
# OpenMP: the object then needs libgomp.so.1, which resolves to the copy torch has already loaded
# (torch's CPU build runs ATen's threads on GNU OpenMP), so the kernels share ATen's thread pool
# and follow torch.set_num_threads. Without it (a compiler with no OpenMP) they run on one thread.
_OPENMP = ["-fopenmp"]


class NativeKernels:
    """The loaded library: ``fwd_step``, ``bwd_step``, ``depthwise`` and ``depthwise_wgrad`` over
    float32 or float64 tensors, checked (``_ptrs``) before their pointers reach C."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.path = path
        i64, p, i32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        self._fwd, self._bwd, self._dw, self._wg = {}, {}, {}, {}
        for suffix in ("f32", "f64"):
            fwd = getattr(lib, f"va_fwd_step_{suffix}")
            fwd.argtypes = [i64, i64, i64] + [p] * 6
            fwd.restype = None
            bwd = getattr(lib, f"va_bwd_step_{suffix}")
            bwd.argtypes = [i64, i64, i64] + [p] * 7 + [i32] + [p] * 3
            bwd.restype = None
            self._fwd[suffix], self._bwd[suffix] = fwd, bwd
            dwc = getattr(lib, f"va_depthwise_{suffix}")
            dwc.argtypes = [i64] * 5 + [i32] + [p] * 3
            dwc.restype = None
            wg = getattr(lib, f"va_depthwise_wgrad_{suffix}")
            wg.argtypes = [i64] * 5 + [p] * 3
            wg.restype = None
            self._dw[suffix], self._wg[suffix] = dwc, wg
        self._tanh = lib.va_tanh_f32
        self._tanh.argtypes = [i64, p, p]
        self._tanh.restype = None

    @staticmethod
    def _suffix(x) -> str:
        import torch  # heavy: the loader builds without torch
        if x.dtype == torch.float32:
            return "f32"
        if x.dtype == torch.float64:
            return "f64"
        raise TypeError(f"the C++ kernels take float32 or float64, not {x.dtype}")

    def fwd_step(self, g, z, c_prev, ct, h, s) -> None:
        """One step's element-wise forward; all NHWC contiguous, ``g`` overwritten by tanh(g).
        tanh(C_t) is not kept: ``bwd_step`` recomputes it from ``ct``."""
        n, c = g.shape[0], g.shape[-1]
        hw = g.numel() // (n * c)
        ptrs = _ptrs(g, [(g, n * hw * c), (z, n * 3 * c), (c_prev, n * hw * c), (ct, n * hw * c),
                         (h, n * hw * c), (s, n * c)])
        self._fwd[self._suffix(g)](n, hw, c, *ptrs)

    def bwd_step(self, dh_out, dh_rec, r, ct, g, c_prev, z, has_next: bool, dc, dg, dz) -> None:
        """One step's element-wise backward; see ``bwd_step`` in ``csrc/variant_a.cpp``."""
        n, c = g.shape[0], g.shape[-1]
        hw = g.numel() // (n * c)
        full = n * hw * c
        ptrs = _ptrs(g, [(dh_out, full), (dh_rec, full), (r, n * c), (ct, full), (g, full), (c_prev, full),
                         (z, n * 3 * c), (dc, full), (dg, full), (dz, n * 3 * c)])
        self._bwd[self._suffix(g)](n, hw, c, *ptrs[:7], int(has_next), *ptrs[7:])

    def depthwise(self, x, taps, out, *, flip: bool = False) -> None:
        """Depthwise K x K convolution of NHWC ``x`` (B, H, W, C), stride 1, zero padding K // 2,
        with ``taps`` (K, K, C), into ``out``; ``flip`` mirrors the taps (the input gradient)."""
        b, h, w, c = x.shape
        k = taps.shape[0]
        ptrs = _ptrs(x, [(x, x.numel()), (taps, k * k * c), (out, x.numel())])
        self._dw[self._suffix(x)](b, h, w, c, k, int(flip), *ptrs)

    def depthwise_wgrad(self, x, d_out, d_taps) -> None:
        """The gradient of ``depthwise`` with respect to its taps, (K, K, C), added to ``d_taps``."""
        b, h, w, c = x.shape
        k = d_taps.shape[0]
        ptrs = _ptrs(x, [(x, x.numel()), (d_out, x.numel()), (d_taps, k * k * c)])
        self._wg[self._suffix(x)](b, h, w, c, k, *ptrs)

    def tanh(self, x):
        """The float32 rational tanh of the kernels, for tests."""
        import torch  # heavy: the loader builds without torch
        x = x.contiguous()
        y = torch.empty_like(x)
        self._tanh(x.numel(), *_ptrs(x, [(x, x.numel()), (y, x.numel())]))
        return y


def _ptrs(like, tensors) -> list[int | None]:
    """Data pointers of ``(tensor or None, expected numel)`` pairs, after checking what C cannot:
    CPU, ``like``'s dtype, contiguous, the size the kernel will read or write."""
    out = []
    for t, numel in tensors:
        if t is None:
            out.append(None)
            continue
        if t.device.type != "cpu" or t.dtype != like.dtype:
            raise TypeError(f"native kernel got a {t.dtype} tensor on {t.device}, expected {like.dtype} on cpu")
        if not t.is_contiguous():
            raise ValueError(f"native kernel needs contiguous tensors, got shape {tuple(t.shape)} "
                             f"with strides {t.stride()}")
        if t.numel() != numel:
            raise ValueError(f"native kernel expected {numel} values, got shape {tuple(t.shape)}")
        out.append(t.data_ptr())
    return out


def cache_dir() -> Path:
    env = os.environ.get("GESTUREBENCH_NATIVE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gesturebench" / "native"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build(compiler: str | None = None, directory: Path | None = None) -> Path:
    """Compile the kernels (or find them built) and return the shared object's path.

    Raises RuntimeError naming the compiler and its message when the build fails."""
    import torch  # heavy: the loader builds without torch

    compiler = compiler or _compiler()
    if compiler is None:
        raise RuntimeError("no C++ compiler (c++, g++ or clang++ on PATH, or $CXX)")
    capability = torch.backends.cpu.get_cpu_capability()
    flags = _FLAGS + _ISA_FLAGS.get(capability, []) + _OPENMP
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, version, *flags]).encode()).hexdigest()[:16]
    directory = directory or cache_dir()
    target = directory / f"variant_a-{capability.lower()}-{key}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:         # no OpenMP with this compiler: one thread
            flags = [f for f in flags if f not in _OPENMP]
            proc = subprocess.run([compiler, *flags, str(SOURCE), "-o", tmp], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{compiler} failed on {SOURCE} ({proc.returncode}):\n{proc.stderr.strip()}")
        os.replace(tmp, target)          # atomic: a concurrent build writes the same bytes
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def disabled() -> bool:
    """Whether ``GESTUREBENCH_NATIVE=0`` turns the kernels off (read at every call)."""
    return os.environ.get("GESTUREBENCH_NATIVE", "1") == "0"


@functools.cache
def _attempt() -> tuple[NativeKernels | None, str | None]:
    """The kernels, built on first use, or None and the reason they are not there."""
    try:
        path = build()
        return NativeKernels(ctypes.CDLL(str(path)), path), None
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        return None, str(e)


@functools.cache
def _load_or_warn() -> NativeKernels | None:
    kernels, reason = _attempt()
    if kernels is None:
        warnings.warn(f"the C++ kernels of the recurrent layers are unavailable, using ATen ops: {reason}",
                      RuntimeWarning, stacklevel=3)
    return kernels


def load() -> NativeKernels | None:
    """The kernels, built on first use; None where ``GESTUREBENCH_NATIVE=0`` turns them off, and
    None with a warning (once a process) where they cannot be built."""
    return None if disabled() else _load_or_warn()


def require() -> NativeKernels:
    """The kernels, or a RuntimeError that says why they are not available."""
    if disabled():
        raise RuntimeError("the C++ kernels are turned off (GESTUREBENCH_NATIVE=0)")
    kernels, reason = _attempt()
    if kernels is None:
        raise RuntimeError(f"the C++ kernels did not build: {reason}")
    return kernels


def clear_cache() -> None:
    """Forget the outcome of the last build attempt (and its warning): the next ``load()`` or
    ``require()`` builds or finds the kernels again."""
    _attempt.cache_clear()
    _load_or_warn.cache_clear()
