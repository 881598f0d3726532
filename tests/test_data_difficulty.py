"""The synthetic generator's difficulty axes (docs/GRADED.md): off, they change no byte; on,
they change what they say and nothing that tells a class from its time reversal."""

from __future__ import annotations

import importlib.resources
import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench.data import synth
from bench.data.sampling import sample_frame_indices
from bench.sweep.spec import ConfigError, load_spec

SIZE, N = (112, 84), 31
STATE = ("cx", "cy", "angle", "radius", "close", "spread")
TINY = dict(num_classes=4, clips_per_class=2, valid_clips_per_class=1, test_clips_per_class=1,
            size=(48, 36), length_scale=0.25, progress=False, seed=1)
MODERATE = dict(distractor=0.5, occlusion=0.3, tempo=0.5, noise=0.3, partial=0.5)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _opts(**kw) -> synth.SynthOptions:
    return synth.SynthOptions(format="isogd", num_classes=kw.pop("num_classes", 8), size=SIZE, **kw)


def _render(label: int, index: int, *, rng=None, **levels):
    """One clip as `synthesize` draws it (seed 0, train split), with the given levels."""
    opts = _opts(**levels)
    diff = synth.clip_difficulty(opts, label, synth.difficulty_rng(0, "train", index))
    rng = synth.clip_rng(0, "train", index) if rng is None else rng
    return (*synth.render_clip(label, N, SIZE, rng, composite=opts.composite, difficulty=diff), diff)


class _Silent:
    """A clip RNG that draws the scene and the hand as usual but no sensor noise (its bytes are
    all 128, the noise table's zero), so that two renders can be compared pixel for pixel."""

    def __init__(self, seed: int) -> None:
        self._g = synth.clip_rng(0, "train", seed)

    def __getattr__(self, name: str):
        return getattr(self._g, name)

    def bytes(self, n: int) -> bytes:
        return b"\x80" * n


# -- off: the data of generator 1.1 -----------------------------------------------------------

@pytest.mark.parametrize("fmt", ["isogd", "jester"])
def test_options_at_zero_write_the_same_bytes_as_no_options(tmp_path: Path, fmt: str) -> None:
    unset = synth.synthesize(fmt, tmp_path / "unset", **TINY)
    zero = synth.synthesize(fmt, tmp_path / "zero", distractor=0, occlusion=0, tempo=0, noise=0,
                            partial=0, composite=0, background=1, **TINY)
    a, b = _files(unset), _files(zero)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    man = json.loads((zero / "SYNTHETIC.json").read_text())
    assert man["generator_version"] == synth.GENERATOR_VERSION == "1.3"
    assert {k: man["options"][k] for k in (*synth.DIFFICULTY_AXES, "composite")} == \
        {**{k: 0.0 for k in synth.DIFFICULTY_AXES}, "composite": False}


@pytest.mark.parametrize("axis", synth.DIFFICULTY_AXES)
def test_an_axis_at_zero_or_not_drawn_leaves_the_clip_as_it_is(axis: str) -> None:
    """The options draw from their own RNG: at 0 a clip is drawn exactly as without options,
    and so is a clip that a level above 0 happens to leave alone."""
    rgb0, dep0, _, none = _render(0, 3)
    assert none is None
    rgb1, dep1, _, diff = _render(0, 3, **{axis: 0.0})
    assert diff is None and np.array_equal(rgb0, rgb1) and np.array_equal(dep0, dep1)
    if axis in ("distractor", "partial"):          # per-clip draws: on, but not for this clip
        rgb2, dep2, _, diff = _render(0, 3, **{axis: 1e-9})
        assert diff is not None and diff.distractor is None and diff.stroke.cut is None
        assert np.array_equal(rgb0, rgb2) and np.array_equal(dep0, dep2)


def test_options_are_recorded_and_checked(tmp_path: Path) -> None:
    root = synth.synthesize("isogd", tmp_path / "d", **MODERATE, composite=True, **TINY)
    man = json.loads((root / "SYNTHETIC.json").read_text())
    assert {k: man["options"][k] for k in MODERATE} == MODERATE and man["options"]["composite"] is True
    assert "Difficulty" in (root / "SYNTHETIC.md").read_text()
    for axis in synth.DIFFICULTY_AXES:
        for bad in (-0.1, 1.5, float("nan"), "0.5", True, None):
            with pytest.raises(ValueError, match=rf"^{axis} must be a number in 0\.\.1"):
                _opts(**{axis: bad})
        with pytest.raises(ValueError, match=axis):
            synth.synthesize("isogd", tmp_path / "x", **{**TINY, axis: 2})
    for bad in (2, 0.5, "yes", None):
        with pytest.raises(ValueError, match="^composite must be true/false or 0/1"):
            _opts(composite=bad)
    assert _opts(composite=1).composite is True and _opts(noise=1).noise == 1.0


def test_cli_flags(tmp_path: Path) -> None:
    from bench.cli import main

    out = tmp_path / "cli"
    assert main(["data", "synth", "--format", "jester", "--out", str(out), "--classes", "2",
                 "--clips-per-class", "1", "--valid-clips-per-class", "0", "--test-clips-per-class", "0",
                 "--size", "48x36", "--length-scale", "0.2", "--modalities", "rgb", "--noise", "0.5",
                 "--composite", "--background", "0.25"]) == 0
    opts = json.loads((out / "SYNTHETIC.json").read_text())["options"]
    assert opts["noise"] == 0.5 and opts["composite"] is True and opts["tempo"] == 0.0
    assert opts["background"] == 0.25


# -- the scene's background contrast ---------------------------------------------------------

def test_background_calms_the_rgb_wall_and_changes_nothing_else() -> None:
    """``background`` < 1 pulls the RGB background and its clutter towards their mean colour:
    the wall's spread shrinks by that factor, while the hand, the person, the depth map and every
    draw stay the same."""
    size = SIZE
    full = synth.render_clip(3, N, size, _Silent(7), background=1.0)
    calm = synth.render_clip(3, N, size, _Silent(7), background=0.3)
    flat = synth.render_clip(3, N, size, _Silent(7), background=0.0)
    for other in (calm, flat):
        assert np.array_equal(other[1], full[1])                               # depth: the same
        assert all(np.array_equal(getattr(other[2], k), getattr(full[2], k)) for k in STATE)  # the hand
    moved = np.abs(full[0].astype(int) - full[0][:1]).max(-1).max(0) > 0      # pixels the hand reaches
    person = np.abs(full[0].astype(int) - calm[0]).max(-1).max(0) == 0
    wall = ~moved & ~person                                                   # what changed: the wall
    assert wall.mean() > 0.3
    spread = [x[0][0][wall].astype(float).std(0).mean() for x in (full, calm, flat)]
    assert spread[2] < 1.0 < spread[1] < 0.45 * spread[0]                     # ~0.3 x, flat at 0
    assert abs(spread[1] / spread[0] - 0.3) < 0.08
    # where the hand is drawn, it is drawn the same (its colour does not depend on the wall)
    hand = np.abs(full[0].astype(int) - full[0][:1]).max(-1) > 40
    hand_calm = np.abs(calm[0].astype(int) - calm[0][:1]).max(-1) > 40
    assert (hand & hand_calm).sum() > 0.8 * hand.sum()
    for bad in (-0.1, 1.5, float("nan"), "0.3", None):
        with pytest.raises(ValueError, match=r"^background must be a number in 0\.\.1"):
            _opts(background=bad)


def test_background_is_recorded_and_reaches_the_sweep_file(tmp_path: Path) -> None:
    root = synth.synthesize("isogd", tmp_path / "d", background=0.35, **TINY)
    man = json.loads((root / "SYNTHETIC.json").read_text())
    assert man["options"]["background"] == 0.35
    assert "Background contrast 0.35" in (root / "SYNTHETIC.md").read_text()
    plain = synth.synthesize("isogd", tmp_path / "p", **TINY)
    assert "Background contrast" not in (plain / "SYNTHETIC.md").read_text()
    assert _sweep(tmp_path, "background: 0.35").datasets["syn"].synthetic.background == 0.35
    assert _sweep(tmp_path, "seed: 0").datasets["syn"].synthetic.background == 1.0
    for opts, why in (("background: 1.5", "background: must be in 0..1, got 1.5"),
                      ("background: calm", "background: must be a number, got the string 'calm'")):
        with pytest.raises(ConfigError) as e:
            _sweep(tmp_path, opts)
        assert str(e.value) == f"{tmp_path / 'sweep.yaml'}:8: datasets.syn.synthetic.{why}"


def test_a_sweep_refuses_a_synthetic_folder_generated_with_other_options(tmp_path: Path) -> None:
    """A folder left by an earlier version of the sweep file is not trained on in silence."""
    from bench.errors import SweepError
    from bench.sweep.run import check_synthetic_options

    spec = _sweep(tmp_path, "distractor: 0.5")
    ds = spec.datasets["syn"]
    kw = {**ds.synthetic.synthesize_kwargs(), "clips_per_class": 1, "valid_clips_per_class": 0,
          "size": (48, 36), "length_scale": 0.25}
    synth.synthesize("isogd", ds.root, **{**kw, "progress": False})
    check_synthetic_options("syn", ds.root, kw)                              # the same: used
    with pytest.raises(SweepError) as e:
        check_synthetic_options("syn", ds.root, {**kw, "distractor": 0.0, "background": 0.35})
    msg = str(e.value)
    assert msg.startswith(f"dataset 'syn': {ds.root} holds a synthetic dataset generated with other options")
    assert "distractor: 0.5 there, 0.0 in the sweep file" in msg and "background: 1.0 there, 0.35" in msg
    assert "delete the folder" in msg
    # a manifest from before the option existed: its default (1.0) is what it was generated with
    man = json.loads((ds.root / "SYNTHETIC.json").read_text())
    del man["options"]["background"]
    (ds.root / "SYNTHETIC.json").write_text(json.dumps(man))
    check_synthetic_options("syn", ds.root, kw)
    (ds.root / "SYNTHETIC.json").write_text("{not json")
    with pytest.raises(SweepError, match="SYNTHETIC.json: cannot read the generator's options"):
        check_synthetic_options("syn", ds.root, kw)
    (ds.root / "SYNTHETIC.json").unlink()                                    # not ours: used as is
    check_synthetic_options("syn", ds.root, {**kw, "num_classes": 99})


# -- on: each axis does what it says ---------------------------------------------------------

def test_distractor_adds_a_second_moving_hand_elsewhere() -> None:
    rgb0, _, _, _ = _render(0, 5)
    rgb1, _, _, diff = _render(0, 5, distractor=1.0)
    assert diff.distractor is not None and diff.distractor != 0             # another class
    changed = np.abs(rgb1.astype(int) - rgb0).max(-1) > 40                  # (N, H, W)
    assert changed.any(1).any(1).all()                                       # in every frame
    ys, _ = np.nonzero(changed.any(0))
    # in the top corner box it is drawn in, behind the hand: away from the hand's centre
    assert ys.max() < synth.DISTRACTOR_SCALE * SIZE[1] + 1
    blob = np.array([np.argwhere(changed[t]).mean(0) for t in range(N)])     # (y, x) per frame
    assert np.ptp(blob, 0).max() > 3                                         # it moves
    # over many clips: the fraction of clips with one is the level
    opts = _opts(distractor=0.5)
    has = [synth.clip_difficulty(opts, i % 8, synth.difficulty_rng(0, "train", i)).distractor is not None
           for i in range(400)]
    assert 0.42 < np.mean(has) < 0.58
    drawn = [synth.clip_difficulty(_opts(distractor=1.0), i % 8, synth.difficulty_rng(0, "train", i)).distractor
             for i in range(400)]
    assert all(d != i % 8 and 0 <= d < 8 for i, d in enumerate(drawn))


def test_occlusion_hides_that_fraction_of_the_hands_path() -> None:
    _, dep0, track, _ = _render(0, 7)
    _, dep1, _, diff = _render(0, 7, occlusion=0.4)
    occ = diff.occluder(track, SIZE)
    # the band covers 0.4 of the extent the hand sweeps along its longer axis (x for a swipe)
    reach = 1.6 * track.radius
    assert occ.axis == 0
    assert occ.hi - occ.lo == pytest.approx(0.4 * (np.max(track.cx + reach) - np.min(track.cx - reach)))
    mask = occ.mask(SIZE)
    assert (dep0 != dep1)[:, ~mask].sum() == 0                # nothing changes outside the band
    hand0 = dep0 > synth.hand_depth_value(track.close.min()) - 10
    hidden = hand0[:, mask].any(1)                           # frames whose hand was in the band
    assert hidden.sum() >= 3
    assert (np.abs(dep1[:, mask].astype(int) - synth.OCCLUDER_DEPTH) <= 8).mean() > 0.99   # covered (+ noise)
    centre_in = [occ.lo <= x <= occ.hi for x in track.cx]
    assert 0 < np.mean(centre_in) < 1                         # part of the path, not all of it


def test_tempo_changes_the_strokes_timing_but_not_its_path_or_rest_poses() -> None:
    n = 201
    mids, spans = [], []
    for i in range(6):
        opts = _opts(tempo=1.0)
        stroke = synth.clip_difficulty(opts, 0, synth.difficulty_rng(0, "train", i)).stroke
        plain = synth.hand_track(0, n, SIZE, np.random.default_rng(11))
        warped = synth.hand_track(0, n, SIZE, np.random.default_rng(11), stroke=stroke)
        np.testing.assert_allclose(warped.cx[[0, -1]], plain.cx[[0, -1]], atol=1e-9)    # rest poses
        assert warped.cx.min() == pytest.approx(plain.cx.min(), abs=0.5)                # same path
        assert warped.cx.max() == pytest.approx(plain.cx.max(), abs=0.5)
        half = (warped.cx.min() + warped.cx.max()) / 2
        lo, hi = int(np.argmin(warped.cx)), int(np.argmax(warped.cx))
        mids.append(lo + int(np.argmax(warped.cx[lo:hi + 1] >= half)))                  # mid-stroke frame
        spans.append(hi - lo)
        # still held at both ends: at least as long as without tempo
        still = np.abs(np.diff(warped.cx)) < 1e-9
        assert still[: int(0.04 * n)].all() and still[-int(0.04 * n):].all()
    assert np.ptp(mids) > 10 and np.ptp(spans) > 10


def test_noise_grows_frame_differences_on_the_static_background() -> None:
    rgb0, _, _, _ = _render(2, 4)
    gray0 = rgb0.astype(float).mean(-1)
    static = (np.abs(gray0 - gray0[0]).max(0) < 25)           # pixels the hand never reaches
    assert static.mean() > 0.3
    diffs = []
    for level in (0.0, 0.5, 1.0):
        rgb, _, _, _ = _render(2, 4, noise=level)
        g = rgb.astype(float).mean(-1)
        diffs.append(np.abs(np.diff(g, axis=0))[:, static].mean())
    assert diffs[0] < diffs[1] < diffs[2] and diffs[2] > 3 * diffs[0]


def test_blur_softens_edges() -> None:
    """The blur alone (extra noise is added after it): compare renders without any noise."""
    opts = _opts(noise=1.0)
    diff = synth.clip_difficulty(opts, 2, synth.difficulty_rng(0, "train", 4))
    extras = synth._Extras.make(diff, synth.hand_track(2, N, SIZE, np.random.default_rng(0)), N, SIZE, False)
    sharp = _render(2, 4, rng=_Silent(4))[0]
    blurred = extras.blur(sharp)
    grad = lambda f: np.abs(np.diff(f.astype(float), axis=2))
    assert np.percentile(grad(blurred), 99) < 0.6 * np.percentile(grad(sharp), 99)


def test_partial_cuts_the_stroke_short_in_that_fraction_of_clips() -> None:
    cut = [synth.clip_difficulty(_opts(partial=0.5), 0, synth.difficulty_rng(0, "train", i)).stroke.cut
           for i in range(400)]
    assert 0.42 < np.mean([c is not None for c in cut]) < 0.58
    for i in range(5):
        stroke = synth.clip_difficulty(_opts(partial=1.0), 0, synth.difficulty_rng(0, "train", i)).stroke
        lo, hi = stroke.cut
        assert synth.PARTIAL_CUT[0] <= hi - lo <= synth.PARTIAL_CUT[1] and 0 <= lo < hi <= 1
        full = synth.hand_track(0, N, SIZE, np.random.default_rng(i))
        short = synth.hand_track(0, N, SIZE, np.random.default_rng(i), stroke=stroke)
        assert np.ptp(short.cx) < 0.85 * np.ptp(full.cx)                  # a shorter swipe
        np.testing.assert_allclose(short.cx[[0, -1]], full.cx[[0, -1]], atol=1e-9)   # same rest


def test_composite_classes_are_a_then_b_against_b_then_a() -> None:
    names = synth.class_names(4, composite=True)
    assert names[:2] == ["swipe right and back, then swipe down and back",
                         "swipe down and back, then swipe right and back"]
    assert len(set(synth.class_names(synth.MAX_CLASSES, composite=True))) == synth.MAX_CLASSES
    stroke = synth.StrokeVariation(split=0.5)
    for label in (0, 2, 6, 90):
        for n_frames in (15, 33, 85):
            a = synth.hand_track(label, n_frames, SIZE, np.random.default_rng(label), composite=True, stroke=stroke)
            b = synth.hand_track(label + 1, n_frames, SIZE, np.random.default_rng(label), composite=True,
                                 stroke=stroke)
            for k in STATE:          # B-then-A is A-then-B played backwards
                np.testing.assert_allclose(getattr(b, k)[::-1], getattr(a, k), atol=1e-9)
            for clip_len in (8, 16):   # ... and the sampler takes the same poses from both
                idx = sample_frame_indices(n_frames, clip_len, train=False)
                sa = np.stack([getattr(a, k)[idx] for k in STATE], 1)
                sb = np.stack([getattr(b, k)[idx] for k in STATE], 1)
                np.testing.assert_allclose(np.sort(sa, 0), np.sort(sb, 0), atol=1e-9)
    # the order of the strokes: swipe right (x) first in class 0, swipe down (y) first in class 1
    a = synth.hand_track(0, 101, SIZE, np.random.default_rng(0), composite=True)
    b = synth.hand_track(1, 101, SIZE, np.random.default_rng(0), composite=True)
    assert np.argmax(a.cx) < np.argmax(a.cy) and np.argmax(b.cy) < np.argmax(b.cx)


def test_composite_dataset_names_its_reversal_pairs(tmp_path: Path) -> None:
    root = synth.synthesize("isogd", tmp_path / "c", composite=True, **TINY)
    man = json.loads((root / "SYNTHETIC.json").read_text())
    assert man["classes"] == synth.class_names(4, composite=True)
    assert man["reversal_pairs"] == [[0, 1], [2, 3]]
    (a, b) = man["reversal_pairs"][0]
    first, second = man["classes"][a].split(", then ")
    assert man["classes"][b] == f"{second}, then {first}"


# -- the reversal property, every option on -------------------------------------------------

@pytest.mark.parametrize("composite", [False, True], ids=["motion", "composite"])
def test_clip_of_the_reversed_class_is_the_clip_played_backwards(composite: bool) -> None:
    """Same subject and the same difficulty draws, every axis but noise at a moderate level (and
    distractor and partial on for every clip): the reversed class's frames are the class's
    frames in reverse order, pixel for pixel, and start and end alike -- so the paper's sampler
    takes the same frames from both (tests/test_data_reversal.py), and no order-free function of
    them can tell the two apart. Noise is independent per frame, the same for both classes."""
    levels = dict(distractor=1.0, occlusion=0.3, tempo=0.5, partial=1.0, composite=composite)
    for index in range(3):
        for label in (0, 2, 4):
            opts = _opts(**levels)
            diff = synth.clip_difficulty(opts, label, synth.difficulty_rng(0, "train", index))
            rdiff = synth.clip_difficulty(opts, label + 1, synth.difficulty_rng(0, "train", index))
            assert rdiff.distractor == diff.distractor ^ 1          # the distractor reversed too
            fwd = synth.render_clip(label, N, SIZE, _Silent(index), composite=composite, difficulty=diff)
            bwd = synth.render_clip(label + 1, N, SIZE, _Silent(index), composite=composite, difficulty=rdiff)
            assert np.array_equal(bwd[0][::-1], fwd[0]) and np.array_equal(bwd[1][::-1], fwd[1])
            assert np.array_equal(fwd[0][0], fwd[0][-1]) and np.array_equal(fwd[1][0], fwd[1][-1])
            for clip_len in (8, 16):
                idx = sample_frame_indices(N, clip_len, train=False)
                key = lambda f: sorted(x.tobytes() for x in f)      # the set of frames
                assert key(fwd[1][idx]) == key(bwd[1][idx])
            assert not np.array_equal(fwd[1], bwd[1])               # ... while the order differs


def test_difficulty_draws_are_distributed_alike_for_a_class_and_its_reversal() -> None:
    """What each draw of member 1 is, member 0's is too (the distractor: reversed), so the
    classes of a pair see the same distribution of difficulty."""
    opts = _opts(**MODERATE)
    for i in range(50):
        d0 = synth.clip_difficulty(opts, 2, synth.difficulty_rng(0, "train", i))
        d1 = synth.clip_difficulty(opts, 3, synth.difficulty_rng(0, "train", i))
        assert d0.stroke == d1.stroke and d0.occluder_offset == d1.occluder_offset
        assert (d0.distractor is None) == (d1.distractor is None)
        if d0.distractor is not None:
            assert d0.distractor // 2 == d1.distractor // 2 != 1 and d0.distractor != d1.distractor


@pytest.mark.slow
def test_order_free_functions_stay_at_chance_with_every_option_on(tmp_path: Path) -> None:
    """The statistical check of tests/test_data_reversal.py, on decoded clips through the real
    loader, with every axis at a moderate level (noise included)."""
    rev = pytest.importorskip("test_data_reversal")
    root = synth.synthesize("isogd", tmp_path / "ds", num_classes=2, clips_per_class=100, valid_clips_per_class=0,
                            test_clips_per_class=0, size=(48, 36), length_scale=0.35, seed=5, progress=False,
                            **MODERATE)
    for train in (False, True):
        desc, labels = rev._sampled(root, train=train)
        assert rev._cv_accuracy(rev._order_free(desc), labels) < 0.65
        assert rev._cv_accuracy(desc.reshape(len(desc), -1), labels) > 0.8


# -- the sweep file ---------------------------------------------------------------------------

SWEEP = """\
name: t
datasets:
  syn:
    format: isogd
    root: data/syn
    synthetic:
      num_classes: 4
      {opts}
stages:
  - {{name: pretrain, epochs: 2}}
"""


def _sweep(tmp_path: Path, opts: str):
    f = tmp_path / "sweep.yaml"
    f.write_text(SWEEP.format(opts=opts))
    return load_spec(f, base_dir=tmp_path)


def test_sweep_synthetic_block_takes_the_options(tmp_path: Path) -> None:
    spec = _sweep(tmp_path, "distractor: 0.5\n      occlusion: 1\n      tempo: 0.25\n      noise: 0\n"
                            "      partial: 0.1\n      composite: true")
    syn = spec.datasets["syn"].synthetic
    assert (syn.distractor, syn.occlusion, syn.tempo, syn.noise, syn.partial, syn.composite) == \
        (0.5, 1.0, 0.25, 0.0, 0.1, True)
    kw = syn.synthesize_kwargs()
    opts = synth.SynthOptions(format="isogd", **{k: v for k, v in kw.items() if k != "size"})
    assert opts.distractor == 0.5 and opts.composite is True
    assert _sweep(tmp_path, "composite: 1").datasets["syn"].synthetic.composite is True
    plain = _sweep(tmp_path, "seed: 0").datasets["syn"].synthetic
    assert (plain.distractor, plain.composite) == (0.0, False)


@pytest.mark.parametrize("opts,why", [
    ("distractor: 1.5", "distractor: must be in 0..1, got 1.5"),
    ("noise: -0.1", "noise: must be >= 0, got -0.1"),
    ("tempo: fast", "tempo: must be a number, got the string 'fast'"),
    ("partial: true", "partial: must be a number, got True"),
    ("occlusion: [0.1]", "occlusion: must be a number, got a list"),
    ("composite: 2", "composite: must be true/false or 0/1, got 2"),
    ("composite: maybe", "composite: must be true/false or 0/1, got the string 'maybe'"),
])
def test_sweep_refuses_bad_levels_with_file_line_and_field(tmp_path: Path, opts: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        _sweep(tmp_path, opts)
    assert str(e.value) == f"{tmp_path / 'sweep.yaml'}:8: datasets.syn.synthetic.{why}"


def test_graded_sweep_file_and_its_levels() -> None:
    """bench/configs/graded.yaml, and the per-level sweeps `bench graded` derives from it: the
    axis set to the level, a root and a sweep name per level, everything else the file's."""
    import dataclasses

    from bench.models import list_cells
    from bench.sweep.graded import level_specs

    path = Path(str(importlib.resources.files("bench") / "configs/graded.yaml"))
    spec = load_spec(path)
    (stage,) = spec.stages
    assert stage.image_size == 56 and spec.preset == "small" and len(spec.grid.seeds) >= 3
    assert spec.grid.cells == tuple(list_cells(include_controls=True))
    base = spec.datasets[stage.dataset]
    assert base.synthetic.size[1] >= 56 and base.synthetic.size[0] >= 56     # no upscaling to 56 x 56
    levels = level_specs(spec, "occlusion", [0.0, 0.25, 1.0])
    assert [s.name for _, s in levels] == ["graded-occlusion-000", "graded-occlusion-025", "graded-occlusion-100"]
    for level, s in levels:
        ds = s.datasets[stage.dataset]
        assert ds.root == base.root.with_name(f"{base.root.name}-occlusion-{round(level * 100):03d}")
        assert ds.synthetic == dataclasses.replace(base.synthetic, occlusion=level)
        assert s.stages[0].train.root == str(ds.root)                       # what each trial trains on
        assert s.stages[0].train.replace(root=base.root.as_posix()) == stage.train
        assert s.grid == spec.grid and s.storage == spec.storage


@pytest.mark.parametrize("axis,levels,why", [
    ("composite", "0,1", "--axis: one of distractor"),
    ("blur", "0,1", "--axis: one of distractor"),
    ("noise", "0,1.5", "--levels must be a number in 0..1, got 1.5"),
    ("noise", "0", "need at least two different levels"),
    ("noise", "0,x", "expected numbers in 0..1"),
    ("noise", "0.501,0.504", "share a folder name"),
])
def test_graded_refuses_a_bad_axis_or_levels(axis: str, levels: str, why: str) -> None:
    from bench.errors import CLIError
    from bench.sweep.graded import level_specs, parse_levels

    spec = load_spec(Path(str(importlib.resources.files("bench") / "configs/graded.yaml")))
    with pytest.raises(CLIError, match=re.escape(why)):
        level_specs(spec, axis, parse_levels(levels))


def load_spec_text(text: str, source: Path):
    from bench.sweep.spec import parse_spec

    return parse_spec(textwrap.dedent(text), source=source)
