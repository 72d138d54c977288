"""Candidates, the cost model, the acquisition estimator and greedy batches."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from bayes_transfer.bundled import ROOT
from bayes_transfer.data import load_runs
from bayes_transfer.design import (
    CandidateSpecError,
    PosteriorDraws,
    candidate_costs,
    candidate_grid,
    candidates_from_spec,
    checkpoint_keys,
    ensemble_gains,
    initial_design,
    score_candidates,
    suggest,
    training_flops,
)
from bayes_transfer.design.acquisition import anomalies, condition
from bayes_transfer.spec import load_spec

# ---- cost model ---------------------------------------------------------------------


def _table(rows):
    df = pd.DataFrame(rows)
    df["loss"] = 2.0
    df["run_id"] = [f"r{i}" for i in range(len(df))]
    return load_runs(df)


def test_training_flops_is_6_n_p_plus_f():
    assert training_flops(1e6, 1e9, 1e6) == pytest.approx(6e6 * (1e9 + 1e6))
    assert training_flops(1e6, 1e9, 1e6, pretrained=True) == pytest.approx(6e6 * 1e6)
    assert training_flops(1e6, 0, 1e6) == pytest.approx(6e12)


def test_existing_checkpoint_pays_for_pretraining():
    cands = candidate_grid(["a", "b"], ["x"], params=[1e6, 2e6], pretrain_tokens=[1e8],
                           finetune_tokens=[1e5])
    runs = _table([{"source": "a", "target": "y", "params": 1_000_000,
                    "pretrain_tokens": 100_000_000, "finetune_tokens": 10}])
    assert checkpoint_keys(runs) == {("a", 1_000_000, 100_000_000)}
    costs = candidate_costs(cands, checkpoints=checkpoint_keys(runs))
    full = training_flops(cands["params"], cands["pretrain_tokens"], cands["finetune_tokens"])
    reuse = (cands["source"] == "a") & (cands["params"] == 1_000_000)
    np.testing.assert_allclose(costs[reuse], 6e6 * 1e5)         # only the fine-tuning
    np.testing.assert_allclose(costs[~reuse], full[~reuse])      # other size/source: full


def test_from_scratch_row_is_a_checkpoint_and_tokens_cost():
    runs = _table([{"source": "a", "target": "a", "params": 10, "pretrain_tokens": 100,
                    "finetune_tokens": 0}])
    cands = candidate_grid(["a"], ["x"], params=[10], pretrain_tokens=[100, 200],
                           finetune_tokens=[5])
    np.testing.assert_allclose(candidate_costs(cands, "tokens", checkpoint_keys(runs)),
                               [5, 205])


def test_user_cost_function_sees_checkpoints_and_bad_costs_are_refused():
    cands = candidate_grid(["a"], ["x"], params=[10], pretrain_tokens=[100, 200],
                           finetune_tokens=[5])
    seen = {}

    def dollars(df):
        seen["pretrained"] = df["pretrained"].tolist()
        return np.where(df["pretrained"], 1.0, 10.0)

    np.testing.assert_allclose(candidate_costs(cands, dollars, {("a", 10, 200)}), [10, 1])
    assert seen["pretrained"] == [False, True]
    with pytest.raises(ValueError, match="not a finite non-negative"):
        candidate_costs(cands, lambda df: -np.ones(len(df)))
    with pytest.raises(ValueError, match="one cost per candidate"):
        candidate_costs(cands, lambda df: [1.0])


# ---- candidates ---------------------------------------------------------------------


def test_candidates_from_spec_ranges_and_defaults_from_runs():
    runs = _table([{"source": "s", "target": "t", "params": 10, "pretrain_tokens": 100,
                    "finetune_tokens": 5}])
    cands = candidates_from_spec({"candidates": {
        "params": {"min": 1e6, "max": 1e8, "num": 3},
        "pretrain_tokens": {"min": 0, "max": 10, "num": 3, "scale": "linear"},
        "finetune_tokens": [7]}}, runs=runs)
    assert cands["params"].unique().tolist() == [1_000_000, 10_000_000, 100_000_000]
    assert cands["pretrain_tokens"].unique().tolist() == [0, 5, 10]
    assert set(cands["source"]) == {"s"} and len(cands) == 9
    assert {"run_id", "seed"} <= set(cands.columns) and cands["run_id"].is_unique


@pytest.mark.parametrize("spec, match", [
    ({"sources": ["a"], "targets": ["x"], "params": [1]}, "missing candidates.pretrain_tokens"),
    ({"sources": ["a"], "targets": ["x"], "params": [0], "pretrain_tokens": [1],
      "finetune_tokens": [1]}, "candidates.params: 0 is not a positive"),
    ({"sources": ["a"], "targets": ["x"], "params": [1], "pretrain_tokens": {"min": 1},
      "finetune_tokens": [1]}, "pretrain_tokens: a range needs min, max and num"),
    ({"sources": "a", "targets": ["x"], "params": [1], "pretrain_tokens": [1],
      "finetune_tokens": [1]}, "candidates.sources must be a non-empty list"),
    ({"source": ["a"]}, "unknown key candidates.source"),
])
def test_bad_candidate_specs_name_the_key(spec, match):
    with pytest.raises(CandidateSpecError, match=match):
        candidates_from_spec({"candidates": spec})


def test_example_candidates_file_loads_and_matches_the_bundled_table():
    cands = candidates_from_spec(ROOT / "models" / "candidates-example.toml")
    assert len(cands) > 100 and (cands["params"] > 0).all()
    # The README runs `suggest POST.nc --candidates` on it with the demo's posterior:
    # its pairs must be fine-tuned pairs of the bundled table and its N the trainer's.
    runs = pd.read_csv(ROOT / "data" / "transfer_runs.csv")
    tuned = runs[runs["finetune_tokens"] > 0]
    assert set(cands["source"]) <= set(tuned["source"])
    assert set(cands["target"]) <= set(tuned["target"])
    assert set(cands["params"]) <= set(runs["params"])


def test_initial_design_covers_every_source_and_target():
    cands = candidate_grid(["a", "b", "c"], ["x", "y"], params=[1e6, 1e7],
                           pretrain_tokens=[1e7, 1e8, 1e9], finetune_tokens=[1e5, 1e6])
    first = initial_design(cands)
    assert set(first["source"]) == {"a", "b", "c"} and set(first["target"]) == {"x", "y"}
    assert (first["params"] == 1e6).all() and len(first) == 12


# ---- the estimator on a linear-Gaussian toy (closed form known) ----------------------


def _gaussian_toy(draws=40_000, seed=0):
    rng = np.random.default_rng(seed)
    k = 3
    root = rng.normal(size=(k, k))
    cov = root @ root.T + 0.5 * np.eye(k)
    q = rng.multivariate_normal(np.zeros(k), cov, size=draws)
    a = rng.normal(size=(k, 4))            # candidate c measures a_c . q + b_c z
    b = np.array([0.0, 0.5, 2.0, 1.0])
    z = rng.normal(size=(draws, 4))
    mu = q @ a + b * z
    return cov, a, b, q, mu


def _exact_reduction(cov, a, b, noise):
    # sum_k Cov(q_k, y)^2 / Var(y) with y = a.q + b z + eps.
    cross = cov @ a
    var_y = np.einsum("kc,kl,lc->c", a, cov, a) + b**2 + noise
    return (cross**2).sum(axis=0) / var_y


def test_variance_gain_matches_the_gaussian_conditional_variance():
    cov, a, b, q, mu = _gaussian_toy()
    noise = 0.3
    np.testing.assert_allclose(ensemble_gains(q, mu, noise), _exact_reduction(cov, a, b, noise),
                               rtol=0.05)


def test_information_gain_matches_the_gaussian_mutual_information():
    cov, a, b, q, mu = _gaussian_toy()
    noise = 0.3
    signal = np.einsum("kc,kl,lc->c", a, cov, a)
    exact = 0.5 * np.log((signal + b**2 + noise) / (b**2 + noise))
    np.testing.assert_allclose(ensemble_gains(q, mu, noise, "information"), exact, rtol=0.05)


def test_square_root_update_gives_the_exact_conditional_covariance():
    cov, a, b, q, mu = _gaussian_toy(draws=40_000, seed=1)
    noise = 0.3
    qa, ma = condition(anomalies(q), anomalies(mu), 0, noise)
    got = np.cov(np.asarray(qa), rowvar=False)
    c = cov @ a[:, 0]
    exact = cov - np.outer(c, c) / (a[:, 0] @ cov @ a[:, 0] + b[0] ** 2 + noise)
    np.testing.assert_allclose(got, exact, atol=0.05 * np.abs(cov).max())
    # The next candidate's gain is its gain given the first observation.
    both = np.concatenate([a[:, :1], a[:, 1:2]], axis=1)
    joint = cov - cov @ both @ np.linalg.inv(both.T @ cov @ both + np.diag(b[:2] ** 2 + noise)) \
        @ both.T @ cov
    exact_second = np.trace(exact) - np.trace(joint)
    got_second = float(ensemble_gains(np.asarray(qa), np.asarray(ma)[:, 1:2], noise)[0])
    assert got_second == pytest.approx(exact_second, rel=0.06)


def test_gain_is_zero_for_an_unrelated_quantity():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(4000, 2))
    mu = rng.normal(size=(4000, 5))          # independent of q
    gains = ensemble_gains(q, mu, 0.1)
    assert np.all(gains < 0.01)              # MC noise ~ K / D, vs ~0.9 if related
    assert np.all(ensemble_gains(q, mu, 0.1, "information") < 0.01)


# ---- acquisition on a hierarchical ensemble -----------------------------------------


@functools.cache
def _draws(n=2000, observed=("a->x", "a->y", "b->x")):
    """An ensemble like a transfer-gap posterior on a 2 x 2 grid: the gaps (and A) of the
    'observed' pairs are pinned down, b->y is as wide as a prior."""
    rng = np.random.default_rng(0)
    labels = ["a->x", "a->y", "b->x", "b->y"]
    known = np.array([label in observed for label in labels])
    log_params = {
        "G": np.where(known, rng.normal(0.0, 1.0, 4) + 0.01 * rng.normal(size=(n, 4)),
                      rng.normal(0.0, 1.0, size=(n, 4))),
        "A": np.where(known, 2.0 + 0.01 * rng.normal(size=(n, 4)),
                      rng.normal(2.0, 1.0, size=(n, 4))),
        "alpha": rng.normal(-1.2, 0.05, size=(n, 2)),
        "beta": rng.normal(-1.6, 0.05, size=(n, 2)),
        "E": rng.normal(0.3, 0.01, size=(n, 2)),
    }
    return PosteriorDraws(load_spec("transfer-gap"), ("a", "b"), ("x", "y"), log_params,
                          np.full(n, 0.02))


def _cands():
    return candidate_grid(["a", "b"], ["x", "y"], params=[1e6], pretrain_tokens=[1e7, 1e9],
                          finetune_tokens=[1e4, 1e6])


def test_a_run_on_the_unobserved_pair_informs_its_gap():
    scored = score_candidates(_draws(), _cands())
    best = scored.iloc[0]
    assert (best["source"], best["target"]) == ("b", "y")
    assert best["reason"].startswith("narrows log G b->y")
    on_pair = scored[(scored["source"] == "b") & (scored["target"] == "y")]
    off_pair = scored[~((scored["source"] == "b") & (scored["target"] == "y"))]
    assert on_pair["expected_gain"].min() > 10 * off_pair["expected_gain"].max()


def test_quantity_of_chosen_pairs_and_of_target_rows():
    draws = _draws()
    only = score_candidates(draws, _cands(), quantity=["a->x"])
    # a->x is pinned: nothing teaches us about it.
    assert only["expected_gain"].max() < 1e-3
    rows = pd.DataFrame({"source": ["b"], "target": ["y"], "params": [1e9],
                         "pretrain_tokens": [10**11], "finetune_tokens": [10**7]})
    scale = score_candidates(draws, _cands(), quantity=rows, criterion="information")
    assert (scale.iloc[0]["source"], scale.iloc[0]["target"]) == ("b", "y")
    assert "log L b->y" in scale.iloc[0]["reason"]


def test_greedy_batch_is_diverse_not_copies_of_the_best_run():
    # Two pairs unknown: the batch covers both, instead of piling onto the best one.
    draws = _draws(observed=("a->x", "b->x"))
    batch = suggest(draws, _cands(), batch=4)
    assert set(zip(batch["source"][:2], batch["target"][:2], strict=True)) == {("a", "y"), ("b", "y")}
    # Eight replicates (new seeds) of the best run, at one unit of cost each: ranking by
    # score alone would take only copies; the greedy batch knows what a copy would add.
    cands = _cands()
    best = score_candidates(_draws(), cands, cost=_unit).iloc[0]
    copies = pd.concat([best.to_frame().T[cands.columns].assign(seed=s) for s in range(8)])
    copies["run_id"] = [f"copy-{s}" for s in range(8)]
    pool = pd.concat([cands, copies], ignore_index=True).astype(cands.dtypes.to_dict())
    key = ["source", "target", "params", "pretrain_tokens", "finetune_tokens"]
    naive = score_candidates(_draws(), pool, cost=_unit).head(6)
    assert (naive[key] == best[key]).all(axis=1).all()      # top-6 by score: all copies
    batch = suggest(_draws(), pool, batch=6, cost=_unit)
    assert len(batch) == 6
    assert batch[key].drop_duplicates().shape[0] >= 3
    # What is left of the uncertainty only shrinks, by less with each pick.
    left = batch["uncertainty_left"].to_numpy()
    assert np.all(np.diff(left) <= 1e-6)


def _unit(df):
    return np.ones(len(df))


def test_budget_is_respected_and_checkpoints_are_shared_within_a_batch():
    cands = _cands()
    budget = 6e6 * (1e9 + 1e6) * 1.5
    batch = suggest(_draws(), cands, batch=8, budget=budget)
    assert len(batch) >= 1 and batch["cost"].sum() <= budget
    assert batch["cumulative_cost"].iloc[-1] == pytest.approx(batch["cost"].sum())
    full = training_flops(batch["params"], batch["pretrain_tokens"], batch["finetune_tokens"])
    for i, row in batch.iterrows():
        earlier = batch.iloc[:i]
        shared = ((earlier["source"] == row["source"]) & (earlier["params"] == row["params"])
                  & (earlier["pretrain_tokens"] == row["pretrain_tokens"])).any()
        assert row["pretrained"] == shared
        assert row["cost"] == pytest.approx(6 * row["params"] * row["finetune_tokens"]
                                            if shared else full[i])


def test_suggest_leaves_out_runs_already_in_the_table():
    draws = _draws()
    cands = _cands()
    runs = cands.iloc[:5].assign(loss=2.0)
    out = suggest(draws, cands, batch=16, runs=runs)
    assert not set(out["run_id"]) & set(runs["run_id"])
    with pytest.raises(ValueError, match="not one of the fitted sources"):
        suggest(draws, candidate_grid(["zzz"], ["x"], params=[1], pretrain_tokens=[1],
                                      finetune_tokens=[1]))


# ---- the goal rule (suggest(goal_width=...)) ---------------------------------------


def _goal_costs(df):
    # On b->y a run at f = 1e6 teaches less about its gap than one at f = 1e4 (the gap
    # term fades with f) but is made cheaper here, so gain per cost prefers it.
    f, p = df["finetune_tokens"].to_numpy(float), df["pretrain_tokens"].to_numpy(float)
    return np.where(f > 1e5, 1.0, np.where(p > 1e8, 20.0, 10.0))


def _after(draws, cands, pair="b->y"):
    """Each candidate's expected variance of the pair's log gap after running it."""
    scored = score_candidates(draws, cands, quantity=[pair], cost=_goal_costs)
    before = np.var(draws.log_params["G"][:, draws.pair_labels.index(pair)], ddof=1)
    return scored.assign(after=before - scored["expected_gain"]), before


def _width(variance):
    return 2 * 1.6448536269514722 * np.sqrt(variance)


def test_goal_rule_takes_the_cheapest_run_that_reaches_the_goal():
    draws, cands = _draws(), _cands()
    scored, before = _after(draws, cands)
    on_pair = scored[(scored["source"] == "b") & (scored["target"] == "y")]
    goal = 0.35  # variance: below what the f = 1e6 runs leave, above the f = 1e4 runs'
    assert (on_pair["after"] < goal).sum() == 2 and (on_pair["after"] > goal).sum() == 2
    per_cost = suggest(draws, cands, batch=1, quantity=["b->y"], cost=_goal_costs)
    assert per_cost["finetune_tokens"].iat[0] == 1e6  # it does not reach the goal
    batch = suggest(draws, cands, batch=4, quantity=["b->y"], cost=_goal_costs,
                    goal_width=_width(goal))
    # One run: the cheapest that gets there; then the goal is met and the batch ends.
    assert len(batch) == 1
    pick = batch.iloc[0]
    assert (pick["source"], pick["target"], pick["finetune_tokens"],
            pick["pretrain_tokens"]) == ("b", "y", 1e4, 1e7)
    reaching = scored[scored["after"] <= goal]
    assert pick["cost"] == reaching["cost"].min()
    assert pick["uncertainty_left"] * before <= goal
    assert pick["widest_left"] == pytest.approx(_width(pick["uncertainty_left"] * before))


def test_goal_rule_out_of_reach_takes_the_cheapest_near_best_run():
    draws, cands = _draws(), _cands()
    scored, before = _after(draws, cands)
    goal = 0.01  # no one run gets the gap's variance there
    assert scored["after"].min() > goal
    pick = suggest(draws, cands, batch=1, quantity=["b->y"], cost=_goal_costs,
                   goal_width=_width(goal)).iloc[0]
    best = scored["expected_gain"].max()
    near = scored[scored["expected_gain"] >= 0.9 * best]
    assert len(near) == 2  # f = 1e4 at both p: the p = 1e9 one costs twice as much
    assert pick["cost"] == near["cost"].min() == 10.0
    assert (pick["finetune_tokens"], pick["pretrain_tokens"]) == (1e4, 1e7)


def test_goal_rule_with_every_goal_met_suggests_nothing():
    draws, cands = _draws(), _cands()
    # a->x's gap is pinned (sd 0.01): a 90% width of 0.1 is already met.
    out = suggest(draws, cands, batch=4, quantity=["a->x"], goal_width=0.1)
    assert len(out) == 0 and "widest_left" in out.columns
    # One goal per component: b->y's is far off, a->x's met; the runs go to b->y.
    out = suggest(draws, cands, batch=2, quantity=["a->x", "b->y"],
                  goal_width=np.array([0.1, 0.5]), cost=_goal_costs)
    assert set(zip(out["source"], out["target"], strict=True)) == {("b", "y")}


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), np.array([0.1, 0.2, 0.3])])
def test_goal_rule_refuses_a_bad_goal(bad):
    with pytest.raises(ValueError, match="goal_width"):
        suggest(_draws(), _cands(), batch=2, quantity=["a->x", "b->y"], goal_width=bad)


# ---- CLI ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def posterior_file(tmp_path_factory):
    from _posteriors import known_posterior, simulated

    path = tmp_path_factory.mktemp("post") / "post.nc"
    known_posterior(simulated("transfer-gap"), spread=0.3).save(path)
    return path


def _cands_toml(tmp_path):
    path = tmp_path / "cands.toml"
    path.write_text('[candidates]\nparams = [1e5, 1e6]\n'
                    'pretrain_tokens = { min = 1e6, max = 1e8, num = 3 }\n'
                    'finetune_tokens = [1e4, 1e6]\n')
    return path


def test_cli_suggest_table_and_csv(posterior_file, tmp_path):
    from typer.testing import CliRunner

    from bayes_transfer.cli import app

    runner = CliRunner()
    cands = _cands_toml(tmp_path)
    res = runner.invoke(app, ["suggest", str(posterior_file), "--candidates", str(cands),
                              "--batch", "3"])
    assert res.exit_code == 0, res.output
    assert "next runs" in res.output and "narrows log G" in res.output
    res = runner.invoke(app, ["suggest", str(posterior_file), "--candidates", str(cands),
                              "--batch", "5", "--budget", "1e16", "--format", "csv",
                              "--criterion", "information", "--pair", "code->prose"])
    assert res.exit_code == 0, res.output
    from io import StringIO

    # stdout alone: the law has no size term, so a warning on stderr says N is held.
    out = pd.read_csv(StringIO(res.stdout))
    assert 1 <= len(out) <= 5 and out["cost"].sum() <= 1e16
    assert {"cost", "expected_gain", "gain_per_cost", "reason"} <= set(out.columns)
    assert out["reason"].str.contains("code->prose").all()
    # --goal-width: the goal rule, and its name in the table's title.
    res = runner.invoke(app, ["suggest", str(posterior_file), "--candidates", str(cands),
                              "--batch", "3", "--goal-width", "0.05"])
    assert res.exit_code == 0, res.output
    assert "toward a 90% width of 0.05" in res.output and "widest 90% left" in res.output
    res = runner.invoke(app, ["suggest", str(posterior_file), "--candidates", str(cands),
                              "--goal-width", "0"])
    assert res.exit_code == 1 and "--goal-width must be a number above 0" in res.output
    res = runner.invoke(app, ["suggest", str(posterior_file), "--candidates", str(cands),
                              "--goal-width", "1e3"])
    assert res.exit_code == 0 and "nothing to run" in res.output, res.output


def test_cli_suggest_says_free_for_a_pick_that_costs_nothing():
    """A zero-shot evaluation of a checkpoint the batch already trains costs 0: its
    ranking ratio is its gain over a 1-unit floor, so the table says "free", not a rate."""
    from types import SimpleNamespace

    from bayes_transfer.cli.design import _per_cost

    assert _per_cost(SimpleNamespace(cost=0.0, gain_per_cost=7.9e-9)) == "free"
    assert _per_cost(SimpleNamespace(cost=1.03e20, gain_per_cost=1.45e-28)) == "1.45e-28"


def test_cli_suggest_bad_input_names_the_problem(posterior_file, tmp_path):
    from typer.testing import CliRunner

    from bayes_transfer.cli import app

    runner = CliRunner()
    bad = tmp_path / "bad.toml"
    bad.write_text("[candidates]\nparams = [1e5]\n")
    res = runner.invoke(app, ["suggest", str(posterior_file), "--candidates", str(bad)])
    assert res.exit_code == 1 and "candidates.pretrain_tokens" in res.output
    res = runner.invoke(app, ["suggest", str(posterior_file), "--candidates",
                              str(_cands_toml(tmp_path)), "--criterion", "entropy"])
    assert res.exit_code == 1 and "--criterion" in res.output
    res = runner.invoke(app, ["suggest", str(tmp_path / "nope.nc"), "--candidates",
                              str(bad)])
    assert res.exit_code == 1 and "no such posterior" in res.output
    res = runner.invoke(app, ["loop", "--help"])
    assert res.exit_code == 0 and "--target-width" in res.output and "--goal-width" in res.output
