"""Late fusion of modalities from per-sample validation scores.

The paper trains one network per modality and reports no fused number; late fusion is the
suite's addition (SPEC, Table 2 notes). Three rules, all on class *probabilities*:

- ``mean``: the average of the modalities' probability vectors (sum rule).
- ``product``: the sum of their log-probabilities (product rule, naive-Bayes style).
- ``fitted``: a weighted product, ``softmax(sum_m w_m log p_m)`` with ``w_m >= 0`` chosen to
  minimise the negative log-likelihood of the labels. *Weights are never scored on the samples
  they were fitted on*: the samples are split into two folds by a seeded hash of ``sample_id``;
  weights fitted on fold 0 score fold 1 and vice versa (cross-fitting), so every sample gets a
  prediction from weights that never saw it.

Why one non-negative weight per modality rather than, say, scikit-learn's LogisticRegression
over the stacked scores: one weight per modality cannot memorise a validation set (a
multinomial model over M x C stacked log-probabilities has M x C x C coefficients -- 186,000
for IsoGD's 249 classes and three modalities -- to fit on a few thousand clips); ``w_m = 0``
is allowed, so an uninformative or adversarial modality is simply switched off and the fused
model falls back to the others. The model is a conditional logit with one coefficient per
modality shared by all classes; its NLL is convex in ``w`` (log-sum-exp of linear functions
minus a linear one), so L-BFGS-B (scipy) finds the global optimum deterministically. The
weights are free in scale (no simplex constraint): the scale acts as an inverse temperature,
so calibration is not bought by mixing in a useless modality. A tiny ridge term (1e-4 |w|^2)
makes the optimum unique when a modality carries no information at all (its gradient is 0).
The objective is the log-likelihood, not accuracy: smooth where accuracy is a step function.

Which networks are fused (`fusion_sources`): one cell and seed, one network per modality, from
whichever stage trained that modality -- the default sweep pre-trains depth and fine-tunes RGB
from it, and those two networks are what a two-stream system of that cell would run; a modality
both stages trained comes from the later stage.

Softmax before fusion is explicit: `to_probabilities` keeps a score matrix whose rows are
already distributions (non-negative, summing to 1 within 1e-3 -- what the training loop writes:
``val_scores.parquet`` ``probs`` = softmax of the logits) and applies a softmax otherwise, i.e.
it treats anything else as logits. Fusing logits by averaging would weight a modality by the
scale of its logits, which depends on its training, not on how much it knows.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from bench.data.index import MODALITIES
from bench.errors import DataError
from bench.storage import RemotePath, location

RULES = ("mean", "product", "fitted")
EPS = 1e-12                      # floor before log: a probability of exactly 0 would give -inf
PROB_ATOL = 1e-3
RIDGE = 1e-4                     # on the fitted weights: a unique optimum when a modality is flat


def to_probabilities(scores: np.ndarray, *, atol: float = PROB_ATOL) -> tuple[np.ndarray, bool]:
    """``(probabilities, was_softmaxed)``: rows kept (renormalised) if they are distributions,
    else treated as logits and softmaxed (max-subtracted, float64)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be a (N, C) matrix, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if s.size == 0:
        return s, False
    sums = s.sum(axis=1)
    if (s >= 0).all() and np.allclose(sums, 1.0, atol=atol, rtol=0):
        return s / sums[:, None], False
    z = s - s.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True), True


@dataclass
class Aligned:
    """Several modalities' scores on the same samples, in one order."""

    sample_ids: list[str]
    labels: np.ndarray                       # (N,) int64
    probs: dict[str, np.ndarray]             # modality -> (N, C) float64 probabilities
    dropped: dict[str, int] = field(default_factory=dict)   # samples only that modality had
    softmaxed: dict[str, bool] = field(default_factory=dict)

    _logp: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def modalities(self) -> list[str]:
        return list(self.probs)

    def logp(self, modality: str) -> np.ndarray:
        """log of the modality's probabilities (floored at EPS), computed once per modality."""
        if modality not in self._logp:
            self._logp[modality] = _log(self.probs[modality])
        return self._logp[modality]

    def __len__(self) -> int:
        return len(self.sample_ids)


def read_scores(path: str | Path | RemotePath) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(sample_ids, labels, scores (N, C))`` from a ``val_scores.parquet`` (the loop's layout),
    on a local disk or in the sweep's bucket.

    The ``probs`` list column is read through its flat Arrow buffer, not row by row: a real
    IsoGD table holds 5,784 x 249 values."""
    import pyarrow as pa  # heavy
    import pyarrow.parquet as pq  # heavy

    p = location(path)
    try:
        t = pq.read_table(p.fs_path, filesystem=p.fs) if isinstance(p, RemotePath) else pq.read_table(p)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a data error naming it
        raise DataError(p, f"cannot read the score table: {e}") from e
    missing = {"sample_id", "label", "probs"} - set(t.column_names)
    if missing:
        raise DataError(p, f"score table lacks column(s) {sorted(missing)} (has {t.column_names})")
    ids = [str(v) for v in t.column("sample_id").to_pylist()]
    labels = t.column("label").to_numpy().astype(np.int64)
    probs = t.column("probs").combine_chunks()
    if not pa.types.is_list(probs.type) and not pa.types.is_large_list(probs.type):
        raise DataError(p, f"column 'probs' must be a list of floats, got {probs.type}")
    lengths = probs.value_lengths().to_numpy(zero_copy_only=False) if len(probs) else np.zeros(0, np.int64)
    if probs.null_count or (lengths.size and (lengths != lengths[0]).any()):
        raise DataError(p, f"rows of 'probs' differ in length (or are null): {sorted(set(lengths.tolist()))}")
    c = int(lengths[0]) if lengths.size else 0
    flat = probs.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    return ids, labels, flat.reshape(len(ids), c)


def align(tables: Mapping[str, tuple[Sequence[str], np.ndarray, np.ndarray]]) -> Aligned:
    """Join modalities on ``sample_id`` (the first modality's order), checking that they agree.

    A sample missing from some modality (skipped by a loader with ``on_error=skip``) cannot be
    fused; it is left out and counted in ``Aligned.dropped`` -- reported, never silent.
    Different labels for one sample, duplicate ids or different class counts are errors.
    """
    if not tables:
        raise ValueError("align: no modalities given")
    per: dict[str, dict[str, int]] = {}
    num_classes = set()
    for m, (ids, _labels, scores) in tables.items():
        pos: dict[str, int] = {}
        for i, sid in enumerate(list(ids)):
            if sid in pos:
                raise ValueError(f"align: modality {m!r} scores sample {sid!r} twice")
            pos[sid] = i
        per[m] = pos
        num_classes.add(np.asarray(scores).shape[1])
    if len(num_classes) > 1:
        raise ValueError(f"align: the modalities score different numbers of classes: "
                         f"{ {m: np.asarray(t[2]).shape[1] for m, t in tables.items()} }")
    first = next(iter(tables))
    common = [sid for sid in tables[first][0] if all(sid in per[m] for m in tables)]
    labels = np.asarray([tables[first][1][per[first][sid]] for sid in common], dtype=np.int64)
    probs: dict[str, np.ndarray] = {}
    softmaxed: dict[str, bool] = {}
    dropped: dict[str, int] = {}
    for m, (_ids, lab, scores) in tables.items():
        idx = np.asarray([per[m][sid] for sid in common], dtype=np.int64)
        lab_m = np.asarray(lab, dtype=np.int64)[idx] if len(idx) else np.zeros(0, np.int64)
        bad = np.nonzero(lab_m != labels)[0]
        if bad.size:
            sid = common[int(bad[0])]
            raise ValueError(f"align: sample {sid!r} has label {int(lab_m[bad[0]])} in modality {m!r} "
                             f"but {int(labels[bad[0]])} in {first!r}")
        p, soft = to_probabilities(np.asarray(scores)[idx] if len(idx) else
                                   np.zeros((0, np.asarray(scores).shape[1])))
        probs[m], softmaxed[m] = p, soft
        dropped[m] = len(per[m]) - len(common)
    return Aligned(sample_ids=common, labels=labels, probs=probs, dropped=dropped, softmaxed=softmaxed)


def crossfit_folds(sample_ids: Sequence[str], *, seed: int, k: int = 2) -> np.ndarray:
    """Fold of each sample: ranks of a seeded BLAKE2b hash of the id, dealt round-robin.

    Hashing the id (not the position) makes the split independent of the table's order and
    the same for every modality and cell; ranking keeps the folds' sizes within one."""
    h = [int.from_bytes(hashlib.blake2b(f"{seed}\x00{sid}".encode(), digest_size=8).digest(), "big")
         for sid in sample_ids]
    order = np.argsort(np.asarray(h, dtype=np.uint64), kind="stable")
    folds = np.empty(len(h), dtype=np.int64)
    folds[order] = np.arange(len(h)) % k
    return folds


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(p, EPS))


def _nll_grad(w: np.ndarray, logps: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean NLL of ``softmax(sum_m w_m logps[m])`` at ``labels`` (+ ridge) and its gradient.

    ``logps`` is float32 (M, N, C): the N x C passes dominate the fit, and float32 halves their
    memory traffic (5x faster on IsoGD-sized tables); sums over samples are taken in float64."""
    m = logps.shape[0]
    wf = w.astype(logps.dtype)
    z = wf[0] * logps[0]                                     # (N, C): the fused log-scores
    for k in range(1, m):
        z += wf[k] * logps[k]
    zmax = z.max(axis=1, keepdims=True)
    z -= zmax
    np.exp(z, out=z)
    s = z.sum(axis=1, keepdims=True, dtype=np.float64)
    z /= s.astype(z.dtype)                                   # z now holds the fused probabilities
    rows = np.arange(labels.shape[0])
    at_label = logps[:, rows, labels].astype(np.float64)     # (M, N)
    nll = float(np.mean(zmax[:, 0] + np.log(s[:, 0]) - w @ at_label))
    # d/dw_m: E_p[logp_m] - logp_m[label], averaged over samples
    expected = np.array([np.einsum("nc,nc->n", z, logps[k], dtype=np.float64).mean() for k in range(m)])
    grad = expected - at_label.mean(axis=1)
    return nll + RIDGE * float(w @ w), grad + 2 * RIDGE * w


def fit_weights(logps: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Non-negative weights (M,) minimising the NLL of ``softmax(sum_m w_m logps[m])``.

    ``logps``: (M, N, C) log-probabilities of the fitting samples; starts from w = 1 (the
    product rule), so the fit can only move away from the product rule when the data say so."""
    from scipy.optimize import minimize  # heavy

    m = logps.shape[0]
    lp = np.ascontiguousarray(logps, dtype=np.float32)
    res = minimize(_nll_grad, np.ones(m), args=(lp, labels), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None)] * m,
                   # float32 sums are exact to ~1e-7: asking for more only buys noisy line searches
                   options={"maxiter": 200, "ftol": 1e-7, "gtol": 1e-6})
    return np.asarray(res.x, dtype=np.float64)


@dataclass
class FusionResult:
    """One rule on one aligned set: predictions, correctness and (fitted) the weights."""

    rule: str
    modalities: tuple[str, ...]
    pred: np.ndarray           # (N,) argmax of the fused scores
    correct: np.ndarray        # (N,) bool
    top5_correct: np.ndarray   # (N,) bool, label within the fused top-min(5, C)
    weights: np.ndarray | None = None      # fitted: mean of the folds' weights, (M,)
    fold_weights: np.ndarray | None = None  # fitted: (k, M)

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.correct.size else math.nan

    @property
    def top5(self) -> float:
        return float(self.top5_correct.mean()) if self.top5_correct.size else math.nan


def _topk_hit(z: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    if z.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    k = min(k, z.shape[1])
    # A label is in the top k if fewer than k classes score strictly higher.
    lab = z[np.arange(len(labels)), labels][:, None]
    return (z > lab).sum(axis=1) < k


def fuse(aligned: Aligned, *, rule: str, seed: int = 0, k_folds: int = 2,
         modalities: Sequence[str] | None = None) -> FusionResult:
    """Apply ``rule`` to ``modalities`` (default: all) of ``aligned``."""
    if rule not in RULES:
        raise ValueError(f"fuse: unknown rule {rule!r} (known: {', '.join(RULES)})")
    mods = tuple(modalities or aligned.modalities)
    labels = aligned.labels
    n = labels.shape[0]
    weights = fold_weights = None
    if rule == "mean":
        z = _log(np.mean([aligned.probs[m] for m in mods], axis=0))
    elif rule == "product":
        z = np.sum([aligned.logp(m) for m in mods], axis=0)
    else:
        logps = np.stack([aligned.logp(m) for m in mods])
        folds = crossfit_folds(aligned.sample_ids, seed=seed, k=k_folds)
        z = np.empty(logps.shape[1:])
        fw = []
        for f in range(k_folds):
            fit, score = folds != f, folds == f
            if not fit.any():     # fewer samples than folds: nothing to fit on -> product rule
                w = np.ones(len(mods))
            else:
                w = fit_weights(logps[:, fit], labels[fit])
            fw.append(w)
            z[score] = np.tensordot(w, logps[:, score], axes=1)
        fold_weights = np.asarray(fw)
        weights = fold_weights.mean(axis=0)
    pred = z.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    return FusionResult(rule=rule, modalities=mods, pred=pred, correct=pred == labels,
                        top5_correct=_topk_hit(z, labels, 5), weights=weights, fold_weights=fold_weights)


def single(aligned: Aligned, modality: str) -> FusionResult:
    """One modality alone on the aligned samples (the fair reference for a fusion gain)."""
    z = aligned.logp(modality)
    pred = z.argmax(axis=1) if len(aligned) else np.zeros(0, dtype=np.int64)
    return FusionResult(rule="single", modalities=(modality,), pred=pred, correct=pred == aligned.labels,
                        top5_correct=_topk_hit(z, aligned.labels, 5))


STAGE_ORDER = ("pretrain", "finetune")


def stage_rank(stage: str) -> tuple[int, str]:
    """Order of the sweep's stages (`bench.sweep.leaderboard.STAGE_ORDER`); unknown ones after, by name."""
    return (STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER), str(stage))


def fusion_sources(trials: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, int], dict[str, str]]:
    """``(dataset, cell, seed) -> {modality: stage}``: which stage's scores each modality brings to
    a fusion of that cell and seed.

    Fusion is grouped by (dataset, cell, seed) and joined on sample ids, *whichever stage trained
    each modality*: the default sweep (the paper's two-stage protocol) trains depth in
    ``pretrain`` and fine-tunes RGB from it in ``finetune``, so grouping by stage as well would
    find one modality per group and nothing to fuse. The networks of a cell and seed are scored
    on the same validation clips of the same dataset either way (`align` checks ids and labels).
    When both stages train the same modality on the same dataset, the later stage (``finetune``)
    is preferred: it is the network the protocol ends with, trained longer and from the other's
    weights, and it is what the sweep's own leaderboard ranks (the last stage per cell x
    modality). ``trials`` are rows with ``dataset``, ``stage``, ``cell``, ``modality``, ``seed``
    (the selected trials: one per configuration and seed)."""
    out: dict[tuple[str, str, int], dict[str, str]] = {}
    for t in trials:
        key = (t["dataset"], t["cell"], int(t["seed"]))
        by_mod = out.setdefault(key, {})
        m, st = t["modality"], t["stage"]
        if m not in by_mod or stage_rank(st) > stage_rank(by_mod[m]):
            by_mod[m] = st
    return out


def stages_label(sources: Mapping[str, str], modalities: Sequence[str]) -> str:
    """``"finetune"`` when every fused modality comes from one stage, else ``"rgb: finetune, depth: pretrain"``."""
    stages = {sources[m] for m in modalities}
    if len(stages) == 1:
        return stages.pop()
    return ", ".join(f"{m}: {sources[m]}" for m in modalities)


def combinations(modalities: Sequence[str], order: Sequence[str] = MODALITIES) -> list[tuple[str, ...]]:
    """Every combination of two or more of ``modalities``, in the canonical order."""
    rank = {m: i for i, m in enumerate(order)}
    mods = sorted(set(modalities), key=lambda m: (rank.get(m, len(rank)), m))
    return [c for r in range(2, len(mods) + 1) for c in itertools.combinations(mods, r)]
