"""Law parameters under their own names, offsets out of the default views, reports on
az.summary (bayes_transfer.named_params, bayes_transfer.report)."""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pytest
from _posteriors import known_posterior, simulated

import bayes_transfer as bt
from bayes_transfer import named_params, simulate
from bayes_transfer.inference import Posterior, PosteriorFileError, _diagnosed_vars
from bayes_transfer.named_params import UNCONSTRAINED, all_draws, natural_param, organise
from bayes_transfer.report import SUMMARY_COLUMNS, param_table
from bayes_transfer.spec import load_spec


def _check_named(post: Posterior) -> None:
    """Every law parameter is exp(log_<name>) under its own name, at each group."""
    posterior = post.idata.posterior
    for name, p in post.spec.params.items():
        named, log = posterior[name], posterior[f"log_{name}"]
        if p.level == "pair":
            assert named.dims == ("chain", "draw", "source", "target")
            for s in post.runs.sources:
                for t in post.runs.targets:
                    np.testing.assert_allclose(named.sel(source=s, target=t),
                                               np.exp(log.sel(pair=f"{s}->{t}")), rtol=1e-6)
        else:
            assert named.dims == log.dims
            np.testing.assert_allclose(named, np.exp(log), rtol=1e-6)


def _check_default_views(post: Posterior) -> None:
    rows = az.summary(post.idata).index
    assert not [r for r in rows if "_z_" in r or "_pc_" in r], list(rows)
    assert "sigma" in rows and any(r.startswith("G[") for r in rows)
    # The offsets are kept, aside, for warm starts and diagnostics.
    aside = post.idata[UNCONSTRAINED]
    assert set(aside.data_vars) == {s for s in named_params.sampler_sites(post.spec) if s in aside}
    assert "G_z_source" in aside and "G_z_source" in _diagnosed_vars(post.spec, post.idata)


def test_a_numpyro_fit_names_its_parameters_and_keeps_offsets_aside(tiny_posterior):
    _check_named(tiny_posterior)
    _check_default_views(tiny_posterior)
    # The one never-run pair reads by source and target, as an ArviZ user expects.
    gap = tiny_posterior.idata.posterior["G"].sel(source="b", target="y")
    assert gap.dims == ("chain", "draw") and float(gap.min()) > 0
    rows = az.summary(tiny_posterior.idata, var_names=["G"]).index
    assert list(rows) == ["G[a, x]", "G[a, y]", "G[b, x]", "G[b, y]"]


@pytest.mark.slow
def test_a_pymc_fit_names_its_parameters_and_keeps_offsets_aside(tiny_sim, tmp_path):
    from bayes_transfer.diagnostics import SamplingWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        post = bt.fit(tiny_sim.runs, "transfer-gap", backend="pymc", chains=2, draws=50,
                      warmup=50, seed=0, max_tree_depth=4, progress=False)
    _check_named(post)
    _check_default_views(post)
    _check_named(Posterior.load(post.save(tmp_path / "pymc.nc")))


def test_a_saved_posterior_keeps_names_and_offsets(tiny_posterior, tmp_path):
    back = Posterior.load(tiny_posterior.save(tmp_path / "post.nc"))
    _check_named(back)
    _check_default_views(back)
    for group in ("posterior", UNCONSTRAINED):
        a, b = tiny_posterior.idata[group], back.idata[group]
        assert list(a.data_vars) == list(b.data_vars)
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values)
    assert back.diagnostics.max_rhat == tiny_posterior.diagnostics.max_rhat


def test_a_file_written_before_the_names_is_organised_at_load(tmp_path):
    post = known_posterior(simulated("transfer-gap"), spread=0.1, draws=30)
    idata = post.idata
    # The old layout: every site in the posterior, no named parameters, no group aside.
    old = idata.posterior.drop_vars(list(post.spec.params)).assign(
        idata[UNCONSTRAINED].data_vars)
    del idata[UNCONSTRAINED]
    idata.posterior = old
    back = Posterior.load(post.save(tmp_path / "old.nc"))
    _check_named(back)
    _check_default_views(back)


def test_a_global_only_posterior_keeps_its_group_coordinates(tmp_path):
    # No variable uses source, target or pair, yet a posterior file needs them.
    design = simulate.design_grid(["web"], ["web"], params=[1e5, 1e6, 1e7],
                                  pretrain_tokens=[1e6, 1e7, 1e8], finetune_tokens=[0])
    sim = simulate.simulate(load_spec({"law": "chinchilla"}), design, seed=0)
    post = known_posterior(sim, spread=0.1, draws=10)
    assert {"source", "target", "pair"} <= set(post.idata.posterior.coords)
    back = Posterior.load(post.save(tmp_path / "chinchilla.nc"))
    _check_named(back)
    assert list(back.idata.posterior.data_vars)[:6] == ["E", "A", "alpha", "B", "beta",
                                                         "sigma"]


def test_pairs_are_placed_by_their_coordinates():
    post = known_posterior(simulated("transfer-gap"), spread=0.1, draws=10)
    posterior = post.idata.posterior
    shuffled = posterior.isel(pair=[3, 1, 0, 2])  # pair_source/pair_target come along
    G = natural_param(shuffled, "G", "pair")
    for s in G["source"].values:
        for t in G["target"].values:
            np.testing.assert_allclose(G.sel(source=s, target=t),
                                       np.exp(posterior["log_G"].sel(pair=f"{s}->{t}")))
    with pytest.raises(ValueError, match="not every source x target pair"):
        natural_param(posterior.isel(pair=[0, 1, 2, 2]), "G", "pair")


def test_organise_is_idempotent():
    post = known_posterior(simulated("transfer-gap"), spread=0.1, draws=10)
    before = {g: list(post.idata[g].data_vars) for g in ("posterior", UNCONSTRAINED)}
    organise(post.idata, post.spec)
    assert {g: list(post.idata[g].data_vars) for g in before} == before
    assert set(all_draws(post.idata).data_vars) == set(before["posterior"]) | set(
        before[UNCONSTRAINED])


# ---- the reader refuses what contradicts itself -----------------------------------------


def _mutated(post: Posterior, tmp_path, mutate) -> str:
    path = tmp_path / "good.nc"
    post.save(path)
    idata = az.from_netcdf(str(path), engine="netcdf4")
    mutate(idata)
    out = tmp_path / "bad.nc"
    out.unlink(missing_ok=True)
    idata.to_netcdf(str(out), engine="h5netcdf")
    return out


def _set(group, name, fn):
    def mutate(idata):
        ds = idata[group]
        ds[name] = fn(ds[name])
    return mutate


def _move_back(name):
    def mutate(idata):
        idata.posterior[name] = idata[UNCONSTRAINED][name]
    return mutate


HOSTILE = {
    "G is not exp(log_G)": (_set("posterior", "G", lambda da: da * 2),
                            "G is not exp"),
    "G over pairs": (lambda i: i.posterior.__setitem__("G", np.exp(i.posterior["log_G"])),
                     "G has dims"),
    "a foreign variable aside": (lambda i: i[UNCONSTRAINED].__setitem__(
        "payload", i.posterior["sigma"]), "unexpected unconstrained_posterior variable"),
    "an offset at the wrong level": (lambda i: i[UNCONSTRAINED].__setitem__(
        "G_z_source", i[UNCONSTRAINED]["G_z_target"]), "G_z_source has dims"),
    "an offset as integers": (_set(UNCONSTRAINED, "G_z_pair",
                                   lambda da: da.astype(np.int64)), "G_z_pair has dtype"),
    "an offset in both groups": (_move_back("G_z_pair"), "both a posterior and"),
    "offsets of other draws": (lambda i: setattr(i, UNCONSTRAINED, i[UNCONSTRAINED].isel(
        draw=slice(0, 5))), "coordinate draw is not the posterior"),
    "offsets of other sources": (lambda i: setattr(i, UNCONSTRAINED, i[UNCONSTRAINED]
                                                   .assign_coords(source=["p", "q"])),
                                 "coordinate source is not the posterior's"),
    "pair labels that disagree": (lambda i: i.posterior.coords.__setitem__(
        "pair_source", ("pair", i.posterior["pair_source"].values[::-1])),
        "pair_source coordinate does not match"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_the_reader_refuses_named_and_aside_variables_that_disagree(tmp_path, case):
    post = known_posterior(simulated("transfer-gap"), spread=0.1, draws=30)
    mutate, words = HOSTILE[case]
    with pytest.raises(PosteriorFileError, match=words):
        Posterior.load(_mutated(post, tmp_path, mutate))


# ---- reports on az.summary ----------------------------------------------------------------


def test_param_table_is_az_summary_with_mcse_and_tail_ess(tiny_posterior):
    table = param_table(tiny_posterior, ci=0.8)
    assert list(table.columns[5:]) == list(SUMMARY_COLUMNS)
    assert {"mcse_median", "ess_tail"} <= set(table.columns)
    gaps = table[table["param"] == "G"].reset_index(drop=True)
    ref = az.summary(tiny_posterior.idata, var_names=["G"], stat_focus="median",
                     hdi_prob=0.8, round_to="none")
    np.testing.assert_allclose(gaps["median"], ref["median"], rtol=1e-6)
    np.testing.assert_allclose(gaps["mcse_median"], ref["mcse_median"], rtol=1e-6)
    np.testing.assert_allclose(gaps["ess_tail"], ref["ess_tail"], rtol=1e-6)
    np.testing.assert_allclose(gaps["r_hat"], ref["r_hat"], rtol=1e-6)
    # Equal-tailed: 10% of the draws below the interval and 10% above, at every pair.
    draws = np.exp(tiny_posterior.idata.posterior["log_G"].values.reshape(-1, 4))
    np.testing.assert_allclose(gaps["lower"], np.quantile(draws, 0.1, axis=0), rtol=1e-6)
    np.testing.assert_allclose(gaps["upper"], np.quantile(draws, 0.9, axis=0), rtol=1e-6)
    assert gaps["observed"].tolist() == [True, True, True, False]
    assert (gaps["mcse_median"] > 0).all() and (gaps["ess_tail"] > 0).all()


def test_bt_summary_shows_the_law_parameters_and_sigma(tiny_posterior):
    table = bt.summary(tiny_posterior, ci=0.9)
    names = {r.split("[")[0] for r in table.index}
    assert names == {*tiny_posterior.spec.params, "sigma"}
    assert {"median", "eti_5%", "eti_95%", "mcse_median", "ess_tail", "r_hat"} <= set(
        table.columns)
    assert list(bt.summary(tiny_posterior, var_names=["G_mu"]).index) == ["G_mu"]
