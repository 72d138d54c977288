"""The model builder and the simulator: sites, dims, indexing, reproducible tables."""

from __future__ import annotations

import jax
import numpy as np
from numpyro import handlers

from bayes_transfer.model import at_rows, hierarchical_model, model_data, site_dims
from bayes_transfer.simulate import design_grid, simulate
from bayes_transfer.spec import load_spec


def test_sites_and_dims_of_the_crossed_gap(tiny_sim):
    spec = load_spec("transfer-gap")
    data = model_data(spec, tiny_sim.runs)
    trace = handlers.trace(handlers.seed(hierarchical_model, jax.random.key(0))).get_trace(data)
    dims = site_dims(spec)
    assert dims["log_G"] == ["pair"] and dims["G_z_source"] == ["source"]
    assert dims["log_E"] == ["target"] and dims["log_loss"] == ["row"]
    sizes = {"pair": 4, "source": 2, "target": 2, "row": len(tiny_sim.runs)}
    for site, d in dims.items():
        assert trace[site]["value"].shape == tuple(sizes[x] for x in d), site
    # log G = mu + u_s + v_t + w_st over the full 2 x 2 grid, pair b->y included.
    v = {k: np.asarray(s["value"]) for k, s in trace.items()}
    expect = (v["G_mu"] + (v["G_sd_source"] * v["G_z_source"])[:, None]
              + (v["G_sd_target"] * v["G_z_target"])[None, :]).reshape(-1) \
        + v["G_sd_pair"] * v["G_z_pair"]
    np.testing.assert_allclose(v["log_G"], expect, rtol=1e-5)


def test_a_fixed_sd_level_keeps_its_prior_sd_in_both_back_ends(tiny_sim):
    import dataclasses

    base = load_spec("transfer-gap")
    g = dataclasses.replace(base.params["G"], fixed_sd=("target",), group_scale=0.7)
    spec = dataclasses.replace(base, params={**base.params, "G": g})
    data = model_data(spec, tiny_sim.runs)
    trace = handlers.trace(handlers.seed(hierarchical_model, jax.random.key(0))).get_trace(data)
    v = {k: np.asarray(s["value"]) for k, s in trace.items()}
    assert "G_sd_target" not in trace and "G_sd_source" in trace
    assert set(site_dims(spec)) >= {"G_z_target"} and "G_sd_target" not in site_dims(spec)
    # The target offsets enter with the fixed sd group_scale, draw by draw.
    expect = (v["G_mu"] + (v["G_sd_source"] * v["G_z_source"])[:, None]
              + (0.7 * v["G_z_target"])[None, :]).reshape(-1) + v["G_sd_pair"] * v["G_z_pair"]
    np.testing.assert_allclose(v["log_G"], expect, rtol=1e-5)
    from bayes_transfer.data import load_runs
    from bayes_transfer.pymc_backend import pymc_model

    names = {rv.name for rv in pymc_model(spec, load_runs(tiny_sim.runs)).free_RVs}
    assert "G_sd_target" not in names and {"G_sd_source", "G_z_target"} <= names


def test_at_rows_indexes_every_level():
    src, tgt = np.array([0, 1, 1]), np.array([1, 0, 1])
    pair_values = np.arange(4.0)  # pairs (0,0) (0,1) (1,0) (1,1)
    np.testing.assert_array_equal(at_rows("pair", pair_values, src, tgt, 2), [1, 2, 3])
    np.testing.assert_array_equal(at_rows("source", np.array([5.0, 6.0]), src, tgt, 2),
                                  [5, 6, 6])
    draws = np.stack([pair_values, 10 + pair_values])  # (draws, pairs)
    assert at_rows("pair", draws, src, tgt, 2).shape == (2, 3)
    assert np.shape(at_rows("global", 1.5, src, tgt, 2)) == ()


def test_simulation_is_reproducible_and_keeps_truth():
    design = design_grid(["a", "b"], ["x"], params=[1e6], pretrain_tokens=[1e7],
                         finetune_tokens=[1e4, 1e5])
    one, two = (simulate("transfer-gap", design, seed=5) for _ in range(2))
    np.testing.assert_array_equal(one.runs.df["loss"], two.runs.df["loss"])
    other = simulate("transfer-gap", design, seed=6)
    assert not np.allclose(one.runs.df["loss"], other.runs.df["loss"])
    fixed = simulate("transfer-gap", design, seed=5, truth={"G_mu": 1.25})
    assert float(fixed.truth["G_mu"]) == 1.25
    truth = one.truth_dict(seed=5)
    assert set(truth["params"]["G"]) == {"a->x", "b->x"} and truth["seed"] == 5
    np.testing.assert_allclose(truth["params"]["G"]["a->x"], np.exp(one.true_log("G")[0]),
                               rtol=1e-6)


def test_a_centred_level_is_partially_centred_where_groups_have_no_rows():
    # Pair b->y has no rows: its log G must be mu + u + v + sd * z (non-centred, no funnel
    # with sd), the others are sampled directly (centred), and the groups are flagged.
    design = design_grid(["a", "b"], ["x", "y"], params=[1e6], pretrain_tokens=[1e7, 1e8],
                         finetune_tokens=[1e4, 1e5])
    design = design[(design["source"] != "b") | (design["target"] != "y")]
    d = load_spec("transfer-gap").to_dict()
    d["params"]["G"]["centered"] = True
    spec = load_spec(d)
    data = model_data(spec, simulate(spec, design, seed=2).runs)
    np.testing.assert_array_equal(data.has_rows("pair"), [True, True, True, False])
    assert data.has_rows("source").all() and data.has_rows("target").all()
    trace = handlers.trace(handlers.seed(hierarchical_model, jax.random.key(3))).get_trace(data)
    v = {k: np.asarray(s["value"]) for k, s in trace.items()}
    assert trace["log_G"]["type"] == "deterministic" and "G_pc_pair" in trace
    mean = (v["G_mu"] + (v["G_sd_source"] * v["G_z_source"])[:, None]
            + (v["G_sd_target"] * v["G_z_target"])[None, :]).reshape(-1)
    np.testing.assert_allclose(v["log_G"][:3], v["G_pc_pair"][:3], rtol=1e-6)
    np.testing.assert_allclose(v["log_G"][3], mean[3] + v["G_sd_pair"] * v["G_pc_pair"][3],
                               rtol=1e-5)
    # Every pair observed: log G itself is the sampled site, as before.
    full = model_data(spec, simulate(spec, design_grid(["a"], ["x"], params=[1e6],
                      pretrain_tokens=[1e7], finetune_tokens=[1e4]), seed=2).runs)
    trace = handlers.trace(handlers.seed(hierarchical_model, jax.random.key(3))).get_trace(full)
    assert trace["log_G"]["type"] == "sample" and "G_pc_pair" not in trace


def _family(site: dict) -> tuple[str, set[float] | None]:
    fn = getattr(site["fn"], "base_dist", site["fn"])  # expanded over the groups
    return type(fn).__name__, set(np.asarray(fn.df).ravel().tolist()) if hasattr(
        fn, "df") else None


def test_residual_nu_makes_the_innermost_groups_student_t_in_every_parameterisation():
    # Non-centred (z), centred (log G itself) and partially centred (pc): the pairs'
    # distribution is Student-t with residual_nu; the source and target effects stay normal.
    design = design_grid(["a", "b"], ["x", "y"], params=[1e6], pretrain_tokens=[1e7, 1e8],
                         finetune_tokens=[1e4, 1e5])
    partial = design[(design["source"] != "b") | (design["target"] != "y")]
    for centered, rows, site in [(False, design, "G_z_pair"), (True, design, "log_G"),
                                 (True, partial, "G_pc_pair")]:
        d = load_spec("transfer-gap").to_dict()
        d["params"]["G"].update(centered=centered, residual_nu=2.5)
        spec = load_spec(d)
        data = model_data(spec, simulate(spec, rows, seed=2).runs)
        trace = handlers.trace(handlers.seed(hierarchical_model, jax.random.key(0))) \
            .get_trace(data)
        assert _family(trace[site]) == ("StudentT", {2.5}), site
        assert _family(trace["G_z_source"]) == ("Normal", None)
        assert _family(trace["G_z_target"]) == ("Normal", None)
        assert _family(trace["E_z_target"] if "E_z_target" in trace else trace["log_E"]
                       )[0] == "Normal"
