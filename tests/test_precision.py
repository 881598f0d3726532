"""Mixed precision by the device's capability (`bench.train.precision`), and fp16's GradScaler
in a training step: the choice is checked for every (mode, capability), the scaled step on
the CPU (torch's GradScaler runs there too), so CI tests what a T4 node would run."""

from __future__ import annotations

import pytest
import torch

from bench.train.config import TrainConfig
from bench.train.loop import train_step
from bench.train.precision import choose_precision

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize("amp,cc,name,scaler", [
    ("auto", (9, 0), "bf16", False),      # H100
    ("auto", (8, 0), "bf16", False),      # A100
    ("auto", (8, 9), "bf16", False),      # L4
    ("auto", (7, 5), "fp16", True),       # T4 (clusters/gcp.yaml)
    ("auto", (7, 0), "fp16", True),       # V100
    ("fp16", (9, 0), "fp16", True),
    ("bf16", (8, 0), "bf16", False),
    ("off", (9, 0), "fp32", False),
])
def test_precision_by_capability(amp, cc, name, scaler):
    p = choose_precision(amp, CUDA, capability=cc)
    assert (p.name, p.scaler) == (name, scaler)
    assert (p.grad_scaler() is not None) == scaler          # a GradScaler exactly for fp16


def test_bf16_is_refused_without_native_bf16_with_the_reason():
    with pytest.raises(ValueError, match=r"bf16 needs native bf16 .* compute capability 7\.5: use amp: auto"):
        choose_precision("bf16", CUDA, capability=(7, 5))


@pytest.mark.parametrize("amp", ["auto", "bf16", "fp16", "off"])
def test_cpu_trains_in_fp32_whatever_the_mode(amp):
    p = choose_precision(amp, torch.device("cpu"))
    assert p.dtype is None and not p.scaler and p.autocast()().__class__.__name__ == "nullcontext"


def test_fp16_is_a_config_value():
    assert TrainConfig(dataset="isogd", root="/data", epochs=1, batch_size=2, amp="fp16").amp == "fp16"


def test_a_scaled_step_equals_the_plain_step_and_skips_an_overflowed_one():
    """GradScaler divides the gradients back before the step: the same update as unscaled; an
    inf loss skips the step and lowers the scale (what keeps fp16 training alive)."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))

    def make():
        torch.manual_seed(1)
        m = torch.nn.Linear(5, 3)
        return m, torch.optim.SGD(m.parameters(), lr=0.1)

    plain, opt = make()
    train_step(plain, x, y, opt)
    scaled, opt2 = make()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    train_step(scaled, x, y, opt2, scaler=scaler)
    for a, b in zip(plain.parameters(), scaled.parameters()):
        torch.testing.assert_close(a, b)
    before = [p.detach().clone() for p in scaled.parameters()]
    train_step(scaled, torch.full_like(x, float("inf")), y, opt2, scaler=scaler)
    assert all(torch.equal(a, b) for a, b in zip(before, scaled.parameters()))
    assert scaler.get_scale() < 2.0 ** 10


@pytest.mark.parametrize("cell", ["convlstm", "a", "b", "c", "d"])
def test_cell_state_stays_float32_under_autocast(cell):
    """Under bfloat16 autocast (CPU here; the same code on CUDA) every step's gates and H are
    bfloat16 but C is float32, from C_0 on; the layer's output keeps the gates' dtype."""
    from bench.models.recurrent import ConvRecurrentLayer

    torch.manual_seed(0)
    layer = ConvRecurrentLayer(cell, in_channels=8, out_channels=8, recurrent_impl="auto")
    seen = []
    step = layer.cell.step

    def spy(xp, state):
        h, (h2, c) = step(xp, state)
        seen.append((state[1].dtype, h.dtype, c.dtype))
        return h, (h2, c)

    layer.cell.step = spy
    x = torch.randn(2, 8, 4, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x.to(torch.bfloat16))
    assert len(seen) == 4
    assert all(c_in == torch.float32 and h == torch.bfloat16 and c == torch.float32 for c_in, h, c in seen), seen
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()                   # the mixed-dtype graph trains
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in layer.parameters() if p.requires_grad)
    # outside autocast nothing changes: float32 throughout
    seen.clear()
    layer(x)
    assert all(d == (torch.float32,) * 3 for d in seen)
