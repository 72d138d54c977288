"""Scoring candidates and choosing batches: the public face of the design module.

:func:`score_candidates` ranks every candidate by its expected gain per unit cost, one
run at a time. :func:`suggest` builds a batch greedily: after each pick it conditions the
posterior ensemble on a hypothetical observation of that run (so the next pick is what is
still uncertain) and marks its pre-training checkpoint as existing (so runs sharing it get
cheaper). A batch is therefore not eight copies of the best run. It stops at the batch
size, when the budget cannot pay for any further candidate, or when nothing is left to
learn.

Example:
    >>> from bayes_transfer import simulate
    >>> from bayes_transfer.design.candidates import candidate_grid
    >>> from bayes_transfer.inference import fit
    >>> design = simulate.design_grid(["a", "b"], ["x", "y"], params=[1e6],
    ...     pretrain_tokens=[1e7, 1e9], finetune_tokens=[1e5, 1e7])
    >>> post = fit(simulate.simulate("transfer-gap", design, seed=0).runs,
    ...            chains=2, draws=200, warmup=200, progress=False)  # doctest: +SKIP
    >>> cands = candidate_grid(["a", "b"], ["x", "y"], params=[1e6],
    ...     pretrain_tokens=[1e7, 1e8, 1e9], finetune_tokens=[1e5, 1e6, 1e7])
    >>> suggest(post, cands, batch=4)[["source", "target", "cost", "reason"]]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np
import pandas as pd

from bayes_transfer.data import RunTable
from bayes_transfer.design.acquisition import (
    Criterion,
    PosteriorDraws,
    anomalies,
    applicable,
    as_draws,
    condition,
    criterion_gains,
    log_mean_draws,
    quantity_draws,
    rows_table,
)
from bayes_transfer.design.candidates import (
    CANDIDATE_COLUMNS,
    CostFn,
    _keys,
    candidate_costs,
    checkpoint_keys,
    hold_model_size,
    pretrained_mask,
)
from bayes_transfer.design.drift import QuantityDrift, candidate_coordinates
from bayes_transfer.extrapolation import warn_extrapolation

if TYPE_CHECKING:
    from bayes_transfer.inference import Posterior

__all__ = ["score_candidates", "suggest"]

QuantityArg = str | Sequence[str | tuple[str, str]] | pd.DataFrame | RunTable
_PAD = 512  # candidate columns are padded to a multiple of this: few compilations
_MIN_COST = 1.0  # FLOPs; an evaluation of an existing checkpoint is not quite free


def _prepare(posterior, candidates, quantity, runs, exclude_existing, max_draws,
             params=None):
    draws = as_draws(posterior).thin(max_draws)
    cands = hold_model_size(_check_candidates(candidates), draws.spec.law, draws.runs,
                            params)
    table = runs if runs is not None else draws.runs
    if table is not None and not isinstance(table, RunTable):
        from bayes_transfer.data import load_runs

        table = load_runs(table)
    if exclude_existing and table is not None and len(table):
        key = ["source", "target", "params", "pretrain_tokens", "finetune_tokens"]
        done = set(table.df[key].astype({"source": str, "target": str})
                   .itertuples(index=False, name=None))
        seen = cands[key].astype({"source": str, "target": str}).itertuples(index=False,
                                                                          name=None)
        cands = cands[[row not in done for row in seen]].reset_index(drop=True)
    q = quantity_draws(draws, quantity)
    if len(cands) == 0:  # every candidate is already in the table
        return draws, cands, table, q, np.zeros((draws.n_draws, 0), dtype=np.float32), None
    rows = rows_table(draws, cands)
    mu = log_mean_draws(draws, rows)
    usable = applicable(draws, cands)
    mu[:, ~usable] = 0.0  # rows the law cannot use teach nothing
    where = None
    if q.drift is not None:
        group, x = candidate_coordinates(draws.drift, rows, draws.units)
        # A row the law cannot use does not enter the fit, nor its ranges.
        where = (group, {k: np.where(usable, v, np.nan) for k, v in x.items()})
    return draws, cands, table, q, mu, where


def _gains(q_anom: jnp.ndarray, m_anom: jnp.ndarray, noise: float, criterion: Criterion,
           drift: QuantityDrift | None, where, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's gain ``(n,)`` and per-component variance reductions ``(K, n)``:
    the law's (the ensemble estimator), plus, under a discrepancy, the drift's (a run
    nearer the quantity's rows shrinks the drift there: :mod:`.drift`). The information
    criterion counts the drift's part as each component's entropy reduction."""
    gain, terms = criterion_gains(q_anom, m_anom, noise, criterion)
    gain, terms = np.asarray(gain, np.float64)[:n], np.asarray(terms, np.float64)[:, :n]
    if drift is None:
        return gain, terms
    cut = drift.reductions(*where)
    if criterion == "variance":
        gain = gain + cut.sum(axis=0)
    else:
        law = np.asarray(jnp.sum(q_anom**2, axis=0), np.float64) / (q_anom.shape[0] - 1)
        total = (law + drift.variance())[:, None]
        gain = gain + 0.5 * np.sum(np.log(total / np.maximum(total - cut, 1e-300)), axis=0)
    return gain, terms + cut


def _component_variance(q_anom: jnp.ndarray, drift: QuantityDrift | None) -> np.ndarray:
    """Each component's posterior variance ``(K,)``: the law's, plus the drift's."""
    law = np.asarray(jnp.sum(q_anom**2, axis=0), np.float64) / (q_anom.shape[0] - 1)
    return law + (drift.variance() if drift is not None else 0.0)


# A central 90% interval of a normal is this many sds wide.
_WIDTH_90 = 2.0 * 1.6448536269514722
# Where no run reaches the goal, the goal rule takes the cheapest run that removes at
# least this share of the most variance any run removes: on a 2 x 2 ensemble the run
# removing the most cost 100x the next, for 0.6% more.
_NEAR_BEST = 0.9


def _goal_variance(goal_width: float | np.ndarray | None, k: int) -> np.ndarray | None:
    """The variance each of ``k`` components must fall to for its 90% interval to be
    ``goal_width`` wide (a normal's), or None without a goal."""
    if goal_width is None:
        return None
    try:
        width = np.broadcast_to(np.asarray(goal_width, np.float64), (k,))
    except ValueError:
        width = np.full(k, np.nan)
    if not np.all(np.isfinite(width) & (width > 0)):
        raise ValueError(f"goal_width must be one positive width or one per component of "
                         f"the quantity ({k}), not {goal_width!r}")
    return (width / _WIDTH_90) ** 2


def _toward_goal(var: np.ndarray, goal_var: np.ndarray, terms: np.ndarray,
                 costs: np.ndarray, ok: np.ndarray) -> int | None:
    """The goal rule's pick (see :func:`suggest`): the cheapest run expected to bring a
    component above its goal within it, else the cheapest run removing nearly the most
    variance above the goals (``_NEAR_BEST``); None when every component is within its
    goal or nothing can help."""
    above = var > goal_var
    if not above.any():
        return None
    after = var[:, None] - terms                      # (K, n) variance after each run
    reaches = ok & np.any(above[:, None] & (after <= goal_var[:, None]), axis=0)
    if reaches.any():
        return int(np.argmin(np.where(reaches, costs, np.inf)))
    progress = np.where(ok, (np.minimum(terms, (var - goal_var)[:, None])
                             * above[:, None]).sum(axis=0), 0.0)
    if not progress.max() > 0:
        return None
    near = progress >= _NEAR_BEST * progress.max()
    return int(np.argmin(np.where(near, costs, np.inf)))


def _check_candidates(candidates: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(candidates, pd.DataFrame):
        raise TypeError(f"candidates must be a DataFrame, not {type(candidates).__name__}")
    missing = [c for c in ("source", "target", "params", "pretrain_tokens",
                           "finetune_tokens") if c not in candidates.columns]
    if missing:
        raise ValueError(f"candidates: missing column {missing[0]!r} (need source, target, "
                         "params, pretrain_tokens, finetune_tokens)")
    if len(candidates) == 0:
        raise ValueError("candidates: no rows")
    cands = candidates.reset_index(drop=True).copy()
    if "seed" not in cands.columns:
        cands["seed"] = 0
    if "run_id" not in cands.columns:
        cands["run_id"] = [f"cand-{i}" for i in range(len(cands))]
    return cands


def _padded(x: np.ndarray) -> jnp.ndarray:
    pad = (-x.shape[1]) % _PAD
    return jnp.pad(jnp.asarray(x, dtype=jnp.float32), ((0, 0), (0, pad)))


def _reasons(terms: np.ndarray, labels: list[str], top: int = 2) -> list[str]:
    """'narrows log G a->x (62%), b->x (21%)': each component's share of the reduction."""
    total = terms.sum(axis=0)
    order = np.argsort(-terms, axis=0)[:top]
    out = []
    for c in range(terms.shape[1]):
        if total[c] <= 0:
            out.append("nothing: the law does not use this row")
            continue
        parts = []
        for rank, k in enumerate(order[:, c]):
            share = terms[k, c] / total[c]
            if rank and share < 0.05:
                break
            label = labels[k] if rank == 0 else labels[k].split(" ", 2)[-1]
            parts.append(f"{label} ({share:.0%})")
        out.append("narrows " + ", ".join(parts))
    return out


def score_candidates(
    posterior: Posterior | PosteriorDraws,
    candidates: pd.DataFrame,
    *,
    quantity: QuantityArg = "gaps",
    criterion: Criterion = "variance",
    cost: str | CostFn = "flops",
    runs: RunTable | pd.DataFrame | None = None,
    exclude_existing: bool = False,
    max_draws: int | None = None,
    params: float | None = None,
) -> pd.DataFrame:
    """Each candidate's expected gain, cost and gain per unit cost, best first.

    Args:
        posterior: a fitted posterior (or its :class:`PosteriorDraws`).
        candidates: candidate rows (see :func:`candidates_from_spec`).
        quantity: ``"gaps"`` (all log gaps), a list of pairs, or a DataFrame of rows whose
            predicted log loss is the quantity (a target scale).
        criterion: ``"variance"`` (expected reduction of the summed posterior variance) or
            ``"information"`` (mutual information); see :mod:`.acquisition`.
        cost: ``"flops"``, ``"tokens"`` or a callable (see :func:`candidate_costs`).
        runs: whose checkpoints exist (default: the table the posterior was fit on).
        exclude_existing: drop candidates already in ``runs``.
        max_draws: thin the posterior to at most this many draws (faster, noisier).
        params: for a law without a model-size term, the one N the candidates are held
            at (see :func:`~bayes_transfer.design.candidates.hold_model_size`; default:
            the size nearest the fitted table's largest N). Ignored by size-aware laws.

    Returns:
        The candidates with ``cost``, ``pretrained`` (a checkpoint is reused),
        ``expected_gain``, ``gain_per_cost`` and ``reason``, sorted by ``gain_per_cost``.
    """
    draws, cands, table, q, mu, where = _prepare(posterior, candidates, quantity, runs,
                                                 exclude_existing, max_draws, params)
    n = len(cands)
    gain, terms = _gains(anomalies(q.draws), _padded(np.asarray(anomalies(mu))),
                         draws.noise_variance(), criterion, q.drift, where, n)
    ckpt = checkpoint_keys(table)
    costs = candidate_costs(cands, cost, ckpt)
    out = cands.assign(cost=costs, pretrained=pretrained_mask(cands, ckpt),
                       expected_gain=gain, gain_per_cost=gain / np.maximum(costs, _MIN_COST),
                       reason=_reasons(terms, q.labels))
    return out.sort_values("gain_per_cost", ascending=False, kind="stable")


def suggest(
    posterior: Posterior | PosteriorDraws,
    candidates: pd.DataFrame,
    batch: int = 8,
    budget: float | None = None,
    *,
    quantity: QuantityArg = "gaps",
    criterion: Criterion = "variance",
    cost: str | CostFn = "flops",
    runs: RunTable | pd.DataFrame | None = None,
    exclude_existing: bool = True,
    max_draws: int | None = None,
    params: float | None = None,
    goal_width: float | np.ndarray | None = None,
) -> pd.DataFrame:
    """A batch of runs, chosen greedily by expected gain per unit cost.

    Each pick conditions the ensemble on a hypothetical measurement of the picked run and
    makes its checkpoint available to the rest of the batch. Arguments are those of
    :func:`score_candidates`, plus ``batch`` (the most runs to choose) and ``budget`` (the
    most total cost). Candidates already in the run table are left out unless
    ``exclude_existing=False`` (a replicate needs a new seed). For a law without a
    model-size term the candidates are held at one N (``params``; see
    :func:`~bayes_transfer.design.candidates.hold_model_size`), and chosen runs outside
    the fitted range of N, p or f raise one
    :class:`~bayes_transfer.extrapolation.ExtrapolationWarning`: their expected gains rest
    on the law's extrapolation.

    With ``goal_width`` (the widest acceptable central 90% interval of each component of
    the quantity, on its own scale: log gap or log loss; one number or one per
    component) the batch is chosen to *reach* that width, not by gain per cost: each
    pick is the cheapest run expected to bring a component still above the goal within
    it; where no single run can, the cheapest run expected to remove at least 90% of
    the most variance above the goals that any run removes; the batch ends early once
    every component is expected to be within its goal. Gain per cost is myopic: a cheap
    run that removes a sliver of variance rates higher than the far run that would have
    removed all of it, so a loop led by it climbs a ladder of cheap runs and pays for
    each rung, where the goal rule pays for the one run that gets there
    (``uncertainty_left`` and ``expected_gain`` are reported the same way under both
    rules).

    Returns:
        One row per chosen run, in the order chosen (``rank`` 1 first), with ``cost`` (given
        the runs before it), ``pretrained``, ``expected_gain`` (given the runs before it),
        ``gain_per_cost``, ``cumulative_cost``, ``uncertainty_left`` (the share of the
        quantity's summed variance expected to remain), ``widest_left`` (the widest 90%
        interval of a component expected to remain, a normal's: what ``goal_width`` is
        held against) and ``reason``.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    if budget is not None and not budget > 0:
        raise ValueError(f"budget must be positive, not {budget}")
    draws, cands, table, q, mu, where = _prepare(posterior, candidates, quantity, runs,
                                                 exclude_existing, max_draws, params)
    n, noise, drift = len(cands), draws.noise_variance(), q.drift
    columns = [*CANDIDATE_COLUMNS, *[c for c in cands.columns if c not in CANDIDATE_COLUMNS]]
    if n == 0:
        return _no_picks(cands, columns)
    q_anom, m_anom = anomalies(q.draws), _padded(np.asarray(anomalies(mu)))
    var = _component_variance(q_anom, drift)  # each component's, kept up to date below
    total_var = float(var.sum())
    ckpt = checkpoint_keys(table)
    keys = _keys(cands)
    costs = candidate_costs(cands, cost, ckpt)
    goal_var = _goal_variance(goal_width, q_anom.shape[1])
    available = np.ones(n, dtype=bool)
    spent, picks = 0.0, []
    for _ in range(min(batch, n)):
        gain, terms = _gains(q_anom, m_anom, noise, criterion, drift, where, n)
        ok = available & (gain > 0)
        if budget is not None:
            ok &= costs <= budget - spent
        if goal_var is not None:
            c = _toward_goal(var, goal_var, terms, costs, ok)
            if c is None:
                break
        elif not ok.any():
            break
        else:
            c = int(np.argmax(np.where(ok, gain / np.maximum(costs, _MIN_COST), -np.inf)))
        ratio = gain / np.maximum(costs, _MIN_COST)
        spent += costs[c]
        picks.append({"index": c, "cost": costs[c], "pretrained": keys[c] in ckpt,
                      "expected_gain": float(gain[c]), "gain_per_cost": float(ratio[c]),
                      "cumulative_cost": spent,
                      "reason": _reasons(np.asarray(terms[:, c : c + 1]), q.labels)[0]})
        available[c] = False
        q_anom, m_anom = condition(q_anom, m_anom, c, noise)
        if drift is not None:  # the run is in the table now: its group's range grows
            drift = drift.extended(int(where[0][c]), {k: v[c] for k, v in where[1].items()})
        var = _component_variance(q_anom, drift)
        picks[-1]["uncertainty_left"] = float(var.sum()) / total_var
        picks[-1]["widest_left"] = _WIDTH_90 * float(np.sqrt(var.max()))
        if keys[c][2] > 0 and keys[c] not in ckpt:
            ckpt.add(keys[c])
            costs = candidate_costs(cands, cost, ckpt)
    if not picks:
        return _no_picks(cands, columns)
    info = pd.DataFrame(picks)
    out = cands.loc[info["index"], columns].reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    for col in ("cost", "pretrained", "expected_gain", "gain_per_cost", "cumulative_cost",
                "uncertainty_left", "widest_left", "reason"):
        out[col] = info[col].to_numpy()
    # Against the table the posterior was fitted on (not ``runs``: whose checkpoints exist).
    warn_extrapolation(out, draws.runs, "suggested runs",
                       advice="Their expected gains rest on the law's extrapolation")
    return out


def _no_picks(cands: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return cands.iloc[:0][columns].assign(
        rank=[], cost=[], pretrained=[], expected_gain=[], gain_per_cost=[],
        cumulative_cost=[], uncertainty_left=[], widest_left=[], reason=[])
