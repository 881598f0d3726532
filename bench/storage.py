"""The sweep's storage: a local or NFS folder, or any URI Ray's storage accepts.

Everything the suite keeps of a sweep (``sweep.json``, the Tune experiments, trial results,
checkpoints, leaderboards) lives under one storage root, given as ``storage:`` in a sweep
file, ``--storage``, or ``bench run --out``. `location` turns that string into a path object:

- a local path (or ``file://``): a plain `pathlib.Path`, as before;
- a URI (``s3://bucket/runs``, ``gs://...``, ``hdfs://...``): a `RemotePath` on the pyarrow
  filesystem that ``pyarrow.fs.FileSystem.from_uri`` resolves for it, which is what Ray Train
  and Tune do with the same string (``ray.train._internal.storage.get_fs_and_path``). So the
  suite and Ray reach the bucket with one endpoint and one set of credentials, taken the
  standard way: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_DEFAULT_REGION`` and
  ``AWS_ENDPOINT_URL`` (an S3-compatible server: MinIO, Ceph, moto) for S3;
  ``GOOGLE_APPLICATION_CREDENTIALS`` for GCS; or query parameters in the URI
  (``s3://bucket/runs?endpoint_override=127.0.0.1:9000&scheme=http``), which are kept on every
  path below it.

Why not ``universal_pathlib`` (fsspec's UPath): it reaches S3 through s3fs and botocore, whose
endpoint, region and credential resolution differ from pyarrow's (the AWS C++ SDK); a sweep
whose driver reads one bucket and whose trials write another is worse than a small class.

`RemotePath` has the part of `pathlib.Path`'s interface the suite uses (``/``, ``name``,
``parent``, ``exists``, ``is_file``, ``is_dir``, ``iterdir``, ``glob`` of one level,
``read_text``/``write_text``, ``mkdir``, ``rename``), so the readers and writers of a sweep
run unchanged on either. What needs a real local file (``torch.load``, MLflow's
``log_artifact``) goes through `local_copy`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.errors import StorageUnavailable

_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


class StorageError(ValueError):
    """A storage URI refused before any request: an unknown scheme, no bucket, credentials in
    it. (What the store itself refuses later is `bench.errors.StorageUnavailable`.)"""


def is_uri(v: str | os.PathLike[str] | RemotePath) -> bool:
    """True for ``scheme://...`` other than ``file://``."""
    if isinstance(v, RemotePath):
        return True
    m = _URI_RE.match(str(v))
    return bool(m) and m.group(1).lower() != "file"


def location(v: str | os.PathLike[str] | RemotePath, *, base: Path | None = None) -> Path | RemotePath:
    """``v`` as a path object: `RemotePath` for a URI, else an absolute `Path` (relative paths
    against ``base``, default the working directory). Raises `StorageError` when no filesystem
    takes the URI."""
    if isinstance(v, RemotePath):
        return v
    s = os.fspath(v) if not isinstance(v, str) else v
    m = _URI_RE.match(s)
    if m and m.group(1).lower() == "file":
        s = m.group(2)
    elif m:
        return RemotePath.from_uri(s)
    p = Path(s).expanduser()
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    return p.resolve()


# the URI schemes of ``pyarrow.fs.FileSystem.from_uri`` besides local files
SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _filesystem(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs  # heavy

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, NotImplementedError) as e:      # ArrowInvalid: a query option it does not take
        raise StorageUnavailable(f"{uri}: pyarrow does not take this URI ({_reason(e)})") from None
    except OSError as e:                                # the endpoint, region or credentials
        raise StorageUnavailable(f"{uri}: cannot reach this storage ({_reason(e)})") from None


@contextlib.contextmanager
def _io(p: RemotePath, what: str) -> Iterator[None]:
    """A store's failure (other than a missing file) as `StorageUnavailable` naming the URI."""
    try:
        yield
    except (FileNotFoundError, StorageUnavailable):
        raise
    except OSError as e:
        raise StorageUnavailable(f"{p}: cannot {what} ({_reason(e)}); check the bucket, the endpoint "
                                 f"(AWS_ENDPOINT_URL) and the credentials (AWS_* / GOOGLE_*)") from None


class _Root:
    """The filesystem behind a storage URI, resolved on first use: for S3, pyarrow asks the
    endpoint for the bucket's region, so a sweep file is parsed (and a dry run can report a
    dead endpoint as a failed check) without any request."""

    def __init__(self, base: str, query: str) -> None:
        self.base, self.query = base, query          # "s3://bucket/prefix", "endpoint_override=..."
        self._fs: Any = None
        self._fs_root = ""

    def __reduce__(self) -> tuple:
        return (_root, (self.base, self.query))

    def resolve(self) -> tuple[Any, str]:
        if self._fs is None:
            uri = self.base + (f"?{self.query}" if self.query else "")
            self._fs, root = _filesystem(uri)
            self._fs_root = root.rstrip("/") or root
        return self._fs, self._fs_root


_ROOTS: dict[tuple[str, str], _Root] = {}


def _root(base: str, query: str) -> _Root:
    """One `_Root` per URI in a process: every path under it shares one filesystem (one S3
    client and its connections), however many times the same storage string is parsed."""
    return _ROOTS.setdefault((base, query), _Root(base, query))


class RemotePath:
    """A file or folder on a pyarrow filesystem, named by a URI (see the module docstring).

    ``fs_path`` is the path on ``fs`` (for S3, ``bucket/key``); ``str()`` is the URI, which Ray
    accepts as ``storage_path`` and which `location` turns back into the same object."""

    __slots__ = ("_root", "rel", "_type")

    def __init__(self, root: _Root, rel: str = "", _type: Any = None) -> None:
        self._root = root
        self.rel = rel.strip("/")
        self._type = _type          # pyarrow FileType when known from a listing

    @classmethod
    def from_uri(cls, uri: str) -> RemotePath:
        m = _URI_RE.match(uri)
        if not m:
            raise StorageError(f"{uri!r}: not a URI")
        scheme = m.group(1).lower()
        rest, _, query = m.group(2).partition("?")
        rest = posixpath.normpath(rest).strip("/") if rest.strip("/") else ""
        if not rest:
            raise StorageError(f"{uri!r}: names no bucket or folder")
        if "@" in rest.split("/", 1)[0]:
            # it would be copied into every trial's config, MLflow params and log line
            raise StorageError(f"{scheme}://...@{rest.split('@', 1)[1].split('/', 1)[0]}: credentials in a storage "
                               f"URI are refused; give them the standard way (AWS_ACCESS_KEY_ID / "
                               f"AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS)")
        if scheme not in SCHEMES:
            raise StorageError(f"{uri!r}: no filesystem takes {scheme}:// (pyarrow's, which Ray's storage "
                               f"uses, take {', '.join(s + '://' for s in SCHEMES)}, or a local folder)")
        return cls(_root(f"{scheme}://{rest}", query))

    @property
    def fs(self) -> Any:
        return self._root.resolve()[0]

    @property
    def fs_path(self) -> str:
        root = self._root.resolve()[1]
        return posixpath.join(root, self.rel) if self.rel else root

    # -- naming ---------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        r = self._root
        return r.base + (f"/{self.rel}" if self.rel else "") + (f"?{r.query}" if r.query else "")

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"RemotePath({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                return is_uri(other) and self.uri == str(location(other))
            except StorageError:
                return False
        return isinstance(other, RemotePath) and self.uri == other.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __lt__(self, other: RemotePath) -> bool:
        return self.uri < other.uri

    def _rel(self, rel: str, type_: Any = None) -> RemotePath:
        return RemotePath(self._root, rel, type_)

    def _at(self, fs_path: str, type_: Any = None) -> RemotePath:
        root = self._root.resolve()[1]
        rel = posixpath.relpath(fs_path.rstrip("/"), root)
        if rel == ".":
            rel = ""
        if rel.startswith(".."):
            raise ValueError(f"{fs_path!r} is outside the storage root {self._root.base}")
        return self._rel(rel, type_)

    def at_fs_path(self, fs_path: str) -> RemotePath:
        """The path ``fs_path`` on this filesystem (what Ray reports as ``Checkpoint.path``)."""
        return self._at(fs_path)

    def __truediv__(self, name: str | os.PathLike[str]) -> RemotePath:
        name = os.fspath(name)
        if name.startswith("/"):
            raise ValueError(f"{self}: cannot join the absolute path {name!r}")
        rel = posixpath.normpath(posixpath.join(self.rel, name)) if self.rel else posixpath.normpath(name)
        if rel.startswith(".."):
            raise ValueError(f"{self}: {name!r} leaves the storage root {self._root.base}")
        return self._rel("" if rel == "." else rel)

    def joinpath(self, *names: str) -> RemotePath:
        out = self
        for n in names:
            out = out / n
        return out

    @property
    def name(self) -> str:
        return posixpath.basename(self.rel) if self.rel else posixpath.basename(self._root.base)

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    @property
    def suffix(self) -> str:
        return Path(self.name).suffix

    @property
    def parent(self) -> RemotePath:
        if self.rel:
            return self._rel(posixpath.dirname(self.rel))
        m = _URI_RE.match(self._root.base)
        up = posixpath.dirname(m.group(2)) if m else ""
        if not up:
            return self                       # the bucket itself
        return RemotePath(_root(f"{m.group(1)}://{up}", self._root.query))

    def with_name(self, name: str) -> RemotePath:
        return self.parent / name

    def with_suffix(self, suffix: str) -> RemotePath:
        return self.with_name(Path(self.name).with_suffix(suffix).name)

    def relative_to(self, other: RemotePath) -> Path:
        rel = posixpath.relpath(self.uri.partition("?")[0], other.uri.partition("?")[0])
        if rel.startswith(".."):
            raise ValueError(f"{self} is not under {other}")
        return Path(rel)

    def resolve(self) -> RemotePath:
        return self

    def expanduser(self) -> RemotePath:
        return self

    def is_absolute(self) -> bool:
        return True

    # -- queries --------------------------------------------------------------------------
    def _info_type(self) -> Any:
        if self._type is not None:
            return self._type
        with _io(self, "look it up"):
            return self.fs.get_file_info(self.fs_path).type

    def exists(self) -> bool:
        import pyarrow.fs as pafs  # heavy

        return self._info_type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs as pafs  # heavy

        return self._info_type() == pafs.FileType.File

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs  # heavy

        return self._info_type() == pafs.FileType.Directory

    def iterdir(self) -> Iterator[RemotePath]:
        """The direct children, each knowing its type (no request per ``is_dir``)."""
        import pyarrow.fs as pafs  # heavy

        try:
            with _io(self, "list it"):
                infos = self.fs.get_file_info(pafs.FileSelector(self.fs_path, allow_not_found=False))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self}: no such folder") from None
        for info in sorted(infos, key=lambda i: i.path):
            yield self._at(info.path, info.type)

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        """Children matching ``pattern`` (one level, or ``*/name`` for a file in each child)."""
        parts = pattern.split("/")
        if len(parts) == 1:
            yield from (p for p in self._children_or_none() if fnmatch.fnmatchcase(p.name, pattern))
        elif len(parts) == 2:
            for d in self._children_or_none():
                if d.is_dir() and fnmatch.fnmatchcase(d.name, parts[0]):
                    yield from d.glob(parts[1])
        else:
            raise ValueError(f"{self}: glob({pattern!r}) goes deeper than RemotePath does")

    def _children_or_none(self) -> list[RemotePath]:
        try:
            return list(self.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    # -- reading and writing -------------------------------------------------------------
    def read_bytes(self) -> bytes:
        try:
            with _io(self, "read it"), self.fs.open_input_stream(self.fs_path) as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{self}: no such file") from None

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def write_bytes(self, data: bytes) -> int:
        # one PUT: an object appears whole or not at all, so no temporary name is needed
        with _io(self, "write it"), self.fs.open_output_stream(self.fs_path) as f:
            f.write(data)
        self._type = None
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def append_text(self, text: str) -> None:
        """Object stores have no append: read, add, write back (one writer per file)."""
        old = self.read_bytes() if self.is_file() else b""
        self.write_bytes(old + text.encode())

    def touch(self) -> None:
        if not self.is_file():
            self.write_bytes(b"")

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        if self.is_dir():
            if not exist_ok:
                raise FileExistsError(f"{self}: exists")
            return
        with _io(self, "create it"):
            self.fs.create_dir(self.fs_path, recursive=True)
        self._type = None

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            with _io(self, "delete it"):
                self.fs.delete_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise
        self._type = None

    def rmtree(self) -> None:
        with contextlib.suppress(FileNotFoundError), _io(self, "delete it"):
            self.fs.delete_dir(self.fs_path)
        self._type = None

    def rename(self, target: RemotePath) -> RemotePath:
        """Copy then delete: object stores have no rename of a folder."""
        import pyarrow.fs as pafs  # heavy

        with _io(self, f"move it to {target}"):
            if self.is_dir():
                pafs.copy_files(self.fs_path, target.fs_path, source_filesystem=self.fs,
                                destination_filesystem=target.fs)
                self.fs.delete_dir(self.fs_path)
            else:
                self.fs.move(self.fs_path, target.fs_path)
        self._type = None
        return target

    def download(self, local: Path) -> Path:
        """Copy this file or folder to ``local``; returns ``local``."""
        import pyarrow.fs as pafs  # heavy

        local.parent.mkdir(parents=True, exist_ok=True)
        if self.is_file():
            local.write_bytes(self.read_bytes())
        elif self.is_dir():
            local.mkdir(parents=True, exist_ok=True)
            with _io(self, "download it"):
                pafs.copy_files(self.fs_path, str(local), source_filesystem=self.fs,
                                destination_filesystem=pafs.LocalFileSystem())
        else:
            raise FileNotFoundError(f"{self}: no such file or folder")
        return local


def write_text_atomic(p: Path | RemotePath, text: str) -> None:
    """``p`` holds ``text`` whole or keeps its old content: a temporary name then a rename on
    a local disk, a single PUT on an object store."""
    if isinstance(p, RemotePath):
        p.write_text(text)
        return
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(p)


def append_line(p: Path | RemotePath, line: str) -> None:
    if isinstance(p, RemotePath):
        p.append_text(line)
        return
    with p.open("a") as fh:
        fh.write(line)


def rmtree(p: Path | RemotePath) -> None:
    if isinstance(p, RemotePath):
        p.rmtree()
    else:
        shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def local_copy(p: str | os.PathLike[str] | RemotePath) -> Iterator[Path]:
    """A local path holding ``p``'s content: ``p`` itself when local, else a temporary copy
    removed on exit."""
    loc = location(p)
    if not isinstance(loc, RemotePath):
        yield loc
        return
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        yield loc.download(Path(tmp) / (loc.name or "object"))
