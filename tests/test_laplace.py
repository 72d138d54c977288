"""The Laplace start of NUTS: the mode, the curvature, the starts, and fits that use it."""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from bayes_transfer.diagnostics import SamplingWarning
from bayes_transfer.inference import LAPLACE_FROM_ROWS, fit
from bayes_transfer.laplace import (
    find_mode,
    hessian_diagonal,
    hessian_diagonal_by_probes,
    laplace_fit,
    laplace_log_mass,
    laplace_start,
    probe_diagonal,
    probe_groups,
)


def test_mode_and_curvature_of_a_quadratic_with_very_different_scales():
    # A narrow and a wide direction, far from the start: what a data-rich posterior is.
    centre = jnp.array([3.0, -2.0, 0.5])
    precision = jnp.array([1e6, 1.0, 25.0])

    def potential(z):
        return 0.5 * jnp.sum(precision * (z - centre) ** 2)

    mode = find_mode(potential, jnp.zeros(3))
    np.testing.assert_allclose(mode, centre, atol=1e-2)
    np.testing.assert_allclose(hessian_diagonal(potential, mode), precision, rtol=1e-4)


@pytest.mark.parametrize("spec_name", ["transfer-gap", "factor-gap", "chinchilla-pairs"])
def test_the_diagonal_by_probes_is_the_diagonal_of_the_models_hessian(tiny_sim, spec_name):
    """One product per site (per column of a factor site) reads the same diagonal as one
    per coordinate, at a random point of the model's unconstrained space."""
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model

    from bayes_transfer.model import hierarchical_model, model_data, select_rows
    from bayes_transfer.spec import load_spec

    if spec_name == "factor-gap":  # a rank-2 interaction: its columns couple
        d = load_spec("transfer-gap").to_dict()
        d["params"]["G"]["factors"] = 2
        spec = load_spec(d)
    else:
        spec = load_spec(spec_name)
    table, _ = select_rows(spec, tiny_sim.runs)
    data = model_data(spec, table)
    info = initialize_model(jax.random.key(1), hierarchical_model, model_args=(data,))
    flat, unravel = ravel_pytree(info.param_info.z)

    def potential(z):
        return info.potential_fn(unravel(z))

    groups, n_groups = probe_groups(info.param_info.z)
    assert n_groups < flat.shape[0]
    exact = hessian_diagonal(potential, flat)
    # The unchecked products themselves, not the checked function (which would return
    # the exact loop's diagonal on a disagreement).
    np.testing.assert_allclose(probe_diagonal(potential, flat, groups, n_groups), exact,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(hessian_diagonal_by_probes(potential, flat, groups, n_groups),
                               exact, rtol=1e-4, atol=1e-4)


def test_probes_that_couple_fall_back_to_the_exact_diagonal():
    # Two coordinates of one site that couple: H @ 1 read at each is H_ii + H_ij, wrong.
    h = jnp.array([[4.0, 1.5], [1.5, 3.0]])

    def potential(z):
        return 0.5 * z @ h @ z

    groups, n_groups = probe_groups({"x": jnp.zeros(2)})
    assert n_groups == 1
    np.testing.assert_allclose(probe_diagonal(potential, jnp.ones(2), groups, n_groups),
                               [5.5, 4.5])  # what the product alone reads
    np.testing.assert_allclose(
        hessian_diagonal_by_probes(potential, jnp.ones(2), groups, n_groups), [4.0, 3.0])


def test_laplace_start_of_a_conjugate_model_matches_its_posterior():
    # y_i ~ N(mu, 1), mu ~ N(0, 10): the posterior of mu is Normal with known mean and sd;
    # log_s ~ N(1, 0.5) with no data is its own Laplace approximation.
    y = np.random.default_rng(0).normal(1.5, 1.0, size=400)

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        numpyro.sample("log_s", dist.Normal(1.0, 0.5))
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    precision = 1 / 100 + len(y)
    post_mean, post_sd = y.sum() / precision, precision**-0.5
    init, variance = laplace_start(model, (jnp.asarray(y),), jax.random.key(0), chains=200)
    assert init["mu"].shape == (200,) and variance.shape == (2,)
    # ravel_pytree orders the sites by name: log_s, then mu.
    np.testing.assert_allclose(np.sqrt(variance), [0.5, post_sd], rtol=0.02)
    # The starts are draws from the approximation: mean and sd within sampling error.
    assert abs(init["mu"].mean() - post_mean) < 4 * post_sd / np.sqrt(200)
    assert 0.8 < init["mu"].std() / post_sd < 1.2
    assert abs(init["log_s"].mean() - 1.0) < 4 * 0.5 / np.sqrt(200)


def test_a_laplace_start_samples_the_same_posterior(tiny_sim):
    def run(init):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SamplingWarning)
            return fit(tiny_sim.runs, "transfer-gap", chains=2, draws=300, warmup=300,
                       seed=2, init=init, progress=False)

    prior, laplace = run("prior"), run("laplace")
    assert json.loads(laplace.idata.posterior.attrs["sampler_settings"])["init"] == "laplace"
    g_prior, g_laplace = (p.gap_table(ci=0.9).reset_index(drop=True) for p in (prior, laplace))
    observed = g_prior["observed"]
    width = (g_prior["upper"] - g_prior["lower"])[observed]
    assert ((g_prior["median"] - g_laplace["median"]).abs()[observed] < width / 3).all()
    assert laplace.diagnostics.divergences < 0.02 * laplace.n_draws


def test_init_auto_picks_by_table_size_and_bad_init_is_refused(tiny_sim):
    assert len(tiny_sim.runs) < LAPLACE_FROM_ROWS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        post = fit(tiny_sim.runs, "transfer-gap", chains=1, draws=10, warmup=10,
                   max_tree_depth=3, progress=False)
    assert json.loads(post.idata.posterior.attrs["sampler_settings"])["init"] == "prior"
    with pytest.raises(ValueError, match="unknown init 'map'"):
        fit(tiny_sim.runs, "transfer-gap", init="map", progress=False)


def _two_modes(heavy: float, light: float, light_sd: float):
    # x: a mixture of a heavy mode at `heavy` (sd 0.3, weight 0.99) and a light one at
    # `light` (weight 0.01), under a nearly flat prior.
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 100.0))
        numpyro.factor("mixture", jnp.logaddexp(
            jnp.log(0.99) + dist.Normal(heavy, 0.3).log_prob(x),
            jnp.log(0.01) + dist.Normal(light, light_sd).log_prob(x)))
    return model


def test_a_mode_search_from_many_starts_finds_the_heavy_mode():
    # From one start (NumPyro's, uniform on [-2, 2]) Adam settles in whichever basin the
    # start lies in: some seeds find the light mode at -3. From 16 starts the heavy mode
    # wins every time.
    model = _two_modes(3.0, -3.0, 0.3)
    one = [float(laplace_fit(model, (), jax.random.key(k), 1).mode["x"]) for k in range(12)]
    many = [float(laplace_fit(model, (), jax.random.key(k), 1, mode_starts=16).mode["x"])
            for k in range(12)]
    assert any(abs(m + 3.0) < 0.05 for m in one), one
    np.testing.assert_allclose(many, 3.0, atol=0.05)


def test_modes_are_ranked_by_mass_not_height():
    # The light mode is a spike: 100x narrower, so taller (0.01 / 0.003 > 0.99 / 0.3) but
    # holding 1% of the mass. Ranked by height the search would start the chains there.
    model = _two_modes(3.0, -1.0, 0.003)
    heights = [float(-jnp.logaddexp(jnp.log(0.99) + dist.Normal(3.0, 0.3).log_prob(x),
                                     jnp.log(0.01) + dist.Normal(-1.0, 0.003).log_prob(x)))
               for x in (3.0, -1.0)]
    assert heights[1] < heights[0]  # the spike's potential is lower: it is the taller
    assert float(laplace_log_mass(jnp.array(heights[1]), jnp.array([0.003**-2]))) < \
        float(laplace_log_mass(jnp.array(heights[0]), jnp.array([0.3**-2])))
    modes = [float(laplace_fit(model, (), jax.random.key(k), 1, mode_starts=32).mode["x"])
             for k in range(4)]
    np.testing.assert_allclose(modes, 3.0, atol=0.05)


def test_mode_starts_come_from_the_spec_and_reach_the_file(tiny_sim):
    from bayes_transfer.sampling import SamplerSettings

    assert SamplerSettings(mode_starts=8).for_rows(10).init == "laplace"
    assert SamplerSettings(mode_starts=8, init="prior").for_rows(10).init == "prior"
    with pytest.raises(ValueError, match="mode_starts must be a whole number between 1"):
        SamplerSettings(mode_starts=0)
    from bayes_transfer.spec import load_spec

    spec = load_spec("transfer-gap").to_dict() | {"sampler": {"mode_starts": 4}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        post = fit(tiny_sim.runs, spec, chains=1, draws=20, warmup=20, progress=False)
    settings = json.loads(post.idata.posterior.attrs["sampler_settings"])
    assert settings["mode_starts"] == 4 and settings["init"] == "laplace"
