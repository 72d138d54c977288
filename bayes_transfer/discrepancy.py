"""Model discrepancy: the law is an approximation, and its error grows outside the data.

Kennedy and O'Hagan (2001) write the truth as the model plus a discrepancy function.
Here the discrepancy is a drift of the log loss away from the law that starts at the
edge of each group's fitted range and grows linearly with the log distance from it::

    log L(x) = law(x) + sum_axis s_g,axis * d_g,axis(x),   s_g,axis ~ Normal(0, tau_axis)

where ``d`` is how far ``x`` lies outside group g's fitted range along the axis (log N,
log tokens or log f; 0 inside), one slope ``s`` per group (pair, target, source or one
global) and axis, and ``tau_axis`` is shared by all groups (hierarchical).

With ``on = "reducible"`` the drift moves the log of the loss above the law's floor
``E`` instead, carried to the log loss through each row's share ``(L - E) / L``
(:func:`drift_draws`): curves far above their floor get the wider intervals.

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

__all__ = ["AXES", "Discrepancy", "POWERS", "group_index", "ranges", "fill_ranges", "distances",
           "drift_posterior", "drift_draws", "drift_moments", "drift_variance",
           "reducible_share", "calibrate"]

# Axis name in a spec -> the row feature (see laws.features) it runs along.
AXES = {"params": "log_N", "tokens": "log_D", "pretrain_tokens": "log_p",
        "finetune_tokens": "log_f"}
_LEVELS = ("global", "source", "target", "pair")
_GRID = 150
#: Growth powers of the drift with distance that the data choose among (see
#: :func:`drift_posterior`).
POWERS = (1.0, 1.5, 2.0)
#: What the drift moves: the log loss, or the log of the loss above the law's floor E.
ON = ("loss", "reducible")


@dataclass(frozen=True)
class Discrepancy:
    """The ``[discrepancy]`` section of a model spec.

    ``axes``: which of ``params``, ``tokens`` (p + f), ``pretrain_tokens``,
    ``finetune_tokens`` the drift runs along; ``level``: one slope per ``pair``,
    ``target``, ``source`` or ``global``; ``scale``: HalfNormal prior scale of each
    axis's ``tau`` (log loss per unit of log distance); ``holdout``: the top fraction of
    each axis's log range held out by the internal extrapolation that learns ``tau``;
    ``on``: what drifts, the log ``"loss"`` or the log of its ``"reducible"`` part, the
    loss above the law's floor ``E`` (see :func:`drift_draws`). ``holdout`` may be a list:
    one internal extrapolation per fraction (a rolling origin, see :func:`calibrate`).
    """

    axes: tuple[str, ...] = ("params",)
    level: str = "pair"
    scale: float = 0.02
    holdout: float | tuple[float, ...] = 0.3
    on: str = "loss"

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
        if self.on not in ON:
            raise SpecError(f"discrepancy.on {self.on!r} is not one of {ON}")
        if isinstance(self.holdout, (list, tuple)):
            if not self.holdout or not all(_in_range(h, 0.9) for h in self.holdout) or \
                    len(set(self.holdout)) != len(self.holdout):
                raise SpecError(f"discrepancy.holdout must be a number in (0, 0.9] or a "
                                f"list of distinct such numbers, not {self.holdout!r}")
            object.__setattr__(self, "holdout", tuple(float(h) for h in self.holdout))
        elif not _in_range(self.holdout, 0.9):
            raise SpecError(f"discrepancy.holdout must be a number in (0, 0.9] or a list "
                            f"of distinct such numbers, not {self.holdout!r}")
        if not _in_range(self.scale, 10.0):
            raise SpecError(f"discrepancy.scale must be a number in (0, 10], "
                            f"not {self.scale!r}")

    @property
    def holdouts(self) -> tuple[float, ...]:
        """The internal extrapolations' held-out fractions, one or several."""
        return self.holdout if isinstance(self.holdout, tuple) else (float(self.holdout),)


def _in_range(value: Any, hi: float) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and \
        bool(np.isfinite(value)) and 0 < value <= hi


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


def _drift_grid(resid, sd, u, group, scale):
    """Log posterior density of (m, tau) on a grid, for errors ``r ~ N((m + tau z) u)``
    per group, and the log evidence (the grid's integral, cell areas included).

    The grid spans ``[-top, top] x [0, top]``, from ten prior sds, doubled while the
    posterior still has mass at its edge: sized from the largest ``|r| / u`` instead, a
    row barely beyond the range (small ``u``) made the cells coarser than the posterior.
    """
    top = 10 * scale
    for _ in range(12):
        grid = _drift_grid_on(resid, sd, u, group, scale, top)
        logp = grid[2]
        edge = max(logp[:, -1].max(), logp[0].max(), logp[-1].max())
        if edge < logp.max() - 15:    # under 3e-7 of the peak density
            break
        top *= 2
    return grid


def _drift_grid_on(resid, sd, u, group, scale, top):
    taus = np.linspace(0.0, top, _GRID)
    means = np.linspace(-top, top, 2 * _GRID + 1)
    t2, m = (taus**2)[None, :], means[:, None]
    # Normalised priors: m ~ Normal(0, scale), tau ~ HalfNormal(scale).
    logp = (-0.5 * (m / scale) ** 2 - 0.5 * (t2 / scale**2)
            + np.log(2.0 / (2 * np.pi * scale**2)))
    w = 1.0 / sd**2
    for g in np.unique(group):
        k = group == g
        a = float(np.sum(w[k] * u[k] ** 2))        # u' D^-1 u
        b = float(np.sum(w[k] * u[k] * resid[k]))  # u' D^-1 r
        c = float(np.sum(w[k] * resid[k] ** 2))    # r' D^-1 r
        b_e, c_e = b - m * a, c - 2 * m * b + m**2 * a  # the same for e = r - m u
        logp = logp - 0.5 * np.log1p(t2 * a) - 0.5 * (c_e - t2 * b_e**2 / (1 + t2 * a))
        logp = logp - 0.5 * np.sum(np.log(2 * np.pi * sd[k] ** 2))
    cell = (means[1] - means[0]) * (taus[1] - taus[0])
    evidence = float(np.logaddexp.reduce(logp.ravel()) + np.log(cell))
    return means, taus, logp, evidence


def drift_posterior(resid: np.ndarray, sd: np.ndarray, d: np.ndarray, group: np.ndarray,
                    scale: float, draws: int, rng: np.random.Generator,
                    share: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws of the drift's mean slope ``m``, its sd ``tau`` and its growth ``power``.

    Each group's rows share one slope ``m + tau z``, and the drift at distance d is
    ``slope * share * d^power`` (``share``: each row's reducible share of the loss,
    see :func:`drift_draws`; 1 by default): ``r_g ~ Normal(m u_g, diag(sd^2) + tau^2
    u_g u_g^T)`` with ``u = share * d^power``, whose density needs no matrix
    (Sherman-Morrison). Priors:
    ``m ~ Normal(0, scale)``, ``tau ~ HalfNormal(scale)``, ``power`` uniform on
    :data:`POWERS` (linear growth, or faster: a law whose error accelerates away from
    the data). The posterior is evaluated on a grid per power, the powers weighted by
    their evidence (Bayesian model averaging), and sampled cell by cell.
    """
    if len(resid) == 0:
        return (rng.normal(0.0, scale, draws), np.abs(rng.normal(0.0, scale, draws)),
                rng.choice(POWERS, size=draws))
    share = np.ones_like(d) if share is None else share
    grids = [_drift_grid(resid, sd, share * d**power, group, scale) for power in POWERS]
    evidence = np.array([g[3] for g in grids])
    weights = np.exp(evidence - evidence.max())
    which = rng.choice(len(POWERS), size=draws, p=weights / weights.sum())
    mean, tau = np.empty(draws), np.empty(draws)
    for k, (means, taus, logp, _) in enumerate(grids):
        pick = which == k
        if not pick.any():
            continue
        p = np.exp(logp - logp.max()).ravel()
        cell = rng.choice(p.size, size=int(pick.sum()), p=p / p.sum())
        i, j = np.unravel_index(cell, logp.shape)
        jitter = rng.uniform(-0.5, 0.5, (2, len(cell)))
        mean[pick] = means[i] + jitter[0] * (means[1] - means[0])
        tau[pick] = np.abs(taus[j] + jitter[1] * (taus[1] - taus[0]))
    return mean, tau, np.asarray(POWERS)[which]


def drift_draws(mean: np.ndarray, tau: np.ndarray, power: np.ndarray, d: np.ndarray,
                group: np.ndarray, n: int, rng: np.random.Generator,
                share: np.ndarray | None = None) -> np.ndarray:
    """Draws ``(draws, rows)`` of ``(m + tau z_g) share d^power``: one slope per draw and
    group.

    ``share`` (per row, 1 by default) is what ``on = "reducible"`` puts there: the
    median share of the law's loss above its floor, ``(L - E) / L``. The drift is then
    one of the log *reducible* loss, ``log(L - E)``, carried to the log loss to first
    order: a curve far above its floor can still fall (or stall) a long way beyond the
    data, one that has nearly reached it cannot, and a single drift on the log loss
    would give both the same width."""
    slopes = mean[:, None] + tau[:, None] * rng.standard_normal((len(tau), n))
    share = np.ones_like(d) if share is None else share
    return slopes[:, group] * share[None, :] * d[None, :] ** power[:, None]


def drift_moments(mean: np.ndarray, tau: np.ndarray, power: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The drift's moments over its draws, per growth power of :data:`POWERS`:
    ``E[m 1{power = p}]`` and ``E[(m^2 + tau^2) 1{power = p}]``. With them the mean and
    variance of the drift at any distance are closed forms (:func:`drift_variance`):
    no draws of the slopes are needed."""
    on = np.asarray(power)[None, :] == np.asarray(POWERS)[:, None]
    mean, tau = np.asarray(mean, np.float64), np.asarray(tau, np.float64)
    return (on * mean).mean(axis=1), (on * (mean**2 + tau**2)).mean(axis=1)


def drift_variance(m1: np.ndarray, m2: np.ndarray, d: np.ndarray,
                   share: np.ndarray | float = 1.0) -> np.ndarray:
    """Variance of the drift ``(m + tau z) share d^power`` at log distances ``d`` (any
    shape), over the draws of ``(m, tau, power)`` and the group's slope ``z ~ N(0, 1)``:
    ``share^2 (sum_p m2_p d^2p - (sum_p m1_p d^p)^2)`` with the moments of
    :func:`drift_moments`. It is what :func:`drift_draws` spreads, in expectation.

    Example:
        >>> m1, m2 = drift_moments(np.zeros(4), np.full(4, 0.1), np.ones(4))
        >>> round(float(drift_variance(m1, m2, np.array(2.0))), 6)   # (0.1 * 2)^2
        0.04
    """
    dp = np.asarray(d, np.float64)[..., None] ** np.asarray(POWERS)
    first, second = dp @ m1, (dp**2) @ m2
    return np.square(share) * np.maximum(second - first**2, 0.0)


def reducible_share(log_floor: np.ndarray, log_loss: np.ndarray) -> np.ndarray:
    """Each row's share of the loss above the floor, ``(L - E) / L``: the posterior
    median over draws ``(draws, rows)``, in [0, 1] (see :func:`drift_draws`)."""
    share = -np.expm1(np.broadcast_to(log_floor, np.shape(log_loss)) - log_loss)
    return np.clip(np.median(share, axis=0), 0.0, 1.0)


def calibrate(disc: Discrepancy, feats: Mapping[str, np.ndarray], group: np.ndarray,
              n: int, predict_holdout: Callable[[np.ndarray, np.ndarray],
                                                tuple[np.ndarray, np.ndarray, np.ndarray]],
              draws: int, seed: int) -> dict[str, dict[str, Any]]:
    """Learn each axis's ``tau`` by internal extrapolations of the fitted table.

    ``predict_holdout(fit_mask, test_mask)`` fits the rows of ``fit_mask`` and returns,
    for the rows of ``test_mask`` (above the cut, of groups with rows below it), the log
    predictive median and sd, the observed log loss and the rows' share of the drift
    (ones, or with ``on = "reducible"`` the reducible share: :func:`drift_draws`).

    With several holdouts (a rolling origin, as in the cross-validation of forecasts) each
    cut is one internal extrapolation, and their errors together inform ``tau`` and the
    growth power: a long holdout shows how the law errs far out, a short one how it errs
    one step beyond the data, which a power fitted to the far errors alone can make too
    small. A group's errors share one slope within a cut, not across cuts: each cut's
    fit is a different extrapolation. Returns per axis the ``tau`` draws and what the
    calibration saw (rows held out, the cuts, their median absolute log error).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for axis in disc.axes:
        x = np.asarray(feats[AXES[axis]], dtype=np.float64)
        finite = np.isfinite(x)
        parts: list[tuple[np.ndarray, ...]] = []
        cuts: list[float] = []
        if finite.any() and np.ptp(x[finite]) > 1e-6:
            lo, hi = float(x[finite].min()), float(x[finite].max())
            for k, holdout in enumerate(disc.holdouts):
                cut = hi - holdout * (hi - lo)
                fit_mask = ~finite | (x <= cut)
                lo_g, hi_g = ranges(np.where(fit_mask, x, np.nan), group, n)
                # Held out: rows above the cut of groups that keep rows below it.
                test = ~fit_mask & np.isfinite(hi_g[group])
                if not test.any() or fit_mask.sum() < 3:
                    continue
                log_med, log_sd, log_obs, share = predict_holdout(fit_mask, test)
                g = group[test]
                parts.append((log_obs - log_med, log_sd,
                              distances(x[test], lo_g[g], hi_g[g]), g + k * n, share))
                cuts.append(float(np.exp(cut)))
        resid = sd = d = g = share = np.zeros(0)
        info: dict[str, Any] = {"rows": 0, "median_abs_log_error": None}
        if parts:
            resid, sd, d, g, share = (np.concatenate(column) for column in zip(*parts, strict=True))
            info["rows"] = len(resid)
            info.update(cut=cuts[0] if len(cuts) == 1 else cuts,
                        median_abs_log_error=float(np.median(np.abs(resid))))
        mean, tau, power = drift_posterior(resid, np.maximum(sd, 1e-6), d, g, disc.scale,
                                           draws, rng, share=share)
        info["mean_median"] = float(np.median(mean))
        info["tau_median"] = float(np.median(tau))
        info["power_mean"] = float(np.mean(power))
        out[axis] = {"mean": mean, "tau": tau, "power": power, "info": info}
    return out
