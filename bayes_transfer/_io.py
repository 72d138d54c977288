"""Atomic file writes: a reader never sees a half-written file.

Every file the package writes (run tables, posteriors, checkpoints, loop state) goes
through :func:`atomic_path`: the content is written to a temporary file in the same
directory, flushed and fsync'd, then renamed over the destination. ``os.replace`` is
atomic on POSIX and Windows, so a ``kill -9`` at any point leaves either the old file
or the new one, never a truncated one. The temporary file itself (hidden, named
``.<dest>.<pid>.<random><suffix>.tmp``) does survive a kill; :func:`remove_stale_temps`
deletes those whose writing process is gone, and the resumable writers (the trainer's
work directory, the loop's output directory) call it when they start.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "remove_stale_temps",
           "read_toml"]

#: The largest TOML input read (specs, grids and candidates are a few KB).
MAX_TOML_BYTES = 4 << 20
#: Deeper nesting of arrays or tables than any grid, spec or candidates file needs.
MAX_TOML_DEPTH = 64

_TEMP_NAME = re.compile(r"^\.(?P<dest>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]{8}.*\.tmp$")


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success rename it over ``dest``.

    The temporary name keeps ``suffix`` (or ``dest``'s own suffix) so that libraries
    which pick a format from the extension (pandas, xarray, torch) still work. The file
    ends up with the mode ``0o666 & ~umask``, as if ``open(dest, "w")`` had made it.

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
        prefix=f".{dest.name}.{os.getpid()}.", suffix=(suffix or dest.suffix) + ".tmp",
        dir=dest.parent,
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            # mkstemp made the file 0600; give it the mode a plain open() would have.
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
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


def read_toml(path: str | os.PathLike[str], error: type[Exception], what: str) -> dict:
    """Parse a TOML input file; every way it can be bad is ``error`` naming the file.

    The one reader of TOML inputs (grids, candidates): parsed with ``tomllib`` (no code
    is evaluated); a missing file, a directory, a special or oversized file, text that is
    not UTF-8, bad TOML and nesting too deep to parse are each one clear message.
    """
    import stat
    import tomllib

    path = Path(path)
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise error(f"{path} is a directory; give a {what} file")
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path} is not a regular file; give a {what} file")
        if info.st_size > MAX_TOML_BYTES:
            raise error(f"{path}: {info.st_size:,} bytes is too big for a {what} "
                        f"(at most {MAX_TOML_BYTES:,})")
        text = path.read_text(encoding="utf-8")
        if _nesting_depth(text) > MAX_TOML_DEPTH:
            raise error(f"{path}: nested too deeply to be a {what} "
                        f"(more than {MAX_TOML_DEPTH} levels of [ or {{)")
        return tomllib.loads(text)
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: a {what} must be UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise error(f"{path}: nested too deeply to be a {what}") from None


def _nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside quoted strings (an upper bound is
    enough: tomllib recurses once a level, and how deep it may go depends on the
    process's recursion limit, which other libraries raise)."""
    depth = deepest = 0
    quote = ""
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote or ch == "\n":
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            quote = "\n"  # a comment runs to the end of the line
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return deepest


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no way to read it but to set it: put it straight back
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temps(directory: str | os.PathLike[str], name: str | None = None) -> int:
    """Delete the temporary files of :func:`atomic_path` left by killed processes.

    Only files of that naming scheme whose process id is no longer running are removed
    (``name``: only those for the destination file ``name``), so a concurrent writer's
    file is never touched. Returns how many were removed.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / ".runs.csv.999999999.abcd1234.csv.tmp").write_text("half")
        >>> remove_stale_temps(d), sorted(p.name for p in d.iterdir())
        (1, [])
    """
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for path in directory.glob(".*.tmp"):
        match = _TEMP_NAME.match(path.name)
        if match is None or (name is not None and match["dest"] != name):
            continue
        if not _running(int(match["pid"])):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    except OverflowError:  # not a pid this system can have
        return False
    return True
