"""The published results in bench/resources/baselines.csv equal SPEC.md's, number for number.

SPEC.md (the paper distilled: Table 1, Table 2 and the later state of the art) is copied below
as the expected values. When SPEC.md itself is at hand ($GESTUREBENCH_SPEC, docs/SPEC.md, or
the project's shared/SPEC.md) its Markdown tables are parsed too and must agree, so a drift of
either copy fails here. Every row says how its number is known (``provenance``); where the
paper's text is at hand (shared/paper/), the zhang2018 numbers and the RGB/Depth order of
Table 2 are checked against it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bench.errors import DataError
from bench.report.baselines import CITED, INFERRED, PROVENANCES, READ, UNVERIFIED, load_baselines

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


# ----------------------------------------------------------------------------- provenance

def test_every_row_says_how_its_number_is_known(table) -> None:
    assert set(table["provenance"]) <= set(PROVENANCES)
    assert table["provenance"].null_count() == 0
    for r in table.to_dicts():
        if r["provenance"] == INFERRED:          # an inference says what it infers
            assert r["note"], r
        if r["source"] == "zhang2018":
            assert r["provenance"] in (READ, INFERRED), r
        elif r["table"] == "Table 2":
            assert r["provenance"] in (CITED, INFERRED), r
    later = table.filter(table["table"] == "later SOTA")
    assert set(later["provenance"]) == {UNVERIFIED}


def test_narayanas_fused_score_is_not_claimed_as_validation(table) -> None:
    """82.07 is printed in Narayana et al.'s abstract, which names no split (its "previous best"
    67.71 is a test-set score); Zhang et al. 2018 mention the result but print no number."""
    row = table.filter((table["source"] == "narayana2018") & (table["value"] == 82.07)).to_dicts()
    assert len(row) == 1
    r = row[0]
    assert r["split"] != "valid" and r["split"] == "unstated"
    assert "test split" in r["note"]
    assert r["table"] == "abstract" and "as cited in Zhang" not in r["citation"]


def test_zhang2017_is_an_iccv_workshops_paper(table) -> None:
    rows = table.filter(table["source"] == "zhang2017")
    assert rows.height == 3
    for c in rows["citation"]:
        assert "ICCV Workshops 2017" in c and "ICCV 2017" not in c, c
    # the other ICCVW 2017 paper of Table 2 keeps its workshop label too
    assert all("ICCV Workshops 2017" in c for c in table.filter(table["source"] == "miao2017")["citation"])


def test_disputed_rgb_depth_rows_are_marked(table) -> None:
    """The rows whose RGB/Depth order the paper's text reverses are inferred, with a note."""
    t2 = table.filter((table["table"] == "Table 2") & table["modality"].is_in(["rgb", "depth"]))
    disputed = {r["architecture"] for r in t2.to_dicts() if r["provenance"] == INFERRED}
    assert disputed == {"Pyramidal C3D", "C3D", "Res3D", "Res3D+ConvLSTM+MobileNet"}
    for r in t2.filter(t2["architecture"].is_in(list(disputed))).to_dicts():
        assert "RGB/depth placement disputed" in r["note"], r


def test_distinct_results_keep_the_best_provenance(table) -> None:
    from bench.report.baselines import distinct_results

    d = distinct_results(table)
    assert set(d["provenance"]) <= set(PROVENANCES)

    def prov(cell: str) -> str:
        hit = d.filter((d["source"] == "zhang2018") & (d["dataset"] == "isogd") & (d["modality"] == "rgb")
                       & (d["cell"] == cell))
        assert hit.height == 1 and hit["table"][0] == "Table 1, Table 2"
        return hit["provenance"][0]

    assert prov("a") == READ                 # Table 2 prints 55.98 under RGB
    assert prov("convlstm") == INFERRED      # both printings leave the modality to inference


def _write_variant(tmp_path: Path, edit) -> Path:
    import importlib.resources

    text = (importlib.resources.files("bench") / "resources/baselines.csv").read_text()
    lines = text.splitlines(keepends=True)
    lines = edit(lines)
    out = tmp_path / "baselines.csv"
    out.write_text("".join(lines))
    return out


def test_a_malformed_provenance_names_the_line(tmp_path: Path) -> None:
    def edit(lines):
        lines[4] = lines[4].replace(",read in the source,", ",read it somewhere,")
        return lines

    p = _write_variant(tmp_path, edit)
    with pytest.raises(DataError) as e:
        load_baselines(p)
    assert e.value.line == 5 and f"{p}:5:" in str(e.value) and "read it somewhere" in str(e.value)
    assert load_baselines(_write_variant(tmp_path, lambda ls: ls)).height == 34   # the path parameter itself


def test_an_empty_provenance_or_a_missing_column_is_an_error(tmp_path: Path) -> None:
    def empty(lines):
        lines[12] = lines[12].replace(",as cited by Zhang et al. 2018,", ",,")
        return lines

    with pytest.raises(DataError) as e:
        load_baselines(_write_variant(tmp_path, empty))
    assert e.value.line == 13

    no_column = tmp_path / "no_provenance.csv"
    load_baselines().drop("provenance").write_csv(no_column)
    with pytest.raises(DataError) as e:
        load_baselines(no_column)
    assert e.value.line == 1 and "provenance" in str(e.value)

    def ragged(lines):                       # a header that does not fit its rows: a DataError too
        return [ln.replace(",provenance,note", ",note") if i == 0 else ln for i, ln in enumerate(lines)]

    with pytest.raises(DataError):
        load_baselines(_write_variant(tmp_path, ragged))


# ----------------------------------------------------------------------------- against the paper's text

def _paper_text() -> str | None:
    here = Path(__file__).resolve().parents[1]
    for d in (here.parent / "shared" / "paper", here / "shared" / "paper"):
        for f in sorted(d.glob("*.txt")) if d.is_dir() else []:
            raw = f.read_text()
            try:
                import json

                raw = json.loads(raw).get("full_text", raw)
            except ValueError:
                pass
            if "Attention in Convolutional LSTM" in raw and "Table 2:" in raw:
                return raw
    return None


def test_zhang2018_numbers_are_the_papers(table) -> None:
    text = _paper_text()
    if text is None:
        pytest.skip("the paper's text (shared/paper/*.txt) is not on this machine")
    t1 = text[text.index("Table 1: Comparison"):text.index("The lower accuracy of the variant (b)")]
    t2 = text[text.index("Table 2: Comparison"):text.index("Figure 3:")]
    assert "on the valid set of IsoGD" in t2
    for r in table.filter(table["source"] == "zhang2018").to_dicts():
        block = t1 if r["table"] == "Table 1" else t2
        assert re.search(rf"(?<![\d.]){r['value']:.2f}(?!\d)", block), r
        if r["params_m"] is not None:
            assert f"{r['params_m']:.3f}M" in block and f"{r['mult_adds_m']:.0f}M" in block, r


def test_table2_text_order_agrees_unless_marked(table) -> None:
    """The extracted text gives each Table 2 row's RGB and Depth numbers as a pair; a row placed
    the other way round must be `inferred` (see the note), every other row must follow it."""
    text = _paper_text()
    if text is None:
        pytest.skip("the paper's text (shared/paper/*.txt) is not on this machine")
    t2 = text[text.index("Table 2: Comparison"):text.index("Figure 3:")]
    rgb_depth = re.findall(r"\d+\.\d+", t2[t2.index("RGB Depth"):t2.index("Flow")])
    pairs = list(zip(rgb_depth[0::2], rgb_depth[1::2]))
    assert len(pairs) == len(TABLE2)
    for arch, (first, second) in zip(TABLE2, pairs):
        rows = table.filter((table["table"] == "Table 2") & (table["architecture"] == arch))
        got = {r["modality"]: r for r in rows.to_dicts()}
        rgb, depth = got["rgb"], got["depth"]
        assert {f"{rgb['value']:.2f}", f"{depth['value']:.2f}"} == {first, second}, arch
        in_order = (f"{rgb['value']:.2f}", f"{depth['value']:.2f}") == (first, second)
        for r in (rgb, depth):
            assert (r["provenance"] == INFERRED) == (not in_order), arch
            if not in_order:
                assert f"as {first}, {second}" in r["note"], arch
