"""The argument and path checks every command runs before its work.

A command that samples for minutes or trains for hours must not find out afterwards that
its output path is a directory, that its parent is not writable, that ``--ci`` is 1.5 or
that it is about to write over its own input. Each check here prints one line naming the
problem (through :func:`bayes_transfer.cli._app.fail`) and exits with status 1; nothing
has been written by then.

Outputs: never a directory or a special file, never one of the command's inputs, in a
directory that exists (or can be made) and is writable; an existing file is replaced
only with ``--force``.

Example:
    >>> from pathlib import Path
    >>> output_file(Path("/tmp/new-posterior.nc"), force=True)  # doctest: +SKIP
    PosixPath('/tmp/new-posterior.nc')
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from bayes_transfer.cli._app import fail

__all__ = ["file_name", "output_file", "output_dir", "input_file", "ci", "positive", "seed", "numbers",
           "MAX_SEED"]

MAX_SEED = 2**32 - 1
#: The largest count of model parameters or tokens a command accepts (as the run table).
MAX_COUNT = 1e16


def same_file(a: Path, b: Path) -> bool:
    """Are ``a`` and ``b`` the same file (after links), whether or not both exist?"""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _writable_parent(path: Path, flag: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():  # a dangling link
            raise fail(f"{flag} {path}: {parent} is a broken link")
        parent = parent.parent
    if not parent.is_dir():
        raise fail(f"{flag} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise fail(f"{flag} {path}: cannot write in {parent} (permission denied)")


def file_name(path: Path | str, flag: str = "--out") -> Path:
    """A path with a file name (not ``""``, ``.`` or ``..``): what names derived from it
    (``OUT.truth.json``, ``OUT.work``) need before any other check."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise fail(f"{flag} {str(path)!r}: give a file name")
    return path


def output_file(path: Path, *, inputs: Iterable[Path | str | None] = (), force: bool = False,
                flag: str = "--out", suffixes: Iterable[str] | None = None,
                may_exist: bool = False) -> Path:
    """Check a file the command will write; return it.

    Args:
        inputs: the command's input files: the output may never be one of them.
        force: an existing file may be replaced.
        suffixes: the allowed extensions (lower case, with the dot), if restricted.
        may_exist: an existing file is the command's own state (a resumed run).
    """
    path = file_name(path, flag)
    if path.is_dir():
        raise fail(f"{flag} {path} is a directory; give a file name")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise fail(f"{flag} {path} is not a regular file")
    if suffixes is not None:
        allowed = tuple(suffixes)
        if path.suffix.lower() not in allowed:
            raise fail(f"{flag} {path}: use a file name ending in {', '.join(allowed)}")
    for inp in inputs:
        if inp is not None and Path(inp).exists() and same_file(path, Path(inp)):
            raise fail(f"{flag} {path} is the input {inp}; write the output to another file")
    _writable_parent(path, flag)
    if path.exists() and not (force or may_exist):
        raise fail(f"{flag} {path} exists; pass --force to replace it (nothing was written)")
    return path


def output_dir(path: Path, *, inputs: Iterable[Path | str | None] = (),
               flag: str = "--out") -> Path:
    """Check a directory the command will write files into (it may exist); return it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise fail(f"{flag} {path} exists and is not a directory")
    for inp in inputs:
        if inp is not None and Path(inp).exists() and same_file(path, Path(inp)):
            raise fail(f"{flag} {path} is the input {inp}")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise fail(f"{flag} {path}: cannot write in it (permission denied)")
    else:
        _writable_parent(path, flag)
    return path


def input_file(path: Path | None, what: str, flag: str = "") -> Path | None:
    """An input that must be an existing regular file (None passes)."""
    if path is None:
        return None
    path = Path(path)
    label = f"{flag} {path}".strip()
    if not path.exists():
        raise fail(f"{label}: no such {what}")
    if path.is_dir():
        raise fail(f"{label} is a directory; give a {what}")
    if not stat.S_ISREG(path.stat().st_mode):
        raise fail(f"{label} is not a regular file; give a {what}")
    if not os.access(path, os.R_OK):
        raise fail(f"{label}: cannot read it (permission denied)")
    return path


def ci(value: float, flag: str = "--ci") -> float:
    """A credible-interval mass strictly between 0 and 1."""
    if not (math.isfinite(value) and 0 < value < 1):
        raise fail(f"{flag} must be between 0 and 1 (e.g. 0.9), not {value}")
    return value


def positive(value: float | int | None, flag: str, *, integer: bool = False,
             maximum: float = math.inf) -> float | int | None:
    """A finite number > 0 (and <= ``maximum``), or None when the option is unset."""
    if value is None:
        return None
    if not (math.isfinite(value) and 0 < value <= maximum):
        bound = f" and at most {maximum:g}" if math.isfinite(maximum) else ""
        raise fail(f"{flag} must be a {'whole ' if integer else ''}number above 0{bound}, "
                   f"not {value}")
    return value


def seed(value: int, flag: str = "--seed") -> int:
    """A random seed: 0 .. 2**32 - 1."""
    if not 0 <= value <= MAX_SEED:
        raise fail(f"{flag} must be between 0 and {MAX_SEED}, not {value}")
    return value


def numbers(text: str, flag: str, *, integer: bool = False, minimum: float = 0.0,
            strict: bool = False, maximum: float = MAX_COUNT) -> list[float]:
    """Comma-separated finite numbers in ``[minimum, maximum)`` (``strict``: > minimum)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise fail(f"{flag}: expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise fail(f"{flag}: give at least one number")
    for v in values:
        low_ok = v > minimum if strict else v >= minimum
        if not (math.isfinite(v) and low_ok and v < maximum) or (integer and v != round(v)):
            kind = "whole number" if integer else "number"
            raise fail(f"{flag}: {v:g} is not a {kind} {'above' if strict else 'from'} "
                       f"{minimum:g} and below {maximum:g}")
    return values
