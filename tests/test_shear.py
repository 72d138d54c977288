"""Sheared coordinates (bayes_transfer.shear): the same density, uncoupled at the mode,
the same posterior, and draws on the spec's own sites."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import potential_energy

from bayes_transfer import shear, simulate
from bayes_transfer.laplace import laplace_fit
from bayes_transfer.model import hierarchical_model, model_data, select_rows
from bayes_transfer.spec import load_spec


def _centred_spec():
    spec = load_spec("transfer-gap")
    return replace(spec, params={n: replace(p, centered=True) if p.pooling != "none" else p
                                 for n, p in spec.params.items()})


@pytest.fixture(scope="module")
def problem():
    """A 3 x 3 grid of pairs, 9 rows each, every pooled level centred; its Laplace fit
    with the probes the shear needs, and the shear read off it."""
    spec = _centred_spec()
    design = simulate.design_grid(["a", "b", "c"], ["x", "y", "z"], params=[1e6],
                                  pretrain_tokens=[1e6, 1e7, 1e8],
                                  finetune_tokens=[1e4, 1e5, 1e6])
    runs = simulate.simulate(spec, design, seed=4).runs
    table, _ = select_rows(spec, runs)
    data = model_data(spec, table)
    plan = shear.plan(data)
    start = laplace_fit(hierarchical_model, (data,), jax.random.key(0), 3, shear.probes(plan))
    moved = shear.from_laplace(data, plan, start.mode, start.curvature, start.probes)
    return runs, spec, data, plan, start, moved


def _potential(data, params):
    return float(potential_energy(hierarchical_model, (data,), {}, params))


def test_the_plan_shears_centred_pairs_off_direct_source_and_target_sites(problem):
    _, spec, data, plan, _, moved = problem
    assert plan == {"G": ("alpha", "beta", "E"), "A": ("alpha", "beta", "E")}
    # A target's floor is sampled as its residual on its exponent, the level's first.
    assert set(moved.slopes) == {"G", "A", "E"} and set(moved.slopes["E"]) == {"beta"}
    stock = model_data(load_spec("transfer-gap"), select_rows(spec, problem[0])[0])
    assert shear.plan(stock) == {}  # non-centred pairs are standardised offsets already
    assert shear.plan(replace(data, centre={"G": np.ones(9, bool)})) == {}  # a refit's own


def test_sheared_coordinates_have_the_same_density(problem):
    """A translation given the other parameters: the potential at the moved point equals
    the spec model's at the original, with no Jacobian."""
    _, _, data, _, start, moved = problem
    sheared = replace(data, shear=moved.slopes)
    # Points well away from the mode in the sheared-off sites, so that the shifts matter.
    rng = np.random.default_rng(0)
    points = {k: v + (0.3 * rng.standard_normal(v.shape) if k in ("log_E", "log_beta",
                                                                  "log_alpha") else 0.0)
              for k, v in start.init.items()}
    variances = ravel_pytree({k: v[0] for k, v in points.items()})[1](start.inverse_mass)
    init, new_var = shear.sheared_start(points, variances, sheared, moved)
    assert "G_sh_pair" in init and "log_G" not in init and "E_sh_target" in init
    assert set(new_var) == set(init)
    for c in range(3):
        here = {k: v[c] for k, v in points.items()}
        there = {k: v[c] for k, v in init.items()}
        assert _potential(sheared, there) == pytest.approx(_potential(data, here), rel=1e-5)
    # Moved the wrong way, the density differs: the test can tell.
    wrong = {k: (v[0] + 0.1 if k == "G_sh_pair" else v[0]) for k, v in init.items()}
    assert _potential(sheared, wrong) != pytest.approx(
        _potential(data, {k: v[0] for k, v in points.items()}), rel=1e-5)


@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_helmert_is_orthogonal_with_the_mean_first(n):
    from bayes_transfer.model import helmert, helmert_inverse

    q = np.stack([helmert(e) for e in np.eye(n)], 1)
    assert np.allclose(q.T @ q, np.eye(n)) and np.allclose(q[:, 0], 1 / np.sqrt(n))
    w = np.random.default_rng(n).standard_normal((3, n))
    assert np.allclose(helmert_inverse(helmert(w)), w)
    assert np.allclose(np.asarray(helmert(jnp.asarray(w))), helmert(w), atol=1e-5)


@pytest.mark.parametrize("centred", [(), ("source",), ("source", "target")])
def test_sheared_means_and_rotated_offsets_have_the_same_density(problem, centred):
    """The crossed means sampled as mean + mean effect (a translation) and the offsets
    rotated (orthogonal): the same density; a level's deviations centred (sd * w[1:])
    change it by exactly the Jacobian, (n - 1) log sd."""
    _, _, data, plan, start, moved = problem
    sheared = replace(data, shear=moved.slopes, mean_shift={n: centred for n in plan})
    # Offsets shifted in common and the means back (the direction the shear is for), so
    # that the mean's shift matters and the density stays near the mode's (where the
    # pairs' sds are tiny, any other move makes it huge and float32 loses the test).
    points = {k: v + (0.7 if "_z_" in k else 0.0) for k, v in start.init.items()}
    for n in plan:
        points[f"{n}_mu"] = points[f"{n}_mu"] - 0.7 * sum(
            np.exp(points[f"{n}_sd_{g}"]) for g in ("source", "target"))
    variances = ravel_pytree({k: v[0] for k, v in points.items()})[1](start.inverse_mass)
    init, new_var = shear.sheared_start(points, variances, sheared, moved)
    assert {"A_sh_mu", "G_sh_mu", "A_w_source", "G_w_target"} <= set(init)
    assert not {"A_mu", "A_z_source", "G_z_target"} & set(init)
    assert ("A_dev_source" in init) == ("source" in centred)
    assert {k: np.shape(v) for k, v in new_var.items()} == {
        k: np.shape(v[0]) for k, v in init.items()}
    for c in range(3):
        here = {k: v[c] for k, v in points.items()}
        there = {k: v[c] for k, v in init.items()}
        jacobian = sum(2 * float(here[f"{n}_sd_{g}"]) for n in plan for g in centred)
        assert _potential(sheared, there) == pytest.approx(
            _potential(data, here) + jacobian, rel=1e-5)
    # Moved the wrong way, the density differs: the test can tell.
    wrong = {k: (v[0] + 0.1 if k == "A_sh_mu" else v[0]) for k, v in init.items()}
    assert _potential(sheared, wrong) != pytest.approx(
        _potential(data, {k: v[0] for k, v in points.items()}), rel=1e-5)


def test_a_crossed_interactions_mean_is_part_of_the_sheared_mean():
    """With a rank-1 interaction (a_s . b_t) the mean effect includes its mean."""
    spec = _centred_spec()
    spec = replace(spec, params={**spec.params, "A": replace(spec.params["A"], factors=1)})
    design = simulate.design_grid(["a", "b", "c"], ["x", "y", "z"], params=[1e6],
                                  pretrain_tokens=[1e6, 1e8], finetune_tokens=[1e4, 1e6])
    data = model_data(spec, select_rows(spec, simulate.simulate(spec, design, seed=1).runs)[0])
    plan = shear.plan(data)
    start = laplace_fit(hierarchical_model, (data,), jax.random.key(0), 2, shear.probes(plan))
    moved = shear.from_laplace(data, plan, start.mode, start.curvature, start.probes)
    sheared = replace(data, shear=moved.slopes, mean_shift={n: () for n in plan})
    points = {k: v + (0.8 if k in ("A_a_source", "A_b_target") else 0.0)
              for k, v in start.init.items()}
    variances = ravel_pytree({k: v[0] for k, v in points.items()})[1](start.inverse_mass)
    init, _ = shear.sheared_start(points, variances, sheared, moved)
    for c in range(2):
        assert _potential(sheared, {k: v[c] for k, v in init.items()}) == pytest.approx(
            _potential(data, {k: v[c] for k, v in points.items()}), rel=1e-5)


def test_at_the_mode_the_pairs_no_longer_couple_with_their_floors_and_exponents(problem):
    _, _, data, _, start, moved = problem
    sheared = replace(data, shear=moved.slopes)
    mode = {k: v[None] for k, v in start.mode.items()}
    init, _ = shear.sheared_start(mode, {k: jnp.ones_like(v) for k, v in start.mode.items()},
                                  sheared, moved)
    point = {k: v[0] for k, v in init.items()}
    flat, unravel = ravel_pytree(point)
    grad = jax.grad(lambda z: potential_energy(hierarchical_model, (sheared,), {}, unravel(z)))

    def hvp(site):
        ones = {k: jnp.zeros_like(v) for k, v in point.items()}
        ones[site] = jnp.ones_like(point[site])
        return unravel(jax.jvp(grad, (flat,), (ravel_pytree(ones)[0],))[1])

    for y in ("log_alpha", "log_beta"):
        before = np.abs(np.asarray(start.probes[y]["log_G"]))
        after = np.abs(np.asarray(hvp(y)["G_sh_pair"]))
        assert before.max() > 1.0  # there was a coupling to remove
        assert (after <= 1e-3 * before.max() + 1e-3).all(), (y, after, before)


@pytest.fixture(scope="module")
def fits(problem, tmp_path_factory):
    from bayes_transfer.diagnostics import SamplingWarning
    from bayes_transfer.inference import fit

    # Its own table, wide in p and f with between-group sds of 0.8: a posterior both
    # parameterisations sample well from any start. On the 9-row pairs of ``problem``,
    # centred floors have a funnel neck that one chain may fall into on one machine and
    # not another (CI, 2026-12-03: a chain stuck there, medians 2 nats apart).
    spec = problem[1]
    design = simulate.design_grid(["a", "b", "c"], ["x", "y", "z"], params=[1e6],
                                  pretrain_tokens=[1e5, 1e6, 1e7, 1e8, 1e9],
                                  finetune_tokens=[1e3, 1e4, 1e5, 1e6, 1e7])
    runs = simulate.simulate(spec, design, seed=5, typical=True, group_sd=0.8).runs
    kw = dict(chains=2, draws=400, warmup=400, seed=3, init="laplace", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        out = {on: fit(runs, spec, shear=on, **kw) for on in (True, False)}
    path = tmp_path_factory.mktemp("shear") / "post.nc"
    out[True].save(path)
    return out, path


def test_a_sheared_fit_samples_the_same_posterior_on_the_specs_sites(fits):
    from bayes_transfer.inference import Posterior

    posts, path = fits
    on, off = posts[True], posts[False]
    assert json.loads(on.idata.posterior.attrs["sheared"]) == {
        "G": ["alpha", "beta", "E"], "A": ["alpha", "beta", "E"]}
    assert json.loads(off.idata.posterior.attrs["sheared"]) == {}
    # Its crossed means too (A and G vary by source and target).
    assert set(json.loads(on.idata.posterior.attrs["sheared_means"])) == {"G", "A"}
    assert json.loads(off.idata.posterior.attrs["sheared_means"]) == {}
    assert set(on.idata.posterior.data_vars) == set(off.idata.posterior.data_vars)
    assert not any("_sh_" in v for v in on.idata.posterior.data_vars)
    for name in ("log_G", "log_A", "log_E", "log_beta", "log_alpha"):
        a, b = (p.idata.posterior[name].values.reshape(on.n_draws, -1) for p in (on, off))
        width = np.quantile(b, 0.95, axis=0) - np.quantile(b, 0.05, axis=0)
        assert (np.abs(np.median(a, 0) - np.median(b, 0)) < width / 4).all(), name
        assert np.allclose(a.std(0), b.std(0), rtol=0.35), name
    again = Posterior.load(path)
    for key in ("sheared", "sheared_means"):
        assert again.idata.posterior.attrs[key] == on.idata.posterior.attrs[key]
    # Both converge here (seeds 3 and 5 of the fit, 4 and 5 of the table, 2026-12-03:
    # 0-2 divergences of 800 draws, medians within 0.08 of a 90% width, R-hat of every
    # site <= 1.07: the between-group sds of 3 groups mix slowest). Divergences depend on
    # the machine's floating point: on another machine (2026-12-06) the sheared fit had 9
    # (under pytest) and 15 (alone) with R-hat <= 1.031, the other 0. A stuck chain, as on
    # CI's funnel, gives R-hat > 2.
    for post in (on, off):
        assert post.diagnostics.divergences <= 0.03 * post.n_draws
        assert post.diagnostics.max_rhat < 1.15
