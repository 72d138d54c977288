"""Rows beyond the fitted range, and the one warning that says so.

A posterior is honest inside the range of model sizes N, pre-training tokens p and
fine-tuning tokens f it was fitted on; beyond it a prediction rests on the law's form (a
spec's ``[discrepancy]`` widens it, but only by what the table's own extrapolations
missed). :func:`predict <bayes_transfer.inference.Posterior.predict>`,
:func:`~bayes_transfer.advise.advise` and :func:`~bayes_transfer.design.suggest` call
:func:`warn_extrapolation` here -- the one home of the check -- and it raises one
:class:`ExtrapolationWarning` saying how many rows lie outside and by how many times.
``predict`` raises a second one, of the same class, for rows farther out than the
discrepancy's internal extrapolations reached
(:meth:`~bayes_transfer.inference.Posterior.beyond_calibration`): that reach is the
posterior's, not the table's, so it lives with the posterior.

The range is that of the whole fitted table (the posterior's ``constant_data`` group,
read back as ``Posterior.runs``), per axis, over positive counts: a count of 0 (a
from-scratch or zero-shot row) is a kind of row, not a distance, and an unknown (NaN)
pre-training count has no position; whether the law explains such rows is checked where
it is evaluated.

Example:
    >>> import pandas as pd
    >>> fitted = pd.DataFrame({"params": [1e6, 1e9], "pretrain_tokens": [1e9, 1e10],
    ...                        "finetune_tokens": [1e4, 1e6]})
    >>> rows = pd.DataFrame({"params": [1.6e10, 1e8], "pretrain_tokens": [1e10, 1e10],
    ...                      "finetune_tokens": [1e5, 1e3]})
    >>> print(extrapolation_message(rows, fitted))
    2 of 2 rows lie beyond the fitted range: params up to 16x above the largest fitted (1e+09); finetune_tokens up to 10x below the smallest fitted (1e+04)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayes_transfer.data import RunTable

__all__ = ["AXES", "AxisExcess", "ExtrapolationWarning", "UninformedSizeWarning", "excess",
           "extrapolation_message", "fitted_ranges", "uninformed_size_message",
           "warn_extrapolation"]

#: The run-table columns whose fitted range a prediction should stay inside.
AXES = ("params", "pretrain_tokens", "finetune_tokens")
# Candidate and advice values are rounded to whole counts: a value this close to the
# edge is on it, not beyond it.
_RTOL = 1e-6


class ExtrapolationWarning(UserWarning):
    """Rows or options lie outside the fitted range of N, p or f; the message says how far."""


class UninformedSizeWarning(UserWarning):
    """Every fitted row has one model size N, but the law has a model-size term: that term
    is a constant the floor absorbs, so its parameters rest on their priors."""


@dataclass(frozen=True)
class AxisExcess:
    """How far rows go beyond the fitted range on one axis.

    Attributes:
        axis: the run-table column (``params``, ``pretrain_tokens``, ``finetune_tokens``).
        lo, hi: the smallest and largest positive fitted value.
        above, below: how many rows lie above ``hi`` and below ``lo``.
        max_above, max_below: the largest ratio ``value / hi`` and ``lo / value`` (1 if none).
    """

    axis: str
    lo: float
    hi: float
    above: int
    below: int
    max_above: float
    max_below: float


def _frame(rows: RunTable | pd.DataFrame) -> pd.DataFrame:
    return rows.df if isinstance(rows, RunTable) else rows


def _positive(values: pd.Series) -> np.ndarray:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def fitted_ranges(fitted: RunTable | pd.DataFrame) -> dict[str, tuple[float, float]]:
    """``{axis: (smallest, largest)}`` positive value of each axis in the fitted table.

    An axis with no positive value (a table of zero-shot rows has no f) is left out.

    Example:
        >>> fitted_ranges(pd.DataFrame({"params": [10, 1000], "pretrain_tokens": [0, 5],
        ...                             "finetune_tokens": [0, 0]}))
        {'params': (10.0, 1000.0), 'pretrain_tokens': (5.0, 5.0)}
    """
    df = _frame(fitted)
    out = {}
    for axis in AXES:
        if axis not in df.columns:
            continue
        v = _positive(df[axis])
        if np.isfinite(v).any():
            out[axis] = (float(np.nanmin(v)), float(np.nanmax(v)))
    return out


def excess(rows: RunTable | pd.DataFrame, fitted: RunTable | pd.DataFrame
           ) -> tuple[np.ndarray, list[AxisExcess]]:
    """Which ``rows`` lie outside the fitted range (a bool per row), and each axis's excess.

    Only axes on which some row lies outside are listed.

    Example:
        >>> outside, axes = excess(pd.DataFrame({"params": [5, 50]}),
        ...                        pd.DataFrame({"params": [10, 20]}))
        >>> outside.tolist(), [(a.axis, a.above, a.max_above, a.below, a.max_below)
        ...                    for a in axes]
        ([True, True], [('params', 1, 2.5, 1, 2.0)])
    """
    df = _frame(rows)
    outside = np.zeros(len(df), dtype=bool)
    found = []
    for axis, (lo, hi) in fitted_ranges(fitted).items():
        if axis not in df.columns:
            continue
        v = _positive(df[axis])
        with np.errstate(invalid="ignore"):
            up = v > hi * (1 + _RTOL)
            down = v < lo * (1 - _RTOL)
        if not (up.any() or down.any()):
            continue
        outside |= up | down
        found.append(AxisExcess(
            axis=axis, lo=lo, hi=hi, above=int(up.sum()), below=int(down.sum()),
            max_above=float(np.max(v[up]) / hi) if up.any() else 1.0,
            max_below=float(lo / np.min(v[down])) if down.any() else 1.0))
    return outside, found


def _times(ratio: float) -> str:
    return f"{ratio:.2g}x" if ratio < 10 else f"{ratio:.0f}x"


def extrapolation_message(rows: RunTable | pd.DataFrame, fitted: RunTable | pd.DataFrame,
                          what: str = "rows") -> str | None:
    """The sentence that says how many ``rows`` lie outside the fitted range and how far;
    None when every row lies inside."""
    outside, axes = excess(rows, fitted)
    if not outside.any():
        return None
    parts = []
    for a in axes:
        sides = []
        if a.above:
            sides.append(f"up to {_times(a.max_above)} above the largest fitted ({a.hi:.3g})")
        if a.below:
            sides.append(f"up to {_times(a.max_below)} below the smallest fitted ({a.lo:.3g})")
        parts.append(f"{a.axis} " + " and ".join(sides))
    return (f"{int(outside.sum())} of {len(outside)} {what} lie beyond the fitted range: "
            + "; ".join(parts))


def warn_extrapolation(rows: RunTable | pd.DataFrame, fitted: RunTable | pd.DataFrame | None,
                       what: str = "rows", *, advice: str = "", stacklevel: int = 3
                       ) -> str | None:
    """Raise one :class:`ExtrapolationWarning` if any of ``rows`` lies outside ``fitted``'s
    range; return its message (None: all inside, or no fitted table to compare with).

    ``advice`` is appended to the message; ``stacklevel`` 3 points the warning at the
    caller of the public function that calls this one.
    """
    if fitted is None or len(_frame(rows)) == 0:
        return None
    message = extrapolation_message(rows, fitted, what)
    if message is not None:
        if advice:
            message = f"{message}. {advice}"
        warnings.warn(message, ExtrapolationWarning, stacklevel=stacklevel)
    return message


def uninformed_size_message(size_term: str | None, fitted: RunTable | pd.DataFrame
                            ) -> str | None:
    """Why a law's model-size term cannot be learned from ``fitted``, or None if it can.

    ``size_term`` is the law's (:attr:`bayes_transfer.laws.Law.size_term`, e.g.
    ``"A N^-alpha"``; None: the law has none). When every fitted row has the same N the
    term is one constant per group, which the floor ``E`` trades against one for one: the
    posterior is a ridge along which only the priors decide, NUTS crosses it slowly, and
    a prediction at another N rests on the priors. (Measured on llm-line fitted below 1e11
    tokens, where every checkpoint is a 1.7e9-parameter model: R-hat 2.0-2.3 with the
    size term's mean wandering 3.5 log units between two chains.)

    Example:
        >>> rows = pd.DataFrame({"params": [1.7e9, 1.7e9], "pretrain_tokens": [1e9, 1e10],
        ...                      "finetune_tokens": [0, 0]})
        >>> print(uninformed_size_message("A N^-alpha", rows))  # doctest: +ELLIPSIS
        every fitted row has params = 1.7e+09: the law's model-size term A N^-alpha ...
        >>> uninformed_size_message(None, rows) is None
        True
    """
    if size_term is None:
        return None
    lo, hi = fitted_ranges(fitted).get("params", (0.0, 1.0))
    if lo != hi:
        return None
    return (f"every fitted row has params = {lo:.3g}: the law's model-size term "
            f"{size_term} is then a constant that its floor trades against, so its "
            "parameters rest on their priors, NUTS mixes slowly along that ridge (expect "
            "R-hat above 1.01) and a prediction at another model size rests on the priors. "
            "Rows at two or more model sizes let the data learn the term; if you predict "
            "only at this size, fit without it (pin its coefficient near zero, e.g. "
            f"[params.{size_term.split()[0]}] level = \"global\", loc = -20, scale = 0.01)")
