"""``bench data prepare``: turn the downloads of a licensed dataset into a checked, indexed copy.

Neither dataset can ship with the suite; a user downloads it under its licence and runs
``bench data prepare --format jester|isogd --src DOWNLOADS --root DIR``. What is expected in
``DOWNLOADS``:

- Jester: the parts ``20bn-jester-v1-00``, ``20bn-jester-v1-01``, ... of ONE ``.tar.gz``
  (streamed one after the other, never joined on disk: the joined archive is 23 GB), or a
  single ``*.tar.gz``/``*.tgz``; and the CSVs ``jester-v1-labels.csv``, ``jester-v1-train.csv``,
  ``jester-v1-validation.csv``, ``jester-v1-test.csv`` (inside or beside the archive; the
  labels fall back to the packaged copy). Members ``20bn-jester-v1/<id>/NNNNN.jpg`` (or
  ``<id>/NNNNN.jpg``) land in ``DIR/20bn-jester-v1/``.
- IsoGD: any ``*.zip`` (the official ``IsoGD_phase_1.zip`` holds ``train/`` and ``valid/``,
  ``IsoGD_phase_2.zip`` holds ``test/``). Whatever folder a member sits under, the part from
  its ``train/``, ``valid/`` or ``test/`` component on is kept (``IsoGD_phase_1/train/001/
  M_00001.avi`` -> ``DIR/train/001/M_00001.avi``). The lists ``{train,valid,test}_list.txt``
  are taken from the archives, else from ``DOWNLOADS``, else from the packaged copy.

Then the counts are verified (every listed sample must be on disk; with ``--full``, the list
lengths must match the official release: Jester 118,562 / 14,787 / 14,743, IsoGD 35,878 /
5,784 / 6,271 lines), videos are optionally transcoded (``--transcode vp9``: DALI on CPU
decodes VP8/VP9/MJPEG only), flow optionally computed (``--flow``), and the index cache
``DIR/.bench/index-<split>.parquet`` written with probed frame counts (decodable frames:
what a full decode returns, which for DivX/XviD AVIs and some MP4s is fewer than packets).

Resuming: an archive that was fully extracted leaves ``DIR/.bench/prepare/<archive>.done``
and is skipped; inside an interrupted archive, members already on disk with the right size
are skipped and a partially written one (wrong size) is written again. Transcoding skips
videos already in the target codec.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

from bench.data.formats import (
    CACHE_DIR,
    ISOGD_LISTS,
    JESTER_CSVS,
    JESTER_DIRS,
    JESTER_LABELS,
    SPLITS,
    load_index,
    parallel_map,
    read_isogd_list,
    read_jester,
    write_index_cache,
)
from bench.data.index import DatasetIndex, Sample
from bench.errors import CLIError, DataError

# Sizes of the official releases (bench/resources/*/README.md).
OFFICIAL_COUNTS = {
    "jester": {"train": 118_562, "valid": 14_787, "test": 14_743},
    "isogd": {"train": 35_878, "valid": 5_784, "test": 6_271},
}
JESTER_PART = re.compile(r"^20bn-jester-v1-(\d+)$")

# codec -> (PyAV encoder, container extension, pixel format, encoder options)
TRANSCODE: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "mjpeg": ("mjpeg", ".avi", "yuvj420p", {"q:v": "3"}),
    "vp9": ("libvpx-vp9", ".webm", "yuv420p", {"crf": "32", "b:v": "0", "deadline": "realtime",
                                               "cpu-used": "8"}),
    "vp8": ("libvpx", ".webm", "yuv420p", {"crf": "10", "b:v": "2M", "deadline": "realtime",
                                           "cpu-used": "8"}),
    "h264": ("libx264", ".mp4", "yuv420p", {"crf": "23", "preset": "veryfast"}),
    "hevc": ("libx265", ".mp4", "yuv420p", {"crf": "26", "preset": "veryfast"}),
    "mpeg4": ("mpeg4", ".avi", "yuv420p", {"q:v": "3"}),
}


def _note(msg: str) -> None:
    print(f"prepare: {msg}", file=sys.stderr)


def _markers(root: Path) -> Path:
    d = root / CACHE_DIR / "prepare"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _safe_rel(name: str, archive: Path) -> list[str]:
    """Member name -> path components inside the root; DataError for an escaping name."""
    norm = name.replace("\\", "/")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in parts:
        raise DataError(archive, f"member {name!r} would extract outside the dataset root")
    return parts


def _write_member(src: io.BufferedIOBase, dest: Path, size: int) -> None:
    """Copy one member to ``dest``. A module-level function so tests can interrupt it."""
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    if dest.stat().st_size != size:
        raise DataError(dest, f"wrote {dest.stat().st_size} bytes, archive says {size}")


def _up_to_date(dest: Path, size: int) -> bool:
    try:
        st = dest.stat()
    except FileNotFoundError:
        return False
    return st.st_size == size and not dest.is_dir()


# --------------------------------------------------------------------------------------------
# Jester: split parts of one tar.gz, streamed


class ConcatReader(io.RawIOBase):
    """The parts ``00, 01, ...`` read as one stream, so the joined archive never hits the disk."""

    def __init__(self, parts: list[Path], progress=None) -> None:
        self._parts = list(parts)
        self._i = 0
        self._f: io.BufferedReader | None = None
        self._progress = progress
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while self._i < len(self._parts):
            if self._f is None:
                self._f = open(self._parts[self._i], "rb")
            n = self._f.readinto(buf)
            if n:
                self.position += n
                if self._progress is not None:
                    self._progress.update(n)
                return n
            self._f.close()
            self._f = None
            self._i += 1
        return 0

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        super().close()


def find_jester_parts(src: Path) -> list[Path]:
    """The archive parts in order; DataError when a part in the sequence is missing."""
    numbered = sorted(((int(m.group(1)), p) for p in src.iterdir()
                       if (m := JESTER_PART.match(p.name)) and p.is_file()))
    if not numbered:
        single = sorted([*src.glob("*.tar.gz"), *src.glob("*.tgz")])
        if len(single) == 1:
            return single
        raise DataError(src, "no Jester archive found: expected parts 20bn-jester-v1-00, "
                             "20bn-jester-v1-01, ... (or one *.tar.gz)")
    for expected, (n, p) in enumerate(numbered):
        if n != expected:
            raise DataError(src / f"20bn-jester-v1-{expected:02d}",
                            f"missing archive part (found parts {[k for k, _ in numbered]})")
    return [p for _, p in numbered]


def extract_jester(src: Path, root: Path, *, progress: bool | None = None) -> dict:
    """Stream the tar.gz parts into ``root``; returns counts (members written / skipped)."""
    import gzip
    import tarfile
    import zlib

    from tqdm import tqdm

    parts = find_jester_parts(src)
    marker = _markers(root) / f"{parts[0].name}.done"
    if marker.is_file():
        _note(f"{parts[0].name}: already extracted ({marker}), skipping")
        return json.loads(marker.read_text())
    total = sum(p.stat().st_size for p in parts)
    frames_dir = JESTER_DIRS["rgb"]
    stats = {"written": 0, "skipped": 0, "csv": 0}
    made: set[Path] = set()
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"extract {parts[0].name} (+{len(parts) - 1})",
               disable=None if progress is None else not progress)
    stream = ConcatReader(parts, bar)
    try:
        # gzip.GzipFile, not tarfile's "r|gz": tarfile reads a gzip stream that stops short as if
        # it ended, and a cut that lands on a tar header then ends the archive without an error
        # (the missing members only surfaced later, against the CSVs); GzipFile raises EOFError.
        with tarfile.open(fileobj=gzip.GzipFile(fileobj=stream, mode="rb"), mode="r|") as tar:
            for member in tar:
                parts_ = _safe_rel(member.name, parts[0])
                if not parts_ or member.isdir():
                    continue
                if not member.isfile():
                    _note(f"{member.name}: not a regular file (link or device), skipped")
                    continue
                if len(parts_) == 1 and parts_[0].endswith(".csv"):
                    rel = parts_                       # CSVs shipped inside the archive
                    stats["csv"] += 1
                elif parts_[0] == frames_dir:
                    rel = parts_
                elif len(parts_) == 2:                 # <id>/00001.jpg without the top folder
                    rel = [frames_dir, *parts_]
                else:
                    rel = [frames_dir, *parts_[-2:]]
                dest = root.joinpath(*rel)
                if _up_to_date(dest, member.size):
                    stats["skipped"] += 1
                    continue
                if dest.parent not in made:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    made.add(dest.parent)
                f = tar.extractfile(member)
                assert f is not None
                _write_member(f, dest, member.size)
                stats["written"] += 1
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(parts[0], f"archive is truncated or corrupt near byte {stream.position:,} "
                                  f"of {total:,} ({type(e).__name__}: {e})") from None
    finally:
        bar.close()
        stream.close()
    marker.write_text(json.dumps(stats))
    return stats


def _copy_jester_csvs(src: Path, root: Path) -> None:
    for name in (JESTER_LABELS, *JESTER_CSVS.values()):
        s = src / name
        if s.is_file() and not _same_file(s, root / name):
            shutil.copyfile(s, root / name)
    if not (root / JESTER_LABELS).is_file():
        from importlib.resources import files

        packaged = files("bench") / "resources/jester/labels.txt"
        (root / JESTER_LABELS).write_text(packaged.read_text())
        _note(f"{JESTER_LABELS} not in the downloads: wrote the packaged copy (27 classes)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------------------------
# IsoGD: zip archives


def isogd_member_path(name: str, archive: Path) -> list[str] | None:
    """Where an IsoGD zip member goes, relative to the root; None for members we do not keep."""
    parts = _safe_rel(name, archive)
    if not parts or name.endswith("/"):
        return None
    for i, p in enumerate(parts[:-1]):
        if p in SPLITS:
            return parts[i:]
    if parts[-1] in ISOGD_LISTS.values():
        return [parts[-1]]
    return None


def extract_isogd(src: Path, root: Path, *, progress: bool | None = None) -> dict:
    """Extract every ``*.zip`` of ``src`` into ``root``; returns counts."""
    import zipfile

    from tqdm import tqdm

    archives = sorted(src.glob("*.zip"))
    if not archives:
        raise DataError(src, "no IsoGD archive found: expected *.zip (IsoGD_phase_1.zip with "
                             "train/ and valid/, IsoGD_phase_2.zip with test/)")
    stats = {"written": 0, "skipped": 0, "ignored": 0}
    for archive in archives:
        marker = _markers(root) / f"{archive.name}.done"
        if marker.is_file():
            _note(f"{archive.name}: already extracted, skipping")
            continue
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(archive, f"not a readable zip archive (truncated or corrupt): {e}") from None
        made: set[Path] = set()
        with zf:
            infos = zf.infolist()
            bar = tqdm(total=sum(i.file_size for i in infos), unit="B", unit_scale=True,
                       desc=f"extract {archive.name}", disable=None if progress is None else not progress)
            try:
                for info in infos:
                    rel = isogd_member_path(info.filename, archive)
                    if rel is None:
                        if not info.is_dir():
                            stats["ignored"] += 1
                        bar.update(info.file_size)
                        continue
                    dest = root.joinpath(*rel)
                    if _up_to_date(dest, info.file_size):
                        stats["skipped"] += 1
                    else:
                        if dest.parent not in made:
                            dest.parent.mkdir(parents=True, exist_ok=True)
                            made.add(dest.parent)
                        try:
                            with zf.open(info) as f:
                                _write_member(f, dest, info.file_size)
                        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as e:
                            raise DataError(archive, f"member {info.filename!r} is corrupt: {e}") from None
                        stats["written"] += 1
                    bar.update(info.file_size)
            finally:
                bar.close()
        marker.write_text(json.dumps(stats))
    return stats


def _install_isogd_lists(src: Path, root: Path) -> None:
    """Lists from the archives win; then the downloads folder; then the packaged copy."""
    from importlib.resources import files

    for split, name in ISOGD_LISTS.items():
        dest = root / name
        if dest.is_file():
            continue
        if (src / name).is_file():
            shutil.copyfile(src / name, dest)
        elif (root / split).is_dir():
            dest.write_text((files("bench") / f"resources/isogd/{name}").read_text())
            _note(f"{name} not in the downloads: wrote the packaged official list")


# --------------------------------------------------------------------------------------------
# verification, transcoding, index


def verify_counts(fmt: str, root: Path, *, full: bool = False) -> dict[str, int]:
    """Listed samples per split; DataError when listed samples are missing on disk, or (``full``)
    when a list's length differs from the official release."""
    counts: dict[str, int] = {}
    for split in SPLITS:
        list_file = root / (ISOGD_LISTS if fmt == "isogd" else JESTER_CSVS)[split]
        if not list_file.is_file():
            continue
        if fmt == "isogd":
            index = read_isogd_list(list_file, root=root, split=split, modalities=("rgb", "depth"))
            absent = [[p for p in s.paths.values() if not p.is_file()] for s in index.samples]
        else:
            index = read_jester(root, split, modalities=("rgb",))
            absent = [[s.paths["rgb"]] if not s.paths["rgb"].is_dir() else [] for s in index.samples]
        missing = [paths for paths in absent if paths]
        if missing:
            shown = ", ".join(str(p.relative_to(root)) for paths in missing[:3] for p in paths)
            raise DataError(list_file, f"{len(missing)} of {len(index)} listed samples are not (or not "
                                       f"entirely) in the prepared copy (e.g. {shown}); a download part "
                                       "is missing or the archive does not match the list")
        counts[split] = len(index)
    if not counts:
        raise DataError(root, "no split list in the prepared copy")
    official = OFFICIAL_COUNTS[fmt]
    differs = {s: (n, official[s]) for s, n in counts.items() if n != official[s]}
    if full:
        absent = [s for s in SPLITS if s not in counts]
        if differs or absent:
            what = "; ".join([f"{s}: {n:,} listed, official {o:,}" for s, (n, o) in differs.items()]
                             + [f"{s}: no list" for s in absent])
            raise DataError(root, f"not the full official {fmt} release ({what})")
    elif differs:
        _note("sample counts differ from the official release ("
              + ", ".join(f"{s} {n:,} vs {o:,}" for s, (n, o) in differs.items()) + "): a partial copy?")
    return counts


def transcode_video(src: Path, dst: Path, codec: str) -> int:
    """Re-encode ``src`` into ``dst`` (codec ``codec``), frame for frame; returns the frame count.

    Written to a temporary name and renamed, so a file at ``dst`` is always complete.
    """
    import av

    from bench.data.probe import open_video, probe_video

    encoder, ext, pix_fmt, options = TRANSCODE[codec]
    tmp = dst.with_name(dst.name + ".part")
    n = 0
    try:
        with open_video(src) as inp, av.open(str(tmp), "w", format=_muxer(ext)) as out:
            ins = inp.streams.video[0]
            rate = ins.average_rate or ins.guessed_rate or 10
            st = out.add_stream(encoder, rate=rate)
            st.width, st.height = ins.codec_context.width, ins.codec_context.height
            st.pix_fmt = pix_fmt
            st.options = dict(options)
            for frame in inp.decode(ins):
                rgb = frame.to_ndarray(format="rgb24")
                for packet in st.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                    out.mux(packet)
                n += 1
            for packet in st.encode():
                out.mux(packet)
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:  # noqa: BLE001 -- FFmpeg, PyAV and metadata errors alike are this file's
        tmp.unlink(missing_ok=True)
        raise DataError(src, f"cannot transcode to {codec}: {type(e).__name__}: {e}") from None
    got = probe_video(tmp, verify="none").num_frames
    if got != n:
        tmp.unlink(missing_ok=True)
        raise DataError(src, f"transcoding to {codec} kept {got} of {n} frames")
    os.replace(tmp, dst)
    return n


def _muxer(ext: str) -> str:
    return {".avi": "avi", ".webm": "webm", ".mp4": "mp4", ".mkv": "matroska"}[ext]


def _transcode_one(job: tuple[str, str, str]) -> tuple[str, str | None]:
    src_s, dst_s, codec = job
    src, dst = Path(src_s), Path(dst_s)
    from bench.data.probe import probe_video

    try:
        if dst.is_file():
            try:
                # probed, not only its header read: a target cut short is written again
                if probe_video(dst, verify="none").codec == codec:
                    if src != dst and src.exists():
                        src.unlink()
                    return dst_s, None
            except DataError:
                pass  # an unreadable target: write it again
        if not src.is_file():
            return dst_s, str(DataError(src, "missing video (cannot transcode)"))
        transcode_video(src, dst, codec)
        if src != dst:
            src.unlink()
        return dst_s, None
    except DataError as e:
        return dst_s, str(e)
    except Exception as e:  # noqa: BLE001 -- in a worker process: report it against the file
        return dst_s, str(DataError(src, f"cannot transcode it: {type(e).__name__}: {e}"))


def transcode_isogd(root: Path, codec: str, *, workers: int = 1, progress: bool | None = None) -> int:
    """Re-encode every listed RGB and depth video to ``codec`` and point the lists at the results.

    The lists are rewritten in place (the first version is kept as ``<list>.orig``); sample ids
    (RGB path without extension) do not change.
    """
    if codec not in TRANSCODE:
        raise ValueError(f"--transcode must be one of {sorted(TRANSCODE)}, got {codec!r}")
    ext = TRANSCODE[codec][1]
    jobs: list[tuple[str, str, str]] = []
    rewrites: dict[Path, list[str]] = {}
    for split, name in ISOGD_LISTS.items():
        list_file = root / name
        if not list_file.is_file():
            continue
        read_isogd_list(list_file, root=root, split=split)  # refuse a malformed list up front
        out_lines = []
        for raw in list_file.read_text().splitlines():
            fields = raw.split()
            if not fields:
                continue
            new = [str(Path(f).with_suffix(ext)) for f in fields[:2]]
            for old_rel, new_rel in zip(fields[:2], new):
                src = root / old_rel
                dst = root / new_rel
                jobs.append((str(src if src.exists() or not dst.exists() else dst), str(dst), codec))
            out_lines.append(" ".join([*new, fields[2]]))
        rewrites[list_file] = out_lines
    failures = [err for _, err in parallel_map(_transcode_one, jobs, workers=workers,
                                               desc=f"transcode to {codec}", progress=progress) if err]
    if failures:
        for f in failures:
            print(f, file=sys.stderr)
        raise DataError(root, f"{len(failures)} of {len(jobs)} videos could not be transcoded "
                              f"(listed above); lists left unchanged")
    for list_file, lines in rewrites.items():
        orig = list_file.with_name(list_file.name + ".orig")
        if not orig.exists():
            shutil.copyfile(list_file, orig)
        tmp = list_file.with_name(list_file.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, list_file)
    return len(jobs)


def _probe_one(sample: Sample) -> tuple[int | None, str | None]:
    from bench.data.formats import probe_sample

    try:
        return probe_sample(sample), None
    except DataError as e:
        return None, f"{e} (listed at {sample.source})"
    except Exception as e:  # noqa: BLE001 -- in a worker process: report it against the sample
        path = next(iter(sample.paths.values()), sample.sample_id)
        return None, f"{path}: cannot probe it: {type(e).__name__}: {e} (listed at {sample.source})"


def write_indexes(fmt: str, root: Path, *, workers: int = 1, progress: bool | None = None
                  ) -> dict[str, Path]:
    """Probe every sample of every split and write ``ROOT/.bench/index-<split>.parquet``.

    Every unreadable sample of a split is printed (file, reason, list line) before the
    DataError that stops the split; the counts written are decodable frames."""
    out: dict[str, Path] = {}
    names = ISOGD_LISTS if fmt == "isogd" else JESTER_CSVS
    for split in SPLITS:
        if not (root / names[split]).is_file():
            continue
        index = load_index(fmt, root, split, use_cache=False)
        results = list(parallel_map(_probe_one, index.samples, workers=workers,
                                    desc=f"index {split}", progress=progress))
        errors = [e for _, e in results if e]
        if errors:
            for e in errors:
                print(e, file=sys.stderr)
            raise DataError(root / names[split], f"{len(errors)} of {len(index)} samples are unreadable "
                                                 "(listed above); run `bench data check` for details")
        probed = DatasetIndex(index.format, index.root, index.split, index.classes,
                              [Sample(s.sample_id, s.label, s.paths, n, s.source)
                               for s, (n, _) in zip(index.samples, results)], counts_decoded=True)
        out[split] = write_index_cache(probed)
    return out


def _compute_flow(fmt: str, root: Path, workers: int) -> None:
    import importlib

    try:
        flow = importlib.import_module("bench.data.flow")
    except ModuleNotFoundError as e:
        if e.name != "bench.data.flow":
            raise
        flow = None
    fn = getattr(flow, "compute_flow_dataset", None)
    if fn is None:
        raise DataError(root, "--flow needs bench.data.flow.compute_flow_dataset, which this "
                              "installation does not provide")
    fn(fmt, root, workers=workers)


def prepare(fmt: str, src: str | Path, root: str | Path, *, flow: bool = False,
            transcode: str | None = None, workers: int = 1, full: bool = False,
            progress: bool | None = None) -> dict:
    """Extract, verify, optionally transcode and compute flow, and index a dataset copy.

    Returns a summary: extraction counts, samples per split, index files written.
    """
    if fmt not in ("jester", "isogd"):
        raise ValueError(f"prepare supports formats 'jester' and 'isogd', got {fmt!r}")
    if transcode is not None and fmt != "isogd":
        raise ValueError("--transcode applies to video datasets (isogd); Jester clips are JPG folders")
    if transcode is not None and transcode not in TRANSCODE:
        raise ValueError(f"--transcode must be one of {sorted(TRANSCODE)}, got {transcode!r}")
    src, root = Path(src).absolute(), Path(root).absolute()
    if not src.is_dir():
        raise DataError(src, "downloads folder does not exist")
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "jester":
        extracted = extract_jester(src, root, progress=progress)
        _copy_jester_csvs(src, root)
    else:
        extracted = extract_isogd(src, root, progress=progress)
        _install_isogd_lists(src, root)
    counts = verify_counts(fmt, root, full=full)
    if transcode is not None:
        transcode_isogd(root, transcode, workers=workers, progress=progress)
    if flow:
        _compute_flow(fmt, root, workers)
    indexes = write_indexes(fmt, root, workers=workers, progress=progress)
    return {"extracted": extracted, "counts": counts, "indexes": indexes}


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="unpack, verify and index a licensed Jester/IsoGD download",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=("jester", "isogd"))
    p.add_argument("--src", required=True, type=Path, help="folder holding the downloaded archives/CSVs")
    p.add_argument("--root", required=True, type=Path, help="dataset folder to create")
    p.add_argument("--flow", action="store_true", help="compute the flow modality (bench.data.flow)")
    p.add_argument("--transcode", choices=sorted(TRANSCODE), default=None,
                   help="re-encode IsoGD videos (vp9/mjpeg: decodable by DALI on CPU)")
    p.add_argument("--workers", type=int, default=1, help="processes for probing/transcoding/flow")
    p.add_argument("--full", action="store_true",
                   help="require the official release's sample counts (fail on a partial copy)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:

    if args.workers < 1:
        raise CLIError("--workers must be >= 1")
    try:
        summary = prepare(args.format, args.src, args.root, flow=args.flow, transcode=args.transcode,
                          workers=args.workers, full=args.full)
    except (DataError, ValueError) as e:
        raise CLIError(str(e)) from None
    counts = ", ".join(f"{s} {n:,}" for s, n in summary["counts"].items())
    print(f"prepared {args.format} at {args.root}: {counts} samples; index in "
          f"{args.root / CACHE_DIR}")
    return 0

