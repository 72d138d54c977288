"""Build hook: ship the top-level ``models/`` and ``data/`` folders inside the package.

The model specs and run tables live at the top of the clone so that users can read, copy
and edit them, and an editable install (``pip install -e .``, what ``make`` does) reads
them there. setuptools' ``package-data`` cannot reach outside the package folder, so a
wheel (or a regular install) gets copies under ``bayes_transfer/_bundled/``, made here at
build time; ``bayes_transfer.bundled`` looks there first. Everything else about the
package is declared in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUNDLED = ("models", "data")  # top-level folders copied to bayes_transfer/_bundled/<name>
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


class BuildPyWithBundled(build_py):
    """``build_py`` that also copies ``models/`` and ``data/`` into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the clone's folders directly
        for name in BUNDLED:
            src = HERE / name
            if not src.is_dir():
                raise FileNotFoundError(f"{src} is missing: the package ships it")
            dest = Path(self.build_lib) / "bayes_transfer" / "_bundled" / name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest, ignore=SKIP)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        root = Path(self.build_lib) / "bayes_transfer" / "_bundled"
        return outputs + [str(p) for p in root.rglob("*") if p.is_file()]


setup(cmdclass={"build_py": BuildPyWithBundled})
