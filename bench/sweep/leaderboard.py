"""The sweep's summary table: validation top-1 per cell x modality, mean and spread over seeds.

Why the final epoch and not the best one: picking the best epoch on the validation split is
selecting on the test data of this benchmark; the final epoch is what the protocol (fixed
epoch count, docs/SPEC.md) produces. The best epoch is shown beside it for reference.

With a search, each seed's study contributes the trial it selects: the best final val_top1
among the trials that ran every epoch (a trial ASHA stopped early was compared at a shorter
budget, so it is not eligible while a full-length trial exists). The rows then say which
configuration won -- every searched key's value, per seed -- and how many trials each
(cell, modality) ran and how many were stopped early.

Spread and interval: the std over seeds is printed "n/a" for one seed (one seed says nothing
about the spread; ``Row.std`` stays 0 for callers that read it), and the 95% interval is the
report's hierarchical bootstrap (`bench.report.stats.hierarchical_ci`: seeds, then clips, from
each seed's val_top1 x num_val_samples), which stays within [0, 1] however few the seeds.

Late fusion (`fused_rows`): the networks of one cell and seed, one per modality, each from the
last stage that trained that modality (depth pre-trained, RGB fine-tuned from it: the default
sweep), fused from their ``val_scores.parquet`` with the report's rules (`bench.report.fusion`)
-- the same rows `bench report` computes, printed here so the end of `bench run` shows them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from bench.storage import RemotePath
from bench.sweep.results import TrialRecord
from bench.train.layout import VAL_SCORES_FILE


@dataclass(frozen=True)
class Row:
    cell: str
    modality: str
    stage: str             # the last stage that trained this (cell, modality)
    mean: float            # final-epoch val_top1, mean over seeds
    std: float             # sample std over seeds (0 with one seed)
    best_mean: float       # best-epoch val_top1, mean over seeds
    seeds: int
    trials: int
    params: float
    macs_per_clip: float
    stopped: int = 0                                 # trials stopped before their last epoch
    selected: tuple["Selected", ...] = ()           # per seed, in seed order
    ci_low: float = math.nan                         # 95% hierarchical bootstrap interval of ``mean``
    ci_high: float = math.nan
    clips: int = 0                                   # validation clips per seed (the fewest)
    dataset: str = ""                                # the sweep's dataset name
    scores: tuple[tuple[int, str], ...] = ()         # (seed, val_scores.parquet) of the seeds that have one


@dataclass(frozen=True)
class FusedRow:
    """A late fusion of one cell's modalities over the seeds they share (fractions, like `Row`)."""
    cell: str
    modalities: str          # "rgb+depth"
    rule: str                # bench.report.fusion.RULES
    stages: str              # "rgb: finetune, depth: pretrain"
    mean: float              # fused top-1, mean over seeds
    std: float               # over seeds; NaN for one seed
    seeds: int
    clips: int
    best_single: str         # the modality with the best mean top-1 on the fused clips
    best_single_mean: float
    gain: float              # mean - best_single_mean
    gain_low: float          # 95% bootstrap interval of the gain (paired by seed and clip)
    gain_high: float
    prob_improvement: float  # P(a seed's fused network beats its best single one), ties 1/2
    p_value: float           # two-sided bootstrap p of "no gain"


@dataclass(frozen=True)
class Selected:
    """The trial a seed's study selected and the searched values it ran with."""
    seed: int
    trial: str
    val_top1: float
    values: tuple[tuple[str, Any], ...]             # (searched key, value), in the search's order

    def describe(self) -> str:
        return ", ".join(f"{k}={_fmt(v)}" for k, v in self.values)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def stopped_early(t: TrialRecord) -> bool:
    """A finished trial that did not reach its planned epochs: ASHA stopped it."""
    planned = t.config.get("epochs")
    return isinstance(planned, int) and t.last_epoch < planned


def _num(v: object) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


STAGE_ORDER = ("pretrain", "finetune")


def leaderboard(trials: Iterable[TrialRecord], *, stage: str | None = None, searched: Sequence[str] = ()
                ) -> list[Row]:
    """Rows per (cell, modality), best first, from the ``stage`` trials -- by default from the
    last stage that trained each (cell, modality): a sweep may pre-train one modality and
    fine-tune another from it.

    With a search (several trials per seed) each seed contributes its best trial by final
    val_top1 among those that ran every epoch (early-stopped ones only when no trial of that
    seed did); ``searched`` names the keys whose selected values the rows carry."""
    trials = [t for t in trials if t.final is not None and (stage is None or t.stage == stage)]
    rank = {s: i for i, s in enumerate(STAGE_ORDER)}
    last_stage: dict[tuple[str, str], str] = {}
    for t in trials:
        key = (t.combo[0], t.combo[1])
        if key not in last_stage or rank.get(t.stage, -1) > rank.get(last_stage[key], -1):
            last_stage[key] = t.stage
    trials = [t for t in trials if last_stage[(t.combo[0], t.combo[1])] == t.stage]
    per_seed: dict[tuple[str, str, int], TrialRecord] = {}
    n_trials: dict[tuple[str, str], int] = {}
    n_stopped: dict[tuple[str, str], int] = {}
    for t in trials:
        n_trials[t.combo[:2]] = n_trials.get(t.combo[:2], 0) + 1
        n_stopped[t.combo[:2]] = n_stopped.get(t.combo[:2], 0) + stopped_early(t)
        prev = per_seed.get(t.combo)
        if prev is None or _selection_key(t) > _selection_key(prev):
            per_seed[t.combo] = t
    groups: dict[tuple[str, str], list[TrialRecord]] = {}
    for (cell, mod, _seed), t in sorted(per_seed.items()):
        groups.setdefault((cell, mod), []).append(t)
    rows = []
    for (cell, mod), ts in groups.items():
        finals = [_num(t.final.get("val_top1")) for t in ts]
        ci = _interval(ts)
        bests = [t.best() for t in ts]
        selected = tuple(Selected(seed=t.combo[2], trial=t.name, val_top1=_num(t.final.get("val_top1")),
                                  values=tuple((k, t.config.get(k)) for k in searched)) for t in ts)
        rows.append(Row(cell=cell, modality=mod, stage=last_stage[(cell, mod)], mean=statistics.fmean(finals),
                        std=statistics.stdev(finals) if len(finals) > 1 else 0.0,
                        best_mean=statistics.fmean(bests), seeds=len(ts), trials=n_trials[(cell, mod)],
                        params=_num(ts[0].final.get("params")),
                        macs_per_clip=_num(ts[0].final.get("macs_per_clip")),
                        stopped=n_stopped[(cell, mod)], selected=selected if searched else (),
                        ci_low=ci[0], ci_high=ci[1], clips=ci[2], dataset=_dataset(ts[0]),
                        scores=tuple((t.combo[2], str(p)) for t in ts if (p := _scores_path(t)) is not None)))
    rows.sort(key=lambda r: (-r.mean if not math.isnan(r.mean) else math.inf, r.cell, r.modality))
    return rows


def _dataset(t: TrialRecord) -> str:
    sweep = t.config.get("sweep")
    return str((sweep.get("dataset") if isinstance(sweep, dict) else None) or t.config.get("dataset") or "")


def _scores_path(t: TrialRecord) -> Path | RemotePath | None:
    ck = t.checkpoint
    return ck / VAL_SCORES_FILE if ck is not None and (ck / VAL_SCORES_FILE).is_file() else None


def _interval(ts: Sequence[TrialRecord]) -> tuple[float, float, int]:
    """``(low, high, clips)``: the hierarchical 95% interval of the mean final val_top1, from each
    seed's val_top1 x num_val_samples; NaN when a seed lacks either."""
    from bench.report.stats import hierarchical_ci

    right, clips = [], []
    for t in ts:
        v, n = _num(t.final.get("val_top1")), _num(t.final.get("num_val_samples"))
        if math.isnan(v) or math.isnan(n) or n <= 0:
            return math.nan, math.nan, 0
        right.append(round(v * n))
        clips.append(int(n))
    ci = hierarchical_ci(right, clips)
    return ci.ci_low, ci.ci_high, ci.clips


class ScoreTables(dict):
    """``val_scores.parquet`` path -> `bench.report.fusion.read_scores`, each file read once:
    the cell comparisons and the fusion of one printed leaderboard read the same files."""

    def __missing__(self, path: str) -> tuple[list[str], Any, Any]:
        from bench.report import fusion as fz

        self[path] = fz.read_scores(path)
        return self[path]


def fused_rows(rows: Sequence[Row], *, n_boot: int | None = None, seed: int = 0,
               tables: ScoreTables | None = None) -> list[FusedRow]:
    """Every rule on every combination of two or more modalities of each cell (same dataset),
    over the seeds every fused modality has scores for; best fused first per cell. Each
    modality's scores come from its row, i.e. from the last stage that trained it."""
    import numpy as np  # heavy

    from bench.report import fusion as fz
    from bench.report.stats import N_BOOT, architecture_ci, compare_runs

    n_boot = N_BOOT if n_boot is None else n_boot
    by_cell: dict[tuple[str, str], dict[str, Row]] = {}
    for r in rows:
        if r.scores:
            by_cell.setdefault((r.dataset, r.cell), {})[r.modality] = r
    read = (tables if tables is not None else ScoreTables()).__getitem__

    out: list[FusedRow] = []
    for (_dataset, cell), mods in by_cell.items():
        for combo in fz.combinations(list(mods)):
            paths = [dict(mods[m].scores) for m in combo]
            seeds = sorted(set.intersection(*(set(p) for p in paths)))
            if not seeds:
                continue
            aligned = [fz.align({m: read(p[s]) for m, p in zip(combo, paths)}) for s in seeds]
            singles = [{m: fz.single(al, m) for m in combo} for al in aligned]
            best = max(combo, key=lambda m: sum(sg[m].accuracy for sg in singles))
            common = set.intersection(*(set(al.sample_ids) for al in aligned))
            order = [sid for sid in aligned[0].sample_ids if sid in common]
            idx = [[{sid: i for i, sid in enumerate(al.sample_ids)}[sid] for sid in order] for al in aligned]
            stage_of = {m: mods[m].stage for m in combo}
            stages = fz.stages_label(stage_of, combo)
            for rule in fz.RULES:
                res = [fz.fuse(al, rule=rule, seed=s) for al, s in zip(aligned, seeds)]
                ci = architecture_ci([r.correct for r in res], n_boot=n_boot, seed=seed)
                g = compare_runs(np.stack([r.correct[i] for r, i in zip(res, idx)]),
                                 np.stack([sg[best].correct[i] for sg, i in zip(singles, idx)]),
                                 paired_seeds=True, n_boot=n_boot, seed=seed)
                out.append(FusedRow(cell=cell, modalities="+".join(combo), rule=rule, stages=stages, mean=ci.mean,
                                    std=ci.std, seeds=len(seeds), clips=g.clips, best_single=best,
                                    best_single_mean=statistics.fmean(sg[best].accuracy for sg in singles),
                                    gain=g.diff, gain_low=g.ci_low, gain_high=g.ci_high,
                                    prob_improvement=g.prob_improvement, p_value=g.p_value))
    out.sort(key=lambda f: (-f.mean if not math.isnan(f.mean) else math.inf, f.cell, f.modalities, f.rule))
    return out


@dataclass(frozen=True)
class CellComparison:
    """One cell against another of the same modality on the same clips (fractions)."""
    modality: str
    cell: str
    ref: str
    diff: float
    low: float
    high: float
    prob: float            # P(a seed of ``cell`` beats a seed of ``ref``), ties 1/2
    p: float
    p_holm: float          # Holm over every pair of the table (each unordered pair once)
    seeds: int
    clips: int


# z_{0.975} + z_{0.80}: a difference of 2.8 standard errors is found 80% of the time at 5% two-sided
MDE_Z = 1.959964 + 0.841621


def cell_comparisons(rows: Sequence[Row], *, n_boot: int | None = None, seed: int = 0,
                     tables: ScoreTables | None = None
                     ) -> tuple[list[CellComparison], dict[str, float]]:
    """Every pair of cells per (dataset, modality), from the seeds' per-clip correctness (the
    rows' score files; the clips every seed of every cell has): `bench.report.stats.compare_runs`
    (seeds resampled per cell, clips shared), Holm over all pairs of the table. Returns the
    comparisons (``ref`` the better cell of the pair) and, per modality, the smallest difference
    this run detects with 80% power at 5% two-sided: ``MDE_Z`` x the median bootstrap standard
    error of a difference."""
    import numpy as np  # heavy

    from bench.report.stats import N_BOOT, compare_runs, holm

    n_boot = N_BOOT if n_boot is None else n_boot
    scores = tables if tables is not None else ScoreTables()
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        if r.scores:
            groups.setdefault((r.dataset, r.modality), []).append(r)
    out: list[CellComparison] = []
    mde: dict[str, float] = {}
    for (_dataset, modality), rs in groups.items():
        if len(rs) < 2:
            continue
        per_cell = {r.cell: [scores[path] for _s, path in r.scores] for r in rs}
        common = set.intersection(*(set(ids) for ts in per_cell.values() for ids, _l, _p in ts))
        order = sorted(common)
        correct: dict[str, Any] = {}
        for cell, ts in per_cell.items():
            mats = []
            for ids, labels, probs in ts:
                pos = {sid: i for i, sid in enumerate(ids)}
                idx = np.array([pos[sid] for sid in order], dtype=np.int64)
                mats.append(np.asarray(probs)[idx].argmax(axis=1) == np.asarray(labels)[idx])
            correct[cell] = np.stack(mats) if mats else np.zeros((0, len(order)), dtype=bool)
        ranked = sorted(rs, key=lambda r: -r.mean)
        pairs, ses = [], []
        for i, better in enumerate(ranked):
            for worse in ranked[i + 1:]:
                c = compare_runs(correct[worse.cell], correct[better.cell], n_boot=n_boot, seed=seed)
                pairs.append(CellComparison(modality=modality, cell=worse.cell, ref=better.cell, diff=c.diff,
                                            low=c.ci_low, high=c.ci_high, prob=c.prob_improvement, p=c.p_value,
                                            p_holm=math.nan, seeds=min(c.seeds_a, c.seeds_b), clips=c.clips))
                if not math.isnan(c.ci_low):
                    ses.append((c.ci_high - c.ci_low) / (2 * 1.959964))
        out += pairs
        if ses:
            mde[modality] = MDE_Z * statistics.median(ses)
    if out:
        adjusted = holm([c.p for c in out])
        out = [CellComparison(**{**c.__dict__, "p_holm": float(a)}) for c, a in zip(out, adjusted)]
    return out, mde


def _selection_key(t: TrialRecord) -> tuple[bool, float]:
    """Full-length trials first, then the final val_top1 (NaN last)."""
    score = _num(t.final.get("val_top1")) if t.final else math.nan
    return (not stopped_early(t), -math.inf if math.isnan(score) else score)


def _spread(std: float, seeds: int) -> str:
    """The std over seeds, "n/a" with one seed (never a spread of 0.000 measured on nothing)."""
    return "n/a" if seeds < 2 or math.isnan(std) else f"{std:.3f}"


def _ci_text(lo: float, hi: float, signed: bool = False) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return "-"
    return f"[{lo:+.3f}, {hi:+.3f}]" if signed else f"[{lo:.3f}, {hi:.3f}]"


def format_table(rows: list[Row], *, num_classes: int | None = None, title: str = "",
                 fused: Sequence[FusedRow] | None = None) -> str:
    """The printed leaderboard; ``fused`` rows below it (None: fused here from the rows'
    scores, `fused_rows`; a score table that cannot be fused is said, not raised: the sweep
    has finished by the time this prints)."""
    lines = []
    if title:
        lines.append(title)
    head = (f"{'cell':<9}{'modality':<9}{'stage':<9}{'val_top1':>9}{'± std':>8}{'95% CI':>17}{'(best)':>8}"
            f"{'seeds':>6}{'clips':>7}{'params':>10}{'MMAC/clip':>11}")
    lines += [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.cell:<9}{r.modality:<9}{r.stage:<9}{r.mean:>9.3f}{_spread(r.std, r.seeds):>8}"
                     f"{_ci_text(r.ci_low, r.ci_high):>17}{r.best_mean:>8.3f}{r.seeds:>6}"
                     f"{(str(r.clips) if r.clips else '-'):>7}{_int(r.params):>10}"
                     f"{r.macs_per_clip / 1e6 if not math.isnan(r.macs_per_clip) else math.nan:>11.1f}")
    lines.append("val_top1: final epoch, mean ± std over seeds; 95% CI: bootstrap over seeds, then clips; "
                 "(best): mean of each seed's best epoch, for reference only (it selects on the validation split)")
    if num_classes:
        lines.append(f"chance level: {1 / num_classes:.3f} (1/{num_classes} classes)")
    tables = ScoreTables()
    pairs, mde = _or_said(lambda: cell_comparisons(rows, tables=tables), ([], {}), "cell comparisons", lines)
    best: dict[str, str] = {}
    for c in pairs:                 # a modality's first pair has its best cell as ``ref``
        best.setdefault(c.modality, c.ref)
    against_best = [c for c in pairs if c.ref == best[c.modality]]
    if pairs:
        lines += ["", (f"each cell against the best of its modality (difference in val_top1, 95% CI over seeds then "
                       f"clips; P: a seed of the cell beats a seed of the best; p Holm-adjusted over all "
                       f"{len(pairs)} pairs of cells):")]
        chead = f"{'modality':<9}{'cell':<9}{'vs':<9}{'diff':>8}{'95% CI':>19}{'P':>6}{'p (Holm)':>10}{'seeds':>6}{'clips':>7}"
        lines += [chead, "-" * len(chead)]
        for c in against_best:
            lines.append(f"{c.modality:<9}{c.cell:<9}{c.ref:<9}{c.diff:>+8.3f}{_ci_text(c.low, c.high, signed=True):>19}"
                         f"{c.prob:>6.2f}{c.p_holm:>10.3g}{c.seeds:>6}{c.clips:>7}")
        lines.append("smallest difference this run detects (80% power, 5% two-sided, from the bootstrap's standard "
                     "error): " + ", ".join(f"{m} {100 * v:.1f} points" for m, v in mde.items()))
    if fused is None:
        fused = _or_said(lambda: fused_rows(rows, tables=tables), [], "late fusion", lines)
    if fused:
        lines += ["", ("late fusion (each modality from the last stage that trained it; gain over the best single "
                       "modality on the same clips, 95% CI paired by seed and clip; P: a seed's fused network beats "
                       "its single one):")]
        fhead = (f"{'cell':<9}{'modalities':<17}{'rule':<9}{'val_top1':>9}{'± std':>8}{'gain':>8}{'gain 95% CI':>19}"
                 f"{'P':>6}{'p':>8}{'seeds':>6}{'clips':>7}  stages")
        lines += [fhead, "-" * len(fhead)]
        for f in fused:
            lines.append(f"{f.cell:<9}{f.modalities:<17}{f.rule:<9}{f.mean:>9.3f}{_spread(f.std, f.seeds):>8}"
                         f"{f.gain:>+8.3f}{_ci_text(f.gain_low, f.gain_high, signed=True):>19}"
                         f"{f.prob_improvement:>6.2f}{f.p_value:>8.3g}{f.seeds:>6}{f.clips:>7}  {f.stages}")
    searched = [r for r in rows if r.selected]
    if searched:
        lines.append("")
        lines.append("selected configurations (per seed: the best final val_top1 of the trials that ran every epoch):")
        for r in searched:
            lines.append(f"  {r.cell} {r.modality}: {r.trials} trials, {r.stopped} stopped early")
            for sel in r.selected:
                lines.append(f"    seed {sel.seed}: {sel.describe()}  (val_top1 {sel.val_top1:.3f}, {sel.trial})")
    return "\n".join(lines)


def _or_said(compute: Any, empty: Any, what: str, lines: list[str]) -> Any:
    """``compute()``, or ``empty`` with a line saying why: a score table that cannot be read
    (DataError is a ValueError: it names the file) is said, not raised -- the sweep has finished
    by the time the leaderboard prints."""
    try:
        return compute()
    except (ValueError, OSError) as e:
        lines.append(f"{what}: not computed ({e})")
        return empty


def _int(v: float) -> str:
    return "-" if math.isnan(v) else f"{int(v):,}"


def to_csv(rows: list[Row], *, num_classes: int | None = None) -> str:
    """One line per row; with a search, ``stopped_early``, ``selected_trials`` and one
    ``selected_<key>`` column per searched key (per-seed values in seed order, ``;``-joined)."""
    keys = [k for k, _ in rows[0].selected[0].values] if rows and rows[0].selected else []
    head = "cell,modality,stage,val_top1_mean,val_top1_std,best_val_top1_mean,seeds,trials,params,macs_per_clip,chance"
    if keys:
        head += ",stopped_early,selected_trials," + ",".join(f"selected_{k}" for k in keys)
    out = [head]
    chance = f"{1 / num_classes:.6f}" if num_classes else ""
    for r in rows:
        line = (f"{r.cell},{r.modality},{r.stage},{r.mean:.6f},{r.std:.6f},{r.best_mean:.6f},{r.seeds},{r.trials},"
                f"{'' if math.isnan(r.params) else int(r.params)},"
                f"{'' if math.isnan(r.macs_per_clip) else int(r.macs_per_clip)},{chance}")
        if keys:
            per_key = [";".join(str(dict(s.values).get(k)) for s in r.selected) for k in keys]
            line += f",{r.stopped},{';'.join(s.trial for s in r.selected)}," + ",".join(per_key)
        out.append(line)
    return "\n".join(out) + "\n"
