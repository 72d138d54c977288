"""The vectorised R-hat and ESS (bayes_transfer.diagnostics.convergence) against ArviZ's.

Our diagnostics must be ArviZ's numbers, only faster: the same rank normalisation, the
same split chains, the same Geyer truncation of the autocorrelations. Each case is built
to reach a different branch of ArviZ's loops: white noise (the sum of pairs stays positive
to the lag limit on short chains), a slow AR(1) chain (cut early), an antithetic one
(negative lag-1 autocorrelation, the monotone sequence at work), chains that disagree,
ties, a constant, a NaN, one chain, and the fewest draws allowed.

Then the largest R-hat that chance alone gives over many quantities
(``rhat_by_chance``), checked as a quantile against simulated independent draws.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pytest
import xarray as xr

from bayes_transfer.diagnostics import (
    RHAT_MAX,
    convergence,
    convergence_arrays,
    diagnose,
    draws_for_rhat,
    rhat_by_chance,
)


def _columns(chains: int, draws: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(chains, draws, 7))
    for j in range(1, draws):
        x[:, j, 1] = 0.95 * x[:, j - 1, 1] + 0.3 * x[:, j, 1]   # slow AR(1)
        x[:, j, 5] = -0.6 * x[:, j - 1, 5] + x[:, j, 5]          # antithetic
    x[0, :, 2] += 3.0                                            # one chain apart
    x[:, :, 3] = np.round(x[:, :, 3])                            # ties
    x[:, :, 4] = 1.5                                             # constant
    x[:, :, 6] = np.where(x[:, :, 6] > 1.2, 1.2, x[:, :, 6])     # a tied upper tail
    return x


def _arviz(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = az.convert_to_dataset({"v": x})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = (az.rhat(ds)["v"].values if x.shape[0] > 1
                else np.full(x.shape[2], np.nan))
        return (rhat, az.ess(ds, method="bulk")["v"].values,
                az.ess(ds, method="tail")["v"].values)


@pytest.mark.parametrize("chains,draws", [(1, 4), (2, 4), (2, 5), (2, 9), (4, 100),
                                          (2, 501), (3, 1000), (1, 300)])
def test_convergence_equals_arviz(chains: int, draws: int) -> None:
    x = _columns(chains, draws, seed=chains * 1000 + draws)
    ours = convergence_arrays(x)
    for mine, theirs, what in zip(ours, _arviz(x), ("rhat", "ess_bulk", "ess_tail"),
                                  strict=True):
        np.testing.assert_array_equal(np.isnan(mine), np.isnan(theirs), err_msg=what)
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, err_msg=what)


def test_short_chains_cut_at_the_lag_limit() -> None:
    # 2 chains x 14 draws, seed 123: the sums of pairs of the bulk's autocorrelations stay
    # positive up to ArviZ's last lag, where the even lag is negative: the branch where
    # that lag still counts although negative.
    x = np.random.default_rng(123).normal(size=(2, 14, 1))
    np.testing.assert_allclose(convergence_arrays(x)[1], _arviz(x)[1], rtol=1e-9)


def test_nan_column_is_nan_and_leaves_the_others() -> None:
    x = np.random.default_rng(3).normal(size=(2, 60, 3))
    x[1, 7, 0] = np.nan
    rhat, bulk, tail = convergence_arrays(x)
    assert np.isnan(rhat[0]) and np.isnan(bulk[0]) and np.isnan(tail[0])
    _, bulk_ref, _ = _arviz(x[:, :, 1:])
    np.testing.assert_allclose(bulk[1:], bulk_ref, rtol=1e-9)


def test_many_columns_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # More columns than one block: every block's results land on their own columns.
    import bayes_transfer.diagnostics as diagnostics

    x = _columns(2, 80, seed=5)
    x = np.concatenate([x, x[:, ::-1] * 2.0, x + 1.0], axis=2)  # 21 distinct columns
    whole = convergence_arrays(x)
    monkeypatch.setattr(diagnostics, "_COLUMNS", 4)
    for a, b in zip(whole, convergence_arrays(x), strict=True):
        np.testing.assert_array_equal(a, b)


def test_dataset_keeps_names_dims_and_coords() -> None:
    rng = np.random.default_rng(4)
    post = xr.Dataset(
        {"a": (("chain", "draw"), rng.normal(size=(2, 50))),
         "b": (("chain", "draw", "pair"), rng.normal(size=(2, 50, 3)))},
        coords={"pair": ["x->y", "x->z", "w->y"]})
    found = convergence(post)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {"rhat": az.rhat(post), "ess_bulk": az.ess(post, method="bulk"),
                    "ess_tail": az.ess(post, method="tail")}
    for key, ds in expected.items():
        assert list(found[key].data_vars) == ["a", "b"]
        assert list(found[key]["b"]["pair"].values) == ["x->y", "x->z", "w->y"]
        for name in ds.data_vars:
            np.testing.assert_allclose(found[key][name].values, ds[name].values,
                                       rtol=1e-9, err_msg=f"{key} {name}")


def test_float32_draws_give_the_float64_results() -> None:
    # NumPyro's draws are float32; blocks are converted one at a time, and the result
    # must be that of the float64 values (the conversion is exact).
    x = _columns(2, 120, seed=9).astype(np.float32)
    for a, b in zip(convergence_arrays(x), convergence_arrays(x.astype(float)), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("chains", "draws", "quantities"), [(2, 60, 50), (3, 40, 100)])
def test_rhat_by_chance_is_the_quantile_of_independent_draws(chains: int, draws: int,
                                                              quantities: int) -> None:
    # 400 replicates of `quantities` independent normal columns: the share whose largest
    # R-hat is at or below the prob quantile is prob, within ~2.5 standard errors (0.025
    # at 0.5, 0.015 at 0.9). Short chains, where the within-chain variance's own spread
    # matters: the chi-square limit of the F ratio gave 0.29 at 0.5 on the second case,
    # the bulk R-hat alone (not the larger of bulk and folded) 0.20-0.26.
    reps = 400
    x = np.random.default_rng(7).normal(size=(chains, draws, quantities * reps))
    largest = convergence_arrays(x)[0].reshape(reps, quantities).max(axis=1)
    for prob, tol in [(0.5, 0.065), (0.9, 0.045)]:
        share = float(np.mean(largest <= rhat_by_chance(chains, draws, quantities, prob)))
        assert abs(share - prob) <= tol, (prob, share)


def test_draws_for_rhat_is_the_fewest_that_meet_the_threshold() -> None:
    for chains, quantities in [(2, 10_000), (4, 10_000), (2, 1), (3, 250)]:
        n = draws_for_rhat(chains, quantities)
        assert n % 2 == 0
        assert rhat_by_chance(chains, n, quantities) <= RHAT_MAX
        assert rhat_by_chance(chains, n - 2, quantities) > RHAT_MAX
    # More quantities need more draws; more chains, fewer draws a chain.
    assert draws_for_rhat(2, 10_000) > draws_for_rhat(2, 100) > draws_for_rhat(4, 100)
    with pytest.raises(ValueError, match="chains >= 2"):
        rhat_by_chance(1, 100, 10)


def test_diagnose_says_when_chance_explains_the_largest_rhat() -> None:
    # 3,000 independent quantities, 2 chains x 60 draws: the largest R-hat is above 1.01
    # by chance alone, and the message says so with the draws it would take.
    rng = np.random.default_rng(3)
    many = az.from_dict(posterior={"v": rng.normal(size=(2, 60, 3000))})
    d = diagnose(many, warn=False)
    rhat_problem = next(p for p in d.problems if p.startswith("R-hat"))
    needed = draws_for_rhat(2, 3000)
    assert "3,000 quantities" in rhat_problem
    assert f"at least {needed:,} draws a chain" in rhat_problem
    # A parameter stored with its log is one quantity, not two.
    draws = rng.normal(size=(2, 60, 3000))
    both = az.from_dict(posterior={"log_v": draws, "v": np.exp(draws)})
    rhat_problem = next(p for p in diagnose(both, warn=False).problems
                        if p.startswith("R-hat"))
    assert "3,000 quantities" in rhat_problem, rhat_problem
    # Chains that disagree: chance does not explain it, nothing is added, whether among
    # many quantities or alone.
    apart = rng.normal(size=(2, 60, 3000))
    apart[0, :, 0] += 3.0  # R-hat ~1.8, far beyond chance's ~1.10 at 2 x 60 draws
    for draws in (apart, apart[:, :, :1]):
        d = diagnose(az.from_dict(posterior={"w": draws}), warn=False)
        rhat_problem = next(p for p in d.problems if p.startswith("R-hat"))
        assert "by chance" not in rhat_problem


def test_diagnose_fails_when_no_chain_moved() -> None:
    # Stuck chains (every transition diverged): each value constant within its chain, so
    # no R-hat is defined; the fit must fail and say why, not pass on "R-hat nan".
    stuck = np.broadcast_to(np.array([0.3, -1.2])[:, None, None], (2, 50, 4))
    d = diagnose(az.from_dict(posterior={"v": stuck}), warn=False)
    assert not d.ok
    assert any("no chain moved" in p for p in d.problems), d.problems
    # One chain: R-hat is undefined by construction, not a failure of its own.
    one = az.from_dict(posterior={"v": np.random.default_rng(0).normal(size=(1, 400, 2))})
    assert not any("no chain moved" in p for p in diagnose(one, warn=False).problems)
