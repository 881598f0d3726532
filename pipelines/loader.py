"""``make_loader``: batches of preprocessed clips from a DatasetIndex, whatever decodes them.

One contract for every backend (DALI on GPU, DALI on CPU, PyAV, OpenCV): the loader, not the
backend, decides *which* frames and *which* crop, so the backends are interchangeable and
their outputs comparable frame for frame.

    plan (seed, epoch, rank)  ->  per sample: rng(seed, epoch, position)
        -> frame indices (paper's jittered sampling)  -> backend decodes those frames (uint8)
        -> preprocess_clip (crop, resize, mean)        -> batch {clip, label, sample_id, ...}

Reproducibility: each sample's randomness comes from ``(seed, epoch, its position in the
index)`` alone, so a batch does not depend on the number of workers, on the rank layout, or
on the backend. Sharding follows ``torch.utils.data.DistributedSampler``: the (shuffled)
order is padded by wrapping around (or cut, with ``drop_last``) to a multiple of
``world_size``, then rank r takes every world_size-th entry from r, so every rank plans the
same number of batches (a DDP all-reduce would otherwise hang). Wrapped duplicates are
flagged in the batch's ``padded`` mask so evaluation can leave them out.

What a rank *delivers* can still differ: with ``on_error="skip"`` a batch whose samples all
fail is left out on that rank alone (its neighbours' batches decode), so the rank yields
fewer than ``len()`` batches. The loader cannot hide this (an empty batch would not pass the
network, and a made-up clip would be data); a consumer that runs a collective per batch must
agree across ranks at every step: ``bench.train.loop.train_one_epoch`` all-reduces each
rank's clip count before every step and lets a rank without a batch step on a zero-weight
stand-in, so no rank waits in DDP's all-reduce for one that is not there.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np

from bench.data.index import DatasetIndex, Sample
from bench.errors import DataError
from pipelines._media import Media, MediaResolver
from pipelines.decoders import DECODERS, Request
from pipelines.routing import (
    BACKENDS,
    CPU_FALLBACK,
    DALI_BACKENDS,
    FALLBACK_BACKENDS,
    Choice,
    choose,
    dali_installed,
)

log = logging.getLogger("pipelines")

Backend = str        # one of pipelines.routing.BACKENDS
OnError = Literal["raise", "skip"]

CACHE_LIMIT_BYTES = 4 << 30   # cache=True stops adding videos past this (and says so once)
PROBE_FOR_AUTO = 8            # files probed, spread over the index, to choose a backend
_SHUFFLE, _SAMPLE = 0x5EED, 0xC11B  # stream tags: the shuffle and per-sample draws never collide


class ClipCache:
    """Decoded videos (all their frames, uint8, host memory) kept by ``make_loader(cache=...)``,
    at most ``limit`` bytes.

    One loader's own (``cache=True``), or shared by every loader of the process that is handed
    the same one (`shared_cache`): a sweep's trials that run one after another in a reused Ray
    actor (Tune's ``reuse_actors``), and a trial's train and validation loaders, decode a
    dataset once, not once each. A video is looked up by path, size and modification time (a
    rewritten file is decoded again), the channel layout and the decoder (decoders may differ in
    the last bit, and a trial's clips must not depend on which trial ran before it in the process).

    Full: a loader makes room by evicting the least recently used videos of *other* datasets
    (another root or modality, e.g. the previous level of a graded suite); its own are never
    evicted for each other, so a dataset larger than the limit keeps the part that fits (later
    videos are decoded every epoch, said once) instead of thrashing."""

    def __init__(self, limit: int = CACHE_LIMIT_BYTES) -> None:
        self.limit = int(limit)
        self._entries: OrderedDict[tuple, tuple[np.ndarray, tuple]] = OrderedDict()
        self.nbytes = 0
        self.lock = threading.Lock()
        self._warned: set[tuple] = set()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(path: Path, gray: bool, decoder: str) -> tuple | None:
        try:
            st = Path(path).stat()
        except OSError:
            return None           # the decoder names the file in its error
        return (str(path), bool(gray), decoder, st.st_size, st.st_mtime_ns)

    def get(self, key: tuple | None) -> np.ndarray | None:
        if key is None:
            return None
        with self.lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            self._entries.move_to_end(key)
            return hit[0]

    def put(self, key: tuple | None, frames: np.ndarray, tag: tuple) -> bool:
        """Keep ``frames`` under ``key`` for the dataset ``tag``; False when it did not fit."""
        if key is None:
            return False
        with self.lock:
            if key in self._entries:
                return True
            need = self.nbytes + frames.nbytes - self.limit
            if need > 0:
                for k in [k for k, (_, t) in self._entries.items() if t != tag]:   # oldest first
                    if need <= 0:
                        break
                    gone, _ = self._entries.pop(k)
                    self.nbytes -= gone.nbytes
                    need -= gone.nbytes
            if need > 0:
                if tag not in self._warned:
                    self._warned.add(tag)
                    log.warning("clip cache full (%.1f GiB); later videos of %s are decoded every epoch",
                                self.nbytes / 2**30, tag[0])
                return False
            frames.setflags(write=False)      # shared: a consumer must copy before writing
            self._entries[key] = (frames, tag)
            self.nbytes += frames.nbytes
            return True

    def clear(self) -> None:
        with self.lock:
            self._entries.clear()
            self.nbytes = 0
            self._warned.clear()


_SHARED_CACHE: ClipCache | None = None


def shared_cache() -> ClipCache:
    """The process's `ClipCache` (``CACHE_LIMIT_BYTES``), for ``make_loader(cache=shared_cache())``."""
    global _SHARED_CACHE
    if _SHARED_CACHE is None:
        _SHARED_CACHE = ClipCache(CACHE_LIMIT_BYTES)
    return _SHARED_CACHE


class CodecRefused(DataError):
    """A forced backend met a codec it cannot decode. Raised even with on_error="skip":
    skipping would quietly drop every such file, which is DALI's own failure mode."""


@dataclass(slots=True)
class _Item:
    pos: int                  # position of the sample in the (unsharded) index
    padded: bool              # a wrapped duplicate that only evens out the ranks
    sample: Sample
    rng: np.random.Generator | None = None
    request: Request | None = None
    decoder: str = ""
    frames: np.ndarray | None = None
    error: DataError | None = None


def make_loader(index: DatasetIndex, *, modality: str = "rgb", clip_len: int = 16, size: int = 112,
                batch_size: int = 8, train: bool = False, seed: int = 0, backend: Backend = "auto",
                rank: int = 0, world_size: int = 1, on_error: OnError = "raise",
                drop_last: bool = False, cache: bool | ClipCache = False, num_workers: int = 0,
                device_preprocess: bool = False) -> "ClipLoader":
    """A :class:`ClipLoader` over ``index`` (one split); arguments are checked here, by name.

    ``train``: shuffled order, jittered frame indices and a random crop offset, all drawn from
    ``(seed, epoch)``; otherwise the index order, evenly spaced frames and a centred crop.
    ``backend``: "auto" probes codecs and picks (logged on logger "pipelines"; see
    ``pipelines.routing``); a forced backend refuses files it cannot decode (DataError).
    ``on_error``: "raise" stops at the first bad sample with a DataError naming its file and
    list line; "skip" leaves it out of its batch and records ``(sample_id, reason)`` in
    ``.skipped`` (a batch whose samples all fail is left out, so that rank then runs fewer than
    ``len()`` batches; DDP training keeps the ranks in step regardless, see the module
    docstring). Whatever a decoder, a container or its metadata raises is such a
    DataError, at construction (probing for "auto") as mid-epoch.
    Frame counts are decodable frames (``bench.data.probe``), so frame k of a clip is frame k of
    a full PyAV decode on every backend that reads the file.
    ``cache``: keep every decoded video (all its frames, uint8) in memory across epochs -- for
    small datasets, where decoding would otherwise dominate every epoch. True: in a cache of
    this loader's own; a `ClipCache` (`shared_cache()`): in that one, shared with the other
    loaders handed it (a trial's validation loader, the next trial in the same process).
    ``num_workers``: threads that load samples of a batch in parallel and prepare the next
    batch while the current one is used (0: everything in the calling thread).
    ``device_preprocess``: hand over the square-cropped clips as uint8, ``frames`` (B, T, S0,
    S0, C), in pinned memory where CUDA is present, instead of float ``clip``: the consumer
    finishes them on its device (`bench.data.sampling.batch_clips`: float conversion, resize,
    mean -- the same torch ops, bitwise the same clips on a CPU), so a GPU trainer copies one
    byte a value (one channel for depth) and resizes on the GPU. A batch whose crops differ in size (videos of
    different sizes) is finished here as without the option.
    """
    if not isinstance(index, DatasetIndex):
        raise TypeError(f"index must be a DatasetIndex, got {type(index).__name__}")
    if len(index) == 0:
        raise ValueError(f"index: the {index.format} {index.split!r} split has no samples")
    if modality not in index.modalities:
        raise ValueError(f"modality: {modality!r} is not in every sample of the index "
                         f"(available: {list(index.modalities)})")
    for name, value, low in (("clip_len", clip_len, 1), ("size", size, 1),
                             ("batch_size", batch_size, 1), ("world_size", world_size, 1),
                             ("seed", seed, 0), ("num_workers", num_workers, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank: expected 0 <= rank < world_size ({world_size}), got {rank!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {list(BACKENDS)}, got {backend!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error: expected 'raise' or 'skip', got {on_error!r}")
    if not isinstance(cache, (bool, ClipCache)):
        raise ValueError(f"cache: expected True, False or a pipelines.ClipCache, got {cache!r}")
    return ClipLoader(index, modality=modality, clip_len=clip_len, size=size, batch_size=batch_size,
                      train=train, seed=seed, backend=backend, rank=rank, world_size=world_size,
                      on_error=on_error, drop_last=drop_last, cache=cache, num_workers=num_workers,
                      device_preprocess=bool(device_preprocess))


class ClipLoader:
    """Iterable over one epoch of batches; ``set_epoch(e)`` selects the epoch (as DistributedSampler).

    Each batch is a dict: ``clip`` float32 (B, 3, T, S, S) mean-subtracted, ``label`` int64 (B,),
    ``sample_id`` list[str], ``frame_indices`` int64 (B, T), ``padded`` bool (B,) (wrapped
    duplicates that even out ranks). ``len()`` is the number of batches per epoch.
    After an epoch, ``.skipped`` lists that epoch's ``(sample_id, reason)`` (on_error="skip") and
    ``.decoded_by`` counts samples per decoder (a mixed dataset under "auto" uses two).
    """

    def __init__(self, index: DatasetIndex, *, modality: str, clip_len: int, size: int,
                 batch_size: int, train: bool, seed: int, backend: str, rank: int, world_size: int,
                 on_error: str, drop_last: bool, cache: bool | ClipCache, num_workers: int,
                 device_preprocess: bool = False) -> None:
        from bench.data.sampling import modality_mean

        self.index = index
        self.modality = modality
        self.gray = modality == "depth"   # 8-bit depth: one channel, repeated to 3 by preprocess
        self.clip_len, self.size, self.batch_size = clip_len, size, batch_size
        self.train, self.seed = train, seed
        self.rank, self.world_size = rank, world_size
        self.on_error, self.drop_last = on_error, drop_last
        self.num_workers = num_workers
        self._clips: ClipCache | None = (cache if isinstance(cache, ClipCache)
                                         else ClipCache(CACHE_LIMIT_BYTES) if cache else None)
        self.cache = self._clips is not None
        self._tag = (str(index.root), self.gray)       # the dataset, for the cache's eviction
        self.mean = modality_mean(index.format, modality)
        self.device_preprocess = device_preprocess
        self.epoch = 0
        self.skipped: list[tuple[str, str]] = []
        self.decoded_by: Counter[str] = Counter()
        self.requested = backend
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._dali: Any = None
        self._gpu_refused: dict[tuple[str, str | None], str] = {}   # (container, codec) -> why
        # Codecs (and true frame counts, see MediaResolver) matter only where DALI may decode;
        # counts verified once already (`bench data prepare`'s index cache, a probed index) are
        # not counted again here, in every trial and on every rank.
        maybe_dali = backend.startswith("dali") or backend == "auto"
        self._verify = not index.counts_decoded
        self._resolver = MediaResolver(need_codec=maybe_dali, verify_count=maybe_dali and self._verify)
        choice = self._choose(backend)
        self.backend: str = choice.backend
        self.backend_reason: str = choice.reason
        uses_dali = self.backend.startswith("dali")
        self._resolver.need_codec = uses_dali
        self._resolver.verify_count = uses_dali and self._verify
        if uses_dali:
            self._make_dali(self.backend)   # here, not lazily from several worker threads at once
        # Under "auto", a file the chosen DALI decoder cannot take goes to the CPU fallback.
        self._fallback = CPU_FALLBACK if backend == "auto" and uses_dali else None
        if len(self) == 0:
            log.warning("%d samples on rank %d with batch_size %d and drop_last: "
                        "no batches at all", self._per_rank(), rank, batch_size)
        log.info("%s %s/%s (%d samples, rank %d/%d): backend %s -- %s", index.format,
                 index.split, modality, len(index), rank, world_size, self.backend,
                 choice.reason if backend != "auto" else f"auto: {choice.reason}")

    # ------------------------------------------------------------------ backend choice
    def _probe_spread(self) -> list[Media]:
        n = len(self.index)
        picks = sorted(set(np.linspace(0, n - 1, min(n, PROBE_FOR_AUTO)).round().astype(int).tolist()))
        found = []
        for i in picks:
            s = self.index.samples[i]
            try:
                found.append(self._resolver.resolve(Path(s.paths[self.modality]), s.num_frames))
            except DataError as e:  # reported (raise/skip) when the sample itself is loaded
                log.debug("probe for backend choice failed: %s", e)
        return found

    def _choose(self, backend: str) -> Choice:
        from pipelines.dali import gpu_visible

        if backend in FALLBACK_BACKENDS:
            return Choice(backend, "forced by the caller")
        if backend in DALI_BACKENDS:
            if not dali_installed():
                raise ValueError(f"backend: {backend!r} needs NVIDIA DALI (nvidia-dali-cuda130), "
                                 "which is not installed")
            if backend == "dali-gpu" and not gpu_visible():
                raise ValueError("backend: 'dali-gpu' needs a CUDA GPU and none is visible "
                                 "(use 'dali-cpu', 'opencv' or 'auto')")
            self._make_dali(backend)
            probed = self._probe_spread()
            for media in probed:                 # fail at construction, not mid-epoch
                self._check_codec(media)
            if backend == "dali-gpu":
                env, refused = self._gpu_trial(probed)
                if env is not None:
                    raise ValueError(f"backend: 'dali-gpu' cannot decode on this machine: {env} "
                                     "(use 'auto', which falls back to the CPU decoders)")
                for (container, codec), why in refused.items():
                    path = next(m.path for m in probed if _group(m) == (container, codec))
                    raise CodecRefused(path, f"this GPU's decoder cannot read {codec} in {container} ({why}); "
                                             "use backend='auto', 'opencv' or 'pyav'")
            return Choice(backend, "forced by the caller")
        probed = self._probe_spread()
        choice = choose(probed, gpu=gpu_visible(), dali=dali_installed())
        if choice.backend != "dali-gpu":
            return choice
        env, refused = self._gpu_trial(probed)
        if env is not None:
            log.warning("DALI's GPU decoder does not work here (%s): decoding on the CPU", env)
            cpu = choose(probed, gpu=False, dali=dali_installed())
            return Choice(cpu.backend, f"{cpu.reason}; the GPU decoder failed: {env}")
        for (container, codec), why in refused.items():
            log.warning("%s in %s: the GPU decoder failed on a file the CPU decodes (%s); such files go "
                        "to %s", codec, container, why, CPU_FALLBACK)
        self._gpu_refused = refused
        return choice

    def _gpu_trial(self, media: list[Media]) -> tuple[str | None, dict[tuple[str, str | None], str]]:
        """Decode one file per (container, codec) of ``media`` with DALI's GPU decoder, so that
        what this machine cannot do shows at construction, not mid-epoch. Returns the
        environment's failure (the decoder does not start, its pipeline does not build: nothing
        can go to the GPU), else ``{(container, codec): why}`` for the groups whose file the GPU
        decoder fails on while the CPU decoder reads it -- a codec this GPU's NVDEC lacks (AV1 on
        T4/A100/H100, MPEG-4 in AVI), not a bad file. A file that no decoder reads is the file's
        fault: its group stays on the GPU and the sample is reported when it is loaded."""
        try:
            dali = self._make_dali("dali-gpu")
        except Exception as e:  # noqa: BLE001 -- no driver, a broken install: the environment
            self._dali = None
            return f"{type(e).__name__}: {_first_line(e)}", {}
        groups: dict[tuple[str, str | None], Media] = {}
        for m in media:
            groups.setdefault(_group(m), m)
        refused: dict[tuple[str, str | None], str] = {}
        for key, m in groups.items():
            req = Request(m, np.arange(min(self.clip_len, max(m.num_frames, 1))), self.gray)
            try:
                (res,) = dali.decode([req])
            except Exception as e:  # noqa: BLE001 -- a pipeline that does not build or run
                self._dali = None
                return f"{type(e).__name__}: {_first_line(e)}", {}
            if not isinstance(res, DataError):
                continue
            try:
                DECODERS[CPU_FALLBACK](req)
            except Exception:  # noqa: BLE001 -- the CPU cannot either: the file is bad, not the GPU
                continue
            refused[key] = res.reason
        return None, refused

    def _make_dali(self, name: str):
        if self._dali is None:
            from pipelines.dali import DaliDecoder

            device_id = None
            if name == "dali-gpu":
                import torch

                device_id = torch.cuda.current_device()
            self._dali = DaliDecoder(device="gpu" if name == "dali-gpu" else "cpu",
                                     max_batch=self.batch_size, clip_len=self.clip_len,
                                     num_threads=max(1, self.num_workers), device_id=device_id)
        return self._dali

    def _check_codec(self, media: Media) -> None:
        dali = self._dali
        if dali is not None and not dali.supports(media.codec):
            raise CodecRefused(media.path, f"codec {media.codec!r} cannot be decoded by backend "
                                           f"{dali.name!r} (it decodes {dali.describe_codecs()}); "
                                           "use backend='auto', 'opencv' or 'pyav'")

    def _decoder_for(self, media: Media) -> str:
        if not self.backend.startswith("dali"):
            return self.backend
        if self._gpu_refused and _group(media) in self._gpu_refused and self._fallback:
            return self._fallback
        dali = self._make_dali(self.backend)
        if dali.supports(media.codec):
            return self.backend
        if self._fallback:
            return self._fallback
        self._check_codec(media)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ epoch plan
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: a new shuffle and new jitter in training, identical on every rank."""
        if not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch: expected an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def _per_rank(self) -> int:
        n, w = len(self.index), self.world_size
        return n // w if self.drop_last else math.ceil(n / w)

    def __len__(self) -> int:
        per_rank = self._per_rank()
        return per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)

    def plan(self, epoch: int | None = None) -> list[tuple[int, bool]]:
        """``(position in index, padded)`` of every sample this rank loads in ``epoch``, in order."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.index)
        order = np.arange(n)
        if self.train:
            order = np.random.default_rng((self.seed, epoch, _SHUFFLE)).permutation(n)
        total = self._per_rank() * self.world_size
        padded = np.arange(total) >= n
        order = np.resize(order, total)        # wraps around to pad, or cuts with drop_last
        mine = slice(self.rank, total, self.world_size)
        out = list(zip(order[mine].tolist(), padded[mine].tolist()))
        if self.drop_last:
            out = out[:len(self) * self.batch_size]
        return out

    def sample_rng(self, pos: int, epoch: int | None = None) -> np.random.Generator:
        """The generator that draws frame jitter and crop offset for sample ``pos`` in ``epoch``."""
        epoch = self.epoch if epoch is None else epoch
        return np.random.default_rng((self.seed, epoch, _SAMPLE, pos))

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._epoch_batches(self._load_batch)

    def iter_frames(self) -> Iterator[dict[str, Any]]:
        """The epoch's batches *before* preprocessing: ``frames`` list of uint8 ``(T, H, W, 3)``
        (``(T, H, W)`` for depth) as the backend decoded them, with ``sample_id``,
        ``frame_indices`` and ``padded`` as in the batches. For comparing backends frame for
        frame and timing decoding alone (``bench perf data``)."""
        return self._epoch_batches(self._raw_batch)

    def _epoch_batches(self, make: Callable) -> Iterator[dict[str, Any]]:
        plan = self.plan()
        batches = [plan[i:i + self.batch_size] for i in range(0, len(plan), self.batch_size)]
        epoch = self.epoch
        self.skipped = []
        self.decoded_by = Counter()
        delivered = 0
        if self.num_workers == 0:
            for b in batches:
                out = make(b, epoch)
                if out is not None:
                    delivered += len(out["sample_id"])
                    yield out
        else:
            with ThreadPoolExecutor(1, thread_name_prefix="pipelines-batch") as producer:
                todo = iter(batches)
                pending: deque = deque(producer.submit(make, b, epoch)
                                       for b in [next(todo) for _ in range(min(2, len(batches)))])
                try:
                    while pending:
                        out = pending.popleft().result()
                        nxt = next(todo, None)
                        if nxt is not None:
                            pending.append(producer.submit(make, nxt, epoch))
                        if out is not None:
                            delivered += len(out["sample_id"])
                            yield out
                finally:
                    for f in pending:
                        f.cancel()
        if delivered + len(self.skipped) != len(plan):   # samples in == samples out, per epoch
            raise RuntimeError(f"pipelines: epoch {epoch} planned {len(plan)} samples, delivered "
                               f"{delivered} and skipped {len(self.skipped)}")

    def _map(self, fn: Callable, items: list) -> list:
        if self.num_workers == 0 or len(items) < 2:
            return [fn(x) for x in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="pipelines")
        return list(self._pool.map(fn, items))

    def _decoded_items(self, batch: list[tuple[int, bool]], epoch: int) -> list[_Item]:
        items = [_Item(pos, padded, self.index.samples[pos]) for pos, padded in batch]
        self._map(lambda it: self._prepare(it, epoch), items)
        self._decode([it for it in items if it.error is None])
        return items

    def _keep(self, items: list[_Item]) -> list[_Item]:
        """The items without error; errors raise, or are recorded in ``.skipped``."""
        keep = []
        for it in items:
            if it.error is None:
                keep.append(it)
                continue
            err = _with_source(it.error, it.sample)
            if self.on_error == "raise" or isinstance(err, CodecRefused):
                raise err
            log.warning("skipping %s: %s", it.sample.sample_id, err)
            with self._lock:
                self.skipped.append((it.sample.sample_id, str(err)))
        if not keep:
            log.warning("a whole batch of %d samples was skipped", len(items))
        for it in keep:
            self.decoded_by[it.decoder] += 1
        return keep

    def _raw_batch(self, batch: list[tuple[int, bool]], epoch: int) -> dict[str, Any] | None:
        keep = self._keep(self._decoded_items(batch, epoch))
        if not keep:
            return None
        return {"frames": [it.frames for it in keep],
                "sample_id": [it.sample.sample_id for it in keep],
                "frame_indices": np.stack([it.request.indices for it in keep]),
                "padded": np.array([it.padded for it in keep])}

    def _load_batch(self, batch: list[tuple[int, bool]], epoch: int) -> dict[str, Any] | None:
        import torch

        items = self._decoded_items(batch, epoch)
        step = self._crop if self.device_preprocess else self._preprocess
        clips = dict(zip((id(it) for it in items), self._map(step, items)))
        keep = self._keep(items)
        if not keep:
            return None
        # DALI-GPU clips are on the GPU, a fallback decoder's or the host cache's on the CPU:
        # one batch, one device (the GPU's)
        devices = {clips[id(it)].device for it in keep}
        if len(devices) > 1:
            dev = next(d for d in devices if d.type != "cpu")
            clips = {k: v.to(dev, non_blocking=True) if v is not None else v for k, v in clips.items()}
        out: dict[str, Any] = {}
        if self.device_preprocess and len({tuple(clips[id(it)].shape) for it in keep}) == 1:
            frames = torch.stack([clips[id(it)] for it in keep])                      # (B,T,S0,S0,C) uint8
            pin = torch.cuda.is_available() and frames.device.type == "cpu"    # DALI-GPU's are on the GPU
            out |= {"frames": frames.pin_memory() if pin else frames,
                    "size": self.size, "mean": self.mean}
        elif self.device_preprocess:       # crops of different sizes: finished here, as without the option
            from bench.data.sampling import finish_clips

            out["clip"] = torch.cat([finish_clips(clips[id(it)][None], size=self.size, mean=self.mean)
                                     for it in keep])
        else:
            out["clip"] = torch.stack([clips[id(it)] for it in keep])                   # (B,3,T,S,S)
        return out | {
            "label": torch.tensor([it.sample.label for it in keep], dtype=torch.int64),
            "sample_id": [it.sample.sample_id for it in keep],
            "frame_indices": torch.from_numpy(np.stack([it.request.indices for it in keep])),
            "padded": torch.tensor([it.padded for it in keep], dtype=torch.bool),
        }

    def _prepare(self, it: _Item, epoch: int) -> None:
        """Resolve the file, draw the frame indices and pick the decoder (errors kept on the item)."""
        from bench.data.sampling import sample_frame_indices

        path = it.sample.paths.get(self.modality)
        try:
            if path is None:
                raise DataError(it.sample.source or it.sample.sample_id, f"no {self.modality} file")
            media = self._resolver.resolve(Path(path), it.sample.num_frames)
            it.rng = self.sample_rng(it.pos, epoch)
            idx = sample_frame_indices(media.num_frames, self.clip_len, train=self.train, rng=it.rng)
            it.decoder = self._decoder_for(media)
            it.request = Request(media, idx, self.gray)
        except DataError as e:
            it.error = e

    def _decode(self, items: list[_Item]) -> None:
        todo: list[tuple[_Item, Request]] = []
        for it in items:
            full = self._cached(it)
            if full is not None:
                self._take(it, full)
            elif self.cache:   # decode the whole video once, serve every later epoch from memory
                media = it.request.media
                todo.append((it, Request(media, np.arange(media.num_frames), self.gray)))
            else:
                todo.append((it, it.request))
        dali = [(it, r) for it, r in todo if it.decoder.startswith("dali")]
        cpu = [(it, r) for it, r in todo if not it.decoder.startswith("dali")]
        results: list[tuple[_Item, Request, np.ndarray | DataError]] = []
        if dali:
            try:
                frames = self._dali.decode([r for _, r in dali])
            except Exception as e:  # noqa: BLE001 -- DaliDecoder names the file itself; a last resort
                frames = [DataError(r.media.path, f"{it.decoder} cannot decode it: "
                                                  f"{type(e).__name__}: {e}") for it, r in dali]
            results += [(it, r, f) for (it, r), f in zip(dali, frames)]
        if cpu:
            frames = self._map(lambda pair: _decode_cpu(pair[0].decoder, pair[1]), cpu)
            results += [(it, r, f) for (it, r), f in zip(cpu, frames)]
        for it, r, f in results:
            if isinstance(f, DataError):
                it.error = f
            elif r is it.request:
                it.frames = f
            else:
                self._store(it, f)
                self._take(it, f)

    def _key(self, it: _Item) -> tuple | None:
        return ClipCache.key(it.request.media.path, self.gray, it.decoder)

    def _cached(self, it: _Item) -> np.ndarray | None:
        if self._clips is None:
            return None
        return self._clips.get(self._key(it))

    def _store(self, it: _Item, full: Any) -> None:
        # DALI-GPU frames: the cache lives in host memory (a dataset's worth of GPU memory
        # would starve training); batches mixing cached and fresh clips are moved to one device
        host = full if isinstance(full, np.ndarray) else full.cpu().numpy()
        self._clips.put(self._key(it), host, self._tag)

    def _take(self, it: _Item, full: np.ndarray) -> None:
        top = int(it.request.indices.max())
        if top >= len(full):
            it.error = DataError(it.request.media.path, f"frame {top} requested, the video holds "
                                                        f"{len(full)}")
        elif isinstance(full, np.ndarray):
            it.frames = full[it.request.indices]
        else:
            import torch

            it.frames = full[torch.as_tensor(it.request.indices, device=full.device)]

    def _preprocess(self, it: _Item):
        from bench.data.sampling import preprocess_clip

        if it.error is not None:
            return None
        try:
            return preprocess_clip(it.frames, size=self.size, mean=self.mean, train=self.train,
                                   rng=it.rng)
        except Exception as e:  # noqa: BLE001 -- frames of an odd size or type fail this sample only
            if type(e).__name__ == "OutOfMemoryError":      # the device's problem, not the file's
                raise
            it.error = DataError(it.request.media.path, f"unusable frames {it.frames.shape}: "
                                                        f"{type(e).__name__}: {e}")
            return None

    def _crop(self, it: _Item):
        from bench.data.sampling import crop_clip

        if it.error is not None:
            return None
        try:
            return crop_clip(it.frames, train=self.train, rng=it.rng)
        except Exception as e:  # noqa: BLE001 -- frames of an odd size or type fail this sample only
            if type(e).__name__ == "OutOfMemoryError":      # the device's problem, not the file's
                raise
            it.error = DataError(it.request.media.path, f"unusable frames {it.frames.shape}: "
                                                        f"{type(e).__name__}: {e}")
            return None

    @property
    def cache_bytes(self) -> int:
        """Bytes of decoded frames held by this loader's cache (shared: by all its loaders)."""
        return self._clips.nbytes if self._clips is not None else 0

    def close(self) -> None:
        """Stop the worker threads (they also stop with the process)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "ClipLoader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _group(media: Media) -> tuple[str, str | None]:
    """(container, codec) of a file: what a GPU decoder can or cannot read."""
    if media.kind != "video":
        return "frames", media.codec
    container = media.path.suffix.lower().lstrip(".") or "video"
    return container, media.codec


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _with_source(err: DataError, sample: Sample) -> DataError:
    """``err`` with the list line the sample came from, so a message names the file and line."""
    if not sample.source or "listed at " in err.reason:
        return err
    return type(err)(err.path, f"{err.reason} (listed at {sample.source})", line=err.line)


def _decode_cpu(name: str, req: Request) -> np.ndarray | DataError:
    """PyAV/OpenCV decode; whatever a decoder, a container or its metadata raises (FFmpeg,
    OpenCV, file, Unicode errors) becomes a DataError naming the file."""
    try:
        return DECODERS[name](req)
    except DataError as e:
        return e
    except Exception as e:  # noqa: BLE001 -- a decoder failing in any way fails this sample only
        return DataError(req.media.path, f"{name} cannot decode it: {type(e).__name__}: {e}")
