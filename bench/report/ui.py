"""``bench ui``: the MLflow UI over the suite's tracking store, on this machine only by default.

Why MLflow's own UI and not a dashboard of ours: the runs, their metrics per epoch, the
leaderboard tables (``log_table`` artifacts render as sortable tables) and the HTML report
(HTML artifacts render in a frame) are all there already, with comparison views for free.

The server is ``mlflow server --backend-store-uri <sqlite> --host 127.0.0.1 --port P
--workers 1`` (one worker answers its health check in seconds; four take twice as long), with
artifacts served (the default) and new runs' artifacts under ``mlruns/`` beside the database,
where the suite's own runs keep them (`bench.tracking.store.Tracker`). SIGTERM to the server
stops its uvicorn and job-runner children; we start it in a process group of its own and
signal that group, so nothing is left behind.
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
from dataclasses import dataclass
from pathlib import Path

from bench.errors import CLIError
from bench.tracking.uri import resolve_tracking_uri, sqlite_path

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
    log_path = log_path or db.parent / f"mlflow-server-{port}.log"
    env = {**os.environ, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    server = Server(url=f"http://{shown}:{port}", proc=proc, log_path=log_path)
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


def run_url(base: str, experiment_id: str, run_id: str, artifact: str | None = None) -> str:
    """The UI's address of a run (or of one of its artifacts): a hash route of the React app."""
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return url + (f"/artifacts/{artifact}" if artifact else "")


def serve(*, tracking_uri: str | None, host: str = "127.0.0.1", port: int = 5000,
          artifact_root: Path | None = None, timeout: float = 120.0) -> int:
    """``bench ui``: start (or point at) the UI, print where things are, serve until Ctrl-C."""
    from bench.report.store import latest_leaderboard  # heavy: polars

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        if not healthy(uri, timeout=5):
            raise CLIError(f"no MLflow server answers at {uri}/health")
        print(f"MLflow UI (already running): {uri}")
        _print_leaderboard(uri, uri)
        return 0
    db = sqlite_path(uri)
    if db is None:
        raise CLIError(f"bench ui serves a local sqlite:/// store or points at an http(s):// server; got {uri}")
    if not db.is_file():
        raise CLIError(f"no tracking store at {db}: run a sweep first (bench run), or pass --tracking-uri")
    if port and not _port_free(host, port):
        raise CLIError(f"port {port} on {host} is taken; pass --port P (or --port 0 for any free port)")
    if host not in LOOPBACK:
        print(f"bench ui: binding {host}: the UI (and every run in the store) is reachable from other "
              f"machines, without authentication", file=sys.stderr)
    # Ctrl-C, and a plain `kill` too, stop the server we start (it runs in a session of its
    # own, so no signal reaches it unless we pass it on). SIGINT is re-armed because a shell
    # starts background jobs with it ignored.
    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        print(f"bench ui: starting mlflow server over {db} ...", file=sys.stderr)
        try:
            server = start_server(uri, host=host, port=port, artifact_root=artifact_root, timeout=timeout)
        except RuntimeError as e:
            raise CLIError(str(e)) from None
        except KeyboardInterrupt:
            print("\nbench ui: interrupted", file=sys.stderr)
            return 130
        with server:
            print(f"MLflow UI: {server.url}   (store {db}; server log {server.log_path})")
            _print_leaderboard(uri, server.url, latest=latest_leaderboard)
            print("Ctrl-C to stop.", flush=True)
            try:
                while server.proc.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                print("\nbench ui: stopping", file=sys.stderr)
                return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"bench ui: the server exited ({server.proc.returncode}); see {server.log_path}", file=sys.stderr)
    return 1


def _print_leaderboard(uri: str, base: str, latest=None) -> None:
    if latest is None:
        from bench.report.store import latest_leaderboard as latest
    found = latest(uri)
    if found is None:
        print("No leaderboard run yet: `bench report --sweep NAME` makes one.")
        return
    exp_id, run_id, name = found
    print(f"Newest leaderboard: {name}\n  run:    {run_url(base, exp_id, run_id)}\n"
          f"  table:  {run_url(base, exp_id, run_id, 'tables/leaderboard.json')}\n"
          f"  report: {run_url(base, exp_id, run_id, 'report/report.html')}")


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host if host not in ("0.0.0.0", "::", "localhost") else "127.0.0.1", port))
        except OSError:
            return False
    return True
