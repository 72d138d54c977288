"""``bayes-transfer simulate``: plausible default tables, truths with units, coverage check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bayes_transfer.cli import app
from bayes_transfer.simulate import coverage_fractions

MODELS = Path(__file__).resolve().parents[1] / "models"
# Every shipped model spec (the candidates file is not one).
SPECS = sorted(p.stem for p in MODELS.glob("*.toml") if "law =" in p.read_text())


def test_every_shipped_spec_is_found():
    assert {"transfer-gap", "chinchilla", "effective-data"} <= set(SPECS)


@pytest.mark.parametrize("spec", SPECS)
def test_default_tables_have_losses_of_a_few_nats(spec, tmp_path):
    """With the CLI's defaults (grid and truths), every table of every shipped spec holds
    losses of a few nats; drawn from the whole prior they reached thousands."""
    runner = CliRunner()
    for seed in range(2):
        out = tmp_path / f"sim{seed}.csv"
        res = runner.invoke(app, ["simulate", spec, "--out", str(out), "--seed", str(seed)])
        assert res.exit_code == 0, res.output
        loss = pd.read_csv(out)["loss"]
        assert loss.between(0.5, 10).all(), (spec, seed, loss.min(), loss.max())
        assert 1 <= loss.median() <= 5, (spec, seed, loss.median())
    truth = json.loads(out.with_suffix(".truth.json").read_text())
    assert truth["units"] == {"params": 1e6, "tokens": 1e6}  # the default grid's scales
    assert "reference" in truth["params_units"] and truth["drawn"] == "typical"
    assert set(truth["params"]) == set(truth["params_raw"])


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.slow
def test_simulate_fit_check_scores_coverage_and_a_wrong_truth_scores_worse(tmp_path):
    runner = CliRunner()
    sim, post = tmp_path / "sim.csv", tmp_path / "post.nc"
    res = runner.invoke(app, ["simulate", "transfer-gap", "--sources", "web,code",
                              "--targets", "math", "--out", str(sim), "--seed", "3"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["fit", str(sim), "--spec", "transfer-gap", "--out", str(post),
                              "--chains", "2", "--draws", "100", "--warmup", "100",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    truth_path = sim.with_suffix(".truth.json")
    res = runner.invoke(app, ["simulate", "--check", str(post), "--truth", str(truth_path),
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    right = json.loads(res.stdout)
    rows = pd.DataFrame(right["rows"])
    # Every law parameter at every group: 2 pairs x (A, G) + 2 alphas + beta and E.
    assert len(rows) == right["coverage"]["n"] == 8
    assert right["coverage"] == coverage_fractions(rows)
    assert right["coverage"]["90%"] >= 0.6
    # The same file with every true value three times too large.
    truth = json.loads(truth_path.read_text())
    truth["params"] = {name: {g: 3 * v for g, v in groups.items()}
                       for name, groups in truth["params"].items()}
    wrong_path = _write(tmp_path / "wrong.truth.json", truth)
    res = runner.invoke(app, ["simulate", "--check", str(post), "--truth", str(wrong_path),
                              "--format", "json"])
    assert res.exit_code == 0, res.output
    wrong = json.loads(res.stdout)["coverage"]
    assert wrong["90%"] <= right["coverage"]["90%"] - 0.4, (wrong, right["coverage"])
    assert wrong["50%"] < right["coverage"]["50%"]
    table = runner.invoke(app, ["simulate", "--check", str(post), "--truth", str(truth_path)])
    assert table.exit_code == 0 and "of the 90% intervals hold the truth" in table.stdout
    # Truths in other units than the fit's are refused, not scored.
    truth["units"] = {"params": 1.0, "tokens": 1.0}
    res = runner.invoke(app, ["simulate", "--check", str(post), "--truth",
                              str(_write(tmp_path / "units.json", truth))])
    assert res.exit_code == 1 and "units" in res.output
    assert np.all(rows["lower_90"] <= rows["upper_90"])
