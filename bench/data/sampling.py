"""The paper's frame sampling and spatial preprocessing (SPEC, "Training protocol").

Temporal (the released code): to take ``n`` frames from a video of ``N`` frames, ``div = N / n``;
if ``N < n`` take every frame and repeat the last; otherwise frame ``k`` is ``floor(div * k)``,
and in training, when ``div >= 2``, it is jittered by ``(floor(div) / 2) * (U(0, 1) - 0.5)``,
the result clipped into ``[0, N - 1]``.

Spatial: crop the largest centred square (training: one random offset per clip along the long
side), resize to ``size x size``, subtract the per-modality mean.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Per-modality means of the released code, in channel order (RGB).
MEANS: dict[tuple[str, str], tuple[float, float, float]] = {
    ("isogd", "rgb"): (112.0, 112.0, 112.0),
    ("isogd", "depth"): (127.0, 127.0, 127.0),
    ("isogd", "flow"): (128.0, 128.0, 128.0),
    ("jester", "rgb"): (114.0, 109.0, 104.0),
    ("jester", "depth"): (127.0, 127.0, 127.0),
    ("jester", "flow"): (128.0, 128.0, 128.0),
}


def modality_mean(fmt: str, modality: str) -> tuple[float, float, float]:
    """The mean subtracted for ``modality`` of dataset format ``fmt`` (frame lists use IsoGD's)."""
    key = ("isogd" if fmt == "framelist" else fmt, modality)
    try:
        return MEANS[key]
    except KeyError:
        raise ValueError(f"no mean for format {fmt!r}, modality {modality!r}; known: {sorted(MEANS)}") from None


def sample_frame_indices(num_frames: int, clip_len: int, *, train: bool,
                         rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices (int64, length ``clip_len``) of the frames that make a clip.

    >>> sample_frame_indices(5, 8, train=False).tolist()
    [0, 1, 2, 3, 4, 4, 4, 4]
    >>> sample_frame_indices(32, 8, train=False).tolist()
    [0, 4, 8, 12, 16, 20, 24, 28]
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if clip_len < 1:
        raise ValueError(f"clip_len must be positive, got {clip_len}")
    if num_frames < clip_len:
        idx = np.arange(clip_len, dtype=np.int64)
        return np.minimum(idx, num_frames - 1)
    div = num_frames / clip_len
    base = div * np.arange(clip_len, dtype=np.float64)
    if train and div >= 2:
        if rng is None:
            raise ValueError("training-time sampling jitters: pass an rng")
        base = base + (math.floor(div) / 2.0) * (rng.random(clip_len) - 0.5)
    return np.clip(np.floor(base), 0, num_frames - 1).astype(np.int64)


def square_crop_box(height: int, width: int, *, train: bool,
                    rng: np.random.Generator | None = None) -> tuple[int, int, int]:
    """``(top, left, side)`` of the largest square: centred, or at a random offset in training."""
    side = min(height, width)
    slack_y, slack_x = height - side, width - side
    if train and (slack_y or slack_x):
        if rng is None:
            raise ValueError("training-time cropping is random: pass an rng")
        off = int(rng.integers(0, max(slack_y, slack_x) + 1))
        return (off, 0, side) if slack_y else (0, off, side)
    return slack_y // 2, slack_x // 2, side


def crop_clip(frames: np.ndarray | torch.Tensor, *, train: bool,
              rng: np.random.Generator | None = None) -> torch.Tensor:
    """uint8 frames ``(T, H, W, C)`` (or ``(T, H, W)``) -> their largest square, still uint8,
    ``(T, S0, S0, C)`` with C = 1 or 3 (`square_crop_box`: the crop draws from ``rng`` in
    training). The part of preprocessing that stays with the decoder: a view, no arithmetic."""
    x = torch.as_tensor(frames)
    if x.ndim == 3:
        x = x.unsqueeze(-1)
    if x.ndim != 4:
        raise ValueError(f"expected frames (T, H, W, C), got shape {tuple(x.shape)}")
    _, h, w, c = x.shape
    if c not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {c}")
    top, left, side = square_crop_box(h, w, train=train, rng=rng)
    return x[:, top:top + side, left:left + side, :]


def finish_clips(x: torch.Tensor, *, size: int, mean: tuple[float, ...]) -> torch.Tensor:
    """Square uint8 clips ``(B, T, S0, S0, C)`` (C = 1 or 3), on any device -> float32
    ``(B, 3, T, size, size)``: converted to float where they are, resized (bilinear,
    antialiased when shrinking), one channel repeated to three, the mean subtracted. The same
    torch ops on a CPU tensor and on a CUDA one: the loader runs them on the CPU
    (`preprocess_clip`), the training loop on the device for uint8 batches."""
    if x.ndim != 5:
        raise ValueError(f"expected clips (B, T, S, S, C), got shape {tuple(x.shape)}")
    b, t, side, side_w, c = x.shape
    if side != side_w:
        raise ValueError(f"expected square frames, got {side} x {side_w}")
    y = x.reshape(b * t, side, side, c).permute(0, 3, 1, 2).float()      # (B*T, C, S0, S0)
    if side != size:
        y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    if c == 1:
        y = y.expand(-1, 3, -1, -1)
    y = y - torch.tensor(mean, dtype=torch.float32, device=y.device).view(1, 3, 1, 1)
    return y.reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4).contiguous()   # (B, 3, T, S, S)


def batch_clips(batch: dict, device: torch.device | str, *, non_blocking: bool = True) -> torch.Tensor:
    """A loader batch's float clips ``(B, 3, T, S, S)`` on ``device``: ``clip`` copied over, or
    uint8 ``frames`` (``make_loader(device_preprocess=True)``) copied over and finished there
    (`finish_clips`)."""
    if "clip" in batch:
        return batch["clip"].to(device, non_blocking=non_blocking)
    frames = batch["frames"].to(device, non_blocking=non_blocking)
    return finish_clips(frames, size=int(batch["size"]), mean=tuple(batch["mean"]))


def preprocess_clip(frames: np.ndarray | torch.Tensor, *, size: int, mean: tuple[float, ...],
                    train: bool, rng: np.random.Generator | None = None) -> torch.Tensor:
    """uint8 frames ``(T, H, W, C)`` (or ``(T, H, W)`` for one channel) -> float32 ``(3, T, size, size)``.

    One-channel input (depth) is repeated to three channels, as the network takes three.
    `crop_clip` then `finish_clips`: the loader's path and the device path are one code.
    """
    return finish_clips(crop_clip(frames, train=train, rng=rng)[None], size=size, mean=mean)[0]
