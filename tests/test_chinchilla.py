"""Reproduction: the Chinchilla law on the Epoch AI replication's data (Besiroglu et al.)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from bayes_transfer.data import read_chinchilla_csv
from bayes_transfer.diagnostics import SamplingWarning

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REPLICATION = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
ORIGINAL = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "chinchilla_svg_extracted.csv").exists(),
                    reason="reference data not present")
def test_chinchilla_replication_values_inside_95_percent_intervals():
    from bayes_transfer.inference import fit

    runs = read_chinchilla_csv(DATA / "chinchilla_svg_extracted.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        post = fit(runs, "chinchilla", chains=2, draws=500, warmup=500, seed=0,
                   progress=False)
    assert post.diagnostics.divergences == 0 and post.diagnostics.max_rhat < 1.05
    # The published values are in raw units (parameters and tokens of 1).
    flat = {name: post.log_param(name, units="raw").values.reshape(-1) for name in REPLICATION}
    for name, value in REPLICATION.items():
        lo, hi = np.exp(np.quantile(flat[name], [0.025, 0.975]))
        print(f"{name}: 95% [{lo:.4g}, {hi:.4g}]  replication {value}  original "
              f"{ORIGINAL[name]}  P(param < original) = "
              f"{(flat[name] < np.log(ORIGINAL[name])).mean():.4f}")
        assert lo <= value <= hi, name
    # The original paper's data exponent and coefficient are far outside.
    for name in ("B", "beta"):
        lo, hi = np.exp(np.quantile(flat[name], [0.025, 0.975]))
        assert not lo <= ORIGINAL[name] <= hi, name


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "chinchilla_svg_extracted.csv").exists(),
                    reason="reference data not present")
def test_chinchilla_through_the_cli(tmp_path):
    """What a new user types: convert, fit, report (raw units, 95%) and predict."""
    import json

    from typer.testing import CliRunner

    from bayes_transfer.cli import app

    runner = CliRunner()
    runs, post = tmp_path / "runs.csv", tmp_path / "post.nc"
    res = runner.invoke(app, ["convert", "chinchilla-svg",
                              str(DATA / "chinchilla_svg_extracted.csv"), "--out", str(runs)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["fit", str(runs), "--spec", "chinchilla", "--out", str(post),
                              "--chains", "2", "--draws", "400", "--warmup", "400",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["report", str(post), "--ci", "0.95", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["param"]: r for r in json.loads(res.stdout)["rows"]}
    for name, value in REPLICATION.items():
        assert rows[name]["lower"] <= value <= rows[name]["upper"], (name, rows[name])
    table = runner.invoke(app, ["report", str(post), "--ci", "0.95"])
    assert "raw units" in table.output
    new = tmp_path / "new.csv"
    new.write_text("source,target,params,pretrain_tokens,finetune_tokens\n"
                   "massivetext,massivetext,70000000000,1400000000000,0\n")
    res = runner.invoke(app, ["predict", str(post), "--runs", str(new), "--format", "json"])
    assert res.exit_code == 0, res.output
    pred = json.loads(res.stdout)["rows"][0]
    # Chinchilla 70B on 1.4T tokens: the replication's point fit says 1.98 nats.
    assert pred["loss_lower"] < 1.98 < pred["loss_upper"], pred

