"""Model selection: which pre-trained model to fine-tune, from small fine-tuning runs.

Lin et al. 2024 ("Selecting Large Language Model to Fine-tune via Rectified Scaling
Law", ICML) choose among pre-trained models by fine-tuning each on small subsets of the
target data, fitting each model's fine-tuning curve and predicting its loss at the full
size. :func:`select_model` does the same with one hierarchical posterior over every
model's curve (e.g. the ``finetune-curves`` spec: the rectified law with crossed
effects), and adds what a point fit cannot give:

- a credible interval of each model's loss at the full size (the posterior predictive
  of a measured loss, discrepancy included when the spec has one);
- ``p_best``: the posterior probability that the model has the lowest loss there, the
  fraction of joint posterior draws in which it beats every other model (a draw of every
  model's loss is joint: the shared effects move them together).

When the table also has the losses at the full size (a backtest, as in the paper's
Table 1), the selection is scored: Pearson correlation (%) between predicted medians and
actual losses, RelAcc (%) = (worst - chosen) / (worst - best) of the actual losses for
the model with the highest ``p_best``, and the coverage of the intervals.

Example:
    >>> from bayes_transfer.public_data import load_public
    >>> from bayes_transfer.selection import select_model
    >>> runs = load_public("rectified-scaling-flan")  # doctest: +SKIP
    >>> sel = select_model(runs, "finetune-curves", budget=1 / 64, chains=2,
    ...                    draws=500, warmup=500)  # doctest: +SKIP
    >>> sel.table[["source", "loss_median", "p_best", "rank"]].head(3)  # doctest: +SKIP
    >>> sel.summary["relacc"], sel.summary["pearson"]  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bayes_transfer.data import RunTable, load_runs
from bayes_transfer.spec import ModelSpec, load_spec

__all__ = ["Selection", "select_model", "p_best", "pearson_percent", "relative_accuracy"]


@dataclass(frozen=True, eq=False)
class Selection:
    """The outcome of :func:`select_model`.

    Attributes:
        table: one row per candidate model (source), sorted by ``rank``: ``source``,
            ``target``, ``params``, ``loss_median``, ``loss_lower``, ``loss_upper`` (the
            central ``ci`` interval of the predicted loss at ``at``), ``p_best``, ``rank``
            (1 = lowest predicted median), ``rows_fit`` (the model's fitted rows), and
            ``loss_actual`` (the table's loss at ``at``; NaN where it has none).
        summary: ``target``, ``at``, ``budget``, ``ci``, ``rows_fit``, ``models``,
            ``chosen`` (the model with the highest ``p_best``), ``chosen_p_best``,
            ``diagnostics_ok``, ``models_left_out`` (models with no row to fit),
            ``beyond_calibration`` (a sentence when ``at`` lies farther beyond the
            fitted sizes than the discrepancy's internal extrapolations reached, else
            None: :meth:`~bayes_transfer.inference.Posterior.beyond_calibration`), and,
            when the truth is known (else None): ``best_actual`` (the model with the
            lowest actual loss), ``pearson`` (%), ``relacc`` (%), ``coverage``, and
            which side its misses fall on: ``above`` and ``below`` (the shares of models
            whose actual loss lies above or under the interval) and ``median_error``
            (actual minus predicted median).
        draws: ``(draws, models)`` joint predictive draws of the loss at ``at``, in
            the order of ``table``.
        posterior: the fitted posterior.
    """

    table: pd.DataFrame
    summary: dict[str, Any]
    draws: np.ndarray
    posterior: Any


def p_best(draws: np.ndarray) -> np.ndarray:
    """The fraction of joint draws in which each column is the lowest.

    ``draws``: ``(draws, models)``, each row one joint posterior draw of every model's
    loss. The result sums to 1 (a tie goes to the first column, which continuous draws
    never produce).

    Example:
        >>> p_best(np.array([[1.0, 2.0], [3.0, 2.0], [0.5, 0.6], [1.0, 1.1]]))
        array([0.75, 0.25])
    """
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 2 or draws.shape[0] == 0 or draws.shape[1] == 0:
        raise ValueError(f"draws must be a non-empty (draws, models) array, not shape "
                         f"{draws.shape}")
    winners = np.argmin(draws, axis=1)
    return np.bincount(winners, minlength=draws.shape[1]) / draws.shape[0]


def pearson_percent(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Pearson correlation (%) between predicted and actual losses (NaN if undefined).

    Example:
        >>> round(pearson_percent(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.5])), 2)
        99.79
    """
    x = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(actual, dtype=np.float64)
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(100 * np.corrcoef(x, y)[0, 1])


def relative_accuracy(actual: np.ndarray, chosen: int) -> float:
    """RelAcc (%) of choosing model ``chosen``: ``(worst - chosen) / (worst - best)`` of
    the actual losses (100: the best model; 0: the worst). NaN when all losses are equal.

    Example:
        >>> relative_accuracy(np.array([2.0, 1.0, 3.0]), chosen=0)
        50.0
    """
    y = np.asarray(actual, dtype=np.float64)
    worst, best = float(np.max(y)), float(np.min(y))
    if worst == best:
        return math.nan
    return float(100 * (worst - y[chosen]) / (worst - best))


def _fitting_table(table: RunTable, target: str | None, at: float | None,
                   budget: float | None) -> tuple[RunTable, RunTable, str, float]:
    """The target's rows, the rows to fit, the target's name and ``at``."""
    df = table.df
    names = sorted(set(df["target"].astype(str)))
    if target is None:
        if len(names) != 1:
            raise ValueError(f"the table has {len(names)} targets ({', '.join(names)}); "
                             "choose one with target=")
        target = names[0]
    elif target not in names:
        raise ValueError(f"target {target!r} is not in the table; its targets: "
                         f"{', '.join(names)}")
    mine = table.subset((df["target"].astype(str) == target).to_numpy(), drop_unused=True)
    f = mine.df["finetune_tokens"].to_numpy(np.float64)
    if at is None:
        at = float(np.max(f))
    if not (math.isfinite(at) and at > 0):
        raise ValueError(f"at must be a number of fine-tuning tokens above 0, not {at}")
    if budget is None:
        keep = f < at * (1 - 1e-9)
    else:
        if not (math.isfinite(budget) and 0 < budget < 1):
            raise ValueError(f"budget must be a fraction of at between 0 and 1 (e.g. 1/64), "
                             f"not {budget}")
        keep = f <= budget * at * (1 + 1e-9)
    if not keep.any():
        limit = f"<= {budget * at:g}" if budget is not None else f"< {at:g}"
        raise ValueError(f"no row of target {target!r} has finetune_tokens {limit}: "
                         "nothing to fit")
    return mine, mine.subset(keep, drop_unused=True), target, float(at)


def select_model(
    runs: RunTable | pd.DataFrame | str | os.PathLike[str],
    spec: ModelSpec | str | os.PathLike[str] | dict[str, Any] = "finetune-curves",
    *,
    target: str | None = None,
    at: float | None = None,
    budget: float | None = None,
    ci: float = 0.9,
    chains: int = 2,
    draws: int = 500,
    warmup: int = 500,
    seed: int = 0,
    progress: bool = False,
) -> Selection:
    """Predict every model's loss at fine-tuning size ``at`` and rank the models.

    Each source of the run table is a candidate pre-trained model; the spec is fitted to
    the target's rows up to the budget, and each model's loss at ``at`` is predicted
    (posterior predictive of a measured loss). See the module docstring.

    Args:
        runs: the run table (path, DataFrame or loaded table), e.g.
            ``load_public("rectified-scaling-flan")``.
        spec: a model spec (name, path, dict or spec); default ``finetune-curves``.
        target: the fine-tuning target (needed when the table has several).
        at: the fine-tuning size to predict, in the table's ``finetune_tokens``;
            default the target's largest.
        budget: fit only rows with ``finetune_tokens <= budget * at`` (a fraction in
            (0, 1), e.g. ``1/64``); None: every row below ``at``.
        ci: the mass of the central credible interval.
        chains, draws, warmup, seed, progress: passed to :func:`~bayes_transfer.fit`
            (``seed`` also seeds the predictive draws).

    Returns:
        A :class:`Selection`. Models with no row within the budget cannot be predicted
        and are left out with a warning (listed in ``summary["models_left_out"]``).

    Raises:
        ValueError: an unknown or ambiguous target, a bad ``at``, ``budget`` or ``ci``,
            or no row to fit (``RunTableError``/``SpecError`` for bad inputs).

    Example:
        >>> sel = select_model("flan-runs.csv", budget=1 / 64)  # doctest: +SKIP
        >>> sel.summary["chosen"], sel.table.iloc[0]["p_best"]  # doctest: +SKIP
    """
    from bayes_transfer.diagnostics import SamplingWarning
    from bayes_transfer.inference import fit
    from bayes_transfer.model import select_rows

    if not (math.isfinite(ci) and 0 < ci < 1):
        raise ValueError(f"ci must be between 0 and 1 (e.g. 0.9), not {ci}")
    spec = load_spec(spec)
    table, _ = select_rows(spec, load_runs(runs))
    mine, fit_table, target, at = _fitting_table(table, target, at, budget)
    models = list(fit_table.sources)
    left_out = sorted(set(mine.sources) - set(models))
    if left_out:
        warnings.warn(f"{len(left_out)} model(s) have no row within the budget and are "
                      f"left out: {', '.join(left_out)}", UserWarning, stacklevel=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # reported in the summary
        post = fit(fit_table, spec, chains=chains, draws=draws, warmup=warmup, seed=seed,
                   progress=progress)

    fdf = fit_table.df
    src = fdf["source"].astype(str)
    rows = pd.DataFrame({
        "source": models,
        "target": target,
        "params": [float(fdf.loc[src == m, "params"].iloc[-1]) for m in models],
        "pretrain_tokens": [float(fdf.loc[src == m, "pretrain_tokens"].iloc[-1])
                            for m in models],
        "finetune_tokens": at,
    })
    pred = post.predict_draws(rows, kind="observation", seed=seed,
                              name="selection rows")
    lo, med, hi = np.quantile(pred, [(1 - ci) / 2, 0.5, (1 + ci) / 2], axis=0)
    out = rows[["source", "target", "params"]].copy()
    out["loss_median"], out["loss_lower"], out["loss_upper"] = med, lo, hi
    out["p_best"] = p_best(pred)
    out["rows_fit"] = [int((src == m).sum()) for m in models]

    # The truth at `at`, where the table has it (the mean over replicates).
    mdf = mine.df
    at_rows = np.isclose(mdf["finetune_tokens"].to_numpy(np.float64), at, rtol=1e-9)
    truth = mdf.loc[at_rows].groupby(mdf.loc[at_rows, "source"].astype(str),
                                     observed=True)["loss"].mean()
    out["loss_actual"] = [float(truth.get(m, np.nan)) for m in models]

    # Rank by the predicted median (ties: the higher p_best first).
    order = np.lexsort((-out["p_best"].to_numpy(), med))
    ranks = np.empty(len(models), dtype=int)
    ranks[order] = np.arange(1, len(models) + 1)
    out["rank"] = ranks
    chosen_i = int(np.argmax(out["p_best"].to_numpy()))

    summary: dict[str, Any] = {
        "target": target, "at": at, "budget": budget, "ci": ci,
        "rows_fit": len(fit_table), "models": len(models),
        "chosen": models[chosen_i], "chosen_p_best": float(out["p_best"].iloc[chosen_i]),
        "best_actual": None, "pearson": None, "relacc": None, "coverage": None,
        "above": None, "below": None, "median_error": None,
        "models_left_out": left_out, "diagnostics_ok": bool(post.diagnostics.ok),
        "beyond_calibration": post.beyond_calibration(rows, "models' predicted rows")[1],
    }
    actual = out["loss_actual"].to_numpy(np.float64)
    known = np.isfinite(actual)
    if known.any():
        summary["best_actual"] = models[int(np.nanargmin(actual))]
        # Scored as a backtest scores its held-out rows: coverage, and which side the
        # misses fall on (one side: a biased centre; both: intervals too narrow).
        from bayes_transfer.backtest import score

        scores, _ = score(pred[:, known], actual[known], levels=(ci,))
        for key in ("coverage", "above", "below"):
            summary[key] = scores[key][f"{ci:g}"]
        summary["median_error"] = scores["median_error"]
        r = pearson_percent(med[known], actual[known])
        summary["pearson"] = None if math.isnan(r) else r
        if known[chosen_i]:
            # RelAcc over the models whose truth is known, the chosen one among them.
            ra = relative_accuracy(actual[known], int(np.sum(known[:chosen_i])))
            summary["relacc"] = None if math.isnan(ra) else ra
    cols = ["rank", "source", "target", "params", "loss_median", "loss_lower", "loss_upper",
            "p_best", "loss_actual", "rows_fit"]
    out = out[cols].iloc[order].reset_index(drop=True)
    return Selection(table=out, summary=summary, draws=pred[:, order], posterior=post)
