"""Atomic file writes: a reader never sees a half-written file.

Every file the package writes (run tables, posteriors, checkpoints, loop state) goes
through :func:`atomic_path`: the content is written to a temporary file in the same
directory, flushed and fsync'd, then renamed over the destination. ``os.replace`` is
atomic on POSIX and Windows, so a ``kill -9`` at any point leaves either the old file
or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success rename it over ``dest``.

    The temporary name keeps ``suffix`` (or ``dest``'s own suffix) so that libraries
    which pick a format from the extension (pandas, xarray, torch) still work.

    Example:
        >>> import pandas as pd, tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "runs.csv"
        >>> with atomic_path(out) as tmp:
        ...     pd.DataFrame({"a": [1]}).to_csv(tmp, index=False)
        >>> out.read_text().splitlines()[0]
        'a'
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=(suffix or dest.suffix) + ".tmp", dir=dest.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    atomic_write_bytes(dest, text.encode("utf-8"))


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
