"""Shared test settings and scaffolding: a quiet, fast Ray and MLflow, automatic GPU skips, and
the pieces several test files need:

- ``tiny_sweep(tmp, **overrides) -> Path``: writes a tiny sweep YAML (fixture returning the builder);
- ``local_ray``: a local Ray for the module (``local_ray_settings`` says how big);
- ``two_node_ray``: two real Ray nodes on 127.0.0.1 for the module (``two_node_settings``);
- ``stop_processes(target, *, grace_s=2.0) -> list[int]``: stops a ``subprocess.Popen`` (its
  process group when it leads one) or every process naming a folder, and says what survived;
- ``short_tmp``: a short folder under /tmp whose processes are stopped and files removed after;
- ``kill_driver_when(cmd, until, ...)``: run a sweep driver, SIGKILL it once its output matches;
- ``free_port() -> int``: a TCP port on 127.0.0.1 that nobody listens on;
- ``kernels``: the C++ kernels of bench/models/native (skips with ``GESTUREBENCH_NATIVE=0``);
- ``s3_server``: an S3 protocol server (moto) on 127.0.0.1 for the session, AWS_* set to reach it.

A module changes ``local_ray_settings`` / ``two_node_settings`` by defining a fixture of the same
name. Helper modules (``_helpers_*.py``) are not collected: pytest collects ``test_*.py`` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

# Quiet, fast Ray (no auth, no usage stats, classic output, Tune snapshots every second), as
# `bench.sweep.run.QUIET_ENV` sets for the driver; set before any test imports ray.
for _k, _v in {
    "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DEDUP_LOGS": "0", "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}.items():
    os.environ.setdefault(_k, _v)

# Test-only Ray Train V2 settings: they shorten each multi-worker fit's start-up by a few seconds
# (a 0.1 s health check, no preemption watcher, no state reconciliation) at the cost of polling
# far more often than a real run should, so only the tests set them; real runs get Ray's
# defaults. Set here, before any Ray starts: local Ray nodes (ray.init, `ray start`) inherit this
# process's environment, and V2 hands them on to its controller and workers.
FAST_RAY_TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
}
for _k, _v in FAST_RAY_TRAIN_ENV.items():
    os.environ.setdefault(_k, _v)

RAY = str(Path(sys.executable).with_name("ray"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def kernels():
    """The C++ kernels of bench/models/native. Not building them is a failure (the test machines
    have a C++ compiler); with GESTUREBENCH_NATIVE=0 the tests that need them skip."""
    if os.environ.get("GESTUREBENCH_NATIVE") == "0":
        pytest.skip("GESTUREBENCH_NATIVE=0: the C++ kernels are turned off")
    from bench.models import native

    return native.require()


# ---------------------------------------------------------------------------------------------
# the tiny sweep


def _tiny_sweep(tmp: Path, *, name: str = "tiny", cells: str | Sequence[str] = ("a", "convlstm"),
                modalities: Sequence[str] = ("rgb",), seeds: Sequence[int] = (0,), epochs: int = 3,
                stages: list[Any] | None = None, root: str | Path | None = None,
                synthetic: dict[str, Any] | None = None, file: str | None = None, **keys: Any) -> Path:
    """Write ``tmp/<file or name.yaml>``: a sweep that trains in seconds on a synthetic IsoGD
    copy generated under ``root`` (default ``tmp/data/syn``), and return its path.

    ``cells`` (a list, or ``"all"`` for the registry's), ``modalities`` and ``seeds`` make the
    grid; ``epochs`` is the one ``pretrain`` stage's unless ``stages`` is given; ``synthetic``
    updates the generator's options. Any other keyword sets that top-level key of the file
    (``train=``, ``resources=``, ``datasets=``, ``search=``, ...) and ``None`` removes it
    (``storage=None``: the default storage; ``train=None``: no ``train`` block).
    """
    gen = {"num_classes": 3, "clips_per_class": 3, "valid_clips_per_class": 1, "size": [48, 32],
           "length_scale": 0.3, "modalities": ["rgb"], **(synthetic or {})}
    doc: dict[str, Any] = {
        "name": name,
        "storage": str(tmp / "runs"),
        "experiment": "tests",
        "datasets": {"syn": {"format": "isogd", "root": str(tmp / "data" / "syn" if root is None else root),
                             "synthetic": gen}},
        "stages": stages if stages is not None else [{"name": "pretrain", "epochs": epochs}],
        "grid": {"cells": cells if isinstance(cells, str) else list(cells), "modalities": list(modalities),
                 "seeds": list(seeds)},
        "preset": "small",
        "clip_len": 4,
        "image_size": 32,
        "train": {"batch_size": 3},
        "max_concurrent_trials": 2,
    }
    for key, value in keys.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path = tmp / (file or f"{name}.yaml")
    import yaml

    path.write_text(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None))
    return path


@pytest.fixture(scope="session")
def tiny_sweep() -> Callable[..., Path]:
    """The tiny-sweep builder: ``tiny_sweep(tmp, **overrides) -> Path`` (see `_tiny_sweep`)."""
    return _tiny_sweep


# ---------------------------------------------------------------------------------------------
# ports and processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port() -> int``: a TCP port on 127.0.0.1 that nothing listens on right now."""
    return _free_port


def _stat(pid: int | str) -> list[str] | None:
    """``/proc/PID/stat`` after the command name: [state, ppid, pgrp, ...]; None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(d.name)
            if st is not None and st[0] != "Z" and int(st[2]) == pgid:
                out.append(int(d.name))
    return out


def _pids_naming(tag: str) -> list[int]:
    """This user's live processes, but this one, whose command line or open files name the
    path ``tag`` (``/tmp/gb-x`` or below it; not ``/tmp/gb-xy``)."""
    me, uid, out = os.getpid(), os.getuid(), []
    names = re.compile(re.escape(tag.rstrip("/")) + r"(?![\w.-])")    # a whole path, or a parent
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            if d.stat().st_uid != uid or not _alive(int(d.name)):
                continue
            hit = bool(names.search((d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
            if not hit:
                for fd in (d / "fd").iterdir():
                    try:
                        if names.match(os.readlink(fd)):
                            hit = True
                            break
                    except OSError:
                        continue
        except OSError:
            continue
        if hit:
            out.append(int(d.name))
    return out


def _leads_group(p: subprocess.Popen) -> bool:
    """Whether ``p`` was started as a process-group leader (``start_new_session=True``)."""
    try:
        pgid = os.getpgid(p.pid)
    except ProcessLookupError:          # reaped already: its group lives on while a member does
        return bool(_group_members(p.pid))
    return pgid == p.pid and pgid != os.getpgrp()


def stop_processes(target: subprocess.Popen | str | os.PathLike, *, grace_s: float = 2.0) -> list[int]:
    """Stop ``target`` and return the PIDs still alive afterwards (none, normally).

    ``target`` is a `subprocess.Popen` -- its whole process group when it leads one (a server
    started with ``start_new_session=True`` and the workers it forked), else that process alone
    (it is reaped) -- or a folder / tag: every process of this user, but this one, whose command
    line or open files name it (the Ray nodes and agents started with ``--temp-dir`` or
    ``RAY_TMPDIR`` under it). SIGTERM first, SIGKILL what is left after ``grace_s`` seconds
    (``grace_s=0``: SIGKILL at once; raylet and gcs have ignored SIGTERM for over 20 s). Never
    `ray stop` or a match on names: those reach other people's processes on a shared host.
    """
    if isinstance(target, subprocess.Popen):
        p = target
        group = _leads_group(p)

        def find() -> list[int]:
            p.poll()                                    # reap it: a zombie is not "left"
            if group:
                return _group_members(p.pid)
            return [p.pid] if p.returncode is None else []

        def send(sig: int) -> None:
            if group:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, sig)
            elif p.poll() is None:
                p.send_signal(sig)
    else:
        tag = os.fspath(target)

        def find() -> list[int]:
            return _pids_naming(tag)

        def send(sig: int) -> None:
            for pid in find():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)

    left = find()
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        if not left:
            break
        if wait_s <= 0 and sig == signal.SIGTERM:
            continue
        send(sig)
        deadline = time.monotonic() + wait_s
        while True:
            left = find()
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    if isinstance(target, subprocess.Popen):
        with contextlib.suppress(subprocess.TimeoutExpired):
            target.wait(timeout=10)
    return left


@pytest.fixture(scope="session", name="stop_processes")
def stop_processes_fixture() -> Callable[..., list[int]]:
    """``stop_processes(target, *, grace_s=2.0) -> list[int]`` (see `stop_processes`)."""
    return stop_processes


@contextlib.contextmanager
def _short_tmp_dir(prefix: str) -> Iterator[Path]:
    # Ray's unix socket paths must stay under ~107 characters: pytest's tmp_path is too deep;
    # the unique name is how the teardown finds exactly the processes started under it.
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield d
    finally:
        left = stop_processes(d)
        shutil.rmtree(d, ignore_errors=True)
        assert not left, f"processes started under {d} still alive: {left}"


def kill_driver_when(cmd: list[str], until: Callable[[list[str]], bool], *, cwd: Path, env: dict[str, str],
                     ray_tmp: Path, snapshot_s: float = 2.0) -> list[str]:
    """Start the sweep driver ``cmd``; when ``until(lines so far)`` holds, wait ``snapshot_s``
    (Tune's 1 s experiment snapshot must catch up), SIGKILL it, then stop the local Ray it left
    behind under ``ray_tmp``. Returns the lines it printed; fails if it exited first."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    seen: list[str] = []
    killed = False
    try:
        for line in p.stdout:
            seen.append(line)
            if until(seen):
                time.sleep(snapshot_s)
                stop_processes(p, grace_s=0)            # SIGKILL, no SIGTERM first
                killed = True
                break
    finally:
        stop_processes(p, grace_s=0)                    # nothing to do once it has exited
    assert killed and p.returncode == -signal.SIGKILL, "".join(seen)
    time.sleep(1)
    stop_processes(ray_tmp, grace_s=0)                  # the agents the killed driver left behind
    return seen


@pytest.fixture(scope="session", name="kill_driver_when")
def kill_driver_when_fixture() -> Callable[..., list[str]]:
    """``kill_driver_when(cmd, until, *, cwd, env, ray_tmp) -> lines`` (see `kill_driver_when`)."""
    return kill_driver_when


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A fresh folder ``/tmp/gb-XXXX`` (short enough for Ray's socket paths); afterwards every
    process naming it is stopped (`stop_processes`) and the folder removed."""
    with _short_tmp_dir("gb-") as d:
        yield d


# ---------------------------------------------------------------------------------------------
# Ray


@pytest.fixture(scope="module")
def local_ray_settings() -> dict[str, Any]:
    """`ray.init` keywords of `local_ray`; a module defines its own fixture to change them."""
    return {"num_cpus": 2}


@pytest.fixture(scope="module")
def local_ray(local_ray_settings: dict[str, Any]) -> Iterator[None]:
    """A local Ray in this process for the module: no dashboard, workers' output not shown."""
    import ray

    if ray.is_initialized():          # a leak from another module would set other resources
        ray.shutdown()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING", **local_ray_settings)
    try:
        yield
    finally:
        ray.shutdown()


NODE_TAG = "GB_TEST_NODE"           # in each `two_node_ray` node's environment: "<role>-<cluster tmp>"


def _pids_with_env(key: str, value: str) -> list[int]:
    """This user's live processes (not this one) started with ``key=value`` in their
    environment (inherited: a raylet's workers carry their node's)."""
    me, uid, want, out = os.getpid(), os.getuid(), f"{key}={value}".encode(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == me:
            continue
        try:
            if d.stat().st_uid == uid and _alive(int(d.name)) and want in (d / "environ").read_bytes().split(b"\0"):
                out.append(int(d.name))
        except OSError:
            continue
    return out


@dataclasses.dataclass(frozen=True)
class TwoNodes:
    address: str                      # 127.0.0.1:PORT, for `bench sweep --address` / ray.init
    tmp: Path                         # a short scratch folder of the cluster's (Ray's files: tmp/rt)
    nodes: list[dict[str, Any]]       # ray.nodes() of the two live nodes

    def node_with(self, resource: str) -> str:
        """The NodeID of the node that holds ``resource``."""
        return next(n["NodeID"] for n in self.nodes if n["Resources"].get(resource))

    def pids(self, role: str) -> list[int]:
        """The processes of node ``role`` ("head" or "worker"): its raylet, agents and workers."""
        return _pids_with_env(NODE_TAG, f"{role}-{self.tmp.name}")

    def kill(self, role: str) -> list[int]:
        """SIGKILL every process of node ``role``, as a machine that dies; returns those killed."""
        pids = self.pids(role)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        return pids


@pytest.fixture(scope="module")
def two_node_settings() -> dict[str, dict[str, Any]]:
    """`ray start` options of `two_node_ray`'s nodes (``num_cpus=1`` -> ``--num-cpus=1``,
    ``resources`` -> ``--resources=JSON``); a module defines its own fixture to change them.
    By default one CPU each, told apart by the custom resources ``head_node`` / ``worker_node``.
    Two keys are not flags: ``cwd`` (the node's working directory, relative to the cluster's
    scratch folder) and ``env`` (extra environment variables of that node's processes)."""
    return {"head": {"num_cpus": 1, "resources": {"head_node": 1}},
            "worker": {"num_cpus": 1, "resources": {"worker_node": 1}}}


def _node_flags(options: dict[str, Any]) -> list[str]:
    return [f"--resources={json.dumps(v)}" if k == "resources" else f"--{k.replace('_', '-')}={v}"
            for k, v in options.items() if k not in ("cwd", "env")]


def _ray_start(*args: str, env: dict[str, str], cwd: Path | None = None) -> None:
    r = subprocess.run([RAY, "start", *args], check=False, capture_output=True, text=True, env=env, timeout=180,
                       cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


@pytest.fixture(scope="module")
def two_node_ray(two_node_settings: dict[str, dict[str, Any]]) -> Iterator[TwoNodes]:
    """A two-node Ray cluster on 127.0.0.1 that this module owns: `ray start --head` and a
    second `ray start --address` as separate processes, as on a real cluster. Both alive when
    it is handed over (no driver connected); stopped by PID afterwards -- the processes naming
    its own temp dir -- never with `ray stop`, which would kill every Ray on the host
    (and every test of other sessions); a Ray process of it still alive then is an error."""
    import ray

    if ray.is_initialized():          # a leak from another module would hijack `--address`
        ray.shutdown()
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    with _short_tmp_dir("gb-2n-") as tmp:
        port = _free_port()
        address = f"127.0.0.1:{port}"
        common = (f"--temp-dir={tmp / 'rt'}", "--disable-usage-stats")

        def node_env(role: str) -> tuple[dict[str, str], Path | None]:
            opts = two_node_settings[role]
            cwd = tmp / opts["cwd"] if opts.get("cwd") else None
            if cwd is not None:
                cwd.mkdir(parents=True, exist_ok=True)
            return env | dict(opts.get("env") or {}) | {NODE_TAG: f"{role}-{tmp.name}"}, cwd

        head_env, head_cwd = node_env("head")
        _ray_start("--head", f"--port={port}", "--include-dashboard=false",
                   *_node_flags(two_node_settings["head"]), *common, env=head_env, cwd=head_cwd)
        worker_env, worker_cwd = node_env("worker")
        _ray_start(f"--address={address}", *_node_flags(two_node_settings["worker"]), *common,
                   env=worker_env, cwd=worker_cwd)
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        try:
            deadline = time.monotonic() + 60
            while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            nodes = [n for n in ray.nodes() if n["Alive"]]
        finally:
            ray.shutdown()            # the code under test connects by itself, through the address
        assert len(nodes) == 2, f"expected the head and the worker node alive, got {len(nodes)} node(s)"
        try:
            yield TwoNodes(address=address, tmp=tmp, nodes=nodes)
        finally:
            if ray.is_initialized():
                ray.shutdown()


# ---------------------------------------------------------------------------------------------
# an S3 protocol server (moto's server mode), as Ray's own storage tests use


@dataclasses.dataclass(frozen=True)
class S3Server:
    endpoint: str                     # http://127.0.0.1:PORT
    env: dict[str, str]               # AWS_* variables that reach it (already in os.environ)

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (fresh names per test: the server lives for the session)."""
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        import boto3

        s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        out: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """``python -m moto.server`` on 127.0.0.1 for the session, and the standard AWS variables
    pointing at it (``AWS_ENDPOINT_URL``, test credentials, a region) in ``os.environ``, so a
    driver, a local Ray started by it and `ray start` nodes all reach it as they would reach S3.
    Plain ``s3://bucket/...`` URIs; nothing else is configured."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(prefix="gb-moto-", suffix=".log", delete=False)
    p = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.2)
        os.environ.update(env)
        yield S3Server(endpoint=endpoint, env=env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop_processes(p)
        Path(log.name).unlink(missing_ok=True)
