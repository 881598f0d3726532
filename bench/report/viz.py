"""``bench viz``: the paper's Fig. 3 -- what the first recurrent layer attends to, step by step.

Zhang et al. (NeurIPS 2018, Fig. 3) show, for a clip, the output feature map of the first
recurrent layer with the largest activation sum among its channels at every time step: where
the cell's hidden state responds most. Here: a forward hook on ``net.rnn1`` (the first
`ConvRecurrentLayer`) captures its output (B, C, T/2, h, w) for the clip -- prepared exactly as
validation prepares it (`pipelines.make_loader`, eval mode: evenly spaced frames, centred crop,
the modality's mean subtracted) -- and for each of the T/2 steps the channel with the largest
sum over (h, w) is drawn as a heat map under the input frame that starts that step (Res3D
halves time, so step t covers frames 2t and 2t+1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.formats import FORMATS
from bench.data.index import DatasetIndex, Sample
from pipelines import make_loader

SYNTHETIC_FILE = "SYNTHETIC.json"     # what the suite's generated datasets hold at their root


@dataclass
class Fig3:
    png: Path
    frames: np.ndarray            # (S, H, W, 3) uint8: the input frame starting each step
    maps: np.ndarray              # (S, h, w) float32: the strongest channel's map at each step
    channels: list[int]           # (S,) that channel's index
    sample_id: str
    logged: str | None = None     # artifact path in MLflow, when logged
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.maps.shape[0])


def load_checkpoint(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(network in eval mode, state)`` from a checkpoint folder or ``state.pt`` written by the
    training loop (``{"model", "config", "num_classes", "clip_len", "image_size", ...}``)."""
    import torch  # heavy

    from bench.models import NetConfig, build_network  # heavy: torch

    p = Path(path)
    f = p / "state.pt" if p.is_dir() else p
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no state.pt there")
    state = torch.load(f, map_location="cpu", weights_only=True)
    if "model" not in state or "config" not in state:
        raise ValueError(f"{f}: not a training checkpoint (needs 'model' and 'config', has {sorted(state)})")
    cfg = state["config"]
    num_classes = int(state.get("num_classes") or cfg.get("num_classes") or
                      state["model"]["classifier.weight"].shape[0])
    overrides: dict[str, Any] = {"cell": cfg["cell"], "num_classes": num_classes}
    if state.get("clip_len"):
        overrides["frames"] = int(state["clip_len"])
    if state.get("image_size"):
        overrides["image_size"] = int(state["image_size"])
    net = build_network(NetConfig.preset(cfg.get("preset", "paper"), **overrides))
    net.load_state_dict(state["model"])
    return net.eval(), state


def _clip(*, state: dict[str, Any], net: Any, video: Path | None, dataset: str | None, root: Path | None,
          split: str, sample: str | None, modality: str) -> tuple[Any, np.ndarray, str]:
    """``(clip (1, 3, T, S, S) float32, display frames (T, S, S, 3) uint8, sample_id)``."""
    from bench.data.sampling import modality_mean  # heavy: torch

    cfg = state["config"]
    fmt = cfg.get("dataset", "isogd")
    if video is not None:
        if not Path(video).exists():
            raise FileNotFoundError(f"--video {video}: no such file or folder")
        s = Sample(sample_id=Path(video).stem, label=0, paths={modality: Path(video).resolve()})
        index = DatasetIndex(fmt, Path(video).resolve().parent, "viz", ["?"], [s])
    else:
        from bench.data.formats import load_index

        full = load_index(dataset, root, split)
        fmt = dataset
        pick = [s for s in full.samples if sample is None or s.sample_id == sample]
        if not pick:
            raise ValueError(f"--sample {sample!r}: not in the {split!r} split of {root}")
        index = DatasetIndex(full.format, full.root, full.split, full.classes, pick[:1])
    clip_len = int(state.get("clip_len") or net.cfg.frames)
    size = int(state.get("image_size") or net.cfg.image_size)
    loader = make_loader(index, modality=modality, clip_len=clip_len, size=size, batch_size=1, train=False)
    batch = next(iter(loader))
    x = batch["clip"]                                              # (1, 3, T, S, S), mean subtracted
    mean = np.asarray(modality_mean(fmt if fmt in FORMATS else "isogd", modality),
                      dtype=np.float32).reshape(3, 1, 1, 1)
    frames = np.clip(x[0].numpy() + mean, 0, 255).astype(np.uint8).transpose(1, 2, 3, 0)  # (T, S, S, 3)
    return x, frames, str(batch["sample_id"][0])


def strongest_maps(net: Any, clip: Any) -> tuple[np.ndarray, list[int]]:
    """The first recurrent layer's output for ``clip``; per step, the channel with the largest
    activation sum and its (h, w) map. Returns ``(maps (S, h, w), channels)``."""
    import torch  # heavy

    captured: dict[str, torch.Tensor] = {}
    hook = net.rnn1.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o.detach()))
    try:
        with torch.no_grad():
            net(clip)
    finally:
        hook.remove()
    out = captured["out"][0]                                       # (C, S, h, w)
    sums = out.sum(dim=(2, 3))                                     # (C, S)
    channels = sums.argmax(dim=0)                                  # (S,)
    maps = torch.stack([out[c, t] for t, c in enumerate(channels.tolist())])
    return maps.float().numpy(), [int(c) for c in channels]


def clip_provenance(*, video: Path | None, index_root: Path | None, dataset: str | None, split: str,
                    sample_id: str, train_root: str | None, train_dataset: str | None) -> str:
    """What the figure's clip and network come from, said plainly, SYNTHETIC first when it is.

    A dataset clip is SYNTHETIC when its root holds ``SYNTHETIC.json`` (the suite's generated
    data), real otherwise; a ``--video`` file is SYNTHETIC when a folder above it holds that
    file, else of unrecorded provenance. The network's training data likewise, from the
    checkpoint's ``root`` (unknown when that root is not on this machine)."""
    if video is not None:
        marker = next((d for d in Path(video).resolve().parents if (d / SYNTHETIC_FILE).is_file()), None)
        clip = (f"SYNTHETIC clip {Path(video).name} (generated data under {marker})" if marker is not None
                else f"clip {Path(video).name}: a video file, provenance not recorded")
    else:
        kind = "SYNTHETIC" if index_root is not None and (index_root / SYNTHETIC_FILE).is_file() else "real"
        clip = f"{kind} {dataset} ({split}) clip {sample_id}"
    if train_root and Path(train_root).is_dir():
        kind = "SYNTHETIC" if (Path(train_root) / SYNTHETIC_FILE).is_file() else "real"
        trained = f"network trained on {kind} {train_dataset or 'data'}"
    else:
        trained = (f"network trained on {train_dataset or 'data'} at {train_root!r} "
                   f"(not on this machine: provenance unknown)")
    return f"{clip}; {trained}"


def draw(frames: np.ndarray, maps: np.ndarray, channels: list[int], *, title: str, provenance: str = "") -> Any:
    """Two rows, one column per step: the frame that starts the step, the strongest map.

    The maps share one colour scale (the smallest and largest activation over all steps), shown
    by the colour bar on the right, so steps can be compared; ``provenance`` (`clip_provenance`)
    is printed under the panels."""
    import matplotlib  # heavy

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # heavy

    s = maps.shape[0]
    cols = min(s, 16)
    rows = math.ceil(s / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(1.4 * cols + 1.4, 3.0 * rows + 0.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    lo, hi = float(np.min(maps)), float(np.max(maps))
    if hi <= lo:
        hi = lo + 1.0
    heat = None
    for t in range(s):
        r, c = divmod(t, cols)
        img = frames[t]
        gray = bool(np.all(img[..., 0] == img[..., 1]))
        axes[2 * r, c].imshow(img[..., 0] if gray else img, cmap="gray" if gray else None)
        axes[2 * r, c].set_title(f"step {t + 1}", fontsize=7)
        heat = axes[2 * r + 1, c].imshow(maps[t], cmap="jet", interpolation="bilinear", vmin=lo, vmax=hi)
        axes[2 * r + 1, c].set_title(f"ch {channels[t]}", fontsize=7)
    import textwrap

    fig.suptitle("\n".join(textwrap.wrap(title, width=max(50, 16 * cols))), fontsize=9)
    bottom = 0.0
    if provenance:
        lines = textwrap.wrap(provenance, width=max(60, 18 * cols))
        bottom = min(0.25, (0.05 + 0.035 * len(lines)) * 3.9 / (3.0 * rows + 0.9))
        fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, ha="left", va="bottom",
                 color="#b00000" if provenance.startswith("SYNTHETIC") else "#333333")
    fig.tight_layout(rect=(0, bottom, 0.9, 0.93))
    if heat is not None:
        cax = fig.add_axes((0.915, bottom + 0.08, 0.018, 0.93 - bottom - 0.16), label="<colorbar>")
        fig.colorbar(heat, cax=cax, label="activation (shared scale)")
        cax.tick_params(labelsize=6)
        cax.yaxis.label.set_size(7)
    return fig


def render_fig3(*, checkpoint: str | Path, video: str | Path | None = None, dataset: str | None = None,
                root: str | Path | None = None, split: str = "valid", sample: str | None = None,
                modality: str | None = None, out: str | Path = "fig3.png", tracking_uri: str | None = None,
                run_id: str | None = None) -> Fig3:
    """Draw Fig. 3 for one clip and save it as PNG (and log it to MLflow run ``run_id``)."""
    net, state = load_checkpoint(checkpoint)
    cfg = state["config"]
    modality = modality or cfg.get("modality", "rgb")
    clip, frames, sid = _clip(state=state, net=net, video=Path(video) if video else None, dataset=dataset,
                              root=Path(root) if root else None, split=split, sample=sample, modality=modality)
    maps, channels = strongest_maps(net, clip)
    steps = maps.shape[0]
    step_frames = frames[::2][:steps]                 # Res3D halves time: step t starts at frame 2t
    title = (f"first recurrent layer (cell {cfg['cell']}), strongest channel per step -- {sid} "
             f"({modality}, {frames.shape[0]} frames -> {steps} steps)")
    provenance = clip_provenance(video=Path(video) if video else None, index_root=Path(root) if root else None,
                                 dataset=dataset, split=split, sample_id=sid, train_root=cfg.get("root"),
                                 train_dataset=cfg.get("dataset"))
    fig = draw(step_frames, maps, channels, title=title, provenance=provenance)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib.pyplot as plt  # heavy

    fig.savefig(out, dpi=110)
    plt.close(fig)
    result = Fig3(png=out, frames=step_frames, maps=maps, channels=channels, sample_id=sid,
                  meta={"cell": cfg["cell"], "modality": modality, "checkpoint": str(checkpoint),
                        "provenance": provenance})
    if run_id:
        from bench.report.store import client
        from bench.tracking.uri import resolve_tracking_uri

        client(resolve_tracking_uri(tracking_uri)).log_artifact(run_id, str(out), "fig3")
        result.logged = f"fig3/{out.name}"
    return result
