"""A law's model-size term with one model size in the fitted rows: ``fit`` says so.

Every fitted row at one N makes a term like ``A N^-alpha`` a constant the floor trades
against, so the posterior is a ridge the priors alone decide and NUTS mixes slowly along
it (llm-line below 1e11 tokens: R-hat 2.0-2.3). The fit warns with the cause instead of
leaving the user with an R-hat and "run more draws".
"""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
from typer.testing import CliRunner

from bayes_transfer import UninformedSizeWarning
from bayes_transfer.cli import app
from bayes_transfer.diagnostics import SamplingWarning
from bayes_transfer.extrapolation import uninformed_size_message
from bayes_transfer.inference import fit

QUICK = {"chains": 1, "draws": 20, "warmup": 20, "max_tree_depth": 3, "seed": 0}


def _table(params: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"params": params, "pretrain_tokens": [1e9] * len(params),
                         "finetune_tokens": [0.0] * len(params)})


def test_the_message_names_the_size_and_the_term():
    msg = uninformed_size_message("A N^-alpha", _table([1.7e9, 1.7e9, 1.7e9]))
    assert msg.startswith("every fitted row has params = 1.7e+09: the law's model-size "
                          "term A N^-alpha")
    assert "priors" in msg and "two or more model sizes" in msg


@pytest.mark.parametrize("term, params, warns", [
    (None, [1.7e9, 1.7e9], False),              # a law without a size term: nothing to learn
    ("A N^-alpha", [1.7e9, 4.1e8], False),      # two sizes inform it
    ("A N^-alpha", [1.7e9, 1.7e9, 0.0, float("nan")], True),  # one positive size: warns
])
def test_only_one_positive_size_with_a_size_term_is_uninformed(term, params, warns):
    assert (uninformed_size_message(term, _table(params)) is not None) is warns


def test_fit_warns_for_a_size_term_on_one_size_and_not_without_one(tiny_sim):
    assert tiny_sim.runs.df["params"].nunique() == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        with pytest.warns(UninformedSizeWarning, match="params = 1e\\+06.*K N\\^-gamma"):
            fit(tiny_sim.runs, "transfer-gap-size", **QUICK)
        warnings.simplefilter("error", UninformedSizeWarning)
        fit(tiny_sim.runs, "transfer-gap", **QUICK)  # no size term: no warning


def test_cli_fit_prints_the_cause_once_as_a_warning_line(tiny_sim, tmp_path):
    runs = tmp_path / "runs.csv"
    tiny_sim.runs.df.to_csv(runs, index=False)
    result = CliRunner().invoke(app, [
        "fit", str(runs), "--spec", "transfer-gap-size", "--out", str(tmp_path / "p.nc"),
        "--chains", "1", "--draws", "20", "--warmup", "20", "--max-tree-depth", "3"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: every fitted row has params = 1e+06") == 1, \
        result.stderr
    assert "UninformedSizeWarning" not in result.stderr  # not Python's file:line form


def test_an_internal_fit_on_one_size_does_not_warn_about_the_users_table(tmp_path):
    # Two model sizes in the table, but the discrepancy's internal fit of the rows below
    # its cut in tokens has only the larger model: the warning would be false of the fit
    # the user asked for (llm-line: an inner fit of one size, 22 sizes in the table).
    d = [1e9, 3e9, 1e10, 3e10, 1e11]
    rows = pd.DataFrame({
        "source": "web", "target": "web", "params": [1e8] * 5 + [3e7],
        "pretrain_tokens": d + [1e11], "finetune_tokens": 0.0,
        "loss": [2.0 + 300 * n ** -0.3 + 400 * t ** -0.3
                 for n, t in zip([1e8] * 5 + [3e7], d + [1e11], strict=True)]})
    rows.insert(0, "run_id", [f"r{i}" for i in range(len(rows))])
    spec = tmp_path / "spec.toml"
    spec.write_text('law = "chinchilla"\n[discrepancy]\naxes = ["pretrain_tokens"]\n')
    inner = rows[rows["pretrain_tokens"] < 3e10]
    assert uninformed_size_message("A N^-alpha", inner) is not None
    assert uninformed_size_message("A N^-alpha", rows) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        warnings.simplefilter("error", UninformedSizeWarning)
        post = fit(rows, str(spec), **QUICK)
    assert "disc_tau_pretrain_tokens" in post.idata.posterior
