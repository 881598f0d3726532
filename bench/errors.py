"""The suite's user-facing errors, in one place, so that no module imports another's CLI or
driver just to raise or catch one. ``bench`` prints each of these as one line without a
traceback (exit status 2): the message always names the file, line, field or URI at fault.
"""

from __future__ import annotations

from pathlib import Path


class CLIError(Exception):
    """A user error on the command line (a bad flag, a missing file)."""


class ConfigError(ValueError):
    """A bad sweep file or run config: names the file, the line when known, and the field path
    (``sweep.yaml:14: train.lr_end: must be in [0, lr=0.01], got 0.5``)."""


class SweepError(RuntimeError):
    """A sweep cannot start or continue (the message says why and what to do)."""


class TrackingUnavailable(RuntimeError):
    """The tracking store cannot be reached or opened: names the URI and what to do."""


class SweepNotFound(LookupError):
    """No sweep (or no trial runs) matches; the message lists what the store holds."""


class DataError(ValueError):
    """A problem with a dataset file: names the file, the line when there is one, and why.

    >>> str(DataError("lists/train.txt", "expected 3 fields, got 2", line=7))
    'lists/train.txt:7: expected 3 fields, got 2'
    """

    def __init__(self, path: str | Path, reason: str, *, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple:
        # Exceptions pickle through their args; ``line`` is keyword-only, so rebuild explicitly
        # (errors cross process boundaries in parallel checks and data-loader workers).
        return (_rebuild, (self.path, self.reason, self.line))


def _rebuild(path: str, reason: str, line: int | None) -> DataError:
    return DataError(path, reason, line=line)


class StorageUnavailable(OSError):
    """The sweep's storage (a bucket, through `bench.storage`) cannot be read or written: the
    message names the URI and the store's reason (endpoint, credentials, bucket)."""


#: What `bench.cli.main` prints as ``bench: error: <message>`` (exit 2) instead of a traceback.
USER_ERRORS = (CLIError, ConfigError, SweepError, TrackingUnavailable, SweepNotFound, DataError, StorageUnavailable)
