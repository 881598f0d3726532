"""The values of the one setting that chooses how the recurrent layers run
(``NetConfig.recurrent_impl``). Imports nothing beyond the standard library: configuration
code validates against it without importing torch.

- ``"native"``: the C++ kernels (``csrc/variant_a.cpp``) are required; building the network
  fails with the reason (no compiler, a failed build, ``GESTUREBENCH_NATIVE=0``). Variant (a)
  trains and infers through its fused layer with C++ steps, and the depthwise stage of every
  depthwise-separable convolution of the cells runs through the C++ depthwise kernel.
- ``"auto"`` (the default): ``"native"`` where the kernels build, ``"aten"`` where they do not
  (with a warning that says why) or where ``GESTUREBENCH_NATIVE=0`` turns them off.
- ``"aten"``: no C++ kernels. Variant (a) trains through its fused layer (a hand-written
  backward over ATen ops) and infers through the step loop; the other cells run the step loop.
- ``"steploop"``: no C++ kernels and no fused layer: every cell runs autograd's per-step loop
  over ATen ops, the reference the other values are tested against.

The kernels take float32 and float64 CPU tensors outside autocast, and stay out of the way of
``torch.compile`` and of dispatch modes (``FlopCounterMode``): there ``"native"`` and
``"auto"`` run as ``"aten"``. The fused layer itself runs on CPU outside autocast; elsewhere
(CUDA, CPU autocast) every value runs the step loop. ``bench.models.native.implementation``
names what a network or a layer actually runs: one of `RESOLVED_IMPLS`.
"""

from __future__ import annotations

#: What ``NetConfig.recurrent_impl`` accepts.
RECURRENT_IMPLS: tuple[str, ...] = ("auto", "native", "aten", "steploop")

#: What ``implementation()`` reports: what ran, with ``"auto"`` resolved.
RESOLVED_IMPLS: tuple[str, ...] = ("native", "aten", "steploop")


def check_recurrent_impl(value: object, *, owner: str = "NetConfig") -> str:
    """``value`` if it is one of `RECURRENT_IMPLS`; else a ValueError naming the field and the
    allowed values."""
    if not isinstance(value, str) or value not in RECURRENT_IMPLS:
        raise ValueError(f"{owner}.recurrent_impl={value!r}: must be one of {', '.join(RECURRENT_IMPLS)}")
    return value
