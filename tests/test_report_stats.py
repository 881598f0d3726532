"""Statistics and fusion of the reporter, on hand-made numbers with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.report import fusion as fz
from bench.report.stats import mcnemar_exact, mean_ci, paired_bootstrap, paired_test

# ----------------------------------------------------------------------------- mean and CI

def test_mean_ci_matches_t_table() -> None:
    m = mean_ci([0.5, 0.6, 0.7])
    assert m.n == 3
    assert m.mean == pytest.approx(0.6)
    assert m.std == pytest.approx(0.1)                       # sample std (ddof=1)
    t_975_2 = 4.303                                          # Student's t table, 2 dof, 97.5%
    half = t_975_2 * 0.1 / math.sqrt(3)
    assert m.ci_low == pytest.approx(0.6 - half, abs=1e-4)
    assert m.ci_high == pytest.approx(0.6 + half, abs=1e-4)


def test_mean_ci_small_and_bad_inputs() -> None:
    one = mean_ci([0.4])
    assert one.n == 1 and one.mean == 0.4 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert mean_ci([]).n == 0
    two = mean_ci([1.0, 3.0])                                # t(0.975, 1) = 12.706
    assert two.ci_high - two.mean == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2), abs=1e-3)
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([0.5, float("nan")])


# ----------------------------------------------------------------------------- McNemar and bootstrap

def test_mcnemar_exact_known_p_value() -> None:
    # 10 clips only A gets right, 2 only B: two-sided exact binomial, n=12, k<=2:
    # 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(158 / 4096, rel=1e-12)
    assert mcnemar_exact(2, 10) == pytest.approx(158 / 4096, rel=1e-12)
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)      # all 6 discordant one way
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_paired_test_counts_discordant_pairs_from_vectors() -> None:
    # 100 clips: both right on 50, only A on 10, only B on 2, both wrong on 38
    a = np.array([1] * 50 + [1] * 10 + [0] * 2 + [0] * 38, dtype=bool)
    b = np.array([1] * 50 + [0] * 10 + [1] * 2 + [0] * 38, dtype=bool)
    t = paired_test(a, b, n_boot=4000, seed=1)
    assert (t.n, t.b, t.c) == (100, 10, 2)
    assert t.acc_a == pytest.approx(0.60) and t.acc_ref == pytest.approx(0.52)
    assert t.diff == pytest.approx(0.08)
    assert t.p_mcnemar == pytest.approx(158 / 4096)
    assert t.significant
    assert t.boot_low < 0.08 < t.boot_high
    assert t.boot_low > 0                                    # the bootstrap agrees: A is better
    # identical classifiers: nothing to test
    same = paired_test(a, a, n_boot=500)
    assert same.p_mcnemar == 1.0 and not same.significant and same.boot_low == same.boot_high == 0.0


def test_paired_bootstrap_matches_index_resampling() -> None:
    """The multinomial shortcut is the same distribution as resampling clip indices."""
    rng = np.random.default_rng(0)
    a = rng.random(300) < 0.6
    b = rng.random(300) < 0.5
    lo, hi = paired_bootstrap(a, b, n_boot=20000, seed=3)
    idx = np.random.default_rng(4).integers(0, 300, size=(20000, 300))
    d = (a.astype(float) - b.astype(float))[idx].mean(axis=1)
    ref_lo, ref_hi = np.quantile(d, [0.025, 0.975])
    assert lo == pytest.approx(ref_lo, abs=0.006) and hi == pytest.approx(ref_hi, abs=0.006)


# ----------------------------------------------------------------------------- fusion

def _probs(labels: np.ndarray, right: np.ndarray, c: int, *, right_conf: float = 0.7,
           wrong_conf: float = 0.45) -> np.ndarray:
    """Right clips: label gets right_conf. Wrong clips: label+1 gets wrong_conf, the label is
    the runner-up (hesitant when wrong). Rest spread evenly."""
    n = labels.size
    p = np.zeros((n, c))
    for i in range(n):
        if right[i]:
            p[i] = (1 - right_conf) / (c - 1)
            p[i, labels[i]] = right_conf
        else:
            w = (labels[i] + 1) % c
            p[i] = (1 - wrong_conf - 0.35) / (c - 2)
            p[i, w] = wrong_conf
            p[i, labels[i]] = 0.35
    return p


def _ids(n: int) -> list[str]:
    return [f"clip{i:04d}" for i in range(n)]


def test_fusion_beats_both_when_modalities_err_on_different_clips() -> None:
    n, c = 200, 5
    labels = np.arange(n) % c
    rgb_right = np.arange(n) < 140                   # wrong on the last 60
    depth_right = np.arange(n) >= 60                 # wrong on the first 60: disjoint errors
    al = fz.align({"rgb": (_ids(n), labels, _probs(labels, rgb_right, c)),
                   "depth": (_ids(n), labels, _probs(labels, depth_right, c))})
    best_single = max(fz.single(al, m).accuracy for m in ("rgb", "depth"))
    assert best_single == pytest.approx(0.70)
    for rule in fz.RULES:
        res = fz.fuse(al, rule=rule, seed=0)
        assert res.accuracy > best_single + 0.25, rule
        b = int((res.correct & ~fz.single(al, "rgb").correct).sum())
        cc = int((~res.correct & fz.single(al, "rgb").correct).sum())
        assert mcnemar_exact(b, cc) < 1e-6, rule
    fitted = fz.fuse(al, rule="fitted", seed=0)
    assert fitted.accuracy == pytest.approx(1.0)     # every clip: one confident right, one hesitant wrong
    assert fitted.weights is not None and (fitted.weights > 0).all()


@pytest.mark.parametrize("kind", ["uniform", "adversarial", "noise"])
def test_fitted_fusion_does_not_beat_the_best_modality_by_luck(kind: str) -> None:
    """A modality with nothing to add: the fitted fusion must match RGB alone (within 2 points)
    and not claim a gain; the fixed mean rule may be dragged down."""
    n, c = 400, 6
    rng = np.random.default_rng(7)
    labels = rng.integers(0, c, n)
    rgb_right = rng.random(n) < 0.7
    rgb = _probs(labels, rgb_right, c)
    if kind == "uniform":
        other = np.full((n, c), 1.0 / c)
    elif kind == "adversarial":                       # confidently wrong on every clip
        other = np.full((n, c), 0.02)
        other[np.arange(n), (labels + 2) % c] = 1 - 0.02 * (c - 1)
    else:                                             # confident noise, unrelated to the label
        other = rng.dirichlet(np.full(c, 0.2), n)
    al = fz.align({"rgb": (_ids(n), labels, rgb), "flow": (_ids(n), labels, other)})
    alone = fz.single(al, "rgb").accuracy
    fitted = fz.fuse(al, rule="fitted", seed=0)
    assert abs(fitted.accuracy - alone) <= 0.02, (kind, fitted.accuracy, alone)
    assert fitted.weights[1] < 0.25 * fitted.weights[0], (kind, fitted.weights)
    if kind == "adversarial":
        assert fz.fuse(al, rule="mean", seed=0).accuracy < alone - 0.3      # the fixed rule is fooled
        assert fz.fuse(al, rule="product", seed=0).accuracy < alone - 0.3
    if kind == "uniform":                                 # a constant adds nothing to any rule
        assert fz.fuse(al, rule="product", seed=0).accuracy == pytest.approx(alone)


def test_fitted_weights_are_never_scored_on_their_own_fold(monkeypatch: pytest.MonkeyPatch) -> None:
    n, c = 101, 4
    rng = np.random.default_rng(0)
    labels = rng.integers(0, c, n)
    a = rng.dirichlet(np.ones(c), n)
    b = rng.dirichlet(np.ones(c), n)
    al = fz.align({"rgb": (_ids(n), labels, a), "depth": (_ids(n), labels, b)})
    logps = np.log(np.maximum(np.stack([al.probs["rgb"], al.probs["depth"]]), fz.EPS))
    fitted_on: list[set[int]] = []
    real = fz.fit_weights

    def spy(lp: np.ndarray, lab: np.ndarray) -> np.ndarray:
        rows = {int(np.nonzero((logps[0] == r).all(axis=1))[0][0]) for r in lp[0]}
        fitted_on.append(rows)
        return real(lp, lab)

    monkeypatch.setattr(fz, "fit_weights", spy)
    res = fz.fuse(al, rule="fitted", seed=5)
    folds = fz.crossfit_folds(al.sample_ids, seed=5)
    assert len(fitted_on) == 2
    for f, rows in enumerate(fitted_on):                  # weights of fold f are fitted on the others ...
        assert rows == set(np.nonzero(folds != f)[0].tolist())
        z = np.tensordot(res.fold_weights[f], logps[:, folds == f], axes=1)   # ... and score fold f
        assert (z.argmax(axis=1) == res.pred[folds == f]).all()
    assert abs(int((folds == 0).sum()) - int((folds == 1).sum())) <= 1


def test_crossfit_folds_follow_ids_not_positions() -> None:
    ids = _ids(50)
    f1 = fz.crossfit_folds(ids, seed=3)
    perm = np.random.default_rng(1).permutation(50)
    f2 = fz.crossfit_folds([ids[i] for i in perm], seed=3)
    assert (f2 == f1[perm]).all()
    assert not (fz.crossfit_folds(ids, seed=4) == f1).all()   # the seed changes the split


def test_logits_are_softmaxed_and_probabilities_kept() -> None:
    p = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    out, soft = fz.to_probabilities(p)
    assert not soft and np.allclose(out, p)
    logits = np.array([[2.0, 1.0, 0.0], [-1.0, 3.0, 0.5]])
    out, soft = fz.to_probabilities(logits)
    e = np.exp(logits)
    assert soft and np.allclose(out, e / e.sum(axis=1, keepdims=True))
    with pytest.raises(ValueError, match="NaN"):
        fz.to_probabilities(np.array([[np.nan, 1.0]]))
    al = fz.align({"rgb": (["x", "y"], np.array([0, 1]), p[:, :3]), "depth": (["x", "y"], np.array([0, 1]), logits)})
    assert al.softmaxed == {"rgb": False, "depth": True}


def test_align_pairs_by_sample_id_and_reports_what_it_drops() -> None:
    c = 3
    lab = {"a": 0, "b": 1, "c": 2, "d": 0}
    rgb = (["a", "b", "c", "d"], np.array([lab[s] for s in "abcd"]), np.eye(c)[[0, 1, 2, 0]])
    depth = (["d", "c", "a"], np.array([lab[s] for s in "dca"]), np.eye(c)[[1, 2, 0]])   # no "b", other order
    al = fz.align({"rgb": rgb, "depth": depth})
    assert al.sample_ids == ["a", "c", "d"]
    assert al.labels.tolist() == [0, 2, 0]
    assert np.allclose(al.probs["depth"], np.eye(c)[[0, 2, 1]])    # reordered to rgb's order
    assert al.dropped == {"rgb": 1, "depth": 0}
    with pytest.raises(ValueError, match="sample 'c' has label 1"):
        fz.align({"rgb": rgb, "depth": (["c"], np.array([1]), np.eye(c)[[1]])})
    with pytest.raises(ValueError, match="twice"):
        fz.align({"rgb": (["a", "a"], np.array([0, 0]), np.eye(c)[[0, 0]])})
    with pytest.raises(ValueError, match="different numbers of classes"):
        fz.align({"rgb": rgb, "depth": (["a"], np.array([0]), np.eye(4)[[0]])})


def test_combinations_cover_every_pair_and_the_triple() -> None:
    assert fz.combinations(["flow", "rgb", "depth"]) == [
        ("rgb", "depth"), ("rgb", "flow"), ("depth", "flow"), ("rgb", "depth", "flow")]
    assert fz.combinations(["rgb"]) == []
