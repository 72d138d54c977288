"""Faults: sampling trouble is reported with advice; SIGKILL never leaves a partial file.

* Diagnostics: InferenceData built by hand with one problem each (divergences, R-hat above
  1.01, low ESS, a non-finite log density) gives a ``SamplingWarning`` with advice, and
  ``bayes-transfer report`` prints it; a real, badly run fit warns too.
* Kills: the trainer grid, a fit and the active-learning loop are killed with SIGKILL at
  random moments, then rerun. Every rerun resumes and ends with exactly the rows of an
  uninterrupted run; a reader never finds a partial file (leftover temporaries are hidden
  ``.NAME.*.tmp`` files that no reader opens).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest
from _grids import tiny_grid
from typer.testing import CliRunner

from bayes_transfer.cli import app
from bayes_transfer.data import load_runs
from bayes_transfer.diagnostics import SamplingWarning, diagnose
from bayes_transfer.inference import Posterior

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from bayes_transfer.cli import main; main()"]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


# ---- sampling trouble is reported, not hidden -------------------------------------------


def fake_idata(*, chains: int = 4, draws: int = 300, divergent: int = 0, shift: float = 0.0,
               rho: float = 0.0, nonfinite: int = 0, saturated: int = 0) -> az.InferenceData:
    """Draws of one scalar with exactly the requested problems (seeded, deterministic)."""
    rng = np.random.default_rng(0)
    eps = rng.standard_normal((chains, draws))
    x = np.empty_like(eps)
    x[:, 0] = eps[:, 0]
    for i in range(1, draws):  # AR(1): rho near 1 means few effective draws
        x[:, i] = rho * x[:, i - 1] + np.sqrt(1 - rho**2) * eps[:, i]
    x += shift * np.arange(chains)[:, None]  # chains that disagree
    diverging = np.zeros((chains, draws), bool)
    diverging.flat[:divergent] = True
    lp = -0.5 * x**2
    lp.flat[:nonfinite] = -np.inf
    at_max_depth = np.zeros((chains, draws), bool)
    at_max_depth.flat[:saturated] = True
    stats = {"diverging": diverging, "lp": lp, "energy": rng.standard_normal((chains, draws)),
             "reached_max_treedepth": at_max_depth}
    return az.from_dict(posterior={"x": x}, sample_stats=stats)


def test_a_clean_fake_has_no_problem():
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplingWarning)
        assert diagnose(fake_idata()).ok


def test_draws_at_the_maximum_tree_depth_are_a_note_not_a_failure():
    """Stan's convention: a cost to report with advice, not a wrong posterior by itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SamplingWarning)
        diag = diagnose(fake_idata(saturated=90))
    assert diag.ok and diag.max_treedepth_draws == 90
    assert diag.to_dict()["max_treedepth_draws"] == 90
    text = str(diag)
    assert "diagnostics OK" in text
    assert "90/1200 draws (8%) stopped at the maximum tree depth" in text
    assert "centring=\"mode\"" in text and "centered" in text  # the advice
    clean = diagnose(fake_idata())
    assert clean.max_treedepth_draws == 0 and not clean.notes and "note" not in str(clean)


@pytest.mark.parametrize("problem, kwargs, words", [
    ("divergences", {"divergent": 7}, ["7 divergent", "target_accept"]),
    ("r-hat", {"shift": 1.0}, ["R-hat", "> 1.01", "warmup"]),
    ("low ess", {"rho": 0.995}, ["ESS", "more draws"]),
    ("non-finite lp", {"nonfinite": 3}, ["3 draws with a non-finite log density",
                                         "run table"]),
])
def test_each_sampling_problem_warns_with_advice(problem, kwargs, words):
    with pytest.warns(SamplingWarning) as record:
        diag = diagnose(fake_idata(**kwargs))
    assert not diag.ok
    text = " ".join(str(w.message) for w in record)
    for word in words:
        assert word in text, (problem, text)
    assert text == " ".join(diag.problems)  # what is warned is what is recorded
    assert "diagnostics FAILED" in str(diag)


def test_the_report_command_prints_each_problem_with_advice(tmp_path):
    from _posteriors import known_posterior, simulated

    post = known_posterior(simulated("transfer-gap"), spread=0.1)
    stats = fake_idata(chains=2, draws=300, divergent=5, nonfinite=2, saturated=30).sample_stats
    post.idata.add_groups({"sample_stats": stats})
    path = post.save(tmp_path / "post.nc")
    with pytest.warns(SamplingWarning):
        assert not diagnose(Posterior.load(path).idata).ok
    result = CliRunner().invoke(app, ["report", str(path)])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())  # rich wraps lines
    for words in ("5 divergent transitions", "raise target_accept",
                  "2 draws with a non-finite log density", "NOT trustworthy",
                  "30/600 draws (5%) stopped at the maximum tree depth"):
        assert words in out, out


@pytest.mark.slow
def test_a_badly_run_real_fit_warns(tiny_sim):
    from bayes_transfer.inference import fit

    with pytest.warns(SamplingWarning, match="ESS|R-hat"):
        post = fit(tiny_sim.runs, "transfer-gap", chains=2, warmup=10, draws=20,
                   max_tree_depth=2, progress=False)
    assert not post.diagnostics.ok
    # NumPyro records the cut trajectories as PyMC does, and the file keeps them.
    stats = post.idata.sample_stats
    assert stats["reached_max_treedepth"].values.tolist() == \
        (stats["n_steps"].values == 3).tolist()
    assert post.diagnostics.max_treedepth_draws == int((stats["n_steps"] == 3).sum()) > 0


# ---- SIGKILL at random points ---------------------------------------------------------------


def run_to_end(args: list[str], timeout: float = 300) -> float:
    start = time.monotonic()
    res = subprocess.run(CLI + args, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return time.monotonic() - start


def kill_after(args: list[str], delay: float) -> bool:
    """Start the CLI, SIGKILL its process group after ``delay`` s; True if it was killed."""
    proc = subprocess.Popen(CLI + args, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return False  # finished first
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and any pool workers
        proc.wait()
        return True


def visible_files(folder: Path) -> set[str]:
    """Files a reader would open: everything but the hidden temporaries of atomic writes."""
    leftovers = [p for p in folder.rglob(".*") if p.is_file()]
    assert all(p.name.endswith(".tmp") for p in leftovers), leftovers
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")}


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    key = "row_id" if "row_id" in a.columns else "run_id"
    a, b = a.sort_values([key, "target"]), b.sort_values([key, "target"])
    assert a[key].tolist() == b[key].tolist()
    np.testing.assert_allclose(a["loss"].to_numpy(), b["loss"].to_numpy(), rtol=1e-6)


@pytest.mark.slow
def test_killed_fits_never_leave_a_partial_posterior(tiny_sim, tmp_path):
    runs = tmp_path / "runs.csv"
    tiny_sim.runs.df.to_csv(runs, index=False)
    post = tmp_path / "post.nc"
    args = ["fit", str(runs), "--out", str(post), "--force", "--chains", "1", "--draws",
            "30", "--warmup", "30", "--max-tree-depth", "4", "--no-progress"]
    full = run_to_end(args)
    previous = post.read_bytes()
    rng = np.random.default_rng(8)
    for i, delay in enumerate(rng.uniform(0.3, 1.1, size=2) * full):
        killed = kill_after(args[:-1] + ["--seed", str(i + 1), "--no-progress"], delay)
        assert visible_files(tmp_path) == {"runs.csv", "post.nc"}
        loaded = Posterior.load(post)  # complete: the old file, or the new one if it finished
        if killed and post.read_bytes() != previous:
            assert loaded.idata.posterior.sizes["draw"] == 30
        previous = post.read_bytes()


TINY_GRID = tiny_grid(sources=["synth-a", "english"], finetune_tokens=[1024, 2048])


@pytest.mark.slow
def test_a_trainer_grid_killed_several_times_resumes_to_the_same_rows(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(TINY_GRID)
    ref = tmp_path / "ref"
    full = run_to_end(["train", str(grid), "--out", str(ref / "runs.csv"), "--workers", "1",
                       "--no-progress"])
    reference = pd.read_csv(ref / "runs.csv")

    out = tmp_path / "killed"
    args = ["train", str(grid), "--out", str(out / "runs.csv"), "--workers", "1",
            "--no-progress"]
    rng = np.random.default_rng(9)
    for delay in np.sort(rng.uniform(0.15, 0.8, size=2)) * full:
        kill_after(args, delay)
        for f in visible_files(out):  # every visible file is complete
            if f.endswith(".json"):
                json.loads((out / f).read_text())
            elif f.endswith(".csv"):
                load_runs(out / f)
    run_to_end(args)
    assert not list(out.rglob(".*.tmp")), "a resumed grid cleans up the killed one's temporaries"
    same_rows(pd.read_csv(out / "runs.csv"), reference)
    run_to_end(args)  # a finished grid reruns nothing and keeps its rows
    same_rows(pd.read_csv(out / "runs.csv"), reference)


LOOP_GRID = tiny_grid(sources=["synth-a", "english"], pretrain_tokens=[2048, 4096, 8192],
                      finetune_tokens=[1024, 2048])


@pytest.mark.slow
def test_a_killed_loop_resumes_to_the_rows_of_an_uninterrupted_loop(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(LOOP_GRID)

    def args(out: Path) -> list[str]:
        # 20 draws never pass the loop's convergence gate; this test is about resuming,
        # so the loop chooses runs from them anyway, without the longer refits (2x and 4x:
        # six of every seven draws a round takes; the test's time is mostly its three
        # loop processes' start-up and compilation, 73 s alone against 79 s with them).
        return ["loop", str(grid), "--out", str(out), "--rounds", "1", "--batch", "2",
                "--chains", "1", "--draws", "20", "--warmup", "20", "--retries", "0",
                "--allow-unconverged"]

    full = run_to_end(args(tmp_path / "ref"), timeout=600)
    reference = pd.read_csv(tmp_path / "ref" / "runs.csv")
    out = tmp_path / "killed"
    rng = np.random.default_rng(10)
    for delay in rng.uniform(0.3, 0.9, size=1) * full:
        kill_after(args(out), delay)
        for f in visible_files(out):
            if f.endswith(".json"):
                json.loads((out / f).read_text())
            elif f == "runs.csv":
                load_runs(out / f)
            elif f.endswith(".nc"):
                Posterior.load(out / f)
    run_to_end(args(out), timeout=600)
    assert not list(out.rglob(".*.tmp")), "a resumed loop cleans up the killed one's temporaries"
    same_rows(pd.read_csv(out / "runs.csv"), reference)
    logs = sorted((out / "rounds").glob("round-*[0-9].json"))
    ref_logs = sorted((tmp_path / "ref" / "rounds").glob("round-*[0-9].json"))
    assert [p.name for p in logs] == [p.name for p in ref_logs]
    # --retries 0 reached the loop: no round sampled longer, though none converged.
    assert [json.loads(p.read_text())["longer_refits"] for p in ref_logs] == [0, 0]
