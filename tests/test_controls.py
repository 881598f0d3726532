"""Order-blind controls: apart from the paper's cells in the registry, blind to frame order by
construction, and -- trained on classes that differ only in order -- at chance where a
recurrent cell is not; the shuffled-frames evaluation that tells the two apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.models import (
    create_cell,
    get_cell_class,
    is_control,
    list_cells,
    list_controls,
    small_network,
)
from bench.models.complexity import count_params, formula_params
from bench.train.shuffled import ShuffledFrames, permute_time, shuffled_top1, top1

PAPER_CELLS = ["convlstm", "a", "b", "c", "d"]


# -- the registry -----------------------------------------------------------------------------

def test_controls_are_registered_apart_from_the_papers_cells() -> None:
    assert list_cells() == PAPER_CELLS
    assert list_controls() == ["mean"]
    assert list_cells(include_controls=True) == PAPER_CELLS + ["mean"]
    assert is_control("mean") and not any(is_control(c) for c in PAPER_CELLS)
    with pytest.raises(ValueError, match="unknown cell 'e'"):
        is_control("e")
    assert get_cell_class("mean").order_blind is True
    assert not any(getattr(get_cell_class(c), "order_blind", False) for c in PAPER_CELLS)


def test_mean_control_is_one_stateless_separable_convolution() -> None:
    for c_in, c_out, k in [(256, 256, 3), (5, 6, 3), (16, 8, 5)]:
        with torch.device("meta"):
            cell = create_cell("mean", in_channels=c_in, out_channels=c_out, kernel_size=k)
        assert count_params(cell, bias=False) == formula_params("mean", c_in=c_in, c_out=c_out, k=k)
    cell = create_cell("mean", in_channels=5, out_channels=6)
    x = torch.randn(2, 5, 7, 9)
    h, (h2, _) = cell(x, None)
    assert h.shape == (2, 6, 7, 9) and h is h2
    other = (torch.randn(2, 6, 7, 9), torch.randn(2, 6, 7, 9))
    assert torch.equal(cell(x, other)[0], h)         # no state: the previous step changes nothing


def test_complexity_report_lists_controls_apart() -> None:
    from bench.model_cli import complexity_report

    rep = complexity_report(frames=[16])
    assert [r["cell"] for r in rep["cells"]] == PAPER_CELLS
    assert {r["cell"] for r in rep["network"]} == set(PAPER_CELLS)
    assert [r["cell"] for r in rep["controls"]["cells"]] == ["mean"]
    (net,) = rep["controls"]["network"]
    assert net["cell"] == "mean" and net["frames"] == 16 and net["params"] > 0


# -- blind to order by construction -----------------------------------------------------------

@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
def test_mean_control_network_is_invariant_to_any_frame_permutation(train_mode: bool) -> None:
    torch.manual_seed(0)
    net = small_network(cell="mean", num_classes=5).train(train_mode)
    x = torch.randn(3, 3, 8, 32, 32)
    perm = torch.stack([torch.randperm(8) for _ in range(3)])
    with torch.no_grad():
        a, b = net(x), net(permute_time(x, perm))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the front end sees one frame at a time: T steps reach the "recurrent" layers, not T/2
    assert net.frame_wise and not small_network(cell="a").frame_wise


def test_gradients_reach_every_parameter_of_the_control_network() -> None:
    torch.manual_seed(0)
    net = small_network(cell="mean", num_classes=5).train()
    torch.nn.functional.cross_entropy(net(torch.randn(2, 3, 4, 32, 32)), torch.tensor([1, 3])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_permute_time_and_shuffled_frames_are_seeded() -> None:
    clip = torch.arange(2 * 1 * 4).float().view(2, 1, 4, 1, 1)
    perm = torch.tensor([[3, 2, 1, 0], [1, 0, 3, 2]])
    assert permute_time(clip, perm).flatten(1).tolist() == [[3, 2, 1, 0], [5, 4, 7, 6]]
    batches = [{"clip": torch.randn(3, 3, 6, 4, 4), "label": torch.tensor([0, 1, 0]),
                "frame_indices": torch.arange(6).repeat(3, 1)} for _ in range(2)]
    one, two = list(ShuffledFrames(batches, seed=7)), list(ShuffledFrames(batches, seed=7))
    other = list(ShuffledFrames(batches, seed=8))
    for a, b, c, src in zip(one, two, other, batches):
        assert torch.equal(a["clip"], b["clip"]) and not torch.equal(a["clip"], c["clip"])
        # every clip is a permutation of its frames, and frame_indices says which
        for clip, fi, orig in zip(a["clip"], a["frame_indices"], src["clip"]):
            assert sorted(fi.tolist()) == list(range(6))
            assert torch.equal(clip, orig[:, fi])
    assert len(ShuffledFrames(batches)) == 2


# -- trained on order-only classes, through the real data path -------------------------------

@pytest.fixture(scope="module")
def reversal_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One class and its time reversal (swipe right / swipe left), the default run's sizes."""
    from bench.data import synth

    return synth.synthesize("isogd", tmp_path_factory.mktemp("controls") / "ds", num_classes=2,
                            clips_per_class=48, valid_clips_per_class=32, test_clips_per_class=0,
                            size=(48, 36), length_scale=0.35, seed=1, progress=False)


def _train(root: Path, cell: str, *, epochs: int = 6, seed: int = 0) -> tuple[float, float]:
    """(top-1, shuffled top-1) on the validation split after ``epochs`` on depth clips, read by
    the suite's loader (jittered training sampling, evaluation sampling) and trained by the
    loop's own step with its schedule."""
    from bench.data.formats import load_index
    from bench.models import NetConfig, build_network
    from bench.train.loop import make_scheduler, train_step
    from pipelines import make_loader

    kw = {"modality": "depth", "clip_len": 8, "size": 24, "backend": "pyav", "cache": True}
    train = make_loader(load_index("isogd", root, "train", modalities=("depth",)), train=True, batch_size=8,
                        seed=seed, **kw)
    val = make_loader(load_index("isogd", root, "valid", modalities=("depth",)), train=False, batch_size=32, **kw)
    torch.manual_seed(seed)
    net = build_network(NetConfig.preset("small", cell=cell, num_classes=2, frames=8, image_size=24))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-5)
    sched = make_scheduler(opt, total_steps=epochs * len(train), lr=0.01, lr_end=1e-4, power=0.9)
    for epoch in range(epochs):
        train.set_epoch(epoch)
        net.train()
        for batch in train:
            train_step(net, batch["clip"], batch["label"], opt, scheduler=sched)
    return top1(net, val), shuffled_top1(net, val, seed=1)


def test_control_stays_at_chance_on_a_reversal_pair_where_a_cell_learns(reversal_pair: Path) -> None:
    """Chance is 0.5; 64 validation clips give a standard error of ~0.06. Measured (6 epochs,
    seeds 0-3, two data seeds): the control 0.38-0.52, shuffled the same; ConvLSTM 0.92-1.0,
    shuffled 0.38-0.56."""
    ctrl, ctrl_shuffled = _train(reversal_pair, "mean")
    assert ctrl < 0.72
    assert abs(ctrl_shuffled - ctrl) <= 1 / 64 + 1e-9        # blind to order: shuffling changes nothing
    cell, cell_shuffled = _train(reversal_pair, "convlstm")
    assert cell > 0.85
    assert cell_shuffled < cell - 0.25                          # it reads order: shuffling undoes it
