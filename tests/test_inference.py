"""Fitting, devices, reproducibility, predictions and posterior files (fast tests)."""

from __future__ import annotations

import json
import warnings

import jax
import numpy as np
import pandas as pd
import pytest

from bayes_transfer.data import RunTableError
from bayes_transfer.diagnostics import SamplingWarning
from bayes_transfer.inference import (
    FORMAT_VERSION,
    Posterior,
    PosteriorFileError,
    _chain_method,
    fit,
    pick_device,
)


def test_device_and_chain_method():
    cpu = pick_device("cpu")
    assert cpu.platform == "cpu"
    assert pick_device(None).platform == pick_device("auto").platform
    if not any(d.platform == "gpu" for d in jax.devices()):
        assert pick_device(None).platform == "cpu"
        with pytest.raises(ValueError, match="no JAX device of kind 'gpu'"):
            pick_device("gpu")
    # conftest asks for >= 4 host devices (as the CLI does), so 4 CPU chains run in parallel.
    assert _chain_method(cpu, 4) == "parallel"
    assert _chain_method(cpu, 1) == "vectorized"
    assert _chain_method(cpu, len(jax.devices("cpu")) + 1) == "vectorized"


def test_same_seed_same_draws(tiny_sim):
    def run(seed):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SamplingWarning)
            return fit(tiny_sim.runs, "transfer-gap", chains=2, draws=15, warmup=15,
                       seed=seed, max_tree_depth=3, progress=False).log_param("G").values

    first = run(7)
    np.testing.assert_array_equal(first, run(7))
    assert not np.array_equal(first, run(8))


def test_posterior_dims_and_gap_table(tiny_posterior, tiny_sim):
    post = tiny_posterior
    assert post.log_param("G").dims == ("chain", "draw", "pair")
    assert list(post.idata.posterior.coords["pair"].values) == ["a->x", "a->y", "b->x", "b->y"]
    gaps = post.gap_table(ci=0.9)
    assert list(gaps["observed"]) == [True, True, True, False]
    assert (gaps["lower"] < gaps["median"]).all() and (gaps["median"] < gaps["upper"]).all()
    flat = post.flat_log_params()
    assert flat["G"].shape == (post.n_draws, 4) and flat["alpha"].shape == (post.n_draws, 2)
    with pytest.raises(KeyError, match="no parameter 'K'"):
        post.log_param("K")


def test_one_chain_tables_log_nothing(tiny_posterior):
    """A one-chain posterior's R-hat is NaN in the tables; ArviZ's "Shape validation
    failed" line for it must not reach the user's stderr (a one-chain CLI fit printed it)."""
    import dataclasses
    import logging

    import arviz as az

    class Records(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    # ArviZ logs through its own Logger instance, which also drops a message it logged
    # before in this process: 37 draws makes a message no other test logs.
    one = dataclasses.replace(tiny_posterior,
                              idata=tiny_posterior.idata.isel(chain=[0], draw=slice(0, 37)))
    seen = Records()
    az._log.addHandler(seen)
    try:
        gaps = one.gap_table(ci=0.9)
        one.param_table(ci=0.9)
    finally:
        az._log.removeHandler(seen)
    assert gaps["r_hat"].isna().all()
    assert not [m for m in seen.messages if "Shape validation" in m], seen.messages


def test_predicts_an_unobserved_pair(tiny_posterior):
    rows = pd.DataFrame({"source": ["b", "a"], "target": ["y", "x"], "params": [10**6] * 2,
                         "pretrain_tokens": [10**5] * 2, "finetune_tokens": [10**4] * 2})
    pred = tiny_posterior.predict(rows, ci=0.9)
    assert np.isfinite(pred[["loss_lower", "loss_median", "loss_upper"]].to_numpy()).all()
    assert (pred["loss_lower"] < pred["loss_median"]).all()
    obs = tiny_posterior.predict(rows, ci=0.9, kind="observation")
    # Measurement noise widens the interval of the observed pair a->x. (The unobserved
    # pair's interval spans the prior predictive, orders of magnitude: there the noise is
    # lost in the Monte Carlo error of its 5% and 95% quantiles over 200 draws.)
    width = (obs["loss_upper"] - obs["loss_lower"]) / (pred["loss_upper"] - pred["loss_lower"])
    assert width.iloc[1] > 1.0


def test_prediction_refuses_rows_it_cannot_explain(tiny_posterior):
    base = {"params": [10**6], "pretrain_tokens": [10**5], "finetune_tokens": [10**4]}
    with pytest.raises(RunTableError, match="'zz' is not one of the fitted sources"):
        tiny_posterior.predict(pd.DataFrame({"source": ["zz"], "target": ["x"], **base}))
    zero_shot = pd.DataFrame({"source": ["a"], "target": ["x"], **base, "finetune_tokens": [0]})
    with pytest.raises(RunTableError, match="needs finetune_tokens > 0"):
        tiny_posterior.predict(zero_shot)
    with pytest.raises(ValueError, match="ci must be between 0 and 1"):
        tiny_posterior.predict(zero_shot.assign(finetune_tokens=10), ci=90)


def test_save_load_round_trip(tiny_posterior, tmp_path):
    path = tiny_posterior.save(tmp_path / "post.nc")
    back = Posterior.load(path)
    assert back.spec == tiny_posterior.spec
    assert back.idata.posterior.attrs["bayes_transfer_format"] == FORMAT_VERSION
    for group in ("posterior", "sample_stats", "observed_data"):  # as az.from_numpyro
        assert back.idata[group].attrs["inference_library"] == "numpyro", group
        assert back.idata[group].attrs["inference_library_version"][0].isdigit()
    pd.testing.assert_frame_equal(back.runs.df, tiny_posterior.runs.df, check_dtype=False)
    assert back.runs.sources == tiny_posterior.runs.sources
    np.testing.assert_array_equal(back.log_param("G").values,
                                  tiny_posterior.log_param("G").values)
    pd.testing.assert_frame_equal(back.gap_table(), tiny_posterior.gap_table())
    assert back.diagnostics.max_rhat == pytest.approx(tiny_posterior.diagnostics.max_rhat)
    assert not list(tmp_path.glob(".post.nc.*"))  # no temporary file left behind


def test_both_engines_read_a_posterior_file_alike(tiny_posterior, tmp_path):
    """Files are read with the netCDF4 engine (4x faster than h5netcdf) and written with
    h5netcdf: every group must come back identical, values, dtypes and attributes."""
    import xarray as xr

    from bayes_transfer.posterior_file import _engine

    assert _engine() == "netcdf4"  # a dependency: the fast reader is the one tested
    path = tiny_posterior.save(tmp_path / "post.nc")
    for group in Posterior.load(path).idata.groups():
        with xr.open_dataset(path, group=group, engine="netcdf4") as fast, \
                xr.open_dataset(path, group=group, engine="h5netcdf") as slow:
            xr.testing.assert_identical(fast.load(), slow.load())


def test_bad_posterior_files(tiny_posterior, tmp_path):
    with pytest.raises(PosteriorFileError, match="no such posterior file"):
        Posterior.load(tmp_path / "missing.nc")
    good = tiny_posterior.save(tmp_path / "post.nc").read_bytes()
    (tmp_path / "cut.nc").write_bytes(good[: len(good) // 2])
    with pytest.raises(PosteriorFileError, match="truncated or corrupted"):
        Posterior.load(tmp_path / "cut.nc")
    (tmp_path / "junk.nc").write_bytes(b"not a netcdf file at all")
    with pytest.raises(PosteriorFileError):
        Posterior.load(tmp_path / "junk.nc")
    other = tiny_posterior.idata.copy()
    other.posterior.attrs.pop("bayes_transfer_format")
    other.to_netcdf(str(tmp_path / "other.nc"), engine="h5netcdf")
    with pytest.raises(PosteriorFileError, match="not a bayes_transfer posterior"):
        Posterior.load(tmp_path / "other.nc")


@pytest.mark.parametrize("version, loads", [(1, True), (FORMAT_VERSION, True),
                                            (FORMAT_VERSION + 1, False)])
def test_format_versions_this_reader_reads(tiny_posterior, tmp_path, version, loads):
    """Files of format 1 (before named parameters and predictive groups) still load; a
    file from a newer bayes_transfer is refused by name, not misread."""
    idata = tiny_posterior.idata.copy()
    idata.posterior.attrs["bayes_transfer_format"] = version
    if version == 1:  # format 1's layout: sampler sites in the posterior, no named ones
        idata.posterior = idata.posterior.drop_vars(list(tiny_posterior.spec.params)).merge(
            idata.unconstrained_posterior)
        del idata.unconstrained_posterior
    path = tmp_path / "post.nc"
    idata.to_netcdf(str(path), engine="h5netcdf")
    if loads:
        back = Posterior.load(path)
        np.testing.assert_array_equal(back.idata.posterior["G"].values,
                                      tiny_posterior.idata.posterior["G"].values)
    else:
        with pytest.raises(PosteriorFileError, match=f"format {version} is newer"):
            Posterior.load(path)


def test_dense_mass_samples_the_same_posterior_and_is_recorded(tiny_sim, tmp_path):
    """A dense mass matrix changes how NUTS moves, not where: the gaps agree with the
    diagonal fit's, and the setting travels with the saved posterior."""
    def run(dense):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SamplingWarning)
            return fit(tiny_sim.runs, "transfer-gap", chains=2, draws=300, warmup=300,
                       seed=1, dense_mass=dense, progress=False)

    diag, dense = run(False), run(True)
    for post in (diag, dense):
        assert post.diagnostics.divergences < 0.02 * post.n_draws
    g_diag, g_dense = (p.gap_table(ci=0.9).reset_index(drop=True) for p in (diag, dense))
    observed = g_diag["observed"]
    # Medians of the observed pairs' gaps within a third of the interval width.
    width = (g_diag["upper"] - g_diag["lower"])[observed]
    assert ((g_diag["median"] - g_dense["median"]).abs()[observed] < width / 3).all()
    dense.save(tmp_path / "dense.nc")
    settings = json.loads(Posterior.load(tmp_path / "dense.nc").idata.posterior.attrs[
        "sampler_settings"])
    assert settings["dense_mass"] is True and settings["warmup"] == 300
    assert json.loads(diag.idata.posterior.attrs["sampler_settings"])["dense_mass"] is False
