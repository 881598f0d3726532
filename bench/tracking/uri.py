"""Where runs are recorded, and a fast check that the store is there before anything starts.

Why probe first: MLflow's HTTP client retries a refused connection with exponential backoff
for minutes, and a database URI with a typo or without its driver fails deep inside MLflow with
a traceback; a sweep would start Ray, launch trials, and only then stall or crash. Each mistake
is answered here, in one line naming the URI and what to do (`TrackingUnavailable`): an unknown
scheme (``sqlit:///x.db``), a server that does not answer, a SQLite file whose folder is missing
or that cannot be written, a database URI whose Python driver is not installed or whose server
refuses the connection. A store that dies mid-sweep is handled by the callback (training
continues, `bench sync` catches up).

`TrackingMisconfigured` (a `TrackingUnavailable`) marks the mistakes that waiting will not fix
(the URI itself is wrong), so that `bench report` does not fall back to Tune's storage on a typo.
"""

from __future__ import annotations

import os
import socket
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
# Database schemes MLflow's SQLAlchemy store takes (``mlflow.store.db.db_types``), each with
# an optional ``+driver`` (``postgresql+psycopg2://``); what to pip-install for the default driver
# SQLAlchemy picks for each.
DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "mysqldb": "mysqlclient",
                   "pymysql": "pymysql", "pyodbc": "pyodbc", "pymssql": "pymssql"}
# SQLAlchemy driver name -> (its module, the other drivers of that database).
DRIVER_MODULES = {"psycopg": "psycopg", "psycopg2": "psycopg2", "mysqldb": "MySQLdb", "pymysql": "pymysql",
                  "pyodbc": "pyodbc", "pymssql": "pymssql"}
SCHEME_DRIVERS = {"postgresql": ("psycopg", "psycopg2"), "mysql": ("mysqldb", "pymysql"),
                  "mssql": ("pyodbc", "pymssql")}
OTHER_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc", "file")
SQLITE_MAGIC = b"SQLite format 3\x00"
FIX = ("use sqlite:///PATH/mlflow.db (a local file), http://HOST:PORT (a tracking server: "
       "`bench server`, `bench ui`) or postgresql://USER@HOST:PORT/DB")


class TrackingMisconfigured(TrackingUnavailable):
    """The tracking URI itself is wrong (scheme, driver, path): retrying or waiting cannot help."""


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


def scheme_of(uri: str) -> str:
    """``postgresql+psycopg2://...`` -> ``postgresql``; ``""`` for a plain path."""
    return uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""


def is_database_uri(uri: str) -> bool:
    return scheme_of(uri) in DB_SCHEMES


def shown(uri: str) -> str:
    """``uri`` fit for a message or a log line: a password in it is replaced by ``***``."""
    if is_database_uri(uri) and "@" in uri:
        try:
            from sqlalchemy.engine import make_url  # heavy

            return make_url(uri).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 -- a URI SQLAlchemy cannot parse holds no password we know of
            return uri
    return uri


def apply_http_env() -> None:
    for k, v in HTTP_ENV.items():
        os.environ.setdefault(k, v)


def check_tracking(uri: str, *, timeout: float = 3.0) -> None:
    """Raise `TrackingUnavailable` (or `TrackingMisconfigured`) unless ``uri`` can take runs now.

    http(s): GET ``/health`` within ``timeout`` seconds. sqlite: the folder must exist and be
    writable, and an existing file must be a writable SQLite database (a new one is created on
    first use). postgresql / mysql / mssql: the Python driver must import and the database must
    accept a connection within ``timeout`` seconds. ``file:`` (MLflow 3's file store) is refused
    unless ``MLFLOW_ALLOW_FILE_STORE=true``; databricks URIs are left to MLflow; anything else is
    an unknown scheme."""
    scheme = scheme_of(uri)
    if scheme in ("http", "https"):
        _check_server(uri, timeout)
    elif scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in DB_SCHEMES:
        _check_database(uri, timeout)
    elif scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
            raise TrackingMisconfigured(
                f"tracking store {uri}: MLflow 3 keeps its file store in maintenance mode; use "
                f"sqlite:///PATH/mlflow.db (the default) or a server")
    elif scheme not in OTHER_SCHEMES:
        raise TrackingMisconfigured(
            f"tracking URI {shown(uri)}: unknown scheme {scheme + '://'!r} (MLflow takes "
            f"{', '.join(s + '://' for s in (*DB_SCHEMES, 'http', 'https', 'databricks'))}); {FIX}")


def _check_server(uri: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            if r.status != 200:
                raise TrackingUnavailable(f"MLflow tracking server {uri} answered HTTP {r.status} on /health; "
                                          f"is it an MLflow server? (`bench server` / `bench ui` start one)")
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is not reachable ({reason}); start it (`bench server "
            f"--backend-store-uri ... --port PORT`, or `mlflow server --host 127.0.0.1 --port PORT ...`) "
            f"or pass --tracking-uri sqlite:///PATH/mlflow.db to record locally") from None


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _check_sqlite(uri: str) -> None:
    db = sqlite_path(uri)
    if db is None:                     # sqlite:// or sqlite:/x: an in-memory or malformed store
        raise TrackingMisconfigured(f"tracking store {uri}: a SQLite store is sqlite:///ABSOLUTE/PATH/mlflow.db "
                                    f"(three slashes, then the path)")
    folder = db.parent
    if not folder.is_dir():
        raise TrackingMisconfigured(f"tracking store {uri}: folder {folder} does not exist; create it "
                                    f"(mkdir -p {folder}) or pass another --tracking-uri")
    if not db.exists():
        if not _writable(folder):
            raise TrackingMisconfigured(f"tracking store {uri}: folder {folder} is not writable, so "
                                        f"{db.name} cannot be created there; pass another --tracking-uri")
        return
    if db.is_dir():
        raise TrackingMisconfigured(f"tracking store {uri}: {db} is a folder, not a SQLite file; name the "
                                    f"database file inside it (sqlite:///{db}/{DB_NAME})")
    try:
        with open(db, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise TrackingMisconfigured(f"tracking store {uri}: cannot read {db} ({e.strerror}); fix its "
                                    f"permissions or pass another --tracking-uri") from None
    if head and head != SQLITE_MAGIC:
        raise TrackingMisconfigured(f"tracking store {uri}: {db} is not a SQLite database; pass the "
                                    f"path of an MLflow database (or of a new file) with --tracking-uri")
    if not _writable(db) or not _writable(folder):
        what = db if not _writable(db) else folder
        raise TrackingMisconfigured(f"tracking store {uri}: {what} is not writable (SQLite writes the file "
                                    f"and a journal beside it); fix its permissions (chmod u+w {what}) or "
                                    f"pass another --tracking-uri")


def _check_database(uri: str, timeout: float) -> None:
    """The driver imports, the server accepts a TCP connection, and then a login."""
    try:
        from sqlalchemy.engine import make_url  # heavy

        url = make_url(uri)
        dialect = url.get_dialect()
    except Exception as e:  # noqa: BLE001 -- ArgumentError, NoSuchModuleError: a malformed URI
        raise TrackingMisconfigured(f"tracking store {shown(uri)}: not a database URI SQLAlchemy can read "
                                    f"({str(e).splitlines()[0]}); {FIX}") from None
    driver = getattr(dialect, "driver", "") or url.get_driver_name()
    try:
        dialect.import_dbapi()
    except ImportError:
        pkg = DRIVER_PACKAGES.get(driver, driver)
        scheme = scheme_of(uri)
        others = ", ".join(f"{scheme}+{d}://..." for d in SCHEME_DRIVERS.get(scheme, ())
                           if d != driver and _module_found(DRIVER_MODULES[d]))
        raise TrackingMisconfigured(
            f"tracking store {shown(uri)}: its Python driver {driver!r} is not installed; "
            f"pip install '{pkg}'" + (f", or name an installed one ({others})" if others else "")) from None
    host, port = url.host, url.port or {"postgresql": 5432, "mysql": 3306, "mssql": 1433}.get(scheme_of(uri))
    if host and port and not host.startswith("/"):
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                pass
        except OSError as e:
            raise TrackingUnavailable(
                f"tracking store {shown(uri)}: the database server {host}:{port} is not reachable "
                f"({e.strerror or e}); start it, or check the host and port in the URI") from None
    try:
        import sqlalchemy  # heavy

        args = {"connect_timeout": int(max(1, timeout))} if scheme_of(uri) in ("postgresql", "mysql") else {}
        engine = sqlalchemy.create_engine(url, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as e:  # noqa: BLE001 -- OperationalError & co: the server's own words
        msg = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise TrackingUnavailable(
            f"tracking store {shown(uri)}: the database refused the connection ({msg[0] if msg else type(e).__name__}); "
            f"check the user, password and database name in the URI (the database must exist: createdb NAME)") from None


def _module_found(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
