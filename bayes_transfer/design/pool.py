"""Replaying a finished table: a candidate pool whose "runs" reveal rows already measured.

A table of runs someone has already done (a public sweep, your own last month's grid) is a
pool: the loop may choose any of its rows, and "running" one returns the row's measured
loss. Replaying a loop on a pool tests its suggestions on real losses rather than a
simulated truth (``benchmarks/active_learning.py --pool``), and lets you ask what a loop
would have spent on your own sweep.

* :func:`pool_candidates` -- the pool's rows as candidates (the loss column dropped);
* :func:`pool_runner` -- a ``run_fn`` for :func:`bayes_transfer.loop.run_loop` (or any
  loop) that looks the chosen rows up in the pool and returns them unchanged.

A chosen run is found by its ``run_id`` when the chosen rows carry one, else by
``(source, target, params, pretrain_tokens, finetune_tokens, seed)`` (an unknown
``pretrain_tokens``, an empty cell, matches an unknown one). A run the pool does not
hold is refused by name: a pool cannot measure what nobody ran.

Example:
    >>> import pandas as pd
    >>> pool = pd.DataFrame({"run_id": ["a/ft1", "a/ft2"], "source": "a", "target": "x",
    ...                      "params": 1e6, "pretrain_tokens": float("nan"),
    ...                      "finetune_tokens": [1e5, 2e5], "loss": [2.5, 2.25]})
    >>> run = pool_runner(pool)
    >>> run(pool_candidates(pool).iloc[[1]])["loss"].tolist()
    [2.25]
    >>> run.revealed
    ['a/ft2']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayes_transfer.data import RunTable, load_runs

__all__ = ["PoolRunner", "pool_candidates", "pool_runner"]

_KEY = ["source", "target", "params", "pretrain_tokens", "finetune_tokens", "seed"]
# Columns that say what was measured, not which run it was: never candidate columns.
_MEASURED = ("loss", "loss_se")


def _pool_frame(pool: RunTable | pd.DataFrame) -> pd.DataFrame:
    df = (pool.df if isinstance(pool, RunTable) else load_runs(pool, name="pool").df).copy()
    if "seed" not in df.columns:
        df["seed"] = 0
    return df.reset_index(drop=True)


def _keys(df: pd.DataFrame) -> list[tuple]:
    """Hashable row keys; an unknown (NaN) number becomes None so that unknown == unknown."""
    cols = [df[c].astype(str) if c in ("source", "target") else
            df[c].astype("Float64").round(6) for c in _KEY]
    return [tuple(None if v is pd.NA else v for v in row) for row in zip(*cols, strict=True)]


@dataclass
class PoolRunner:
    """A ``run_fn`` that reveals pool rows; see :func:`pool_runner`.

    Attributes:
        pool: the pool's rows (a copy, indexed 0..n-1).
        revealed: the ``run_id`` of every row revealed, in order, repeats included (a
            loop that re-ran a finished run would show it twice).
    """

    pool: pd.DataFrame
    revealed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        ids = self.pool["run_id"].astype(str)
        keys = _keys(self.pool)
        # load_runs lets one run_id span several rows (e.g. a run's evaluations on many
        # targets), so a pool is one row per run key, and a run_id names one row only
        # when it is unique.
        repeated = pd.Series(keys).duplicated(keep=False).to_numpy()
        if repeated.any():
            first = int(np.flatnonzero(repeated)[0])
            raise ValueError(f"pool: row {self.pool['run_id'].iat[first]!r} repeats another "
                             "row's (source, target, params, pretrain_tokens, "
                             "finetune_tokens, seed); a pool holds one measurement a run")
        self._ids_unique = not ids.duplicated().any()
        self._by_id = {rid: i for i, rid in enumerate(ids)}
        self._by_key = {k: i for i, k in enumerate(keys)}

    def locate(self, chosen: pd.DataFrame) -> np.ndarray:
        """Pool row index of each chosen run; raises ``KeyError`` naming one it lacks."""
        if "run_id" in chosen.columns and self._ids_unique:
            ids = chosen["run_id"].astype(str).tolist()
            missing = [r for r in ids if r not in self._by_id]
            if missing:
                raise KeyError(f"run {missing[0]!r} is not in the pool ({len(missing)} of "
                               f"{len(ids)} chosen runs are not); a pool replay can only "
                               "reveal rows the table holds")
            return np.array([self._by_id[r] for r in ids], dtype=int)
        rows = chosen.copy()
        if "seed" not in rows.columns:
            rows["seed"] = 0
        keys = _keys(rows)
        for k in keys:
            if k not in self._by_key:
                what = ", ".join(f"{c}={v}" for c, v in zip(_KEY, k, strict=True))
                raise KeyError(f"run ({what}) is not in the pool; a pool replay can only "
                               "reveal rows the table holds")
        return np.array([self._by_key[k] for k in keys], dtype=int)

    def __call__(self, chosen: pd.DataFrame) -> pd.DataFrame:
        """The pool's rows for ``chosen``, unchanged (measured loss included)."""
        rows = self.pool.iloc[self.locate(chosen)].reset_index(drop=True)
        self.revealed.extend(rows["run_id"].astype(str))
        return rows


def pool_runner(pool: RunTable | pd.DataFrame | Any) -> PoolRunner:
    """A ``run_fn`` that "runs" a chosen candidate by revealing its row of ``pool``.

    Args:
        pool: a run table (or a DataFrame that validates as one) of finished runs; each
            row is one candidate, at most one row per run.

    Returns:
        A callable ``run_fn(chosen) -> rows`` with the pool's rows for the chosen runs
        (every column, loss included, unchanged); its ``revealed`` list records the
        ``run_id`` of each row revealed, in order.

    Raises:
        ValueError: two pool rows are the same run.
        KeyError (when called): a chosen run the pool does not hold, named.

    Example:
        >>> from bayes_transfer.public_data import load_public
        >>> flan = load_public("rectified-scaling-flan")
        >>> run = pool_runner(flan)
        >>> rows = run(pool_candidates(flan).iloc[:2])
        >>> rows["run_id"].tolist(), rows["loss"].round(3).tolist()
        (['MBZUAI/LaMini-GPT-124M/ft0', 'MBZUAI/LaMini-GPT-124M/ft200'], [4.891, 4.248])
    """
    return PoolRunner(_pool_frame(pool))


def pool_candidates(pool: RunTable | pd.DataFrame) -> pd.DataFrame:
    """The pool's rows as candidates: every column but the measured ``loss``/``loss_se``.

    Example:
        >>> from bayes_transfer.public_data import load_public
        >>> "loss" in pool_candidates(load_public("rectified-scaling-gigaword")).columns
        False
    """
    df = _pool_frame(pool)
    return df.drop(columns=[c for c in _MEASURED if c in df.columns])
