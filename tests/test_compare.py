"""Model comparison: the log_likelihood group, bt.compare (PSIS-LOO) and the CLI command.

The ranking tests fit two laws to a table simulated from one of them: the transfer-gap law
(a gap per pair, no model-size term) and the Chinchilla law (one curve in N and p + f for
all pairs). Each must win on its own data, so neither test passes by a law always winning.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import arviz as az
import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

import bayes_transfer as bt
from bayes_transfer.cli import app
from bayes_transfer.comparison import add_log_likelihood, log_likelihood
from bayes_transfer.diagnostics import SamplingWarning
from bayes_transfer.inference import fit
from bayes_transfer.simulate import design_grid, simulate, typical_truth

LAWS = ("transfer-gap", "chinchilla")
TRUTHS = {
    "transfer-gap": typical_truth("transfer-gap", group_sd=0.3, sigma=0.03),
    "chinchilla": {"sigma": 0.03, "log_E": 0.4, "log_A": 0.0, "log_alpha": -1.0,
                   "log_B": 0.3, "log_beta": -1.2},
}


def _fits(true_law: str) -> dict[str, bt.Posterior]:
    """Both laws fitted to 32 rows simulated from ``true_law`` (losses of 1.4-4 nats)."""
    design = design_grid(["a", "b"], ["x", "y"], params=[1e6, 4e6],
                         pretrain_tokens=[2e4, 2e5], finetune_tokens=[4e3, 4e4])
    sim = simulate(true_law, design, seed=1, truth=TRUTHS[true_law])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        return {law: fit(sim.runs, law, chains=2, draws=150, warmup=150, seed=0,
                         max_tree_depth=6, progress=False) for law in LAWS}


@pytest.fixture(scope="module")
def gap_data_fits():
    return _fits("transfer-gap")


def test_bt_compare_is_the_function():
    import bayes_transfer.comparison  # noqa: F401  (a submodule must not shadow it)

    assert callable(bt.compare) and bt.compare.__module__ == "bayes_transfer.comparison"


def _copy(post):
    # The session's posterior is shared: give each test its own InferenceData.
    return replace(post, idata=post.idata.copy())


def test_log_likelihood_is_the_likelihood_of_each_row_under_each_draw(tiny_posterior):
    post = tiny_posterior
    ll = log_likelihood(post)
    n_chain, n_draw = post.idata.posterior.sizes["chain"], post.idata.posterior.sizes["draw"]
    assert ll.dims == ("chain", "draw", "row") and ll.name == "log_loss"
    assert ll.shape == (n_chain, n_draw, len(post.runs))
    # By hand, through another path: the law's mean at the rows (predict_draws) and the
    # spec's Student-t on the log loss with the draw's sigma.
    df = post.runs.df
    mean = post.predict_draws(post.runs, kind="mean")
    sigma = post.idata.posterior["sigma"].values.reshape(-1, 1)
    se = (df["loss_se"] / df["loss"]).to_numpy() if post.spec.likelihood.use_loss_se else 0
    expected = stats.t.logpdf(np.log(df["loss"].to_numpy()), post.spec.likelihood.nu,
                              loc=np.log(mean), scale=np.sqrt(sigma**2 + se**2))
    np.testing.assert_allclose(ll.values.reshape(expected.shape), expected, atol=2e-3)
    # Chain-major, as the posterior: the first draws are chain 0's.
    np.testing.assert_allclose(ll.values[1, 0], expected[n_draw], atol=2e-3)


def test_add_log_likelihood_makes_arviz_loo_and_waic_work(tiny_posterior):
    post = add_log_likelihood(_copy(tiny_posterior))
    assert "log_likelihood" in post.idata.groups()
    assert list(post.idata.log_likelihood.data_vars) == ["log_loss"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a tiny fit: Pareto k may warn
        loo = az.loo(post.idata, pointwise=True)
        waic = az.waic(post.idata)
    assert loo.n_data_points == len(post.runs) and np.isfinite(loo.elpd_loo)
    assert np.isfinite(waic.elpd_waic)
    assert "log_likelihood" not in tiny_posterior.idata.groups()  # the copy, not the original


def test_compare_refuses_posteriors_of_different_rows(tiny_posterior):
    post = tiny_posterior
    fewer = replace(post, runs=post.runs.subset(np.arange(len(post.runs)) > 0))
    with pytest.raises(ValueError, match="not fitted to the same rows"):
        bt.compare({"all": _copy(post), "fewer": fewer})
    with pytest.raises(ValueError, match="at least two"):
        bt.compare({"one": post})


def test_compare_reports_pareto_k_per_posterior(tiny_posterior):
    # Two copies of one short fit: equal elpd, and Pareto k flags exactly where ArviZ does.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        table = bt.compare({"a": _copy(tiny_posterior), "b": _copy(tiny_posterior)})
    assert table["elpd_diff"].max() == pytest.approx(0.0, abs=1e-9)
    assert list(table["warning"]) == list(table["n_bad_k"] > 0)
    assert (table["pareto_k_max"] > 0).all()
    flagged = [w for w in caught if "PSIS-LOO is unreliable" in str(w.message)]
    assert len(flagged) == int(table["n_bad_k"].sum() > 0)
    if flagged:
        assert flagged[0].filename == __file__  # points at the caller's line


def _assert_ranks_first(table, winner: str, loser: str) -> None:
    assert list(table.index) == [winner, loser], table
    assert table.loc[winner, "rank"] == 0
    # Not a toss-up: the loser is several standard errors of the difference behind.
    assert table.loc[loser, "elpd_diff"] > 3 * table.loc[loser, "dse"], table
    assert {"pareto_k_max", "n_bad_k", "warning", "weight"} <= set(table.columns)


def test_the_true_law_ranks_first_on_its_own_data(gap_data_fits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto-k notes on short chains
        table = bt.compare(gap_data_fits)
    _assert_ranks_first(table, "transfer-gap", "chinchilla")
    # The posteriors are left as they were (saved, they keep the groups a file holds).
    assert all("log_likelihood" not in p.idata.groups() for p in gap_data_fits.values())


def test_az_compare_ranks_three_laws_fitted_to_one_table(gap_data_fits):
    """ArviZ's own az.compare on three shipped laws, and bt.compare agreeing with it."""
    posts = dict(gap_data_fits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        posts["transfer-gap-size"] = fit(posts["transfer-gap"].runs, "transfer-gap-size",
                                         chains=2, draws=150, warmup=150, seed=0,
                                         max_tree_depth=6, progress=False)
    idatas = {law: add_log_likelihood(_copy(post)).idata for law, post in posts.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto-k notes on short chains
        table = az.compare(idatas, ic="loo")
        ours = bt.compare(posts)
    assert sorted(table.index) == sorted(posts) and list(table["rank"]) == [0, 1, 2]
    assert table["weight"].sum() == pytest.approx(1.0)
    # The law the data came from beats the Chinchilla law (one curve for every pair).
    assert table.index.get_loc("transfer-gap") < table.index.get_loc("chinchilla"), table
    # bt.compare is az.compare plus the Pareto-k columns: same order, same elpd.
    assert list(ours.index) == list(table.index)
    np.testing.assert_allclose(ours["elpd_loo"], table["elpd_loo"], rtol=1e-6)


@pytest.mark.slow
def test_the_other_law_ranks_first_on_its_data():
    # The same two laws, data from the other one: the ranking follows the data.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = bt.compare(_fits("chinchilla"))
    _assert_ranks_first(table, "chinchilla", "transfer-gap")


def test_compare_command_ranks_saved_posteriors(gap_data_fits, tmp_path):
    paths = []
    for law, post in gap_data_fits.items():
        paths.append(tmp_path / f"{law}.nc")
        post.save(paths[-1])
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(paths[1]), str(paths[0]), "--format", "json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert [r["model"] for r in body["rows"]] == ["transfer-gap", "chinchilla"]
    assert body["ic"] == "loo" and {"elpd_loo", "n_bad_k"} <= set(body["rows"][0])

    result = runner.invoke(app, ["compare", *map(str, paths), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("model,rank,elpd_loo")

    result = runner.invoke(app, ["compare", *map(str, paths)], terminal_width=200)
    assert result.exit_code == 0 and "PSIS-LOO comparison" in result.output


def test_compare_command_names_a_bad_file(tmp_path, gap_data_fits):
    good = tmp_path / "good.nc"
    gap_data_fits["chinchilla"].save(good)
    bad = tmp_path / "bad.nc"
    bad.write_text("not a posterior")
    result = CliRunner().invoke(app, ["compare", str(good), str(bad)])
    assert result.exit_code == 1 and "bad.nc" in result.output
    result = CliRunner().invoke(app, ["compare", str(good)])
    assert result.exit_code == 1 and "at least two" in result.output
