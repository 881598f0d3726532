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


# --------------------------------------------------------------------------------------------
# Files as real footage has them and the suite's writers never produce: metadata that is not
# UTF-8, audio tracks, packets that decode to no picture. Each is built with PyAV from an
# ordinary encode and then changed the way real files differ; what PyAV itself decodes from
# each is asserted by the tests, not assumed.


def pattern_frames(n: int, size: tuple[int, int] = (64, 48), *, noise: bool = False) -> np.ndarray:
    """(n, H, W, 3) uint8 frames of a moving gradient, every frame different; ``noise`` adds
    per-frame noise, so that no encoded packet is tiny."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        a = np.stack([(xx * 3 + k * 7) % 256, (yy * 5 + k * 3) % 256, (xx + yy + k * 11) % 256], -1)
        if noise:
            a = a + rng.integers(0, 48, a.shape)
        out.append(np.clip(a, 0, 255).astype(np.uint8))
    return np.stack(out)


def encode(path: Path, frames: np.ndarray, encoder: str, *, rate: int = 10, fmt: str | None = None,
           options: dict[str, str] | None = None, gop: int | None = None, b_frames: int | None = None,
           metadata: dict[str, str] | None = None, audio: bool = False) -> Path:
    """Encode RGB ``frames`` with PyAV's ``encoder`` into ``path`` (yuv420p; an AAC track of
    silence, one audio frame per video frame, with ``audio``)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    with av.open(str(path), "w", format=fmt) as c:
        if metadata:
            c.metadata.update(metadata)
        s = c.add_stream(encoder, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = dict(options or {})
        if gop is not None:
            s.codec_context.gop_size = gop
        if b_frames is not None:
            s.codec_context.max_b_frames = b_frames
        a = None
        if audio:
            a = c.add_stream("aac", rate=16000)
            a.layout = "mono"
        for k, f in enumerate(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
            if a is not None:
                af = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.float32), format="fltp", layout="mono")
                af.sample_rate, af.pts = 16000, k * 1600
                for p in a.encode(af):
                    c.mux(p)
        for p in s.encode():
            c.mux(p)
        if a is not None:
            for p in a.encode():
                c.mux(p)
    return path


def write_latin1_metadata_avi(path: Path, num_frames: int = 12, *, codec: str = "mpeg4") -> Path:
    """An AVI whose INFO chunks (IART, INAM) hold Latin-1 bytes, as older Windows tools wrote
    them: written with the UTF-8 text "café", then the two bytes of "é" turned into one 0xE9
    and a NUL, so every chunk keeps its length. PyAV's strict UTF-8 metadata decoding raises
    UnicodeDecodeError at open."""
    encoder = {"mpeg4": "mpeg4", "mjpeg": "mjpeg"}[codec]
    tmp = path.with_name(path.name + ".utf8")
    if codec == "mjpeg":
        import av

        with av.open(str(tmp), "w", format="avi") as c:
            c.metadata.update({"artist": "caf\u00e9", "title": "caf\u00e9"})
            s = c.add_stream("mjpeg", rate=10)
            frames = pattern_frames(num_frames)
            s.height, s.width = frames.shape[1:3]
            s.pix_fmt = "yuvj420p"
            for f in frames:
                for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
    else:
        encode(tmp, pattern_frames(num_frames), encoder, fmt="avi",
               metadata={"artist": "caf\u00e9", "title": "caf\u00e9"})
    data = tmp.read_bytes()
    tmp.unlink()
    assert data.count(b"caf\xc3\xa9\x00") == 2, "the INFO chunks were not written as expected"
    path.write_bytes(data.replace(b"caf\xc3\xa9\x00", b"caf\xe9\x00\x00"))
    return path


def write_mp4_with_audio(path: Path, num_frames: int = 20) -> Path:
    """H.264 (with B-frames) and an AAC track, interleaved, as phone and web footage comes."""
    return encode(path, pattern_frames(num_frames), "libx264", options={"preset": "veryfast"},
                  audio=True)


def _overwrite_packet(path: Path, which: int, payload) -> int:
    """Overwrite video packet ``which`` (demux order, non-empty packets) in place with
    ``payload(size)`` bytes of the same size, so every index stays valid; returns the size."""
    import av

    with av.open(str(path)) as c:
        pos, size = [(p.pos, p.size) for p in c.demux(video=0) if p.size][which]
    data = bytearray(path.read_bytes())
    new = payload(size)
    assert len(new) == size
    data[pos:pos + size] = new
    path.write_bytes(bytes(data))
    return size


def _no_picture_nal_units(size: int) -> bytes:
    """``size`` bytes of length-prefixed H.264 NAL units with no picture: filler data, then an
    end-of-sequence unit (FFmpeg's decoder returns no frame for it and raises no error)."""
    fill = size - 5
    return (fill - 4).to_bytes(4, "big") + b"\x0c" + b"\xff" * (fill - 6) + b"\x80" + b"\x00\x00\x00\x01\x0a"


def write_h264_no_picture_packet(path: Path, num_frames: int = 20, *, which: int = -1,
                                 gop: int | None = None, noise: bool = False) -> Path:
    """An H.264 MP4 whose packet ``which`` (default: the last) holds only NAL units without a
    picture: the container lists ``num_frames`` samples, a decoder returns one frame fewer."""
    encode(path, pattern_frames(num_frames, noise=noise), "libx264", options={"preset": "veryfast"},
           gop=gop)
    _overwrite_packet(path, which, _no_picture_nal_units)
    return path


def write_mp4_empty_last_sample(path: Path, num_frames: int = 20) -> Path:
    """An H.264 MP4 whose sample table ends with a zero-size sample (what FFmpeg's MP4 muxer
    writes for a last packet that held only an access unit delimiter, which it strips): the
    header and the duration count it, the demuxer returns no packet for it."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        frames = pattern_frames(num_frames)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "veryfast"}
        s.codec_context.max_b_frames = 0
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
        aud = av.Packet(b"\x00\x00\x00\x02\x09\xf0")
        aud.stream = s
        aud.time_base = s.codec_context.time_base
        aud.pts = aud.dts = num_frames
        aud.duration = 1
        c.mux(aud)
    return path


def write_mp4_edit_list(path: Path, num_frames: int = 20) -> Path:
    """An H.264 MP4 whose edit list starts one frame in and ends one frame early (a trimmed
    clip): the demuxer returns the first and last packets marked discard, a decoder drops
    their frames."""
    import struct

    encode(path, pattern_frames(num_frames), "libx264", options={"preset": "veryfast"}, b_frames=0)
    data = bytearray(path.read_bytes())
    i = data.index(b"elst")
    seg_duration, media_time = struct.unpack(">II", data[i + 12:i + 20])
    frame_movie = seg_duration // num_frames           # one frame in the movie time scale
    assert media_time == 0 and seg_duration % num_frames == 0
    data[i + 12:i + 20] = struct.pack(">II", seg_duration - 2 * frame_movie, 1024)  # 1/10240 s ticks
    path.write_bytes(bytes(data))
    return path


def write_rotated_mp4(path: Path, num_frames: int = 12) -> Path:
    """An H.264 MP4 whose track header holds a 90-degree display matrix (as phones record)."""
    import struct

    encode(path, pattern_frames(num_frames), "libx264", options={"preset": "veryfast"})
    data = bytearray(path.read_bytes())
    i = data.index(b"tkhd")
    assert data[i + 4] == 0                  # version 0: 32-bit times
    matrix = i + 4 + 4 + 20 + 8 + 8           # version/flags, times/id/duration, reserved, layer..volume
    data[matrix:matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path


def _mpeg4_packets(frames: np.ndarray, *, b_frames: int = 0, gop: int = 12) -> list[tuple[bytes, bool]]:
    """(bytes, keyframe) of FFmpeg's MPEG-4 Part 2 encoder in decode order, its user data
    ("Lavc...") replaced by a DivX 5 tag so FFmpeg's decoder treats the stream as DivX's."""
    import re
    from fractions import Fraction

    import av

    cc = av.CodecContext.create("mpeg4", "w")
    cc.height, cc.width = frames.shape[1:3]
    cc.pix_fmt = "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, 10), Fraction(10)
    cc.gop_size, cc.max_b_frames = gop, b_frames
    out = []
    for k, f in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")
        vf.pts = k
        out += [(bytes(p), p.is_keyframe) for p in cc.encode(vf)]
    out += [(bytes(p), p.is_keyframe) for p in cc.encode(None)]
    return [(re.sub(rb"Lavc[0-9.]+", b"DivX503b1393p", data), key) for data, key in out]


def _vop_type(data: bytes) -> str:
    i = data.index(b"\x00\x00\x01\xb6")     # VOP start code; two bits of coding type follow
    return "IPBS"[data[i + 4] >> 6]


def _mux_avi(path: Path, packets: list[tuple[bytes, bool]], *, size: tuple[int, int],
             codec: str = "mpeg4", tag: str = "DX50", rate: int = 10) -> Path:
    """Write ``packets`` as they are, one AVI chunk each (an empty one is a dropped frame)."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w", format="avi") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height = size
        s.pix_fmt = "yuv420p"
        s.codec_tag = tag
        for i, (data, key) in enumerate(packets):
            p = av.Packet(data)
            p.stream = s
            p.time_base = Fraction(1, rate)
            p.pts = p.dts = i
            p.is_keyframe = key
            c.mux(p)
    return path


def write_divx_packed_avi(path: Path, num_frames: int = 12, *, trailing_placeholder: bool = True) -> Path:
    """A DivX 5 AVI in "packed bitstream": each P-frame's chunk also carries the B-frame that
    precedes it in display order, and the next chunk is a 1-byte placeholder. FFmpeg decodes
    the B-frame for the placeholder; a placeholder with no B-frame pending (DivX writes one
    at the end) decodes to no picture, so the container holds one chunk more than frames."""
    frames = pattern_frames(num_frames)
    data = _mpeg4_packets(frames, b_frames=1)
    packed: list[tuple[bytes, bool]] = []
    i = 0
    while i < len(data):
        if _vop_type(data[i][0]) == "P" and i + 1 < len(data) and _vop_type(data[i + 1][0]) == "B":
            packed += [(data[i][0] + data[i + 1][0], False), (b"\x7f", False)]
            i += 2
        else:
            packed.append(data[i])
            i += 1
    if trailing_placeholder:
        packed.append((b"\x7f", False))
    return _mux_avi(path, packed, size=(frames.shape[2], frames.shape[1]))


def write_xvid_drop_frames_avi(path: Path, num_frames: int = 12, *, drop_at: tuple[int, ...] = (5,),
                               empty_at: tuple[int, ...] = ()) -> Path:
    """An MPEG-4 AVI (DivX-tagged) with 1-byte drop-frame chunks inserted before the frames in
    ``drop_at`` (decode to no picture) and empty chunks before those in ``empty_at`` (AVI
    "dropped frame" index entries; the demuxer returns no packet for them)."""
    frames = pattern_frames(num_frames)
    out: list[tuple[bytes, bool]] = []
    for k, pkt in enumerate(_mpeg4_packets(frames)):
        if k in drop_at:
            out.append((b"\x7f", False))
        if k in empty_at:
            out.append((b"", False))
        out.append(pkt)
    return _mux_avi(path, out, size=(frames.shape[2], frames.shape[1]), tag="XVID")


def write_undecodable_mpeg4_avi(path: Path, num_frames: int = 12) -> Path:
    """An MPEG-4 AVI that is not tagged DivX/XviD with a 1-byte chunk in the middle: FFmpeg's
    decoder rejects that chunk (invalid data), so PyAV cannot decode the file past it."""
    import re

    frames = pattern_frames(num_frames)
    packets = [(re.sub(rb"DivX503b1393p", b"Lavc62.28.102", d), k) for d, k in _mpeg4_packets(frames)]
    packets.insert(5, (b"\x7f", False))
    return _mux_avi(path, packets, size=(frames.shape[2], frames.shape[1]), tag="FMP4")


def pyav_frames(path: Path, fmt: str = "rgb24") -> list[np.ndarray]:
    """Every frame of an independent full decode: ``av.open(metadata_errors="ignore")``,
    ``decode(video=0)`` -- what the readers must agree with."""
    import av

    with av.open(str(path), metadata_errors="ignore") as c:
        return [f.to_ndarray(format=fmt) for f in c.decode(video=0)]


def problem_files(d: Path) -> dict[str, Path]:
    """One file of each kind above, under ``d``, keyed by a short name."""
    return {
        "latin1_mpeg4": write_latin1_metadata_avi(d / "latin1_mpeg4.avi"),
        "latin1_mjpeg": write_latin1_metadata_avi(d / "latin1_mjpeg.avi", codec="mjpeg"),
        "mp4_audio": write_mp4_with_audio(d / "audio.mp4"),
        "mp4_no_picture_last": write_h264_no_picture_packet(d / "no_picture_last.mp4"),
        "mp4_no_picture_last_gop": write_h264_no_picture_packet(d / "no_picture_last_gop.mp4", 24, gop=8),
        "mp4_empty_last_sample": write_mp4_empty_last_sample(d / "empty_last_sample.mp4"),
        "mp4_edit_list": write_mp4_edit_list(d / "edit_list.mp4"),
        "mp4_rotated": write_rotated_mp4(d / "rotated.mp4"),
        "divx_packed": write_divx_packed_avi(d / "divx_packed.avi"),
        "xvid_drop_frames": write_xvid_drop_frames_avi(d / "xvid_drop.avi", empty_at=(8,)),
    }


def make_isogd_from(root: Path, videos: list[Path], *, split: str = "train", num_classes: int = 4,
                    depth: bool = True) -> list[str]:
    """An IsoGD copy whose ``split`` lists ``videos`` (copied as ``M_0000k<ext>``, and as the
    depth file ``K_0000k<ext>`` with ``depth``); returns the sample ids in list order."""
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"gesture_{i}\n" for i in range(num_classes)))
    lines, ids = [], []
    for i, src in enumerate(videos, 1):
        rgb = f"{split}/001/M_{i:05d}{src.suffix}"
        dep = f"{split}/001/K_{i:05d}{src.suffix}"
        (root / rgb).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / rgb)
        if depth:
            shutil.copyfile(src, root / dep)
        lines.append(f"{rgb} {dep} {0 if split == 'test' else (i - 1) % num_classes + 1}\n")
        ids.append(rgb.rsplit(".", 1)[0])
    (root / f"{split}_list.txt").write_text("".join(lines))
    return ids
