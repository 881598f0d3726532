"""``bench graded FILE --axis AXIS --levels L0,L1,...``: the graded synthetic suite (docs/GRADED.md).

One command runs a sweep file at every level of one difficulty axis of the synthetic generator
and reads accuracy against difficulty per cell:

1. `level_specs`: one sweep per level, derived from FILE. Every dataset the stages train on must
   be synthetic; at level L its ``synthetic.<axis>`` is L and its root gets the suffix
   ``-<axis>-<LLL>`` (LLL = 100 L), so each level generates, and later reuses, a dataset of its
   own; the sweep is named ``<name>-<axis>-<LLL>``. The generator's other options, the seed
   included, are the file's, so every level holds the same clips (the same sample ids, drawn the
   same way) and only the axis differs.
2. Each level runs as a sweep of its own (`bench.sweep.run.run_sweep`, the same Ray, MLflow and
   storage as ``bench sweep``). ``--resume`` continues an interrupted level and skips finished
   ones, so a long suite can be stopped and picked up again.
3. `graded_curves`: for every (stage, modality, cell), the final-epoch validation top-1 at each
   level, mean over seeds with the hierarchical bootstrap's 95% interval (seeds, then clips:
   `bench.report.stats.architecture_ci`), and the *drop* from the lowest to the highest level
   with its interval and p (`compare_runs`, paired by clip: the clips are the same at every
   level), Holm-corrected over the drops of the table. ``curves.csv``, ``drops.csv``,
   ``curves.md`` and ``curves.png`` are written to ``--out``.

A cell is read at the last stage that trained its modality, as the leaderboard does.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.data.synth import DIFFICULTY_AXES, check_level
from bench.errors import CLIError, DataError
from bench.sweep.spec import ConfigError, SweepSpec

CONTROLS = ("mean",)      # order-blind controls (bench.models.controls): drawn dashed, listed last


def level_tag(axis: str, level: float) -> str:
    return f"{axis}-{round(level * 100):03d}"


def parse_levels(text: str) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0]: at least two distinct levels in 0..1, ascending."""
    try:
        levels = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CLIError(f"--levels: expected numbers in 0..1 separated by commas, got {text!r}") from None
    for v in levels:
        try:
            check_level("--levels", v)
        except ValueError as e:
            raise CLIError(str(e)) from None
    if len(set(levels)) < 2:
        raise CLIError(f"--levels: need at least two different levels, got {text!r}")
    tags = [round(v * 100) for v in levels]
    if len(set(tags)) != len(tags):
        raise CLIError(f"--levels: levels closer than 0.01 share a folder name, got {text!r}")
    return sorted(levels)


def level_specs(spec: SweepSpec, axis: str, levels: Sequence[float]) -> list[tuple[float, SweepSpec]]:
    """The sweep of each level (module docstring, step 1)."""
    if axis not in DIFFICULTY_AXES:
        raise CLIError(f"--axis: one of {', '.join(DIFFICULTY_AXES)} (composite is a dataset of its own, "
                       f"not a level: docs/GRADED.md), got {axis!r}")
    used = sorted({s.dataset for s in spec.stages})
    for name in used:
        if spec.datasets[name].synthetic is None:
            where = f"{spec.source}: " if spec.source else ""
            raise CLIError(f"{where}datasets.{name}: the graded suite varies the synthetic generator, but this "
                           f"dataset has no `synthetic:` block")
    out = []
    for level in levels:
        tag = level_tag(axis, level)
        datasets = dict(spec.datasets)
        for name in used:
            d = datasets[name]
            datasets[name] = dataclasses.replace(
                d, root=d.root.with_name(f"{d.root.name}-{tag}"),
                synthetic=dataclasses.replace(d.synthetic, **{axis: float(level)}))
        # each stage's run names its dataset's root too (`StageSpec.train`, set when the file is read)
        stages = tuple(dataclasses.replace(st, train=st.train.replace(root=str(datasets[st.dataset].root)))
                       for st in spec.stages)
        out.append((level, dataclasses.replace(spec, name=f"{spec.name}-{tag}", datasets=datasets, stages=stages)))
    return out


# ----------------------------------------------------------------------------- the curves

@dataclass
class Curves:
    axis: str
    levels: list[float]
    curves: Any           # polars DataFrame: one row per (stage, modality, cell, level)
    drops: Any            # polars DataFrame: one row per (stage, modality, cell)
    chance: dict[str, float]
    missing: list[str]


def _correct(trial: Any) -> tuple[list[str], np.ndarray, int] | None:
    """(sample ids, was-right vector, classes) of a finished trial's final checkpoint."""
    from bench.report.fusion import read_scores  # heavy: pyarrow

    ck = trial.checkpoint
    if ck is None or not (ck / "val_scores.parquet").is_file():
        return None
    ids, labels, probs = read_scores(ck / "val_scores.parquet")
    return ids, probs.argmax(axis=1) == labels, probs.shape[1]


def _stage_order(spec_stages: Sequence[str], stage: str) -> int:
    return spec_stages.index(stage) if stage in spec_stages else len(spec_stages)


def _runs_by_cell(trials: list[Any]) -> dict[tuple[str, str, str], dict[int, Any]]:
    """(stage, modality, cell) -> {seed: trial}, each modality at the last stage that trained it."""
    order = ["pretrain", "finetune"]
    last: dict[str, str] = {}
    for t in trials:
        m = t.combo[1]
        if m not in last or _stage_order(order, t.stage) > _stage_order(order, last[m]):
            last[m] = t.stage
    out: dict[tuple[str, str, str], dict[int, Any]] = {}
    for t in trials:
        cell, m, seed = t.combo
        if t.stage == last[m] and t.finished:
            out.setdefault((t.stage, m, cell), {})[seed] = t
    return out


def _matrix(runs: dict[int, tuple[list[str], np.ndarray]], ids: list[str]) -> np.ndarray:
    """(seeds, clips) correctness on ``ids``, in seed order."""
    rows = []
    for seed in sorted(runs):
        pos = {s: i for i, s in enumerate(runs[seed][0])}
        rows.append(runs[seed][1][[pos[s] for s in ids]])
    return np.vstack(rows)


def graded_curves(levels: Sequence[tuple[float, Any]], *, axis: str, n_boot: int = 2000, seed: int = 0) -> Curves:
    """Curves and drops (module docstring, step 3) from ``[(level, sweep folder), ...]``."""
    import polars as pl  # heavy

    from bench.report.stats import architecture_ci, compare_runs, holm
    from bench.sweep.results import read_sweep

    per_level: dict[float, dict[tuple[str, str, str], dict[int, tuple[list[str], np.ndarray]]]] = {}
    chance: dict[str, float] = {}
    missing: list[str] = []
    for level, sweep_dir in levels:
        _, trials = read_sweep(sweep_dir)
        got: dict[tuple[str, str, str], dict[int, tuple[list[str], np.ndarray]]] = {}
        for key, by_seed in _runs_by_cell(trials).items():
            for s, t in by_seed.items():
                c = _correct(t)
                if c is None:
                    missing.append(f"{t.name} ({sweep_dir})")
                    continue
                got.setdefault(key, {})[s] = (c[0], c[1])
                chance[key[1]] = 1.0 / c[2]
        per_level[level] = got

    rows = []
    keys = sorted({k for g in per_level.values() for k in g},
                  key=lambda k: (k[0], k[1], k[2] in CONTROLS, k[2]))
    for key in keys:
        for level, _ in levels:
            runs = per_level[level].get(key)
            if not runs:
                continue
            ci = architecture_ci([runs[s][1] for s in sorted(runs)], n_boot=n_boot, seed=seed)
            rows.append({"stage": key[0], "modality": key[1], "cell": key[2], "level": level,
                         "top1": 100 * ci.mean, "std": 100 * ci.std if ci.seeds > 1 else math.nan,
                         "top1_ci_low": 100 * ci.ci_low, "top1_ci_high": 100 * ci.ci_high,
                         "seeds": ci.seeds, "clips": ci.clips})
    curves = pl.DataFrame(rows, schema={"stage": pl.String, "modality": pl.String, "cell": pl.String,
                                        "level": pl.Float64, "top1": pl.Float64, "std": pl.Float64,
                                        "top1_ci_low": pl.Float64, "top1_ci_high": pl.Float64,
                                        "seeds": pl.Int64, "clips": pl.Int64})
    lo, hi = levels[0][0], levels[-1][0]
    drops = []
    for key in keys:
        a, b = per_level[lo].get(key), per_level[hi].get(key)
        if not a or not b:
            continue
        ids = sorted(set.intersection(*(set(r[0]) for r in (*a.values(), *b.values()))))
        if not ids:
            continue
        cmp = compare_runs(_matrix(a, ids), _matrix(b, ids), n_boot=n_boot, seed=seed)
        drops.append({"stage": key[0], "modality": key[1], "cell": key[2], "from_level": lo, "to_level": hi,
                      "top1_from": 100 * cmp.mean_a, "top1_to": 100 * cmp.mean_b, "drop": 100 * cmp.diff,
                      "drop_ci_low": 100 * cmp.ci_low, "drop_ci_high": 100 * cmp.ci_high,
                      "p_boot": cmp.p_value, "seeds": min(cmp.seeds_a, cmp.seeds_b), "clips": cmp.clips})
    drops_df = pl.DataFrame(drops, schema={"stage": pl.String, "modality": pl.String, "cell": pl.String,
                                           "from_level": pl.Float64, "to_level": pl.Float64,
                                           "top1_from": pl.Float64, "top1_to": pl.Float64, "drop": pl.Float64,
                                           "drop_ci_low": pl.Float64, "drop_ci_high": pl.Float64,
                                           "p_boot": pl.Float64, "seeds": pl.Int64, "clips": pl.Int64})
    drops_df = drops_df.with_columns(p_holm=pl.Series(holm(drops_df["p_boot"].to_numpy()), dtype=pl.Float64))
    return Curves(axis=axis, levels=[lv for lv, _ in levels], curves=curves, drops=drops_df,
                  chance=chance, missing=missing)


def _num(v: float, digits: int = 1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _p(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else (f"{v:.2g}" if v < 0.01 else f"{v:.3f}")


def format_curves(c: Curves) -> str:
    """Markdown: per (stage, modality) a table of cells x levels, then the drops."""
    lines = [f"# Graded suite: `{c.axis}` at levels {', '.join(f'{v:g}' for v in c.levels)}", ""]
    lines.append("Final-epoch validation top-1 (%), mean over seeds [95% interval: hierarchical bootstrap, "
                 "seeds then clips]; std over seeds in parentheses (n/a for one seed).")
    for (stage, modality), g in c.curves.group_by(["stage", "modality"], maintain_order=True):
        seeds, clips = int(g["seeds"].min()), int(g["clips"].min())
        lines += ["", f"## {modality} ({stage}): {seeds} seed(s), {clips} validation clips a seed; chance "
                      f"{100 * c.chance.get(modality, math.nan):.1f}%", ""]
        lines.append("| cell | " + " | ".join(f"{c.axis} {v:g}" for v in c.levels) + " |")
        lines.append("|---|" + "---:|" * len(c.levels))
        for (cell,), h in g.group_by(["cell"], maintain_order=True):
            by = {r["level"]: r for r in h.iter_rows(named=True)}
            cells = []
            for v in c.levels:
                r = by.get(v)
                cells.append("-" if r is None else f"{_num(r['top1'])} [{_num(r['top1_ci_low'])}, "
                                                   f"{_num(r['top1_ci_high'])}] ({_num(r['std'])})")
            name = f"{cell} (control)" if cell in CONTROLS else cell
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if c.drops.height:
        lines += ["", f"## Drop from {c.axis} {c.levels[0]:g} to {c.levels[-1]:g}", "",
                  "Points of top-1 lost (positive: worse at the higher level), paired by clip (the same clips at "
                  f"every level), seeds resampled; p: two-sided bootstrap, Holm over the {c.drops.height} drops "
                  "of this table.", "",
                  "| modality | cell | top-1 at low | at high | drop | 95% CI | p | p (Holm) | seeds | clips |",
                  "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
        for r in c.drops.iter_rows(named=True):
            name = f"{r['cell']} (control)" if r["cell"] in CONTROLS else r["cell"]
            lines.append(f"| {r['modality']} | {name} | {_num(r['top1_from'])} | {_num(r['top1_to'])} | "
                         f"{r['drop']:+.1f} | [{r['drop_ci_low']:+.1f}, {r['drop_ci_high']:+.1f}] | "
                         f"{_p(r['p_boot'])} | {_p(r['p_holm'])} | {r['seeds']} | {r['clips']} |")
    if c.missing:
        lines += ["", "Trials without a score table (left out): " + ", ".join(c.missing)]
    return "\n".join(lines) + "\n"


def curve_plot(c: Curves) -> Any:
    """Accuracy against level, one line per cell with its interval, one panel per modality."""
    from bench.report.plots import _plt

    plt = _plt()
    groups = list(c.curves.group_by(["stage", "modality"], maintain_order=True))
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.0), squeeze=False)
    for ax, ((stage, modality), g) in zip(axes[0], groups):
        for (cell,), h in g.group_by(["cell"], maintain_order=True):
            h = h.sort("level")
            x, y = h["level"].to_numpy(), h["top1"].to_numpy()
            err = np.vstack([np.clip(y - h["top1_ci_low"].to_numpy(), 0, None),
                             np.clip(h["top1_ci_high"].to_numpy() - y, 0, None)])
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=cell + (" (control)" if cell in CONTROLS else ""),
                        linestyle="--" if cell in CONTROLS else "-")
        if modality in c.chance:
            ax.axhline(100 * c.chance[modality], color="grey", linewidth=0.8, linestyle=":", label="chance")
        ax.set_xlabel(f"{c.axis} level")
        ax.set_ylabel("validation top-1 (%)")
        ax.set_ylim(0, 100)
        ax.set_xticks(c.levels)
        ax.set_title(f"{modality} ({stage})")
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def write_curves(c: Curves, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "curves.csv", out / "drops.csv", out / "curves.md"]
    c.curves.write_csv(files[0])
    c.drops.write_csv(files[1])
    files[2].write_text(format_curves(c))
    fig = curve_plot(c)
    if fig is not None:
        fig.savefig(out / "curves.png", dpi=110)
        files.append(out / "curves.png")
    return files


# ----------------------------------------------------------------------------- the command

def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("graded", help="the graded synthetic suite: a sweep at every level of a difficulty axis, "
                                      "accuracy curves per cell",
                       description=__doc__.splitlines()[0], epilog=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="the sweep file (bench/configs/graded.yaml)")
    p.add_argument("--axis", required=True, help=f"the difficulty axis: {', '.join(DIFFICULTY_AXES)}")
    p.add_argument("--levels", default="0,0.5,1", help="levels in 0..1, comma-separated (default: 0,0.5,1)")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                          "sqlite:///<cwd>/mlflow.db)")
    p.add_argument("--storage", help="override the file's `storage:` (a folder or a URI)")
    p.add_argument("--resume", action="store_true", help="continue: finished levels are skipped, an interrupted "
                                                         "one resumes")
    p.add_argument("--curves-only", action="store_true", help="run nothing: the curves of levels already run")
    p.add_argument("--out", type=Path, help="where the curves go (default: reports/<name>-<axis>)")
    p.set_defaults(func=_graded_cmd)


def _graded_cmd(args: argparse.Namespace) -> int:
    from bench.sweep.cli import _execute, _load

    spec = _load(args.file, args.storage)
    levels = level_specs(spec, args.axis, parse_levels(args.levels))
    done = []
    for level, s in levels:
        exists = (s.sweep_dir / "sweep.json").is_file()
        if args.curves_only:
            if not exists:
                raise CLIError(f"{s.sweep_dir}: level {level:g} has not run (drop --curves-only to run it)")
        else:
            print(f"== {args.axis} {level:g}: sweep {s.name}", flush=True)
            rc = _execute(s, argparse.Namespace(address=args.address, resume=args.resume and exists,
                                                tracking_uri=args.tracking_uri))
            if rc != 0:
                print(f"bench: level {level:g} did not finish (exit {rc}); the curves wait for it "
                      f"(rerun with --resume)", file=sys.stderr)
                return rc
        done.append((level, s.sweep_dir))
    try:
        curves = graded_curves(done, axis=args.axis)
    except (DataError, ConfigError) as e:
        raise CLIError(str(e)) from None
    out = args.out or Path("reports") / f"{spec.name}-{args.axis}"
    files = write_curves(curves, out)
    print(format_curves(curves))
    print("written: " + ", ".join(str(f) for f in files))
    return 0
