"""Pool replay (bayes_transfer.design.pool): a loop that "runs" a candidate reveals its row."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from _posteriors import loop_candidates
from rich.console import Console
from test_loop import fake_fit

from bayes_transfer.design import pool_candidates, pool_runner
from bayes_transfer.loop import run_loop
from bayes_transfer.public_data import LeftOutWarning, load_public
from bayes_transfer.simulate import simulate

QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def flan() -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeftOutWarning)
        return load_public("rectified-scaling-flan").df


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    """A finished transfer-gap grid (2 x 2 pairs, 9 token sizes each): the loop's pool."""
    return simulate("transfer-gap", loop_candidates(), seed=3).runs.df


def test_the_runner_reveals_exactly_the_tables_rows(flan):
    run = pool_runner(flan)
    order = np.random.default_rng(0).permutation(len(flan))
    chosen = pool_candidates(flan).iloc[order]
    assert "loss" not in chosen.columns
    rows = run(chosen)
    expected = flan.iloc[order].reset_index(drop=True)
    assert rows["run_id"].tolist() == expected["run_id"].tolist()
    np.testing.assert_array_equal(rows["loss"].to_numpy(), expected["loss"].to_numpy())
    assert run.revealed == expected["run_id"].tolist()
    # Without run ids, a run is found by its (source, target, N, p, f, seed), an unknown
    # pre-training amount (every row of this table) matching an unknown one.
    by_key = run(chosen.drop(columns=["run_id"]).iloc[:20])
    np.testing.assert_array_equal(by_key["loss"].to_numpy(),
                                  expected["loss"].to_numpy()[:20])


def test_a_run_not_in_the_pool_is_refused_by_name(flan):
    run = pool_runner(flan[flan["finetune_examples"] < 1_638_400])
    largest = pool_candidates(flan[flan["finetune_examples"] == 1_638_400]).iloc[:1]
    with pytest.raises(KeyError, match="MBZUAI/LaMini-GPT-124M/ft1638400.*not in the pool"):
        run(largest)
    with pytest.raises(KeyError, match="finetune_tokens=57344000.*not in the pool"):
        run(largest.drop(columns=["run_id"]))
    assert run.revealed == []


def test_a_pool_with_one_run_twice_is_refused(flan):
    # The same (model, size) under another id: which loss would a replay reveal?
    twice = pd.concat([flan.iloc[:3], flan.iloc[[1]].assign(run_id="copy")])
    with pytest.raises(ValueError, match="'MBZUAI/LaMini-GPT-124M/ft200' repeats another"):
        pool_runner(twice)


def test_a_resumed_loop_neither_reveals_a_row_twice_nor_loses_one(tmp_path, pool):
    out, cands = tmp_path / "loop", pool_candidates(pool)
    fits = {"n": 0}

    def dying_fit(table):  # killed while refitting round 2: its rows are already saved
        fits["n"] += 1
        if fits["n"] == 3:
            raise KeyboardInterrupt("killed while refitting round 2")
        return fake_fit(table)

    first = pool_runner(pool)
    with pytest.raises(KeyboardInterrupt):
        run_loop(cands, out, run_fn=first, fit_fn=dying_fit, rounds=3, batch=2,
                 console=QUIET)
    again = pool_runner(pool)
    result = run_loop(cands, out, run_fn=again, fit_fn=fake_fit, rounds=3, batch=2,
                      console=QUIET)
    revealed = first.revealed + again.revealed
    assert len(revealed) == len(set(revealed)), "a row was revealed twice"
    assert len(again.revealed) == 2  # only round 3's batch is new
    table = result.runs.df
    assert sorted(table["run_id"]) == sorted(revealed), "a revealed row was lost"
    truth = pool.set_index("run_id").loc[table["run_id"], "loss"].to_numpy()
    np.testing.assert_array_equal(table["loss"].to_numpy(), truth)


def test_a_pool_of_public_models_keeps_every_model_and_its_unknown_p(flan):
    """Each rectified-scaling source is one pre-trained model with its own N and an
    unknown p: a law without a size term must not hold them all at one N (that dropped
    every model but one), and the checkpoint bookkeeping must read NaN p as "none"."""
    from bayes_transfer.design import candidate_costs, hold_model_size
    from bayes_transfer.design.candidates import pretrained_mask

    cands = pool_candidates(flan)
    assert cands["pretrain_tokens"].isna().all() and cands["source"].nunique() > 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no HeldSizeWarning: no N was set aside
        held = hold_model_size(cands, "rectified")
    assert len(held) == len(cands)
    assert not pretrained_mask(cands, {("any", 1, 1)}).any()
    costs = candidate_costs(cands, lambda d: 6.0 * d["params"] * d["finetune_tokens"])
    assert np.isfinite(costs).all()
    # A source offered at several sizes is still held at one of them.
    two_sizes = pd.concat([cands, cands.assign(params=cands["params"] * 10)])
    with pytest.warns(UserWarning, match="cannot choose N"):
        again = hold_model_size(two_sizes, "rectified")
    assert len(again) == len(cands)
    assert (again.groupby("source")["params"].nunique() == 1).all()
