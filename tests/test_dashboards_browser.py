"""What a person does in the MLflow UI, in a real browser, and what they see.

`bench ui` (the real command, in a subprocess) serves a store holding a sweep written the way
`bench.tracking` writes one (trial runs under the sweep's run, dataset inputs) and the report
`bench report` logs (the leaderboard run, one entry run per leaderboard row). Debian's Chromium
is driven through Debian's chromedriver with Selenium (both installed by
dashboards/install_chromium.sh; Selenium from the ``test`` extra) -- never a downloaded
browser build. Each test is one step of dashboards/README.md, from a fresh page state (the UI
keeps its table settings in the browser's local storage), and saves a screenshot:

1. open the UI: the experiment is listed (``01-home.png``);
2. click it: it opens on the runs table, not MLflow 3's GenAI overview (``02-experiment.png``);
3. expand the sweep's run: every trial's row shows its cell, modality, seed, stage and top-1 in
   percent, in its name or in a column, without choosing columns (``03-trials.png``);
4. type the leaderboard filter: exactly the leaderboard's entries (``04-leaderboard.png``);
5. sort by top-1: the column appears and the rows are in the report's order (``05-sorted.png``);
6. open a trial: its page names it and shows its identity, top-1 in percent and its dataset
   (``06-trial.png``);
7. open the HTML report in the artifact view: tables present, figures loaded, nothing squeezed
   or cut off (``07-report.png``); its figures' texts do not overlap;
8. the leaderboard table artifact shows the leaderboard (``08-table.png``);
9. SIGTERM stops `bench ui` and the server it started.

What is on screen is read as a person reads it: a run name cut off with an ellipsis counts
only as far as its visible characters, and a column counts only when the table shows it.
Screenshots go to ``$BENCH_SCREENSHOT_DIR`` (dashboards/ for the committed ones), else to the
test's tmp dir.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

pytestmark = pytest.mark.slow      # an MLflow server and a browser, step by step

sys.path.insert(0, str(Path(__file__).parent))
from _helpers_report import TrialSpec, mask, overlapping_texts, write_mlflow_sweep  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
VIEWPORT = (1600, 1000)
SHOT_WIDTH = 1200                  # screenshots are scaled to this width and palette-reduced (small PNGs)
EXPERIMENT = "gesturebench"
SWEEP = "uidemo"
N, C = 30, 3
RIGHT = {"convlstm": 12, "a": 21}  # clips right of N, plus the seed: known accuracies
NAME_CELL = "attributes.`Run Name`"


def _browser() -> str:
    """Debian's chromium and chromedriver, installed through dashboards/install_chromium.sh when missing."""
    exe = shutil.which("chromium")
    if exe is None or not Path(CHROMEDRIVER).is_file():
        r = subprocess.run(["sh", str(REPO / "dashboards" / "install_chromium.sh")], capture_output=True,
                           text=True, timeout=900)
        exe = shutil.which("chromium")
        if exe is None or not Path(CHROMEDRIVER).is_file():
            pytest.skip(f"chromium / {CHROMEDRIVER} missing and dashboards/install_chromium.sh did not install "
                        f"them: {r.stderr.strip()[-300:]}")
    return exe


# ----------------------------------------------------------------------------- the store and the UI

def _specs() -> list[TrialSpec]:
    labels = np.arange(N) % C
    return [TrialSpec(cell=cell, modality=mod, seed=s, labels=labels, num_classes=C, correct=mask(N, range(k + s)),
                      params=380_000 if cell == "convlstm" else 340_000, macs=34_000_000 if cell == "convlstm"
                      else 30_000_000)
            for cell, k in RIGHT.items() for mod in ("rgb", "depth") for s in (0, 1)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, stop_processes: Callable[..., list[int]]) -> Any:
    """The store, `bench ui` serving it, and a Chromium session."""
    selenium = pytest.importorskip("selenium", reason="the browser test needs the `test` extra (selenium)")
    from mlflow.tracking import MlflowClient
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from bench.report.cli import report_sweep

    chromium = _browser()
    tmp = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    specs = _specs()
    write_mlflow_sweep(uri, tmp, specs, sweep=SWEEP, experiment=EXPERIMENT)
    res = report_sweep(sweep=SWEEP, tracking_uri=uri, out=tmp / "report", n_boot=200, quiet=True)
    client = MlflowClient(uri)
    out = tmp / "ui.out"
    with open(out, "w") as f:
        ui = subprocess.Popen([sys.executable, "-m", "bench", "ui", "--tracking-uri", uri, "--port", "0",
                               "--timeout", "180"], stdout=f, stderr=subprocess.STDOUT, cwd=tmp)
    driver = None
    try:
        deadline = time.monotonic() + 200
        while "Ctrl-C to stop." not in out.read_text():
            assert ui.poll() is None, f"bench ui exited: {out.read_text()}"
            assert time.monotonic() < deadline, f"bench ui did not come up: {out.read_text()}"
            time.sleep(0.5)
        printed = out.read_text()
        opts = webdriver.ChromeOptions()
        opts.binary_location = chromium
        profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp)
        for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}"]:
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        driver.set_page_load_timeout(120)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False})
        shots = Path(os.environ.get("BENCH_SCREENSHOT_DIR") or tmp / "shots")
        shots.mkdir(parents=True, exist_ok=True)
        yield Site(driver=driver, base=re.search(r"MLflow UI: (http://127\.0\.0\.1:\d+)", printed).group(1),
                   printed=printed, ui=ui, ui_out=out, client=client, uri=uri, res=res, specs=specs, shots=shots,
                   tmp=tmp, stop=stop_processes, selenium=selenium)
    finally:
        if driver is not None:
            driver.quit()
        stop_processes(ui, grace_s=60)


class Site:
    """The running UI and what the test knows about the store behind it."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)
        self.exp_id = self.res.experiment_id

    # -- the store's side
    def runs(self, flt: str) -> list[Any]:
        return self.client.search_runs([self.exp_id], flt, max_results=1000)

    def trial_runs(self) -> dict[str, Any]:
        return {r.info.run_id: r for r in self.runs("tags.`bench.kind` = 'trial'")}

    def spec_of(self, run: Any) -> TrialSpec:
        t = run.data.tags
        return next(s for s in self.specs if (s.cell, s.modality, str(s.seed), s.stage) ==
                    (t["cell"], t["modality"], t["seed"], t["stage"]))

    # -- the browser's side
    def fresh(self, path: str = "") -> None:
        """A first visit: the UI's stored state (filters, columns, sort, assistant) forgotten."""
        d = self.driver
        d.get(self.base + "/")
        d.execute_script("window.localStorage.clear(); window.sessionStorage.clear();")
        d.get(self.base + "/" + path)

    def wait(self, what: str, fn: Callable[[], Any], timeout: float = 90) -> Any:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                v = fn()
                if v:
                    return v
            except self.selenium.common.exceptions.WebDriverException as e:   # stale while React renders
                last = e
            time.sleep(0.5)
        self.shot(f"failed-{re.sub(r'[^a-z0-9]+', '-', what.lower())[:40]}", self.tmp)
        raise AssertionError(f"timed out waiting for {what} (url {self.driver.current_url}; last error: {last})")

    def css(self, sel: str, within: Any = None) -> list[Any]:
        from selenium.webdriver.common.by import By

        return (within or self.driver).find_elements(By.CSS_SELECTOR, sel)

    def body(self) -> str:
        return self.css("body")[0].text

    def close_assistant(self) -> None:
        """What opens by itself on a first visit, closed as a person would: the "MLflow Assistant"
        side panel, and the GenAI pages' "Detect Issues" hint ("Got it")."""
        buttons = [*self.driver.find_elements("xpath", "//button[normalize-space(.)='Got it']"),
                   *self.css("button[aria-label='Close']")]
        for b in buttons:
            try:
                if b.is_displayed():
                    b.click()
            except self.selenium.common.exceptions.WebDriverException:    # behind an overlay, or gone
                continue
        time.sleep(0.5)

    def settle(self, seconds: float = 1.5) -> None:
        """Wait until the page's text stops changing (React renders in steps)."""
        last, stable = None, time.monotonic()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = self.body()
            if now != last:
                last, stable = now, time.monotonic()
            elif time.monotonic() - stable >= seconds:
                return
            time.sleep(0.3)

    def shot(self, name: str, folder: Path | None = None) -> Path:
        from PIL import Image

        path = (folder or self.shots) / f"{name}.png"
        raw = (folder or self.shots) / f".{name}.raw.png"
        # the pointer to the corner, so no tooltip of the last click is in the picture
        self.driver.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 0, "y": 0})
        time.sleep(0.3)
        self.driver.save_screenshot(str(raw))
        with Image.open(raw) as im:
            im = im.convert("RGB")
            im = im.resize((SHOT_WIDTH, round(im.height * SHOT_WIDTH / im.width)), Image.LANCZOS)
            im.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        raw.unlink()
        return path

    # -- the runs table
    def grid_rows(self) -> dict[str, dict[str, Any]]:
        """The runs table as shown: row id (= run id) -> {"index", "name" (its visible part),
        "cells" {column id: visible text}, "link"}. Rows are split over the grid's pinned and
        scrolling parts; both are read."""
        rows: dict[str, dict[str, Any]] = {}
        for r in self.css(".ag-row[row-id]"):
            rid = r.get_attribute("row-id")
            row = rows.setdefault(rid, {"index": int(r.get_attribute("row-index")), "name": "", "cells": {},
                                        "link": None})
            for cell in self.css(".ag-cell[col-id]", r):
                col = cell.get_attribute("col-id")
                if col == NAME_CELL:
                    links = self.css("a[href*='/runs/']", cell)
                    if links:
                        row["link"] = links[0]
                        row["name"] = self.driver.execute_script(VISIBLE_TEXT, links[0])
                else:
                    row["cells"][col] = self.driver.execute_script(VISIBLE_TEXT, cell)
        return rows

    def column_headers(self) -> list[str]:
        return [h.get_attribute("col-id") for h in self.css(".ag-header-cell[col-id]")]

    def expand(self, run_id: str) -> None:
        """Click the expander of run ``run_id``'s row (its child runs show under it)."""
        for r in self.css(f".ag-row[row-id='{run_id}']"):
            buttons = self.css(f".ag-cell[col-id='{NAME_CELL}'] button", r)
            if buttons:
                buttons[0].click()
                time.sleep(1.0)
                return

    def search(self, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        box = self.wait("the runs search box", lambda: [b for b in self.css("input[data-testid='search-box']")
                                                       if b.is_displayed()])[0]
        box.click()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)
        box.send_keys(text)
        box.send_keys(Keys.ENTER)
        self.driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)   # the autocomplete list
        self.wait("the filter in the address", lambda: "searchFilter=" in self.driver.current_url and
                  "searchFilter=&" not in self.driver.current_url)
        self.settle()

    def sort_by(self, metric: str) -> None:
        """The Sort menu: type the metric's name, pick it (descending, the menu's default)."""
        from selenium.webdriver.common.keys import Keys

        self.wait("the Sort button", lambda: self.css("button[aria-label^='Sort']"))[0].click()
        self.wait("the Sort menu", lambda: self.css("[role='menu'] input[type='search']"))[0].send_keys(metric)
        self.wait(f"the Sort menu's {metric}", lambda: self.css(f"[data-testid='sort-select-{metric}']"))[0].click()
        self.driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)
        self.wait("the sort in the address", lambda: f"orderByKey=metrics.%60{metric}%60" in self.driver.current_url)
        self.settle()


# The characters of an element a reader sees: a text cut off by its box (overflow hidden, an
# ellipsis) counts only up to the box's right edge, less the ellipsis.
VISIBLE_TEXT = """
const el = arguments[0];
let clip = el;
while (clip && clip !== document.body) {
  const cs = getComputedStyle(clip);
  if (cs.overflowX !== 'visible' || cs.textOverflow === 'ellipsis') break;
  clip = clip.parentElement;
}
const box = clip.getBoundingClientRect();
const cut = clip.scrollWidth > clip.clientWidth + 1;
const right = box.left + clip.clientWidth - (cut ? 12 : 0);
const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
const range = document.createRange();
let out = '';
while (walker.nextNode()) {
  const t = walker.currentNode;
  let word = '';
  for (let i = 0; i < t.length; i++) {
    range.setStart(t, i); range.setEnd(t, i + 1);
    const b = range.getBoundingClientRect();
    if (b.width === 0 && b.height === 0) { word += t.data[i] === ' ' ? ' ' : ''; continue; }
    if (b.right <= right + 0.5) word += t.data[i];
  }
  out += word + ' ';
}
return out.replace(/\\s+/g, ' ').trim();
"""


def _pct(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)\s*%", text)]


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])", text)]


def _shows_identity(row: dict[str, Any], *, cell: str, modality: str, seed: int | None, stage: str) -> list[str]:
    """What of (cell, modality, seed, stage) row does NOT show, in its visible name or a column."""
    name = row["name"]
    tokens = set(re.split(r"[^A-Za-z0-9+]+", name))
    cols = {c.split("`")[1].lower() if "`" in c else c.lower(): v for c, v in row["cells"].items()}
    missing = []
    for what, value in (("cell", cell), ("modality", modality), ("stage", stage)):
        if value not in tokens and cols.get(what, "").strip() != value:
            missing.append(f"{what} {value}")
    if seed is not None and not re.search(rf"(?<![A-Za-z0-9])(s|seed[ =:]?){seed}(?![0-9])", name) \
            and cols.get("seed", "").strip() != str(seed):
        missing.append(f"seed {seed}")
    return missing


def _shows_top1(row: dict[str, Any], pct: float) -> bool:
    """The row shows ``pct`` (top-1 in percent): in its visible name, or in a top-1 metric column."""
    if any(abs(v - pct) <= 0.051 for v in _pct(row["name"])):
        return True
    for col, text in row["cells"].items():
        if col.startswith("metrics.") and "top1" in col.replace("_", "").replace("-", "") \
                and any(abs(v - pct) <= 0.051 for v in _numbers(text)):
            return True
    return False


def _runs_table(site: Site) -> None:
    """The experiment's runs table in "Model training" mode: the README's click on the sidebar's
    toggle when the UI opened on its GenAI pages (MLflow 3.17 opens an experiment in the mode the
    toggle last had, GenAI on a first visit; step 2 asserts that a person does not need it)."""
    site.fresh(f"#/experiments/{site.exp_id}")
    site.wait("the experiment page", lambda: "/experiments/" + site.exp_id + "/" in site.driver.current_url)
    site.settle()
    site.close_assistant()
    if "/runs" not in site.driver.current_url.split("?")[0]:
        toggle = site.wait("the sidebar's Model training toggle",
                           lambda: [e for e in site.driver.find_elements("xpath", "//*[normalize-space(text())="
                                                                             "'Model training']") if e.is_displayed()])
        toggle[0].click()
    site.wait("the runs table", lambda: "/runs" in site.driver.current_url.split("?")[0] and
              NAME_CELL in site.column_headers())
    site.settle()
    site.close_assistant()


# ----------------------------------------------------------------------------- the steps

def test_01_home_lists_the_experiment(site: Site) -> None:
    site.fresh()
    link = site.wait("the experiment in the home page's list",
                     lambda: [a for a in site.css("a[href]") if a.text.strip() == EXPERIMENT and a.is_displayed()])
    site.close_assistant()
    site.shot("01-home")
    assert link[0].get_attribute("href").endswith(f"#/experiments/{site.exp_id}")


def test_02_experiment_opens_on_the_runs_table(site: Site) -> None:
    """A first visit, the experiment opened as a person does -- the experiment link `bench ui`
    prints when it prints one, else the experiment clicked in the home page's list: the runs
    table, not the GenAI overview ("Traces 0", "No data available") or its traces page."""
    printed = re.search(r"Experiment [^\n:]+:\s+(http\S+)", site.printed)   # `bench ui`'s "Experiment NAME: URL"
    if printed:
        site.fresh(printed.group(1).split("/", 3)[3])
    else:
        site.fresh()
        site.wait("the experiment link", lambda: [a for a in site.css("a[href]") if a.text.strip() == EXPERIMENT
                                                  and a.is_displayed()])[0].click()
    site.wait("the experiment page", lambda: f"/experiments/{site.exp_id}/" in site.driver.current_url)
    site.settle(3)
    site.close_assistant()
    site.shot("02-experiment")
    url = site.driver.current_url
    body = site.body()
    assert "/runs" in url.split("?")[0], f"the experiment opened on {url}, not its runs:\n{body[:600]}"
    assert NAME_CELL in site.column_headers(), "no runs table on the page"
    for genai in ("No data available", "Detect Issues"):
        assert genai not in body, f"GenAI overview text {genai!r} on the page"


def test_03_trials_show_cell_modality_seed_stage_top1(site: Site) -> None:
    """Without choosing a column: every trial's row shows cell, modality, seed, stage, top-1 in
    percent (the report's unit) and its dataset."""
    trials, rows = _trial_rows(site)
    site.shot("03-trials")
    assert set(trials) <= set(rows), f"trial rows missing: {sorted(set(trials) - set(rows))}"
    problems = []
    for rid, run in trials.items():
        spec = site.spec_of(run)
        row = rows[rid]
        missing = _shows_identity(row, cell=spec.cell, modality=spec.modality, seed=spec.seed, stage=spec.stage)
        if not _shows_top1(row, 100 * spec.accuracy):
            missing.append(f"top-1 {100 * spec.accuracy:.1f}%")
        dataset = row["cells"].get("attributes.`Dataset`", "")
        if "isogd" not in dataset:
            missing.append(f"dataset (Dataset column shows {dataset!r})")
        if missing:
            problems.append(f"{row['name']!r} ({spec.name}) does not show {', '.join(missing)}")
    assert not problems, "\n".join(problems)


def _trial_rows(site: Site, *, printed_link: bool = True) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The experiment as `bench ui`'s printed link opens it (the stored trials view: every trial,
    best top-1 first, with its columns), or (``printed_link=False``) as the README's click on
    the "Model training" toggle opens it: the store's trial runs and the rows on screen."""
    if printed_link:
        printed = re.search(r"Experiment [^\n:]+:\s+(http\S+)", site.printed)
        assert printed, f"`bench ui` printed no experiment link:\n{site.printed}"
        site.fresh(printed.group(1).split("/", 3)[3])
        site.wait("the runs table", lambda: "/runs" in site.driver.current_url.split("?")[0] and
                  NAME_CELL in site.column_headers())
        site.settle()
        site.close_assistant()
    else:
        _runs_table(site)
    trials = site.trial_runs()
    if not set(trials) <= set(site.grid_rows()):            # nested under the sweep's run
        sweep = site.runs("tags.`bench.kind` = 'sweep'")
        assert len(sweep) == 1
        site.wait("the sweep's run", lambda: sweep[0].info.run_id in site.grid_rows())
        site.expand(sweep[0].info.run_id)
    site.wait("the trials' rows", lambda: set(trials) <= set(site.grid_rows()), timeout=30)
    site.settle()
    return trials, site.grid_rows()


def _entries(site: Site) -> dict[str, Any]:
    from bench.tracking import records

    return {r.info.run_id: r for r in site.runs(records.LEADERBOARD_FILTER)}


def _filtered(site: Site) -> dict[str, dict[str, Any]]:
    """The runs table after typing the README's leaderboard filter (and nothing else)."""
    from bench.tracking import records

    _runs_table(site)
    site.search(records.LEADERBOARD_FILTER)
    site.wait("the filtered table", lambda: site.grid_rows())
    site.settle()
    return site.grid_rows()


def test_04_leaderboard_filter_shows_exactly_the_entries(site: Site) -> None:
    """The filter of dashboards/README.md: one row per leaderboard row of the report -- each
    (cell, modality) and each (cell, modality combination, fusion rule) -- and nothing else;
    each row says which it is."""
    from bench.report.fusion import RULES
    from bench.tracking import records

    assert records.LEADERBOARD_FILTER in (REPO / "dashboards" / "README.md").read_text(), \
        "dashboards/README.md does not give the filter"
    rows = _filtered(site)
    site.shot("04-leaderboard")
    entries = _entries(site)
    rep = site.res.report
    assert len(entries) == rep.leaderboard.height + rep.fusion.height
    extra = {rid: r["name"] for rid, r in rows.items() if rid not in entries}
    assert set(rows) == set(entries), (
        f"on screen but not entries: {extra}; {len(set(entries) - set(rows))} of {len(entries)} entries not on "
        f"screen" + (" (nested under the leaderboard run, behind its expander)" if site.res.run_id in rows else ""))
    # what each entry is: on the leaderboard view `bench ui` prints (the same filter, already typed,
    # with the entries' columns), as the README says
    printed = re.search(r"leaderboard as runs[^\n]*\n\s+(http\S+)", site.printed)
    assert printed, f"`bench ui` printed no leaderboard view:\n{site.printed}"
    site.fresh(printed.group(1).split("/", 3)[3])
    site.wait("the leaderboard view", lambda: set(entries) <= set(site.grid_rows()))
    site.settle()
    site.close_assistant()
    assert records.LEADERBOARD_FILTER in site.body() or set(site.grid_rows()) == set(entries)
    rows = site.grid_rows()
    site.shot("04-leaderboard-view")
    problems = []
    for rid, run in entries.items():
        t = run.data.tags
        missing = _shows_identity(rows[rid], cell=t["cell"], modality=t["modality"], seed=None, stage=t["stage"])
        if t.get("entry") == "fusion" and not any(rule in rows[rid]["name"].split() for rule in RULES) \
                and rows[rid]["cells"].get("tags.`rule`", "") not in RULES:
            missing.append(f"fusion rule {t.get('rule')}")
        if missing:
            problems.append(f"{rows[rid]['name']!r} does not show {', '.join(missing)} (columns: {rows[rid]['cells']})")
    assert not problems, "\n".join(problems)


def test_05_sort_by_top1(site: Site) -> None:
    """Sort menu -> the entries' top-1 metric: its column shows, in percent, best first, the
    report's numbers."""
    from bench.tracking.leaderboard import ENTRY_SORT_METRIC

    _filtered(site)
    site.sort_by(ENTRY_SORT_METRIC)
    col = f"metrics.`{ENTRY_SORT_METRIC}`"
    site.wait(f"the {ENTRY_SORT_METRIC} column", lambda: col in site.column_headers())
    entries = _entries(site)
    site.wait("the entries' rows", lambda: set(entries) <= set(site.grid_rows()), timeout=30)
    rows = site.grid_rows()
    site.shot("05-sorted")
    assert set(rows) == set(entries), {rid: r["name"] for rid, r in rows.items() if rid not in entries}
    shown = [(r["index"], r["cells"].get(col, "")) for r in rows.values()]
    values = [float(v) for _, v in sorted(shown)]
    assert values == sorted(values, reverse=True), values
    rep = site.res.report
    want = sorted([*rep.leaderboard["top1"].to_list(), *rep.fusion["top1"].to_list()], reverse=True)
    assert values == pytest.approx(want, abs=0.01)
    assert all(0 <= v <= 100 for v in values) and max(values) > 1     # percent, not a fraction


def test_06_open_a_trial(site: Site) -> None:
    """Click a trial's name: its page names it and shows its cell, modality, seed, stage, top-1
    in percent and its dataset. (From the toggled runs table: MLflow 3.17 opens a run clicked in a
    shared view in its GenAI layout, which lists no datasets.)"""
    trials, rows = _trial_rows(site, printed_link=False)
    best = max(trials.values(), key=lambda r: site.spec_of(r).accuracy)
    spec = site.spec_of(best)
    assert rows[best.info.run_id]["link"] is not None
    rows[best.info.run_id]["link"].click()
    site.wait("the trial's page", lambda: site.driver.current_url.split("?")[0].endswith(f"/runs/{best.info.run_id}"))
    site.wait("the trial's metrics", lambda: "Metrics" in site.body())
    site.settle()
    site.close_assistant()
    site.shot("06-trial")
    lines = [x.strip() for x in site.body().splitlines()]
    assert best.info.run_name in lines, f"the run's name {best.info.run_name!r} is not on its page"

    def value_after(key: str) -> str | None:
        for i, x in enumerate(lines[:-1]):
            if x == key:
                return lines[i + 1].lstrip(": ").strip()
        return None

    for key, want in (("cell", spec.cell), ("modality", spec.modality), ("seed", str(spec.seed)),
                      ("stage", spec.stage)):
        assert value_after(key) == want, (key, value_after(key))
    pct = [(k, value_after(k)) for k in lines if re.fullmatch(r"(val_)?top-?1[_a-z]*", k or "")]
    assert any(v is not None and _numbers(v) and abs(_numbers(v)[0] - 100 * spec.accuracy) <= 0.051
               for _, v in pct), f"no top-1 of {100 * spec.accuracy:.1f} (percent) among the metrics {pct}"
    datasets = site.body().split("Datasets", 1)[-1][:300]
    assert "isogd" in datasets, f"no dataset on the trial's page: {datasets!r}"


def test_07_html_report_in_the_artifact_view(site: Site) -> None:
    """`bench ui`'s report link: the report renders in MLflow's frame -- its tables, its figures
    loaded, no horizontal overflow, table rows one line high -- and its figures' texts do not
    overlap (checked on the figure objects the report drew)."""
    import matplotlib.pyplot as plt

    from bench.report.render import make_figures

    link = re.search(r"report:\s+(\S+)", site.printed).group(1)
    site.fresh(link.split("/", 3)[3])
    frame = site.wait("the report's frame", lambda: [f for f in site.css("iframe") if f.is_displayed()])[0]
    site.settle()
    site.close_assistant()
    frame = site.css("iframe")[0]
    assert frame.size["width"] >= 800 and frame.size["height"] >= 500, frame.size
    site.driver.switch_to.frame(frame)
    try:
        site.wait("the report's tables", lambda: len(site.css("table")) >= 5)
        def loaded() -> dict[str, Any] | None:
            state = site.driver.execute_script(REPORT_STATE)
            return state if state["images"] and all(i["complete"] for i in state["images"]) else None

        info = site.wait("the report's images", loaded)
    finally:
        site.driver.switch_to.default_content()
    site.shot("07-report")
    rep = site.res.report
    assert info["h1"].startswith(f"Leaderboard: sweep {SWEEP}")
    assert info["leaderboardRows"] == rep.leaderboard.height
    for img in info["images"]:
        assert img["naturalWidth"] > 100 and img["width"] > 100, img
    assert {i["alt"] for i in info["images"]} >= {"cell_bars", "accuracy_vs_params", "confusion_1"}
    assert info["pageWidth"] <= info["viewWidth"] + 1, "the report overflows the frame sideways"
    assert info["mostLines"] == 1, f"a number or label wraps onto {info['mostLines']} lines: {info['wrapped']!r}"
    for name, fig in make_figures(rep).items():
        assert overlapping_texts(fig) == [], name
        plt.close(fig)


REPORT_STATE = """
let most = 0, wrapped = '';
for (const cell of document.querySelectorAll('td:not(.text), th:not(.text)')) {
  const r = document.createRange();
  r.selectNodeContents(cell);
  const lines = new Set(Array.from(r.getClientRects()).map(b => Math.round(b.top))).size;
  if (lines > most) { most = lines; wrapped = cell.innerText; }
}
// the first table after the first h3 (the leaderboard of the first dataset), past its caption
let lb = null;
for (let el = document.querySelector('h3'); el && !lb; ) {
  el = el.nextElementSibling;
  if (el) lb = el.matches('table') ? el : el.querySelector('table');
}
return {
  h1: document.querySelector('h1').innerText,
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth,
                                                  width: i.getBoundingClientRect().width})),
  leaderboardRows: lb ? lb.querySelectorAll('tbody tr').length : -1,
  pageWidth: document.documentElement.scrollWidth, viewWidth: document.documentElement.clientWidth,
  mostLines: most, wrapped: wrapped,
};
"""


def test_08_leaderboard_table_artifact(site: Site) -> None:
    """`bench ui`'s table link: the logged leaderboard table, with the best row's values."""
    link = re.search(r"table:\s+(\S+)", site.printed).group(1)
    site.fresh(link.split("/", 3)[3])
    best = site.res.report.leaderboard.sort("top1", descending=True).row(0, named=True)
    site.wait("the leaderboard table's values", lambda: f"{round(best['top1'], 4):g}" in site.body())
    site.settle()
    site.close_assistant()
    site.shot("08-table")
    assert "SYNTHETIC isogd (valid)" in site.body()


def test_09_sigterm_stops_bench_ui_and_its_server(site: Site) -> None:
    from bench.report.ui import healthy

    assert healthy(site.base)
    left = site.stop(site.ui, grace_s=60)
    assert left == [] and site.ui.returncode == 0, site.ui_out.read_text()
    assert not healthy(site.base, timeout=2), "the MLflow server outlived bench ui"
