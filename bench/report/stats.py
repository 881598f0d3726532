"""Statistics the leaderboard rests on: intervals for an architecture's accuracy over seeds and
clips, comparisons of two architectures, and the multiple-comparison correction of a report.

Why a hierarchical bootstrap and not Student's t over seeds: a sweep has a handful of seeds per
(cell, modality), and t with n - 1 = 1 degree of freedom has a 97.5% quantile of 12.7, so an
accuracy of 85.5 +- 10 over two seeds gets the interval [-46.9, 217.8] -- outside [0, 100], and
blind to how many clips each seed was scored on. Two sources of noise stand behind a mean top-1:
which seeds were trained (initialisation, data order) and which clips the validation split
happens to hold. The bootstrap resamples both, in that order (seeds with replacement, then the
clips within each resampled seed), and takes the percentile interval of the replicated means. A
mean of accuracies in [0, 1] stays in [0, 1], so the interval does too, with any number of seeds.

The inner resample needs no per-clip work: drawing N clips with replacement from a seed that is
right on k of N draws Binomial(N, k / N) right ones, so a replicate costs O(seeds), not
O(seeds x clips) (the real IsoGD has 5,784 validation clips).

Two cells are compared on the same validation clips, *paired by clip* (a hard clip is hard for
both, and pairing removes that shared noise from the difference): each replicate resamples the
seeds of each cell independently (seed 0 of one cell has nothing in common with seed 0 of
another) and one set of clip indices used by both. It gives the mean difference's percentile
interval, a two-sided p-value from the bootstrap's standard error (`bootstrap_p`) and the
probability of improvement.

Probability of improvement, P(A > B): the probability that a randomly drawn run (seed) of A
scores a higher top-1 than a randomly drawn run of B, ties counted 1/2, i.e. the Mann-Whitney
U / (n_A n_B) over the seeds' accuracies -- the "average probability of improvement" of Agarwal
et al., *Deep RL at the Edge of the Statistical Precipice* (NeurIPS 2021, rliable) and the
P(A > B) of Bouthillier et al., *Accounting for Variance in ML Benchmarks* (MLSys 2021). It is
computed over the *seeds' accuracies*, not over bootstrap replicates of the mean: it answers
"will my next training run of A beat one of B?", which a difference of means does not. With two
seeds a side it takes the values 0, 1/4, ..., 1; its percentile interval comes from the same
replicates. When the two sides are the same runs (a fusion against its best single modality:
both from the very networks of each seed) the runs are paired and P counts the seeds whose
fused score beats their own single-modality score.

A report makes many comparisons (every pair of cells per modality, every fusion against its
best single modality), so its p-values are corrected together with Holm's step-down method
(`holm`): it controls the family-wise error rate at alpha with no assumption about how the
tests depend on each other, and is uniformly more powerful than Bonferroni.

Kept from before, and still used: McNemar's exact test for two classifiers scored on the same
clips (one trained model each: the per-seed fusion table) and its paired bootstrap; `mean_ci`
(Student t over seeds) is kept for callers of the old interface but no table prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALPHA = 0.05
N_BOOT = 2000
# Resamples per block in `compare_runs`: a block holds (block, clips) clip weights, 700 x 5,784
# float32 for IsoGD = 16 MB, whatever n_boot is.
_BLOCK_VALUES = 4_000_000


# ----------------------------------------------------------------------------- one architecture

@dataclass(frozen=True)
class SeedClipCI:
    """Mean accuracy over seeds and its hierarchical-bootstrap interval (fractions in [0, 1]).

    ``std`` is the sample standard deviation over seeds (ddof=1), NaN for one seed: one seed
    says nothing about the spread between seeds. With one seed the interval still exists but
    covers the clips' sampling only. ``clips``: clips per seed (the smallest, if they differ)."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    seeds: int
    clips: int
    n_boot: int


def hierarchical_ci(right: Sequence[int], clips: Sequence[int], *, n_boot: int = N_BOOT, seed: int = 0,
                    confidence: float = 0.95) -> SeedClipCI:
    """Interval of the mean top-1 from each seed's count of right clips ``right[s]`` of ``clips[s]``.

    Seeds are resampled with replacement, then the clips within each resampled seed (as a
    binomial draw, module docstring); the interval is the percentile one of the replicates'
    mean over seeds."""
    k = np.asarray(right, dtype=np.int64)
    n = np.asarray(clips, dtype=np.int64)
    if k.shape != n.shape or k.ndim != 1:
        raise ValueError(f"hierarchical_ci: need two 1-D sequences of equal length, got {k.shape} and {n.shape}")
    if (n <= 0).any() or (k < 0).any() or (k > n).any():
        raise ValueError(f"hierarchical_ci: need 0 <= right <= clips and clips > 0, got {k.tolist()} / {n.tolist()}")
    s = int(k.size)
    if s == 0:
        return SeedClipCI(math.nan, math.nan, math.nan, math.nan, 0, 0, n_boot)
    acc = k / n
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, s, size=(n_boot, s))                  # (B, S): the resampled seeds
    reps = (rng.binomial(n[pick], acc[pick]) / n[pick]).mean(axis=1)
    lo, hi = np.quantile(reps, [(1 - confidence) / 2, (1 + confidence) / 2])
    return SeedClipCI(mean=float(acc.mean()), std=float(acc.std(ddof=1)) if s > 1 else math.nan,
                      ci_low=float(lo), ci_high=float(hi), seeds=s, clips=int(n.min()), n_boot=n_boot)


def architecture_ci(correct: Sequence[np.ndarray], *, n_boot: int = N_BOOT, seed: int = 0,
                    confidence: float = 0.95) -> SeedClipCI:
    """`hierarchical_ci` from each seed's boolean "was right" vector (lengths may differ)."""
    vecs = [np.asarray(c, dtype=bool) for c in correct]
    return hierarchical_ci([int(v.sum()) for v in vecs], [int(v.size) for v in vecs], n_boot=n_boot,
                           seed=seed, confidence=confidence)


# ----------------------------------------------------------------------------- two architectures

@dataclass(frozen=True)
class Comparison:
    """A (runs x clips) against B (runs x clips) on the same clips; accuracies are fractions.

    ``diff`` = mean_a - mean_b (means over seeds), its percentile interval; ``prob_improvement``
    = P(a run of A beats a run of B), ties 1/2 (module docstring), and its interval; ``p_value``
    the two-sided p of "no difference in mean accuracy" (`bootstrap_p`)."""

    seeds_a: int
    seeds_b: int
    clips: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    prob_improvement: float
    prob_ci_low: float
    prob_ci_high: float
    p_value: float
    n_boot: int
    paired_seeds: bool = False


def prob_improvement(acc_a: np.ndarray, acc_b: np.ndarray) -> np.ndarray:
    """P(A > B) + P(A = B) / 2 over all (run of A, run of B) pairs, along the last axis:
    ``acc_a`` (..., S_A), ``acc_b`` (..., S_B) -> (...). Equals Mann-Whitney U_A / (S_A S_B)."""
    a = np.asarray(acc_a, dtype=np.float64)[..., :, None]
    b = np.asarray(acc_b, dtype=np.float64)[..., None, :]
    return ((a > b) + 0.5 * (a == b)).mean(axis=(-2, -1))


def bootstrap_p(reps: np.ndarray, estimate: float) -> float:
    """Two-sided p-value of "the statistic is 0": ``estimate`` over its bootstrap standard error
    (the replicates' std), against the normal, ``2 * (1 - Phi(|estimate| / se))``.

    Why not the percentile p (twice the share of replicates on the far side of 0): it cannot go
    below 2 / (n_boot + 1), and Holm multiplies the smallest p of a family by its size -- 0.001 x
    90 tests of a five-cell, three-modality report = 0.09, so nothing could ever be significant
    at 0.05. The standard error is what the bootstrap estimates well with a few thousand
    replicates; the normal reference suits a mean over thousands of clips. A spread of 0 (two
    identical models, paired) gives 1 for an estimate of 0 and 0 otherwise."""
    from scipy.stats import norm  # heavy

    r = np.asarray(reps, dtype=np.float64)
    se = float(r.std(ddof=1)) if r.size > 1 else 0.0
    if not math.isfinite(estimate):
        return math.nan
    if se == 0.0:
        return 1.0 if estimate == 0 else 0.0
    return float(min(1.0, 2.0 * norm.sf(abs(estimate) / se)))


def _clip_weights(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """(b, n) counts of each clip in ``b`` resamples of ``n`` clips with replacement."""
    idx = rng.integers(0, n, size=(b, n)) + (np.arange(b, dtype=np.int64) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float32)


def compare_runs(correct_a: np.ndarray, correct_b: np.ndarray, *, paired_seeds: bool = False,
                 n_boot: int = N_BOOT, seed: int = 0, confidence: float = 0.95) -> Comparison:
    """Hierarchical bootstrap of A - B from (S_A, N) and (S_B, N) boolean matrices on the same N clips.

    Each replicate draws the seeds of A and of B with replacement (the same seed indices for both
    when ``paired_seeds``: A's run s and B's run s come from one trained network, as a fusion and
    its single modalities do) and one resample of the clips, shared by A and B (paired by clip).
    Vectorised per block of replicates: per-seed accuracies under a clip resample are a matrix
    product of the (S, N) correctness with the (N, block) clip counts."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=bool))
    b = np.atleast_2d(np.asarray(correct_b, dtype=bool))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"compare_runs: need (S_A, N) and (S_B, N) on the same clips, got {a.shape} and {b.shape}")
    if paired_seeds and a.shape[0] != b.shape[0]:
        raise ValueError(f"compare_runs: paired seeds need as many runs of A as of B, got {a.shape[0]} and {b.shape[0]}")
    sa, sb, n = a.shape[0], b.shape[0], a.shape[1]
    if sa == 0 or sb == 0 or n == 0:
        nan = math.nan
        return Comparison(sa, sb, n, nan, nan, nan, nan, nan, nan, nan, nan, nan, n_boot, paired_seeds)
    acc_a, acc_b = a.mean(axis=1), b.mean(axis=1)
    if paired_seeds:
        p_point = float(((acc_a > acc_b) + 0.5 * (acc_a == acc_b)).mean())
    else:
        p_point = float(prob_improvement(acc_a, acc_b))
    rng = np.random.default_rng(seed)
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    diffs, probs = [], []
    block = max(1, min(n_boot, _BLOCK_VALUES // n))
    for start in range(0, n_boot, block):
        m = min(block, n_boot - start)
        w = _clip_weights(rng, m, n)                                  # (m, N)
        ra = (w @ fa.T) / n                                           # (m, S_A): each seed's accuracy
        rb = (w @ fb.T) / n
        ia = rng.integers(0, sa, size=(m, sa))                        # the resampled seeds
        ib = ia if paired_seeds else rng.integers(0, sb, size=(m, sb))
        rows = np.arange(m)[:, None]
        xa, xb = ra[rows, ia], rb[rows, ib]                           # (m, S_A), (m, S_B)
        diffs.append(xa.mean(axis=1, dtype=np.float64) - xb.mean(axis=1, dtype=np.float64))
        probs.append(((xa > xb) + 0.5 * (xa == xb)).mean(axis=1) if paired_seeds else prob_improvement(xa, xb))
    d, p = np.concatenate(diffs), np.concatenate(probs)
    q = [(1 - confidence) / 2, (1 + confidence) / 2]
    lo, hi = np.quantile(d, q)
    plo, phi = np.quantile(p, q)
    return Comparison(seeds_a=sa, seeds_b=sb, clips=n, mean_a=float(acc_a.mean()), mean_b=float(acc_b.mean()),
                      diff=float(acc_a.mean() - acc_b.mean()), ci_low=float(lo), ci_high=float(hi),
                      prob_improvement=p_point, prob_ci_low=float(plo), prob_ci_high=float(phi),
                      p_value=bootstrap_p(d, float(acc_a.mean() - acc_b.mean())), n_boot=n_boot, paired_seeds=paired_seeds)


# ----------------------------------------------------------------------------- a family of tests

def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order; NaN stays NaN and is not counted.

    statsmodels (`multitest.multipletests(method="holm")`) is not a dependency of the suite, and
    scipy's `false_discovery_control` does Benjamini-Hochberg / -Yekutieli only; Holm is four
    lines: sort ascending, multiply the i-th smallest (0-based) by m - i, take the running
    maximum (adjusted p-values must not decrease along the order), cap at 1."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
        out[order] = np.minimum(adj, 1.0)
    return out


# ----------------------------------------------------------------------------- kept: t over seeds, McNemar

@dataclass(frozen=True)
class MeanCI:
    """Mean, sample standard deviation (ddof=1) and a two-sided t interval over ``n`` values.

    ``std`` and the interval are NaN for n = 1: one seed says nothing about the spread."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int


def mean_ci(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95) -> MeanCI:
    """Mean +- t_{(1+confidence)/2, n-1} * std / sqrt(n); NaN values are an error, not skipped."""
    from scipy import stats  # heavy

    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"mean_ci: expected a 1-D sequence, got shape {x.shape}")
    if np.isnan(x).any():
        raise ValueError("mean_ci: NaN among the values (a trial without a final metric?)")
    n = int(x.size)
    if n == 0:
        return MeanCI(math.nan, math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if n == 1:
        return MeanCI(m, math.nan, math.nan, math.nan, 1)
    s = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * s / math.sqrt(n)
    return MeanCI(m, s, m - half, m + half, n)


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of classifier A against reference R on the same ``n`` samples.

    ``b``: samples A gets right and R wrong; ``c``: R right and A wrong. ``diff`` = acc(A) -
    acc(R) (fraction); ``p_mcnemar`` the exact two-sided McNemar p-value; the bootstrap
    interval is of ``diff`` (percentile, ``n_boot`` resamples of the samples)."""

    n: int
    acc_a: float
    acc_ref: float
    diff: float
    b: int
    c: int
    p_mcnemar: float
    boot_low: float
    boot_high: float

    @property
    def significant(self) -> bool:
        """McNemar exact p < 0.05."""
        return self.p_mcnemar < ALPHA


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (1.0 when b + c = 0)."""
    from scipy.stats import binomtest  # heavy

    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(binomtest(int(b), int(b + c), 0.5, alternative="two-sided").pvalue)


def paired_bootstrap(correct_a: np.ndarray, correct_ref: np.ndarray, *, n_boot: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of acc(A) - acc(R) over ``n_boot`` resamples of the samples, pairs kept.

    A paired difference per sample is +1 (only A right), -1 (only R right) or 0, so a resample
    of n samples is fully described by how many +1 and -1 it draws: a multinomial draw with
    probabilities (b/n, c/n, rest). Drawing those counts is the same bootstrap as resampling
    indices, in O(n_boot) instead of O(n_boot * n) (the real IsoGD has 5,784 clips)."""
    a = np.asarray(correct_a, dtype=bool)
    r = np.asarray(correct_ref, dtype=bool)
    n = int(a.size)
    if n == 0:
        return math.nan, math.nan
    b = int((a & ~r).sum())
    c = int((~a & r).sum())
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [b / n, c / n, (n - b - c) / n], size=n_boot)
    diffs = (counts[:, 0] - counts[:, 1]) / n
    lo, hi = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def paired_test(correct_a: np.ndarray, correct_ref: np.ndarray, *, n_boot: int = 2000,
                seed: int = 0) -> PairedTest:
    """McNemar (exact) and a paired bootstrap for two boolean "was right" vectors."""
    a = np.asarray(correct_a, dtype=bool)
    r = np.asarray(correct_ref, dtype=bool)
    if a.shape != r.shape or a.ndim != 1:
        raise ValueError(f"paired_test: need two 1-D vectors of equal length, got {a.shape} and {r.shape}")
    b = int((a & ~r).sum())
    c = int((~a & r).sum())
    lo, hi = paired_bootstrap(a, r, n_boot=n_boot, seed=seed)
    n = int(a.size)
    acc_a = float(a.mean()) if n else math.nan
    acc_r = float(r.mean()) if n else math.nan
    return PairedTest(n=n, acc_a=acc_a, acc_ref=acc_r, diff=acc_a - acc_r, b=b, c=c,
                      p_mcnemar=mcnemar_exact(b, c), boot_low=lo, boot_high=hi)
