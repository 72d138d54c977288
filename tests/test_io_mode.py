"""Files the package writes get the user's umask, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from bayes_transfer import _io
from bayes_transfer._io import atomic_path, atomic_write_text


@pytest.fixture
def umask():
    """Set the process umask for one test and put the old one back."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600),
                                                (0o002, 0o664)],
                         ids=["umask022", "umask077", "umask002"])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert _io._umask() == mask
    with atomic_path(tmp_path / "runs.csv") as tmp:
        pd.DataFrame({"a": [1]}).to_csv(tmp, index=False)
    atomic_write_text(tmp_path / "notes.txt", "hello")
    with atomic_path(tmp_path / "recreated.bin") as tmp:  # a writer that replaces the file
        tmp.unlink()
        tmp.write_bytes(b"x")
    for name in ("runs.csv", "notes.txt", "recreated.bin"):
        assert _mode(tmp_path / name) == expected, name
    assert not list(tmp_path.glob(".*.tmp"))


def test_umask_without_proc_is_read_and_left_alone(umask, monkeypatch):
    umask(0o027)

    def no_proc(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(_io, "open", no_proc, raising=False)
    assert _io._umask() == 0o027
    monkeypatch.undo()
    assert _io._umask() == 0o027  # the fallback put the mask back
