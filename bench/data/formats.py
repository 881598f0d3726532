"""Readers for the real on-disk formats: ChaLearn IsoGD lists, 20BN-Jester CSVs, frame lists.

Each reader turns a split's metadata into a :class:`~bench.data.index.DatasetIndex` without
touching the samples themselves: a 148,092-clip Jester index must build in seconds, so
reading does no per-sample ``stat``. Whether the files exist and decode is the job of
``probe=True`` (fills ``num_frames``) and of ``bench data check`` (reports every problem).

Layouts (paths relative to the dataset root ``DIR``, as the datasets ship them):

- IsoGD: ``DIR/{train,valid,test}_list.txt``, lines ``RGB_PATH DEPTH_PATH LABEL`` with labels
  1..249 (0 = no label, the test list's placeholder). Flow sits beside RGB, ``M_`` -> ``F_``.
  ``DIR/classes.txt`` (one name a line), when present, names the classes and fixes their count.
- Jester: ``DIR/jester-v1-labels.csv`` (class names, label = line order),
  ``DIR/jester-v1-{train,validation}.csv`` (``id;Label Name``), ``DIR/jester-v1-test.csv``
  (``id``), frames in ``DIR/20bn-jester-v1/<id>/00001.jpg ...``; depth and flow in
  ``20bn-jester-v1-depth`` / ``20bn-jester-v1-flow`` in the same layout.
- Frame lists (the paper's code): ``PATH FRAMECOUNT LABEL`` with 0-based labels, ``PATH`` a
  folder of ``%06d.jpg`` frames; default list ``DIR/{split}_list.txt``.

Every malformed line raises :class:`~bench.errors.DataError` naming the file and line
(``bench data check`` collects them all instead). ``DIR/.bench/index-<split>.parquet``, written
by ``bench data prepare``, supplies probed frame counts when it is newer than the lists; the
lists stay the source of truth for which samples exist and their labels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from bench.data.index import MODALITIES, NO_LABEL, DatasetIndex, Sample
from bench.errors import DataError

FORMATS = ("isogd", "jester", "framelist")
SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {"validation": "valid", "val": "valid"}

ISOGD_NUM_CLASSES = 249
ISOGD_LISTS = {s: f"{s}_list.txt" for s in SPLITS}
ISOGD_PREFIX = {"rgb": "M_", "depth": "K_", "flow": "F_"}

JESTER_LABELS = "jester-v1-labels.csv"
JESTER_CSVS = {"train": "jester-v1-train.csv", "valid": "jester-v1-validation.csv",
               "test": "jester-v1-test.csv"}
JESTER_DIRS = {"rgb": "20bn-jester-v1", "depth": "20bn-jester-v1-depth", "flow": "20bn-jester-v1-flow"}

FRAMELIST_LISTS = {s: f"{s}_list.txt" for s in SPLITS}
CLASSES_FILE = "classes.txt"
CACHE_DIR = ".bench"

OnError = Callable[[DataError], None]
T = TypeVar("T")
R = TypeVar("R")


def _raise(err: DataError) -> None:
    raise err


# --------------------------------------------------------------------------------------------
# shared helpers


def normalize_split(split: str) -> str:
    """``"validation"``/``"val"`` -> ``"valid"``; anything outside train/valid/test is refused."""
    s = _SPLIT_ALIASES.get(split, split)
    if s not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return s


def _check_modalities(modalities: Iterable[str] | None, allowed: Sequence[str] = MODALITIES
                      ) -> tuple[str, ...] | None:
    if modalities is None:
        return None
    mods = tuple(dict.fromkeys(modalities))
    bad = [m for m in mods if m not in allowed]
    if bad or not mods:
        raise ValueError(f"modalities must be a non-empty subset of {tuple(allowed)}, got {tuple(modalities)}")
    return tuple(m for m in MODALITIES if m in mods)


def _read_lines(path: Path) -> list[str]:
    """The file's lines (BOM and line endings removed); DataError if missing or not text."""
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        raise DataError(path, "missing list file") from None
    except IsADirectoryError:
        raise DataError(path, "expected a list file, found a directory") from None
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def _rel_path(text: str, list_file: Path, lineno: int) -> str:
    """``text`` as a path inside the dataset root, or DataError: a list must not point outside it."""
    if not text:
        raise DataError(list_file, "empty path", line=lineno)
    # Fast path: almost every line is a plain relative path.
    if text[0] not in "/\\~" and ".." not in text and ":" not in text and "\\" not in text:
        return text
    parts = text.replace("\\", "/").split("/")
    if (text[0] in "/\\" or (len(text) > 1 and text[1] == ":") or ".." in parts
            or text.startswith("~")):
        raise DataError(list_file, f"path {text!r} points outside the dataset root "
                                   "(paths must be relative and must not contain '..')", line=lineno)
    return text


def _parse_int(text: str, what: str, list_file: Path, lineno: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(list_file, f"{what} must be an integer, got {text!r}", line=lineno) from None


def read_class_names(path: str | Path) -> list[str]:
    """One class name a line (blank lines ignored); DataError on a duplicate or an empty file."""
    path = Path(path)
    names: list[str] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(_read_lines(path), 1):
        name = raw.strip()
        if not name:
            continue
        if name in seen:
            raise DataError(path, f"class {name!r} listed twice (first at line {seen[name]})", line=lineno)
        seen[name] = lineno
        names.append(name)
    if not names:
        raise DataError(path, "no class names in the file")
    return names


def _classes_file(root: Path) -> list[str] | None:
    path = root / CLASSES_FILE
    return read_class_names(path) if path.is_file() else None


def _abs(root_s: str, rel: str) -> Path:
    return Path(f"{root_s}/{rel}")


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, workers: int = 1, desc: str = "",
                 progress: bool | None = None) -> Iterator[R]:
    """``map(fn, items)`` in order, over ``workers`` processes, with a tqdm bar on stderr.

    Processes, not threads: demuxing and JPEG checks hold the GIL for most of their time.
    ``spawn`` because forking a process that has started polars/torch threads can deadlock.
    ``progress`` None shows the bar only on a terminal.
    """
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=desc, unit="item", disable=None if progress is None else not progress,
               leave=False)
    try:
        if workers <= 1 or len(items) < 2:
            for item in items:
                yield fn(item)
                bar.update()
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        chunk = max(1, min(256, len(items) // (workers * 8)))
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            for result in ex.map(fn, items, chunksize=chunk):
                yield result
                bar.update()
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------
# IsoGD


def read_isogd_list(list_file: str | Path, *, root: str | Path, split: str = "train",
                    modalities: Iterable[str] | None = None, classes: Sequence[str] | None = None,
                    on_error: OnError | None = None) -> DatasetIndex:
    """Read an IsoGD list (``RGB_PATH DEPTH_PATH LABEL``) into an index; labels 1..C -> 0..C-1.

    ``modalities`` None means RGB and depth (depth left out when the first sample's RGB file
    exists and its depth file does not), plus flow when the first sample's ``F_`` file exists
    (``bench data flow`` writes all or nothing). ``classes`` defaults to
    ``root/classes.txt`` when present, else the 249 IsoGD classes named "0".."248". A label 0
    is IsoGD's "no label" placeholder and becomes NO_LABEL in the test split; elsewhere it is
    out of range. ``on_error`` receives each bad line instead of raising (used by the checker).
    """
    list_file, root = Path(list_file), Path(root).absolute()
    split = normalize_split(split)
    mods = _check_modalities(modalities)
    if classes is None:
        classes = _classes_file(root) or [str(i) for i in range(ISOGD_NUM_CLASSES)]
    classes = list(classes)
    num_classes = len(classes)
    report = on_error or _raise
    root_s = str(root)
    lines = _read_lines(list_file)
    list_name = str(list_file)

    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(lines, 1):
        fields = raw.split()
        if not fields:
            continue  # blank line (often the last one)
        try:
            if len(fields) != 3:
                raise DataError(list_file, f"expected 3 fields 'RGB_PATH DEPTH_PATH LABEL', "
                                           f"got {len(fields)}: {raw.strip()!r}", line=lineno)
            rgb = _rel_path(fields[0], list_file, lineno)
            depth = _rel_path(fields[1], list_file, lineno)
            raw_label = _parse_int(fields[2], "label", list_file, lineno)
            if raw_label == 0 and split == "test":
                label = NO_LABEL
            elif 1 <= raw_label <= num_classes:
                label = raw_label - 1
            else:
                raise DataError(list_file, f"label {raw_label} out of range 1..{num_classes}"
                                + (" (0 = no label is only valid in the test list)" if raw_label == 0 else ""),
                                line=lineno)
            sample_id = os.path.splitext(rgb)[0]
            if sample_id in seen:
                raise DataError(list_file, f"sample {sample_id!r} listed twice "
                                           f"(first at line {seen[sample_id]})", line=lineno)
            if mods is None:
                # Detected from the first sample (two stats): depth unless its RGB file is on
                # disk and its depth file is not (an RGB-only copy), flow when F_ exists.
                mods = ("rgb", "depth")
                if os.path.isfile(f"{root_s}/{rgb}") and not os.path.isfile(f"{root_s}/{depth}"):
                    mods = ("rgb",)
                flow = _flow_path(rgb)
                if flow is not None and os.path.isfile(f"{root_s}/{flow}"):
                    mods = mods + ("flow",)
            paths: dict[str, Path] = {}
            for m in mods:
                if m == "rgb":
                    paths[m] = _abs(root_s, rgb)
                elif m == "depth":
                    paths[m] = _abs(root_s, depth)
                else:
                    flow = _flow_path(rgb)
                    if flow is None:
                        raise DataError(list_file, f"cannot place flow beside {rgb!r}: "
                                                   "RGB file name does not start with 'M_'", line=lineno)
                    paths[m] = _abs(root_s, flow)
        except DataError as e:
            report(e)
            continue
        seen[sample_id] = lineno
        samples.append(Sample(sample_id, label, paths, None, f"{list_name}:{lineno}"))
    return DatasetIndex("isogd", root, split, classes, samples)


def _flow_path(rgb_rel: str) -> str | None:
    """``train/001/M_00001.avi`` -> ``train/001/F_00001.avi`` (flow sits beside RGB)."""
    head, _, name = rgb_rel.rpartition("/")
    if not name.startswith("M_"):
        return None
    return f"{head}/F_{name[2:]}" if head else f"F_{name[2:]}"


# --------------------------------------------------------------------------------------------
# Jester


def read_jester(root: str | Path, split: str, *, list_file: str | Path | None = None,
                labels_file: str | Path | None = None, modalities: Iterable[str] | None = None,
                frames_dirs: dict[str, str] | None = None,
                on_error: OnError | None = None) -> DatasetIndex:
    """Read a Jester split CSV (``id;Label Name``, test: ``id``) into an index.

    Labels are positions in ``jester-v1-labels.csv``; a name not in it is a DataError naming
    the file, the line and the name. ``modalities`` None means RGB plus depth/flow when their
    top-level folders exist. ``frames_dirs`` overrides the per-modality folder names
    (default ``20bn-jester-v1``, ``-depth``, ``-flow``).
    """
    root = Path(root).absolute()
    split = normalize_split(split)
    list_file = Path(list_file) if list_file is not None else root / JESTER_CSVS[split]
    labels_file = Path(labels_file) if labels_file is not None else root / JESTER_LABELS
    dirs = {**JESTER_DIRS, **(frames_dirs or {})}
    mods = _check_modalities(modalities)
    if mods is None:
        mods = ("rgb",) + tuple(m for m in ("depth", "flow") if (root / dirs[m]).is_dir())
    for m in mods:
        if not (root / dirs[m]).is_dir():
            raise DataError(root / dirs[m], f"missing frame folder for modality {m!r}"
                            + (" (compute it with `bench data flow`)" if m == "flow" else ""))
    classes = read_class_names(labels_file)
    label_of = {name: i for i, name in enumerate(classes)}
    report = on_error or _raise
    prefixes = [(m, f"{root}/{dirs[m]}/") for m in mods]
    list_name = str(list_file)

    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(_read_lines(list_file), 1):
        line = raw.strip()
        if not line:
            continue
        clip_id, sep, name = line.partition(";")
        clip_id, name = clip_id.strip(), name.strip()
        try:
            if not clip_id:
                raise DataError(list_file, f"empty clip id in {line!r}", line=lineno)
            if "/" in clip_id or "\\" in clip_id or clip_id in (".", ".."):
                raise DataError(list_file, f"clip id {clip_id!r} is not a folder name: it would point "
                                           "outside the frames folder", line=lineno)
            if ";" in name:
                raise DataError(list_file, f"expected 'id;Label Name', got extra fields: {line!r}",
                                line=lineno)
            if name:
                label = label_of.get(name)
                if label is None:
                    raise DataError(list_file, f"unknown label name {name!r} (not in {labels_file.name})",
                                    line=lineno)
            elif split == "test":
                label = NO_LABEL
            else:
                raise DataError(list_file, f"expected 'id;Label Name', got {line!r}", line=lineno)
            if clip_id in seen:
                raise DataError(list_file, f"clip {clip_id!r} listed twice (first at line {seen[clip_id]})",
                                line=lineno)
        except DataError as e:
            report(e)
            continue
        seen[clip_id] = lineno
        samples.append(Sample(clip_id, label, {m: Path(p + clip_id) for m, p in prefixes}, None,
                              f"{list_name}:{lineno}"))
    return DatasetIndex("jester", root, split, classes, samples)


# --------------------------------------------------------------------------------------------
# frame lists


def read_framelist(list_file: str | Path, *, root: str | Path | None = None, split: str = "train",
                   classes: Sequence[str] | None = None, num_classes: int | None = None,
                   on_error: OnError | None = None) -> DatasetIndex:
    """Read a frame list (``PATH FRAMECOUNT LABEL``, 0-based labels) into an RGB-only index.

    ``root`` defaults to the list's folder. Classes come from ``classes``, else
    ``root/classes.txt``, else ``num_classes``, else the largest label + 1 (named "0", "1", ...).
    """
    list_file = Path(list_file)
    root = Path(root).absolute() if root is not None else list_file.absolute().parent
    split = normalize_split(split)
    if classes is None:
        classes = _classes_file(root)
        if classes is None and num_classes is not None:
            classes = [str(i) for i in range(num_classes)]
    limit = len(classes) if classes is not None else None
    report = on_error or _raise
    root_s = str(root)
    list_name = str(list_file)

    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(_read_lines(list_file), 1):
        fields = raw.split()
        if not fields:
            continue
        try:
            if len(fields) != 3:
                raise DataError(list_file, f"expected 3 fields 'PATH FRAMECOUNT LABEL', "
                                           f"got {len(fields)}: {raw.strip()!r}", line=lineno)
            rel = _rel_path(fields[0].rstrip("/"), list_file, lineno)
            count = _parse_int(fields[1], "frame count", list_file, lineno)
            if count < 1:
                raise DataError(list_file, f"frame count must be >= 1, got {count}", line=lineno)
            label = _parse_int(fields[2], "label", list_file, lineno)
            if label < 0 or (limit is not None and label >= limit):
                raise DataError(list_file, f"label {label} out of range 0..{limit - 1}" if limit is not None
                                else f"label must be >= 0, got {label}", line=lineno)
            if rel in seen:
                raise DataError(list_file, f"folder {rel!r} listed twice (first at line {seen[rel]})",
                                line=lineno)
        except DataError as e:
            report(e)
            continue
        seen[rel] = lineno
        samples.append(Sample(rel, label, {"rgb": _abs(root_s, rel)}, count, f"{list_name}:{lineno}"))
    if classes is None:
        top = max((s.label for s in samples), default=-1)
        classes = [str(i) for i in range(top + 1)]
    return DatasetIndex("framelist", root, split, list(classes), samples)


# --------------------------------------------------------------------------------------------
# dispatch, cache, probing


def default_list_files(fmt: str, root: str | Path, split: str) -> list[Path]:
    """The metadata files a split is read from (what the index cache must be newer than)."""
    root, split = Path(root), normalize_split(split)
    if fmt == "isogd":
        files = [root / ISOGD_LISTS[split]]
    elif fmt == "jester":
        files = [root / JESTER_CSVS[split], root / JESTER_LABELS]
    elif fmt == "framelist":
        files = [root / FRAMELIST_LISTS[split]]
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt != "jester" and (root / CLASSES_FILE).is_file():
        files.append(root / CLASSES_FILE)
    return files


def load_index(fmt: str, root: str | Path, split: str, *, list_file: str | Path | None = None,
               modalities: Iterable[str] | None = None, probe: bool = False, workers: int = 1,
               use_cache: bool = True) -> DatasetIndex:
    """The index of one split of a dataset in format ``fmt`` ("isogd" | "jester" | "framelist").

    Reading touches only the metadata (seconds for all of Jester). ``probe=True`` opens every
    sample (``workers`` processes) to fill ``num_frames`` -- the smallest count over the
    sample's modalities -- and raises the first DataError it meets. Without probing,
    ``num_frames`` comes from the frame list, or from ``ROOT/.bench/index-<split>.parquet``
    (written by ``bench data prepare``) when that is newer than the list files.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    root = Path(root).absolute()
    split = normalize_split(split)
    if not root.is_dir():
        raise DataError(root, "dataset root is not a directory")
    if fmt == "isogd":
        index = read_isogd_list(list_file or root / ISOGD_LISTS[split], root=root, split=split,
                                modalities=modalities)
    elif fmt == "jester":
        index = read_jester(root, split, list_file=list_file, modalities=modalities)
    else:
        mods = _check_modalities(modalities, allowed=("rgb",))
        del mods  # frame lists carry RGB only; asking for more is a ValueError above
        index = read_framelist(list_file or root / FRAMELIST_LISTS[split], root=root, split=split)
    if probe:
        index = probe_index(index, workers=workers)
    elif use_cache and list_file is None and fmt != "framelist":
        counts = read_cached_counts(root, split, newer_than=default_list_files(fmt, root, split),
                                    modalities=index.modalities)
        if counts:
            index.samples = [s if s.num_frames is not None or s.sample_id not in counts
                             else _with_frames(s, counts[s.sample_id]) for s in index.samples]
            # decodable counts for every sample: nothing to count again (`DatasetIndex.counts_decoded`)
            index.counts_decoded = all(counts.get(s.sample_id) == s.num_frames for s in index.samples)
    return index


def _with_frames(s: Sample, n: int | None) -> Sample:
    return Sample(s.sample_id, s.label, s.paths, n, s.source)


def probe_sample(sample: Sample, *, verify: str = "none") -> int:
    """Decodable frames of a sample (smallest over its modalities); DataError naming the
    broken file. Videos are counted as ``bench.data.probe.probe_video`` counts: the frames a
    full decode returns, not the container's packets."""
    from bench.data.probe import list_frame_files, probe_video

    counts = []
    for path in sample.paths.values():
        if path.suffix and not path.is_dir():
            counts.append(probe_video(path, verify=verify).num_frames)  # type: ignore[arg-type]
        else:
            counts.append(len(list_frame_files(path)))
    return min(counts)


# DataError's constructor takes keyword-only ``line``, so it does not survive pickling between
# processes; worker results carry (path, reason, line) and the parent rebuilds the error.
ErrorTuple = tuple[str, str, "int | None"]


def error_to_tuple(e: DataError) -> ErrorTuple:
    return (e.path, e.reason, e.line)


def error_from_tuple(t: ErrorTuple) -> DataError:
    return DataError(t[0], t[1], line=t[2])


def _probe_one(sample: Sample) -> tuple[int | None, ErrorTuple | None]:
    try:
        return probe_sample(sample), None
    except DataError as e:
        return None, error_to_tuple(e)
    except Exception as e:  # noqa: BLE001 -- in a worker process: report it against the file
        path = next(iter(sample.paths.values()), sample.source)
        return None, (str(path), f"cannot probe it: {type(e).__name__}: {e}", None)


def probe_index(index: DatasetIndex, *, workers: int = 1) -> DatasetIndex:
    """A copy of ``index`` with ``num_frames`` filled by opening every sample's files."""
    samples = []
    for s, (n, t) in zip(index.samples, parallel_map(_probe_one, index.samples, workers=workers,
                                                     desc=f"probe {index.split}")):
        if t is not None:
            err = error_from_tuple(t)
            if s.source:
                raise DataError(err.path, f"{err.reason} (listed at {s.source})", line=err.line)
            raise err
        if s.num_frames is not None and n != s.num_frames and index.format == "framelist":
            file, _, line = s.source.rpartition(":")
            raise DataError(file, f"list says {s.num_frames} frames, {s.paths['rgb']} has {n}",
                            line=int(line))
        samples.append(_with_frames(s, n))
    return DatasetIndex(index.format, index.root, index.split, index.classes, samples, counts_decoded=True)


#: Parquet key-value metadata of an index cache: what its ``num_frames`` counts. Caches
#: without it were written when probing counted video packets, which overstates the frames
#: of files whose packets include placeholders; they are ignored.
CACHE_COUNT_KEY, CACHE_COUNT_VALUE = "bench.num_frames", "decodable-frames"


def cache_path(root: str | Path, split: str) -> Path:
    return Path(root) / CACHE_DIR / f"index-{normalize_split(split)}.parquet"


def write_index_cache(index: DatasetIndex) -> Path:
    """Write ``ROOT/.bench/index-<split>.parquet`` (sample_id, label, num_frames, one path column
    per modality, relative to the root) so later loads get frame counts without probing.

    ``num_frames`` must be decodable frames (what :func:`probe_sample` returns); the file says
    so in its metadata (``CACHE_COUNT_KEY``)."""
    import polars as pl

    out = cache_path(index.root, index.split)
    out.parent.mkdir(parents=True, exist_ok=True)
    root_s = str(index.root) + "/"
    cols: dict[str, list] = {
        "sample_id": [s.sample_id for s in index.samples],
        "label": [s.label for s in index.samples],
        "num_frames": [s.num_frames for s in index.samples],
    }
    for m in index.modalities:
        cols[m] = [str(s.paths[m]).removeprefix(root_s) for s in index.samples]
    df = pl.DataFrame(cols, schema_overrides={"label": pl.Int32, "num_frames": pl.Int32})
    tmp = out.with_suffix(".parquet.tmp")
    df.write_parquet(tmp, metadata={CACHE_COUNT_KEY: CACHE_COUNT_VALUE})
    os.replace(tmp, out)  # never leave a half-written cache behind
    return out


def read_cached_counts(root: str | Path, split: str, *, newer_than: Iterable[Path] = (),
                       modalities: Iterable[str] = ()) -> dict[str, int] | None:
    """sample_id -> num_frames from the index cache, or None when absent, older than a list,
    written before one of ``modalities`` existed (its counts would not cover, say, new flow),
    or written by a version that counted packets rather than decodable frames."""
    path = cache_path(root, split)
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    for f in newer_than:
        try:
            if f.stat().st_mtime > mtime:
                return None
        except FileNotFoundError:
            continue
    import warnings

    import polars as pl

    try:
        if not set(modalities) <= set(pl.read_parquet_schema(path)):
            return None
        if pl.read_parquet_metadata(path).get(CACHE_COUNT_KEY) != CACHE_COUNT_VALUE:
            warnings.warn(f"{path}: ignoring an index cache that counts packets, not decodable "
                          "frames; run `bench data prepare` again to rewrite it", stacklevel=2)
            return None
        df = pl.read_parquet(path, columns=["sample_id", "num_frames"]).drop_nulls()
    except Exception as e:  # noqa: BLE001 -- a damaged cache is not worth failing a run over
        warnings.warn(f"{path}: ignoring unreadable index cache ({e})", stacklevel=2)
        return None
    return dict(zip(df["sample_id"].to_list(), df["num_frames"].to_list()))
