"""Tiny real files for the data-format tests: videos written with PyAV, JPGs with OpenCV.

Kept independent of the synthetic generator on purpose: these tests check the readers
against the on-disk layouts themselves, so a bug shared by generator and reader can't hide.
"""

from __future__ import annotations

import csv
import shutil
from importlib.resources import files
from pathlib import Path

import numpy as np

REAL = Path(__file__).parent / "data" / "real-gestures"
REAL_JPG_DIR = REAL / "jester_layout" / "20bn-jester-style"
REAL_FRAME_COUNTS = {"1": 56, "2": 57, "3": 29, "4": 30, "5": 15}


def write_video(path: Path, num_frames: int, *, codec: str = "mjpeg", size: tuple[int, int] = (32, 24),
                rate: int = 10) -> Path:
    """A small video whose frame k is a flat grey of value 10*k (mjpeg: yuvj420p, the pixel
    format FFmpeg's MJPEG encoder takes).

    ``num_frames=0`` writes a valid container with a video stream and no frames.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = {"mjpeg": "mjpeg", "vp9": "libvpx-vp9", "h264": "libx264", "mpeg4": "mpeg4"}[codec]
    w, h = size
    with av.open(str(path), "w") as c:
        s = c.add_stream(encoder, rate=rate)
        s.width, s.height = w, h
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "vp9":
            s.options = {"deadline": "realtime", "cpu-used": "8"}
        for k in range(num_frames):
            a = np.full((h, w, 3), (10 * k) % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        if num_frames == 0:
            c.start_encoding()  # write the header although no packet was muxed
    return path


def write_jpgs(folder: Path, num_frames: int, *, digits: int = 5, size: tuple[int, int] = (16, 12)) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    for k in range(1, num_frames + 1):
        img = np.full((h, w, 3), (20 * k) % 256, np.uint8)
        assert cv2.imwrite(str(folder / f"{k:0{digits}d}.jpg"), img)
    return folder


def truncate_half(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_isogd(root: Path, *, frames: dict[str, list[int]] | None = None, num_classes: int = 4,
               with_classes_file: bool = True) -> Path:
    """A tiny IsoGD copy: lists ``RGB DEPTH LABEL`` (1-based; test 0) and mjpeg AVIs."""
    frames = frames or {"train": [6, 7, 8], "valid": [5, 6], "test": [4]}
    if with_classes_file:
        (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / "classes.txt").write_text("".join(f"gesture_{i}\n" for i in range(num_classes)))
    for split, counts in frames.items():
        lines = []
        for i, n in enumerate(counts, 1):
            rgb = f"{split}/001/M_{i:05d}.avi"
            depth = f"{split}/001/K_{i:05d}.avi"
            write_video(root / rgb, n)
            write_video(root / depth, n)
            label = 0 if split == "test" else (i - 1) % num_classes + 1
            lines.append(f"{rgb} {depth} {label}\n")
        (root / f"{split}_list.txt").write_text("".join(lines))
    return root


def jester_labels() -> list[str]:
    return (files("bench") / "resources/jester/labels.txt").read_text().splitlines()


def make_jester(root: Path, *, clips: dict[str, dict[str, int]] | None = None) -> Path:
    """A tiny Jester copy: the real 27 labels, split CSVs and 5-digit JPG frame folders."""
    labels = jester_labels()
    clips = clips or {"train": {"101": 5, "102": 6, "103": 4}, "valid": {"201": 5, "202": 7},
                      "test": {"301": 4}}
    root.mkdir(parents=True, exist_ok=True)
    (root / "jester-v1-labels.csv").write_text("\n".join(labels) + "\n")
    names = {"train": "jester-v1-train.csv", "valid": "jester-v1-validation.csv", "test": "jester-v1-test.csv"}
    for split, ids in clips.items():
        rows = []
        for j, (cid, n) in enumerate(ids.items()):
            write_jpgs(root / "20bn-jester-v1" / cid, n)
            rows.append(cid if split == "test" else f"{cid};{labels[j % len(labels)]}")
        (root / names[split]).write_text("\n".join(rows) + "\n")
    return root


def make_framelist(root: Path, *, counts: list[int] | None = None) -> Path:
    """Frame-list layout: ``PATH FRAMECOUNT LABEL`` with ``%06d.jpg`` frames from 1."""
    counts = counts or [4, 6]
    lines = []
    for i, n in enumerate(counts):
        write_jpgs(root / "frames" / f"clip{i}", n, digits=6)
        lines.append(f"frames/clip{i} {n} {i}\n")
    (root / "train_list.txt").write_text("".join(lines))
    return root


def write_jester_validation_csv(root: Path) -> Path:
    """jester-v1-validation.csv (``id;Label Name``) + labels, rebuilt from the packaged metadata."""
    labels = jester_labels()
    root.mkdir(parents=True, exist_ok=True)
    (root / "jester-v1-labels.csv").write_text("\n".join(labels) + "\n")
    src = files("bench") / "resources/jester/valid_frame_counts.csv"
    with src.open() as f:
        rows = list(csv.DictReader(f))
    (root / "jester-v1-validation.csv").write_text(
        "".join(f"{r['id']};{labels[int(r['label'])]}\n" for r in rows))
    (root / "20bn-jester-v1").mkdir(exist_ok=True)
    return root


def copy_real_jester_layout(root: Path, *, names: list[str]) -> Path:
    """The real JPG folders under ``root/20bn-jester-v1`` with a train CSV naming ``names``."""
    shutil.copytree(REAL_JPG_DIR, root / "20bn-jester-v1")
    (root / "jester-v1-labels.csv").write_text("\n".join(sorted(set(names))) + "\n")
    ids = sorted(REAL_FRAME_COUNTS, key=int)
    (root / "jester-v1-train.csv").write_text("".join(f"{i};{n}\n" for i, n in zip(ids, names)))
    return root
