"""Statistics for architectures (hierarchical bootstrap over seeds and clips, probability of
improvement, Holm) and late fusion across stages, on hand-made numbers with known answers."""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _helpers_report import TrialSpec, mask, write_tune_sweep  # noqa: E402

from bench.report.stats import bootstrap_p, compare_runs, hierarchical_ci, holm, mean_ci, prob_improvement  # noqa: E402

# ----------------------------------------------------------------------------- one architecture


def test_two_seeds_interval_stays_in_0_100_where_t_leaves_it() -> None:
    """The issue's case: 2 seeds at 75% and 96% of 96 clips. Student's t (12.7 x std / sqrt 2)
    gives an interval beyond both ends; the bootstrap's lies in [0, 100] around the mean."""
    t = mean_ci([75.0, 96.0])
    assert t.ci_low < 0 and t.ci_high > 100                      # [-47.9, 218.9]
    ci = hierarchical_ci([72, 92], [96, 96], n_boot=2000, seed=0)
    assert ci.seeds == 2 and ci.clips == 96 and ci.mean == pytest.approx((72 + 92) / 192)
    assert 0.0 <= ci.ci_low < ci.mean < ci.ci_high <= 1.0
    # resampling 2 seeds: the replicate means reach neither seed's extremes by much
    assert ci.ci_low > 0.65 and ci.ci_high < 1.0
    # all clips right on every seed: the interval is the point, and still within [0, 1]
    full = hierarchical_ci([40, 40], [40, 40])
    assert full.ci_low == full.ci_high == 1.0


def test_hierarchical_ci_is_the_index_resampling_bootstrap() -> None:
    """The binomial shortcut equals resampling seed indices, then clip indices within each."""
    rng = np.random.default_rng(0)
    correct = [rng.random(120) < p for p in (0.55, 0.7, 0.62)]
    ci = hierarchical_ci([int(c.sum()) for c in correct], [c.size for c in correct], n_boot=20000, seed=1)
    ref = np.empty(20000)
    r2 = np.random.default_rng(2)
    for b in range(20000):
        seeds = r2.integers(0, 3, 3)
        ref[b] = np.mean([correct[s][r2.integers(0, 120, 120)].mean() for s in seeds])
    lo, hi = np.quantile(ref, [0.025, 0.975])
    assert ci.ci_low == pytest.approx(lo, abs=0.006) and ci.ci_high == pytest.approx(hi, abs=0.006)


def test_one_seed_has_no_spread_and_prints_n_a() -> None:
    from bench.report.render import LEADERBOARD_COLS, _mean_std

    ci = hierarchical_ci([30], [40])
    assert ci.seeds == 1 and math.isnan(ci.std)
    assert 0 <= ci.ci_low < 0.75 < ci.ci_high <= 1                # clip sampling only
    assert _mean_std({"top1": 75.0, "top1_std": math.nan, "seeds": 1}) == "75.00 ± n/a"
    assert _mean_std({"top1": 55.98, "top1_std": math.nan, "seeds": None}) == "55.98"   # a published number
    assert "clips" in [h for h, _ in LEADERBOARD_COLS]
    with pytest.raises(ValueError):
        hierarchical_ci([41], [40])


# ----------------------------------------------------------------------------- two architectures

def test_probability_of_improvement_is_mann_whitney_u() -> None:
    from scipy.stats import mannwhitneyu

    a, b = np.array([0.71, 0.75, 0.75, 0.80]), np.array([0.70, 0.75, 0.79])
    u = mannwhitneyu(a, b).statistic                             # U of the first sample, ties 1/2
    assert float(prob_improvement(a, b)) == pytest.approx(u / (a.size * b.size))
    assert float(prob_improvement(b, a)) == pytest.approx(1 - u / (a.size * b.size))


def test_a_beats_b_on_every_seed() -> None:
    """A right on 30/32/31 of 40 clips, B on 20/22/21, B's clips a subset of A's in every seed:
    P(improvement) = 1, the difference's interval excludes 0, p is small."""
    n = 40
    a = np.stack([mask(n, range(r)) for r in (30, 32, 31)])
    b = np.stack([mask(n, range(r)) for r in (20, 22, 21)])
    c = compare_runs(a, b, n_boot=2000, seed=0)
    assert (c.seeds_a, c.seeds_b, c.clips) == (3, 3, 40)
    assert c.diff == pytest.approx(0.25) and c.prob_improvement == 1.0
    assert c.prob_ci_low == 1.0
    assert 0 < c.ci_low < 0.25 < c.ci_high <= 1
    assert c.p_value < 1e-3
    rev = compare_runs(b, a, n_boot=2000, seed=0)
    assert rev.prob_improvement == 0.0 and rev.diff == pytest.approx(-0.25) and rev.p_value < 1e-3
    # the same runs on both sides: seeds resampled independently still vary, around 0
    same = compare_runs(a, a, n_boot=500, seed=0)
    assert same.prob_improvement == 0.5 and same.ci_low < 0 < same.ci_high and same.p_value > 0.5
    # ... and paired by seed (a fusion against its own single modality) they are identical
    paired = compare_runs(a, a, paired_seeds=True, n_boot=500, seed=0)
    assert paired.p_value == 1.0 and paired.ci_low == paired.ci_high == 0.0 and paired.prob_improvement == 0.5


def test_paired_clip_resampling_matches_the_explicit_bootstrap() -> None:
    rng = np.random.default_rng(3)
    n = 150
    base = rng.random(n)
    a = np.stack([base + rng.normal(0, 0.1, n) < 0.65 for _ in range(3)])
    b = np.stack([base + rng.normal(0, 0.1, n) < 0.6 for _ in range(2)])
    c = compare_runs(a, b, n_boot=20000, seed=5)
    ref = np.empty(20000)
    r2 = np.random.default_rng(6)
    for i in range(20000):
        clips = r2.integers(0, n, n)                             # the same clips for both cells
        ref[i] = a[r2.integers(0, 3, 3)][:, clips].mean() - b[r2.integers(0, 2, 2)][:, clips].mean()
    lo, hi = np.quantile(ref, [0.025, 0.975])
    assert c.ci_low == pytest.approx(lo, abs=0.006) and c.ci_high == pytest.approx(hi, abs=0.006)


def test_compare_runs_is_fast_at_isogd_size() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 5784)) < 0.6, rng.random((2, 5784)) < 0.55
    t0 = time.perf_counter()
    c = compare_runs(a, b, n_boot=2000, seed=0)
    assert time.perf_counter() - t0 < 10.0                       # ~0.4 s unloaded
    assert c.clips == 5784 and c.ci_low < c.diff < c.ci_high


def test_bootstrap_p_is_the_standard_error_z_test() -> None:
    reps = np.random.default_rng(0).normal(0.02, 0.01, 4000)           # se 0.01
    assert bootstrap_p(reps, 0.02) == pytest.approx(0.0455, abs=0.003)  # z = 2: 2 x (1 - Phi(2))
    assert bootstrap_p(reps, -0.02) == bootstrap_p(reps, 0.02)          # two-sided
    assert bootstrap_p(np.zeros(100), 0.0) == 1.0
    # no floor at 2 / (n_boot + 1): a clear difference survives Holm over a large family
    assert bootstrap_p(reps, 0.06) * 90 < 0.05


# ----------------------------------------------------------------------------- Holm

def test_holm_textbook_values() -> None:
    # m = 4: sorted 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> max(0.04, 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = holm([0.2, math.nan, 0.01])                            # NaN is not a test of the family
    assert math.isnan(out[1]) and out[[0, 2]] == pytest.approx([0.2, 0.02])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])         # capped at 1
    assert holm([]).size == 0


def test_holm_family_counts_each_pair_once() -> None:
    from bench.report.build import SIGNIFICANCE_SCHEMA, holm_family

    rows = [{"dataset": "d", "stage": "pretrain", "modality": "rgb", "cell": c, "reference": r, "p_boot": p}
            for c, r, p in (("a", "convlstm", 0.01), ("b", "convlstm", 0.04), ("b", "a", 0.03))]
    sig = pl.DataFrame(rows).with_columns([pl.lit(None, dtype=t).alias(k) for k, t in SIGNIFICANCE_SCHEMA.items()
                                           if k not in rows[0]])
    fusion = pl.DataFrame({"p_boot": [0.005]})
    s, f, m = holm_family(sig, fusion)
    assert m == 4
    assert s["p_holm"].to_list() == pytest.approx([0.03, 0.06, 0.06])
    assert f["p_holm"].to_list() == pytest.approx([0.02])
    assert s["significant"].to_list() == [True, False, False] and f["significant"].to_list() == [True]


# ----------------------------------------------------------------------------- fusion across stages

N, C = 40, 4
LABELS = np.arange(N) % C


def _spec(cell: str, modality: str, seed: int, right: int, stage: str) -> TrialSpec:
    offset = {"rgb": 0, "depth": 10}[modality]            # disjoint error windows: fusion helps
    return TrialSpec(cell=cell, modality=modality, seed=seed, correct=mask(N, [(offset + i) % N for i in range(right)]),
                     labels=LABELS, num_classes=C, stage=stage)


def _two_stage_specs() -> list[TrialSpec]:
    """The default `bench run`: depth trained in pretrain, RGB in finetune; two cells, two seeds."""
    acc = {("convlstm", "depth"): (18, 20), ("convlstm", "rgb"): (22, 24),
           ("a", "depth"): (26, 24), ("a", "rgb"): (28, 30)}
    return [_spec(cell, mod, seed, r, "pretrain" if mod == "depth" else "finetune")
            for (cell, mod), rights in acc.items() for seed, r in enumerate(rights)]


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from bench.report.build import build_report
    from bench.report.render import write_report
    from bench.report.trials import load_trials_tune

    tmp = tmp_path_factory.mktemp("twostage")
    d = write_tune_sweep(tmp / "runs" / "two", tmp, _two_stage_specs(), sweep="two")
    trials, _ = load_trials_tune(d)
    rep = build_report(trials, sweep="two", source="tune", n_boot=500)
    paths = write_report(rep, tmp / "report")
    return {"dir": d, "report": rep, "md": paths["markdown"].read_text(), "html": paths["html"].read_text()}


def test_fusion_across_stages_produces_fused_rows(two_stage: dict) -> None:
    rep = two_stage["report"]
    fu = rep.fusion
    assert fu.height == 2 * 3                                    # 2 cells x 3 rules, one rgb+depth each
    assert set(fu["modalities"]) == {"rgb+depth"} and set(fu["stages"]) == {"rgb: finetune, depth: pretrain"}
    assert set(fu["stage"]) == {"finetune"}
    r = fu.filter((pl.col("cell") == "a") & (pl.col("rule") == "product")).row(0, named=True)
    # a: rgb right on clips 0..27 / 0..29 (70 / 75 %), depth on 10..35 / 10..33 (65 / 60 %): rgb is
    # the best single modality; the product is right at least on the union (90 % / 85 %)
    assert r["best_single"] == "rgb" and r["best_single_top1"] == pytest.approx(72.5)
    assert r["seeds"] == 2 and r["n"] == 40
    assert r["top1"] >= 87.5 and r["gain"] == pytest.approx(r["top1"] - 72.5)
    assert 0 < r["gain_ci_low"] <= r["gain"] <= r["gain_ci_high"] <= 100
    assert 0 <= r["top1_ci_low"] <= r["top1"] <= r["top1_ci_high"] <= 100
    assert r["prob_improvement"] == 1.0                          # each seed's fusion beats its own rgb
    assert r["p_boot"] < 1e-3 and r["p_boot"] <= r["p_holm"] < 0.05 and r["significant"]
    assert r["significant_seeds"] == "2/2"
    runs = rep.fusion_runs
    assert runs.height == 2 * 2 * 3 and set(runs["stages"]) == {"rgb: finetune, depth: pretrain"}
    assert any("whichever stage trained" in n for n in rep.notes)


def test_report_shows_fused_rows_with_their_backing(two_stage: dict) -> None:
    md = two_stage["md"]
    assert "nothing to fuse" not in md
    section = md.split("## Late fusion")[1].split("## Published results beside")[0]
    assert "_2 seeds x 40 clips per fused row_" in section
    assert "| rgb: finetune, depth: pretrain | a | rgb+depth | product | 2 | 40 |" in section
    lb = md.split("## Single modalities")[1].split("## Late fusion")[0]
    assert "_2 seeds x 40 clips per cell (cell x modality)_" in lb
    assert "Holm" in md and "P(cell > ref)" in md
    # the pairs table: one row per modality and stage (a vs convlstm), never mirrored
    sig = two_stage["report"].significance
    assert sorted(zip(sig["stage"], sig["modality"], sig["cell"], sig["reference"])) == [
        ("finetune", "rgb", "a", "convlstm"), ("pretrain", "depth", "a", "convlstm")]
    assert 'class="caption"' in two_stage["html"]


def test_a_modality_both_stages_train_is_fused_from_the_later_one() -> None:
    from bench.report.fusion import fusion_sources, stages_label

    trials = [{"dataset": "isogd", "cell": "a", "seed": 0, "modality": m, "stage": st}
              for m, st in (("rgb", "finetune"), ("depth", "pretrain"), ("rgb", "pretrain"), ("depth", "finetune"),
                            ("flow", "pretrain"))]
    src = fusion_sources(trials)
    assert src == {("isogd", "a", 0): {"rgb": "finetune", "depth": "finetune", "flow": "pretrain"}}
    assert stages_label(src[("isogd", "a", 0)], ("rgb", "depth")) == "finetune"
    assert stages_label(src[("isogd", "a", 0)], ("rgb", "flow")) == "rgb: finetune, flow: pretrain"
    other = fusion_sources([{"dataset": "jester", "cell": "a", "seed": 0, "modality": "rgb", "stage": "pretrain"},
                            {"dataset": "isogd", "cell": "a", "seed": 0, "modality": "depth", "stage": "finetune"}])
    assert len(other) == 2                                       # two datasets are never fused together


def test_cell_bars_axis_is_0_to_100(two_stage: dict) -> None:
    import matplotlib.pyplot as plt

    from bench.report import plots

    fig = plots.cell_bars(two_stage["report"].leaderboard)
    assert fig.axes[0].get_ylim() == (0.0, 100.0)
    plt.close(fig)


# ----------------------------------------------------------------------------- the printed leaderboard

def test_bench_run_leaderboard_prints_fused_rows_and_n_a(two_stage: dict) -> None:
    from bench.sweep.leaderboard import format_table, fused_rows, leaderboard
    from bench.sweep.results import read_sweep

    _, trials = read_sweep(two_stage["dir"])
    rows = leaderboard(trials)
    a_rgb = next(r for r in rows if (r.cell, r.modality) == ("a", "rgb"))
    assert a_rgb.stage == "finetune" and a_rgb.clips == 40 and 0 <= a_rgb.ci_low < a_rgb.mean < a_rgb.ci_high <= 1
    fused = fused_rows(rows, n_boot=500)
    assert {(f.cell, f.modalities, f.stages) for f in fused} == {
        (c, "rgb+depth", "rgb: finetune, depth: pretrain") for c in ("convlstm", "a")}
    f = next(f for f in fused if f.cell == "a" and f.rule == "product")
    ref = two_stage["report"].fusion.filter((pl.col("cell") == "a") & (pl.col("rule") == "product")).row(0, named=True)
    assert 100 * f.mean == pytest.approx(ref["top1"]) and 100 * f.gain == pytest.approx(ref["gain"])
    assert f.prob_improvement == 1.0 and f.seeds == 2
    text = format_table(rows, fused=fused)
    assert "late fusion" in text and "rgb: finetune, depth: pretrain" in text
    # one seed: the spread is "n/a", never a measured-looking 0.000
    one = leaderboard([t for t in trials if t.combo[2] == 0])
    text = format_table(one, fused=[])
    body = [line for line in text.splitlines() if line.startswith(("a ", "convlstm "))]
    assert body and all(line.split()[4] == "n/a" for line in body), body
    assert "0.000 " not in " ".join(body)


def test_fused_cost_of_a_fusion_across_stages_adds_each_modalitys_own_network():
    from bench.report.store import _fused_cost

    singles = {("syn", "finetune", "a", "rgb"): {"params": 100.0, "macs_per_clip": 10.0, "train_clips_per_s": 20.0},
               ("syn", "pretrain", "a", "depth"): {"params": 50.0, "macs_per_clip": 5.0, "train_clips_per_s": 20.0}}
    cost = _fused_cost(singles, ("syn", "finetune", "a"), ["rgb", "depth"], "rgb: finetune, depth: pretrain")
    assert cost == {"params": 150.0, "macs_per_clip": 15.0, "train_clips_per_s": 10.0}
    assert _fused_cost(singles, ("syn", "finetune", "a"), ["rgb", "depth"]) == {}   # depth not in finetune


def test_bench_run_leaderboard_compares_cells_and_states_the_smallest_detectable_difference(two_stage: dict) -> None:
    from bench.sweep.leaderboard import MDE_Z, cell_comparisons, format_table, leaderboard
    from bench.sweep.results import read_sweep

    _, trials = read_sweep(two_stage["dir"])
    rows = leaderboard(trials)
    pairs, mde = cell_comparisons(rows, n_boot=1000)
    assert {(c.modality, c.cell, c.ref) for c in pairs} == {("rgb", "convlstm", "a"), ("depth", "convlstm", "a")}
    rgb = next(c for c in pairs if c.modality == "rgb")
    assert rgb.diff == pytest.approx((22 + 24 - 28 - 30) / 2 / 40)       # seeds' means, on the same 40 clips
    assert rgb.low <= rgb.diff <= rgb.high and rgb.prob == 0.0 and rgb.seeds == 2 and rgb.clips == 40
    ps = sorted(c.p for c in pairs)                                        # Holm over the 2 pairs
    assert rgb.p_holm == pytest.approx(min(1.0, 2 * ps[0]) if rgb.p == ps[0] else max(min(1.0, 2 * ps[0]), ps[1]))
    se = (rgb.high - rgb.low) / (2 * 1.959964)
    assert mde["rgb"] == pytest.approx(MDE_Z * statistics.median(
        [(c.high - c.low) / (2 * 1.959964) for c in pairs if c.modality == "rgb"])) and 0 < se < mde["rgb"] < 0.5
    text = format_table(rows, fused=[])
    assert "each cell against the best of its modality" in text and "over all 2 pairs" in text
    assert f"rgb {100 * cell_comparisons(rows)[1]['rgb']:.1f} points" in text     # format_table's own bootstrap
