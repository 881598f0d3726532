"""Mixed precision by what the device does natively (``TrainConfig.amp``).

- ``auto``: on a CUDA device of compute capability 8.0 and up (A100, L4, H100: native bf16
  tensor cores), bf16 autocast -- bf16 has fp32's exponent range, so gradients need no loss
  scaling; below 8.0 (T4 is 7.5, V100 7.0: fp16 tensor cores, bf16 emulated and slow), fp16
  autocast with a ``GradScaler``, whose dynamic loss scale keeps small gradients from
  flushing to zero in fp16; on a CPU, fp32 (CPU autocast to bf16 is slower than fp32 on CPUs
  without AMX, as this suite's target CPUs are).
- ``bf16``: bf16 autocast on CUDA; refused below capability 8.0 with the reason.
- ``fp16``: fp16 autocast with a GradScaler on CUDA.
- ``off``: fp32 everywhere.

On a CPU every mode but ``off`` falls back to fp32 (a sweep file written for GPU nodes still
runs in CI), and `Precision.reason` says so. The loss is computed in fp32 under autocast
(`bench.train.loop.train_step`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.train.config import AMP_MODES

NATIVE_BF16 = (8, 0)


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype | None        # autocast dtype; None: fp32
    scaler: bool                     # a GradScaler scales the loss (fp16)
    device_type: str
    reason: str

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32")

    def autocast(self) -> Callable[[], Any]:
        """A factory of the autocast context (a no-op context in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext
        dtype, device_type = self.dtype, self.device_type
        return lambda: torch.autocast(device_type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.scaler else None


def choose_precision(amp: str, device: torch.device, *, capability: tuple[int, int] | None = None) -> Precision:
    """The precision ``amp`` means on ``device`` (``capability``: the CUDA device's, read from
    it when None). Raises ValueError for ``bf16`` on a GPU without native bf16."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp == "off":
        return Precision(None, False, device.type, "amp: off")
    if device.type != "cuda":
        return Precision(None, False, device.type, f"amp: {amp} on {device.type}: fp32 (mixed precision is CUDA-only here)")
    cc = capability if capability is not None else torch.cuda.get_device_capability(device)
    native = tuple(cc) >= NATIVE_BF16
    cc_text = f"compute capability {cc[0]}.{cc[1]}"
    if amp == "bf16" and not native:
        raise ValueError(f"amp: bf16 needs native bf16 (compute capability 8.0 and up); this GPU has {cc_text}: "
                         f"use amp: auto (fp16 with loss scaling) or off")
    if amp == "fp16" or (amp == "auto" and not native):
        return Precision(torch.float16, True, "cuda", f"amp: {amp}, {cc_text}: fp16 autocast with a GradScaler")
    return Precision(torch.bfloat16, False, "cuda", f"amp: {amp}, {cc_text}: bf16 autocast")
