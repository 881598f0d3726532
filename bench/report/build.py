"""The report's tables, computed from a sweep's trials (`bench.report.trials`).

- ``leaderboard``: per dataset x stage x cell x modality, the final-epoch top-1 / top-5 over
  seeds (mean, sample std, n seeds, clips per seed) with a 95% interval from a hierarchical
  bootstrap (seeds, then clips: `bench.report.stats`; inside [0, 100] however few the seeds),
  parameters, measured multiply-adds per clip, training throughput, the comparison with ConvLSTM
  and with cell (a), and the published number for the same cell and modality beside it.
- ``significance``: every unordered pair of cells per dataset/stage/modality, once, over all
  their seeds on the clips both scored: the mean difference and its bootstrap interval (seeds of
  each cell resampled, the same clips for both), the probability of improvement P(a run of the
  cell beats a run of the reference) and the bootstrap p, Holm-adjusted over the whole report.
- ``fusion_runs`` / ``fusion``: late fusion of every modality combination present, per
  (dataset, cell, seed) across stages (`bench.report.fusion.fusion_sources`) and then over
  seeds, with the gain over the best single modality on the same clips: its interval, P(fused
  beats single), its Holm-adjusted p; McNemar's exact test per seed in ``fusion_runs``.
- ``comparison``: the published results (`bench.report.baselines`) and this sweep's numbers in
  one table, each row saying which data it comes from -- synthetic data is never passed off
  as IsoGD or Jester.
- ``confusions``: confusion matrices (sklearn) of the best cell per dataset/stage/modality and
  of its best fusion, summed over seeds, with the dataset's class names when its root is
  readable here (``classes.txt``, or Jester's labels file).
- ``published``: the published results, one row per result (`bench.report.baselines.distinct_results`).

Accuracies in every table are percentages; differences are in percentage points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.data.formats import CLASSES_FILE, JESTER_LABELS, read_class_names
from bench.data.index import MODALITIES
from bench.report import fusion as fz
from bench.report.baselines import distinct_results, load_baselines, split_text
from bench.report.search import importance, searched_keys
from bench.report.stats import (
    ALPHA,
    N_BOOT,
    architecture_ci,
    compare_runs,
    hierarchical_ci,
    holm,
    mcnemar_exact,
    mean_ci,
)
from bench.report.trials import KEY, select_trials

REFERENCES = ("convlstm", "a")
MODALITY_ORDER = MODALITIES


@dataclass
class Confusion:
    title: str
    matrix: np.ndarray          # (C, C) counts, rows = true class, columns = predicted
    accuracy: float             # percent
    classes: list[str] | None = None    # names in label order; None when the dataset's are not at hand


@dataclass
class Report:
    sweep: str
    source: str
    trials: pl.DataFrame
    selected: pl.DataFrame
    excluded: pl.DataFrame
    leaderboard: pl.DataFrame
    significance: pl.DataFrame
    fusion_runs: pl.DataFrame
    fusion: pl.DataFrame
    comparison: pl.DataFrame
    baselines: pl.DataFrame
    confusions: list[Confusion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    search: pl.DataFrame = field(default_factory=pl.DataFrame)       # what a search selected, per cell
    importance: pl.DataFrame = field(default_factory=pl.DataFrame)   # each searched key's importance

    @property
    def published(self) -> pl.DataFrame:
        """The published results as a reader gets them: one row per result, the split said."""
        return distinct_results(self.baselines)

    def tables(self) -> dict[str, pl.DataFrame]:
        """The tables logged to MLflow and written as CSV, by file stem."""
        trials = self.trials
        if "scores_path" in trials.columns:   # local (often temporary) paths mean nothing elsewhere
            trials = trials.with_columns((pl.col("scores_path") != "").alias("has_scores")).drop("scores_path")
        out = {"leaderboard": self.leaderboard, "fusion": self.fusion, "significance": self.significance,
               "fusion_per_seed": self.fusion_runs, "comparison": self.comparison, "trials": trials}
        if self.search.height:
            out |= {"search": self.search, "importance": self.importance}
        return out


def data_label(dataset: str | None, synthetic: bool | None, split: str | None = None) -> str:
    """What a number was measured on, said plainly: "SYNTHETIC isogd (valid)" / "real isogd (valid)"."""
    kind = "SYNTHETIC" if synthetic else ("real" if synthetic is not None else "unknown (no SYNTHETIC.json check)")
    return f"{kind} {dataset}" + (f" ({split})" if split else "")


def _pct(x: float) -> float:
    return x * 100.0 if x is not None and not math.isnan(x) else math.nan


def _top5(values: list[float]) -> dict[str, float]:
    """top-5 mean and std over seeds; NaN when a trial did not report it (not an error: top-1 is
    what the leaderboard ranks on)."""
    if not values or any(math.isnan(v) for v in values):
        return {"top5": math.nan, "top5_std": math.nan}
    m = mean_ci([_pct(v) for v in values])
    return {"top5": m.mean, "top5_std": m.std}


def _modality_rank(m: str) -> tuple[int, str]:
    return (MODALITY_ORDER.index(m) if m in MODALITY_ORDER else len(MODALITY_ORDER), m)


# ----------------------------------------------------------------------------- scores

class _Scores:
    """Per-trial score tables, read once: key (dataset, stage, cell, modality, seed) -> arrays."""

    def __init__(self, selected: pl.DataFrame) -> None:
        self.tables: dict[tuple, tuple[list[str], np.ndarray, np.ndarray]] = {}
        self.missing: list[str] = []
        self._right: dict[tuple, tuple[int, int]] = {}
        for r in selected.iter_rows(named=True):
            key = tuple(r[k] for k in KEY)
            if r["scores_path"]:
                self.tables[key] = fz.read_scores(r["scores_path"])
            else:
                self.missing.append(r["trial_name"] or r["run_id"])

    def get(self, key: tuple) -> tuple[list[str], np.ndarray, np.ndarray] | None:
        return self.tables.get(key)

    def right(self, key: tuple) -> tuple[int, int] | None:
        """``(clips right, clips scored)`` of one trial from its scores (argmax = label)."""
        if key not in self._right:
            t = self.get(key)
            if t is None:
                return None
            c = fz.single(fz.align({"m": t}), "m").correct
            self._right[key] = (int(c.sum()), int(c.size))
        return self._right[key]


def _seed_counts(g: pl.DataFrame, scores: _Scores | None) -> tuple[list[int], list[int]] | None:
    """Each seed's (right, clips) for the hierarchical interval: from its scores, else from its
    final ``val_top1`` x ``num_val_samples`` (the binomial shortcut needs only the counts); None
    when a seed has neither."""
    rights, clips = [], []
    for r in g.iter_rows(named=True):
        rc = scores.right(tuple(r[k] for k in KEY)) if scores is not None else None
        if rc is None:
            n, v = r.get("num_val_samples"), r.get("val_top1")
            if n is None or v is None or math.isnan(n) or math.isnan(v) or n <= 0:
                return None
            rc = (round(v * n), int(n))
        rights.append(rc[0])
        clips.append(rc[1])
    return rights, clips


def _interval_cols(prefix: str, counts: tuple[list[int], list[int]] | None, *, n_boot: int, seed: int
                   ) -> dict[str, Any]:
    if counts is None or not counts[0]:
        return {f"{prefix}_ci_low": math.nan, f"{prefix}_ci_high": math.nan, "clips": None}
    ci = hierarchical_ci(*counts, n_boot=n_boot, seed=seed)
    return {f"{prefix}_ci_low": _pct(ci.ci_low), f"{prefix}_ci_high": _pct(ci.ci_high), "clips": ci.clips}


def _cell_rank(c: str) -> tuple[bool, str]:
    """ConvLSTM first, then the variants by name: the registry's order, and the reference side
    of a pair is always the earlier cell (so each unordered pair is compared once)."""
    return (c != "convlstm", c)


# ----------------------------------------------------------------------------- architecture comparisons

SIGNIFICANCE_SCHEMA = {
    "dataset": pl.String, "stage": pl.String, "modality": pl.String, "cell": pl.String, "reference": pl.String,
    "seeds": pl.Int64, "seeds_ref": pl.Int64, "n": pl.Int64, "top1": pl.Float64, "top1_ref": pl.Float64,
    "diff": pl.Float64, "diff_ci_low": pl.Float64, "diff_ci_high": pl.Float64, "prob_improvement": pl.Float64,
    "prob_ci_low": pl.Float64, "prob_ci_high": pl.Float64, "p_boot": pl.Float64, "p_holm": pl.Float64,
    "significant": pl.Boolean, "dropped": pl.Int64}


def significance_table(selected: pl.DataFrame, scores: _Scores, *, n_boot: int = N_BOOT, seed: int = 0
                       ) -> pl.DataFrame:
    """Every unordered pair of cells per dataset/stage/modality, all seeds of each, on the clips
    both scored: the hierarchical bootstrap of the difference (`bench.report.stats.compare_runs`),
    P(a run of ``cell`` beats a run of ``reference``) and the bootstrap p. ``p_holm`` and
    ``significant`` are filled by `holm_family` once the report's whole family is known."""
    rows = []
    for (dataset, stage, modality), g in selected.group_by(["dataset", "stage", "modality"], maintain_order=True):
        runs: dict[str, dict[str, Any]] = {}
        for r in g.sort("seed").iter_rows(named=True):
            t = scores.get(tuple(r[k] for k in KEY))
            if t is not None:
                runs.setdefault(r["cell"], {})[f"{r['cell']}/seed {r['seed']}"] = t
        cells = sorted(runs, key=_cell_rank)
        for i, ref in enumerate(cells):
            for cell in cells[i + 1:]:
                al = fz.align({**runs[cell], **runs[ref]})
                if not len(al):
                    continue
                a = np.stack([fz.single(al, k).correct for k in runs[cell]])
                b = np.stack([fz.single(al, k).correct for k in runs[ref]])
                c = compare_runs(a, b, n_boot=n_boot, seed=seed)
                rows.append({"dataset": dataset, "stage": stage, "modality": modality, "cell": cell,
                             "reference": ref, "seeds": c.seeds_a, "seeds_ref": c.seeds_b, "n": c.clips,
                             "top1": _pct(c.mean_a), "top1_ref": _pct(c.mean_b), "diff": _pct(c.diff),
                             "diff_ci_low": _pct(c.ci_low), "diff_ci_high": _pct(c.ci_high),
                             "prob_improvement": c.prob_improvement, "prob_ci_low": c.prob_ci_low,
                             "prob_ci_high": c.prob_ci_high, "p_boot": c.p_value, "p_holm": math.nan,
                             "significant": False, "dropped": sum(al.dropped.values())})
    return pl.DataFrame(rows, schema=SIGNIFICANCE_SCHEMA)


def holm_family(significance: pl.DataFrame, fusion: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Holm over every test the report makes -- each unordered pair of cells per modality once
    (`significance_table` never holds A-vs-B and B-vs-A) and each fused row against its best
    single modality -- so "significant" holds for the family at ``ALPHA``. Returns both tables
    with ``p_holm`` and ``significant`` set, and the family's size."""
    p = np.concatenate([significance["p_boot"].to_numpy(), fusion["p_boot"].to_numpy()]) \
        if fusion.height else significance["p_boot"].to_numpy()
    adj = holm(p) if p.size else np.zeros(0)
    k = significance.height

    def put(df: pl.DataFrame, a: np.ndarray) -> pl.DataFrame:
        return df.with_columns(pl.Series("p_holm", a, dtype=pl.Float64),
                               pl.Series("significant", np.nan_to_num(a, nan=1.0) < ALPHA, dtype=pl.Boolean))

    sig = put(significance, adj[:k]) if k else significance
    fus = put(fusion, adj[k:]) if fusion.height else fusion
    return sig, fus, int((~np.isnan(p)).sum())


# ----------------------------------------------------------------------------- fusion

def fusion_tables(selected: pl.DataFrame, scores: _Scores, *, n_boot: int = N_BOOT, seed: int = 0
                  ) -> tuple[pl.DataFrame, pl.DataFrame, dict[tuple, dict[str, Any]]]:
    """``(per seed, aggregated, predictions)`` of every rule on every modality combination.

    Grouped by (dataset, cell, seed) across stages (`bench.report.fusion.fusion_sources`: depth
    from ``pretrain`` and RGB from ``finetune`` fuse; the later stage wins a modality both
    trained). ``stage`` of a fused row is the latest stage it draws on, ``stages`` says which
    stage each modality came from. The reference of a gain is the single modality with the best
    mean top-1 over seeds on the fused clips, one choice for every seed (a per-seed best would
    pick the luckier modality each time). Over seeds: the fused top-1's hierarchical interval,
    and the gain's (paired by seed -- fused and single come from the same networks -- and by
    clip), P(fused run beats its single run) and the bootstrap p; McNemar per seed stays in the
    per-seed table."""
    groups: dict[tuple, list[tuple[int, fz.Aligned]]] = {}
    for (dataset, cell, s), by_mod in fz.fusion_sources(selected.iter_rows(named=True)).items():
        present = {m: scores.get((dataset, st, cell, m, s)) for m, st in by_mod.items()}
        present = {m: v for m, v in present.items() if v is not None}
        for combo in fz.combinations(list(present)):
            stage = max((by_mod[m] for m in combo), key=fz.stage_rank)
            key = (dataset, stage, fz.stages_label(by_mod, combo), cell, combo)
            groups.setdefault(key, []).append((int(s), fz.align({m: present[m] for m in combo})))
    rows, agg_rows = [], []
    preds: dict[tuple, dict[str, Any]] = {}
    for (dataset, stage, stages, cell, combo), runs in groups.items():
        runs.sort(key=lambda x: x[0])
        singles = [{m: fz.single(al, m) for m in combo} for _, al in runs]
        best_m = max(combo, key=lambda m: (float(np.mean([sg[m].accuracy for sg in singles])), -_modality_rank(m)[0]))
        name = "+".join(combo)
        common = set.intersection(*(set(al.sample_ids) for _, al in runs))
        order = [sid for sid in runs[0][1].sample_ids if sid in common]
        idx = [np.asarray([{sid: i for i, sid in enumerate(al.sample_ids)}[sid] for sid in order], dtype=np.int64)
               for _, al in runs]
        for rule in fz.RULES:
            results = []
            for (s, al), sg in zip(runs, singles):
                res = fz.fuse(al, rule=rule, seed=s)
                results.append(res)
                best = sg[best_m]
                p_best = mcnemar_exact(int((res.correct & ~best.correct).sum()), int((~res.correct & best.correct).sum()))
                weights = ("" if res.weights is None else " ".join(f"{m}={w:.2f}" for m, w in zip(combo, res.weights)))
                rows.append({"dataset": dataset, "stage": stage, "stages": stages, "cell": cell, "seed": s,
                             "modalities": name, "rule": rule, "n": len(al), "top1": _pct(res.accuracy),
                             "top5": _pct(res.top5), "best_single": best_m, "best_single_top1": _pct(best.accuracy),
                             "gain": _pct(res.accuracy - best.accuracy), "p_vs_best_single": p_best,
                             "significant": p_best < ALPHA, "weights": weights, "dropped": sum(al.dropped.values()),
                             "softmaxed": ",".join(m for m in combo if al.softmaxed.get(m))})
                preds[(dataset, stage, cell, s, name, rule)] = {
                    "labels": al.labels, "pred": res.pred, "num_classes": al.probs[combo[0]].shape[1]}
            fused_ci = architecture_ci([r.correct for r in results], n_boot=n_boot, seed=seed)
            gain = compare_runs(np.stack([r.correct[i] for r, i in zip(results, idx)]),
                                np.stack([sg[best_m].correct[i] for sg, i in zip(singles, idx)]),
                                paired_seeds=True, n_boot=n_boot, seed=seed)
            per_gain = [r.accuracy - sg[best_m].accuracy for r, sg in zip(results, singles)]
            w = ""
            if rule == "fitted":
                w = " ".join(f"{m}={v:.2f}" for m, v in zip(combo, np.mean([r.weights for r in results], axis=0)))
            agg_rows.append({
                "dataset": dataset, "stage": stage, "stages": stages, "cell": cell, "modalities": name, "rule": rule,
                "seeds": len(runs), "top1": _pct(fused_ci.mean), "top1_std": _pct(fused_ci.std),
                "top1_ci_low": _pct(fused_ci.ci_low), "top1_ci_high": _pct(fused_ci.ci_high),
                "top5": _pct(float(np.mean([r.top5 for r in results]))), "best_single": best_m,
                "best_single_top1": _pct(float(np.mean([sg[best_m].accuracy for sg in singles]))),
                "gain": _pct(gain.diff), "gain_std": _pct(float(np.std(per_gain, ddof=1))) if len(runs) > 1 else math.nan,
                "gain_ci_low": _pct(gain.ci_low), "gain_ci_high": _pct(gain.ci_high),
                "prob_improvement": gain.prob_improvement, "p_boot": gain.p_value, "p_holm": math.nan,
                "significant": False,
                "significant_seeds": f"{sum(int(r['significant']) for r in rows[-len(runs):])}/{len(runs)}",
                "weights": w, "n": gain.clips})
    schema = {"dataset": pl.String, "stage": pl.String, "stages": pl.String, "cell": pl.String, "seed": pl.Int64,
              "modalities": pl.String, "rule": pl.String, "n": pl.Int64, "top1": pl.Float64,
              "top5": pl.Float64, "best_single": pl.String, "best_single_top1": pl.Float64,
              "gain": pl.Float64, "p_vs_best_single": pl.Float64, "significant": pl.Boolean,
              "weights": pl.String, "dropped": pl.Int64, "softmaxed": pl.String}
    agg_schema = {"dataset": pl.String, "stage": pl.String, "stages": pl.String, "cell": pl.String,
                  "modalities": pl.String, "rule": pl.String, "seeds": pl.Int64, "top1": pl.Float64,
                  "top1_std": pl.Float64, "top1_ci_low": pl.Float64, "top1_ci_high": pl.Float64, "top5": pl.Float64,
                  "best_single": pl.String, "best_single_top1": pl.Float64, "gain": pl.Float64,
                  "gain_std": pl.Float64, "gain_ci_low": pl.Float64, "gain_ci_high": pl.Float64,
                  "prob_improvement": pl.Float64, "p_boot": pl.Float64, "p_holm": pl.Float64,
                  "significant": pl.Boolean, "significant_seeds": pl.String, "weights": pl.String, "n": pl.Int64}
    return pl.DataFrame(rows, schema=schema), pl.DataFrame(agg_rows, schema=agg_schema), preds


# ----------------------------------------------------------------------------- leaderboard

def _published(baselines: pl.DataFrame, fmt: str | None, cell: str, modality: str) -> float:
    if baselines.is_empty() or not fmt:
        return math.nan
    hit = baselines.filter((pl.col("dataset") == fmt) & (pl.col("cell") == cell)
                           & (pl.col("modality") == modality) & (pl.col("split") == "valid"))
    return float(hit["value"][0]) if hit.height else math.nan


def _vs_cols(significance: pl.DataFrame, dataset: str, stage: str, modality: str, cell: str, ref: str
             ) -> dict[str, Any]:
    """``cell`` against ``ref`` from the pair's row, whichever side the pair table holds it on."""
    out: dict[str, Any] = {f"vs_{ref}": math.nan, f"vs_{ref}_ci_low": math.nan, f"vs_{ref}_ci_high": math.nan,
                           f"vs_{ref}_prob": math.nan, f"vs_{ref}_p_holm": math.nan}
    if cell == ref:
        return out | {f"vs_{ref}_significant": "-"}
    base = significance.filter((pl.col("dataset") == dataset) & (pl.col("stage") == stage)
                               & (pl.col("modality") == modality))
    for a, b, sign in ((cell, ref, 1.0), (ref, cell, -1.0)):
        hit = base.filter((pl.col("cell") == a) & (pl.col("reference") == b))
        if hit.height:
            r = hit.row(0, named=True)
            lo, hi = sign * r["diff_ci_low"], sign * r["diff_ci_high"]
            return out | {f"vs_{ref}": sign * r["diff"], f"vs_{ref}_ci_low": min(lo, hi),
                          f"vs_{ref}_ci_high": max(lo, hi),
                          f"vs_{ref}_prob": r["prob_improvement"] if sign > 0 else 1.0 - r["prob_improvement"],
                          f"vs_{ref}_p_holm": r["p_holm"],
                          f"vs_{ref}_significant": "yes" if r["significant"] else "no"}
    return out | {f"vs_{ref}_significant": "n/a"}


def leaderboard_table(selected: pl.DataFrame, significance: pl.DataFrame, baselines: pl.DataFrame,
                      scores: _Scores | None = None, *, n_boot: int = N_BOOT, seed: int = 0) -> pl.DataFrame:
    """Per dataset x stage x cell x modality: top-1 mean and std over seeds and the hierarchical
    95% interval (seeds, then clips; `bench.report.stats.hierarchical_ci`), ``clips`` per seed,
    and the comparison with each reference cell (difference, its interval, P(better), Holm p)."""
    rows = []
    for (dataset, stage, cell, modality), g in selected.group_by(
            ["dataset", "stage", "cell", "modality"], maintain_order=True):
        first = g.row(0, named=True)
        vals = [_pct(v) for v in g["val_top1"].to_list()]
        if any(v is None or math.isnan(v) for v in vals):
            raise ValueError(f"leaderboard: a selected trial of {cell}/{modality} has no final val_top1")
        row: dict[str, Any] = {
            "dataset": dataset, "data": data_label(first["dataset_format"] or dataset, first["synthetic"],
                                                   first["split"]),
            "stage": stage, "cell": cell, "modality": modality, "seeds": g.height,
            "top1": float(np.mean(vals)), "top1_std": float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
            **_interval_cols("top1", _seed_counts(g, scores), n_boot=n_boot, seed=seed),
            **_top5(g["val_top5"].fill_null(math.nan).to_list()),
            "params": float(g["params"].mean()), "macs_per_clip": float(g["macs_per_clip"].mean()),
            "train_clips_per_s": float(g["train_clips_per_s"].mean()),
            "chance": 100.0 / first["num_classes"] if first["num_classes"] else math.nan,
            "trials": int(g["n_candidates"].sum()),
        }
        for ref in REFERENCES:
            row.update(_vs_cols(significance, dataset, stage, modality, cell, ref))
        row["paper"] = _published(baselines, first["dataset_format"], cell, modality)
        rows.append(row)
    if not rows:
        return pl.DataFrame()
    lb = pl.DataFrame(rows, strict=False)
    # Column order: what the MLflow table view shows without scrolling comes first.
    first = ["cell", "modality", "top1", "top1_std", "top1_ci_low", "top1_ci_high", "seeds", "clips", "data", "stage"]
    lb = lb.select(first + [c for c in lb.columns if c not in first])
    return (lb.with_columns(pl.col("modality").map_elements(lambda m: _modality_rank(m)[0], return_dtype=pl.Int64)
                            .alias("_m"))
            .sort(["dataset", "stage", "_m", "top1"], descending=[False, False, False, True]).drop("_m"))


# ----------------------------------------------------------------------------- published beside ours

def comparison_table(leaderboard: pl.DataFrame, fusion: pl.DataFrame, baselines: pl.DataFrame,
                     selected: pl.DataFrame, *, sweep: str) -> pl.DataFrame:
    """Published numbers and ours, per dataset and modality; every row names its data."""
    rows = []
    seen = set()
    for b in baselines.iter_rows(named=True):
        key = (b["source"], b["dataset"], b["split"], b["modality"], b["architecture"], b["value"])
        if key in seen:            # the paper's Table 1 and Table 2 print the same IsoGD RGB numbers
            continue
        seen.add(key)
        rows.append({"dataset": b["dataset"], "modality": b["modality"], "method": b["architecture"],
                     "cell": b["cell"] or "", "source": b["source"],
                     "data": f"real {b['dataset']} ({split_text(b['split'])})",
                     "split": b["split"], "top1": float(b["value"]), "top1_std": math.nan, "seeds": None,
                     "citation": b["citation"], "provenance": b.get("provenance") or ""})
    fmt_of = {r["dataset"]: (r["dataset_format"] or r["dataset"], r["synthetic"], r["split"])
              for r in selected.iter_rows(named=True)}
    if not leaderboard.is_empty():
        for r in leaderboard.iter_rows(named=True):
            fmt, syn, split = fmt_of.get(r["dataset"], (r["dataset"], None, None))
            rows.append({"dataset": fmt, "modality": r["modality"], "method": f"cell {r['cell']} ({r['stage']})",
                         "cell": r["cell"], "source": f"this suite: sweep {sweep}", "data": r["data"],
                         "split": split, "top1": r["top1"], "top1_std": r["top1_std"], "seeds": r["seeds"],
                         "citation": "", "provenance": "measured"})
    if not fusion.is_empty():
        for r in fusion.filter(pl.col("rule") == "fitted").iter_rows(named=True):
            fmt, syn, split = fmt_of.get(r["dataset"], (r["dataset"], None, None))
            rows.append({"dataset": fmt, "modality": r["modalities"],
                         "method": f"cell {r['cell']} ({r.get('stages') or r['stage']}), late fusion (fitted weights)",
                         "cell": r["cell"], "source": f"this suite: sweep {sweep}",
                         "data": data_label(fmt, syn, split), "split": split, "top1": r["top1"],
                         "top1_std": r["top1_std"], "seeds": r["seeds"], "citation": "", "provenance": "measured"})
    schema = {"dataset": pl.String, "modality": pl.String, "method": pl.String, "cell": pl.String,
              "source": pl.String, "data": pl.String, "split": pl.String, "top1": pl.Float64,
              "top1_std": pl.Float64, "seeds": pl.Int64, "citation": pl.String, "provenance": pl.String}
    df = pl.DataFrame(rows, schema=schema)
    order = {m: i for i, m in enumerate((*MODALITIES, "rgb+depth", "rgb+flow", "depth+flow",
                                         "rgb+depth+flow"))}
    return (df.with_columns(pl.col("modality").replace_strict(order, default=len(order)).alias("_m"),
                            pl.col("source").str.starts_with("this suite").alias("_ours"))
            .sort(["dataset", "_m", "_ours", "top1"], descending=[False, False, False, True])
            .drop("_m", "_ours"))


# ----------------------------------------------------------------------------- confusion matrices

def class_names(fmt: str | None, root: str | None, num_classes: int) -> list[str] | None:
    """The dataset's class names in label order, from its root: ``classes.txt`` (IsoGD layout,
    frame lists, the suite's generated data) or Jester's labels file. None when the root is not
    readable here or the file's count is not ``num_classes`` (then the labels are indices)."""
    if not root:
        return None
    base = Path(root)
    for name in ((JESTER_LABELS, CLASSES_FILE) if fmt == "jester" else (CLASSES_FILE,)):
        f = base / name
        try:
            if f.is_file():
                names = read_class_names(f)
                return names if len(names) == num_classes else None
        except (OSError, ValueError):        # DataError is a ValueError
            return None
    return None


def confusion_matrices(selected: pl.DataFrame, leaderboard: pl.DataFrame, fusion: pl.DataFrame,
                       scores: _Scores, fused_preds: dict[tuple, dict[str, Any]]) -> list[Confusion]:
    """Best cell per dataset/stage/modality (and its best fitted fusion), summed over seeds."""
    from sklearn.metrics import confusion_matrix  # heavy

    out: list[Confusion] = []
    if leaderboard.is_empty():
        return out
    names_cache: dict[tuple, list[str] | None] = {}

    def names_of(dataset: str, n: int) -> list[str] | None:
        rows = selected.filter(pl.col("dataset") == dataset)
        if rows.is_empty():
            return None
        r = rows.row(0, named=True)
        key = (r["dataset_format"], r["root"], n)
        if key not in names_cache:
            names_cache[key] = class_names(r["dataset_format"] or dataset, r["root"], n)
        return names_cache[key]

    for (dataset, stage, modality), g in leaderboard.group_by(["dataset", "stage", "modality"], maintain_order=True):
        best = g.sort("top1", descending=True).row(0, named=True)
        trials = selected.filter((pl.col("dataset") == dataset) & (pl.col("stage") == stage)
                                 & (pl.col("cell") == best["cell"]) & (pl.col("modality") == modality))
        mats = []
        for t in trials.iter_rows(named=True):
            s = scores.get(tuple(t[k] for k in KEY))
            if s is None:
                continue
            _, labels, sc = s
            c = sc.shape[1]
            mats.append(confusion_matrix(labels, sc.argmax(axis=1), labels=list(range(c))))
        if mats:
            m = np.sum(mats, axis=0)
            out.append(Confusion(f"{dataset} / {stage} / {modality}: cell {best['cell']} "
                                 f"({len(mats)} seed{'s' * (len(mats) > 1)} summed)", m,
                                 100.0 * np.trace(m) / max(m.sum(), 1), names_of(dataset, m.shape[0])))
    if not fusion.is_empty():
        fitted = fusion.filter(pl.col("rule") == "fitted")
        for (dataset, stage), g in fitted.group_by(["dataset", "stage"], maintain_order=True):
            best = g.sort("top1", descending=True).row(0, named=True)
            mats = []
            for key, p in fused_preds.items():
                if key[:3] == (dataset, stage, best["cell"]) and key[4] == best["modalities"] and key[5] == "fitted":
                    mats.append(confusion_matrix(p["labels"], p["pred"], labels=list(range(p["num_classes"]))))
            if mats:
                m = np.sum(mats, axis=0)
                out.append(Confusion(f"{dataset} / {best['stages']} / {best['modalities']} fused (fitted): cell "
                                     f"{best['cell']} ({len(mats)} seed{'s' * (len(mats) > 1)} summed)", m,
                                     100.0 * np.trace(m) / max(m.sum(), 1), names_of(dataset, m.shape[0])))
    return out


# ----------------------------------------------------------------------------- all of it

def search_table(annotated: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Per (dataset, stage, cell, modality) of a search: its trials, how many the scheduler
    stopped early, and each seed's selected trial with every searched key's value."""
    if not keys or annotated.is_empty():
        return pl.DataFrame()
    rows = []
    for group, g in annotated.group_by(["dataset", "stage", "cell", "modality"], maintain_order=True):
        chosen = g.filter(pl.col("selected")).sort("seed")
        config = "; ".join(
            f"s{r['seed']}: " + ", ".join(f"{k}={_value(r[k])}" for k in keys) for r in chosen.iter_rows(named=True))
        rows.append({"dataset": group[0], "stage": group[1], "cell": group[2], "modality": group[3],
                     "trials": g.height, "stopped_early": int(g["stopped_early"].fill_null(False).sum()),
                     "selected": config, "selected_trials": "; ".join(chosen["trial_name"].to_list()),
                     "selected_top1": _pct(float(chosen["val_top1"].mean())) if chosen.height else math.nan})
    return pl.DataFrame(rows)


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def build_report(trials: pl.DataFrame, *, sweep: str, source: str, baselines: pl.DataFrame | None = None,
                 n_boot: int = 2000, seed: int = 0) -> Report:
    """Every table of the report from the trials table (`bench.report.trials.TRIAL_COLUMNS`)."""
    if baselines is None:
        baselines = load_baselines()
    annotated = select_trials(trials)
    selected = annotated.filter(pl.col("selected"))
    excluded = annotated.filter(~pl.col("selected"))
    scores = _Scores(selected)
    significance = significance_table(selected, scores, n_boot=n_boot, seed=seed)
    fusion_runs, fusion, fused_preds = fusion_tables(selected, scores, n_boot=n_boot, seed=seed)
    significance, fusion, family = holm_family(significance, fusion)
    leaderboard = leaderboard_table(selected, significance, baselines, scores, n_boot=n_boot, seed=seed)
    comparison = comparison_table(leaderboard, fusion, baselines, selected, sweep=sweep)
    notes = []
    if scores.missing:
        notes.append(f"{len(scores.missing)} selected trial(s) have no per-sample scores, so they are left out "
                     f"of fusion and significance: {', '.join(map(str, scores.missing))}")
    if excluded.height:
        notes.append(f"{excluded.height} trial(s) not in the leaderboard (see the trials table, column 'reason').")
    if family:
        notes.append(f"Significance is corrected for multiple comparisons: Holm over the report's {family} tests "
                     f"(each pair of cells per modality once, each fused row against its best single modality); "
                     f"'significant' means Holm-adjusted p < {ALPHA}.")
    if fusion.height and fusion["stages"].str.contains(":").any():
        notes.append("Late fusion pairs each modality's networks of one cell and seed from whichever stage trained "
                     "it (column 'stages', e.g. depth from pretrain and RGB fine-tuned from it); a modality both "
                     "stages trained comes from the later stage.")
    if fusion_runs.height and fusion_runs["dropped"].sum():
        notes.append("Some samples were scored by only some modalities (skipped by a loader); fusion uses the "
                     "samples every fused modality scored (column 'dropped').")
    if fusion_runs.height and (fusion_runs["softmaxed"] != "").any():
        notes.append("Some score tables held logits, not probabilities; they were softmaxed before fusion.")
    synth = selected["synthetic"].to_list()
    if any(s is True for s in synth):
        notes.append("Numbers marked SYNTHETIC come from the suite's generated gesture data, not from IsoGD or "
                     "Jester: they test the machinery and are NOT comparable with the published results.")
    confusions = confusion_matrices(selected, leaderboard, fusion, scores, fused_preds)
    keys = searched_keys(annotated)
    search = search_table(annotated, keys)
    imp = importance(annotated, keys) if keys else pl.DataFrame()
    if keys:
        notes.append(f"A search varied {', '.join(keys)}: each seed's study selected its best full-length trial by "
                     "final validation top-1 (see 'Hyperparameter search'); the scores above are on the split that "
                     "selected them -- re-run the winners on a held-out split with `bench winners`.")
    return Report(sweep=sweep, source=source, trials=annotated, selected=selected, excluded=excluded,
                  leaderboard=leaderboard, significance=significance, fusion_runs=fusion_runs, fusion=fusion,
                  comparison=comparison, baselines=baselines, confusions=confusions, notes=notes,
                  search=search, importance=imp)
