"""The PyMC back end builds the same model as the NumPyro one and samples the same posterior."""

from __future__ import annotations

import functools
import sys

import arviz as az
import jax
import numpy as np
import pandas as pd
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density

from bayes_transfer import simulate
from bayes_transfer.inference import Posterior, fit
from bayes_transfer.model import hierarchical_model, model_data, select_rows, site_dims
from bayes_transfer.pymc_backend import PYTENSOR_XP, pymc_model, sample_pymc
from bayes_transfer.spec import load_spec

SPECS = ["transfer-gap", "transfer-gap-size", "chinchilla", "effective-data", "centred-gap",
         "partly-centred-gap", "factor-gap", "auto-centred-gap", "robust-gap",
         "robust-partly-centred-gap"]


def _spec(spec_name: str):
    if spec_name in ("centred-gap", "partly-centred-gap"):  # params.G.centered
        d = load_spec("transfer-gap").to_dict()
        d["params"]["G"]["centered"] = True
        return load_spec(d)
    if spec_name == "auto-centred-gap":  # params.G.centered = "auto": decided per pair
        d = load_spec("transfer-gap").to_dict()
        d["params"]["G"]["centered"] = "auto"
        return load_spec(d)
    if spec_name.startswith("robust-"):  # params.G.residual_nu: Student-t pair residuals
        base = spec_name.removeprefix("robust-")
        d = _spec("transfer-gap" if base == "gap" else base).to_dict()
        d["params"]["G"]["residual_nu"] = 3.0
        return load_spec(d)
    if spec_name == "factor-gap":  # params.G.factors: a rank-2 pair interaction
        d = load_spec("transfer-gap").to_dict()
        d["params"]["G"]["factors"] = 2
        return load_spec(d)
    return load_spec(spec_name)


def _design(spec_name: str) -> pd.DataFrame:
    if spec_name == "chinchilla":
        return simulate.design_grid(["x"], ["x"], params=[1e5, 1e7],
                                    pretrain_tokens=[1e6, 1e8], finetune_tokens=[0])
    transfer = simulate.design_grid(["a", "b"], ["x", "y"], params=[1e5, 1e7],
                                    pretrain_tokens=[1e6, 1e8], finetune_tokens=[1e4, 1e6])
    scratch = simulate.design_grid(["x", "y"], ["x", "y"], params=[1e5, 1e7],
                                   pretrain_tokens=[1e6, 1e8], finetune_tokens=[0])
    scratch = scratch[scratch["source"] == scratch["target"]]
    spec_name = spec_name.removeprefix("robust-")
    if spec_name == "partly-centred-gap":  # pair b->y has no rows: partially centred G
        transfer = transfer[(transfer["source"] != "b") | (transfer["target"] != "y")]
    if spec_name == "auto-centred-gap":  # a->x keeps 3 rows (non-centred), the rest 8
        few = ((transfer["source"] == "a") & (transfer["target"] == "x")).to_numpy()
        transfer = transfer[~few | (np.cumsum(few) <= 3)]
    return pd.concat([transfer, scratch], ignore_index=True)


@functools.cache  # one model per spec for the whole module
def _model_pair(spec_name: str):
    spec = _spec(spec_name)
    table, _ = select_rows(spec, simulate.simulate(spec, _design(spec_name), seed=1).runs)
    return spec, table, model_data(spec, table), pymc_model(spec, table)


@pytest.mark.parametrize("spec_name", SPECS)
def test_same_variables_and_dims(spec_name):
    spec, _, data, model = _model_pair(spec_name)
    trace = handlers.trace(handlers.seed(hierarchical_model, 0)).get_trace(data)
    numpyro_sites = {k for k, s in trace.items() if s["type"] in ("sample", "deterministic")}
    assert set(model.named_vars) == numpyro_sites
    dims = {k: list(v) for k, v in model.named_vars_to_dims.items()}
    expected = {k: v for k, v in site_dims(spec).items() if v and k in numpyro_sites}
    assert dims == expected


def _assert_same_log_density(model, data, seeds: int) -> None:
    """The joint log density (constrained space, no Jacobian) of the PyMC ``model`` and
    of the NumPyro model on ``data`` agree at ``seeds`` random points of the prior."""
    logp = model.compile_logp(jacobian=False, mode="FAST_COMPILE")
    for seed in range(seeds):
        trace = handlers.trace(handlers.seed(hierarchical_model, jax.random.key(seed))) \
            .get_trace(data)
        params = {k: s["value"] for k, s in trace.items()
                  if s["type"] == "sample" and not s["is_observed"]}
        expected, _ = log_density(hierarchical_model, (data,), {}, params)
        point = {}
        for rv in model.free_RVs:
            name = model.rvs_to_values[rv].name
            value = np.asarray(params[rv.name], dtype=np.float64)
            point[name] = np.log(value) if name.endswith("_log__") else value
        # NumPyro runs in float32; PyMC in float64.
        assert float(logp(point)) == pytest.approx(float(expected), rel=1e-5, abs=1e-3)


@pytest.mark.parametrize("spec_name", SPECS)
def test_same_log_density(spec_name):
    # The strongest check that the two models are one: the joint log density (constrained
    # space, no Jacobian) agrees at random points of the prior, for every bundled law.
    _, _, data, model = _model_pair(spec_name)
    _assert_same_log_density(model, data, seeds=3)


@pytest.mark.parametrize("spec_name", ["transfer-gap", "transfer-gap-size", "factor-gap"])
def test_same_model_when_a_cold_fit_centres_some_groups(spec_name):
    """centring="mode" samples some groups of non-centred parameters centred: both back
    ends build that model alike (variables, dims of the law's values, log density)."""
    import dataclasses

    spec, table, data, _ = _model_pair(spec_name)
    centre = {p.name: np.arange(data.has_rows(p.level).size) % 2 == 0
              for p in spec.params.values() if p.pooling != "none" and not p.centered}
    assert centre
    data = dataclasses.replace(data, centre=centre)
    model = pymc_model(spec, table, centre=centre)
    trace = handlers.trace(handlers.seed(hierarchical_model, 0)).get_trace(data)
    sites = {k for k, s in trace.items() if s["type"] in ("sample", "deterministic")}
    assert set(model.named_vars) == sites
    assert all(f"{n}_pc_{spec.params[n].level}" in sites for n in centre)
    _assert_same_log_density(model, data, seeds=2)


def test_sample_pymc_centres_from_the_mode_and_returns_the_specs_sites():
    spec, table, _, _ = _model_pair("transfer-gap")
    as_spec = sample_pymc(spec, table, chains=1, warmup=20, draws=20, progress=False,
                          centring="spec")
    by_mode = sample_pymc(spec, table, chains=1, warmup=20, draws=20, progress=False,
                          centring="mode")
    assert set(by_mode.posterior.data_vars) == set(as_spec.posterior.data_vars)
    assert by_mode.posterior["G_z_pair"].dims == as_spec.posterior["G_z_pair"].dims
    import json

    assert json.loads(as_spec.posterior.attrs["centred_groups"]) == {}
    assert any(any(v) for v in json.loads(by_mode.posterior.attrs["centred_groups"]).values())


def test_logaddexp_is_stable():
    import pytensor
    import pytensor.tensor as pt

    a, b = pt.dvector("a"), pt.dvector("b")
    out = PYTENSOR_XP.logaddexp(a, b)
    f = pytensor.function([a, b], [out, pytensor.grad(out.sum(), a)], mode="FAST_COMPILE")
    x = np.array([-1000.0, 0.0, 800.0, -np.inf, -np.inf])
    y = np.array([-1001.0, 1.0, 800.0, 2.0, -np.inf])
    value, grad = f(x, y)
    np.testing.assert_allclose(value, np.logaddexp(x, y))
    # d/da log(e^a + e^b) = sigmoid(a - b): finite where log(exp(a) + exp(b)) is 0/0.
    np.testing.assert_allclose(grad[:4], 1 / (1 + np.exp(y[:4] - x[:4])))


def test_sample_pymc_gives_stats_for_diagnostics_and_caps_trees():
    spec, table, _, _ = _model_pair("transfer-gap")
    idata = sample_pymc(spec, table, chains=1, warmup=20, draws=20, max_tree_depth=2,
                        progress=False)
    stats = idata.sample_stats
    assert {"diverging", "energy", "lp"} <= set(stats.data_vars)
    assert int(stats["n_steps"].max()) <= 2**2 - 1
    assert (stats["reached_max_treedepth"] == (stats["n_steps"] == 3)).all()
    assert set(idata.posterior.data_vars) == set(_model_pair("transfer-gap")[3].named_vars) \
        - {"log_loss"}


def test_bad_sampler_names_the_choices(monkeypatch):
    spec, table, _, _ = _model_pair("transfer-gap")
    with pytest.raises(ValueError, match="'pymc' or 'nutpie'"):
        sample_pymc(spec, table, nuts_sampler="stan")
    monkeypatch.setitem(sys.modules, "nutpie", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install nutpie"):
        sample_pymc(spec, table, nuts_sampler="nutpie")


# ---- both samplers on the same data -------------------------------------------------

# Both back ends run this model at the maximum tree depth (~1,000 leapfrog steps a draw),
# so each draw is nearly independent. 2 x 400 draws gave bulk ESS 408 and 511 on
# 2026-12-05 (morning) but 207 on PyMC's log_A the same evening with the packages pip
# resolved then (pymc 5.28.5, pytensor 2.38.3): 2 x 600 gave 386 (PyMC) and 643 (NumPyro).
CHAINS, WARMUP, DRAWS = 2, 300, 600


@pytest.fixture(scope="module")
def fits():
    design = simulate.design_grid(["a", "b", "c"], ["x", "y"], params=[1e6],
                                  pretrain_tokens=[1e6, 1e7, 1e8],
                                  finetune_tokens=[1e4, 1e5, 1e6])
    runs = simulate.simulate("transfer-gap", design, seed=0).runs  # 54 rows, 6 pairs
    kw = dict(chains=CHAINS, warmup=WARMUP, draws=DRAWS, seed=1, progress=False)
    return {b: fit(runs, "transfer-gap", backend=b, **kw) for b in ("numpyro", "pymc")}


@pytest.mark.slow
def test_posteriors_agree(fits):
    numpyro_post, pymc_post = fits["numpyro"].idata.posterior, fits["pymc"].idata.posterior
    names = [f"log_{p}" for p in fits["numpyro"].spec.params] + ["sigma"]
    for post in fits.values():  # both converged on what is compared (not every z site)
        assert int(post.idata.sample_stats["diverging"].sum()) == 0
        assert float(az.rhat(post.idata, var_names=names).to_array().max()) < 1.02
        assert float(az.ess(post.idata, var_names=names).to_array().min()) > 300
    for name in names:
        a = numpyro_post[name].stack(sample=("chain", "draw"))
        b = pymc_post[name].stack(sample=("chain", "draw"))
        sd = np.sqrt((a.var("sample") + b.var("sample")) / 2)
        # With >= 300 effective draws per back end the Monte Carlo error of the difference
        # of two medians is <= 0.1 sd, so 0.3 sd fails only for a real difference.
        diff = np.abs(a.median("sample") - b.median("sample")) / sd
        print(name, "max |median difference| / sd:", round(float(diff.max()), 3))
        assert float(diff.max()) < 0.3, f"{name}: medians differ by {diff.values} sd"


@pytest.mark.slow
def test_same_inference_data_layout(fits):
    a, b = fits["numpyro"].idata, fits["pymc"].idata
    assert set(a.posterior.data_vars) == set(b.posterior.data_vars)
    for name in a.posterior.data_vars:
        assert a.posterior[name].dims == b.posterior[name].dims, name
    for coord in ("source", "target", "pair", "pair_source", "pair_target", "pair_observed"):
        np.testing.assert_array_equal(a.posterior[coord].values, b.posterior[coord].values)
    assert {"diverging", "energy", "lp"} <= set(b.sample_stats.data_vars)
    assert b.posterior.attrs["backend"] == "pymc"


@pytest.mark.slow
def test_pymc_posterior_reports_predicts_and_round_trips(fits, tmp_path):
    post = fits["pymc"]
    gaps = post.gap_table(ci=0.9)
    assert len(gaps) == 6 and (gaps["lower"] < gaps["upper"]).all()
    rows = post.runs.df.head(3)
    pred = post.predict(rows, ci=0.9)
    assert (pred["loss_lower"] < pred["loss_upper"]).all()
    loaded = Posterior.load(post.save(tmp_path / "pymc.nc"))
    assert loaded.idata.posterior.attrs["backend"] == "pymc"
    pd.testing.assert_frame_equal(loaded.gap_table(ci=0.9), gaps)
