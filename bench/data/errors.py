"""The one error type for bad input data: it always names the file (and line when known)."""

from __future__ import annotations

from pathlib import Path


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
