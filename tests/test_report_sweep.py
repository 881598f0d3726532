"""The report from a tiny REAL sweep: synthetic IsoGD-layout data (RGB, depth, and flow computed
from it), every registered cell x three modalities, trained for one step each by the real sweep
machinery (`bench.sweep.run.run_sweep`: Ray Tune, the training loop, MLflow tracking); then
`bench report` from MLflow and, for the same sweep, from Ray Tune's storage."""

from __future__ import annotations

import itertools

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

MODALITIES = ("rgb", "depth", "flow")


@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory: pytest.TempPathFactory, tiny_sweep) -> dict:
    from bench.data.flow import compute_flow_dataset
    from bench.data.synth import synthesize
    from bench.sweep.run import run_sweep
    from bench.sweep.spec import load_spec

    tmp = tmp_path_factory.mktemp("realsweep")
    root = synthesize("isogd", tmp / "data" / "isogd", num_classes=3, clips_per_class=2, valid_clips_per_class=3,
                      size=(40, 32), seed=0, length_scale=0.2, modalities=("rgb", "depth"), progress=False)
    compute_flow_dataset("isogd", root, progress=False)
    sweep = tiny_sweep(tmp, name="tiny", experiment="report-test", cells="all", modalities=MODALITIES,
                       datasets={"isogd": {"format": "isogd", "root": str(root)}},
                       stages=[{"name": "pretrain", "dataset": "isogd", "epochs": 1, "batch_size": 2}],
                       train={"max_train_batches": 1}, resources={"cpu": 1})
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    out = run_sweep(load_spec(sweep), tracking_uri=uri)
    assert out.errors == 0 and not out.interrupted
    return {"tmp": tmp, "uri": uri, "sweep_dir": out.sweep_dir}


def test_report_of_a_real_sweep_has_every_cell_and_modality(real_sweep: dict) -> None:
    from bench.models import list_cells
    from bench.report.cli import report_sweep

    res = report_sweep(sweep="tiny", tracking_uri=real_sweep["uri"], out=real_sweep["tmp"] / "report",
                       n_boot=200, quiet=True)
    rep = res.report
    cells = list_cells(include_controls=True)               # cells: all trains the control beside the cells
    assert "mean" in cells
    want = set(itertools.product(cells, MODALITIES))
    assert set(zip(rep.leaderboard["cell"], rep.leaderboard["modality"])) == want
    assert (rep.leaderboard["seeds"] == 1).all()
    assert rep.selected["scores_path"].str.len_chars().min() > 0           # every trial's scores were read
    assert (rep.selected["num_val_samples"] == 9).all()                    # 3 classes x 3 validation clips
    combos = {"rgb+depth", "rgb+flow", "depth+flow", "rgb+depth+flow"}
    for cell in cells:
        got = rep.fusion.filter(rep.fusion["cell"] == cell)
        assert set(got["modalities"]) == combos, cell
        assert set(got["rule"]) == {"mean", "product", "fitted"}, cell
    md = (res.out_dir / "report.md").read_text()
    for cell, mod in want:
        assert f"| SYNTHETIC isogd (valid) | pretrain | {cell} | {mod} |" in md, (cell, mod)
    # measured cost columns come from the trials: the ConvLSTM network is the biggest
    by_cell = {r["cell"]: r["params"] for r in rep.leaderboard.iter_rows(named=True)}
    assert max(by_cell, key=by_cell.get) == "convlstm"
    assert res.run_id is not None

    # the same sweep rebuilt from Ray Tune's storage gives the same leaderboard
    from_tune = report_sweep(tune_dir=real_sweep["sweep_dir"], out=real_sweep["tmp"] / "report-tune",
                             n_boot=200, quiet=True)
    a = from_tune.report.leaderboard.sort(["cell", "modality"])
    b = rep.leaderboard.sort(["cell", "modality"])
    assert a["top1"].round(9).to_list() == b["top1"].round(9).to_list()
    assert a["params"].to_list() == b["params"].to_list()
    assert from_tune.run_id is None                                        # not logged without --tracking-uri
