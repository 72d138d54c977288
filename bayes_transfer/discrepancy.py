"""Model discrepancy: the law is an approximation, and its error grows outside the data.

Kennedy and O'Hagan (2001) write the truth as the model plus a discrepancy function.
Here the discrepancy is a drift of the log loss away from the law that starts at the
edge of each group's fitted range and grows linearly with the log distance from it::

    log L(x) = law(x) + sum_axis s_g,axis * d_g,axis(x),   s_g,axis ~ Normal(0, tau_axis)

where ``d`` is how far ``x`` lies outside group g's fitted range along the axis (log N,
log tokens or log f; 0 inside), one slope ``s`` per group (pair, target, source or one
global) and axis, and ``tau_axis`` is shared by all groups (hierarchical).

``tau`` cannot be learned from rows inside the range (there ``d = 0``), so it is learned
from an **internal extrapolation** of the same table: for each axis the spec's law is
fitted (NUTS, the same spec without discrepancy) on the rows below ``1 - holdout`` of the
axis's log range, and the rows above are predicted. Their log errors ``r``, the
prediction's own sd ``s`` (noise and parameter uncertainty) and their distances ``d``
give ``tau``'s posterior on a grid: per group ``r ~ Normal(0, diag(s^2) + tau^2 d d^T)``
(a group's rows share one slope), with the spec's HalfNormal prior. ``tau`` is then what
must be added to the law's own uncertainty for its extrapolations on this table to be
calibrated. A table with nothing to hold out along an axis keeps the prior.

Why this form: measured by backtests on public tables (``benchmarks/real_data.py``),
errors of a law's extrapolation grow about linearly in the log distance and are
systematic within a group (llm-line, 1.05-3.6x beyond the fitted tokens: mean absolute
log error 0.002 within 1.35x, 0.013 at 2.5-3.6x); a smooth process learned from inside
the range (an integrated Wiener process per pair) learned a tau too small to matter, and
its 90% intervals covered 35% (the law alone: 33%).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AXES", "Discrepancy", "group_index", "ranges", "fill_ranges", "distances", "tau_posterior",
           "drift_draws", "calibrate"]

# Axis name in a spec -> the row feature (see laws.features) it runs along.
AXES = {"params": "log_N", "tokens": "log_D", "pretrain_tokens": "log_p",
        "finetune_tokens": "log_f"}
_LEVELS = ("global", "source", "target", "pair")
_TAU_GRID = 400


@dataclass(frozen=True)
class Discrepancy:
    """The ``[discrepancy]`` section of a model spec.

    ``axes``: which of ``params``, ``tokens`` (p + f), ``pretrain_tokens``,
    ``finetune_tokens`` the drift runs along; ``level``: one slope per ``pair``,
    ``target``, ``source`` or ``global``; ``scale``: HalfNormal prior scale of each
    axis's ``tau`` (log loss per unit of log distance); ``holdout``: the top fraction of
    each axis's log range held out by the internal extrapolation that learns ``tau``.
    """

    axes: tuple[str, ...] = ("params",)
    level: str = "pair"
    scale: float = 0.05
    holdout: float = 0.3

    def __post_init__(self) -> None:
        from bayes_transfer.spec import SpecError

        axes = tuple(self.axes) if isinstance(self.axes, (list, tuple)) else None
        if not axes or any(not isinstance(a, str) or a not in AXES for a in axes) \
                or len(set(axes)) != len(axes):
            raise SpecError(f"discrepancy.axes must be a list of distinct names from "
                            f"{sorted(AXES)}, not {self.axes!r}")
        object.__setattr__(self, "axes", axes)
        if self.level not in _LEVELS:
            raise SpecError(f"discrepancy.level {self.level!r} is not one of {_LEVELS}")
        for key, hi in (("scale", 10.0), ("holdout", 0.9)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not np.isfinite(value) or not 0 < value <= hi:
                raise SpecError(f"discrepancy.{key} must be a number in (0, {hi:g}], "
                                f"not {value!r}")


def group_index(level: str, source_idx: np.ndarray, target_idx: np.ndarray,
                n_targets: int) -> np.ndarray:
    """Each row's group of a discrepancy ``level`` (0 for ``global``)."""
    if level == "global":
        return np.zeros(len(source_idx), dtype=int)
    return {"source": source_idx, "target": target_idx,
            "pair": source_idx * n_targets + target_idx}[level]


def n_groups(level: str, n_sources: int, n_targets: int) -> int:
    return {"global": 1, "source": n_sources, "target": n_targets,
            "pair": n_sources * n_targets}[level]


def ranges(x: np.ndarray, group: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the min and max of the finite ``x`` of its rows (NaN: no such row)."""
    lo, hi = np.full(n, np.nan), np.full(n, np.nan)
    ok = np.isfinite(x)
    if ok.any():
        np.fmin.at(lo, group[ok], x[ok])
        np.fmax.at(hi, group[ok], x[ok])
    return lo, hi


def fill_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups without a range (NaN: no rows) take the range of all groups."""
    if not np.isfinite(lo).any():
        return np.zeros_like(lo), np.zeros_like(hi)
    return (np.where(np.isnan(lo), np.nanmin(lo), lo), np.where(np.isnan(hi), np.nanmax(hi), hi))


def distances(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Log distance of each row outside its range ``[lo, hi]`` (0 inside).

    ``x = -inf`` (f = 0 on the fine-tuning axis) is the zero-shot point, never an
    extrapolation.
    """
    x = np.where(np.isfinite(x), x, lo)
    return np.maximum(x - hi, 0.0) + np.maximum(lo - x, 0.0)


def tau_posterior(resid: np.ndarray, sd: np.ndarray, d: np.ndarray, group: np.ndarray,
                  scale: float, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Draws of ``tau`` given internal extrapolation errors (see the module docstring).

    Each group's rows share one slope: ``r_g ~ Normal(0, diag(sd^2) + tau^2 d_g d_g^T)``,
    whose density needs no matrix (Sherman-Morrison). The posterior is evaluated on a
    grid up to 10 prior scales (or 3x the largest error per unit distance) and sampled
    by its inverse CDF.
    """
    if len(resid) == 0:
        return np.abs(rng.normal(0.0, scale, draws))
    top = max(10 * scale, 3 * float(np.max(np.abs(resid) / np.maximum(d, 1e-3))))
    grid = np.linspace(0.0, top, _TAU_GRID)
    logp = -0.5 * (grid / scale) ** 2
    w = 1.0 / sd**2
    for g in np.unique(group):
        m = group == g
        a = float(np.sum(w[m] * d[m] ** 2))        # d' D^-1 d
        b = float(np.sum(w[m] * d[m] * resid[m]))  # d' D^-1 r
        c = float(np.sum(w[m] * resid[m] ** 2))    # r' D^-1 r
        t2 = grid**2
        logp += -0.5 * np.log1p(t2 * a) - 0.5 * (c - t2 * b**2 / (1 + t2 * a))
    p = np.exp(logp - logp.max())
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return np.interp(rng.uniform(size=draws), cdf, grid)


def drift_draws(tau: np.ndarray, d: np.ndarray, group: np.ndarray, n: int,
                rng: np.random.Generator) -> np.ndarray:
    """Draws ``(draws, rows)`` of ``s_g * d``: one slope per draw and group."""
    slopes = tau[:, None] * rng.standard_normal((len(tau), n))
    return slopes[:, group] * d[None, :]


def calibrate(disc: Discrepancy, feats: Mapping[str, np.ndarray], group: np.ndarray,
              n: int, predict_holdout: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
              draws: int, seed: int) -> dict[str, dict[str, Any]]:
    """Learn each axis's ``tau`` by an internal extrapolation of the fitted table.

    ``predict_holdout(fit_mask)`` fits the rows of ``fit_mask`` and returns, for the
    other rows, the log predictive median and sd. Returns per axis the ``tau`` draws and
    what the calibration saw (rows held out, their median absolute log error).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for axis in disc.axes:
        x = np.asarray(feats[AXES[axis]], dtype=np.float64)
        finite = np.isfinite(x)
        info: dict[str, Any] = {"rows": 0, "median_abs_log_error": None}
        resid = sd = d = g = np.zeros(0)
        if finite.any() and np.ptp(x[finite]) > 1e-6:
            lo, hi = float(x[finite].min()), float(x[finite].max())
            cut = hi - disc.holdout * (hi - lo)
            fit_mask = ~finite | (x <= cut)
            lo_g, hi_g = ranges(np.where(fit_mask, x, np.nan), group, n)
            # Held out: rows above the cut of groups that keep rows below it.
            test = ~fit_mask & np.isfinite(hi_g[group])
            if test.any() and fit_mask.sum() >= 3:
                log_med, log_sd, log_obs = predict_holdout(fit_mask)
                resid = log_obs - log_med
                sd, g = log_sd, group[test]
                d = distances(x[test], lo_g[g], hi_g[g])
                info = {"rows": int(test.sum()), "cut": float(np.exp(cut)),
                        "median_abs_log_error": float(np.median(np.abs(resid)))}
        tau = tau_posterior(resid, np.maximum(sd, 1e-6), d, g, disc.scale, draws, rng)
        info["tau_median"] = float(np.median(tau))
        out[axis] = {"tau": tau, "info": info}
    return out
