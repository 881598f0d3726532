"""Published results, as data: ``bench/resources/baselines.csv``.

Why a data file: the numbers a benchmark is compared against must be checkable line by line
against their sources (SPEC.md's Table 1 and Table 2 and its later state of the art), carry
their citation and evaluation split, and be extended without touching code.

Columns: ``source`` (short key), ``citation``, ``table`` (where in the source), ``dataset``
(``isogd`` | ``jester``, the suite's format names), ``split`` (``valid``, or ``unstated``
where SPEC does not name it), ``modality`` (``rgb`` | ``depth`` | ``flow`` | a ``+``-joined
fusion), ``architecture``, ``cell`` (the suite's cell name when the row is this paper's
network with that cell, else empty), ``metric`` (``top1_pct``), ``value`` (percent),
``params_m`` / ``mult_adds_m`` (Table 1 only: millions, for ONE recurrent layer at ONE time
step, C_in = C_out = 256, 28 x 28 -- not the whole network), ``note``.
"""

from __future__ import annotations

import importlib.resources

import polars as pl

from bench.errors import DataError

RESOURCE = "resources/baselines.csv"
COLUMNS = ("source", "citation", "table", "dataset", "split", "modality", "architecture", "cell",
           "metric", "value", "params_m", "mult_adds_m", "note")


def load_baselines() -> pl.DataFrame:
    """The published results table; fails loudly on a malformed file (names the column)."""
    path = importlib.resources.files("bench") / RESOURCE
    with importlib.resources.as_file(path) as p:
        df = pl.read_csv(p, schema_overrides={"cell": pl.String, "note": pl.String, "value": pl.Float64,
                                              "params_m": pl.Float64, "mult_adds_m": pl.Float64})
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise DataError(p, f"missing column(s) {missing}", line=1)
        for i, r in enumerate(df.iter_rows(named=True), start=2):
            if not r["citation"] or not r["split"] or r["value"] is None:
                raise DataError(p, "every row needs a citation, a split and a value", line=i)
    return df.with_columns(pl.col("cell").fill_null(""), pl.col("note").fill_null(""))
