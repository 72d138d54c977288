"""The package installs as a wheel: model specs and run tables ship inside it.

The wheel is built from an sdist of the working tree (so ``MANIFEST.in`` is checked too),
installed with ``--no-deps`` into a fresh venv whose only other path is this venv's
site-packages (for the dependencies; its editable finder is not loaded, so the clone is
not importable), and run from a folder outside the clone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args, cwd, env=None, timeout=600):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


def _working_tree(dest: Path) -> Path:
    """Copy the tracked and untracked, not ignored, files of the clone into ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    return dest


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A venv with the built wheel installed; returns (python, bin dir, clean env)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = _working_tree(tmp / "src")
    sdist = _run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
                  "print(b.build_sdist(sys.argv[1]))", str(tmp / "sdist")],
                 cwd=src).stdout.strip().splitlines()[-1]
    with tarfile.open(tmp / "sdist" / sdist) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(tmp / "dist"), str(unpacked)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("bayes_transfer-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "-q", str(wheel)], cwd=tmp)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                      "'purelib'))"], cwd=tmp).stdout.strip())
    # Dependencies from this venv: a plain path line, so its .pth files (the editable
    # finder that maps bayes_transfer to the clone) are not processed.
    (site / "zz_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["MPLBACKEND"] = "Agg"
    return python, venv / "bin", env, tmp


def test_wheel_carries_the_specs_and_tables(wheel_env):
    python, _, env, tmp = wheel_env
    code = (
        "import bayes_transfer as bt, pathlib\n"
        "from bayes_transfer import bundled\n"
        "print(pathlib.Path(bt.__file__).resolve())\n"
        "print(bundled.MODELS_DIR.resolve())\n"
        "spec = bt.load_spec('transfer-gap')\n"
        "runs = bt.load_runs(bundled.runs_path())\n"
        "print(spec.law, len(runs))\n"
        "print(bundled.grid_path().is_file(), (bundled.DATA_DIR / 'transfer_runs.md').is_file())\n"
    )
    out = _run([str(python), "-c", code], cwd=tmp, env=env).stdout.splitlines()
    installed = Path(out[0])
    assert ROOT not in installed.parents and tmp in installed.parents, out
    assert Path(out[1]) == installed.parent / "_bundled" / "models"
    assert out[2].startswith("transfer-gap ") and int(out[2].split()[1]) > 0
    assert out[3] == "True True"
    # Every file under models/ and data/ ships, subfolders included.
    for top in ("models", "data"):
        for f in (ROOT / top).rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts and not f.name.startswith("."):
                rel = f.relative_to(ROOT)
                assert (installed.parent / "_bundled" / rel).is_file(), rel


def test_wheel_states_its_licence_and_carries_the_licence_files(wheel_env):
    """The package's SPDX licence is in the metadata, and the wheel carries its licence
    text and the bundled public tables' licences (Apache-2.0 and MIT), as they require."""
    _, _, _, tmp = wheel_env
    (wheel,) = (tmp / "dist").glob("bayes_transfer-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = whl.read(metadata).decode()
        licences = {n.split(".dist-info/licenses/", 1)[1]: whl.read(n).decode()
                    for n in names if ".dist-info/licenses/" in n}
    assert "License-Expression: Apache-2.0" in meta.splitlines(), meta[:800]
    expected = {"LICENSE", "data/llm-line/LICENSE", "data/rectified-scaling/LICENSE"}
    assert set(licences) == expected, sorted(licences)
    for name in expected:
        assert licences[name] == (ROOT / name).read_text(), name


def test_quick_demo_runs_from_the_wheel(wheel_env):
    _, bindir, env, tmp = wheel_env
    workdir = tmp / "elsewhere"
    workdir.mkdir()
    result = _run([str(bindir / "bayes-transfer"), "demo", "--quick", "--out", "out"],
                  cwd=workdir, env=env, timeout=900)
    assert "transfer gap per pair" in result.stdout
    assert (workdir / "out" / "posterior.nc").stat().st_size > 0
