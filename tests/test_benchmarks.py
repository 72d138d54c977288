"""Every benchmark script runs in --quick mode, exits 0 and prints its figures.

Scripts are discovered with a glob (``benchmarks/*.py``, except helpers whose name starts
with ``_``), so a new benchmark is covered as soon as it exists and none can rot.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_runs_quick_and_prints_its_figures(script: Path, tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, str(script), "--quick"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    out = res.stdout
    assert res.returncode == 0, f"exit {res.returncode}\n{out[-3000:]}\n{res.stderr[-3000:]}"
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) >= 3, out
    # Figures: numbers in the last lines, and a verdict on the target when it has one.
    tail = "\n".join(lines[-8:])
    assert any(ch.isdigit() for ch in tail), out
    if any(line.startswith(("TARGET MET", "TARGET MISSED")) for line in lines):
        assert lines[-1].startswith("TARGET"), "the verdict (_common.verdict) is printed last"


def test_benchmarks_are_discovered():
    names = {p.stem for p in SCRIPTS}
    assert {"fit_scaling", "calibration", "extrapolation"} <= names
