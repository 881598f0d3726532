"""Synthetic hand-gesture datasets written in the real IsoGD and Jester on-disk layouts.

Why: IsoGD needs a licence and Jester is 22 GB, yet every part of the suite (readers,
DALI/PyAV pipelines, the training loop, sweeps, reports) must run end to end on a laptop
and in CI. The generator writes *real files* -- AVI videos in four codecs, JPG folders,
the official list/CSV files -- so the same code paths read them as would read the real
datasets, and what it draws is learnable only from motion over time, as gestures are.

What is drawn: a hand (palm ellipse, 1-5 fingers, thumb) on a forearm, in front of a static
person and static background clutter, moving along a class-specific trajectory. Classes
come in pairs that are exact time reversals of each other (swipe right / swipe left, turn
clockwise / counter-clockwise, open / close, push toward / pull away from the camera,
circles, spirals ...): member 2k+1 renders the state of member 2k at time ``1 - u``. The
set of poses a clip visits is therefore distributed alike for both members, and only the
order of frames tells them apart -- a single frame or a bag of frames cannot. That holds for
the frames the paper's sampler takes, too, not just for whole clips: every clip starts and
ends in the same still rest pose and has an odd number of frames (`Timing`,
`sample_num_frames`), so for the suite's clip lengths (powers of two) the frames sampled for
evaluation from a clip and from its reversed twin show the same poses, and the jittered
training samples are alike in distribution (tests/test_data_reversal.py).
SYNTHETIC.json names the pairs: ``reversal_pairs``, ``[class, reversed class]`` ids.

Classes: ``label = 2 * family + member`` for the first 20, then the ten families repeat with
a variant (finger count 5/2/1/3/4, the gesture done once or twice, hand upright or
sideways), up to ``MAX_CLASSES`` = 400. Subjects vary per clip: skin colour, hand size,
position, amplitude, timing (rest, approach to the stroke, stroke, retreat, rest), lighting,
clutter, sensor noise. Depth is aligned with RGB (same geometry, drawn in the same pass):
8-bit closeness, background far and dark, the hand brightest and brighter as it approaches.

Difficulty (`SynthOptions`, docs/GRADED.md), each a level in 0..1, 0 = none: ``distractor``
(the probability that a clip has a second, smaller hand doing another class's motion, behind
the hand), ``occlusion`` (the fraction of the hand's swept path a static band in front of it
covers), ``tempo`` (how much the moving part's speed varies per clip: faster, unevenly, holds
kept), ``noise`` (extra Gaussian sensor noise and blur), ``partial`` (the fraction of clips whose
stroke covers only 30-70% of its progress); and ``composite`` (classes "a then b" against "b
then a", each stroke out and back: only their order differs). They draw from an RNG of their
own (`difficulty_rng`) and act in member 0's time, so member 1 is still member 0 played
backwards (the distractor's class reversed too); off, the files are version 1.1's byte for byte.

Frame counts are sampled from the real datasets' distributions (IsoGD per split from
``resources/isogd/frame_counts.csv``, Jester from ``resources/jester/valid_frame_counts.csv``),
times ``length_scale``, never fewer than ``MIN_FRAMES``, rounded down to an odd count.

Determinism: every clip draws from its own RNG seeded by ``(seed, split, index)`` and the
encoders run single-threaded, so the same seed gives byte-identical files whatever the
number of workers. VP9 goes into ``.avi`` too: PyAV and DALI's CPU reader both read
VP9-in-AVI, and WebM/Matroska would embed random segment UIDs (different bytes each run).
"""

from __future__ import annotations

import argparse
import csv
import importlib.resources
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from bench.errors import CLIError

GENERATOR = "gesturebench.synth"
GENERATOR_VERSION = "1.3"   # 1.1: rest pose at both ends, odd frame counts (see Timing);
                            # 1.2: difficulty options (`Difficulty`; all 0: the bytes of 1.1);
                            # 1.3: the background option (1: the scenes of 1.1, byte for byte)
FORMATS = ("isogd", "jester")
SPLITS = ("train", "valid", "test")
MIN_FRAMES = 9             # floor after length_scale: shorter clips carry too little motion (odd: see
                           # sample_num_frames)
MAX_CLASSES = 400          # 10 families x 2 members x 20 variants
ISOGD_PER_FOLDER = 200     # the real IsoGD puts 200 videos in each train/NNN folder
FPS = {"isogd": 10, "jester": 12}
DEFAULT_SIZE = {"isogd": (160, 120), "jester": (176, 100)}  # (W, H); real: 320x240, ~176x100

# codec key -> (FFmpeg encoder, pix_fmt, codec tag or None, encoder options)
# mjpeg/mpeg4: qmin/qmax pin the quantiser (the default rate control blurs small frames);
# vp9 (libvpx-vp9: realtime deadline, cpu-used 8) and x264 (veryfast) trade size for encode
# speed: the generator writes thousands of short clips.
CODECS: dict[str, tuple[str, str, str | None, dict[str, str]]] = {
    "mjpeg": ("mjpeg", "yuvj420p", None, {"qmin": "2", "qmax": "4"}),
    "vp9": ("libvpx-vp9", "yuv420p", None,
            {"crf": "32", "b:v": "0", "deadline": "realtime", "cpu-used": "8", "threads": "1"}),
    "mpeg4": ("mpeg4", "yuv420p", "XVID", {"qmin": "2", "qmax": "4"}),   # what real IsoGD uses
    "h264": ("libx264", "yuv420p", None, {"crf": "23", "preset": "veryfast", "threads": "1"}),
}

# The ten motion families; member 0 is the name's first half, member 1 its time reversal.
FAMILIES: tuple[tuple[str, str], ...] = (
    ("swipe right", "swipe left"),
    ("swipe down", "swipe up"),
    ("turn clockwise", "turn counterclockwise"),
    ("open hand", "close hand"),
    ("push toward camera", "pull away from camera"),
    ("swipe down-right", "swipe up-left"),
    ("swipe down-left", "swipe up-right"),
    ("circle clockwise", "circle counterclockwise"),
    ("right then down", "up then left"),
    ("spiral out clockwise", "spiral in counterclockwise"),
)
_FINGERS = (5, 2, 1, 3, 4)
_FINGER_NAMES = {5: "", 2: "two fingers", 1: "one finger", 3: "three fingers", 4: "four fingers"}
_SPLIT_CODE = {"train": 0, "valid": 1, "test": 2}
_SKIN = np.array([(224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172),
                  (241, 194, 125), (120, 70, 40)], dtype=np.float64)
_SHIFT = 4                  # cv2 drawing: sub-pixel coordinates in 1/16 px, so motion is smooth
_ONE = 1 << _SHIFT


# ---------------------------------------------------------------------------------------------
# classes


@dataclass(frozen=True, slots=True)
class GestureClass:
    label: int          # 0-based
    family: int         # index into FAMILIES
    member: int         # 0 = forward, 1 = time reversal of the forward member
    fingers: int        # extended fingers besides the thumb
    repeats: int        # the stroke is done this many times in the clip
    sideways: bool      # hand points right instead of up
    name: str
    then: int | None = None   # composite classes: member 0 does `family` out and back, then `then`


def gesture_class(label: int, *, composite: bool = False) -> GestureClass:
    """The family, member and variant of class ``label`` (0-based); ``composite``: of the
    composite class set (`composite_class`)."""
    if not 0 <= label < MAX_CLASSES:
        raise ValueError(f"label {label} out of range 0..{MAX_CLASSES - 1}")
    if composite:
        return composite_class(label)
    family, member = (label // 2) % len(FAMILIES), label % 2
    variant = label // (2 * len(FAMILIES))
    fingers = _FINGERS[variant % 5]
    repeats = 1 + (variant // 5) % 2
    sideways = bool((variant // 10) % 2)
    parts = [FAMILIES[family][member]]
    if _FINGER_NAMES[fingers]:
        parts.append(_FINGER_NAMES[fingers])
    if repeats > 1:
        parts.append("twice")
    if sideways:
        parts.append("sideways hand")
    name = parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")
    return GestureClass(label, family, member, fingers, repeats, sideways, name)


# Composite classes: two families' strokes, each out and back, one after the other. The first
# five pairs of families share no family (so a small class set still shows five families).
_COMPOSITE_PAIRS: tuple[tuple[int, int], ...] = tuple(
    [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    + [(a, b) for a in range(len(FAMILIES)) for b in range(a + 1, len(FAMILIES))
       if (a, b) not in ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))])


def composite_class(label: int) -> GestureClass:
    """Class ``label`` of the composite set (``composite=True``): member 0 of pair k does family
    a's stroke out and back, then family b's; member 1 is its time reversal, which is b's out and
    back, then a's (each out-and-back stroke is its own reversal). A pair differs only in the
    order of its two strokes: every pose, and every local motion, is common to both."""
    if not 0 <= label < MAX_CLASSES:
        raise ValueError(f"label {label} out of range 0..{MAX_CLASSES - 1}")
    k, member = (label // 2) % len(_COMPOSITE_PAIRS), label % 2
    variant = label // (2 * len(_COMPOSITE_PAIRS))
    fingers = _FINGERS[variant % 5]
    sideways = bool((variant // 5) % 2)
    a, b = _COMPOSITE_PAIRS[k]
    first, second = (a, b) if member == 0 else (b, a)
    parts = [f"{FAMILIES[first][0]} and back, then {FAMILIES[second][0]} and back"]
    if _FINGER_NAMES[fingers]:
        parts.append(_FINGER_NAMES[fingers])
    if sideways:
        parts.append("sideways hand")
    name = parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")
    return GestureClass(label, a, member, fingers, 1, sideways, name, then=b)


def class_names(num_classes: int, *, composite: bool = False) -> list[str]:
    """Unique, human-readable names of the first ``num_classes`` synthetic classes."""
    _check_num_classes(num_classes)
    return [gesture_class(c, composite=composite).name for c in range(num_classes)]


def reversal_pairs(num_classes: int) -> list[list[int]]:
    """``[class, its time reversal]`` for every complete pair among the first ``num_classes``
    (0-based ids, member 0 first): what an order-blind model cannot tell apart."""
    _check_num_classes(num_classes)
    return [[c, c + 1] for c in range(0, num_classes - 1, 2)]


def _check_num_classes(num_classes: int) -> None:
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 2..{MAX_CLASSES}, got {num_classes}")


# ---------------------------------------------------------------------------------------------
# trajectories


@dataclass(frozen=True, slots=True)
class HandTrack:
    """Per-frame hand state in pixels/degrees; arrays of length ``num_frames``."""
    cx: np.ndarray       # palm centre x (px)
    cy: np.ndarray       # palm centre y (px)
    angle: np.ndarray    # hand orientation, degrees clockwise on screen from "fingers up"
    radius: np.ndarray   # palm radius (px), grows as the hand approaches
    close: np.ndarray    # closeness 0 (far) .. 1 (at the camera) -> depth value
    spread: np.ndarray   # finger extension 0 (fist) .. 1 (open hand)


def _smoothstep(p: np.ndarray) -> np.ndarray:
    return p * p * (3.0 - 2.0 * p)  # starts and stops at rest like a real hand


def _stroke(u: np.ndarray, onset: float, offset: float, repeats: int) -> np.ndarray:
    """Progress p in [0, 1] of the stroke at normalised time u: before, eased motion, after."""
    span = max(1e-6, 1.0 - onset - offset)
    p = np.clip((u - onset) / span, 0.0, 1.0)
    if repeats > 1:  # do it `repeats` times, jumping back between strokes
        p = np.where(p >= 1.0, 1.0, (p * repeats) % 1.0)
    return _smoothstep(p)


@dataclass(frozen=True, slots=True)
class Timing:
    """A clip's phases, as fractions of its duration: rest, approach, stroke, retreat, rest.

    Why the hand starts and ends at the same, still rest pose (the midpoint of the stroke's
    first and last poses) rather than at the stroke's ends: the paper's sampler takes frame
    ``floor(k * N / n)``, so each clip's own first frame is always in and its last ones are
    skipped; a clip's sampled frames are therefore not the reversal of its reversed twin's --
    they differ in that end frame (and, for even N, by a one-frame slip; see
    `sample_num_frames`). Were the first pose the stroke's start (the hand on the left for
    "swipe right", on the right for "swipe left"), that one frame would tell a class from its
    reversal with no order at all (generator version 1.0, default-run sizes, through the loader:
    the skew of the sampled hand positions had an AUC of 0.86-0.90 within a pair, a logistic
    regression on order-free statistics of the sampled frames reached 0.72-0.79; now 0.47-0.52
    and 0.45-0.55). With the same pose, held still (no tremor), in the first and last
    frames, and odd N, a clip's sampled frames are the same poses as its reversed twin's
    (tests/test_data_reversal.py). The holds are at least 4% of the clip, more than the
    training jitter can move the first or last sample (``floor(N / n) / 4`` frames, n >= 8).
    """
    hold_start: float   # rest pose, still
    approach: float     # rest pose -> the stroke's first pose
    retreat: float      # the stroke's last pose -> rest pose
    hold_end: float     # rest pose, still

    @property
    def stroke(self) -> tuple[float, float]:
        """(start, end) of the stroke in normalised time."""
        return self.hold_start + self.approach, 1.0 - self.hold_end - self.retreat

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Timing:
        return cls(hold_start=rng.uniform(0.04, 0.12), approach=rng.uniform(0.08, 0.15),
                   retreat=rng.uniform(0.08, 0.15), hold_end=rng.uniform(0.04, 0.12))


def _gesture(family: int, u: np.ndarray, timing: Timing, repeats: int, r: dict[str, float],
             cut: tuple[float, float] | None = None) -> dict[str, np.ndarray]:
    """Offsets of the forward member at normalised time u: the family's stroke (``_family_motion``)
    between an approach from, and a retreat to, the rest pose (see `Timing`); ``"moving"`` is 0
    while the hand rests, 1 during the stroke (it scales the tremor). ``cut = (lo, hi)``: the
    stroke covers only that part of its progress (``partial``); the rest pose stays the full
    stroke's."""
    start, end = timing.stroke
    p = _stroke(u, start, 1.0 - end, repeats)
    if cut is not None:
        p = cut[0] + (cut[1] - cut[0]) * p
    m = _family_motion(family, p, r)
    first = _family_motion(family, np.zeros(1), r)
    last = _family_motion(family, np.ones(1), r)
    rest = {k: 0.5 * (first[k] + last[k]) for k in m}
    if cut is not None:
        first = _family_motion(family, np.full(1, cut[0]), r)
        last = _family_motion(family, np.full(1, cut[1]), r)
    w_in = _smoothstep(np.clip((u - timing.hold_start) / timing.approach, 0.0, 1.0))   # 0 rest .. 1 first
    w_out = _smoothstep(np.clip((u - end) / timing.retreat, 0.0, 1.0))                # 0 last .. 1 rest
    out = {k: np.where(u < start, rest[k] + w_in * (first[k] - rest[k]),
                       np.where(u > end, last[k] + w_out * (rest[k] - last[k]), m[k])) for k in m}
    out["moving"] = w_in * (1.0 - w_out)
    return out


def _composite_gesture(fa: int, fb: int, u: np.ndarray, timing: Timing, r: dict[str, float], *,
                       split: float = 0.5, cut: tuple[float, float] | None = None
                       ) -> dict[str, np.ndarray]:
    """Offsets of a composite class's member 0 at normalised time u: rest -> a's first pose, a's
    stroke out and back, a's first pose -> b's, b's stroke out and back, -> rest. ``split``: a's
    share of the two strokes' time; ``cut = (lo, hi)``: each stroke goes from lo to hi and back.
    An out-and-back stroke played backwards is itself, so the reversal of "a then b" is "b then
    a" (with the timing mirrored: the holds, approach/retreat and split swap ends)."""
    lo, hi = (0.0, 1.0) if cut is None else cut
    start, end = timing.stroke
    span = end - start
    gap = 0.15 * span                            # the move from a's first pose to b's
    a_end = start + split * (span - gap)
    b_start = a_end + gap

    def there_and_back(t0: float, t1: float) -> np.ndarray:
        v = np.clip((u - t0) / max(1e-6, t1 - t0), 0.0, 1.0)
        return lo + (hi - lo) * _smoothstep(1.0 - np.abs(2.0 * v - 1.0))

    ma = _family_motion(fa, there_and_back(start, a_end), r)
    mb = _family_motion(fb, there_and_back(b_start, end), r)
    a0 = _family_motion(fa, np.full(1, lo), r)
    b0 = _family_motion(fb, np.full(1, lo), r)
    rest = {k: 0.5 * (_family_motion(fa, np.zeros(1), r)[k] + _family_motion(fb, np.zeros(1), r)[k])
            for k in ma}
    w_in = _smoothstep(np.clip((u - timing.hold_start) / timing.approach, 0.0, 1.0))
    w_gap = _smoothstep(np.clip((u - a_end) / gap, 0.0, 1.0))
    w_out = _smoothstep(np.clip((u - end) / timing.retreat, 0.0, 1.0))
    out = {k: np.where(u < start, rest[k] + w_in * (a0[k] - rest[k]),
              np.where(u <= a_end, ma[k],
              np.where(u < b_start, a0[k] + w_gap * (b0[k] - a0[k]),
              np.where(u <= end, mb[k], b0[k] + w_out * (rest[k] - b0[k]))))) for k in ma}
    out["moving"] = w_in * (1.0 - w_out)
    return out


def _family_motion(family: int, p: np.ndarray, r: dict[str, float]) -> dict[str, np.ndarray]:
    """Offsets for the forward member at progress p; each family is centred on the clip's
    anchor so that the pose distribution of a clip is symmetric under time reversal."""
    zero = np.zeros_like(p)
    m = {"dx": zero, "dy": zero, "rot": zero, "zoom": zero, "close": zero, "spread": zero + 1.0}
    s = 2.0 * p - 1.0
    if family == 0:
        m["dx"] = s
    elif family == 1:
        m["dy"] = s
    elif family == 2:
        m["rot"] = s * r["turn"]
    elif family == 3:
        m["spread"] = p
        m["zoom"] = 0.25 * s
    elif family == 4:
        m["close"] = s * r["push"]
        m["zoom"] = 0.9 * s * r["push"]
    elif family == 5:
        m["dx"], m["dy"] = 0.8 * s, 0.8 * s
    elif family == 6:
        m["dx"], m["dy"] = -0.8 * s, 0.8 * s
    elif family == 7:
        phi = r["phase"] + 2.0 * math.pi * p   # y points down: growing phi is clockwise on screen
        m["dx"], m["dy"] = 0.75 * np.cos(phi), 0.75 * np.sin(phi)
    elif family == 8:
        a = np.clip(2.0 * p, 0.0, 1.0)
        b = np.clip(2.0 * p - 1.0, 0.0, 1.0)
        # (-1,-1) -> (1,-1) -> (1,1), shifted by the path's centroid (0.5, -0.5)
        m["dx"] = 0.9 * ((2.0 * a - 1.0) - 0.5)
        m["dy"] = 0.9 * ((2.0 * b - 1.0) + 0.5)
    elif family == 9:
        rad = 0.15 + 0.8 * p
        phi = r["phase"] + 3.0 * math.pi * p
        m["dx"], m["dy"] = rad * np.cos(phi), rad * np.sin(phi)
    else:  # pragma: no cover - guarded by gesture_class
        raise ValueError(f"unknown family {family}")
    return m


def hand_track(label: int, num_frames: int, size: tuple[int, int],
               rng: np.random.Generator, *, composite: bool = False,
               stroke: StrokeVariation | None = None) -> HandTrack:
    """The hand's state in every frame of one clip of class ``label``.

    Member 1 of a pair is member 0 played backwards: its frame ``t`` shows the state member 0
    would show at frame ``N - 1 - t`` for the same subject parameters (and the same ``stroke``
    variation, which acts in member 0's time). Both start and end in the same rest pose
    (`Timing`). ``composite``: class ``label`` of the composite set (`composite_class`).
    """
    gc = gesture_class(label, composite=composite)
    w, h = size
    timing = Timing.draw(rng)
    extra = {"turn": rng.uniform(45.0, 75.0), "push": rng.uniform(0.3, 0.4),
             "phase": rng.uniform(0.0, 2.0 * math.pi)}
    ax, ay = rng.uniform(0.22, 0.32) * w, rng.uniform(0.22, 0.30) * h
    x0 = w / 2 + rng.uniform(-0.08, 0.08) * w
    y0 = h / 2 + rng.uniform(-0.06, 0.06) * h
    r0 = rng.uniform(0.075, 0.10) * h
    base_angle = (90.0 if gc.sideways else 0.0) + rng.uniform(-12.0, 12.0)
    close0 = rng.uniform(0.35, 0.5)
    # small physiological tremor while the hand moves (none at rest: the first and last frames
    # show exactly the rest pose), the same for both members' distributions
    wobble_phase = rng.uniform(0.0, 2.0 * math.pi, size=3)
    wobble_freq = rng.uniform(1.0, 3.0, size=3)

    u = np.linspace(0.0, 1.0, num_frames)
    if gc.member == 1:
        u = 1.0 - u
    cut = stroke.cut if stroke is not None else None
    if stroke is not None and stroke.tempo is not None:
        u = stroke.tempo.warp(u, timing)
    if gc.then is None:
        m = _gesture(gc.family, u, timing, gc.repeats, extra, cut)
    else:
        m = _composite_gesture(gc.family, gc.then, u, timing, extra,
                               split=stroke.split if stroke is not None else 0.5, cut=cut)
    wob = [m["moving"] * np.sin(2 * math.pi * f * u + ph) for f, ph in zip(wobble_freq, wobble_phase)]
    close = np.clip(close0 + m["close"], 0.0, 1.0)
    return HandTrack(
        cx=x0 + ax * m["dx"] + 0.01 * w * wob[0],
        cy=y0 + ay * m["dy"] + 0.01 * h * wob[1],
        angle=base_angle + m["rot"] + 2.0 * wob[2],
        radius=r0 * (1.0 + m["zoom"]),
        close=close,
        spread=m["spread"],
    )


# ---------------------------------------------------------------------------------------------
# difficulty


DIFFICULTY_AXES = ("distractor", "occlusion", "tempo", "noise", "partial")   # levels in 0..1
# Scales of the axes at level 1 (docs/GRADED.md): each is linear in its level.
TEMPO_MAX_SPEEDUP = 0.6       # the moving part lasts 1 - 0.6 * tempo * U(0, 1) of its drawn time
TEMPO_MAX_PROFILE = 0.8       # within it, speed varies by up to +-0.8 * tempo (monotone warp)
PARTIAL_CUT = (0.3, 0.7)      # a cut stroke covers U(0.3, 0.7) of its progress, anywhere in it
NOISE_SIGMA = (24.0, 12.0)    # extra Gaussian sensor noise at noise = 1: RGB, depth (8-bit levels)
NOISE_BLUR = 0.02             # Gaussian blur sigma at noise = 1, as a fraction of the frame height
DISTRACTOR_SCALE = 0.7        # the distractor moves in a box 0.7 x the frame, top left or right
OCCLUDER_DEPTH = 245.0        # the occluder is nearer than the hand (brighter in depth)


@dataclass(frozen=True, slots=True)
class TempoWarp:
    """Per-clip time warping of the moving part of a clip (approach, stroke, retreat): it is
    done faster (``duration`` < 1 of its drawn time; the freed time goes to the two holds, a
    share ``lead`` to the first) and at an uneven speed (``profile``: the warp ``v + profile *
    sin(2 pi v) / (2 pi)``, monotone for ``|profile| < 1``). The holds only grow, so the rest
    poses at both ends stay still and at least as long as `Timing` makes them."""
    duration: float
    lead: float
    profile: float

    def warp(self, u: np.ndarray, timing: Timing) -> np.ndarray:
        """Member-0 time u -> the time of the unwarped gesture shown then."""
        t0, length = timing.hold_start, 1.0 - timing.hold_start - timing.hold_end
        start = t0 + self.lead * (1.0 - self.duration) * length
        v = (u - start) / (self.duration * length)
        inner = t0 + length * (v + self.profile * np.sin(2.0 * math.pi * v) / (2.0 * math.pi))
        # the holds map onto the ends exactly (0 and 1 show the rest pose with no rounding)
        return np.where(v <= 0.0, 0.0, np.where(v >= 1.0, 1.0, inner))


@dataclass(frozen=True, slots=True)
class StrokeVariation:
    """What the difficulty options change in a hand track, in member 0's time (so member 1 is
    still member 0 played backwards)."""
    tempo: TempoWarp | None = None
    cut: tuple[float, float] | None = None   # partial: the stroke covers progress lo..hi only
    split: float = 0.5                       # composite: the first stroke's share of the time


@dataclass(frozen=True, slots=True)
class Occluder:
    """A static band in front of everything, across the frame, covering ``lo..hi`` (pixels)
    along ``axis`` (0: x, a vertical band; 1: y, a horizontal band)."""
    axis: int
    lo: float
    hi: float
    colour: tuple[float, float, float]

    def mask(self, size: tuple[int, int]) -> np.ndarray:
        """(H, W) bool: the pixels it covers."""
        w, h = size
        a, b = round(self.lo), round(self.hi)
        m = np.zeros((h, w), bool)
        if self.axis == 0:
            m[:, max(0, a):max(0, b)] = True
        else:
            m[max(0, a):max(0, b), :] = True
        return m


@dataclass(frozen=True, slots=True)
class ClipDifficulty:
    """One clip's draw of the difficulty options (`clip_difficulty`)."""
    stroke: StrokeVariation
    distractor: int | None = None     # the class the distractor performs, or none
    distractor_seed: int = 0
    distractor_side: int = 0          # 0: top left, 1: top right
    occlusion: float = 0.0            # the fraction of the hand's path the occluder covers
    occluder_offset: float = 0.0      # where along the path (0: its start .. 1: its end)
    occluder_colour: tuple[float, float, float] = (128.0, 128.0, 128.0)
    noise: float = 0.0
    noise_seed: int = 0

    def occluder(self, track: HandTrack, size: tuple[int, int]) -> Occluder | None:
        """The band covering ``occlusion`` of the extent the hand sweeps along its longer axis."""
        if self.occlusion <= 0:
            return None
        reach = 1.6 * track.radius              # the palm, fingers and thumb around the centre
        ext = [(float(np.min(c - reach)), float(np.max(c + reach))) for c in (track.cx, track.cy)]
        axis = 0 if ext[0][1] - ext[0][0] >= ext[1][1] - ext[1][0] else 1
        lo, hi = ext[axis]
        width = self.occlusion * (hi - lo)
        a = lo + self.occluder_offset * (hi - lo - width)
        return Occluder(axis, a, a + width, self.occluder_colour)


def difficulty_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The RNG of one clip's difficulty draws: apart from `clip_rng`, so that the options leave
    the rest of a clip (subject, scene, timing, noise) as it is without them."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index), 1]))


def check_level(name: str, value: object) -> float:
    """A difficulty level as a float in 0..1, or a ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in 0..1, got {value!r}")
    return float(value)


def check_composite(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"composite must be true/false or 0/1, got {value!r}")


def clip_difficulty(opts: SynthOptions, label: int, rng: np.random.Generator) -> ClipDifficulty | None:
    """One clip's draw of ``opts``' difficulty options, or None when they are all off (the clip
    is then drawn exactly as without them). The draws are the same, in the same order, whatever
    the levels: raising one level changes that axis of a clip and nothing else.

    Member 1 of a pair draws what member 0 draws with the distractor's class reversed too, so
    that with the same draws a clip of member 1 is a clip of member 0 played backwards (noise
    aside, which is independent per frame); every draw's distribution is the same for both."""
    if not opts.composite and not any(getattr(opts, a) for a in DIFFICULTY_AXES):
        return None
    x = rng.random(16)
    seeds = rng.integers(0, 2 ** 63 - 1, size=2)
    tempo = None
    if opts.tempo > 0:
        tempo = TempoWarp(duration=1.0 - TEMPO_MAX_SPEEDUP * opts.tempo * float(x[0]), lead=float(x[1]),
                          profile=TEMPO_MAX_PROFILE * opts.tempo * (2.0 * float(x[2]) - 1.0))
    cut = None
    if float(x[3]) < opts.partial:
        length = PARTIAL_CUT[0] + (PARTIAL_CUT[1] - PARTIAL_CUT[0]) * float(x[4])
        lo = (1.0 - length) * float(x[5])
        cut = (lo, lo + length)
    stroke = StrokeVariation(tempo=tempo, cut=cut, split=0.4 + 0.2 * float(x[6]))
    distractor = None
    if float(x[7]) < opts.distractor:
        distractor = _distractor_class(label, opts.num_classes, float(x[8]), int(x[9] < 0.5))
    return ClipDifficulty(
        stroke=stroke, distractor=distractor, distractor_seed=int(seeds[0]),
        distractor_side=int(x[10] < 0.5), occlusion=opts.occlusion, occluder_offset=float(x[11]),
        occluder_colour=tuple(float(40.0 + 180.0 * c) for c in x[12:15]),
        noise=opts.noise, noise_seed=int(seeds[1]))


def _distractor_class(label: int, num_classes: int, pick: float, bit: int) -> int:
    """Another class, from the complete pairs: a pair other than ``label``'s (its partner where
    there is one pair), the member ``bit`` -- flipped for member 1, so that the distractor of
    member 1 is the reversal of member 0's for the same draws."""
    pairs = num_classes // 2
    own = label // 2 if label < 2 * pairs else None
    if own is not None and pairs == 1:
        return 1 - label
    choices = [j for j in range(pairs) if j != own]
    j = choices[min(len(choices) - 1, int(pick * len(choices)))]
    member = bit ^ (label % 2 if own is not None else 0)
    return 2 * j + member


# ---------------------------------------------------------------------------------------------
# rendering


@dataclass(slots=True)
class _Scene:
    rgb: np.ndarray           # (H, W, 3) uint8 static background with person and clutter
    depth: np.ndarray         # (H, W) uint8, aligned
    skin: tuple[float, float, float]
    sleeve: tuple[float, float, float]
    shoulder: tuple[float, float]
    torso_depth: float
    noise_rgb: float
    noise_depth: float
    gain: float


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def _make_scene(size: tuple[int, int], rng: np.random.Generator, background: float = 1.0) -> _Scene:
    """The static scene: a coloured background with clutter, and the person. ``background``
    scales the RGB background's and clutter's deviation from their mean colour (1: as drawn;
    0: a flat wall of that colour); the draws, the person and the depth map do not change."""
    import cv2  # heavy

    w, h = size
    # background: smooth random colour field (texture) + a darker "floor" gradient
    low = rng.uniform(40, 200, size=(3, 4, 3))
    rgb = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    rgb += rng.normal(0.0, 6.0, size=(h, w, 3))
    depth = np.full((h, w), rng.uniform(15, 35)) + np.linspace(0, 18, h)[:, None]
    # static clutter: rectangles, discs and bars in colour, each at its own depth
    for _ in range(int(rng.integers(3, 9))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        d = float(rng.uniform(40, 80))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            x2, y2 = x + rng.uniform(0.05, 0.3) * w, y + rng.uniform(0.05, 0.3) * h
            cv2.rectangle(rgb, _pt(x, y), _pt(x2, y2), colour, -1, cv2.LINE_AA, _SHIFT)
            cv2.rectangle(depth, _pt(x, y), _pt(x2, y2), d, -1, cv2.LINE_AA, _SHIFT)
        elif kind == 1:
            rad = int(rng.uniform(0.03, 0.12) * h * _ONE)
            cv2.circle(rgb, _pt(x, y), rad, colour, -1, cv2.LINE_AA, _SHIFT)
            cv2.circle(depth, _pt(x, y), rad, d, -1, cv2.LINE_AA, _SHIFT)
        else:
            x2, y2 = rng.uniform(0, w), rng.uniform(0, h)
            t = max(1, int(rng.uniform(0.01, 0.04) * h))
            cv2.line(rgb, _pt(x, y), _pt(x2, y2), colour, t, cv2.LINE_AA, _SHIFT)
            cv2.line(depth, _pt(x, y), _pt(x2, y2), d, t, cv2.LINE_AA, _SHIFT)
    if background != 1.0:       # exactly as drawn at 1 (the data of earlier versions, byte for byte)
        wall = rgb.reshape(-1, 3).mean(axis=0)
        rgb = wall + background * (rgb - wall)
    # the person: torso and head behind the hand, clothes in a random colour
    px = w / 2 + rng.uniform(-0.12, 0.12) * w
    shirt = tuple(float(c) for c in rng.uniform(20, 230, 3))
    skin = _SKIN[int(rng.integers(len(_SKIN)))] + rng.uniform(-18, 18, 3)
    torso_d = float(rng.uniform(85, 105))
    tw, top = rng.uniform(0.16, 0.22) * w, rng.uniform(0.45, 0.55) * h
    cv2.ellipse(rgb, _pt(px, h * 1.05), (int(tw * _ONE), int((h * 1.05 - top) * _ONE)), 0, 0, 360,
                shirt, -1, cv2.LINE_AA, _SHIFT)
    cv2.ellipse(depth, _pt(px, h * 1.05), (int(tw * _ONE), int((h * 1.05 - top) * _ONE)), 0, 0, 360,
                torso_d, -1, cv2.LINE_AA, _SHIFT)
    head_r = int(0.11 * h * _ONE)
    head = _pt(px, top - 0.1 * h)
    cv2.circle(rgb, head, head_r, tuple(float(c) for c in skin * 0.9), -1, cv2.LINE_AA, _SHIFT)
    cv2.circle(depth, head, head_r, torso_d - 5.0, -1, cv2.LINE_AA, _SHIFT)
    side = 1.0 if rng.uniform() < 0.5 else -1.0
    return _Scene(
        rgb=np.clip(rgb, 0, 255).astype(np.uint8),
        depth=np.clip(depth, 0, 255).astype(np.uint8),
        skin=tuple(float(c) for c in np.clip(skin, 0, 255)),
        sleeve=shirt,
        shoulder=(px + side * 0.8 * tw, top + 0.08 * h),
        torso_depth=torso_d,
        noise_rgb=float(rng.uniform(1.5, 5.0)),
        noise_depth=float(rng.uniform(0.5, 2.0)),
        gain=float(rng.uniform(0.8, 1.2)),
    )


def _hand_shapes(cx: float, cy: float, angle: float, r: float, spread: float, fingers: int
                 ) -> list[tuple[str, tuple]]:
    """Ellipses (centre, half-axes, angle) and the arm polygon making one hand pose."""
    a = math.radians(angle)
    up = (math.sin(a), -math.cos(a))          # unit vector along the fingers
    right = (math.cos(a), math.sin(a))
    shapes: list[tuple[str, tuple]] = []
    flen = r * (0.35 + 0.75 * spread)         # a fist shows stubs, an open hand long fingers
    fan = 14.0 + 14.0 * spread                # degrees between neighbouring fingers
    for k in range(fingers):
        off = (k - (fingers - 1) / 2.0) * fan
        fa = math.radians(angle + off)
        d = (math.sin(fa), -math.cos(fa))
        base = (cx + up[0] * 0.7 * r, cy + up[1] * 0.7 * r)
        ctr = (base[0] + d[0] * flen / 2, base[1] + d[1] * flen / 2)
        shapes.append(("ellipse", (ctr, (0.17 * r, flen / 2 + 0.15 * r), angle + off)))
    ta = math.radians(angle - 60.0 - 20.0 * spread)  # thumb on the left side, swings out
    td = (math.sin(ta), -math.cos(ta))
    tl = r * (0.3 + 0.45 * spread)
    tb = (cx - right[0] * 0.6 * r, cy - right[1] * 0.6 * r)
    shapes.append(("ellipse", ((tb[0] + td[0] * tl / 2, tb[1] + td[1] * tl / 2),
                               (0.2 * r, tl / 2 + 0.15 * r), angle - 60.0 - 20.0 * spread)))
    shapes.append(("ellipse", ((cx, cy), (0.85 * r, r), angle)))
    return shapes


def _draw(img: np.ndarray, shapes: list[tuple[str, tuple]], value) -> None:
    import cv2  # heavy

    for kind, geo in shapes:
        if kind == "ellipse":
            (x, y), (a1, a2), ang = geo
            cv2.ellipse(img, _pt(x, y), (max(1, int(a1 * _ONE)), max(1, int(a2 * _ONE))), ang,
                        0, 360, value, -1, cv2.LINE_AA, _SHIFT)
        else:  # polygon
            pts = np.array([_pt(x, y) for x, y in geo], dtype=np.int32)
            cv2.fillConvexPoly(img, pts, value, cv2.LINE_AA, _SHIFT)


def _arm_polygon(cx: float, cy: float, angle: float, r: float,
                 shoulder: tuple[float, float]) -> list[tuple[float, float]]:
    a = math.radians(angle)
    wrist = (cx - math.sin(a) * 0.8 * r, cy + math.cos(a) * 0.8 * r)
    dx, dy = shoulder[0] - wrist[0], shoulder[1] - wrist[1]
    n = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / n, dx / n
    w1, w2 = 0.55 * r, 0.8 * r
    return [(wrist[0] + nx * w1, wrist[1] + ny * w1), (shoulder[0] + nx * w2, shoulder[1] + ny * w2),
            (shoulder[0] - nx * w2, shoulder[1] - ny * w2), (wrist[0] - nx * w1, wrist[1] - ny * w1)]


def hand_depth_value(close: float | np.ndarray) -> float | np.ndarray:
    """8-bit depth of the hand at closeness ``close`` (0 far .. 1 near): brighter = nearer."""
    return 120.0 + 120.0 * close


def render_clip(label: int, num_frames: int, size: tuple[int, int], rng: np.random.Generator,
                *, fingers: int | None = None, depth: bool = True, composite: bool = False,
                difficulty: ClipDifficulty | None = None, background: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray | None, HandTrack]:
    """Frames of one clip: RGB (N, H, W, 3) uint8, aligned depth (N, H, W) uint8 (or None),
    and the hand track they were drawn from. ``difficulty``: the clip's draw of the difficulty
    options (`clip_difficulty`); ``composite``: ``label`` is a composite class; ``background``:
    the RGB background's contrast (`_make_scene`)."""
    w, h = size
    gc = gesture_class(label, composite=composite)
    scene = _make_scene(size, rng, background)
    track = hand_track(label, num_frames, size, rng, composite=composite,
                       stroke=difficulty.stroke if difficulty is not None else None)
    nf = gc.fingers if fingers is None else fingers
    extra = _Extras.make(difficulty, track, num_frames, size, composite) if difficulty is not None else None
    rgb = np.empty((num_frames, h, w, 3), np.uint8)
    dep = np.empty((num_frames, h, w), np.uint8) if depth else None
    # the lighting gain scales every colour drawn (equivalent to scaling the frames, but free)
    bg = np.clip(scene.rgb.astype(np.float32) * scene.gain, 0, 255).astype(np.uint8)
    skin = tuple(min(255.0, c * scene.gain) for c in scene.skin)
    sleeve = tuple(min(255.0, c * scene.gain) for c in scene.sleeve)
    for t in range(num_frames):
        cx, cy, ang, r = (float(track.cx[t]), float(track.cy[t]), float(track.angle[t]),
                          float(track.radius[t]))
        arm = [("poly", _arm_polygon(cx, cy, ang, r, scene.shoulder))]
        hand = _hand_shapes(cx, cy, ang, r, float(track.spread[t]), nf)
        frame = bg.copy()
        d = scene.depth.copy() if dep is not None else None
        if extra is not None:
            extra.draw_behind(t, frame, d, scene.gain)
        _draw(frame, arm, sleeve)
        _draw(frame, hand, skin)
        if d is not None:
            hv = float(hand_depth_value(track.close[t]))
            _draw(d, arm, (hv + scene.torso_depth) / 2.0)
            _draw(d, hand, hv)
        if extra is not None:
            extra.draw_in_front(frame, d, scene.gain)
        rgb[t] = frame
        if dep is not None:
            dep[t] = d
    if extra is not None:
        rgb, dep = extra.blur(rgb), extra.blur(dep)
    rgb = _add_noise(rgb, scene.noise_rgb, rng)
    if dep is not None:
        dep = _add_noise(dep, scene.noise_depth, rng)
    if extra is not None:
        rgb, dep = extra.add_noise(rgb, dep)
    return rgb, dep, track


@dataclass(slots=True)
class _Extras:
    """What a clip's difficulty draw adds to its frames: a distractor behind the hand, an
    occluder in front of it, blur and extra sensor noise."""
    difficulty: ClipDifficulty
    size: tuple[int, int]
    distractor: HandTrack | None
    distractor_fingers: int
    distractor_skin: tuple[float, float, float]
    occluder: Occluder | None
    occluder_mask: np.ndarray | None

    @classmethod
    def make(cls, diff: ClipDifficulty, track: HandTrack, num_frames: int, size: tuple[int, int],
             composite: bool) -> _Extras:
        w, h = size
        dtrack, dfingers, dskin = None, 0, (0.0, 0.0, 0.0)
        if diff.distractor is not None:
            drng = np.random.default_rng(diff.distractor_seed)
            box = (DISTRACTOR_SCALE * w, DISTRACTOR_SCALE * h)
            t = hand_track(diff.distractor, num_frames, box, drng, composite=composite)   # type: ignore[arg-type]
            dx = diff.distractor_side * (1.0 - DISTRACTOR_SCALE) * w
            dtrack = HandTrack(cx=t.cx + dx, cy=t.cy, angle=t.angle, radius=t.radius, close=t.close,
                               spread=t.spread)
            dfingers = gesture_class(diff.distractor, composite=composite).fingers
            dskin = tuple(float(c) for c in np.clip(_SKIN[int(drng.integers(len(_SKIN)))]
                                                    + drng.uniform(-18, 18, 3), 0, 255))
        occ = diff.occluder(track, size)
        return cls(diff, size, dtrack, dfingers, dskin, occ, occ.mask(size) if occ is not None else None)

    def draw_behind(self, t: int, frame: np.ndarray, depth: np.ndarray | None, gain: float) -> None:
        tr = self.distractor
        if tr is None:
            return
        shapes = _hand_shapes(float(tr.cx[t]), float(tr.cy[t]), float(tr.angle[t]), float(tr.radius[t]),
                              float(tr.spread[t]), self.distractor_fingers)
        _draw(frame, shapes, tuple(min(255.0, c * gain) for c in self.distractor_skin))
        if depth is not None:   # farther than the hand: "elsewhere", behind it
            _draw(depth, shapes, float(hand_depth_value(tr.close[t])) - 30.0)

    def draw_in_front(self, frame: np.ndarray, depth: np.ndarray | None, gain: float) -> None:
        if self.occluder is None:
            return
        frame[self.occluder_mask] = np.array([min(255.0, c * gain) for c in self.occluder.colour], np.uint8)
        if depth is not None:
            depth[self.occluder_mask] = np.uint8(OCCLUDER_DEPTH)

    def blur(self, frames: np.ndarray | None) -> np.ndarray | None:
        if frames is None or self.difficulty.noise <= 0:
            return frames
        import cv2  # heavy

        sigma = NOISE_BLUR * self.difficulty.noise * self.size[1]
        return np.stack([cv2.GaussianBlur(f, (0, 0), sigmaX=sigma, sigmaY=sigma,
                                          borderType=cv2.BORDER_REFLECT) for f in frames])

    def add_noise(self, rgb: np.ndarray, dep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if self.difficulty.noise <= 0:
            return rgb, dep
        nrng = np.random.default_rng(self.difficulty.noise_seed)
        rgb = _add_noise(rgb, NOISE_SIGMA[0] * self.difficulty.noise, nrng)
        if dep is not None:
            dep = _add_noise(dep, NOISE_SIGMA[1] * self.difficulty.noise, nrng)
        return rgb, dep


def _add_noise(frames: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian sensor noise, quantised to 256 levels through a lookup table of normal
    quantiles: random bytes + a table lookup cost a third of ``standard_normal`` here, and
    generation speed matters (``bench run`` synthesises its data on the fly)."""
    from statistics import NormalDist

    q = NormalDist(0.0, sigma)
    lut = np.array([round(q.inv_cdf((b + 0.5) / 256.0)) for b in range(256)], dtype=np.int16)
    idx = np.frombuffer(rng.bytes(frames.size), dtype=np.uint8).reshape(frames.shape)
    return np.clip(frames.astype(np.int16) + lut[idx], 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# writing files


def write_video(path: str | Path, frames: np.ndarray, *, codec: str = "mjpeg", fps: int = 10) -> None:
    """Encode (N, H, W, 3) RGB or (N, H, W) gray uint8 frames into ``path`` (single-threaded,
    so the bytes depend only on the frames), writing to a temporary name and renaming so an
    interrupted run never leaves a truncated file under the final name."""
    import av  # heavy

    if codec not in CODECS:
        raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
    if frames.ndim not in (3, 4) or len(frames) == 0:
        raise ValueError(f"expected (N,H,W[,3]) frames with N >= 1, got shape {frames.shape}")
    encoder, pix_fmt, tag, options = CODECS[codec]
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"size must be even for 4:2:0 video, got {w}x{h}")
    fmt = "gray" if frames.ndim == 3 else "rgb24"
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with av.open(str(tmp), "w", format="avi") as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.codec_context.thread_count = 1
        if tag:
            stream.codec_context.codec_tag = tag
        stream.options = dict(options)
        for a in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format=fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


def write_jpg_folder(folder: str | Path, frames: np.ndarray, *, quality: int = 90) -> None:
    """Write frames as ``00001.jpg, 00002.jpg, ...`` (Jester's naming); RGB or gray.
    The folder appears under its final name only when complete."""
    import cv2  # heavy

    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for i, a in enumerate(frames, start=1):
        img = a if a.ndim == 2 else cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # pragma: no cover - OpenCV failure
            raise RuntimeError(f"JPEG encoding failed for {tmp / f'{i:05d}.jpg'}")
        (tmp / f"{i:05d}.jpg").write_bytes(buf.tobytes())
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


# ---------------------------------------------------------------------------------------------
# the dataset


@dataclass(frozen=True, slots=True)
class SynthOptions:
    """Everything that decides the bytes written (recorded in SYNTHETIC.json)."""
    format: str
    num_classes: int = 10
    clips_per_class: int = 20
    valid_clips_per_class: int = 5
    test_clips_per_class: int = 2
    size: tuple[int, int] = (160, 120)
    codec: str = "mjpeg"
    seed: int = 0
    length_scale: float = 1.0
    modalities: tuple[str, ...] = ("rgb", "depth")
    # difficulty (docs/GRADED.md); all 0 / False: the data of generator version 1.1, byte for byte
    distractor: float = 0.0   # the probability that a clip has a distractor hand
    occlusion: float = 0.0    # the fraction of the hand's path a static occluder covers
    tempo: float = 0.0        # how much the stroke's speed varies between clips
    noise: float = 0.0        # extra sensor noise and blur
    partial: float = 0.0      # the fraction of clips whose stroke is cut short
    composite: bool = False   # classes are "a then b" / "b then a" pairs of strokes
    # the scene: the RGB background's and clutter's contrast around their mean colour (1: as in
    # version 1.1, saturated colour fields; lower: a calmer wall, as in most real recordings)
    background: float = 1.0

    def __post_init__(self) -> None:
        for name in DIFFICULTY_AXES:     # floats, so that 0 and 0.0 write the same SYNTHETIC.json
            object.__setattr__(self, name, check_level(name, getattr(self, name)))
        object.__setattr__(self, "composite", check_composite(self.composite))
        object.__setattr__(self, "background", check_level("background", self.background))
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        _check_num_classes(self.num_classes)
        for name in ("clips_per_class", "valid_clips_per_class", "test_clips_per_class"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.clips_per_class < 1:
            raise ValueError(f"clips_per_class must be >= 1, got {self.clips_per_class}")
        w, h = self.size
        if w < 32 or h < 32 or w % 2 or h % 2:
            raise ValueError(f"size must be even and at least 32x32, got {w}x{h}")
        if self.codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, got {self.codec!r}")
        if not self.length_scale > 0:
            raise ValueError(f"length_scale must be > 0, got {self.length_scale}")
        if "rgb" not in self.modalities:
            raise ValueError("modalities must include 'rgb' (flow is computed from it), "
                             f"got {self.modalities}")
        bad = [m for m in self.modalities if m not in ("rgb", "depth")]
        if bad:
            raise ValueError("modalities: synth writes 'rgb' and 'depth' (flow: `bench data flow`), "
                             f"got {bad}")

    def clips(self, split: str) -> int:
        per = {"train": self.clips_per_class, "valid": self.valid_clips_per_class,
               "test": self.test_clips_per_class}[split]
        return per * self.num_classes


@dataclass(frozen=True, slots=True)
class _ClipTask:
    split: str
    index: int       # 0-based within the split
    clip_id: int     # Jester folder id / IsoGD file number (1-based)


@dataclass(frozen=True, slots=True)
class _ClipResult:
    split: str
    index: int
    label: int
    num_frames: int
    sample_id: str


def frame_count_table(fmt: str) -> dict[str, np.ndarray]:
    """Real frame counts per split: IsoGD's three splits, Jester's validation set for all."""
    res = importlib.resources.files("bench") / "resources"
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    if fmt == "isogd":
        with (res / "isogd" / "frame_counts.csv").open() as f:
            for row in csv.DictReader(f):
                out[row["split"]].append(int(row["frames"]))
    elif fmt == "jester":
        with (res / "jester" / "valid_frame_counts.csv").open() as f:
            counts = [int(row["frames"]) for row in csv.DictReader(f)]
        out = {s: counts for s in SPLITS}
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return {s: np.asarray(v, dtype=np.int64) for s, v in out.items()}


def sample_num_frames(rng: np.random.Generator, counts: np.ndarray, length_scale: float = 1.0) -> int:
    """One clip length: a real clip's frame count times ``length_scale``, at least MIN_FRAMES,
    made odd (an even count loses one frame).

    Why odd: the paper's sampler takes frame ``floor(k * N / n)`` (``bench.data.sampling``). For
    odd N and a clip length n that is a power of two (8, 16, 32: every clip length the suite
    uses), ``k * N / n`` is never a whole number for 0 < k < n, so ``N - 1 - floor(k * N / n)
    = floor((n - k) * N / n)``: the frames sampled from a clip, mirrored, are the frames
    sampled from its time reversal, but for frame 0 against frame N - 1 -- and those two show
    the same rest pose (`Timing`). For even N the mirrored grid slips by one frame wherever
    ``k * N / n`` is whole (every sample when n divides N), which tilts the sampled frames
    towards one end of the gesture, a cue that needs no order.
    """
    n = max(MIN_FRAMES, int(round(int(rng.choice(counts)) * length_scale)))
    return n - 1 if n % 2 == 0 else n


def clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The RNG of one clip: independent of how clips are spread over workers."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_CODE[split], int(index)]))


def clip_label(index: int, num_classes: int) -> int:
    """Labels cycle through the classes so any prefix of a split is balanced."""
    return index % num_classes


def _isogd_rel(split: str, number: int, prefix: str) -> str:
    return f"{split}/{(number - 1) // ISOGD_PER_FOLDER + 1:03d}/{prefix}_{number:05d}.avi"


_WORKER: dict = {}


def _init_worker(opts: SynthOptions, out: str, counts: dict[str, np.ndarray],
                 threads: int | None = None) -> None:
    if threads is not None:
        import cv2  # heavy

        cv2.setNumThreads(threads)  # one process per core: no oversubscription
    _WORKER.update(opts=opts, out=Path(out), counts=counts)


def _make_clip(task: _ClipTask) -> _ClipResult:
    opts: SynthOptions = _WORKER["opts"]
    out: Path = _WORKER["out"]
    counts = _WORKER["counts"][task.split]
    rng = clip_rng(opts.seed, task.split, task.index)
    label = clip_label(task.index, opts.num_classes)
    n = sample_num_frames(rng, counts, opts.length_scale)
    want_depth = "depth" in opts.modalities
    diff = clip_difficulty(opts, label, difficulty_rng(opts.seed, task.split, task.index))
    rgb, dep, _ = render_clip(label, n, opts.size, rng, depth=want_depth, composite=opts.composite,
                              difficulty=diff, background=opts.background)
    if opts.format == "isogd":
        m_rel = _isogd_rel(task.split, task.clip_id, "M")
        (out / m_rel).parent.mkdir(parents=True, exist_ok=True)
        write_video(out / m_rel, rgb, codec=opts.codec, fps=FPS["isogd"])
        if dep is not None:
            write_video(out / _isogd_rel(task.split, task.clip_id, "K"), dep, codec=opts.codec,
                        fps=FPS["isogd"])
        sample_id = m_rel[: -len(".avi")]
    else:
        sample_id = str(task.clip_id)
        write_jpg_folder(out / "20bn-jester-v1" / sample_id, rgb)
        if dep is not None:
            write_jpg_folder(out / "20bn-jester-v1-depth" / sample_id, dep)
    return _ClipResult(task.split, task.index, label, n, sample_id)


def _tasks(opts: SynthOptions) -> list[_ClipTask]:
    tasks, next_id = [], 1
    for split in SPLITS:
        for i in range(opts.clips(split)):
            # IsoGD numbers files per split from 1; Jester ids are unique across splits
            cid = i + 1 if opts.format == "isogd" else next_id + i
            tasks.append(_ClipTask(split, i, cid))
        next_id += opts.clips(split)
    return tasks


def synthesize(fmt: str, out: str | Path, *, num_classes: int = 10, clips_per_class: int = 20,
               valid_clips_per_class: int = 5, test_clips_per_class: int = 2,
               size: tuple[int, int] | None = None, codec: str = "mjpeg", seed: int = 0,
               length_scale: float = 1.0, modalities: Sequence[str] = ("rgb", "depth"),
               distractor: float = 0.0, occlusion: float = 0.0, tempo: float = 0.0,
               noise: float = 0.0, partial: float = 0.0, composite: bool = False,
               background: float = 1.0,
               workers: int = 1, progress: bool = True, overwrite: bool = False) -> Path:
    """Write a synthetic ``fmt`` dataset under ``out``; returns ``out``.

    ``distractor``, ``occlusion``, ``tempo``, ``noise``, ``partial`` (each 0..1) and
    ``composite`` make it harder (module docstring, docs/GRADED.md); at 0 / False the files are
    those of generator version 1.1 (SYNTHETIC.json aside, which records them). ``background``
    (0..1, default 1: as in 1.1) is the contrast of the RGB background and its clutter.

    The result is readable by ``bench.data.formats.load_index(fmt, out, split)`` for the
    splits train/valid/test. ``out`` must be empty or absent; ``overwrite=True`` replaces a
    previous *synthetic* dataset (one with SYNTHETIC.json) and refuses anything else.
    """
    opts = SynthOptions(format=fmt, num_classes=num_classes, clips_per_class=clips_per_class,
                        valid_clips_per_class=valid_clips_per_class,
                        test_clips_per_class=test_clips_per_class,
                        size=tuple(size) if size is not None else DEFAULT_SIZE.get(fmt, (160, 120)),
                        codec=codec, seed=seed, length_scale=length_scale,
                        modalities=tuple(dict.fromkeys(modalities)), distractor=distractor,
                        occlusion=occlusion, tempo=tempo, noise=noise, partial=partial,
                        composite=composite, background=background)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    _prepare_out(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    counts = frame_count_table(fmt)
    tasks = _tasks(opts)
    results = _run(tasks, opts, out, counts, workers=workers, progress=progress)
    by_split = {s: sorted((r for r in results if r.split == s), key=lambda r: r.index) for s in SPLITS}
    names = class_names(num_classes, composite=opts.composite)
    if fmt == "isogd":
        _write_isogd_lists(out, by_split, names)
    else:
        _write_jester_csvs(out, by_split, names)
    _write_manifest(out, opts, by_split, names)
    return out


def _prepare_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"out: {out} exists and is not a directory")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise ValueError(f"out: {out} is not empty (pass overwrite=True / --overwrite to replace "
                         "a previous synthetic dataset)")
    if not (out / "SYNTHETIC.json").is_file():
        raise ValueError(f"out: {out} is not empty and holds no SYNTHETIC.json; refusing to delete it")
    shutil.rmtree(out)


def _run(tasks: list[_ClipTask], opts: SynthOptions, out: Path, counts: dict[str, np.ndarray], *,
         workers: int, progress: bool) -> list[_ClipResult]:
    from tqdm import tqdm  # heavy

    bar = tqdm(total=len(tasks), desc=f"synth {opts.format}", unit="clip",
               disable=None if progress else True)
    results: list[_ClipResult] = []
    try:
        if workers == 1 or len(tasks) <= 1:
            _init_worker(opts, str(out), counts)
            for t in tasks:
                results.append(_make_clip(t))
                bar.update()
        else:
            import multiprocessing as mp

            # spawn: the parent may hold threads (torch, Ray) that fork would copy half-locked
            ctx = mp.get_context("spawn")
            chunk = max(1, len(tasks) // (8 * workers))
            with ctx.Pool(workers, initializer=_init_worker, initargs=(opts, str(out), counts, 1)) as pool:
                for r in pool.imap_unordered(_make_clip, tasks, chunksize=chunk):
                    results.append(r)
                    bar.update()
    finally:
        bar.close()
    return results


def _write_text(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _write_isogd_lists(out: Path, by_split: dict[str, list[_ClipResult]], names: list[str]) -> None:
    for split in SPLITS:
        lines = []
        for r in by_split[split]:
            m = r.sample_id + ".avi"
            k = m.replace("/M_", "/K_")
            # 1-based labels in every split: IsoGD's labelled test list (published after the
            # challenge) has this layout, and a search's winners are scored on it
            lines.append(f"{m} {k} {r.label + 1}")
        _write_text(out / f"{split}_list.txt", lines)
    _write_text(out / "classes.txt", names)


def _write_jester_csvs(out: Path, by_split: dict[str, list[_ClipResult]], names: list[str]) -> None:
    _write_text(out / "jester-v1-labels.csv", names)
    _write_text(out / "jester-v1-train.csv", (f"{r.sample_id};{names[r.label]}" for r in by_split["train"]))
    _write_text(out / "jester-v1-validation.csv",
                (f"{r.sample_id};{names[r.label]}" for r in by_split["valid"]))
    _write_text(out / "jester-v1-test.csv", (r.sample_id for r in by_split["test"]))


def _write_manifest(out: Path, opts: SynthOptions, by_split: dict[str, list[_ClipResult]],
                    names: list[str]) -> None:
    """SYNTHETIC.json (machine-readable) and SYNTHETIC.md: reports must be able to say the data
    is synthetic, and test labels (Jester's official-format test list carries none) live here."""
    frames = {s: [r.num_frames for r in rs] for s, rs in by_split.items()}
    manifest = {
        "synthetic": True,
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "options": {**asdict(opts), "size": list(opts.size), "modalities": list(opts.modalities)},
        "fps": FPS[opts.format],
        "classes": names,
        "reversal_pairs": reversal_pairs(opts.num_classes),
        "splits": {s: {"clips": len(by_split[s]),
                       "frames_total": int(sum(frames[s])),
                       "frames_min": int(min(frames[s])) if frames[s] else 0,
                       "frames_max": int(max(frames[s])) if frames[s] else 0} for s in SPLITS},
        "frame_counts_from": ("resources/isogd/frame_counts.csv" if opts.format == "isogd"
                              else "resources/jester/valid_frame_counts.csv"),
        "test_labels": {r.sample_id: r.label for r in by_split["test"]},
    }
    (out / "SYNTHETIC.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    w, h = opts.size
    layout = ("AVI M_/K_ videos + *_list.txt" if opts.format == "isogd"
              else "JPG folders + jester-v1-*.csv")
    md = [
        "# Synthetic gesture dataset",
        "",
        f"Generated by `{GENERATOR}` version {GENERATOR_VERSION} (`bench data synth`); NOT real footage.",
        f"Layout: {opts.format} ({layout}),",
        f"{opts.num_classes} classes, {w}x{h}, codec {opts.codec if opts.format == 'isogd' else 'jpg'},"
        f" seed {opts.seed}, length scale {opts.length_scale}, modalities {', '.join(opts.modalities)}.",
        "Clips: " + ", ".join(f"{s} {len(by_split[s])}" for s in SPLITS) + ".",
        *([] if not (opts.composite or any(getattr(opts, a) for a in DIFFICULTY_AXES)) else
          ["Difficulty (docs/GRADED.md): " + ", ".join(f"{a} {getattr(opts, a)}" for a in DIFFICULTY_AXES)
           + f", composite {str(opts.composite).lower()}."]),
        *([] if opts.background == 1.0 else [f"Background contrast {opts.background} (1: saturated colour fields)."]),
        "",
        "A drawn hand moves along class-specific trajectories; classes come in pairs that are",
        "time reversals of each other (SYNTHETIC.json: reversal_pairs), so only the order of frames",
        "separates them, also among the frames the paper's sampler takes. Frame counts",
        f"follow the real dataset's distribution ({manifest['frame_counts_from']}).",
        "Accuracy on this data says nothing about accuracy on the real dataset.",
        "Test labels are in SYNTHETIC.json (and, for IsoGD, in test_list.txt as in IsoGD's labelled test list).",
    ]
    _write_text(out / "SYNTHETIC.md", md)


# ---------------------------------------------------------------------------------------------
# CLI


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH such as 112x84, got {text!r}") from None
    return w, h


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic gesture dataset in the IsoGD or Jester layout",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, type=Path, help="output directory (empty or absent)")
    p.add_argument("--classes", type=int, default=10, help=f"number of classes, 2..{MAX_CLASSES}")
    p.add_argument("--clips-per-class", type=int, default=20, help="training clips per class")
    p.add_argument("--valid-clips-per-class", type=int, default=5)
    p.add_argument("--test-clips-per-class", type=int, default=2)
    p.add_argument("--size", type=_parse_size, default=None,
                   help="frame size WxH, even (default isogd 160x120, jester 176x100)")
    p.add_argument("--codec", choices=sorted(CODECS), default="mjpeg",
                   help="IsoGD video codec (default mjpeg: DALI's CPU decoder reads it; mpeg4 = XVID "
                        "like real IsoGD); Jester is always JPG")
    p.add_argument("--length-scale", type=float, default=1.0,
                   help="multiply the real frame counts (floor %d frames)" % MIN_FRAMES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--modalities", default="rgb,depth", help="comma-separated: rgb[,depth]")
    for axis, what in (("distractor", "probability that a clip has a second hand doing another class"),
                       ("occlusion", "fraction of the hand's path a static occluder covers"),
                       ("tempo", "per-clip variation of the stroke's speed"),
                       ("noise", "extra sensor noise and blur"),
                       ("partial", "fraction of clips whose stroke is cut short")):
        p.add_argument(f"--{axis}", type=float, default=0.0, help=f"difficulty 0..1: {what} (docs/GRADED.md)")
    p.add_argument("--composite", action="store_true",
                   help='composite classes: "a then b" against "b then a" (two strokes, each out and back)')
    p.add_argument("--background", type=float, default=1.0,
                   help="0..1: contrast of the RGB background and clutter around their mean colour "
                        "(default 1: saturated colour fields; 0: a flat wall)")
    p.add_argument("--overwrite", action="store_true", help="replace a previous synthetic dataset in --out")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:

    mods = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    t0 = time.perf_counter()
    try:
        out = synthesize(args.format, args.out, num_classes=args.classes,
                         clips_per_class=args.clips_per_class,
                         valid_clips_per_class=args.valid_clips_per_class,
                         test_clips_per_class=args.test_clips_per_class, size=args.size,
                         codec=args.codec, seed=args.seed, length_scale=args.length_scale,
                         modalities=mods, distractor=args.distractor, occlusion=args.occlusion,
                         tempo=args.tempo, noise=args.noise, partial=args.partial,
                         composite=args.composite, background=args.background, workers=args.workers,
                         overwrite=args.overwrite)
    except ValueError as e:
        raise CLIError(str(e)) from None
    dt = time.perf_counter() - t0
    man = json.loads((out / "SYNTHETIC.json").read_text())
    n = sum(s["clips"] for s in man["splits"].values())
    per_split = ", ".join(f"{k} {v['clips']}" for k, v in man["splits"].items())
    print(f"wrote {n} clips ({per_split}) "
          f"to {out} in {dt:.1f} s ({n / dt:.1f} clips/s)")
    return 0
