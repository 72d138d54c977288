"""``centered = "auto"``: each group of a pooled parameter is sampled centred where the
table gives it many rows and non-centred where it gives few (``model.centring``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_transfer.data import RunTable, validate
from bayes_transfer.model import centring, model_data
from bayes_transfer.spec import AUTO_CENTRE_ROWS, SpecError, load_spec


def _spec(centered):
    d = load_spec("transfer-gap").to_dict()
    d["params"]["G"]["centered"] = centered
    return load_spec(d)


def _table(rows_per_pair: dict[tuple[str, str], int]) -> RunTable:
    rows = []
    for (s, t), n in rows_per_pair.items():
        for i in range(n):
            rows.append({"run_id": f"{s}{t}{i}", "source": s, "target": t, "params": 1e6,
                         "pretrain_tokens": 1e7 * (i + 1), "finetune_tokens": 1e4 * (i + 1),
                         "loss": 3.0})
    return validate(pd.DataFrame(rows), "rows")


def test_auto_centres_groups_with_many_rows_only():
    many, few = AUTO_CENTRE_ROWS, AUTO_CENTRE_ROWS - 1
    table = _table({("a", "x"): many, ("a", "y"): few, ("b", "x"): 12})  # b->y: no rows
    auto = centring(_spec("auto").params["G"], model_data(_spec("auto"), table))
    # pairs in order a->x, a->y, b->x, b->y
    np.testing.assert_array_equal(auto, [True, False, True, False])
    on = centring(_spec(True).params["G"], model_data(_spec(True), table))
    np.testing.assert_array_equal(on, [True, True, True, False])


def test_auto_has_the_centred_sites_and_survives_the_saved_spec():
    p = _spec("auto").params["G"]
    assert "G_pc_pair" in p.site_names and "G_z_pair" not in p.site_names
    assert load_spec(_spec("auto").to_dict()).params["G"].centered == "auto"


@pytest.mark.parametrize("bad", ["yes", 1, "AUTO"])
def test_bad_centered_values_are_refused(bad):
    with pytest.raises(SpecError, match='centered must be true, false or "auto"'):
        _spec(bad)


# ---- centring="mode": a cold fit centres the groups its rows pin ------------------------


def test_the_mode_centres_the_groups_the_rows_pin_and_never_a_group_without_rows(tiny_sim):
    """In z the curvature at the mode is 1 + sd^2 I: exactly 1 for a pair with no rows
    (its z meets only its prior), above 5 where the rows pin the group to half the
    level's sd."""
    import jax

    from bayes_transfer.refit import centring_from_mode

    spec = load_spec("transfer-gap")
    data = model_data(spec, tiny_sim.runs, tiny_sim.units)
    centre = centring_from_mode(data, jax.random.key(0))
    assert centre, "the tiny table's rows pin some groups"
    never_run = list(tiny_sim.runs.pairs).index(("b", "y"))
    for name, pinned in centre.items():
        p = spec.params[name]
        assert not p.centered and p.pooling != "none"  # only the non-centred ones
        assert pinned.dtype == bool and pinned.shape == data.has_rows(p.level).shape
        if p.level == "pair":
            assert not pinned[never_run], name
    # A spec whose pooled parameters are all centred has nothing to choose.
    d = spec.to_dict()
    for q in d["params"].values():
        q["centered"] = True
    assert centring_from_mode(model_data(load_spec(d), tiny_sim.runs, tiny_sim.units),
                              jax.random.key(0)) == {}


@pytest.mark.slow
def test_centring_from_the_mode_samples_the_same_posterior_on_the_specs_sites(tmp_path):
    """On the bundled table (A and G non-centred, the c-src pairs pinned) the two
    parameterisations agree to a fraction of a posterior sd, and the mode's draws come
    back on the spec's own sites: substituted into the spec's model, its offsets give
    the law's values that were recorded."""
    import json

    from numpyro import handlers

    from bayes_transfer.data import load_runs
    from bayes_transfer.inference import Posterior, fit
    from bayes_transfer.model import hierarchical_model
    from bayes_transfer.named_params import all_draws

    runs = load_runs(Path(__file__).resolve().parents[1] / "data" / "transfer_runs.csv")
    kw = dict(chains=4, warmup=500, draws=1000, seed=0, progress=False)  # the demo's
    mode = fit(runs, "transfer-gap-size", centring="mode", **kw)
    spec_way = fit(runs, "transfer-gap-size", centring="spec", **kw)
    assert mode.diagnostics.ok and spec_way.diagnostics.ok
    assert json.loads(mode.idata.posterior.attrs["sampler_settings"])["centring"] == "mode"
    groups = json.loads(mode.idata.posterior.attrs["centred_groups"])
    assert set(groups) == {"A", "G"} and all(len(v) == 12 for v in groups.values())
    assert any(groups["G"]) and not all(groups["G"])  # partially centred: the point

    a, b = mode.flat_log_params(), spec_way.flat_log_params()
    worst = max(float(np.max(np.abs(np.median(a[k], 0) - np.median(b[k], 0))
                             / b[k].std(0))) for k in b)
    assert worst < 0.3, worst

    path = mode.save(tmp_path / "mode.nc")
    draws = all_draws(Posterior.load(path).idata)
    assert "G_z_pair" in draws and not any("_pc_" in v or "_loc_" in v for v in draws)
    data = model_data(mode.spec, mode.runs, mode.units)
    model = handlers.seed(hierarchical_model, 0)
    sites = [k for k, v in handlers.trace(model).get_trace(data).items()
             if v["type"] == "sample" and not v["is_observed"]]
    assert "G_z_pair" in sites and set(sites) <= set(draws.data_vars)
    for chain, draw in [(0, 0), (3, 999)]:
        one = {s: np.asarray(draws[s].values[chain, draw]) for s in sites}
        trace = handlers.trace(handlers.substitute(model, data=one)).get_trace(data)
        for name in ("A", "G"):
            np.testing.assert_allclose(trace[f"log_{name}"]["value"],
                                       draws[f"log_{name}"].values[chain, draw], rtol=1e-5,
                                       atol=1e-6)


def test_a_laplace_start_moves_to_the_centred_groups_coordinates(tiny_sim):
    """centring="mode" with init="laplace": the start is the spec's Laplace approximation
    moved to the partially centred model: the same sites and flat layout as that model,
    each centred group at its log value, the log density finite."""
    import dataclasses

    import jax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

    from bayes_transfer.laplace import laplace_start
    from bayes_transfer.model import hierarchical_model
    from bayes_transfer.refit import centred_start

    spec = load_spec("transfer-gap")
    data = model_data(spec, tiny_sim.runs, tiny_sim.units)
    init, inv_mass = laplace_start(hierarchical_model, (data,), jax.random.key(0), 2)
    centre = {"G": np.array([True, False, True, False]), "A": np.array([1, 1, 0, 0], bool)}
    moved, moved_mass = centred_start(init, inv_mass, data, centre)
    centred = dataclasses.replace(data, centre=centre)
    sites = initialize_model(jax.random.key(0), hierarchical_model,
                             model_args=(centred,)).param_info.z
    assert set(moved) == set(sites)
    assert moved_mass.shape == ravel_pytree(sites)[0].shape and (moved_mass > 0).all()
    for chain in range(2):
        z = {k: v[chain] for k, v in moved.items()}
        assert np.isfinite(float(potential_energy(hierarchical_model, (centred,), {}, z)))
        before = constrain_fn(hierarchical_model, (data,), {},
                              {k: v[chain] for k, v in init.items()},
                              return_deterministic=True)
        after = constrain_fn(hierarchical_model, (centred,), {}, z, return_deterministic=True)
        for name in centre:  # the same point of the same posterior
            np.testing.assert_allclose(after[f"log_{name}"], before[f"log_{name}"],
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("nu", [None, 1.0, 3.0, 30.0])
def test_the_prior_curvature_is_the_z_priors_own(nu):
    """The rule reads the rows' information off the curvature minus the z prior's own:
    1 for a normal z, the Student-t's (negative in its tails) with ``residual_nu``."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist

    from bayes_transfer.refit import prior_curvature

    prior = dist.Normal(0.0, 1.0) if nu is None else dist.StudentT(nu, 0.0, 1.0)
    z = jnp.array([-4.0, -1.3, 0.0, 0.4, 2.5, 9.0])
    auto = jax.vmap(jax.grad(jax.grad(lambda v: -prior.log_prob(v))))(z)
    np.testing.assert_allclose(prior_curvature(np.asarray(z), nu), auto, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("nu", [None, 1.0, 3.0])
def test_a_pair_without_rows_has_no_information_whatever_its_tails(tiny_sim, nu):
    """The never-run pair's z meets only its own prior, so the curvature at the mode is
    the prior's and the rows' information is 0 (read against 1, a Cauchy z would show 1),
    while the run pairs' is positive."""
    import jax

    from bayes_transfer.refit import information_at_mode

    d = load_spec("transfer-gap").to_dict()
    if nu is not None:
        d["params"]["G"]["residual_nu"] = nu
    spec = load_spec(d)
    info = information_at_mode(model_data(spec, tiny_sim.runs, tiny_sim.units),
                               jax.random.key(0))
    never_run = list(tiny_sim.runs.pairs).index(("b", "y"))
    assert abs(info["G"][never_run]) < 1e-3
    assert np.all(np.delete(info["G"], never_run) > 0.1)
