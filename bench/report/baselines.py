"""Published results, as data: ``bench/resources/baselines.csv``.

Why a data file: the numbers a benchmark is compared against must be checkable line by line
against their sources (the paper's Table 1 and Table 2, and later state of the art), carry
their citation and evaluation split, say how each is known, and be extended without touching
code.

Columns: ``source`` (short key), ``citation``, ``table`` (where in the source), ``dataset``
(``isogd`` | ``jester``, the suite's format names), ``split`` (``valid``, or ``unstated``
where the source does not name it), ``modality`` (``rgb`` | ``depth`` | ``flow`` | a
``+``-joined fusion), ``architecture``, ``cell`` (the suite's cell name when the row is this
paper's network with that cell, else empty), ``metric`` (``top1_pct``), ``value`` (percent),
``params_m`` / ``mult_adds_m`` (Table 1 only: millions, for ONE recurrent layer at ONE time
step, C_in = C_out = 256, 28 x 28 -- not the whole network), ``provenance`` (how the number
and its labels are known, one of `PROVENANCES`), ``note`` (says what is uncertain whenever the
provenance is ``inferred``).

Provenance values:

- ``read in the source``: read, with its split and modality, in the paper that reports it (for
  the ``zhang2018`` rows: the NeurIPS 2018 paper itself).
- ``as cited by Zhang et al. 2018``: another paper's number as the NeurIPS paper's Table 2
  prints it; not checked in the original.
- ``inferred``: the number is printed, but a label of it (its modality or split) is deduced,
  not printed -- e.g. Table 1 never names its IsoGD modality, and the paper's extracted text
  lists some Table 2 rows' RGB and Depth numbers in the reverse of their placement here.
- ``unverified``: not in the NeurIPS paper, and not read in its own source either (the later
  state of the art): compare with care.

The file keeps one row per number *as printed*: the paper prints its own IsoGD RGB results in
both Table 1 and Table 2, so those are two rows. `distinct_results` is the table a reader
gets: one row per published result, the tables that print it named together, and the best
provenance among its printings (Table 2 printing variant (a)'s 55.98 under RGB settles the
modality that Table 1 leaves unnamed).
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import polars as pl

from bench.errors import DataError

RESOURCE = "resources/baselines.csv"
COLUMNS = ("source", "citation", "table", "dataset", "split", "modality", "architecture", "cell",
           "metric", "value", "params_m", "mult_adds_m", "provenance", "note")
READ = "read in the source"
CITED = "as cited by Zhang et al. 2018"
INFERRED = "inferred"
UNVERIFIED = "unverified"
#: How a number is known, best first (`distinct_results` keeps the best of a result's printings).
PROVENANCES = (READ, CITED, INFERRED, UNVERIFIED)
UNSTATED = "unstated"
UNSTATED_TEXT = "not stated in the source"
# One published result: the same number for the same thing, from the same source.
RESULT_KEY = ("source", "dataset", "split", "modality", "architecture", "cell", "metric", "value")


def load_baselines(path: str | Path | None = None) -> pl.DataFrame:
    """The published results table (the packaged ``resources/baselines.csv``, or ``path``); fails
    loudly on a malformed file: a `DataError` naming the file, the line and the column."""
    if path is not None:
        return _read(Path(path))
    resource = importlib.resources.files("bench") / RESOURCE
    with importlib.resources.as_file(resource) as p:
        return _read(Path(p))


def _read(p: Path) -> pl.DataFrame:
    try:
        df = pl.read_csv(p, schema_overrides={"cell": pl.String, "note": pl.String, "value": pl.Float64,
                                              "params_m": pl.Float64, "mult_adds_m": pl.Float64,
                                              "provenance": pl.String})
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as e:
        raise DataError(p, f"not a readable CSV table: {str(e).splitlines()[0]}") from e
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(p, f"missing column(s) {missing}", line=1)
    for i, r in enumerate(df.iter_rows(named=True), start=2):
        if not r["citation"] or not r["split"] or r["value"] is None:
            raise DataError(p, "every row needs a citation, a split and a value", line=i)
        if r["provenance"] not in PROVENANCES:
            raise DataError(p, f"provenance {r['provenance']!r} is not one of {list(PROVENANCES)}", line=i)
        if r["provenance"] == INFERRED and not r["note"]:
            raise DataError(p, "an inferred row needs a note saying what is inferred", line=i)
    return df.with_columns(pl.col("cell").fill_null(""), pl.col("note").fill_null(""))


def split_text(split: str | None) -> str:
    """The split as a reader should see it: ``valid``, or "not stated in the source"."""
    return UNSTATED_TEXT if not split or split == UNSTATED else split


def note_text(note: str | None) -> str:
    """The note without its remark on the split (the split column says it): each ``;``-separated
    clause that is about the split not being named is dropped, keeping what it adds in
    parentheses ("recent IsoGD papers often report the test split")."""
    out = []
    for part in (note or "").split(";"):
        p = part.strip()
        if not p:
            continue
        if p.lower().startswith("split not named"):
            if "(" in p and p.endswith(")"):
                out.append(p[p.index("(") + 1:-1].strip())
            continue
        out.append(p)
    return "; ".join(out)


def distinct_results(baselines: pl.DataFrame) -> pl.DataFrame:
    """One row per published result (`RESULT_KEY`), in the file's order: ``table`` names every
    table that prints it ("Table 1, Table 2"), the Table 1 cost columns are kept, notes are
    joined, ``provenance`` is the best of its printings (`PROVENANCES` order: a result that one
    table prints with its label is read even where another leaves the label to inference);
    ``split`` and ``note`` as `split_text` and `note_text` give them."""
    if baselines.is_empty():
        return baselines
    key = list(RESULT_KEY)
    rank = {p: i for i, p in enumerate(PROVENANCES)}
    merged = (baselines.with_row_index("_row")
              .with_columns(pl.col("provenance").replace_strict(rank, default=len(rank),
                                                                return_dtype=pl.Int64).alias("_rank"))
              .group_by(key, maintain_order=True)
              .agg(pl.col("_row").min(), pl.col("citation").first(),
                   pl.col("table").unique(maintain_order=True).str.join(", "),
                   pl.col("params_m").drop_nulls().first(), pl.col("mult_adds_m").drop_nulls().first(),
                   pl.col("provenance").sort_by("_rank").first(),
                   pl.col("note").filter(pl.col("note") != "").unique(maintain_order=True).str.join("; "))
              .sort("_row").drop("_row"))
    return (merged.with_columns(pl.col("split").map_elements(split_text, return_dtype=pl.String),
                                pl.col("note").fill_null("").map_elements(note_text, return_dtype=pl.String))
            .select(list(COLUMNS)))
