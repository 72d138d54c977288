"""Acquisition under a model discrepancy: a run nearer the quantity shrinks its drift."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from _posteriors import drift_fit

from bayes_transfer import discrepancy as dsc


def test_drift_variance_is_the_spread_of_the_drift_draws():
    """The closed form over the learned moments equals the variance of what
    ``drift_draws`` spreads (many draws; a drift with a mean and mixed powers)."""
    rng = np.random.default_rng(0)
    k = 400_000
    mean = rng.normal(-0.02, 0.01, k)
    tau = np.abs(rng.normal(0.0, 0.03, k))
    power = rng.choice(dsc.POWERS, size=k, p=[0.2, 0.5, 0.3])
    walk = np.abs(rng.normal(0.0, 0.03, k))
    d = np.array([0.0, 0.5, 1.0, 2.5, 4.0])
    share = np.array([1.0, 0.8, 0.5, 0.3, 0.9])
    draws = dsc.drift_draws(mean, tau, power, d, np.zeros(5, int), 1, rng, share=share,
                            walk=walk)
    m1, m2 = dsc.drift_moments(mean, tau, power, walk)
    exact = dsc.drift_variance(m1, m2, d, share)
    assert exact[0] == 0.0
    # Relative Monte Carlo error of a variance from 400,000 draws of a heavy-ish mixture:
    # under 1%; 3% fails for a missing mean term (the mean is ~half the spread here) and
    # for a missing near part (most of the spread at d = 0.5).
    np.testing.assert_allclose(exact[1:], draws.var(axis=0)[1:], rtol=0.03)
    no_mean = dsc.drift_variance(*dsc.drift_moments(0 * mean, tau, power, walk), d, share)
    assert not np.allclose(no_mean[1:], draws.var(axis=0)[1:], rtol=0.03)
    no_walk = dsc.drift_variance(*dsc.drift_moments(mean, tau, power), d, share)
    assert not np.allclose(no_walk[1:], draws.var(axis=0)[1:], rtol=0.03)


def test_drift_variance_with_the_mean_on_its_own_scale_is_the_spread_of_the_draws():
    """``mean_on`` apart from ``on``: the mean's spread over the draws takes the mean's
    share, the slopes' and near part's the spread's share, as ``drift_draws`` makes them.
    The mean is made large (|m| ~ 3 tau) so that a variance scaled by one share alone is
    off by far more than the Monte Carlo error."""
    rng = np.random.default_rng(1)
    k = 400_000
    mean = rng.normal(-0.06, 0.03, k)
    tau = np.abs(rng.normal(0.0, 0.01, k))
    power = rng.choice(dsc.POWERS, size=k, p=[0.3, 0.4, 0.3])
    walk = np.abs(rng.normal(0.0, 0.02, k))
    d = np.array([0.5, 1.0, 2.5, 4.0])
    share, mean_share = np.array([0.8, 0.5, 0.3, 0.2]), np.ones(4)
    draws = dsc.drift_draws(mean, tau, power, d, np.zeros(4, int), 1, rng, share=share,
                            walk=walk, mean_share=mean_share)
    m1, m2 = dsc.drift_moments(mean, tau, power, walk)
    exact = dsc.drift_variance(m1, m2, d, share, mean_share, dsc.mean_moment(mean, power))
    np.testing.assert_allclose(exact, draws.var(axis=0), rtol=0.03)
    one_share = dsc.drift_variance(m1, m2, d, share)
    assert not np.allclose(one_share, draws.var(axis=0), rtol=0.1)
    # The split form with equal shares is the plain one.
    np.testing.assert_allclose(
        dsc.drift_variance(m1, m2, d, share, share, dsc.mean_moment(mean, power)),
        one_share, rtol=1e-12)


@pytest.fixture(scope="module")
def drift_posterior():
    """A Chinchilla fit with a discrepancy along N (one global slope) on a table whose
    law is slightly wrong (as in test_discrepancy): fitted N from 1e6 to 1e8."""
    return drift_fit()


def _rows(params):
    return pd.DataFrame({"source": "web", "target": "web", "params": params,
                         "pretrain_tokens": [20 * p for p in params], "finetune_tokens": 0})


TARGET = _rows([1e10])   # 100x beyond the largest fitted N


def _mc_drift_variance(post, hi_log_n: float | None, seeds: int = 2000) -> float:
    """The drift's variance at TARGET from the posterior's own drift draws (those
    ``predict_draws`` adds: share 1 with ``on = "loss"``), pooled over seeds, with the
    fitted range's top moved to ``hi_log_n`` (as if a run there)."""
    from bayes_transfer.data import load_runs

    if hi_log_n is not None:
        idata = post.idata.copy()
        stored = json.loads(idata.posterior.attrs["discrepancy"])
        stored["params"]["hi"] = [max(stored["params"]["hi"][0], hi_log_n)]
        idata.posterior.attrs["discrepancy"] = json.dumps(stored)
        post = replace(post, idata=idata)
    table = load_runs(TARGET.assign(loss=1.0, run_id="q"))
    rng = np.random.default_rng(0)
    return float(np.concatenate([post._discrepancy_draws(table, rng, (np.ones(1), np.ones(1)))[:, 0]
                                 for _ in range(seeds)]).var())


def test_a_runs_drift_gain_is_the_fall_of_the_drift_variance_it_brings(drift_posterior):
    """A candidate's expected gain is the law's (as without a discrepancy) plus the
    fall of the drift variance at the quantity once its N is in the fitted range: zero
    for a run inside the range, more for a run nearer the quantity; the fall agrees with
    the variance of ``Posterior.drift_draws`` with the range moved."""
    from bayes_transfer.design import score_candidates
    from bayes_transfer.design.acquisition import as_draws
    from bayes_transfer.laws import features

    post = drift_posterior
    cands = _rows([3e7, 1e9, 3e9])
    with_drift = score_candidates(post, cands, quantity=TARGET).sort_values("params")
    bare = replace(post, spec=replace(post.spec, discrepancy=None))
    law_only = score_candidates(bare, cands, quantity=TARGET).sort_values("params")
    assert as_draws(bare).drift is None and as_draws(post).drift is not None
    drift_gain = with_drift["expected_gain"].to_numpy() - law_only["expected_gain"].to_numpy()
    assert abs(drift_gain[0]) < 1e-12            # inside the range: no drift gain
    assert 0 < drift_gain[1] < drift_gain[2]     # nearer the quantity: more

    before = _mc_drift_variance(post, None)
    log_n = features(cands, post.units)["log_N"]
    for i in (1, 2):
        expected = before - _mc_drift_variance(post, float(log_n[i]))
        # 2,000 x 300 draws: the Monte Carlo error of the fall is ~1%.
        print(i, drift_gain[i], expected)
        assert drift_gain[i] == pytest.approx(expected, rel=0.03), (i, drift_gain, expected)
    assert drift_gain[2] > 0.2 * before  # it matters: a large share of the drift


def test_a_batch_counts_the_range_its_earlier_picks_extend(drift_posterior):
    """Once the run at 3e9 is picked, one at 1e9 lies inside the extended range: its
    drift gain is gone, and its expected gain is the law's alone, given the first pick.
    The batch's ``uncertainty_left`` counts the drift."""
    from bayes_transfer.design import suggest
    from bayes_transfer.design.acquisition import (
        anomalies,
        as_draws,
        condition,
        gain_terms,
        log_mean_draws,
        quantity_draws,
    )
    from bayes_transfer.extrapolation import ExtrapolationWarning

    post = drift_posterior
    cands = _rows([1e9, 3e9])
    with warnings.catch_warnings():  # both lie beyond the fitted N: that is the point
        warnings.simplefilter("ignore", ExtrapolationWarning)
        picks = suggest(post, cands, batch=2, quantity=TARGET,
                        cost=lambda df: np.ones(len(df)))
    assert picks["params"].tolist() == [3e9, 1e9]
    draws = as_draws(post)
    q, mu = anomalies(quantity_draws(draws, TARGET).draws), anomalies(log_mean_draws(draws, cands))
    q, mu = condition(q, mu, 1, draws.noise_variance())  # the run at 3e9, observed
    law_gain = float(gain_terms(q, mu, draws.noise_variance())[:, 0].sum())
    assert picks["expected_gain"].iloc[1] == pytest.approx(law_gain, rel=1e-5)
    assert 0 < picks["uncertainty_left"].iloc[1] < picks["uncertainty_left"].iloc[0] < 1


def test_a_split_drift_fits_predicts_and_scores_with_one_variance():
    """``on = "reducible"`` with ``mean_on = "loss"`` end to end: the fit learns it, the
    report states it, and the drift variance acquisition credits at the quantity (the
    closed form over the learned moments, each part with its own share) is the variance
    of the drift that ``predict_draws`` adds there."""
    from bayes_transfer.data import load_runs
    from bayes_transfer.design.acquisition import as_draws, quantity_draws
    from bayes_transfer.inference import drift_shares

    post = drift_fit(on="reducible", mean_on="loss")
    row = post.discrepancy_table().iloc[0]
    assert (row["on"], row["mean_on"]) == ("reducible", "loss")
    q = quantity_draws(as_draws(post), TARGET)
    table = load_runs(TARGET.assign(loss=1.0, run_id="q")).with_levels(post.runs.sources,
                                                                       post.runs.targets)
    share, mean_share = drift_shares(post, post.spec.discrepancy, table)
    assert 0 < share[0] < 0.5 and mean_share[0] == 1.0
    np.testing.assert_allclose(q.drift.share, share)
    np.testing.assert_allclose(q.drift.mean_share, mean_share)
    rng = np.random.default_rng(0)
    mc = np.concatenate([post._discrepancy_draws(table, rng, (share, mean_share))[:, 0]
                         for _ in range(2000)]).var()
    # 2,000 x 300 draws: the Monte Carlo error of the variance is ~1%.
    assert q.drift.variance()[0] == pytest.approx(mc, rel=0.03)


def test_quantity_rows_the_law_cannot_predict_are_named(drift_posterior):
    """A row no draw of the law can predict would make every gain NaN and the batch
    silently empty: it is refused, naming the row and the law's rule."""
    from bayes_transfer.design import suggest

    bad = pd.concat([TARGET, TARGET.assign(pretrain_tokens=0)], ignore_index=True)
    with pytest.raises(ValueError, match=r"quantity rows: row 2 .*chinchilla.*needs"):
        suggest(drift_posterior, _rows([1e9]), quantity=bad)
