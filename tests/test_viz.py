"""`bench viz`: the paper's Fig. 3 for a checkpoint and a clip -- one heat map per recurrent step,
each the first recurrent layer's channel with the largest activation sum at that step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.models import NetConfig, build_network

VIDEO = Path(__file__).parent / "data" / "real-gestures" / "mp4" / "swipe_up_down.mp4"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in the training loop's layout (state.pt: model, config, num_classes, clip shape)."""
    torch.manual_seed(0)
    net = build_network(NetConfig.preset("small", cell="c", num_classes=5, frames=8, image_size=48))
    d = tmp_path_factory.mktemp("ckpt") / "checkpoint_000002"
    d.mkdir()
    cfg = {"dataset": "isogd", "root": "unused", "modality": "rgb", "cell": "c", "preset": "small",
           "epochs": 2, "batch_size": 2, "num_classes": 5, "clip_len": 8, "image_size": 48}
    torch.save({"model": net.state_dict(), "config": cfg, "num_classes": 5, "clip_len": 8, "image_size": 48,
                "epoch": 2}, d / "state.pt")
    return d


def test_one_heat_map_per_recurrent_step(checkpoint: Path, tmp_path: Path) -> None:
    from bench.report.viz import draw, load_checkpoint, render_fig3

    out = render_fig3(checkpoint=checkpoint, video=VIDEO, out=tmp_path / "fig3.png")
    assert out.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.steps == 4                                   # 8 frames, Res3D halves time
    assert out.maps.shape == (4, 12, 12)                    # 48 / 4: the recurrent layers' resolution
    assert out.frames.shape == (4, 48, 48, 3) and out.frames.dtype == np.uint8
    # the channel is the argmax of the activation sum, recomputed here without the hook
    net, state = load_checkpoint(checkpoint)
    from bench.report.viz import _clip

    clip, _, sid = _clip(state=state, net=net, video=VIDEO, dataset=None, root=None, split="valid",
                         sample=None, modality="rgb")
    assert sid == "swipe_up_down"
    with torch.no_grad():
        h = net.rnn1(net.res3d(clip))[0]                    # (C, S, h, w)
    sums = h.sum(dim=(2, 3))
    assert out.channels == sums.argmax(dim=0).tolist()
    for t, c in enumerate(out.channels):
        assert np.allclose(out.maps[t], h[c, t].numpy(), atol=1e-5)
        assert sums[c, t] >= sums[:, t].max() - 1e-4
    # the figure: a frame and a heat map per step, one colour scale shown by a colour bar, and
    # where the clip comes from (a loose video file: not recorded)
    assert out.meta["provenance"].startswith("clip swipe_up_down.mp4: a video file, provenance not recorded")
    assert "network trained on isogd at 'unused' (not on this machine" in out.meta["provenance"]
    fig = draw(out.frames, out.maps, out.channels, title="t", provenance=out.meta["provenance"])
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 2 * out.steps
    _assert_colour_bar_and_provenance(fig, out, "clip swipe_up_down.mp4")
    import matplotlib.pyplot as plt

    plt.close(fig)


def _assert_colour_bar_and_provenance(fig, out, provenance_start: str) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from _helpers_report import overlapping_texts

    bars = [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    assert len(bars) == 1 and bars[0].get_label() == "<colorbar>"
    heat = [ax.images[0] for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == "jet"]
    assert len(heat) == out.steps
    lo, hi = float(out.maps.min()), float(out.maps.max())
    assert all(im.get_clim() == pytest.approx((lo, hi)) for im in heat)     # one scale for every step
    assert bars[0]._colorbar.mappable.get_clim() == pytest.approx((lo, hi))
    texts = [t.get_text().replace("\n", " ") for t in fig.texts]
    assert any(t.startswith(provenance_start) for t in texts), texts
    assert overlapping_texts(fig) == []


def test_cli_and_mlflow_logging(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mlflow.tracking import MlflowClient

    from bench.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    exp = c.create_experiment("viz", artifact_location=(tmp_path / "art").as_uri())
    run = c.create_run(exp)
    rc = main(["viz", "--checkpoint", str(checkpoint / "state.pt"), "--video", str(VIDEO),
               "--out", str(tmp_path / "f.png"), "--tracking-uri", uri, "--run-id", run.info.run_id])
    assert rc == 0
    assert (tmp_path / "f.png").is_file()
    assert [a.path for a in c.list_artifacts(run.info.run_id, "fig3")] == ["fig3/f.png"]
    assert "logged to MLflow run" in capsys.readouterr().out


def test_cli_errors(checkpoint: Path, tmp_path: Path) -> None:
    from bench.cli import main

    assert main(["viz", "--checkpoint", str(checkpoint)]) == 2                       # no clip
    assert main(["viz", "--checkpoint", str(checkpoint), "--dataset", "isogd", "--video", str(VIDEO)]) == 2
    assert main(["viz", "--checkpoint", str(checkpoint), "--video", str(VIDEO), "--tracking-uri", "x"]) == 2
    assert main(["viz", "--checkpoint", str(tmp_path), "--video", str(VIDEO)]) == 2      # no state.pt there
    assert main(["viz", "--checkpoint", str(checkpoint), "--video", str(tmp_path / "nope.mp4")]) == 2


def test_clip_from_a_dataset_sample(checkpoint: Path, tmp_path: Path) -> None:
    """--dataset/--root/--sample: the clip comes from the dataset's index (here a depth clip)."""
    from bench.data.synth import synthesize
    from bench.report.viz import render_fig3

    root = synthesize("isogd", tmp_path / "isogd", num_classes=2, clips_per_class=1, valid_clips_per_class=2,
                      size=(40, 32), seed=0, length_scale=0.2, modalities=("rgb", "depth"), progress=False)
    out = render_fig3(checkpoint=checkpoint, dataset="isogd", root=root, split="valid", sample="valid/001/M_00002",
                      modality="depth", out=tmp_path / "d.png")
    assert out.sample_id == "valid/001/M_00002"
    assert out.steps == 4 and out.png.is_file()
    assert out.meta["provenance"].startswith("SYNTHETIC isogd (valid) clip valid/001/M_00002")
    from bench.report.viz import draw

    fig = draw(out.frames, out.maps, out.channels, title="t", provenance=out.meta["provenance"])
    _assert_colour_bar_and_provenance(fig, out, "SYNTHETIC isogd (valid)")
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert (out.frames[..., 0] == out.frames[..., 2]).all()         # depth: one gray channel, three times
    with pytest.raises(ValueError, match="not in the 'valid' split"):
        render_fig3(checkpoint=checkpoint, dataset="isogd", root=root, sample="nope", out=tmp_path / "x.png")
