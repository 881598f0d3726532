"""The leaderboard in a real browser: `bench ui` serves the MLflow UI over a store holding
a leaderboard run, headless Chromium (Debian's package, installed by
dashboards/install_chromium.sh -- never a downloaded browser build) loads the run's page at the
leaderboard table, and the run name and table values must be in the rendered DOM. The MLflow UI
is a React single-page app: the run page is the hash route ``#/experiments/E/runs/R`` and the
table the artifact route below it; ``--virtual-time-budget`` lets its scripts and fetches finish
before the DOM is dumped. A screenshot is saved next to the DOM for a person to look at
(``$BENCH_SCREENSHOT_DIR`` to keep it; default: the test's tmp dir).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow      # an MLflow server and a browser: ~1-2 min on 2 busy cores

sys.path.insert(0, str(Path(__file__).parent))
from _helpers_report import TrialSpec, mask, write_tune_sweep  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1600,1000"]


def chromium() -> str:
    """Debian's chromium, installed through dashboards/install_chromium.sh when missing."""
    exe = shutil.which("chromium")
    if exe is None:
        r = subprocess.run(["sh", str(REPO / "dashboards" / "install_chromium.sh")], capture_output=True,
                           text=True, timeout=900)
        exe = shutil.which("chromium")
        if exe is None:
            pytest.skip(f"chromium is not installed and dashboards/install_chromium.sh could not install it: "
                        f"{r.stderr.strip()[-300:]}")
    return exe


def render(url: str, *, screenshot: Path, budget_ms: int = 15000, timeout: float = 240) -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time, and a screenshot of it."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
               f"--screenshot={screenshot}", "--dump-dom", url]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"chromium failed ({r.returncode}): {r.stderr[-2000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def leaderboard_store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A SQLite store holding one leaderboard run made by the real reporter."""
    from bench.report.cli import report_sweep

    tmp = tmp_path_factory.mktemp("ui")
    n, c = 30, 3
    labels = np.arange(n) % c
    specs = [TrialSpec(cell=cell, modality=mod, seed=s, labels=labels, num_classes=c,
                       correct=mask(n, range(k + s)))
             for cell, k in (("convlstm", 12), ("a", 21)) for mod in ("rgb", "depth") for s in (0, 1)]
    sweep_dir = write_tune_sweep(tmp / "runs" / "uidemo", tmp, specs, sweep="uidemo")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    res = report_sweep(tune_dir=sweep_dir, tracking_uri=uri, out=tmp / "report", n_boot=200, quiet=True)
    lb = res.report.leaderboard
    best = lb.sort("top1", descending=True).row(0, named=True)
    return {"uri": uri, "run_id": res.run_id, "experiment_id": res.experiment_id, "best": best, "tmp": tmp}


def test_leaderboard_renders_in_mlflow_ui(leaderboard_store: dict, tmp_path: Path, stop_processes) -> None:
    """`bench ui` (the real command, in a subprocess) serves the store; its printed table link
    renders the leaderboard in Chromium; SIGTERM stops the server and everything it started."""
    import time

    from bench.report.store import latest_leaderboard
    from bench.report.ui import healthy

    chromium()
    found = latest_leaderboard(leaderboard_store["uri"])
    assert found is not None and found[1] == leaderboard_store["run_id"]
    exp_id, run_id, run_name = found
    assert run_name.startswith("leaderboard-uidemo-")
    shots = Path(os.environ.get("BENCH_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "ui.out"
    with open(out, "w") as f:
        ui = subprocess.Popen([sys.executable, "-m", "bench", "ui", "--tracking-uri", leaderboard_store["uri"],
                               "--port", "0", "--timeout", "180"], stdout=f, stderr=subprocess.STDOUT,
                              cwd=tmp_path)
    try:
        deadline = time.monotonic() + 200
        while "Ctrl-C to stop." not in out.read_text():
            assert ui.poll() is None, f"bench ui exited: {out.read_text()}"
            assert time.monotonic() < deadline, f"bench ui did not come up: {out.read_text()}"
            time.sleep(0.5)
        text = out.read_text()
        base = re.search(r"MLflow UI: (http://127\.0\.0\.1:\d+)", text).group(1)
        table_url = re.search(r"table:\s+(\S+)", text).group(1)
        assert table_url == f"{base}/#/experiments/{exp_id}/runs/{run_id}/artifacts/tables/leaderboard.json"
        assert healthy(base)
        shot = shots / "mlflow_leaderboard.png"
        dom = render(table_url, screenshot=shot)
    finally:
        stop_processes(ui, grace_s=60)       # SIGTERM; SIGKILL only if it is still there after 60 s
    assert ui.returncode == 0, out.read_text()
    assert not healthy(base, timeout=2), "the MLflow server outlived bench ui"
    assert run_name in dom, "the leaderboard run's name is not on its page"
    best = leaderboard_store["best"]
    # values of the table's first row, as the store wrote them and the UI shows them
    assert "SYNTHETIC isogd (valid)" in dom
    assert f"{round(best['top1'], 4):g}" in dom, f"top-1 {best['top1']} not in the rendered table"
    assert shot.is_file() and shot.stat().st_size > 20_000          # a real page, not a blank PNG
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1600, 1000)
        colours = len(set(im.convert("RGB").resize((160, 100)).getdata()))
    assert colours > 50, "the screenshot is (nearly) one colour: the page did not render"
