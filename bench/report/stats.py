"""Statistics the leaderboard rests on: seed aggregates with t confidence intervals, and paired
tests between two classifiers scored on the same samples.

Why these: a sweep has a handful of seeds per configuration, so the spread of the mean is
taken from Student's t with n - 1 degrees of freedom (not the normal 1.96, which is too
narrow for n = 2..5). Two cells evaluated on the same validation clips are compared *paired*:
McNemar's exact test looks only at the clips where exactly one of them is right (b and c);
under "no difference" each such clip is a fair coin, so p = two-sided binomial test of b out
of b + c at 1/2. A paired bootstrap of the accuracy difference gives a confidence interval
in accuracy points, which is what a reader of the table wants to see beside the p-value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALPHA = 0.05


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
