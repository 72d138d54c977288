"""Paths of the files the project ships beside the package: model specs and run tables.

They live at the top of the source tree (``models/``, ``data/``) so that a user can read,
copy and edit them; an editable install (``pip install -e .``, what ``make`` does) finds
them there. A wheel carries copies inside the package, under ``bayes_transfer/_bundled/``
(made at build time by ``setup.py``); when that folder exists it is the one used.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE / "_bundled"  # only in a built wheel, never in the clone
ROOT = _INSTALLED if _INSTALLED.is_dir() else _PACKAGE.parent
MODELS_DIR = ROOT / "models"
DATA_DIR = ROOT / "data"

__all__ = ["MODELS_DIR", "DATA_DIR", "spec_path", "runs_path", "grid_path"]


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"bundled {what} {path} not found; it ships in the package's wheel and in "
            "the source checkout (`pip install -e .` from a clone reads models/ and data/)"
        )
    return path


def spec_path(name: str) -> Path:
    """Path of the bundled model spec ``models/<name>.toml``."""
    return _existing(MODELS_DIR / f"{name}.toml", "model spec")


def runs_path() -> Path:
    """Path of the bundled run table produced by the package's own trainer."""
    return _existing(DATA_DIR / "transfer_runs.csv", "run table")


def grid_path() -> Path:
    """Path of the grid spec that produced the bundled run table."""
    return _existing(DATA_DIR / "transfer_grid.toml", "grid spec")
