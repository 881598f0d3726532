"""Shuffled-frames evaluation: a trained model scored on clips whose frames are put out of order.

Why: validation top-1 says how well a model does, not whether it uses the order of frames. The
same model scored again with every clip's time axis permuted answers that: a model that reads
order (a recurrent cell on data whose classes differ only in order, ``bench/data/synth.py``)
falls towards chance within each class pair; a bag of frames (the ``mean`` control,
``bench/models/controls.py``) scores exactly the same, since it cannot tell the difference.

The permutation is drawn per clip from ``seed`` and the clip's position in the epoch, so a
rerun permutes the same way; the scoring is the training loop's own ``evaluate`` (padding left
out, the same top-1), so the two figures are comparable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.train.loop import evaluate

_SHUFFLE_TAG = 0x5A1F   # keeps these draws apart from any other stream seeded with the same seed


def permute_time(clip: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``clip`` (B, C, T, H, W) with frame ``t`` of sample ``b`` taken from ``perm[b, t]``."""
    b, c, t, h, w = clip.shape
    if perm.shape != (b, t):
        raise ValueError(f"perm must be (B, T) = ({b}, {t}), got {tuple(perm.shape)}")
    index = perm.to(clip.device).view(b, 1, t, 1, 1).expand(b, c, t, h, w)
    return torch.gather(clip, 2, index)


class ShuffledFrames:
    """Wraps a loader (any iterable of batch dicts with ``clip`` (B, C, T, H, W), or uint8
    ``frames`` (B, T, H, W, C) from ``make_loader(device_preprocess=True)``): the same batches,
    each clip's frames permuted, ``frame_indices`` (when present) permuted alike."""

    def __init__(self, loader: Any, *, seed: int = 0) -> None:
        self.loader, self.seed = loader, int(seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        pos = 0
        for batch in self.loader:
            raw = "clip" not in batch                 # uint8 (B, T, H, W, C)
            clip = batch["frames"].permute(0, 4, 1, 2, 3) if raw else batch["clip"]
            b, t = clip.shape[0], clip.shape[2]
            perm = torch.from_numpy(np.stack([
                np.random.default_rng((self.seed, _SHUFFLE_TAG, pos + i)).permutation(t) for i in range(b)]))
            pos += b
            out = dict(batch)
            shuffled = permute_time(clip, perm)
            if raw:
                out["frames"] = shuffled.permute(0, 2, 3, 4, 1).contiguous()
            else:
                out["clip"] = shuffled
            if "frame_indices" in batch:
                fi = torch.as_tensor(batch["frame_indices"])
                out["frame_indices"] = torch.gather(fi, 1, perm.to(fi.device))
            yield out


def top1(net: nn.Module, loader: Any, *, device: torch.device | str = "cpu", channels_last: bool = False,
         autocast: Callable[[], Any] = contextlib.nullcontext, max_batches: int | None = None,
         shuffle_seed: int | None = None) -> float:
    """Top-1 of ``net`` on ``loader`` through ``bench.train.loop.evaluate``; with
    ``shuffle_seed``, on the clips with their time axes permuted (`ShuffledFrames`)."""
    num_classes = _num_classes(net)
    source = loader if shuffle_seed is None else ShuffledFrames(loader, seed=shuffle_seed)
    sums, _ = evaluate(net, source, device=torch.device(device), num_classes=num_classes,
                       channels_last=channels_last, autocast=autocast, max_batches=max_batches)
    _, hits, _, n = sums.tolist()
    return hits / n if n else float("nan")


def shuffled_top1(net: nn.Module, loader: Any, *, seed: int = 0, device: torch.device | str = "cpu",
                  channels_last: bool = False, autocast: Callable[[], Any] = contextlib.nullcontext,
                  max_batches: int | None = None) -> float:
    """Top-1 of ``net`` on ``loader`` with every clip's frames permuted, seeded by ``seed``."""
    return top1(net, loader, device=device, channels_last=channels_last, autocast=autocast,
                max_batches=max_batches, shuffle_seed=seed)


def _num_classes(net: nn.Module) -> int:
    cfg = getattr(net, "cfg", None)
    if cfg is not None and hasattr(cfg, "num_classes"):
        return int(cfg.num_classes)
    classifier = getattr(net, "classifier", None)
    if isinstance(classifier, nn.Linear):
        return classifier.out_features
    raise ValueError(f"cannot tell the number of classes of {type(net).__name__}: expected a GestureNet "
                     "(.cfg.num_classes) or a .classifier nn.Linear")
