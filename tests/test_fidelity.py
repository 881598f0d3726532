"""The released code's choices as options (docs/FIDELITY.md): Keras's hard_sigmoid gates and
its he_normal initialisation; the paper preset keeps the paper's sigmoid and torch's init."""

from __future__ import annotations

import math

import pytest
import torch

from bench.models.net import NetConfig, build_network, keras_hard_sigmoid
from bench.train.config import ConfigFieldError, TrainConfig


def test_keras_hard_sigmoid_is_keras_not_torch():
    x = torch.tensor([-3.0, -2.5, -1.0, 0.0, 1.0, 2.5, 3.0])
    torch.testing.assert_close(keras_hard_sigmoid(x), torch.tensor([0.0, 0.0, 0.3, 0.5, 0.7, 1.0, 1.0]))
    assert not torch.allclose(keras_hard_sigmoid(x), torch.nn.functional.hardsigmoid(x))


@pytest.mark.parametrize("cell", ["convlstm", "a", "b", "c", "d"])
def test_hard_sigmoid_gates_change_the_output_and_stay_in_0_1(cell):
    torch.manual_seed(0)
    x = None
    outs = {}
    for act in ("sigmoid", "hard_sigmoid"):
        torch.manual_seed(1)
        net = build_network(NetConfig.preset("small", cell=cell, num_classes=4, gate_activation=act)).eval()
        if x is None:                      # the recurrent layers' input: (B, C_res, T/2, H/4, W/4)
            x = torch.randn(2, net.res3d.out_channels, 4, 6, 6)
        with torch.no_grad():
            outs[act] = net.rnn2(net.rnn1(x))
        gates = net.rnn1.cell.step_gates(net.rnn1.cell.project_input(torch.randn(2, net.rnn1.cell.in_channels, 6, 6)),
                                         torch.randn(2, net.rnn1.cell.out_channels, 6, 6))
        for g in (gates.i, gates.f, gates.o):
            assert float(g.detach().min()) >= 0.0 and float(g.detach().max()) <= 1.0
        if act == "hard_sigmoid":          # Keras's gate saturates: exact 0s and 1s are reachable
            assert net.rnn1.cell.gate_fn is keras_hard_sigmoid and net.rnn2.cell.gate_fn is keras_hard_sigmoid
    assert not torch.allclose(outs["sigmoid"], outs["hard_sigmoid"])


def test_he_normal_init_matches_kerases_statistics():
    torch.manual_seed(0)
    net = build_network(NetConfig.preset("paper", cell="convlstm", num_classes=249, init="he_normal"))
    conv = net.rnn1.cell.conv_h
    w = conv.weight
    std = math.sqrt(2.0 / w[0].numel())
    assert float(w.abs().max()) <= 2 * std + 1e-6                  # truncated at two standard deviations
    assert float(w.std()) == pytest.approx(std * 0.88, rel=0.05)   # a 2-sigma truncated normal's std
    c = net.rnn1.cell.out_channels
    b = net.rnn1.cell.conv_x.bias
    assert torch.equal(b[c:2 * c], torch.ones(c)) and float(b[:c].abs().sum()) == 0.0
    assert float(net.classifier.bias.abs().sum()) == 0.0


def test_paper_preset_keeps_the_papers_choices_and_bad_values_name_the_field():
    cfg = NetConfig.preset("paper")
    assert (cfg.gate_activation, cfg.init) == ("sigmoid", "torch")
    kw = {"dataset": "isogd", "root": "/d", "epochs": 1, "batch_size": 2}
    assert TrainConfig(**kw, gate_activation="hard_sigmoid", init="he_normal").init == "he_normal"
    with pytest.raises(ConfigFieldError, match="gate_activation"):
        TrainConfig(**kw, gate_activation="relu")
    with pytest.raises(ConfigFieldError, match="steploop"):
        TrainConfig(**kw, gate_activation="hard_sigmoid", recurrent_impl="native")
