"""``bench data check``: find every problem in a dataset copy before a run trips over it.

A training run that dies on sample 90,000 of Jester because one frame folder is empty, or
that silently trains on a cut-off IsoGD video, costs hours. This scans every list line and
every file a list refers to -- missing, corrupt, truncated, unreadable or zero-frame videos,
missing or empty frame folders, gaps in frame numbering, unreadable JPGs, frame counts that
disagree with a frame list or with the index cache (``.bench/index-<split>.parquet``) --
prints each problem as ``file[:line]: reason``, then a summary, and exits 1 when anything is
wrong (0 otherwise), so it can gate a job script. ``--deep`` decodes every frame and also
compares each video's probed frame count (what the index cache stores) with the decoded one.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.data.formats import (
    FORMATS,
    FRAMELIST_LISTS,
    ISOGD_LISTS,
    JESTER_CSVS,
    SPLITS,
    ErrorTuple,
    cache_path,
    default_list_files,
    error_from_tuple,
    error_to_tuple,
    normalize_split,
    parallel_map,
    read_cached_counts,
    read_framelist,
    read_isogd_list,
    read_jester,
)
from bench.data.index import MODALITIES, DatasetIndex, Sample
from bench.errors import CLIError, DataError


@dataclass(frozen=True, slots=True)
class _Item:
    """One file or frame folder to check, with where it was listed (for the message)."""
    path: Path
    is_video: bool
    source: str
    expected_frames: int | None
    deep: bool


def _split_list(fmt: str, root: Path, split: str) -> Path:
    names = {"isogd": ISOGD_LISTS, "jester": JESTER_CSVS, "framelist": FRAMELIST_LISTS}[fmt]
    return root / names[split]


def read_split_collecting(fmt: str, root: Path, split: str, *, modalities=None
                          ) -> tuple[DatasetIndex | None, list[DataError]]:
    """Read one split, keeping every bad line as a DataError instead of stopping at the first."""
    problems: list[DataError] = []
    try:
        if fmt == "isogd":
            index = read_isogd_list(_split_list(fmt, root, split), root=root, split=split,
                                    modalities=modalities, on_error=problems.append)
        elif fmt == "jester":
            index = read_jester(root, split, modalities=modalities, on_error=problems.append)
        else:
            index = read_framelist(_split_list(fmt, root, split), root=root, split=split,
                                   on_error=problems.append)
    except DataError as e:  # the list or labels file itself is unusable
        return None, problems + [e]
    return index, problems


def _check_item(item: _Item) -> tuple[list[ErrorTuple], int | None]:
    """Problems of one file or folder, and its frame count (None when it has none)."""
    try:
        problems, frames = _check_item_errors(item)
    except Exception as e:  # noqa: BLE001 -- in a worker process: whatever it is, it is this file's
        where = f" (listed at {item.source})" if item.source else ""
        problems, frames = [DataError(item.path, f"cannot check it: {type(e).__name__}: {e}{where}")], None
    return [error_to_tuple(e) for e in problems], frames


def _check_item_errors(item: _Item) -> tuple[list[DataError], int | None]:
    from bench.data.probe import (
        check_image_file,
        count_decoded_frames,
        probe_video,
        scan_frame_folder,
    )

    where = f" (listed at {item.source})" if item.source else ""
    try:
        if item.is_video:
            info = probe_video(item.path, verify="tail")
            if not item.deep:
                return [], info.num_frames
            # The probe's count is what `bench data prepare` stores and an uncached load uses;
            # a full decode is what every reader indexes. They must agree.
            decoded = info.num_frames if info.counted == "decode" else count_decoded_frames(item.path)
            if decoded != info.num_frames:
                stated = (f"; the container header states {info.header_frames}"
                          if info.header_frames else "")
                return [DataError(item.path, f"frame count: the probe counts {info.num_frames} "
                                             f"frames, a full decode gives {decoded}{stated}"
                                             f"{where}")], decoded
            return [], decoded
        files, problems = scan_frame_folder(item.path)
    except DataError as e:
        return [DataError(e.path, e.reason + where, line=e.line)], None
    problems = [DataError(e.path, e.reason + where) for e in problems]
    for f in files:
        why = check_image_file(f, decode=item.deep)
        if why is not None:
            problems.append(DataError(f, why + where))
    if item.expected_frames is not None and item.expected_frames != len(files):
        file, _, line = item.source.rpartition(":")
        problems.append(DataError(file, f"list says {item.expected_frames} frames, "
                                        f"{item.path} has {len(files)}", line=int(line)))
    return problems, len(files)


def _cached_counts(fmt: str, root: Path, index: DatasetIndex) -> dict[str, int]:
    """The index cache's counts for ``index`` (empty when there is none the readers would use)."""
    if fmt == "framelist":
        return {}
    return read_cached_counts(root, index.split, newer_than=default_list_files(fmt, root, index.split),
                              modalities=index.modalities) or {}


def check_dataset(fmt: str, root: str | Path, *, splits: list[str] | None = None,
                  modalities: list[str] | None = None, workers: int = 1, deep: bool = False,
                  progress: bool | None = None, stats: dict | None = None) -> list[DataError]:
    """Every problem in the dataset at ``root`` (an empty list when it is clean).

    ``splits`` None checks every split whose list exists. ``deep`` decodes every video frame
    and every image instead of the quick checks (headers, packet counts, tail decode, JPEG
    markers) and reports a video whose probed frame count differs from its decoded one.
    Counts are compared with the index cache, when one is in use, either way. ``stats``,
    when given, receives counts (splits, samples, files) for a summary. No exception about a
    file escapes: each is a DataError naming it and the list line.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    root = Path(root).absolute()
    if not root.is_dir():
        return [DataError(root, "dataset root is not a directory")]
    if splits is None:
        splits = [s for s in SPLITS if _split_list(fmt, root, s).is_file()]
        if not splits:
            names = ", ".join(_split_list(fmt, root, s).name for s in SPLITS)
            return [DataError(root, f"no split list found (expected one of {names})")]
    else:
        splits = [normalize_split(s) for s in splits]

    problems: list[DataError] = []
    items: list[_Item] = []
    owners: list[int] = []   # per item: its sample's position in ``samples``
    samples: list[tuple[Sample, int | None, Path]] = []   # sample, cached count, cache file
    for split in splits:
        index, bad_lines = read_split_collecting(fmt, root, split, modalities=modalities)
        problems.extend(bad_lines)
        if index is None:
            continue
        cached = _cached_counts(fmt, root, index)
        for s in index.samples:
            samples.append((s, cached.get(s.sample_id), cache_path(root, split)))
            for path in s.paths.values():
                items.append(_Item(path, fmt == "isogd", s.source,
                                   s.num_frames if fmt == "framelist" else None, deep))
                owners.append(len(samples) - 1)
    frames: list[list[int | None]] = [[] for _ in samples]
    for owner, (found, n) in zip(owners, parallel_map(_check_item, items, workers=workers,
                                                       desc="check", progress=progress)):
        problems.extend(error_from_tuple(t) for t in found)
        frames[owner].append(n)
    # A sample's count is the smallest over its files (formats.probe_sample); the loader trusts
    # the cache's, so a stale one (written before the files changed, or by a version that
    # counted packets) would make it ask for frames that are not there.
    for (s, cached, cache), counts in zip(samples, frames):
        if cached is None or not counts or None in counts:
            continue
        if cached != min(counts):
            what = "decode to" if deep else "hold"
            problems.append(DataError(cache, f"sample {s.sample_id!r} (listed at {s.source}): the "
                                             f"index cache states {cached} frames, its files {what} "
                                             f"{min(counts)}; run `bench data prepare` again or "
                                             "delete the cache"))
    if stats is not None:
        stats.update(splits=splits, samples=len(samples), files=len(items))
    return problems


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="scan a dataset copy and list every problem (exit 1 if any)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", type=Path, help="dataset root (the folder holding the lists/CSVs)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--split", nargs="+", choices=SPLITS + ("validation",), default=None,
                   help="splits to check (default: every split whose list exists)")
    p.add_argument("--modalities", nargs="+", choices=MODALITIES, default=None,
                   help="modalities to check (default: those the layout has)")
    p.add_argument("--workers", type=int, default=1, help="processes for the file checks")
    p.add_argument("--deep", action="store_true",
                   help="decode every video frame and every image (slow, catches mid-file damage)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.workers < 1:

        raise CLIError("--workers must be >= 1")
    stats: dict = {}
    problems = check_dataset(args.format, args.root, splits=args.split, modalities=args.modalities,
                             workers=args.workers, deep=args.deep, stats=stats)
    for p in problems:
        print(p)
    where = f"{args.format} dataset at {args.root}"
    if stats:
        where += (f": {stats['samples']} samples, {stats['files']} files/folders in "
                  f"split(s) {', '.join(stats['splits'])}")
    verdict = f"{len(problems)} problem(s) found" if problems else "no problems found"
    print(f"checked {where}; {verdict}", file=sys.stdout)
    return 1 if problems else 0
