"""Commands that print answers from a posterior say so when its fit failed diagnostics.

``report`` lists the problems; ``predict``, ``suggest``, ``advise`` and ``plot`` print
intervals, choices and pictures from the same draws, so each adds one ``warning:`` line
on stderr (stdout stays clean for pipes). Known posteriors: no sampler.
"""

from __future__ import annotations

import io

import pandas as pd
import pytest
from _posteriors import known_posterior, simulated
from typer.testing import CliRunner

from bayes_transfer.cli import app

WORDS = "failed its diagnostics"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("unconverged")
    good = known_posterior(simulated("transfer-gap"), spread=0.1)
    bad = known_posterior(simulated("transfer-gap"), spread=0.1)
    # One chain's gaps apart (the file checks G = exp(log_G)): R-hat far above 1.01.
    bad.idata.posterior["log_G"][0] += 1.0
    if "G" in bad.idata.posterior:
        bad.idata.posterior["G"][0] *= 2.718281828459045
    rows = root / "rows.csv"
    pd.DataFrame({"source": ["web"], "target": ["math"], "params": [1e5],
                  "pretrain_tokens": [1e7], "finetune_tokens": [1e5]}).to_csv(rows,
                                                                            index=False)
    cands = root / "cands.toml"
    cands.write_text("[candidates]\nparams = [1e5]\npretrain_tokens = [1e6, 1e7]\n"
                     "finetune_tokens = [1e5]\n")
    return good.save(root / "good.nc"), bad.save(root / "bad.nc"), rows, cands, root


def _commands(post, rows, cands, root):
    return {
        "predict": ["predict", str(post), "--runs", str(rows)],
        "suggest": ["suggest", str(post), "--candidates", str(cands), "--batch", "1",
                    "--format", "csv"],
        "advise": ["advise", str(post), "--target", "math", "--budget", "1e15"],
        "plot": ["plot", str(post), "forest", "--out", str(root / f"{post.stem}.png"),
                 "--force"],
    }


@pytest.mark.parametrize("command", ["predict", "suggest", "advise", "plot"])
def test_answers_from_an_unconverged_fit_carry_one_warning(files, command):
    good, bad, rows, cands, root = files
    result = CliRunner().invoke(app, _commands(bad, rows, cands, root)[command])
    assert result.exit_code == 0, result.output
    assert result.stderr.count(WORDS) == 1, result.stderr
    assert f"warning: {bad} failed its diagnostics (R-hat max" in result.stderr
    assert f"`bayes-transfer report {bad}`" in result.stderr
    assert WORDS not in result.stdout
    if command == "predict":  # the CSV stays clean for a pipe
        assert len(pd.read_csv(io.StringIO(result.stdout))) == 1
    result = CliRunner().invoke(app, _commands(good, rows, cands, root)[command])
    assert result.exit_code == 0, result.output
    assert WORDS not in result.output
