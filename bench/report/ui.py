"""``bench ui``: the MLflow UI over the suite's tracking store, on this machine only by default;
``bench server``: a team's tracking server, every driver's ``--tracking-uri http://HEAD:PORT``.

Why MLflow's own UI and not a dashboard of ours: the runs, their metrics per epoch, the
leaderboard tables (``log_table`` artifacts render as sortable tables) and the HTML report
(HTML artifacts render in a frame) are all there already, with comparison views for free.

The server is ``mlflow server --backend-store-uri <sqlite> --host 127.0.0.1 --port P
--workers 1`` (one worker answers its health check in seconds; four take twice as long), with
artifacts served (the default) and new runs' artifacts under ``mlruns/`` beside the database,
where the suite's own runs keep them (`bench.tracking.store.Tracker`). SIGTERM to the server
stops its uvicorn and job-runner children; we start it in a process group of its own and
signal that group, so nothing is left behind.

The team server (`serve_team`, `team_server_command`) is ``mlflow server --backend-store-uri
postgresql://... --artifacts-destination ROOT --serve-artifacts``, MLflow's production layout:
runs in a database several workers share, artifacts in a folder or an object store (``s3://``,
``gs://``) that only the server writes to -- drivers and trials upload through it over HTTP
(``mlflow-artifacts:/``), so they need neither the store's credentials nor a shared file system.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.errors import CLIError
from bench.tracking.uri import check_tracking, resolve_tracking_uri, scheme_of, shown, sqlite_path

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def healthy(url: str, *, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


@dataclass
class Server:
    """A running ``mlflow server`` we started."""

    url: str
    proc: subprocess.Popen
    log_path: Path

    def stop(self, *, timeout: float = 20.0) -> None:
        """SIGTERM to the server's own process group (mlflow, uvicorn, the job runner), then
        wait until the whole group is gone; SIGKILL whatever lingers past ``timeout``."""
        pgid = self.proc.pid                   # start_new_session: the group is the server's pid
        if not _group_alive(pgid):
            self.proc.poll()
            return
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.proc.poll()                   # reap the leader so the group can empty
            if not _group_alive(pgid):
                return
            time.sleep(0.2)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=5)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_server(tracking_uri: str, *, host: str = "127.0.0.1", port: int = 0, artifact_root: Path | None = None,
                 timeout: float = 120.0, log_path: Path | None = None) -> Server:
    """Start ``mlflow server`` over a SQLite store and wait until ``/health`` answers.

    ``port=0`` picks a free port. Raises RuntimeError (with the server's log tail) when it
    exits or does not become healthy within ``timeout`` seconds."""
    db = sqlite_path(tracking_uri)
    if db is None:
        raise ValueError(f"start_server: serves a local sqlite:/// store, got {tracking_uri!r}")
    port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
    root = (artifact_root or db.parent / "mlruns").resolve()
    root.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
           "--default-artifact-root", str(root), "--host", host, "--port", str(port), "--workers", "1"]
    if host not in LOOPBACK:
        # MLflow's security middleware only answers localhost Host headers unless told otherwise.
        cmd += ["--allowed-hosts", "*"]
    return launch(cmd, host=host, port=port, timeout=timeout,
                  log_path=log_path or db.parent / f"mlflow-server-{port}.log")


def team_server_command(backend_store_uri: str, artifacts_destination: str, *, host: str = "127.0.0.1",
                        port: int = 5000, workers: int = 2, allowed_hosts: str | None = None) -> list[str]:
    """The ``mlflow server`` argv of a team's server: runs in ``backend_store_uri`` (PostgreSQL,
    or any database MLflow takes), artifacts proxied to ``artifacts_destination`` (a folder, made
    absolute, or an object-store URI). Bound to ``host``; ``allowed_hosts`` is MLflow's Host-header
    allow-list (its default admits localhost and private IPs)."""
    dest = artifacts_destination
    if "://" not in dest:
        dest = str(Path(dest).expanduser().resolve())
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
           "--artifacts-destination", dest, "--serve-artifacts", "--host", host, "--port", str(port),
           "--workers", str(workers)]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    return cmd


def launch(cmd: list[str], *, host: str, port: int, timeout: float, log_path: Path) -> Server:
    """Run ``cmd`` (an ``mlflow server``) in a process group of its own, logging to ``log_path``,
    and wait until ``http://host:port/health`` answers."""
    env = {**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    where = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    server = Server(url=f"http://{where}:{port}", proc=proc, log_path=log_path)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with status {proc.returncode}:\n{_tail(log_path)}")
            if healthy(server.url):
                return server
            time.sleep(0.5)
    except BaseException:          # interrupted while waiting: leave nothing running
        server.stop()
        raise
    server.stop()
    raise RuntimeError(f"mlflow server at {server.url} not healthy after {timeout:.0f} s:\n{_tail(log_path)}")


def _tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# MLflow 3.17's UI shows an experiment as "GenAI" (traces overview) or "Model training" (runs
# table) by a switch of its own: the ``workflowType`` URL parameter, else what the browser last
# chose with the GenAI / Model training toggle, else GenAI. It does not read the experiment's
# ``mlflow.experimentKind`` tag (`bench.tracking.records.EXPERIMENT_KIND_TAG`, which the suite
# sets all the same), so every address printed here carries the parameter.
ML_VIEW = {"workflowType": "machine_learning"}


def _query(params: dict[str, str]) -> str:
    import urllib.parse

    return urllib.parse.urlencode({**params, **ML_VIEW}, quote_via=urllib.parse.quote)


def run_url(base: str, experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """The UI's address of a run (or of one of its artifacts): a hash route of the React app,
    in the Model training view."""
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return url + (f"/artifacts/{artifact}" if artifact else "") + f"?{_query({})}"


def experiment_url(base: str, experiment_id: str) -> str:
    """The UI's runs table of an experiment, in the Model training view."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{_query({})}"


def view_url(base: str, experiment_id: str, view: str) -> str:
    """The UI's runs table in one of the views the suite stores with each experiment it writes
    (`bench.tracking.records.ui_views`: ``leaderboard``, ``trials``): filter, sort and columns set."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{_query({'viewStateShareKey': view})}"


def serve(*, tracking_uri: str | None, host: str = "127.0.0.1", port: int = 5000,
          artifact_root: Path | None = None, timeout: float = 120.0) -> int:
    """``bench ui``: start (or point at) the UI, print where things are, serve until Ctrl-C."""
    from bench.report.store import latest_leaderboard  # heavy: polars

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking(uri)           # a wrong scheme, a dead server, a missing folder: one line, exit 2
    if scheme_of(uri) in ("http", "https"):
        print(f"MLflow UI (already running): {uri}")
        _print_leaderboard(uri, uri)
        return 0
    db = sqlite_path(uri)
    if db is None:
        raise CLIError(f"bench ui serves a local sqlite:/// store or points at an http(s):// server; got "
                       f"{shown(uri)}; a database store is served by `bench server --backend-store-uri "
                       f"{shown(uri)} --artifacts-destination DIR` (then: bench ui --tracking-uri http://HOST:PORT)")
    if not db.is_file():
        raise CLIError(f"no tracking store at {db}: run a sweep first (bench run), or pass --tracking-uri")
    _check_bind(host, port, "bench ui")
    print(f"bench ui: starting mlflow server over {db} ...", file=sys.stderr)
    return _run_until_stopped(
        "bench ui", lambda: start_server(uri, host=host, port=port, artifact_root=artifact_root, timeout=timeout),
        lambda server: (print(f"MLflow UI: {server.url}   (store {db}; server log {server.log_path})"),
                        _print_leaderboard(uri, server.url, latest=latest_leaderboard)))


def serve_team(*, backend_store_uri: str, artifacts_destination: str, host: str = "127.0.0.1", port: int = 5000,
               workers: int = 2, allowed_hosts: str | None = None, timeout: float = 120.0,
               log_path: Path | None = None) -> int:
    """``bench server``: a team's tracking server over a database (PostgreSQL), artifacts proxied
    to ``artifacts_destination``; serves until Ctrl-C or SIGTERM."""
    if scheme_of(backend_store_uri) in ("http", "https", "", "file"):
        raise CLIError(f"bench server: --backend-store-uri is the database the server keeps runs in "
                       f"(postgresql://USER@HOST:PORT/DB, or sqlite:///PATH), got {shown(backend_store_uri)}")
    check_tracking(backend_store_uri)     # driver installed, database reachable, login accepted
    if artifacts_destination.startswith("s3://"):
        import importlib.util

        if importlib.util.find_spec("boto3") is None:
            raise CLIError(f"--artifacts-destination {artifacts_destination}: the server needs boto3 "
                           f"(pip install boto3) and credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                           f"MLFLOW_S3_ENDPOINT_URL for an S3-compatible server)")
    elif "://" not in artifacts_destination:
        dest = Path(artifacts_destination).expanduser()
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CLIError(f"--artifacts-destination {dest}: cannot create it ({e.strerror})") from None
    _check_bind(host, port, "bench server")
    port = port or free_port("127.0.0.1" if host in ("0.0.0.0", "::") else host)
    cmd = team_server_command(backend_store_uri, artifacts_destination, host=host, port=port, workers=workers,
                              allowed_hosts=allowed_hosts)
    log_path = log_path or Path.cwd() / f"mlflow-server-{port}.log"
    print(f"bench server: starting mlflow server over {shown(backend_store_uri)} (artifacts: "
          f"{artifacts_destination}) ...", file=sys.stderr)

    def _ready(server: Server) -> None:
        where = host if host not in ("0.0.0.0", "::") else "HEAD"
        print(f"MLflow tracking server: {server.url}   (runs {shown(backend_store_uri)}; artifacts "
              f"{artifacts_destination}; server log {server.log_path})\n"
              f"Drivers log here with: bench sweep FILE --tracking-uri http://{where}:{port}")

    return _run_until_stopped("bench server", lambda: launch(cmd, host=host, port=port, timeout=timeout,
                                                             log_path=log_path), _ready)


def _check_bind(host: str, port: int, who: str) -> None:
    if port and not _port_free(host, port):
        raise CLIError(f"port {port} on {host} is taken; pass --port P (or --port 0 for any free port)")
    if host not in LOOPBACK:
        print(f"{who}: binding {host}: the UI (and every run in the store) is reachable from other "
              f"machines, without authentication", file=sys.stderr)


def _run_until_stopped(who: str, start: Callable[[], Server], ready: Callable[[Server], object]) -> int:
    """Start a server, say where it is, wait until Ctrl-C / SIGTERM / SIGHUP (then stop it: 0) or
    until it exits by itself (1)."""
    # Ctrl-C, and a plain `kill` too, stop the server we start (it runs in a session of its
    # own, so no signal reaches it unless we pass it on). SIGINT is re-armed because a shell
    # starts background jobs with it ignored.
    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            server = start()
        except RuntimeError as e:
            raise CLIError(str(e)) from None
        except KeyboardInterrupt:
            print(f"\n{who}: interrupted", file=sys.stderr)
            return 130
        with server:
            ready(server)
            print("Ctrl-C to stop.", flush=True)
            try:
                while server.proc.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                print(f"\n{who}: stopping", file=sys.stderr)
                return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"{who}: the server exited ({server.proc.returncode}); see {server.log_path}", file=sys.stderr)
    return 1


def entries_url(base: str, experiment_id: str, sweep: str | None = None) -> str:
    """The UI's runs table of ``experiment_id`` filtered to the newest leaderboard entries
    (`bench.tracking.records.LEADERBOARD_FILTER`, of ``sweep`` if given), best top-1 first."""
    from bench.tracking.leaderboard import ENTRY_SORT_METRIC
    from bench.tracking.records import LEADERBOARD_FILTER, SWEEP_TAG
    from bench.tracking.store import quote

    flt = LEADERBOARD_FILTER + (f" and tags.{SWEEP_TAG} = {quote(sweep)}" if sweep else "")
    q = _query({"searchFilter": flt, "orderByKey": f"metrics.`{ENTRY_SORT_METRIC}`", "orderByAsc": "false"})
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{q}"


def _print_leaderboard(uri: str, base: str, latest=None) -> None:
    from bench.tracking.reader import training_experiments
    from bench.tracking.records import LEADERBOARD_FILTER, LEADERBOARD_VIEW, TRIALS_VIEW

    for exp_id, name in training_experiments(uri):
        print(f"Experiment {name}: {view_url(base, exp_id, TRIALS_VIEW)}\n"
              f"  (its trials, best top-1 first, with cell, modality, seed, stage and top-1 as columns; every run: "
              f"{experiment_url(base, exp_id)})")
    if latest is None:
        from bench.report.store import latest_leaderboard as latest
    found = latest(uri)
    if found is None:
        print("No leaderboard run yet: `bench report --sweep NAME` makes one.")
        return
    exp_id, run_id, name = found
    print(f"Newest leaderboard: {name}\n  run:    {run_url(base, exp_id, run_id)}\n"
          f"  table:  {run_url(base, exp_id, run_id, 'tables/leaderboard.json')}\n"
          f"  report: {run_url(base, exp_id, run_id, 'report/report.html')}\n"
          f"  leaderboard as runs (one per row, best top-1 first; search box: {LEADERBOARD_FILTER}):\n"
          f"          {view_url(base, exp_id, LEADERBOARD_VIEW)}")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host if host not in ("0.0.0.0", "::", "localhost") else "127.0.0.1", port))
        except OSError:
            return False
    return True
