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
    if script.stem == "hostile_probe":
        pytest.skip("run by test_hostile_probe_quick_finds_no_traceback (the same command)")
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


@pytest.mark.slow
def test_active_learning_pool_quick_reports_every_strategy(tmp_path: Path):
    """``active_learning.py --pool --quick``: five strategies replayed on the FLAN table."""
    import json

    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "active_learning.py"),
                          "--pool", "--quick", "--json", "out.json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    out = json.loads((tmp_path / "out.json").read_text())
    strategies = out["strategies"]
    assert list(strategies) == ["active", "per-cost", "random", "cheapest", "doubling"]
    for row in strategies.values():
        assert row["flops"] > 0 and 0 <= row["coverage_at_narrow"] <= 1
        assert row["max_rhat"] >= 1.0
    # --quick: 2 models, 1 round after the shared design (f = 0 and 200 examples of 35
    # tokens). Doubling then fine-tunes both on 1/512 of the largest size (3,200
    # examples): 6 N f FLOPs summed over the two models, from the table's own sizes.
    import pandas as pd

    flan = pd.read_csv(REPO / "data" / "rectified-scaling" / "flan.csv")
    sizes = flan["size"].sort_values().to_numpy()[[0, -1]].astype(float)
    expected = 6 * sizes.sum() * 35 * (200 + 3200)
    assert strategies["doubling"]["flops"] == pytest.approx(expected, rel=1e-9)
    # Cheapest-first spends least on one round of the same batch size.
    assert strategies["cheapest"]["flops"] <= min(strategies[s]["flops"] for s in
                                                  ("active", "per-cost", "random", "doubling"))
    assert set(out["rhat_per_round"]) == {"0", "1"}


def test_hostile_probe_quick_finds_no_traceback(tmp_path: Path):
    """``hostile_probe.py --quick`` (about 25 s): a few hostile inputs of every category,
    in-process and as real processes; no raw traceback, no file written on an error."""
    import json

    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "hostile_probe.py"),
                          "--quick", "--json", "out.json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    out = json.loads((tmp_path / "out.json").read_text())
    total = out["total"]
    assert total["tried"] >= 20 and total["clean"] >= total["tried"] // 2, total
    assert total["traceback"] == total["written"] == total["should-fail"] == 0, out["failures"]
    assert out["failures"] == []
    assert {"run tables", "specs", "candidates", "grids", "posteriors", "output paths",
            "bad arguments"} <= set(out["categories"])
    assert any(name.endswith("(subprocess)") for name in out["categories"])


def test_never_run_residual_nu_reaches_every_pooled_pair_parameter(monkeypatch):
    from bayes_transfer.spec import load_spec

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import never_run

    spec = never_run.with_residual_nu("transfer-gap-size", 3.0)
    assert {n for n, p in spec.params.items() if p.residual_nu is not None} == {"G", "A"}
    assert spec.params["G"].residual_nu == 3.0
    assert never_run.with_residual_nu("transfer-gap-size", None) == load_spec(
        "transfer-gap-size")
