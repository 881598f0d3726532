"""The sweep's summary table: validation top-1 per cell x modality, mean and spread over seeds.

Why the final epoch and not the best one: picking the best epoch on the validation split is
selecting on the test data of this benchmark; the final epoch is what the protocol (fixed
epoch count, docs/SPEC.md) produces. The best epoch is shown beside it for reference.

With a search, each seed's study contributes the trial it selects: the best final val_top1
among the trials that ran every epoch (a trial ASHA stopped early was compared at a shorter
budget, so it is not eligible while a full-length trial exists). The rows then say which
configuration won -- every searched key's value, per seed -- and how many trials each
(cell, modality) ran and how many were stopped early.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from bench.sweep.results import TrialRecord


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
        bests = [t.best() for t in ts]
        selected = tuple(Selected(seed=t.combo[2], trial=t.name, val_top1=_num(t.final.get("val_top1")),
                                  values=tuple((k, t.config.get(k)) for k in searched)) for t in ts)
        rows.append(Row(cell=cell, modality=mod, stage=last_stage[(cell, mod)], mean=statistics.fmean(finals),
                        std=statistics.stdev(finals) if len(finals) > 1 else 0.0,
                        best_mean=statistics.fmean(bests), seeds=len(ts), trials=n_trials[(cell, mod)],
                        params=_num(ts[0].final.get("params")),
                        macs_per_clip=_num(ts[0].final.get("macs_per_clip")),
                        stopped=n_stopped[(cell, mod)], selected=selected if searched else ()))
    rows.sort(key=lambda r: (-r.mean if not math.isnan(r.mean) else math.inf, r.cell, r.modality))
    return rows


def _selection_key(t: TrialRecord) -> tuple[bool, float]:
    """Full-length trials first, then the final val_top1 (NaN last)."""
    score = _num(t.final.get("val_top1")) if t.final else math.nan
    return (not stopped_early(t), -math.inf if math.isnan(score) else score)


def format_table(rows: list[Row], *, num_classes: int | None = None, title: str = "") -> str:
    lines = []
    if title:
        lines.append(title)
    head = (f"{'cell':<9}{'modality':<9}{'stage':<9}{'val_top1':>9}{'± std':>8}{'(best)':>8}{'seeds':>6}"
            f"{'params':>10}{'MMAC/clip':>11}")
    lines += [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.cell:<9}{r.modality:<9}{r.stage:<9}{r.mean:>9.3f}{r.std:>8.3f}{r.best_mean:>8.3f}{r.seeds:>6}"
                     f"{_int(r.params):>10}{r.macs_per_clip / 1e6 if not math.isnan(r.macs_per_clip) else math.nan:>11.1f}")
    lines.append("val_top1: final epoch, mean ± std over seeds; (best): mean of each seed's best epoch, "
                 "for reference only (it selects on the validation split)")
    if num_classes:
        lines.append(f"chance level: {1 / num_classes:.3f} (1/{num_classes} classes)")
    searched = [r for r in rows if r.selected]
    if searched:
        lines.append("")
        lines.append("selected configurations (per seed: the best final val_top1 of the trials that ran every epoch):")
        for r in searched:
            lines.append(f"  {r.cell} {r.modality}: {r.trials} trials, {r.stopped} stopped early")
            for sel in r.selected:
                lines.append(f"    seed {sel.seed}: {sel.describe()}  (val_top1 {sel.val_top1:.3f}, {sel.trial})")
    return "\n".join(lines)


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
