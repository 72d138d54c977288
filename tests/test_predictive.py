"""Predictive groups (prior, prior_predictive, posterior_predictive, predictions), the
posterior predictive check (``ppc``, plot kinds ppc and loo-pit) and their file format.

One tiny NumPyro fit (with prior draws) and the session's ``tiny_posterior``; the rest
runs on posteriors with known draws (no sampler).
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import arviz as az
import numpy as np
import pytest
from _posteriors import TRUTH, known_posterior, simulated
from PIL import Image
from scipy import stats
from typer.testing import CliRunner

from bayes_transfer import plots, predictive, simulate
from bayes_transfer.cli import app
from bayes_transfer.comparison import add_log_likelihood
from bayes_transfer.inference import Posterior, PosteriorFileError
from bayes_transfer.posterior_file import read_posterior

ROWS_COLS = ["source", "target", "params", "pretrain_tokens", "finetune_tokens"]


@pytest.fixture(scope="module")
def prior_fit(tiny_sim, tmp_path_factory):
    """``bayes-transfer fit --prior-draws 120``, saved and loaded (too short to trust)."""
    d = tmp_path_factory.mktemp("prior-fit")
    tiny_sim.runs.df.to_csv(d / "runs.csv", index=False)
    result = CliRunner().invoke(app, [
        "fit", str(d / "runs.csv"), "--spec", "transfer-gap", "--out", str(d / "post.nc"),
        "--chains", "1", "--draws", "30", "--warmup", "30", "--max-tree-depth", "3",
        "--seed", "1", "--prior-draws", "120", "--no-progress"])
    assert result.exit_code == 0, result.output
    return Posterior.load(d / "post.nc")


@pytest.fixture(scope="module")
def known():
    """A posterior that has learned the truth (known draws); its rows have loss_se."""
    return known_posterior(simulated("transfer-gap-size"), spread=0.003)


def _copy(post):
    return dataclasses.replace(post, idata=post.idata.copy())


def test_a_fit_has_a_posterior_predictive_matching_observed_data(tiny_posterior):
    idata = tiny_posterior.idata
    assert "prior" not in idata.groups() and "prior_predictive" not in idata.groups()
    pp = idata.posterior_predictive["log_loss"]
    assert pp.dims == ("chain", "draw", "row")
    assert (pp.sizes["chain"], pp.sizes["draw"]) == (idata.posterior.sizes["chain"],
                                                     idata.posterior.sizes["draw"])
    np.testing.assert_array_equal(pp["row"].values, idata.observed_data["row"].values)
    assert np.isfinite(pp.values).all()
    # Replicates centre on the data: each row's observed log loss is inside the range of
    # its 200 replicates (a short fit, but not a wrong one).
    obs = idata.observed_data["log_loss"].values
    flat = pp.values.reshape(-1, obs.size)
    assert ((obs > flat.min(axis=0)) & (obs < flat.max(axis=0))).mean() >= 0.9


def test_prior_groups_when_asked_for(prior_fit):
    idata = prior_fit.idata
    prior, pp = idata.prior, idata.prior_predictive
    assert (prior.sizes["chain"], prior.sizes["draw"]) == (1, 120)
    assert pp["log_loss"].dims == ("chain", "draw", "row")
    assert pp.sizes["row"] == len(prior_fit.runs)
    for name in ("sigma", "G_mu", "log_G"):
        assert name in prior
    assert prior["log_G"].dims == ("chain", "draw", "pair")
    # The law's parameters by name on the natural scale, as in the posterior.
    for name in prior_fit.spec.params:
        assert prior[name].dims == idata.posterior[name].dims, name
    g = prior["G"].stack(pair=("source", "target")).transpose("chain", "draw", "pair")
    np.testing.assert_allclose(g.values, np.exp(prior["log_G"].values), rtol=1e-6)
    # The prior is the spec's: sigma ~ HalfNormal(scale), whose median is 0.674 scale.
    scale = prior_fit.spec.likelihood.sigma
    assert 0.45 * scale < float(prior["sigma"].median()) < 0.95 * scale
    # Replicated tables: a log loss per draw and row, varying from draw to draw.
    assert np.isfinite(pp["log_loss"].values).all()
    assert float(pp["log_loss"].std(("chain", "draw")).min()) > 0


def test_posterior_predictive_noise_is_the_likelihood_with_loss_se():
    """Standardised by the model's scale sqrt(sigma^2 + (se/loss)^2), replicates minus
    the law's mean are Student-t(nu): the row's loss_se is in the noise."""
    design = simulate.design_grid(["web", "code"], ["math"], params=[1e5, 1e6],
                                  pretrain_tokens=[1e6, 1e8], finetune_tokens=[1e4, 1e6])
    sim = simulate.simulate("transfer-gap-size", design, seed=2, truth=TRUTH, loss_se=1.0)
    post = known_posterior(sim, spread=0.02)
    pp = predictive.posterior_predictive(post, seed=3)
    log_mean = np.log(post.predict_draws(post.runs, kind="mean"))
    df = post.runs.df
    se = (df["loss_se"] / df["loss"]).to_numpy()
    sigma = post.idata.posterior["sigma"].values.reshape(-1, 1)
    resid = pp.values.reshape(log_mean.shape) - log_mean
    t = stats.t(post.spec.likelihood.nu).cdf
    assert stats.kstest((resid / np.sqrt(sigma**2 + se**2)).ravel()[::5], t).pvalue > 1e-3
    # Without the rows' loss_se the same replicates are far too wide for sigma alone.
    assert stats.kstest((resid / sigma).ravel()[::5], t).pvalue < 1e-6


def test_arviz_ppc_and_loo_pit_work_on_a_fit(tiny_posterior):
    post = add_log_likelihood(_copy(tiny_posterior))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        az.plot_ppc(post.idata, num_pp_samples=20, random_seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pareto k of a short fit
            az.plot_loo_pit(post.idata, y="log_loss")
            pit = az.loo_pit(post.idata, y="log_loss")
    finally:
        plt.close("all")
    assert pit.shape == (len(post.runs),) and np.all((pit >= 0) & (pit <= 1))
    # One label per row in every group, so xarray arithmetic between groups aligns.
    residual = post.idata.log_likelihood["log_loss"] - post.idata.observed_data["log_loss"]
    assert residual.sizes["row"] == len(post.runs)


def test_ppc_check_numbers(known):
    check = predictive.ppc_check(known, ci=0.9)
    assert check["rows"] == len(known.runs) and check["ci"] == 0.9
    # The known posterior's draws are the truth's: calibrated.
    assert 0.75 <= check["coverage"] <= 1.0
    assert 0.0 <= check["loo_pit_ks"] <= 1.0 and 0.0 <= check["loo_pit_ks_pvalue"] <= 1.0
    # A posterior whose noise is ten times too small (and blind to loss_se) covers far
    # fewer rows, and its LOO-PIT is far from uniform.
    spec = known.spec
    narrow = dataclasses.replace(_copy(known), spec=dataclasses.replace(
        spec, likelihood=dataclasses.replace(spec.likelihood, use_loss_se=False)))
    narrow.idata.posterior["sigma"] = narrow.idata.posterior["sigma"] / 10
    bad = predictive.ppc_check(narrow, ci=0.9)
    assert bad["coverage"] < 0.5 < check["coverage"]
    assert bad["loo_pit_ks"] > check["loo_pit_ks"]


def test_plot_kinds_ppc_and_loo_pit(known):
    assert {"ppc", "loo-pit"} <= set(plots.KINDS)
    for fig in (plots.plot_ppc(known), plots.plot_loo_pit(known)):
        assert fig.get_size_inches().tolist() == list(plots.FIGSIZE)
        assert len(fig.axes) >= 2
    assert "posterior_predictive" not in known.idata.groups()  # computed, not stored


def test_predictions_group_keeps_chain_and_draw(known):
    post = _copy(known)
    rows = post.runs.df[ROWS_COLS].head(6).reset_index(drop=True)
    df = post.predict(rows, kind="response", ci=0.8, seed=5, inplace=True)
    pred = post.idata.predictions
    assert pred.attrs["kind"] == "response" and list(pred.data_vars) == ["loss"]
    assert pred["loss"].dims == ("chain", "draw", "row")
    assert (pred.sizes["chain"], pred.sizes["draw"], pred.sizes["row"]) == (2, 300, 6)
    q = pred["loss"].quantile([0.1, 0.5, 0.9], dim=("chain", "draw")).values.T
    # Chains stacked chain-major, as the posterior's: chain 1's first draw is draw 300.
    draws = post.predict_draws(rows, kind="observation", seed=5)
    np.testing.assert_array_equal(pred["loss"].values[1, 0], draws[300])
    np.testing.assert_allclose(q, df[["loss_lower", "loss_median", "loss_upper"]], rtol=1e-12)
    const = post.idata.predictions_constant_data
    assert list(const["run_source"].values) == list(rows["source"])
    assert "run_loss" not in const  # the rows had none: no placeholder stored
    # MCSE and R-hat of predictions.
    summary = az.summary(post.idata.predictions, kind="diagnostics")
    assert {"mcse_mean", "r_hat"} <= set(summary.columns) and len(summary) == 6
    # The old names are aliases; response_params replaces the group with loss_mean.
    same = post.predict(rows, kind="observation", ci=0.8, seed=5)
    np.testing.assert_array_equal(same["loss_median"], df["loss_median"])
    mean = post.predict(rows, kind="response_params", inplace=True)
    assert list(post.idata.predictions.data_vars) == ["loss_mean"]
    np.testing.assert_array_equal(mean["loss_median"], post.predict(rows)["loss_median"])
    # A copy, leaving the posterior as it is.
    other = predictive.predictions(known, rows, kind="response_params")
    assert {"predictions", "predictions_constant_data"} <= set(other.groups())
    assert "predictions" not in known.idata.groups()
    with pytest.raises(ValueError, match="response_params"):
        post.predict(rows, kind="mu")


@pytest.fixture(scope="module")
def every_group(prior_fit):
    """The prior fit with every optional group: log_likelihood, predictions at 3 rows."""
    post = add_log_likelihood(_copy(prior_fit))
    rows = post.runs.df[ROWS_COLS].head(3).reset_index(drop=True)
    post.predict(rows, kind="response", inplace=True)
    return post


def test_every_group_survives_save_and_load(every_group, tmp_path):
    post = every_group
    loaded = Posterior.load(post.save(tmp_path / "all.nc"))
    groups = ("posterior", "posterior_predictive", "prior", "prior_predictive",
              "log_likelihood", "predictions", "predictions_constant_data", "observed_data")
    for group in groups:
        assert group in loaded.idata.groups(), group
        for name, da in post.idata[group].data_vars.items():
            np.testing.assert_array_equal(loaded.idata[group][name].values, da.values)
    # What ArviZ reads from them works on the loaded file.
    assert az.loo(loaded.idata, var_name="log_loss").n_data_points == len(post.runs)


def _tamper(post, tmp_path, change):
    """``post``'s InferenceData changed by ``change``, written as it is (no checks)."""
    idata = post.idata.copy()
    change(idata)
    path = tmp_path / "tampered.nc"
    idata.to_netcdf(str(path), engine="h5netcdf")
    return path


@pytest.mark.parametrize("change, message", [
    (lambda i: i.posterior_predictive.__setitem__(
        "log_loss", i.posterior_predictive["log_loss"].astype(np.int64)), "dtype int64"),
    (lambda i: setattr(i, "posterior_predictive", i.posterior_predictive.isel(draw=[0, 1])),
     "2 draws, not"),
    (lambda i: setattr(i, "posterior_predictive", i.posterior_predictive.isel(row=[0])),
     "1 rows, not"),
    (lambda i: setattr(i, "log_likelihood", i.posterior_predictive.rename(row="pair")),
     "expected (chain, draw, row)"),
    (lambda i: setattr(i, "prior_predictive", i.prior_predictive.isel(draw=[0])),
     "1 draws, not 120"),
    (lambda i: i.prior.__setitem__("bad", i.prior["sigma"].expand_dims(knot=2)),
     "prior variable bad has dims"),
    (lambda i: i.__delitem__("predictions_constant_data"), "come together"),
    (lambda i: setattr(i, "predictions", i.predictions.isel(row=[0])), "1 rows, not 3"),
    (lambda i: i.predictions_constant_data.__setitem__(
        "code", i.predictions_constant_data["run_params"]), "not a run-table column"),
    (lambda i: setattr(i, "posterior_predictive", i.posterior_predictive.assign_coords(
        extra=("row", np.zeros(i.posterior_predictive.sizes["row"])))),
     "unexpected posterior_predictive coordinate extra"),
])
def test_damaged_predictive_groups_are_refused(every_group, tmp_path, change, message):
    with pytest.raises(PosteriorFileError, match=message.replace("(", r"\(").replace(
            ")", r"\)")):
        read_posterior(_tamper(every_group, tmp_path, change))


def _cli(*args):
    return CliRunner().invoke(app, [*map(str, args)])


def test_ppc_command_writes_a_png_and_json(known, tmp_path):
    path = known.save(tmp_path / "post.nc")
    result = _cli("ppc", path, "--out", tmp_path / "ppc.png", "--kind", "loo-pit",
                  "--format", "json")
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout)
    assert check["posterior"] == str(path) and check["rows"] == len(known.runs)
    assert 0 <= check["coverage"] <= 1 and "loo_pit_ks_pvalue" in check
    with Image.open(tmp_path / "ppc.png") as img:
        assert img.format == "PNG" and img.size == (1000, 650)
    table = _cli("ppc", path)
    assert table.exit_code == 0 and "loo_pit_coverage" in table.stdout
    assert _cli("plot", path, "ppc", "--out", tmp_path / "p.png").exit_code == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    refused = _cli("ppc", path, "--out", tmp_path / "ppc.png")
    assert refused.exit_code == 1 and "--force" in refused.output


def test_the_readme_block_runs(known):
    """The README's predictive block, as written, on a posterior that has what a fit has."""
    import re
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"^```python\n(.*?)^```", readme, flags=re.S | re.M)
              if b.startswith("import arviz as az\nfrom bayes_transfer.comparison")]
    assert len(blocks) == 1
    post = predictive.add_posterior_predictive(_copy(known))
    namespace = {"post": post, "new_rows": post.runs.df[ROWS_COLS].head(2)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pareto k notes
            exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    finally:
        plt.close("all")
    assert post.idata.predictions["loss"].sizes["row"] == 2


@pytest.mark.slow
def test_pymc_prior_is_the_numpyro_prior(known):
    """backend="pymc" draws its prior with pm.sample_prior_predictive: same groups, same
    variables and dims, and the same distribution as NumPyro's Predictive."""
    args = (known.spec, known.runs, known.units)
    ours = predictive.prior_groups(*args, draws=400, seed=0)
    theirs = predictive.prior_groups(*args, draws=400, seed=1, backend="pymc")
    for group in ("prior", "prior_predictive"):
        assert set(ours[group].data_vars) == set(theirs[group].data_vars)
        for name, da in ours[group].data_vars.items():
            assert theirs[group][name].dims == da.dims and theirs[group][name].shape == da.shape
    for group, name in (("prior", "sigma"), ("prior", "G_mu"), ("prior_predictive", "log_loss")):
        # One number per draw (a draw's rows share its parameters: not independent).
        a, b = (g[group][name].values.reshape(400, -1).mean(axis=1) for g in (ours, theirs))
        assert stats.ks_2samp(a, b).pvalue > 1e-3, name
