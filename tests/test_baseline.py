"""The point-estimate baseline: reproduces the Chinchilla replication, recovers known laws."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_transfer.baseline import default_starts, fit_baseline, huber
from bayes_transfer.data import read_chinchilla_csv
from bayes_transfer.laws import get_law
from bayes_transfer.model import at_rows
from bayes_transfer.simulate import design_grid, simulate

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHINCHILLA = SHARED / "chinchilla_svg_extracted.csv"

# Besiroglu et al. 2024, Table 1 ("our estimates"), fitted on the 240 runs left after
# dropping the five with the highest loss (their `nr_of_models_excluded = 5`).
REPLICATION = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}


@pytest.fixture(scope="module")
def chinchilla_runs():
    if not CHINCHILLA.exists():
        pytest.skip(f"reference data {CHINCHILLA} not present")
    runs = read_chinchilla_csv(CHINCHILLA)
    loss = runs.df["loss"].to_numpy()
    return runs.subset(loss < np.sort(loss)[-5])


def test_reproduces_the_chinchilla_replication(chinchilla_runs):
    fit = fit_baseline(chinchilla_runs, "chinchilla", bootstrap=20, seed=0)
    got = fit.params.iloc[0]
    assert len(fit.params) == 1 and got["rows"] == 240
    assert got["E"] == pytest.approx(REPLICATION["E"], rel=0.01)
    assert got["alpha"] == pytest.approx(REPLICATION["alpha"], abs=0.005)
    assert got["beta"] == pytest.approx(REPLICATION["beta"], abs=0.005)
    # A and B trade off against the exponents along a flat valley: 5% is "the same fit".
    assert got["A"] == pytest.approx(REPLICATION["A"], rel=0.05)
    assert got["B"] == pytest.approx(REPLICATION["B"], rel=0.05)
    # The bootstrap interval of E covers the published value and is not degenerate.
    e_draws = np.exp(fit.boot_log_params[:, 0, fit.law.params.index("E")])
    lo, hi = np.quantile(e_draws, [0.025, 0.975])
    assert lo < REPLICATION["E"] < hi and hi - lo > 1e-3


def test_recovers_a_noiseless_chinchilla_law():
    law = get_law("chinchilla")
    truth = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 1000.0, "beta": 0.28}
    n, d = np.meshgrid(np.geomspace(1e7, 1e10, 6), np.geomspace(1e9, 1e12, 6))
    loss = np.asarray(law.loss(N=n.ravel(), p=d.ravel(), **truth), dtype=np.float64)
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(n.size)], "source": "web",
                         "target": "web", "params": n.ravel().round(),
                         "pretrain_tokens": d.ravel().round(), "finetune_tokens": 0,
                         "loss": loss})
    fit = fit_baseline(runs, "chinchilla", bootstrap=0)
    for name, value in truth.items():
        # float32 law evaluation limits the data's precision to ~1e-7 relative.
        assert fit.params[name].iloc[0] == pytest.approx(value, rel=0.02), name


@pytest.fixture(scope="module")
def noiseless():
    design = design_grid(["a", "b"], ["x", "y"], params=[1e6],
                         pretrain_tokens=[1e6, 1e7, 1e8, 1e9],
                         finetune_tokens=[1e4, 1e5, 1e6, 1e7])
    return simulate("transfer-gap", design, seed=3, truth={"sigma": 1e-7})


def true_raw_pair_params(sim) -> dict[str, np.ndarray]:
    """The simulation's truths per pair, converted from reference to raw units (the
    baseline's units, tokens of 1)."""
    law = get_law(sim.spec.law)
    n_s, n_t = len(sim.runs.sources), len(sim.runs.targets)
    s_idx, t_idx = np.repeat(np.arange(n_s), n_t), np.tile(np.arange(n_t), n_s)
    per_pair = {name: np.broadcast_to(at_rows(p.level, sim.true_log(name), s_idx, t_idx, n_t),
                                      (n_s * n_t,))
                for name, p in sim.spec.params.items()}
    return law.to_raw(per_pair, sim.units, np)


def test_recovers_per_pair_transfer_gaps_from_noiseless_simulation(noiseless):
    sim = noiseless
    fit = fit_baseline(sim.runs, "transfer-gap", bootstrap=4, seed=1)
    assert list(fit.params.index) == sim.runs.pair_labels  # one fit per pair
    true_gap = np.exp(true_raw_pair_params(sim)["G"])
    np.testing.assert_allclose(fit.params["G"].to_numpy(), true_gap, rtol=0.02)
    pred = fit.predict(sim.runs, ci=0.9)
    np.testing.assert_allclose(pred["loss_fit"], sim.runs.df["loss"], rtol=1e-4)
    assert (pred["loss_lower"] <= pred["loss_median"]).all()
    assert (pred["loss_median"] <= pred["loss_upper"]).all()


def test_bootstrap_intervals_cover_noisy_truth_and_observation_intervals_are_wider(noiseless):
    df = noiseless.runs.df
    df = df[df["source"] == "a"].assign(source=lambda d: d["source"].astype(str),
                                        target=lambda d: d["target"].astype(str))
    noisy = df.assign(loss=df["loss"] * np.exp(np.random.default_rng(0).normal(0, 0.02,
                                                                                len(df))))
    fit = fit_baseline(noisy, "transfer-gap", bootstrap=40, n_best=2, seed=0)
    mean = fit.predict(noisy, ci=0.9)
    obs = fit.predict(noisy, ci=0.9, kind="observation")
    width = lambda d: (d["loss_upper"] - d["loss_lower"]).to_numpy()  # noqa: E731
    assert (width(obs) > width(mean)).mean() > 0.9
    covered = (obs["loss_lower"] <= obs["loss"]) & (obs["loss"] <= obs["loss_upper"])
    assert covered.mean() > 0.6  # 90% nominal; 32 rows, a residual bootstrap


def test_global_fit_pools_every_row_and_pair_fit_refuses_unknown_pairs(noiseless):
    runs = noiseless.runs.subset(noiseless.runs.df["source"] == "a")
    glob = fit_baseline(runs, "transfer-gap", by="global", bootstrap=0, n_best=1)
    assert list(glob.params.index) == ["*->*"] and glob.params["rows"].iloc[0] == 32
    pair = fit_baseline(runs, "transfer-gap", bootstrap=0, n_best=1)
    assert list(pair.params.index) == ["a->x", "a->y"]  # source b has no rows: no fit
    other = runs.df.assign(source="b")
    with pytest.raises(ValueError, match="no fit for pair"):
        pair.predict(other)
    with pytest.raises(ValueError, match="bootstrap > 0"):
        pair.predict_draws(runs)


def test_starts_are_validated_and_default_grid_is_bounded(noiseless):
    law = get_law("chinchilla")
    grid = default_starts(law)
    assert grid.shape[1] == 5 and 100 < len(grid) <= 5000
    assert len(default_starts(get_law("effective-data"))) <= 10000
    runs = noiseless.runs
    with pytest.raises(ValueError, match="no values for"):
        fit_baseline(runs, "transfer-gap", starts={"G": [0.0]}, bootstrap=0)
    with pytest.raises(ValueError, match="columns"):
        fit_baseline(runs, "transfer-gap", starts=np.zeros((3, 2)), bootstrap=0)


def test_huber_is_quadratic_then_linear():
    r = np.array([0.0, 5e-4, -5e-4, 1e-2])
    np.testing.assert_allclose(huber(r, 1e-3, xp=np),
                               [0.0, 1.25e-7, 1.25e-7, 1e-3 * (1e-2 - 5e-4)])
