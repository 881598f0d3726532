"""The report as files: Markdown, one self-contained HTML page, PNG figures, CSV tables.

The HTML embeds its figures as base64 PNG and its style inline, so it can be mailed, opened
from MLflow's artifact view (which shows HTML artifacts in a frame) or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
import math
import struct
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import polars as pl

from bench.report import plots
from bench.report.build import Report
from bench.report.search import MIN_TRIALS, objective_figure, searched_keys

# (column, header, formatter)
Col = tuple[str, str, Callable[[Any], str]]


def _f(digits: int) -> Callable[[Any], str]:
    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.{digits}f}"
    return fmt


def _signed(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"


def _int(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v):,}"


def _mega(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v / 1e6:,.2f}M"


def _p(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}" if v >= 1e-3 else f"{v:.1e}"


def _s(v: Any) -> str:
    return "-" if v is None or v == "" else str(v)


def _ci(row: dict[str, Any], col: str = "top1") -> str:
    lo, hi = row.get(f"{col}_ci_low"), row.get(f"{col}_ci_high")
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return "-"
    return f"[{lo:.2f}, {hi:.2f}]"


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _mean_std(row: dict[str, Any], col: str = "top1") -> str:
    """``75.00 ± 5.00``; ``75.00 ± n/a`` for one seed (a spread over one seed is unknown, not 0);
    a bare number for a published result (no seeds)."""
    m, s = row.get(col), row.get(f"{col}_std")
    if _nan(m):
        return "-"
    if not _nan(s):
        return f"{m:.2f} ± {s:.2f}"
    return f"{m:.2f} ± n/a" if row.get("seeds") == 1 else f"{m:.2f}"


def _interval(lo: Any, hi: Any, *, signed: bool = False) -> str:
    if _nan(lo) or _nan(hi):
        return "-"
    return f"[{lo:+.2f}, {hi:+.2f}]" if signed else f"[{lo:.2f}, {hi:.2f}]"


def _prob(v: Any) -> str:
    return "-" if _nan(v) else f"{v:.2f}"


def _yes(v: Any) -> str:
    return "-" if v is None else ("yes" if v else "no")


def _vs(ref: str) -> Callable[[dict[str, Any]], str]:
    """``+20.00 [+15.00, +25.00], Holm p 0.004, sig.``: the difference in points, its 95%
    interval, and the Holm-adjusted p of the report's family."""
    def fmt(row: dict[str, Any]) -> str:
        d, sig = row.get(f"vs_{ref}"), row.get(f"vs_{ref}_significant")
        if sig == "-":
            return "(reference)"
        if _nan(d):
            return "n/a"
        text = f"{d:+.2f} {_interval(row.get(f'vs_{ref}_ci_low'), row.get(f'vs_{ref}_ci_high'), signed=True)}"
        text += f", Holm p {_p(row.get(f'vs_{ref}_p_holm'))}"
        return text + (", sig." if sig == "yes" else "")
    return fmt


def backing(df: pl.DataFrame, *, seeds: Sequence[str] = ("seeds",), clips: str = "clips", per: str = "cell") -> str:
    """The caption a table's numbers rest on: ``3 seeds x 40 clips per cell`` (ranges where rows differ)."""
    if df.is_empty():
        return ""

    def span(cols: Sequence[str]) -> str:
        vals = [int(v) for c in cols if c in df.columns for v in df[c].to_list() if not _nan(v)]
        if not vals:
            return "?"
        lo, hi = min(vals), max(vals)
        return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"

    n_seeds = span(seeds)
    return f"{n_seeds} seed{'' if n_seeds == '1' else 's'} x {span([clips])} clips per {per}"


LEADERBOARD_COLS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("data", lambda r: _s(r["data"])), ("stage", lambda r: _s(r["stage"])), ("cell", lambda r: _s(r["cell"])),
    ("modality", lambda r: _s(r["modality"])), ("seeds", lambda r: _int(r["seeds"])),
    ("clips", lambda r: _int(r.get("clips"))),
    ("top-1 % (mean ± std)", _mean_std), ("95% CI", _ci), ("top-5 %", lambda r: _mean_std(r, "top5")),
    ("params", lambda r: _int(r["params"])), ("Mult-Adds/clip", lambda r: _mega(r["macs_per_clip"])),
    ("train clips/s", lambda r: _f(1)(r["train_clips_per_s"])),
    ("vs convlstm (pts)", _vs("convlstm")), ("vs a (pts)", _vs("a")),
    ("paper % (real data)", lambda r: _f(2)(r["paper"])), ("chance %", lambda r: _f(2)(r["chance"])),
]
FUSION_COLS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("stages", lambda r: _s(r.get("stages") or r["stage"])), ("cell", lambda r: _s(r["cell"])),
    ("modalities", lambda r: _s(r["modalities"])), ("rule", lambda r: _s(r["rule"])),
    ("seeds", lambda r: _int(r["seeds"])), ("clips", lambda r: _int(r["n"])),
    ("top-1 % (mean ± std)", _mean_std), ("95% CI", _ci),
    ("best single", lambda r: f"{_s(r.get('best_single'))} {_f(2)(r['best_single_top1'])}"),
    ("gain (pts)", lambda r: _signed(r["gain"])),
    ("gain 95% CI", lambda r: _interval(r.get("gain_ci_low"), r.get("gain_ci_high"), signed=True)),
    ("P(fused > single)", lambda r: _prob(r.get("prob_improvement"))),
    ("p (bootstrap)", lambda r: _p(r.get("p_boot"))), ("Holm p", lambda r: _p(r.get("p_holm"))),
    ("significant (Holm)", lambda r: _yes(r.get("significant"))),
    ("McNemar sig. seeds", lambda r: _s(r["significant_seeds"])), ("weights (fitted)", lambda r: _s(r["weights"])),
]
SIGNIFICANCE_COLS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("stage", lambda r: _s(r["stage"])), ("modality", lambda r: _s(r["modality"])),
    ("cell", lambda r: _s(r["cell"])), ("vs", lambda r: _s(r["reference"])),
    ("seeds", lambda r: f"{_int(r['seeds'])} vs {_int(r['seeds_ref'])}"), ("clips", lambda r: _int(r["n"])),
    ("top-1 %", lambda r: _f(2)(r["top1"])), ("ref top-1 %", lambda r: _f(2)(r["top1_ref"])),
    ("diff (pts)", lambda r: _signed(r["diff"])),
    ("95% CI (pts)", lambda r: _interval(r["diff_ci_low"], r["diff_ci_high"], signed=True)),
    ("P(cell > ref)", lambda r: _prob(r["prob_improvement"])),
    ("p (bootstrap)", lambda r: _p(r["p_boot"])), ("Holm p", lambda r: _p(r["p_holm"])),
    ("significant (Holm)", lambda r: _yes(r["significant"])),
]
COMPARISON_COLS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("modality", lambda r: _s(r["modality"])), ("method", lambda r: _s(r["method"])),
    ("source", lambda r: _s(r["source"])), ("measured on", lambda r: _s(r["data"])),
    ("how known", lambda r: _s(r["provenance"])),
    ("top-1 %", lambda r: _mean_std(r)), ("seeds", lambda r: _int(r["seeds"])),
]
TRIAL_COLS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("trial", lambda r: _s(r["trial_name"])), ("dataset", lambda r: _s(r["dataset"])),
    ("synthetic", lambda r: _s(r["synthetic"])), ("stage", lambda r: _s(r["stage"])), ("cell", lambda r: _s(r["cell"])),
    ("modality", lambda r: _s(r["modality"])), ("seed", lambda r: _int(r["seed"])),
    ("status", lambda r: _s(r["status"])),
    ("epochs", lambda r: f"{_int(r['last_epoch'])}/{_int(r['epochs'])}"),
    ("val top-1 %", lambda r: _f(2)(None if r["val_top1"] is None else 100 * r["val_top1"])),
    ("lr", lambda r: "-" if r["lr"] is None or math.isnan(r["lr"]) else f"{r['lr']:.3g}"),
    ("selected", lambda r: "yes" if r["selected"] else "no"), ("why not", lambda r: _s(r["reason"])),
]
SEARCH_COLS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("dataset", lambda r: _s(r["dataset"])), ("stage", lambda r: _s(r["stage"])), ("cell", lambda r: _s(r["cell"])),
    ("modality", lambda r: _s(r["modality"])), ("trials", lambda r: _int(r["trials"])),
    ("stopped early", lambda r: _int(r["stopped_early"])), ("selected (per seed)", lambda r: _s(r["selected"])),
    ("selected top-1 %", lambda r: _f(2)(r["selected_top1"])),
]
IMPORTANCE_COLS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("dataset", lambda r: _s(r["dataset"])), ("stage", lambda r: _s(r["stage"])), ("cell", lambda r: _s(r["cell"])),
    ("modality", lambda r: _s(r["modality"])), ("key", lambda r: _s(r["key"])),
    ("importance (fANOVA)", lambda r: _f(3)(r["importance"])), ("full-length trials", lambda r: _int(r["trials"])),
]


def trial_cols(keys: Sequence[str]) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    """The trials table's columns with every searched key beside ``lr``."""
    extra = [(k, (lambda k: lambda r: "-" if r[k] is None or (isinstance(r[k], float) and math.isnan(r[k]))
                  else (f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k])))(k)) for k in keys if k != "lr"]
    i = next(j for j, (name, _) in enumerate(TRIAL_COLS) if name == "lr") + 1
    return [*TRIAL_COLS[:i], *extra, *TRIAL_COLS[i:]]


BASELINE_COLS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("dataset", lambda r: _s(r["dataset"])), ("split", lambda r: _s(r["split"])),
    ("printed in", lambda r: _s(r["table"])), ("how known", lambda r: _s(r["provenance"])),
    ("modality", lambda r: _s(r["modality"])),
    ("architecture", lambda r: _s(r["architecture"])), ("top-1 %", lambda r: _f(2)(r["value"])),
    ("params (M)", lambda r: _f(3)(r["params_m"])), ("Mult-Adds (M)", lambda r: _f(0)(r["mult_adds_m"])),
    ("citation", lambda r: _s(r["citation"])), ("note", lambda r: _s(r["note"])),
]


def _cells(df: pl.DataFrame, cols: Sequence[tuple[str, Callable[[dict[str, Any]], str]]]) -> list[list[str]]:
    return [[fmt(r) for _, fmt in cols] for r in df.iter_rows(named=True)]


def markdown_table(df: pl.DataFrame, cols: Sequence[tuple[str, Callable[[dict[str, Any]], str]]]) -> str:
    if df.is_empty():
        return "_(none)_\n"
    head = [h for h, _ in cols]
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in _cells(df, cols)]
    return "\n".join(lines) + "\n"


# Columns of free text: they wrap (every other cell stays on one line) and align left.
TEXT_COLUMNS = frozenset({"citation", "note", "why not", "method", "source", "architecture", "weights (fitted)"})
# Columns of names and labels: one line, aligned left.
LABEL_COLUMNS = frozenset({"data", "stage", "stages", "best single", "cell", "modality", "modalities", "rule", "trial", "dataset", "split",
                           "printed in", "measured on", "status", "synthetic", "vs", "selected"})


def html_table(df: pl.DataFrame, cols: Sequence[tuple[str, Callable[[dict[str, Any]], str]]]) -> str:
    """A table in a horizontally scrolling box: a frame narrower than the table (MLflow's
    artifact view) scrolls it instead of squeezing every column into a stack of short lines."""
    if df.is_empty():
        return "<p><em>(none)</em></p>\n"
    kinds = [' class="text"' if h in TEXT_COLUMNS else ' class="label"' if h in LABEL_COLUMNS else ""
             for h, _ in cols]
    head = "".join(f"<th{k}>{html.escape(h)}</th>" for (h, _), k in zip(cols, kinds))
    body = "".join("<tr>" + "".join(f"<td{k}>{html.escape(c)}</td>" for c, k in zip(row, kinds)) + "</tr>\n"
                   for row in _cells(df, cols))
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table></div>\n'


def summary_markdown(report: Report) -> str:
    """A short Markdown summary (the leaderboard run's description in the MLflow UI)."""
    lines = [f"**Leaderboard of sweep `{report.sweep}`** -- {report.source}", ""]
    for n in report.notes:
        if "SYNTHETIC" in n:
            lines += [f"> {n}", ""]
    lines.append(markdown_table(report.leaderboard, [c for c in LEADERBOARD_COLS
                                                     if c[0] in ("data", "stage", "cell", "modality", "seeds",
                                                                 "top-1 % (mean ± std)", "95% CI",
                                                                 "vs convlstm (pts)", "vs a (pts)")]))
    lines.append("Full report: artifacts `report/report.html` and `report/report.md`; tables under `tables/`.")
    return "\n".join(lines)


FIGURE_TEXT = {
    "accuracy_vs_params": "Top-1 against the network's parameters (mean and 95% interval over seeds and clips).",
    "accuracy_vs_macs": "Top-1 against the measured multiply-adds per clip.",
    "cell_bars": "Top-1 per cell and modality (95% hierarchical bootstrap interval over seeds and clips; dotted: "
                 "chance).",
    "fusion_gains": "Gain of late fusion over the best single modality on the same clips (95% bootstrap interval).",
    **{f"objective_{k}": f"Final validation top-1 of every finished trial against {k} (x: stopped early by the "
       "scheduler)." for k in ("lr", "weight_decay", "batch_size", "momentum", "lr_end", "lr_power")},
}


def make_figures(report: Report) -> dict[str, Any]:
    figs: dict[str, Any] = {}
    for name, fig in (("accuracy_vs_params", plots.accuracy_vs_cost(report.leaderboard, x="params")),
                      ("accuracy_vs_macs", plots.accuracy_vs_cost(report.leaderboard, x="macs_per_clip")),
                      ("cell_bars", plots.cell_bars(report.leaderboard)),
                      ("fusion_gains", plots.fusion_gains(report.fusion))):
        if fig is not None:
            figs[name] = fig
    for i, cm in enumerate(report.confusions):
        figs[f"confusion_{i + 1}"] = plots.confusion(cm.matrix, f"{cm.title}: top-1 {cm.accuracy:.1f}%",
                                                     cm.classes)
    if report.search.height:
        for key in searched_keys(report.trials):
            fig = objective_figure(report.trials, key)
            if fig is not None:
                figs[f"objective_{key}"] = fig
    return figs


METHOD_MD = """\
## How these numbers are made

- **Per trial**: the final epoch's validation top-1/top-5 (not the best epoch: choosing epochs on
  the validation split would select on the benchmark's test data). Where a search ran several
  trials for one configuration and seed, the one with the best final top-1 counts.
- **Over seeds**: mean and sample standard deviation ("± n/a" for one seed: its spread is
  unknown, not zero), and a 95% interval from a hierarchical bootstrap: the seeds are resampled
  with replacement, then the clips within each resampled seed; the interval is the percentile one
  of the resampled means, so it lies within [0, 100] for any number of seeds (Student's t over two
  seeds does not: its 97.5% quantile is 12.7). With one seed it covers clip sampling only. Each
  table says how many seeds and clips back it.
- **Architectures compared**: every pair of cells per modality, once, over all their seeds on the
  clips both scored: the mean difference with a bootstrap interval (each replicate resamples each
  cell's seeds and one set of clips shared by both, paired by clip); the probability of
  improvement P(cell > ref), the chance that a random training run of the cell scores a higher
  top-1 than a random run of the reference, ties 1/2 (Mann-Whitney U / (n x m) over the seeds'
  accuracies, as in Agarwal et al. NeurIPS 2021 and Bouthillier et al. MLSys 2021); and a two-sided
  p-value from the bootstrap's standard error (difference / se against the normal).
- **Multiple comparisons**: the p-values of every pair and of every fusion against its best single
  modality form one family, corrected with Holm's step-down method; "significant" means
  Holm-adjusted p < 0.05.
- **Late fusion** of the same cell and seed across modalities, on the clips every fused modality
  scored, whichever stage trained each modality (depth pre-trained, RGB fine-tuned from it: one
  fused row; a modality both stages trained is taken from the later stage): the mean of the class
  probabilities, the product rule (sum of log-probabilities), and a fitted weighted product (one
  non-negative weight per modality, fitted by maximum likelihood). Scores are probabilities
  (softmax of the logits; tables holding logits are softmaxed first). Fitted weights are
  cross-fitted: the clips are split into two folds by a seeded hash of the sample id, weights
  fitted on one fold score the other, so no clip is scored by weights fitted on it. Gains are
  against the single modality with the best mean top-1 on the same clips, with a bootstrap
  interval paired by seed and clip and P(fused > single) over seeds; McNemar's exact test per seed
  is in the per-seed table.
- **Published results** come from `bench/resources/baselines.csv` with citation, split and how each
  number is known (read in the source / as cited by Zhang et al. 2018 / inferred / unverified;
  docs/FIDELITY.md lists the caveats). Rows
  measured on SYNTHETIC data test the machinery and are not comparable with them.
"""


def _source_line(report: Report) -> str:
    return f"Sweep `{report.sweep}`; records from {report.source}; generated {time.strftime('%Y-%m-%d %H:%M:%S')}."


def write_report(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``figures/*.png`` and ``tables/*.csv``; returns paths."""
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    plt = plots._plt()
    figs = make_figures(report)
    pngs: dict[str, bytes] = {}
    for name, fig in figs.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        pngs[name] = buf.getvalue()
        (out / "figures" / f"{name}.png").write_bytes(pngs[name])
    for name, df in report.tables().items():
        if df.width:
            _csv_safe(df).write_csv(out / "tables" / f"{name}.csv")
    _csv_safe(report.published).write_csv(out / "tables" / "baselines.csv")

    datasets = report.leaderboard["dataset"].unique(maintain_order=True).to_list() if report.leaderboard.height else []
    md = [f"# Leaderboard: sweep `{report.sweep}`", "", _source_line(report), ""]
    hx = [f"<h1>Leaderboard: sweep <code>{html.escape(report.sweep)}</code></h1>",
          f"<p>{html.escape(_source_line(report))}</p>"]
    for n in report.notes:
        md += [f"> {n}", ""]
        hx.append(f'<p class="note">{html.escape(n)}</p>')
    md += ["Accuracies are percentages; differences are percentage points.", ""]
    hx.append("<p>Accuracies are percentages; differences are percentage points.</p>")

    def section(title: str, df: pl.DataFrame, cols: Any, level: int = 2, caption: str = "") -> None:
        md.extend([f"{'#' * level} {title}", ""] + ([f"_{caption}_", ""] if caption else []) + [markdown_table(df, cols)])
        hx.extend([f"<h{level}>{html.escape(title)}</h{level}>"]
                  + ([f'<p class="caption">{html.escape(caption)}</p>'] if caption else []) + [html_table(df, cols)])

    def figure(name: str) -> None:
        if name not in pngs:
            return
        text = FIGURE_TEXT.get(name, "")
        md.extend([f"![{name}](figures/{name}.png)", "", f"_{text}_" if text else "", ""])
        b64 = base64.b64encode(pngs[name]).decode()
        w, h = struct.unpack(">II", pngs[name][16:24])          # the PNG's IHDR: width, height
        hx.append(f'<figure><img alt="{name}" width="{w}" height="{h}" src="data:image/png;base64,{b64}"/>'
                  f"<figcaption>{html.escape(text)}</figcaption></figure>")

    md += ["## Single modalities", ""]
    hx.append("<h2>Single modalities</h2>")
    for d in datasets:
        lb = report.leaderboard.filter(pl.col("dataset") == d)
        section(f"Dataset {d}", lb, LEADERBOARD_COLS, 3, caption=backing(lb) + " (cell x modality)")
    for name in ("cell_bars", "accuracy_vs_params", "accuracy_vs_macs"):
        figure(name)
    md += ["## Late fusion", ""]
    hx.append("<h2>Late fusion</h2>")
    if report.fusion.is_empty():
        md += ["_Only one modality per cell and seed with scores, in any stage: nothing to fuse._", ""]
        hx.append("<p><em>Only one modality per cell and seed with scores, in any stage: nothing to fuse.</em></p>")
    for d in report.fusion["dataset"].unique(maintain_order=True).to_list() if report.fusion.height else []:
        fu = report.fusion.filter(pl.col("dataset") == d)
        section(f"Dataset {d}", fu, FUSION_COLS, 3, caption=backing(fu, clips="n", per="fused row"))
    figure("fusion_gains")
    section("Published results beside this sweep", report.comparison, COMPARISON_COLS)
    md += ["## Confusion matrices", ""]
    hx.append("<h2>Confusion matrices</h2>")
    for i in range(len(report.confusions)):
        figure(f"confusion_{i + 1}")
    if report.search.height:
        md += ["## Hyperparameter search", "", "Selected on the validation split; `bench winners` re-runs the "
               "selection with more seeds on a held-out split.", ""]
        hx.append("<h2>Hyperparameter search</h2><p>Selected on the validation split; <code>bench winners</code> "
                  "re-runs the selection with more seeds on a held-out split.</p>")
        section("What each study selected", report.search, SEARCH_COLS, 3)
        section("How much each searched key mattered", report.importance, IMPORTANCE_COLS, 3)
        if report.importance.is_empty():
            why = (f"Not computed: Optuna's fANOVA needs at least {MIN_TRIALS} full-length trials of a cell whose "
                   "scores differ.")
            md += [f"_{why}_", ""]
            hx.append(f"<p><em>{html.escape(why)}</em></p>")
        for key in searched_keys(report.trials):
            figure(f"objective_{key}")
    section("Architectures compared (every pair of cells per modality, over seeds and clips)", report.significance,
            SIGNIFICANCE_COLS, caption=backing(report.significance, seeds=("seeds", "seeds_ref"), clips="n",
                                               per="cell"))
    section("Trials", report.trials, trial_cols(searched_keys(report.trials)))
    section("Published results (bench/resources/baselines.csv)", report.published, BASELINE_COLS)
    md.append(METHOD_MD)
    hx.append(_md_list_to_html(METHOD_MD))

    (out / "report.md").write_text("\n".join(md))
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>"
            f"<title>Leaderboard {html.escape(report.sweep)}</title><style>{CSS}</style></head>"
            f"<body>\n" + "\n".join(hx) + "\n</body></html>\n")
    (out / "report.html").write_text(page)
    return {"markdown": out / "report.md", "html": out / "report.html", "figures": out / "figures",
            "tables": out / "tables"}


def _csv_safe(df: pl.DataFrame) -> pl.DataFrame:
    """CSV cannot hold nested types; none of ours are nested, but be explicit about it."""
    return df.select([pl.col(c).cast(pl.String) if isinstance(t, (pl.List, pl.Struct)) else pl.col(c)
                      for c, t in df.schema.items()])


def _md_list_to_html(md: str) -> str:
    """The method section: a heading and a bullet list with continuation lines and `code`."""
    import re

    out, item = [], None
    for line in md.splitlines():
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2><ul>")
        elif line.startswith("- "):
            if item is not None:
                out.append(f"<li>{item}</li>")
            item = html.escape(line[2:])
        elif line.strip() and item is not None:
            item += " " + html.escape(line.strip())
    if item is not None:
        out.append(f"<li>{item}</li>")
    out.append("</ul>")
    text = "\n".join(out)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:12px 16px;color:#222;font-size:14px;
line-height:1.4}
h1{font-size:22px;margin:4px 0 8px}h2{font-size:18px;margin:22px 0 6px}h3{font-size:15px;margin:14px 0 4px}
.table-wrap{overflow-x:auto;max-width:100%;margin:6px 0 18px}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap;vertical-align:top}
th{background:#f3f3f3}.label{text-align:left}
.text{text-align:left;white-space:normal;min-width:14em;max-width:36em}
.caption{font-style:italic;color:#444;margin:2px 0}.note{background:#fff6d6;border-left:4px solid #e0b400;padding:6px 10px}
figure{margin:10px 0 24px}img{max-width:100%;height:auto}figcaption{font-size:12px;color:#555}
code{background:#f3f3f3;padding:0 3px}
"""
