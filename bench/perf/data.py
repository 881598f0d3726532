"""``bench perf data``: clips/s of every available decoding backend on the same files.

Each backend runs the full loader (``pipelines.make_loader``: frame sampling, decode, crop,
resize, mean) over the same clips with the same seed, so the backends differ only in how
they decode. One warm-up epoch (DALI's import and pipeline build, file-system caches), then
``--repeats`` timed epochs, the backends interleaved within each repeat so that load from
other processes falls on all of them alike; the table reports the median and the ratio to
PyAV measured in the same run. Figures from different runs or machines are not comparable;
ratios within one run are.

Without ``--root`` the files are generated into a temporary folder with PyAV: IsoGD-like
videos (320x240, 40 frames: IsoGD's median is 38) in MJPEG, VP9, H.264 and MPEG-4/XVID,
long videos (200 frames, the sparse-sampling case where DALI's indexed decoding pays),
Jester-like JPG folders (176x100, 36 frames), and the real footage in tests/data when present.

It also times building a Jester-sized index (148,092 clips over three CSVs, generated in a
temporary folder) with ``bench.data.formats.load_index``.

Writes ``<out>/data.md`` and ``<out>/data.json`` (a list of flat dicts, one per row).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.data.formats import FORMATS, load_index
from bench.data.index import MODALITIES, DatasetIndex, Sample
from bench.errors import CLIError
from bench.perf._common import command_line
from pipelines import make_loader
from pipelines._media import MediaResolver
from pipelines.dali import CPU_VIDEO_CODECS, GPU_VIDEO_CODECS, IMAGE_CODECS, gpu_visible
from pipelines.routing import BACKENDS, DALI_BACKENDS, FALLBACK_BACKENDS, dali_installed

log = logging.getLogger("bench.perf.data")

REAL_FOOTAGE = Path(__file__).resolve().parents[2] / "tests" / "data" / "real-gestures"
JESTER_SPLITS = {"train": 118_562, "valid": 14_787, "test": 14_743}   # 148,092 clips in all


@dataclass(frozen=True, slots=True)
class Case:
    """One set of files every backend decodes."""
    name: str
    index: Any            # DatasetIndex
    codec: str
    frames: float         # mean frames per clip
    size: str             # "WxH"


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="clips/s of each decoding backend, and index build time",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, help="an existing dataset (default: generate a small one)")
    p.add_argument("--format", choices=FORMATS,
                   help="format of --root (required with --root)")
    p.add_argument("--split", default="valid")
    p.add_argument("--modality", default="rgb", choices=MODALITIES)
    p.add_argument("--max-clips", type=int, default=48, help="clips taken (evenly) from --root")
    p.add_argument("--clips", type=int, default=16, help="clips per generated case")
    p.add_argument("--clip-len", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per backend (median reported)")
    p.add_argument("--backends", default=",".join((*FALLBACK_BACKENDS, *reversed(DALI_BACKENDS))),
                   help="comma-separated; unavailable ones are left out and said so")
    p.add_argument("--index-clips", type=int, default=sum(JESTER_SPLITS.values()),
                   help="clips in the generated Jester-sized index (0: skip the index timing)")
    p.add_argument("--out", type=Path, default=Path("docs/perf"))
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:

    if args.root is not None and args.format is None:
        raise CLIError("--format is required with --root")
    if args.repeats < 1 or args.clip_len < 1 or args.batch_size < 1 or args.clips < 1:
        raise CLIError("--repeats, --clip-len, --batch-size and --clips must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    rows = run(root=args.root, fmt=args.format, split=args.split, modality=args.modality,
               max_clips=args.max_clips, clips=args.clips, clip_len=args.clip_len,
               batch_size=args.batch_size, num_workers=args.num_workers, repeats=args.repeats,
               backends=[b.strip() for b in args.backends.split(",") if b.strip()],
               index_clips=args.index_clips)

    command = command_line(args)
    md = write(rows, args.out, command=command)
    print(md)
    return 0


# ---------------------------------------------------------------------------------- datasets
def _frames(n: int, w: int, h: int, seed: int):
    """Textured frames with a moving blob: compresses like camera footage, not like noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = (rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
            .astype(np.float32))
    for k in range(n):
        cx, cy = w * (0.2 + 0.6 * k / max(1, n - 1)), h * (0.5 + 0.3 * np.sin(k / 5))
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (h / 8) ** 2))[..., None]
        img = 0.6 * base + 100 * blob + 20 * np.sin((xx + 3 * k) / 9)[..., None]
        img += rng.normal(0, 4, img.shape)
        yield np.clip(img, 0, 255).astype(np.uint8)


def _write_video(path: Path, codec: str, n: int, w: int, h: int, seed: int) -> None:
    import av  # heavy

    enc = {"mjpeg": "mjpeg", "vp9": "libvpx-vp9", "h264": "libx264", "mpeg4": "mpeg4"}[codec]
    with av.open(str(path), "w") as c:
        s = c.add_stream(enc, rate=10)
        s.width, s.height = w, h
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        s.options = {"mjpeg": {"q:v": "3"}, "h264": {"crf": "23", "preset": "veryfast"},
                     "vp9": {"crf": "32", "b:v": "0", "deadline": "realtime", "cpu-used": "8"},
                     "mpeg4": {"q:v": "4"}}[codec]
        if codec == "mpeg4":
            s.codec_context.codec_tag = "XVID"   # as IsoGD's AVIs (no libxvid in PyAV)
        for a in _frames(n, w, h, seed):
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _index(name: str, root: Path, paths: list[Path], counts: list[int | None]):
    samples = [Sample(f"{name}/{p.stem}", i % 2, {"rgb": p}, n, "") for i, (p, n) in
               enumerate(zip(paths, counts))]
    return DatasetIndex("isogd", root, "valid", ["0", "1"], samples)


def generated_cases(tmp: Path, *, clips: int) -> list[Case]:
    import cv2  # heavy

    cases: list[Case] = []
    specs = [("mjpeg", 40, ".avi"), ("vp9", 40, ".webm"), ("h264", 40, ".mp4"), ("mpeg4", 40, ".avi"),
             ("mjpeg", 200, ".avi"), ("vp9", 200, ".webm")]
    for codec, n, ext in specs:
        name = f"synth-{codec}-{n}f"
        d = tmp / name
        d.mkdir()
        k = clips if n <= 40 else max(2, clips // 2)
        paths = [d / f"v{i:03d}{ext}" for i in range(k)]
        for i, p in enumerate(paths):
            _write_video(p, codec, n, 320, 240, seed=i)
        cases.append(Case(name, _index(name, d, paths, [n] * k), codec, n, "320x240"))
    d = tmp / "synth-jpg-36f"
    d.mkdir()
    folders = []
    for i in range(clips):
        f = d / f"{i:05d}"
        f.mkdir()
        for k, a in enumerate(_frames(36, 176, 100, seed=100 + i), 1):
            cv2.imwrite(str(f / f"{k:05d}.jpg"), cv2.cvtColor(a, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])
        folders.append(f)
    cases.append(Case("synth-jpg-36f", _index("jpg", d, folders, [36] * clips), "jpeg", 36, "176x100"))
    return cases


def real_cases() -> list[Case]:
    """The real footage in tests/data (VP9 webm, H.264 mp4, Jester-style JPG folders)."""
    if not REAL_FOOTAGE.is_dir():
        return []

    res = MediaResolver(need_codec=True, verify_count=False)
    out = []
    for name, paths in (("real-webm", sorted((REAL_FOOTAGE / "webm").glob("*.webm"))),
                        ("real-mp4", sorted((REAL_FOOTAGE / "mp4").glob("*.mp4"))),
                        ("real-jpg", sorted(p for p in (REAL_FOOTAGE / "jester_layout" / "20bn-jester-style")
                                            .glob("*") if p.is_dir()))):
        if not paths:
            continue
        media = [res.resolve(p, None) for p in paths]
        first = media[0]
        if first.kind == "frames":
            import cv2  # heavy

            h, w = cv2.imread(str(first.frames[0])).shape[:2]
        else:
            from bench.data.probe import probe_video

            info = probe_video(first.path, verify="none")
            w, h = info.width, info.height
        out.append(Case(name, _index(name, REAL_FOOTAGE, paths, [m.num_frames for m in media]),
                        first.codec or "?", statistics.mean(m.num_frames for m in media), f"{w}x{h}"))
    return out


def root_case(root: Path, fmt: str, split: str, modality: str, max_clips: int) -> Case:
    import numpy as np

    index = load_index(fmt, root, split, modalities=[modality])
    if len(index) > max_clips:
        keep = np.linspace(0, len(index) - 1, max_clips).round().astype(int)
        index.samples = [index.samples[i] for i in keep]
    res = MediaResolver(need_codec=True, verify_count=False)
    media = [res.resolve(Path(s.paths[modality]), s.num_frames) for s in index.samples]
    codecs = sorted({m.codec or "?" for m in media})
    return Case(f"{fmt}:{root.name}/{split}/{modality}", index, "+".join(codecs),
                statistics.mean(m.num_frames for m in media), "?")


# ---------------------------------------------------------------------------------- timing
def _supported(backend: str, codec: str) -> bool:
    if backend == "dali-cpu":
        return all(c in CPU_VIDEO_CODECS | IMAGE_CODECS for c in codec.split("+"))
    if backend == "dali-gpu":
        return all(c in GPU_VIDEO_CODECS | IMAGE_CODECS for c in codec.split("+"))
    return True


def available_backends(wanted: list[str]) -> tuple[list[str], dict[str, str]]:
    ok, why = [], {}
    for b in wanted:
        if b.startswith("dali") and not dali_installed():
            why[b] = "DALI not installed"
        elif b == "dali-gpu" and not gpu_visible():
            why[b] = "no GPU visible"
        elif b not in BACKENDS or b == "auto":
            why[b] = "unknown backend"
        else:
            ok.append(b)
    return ok, why


def _sync() -> None:
    """DALI-GPU's frames and clips are CUDA tensors: their work is done only once the device is."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _epoch(loader, epoch: int, *, raw: bool) -> tuple[float, int]:
    loader.set_epoch(epoch)
    t0 = time.perf_counter()
    n = sum(len(b["sample_id"]) for b in (loader.iter_frames() if raw else loader))
    _sync()
    return time.perf_counter() - t0, n


def _epoch_finished(loader, epoch: int) -> tuple[float, int]:
    """An epoch of a ``device_preprocess`` loader, each batch finished where a trainer would
    (`batch_clips`: on the GPU when one is visible, else on the CPU): the same float clips as
    the default loader's."""
    import torch

    from bench.data.sampling import batch_clips

    device = "cuda" if torch.cuda.is_available() else "cpu"
    loader.set_epoch(epoch)
    t0 = time.perf_counter()
    n = 0
    for b in loader:
        batch_clips(b, device)
        n += len(b["sample_id"])
    _sync()
    return time.perf_counter() - t0, n


def time_case(case: Case, backends: list[str], *, clip_len: int, batch_size: int, num_workers: int,
              repeats: int) -> list[dict[str, Any]]:
    """Decode-only (uint8 frames), full-loader (float clips from the loader) and uint8-handover
    (``device_preprocess``, finished on the CPU) clips/s of each backend on ``case``."""
    usable = [b for b in backends if _supported(b, case.codec)]
    loaders, raw_loaders, first = {}, {}, {}
    for b in usable:
        t0 = time.perf_counter()
        kw = dict(backend=b, clip_len=clip_len, batch_size=batch_size, train=True, seed=0, num_workers=num_workers)
        loaders[b] = make_loader(case.index, **kw)
        _epoch(loaders[b], 0, raw=False)                         # warm-up
        first[b] = time.perf_counter() - t0
        raw_loaders[b] = make_loader(case.index, **kw, device_preprocess=True)
        _epoch_finished(raw_loaders[b], 0)
    decode: dict[str, list[float]] = {b: [] for b in usable}
    full: dict[str, list[float]] = {b: [] for b in usable}
    handover: dict[str, list[float]] = {b: [] for b in usable}
    for r in range(repeats):
        for b in usable:                                         # interleaved: same load on all
            dt, n = _epoch(loaders[b], r + 1, raw=True)
            decode[b].append(n / dt)
            dt, n = _epoch(loaders[b], r + 1, raw=False)
            full[b].append(n / dt)
            dt, n = _epoch_finished(raw_loaders[b], r + 1)
            handover[b].append(n / dt)
    auto = make_loader(case.index, backend="auto", clip_len=clip_len).backend
    rows = []
    ref_d = statistics.median(decode["pyav"]) if "pyav" in decode else None
    ref_f = statistics.median(full["pyav"]) if "pyav" in full else None
    for b in usable:
        md, mf = statistics.median(decode[b]), statistics.median(full[b])
        rows.append({
            "kind": "decode", "case": case.name, "codec": case.codec, "size": case.size,
            "frames_per_clip": round(case.frames, 1), "clips": len(case.index), "clip_len": clip_len,
            "backend": b, "num_workers": num_workers, "repeats": repeats,
            "decode_clips_per_s": round(md, 2), "decode_min": round(min(decode[b]), 2),
            "decode_max": round(max(decode[b]), 2),
            "decode_vs_pyav": round(md / ref_d, 2) if ref_d else None,
            "loader_clips_per_s": round(mf, 2),
            "loader_vs_pyav": round(mf / ref_f, 2) if ref_f else None,
            "uint8_handover_clips_per_s": round(statistics.median(handover[b]), 2),
            "handover_vs_loader": round(statistics.median(handover[b]) / mf, 2),
            "first_epoch_s": round(first[b], 3), "auto_picks": auto,
        })
    return rows


def time_dali_import() -> float | None:
    """Seconds for ``import nvidia.dali`` in a fresh interpreter: what every process pays."""
    if not dali_installed():
        return None
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import nvidia.dali, nvidia.dali.fn"], check=True,
                   capture_output=True)
    t1 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, capture_output=True)
    return (t1 - t0) - (time.perf_counter() - t1)


def time_index(n_clips: int, repeats: int) -> list[dict[str, Any]]:
    """Build a Jester-sized index from generated CSVs with ``load_index`` (all three splits)."""
    try:
        from bench.data.formats import load_index
    except ImportError as e:
        return [{"kind": "index", "case": f"jester-{n_clips}", "error": f"bench.data.formats: {e}"}]
    import numpy as np

    total = sum(JESTER_SPLITS.values())
    sizes = {s: round(n * n_clips / total) for s, n in JESTER_SPLITS.items()}
    sizes["test"] = n_clips - sizes["train"] - sizes["valid"]     # exactly n_clips in all
    names = [f"Gesture {i:02d}" for i in range(27)]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-perf-index-") as tmp:
        root = Path(tmp)
        (root / "20bn-jester-v1").mkdir()
        (root / "jester-v1-labels.csv").write_text("\n".join(names) + "\n")
        start = 1
        for split, fname in (("train", "jester-v1-train.csv"), ("valid", "jester-v1-validation.csv"),
                             ("test", "jester-v1-test.csv")):
            ids = range(start, start + sizes[split])
            start += sizes[split]
            labels = rng.integers(0, 27, sizes[split])
            lines = (f"{i};{names[y]}" if split != "test" else str(i) for i, y in zip(ids, labels))
            (root / fname).write_text("\n".join(lines) + "\n")
        times, count = [], 0
        for _ in range(repeats + 1):                                 # first run: warm-up
            t0 = time.perf_counter()
            count = sum(len(load_index("jester", root, s, use_cache=False)) for s in sizes)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times[1:])
    return [{"kind": "index", "case": f"jester-{count}", "clips": count, "repeats": repeats,
             "seconds": round(med, 3), "clips_per_s": round(count / med, 1)}]


def run(*, root: Path | None, fmt: str | None, split: str, modality: str, max_clips: int, clips: int,
        clip_len: int, batch_size: int, num_workers: int, repeats: int, backends: list[str],
        index_clips: int) -> list[dict[str, Any]]:
    from tqdm import tqdm  # heavy

    usable, missing = available_backends(backends)
    for b, why in missing.items():
        print(f"bench perf data: leaving out {b}: {why}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-perf-data-") as tmp:
        if root is not None:
            cases = [root_case(root, fmt, split, modality, max_clips)]
        else:
            cases = generated_cases(Path(tmp), clips=clips) + real_cases()
        for case in tqdm(cases, desc="decode", file=sys.stderr, disable=None):
            rows += time_case(case, usable, clip_len=clip_len, batch_size=batch_size,
                              num_workers=num_workers, repeats=repeats)
    imp = time_dali_import() if any(b.startswith("dali") for b in usable) else None
    if imp is not None:
        rows.append({"kind": "import", "case": "import nvidia.dali (fresh process)",
                     "seconds": round(imp, 2)})
    if index_clips > 0:
        rows += time_index(index_clips, repeats)
    env = {"kind": "machine", "case": platform.node(), "cpus": os.cpu_count(),
           "python": platform.python_version(), "platform": platform.platform(terse=True)}
    return rows + [env]


# ---------------------------------------------------------------------------------- output
def _md_table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def write(rows: list[dict[str, Any]], out: Path, *, command: str = "bench perf data") -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps(rows, indent=1) + "\n")
    dec = [r for r in rows if r["kind"] == "decode"]
    parts = ["# Data pipeline throughput", "",
             f"`{command}`", "",
             "Each backend on the same clips, same seed (train-mode jittered sampling). `decode_*`: "
             "clips/s of decoded uint8 frames (`ClipLoader.iter_frames`); `loader_*`: the full "
             "loader (decode + crop, resize, mean via `preprocess_clip`); `uint8_handover_*`: the "
             "loader with `device_preprocess=True` (uint8 square crops handed over, finished by "
             "`batch_clips` -- here on the CPU, on the GPU in training there), the same clips "
             "bitwise; `handover_vs_loader` its ratio to the float loader, side by side. Median "
             "over the timed epochs after one warm-up epoch, backends interleaved; `*_vs_pyav` is "
             "the ratio to PyAV measured side by side in this run.", ""]
    if dec:
        parts += [_md_table(dec, ["case", "codec", "size", "frames_per_clip", "clip_len", "backend",
                                  "decode_clips_per_s", "decode_min", "decode_max", "decode_vs_pyav",
                                  "loader_clips_per_s", "loader_vs_pyav", "uint8_handover_clips_per_s",
                                  "handover_vs_loader", "first_epoch_s",
                                  "auto_picks"]), ""]
    other = [r for r in rows if r["kind"] in ("import", "index")]
    if other:
        parts += ["## Setup costs", "", _md_table(other, ["kind", "case", "clips", "seconds",
                                                          "clips_per_s", "error"]), ""]
    env = [r for r in rows if r["kind"] == "machine"]
    if env:
        e = env[0]
        parts += [f"Machine: {e['cpus']} CPUs, Python {e['python']}, {e['platform']}.", ""]
    md = "\n".join(parts)
    (out / "data.md").write_text(md)
    return md
