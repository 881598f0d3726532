"""The published results in bench/resources/baselines.csv equal SPEC.md's, number for number.

SPEC.md (the paper distilled: Table 1, Table 2 and the later state of the art) is copied below
as the expected values. When SPEC.md itself is at hand ($GESTUREBENCH_SPEC, docs/SPEC.md, or
the project's shared/SPEC.md) its Markdown tables are parsed too and must agree, so a drift of
either copy fails here."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bench.report.baselines import load_baselines

CELL_NAMES = {"ConvLSTM": "convlstm", "(a)": "a", "(b)": "b", "(c)": "c", "(d)": "d"}

# SPEC.md, "Table 1 of the paper": cell -> (Jester val %, IsoGD val % RGB, params M, Mult-Adds M)
TABLE1 = {
    "convlstm": (95.11, 52.01, 4.719, 3700),
    "a": (95.12, 55.98, 0.529, 415),
    "b": (94.18, 43.93, 0.667, 522),
    "c": (95.13, 53.27, 0.601, 472),
    "d": (95.10, 54.11, 0.601, 472),
}
# SPEC.md, "Table 2 of the paper": IsoGD validation, architecture -> (RGB, Depth, Flow); None = "-"
TABLE2 = {
    "ResNet50": (33.22, 27.98, 46.22),
    "Pyramidal C3D": (36.58, 38.00, None),
    "C3D": (37.30, 40.50, None),
    "Res3D": (45.07, 48.44, 44.45),
    "3DCNN+BiConvLSTM+2DCNN": (51.31, 49.81, 45.30),
    "Res3D+ConvLSTM+MobileNet": (52.01, 51.30, 45.59),
    "Res3D+ConvLSTM variant (a)+MobileNet": (55.98, 53.28, 46.51),
}
# SPEC.md, later work on IsoGD (RGB-D): (source, modality) -> value
LATER = {("zhou2022", "rgb"): 60.87, ("zhou2022", "depth"): 60.17, ("zhou2022", "rgb+depth"): 66.79,
         ("zhou2023", "rgb+depth"): 72.7, ("narayana2018", "fused (12 channels)"): 82.07}


@pytest.fixture(scope="module")
def table():
    return load_baselines()


def test_table1_rows(table) -> None:
    t1 = table.filter(table["table"] == "Table 1")
    assert t1.height == 10
    for cell, (jester, isogd, params, macs) in TABLE1.items():
        for dataset, value in (("jester", jester), ("isogd", isogd)):
            row = t1.filter((t1["cell"] == cell) & (t1["dataset"] == dataset)).to_dicts()
            assert len(row) == 1, (cell, dataset)
            r = row[0]
            assert (r["value"], r["params_m"], r["mult_adds_m"]) == (value, params, macs), (cell, dataset)
            assert (r["split"], r["modality"], r["metric"]) == ("valid", "rgb", "top1_pct")
            assert "NeurIPS 2018" in r["citation"]


def test_table1_agrees_with_the_model_package(table) -> None:
    from bench.models.complexity import PAPER_TABLE1

    t1 = table.filter((table["table"] == "Table 1") & (table["dataset"] == "isogd"))
    assert {r["cell"]: (r["params_m"], r["mult_adds_m"]) for r in t1.to_dicts()} == PAPER_TABLE1


def test_table2_rows(table) -> None:
    t2 = table.filter(table["table"] == "Table 2")
    for arch, values in TABLE2.items():
        rows = t2.filter(t2["architecture"] == arch)
        got = {r["modality"]: r["value"] for r in rows.to_dicts()}
        want = {m: v for m, v in zip(("rgb", "depth", "flow"), values) if v is not None}
        assert got == want, arch
        assert set(rows["split"]) == {"valid"} and set(rows["dataset"]) == {"isogd"}
    assert t2.height == sum(v is not None for vals in TABLE2.values() for v in vals)
    # the paper's own two networks are mapped to the suite's cells
    assert set(t2.filter(t2["architecture"] == "Res3D+ConvLSTM+MobileNet")["cell"]) == {"convlstm"}
    assert set(t2.filter(t2["architecture"] == "Res3D+ConvLSTM variant (a)+MobileNet")["cell"]) == {"a"}


def test_later_state_of_the_art(table) -> None:
    for (source, modality), value in LATER.items():
        rows = table.filter((table["source"] == source) & (table["modality"] == modality)).to_dicts()
        assert len(rows) == 1 and rows[0]["value"] == value, (source, modality)
        assert rows[0]["split"] in ("valid", "unstated")      # every row names its split, or says it is not named
    assert table.height == 10 + 19 + len(LATER)             # nothing else hides in the file
    assert all(table["citation"].str.len_chars() > 20)


def test_distinct_results_for_readers(table) -> None:
    """What the report shows: one row per published result, the split in words, notes without
    their remark on the split (the split column carries it)."""
    from bench.report.baselines import RESULT_KEY, UNSTATED_TEXT, distinct_results, note_text

    d = distinct_results(table)
    assert d.columns == table.columns
    assert d.height == d.unique(subset=list(RESULT_KEY)).height == table.height - 2   # IsoGD RGB convlstm, a
    assert set(d["split"]) == {"valid", UNSTATED_TEXT}
    assert set(d.filter(d["table"].str.contains(","))["table"]) == {"Table 1, Table 2"}
    assert not d["note"].str.contains("split not named").any()
    assert note_text("split not named in X (papers often report the test split); compare with care") == \
        "papers often report the test split; compare with care"
    assert note_text("learned fusion (CAPF); split not named in X; compare with care") == \
        "learned fusion (CAPF); compare with care"
    assert note_text("") == ""


def _spec_path() -> Path | None:
    here = Path(__file__).resolve().parents[1]
    for p in (os.environ.get("GESTUREBENCH_SPEC"), here / "docs" / "SPEC.md", here.parent / "shared" / "SPEC.md"):
        if p and Path(p).is_file():
            return Path(p)
    return None


def _md_rows(text: str, heading: str) -> list[list[str]]:
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*-", line):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:]          # without the header


def test_equal_to_spec_md_when_present(table) -> None:
    path = _spec_path()
    if path is None:
        pytest.skip("SPEC.md not found (set GESTUREBENCH_SPEC); the literal copy above was checked")
    text = path.read_text()
    t1 = {CELL_NAMES[r[0]]: (float(r[1]), float(r[2]), float(r[3].rstrip("M")), float(r[4].rstrip("M")))
          for r in _md_rows(text, "## Table 1 of the paper")}
    assert t1 == {k: tuple(float(x) for x in v) for k, v in TABLE1.items()}
    t2 = {}
    for r in _md_rows(text, "## Table 2 of the paper"):
        arch = re.sub(r"\s*\(.*\)$", "", r[0])
        t2[arch] = tuple(None if x == "-" else float(x) for x in r[1:4])
    assert t2 == TABLE2
    later = re.search(r"Zhou et al\., CVPR 2022, RGB ([\d.]+) / Depth ([\d.]+) / fused ([\d.]+)", text)
    tpami = re.search(r"Zhou et al\., TPAMI 2023,\s+fused up to ([\d.]+)", text)
    narayana = re.search(r"fused score\s+\(([\d.]+)\)", text)
    assert later and tpami and narayana
    assert [float(x) for x in later.groups()] == [LATER[("zhou2022", m)] for m in ("rgb", "depth", "rgb+depth")]
    assert float(tpami.group(1)) == LATER[("zhou2023", "rgb+depth")]
    assert float(narayana.group(1)) == LATER[("narayana2018", "fused (12 channels)")]
