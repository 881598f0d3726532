"""`bench report`: trials from MLflow and from Ray Tune storage, aggregation, tables, files,
the leaderboard run in MLflow, and the errors a user meets."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _helpers_report import TrialSpec, mask, write_mlflow_sweep, write_tune_sweep  # noqa: E402

from bench.errors import CLIError

N, C = 40, 4
LABELS = np.arange(N) % C


def spec(cell: str, modality: str, seed: int, right: int, **kw) -> TrialSpec:
    """A trial right on the first ``right`` clips (disjoint windows per modality so fusion helps)."""
    offset = {"rgb": 0, "depth": 10, "flow": 20}[modality]
    idx = [(offset + i) % N for i in range(right)]
    return TrialSpec(cell=cell, modality=modality, seed=seed, correct=mask(N, idx), labels=LABELS,
                     num_classes=C, **kw)


def sweep_specs() -> list[TrialSpec]:
    """convlstm and a, RGB and depth, seeds 0-2, known accuracies; plus a search trial that
    loses and an unfinished one."""
    acc = {("convlstm", "rgb"): (20, 22, 24), ("convlstm", "depth"): (18, 18, 21),
           ("a", "rgb"): (28, 30, 32), ("a", "depth"): (26, 24, 28)}
    out = []
    for (cell, mod), rights in acc.items():
        for seed, r in enumerate(rights):
            out.append(spec(cell, mod, seed, r, params=100_000 if cell == "convlstm" else 20_000,
                            macs=9_000_000 if cell == "convlstm" else 2_000_000,
                            clips_per_s=(10.0 + seed, 14.0 + seed, 12.0 + seed)))
    out.append(spec("a", "rgb", 0, 8, lr=0.1))                      # the same seed, worse lr: not selected
    out.append(spec("convlstm", "rgb", 3, 39, last_epoch=1))        # unfinished: not counted
    return out


@pytest.fixture(scope="module")
def mlflow_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("mlf")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    specs = sweep_specs()
    write_mlflow_sweep(uri, tmp, specs, sweep="demo")
    write_tune_sweep(tmp / "runs" / "demo", tmp, specs, sweep="demo")
    return {"uri": uri, "tmp": tmp, "specs": specs}


@pytest.fixture(scope="module")
def reported(mlflow_sweep: dict) -> dict:
    from bench.report.cli import report_sweep

    out = mlflow_sweep["tmp"] / "report"
    res = report_sweep(sweep="demo", tracking_uri=mlflow_sweep["uri"], out=out, n_boot=500, quiet=True)
    return {**mlflow_sweep, "res": res, "out": out}


def _row(lb: pl.DataFrame, cell: str, modality: str) -> dict:
    rows = lb.filter((pl.col("cell") == cell) & (pl.col("modality") == modality)).to_dicts()
    assert len(rows) == 1, (cell, modality, rows)
    return rows[0]


def test_aggregation_over_seeds_known_answers(reported: dict) -> None:
    lb = reported["res"].report.leaderboard
    assert lb.height == 4
    r = _row(lb, "a", "rgb")                               # 28, 30, 32 of 40 -> 70, 75, 80 %
    assert r["seeds"] == 3
    assert r["top1"] == pytest.approx(75.0)
    assert r["top1_std"] == pytest.approx(5.0)
    # the interval: hierarchical bootstrap over the 3 seeds and their 40 clips (the report's
    # n_boot=500, seed 0), not Student's t; inside [0, 100] and around the mean
    from bench.report.stats import hierarchical_ci

    ci = hierarchical_ci([28, 30, 32], [40, 40, 40], n_boot=500, seed=0)
    assert r["top1_ci_low"] == pytest.approx(100 * ci.ci_low) and r["top1_ci_high"] == pytest.approx(100 * ci.ci_high)
    assert 0 <= r["top1_ci_low"] < 75.0 < r["top1_ci_high"] <= 100
    assert r["clips"] == 40
    assert r["params"] == 20_000 and r["macs_per_clip"] == 2_000_000
    # throughput: each trial's median over epochs (11, 12, 13 clips/s), then the mean over seeds
    assert r["train_clips_per_s"] == pytest.approx(12.0 + 1.0)
    assert r["trials"] == 4                                # 3 seeds + the losing search trial
    c = _row(lb, "convlstm", "rgb")                        # the unfinished seed 3 is not counted
    assert c["seeds"] == 3 and c["top1"] == pytest.approx((20 + 22 + 24) / 40 * 100 / 3)
    assert r["top5"] == pytest.approx(85.0)                # the fixture's top-5 = top-1 + 10 points
    assert r["chance"] == pytest.approx(25.0)
    assert r["paper"] == pytest.approx(55.98)              # Table 1, IsoGD RGB, variant (a)
    assert r["data"] == "SYNTHETIC isogd (valid)"


def test_trial_selection_says_why(reported: dict) -> None:
    t = reported["res"].report.trials
    assert t.height == 14
    assert int(t["selected"].sum()) == 12
    lost = t.filter(pl.col("lr") == 0.1).row(0, named=True)
    won = t.filter(pl.col("selected") & (pl.col("cell") == lost["cell"]) & (pl.col("modality") == lost["modality"])
                   & (pl.col("seed") == lost["seed"])).row(0, named=True)
    assert won["lr"] != lost["lr"]                         # two configurations of one seed's search
    assert not lost["selected"] and lost["reason"] == (
        f"another configuration of this seed's search was selected: {won['trial_name']} (final val_top1 "
        f"{round(won['val_top1'] * 100, 2)}% vs {round(lost['val_top1'] * 100, 2)}%)")
    assert {"weight_decay", "momentum", "lr_end", "lr_power", "batch_size", "stopped_early"} <= set(t.columns)
    unfinished = t.filter((pl.col("seed") == 3)).row(0, named=True)
    assert not unfinished["selected"] and "not finished" in unfinished["reason"]


def test_significance_every_pair_once_with_holm(reported: dict) -> None:
    sig = reported["res"].report.significance
    # one unordered pair of cells (a, convlstm) per modality, never mirrored: convlstm is the reference
    assert sig.height == 2 and set(sig["reference"]) == {"convlstm"} and set(sig["cell"]) == {"a"}
    row = sig.filter(pl.col("modality") == "rgb").row(0, named=True)
    # a: 28/30/32 of 40 (70/75/80%); convlstm: 20/22/24 of 40 (50/55/60%), all seeds on 40 clips
    assert (row["seeds"], row["seeds_ref"], row["n"]) == (3, 3, 40)
    assert row["top1"] == pytest.approx(75.0) and row["top1_ref"] == pytest.approx(55.0)
    assert row["diff"] == pytest.approx(20.0)
    assert 0 < row["diff_ci_low"] < 20.0 < row["diff_ci_high"] <= 100
    assert row["prob_improvement"] == 1.0                  # every run of a beats every run of convlstm
    # a is right on a superset of convlstm's clips in every seed: a clear difference
    assert row["p_boot"] < 0.01 and row["significant"]
    fam = sig["p_boot"].to_list() + reported["res"].report.fusion["p_boot"].to_list()
    assert row["p_holm"] >= row["p_boot"] and row["p_holm"] <= len(fam) * row["p_boot"] + 1e-12
    assert row["significant"] == (row["p_holm"] < 0.05)
    assert any(f"Holm over the report's {len(fam)} tests" in n for n in reported["res"].report.notes)
    lb = reported["res"].report.leaderboard
    r = _row(lb, "a", "rgb")
    assert r["vs_convlstm"] == pytest.approx(20.0) and r["vs_convlstm_prob"] == 1.0
    assert r["vs_convlstm_significant"] == ("yes" if row["significant"] else "no")
    c = _row(lb, "convlstm", "rgb")                        # the same pair, seen from the other side
    assert c["vs_convlstm_significant"] == "-"
    assert c["vs_a"] == pytest.approx(-20.0) and c["vs_a_prob"] == 0.0
    assert c["vs_a_ci_low"] == pytest.approx(-row["diff_ci_high"]) and c["vs_a_p_holm"] == row["p_holm"]


def test_fusion_per_seed_and_over_seeds(reported: dict) -> None:
    rep = reported["res"].report
    runs = rep.fusion_runs
    assert set(runs["modalities"]) == {"rgb+depth"}
    assert set(runs["rule"]) == {"mean", "product", "fitted"}
    assert runs.height == 2 * 3 * 3                        # cells x seeds x rules
    r = runs.filter((pl.col("cell") == "a") & (pl.col("seed") == 0) & (pl.col("rule") == "product")).row(0, named=True)
    # rgb right on 0..27, depth on 10..35 (70% / 65% alone). Where one is right (p=0.7 on the label)
    # and the other wrong, the label is the wrong one's runner-up, so the product picks it: at
    # least the union 0..35 (90%) is right; the 4 clips both get wrong may go either way.
    assert r["best_single"] == "rgb" and r["best_single_top1"] == pytest.approx(70.0)
    assert 90.0 <= r["top1"] <= 100.0
    assert r["gain"] == pytest.approx(r["top1"] - 70.0)
    assert r["significant"] and r["p_vs_best_single"] <= 2 / 2**8
    agg = rep.fusion.filter((pl.col("cell") == "a") & (pl.col("rule") == "fitted")).row(0, named=True)
    assert agg["seeds"] == 3 and agg["modalities"] == "rgb+depth"
    assert agg["weights"].startswith("rgb=") and "depth=" in agg["weights"]


def test_files_every_cell_and_modality_and_self_contained_html(reported: dict) -> None:
    out = reported["out"]
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for cell in ("convlstm", "a"):
        for mod in ("rgb", "depth"):
            assert re.search(rf"\| SYNTHETIC isogd \(valid\) \| pretrain \| {cell} \| {mod} \|", md), (cell, mod)
    assert "rgb+depth" in md and "McNemar" in md and "Holm" in md
    assert "_3 seeds x 40 clips per cell (cell x modality)_" in md
    assert "NOT comparable" in md
    assert "66.79" in md and "Zhou et al." in md           # later state of the art beside ours
    # self-contained: figures inline, nothing fetched from elsewhere
    assert html.count("data:image/png;base64,") >= 5
    assert not re.search(r"""(src|href)=["'](?!data:)""", html)
    for name in ("accuracy_vs_params", "accuracy_vs_macs", "cell_bars", "fusion_gains", "confusion_1"):
        png = out / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    lb_csv = pl.read_csv(out / "tables" / "leaderboard.csv")
    assert lb_csv.height == 4 and "top1_ci_low" in lb_csv.columns


def test_leaderboard_run_in_mlflow(reported: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    # MlflowClient.load_table searches through the fluent API, i.e. the *default* store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", reported["uri"])

    res = reported["res"]
    c = MlflowClient(reported["uri"])
    run = c.get_run(res.run_id)
    assert run.data.tags["leaderboard"] == "true" and run.data.tags["sweep"] == "demo"
    assert run.info.status == "FINISHED"
    assert "Leaderboard of sweep" in run.data.tags["mlflow.note.content"]
    arts = {a.path for a in c.list_artifacts(res.run_id, "report")}
    assert {"report/report.html", "report/report.md"} <= arts
    table = c.load_table(res.experiment_id, "tables/leaderboard.json", run_ids=[res.run_id])
    assert len(table) == 4 and set(table["cell"]) == {"convlstm", "a"}
    assert sorted(table["top1"].round(2)) == sorted(res.report.leaderboard["top1"].round(2).to_list())
    from bench.tracking.leaderboard import latest_leaderboard

    assert latest_leaderboard(reported["uri"], sweep="demo")[1] == res.run_id


def test_tune_storage_rebuilds_the_same_table(reported: dict) -> None:
    from bench.report.build import build_report
    from bench.report.trials import load_trials_tune

    trials, meta = load_trials_tune(reported["tmp"] / "runs" / "demo")
    assert meta["name"] == "demo"
    rep = build_report(trials, sweep="demo", source="tune", n_boot=500)
    key = ["cell", "modality"]
    a = rep.leaderboard.sort(key).drop("trials")
    b = reported["res"].report.leaderboard.sort(key).drop("trials")
    assert a.columns == b.columns
    for col in a.columns:
        if a[col].dtype.is_float():
            assert np.allclose(a[col].to_numpy(), b[col].to_numpy(), equal_nan=True), col
        else:
            assert a[col].to_list() == b[col].to_list(), col
    assert rep.fusion["top1"].round(6).to_list() == reported["res"].report.fusion["top1"].round(6).to_list()


def test_cli_from_tune_dir_without_mlflow(reported: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main

    rc = main(["report", "--from-tune-dir", str(reported["tmp"] / "runs" / "demo"), "--out", str(tmp_path / "r"),
               "--no-mlflow-log", "--bootstrap", "200"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| SYNTHETIC isogd (valid) | pretrain | a | rgb | 3 | 75.00 ± 5.00 |" in printed
    assert (tmp_path / "r" / "report.html").is_file()


def test_user_errors(reported: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.report.cli import report_sweep

    with pytest.raises(CLIError, match=r"no runs of sweep 'nope'.*sweeps there: \['demo'\]"):
        report_sweep(sweep="nope", tracking_uri=reported["uri"], out=tmp_path / "x", quiet=True)
    with pytest.raises(CLIError, match="no tracking store at .*--from-tune-dir"):
        report_sweep(sweep="demo", tracking_uri=f"sqlite:///{tmp_path / 'absent.db'}", out=tmp_path / "x", quiet=True)
    with pytest.raises(CLIError, match="not a sweep folder"):
        report_sweep(tune_dir=tmp_path, out=tmp_path / "x", quiet=True)
    # the store is gone but ./runs/<sweep> is there: the report falls back to it
    monkeypatch.chdir(reported["tmp"])
    res = report_sweep(sweep="demo", tracking_uri=f"sqlite:///{tmp_path / 'absent.db'}", out=tmp_path / "y",
                       n_boot=100, quiet=True)
    assert res.run_id is None and "Ray Tune storage" in res.report.source
    assert res.report.leaderboard.height == 4


def test_stages_and_real_data_are_kept_apart(tmp_path: Path) -> None:
    """Two stages of one sweep are two leaderboards; data without SYNTHETIC.json reads as real."""
    from bench.report.build import build_report
    from bench.report.trials import load_trials_tune

    specs = [spec(cell, mod, seed, r, stage=stage)
             for stage, r in (("pretrain", 20), ("finetune", 30))
             for cell in ("convlstm", "a") for mod in ("rgb", "depth") for seed in (0, 1)]
    trials, _ = load_trials_tune(write_tune_sweep(tmp_path / "runs" / "two", tmp_path, specs, sweep="two",
                                                  synthetic=False))
    rep = build_report(trials, sweep="two", source="tune", n_boot=100)
    assert rep.leaderboard.height == 2 * 2 * 2
    for stage, top1 in (("pretrain", 50.0), ("finetune", 75.0)):
        lb = rep.leaderboard.filter(pl.col("stage") == stage)
        assert lb["top1"].to_list() == [top1] * 4 and (lb["seeds"] == 2).all()
    # both stages trained both modalities: fusion takes each modality from the later stage only
    assert set(rep.fusion["stages"]) == {"finetune"} and set(rep.fusion["modalities"]) == {"rgb+depth"}
    assert set(rep.fusion_runs["stage"]) == {"finetune"}
    assert set(rep.leaderboard["data"]) == {"real isogd (valid)"}
    assert not any("SYNTHETIC" in n for n in rep.notes)
    # significance compares cells within a stage only, each pair once
    assert sorted(zip(rep.significance["stage"], rep.significance["modality"], rep.significance["cell"],
                      rep.significance["reference"])) == sorted(
        (st, m, "a", "convlstm") for st in ("pretrain", "finetune") for m in ("rgb", "depth"))


def test_a_trial_without_scores_is_named_not_dropped(tmp_path: Path) -> None:
    from bench.report.build import build_report
    from bench.report.trials import load_trials_tune

    specs = [spec(cell, mod, 0, 24) for cell in ("convlstm", "a") for mod in ("rgb", "depth")]
    d = write_tune_sweep(tmp_path / "runs" / "gap", tmp_path, specs, sweep="gap")
    victim = next(d.glob("pretrain/pretrain-a-depth-*/checkpoint_*/val_scores.parquet"))
    victim.unlink()
    trials, _ = load_trials_tune(d)
    rep = build_report(trials, sweep="gap", source="tune", n_boot=100)
    assert rep.leaderboard.height == 4                                 # still ranked by its metric
    assert any("no per-sample scores" in n and "pretrain-a-depth" in n for n in rep.notes)
    assert set(rep.fusion["cell"]) == {"convlstm"}                     # a has no depth scores to fuse
    assert not ((rep.significance["cell"] == "a") & (rep.significance["modality"] == "depth")).any()


# ----------------------------------------------------------------------------- figures a person reads

def _leaderboard(rows: list[tuple[str, str, float, float]]) -> pl.DataFrame:
    """A leaderboard with what the cost figures read: (cell, modality, params, top-1 %)."""
    return pl.DataFrame([{"dataset": "isogd", "stage": "pretrain", "cell": c, "modality": m, "params": p,
                          "macs_per_clip": p * 90.0, "top1": t, "top1_ci_low": t - 20, "top1_ci_high": t + 20}
                         for c, m, p, t in rows])


def _no_crowded_x_ticks(ax) -> list[str]:
    """The x tick labels of ``ax``, asserted readable: 2-6 of them, plain numbers (no
    ``3.4x10^5`` mathtext), at least 3 px of air between neighbours."""
    from _helpers_report import tick_labels

    labels = tick_labels(ax, "x")
    texts = [t.get_text() for t in labels]
    assert 2 <= len(labels) <= 6, texts
    assert not any("times" in t or "^" in t for t in texts), texts
    renderer = ax.figure.canvas.get_renderer()
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    gaps = [b.x0 - a.x1 for a, b in zip(boxes, boxes[1:])]
    assert min(gaps) >= 3, (texts, gaps)
    return texts


@pytest.mark.parametrize("x", ["params", "macs_per_clip"])
def test_cost_figures_labels_do_not_overlap(x: str) -> None:
    """The issue's figure: cells within 10% of each other in parameters (340k..380k; c and d
    equal, as in the paper's Table 1), a modality pair tying. Tick labels are few and plain,
    every point has a label, and no two texts of the figure overlap."""
    from _helpers_report import overlapping_texts

    from bench.report import plots

    lb = _leaderboard([("convlstm", "rgb", 380_000, 41.7), ("a", "rgb", 340_000, 71.7), ("a", "depth", 340_000, 71.7),
                       ("b", "rgb", 352_000, 51.7), ("c", "rgb", 346_000, 62.5), ("d", "rgb", 346_000, 61.7),
                       ("d", "depth", 346_000, 60.9), ("b", "depth", 352_000, 53.0)])
    fig = plots.accuracy_vs_cost(lb, x=x)
    assert overlapping_texts(fig) == []
    ax = fig.axes[0]
    _no_crowded_x_ticks(ax)
    labels = [t.get_text() for t in ax.texts]
    for cell in ("convlstm", "a", "b", "c", "d"):
        assert any(cell in [p.strip() for p in lab.split(",")] for lab in labels), (cell, labels)
    import matplotlib.pyplot as plt

    plt.close(fig)
    # costs spanning decades (the paper's full networks): still few, plain ticks
    wide = _leaderboard([("convlstm", "rgb", 4_700_000, 52.0), ("a", "rgb", 530_000, 56.0),
                         ("b", "rgb", 670_000, 44.0)])
    fig = plots.accuracy_vs_cost(wide, x=x)
    assert overlapping_texts(fig) == []
    _no_crowded_x_ticks(fig.axes[0])
    plt.close(fig)


def test_report_figures_do_not_overlap_and_name_the_classes(reported: dict) -> None:
    """Every figure of the fixture's report: no overlapping texts; the confusion matrices' ticks
    are the dataset's class names (from its classes.txt), in label order."""
    import matplotlib.pyplot as plt
    from _helpers_report import overlapping_texts, tick_labels

    from bench.data.synth import class_names
    from bench.report.render import make_figures

    rep = reported["res"].report
    names = class_names(C)
    assert [cm.classes for cm in rep.confusions] == [names] * len(rep.confusions)
    figs = make_figures(rep)
    assert {"accuracy_vs_params", "accuracy_vs_macs", "cell_bars", "fusion_gains", "confusion_1"} <= set(figs)
    for name, fig in figs.items():
        assert overlapping_texts(fig) == [], name
        if name.startswith("confusion_"):
            ax = fig.axes[0]
            assert [t.get_text() for t in tick_labels(ax, "x")] == names, name
            assert [t.get_text() for t in tick_labels(ax, "y")] == names, name
        plt.close(fig)


def test_confusion_ticks_without_names_and_with_many_classes() -> None:
    import matplotlib.pyplot as plt
    from _helpers_report import overlapping_texts, tick_labels

    from bench.data.synth import class_names
    from bench.report import plots

    rng = np.random.default_rng(0)
    fig = plots.confusion(rng.integers(0, 9, (4, 4)), "no names")
    assert [t.get_text() for t in tick_labels(fig.axes[0], "x")] == ["0", "1", "2", "3"]
    assert "no class names" in fig.axes[0].get_xlabel()
    plt.close(fig)
    names = class_names(20)                                  # long names: the x labels turn
    fig = plots.confusion(rng.integers(0, 9, (20, 20)), "twenty", names)
    assert [t.get_text() for t in tick_labels(fig.axes[0], "y")] == names
    assert overlapping_texts(fig) == []
    plt.close(fig)
    fig = plots.confusion(rng.integers(0, 9, (249, 249)), "IsoGD", [str(i) for i in range(249)])
    assert tick_labels(fig.axes[0], "x") == [] and "249 classes" in fig.axes[0].get_xlabel()
    plt.close(fig)


def test_class_names_from_the_dataset_root(tmp_path: Path) -> None:
    from bench.report.build import class_names

    (tmp_path / "classes.txt").write_text("wave\nclap\nnod\n")
    assert class_names("isogd", str(tmp_path), 3) == ["wave", "clap", "nod"]
    assert class_names("isogd", str(tmp_path), 4) is None          # another count: not these names
    assert class_names("isogd", str(tmp_path / "gone"), 3) is None
    assert class_names("isogd", None, 3) is None
    (tmp_path / "jester-v1-labels.csv").write_text("Swiping Left\nSwiping Right\n")
    assert class_names("jester", str(tmp_path), 2) == ["Swiping Left", "Swiping Right"]


# ----------------------------------------------------------------------------- published results

def test_published_results_once_each_with_their_split(reported: dict) -> None:
    """The baselines table: one row per published result (the paper prints its IsoGD RGB numbers
    in Table 1 and Table 2: one row, "Table 1, Table 2"); the split column says the split or
    "not stated in the source"; no cell anywhere mentions a document a reader does not have."""
    from bench.report.baselines import RESULT_KEY, UNSTATED_TEXT

    rep = reported["res"].report
    pub = rep.published
    assert pub.height == pub.unique(subset=list(RESULT_KEY)).height
    assert pub.height == pub.unique().height and pub.height < rep.baselines.height
    assert set(pub["split"]) == {"valid", UNSTATED_TEXT}
    both = pub.filter((pl.col("cell") == "a") & (pl.col("dataset") == "isogd") & (pl.col("modality") == "rgb")
                      & (pl.col("source") == "zhang2018"))
    assert both.height == 1 and both["table"][0] == "Table 1, Table 2" and both["params_m"][0] == 0.529
    for col in ("split", "note", "table"):
        assert not pub[col].str.contains("SPEC").any(), col
    assert not rep.comparison["data"].str.contains("unstated|SPEC").any()
    out = reported["out"]
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    section = md.split("## Published results (bench/resources/baselines.csv)")[1].split("## How these")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == pub.height and len(set(rows)) == len(rows)
    assert "SPEC" not in md and "SPEC" not in html
    assert f"| isogd | {UNSTATED_TEXT} | later SOTA | unverified | rgb+depth |" in section
    csv = pl.read_csv(out / "tables" / "baselines.csv")
    assert csv.height == pub.height


def test_html_tables_scroll_instead_of_squeezing(reported: dict) -> None:
    """In a frame narrower than a table (MLflow's artifact view) the table scrolls in its own
    box; numbers and labels stay on one line, only free text wraps."""
    html = (reported["out"] / "report.html").read_text()
    assert html.count("<table>") == html.count('<div class="table-wrap"><table>') > 0
    assert ".table-wrap{overflow-x:auto" in html and "white-space:nowrap" in html
    assert re.search(r'<img alt="cell_bars" width="\d+" height="\d+" src="data:image/png;base64,', html)


def test_a_trial_stopped_early_is_not_selected_over_a_full_length_one() -> None:
    from bench.report.trials import select_trials, trials_frame

    def row(name, top1, last, lr):
        return {"trial_name": name, "dataset": "d", "stage": "pretrain", "cell": "a", "modality": "rgb", "seed": 0,
                "status": "TERMINATED", "finished": True, "epochs": 6, "last_epoch": last, "val_top1": top1,
                "lr": lr, "stopped_early": last < 6}

    t = select_trials(trials_frame([row("full", 0.7, 6, 0.01), row("short", 0.9, 2, 0.1), row("weak", 0.5, 6, 0.001)]))
    by = {r["trial_name"]: r for r in t.iter_rows(named=True)}
    assert by["full"]["selected"] and not by["short"]["selected"]
    assert by["short"]["reason"] == ("stopped early by the scheduler at epoch 2 of 6; a trial that ran every "
                                     "epoch was selected: full")
    assert by["weak"]["reason"].startswith("another configuration of this seed's search was selected: full")
    alone = select_trials(trials_frame([row("short", 0.9, 2, 0.1)]))
    assert alone["selected"].to_list() == [True]          # no full-length trial: the stopped one counts


def test_a_search_is_reported_with_what_it_selected(reported: dict) -> None:
    """The fixture's search (a second lr for one seed of a/rgb) appears as a search: the
    selected configuration per seed, the trial count, and the lr column of every trial."""
    rep = reported["res"].report
    s = rep.search.filter((pl.col("cell") == "a") & (pl.col("modality") == "rgb")).row(0, named=True)
    assert s["trials"] == 4 and s["stopped_early"] == 0
    chosen = rep.trials.filter(pl.col("selected") & (pl.col("cell") == "a") & (pl.col("modality") == "rgb"))
    assert s["selected"] == "; ".join(f"s{r['seed']}: lr={r['lr']:.4g}" for r in chosen.sort("seed").iter_rows(named=True))
    md = (reported["out"] / "report.md").read_text()
    assert "## Hyperparameter search" in md and "### What each study selected" in md
    assert (reported["out"] / "tables" / "search.csv").is_file()


def test_leaderboard_entries_of_a_search_say_what_won() -> None:
    """The MLflow leaderboard entry of a searched (cell, modality) carries the selected
    configuration, the trial count and the early stops."""
    from bench.report.store import entries

    class R:
        pass

    rep = R()
    rep.leaderboard = pl.DataFrame([{"dataset": "d", "stage": "pretrain", "cell": "a", "modality": "rgb",
                                     "top1": 80.0, "data": "SYNTHETIC d (valid)"}])
    rep.fusion = pl.DataFrame()
    rep.selected = pl.DataFrame()
    rep.search = pl.DataFrame([{"dataset": "d", "stage": "pretrain", "cell": "a", "modality": "rgb", "trials": 8,
                                "stopped_early": 3, "selected": "s0: lr=0.01; s1: lr=0.02"}])
    (e,) = entries(rep)
    assert e.identity["selected"] == "s0: lr=0.01; s1: lr=0.02"
    assert (e.metrics["search_trials"], e.metrics["stopped_early"]) == (8.0, 3.0)
