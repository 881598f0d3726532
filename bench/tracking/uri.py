"""Where runs are recorded, and a fast check that the store is there before a sweep starts.

Why probe first: MLflow's HTTP client retries a refused connection with exponential backoff
for minutes; a sweep would start Ray, launch trials, and only then stall. A dead server at
start is a user error reported in about a second; one that dies mid-sweep is handled by the
callback (training continues, `bench sync` catches up).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from bench.errors import TrackingUnavailable

DB_NAME = "mlflow.db"
# Applied (setdefault) in processes that talk to MLflow during a sweep: a dropped server
# must cost seconds per call, not MLflow's default 7 retries with backoff (minutes).
HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def default_tracking_uri(cwd: str | Path | None = None) -> str:
    """``sqlite:///<abs cwd>/mlflow.db``: MLflow 3 refuses the old ``./mlruns`` file store."""
    base = Path(cwd) if cwd is not None else Path.cwd()
    return f"sqlite:///{(base / DB_NAME).resolve()}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite default.

    A relative SQLite path (``sqlite:///x.db``) is made absolute, because Ray workers and a
    resumed driver may run elsewhere."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///"):]
        uri = f"sqlite:///{Path(rel).resolve()}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def apply_http_env() -> None:
    for k, v in HTTP_ENV.items():
        os.environ.setdefault(k, v)


def check_tracking(uri: str, *, timeout: float = 3.0) -> None:
    """Raise `TrackingUnavailable` unless ``uri`` can take runs right now.

    http(s): GET ``/health`` within ``timeout`` seconds. sqlite: the folder must exist and be
    writable (the database is created on first use). Other schemes are left to MLflow."""
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                if r.status != 200:
                    raise TrackingUnavailable(f"MLflow tracking server {uri} answered HTTP {r.status} on /health")
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingUnavailable(
                f"MLflow tracking server {uri} is not reachable ({reason}); start it (`mlflow server "
                f"--host 127.0.0.1 --port PORT ...`) or pass --tracking-uri sqlite:///PATH/mlflow.db "
                f"to record locally") from None
        return
    db = sqlite_path(uri)
    if db is not None:
        folder = db.parent
        if not folder.is_dir():
            raise TrackingUnavailable(f"tracking store {uri}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise TrackingUnavailable(f"tracking store {uri}: folder {folder} is not writable")
        return
    if uri.startswith("file:") or "://" not in uri:
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
            raise TrackingUnavailable(
                f"tracking store {uri}: MLflow 3 keeps its file store in maintenance mode; use "
                f"sqlite:///PATH/mlflow.db (the default) or a server")
