"""pipelines.make_loader: one contract across PyAV, OpenCV, DALI-CPU (and DALI-GPU where there is one).

Tiny videos are written here with PyAV; indexes are built directly from Sample/DatasetIndex.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers_data import problem_files, pyav_frames, write_undecodable_mpeg4_avi

from bench.data.formats import probe_sample
from bench.data.index import DatasetIndex, Sample
from bench.data.sampling import modality_mean, sample_frame_indices
from bench.errors import DataError
from pipelines import BACKENDS, CodecRefused, make_loader
from pipelines.routing import dali_installed

REAL = Path(__file__).parent / "data" / "real-gestures"
CPU_BACKENDS = ["pyav", "opencv"] + (["dali-cpu"] if dali_installed() else [])
needs_dali = pytest.mark.skipif(not dali_installed(), reason="nvidia-dali is not installed")

ENCODERS = {"mjpeg": ("mjpeg", ".avi", {"q:v": "3"}),
            "vp9": ("libvpx-vp9", ".webm",
                    {"crf": "32", "b:v": "0", "deadline": "realtime", "cpu-used": "8"}),
            "h264": ("libx264", ".mp4", {"crf": "23", "preset": "veryfast"})}


def frames_for(n: int, w: int = 96, h: int = 64, *, seed: int = 0, gray: bool = False) -> np.ndarray:
    """Smooth moving pattern (codec-friendly), each frame distinct: frame k brighter by k."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    phase = rng.integers(0, 50)
    out = []
    for k in range(n):
        a = np.stack([(xx * 2 + k * 6 + phase) % 256, (yy * 3 + k * 4) % 256,
                      (xx + yy + k * 9) % 256], -1).astype(np.uint8)
        if gray:
            v = np.minimum(20 + xx + yy + 2 * k + phase % 10, 250)   # smooth, no wrap-around edges
            a = np.repeat(v.astype(np.uint8)[..., None], 3, -1)
        out.append(a)
    return np.stack(out)


def write_video(path: Path, codec: str, frames: np.ndarray) -> Path:
    import av

    enc, _, opts = ENCODERS[codec]
    with av.open(str(path), "w") as c:
        s = c.add_stream(enc, rate=10)
        s.height, s.width = frames.shape[1:3]
        s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        s.options = opts
        for a in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def write_jpgs(folder: Path, frames: np.ndarray) -> Path:
    import cv2

    folder.mkdir(parents=True)
    for k, a in enumerate(frames, 1):
        cv2.imwrite(str(folder / f"{k:05d}.jpg"), cv2.cvtColor(a, cv2.COLOR_RGB2BGR))
    return folder


def make_index(paths: list[Path], *, counts: list[int | None] | None = None, fmt: str = "isogd",
               modality: str = "rgb", split: str = "train") -> DatasetIndex:
    counts = counts or [None] * len(paths)
    samples = [Sample(f"clip{i:03d}", i % 3, {modality: p}, n, f"list.txt:{i + 1}")
               for i, (p, n) in enumerate(zip(paths, counts))]
    return DatasetIndex(fmt, paths[0].parent, split, ["a", "b", "c"], samples)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, list[Path]]:
    """Small files of every kind the loader meets (a few per kind, lengths varied)."""
    d = tmp_path_factory.mktemp("media")
    out: dict[str, list[Path]] = {}
    for codec in ENCODERS:
        ext = ENCODERS[codec][1]
        out[codec] = [write_video(d / f"{codec}{i}{ext}", codec, frames_for(n, seed=i))
                      for i, n in enumerate((40, 24, 33))]
    out["jpg"] = [write_jpgs(d / f"jpg{i}", frames_for(n, seed=i)) for i, n in enumerate((36, 20))]
    out["depth"] = [write_video(d / f"K_{i}.avi", "mjpeg", frames_for(n, seed=i, gray=True))
                    for i, n in enumerate((30, 18))]
    out["short"] = [write_video(d / "short.avi", "mjpeg", frames_for(5, seed=7))]
    return out


def epoch_batches(loader, epoch: int = 0) -> list[dict]:
    loader.set_epoch(epoch)
    return list(loader)


def raw_frames(loader, epoch: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    loader.set_epoch(epoch)
    out = {}
    for b in loader.iter_frames():
        for sid, idx, fr in zip(b["sample_id"], b["frame_indices"], b["frames"]):
            out[sid] = (idx, fr)
    return out


# ----------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ["mjpeg", "vp9", "jpg"])
def test_batch_contract_per_backend(media, backend, kind):
    index = make_index(media[kind], fmt="jester")
    loader = make_loader(index, backend=backend, clip_len=8, size=32, batch_size=2, train=True, seed=3)
    assert loader.backend == backend
    batches = epoch_batches(loader)
    assert len(batches) == len(loader) == -(-len(index) // 2)
    seen = []
    for b in batches:
        assert set(b) >= {"clip", "label", "sample_id", "frame_indices"}
        n = len(b["sample_id"])
        assert b["clip"].dtype == torch.float32 and tuple(b["clip"].shape) == (n, 3, 8, 32, 32)
        assert b["label"].dtype == torch.int64 and tuple(b["label"].shape) == (n,)
        assert b["frame_indices"].dtype == torch.int64 and tuple(b["frame_indices"].shape) == (n, 8)
        assert all(isinstance(s, str) for s in b["sample_id"])
        seen += b["sample_id"]
    assert sorted(seen) == sorted(s.sample_id for s in index.samples)
    labels = {s.sample_id: s.label for s in index.samples}
    assert [labels[s] for s in batches[0]["sample_id"]] == batches[0]["label"].tolist()
    # mean-subtracted with the dataset's per-channel mean: values span below zero
    mean = torch.tensor(modality_mean("jester", "rgb")).view(1, 3, 1, 1, 1)
    x = batches[0]["clip"] + mean
    assert x.min() >= -1e-3 and x.max() <= 255 + 1e-3 and batches[0]["clip"].min() < 0


def test_eval_is_ordered_centred_and_deterministic(media):
    index = make_index(media["mjpeg"] + media["h264"])
    loader = make_loader(index, backend="pyav", clip_len=8, size=32, batch_size=4, train=False)
    a, b = epoch_batches(loader, 0), epoch_batches(loader, 5)   # the epoch does not matter in eval
    assert [s for x in a for s in x["sample_id"]] == [s.sample_id for s in index.samples]
    for x, y in zip(a, b):
        assert torch.equal(x["clip"], y["clip"]) and torch.equal(x["frame_indices"], y["frame_indices"])
    counts = [40, 24, 33, 40, 24, 33]
    got = torch.cat([x["frame_indices"] for x in a]).numpy()
    want = np.stack([sample_frame_indices(n, 8, train=False) for n in counts])
    np.testing.assert_array_equal(got, want)


def test_train_reproducible_per_seed_epoch_and_varies_across_epochs(media):
    index = make_index(media["mjpeg"] + media["vp9"] + media["h264"])
    make = lambda seed: make_loader(index, backend="opencv", clip_len=8, size=32, batch_size=3,
                                    train=True, seed=seed)
    a1, a2 = epoch_batches(make(1), 2), epoch_batches(make(1), 2)
    for x, y in zip(a1, a2):
        assert x["sample_id"] == y["sample_id"]
        assert torch.equal(x["frame_indices"], y["frame_indices"]) and torch.equal(x["clip"], y["clip"])
    other_epoch = epoch_batches(make(1), 3)
    order = lambda bs: [s for b in bs for s in b["sample_id"]]
    idx = lambda bs: {s: i.tolist() for b in bs for s, i in zip(b["sample_id"], b["frame_indices"])}
    assert order(a1) != order(other_epoch)             # reshuffled (9 samples: 1 in 9! to collide)
    assert idx(a1) != idx(other_epoch)                  # new jitter
    assert order(epoch_batches(make(2), 2)) != order(a1)  # the seed matters too
    # jittered indices stay within the paper's bounds: sorted, inside the video
    for sid, ix in idx(a1).items():
        assert ix == sorted(ix) and 0 <= ix[0] and ix[-1] < 40


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_worker_threads_do_not_change_batches(media, backend):
    index = make_index(media["mjpeg"] + media["vp9"])
    make = lambda w: make_loader(index, backend=backend, clip_len=8, size=32, batch_size=2, train=True,
                                 seed=0, num_workers=w)
    a, b = epoch_batches(make(0), 1), epoch_batches(make(2), 1)
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert x["sample_id"] == y["sample_id"] and torch.equal(x["clip"], y["clip"])


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sharding_disjoint_cover_equal_batches(media, train, drop_last):
    paths = (media["mjpeg"] + media["vp9"] + media["h264"] + media["short"])   # 10 samples
    index = make_index(paths)
    world, bs = 3, 2
    loaders = [make_loader(index, backend="opencv", clip_len=4, size=16, batch_size=bs, train=train,
                           seed=4, rank=r, world_size=world, drop_last=drop_last) for r in range(world)]
    per_rank = [epoch_batches(l, 1) for l in loaders]
    assert len({len(l) for l in loaders}) == 1
    assert [len(b) for b in per_rank] == [len(loaders[0])] * world
    real = [s for bs_ in per_rank for b in bs_ for s, p in zip(b["sample_id"], b["padded"]) if not p]
    assert len(real) == len(set(real))                          # disjoint
    if drop_last:   # 10 // 3 = 3 samples a rank, one full batch of 2 each: 6 samples in all
        assert len(loaders[0]) == 1 and len(real) == 6
        assert not any(p for bs_ in per_rank for b in bs_ for p in b["padded"])
    else:
        assert sorted(real) == sorted(s.sample_id for s in index.samples)   # covers the split
        padded = [s for bs_ in per_rank for b in bs_ for s, p in zip(b["sample_id"], b["padded"]) if p]
        assert len(padded) == 2 and set(padded) <= set(real)     # 10 -> 12: two wrapped duplicates


def test_short_video_repeats_last_frame(media):
    index = make_index(media["short"])   # 5 frames, clip of 8
    loader = make_loader(index, backend="pyav", clip_len=8, size=32, batch_size=1)
    (b,) = epoch_batches(loader)
    assert b["frame_indices"][0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    clip = b["clip"][0]                                    # (3, T, S, S)
    for t in (5, 6, 7):
        assert torch.equal(clip[:, t], clip[:, 4])
    assert not torch.equal(clip[:, 3], clip[:, 4])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_depth_is_one_channel_repeated(media, backend):
    index = make_index(media["depth"], modality="depth")
    loader = make_loader(index, modality="depth", backend=backend, clip_len=6, size=32, batch_size=2)
    raw = raw_frames(loader)
    for idx, fr in raw.values():
        assert fr.dtype == np.uint8 and fr.ndim == 3 and fr.shape[0] == 6    # (T, H, W)
    (b,) = epoch_batches(loader)
    clip = b["clip"] + 127.0                               # IsoGD depth mean
    assert torch.allclose(clip[:, 0], clip[:, 1]) and torch.allclose(clip[:, 0], clip[:, 2])
    # the gray values are the written ones (PyAV "gray" is exact; others within rounding)
    sid = index.samples[0].sample_id
    idx, fr = raw[sid]
    want = frames_for(30, seed=0, gray=True)[idx][..., 0].astype(int)
    assert np.abs(fr.astype(int) - want).mean() < 3


# ----------------------------------------------------------------------------- errors
@pytest.fixture
def broken(tmp_path, media) -> dict[str, Path]:
    good = media["mjpeg"][0].read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(good[: len(good) // 3])
    junk = tmp_path / "junk.avi"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return {"cut": cut, "junk": junk, "missing": tmp_path / "nothere.avi",
            "badframe": corrupt_frame(media["mjpeg"][0], tmp_path / "badframe.avi", frame=5)}


def corrupt_frame(src: Path, dst: Path, *, frame: int) -> Path:
    """A copy whose MJPEG frame ``frame`` has a broken Huffman table: the container and packet
    index are intact (probing passes), decoding that frame fails."""
    b = bytearray(src.read_bytes())
    sois = [i for i in range(len(b) - 1) if b[i] == 0xFF and b[i + 1] == 0xD8]
    dht = b.index(b"\xff\xc4", sois[frame])
    b[dht + 2:dht + 4] = b"\x00\x03"
    dst.write_bytes(bytes(b))
    return dst


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("bad", ["cut", "junk", "missing", "badframe"])
def test_raise_names_the_file(media, broken, backend, bad):
    index = make_index([media["mjpeg"][0], broken[bad], media["mjpeg"][1]])
    loader = make_loader(index, backend=backend, clip_len=8, size=16, batch_size=3, on_error="raise")
    with pytest.raises(DataError) as e:
        epoch_batches(loader)
    assert str(broken[bad]) in str(e.value)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_skip_records_every_bad_sample(media, broken, backend, caplog):
    bad = [broken["cut"], broken["junk"], broken["missing"], broken["badframe"]]
    index = make_index([media["mjpeg"][0], bad[0], media["mjpeg"][1], bad[1], bad[2], bad[3],
                        media["mjpeg"][2]])
    loader = make_loader(index, backend=backend, clip_len=8, size=16, batch_size=3, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="pipelines"):
        batches = epoch_batches(loader)
    got = [s for b in batches for s in b["sample_id"]]
    assert got == ["clip000", "clip002", "clip006"]
    assert [len(b["sample_id"]) for b in batches] == [2, 1]   # the all-bad middle batch is left out
    assert [s for s, _ in loader.skipped] == ["clip001", "clip003", "clip004", "clip005"]
    for (sid, reason), path in zip(loader.skipped, bad):
        assert str(path) in reason
    assert sum("skipping" in r.message for r in caplog.records) == 4
    epoch_batches(loader, 1)
    assert len(loader.skipped) == 4                          # per epoch, not accumulated


def test_index_longer_than_video_is_an_error(media):
    # the index states 60 frames for a 40-frame video: sampling asks for frames that are not there
    index = make_index([media["h264"][0]], counts=[60])
    for backend in ("pyav", "opencv"):
        loader = make_loader(index, backend=backend, clip_len=8, size=16, batch_size=1)
        with pytest.raises(DataError, match="40 frames"):
            epoch_batches(loader)


@needs_dali
def test_dali_refuses_index_beyond_video_instead_of_black_frames(media):
    # DALI pads missing frames with zeros; the loader checks the true count first
    index = make_index([media["mjpeg"][0]], counts=[60])
    with pytest.raises(DataError, match="60 frames.*40"):
        epoch_batches(make_loader(index, backend="dali-cpu", clip_len=8, size=16, batch_size=1))


@needs_dali
@pytest.mark.parametrize("kind,modality", [("mjpeg", "rgb"), ("depth", "depth"), ("jpg", "rgb"), ("jpg", "depth")])
@pytest.mark.parametrize("device_preprocess", [False, True])
def test_dali_torch_handover_gives_the_same_frames_and_clips(media, kind, modality, device_preprocess):
    """The DALI-GPU path's handover -- DALI's output to torch through DLPack, gray conversion in
    torch, clips finished from tensors -- run on DALI's CPU decoder here (``to_torch``): the
    same frames, byte for byte, and the same clips as the numpy path."""
    import torch

    index = make_index(media[kind], modality=modality)

    def loader(to_torch: bool):
        ld = make_loader(index, modality=modality, backend="dali-cpu", clip_len=6, size=24, batch_size=2,
                         train=True, seed=3, device_preprocess=device_preprocess)
        ld._dali.to_torch = to_torch
        return ld

    ref, got = loader(False), loader(True)
    a, b = raw_frames(ref), raw_frames(got)
    assert set(a) == set(b) and len(a) == len(media[kind])
    for sid in a:
        assert isinstance(b[sid][1], torch.Tensor) and isinstance(a[sid][1], np.ndarray)
        np.testing.assert_array_equal(a[sid][0], b[sid][0])
        assert b[sid][1].dtype == torch.uint8 and b[sid][1].shape == a[sid][1].shape
        assert np.array_equal(b[sid][1].numpy(), a[sid][1]), sid
    for x, y in zip(epoch_batches(ref, 1), epoch_batches(got, 1), strict=True):
        assert x["sample_id"] == y["sample_id"]
        key = "frames" if device_preprocess else "clip"
        assert torch.equal(x[key], y[key])


@needs_dali
def test_counts_verified_once_are_not_counted_again(media, monkeypatch, tmp_path):
    """DALI's path counts decodable frames before trusting the index -- unless the index's
    counts were verified by decoding already (a probed index; `bench data prepare`'s cache): then
    no loader, in no trial and on no rank, decodes a file just to count it."""
    import bench.data.probe as probe_mod
    from bench.data.formats import probe_index

    paths = media["mjpeg"]
    calls: list[str] = []
    real = probe_mod.probe_video

    def counting(path, *a, **kw):
        calls.append(str(path))
        return real(path, *a, **kw)

    probed = probe_index(make_index(paths))
    assert probed.counts_decoded and probed.shard(1, 2).counts_decoded
    monkeypatch.setattr(probe_mod, "probe_video", counting)
    for rank in (0, 1):
        loader = make_loader(probed, backend="dali-cpu", clip_len=4, size=16, batch_size=1, rank=rank, world_size=2)
        for epoch in (0, 1):
            epoch_batches(loader, epoch)
    assert calls == []
    # the same counts, unverified (stated by a list): each file is counted once per loader, not per epoch
    stated = make_index(paths, counts=[s.num_frames for s in probed.samples])
    assert not stated.counts_decoded
    loader = make_loader(stated, backend="dali-cpu", clip_len=4, size=16, batch_size=1)
    for epoch in (0, 1, 2):
        epoch_batches(loader, epoch)
    assert sorted(calls) == sorted(str(p) for p in paths)


@needs_dali
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_forced_dali_cpu_refuses_h264_naming_file_and_codec(media, on_error):
    index = make_index(media["mjpeg"][:1] + media["h264"][:1])
    with pytest.raises(CodecRefused) as e:      # refused at construction (probed files)...
        make_loader(index, backend="dali-cpu", on_error=on_error)
    assert str(media["h264"][0]) in str(e.value) and "h264" in str(e.value)


@needs_dali
def test_forced_dali_cpu_refuses_unprobed_h264_mid_epoch(media, monkeypatch):
    monkeypatch.setattr("pipelines.loader.PROBE_FOR_AUTO", 1)   # construction probes file 0 only
    index = make_index(media["mjpeg"][:2] + media["h264"][:1] + media["mjpeg"][2:])
    loader = make_loader(index, backend="dali-cpu", on_error="skip", batch_size=2, clip_len=4, size=16)
    with pytest.raises(CodecRefused, match="h264"):   # ...and later, even with on_error="skip"
        epoch_batches(loader)


@needs_dali
def test_dali_batch_failure_is_pinned_to_its_file(media, tmp_path):
    """One undecodable file fails DALI's whole batch; the decoder reruns to name the culprit."""
    from pipelines._media import Media
    from pipelines.dali import DaliDecoder
    from pipelines.decoders import Request

    good = media["mjpeg"][0]
    bad = corrupt_frame(good, tmp_path / "bad.avi", frame=5)
    idx = np.array([0, 5, 30, 39])
    reqs = [Request(Media(p, "video", "mjpeg", 40), idx, False) for p in (good, bad, good)]
    out = DaliDecoder(device="cpu", max_batch=4, clip_len=4).decode(reqs)
    assert isinstance(out[1], DataError) and str(bad) in str(out[1]) and "dali-cpu" in str(out[1])
    for r in (out[0], out[2]):
        assert isinstance(r, np.ndarray) and r.shape == (4, 64, 96, 3)
    np.testing.assert_array_equal(out[0], out[2])


# ----------------------------------------------------------------------------- auto routing
def test_auto_picks_a_fallback_for_h264_and_keeps_every_sample(media, caplog):
    index = make_index(media["h264"] + _real("mp4"))
    with caplog.at_level(logging.INFO, logger="pipelines"):
        loader = make_loader(index, backend="auto", clip_len=8, size=16, batch_size=2)
    assert loader.backend in ("pyav", "opencv")
    assert any("h264" in r.message and loader.backend in r.message for r in caplog.records)
    got = [s for b in epoch_batches(loader) for s in b["sample_id"]]
    assert sorted(got) == sorted(s.sample_id for s in index.samples) and not loader.skipped


@needs_dali
def test_auto_routes_what_dali_cannot_read_to_the_fallback(media, monkeypatch):
    # pretend the measurement favoured DALI-CPU for VP9: a VP9 dataset with stray H.264 files
    monkeypatch.setitem(__import__("pipelines.routing").routing.AUTO_CPU, "vp9", "dali-cpu")
    monkeypatch.setattr("pipelines.loader.PROBE_FOR_AUTO", 2)
    index = make_index(media["vp9"][:1] + media["h264"][:2] + media["vp9"][1:])
    loader = make_loader(index, backend="auto", clip_len=8, size=16, batch_size=2)
    assert loader.backend == "dali-cpu"
    got = [s for b in epoch_batches(loader) for s in b["sample_id"]]
    assert sorted(got) == sorted(s.sample_id for s in index.samples)
    assert loader.decoded_by == {"dali-cpu": 3, "opencv": 2}


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-host routing")
def test_auto_on_cpu_follows_the_measured_table(media):
    # pipelines.routing: PyAV decodes only the requested MJPEG packets; OpenCV for the rest
    want = {"mjpeg": "pyav", "vp9": "opencv", "h264": "opencv", "jpg": "opencv"}
    for kind, backend in want.items():
        assert make_loader(make_index(media[kind]), backend="auto").backend == backend
    mixed = make_index(media["mjpeg"][:1] + media["h264"][:1])
    assert make_loader(mixed, backend="auto").backend == "opencv"


# ----------------------------------------------------------------------------- cache
def test_cache_decodes_once_and_matches_uncached(media, monkeypatch):
    import pipelines.decoders as dec

    calls = []
    real = dec.decode_opencv
    monkeypatch.setitem(dec.DECODERS, "opencv", lambda req: calls.append(req) or real(req))
    index = make_index(media["mjpeg"] + media["jpg"])
    cached = make_loader(index, backend="opencv", clip_len=8, size=32, batch_size=2, train=True, cache=True)
    plain = make_loader(index, backend="opencv", clip_len=8, size=32, batch_size=2, train=True)
    for epoch in (0, 1, 2):
        for x, y in zip(epoch_batches(cached, epoch), epoch_batches(plain, epoch)):
            assert torch.equal(x["clip"], y["clip"])
    cached_calls = [r for r in calls if len(r.indices) != 8]      # whole-video decodes
    assert len(cached_calls) == len(index)                        # once per file, over 3 epochs
    assert cached.cache_bytes == (40 + 24 + 33 + 36 + 20) * 64 * 96 * 3   # every frame, uint8 RGB


def test_shared_cache_decodes_each_video_once_per_process_and_decoder(media, monkeypatch, tmp_path):
    """`shared_cache()`-style sharing: a second loader over the same files (the next trial of a
    reused Ray actor) decodes nothing and gives the same clips; another decoder, or a rewritten
    file, decodes again."""
    import shutil

    import pipelines.decoders as dec
    from pipelines import ClipCache

    calls = []
    for name in ("opencv", "pyav"):
        real = dec.DECODERS[name]
        monkeypatch.setitem(dec.DECODERS, name, lambda req, real=real, name=name: calls.append((name, req)) or real(req))
    files = [Path(shutil.copy(p, tmp_path / p.name)) for p in media["mjpeg"]]
    index = make_index(files)
    shared = ClipCache()

    def one_trial(backend: str) -> list[torch.Tensor]:
        loader = make_loader(index, backend=backend, clip_len=8, size=32, batch_size=2, train=True, cache=shared)
        return [b["clip"] for e in (0, 1) for b in epoch_batches(loader, e)]

    first = one_trial("opencv")
    assert sum(n == "opencv" and len(r.indices) != 8 for n, r in calls) == len(files)
    calls.clear()
    assert all(torch.equal(a, b) for a, b in zip(first, one_trial("opencv")))
    assert calls == []                                   # every video came from the cache
    one_trial("pyav")
    assert sum(n == "pyav" for n, _ in calls) == len(files)   # keyed by decoder too
    calls.clear()
    files[0].write_bytes(media["mjpeg"][1].read_bytes())      # rewritten in place
    one_trial("opencv")
    assert [r.media.path for n, r in calls] == [files[0]]
    assert len(shared) == 2 * len(files) + 1 and shared.nbytes == sum(a.nbytes for a, _ in shared._entries.values())


def test_a_full_shared_cache_evicts_other_datasets_not_its_own():
    from pipelines import ClipCache

    cache = ClipCache(limit=1000)
    frames = lambda: np.zeros(400, np.uint8)     # noqa: E731
    a, b = ("/data/a", False), ("/data/b", False)
    assert cache.put(("a1",), frames(), a) and cache.put(("a2",), frames(), a)
    assert not cache.put(("a3",), frames(), a)            # its own dataset: the part that fits stays
    assert cache.get(("a1",)) is not None and cache.get(("a2",)) is not None
    cache.get(("a1",))                                    # a1 is now the more recently used
    assert cache.put(("b1",), frames(), b)                # another dataset evicts a's oldest: a2
    assert cache.get(("a2",)) is None and cache.get(("a1",)) is not None
    assert cache.nbytes == 800
    hit = cache.get(("b1",))
    with pytest.raises(ValueError):
        hit[0] = 1                                        # shared arrays are read-only


# ----------------------------------------------------------------------------- equivalence
def _compare(a: dict, b: dict, tol: float) -> list[float]:
    assert a.keys() == b.keys()
    diffs = []
    for sid in a:
        (ia, fa), (ib, fb) = a[sid], b[sid]
        np.testing.assert_array_equal(ia, ib)
        assert fa.shape == fb.shape
        diffs.append(float(np.abs(fa.astype(np.int16) - fb.astype(np.int16)).mean()))
    assert max(diffs) < tol, diffs
    return diffs


@needs_dali
@pytest.mark.parametrize("kind", ["mjpeg", "vp9", "jpg"])
def test_dali_cpu_matches_pyav_on_written_videos(media, kind):
    index = make_index(media[kind])
    mk = lambda b: make_loader(index, backend=b, clip_len=8, size=32, batch_size=2, train=True, seed=5)
    pyav, dali = mk("pyav"), mk("dali-cpu")
    _compare(raw_frames(pyav, 2), raw_frames(dali, 2), tol=3.0)
    for x, y in zip(epoch_batches(pyav, 2), epoch_batches(dali, 2)):   # same after preprocessing
        assert x["sample_id"] == y["sample_id"]
        assert (x["clip"] - y["clip"]).abs().mean() < 3.0


def _real(kind: str) -> list[Path]:
    if kind == "jpg":
        return sorted(p for p in (REAL / "jester_layout" / "20bn-jester-style").iterdir() if p.is_dir())
    return sorted((REAL / kind).glob(f"*.{kind}"))


@needs_dali
@pytest.mark.parametrize("kind", ["webm", "jpg"])
def test_dali_cpu_matches_pyav_on_real_footage(kind):
    paths = _real(kind)
    assert paths, f"real footage missing under {REAL}"
    index = make_index(paths, fmt="jester")
    mk = lambda b: make_loader(index, backend=b, clip_len=16, size=64, batch_size=3, train=True, seed=1)
    _compare(raw_frames(mk("pyav"), 1), raw_frames(mk("dali-cpu"), 1), tol=3.0)


def test_opencv_matches_pyav_on_real_h264():
    index = make_index(_real("mp4"), fmt="jester")
    assert len(index) == 2
    mk = lambda b: make_loader(index, backend=b, clip_len=16, size=64, batch_size=2, train=True, seed=1)
    _compare(raw_frames(mk("pyav"), 0), raw_frames(mk("opencv"), 0), tol=3.0)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["mp4", "webm", "jpg"])
def test_dali_gpu_matches_pyav_on_real_footage(kind):
    index = make_index(_real(kind), fmt="jester")
    mk = lambda b: make_loader(index, backend=b, clip_len=16, size=64, batch_size=3, train=True, seed=1)
    gpu = mk("dali-gpu")
    assert gpu.backend == "dali-gpu"
    frames = raw_frames(gpu, 1)
    # the frames stay on the GPU (DLPack, no host copy) and the clips are finished there
    assert all(f.is_cuda for _, f in frames.values())
    _compare(raw_frames(mk("pyav"), 1), {k: (i, f.cpu().numpy()) for k, (i, f) in frames.items()}, tol=3.0)
    assert all(b["clip"].is_cuda for b in epoch_batches(gpu, 1))
    assert make_loader(index, backend="auto").backend == "dali-gpu"


@pytest.mark.gpu
@pytest.mark.parametrize("device_preprocess", [False, True])
def test_dali_gpu_batch_with_a_cpu_fallback_clip_is_on_one_device(media, monkeypatch, device_preprocess):
    """A batch where one file goes to a CPU decoder (a codec this GPU refuses, under auto) and
    the others to DALI on the GPU: every clip of it ends up on the GPU, none is lost."""
    index = make_index(media["mjpeg"])
    loader = make_loader(index, backend="dali-gpu", clip_len=4, size=16, batch_size=3,
                         device_preprocess=device_preprocess)
    real = loader._decoder_for
    first = str(media["mjpeg"][0])
    monkeypatch.setattr(loader, "_decoder_for", lambda m: "pyav" if str(m.path) == first else real(m))
    (batch,) = epoch_batches(loader)
    assert len(batch["sample_id"]) == 3 and loader.decoded_by == {"pyav": 1, "dali-gpu": 2}
    assert batch["frames" if device_preprocess else "clip"].is_cuda


# ----------------------------------------------------------------------------- real-world kinds of file
@pytest.fixture(scope="module")
def problem(tmp_path_factory) -> dict[str, Path]:
    """Latin-1 metadata, audio, no-picture and placeholder packets, edit lists, a display
    matrix (tests/_helpers_data.problem_files), plus one file PyAV cannot decode."""
    d = tmp_path_factory.mktemp("problem")
    return {**problem_files(d), "undecodable": write_undecodable_mpeg4_avi(d / "undecodable.avi")}


def _named_index(paths: dict[str, Path], counts: dict[str, int] | None = None) -> DatasetIndex:
    samples = [Sample(name, i % 3, {"rgb": p}, (counts or {}).get(name), f"list.txt:{i + 1}")
               for i, (name, p) in enumerate(paths.items())]
    return DatasetIndex("isogd", next(iter(paths.values())).parent, "train", ["a", "b", "c"], samples)


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("counts", ["probed", "prepared"])
def test_problem_files_give_pyav_frames_on_every_backend(problem, backend, cache, counts):
    """Frame k of a clip is frame k of PyAV's own full decode, pixel for pixel, up to the last
    one (clips longer than the videos repeat the last frame), with counts probed by the loader
    or stated by the index as ``bench data prepare`` stores them."""
    good = {n: p for n, p in problem.items() if n != "undecodable"}
    stated = None
    if counts == "prepared":
        stated = {n: probe_sample(Sample(n, 0, {"rgb": p})) for n, p in good.items()}
    loader = make_loader(_named_index(good, stated), backend=backend, clip_len=32, size=16, batch_size=4,
                         cache=cache, on_error="skip")
    raw = raw_frames(loader)
    assert loader.skipped == [] and sorted(raw) == sorted(good)
    for name, (idx, frames) in raw.items():
        ref = np.stack(pyav_frames(good[name]))
        assert int(idx.max()) == len(ref) - 1, name
        np.testing.assert_array_equal(frames, ref[idx], err_msg=name)


@pytest.mark.parametrize("backend", ["auto", "pyav", "opencv"])
def test_undecodable_file_is_skipped_naming_file_and_line(problem, backend):
    paths = {n: problem[n] for n in ("latin1_mpeg4", "undecodable", "divx_packed", "mp4_audio")}
    loader = make_loader(_named_index(paths), backend=backend, clip_len=32, size=16, batch_size=4,
                         cache=True, on_error="skip")
    batches = epoch_batches(loader)
    assert [s for b in batches for s in b["sample_id"]] == ["latin1_mpeg4", "divx_packed", "mp4_audio"]
    ((sid, reason),) = loader.skipped
    assert sid == "undecodable" and str(problem["undecodable"]) in reason and "list.txt:2" in reason
    raising = make_loader(_named_index(paths), backend=backend, clip_len=32, size=16, batch_size=4,
                          cache=True, on_error="raise")
    with pytest.raises(DataError, match="list.txt:2") as e:
        epoch_batches(raising)
    assert e.value.path == str(problem["undecodable"])


@pytest.mark.parametrize("backend", ["pyav", "opencv"])
@pytest.mark.parametrize("exc", [UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "unexpected end of data"),
                                 IndexError("list index out of range"), ValueError("bad value"),
                                 KeyError("stream")])
def test_any_decoder_exception_is_a_skipped_dataerror(problem, monkeypatch, backend, exc):
    import pipelines.decoders as dec

    bad = problem["mp4_audio"]
    real = dec.DECODERS[backend]

    def flaky(req):
        if req.media.path == bad:
            raise exc
        return real(req)

    monkeypatch.setitem(dec.DECODERS, backend, flaky)
    paths = {n: problem[n] for n in ("latin1_mjpeg", "mp4_audio", "divx_packed")}
    loader = make_loader(_named_index(paths), backend=backend, clip_len=8, size=16, batch_size=3,
                         on_error="skip")
    (batch,) = epoch_batches(loader)
    assert batch["sample_id"] == ["latin1_mjpeg", "divx_packed"]
    ((sid, reason),) = loader.skipped
    assert sid == "mp4_audio" and str(bad) in reason and "list.txt:2" in reason
    assert type(exc).__name__ in reason


def test_any_probe_exception_at_construction_is_a_skipped_dataerror(problem, monkeypatch):
    """"auto" probes files to choose a backend: an exception there is recorded for the sample."""
    import av

    bad = problem["latin1_mpeg4"]
    real_open = av.open

    def strict_open(file, *args, **kwargs):
        if str(file) == str(bad):   # what PyAV does without metadata_errors="ignore"
            raise UnicodeDecodeError("utf-8", b"caf\xe9", 3, 4, "unexpected end of data")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(av, "open", strict_open)
    paths = {n: problem[n] for n in ("latin1_mpeg4", "xvid_drop_frames")}
    loader = make_loader(_named_index(paths), backend="auto", clip_len=8, size=16, batch_size=2,
                         on_error="skip")
    (batch,) = epoch_batches(loader)
    assert batch["sample_id"] == ["xvid_drop_frames"]
    ((sid, reason),) = loader.skipped
    assert sid == "latin1_mpeg4" and str(bad) in reason and "UnicodeDecodeError" in reason


@needs_dali
def test_dali_cpu_reads_latin1_mjpeg_like_pyav(problem):
    paths = {"latin1_mjpeg": problem["latin1_mjpeg"]}
    mk = lambda b: make_loader(_named_index(paths), backend=b, clip_len=16, size=16, batch_size=1)
    _compare(raw_frames(mk("pyav")), raw_frames(mk("dali-cpu")), tol=3.0)


# ----------------------------------------------------------------------------- arguments, imports
@pytest.mark.parametrize("kwargs, field", [
    ({"backend": "ffmpeg"}, "backend"), ({"on_error": "ignore"}, "on_error"),
    ({"modality": "flow"}, "modality"), ({"batch_size": 0}, "batch_size"), ({"clip_len": 0}, "clip_len"),
    ({"rank": 2, "world_size": 2}, "rank"), ({"num_workers": -1}, "num_workers"),
])
def test_bad_arguments_name_the_field(media, kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_loader(make_index(media["mjpeg"]), **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_dali_gpu_refused_without_gpu(media):
    with pytest.raises(ValueError, match="GPU"):
        make_loader(make_index(media["mjpeg"]), backend="dali-gpu")


def test_backends_listed():
    assert BACKENDS == ("auto", "dali-gpu", "dali-cpu", "pyav", "opencv")


def test_dali_is_imported_only_when_used(media):
    code = ("import sys; from pathlib import Path; from bench.data.index import DatasetIndex, Sample;"
            "from pipelines import make_loader;"
            f"p = Path({str(media['h264'][0])!r});"
            "ix = DatasetIndex('isogd', p.parent, 'valid', ['a'], [Sample('s', 0, {'rgb': p})]);"
            "l = make_loader(ix, backend='auto', clip_len=4, size=16); list(l);"
            "print(l.backend, 'nvidia.dali' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    backend, imported = out.stdout.split()
    assert backend in ("pyav", "opencv") and imported == "False"


def test_device_preprocess_hands_over_uint8_that_finishes_to_the_same_clips(tmp_path):
    """``device_preprocess=True``: uint8 square crops, finished by `batch_clips` where the batch
    goes -- bitwise the clips of the default loader, in training (random crops, jitter) and
    evaluation; one byte a value, one channel for depth."""
    import torch

    from bench.data.formats import load_index
    from bench.data.sampling import batch_clips
    from bench.data.synth import synthesize
    from pipelines import make_loader

    root = synthesize("isogd", tmp_path / "syn", num_classes=2, clips_per_class=3, valid_clips_per_class=1,
                      test_clips_per_class=0, size=(64, 48), length_scale=0.3, seed=0)
    for modality in ("rgb", "depth"):
        index = load_index("isogd", root, "train", modalities=(modality,))
        for train in (True, False):
            kw = dict(modality=modality, clip_len=8, size=32, batch_size=4, train=train, seed=3, backend="pyav")
            plain, raw = make_loader(index, **kw), make_loader(index, **kw, device_preprocess=True)
            for epoch in (0, 1):
                plain.set_epoch(epoch)
                raw.set_epoch(epoch)
                for a, b in zip(plain, raw, strict=True):
                    assert "clip" not in b and b["frames"].dtype == torch.uint8
                    assert b["frames"].shape[-1] == (1 if modality == "depth" else 3)
                    assert b["frames"].shape[:2] == (a["clip"].shape[0], a["clip"].shape[2])   # (B, T, S0, S0, C)
                    assert torch.equal(batch_clips(b, "cpu"), a["clip"])
                    assert a["sample_id"] == b["sample_id"] and torch.equal(a["label"], b["label"])
