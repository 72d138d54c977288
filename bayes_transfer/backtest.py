"""Backtests: fit below a split, predict above it, and score the intervals on the truth.

A credible interval is a claim about real runs; a backtest checks it the way a user
needs it checked. :func:`backtest` fits a spec to the rows at or below a split
(``params``, ``pretrain_tokens`` or ``finetune_tokens`` at a value), optionally leaving
some (source, target) pairs out entirely, then predicts the held-out rows, i.e. the rows
above the split and every row of the left-out pairs. It scores

- the coverage of the central 50/80/90/95% intervals of the posterior predictive of a
  measured loss (``kind="observation"``: the law, its discrepancy and the noise),
- the median and mean absolute error of the predictive median (nats per token),
- the PIT of every held-out row (the predictive CDF at the truth; uniform when the
  intervals are calibrated at every level),

next to the point-fit baseline users run today (per-pair L-BFGS on a Huber loss with
bootstrap intervals, :mod:`bayes_transfer.baseline`) on the same split in the same run.
A pair the baseline never saw has no baseline prediction.

Example:
    >>> from bayes_transfer.backtest import backtest
    >>> bt = backtest("runs.csv", "chinchilla-pairs", split="params", at=1e9,
    ...               chains=2, draws=500, warmup=500)  # doctest: +SKIP
    >>> bt.summary["model"]["coverage"]["0.9"]  # doctest: +SKIP
    0.9
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayes_transfer.data import Problem, RunTable, RunTableError, load_runs, pair_label
from bayes_transfer.spec import ModelSpec, load_spec

__all__ = ["LEVELS", "SPLITS", "Backtest", "backtest", "pair_folds", "split_table", "score"]

LEVELS = (0.5, 0.8, 0.9, 0.95)
SPLITS = ("params", "pretrain_tokens", "finetune_tokens")


@dataclass(frozen=True, eq=False)
class Backtest:
    """The outcome of :func:`backtest`.

    Attributes:
        predictions: one row per held-out row: its run-table columns, ``group``
            (``"observed"``: a fitted pair, above the split; ``"never-run"``: a left-out
            pair), ``model_median``, ``model_lower_<l>``/``model_upper_<l>`` per level,
            ``model_pit``, and the same ``baseline_*`` columns (NaN where the baseline
            cannot predict).
        summary: ``{"model": {...}, "baseline": {...}, "rows": {...}}``, and per group
            (``"observed"``, ``"never-run"``) the model's scores when pairs were left out;
            scores are ``coverage`` (by level, as a string key), ``median_abs_error``,
            ``mean_abs_error``, and which side the misses fall on: ``above`` and
            ``below`` (by level: the share of rows whose truth lies above or under the
            interval) and the signed ``median_error`` (truth minus predicted median), so
            that a biased centre (misses on one side) reads apart from intervals too
            narrow (misses on both); see :func:`score`.
        posterior: the posterior fitted below the split.
    """

    predictions: pd.DataFrame
    summary: dict[str, Any]
    posterior: Any


def _pairs(df: pd.DataFrame) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Per row, the index of its ``(source, target)`` in the list returned with it.

    Pairs are told apart as tuples, not by splitting ``"s->t"`` labels: names may
    contain ``"->"``.
    """
    codes, keys = pd.MultiIndex.from_arrays(
        [df["source"].astype(str), df["target"].astype(str)]).factorize()
    return np.asarray(codes), list(keys)


def _label(pair: tuple[str, str]) -> str:
    # Pairs are shuffled from their order by label, as when they were labels (the same
    # seed leaves the same pairs out).
    return pair_label(*pair)


def pair_folds(table: RunTable, split: str, at: float, size: int, seed: int = 0
               ) -> list[list[tuple[str, str]]]:
    """A seeded partition of the pairs with rows below the split into folds of ``size``
    pairs (the last may be smaller), none leaving a source or target without fitted rows;
    a pair that is its source's or its target's only one stays in every fit.

    Leaving each fold out in turn (``backtest(..., leave_pairs_out=size, fold=k)``) leaves
    every pair out exactly once, so pooled scores weigh every pair alike; independent
    random draws of pairs (``fold=None``, one seed each) leave some pairs out more often
    than others, and one odd pair then moves a handful of seeds' pooled coverage.

    Example:
        >>> from bayes_transfer.bundled import runs_path
        >>> folds = pair_folds(load_runs(runs_path()), "finetune_tokens", 12288, 3)
        >>> [len(f) for f in folds]  # 12 transfer pairs; english->english stays fitted
        [3, 3, 3, 3]
    """
    if size < 1:
        raise ValueError(f"a fold holds at least one pair, not {size}")
    df = table.df
    below = df[split].to_numpy(np.float64) <= at
    codes, keys = _pairs(df)
    split_pairs = sorted({keys[c] for c in codes[below]}, key=_label)
    np.random.default_rng(seed).shuffle(split_pairs)
    n_src = pd.Series([s for s, _ in split_pairs]).value_counts()
    n_tgt = pd.Series([t for _, t in split_pairs]).value_counts()
    split_pairs = [(s, t) for s, t in split_pairs if n_src[s] > 1 and n_tgt[t] > 1]
    n_folds = -(-len(split_pairs) // size)
    # Depth-first assignment, pair by pair in the shuffled order, each to the first fold
    # with room that leaves its source and target a fitted pair; back up when none does
    # (a greedy pass fails on 3 x 3 pairs in folds of 3 where a Latin square succeeds).
    fold_of = [-1] * len(split_pairs)
    members: list[list[int]] = [[] for _ in range(n_folds)]
    next_try = [0] * (len(split_pairs) + 1)

    def fits(f: int, i: int) -> bool:
        src, tgt = split_pairs[i]
        fold = [split_pairs[j] for j in members[f]]
        return (len(fold) < size and sum(s == src for s, _ in fold) + 1 < n_src[src]
                and sum(t == tgt for _, t in fold) + 1 < n_tgt[tgt]
                # empty folds are alike: try only the first
                and (fold or all(members[g] for g in range(f))))

    i, steps = 0, 0
    while 0 <= i < len(split_pairs) and steps < 100_000:
        steps += 1
        f = next((f for f in range(next_try[i], n_folds) if fits(f, i)), None)
        if f is not None:
            fold_of[i], next_try[i] = f, f + 1
            members[f].append(i)
            i += 1
            next_try[i] = 0
        else:
            next_try[i] = 0
            i -= 1
            if i >= 0:
                members[fold_of[i]].remove(i)
    if i != len(split_pairs):
        raise ValueError(f"the pairs cannot be split into folds of {size} that each leave "
                         "every source and target fitted rows; use a smaller "
                         "--leave-pairs-out")
    folds = [[split_pairs[j] for j in m] for m in members]
    return folds


def split_table(table: RunTable, split: str, at: float, *, leave_pairs_out: int = 0,
                predict_at: float | None = None, seed: int = 0, fold: int | None = None
                ) -> tuple[RunTable, RunTable, list[tuple[str, str]]]:
    """Rows to fit, rows to predict, and the pairs left out.

    Fit: rows with ``split <= at`` of the pairs kept. Predict: the kept pairs' rows above
    ``at`` (only those at ``split == predict_at`` when it is given, e.g. the largest
    fine-tuning size) and every row of the ``leave_pairs_out`` pairs drawn at random
    (seeded) among those whose source and target keep rows in the fit, or, with
    ``fold``, of fold ``fold`` of :func:`pair_folds` (the same seed gives the same folds).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if not np.isfinite(at):
        raise ValueError(f"--at must be a finite number, not {at}")
    df = table.df
    values = df[split].to_numpy(np.float64)
    if np.isnan(values).any():
        raise RunTableError(table.name, [Problem(int(np.flatnonzero(np.isnan(values))[0]) + 1,
                                                 split, "is unknown; cannot split on it")])
    below = values <= at
    pair, keys = _pairs(df)
    code = {k: c for c, k in enumerate(keys)}
    left_out: list[tuple[str, str]] = []
    if fold is not None:
        if not leave_pairs_out:
            raise ValueError("fold needs leave_pairs_out (--leave-pairs-out): the number of "
                             "pairs a fold holds")
        folds = pair_folds(table, split, at, leave_pairs_out, seed)
        if not 0 <= fold < len(folds):
            raise ValueError(f"fold must be from 0 to {len(folds) - 1} ({len(folds)} folds of "
                             f"{leave_pairs_out} pairs), not {fold}")
        left_out = folds[fold]
    elif leave_pairs_out:
        rng = np.random.default_rng(seed)
        candidates = sorted({keys[c] for c in pair[below]}, key=_label)
        rng.shuffle(candidates)
        keep = below.copy()
        for src, tgt in candidates:
            if len(left_out) == leave_pairs_out:
                break
            trial = keep & (pair != code[src, tgt])
            # The pair's source and target must keep rows, or nothing can be said of it.
            if (trial & (df["source"].astype(str) == src).to_numpy()).any() and \
                    (trial & (df["target"].astype(str) == tgt).to_numpy()).any():
                keep = trial
                left_out.append((src, tgt))
        if len(left_out) < leave_pairs_out:
            raise ValueError(f"only {len(left_out)} pairs can be left out while every source "
                             f"and target keeps rows (asked for {leave_pairs_out})")
    if left_out:
        out_mask = np.isin(pair, [code[p] for p in left_out])
    else:
        out_mask = np.zeros(len(df), dtype=bool)
    fit_mask = below & ~out_mask
    # Rows above the split are predicted for the pairs the fit saw; a pair with no row
    # below the split (and not left out on purpose) has nothing to extrapolate from.
    fitted_pairs = set(pair[fit_mask])
    above = ~below
    if predict_at is not None:
        if not predict_at > at:
            raise ValueError(f"predict_at ({predict_at:g}) must lie above the split ({at:g})")
        above &= np.isclose(values, predict_at, rtol=1e-9)
    test_mask = (above & np.isin(pair, list(fitted_pairs))) | out_mask
    if not fit_mask.any():
        raise ValueError(f"no row has {split} <= {at:g}: nothing to fit")
    if not test_mask.any():
        raise ValueError(f"no row has {split} > {at:g} and no pair is left out: "
                         "nothing to predict")
    fit_table = table.subset(fit_mask)
    test = table.subset(test_mask)
    test.df["group"] = np.where(out_mask[test_mask], "never-run", "observed")
    return fit_table, test, left_out


def score(draws: np.ndarray, truth: np.ndarray, levels: tuple[float, ...] = LEVELS
          ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Coverage per level, errors, and per-row columns, from predictive draws.

    ``draws``: ``(draws, rows)`` predictive draws of the loss; ``truth``: ``(rows,)``.

    Beside the coverage, which side the misses fall on (``above``: the share of rows whose
    truth lies above the interval, ``below``: under it) and the signed ``median_error``
    (truth minus predicted median; positive: the losses came out higher than predicted).
    They tell the two ways of under-covering apart: intervals too narrow miss on both
    sides, a biased centre on one.

    Example:
        >>> draws = np.random.default_rng(0).normal(2.0, 0.1, (4000, 3))
        >>> scores, _ = score(draws, np.array([2.0, 2.05, 2.5]), levels=(0.9,))
        >>> scores["coverage"]["0.9"], scores["above"]["0.9"], scores["below"]["0.9"]
        (0.6666666666666666, 0.3333333333333333, 0.0)
    """
    med = np.median(draws, axis=0)
    cols: dict[str, np.ndarray] = {"median": med}
    coverage, above, below = {}, {}, {}
    for level in levels:
        lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
        cols[f"lower_{level:g}"], cols[f"upper_{level:g}"] = lo, hi
        coverage[f"{level:g}"] = float(np.mean((truth >= lo) & (truth <= hi)))
        above[f"{level:g}"] = float(np.mean(truth > hi))
        below[f"{level:g}"] = float(np.mean(truth < lo))
    cols["pit"] = np.mean(draws < truth, axis=0)
    err = np.abs(med - truth)
    return ({"coverage": coverage, "median_abs_error": float(np.median(err)),
             "mean_abs_error": float(np.mean(err)),
             "median_error": float(np.median(truth - med)), "above": above, "below": below},
            cols)


def _nan_scores(levels) -> dict[str, Any]:
    return {"coverage": {f"{level:g}": None for level in levels}, "median_abs_error": None,
            "mean_abs_error": None, "median_error": None,
            "above": {f"{level:g}": None for level in levels},
            "below": {f"{level:g}": None for level in levels}}


def backtest(
    runs: RunTable | pd.DataFrame | str | os.PathLike[str],
    spec: ModelSpec | str | os.PathLike[str] | dict[str, Any],
    *,
    split: str,
    at: float,
    leave_pairs_out: int = 0,
    fold: int | None = None,
    predict_at: float | None = None,
    levels: tuple[float, ...] = LEVELS,
    baseline: bool = True,
    bootstrap: int = 100,
    chains: int = 2,
    draws: int = 500,
    warmup: int = 500,
    seed: int = 0,
    progress: bool = False,
) -> Backtest:
    """Fit ``spec`` below the split, predict above it, and score both the model and the
    point-fit baseline (see the module docstring).

    Args:
        runs: the run table (path, DataFrame or loaded table).
        spec: a model spec (name, path, dict or spec).
        split: ``"params"``, ``"pretrain_tokens"`` or ``"finetune_tokens"``.
        at: rows with ``split <= at`` are fitted, the others predicted.
        leave_pairs_out: also leave this many (source, target) pairs out of the fit
            entirely (seeded choice) and predict all their rows.
        fold: with ``leave_pairs_out``, leave out this fold of :func:`pair_folds` (a
            seeded partition of the pairs) instead of a random draw; fitting every fold
            leaves each pair out once.
        predict_at: predict only the rows above the split at this value of ``split``
            (e.g. the largest fine-tuning size, as in Lin et al.'s protocol).
        levels: interval masses to score.
        baseline: also fit the per-pair L-BFGS + bootstrap baseline.
        bootstrap: the baseline's bootstrap replicates.
        chains, draws, warmup, seed, progress: passed to :func:`~bayes_transfer.fit`.
    """
    from bayes_transfer.diagnostics import SamplingWarning
    from bayes_transfer.inference import fit
    from bayes_transfer.model import select_rows

    for level in levels:
        if not 0 < level < 1:
            raise ValueError(f"levels must be between 0 and 1, not {level}")
    spec = load_spec(spec)
    table, _ = select_rows(spec, load_runs(runs))
    fit_table, test, left_out = split_table(table, split, at, leave_pairs_out=leave_pairs_out,
                                            predict_at=predict_at, seed=seed, fold=fold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        post = fit(fit_table, spec, chains=chains, draws=draws, warmup=warmup, seed=seed,
                   progress=progress)
    truth = test.df["loss"].to_numpy(np.float64)
    rows = test.df.drop(columns=["group"])
    model_draws = post.predict_draws(rows, kind="observation", seed=seed)
    model_scores, model_cols = score(model_draws, truth, levels)
    out = test.df.copy()
    for key, col in model_cols.items():
        out[f"model_{key}"] = col
    summary: dict[str, Any] = {"model": model_scores}
    observed = (test.df["group"] == "observed").to_numpy()
    baseline_scores = _nan_scores(levels)
    if baseline:
        from bayes_transfer.baseline import fit_baseline

        base = fit_baseline(fit_table, spec.law, by="pair", bootstrap=bootstrap, seed=seed)
        known = set(base.params.index)
        label = pair_label(test.df["source"].astype(str), test.df["target"].astype(str))
        can = label.isin(known).to_numpy()
        cols_b: dict[str, np.ndarray] = {}
        if can.any():
            b_draws = base.predict_draws(rows.loc[can].reset_index(drop=True),
                                         kind="observation", seed=seed)
            baseline_scores, part = score(b_draws, truth[can], levels)
            for key, col in part.items():
                full = np.full(len(test), np.nan)
                full[can] = col
                cols_b[key] = full
        for key in model_cols:
            out[f"baseline_{key}"] = cols_b.get(key, np.full(len(test), np.nan))
    summary["baseline"] = baseline_scores
    if left_out:
        for name, mask in (("observed", observed), ("never-run", ~observed)):
            summary[name] = score(model_draws[:, mask], truth[mask], levels)[0] \
                if mask.any() else _nan_scores(levels)
        summary["pairs_left_out"] = [_label(p) for p in left_out]
        if fold is not None:
            summary["fold"] = fold
    summary["rows"] = {"fit": len(fit_table), "predicted": len(test)}
    summary["split"] = {"column": split, "at": float(at)}
    summary["diagnostics_ok"] = bool(post.diagnostics.ok)
    summary["prediction_rhat_max"] = _prediction_rhat(post, model_draws)
    return Backtest(predictions=out, summary=summary, posterior=post)


def _prediction_rhat(post: Any, draws: np.ndarray) -> float | None:
    """The largest R-hat of the held-out rows' log predictive draws.

    A table can leave a direction of the parameters unidentified (one model size per
    source: its size term and its floor trade off), and NUTS then mixes poorly along it
    while the predictions, which depend on the sum, mix well: this says which.
    """
    from bayes_transfer.diagnostics import convergence_arrays

    chains = post.idata.posterior.sizes["chain"]
    if chains < 2:
        return None
    log = np.log(draws).reshape(chains, -1, draws.shape[1])
    return float(np.nanmax(convergence_arrays(log)[0]))

