"""The discrepancy term: its pieces, its calibration, and a fit that carries it."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from _posteriors import drift_fit

from bayes_transfer import discrepancy as dsc
from bayes_transfer.spec import ModelSpec, SpecError


def test_distances_are_zero_inside_and_grow_outside():
    lo, hi = np.array([0.0, 1.0]), np.array([2.0, 3.0])
    x = np.array([1.0, 2.5, 4.0, -1.0, -np.inf])
    group = np.array([0, 0, 1, 1, 0])
    d = dsc.distances(x, lo[group], hi[group])
    np.testing.assert_allclose(d, [0.0, 0.5, 1.0, 2.0, 0.0])


def test_groups_without_rows_take_the_range_of_all():
    lo, hi = dsc.ranges(np.array([1.0, 2.0, 5.0]), np.array([0, 0, 2]), 3)
    assert np.isnan(lo[1]) and hi[2] == 5.0
    flo, fhi = dsc.fill_ranges(lo, hi)
    assert flo[1] == 1.0 and fhi[1] == 5.0


def test_drift_posterior_is_calibrated():
    """Draw the mean slope, tau, walk and power from their priors and errors from the
    model; the posterior's 90% intervals must hold the truths 90% of the time (300
    replicates: 0.85-0.95 is +-2.9 binomial sd)."""
    rng = np.random.default_rng(0)
    scale, hits, n_rep = 0.05, np.zeros(3), 300
    for _ in range(n_rep):
        mean, tau, walk = rng.normal(0, scale), abs(rng.normal(0, scale)), \
            abs(rng.normal(0, scale))
        power = rng.choice(dsc.POWERS)
        group = np.repeat(np.arange(6), 4)
        d = rng.uniform(0.1, 2.0, size=group.size)
        sd = np.full(group.size, 0.01)
        slopes, near = mean + tau * rng.standard_normal(6), walk * rng.standard_normal(6)
        resid = (slopes[group] * d**power + near[group] * d**dsc.WALK_POWER
                 + sd * rng.standard_normal(group.size))
        draws = dsc.drift_posterior(resid, sd, d, group, scale, 2000, rng)
        for k, (truth, post) in enumerate(zip((mean, tau, walk), draws[:2] + draws[3:],
                                              strict=True)):
            lo, hi = np.quantile(post, [0.05, 0.95])
            hits[k] += lo <= truth <= hi
    assert ((0.85 <= hits / n_rep) & (hits / n_rep <= 0.95)).all(), hits / n_rep


def test_the_grid_density_is_the_multivariate_normal():
    """The grid's 2 x 2 algebra (Woodbury per group, summed on the (tau, walk) plane) is
    the log density of each group's errors under their full covariance, plus the priors."""
    from scipy.stats import halfnorm, multivariate_normal, norm

    rng = np.random.default_rng(3)
    group = rng.integers(0, 7, 40)
    d, sd = rng.uniform(0.1, 3.0, 40), rng.uniform(0.01, 0.03, 40)
    share = rng.uniform(0.3, 1.0, 40)
    u, v = share * d**1.5, share * d**dsc.WALK_POWER
    resid = (0.02 * u * rng.standard_normal(7)[group] + 0.03 * v * rng.standard_normal(7)[group]
             + sd * rng.standard_normal(40) - 0.01 * u)
    means, taus, walks, logp, _ = dsc._drift_grid_on(dsc._group_sums(resid, sd, u, v, group),
                                                     0.02, 0.03, 0.2)
    for i, j, h in [(10, 5, 7), (60, 0, 0), (80, 30, 2), (61, 59, 59)]:
        m, t, w = means[i], taus[j], walks[h]
        exact = (norm(0, 0.02).logpdf(m) + halfnorm(0, 0.02).logpdf(t)
                 + halfnorm(0, 0.03).logpdf(w))
        for g in np.unique(group):
            k = group == g
            cov = np.diag(sd[k] ** 2) + t**2 * np.outer(u[k], u[k]) + w**2 * np.outer(v[k], v[k])
            exact += multivariate_normal(m * u[k], cov).logpdf(resid[k])
        assert logp[i, j, h] == pytest.approx(exact, abs=1e-8)


def test_walk_scale_zero_is_the_trend_alone():
    """``walk_scale = 0`` leaves the near part out: walk is 0 in every draw, and the
    trend's posterior is what the near errors then force on it (wider)."""
    rng = np.random.default_rng(4)
    group = np.repeat(np.arange(20), 4)
    d = np.tile(np.array([0.3, 0.7, 1.5, 3.0]), 20)
    sd = np.full(group.size, 0.003)
    resid = 0.04 * rng.standard_normal(20)[group] * np.sqrt(d) + sd * rng.standard_normal(80)
    with_near = dsc.drift_posterior(resid, sd, d, group, 0.02, 4000, rng)
    alone = dsc.drift_posterior(resid, sd, d, group, 0.02, 4000, rng, walk_scale=0.0)
    assert np.all(alone[3] == 0.0) and np.quantile(with_near[3], 0.05) > 0.025
    assert np.median(alone[1]) > 2 * np.median(with_near[1])
    assert np.mean(alone[2] == 1.0) > 0.9    # the slowest trend the powers allow


def test_drift_posterior_without_data_is_the_prior():
    rng = np.random.default_rng(1)
    mean, tau, _, walk = dsc.drift_posterior(np.zeros(0), np.zeros(0), np.zeros(0),
                                             np.zeros(0, int), 0.05, 20000, rng)
    assert abs(np.median(tau) - 0.05 * 0.6745) < 0.002 and abs(np.std(mean) - 0.05) < 0.002
    assert abs(np.median(walk) - 0.05 * 0.6745) < 0.002


def test_drift_draws_share_a_slope_within_a_group():
    rng = np.random.default_rng(2)
    out = dsc.drift_draws(np.full(5000, 0.02), np.full(5000, 0.1), np.ones(5000),
                          np.array([1.0, 2.0, 1.0]), np.array([0, 0, 1]), 2, rng)
    np.testing.assert_allclose(out[:, 1], 2 * out[:, 0])
    assert abs(np.corrcoef(out[:, 0] - 0.02, out[:, 2] - 0.02)[0, 1]) < 0.05
    assert abs(out[:, 0].std() - 0.1) < 0.005 and abs(out[:, 0].mean() - 0.02) < 0.005
    # The near part: one zero-mean slope per group too, growing as sqrt(d).
    near = dsc.drift_draws(np.zeros(5000), np.zeros(5000), np.ones(5000),
                           np.array([1.0, 4.0, 1.0]), np.array([0, 0, 1]), 2, rng,
                           walk=np.full(5000, 0.1))
    np.testing.assert_allclose(near[:, 1], 2 * near[:, 0])
    assert abs(np.corrcoef(near[:, 0], near[:, 2])[0, 1]) < 0.05
    assert abs(near[:, 0].std() - 0.1) < 0.005 and abs(near[:, 0].mean()) < 0.005


def test_near_errors_are_learned_as_the_walk_beside_a_fast_trend():
    """The failure the near part is for (FLAN, one doubling out): errors of a trend that
    grows as d^2 far out plus a part that is already there one step out. Told both, the
    drift's sd at d = 0.7 holds the truth; the trend alone (walk 0) is several times too
    narrow there, as the shipped single power was."""
    rng = np.random.default_rng(11)
    group = np.repeat(np.arange(40), 6)
    d = np.tile(np.array([0.4, 0.7, 1.4, 2.1, 2.8, 4.0]), 40)
    sd = np.full(group.size, 0.005)
    resid = (0.01 * rng.standard_normal(40)[group] * d**2
             + 0.04 * rng.standard_normal(40)[group] * np.sqrt(d)
             + sd * rng.standard_normal(group.size))
    mean, tau, power, walk = dsc.drift_posterior(resid, sd, d, group, 0.02, 4000, rng)
    m1, m2 = dsc.drift_moments(mean, tau, power, walk)
    near_sd = float(np.sqrt(dsc.drift_variance(m1, m2, np.array(0.7))))
    truth = float(np.hypot(0.01 * 0.7**2, 0.04 * np.sqrt(0.7)))
    assert abs(near_sd / truth - 1) < 0.25, (near_sd, truth)
    assert np.quantile(walk, 0.05) > 0.02 and np.mean(power == 2.0) > 0.5
    trend_only = float(np.sqrt(dsc.drift_variance(*dsc.drift_moments(mean, tau, power),
                                                  np.array(0.7))))
    assert trend_only < 0.5 * truth


@pytest.mark.parametrize("section, words", [
    ({"axes": ["bogus"]}, "discrepancy.axes"),
    ({"axes": "params"}, "discrepancy.axes"),
    ({"level": "row"}, "discrepancy.level"),
    ({"scale": -1.0}, "discrepancy.scale"),
    ({"scale": float("inf")}, "discrepancy.scale"),
    ({"holdout": 1.0}, "discrepancy.holdout"),
    ({"holdout": []}, "discrepancy.holdout"),
    ({"holdout": [0.5, 0.5]}, "discrepancy.holdout"),
    ({"holdout": [0.5, 1.5]}, "discrepancy.holdout"),
    ({"holdout": [0.5, "0.1"]}, "discrepancy.holdout"),
    ({"holdout": [[0.5]]}, "discrepancy.holdout"),
    ({"knots": 4}, "unknown key of discrepancy"),
    ({"on": "log_loss"}, "discrepancy.on"),
    ({"walk_scale": -0.1}, "discrepancy.walk_scale"),
    ({"walk_scale": True}, "discrepancy.walk_scale"),
    ({"walk_scale": "0.1"}, "discrepancy.walk_scale"),
])
def test_bad_discrepancy_sections_are_refused(section, words):
    with pytest.raises(SpecError, match=words):
        ModelSpec.from_dict({"law": "chinchilla", "discrepancy": section})


def test_a_reducible_drift_needs_a_floor_and_survives_json(monkeypatch):
    from bayes_transfer.laws import LAWS, Law

    spec = ModelSpec.from_dict({"law": "rectified", "discrepancy": {"on": "reducible"}})
    assert ModelSpec.from_json(spec.to_json()).discrepancy.on == "reducible"

    def no_floor(x, lp, xp=None):
        return lp["A"] - xp.exp(lp["alpha"]) * x["log_N"]

    # In the global registry for this test only (monkeypatch takes it out again): a test
    # of every law's documentation may run later in the same process.
    monkeypatch.setitem(LAWS, "test-no-floor",
                        Law("test-no-floor", ("A", "alpha"), no_floor, formula="L = A N^-alpha"))
    with pytest.raises(SpecError, match="needs a law with a floor E"):
        ModelSpec.from_dict({"law": "test-no-floor", "discrepancy": {"on": "reducible"}})
    with pytest.raises(SpecError, match="mean_on = .reducible. needs a law with a floor"):
        ModelSpec.from_dict({"law": "test-no-floor", "discrepancy": {"mean_on": "reducible"}})


def test_the_drift_of_the_reducible_loss_is_learned_through_each_rows_share():
    """Errors made as ``share * slope * d`` (curves far above their floor drift more):
    told the shares, the posterior of the mean slope holds the truth; read as a drift
    of the log loss (share 1), it is pulled towards the rows that barely move."""
    rng = np.random.default_rng(7)
    group = np.repeat(np.arange(30), 4)
    d = np.tile(np.linspace(0.5, 2.0, 4), 30)
    share = np.repeat(rng.uniform(0.05, 1.0, 30), 4)
    sd = np.full(group.size, 0.002)
    slopes = -0.05 + 0.01 * rng.standard_normal(30)
    resid = share * slopes[group] * d + sd * rng.standard_normal(group.size)
    told = dsc.drift_posterior(resid, sd, d, group, 0.05, 4000, rng, share=share)
    lo, hi = np.quantile(told[0], [0.05, 0.95])
    assert lo <= -0.05 <= hi and np.mean(told[2] == 1.0) > 0.9
    assert abs(np.median(told[1]) - 0.01) < 0.004  # the slopes' own spread
    assert np.median(told[3]) < 0.004               # no near part was made
    untold = dsc.drift_posterior(resid, sd, d, group, 0.05, 4000, rng)[0]
    assert np.quantile(untold, 0.05) > -0.04  # about -0.05 times the mean share
    # and the draws carry each row's share
    out = dsc.drift_draws(np.full(3, -0.05), np.zeros(3), np.ones(3), np.array([1.0, 1.0]),
                          np.array([0, 0]), 1, rng, share=np.array([1.0, 0.25]))
    np.testing.assert_allclose(out, [[-0.05, -0.0125]] * 3)


def test_a_mean_on_the_log_loss_with_a_spread_on_the_reducible_loss_is_learned_apart():
    """Errors made as ``m d + share tau z d`` (``mean_on = "loss"``, ``on = "reducible"``):
    told both shares, the posterior holds the mean slope and the slopes' spread; read
    with the mean on the share too, the mean is pulled away (the rows' shares average
    0.5, so their mean error reads as a slope of about twice the truth)."""
    rng = np.random.default_rng(11)
    group = np.repeat(np.arange(40), 4)
    d = np.tile(np.linspace(0.5, 2.0, 4), 40)
    share = np.repeat(rng.uniform(0.05, 0.95, 40), 4)
    sd = np.full(group.size, 0.002)
    slopes = 0.02 * rng.standard_normal(40)
    resid = -0.04 * d + share * slopes[group] * d + sd * rng.standard_normal(group.size)
    told = dsc.drift_posterior(resid, sd, d, group, 0.05, 4000, rng, share=share,
                               mean_share=np.ones_like(d))
    lo, hi = np.quantile(told[0], [0.05, 0.95])
    assert lo <= -0.04 <= hi and np.mean(told[2] == 1.0) > 0.9
    assert abs(np.median(told[1]) - 0.02) < 0.007
    assert np.median(told[3]) < 0.004
    on_share = dsc.drift_posterior(resid, sd, d, group, 0.05, 4000, rng, share=share)[0]
    assert np.quantile(on_share, 0.95) < -0.055
    # and the draws put the mean on its own share, the slopes on theirs
    out = dsc.drift_draws(np.full(3, -0.05), np.full(3, 0.1), np.ones(3),
                          np.array([1.0, 1.0]), np.array([0, 0]), 1,
                          np.random.default_rng(0), share=np.array([0.0, 0.0]),
                          mean_share=np.array([1.0, 0.5]))
    np.testing.assert_allclose(out, [[-0.05, -0.025]] * 3)


def test_mean_on_is_checked_and_survives_json():
    spec = ModelSpec.from_dict({"law": "rectified", "discrepancy": {
        "on": "reducible", "mean_on": "loss"}})
    assert spec.discrepancy.trend_on == "loss"
    assert ModelSpec.from_json(spec.to_json()).discrepancy == spec.discrepancy
    assert ModelSpec.from_dict({"law": "rectified", "discrepancy": {
        "on": "reducible"}}).discrepancy.trend_on == "reducible"
    with pytest.raises(SpecError, match="discrepancy.mean_on"):
        ModelSpec.from_dict({"law": "rectified", "discrepancy": {"mean_on": "floor"}})


def test_drift_power_follows_the_data():
    """Errors that grow as d^2 choose power 2; errors that grow linearly, power 1."""
    rng = np.random.default_rng(5)
    group = np.repeat(np.arange(20), 5)
    d = np.tile(np.linspace(0.2, 2.5, 5), 20)
    sd = np.full(group.size, 0.002)
    slopes = 0.03 * rng.standard_normal(20)
    for power in (1.0, 2.0):
        resid = slopes[group] * d**power + sd * rng.standard_normal(group.size)
        got = dsc.drift_posterior(resid, sd, d, group, 0.05, 4000, rng)[2]
        assert np.mean(got == power) > 0.9, (power, np.unique(got, return_counts=True))


@pytest.mark.parametrize("holdout, walk_scale", [(0.3, None), ([0.5, 0.1], 0.0),
                                                 (0.3, 0.05)])
def test_spec_round_trips_through_json(holdout, walk_scale):
    section = {"axes": ["params", "tokens"], "scale": 0.1, "holdout": holdout}
    if walk_scale is not None:
        section["walk_scale"] = walk_scale
    spec = ModelSpec.from_dict({"law": "chinchilla", "discrepancy": section})
    assert spec.discrepancy.near_scale == (0.1 if walk_scale is None else walk_scale)
    again = ModelSpec.from_json(spec.to_json())
    assert again.discrepancy == spec.discrepancy and again == spec
    assert spec.discrepancy.holdouts == tuple(np.atleast_1d(holdout))


def test_a_row_barely_beyond_the_range_leaves_the_drift_posterior_as_it_was():
    """A row at a tiny distance carries almost nothing about the slope; it used to size
    the grid (3 |r| / u) so coarsely that tau's posterior was one cell wide."""
    rng = np.random.default_rng(7)
    group = np.repeat(np.arange(10), 4)
    d = np.tile(np.linspace(0.5, 2.0, 4), 10)
    sd = np.full(group.size, 0.002)
    resid = (0.02 * rng.standard_normal(10))[group] * d + sd * rng.standard_normal(group.size)
    before = dsc.drift_posterior(resid, sd, d, group, 0.02, 4000, np.random.default_rng(0))
    after = dsc.drift_posterior(np.append(resid, 0.05), np.append(sd, 0.01),
                                np.append(d, 1e-4), np.append(group, 0), 0.02, 4000,
                                np.random.default_rng(0))
    for b, a in zip(before[:2] + before[3:], after[:2] + after[3:], strict=True):
        np.testing.assert_allclose(np.quantile(a, [0.05, 0.5, 0.95]),
                                   np.quantile(b, [0.05, 0.5, 0.95]), atol=0.002)


@pytest.fixture(scope="module")
def drift_posterior(tmp_path_factory):
    """A Chinchilla fit with a discrepancy on a table whose law is slightly wrong."""
    post = drift_fit()
    path = tmp_path_factory.mktemp("disc") / "post.nc"
    post.save(path)
    return post, path


def test_fit_learns_tau_and_intervals_widen_outside_the_range(drift_posterior):
    post, _ = drift_posterior
    info = post.idata.posterior.attrs["discrepancy"]
    assert '"rows"' in info
    assert post.idata.posterior["disc_tau_params"].shape[:2] == (1, 300)
    assert post.idata.posterior["disc_mean_params"].shape[:2] == (1, 300)
    rows = pd.DataFrame({"source": "web", "target": "web", "params": [3e7, 1e9, 1e10],
                         "pretrain_tokens": [6e8, 2e10, 2e11], "finetune_tokens": 0})
    draws = np.log(post.predict_draws(rows))
    width = np.quantile(draws, 0.95, axis=0) - np.quantile(draws, 0.05, axis=0)
    assert width[0] < width[1] < width[2]
    # Without the discrepancy the far prediction is much narrower.
    from dataclasses import replace

    bare = replace(post, spec=replace(post.spec, discrepancy=None))
    bare_draws = np.log(bare.predict_draws(rows))
    bare_width = np.quantile(bare_draws, 0.95, axis=0) - np.quantile(bare_draws, 0.05, axis=0)
    assert width[2] > 1.5 * bare_width[2]


def test_a_reducible_drift_scales_with_each_rows_share_above_the_floor(drift_posterior):
    """``on = "reducible"``: the same drift draws, times the posterior median of
    ``(L - E) / L`` at each row; the far row (near the floor) moves least."""
    from dataclasses import replace

    post, _ = drift_posterior
    rows = pd.DataFrame({"source": "web", "target": "web", "params": [3e8, 1e10, 1e12],
                         "pretrain_tokens": [6e9, 2e11, 2e13], "finetune_tokens": 0})
    bare = replace(post, spec=replace(post.spec, discrepancy=None))
    law = np.log(bare.predict_draws(rows))
    as_loss = np.log(post.predict_draws(rows, seed=1)) - law
    on = replace(post.spec.discrepancy, on="reducible")
    reducible = replace(post, spec=replace(post.spec, discrepancy=on))
    as_reducible = np.log(reducible.predict_draws(rows, seed=1)) - law
    floor = np.exp(post.idata.posterior["log_E"].values.reshape(-1, 1))
    share = np.median(1 - floor / np.exp(law), axis=0)
    assert (share > 0).all() and (share < 1).all() and share[2] < share[0]
    np.testing.assert_allclose(as_reducible, as_loss * share, rtol=1e-4, atol=1e-6)  # float32


def test_discrepancy_survives_save_and_load(drift_posterior):
    from bayes_transfer.inference import Posterior

    post, path = drift_posterior
    again = Posterior.load(path)
    assert again.spec.discrepancy == post.spec.discrepancy
    rows = pd.DataFrame({"source": "web", "target": "web", "params": [1e9],
                         "pretrain_tokens": [2e10], "finetune_tokens": 0})
    np.testing.assert_allclose(again.predict_draws(rows, seed=4), post.predict_draws(rows, seed=4))


def test_rows_beyond_the_internal_extrapolations_reach_are_flagged(drift_posterior,
                                                                   tmp_path):
    """The file keeps how far the internal extrapolation reached (its farthest held-out
    row beyond the rows below the cut); a row beyond that is flagged and ``predict``
    warns, one within it is not; a file without the figure (saved before it) flags
    nothing, and one with a negative figure is damaged."""
    from bayes_transfer.extrapolation import ExtrapolationWarning
    from bayes_transfer.inference import Posterior, PosteriorFileError

    post, path = drift_posterior
    stored = json.loads(post.idata.posterior.attrs["discrepancy"])["params"]
    x = post.features(post.runs.df)["log_N"]
    below = x[x <= np.log(stored["cut"]) + 1e-9]
    reach = stored["max_distance"]
    np.testing.assert_allclose(reach, x.max() - below.max(), rtol=1e-6)
    top, bottom = float(post.runs.df["params"].max()), float(post.runs.df["params"].min())
    # The last row lies below the range, nearer than the reach: the cuts never looked
    # below, so it is flagged all the same.
    rows = pd.DataFrame({"source": "web", "target": "web",
                         "params": np.round([top / 2, top * np.exp(0.9 * reach),
                                             top * np.exp(1.2 * reach),
                                             bottom * np.exp(-0.5 * reach)]),
                         "pretrain_tokens": [2e9, 2e10, 2e11, 1e8], "finetune_tokens": 0})
    for p in (post, Posterior.load(path)):
        flagged, why = p.beyond_calibration(rows)
        assert flagged.tolist() == [False, False, True, True]
        assert why.startswith("2 of 4 rows") and f"{np.exp(reach):.3g}x" in why
        assert "below their group's fitted range" in why, why
    with pytest.warns(ExtrapolationWarning, match="calibrated on: params up to"):
        post.predict(rows)
    meta = json.loads(post.idata.posterior.attrs["discrepancy"])
    for value, damaged in ((None, False), (-1.0, True)):
        tree = Posterior.load(path)
        if value is None:
            del meta["params"]["max_distance"]
        else:
            meta["params"]["max_distance"] = value
        tree.idata.posterior.attrs["discrepancy"] = json.dumps(meta)
        tree.save(tmp_path / "edited.nc")
        if damaged:
            with pytest.raises(PosteriorFileError, match="damaged"):
                Posterior.load(tmp_path / "edited.nc")
        else:
            assert Posterior.load(tmp_path / "edited.nc").beyond_calibration(rows)[1] is None


def test_report_states_what_the_discrepancy_learned_and_its_reach(drift_posterior):
    """``discrepancy_table`` gives per axis the learned drift and the reach (how many
    times beyond the range the internal extrapolations checked), from the saved file as
    from the fit; ``report`` prints it under the gaps and puts it in its JSON; a
    posterior without a discrepancy has an empty table and no such key."""
    from typer.testing import CliRunner

    from bayes_transfer.cli import app
    from bayes_transfer.inference import Posterior

    post, path = drift_posterior
    stored = json.loads(post.idata.posterior.attrs["discrepancy"])["params"]
    table = Posterior.load(path).discrepancy_table()
    assert table["axis"].tolist() == ["params"] and table["level"].tolist() == ["global"]
    row = table.iloc[0]
    np.testing.assert_allclose(row["reach"], np.exp(stored["max_distance"]), rtol=1e-9)
    assert row["cuts"] == 1 and row["rows_held_out"] == stored["rows"] > 0
    np.testing.assert_allclose(row["drift_mean"], stored["mean_median"], rtol=1e-9)
    np.testing.assert_allclose(row["drift_tau"], stored["tau_median"], rtol=1e-9)
    assert np.isnan(row["late_gain"])      # the fixture's spec has no late trend
    runner = CliRunner()
    doc = json.loads(runner.invoke(app, ["report", str(path), "--format", "json"]).stdout)
    np.testing.assert_allclose(doc["discrepancy"][0]["reach"], row["reach"], rtol=1e-9)
    text = runner.invoke(app, ["report", str(path)], terminal_width=300).stdout
    assert "model discrepancy" in text and f"{row['reach']:.4g}" in text, text
    bare = Posterior(idata=post.idata, spec=replace(post.spec, discrepancy=None),
                     runs=post.runs, diagnostics=post.diagnostics)
    assert bare.discrepancy_table().empty


def test_a_posterior_saved_before_the_near_part_loads_and_predicts(drift_posterior, tmp_path):
    """A file written before the drift had a near part (no ``disc_walk_<axis>``) loads,
    and its predictions are those of the trend alone; suggest's closed-form drift
    variance reads it too."""
    from bayes_transfer.design.drift import drift_model
    from bayes_transfer.inference import Posterior

    post, _ = drift_posterior
    old = Posterior(idata=post.idata.copy(), spec=post.spec, runs=post.runs,
                    diagnostics=post.diagnostics)
    old.idata.posterior = old.idata.posterior.drop_vars(
        [v for v in old.idata.posterior.data_vars if v.startswith("disc_walk_")])
    old.save(tmp_path / "old.nc")
    again = Posterior.load(tmp_path / "old.nc")
    rows = pd.DataFrame({"source": "web", "target": "web", "params": [1e10],
                         "pretrain_tokens": [2e11], "finetune_tokens": 0})
    now, before = post.drift_draws(rows, seed=3), again.drift_draws(rows, seed=3)
    assert np.isfinite(before).all() and before.std() > 0
    stored = dsc.stored_drift(post.idata.posterior, "params")
    if np.median(stored["walk"]) > 0:
        assert before.std() < now.std()
    assert drift_model(again).axes[0].m2[0] == 0.0


def test_calibrate_predicts_only_groups_with_rows_below_the_cut():
    """A group whose rows all lie above the cut has nothing to extrapolate from: it is
    neither predicted nor scored (it used to misalign errors and distances)."""
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 3.5, 3.8, 4.0])
    group = np.array([0, 0, 0, 0, 0, 1, 1, 1])  # group 1: only above the cut
    seen = {}

    def predict_holdout(fit_mask, test_mask):
        seen["fit"], seen["test"] = fit_mask.copy(), test_mask.copy()
        k = int(test_mask.sum())
        return np.zeros(k), np.full(k, 0.01), np.full(k, 0.02), (np.ones(k), np.ones(k)), None

    disc = dsc.Discrepancy(axes=("params",), level="pair", holdout=0.3)
    out = dsc.calibrate(disc, {"log_N": x}, group, 2, predict_holdout, draws=200, seed=0)
    assert seen["test"].tolist() == [False, False, False, True, True, False, False, False]
    assert not seen["fit"][5:].any()
    assert out["params"]["info"]["rows"] == 2 and out["params"]["mean"].shape == (200,)


def test_several_holdouts_are_several_internal_extrapolations(monkeypatch):
    """Each holdout is one cut and one inner fit; its errors join the others', a group's
    errors sharing one slope within a cut but not across cuts (group ids offset by cut)."""
    x = np.tile(np.arange(11.0), 2)            # log sizes 0..10, two groups
    group = np.repeat([0, 1], 11)
    cuts, seen = [], {}

    def predict_holdout(fit_mask, test_mask):
        cuts.append(float(x[fit_mask].max()))
        k = int(test_mask.sum())
        return np.zeros(k), np.full(k, 0.01), np.full(k, 0.02), (np.ones(k), np.ones(k)), None

    def spy(resid, sd, d, g, scale, draws, rng, share=None, walk_scale=None,
            mean_share=None):
        seen.update(resid=resid, d=d, g=g)
        return np.zeros(draws), np.zeros(draws), np.ones(draws), np.zeros(draws)

    monkeypatch.setattr(dsc, "drift_posterior", spy)
    disc = dsc.Discrepancy(axes=("params",), level="pair", holdout=[0.5, 0.1])
    out = dsc.calibrate(disc, {"log_N": x}, group, 2, predict_holdout, draws=10, seed=0)
    assert cuts == [5.0, 9.0]
    # Cut 1 holds out sizes 6..10 of both groups (5 each), cut 2 size 10 (1 each).
    assert seen["g"].tolist() == [0] * 5 + [1] * 5 + [2, 3]
    np.testing.assert_allclose(seen["d"], [1, 2, 3, 4, 5] * 2 + [1, 1])
    info = out["params"]["info"]
    assert info["rows"] == 12 and info["cut"] == pytest.approx([np.exp(5.0), np.exp(9.0)])


def test_drift_draws_are_what_predict_draws_adds_to_the_law(drift_posterior):
    """``drift_draws`` is the drift alone: the law plus it is ``predict_draws`` with the
    same seed; zero inside the fitted range, growing beyond it."""
    post, _ = drift_posterior
    rows = pd.DataFrame({"source": "web", "target": "web", "params": [3e7, 1e9, 1e10],
                         "pretrain_tokens": [6e8, 2e10, 2e11], "finetune_tokens": 0})
    drift = post.drift_draws(rows, seed=5)
    np.testing.assert_allclose(post.law_log_loss(rows) + drift,
                               np.log(post.predict_draws(rows, seed=5)), rtol=1e-5, atol=1e-6)
    spread = drift.std(axis=0)
    assert spread[0] == 0 and 0 < spread[1] < spread[2]


@pytest.mark.slow
def test_the_late_trend_gain_is_calibrated_and_informed():
    """Draw the gain from its prior (uniform on GAINS), the drift from its priors and
    errors ``gain late + drift + noise``; the gain's randomised PIT must be uniform (a
    sign slip or a misplaced covariate bends it) and its posterior mean must be much
    closer to the truth than the prior's 0.5 (a gain the data ignore would pass the PIT)."""
    from scipy.stats import kstest

    rng = np.random.default_rng(0)
    scale, pits, errors = 0.05, [], []
    for _ in range(120):
        gain = rng.choice(dsc.GAINS)
        mean, tau, walk = rng.normal(0, scale), abs(rng.normal(0, scale)), \
            abs(rng.normal(0, scale))
        power = rng.choice(dsc.POWERS)
        group = np.repeat(np.arange(8), 3)
        d = np.tile([0.7, 1.4, 2.1], 8)
        late = rng.normal(0, 0.05, 8)[group] + rng.normal(0, 0.03, 8)[group] * d
        sd = np.full(group.size, 0.01)
        slopes, near = mean + tau * rng.standard_normal(8), walk * rng.standard_normal(8)
        resid = (gain * late + slopes[group] * d**power + near[group] * d**dsc.WALK_POWER
                 + sd * rng.standard_normal(group.size))
        post = dsc.drift_posterior_late(resid, sd, d, group, scale, 2000, rng, late)[4]
        pits.append(np.mean(post < gain) + rng.uniform() * np.mean(post == gain))
        errors.append(abs(post.mean() - gain))
    assert kstest(pits, "uniform").pvalue > 0.01
    prior_error = np.mean(np.abs(np.asarray(dsc.GAINS) - 0.5))          # 0.3
    assert np.mean(errors) < 0.5 * prior_error, np.mean(errors)


def test_late_trend_is_each_groups_edge_and_departure_from_the_common_slope():
    x = np.log(np.array([1.0, 2, 4, 8, 16, 1, 2, 4, 8, 16, 1, 2, 4, 8]))
    group = np.array([0] * 5 + [1] * 5 + [2] * 4)
    resid = np.r_[[0.3, 0, 0, 0.01, 0.02], [0, 0, 0.03, 0.05, 0.07], [0, 0, 0, 0]]
    last, slope = dsc.late_trend(x, resid, group, 4)
    np.testing.assert_allclose(last, [0.02, 0.07, 0.0, 0.0])
    raw = [np.polyfit(x[g][-3:], resid[g][-3:], 1)[0] for g in (group == 0, group == 1,
                                                               group == 2)]
    np.testing.assert_allclose(slope[:3], np.array(raw) - np.median(raw))
    assert slope[3] == 0.0                              # no rows: no trend of its own
    hi = np.log(np.array([16.0, 16, 8, 16]))
    rows = np.log(np.array([32.0, 8, 64, 2]))
    got = dsc.late_covariate(last, slope, rows, hi, np.array([0, 1, 2, 1]))
    np.testing.assert_allclose(got, [last[0] + slope[0] * np.log(2), 0.0,
                                     slope[2] * np.log(8), 0.0])
    with pytest.raises(SpecError, match="late_trend"):
        dsc.Discrepancy(late_trend="yes")


@pytest.fixture(scope="module")
def late_posterior(tmp_path_factory):
    """:func:`drift_fit`'s table with ``late_trend = true``, saved and loaded."""
    from bayes_transfer.inference import Posterior

    post = drift_fit(late_trend=True)
    path = tmp_path_factory.mktemp("late") / "post.nc"
    post.save(path)
    return post, Posterior.load(path), path


def test_a_late_trend_fit_shifts_its_drift_by_gain_times_the_groups_trend(late_posterior):
    """What the file holds (the gain's draws, each group's edge residual and centred late
    slope, from the whole fit's residuals) is what predictions add: the drift with the
    late trend less the same-seed drift without it is ``gain late`` at every row, and it
    survives save and load."""
    from bayes_transfer.inference import Posterior, log_residuals

    post, again, _ = late_posterior
    stored = json.loads(post.idata.posterior.attrs["discrepancy"])["params"]
    x = post.features(post.runs.df)["log_N"]
    last, slope = dsc.late_trend(x, log_residuals(post, post.runs),
                                 np.zeros(len(x), dtype=int), 1)
    np.testing.assert_allclose(stored["late_last"], last, atol=1e-9)
    np.testing.assert_allclose(stored["late_slope"], slope, atol=1e-9)
    rows = pd.DataFrame({"source": "web", "target": "web", "params": [3e7, 1e9, 1e10],
                         "pretrain_tokens": [6e8, 2e10, 2e11], "finetune_tokens": 0})
    without = Posterior(idata=post.idata.copy(), spec=post.spec, runs=post.runs,
                        diagnostics=post.diagnostics)
    without.idata.posterior = without.idata.posterior.drop_vars("disc_gain_params")
    shift = post.drift_draws(rows, seed=2) - without.drift_draws(rows, seed=2)
    gain = post.idata.posterior["disc_gain_params"].values.reshape(-1)
    d = np.maximum(post.features(rows)["log_N"] - x.max(), 0.0)
    np.testing.assert_allclose(shift, gain[:, None] * (last[0] + slope[0] * d)
                               * (d > 0)[None, :], atol=1e-6)
    assert set(np.unique(gain)) <= set(dsc.GAINS)
    np.testing.assert_allclose(again.predict_draws(rows, seed=4), post.predict_draws(rows, seed=4))


def test_a_late_trend_file_without_its_groups_trend_is_damaged(late_posterior, tmp_path):
    import shutil

    import xarray as xr

    from bayes_transfer.inference import Posterior, PosteriorFileError

    _, _, path = late_posterior
    broken = tmp_path / "broken.nc"
    shutil.copy(path, broken)
    with xr.open_dataset(broken, group="posterior") as ds:
        attrs = dict(ds.attrs)
    meta = json.loads(attrs["discrepancy"])
    del meta["params"]["late_slope"]
    tree = Posterior.load(path)
    tree.idata.posterior.attrs["discrepancy"] = json.dumps(meta)
    tree.save(broken)
    with pytest.raises(PosteriorFileError, match="damaged"):
        Posterior.load(broken)
