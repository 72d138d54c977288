"""Model discrepancy: the law is an approximation, and its error grows outside the data.

Kennedy and O'Hagan (2001) write the truth as the model plus a discrepancy function.
Here the discrepancy is a drift of the log loss away from the law that starts at the
edge of each group's fitted range and grows with the log distance from it::

    log L(x) = law(x) + sum_axis [(m + tau z_g) d^power + walk z'_g d^(1/2)]_axis,
    z_g, z'_g ~ Normal(0, 1)

where ``d`` is how far ``x`` lies outside group g's fitted range along the axis (log N,
log tokens or log f; 0 inside), with one pair of slopes per group (pair, target, source
or one global) and axis; ``m``, ``tau``, ``power`` and ``walk`` are shared by all groups
(hierarchical). The first part is the *trend*: its mean ``m`` carries a law's systematic
error far out, and ``power`` (1, 1.5 or 2) is chosen by the data. The second, the *near
part*, is zero-mean and its sd grows like a random walk's: the law's error one step
beyond the data, which a trend fitted to the far errors leaves out.

With ``late_trend = true`` the drift's mean also continues each group's own residuals:
``gain (last_g + slope_g d)`` above the range, from the law's residuals at the group's
last :data:`LATE_POINTS` fitted sizes (:func:`late_trend`), the gain learned with the
rest (:func:`drift_posterior_late`): an integrated random walk's conditional mean beyond
the data continues its last value and slope, where the plain drift starts from zero.

With ``on = "reducible"`` the drift moves the log of the loss above the law's floor
``E`` instead, carried to the log loss through each row's share ``(L - E) / L``
(:func:`drift_draws`): curves far above their floor get the wider intervals.
With ``mean_on = "loss"`` beside it, the drift's mean ``m`` moves the log loss itself
while its spread (``tau``, ``walk``) stays on the reducible part: one shift for every
curve keeps the law's ranking of the curves, where a shift of the reducible loss moves
the curves still high above their floor the most and can reorder them.

The drift cannot be learned from rows inside the range (there ``d = 0``), so it is
learned from **internal extrapolations** of the same table: for each axis the spec's law
is fitted (NUTS, the same spec without discrepancy) on the rows below ``1 - holdout`` of
the axis's log range, and the rows above are predicted (several holdouts: one such cut
each). Their log errors ``r``, the prediction's own sd ``s`` (noise and parameter
uncertainty) and their distances ``d`` give the posterior of ``(m, tau, walk, power)`` on
a grid (:func:`drift_posterior`): per group and cut ``r ~ Normal(m u, diag(s^2) + tau^2
u u^T + walk^2 v v^T)`` with ``u = d^power``, ``v = d^(1/2)``, under the spec's priors.
That is what must be added to the law's own uncertainty for its extrapolations on this
table to be calibrated. A table with nothing to hold out along an axis keeps the prior.

Why this form: measured by backtests on public tables (``benchmarks/real_data.py``,
``docs/measurements.md``). Errors of a law's extrapolation are systematic within a group
and grow with the log distance (llm-line, 1.05-3.6x beyond the fitted tokens: mean
absolute log error 0.002 within 1.35x, 0.013 at 2.5-3.6x), so a group's rows share
slopes. A smooth process learned from inside the range (an integrated Wiener process per
pair) learned a tau too small to matter: its 90% intervals covered 35% (the law alone:
33%). A trend alone, fitted mostly to far errors, grew as d^2 and was under 0.006 one
doubling beyond FLAN's curves, where the law errs by 0.02-0.08: 90% coverage 0.57 there;
with the near part and a rolling origin of four cuts, 0.80-0.83, and llm-line's 0.82-0.83
became 0.86-0.87 with its one cut.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["AXES", "Discrepancy", "MOMENT_POWERS", "POWERS", "WALK_POWER", "group_index",
           "ranges", "fill_ranges", "distances", "drift_posterior", "drift_draws",
           "stored_drift", "drift_moments", "drift_variance", "late_trend",
           "late_covariate", "drift_posterior_late", "GAINS", "LATE_POINTS",
           "reducible_share", "calibrate", "beyond_calibration", "mean_moment", "part_shares"]

# Axis name in a spec -> the row feature (see laws.features) it runs along.
AXES = {"params": "log_N", "tokens": "log_D", "pretrain_tokens": "log_p",
        "finetune_tokens": "log_f"}
_LEVELS = ("global", "source", "target", "pair")
_GRID = 60
_CHUNK = 256
#: Growth powers of the drift with distance that the data choose among (see
#: :func:`drift_posterior`).
POWERS = (1.0, 1.5, 2.0)
#: Growth power of the drift's near part, zero-mean: its sd grows like a random walk's.
WALK_POWER = 0.5
#: The powers of :func:`drift_moments`' entries: the near part's, then :data:`POWERS`.
MOMENT_POWERS = (WALK_POWER, *POWERS)
#: What the drift moves: the log loss, or the log of the loss above the law's floor E.
ON = ("loss", "reducible")
#: How many of a group's largest fitted sizes give its late residual trend.
LATE_POINTS = 3
#: The gains on the late residual trend that the data choose among (see
#: :func:`drift_posterior_late`): 0 ignores it, 1 continues it whole.
GAINS = (0.0, 0.25, 0.5, 0.75, 1.0)


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
    ``walk_scale``: HalfNormal prior scale of the near part's ``walk`` (``scale`` when
    unset; 0 leaves the near part out, the trend alone). ``late_trend``: also continue
    each group's own residuals beyond its range, their value at the group's largest
    fitted size plus their slope over its last :data:`LATE_POINTS` sizes (less the groups'
    median slope), times a gain the internal extrapolations learn
    (:func:`late_trend`, :func:`drift_posterior_late`). ``mean_on``: what the drift's
    mean ``m`` moves, where it differs from ``on`` (unset: ``on``); ``on = "reducible"``
    with ``mean_on = "loss"`` keeps one shift for every curve (their ranking kept) and
    the spread on each curve's reducible share.
    """

    axes: tuple[str, ...] = ("params",)
    level: str = "pair"
    scale: float = 0.02
    holdout: float | tuple[float, ...] = 0.3
    on: str = "loss"
    walk_scale: float | None = None
    late_trend: bool = False
    mean_on: str | None = None

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
        if self.mean_on is not None and self.mean_on not in ON:
            raise SpecError(f"discrepancy.mean_on {self.mean_on!r} is not one of {ON}")
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
        if not isinstance(self.late_trend, bool):
            raise SpecError(f"discrepancy.late_trend must be true or false, "
                            f"not {self.late_trend!r}")
        if self.walk_scale is not None and not (self.walk_scale == 0 or
                                                _in_range(self.walk_scale, 10.0)):
            raise SpecError(f"discrepancy.walk_scale must be a number in [0, 10], "
                            f"not {self.walk_scale!r}")

    @property
    def holdouts(self) -> tuple[float, ...]:
        """The internal extrapolations' held-out fractions, one or several."""
        return self.holdout if isinstance(self.holdout, tuple) else (float(self.holdout),)

    @property
    def trend_on(self) -> str:
        """What the drift's mean moves: ``mean_on``, or ``on`` when unset."""
        return self.on if self.mean_on is None else self.mean_on

    @property
    def near_scale(self) -> float:
        """The prior scale of the near part's ``walk`` (0: no near part)."""
        return self.scale if self.walk_scale is None else float(self.walk_scale)


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


def _group_sums(resid, sd, u, v, group, u_mean=None):
    """Per group ``g``, with ``D = diag(sd^2)``, the sufficient statistics of
    ``r_g ~ Normal(m w_g, D + tau^2 u_g u_g^T + walk^2 v_g v_g^T)`` (``w = u_mean``,
    ``u`` when None): ``U^T D^-1 U`` (entries ``a11, a12, a22`` for ``U = [u v]``),
    ``U^T D^-1 r`` (``b1, b2``), ``r^T D^-1 r`` (``c``), ``log det(2 pi D)``, and for
    the mean ``U^T D^-1 w`` (``g1, g2``), ``w^T D^-1 r`` (``h``) and ``w^T D^-1 w``
    (``k``), one array each."""
    w = 1.0 / sd**2
    groups, inverse = np.unique(group, return_inverse=True)

    def total(x):
        return np.bincount(inverse, weights=x, minlength=len(groups))

    sums = (total(w * u * u), total(w * u * v), total(w * v * v), total(w * u * resid),
            total(w * v * resid), total(w * resid**2), total(np.log(2 * np.pi * sd**2)))
    if u_mean is None:      # the mean rides on u: its sums are u's
        return (*sums, sums[0], sums[1], sums[3], sums[0])
    return (*sums, total(w * u * u_mean), total(w * v * u_mean), total(w * u_mean * resid),
            total(w * u_mean * u_mean))


def _drift_grid(resid, sd, u, v, group, scale, walk_scale, u_mean=None):
    """Log posterior density of (m, tau, walk) on a grid and the log evidence (the
    grid's integral, cell volumes included), for the errors ``r`` of
    :func:`drift_posterior` with ``u = share d^power``, ``v = share d^WALK_POWER`` and
    the mean's ``u_mean = mean_share d^power`` (``u`` when None).

    The grid spans ``[-top, top] x [0, top] x [0, top walk_scale / scale]`` (no walk
    axis with ``walk_scale = 0``), from ten prior sds, doubled while the
    posterior still has mass at its edge: sized from the largest ``|r| / u`` instead, a
    row barely beyond the range (small ``u``) made the cells coarser than the posterior.
    """
    stats = _group_sums(resid, sd, u, v, group, u_mean)
    top = 10 * scale
    for _ in range(12):
        grid = _drift_grid_on(stats, scale, walk_scale, top)
        logp = grid[3]
        edge = max(logp[:, -1].max(), logp[0].max(), logp[-1].max(),
                   logp[:, :, -1].max() if walk_scale > 0 else -np.inf)
        if edge < logp.max() - 15:    # under 3e-7 of the peak density
            break
        top *= 2
    return grid


def _drift_grid_on(stats, scale, walk_scale, top):
    """The grid of :func:`_drift_grid` whose (m, tau) part spans ``[-top, top] x [0, top]``.

    Per group, with ``T = diag(tau, walk)`` and ``M = I + T A T`` (``A = U^T D^-1 U``),
    Woodbury's identity gives ``log det = log det D + log det M`` and
    ``e^T Sigma^-1 e = e^T D^-1 e - (T b)^T M^-1 (T b)`` for ``e = r - m u``,
    ``b = U^T D^-1 e``: 2 x 2 algebra. ``b`` is linear in ``m``, so the quadratic form
    is a quadratic in ``m`` whose coefficients, summed over groups, live on the
    (tau, walk) plane: the groups cost 2-D work and only the sum is 3-D. The mean's
    regressor ``w`` may differ from ``u`` (``mean_on``): ``b`` is then ``b - m (g1, g2)``.
    """
    a11, a12, a22, b1, b2, c, logdet_d, g1, g2, h, kk = stats
    taus = np.linspace(0.0, top, _GRID)
    walks = np.linspace(0.0, top * walk_scale / scale, _GRID) if walk_scale > 0 else np.zeros(1)
    means = np.linspace(-top, top, 2 * _GRID + 1)
    t1, t2 = taus[:, None, None], walks[None, :, None]
    quad0, quad1, quad2, logdet = (np.zeros((len(taus), len(walks))) for _ in range(4))
    for at in range(0, len(c), _CHUNK):    # (tau, walk, group) arrays, a chunk of groups
        k = slice(at, at + _CHUNK)
        m11, m22, m12 = 1 + t1**2 * a11[k], 1 + t2**2 * a22[k], t1 * t2 * a12[k]
        det = m11 * m22 - m12**2
        p, r, q = m22 * t1**2 / det, -2 * m12 * t1 * t2 / det, m11 * t2**2 / det
        # (T b)^T M^-1 (T b) = p b1^2 + r b1 b2 + q b2^2, at b1 - m g1 and b2 - m g2.
        quad0 += (p * b1[k] ** 2 + r * b1[k] * b2[k] + q * b2[k] ** 2).sum(-1)
        quad1 -= (2 * p * b1[k] * g1[k] + r * (b1[k] * g2[k] + b2[k] * g1[k])
                  + 2 * q * b2[k] * g2[k]).sum(-1)
        quad2 += (p * g1[k] ** 2 + r * g1[k] * g2[k] + q * g2[k] ** 2).sum(-1)
        logdet += np.log(det).sum(-1)
    m = means[:, None, None]
    loglik = (-0.5 * logdet[None] - 0.5 * logdet_d.sum()
              - 0.5 * (c.sum() - 2 * m * h.sum() + m**2 * kk.sum())
              + 0.5 * (quad0[None] + m * quad1[None] + m**2 * quad2[None]))
    # Normalised priors: m ~ Normal(0, scale), tau ~ HalfNormal(scale), walk ~
    # HalfNormal(walk_scale) (a point mass at 0 for walk_scale = 0).
    logp = loglik + (-0.5 * (m**2 + taus[None, :, None] ** 2) / scale**2
                     + np.log(2) - np.log(2 * np.pi * scale**2))
    cell = (means[1] - means[0]) * (taus[1] - taus[0])
    if walk_scale > 0:
        logp = logp + (-0.5 * (walks[None, None, :] / walk_scale) ** 2
                       + 0.5 * np.log(2 / (np.pi * walk_scale**2)))
        cell *= walks[1] - walks[0]
    evidence = float(np.logaddexp.reduce(logp.ravel()) + np.log(cell))
    return means, taus, walks, logp, evidence


def drift_posterior(resid: np.ndarray, sd: np.ndarray, d: np.ndarray, group: np.ndarray,
                    scale: float, draws: int, rng: np.random.Generator,
                    share: np.ndarray | None = None, walk_scale: float | None = None,
                    mean_share: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draws of the drift's mean slope ``m``, its sd ``tau``, its growth ``power`` and
    the sd ``walk`` of its near part.

    The drift of a group's row at distance d has two parts (see :func:`drift_draws`):
    ``(m + tau z) share d^power``, the trend, whose mean carries a law's systematic
    error far out; and ``walk z' share d^WALK_POWER``, zero-mean, whose sd grows like a
    random walk's (``sqrt d``): the law's error one step beyond the data. One
    power alone could not be both: fitted to the far errors it grows fast and is
    negligible one doubling out (measured in ``docs/measurements.md``).

    Each group's rows share ``z`` and ``z'``: ``r_g ~ Normal(m u_g, diag(sd^2) +
    tau^2 u_g u_g^T + walk^2 v_g v_g^T)`` with ``u = share d^power``,
    ``v = share d^WALK_POWER``, whose density needs only 2 x 2 algebra (Woodbury).
    Priors: ``m ~ Normal(0, scale)``, ``tau ~ HalfNormal(scale)``, ``walk ~
    HalfNormal(walk_scale)`` (``scale`` by default; 0: no near part), ``power`` uniform
    on :data:`POWERS`. The posterior is evaluated on a grid per power, the
    powers weighted by their evidence (Bayesian model averaging), and sampled cell by
    cell. ``mean_share`` (``share`` when None): the mean's own share, ``m mean_share
    d^power``, where the mean and the spread act on different scales (``mean_on``).
    """
    mean, tau, power, walk, _ = _drift_models(resid, sd, d, group, scale, draws, rng,
                                              share, walk_scale, None, mean_share)
    return mean, tau, power, walk


def drift_posterior_late(resid: np.ndarray, sd: np.ndarray, d: np.ndarray, group: np.ndarray,
                         scale: float, draws: int, rng: np.random.Generator,
                         late: np.ndarray, share: np.ndarray | None = None,
                         walk_scale: float | None = None,
                         mean_share: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`drift_posterior` with the late residual trend: draws of ``(m, tau, power,
    walk, gain)`` for ``r ~ Normal(gain late + m u, ...)``, where ``late`` is each row's
    continuation of its group's own residual trend (:func:`late_covariate`) and ``gain``,
    uniform on :data:`GAINS` a priori, is weighted with the powers by its evidence.

    Why a discrete gain averaged like the power: given the gain the model is
    :func:`drift_posterior`'s on the errors ``r - gain late``, whose evidence its grid
    already gives; and the gains that matter lie between ignoring the trend (a group's
    last residuals are noise) and continuing it whole (they are the start of its drift).
    """
    return _drift_models(resid, sd, d, group, scale, draws, rng, share, walk_scale, late,
                         mean_share)


def _drift_models(resid, sd, d, group, scale, draws, rng, share, walk_scale, late,
                  mean_share=None):
    walk_scale = scale if walk_scale is None else float(walk_scale)
    if len(resid) == 0:
        return (rng.normal(0.0, scale, draws), np.abs(rng.normal(0.0, scale, draws)),
                rng.choice(POWERS, size=draws), np.abs(rng.normal(0.0, walk_scale, draws)),
                np.zeros(draws) if late is None else rng.choice(GAINS, size=draws))
    share = np.ones_like(d) if share is None else share
    gains = (0.0,) if late is None else GAINS
    v = share * d**WALK_POWER
    models = [(power, gain) for gain in gains for power in POWERS]
    grids = [_drift_grid(resid if gain == 0 else resid - gain * late, sd, share * d**power,
                         v, group, scale, walk_scale,
                         None if mean_share is None else mean_share * d**power)
             for power, gain in models]
    evidence = np.array([g[4] for g in grids])
    weights = np.exp(evidence - evidence.max())
    which = rng.choice(len(models), size=draws, p=weights / weights.sum())
    mean, tau, walk = np.empty(draws), np.empty(draws), np.empty(draws)
    for k, (means, taus, walks, logp, _) in enumerate(grids):
        pick = which == k
        if not pick.any():
            continue
        p = np.exp(logp - logp.max()).ravel()
        cell = rng.choice(p.size, size=int(pick.sum()), p=p / p.sum())
        i, j, h = np.unravel_index(cell, logp.shape)
        jitter = rng.uniform(-0.5, 0.5, (3, len(cell)))
        mean[pick] = means[i] + jitter[0] * (means[1] - means[0])
        tau[pick] = np.abs(taus[j] + jitter[1] * (taus[1] - taus[0]))
        step = walks[1] - walks[0] if len(walks) > 1 else 0.0
        walk[pick] = np.abs(walks[h] + jitter[2] * step)
    chosen = np.asarray(models)[which]
    return mean, tau, chosen[:, 0], walk, chosen[:, 1]


def late_trend(x: np.ndarray, resid: np.ndarray, group: np.ndarray, n: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the law's residual at its largest fitted ``x`` (their mean there) and
    the slope of its residuals over its :data:`LATE_POINTS` largest ``x``, less the
    median of the groups' slopes; zeros for a group without rows (or, for the slope,
    with one ``x``).

    Why these: a group's residuals at the edge of its range are where its drift
    starts (an integrated random walk's conditional mean beyond the data continues its
    last value and slope); the slope common to all groups is a shared bias of the law,
    which the drift's mean ``m`` carries, so only a group's departure from it is its own.

    Example:
        >>> x = np.log([1.0, 2, 4, 8, 1, 2, 4, 8])
        >>> r = np.array([0, 0, 0, 0.0, 0, 0, 0.1, 0.2]) * np.log(2)
        >>> last, slope = late_trend(x, r, np.array([0] * 4 + [1] * 4), 2)
        >>> np.round(last, 3).tolist(), np.round(slope, 3).tolist()
        ([0.0, 0.139], [-0.05, 0.05])
    """
    last, slope = np.zeros(n), np.full(n, np.nan)
    ok = np.isfinite(x) & np.isfinite(resid)
    if not ok.any():
        return last, np.zeros(n)
    df = pd.DataFrame({"g": group[ok], "x": x[ok], "r": resid[ok]})
    rank = df.groupby("g")["x"].rank(method="dense", ascending=False)
    top = df[rank <= LATE_POINTS]
    at_edge = df[rank == 1].groupby("g")["r"].mean()
    last[at_edge.index.to_numpy()] = at_edge.to_numpy()
    centred = top.assign(x=top["x"] - top.groupby("g")["x"].transform("mean"),
                         r=top["r"] - top.groupby("g")["r"].transform("mean"))
    sums = centred.assign(xr=centred["x"] * centred["r"], xx=centred["x"] ** 2) \
        .groupby("g")[["xr", "xx"]].sum()
    spread = sums["xx"] > 1e-12
    slope[sums.index[spread].to_numpy()] = (sums["xr"] / sums["xx"])[spread].to_numpy()
    if np.isfinite(slope).any():
        slope = slope - np.nanmedian(slope)
    return last, np.nan_to_num(slope)


def late_covariate(last: np.ndarray, slope: np.ndarray, x: np.ndarray, hi: np.ndarray,
                   group: np.ndarray) -> np.ndarray:
    """Each row's continuation of its group's late residual trend (:func:`late_trend`):
    ``last + slope (x - hi)`` above the group's range ``hi``, 0 within or below it."""
    x = np.asarray(x, np.float64)
    above = np.isfinite(x) & (x > hi[group])
    return np.where(above, last[group] + slope[group] * np.where(above, x - hi[group], 0.0),
                    0.0)


def drift_draws(mean: np.ndarray, tau: np.ndarray, power: np.ndarray, d: np.ndarray,
                group: np.ndarray, n: int, rng: np.random.Generator,
                share: np.ndarray | None = None, walk: np.ndarray | None = None,
                gain: np.ndarray | None = None, late: np.ndarray | None = None,
                mean_share: np.ndarray | None = None) -> np.ndarray:
    """Draws ``(draws, rows)`` of ``((m + tau z_g) d^power + walk z'_g d^WALK_POWER)
    share``: one trend slope ``z`` and one near slope ``z'`` per draw and group.
    ``walk`` None (a posterior saved before the near part existed) is zero.

    ``share`` (per row, 1 by default) is what ``on = "reducible"`` puts there: the
    median share of the law's loss above its floor, ``(L - E) / L``. The drift is then
    one of the log *reducible* loss, ``log(L - E)``, carried to the log loss to first
    order: a curve far above its floor can still fall (or stall) a long way beyond the
    data, one that has nearly reached it cannot, and a single drift on the log loss
    would give both the same width.

    ``mean_share`` (``share`` when None) multiplies the mean ``m`` alone, for a drift
    whose mean and spread act on different scales (``mean_on``): with ones there and
    the reducible share in ``share``, the mean moves every curve's log loss alike (the
    law's ranking of curves kept) while the spread still widens the curves far above
    their floor most.

    ``gain`` and ``late`` (per row, :func:`late_covariate`): the late residual trend of
    ``late_trend = true``, ``gain late`` added to the log loss as it is (it is a
    residual of the log loss already, so no share)."""
    share = np.ones_like(d) if share is None else share
    mean_share = share if mean_share is None else mean_share
    dp = d[None, :] ** power[:, None]
    spread = (tau[:, None] * rng.standard_normal((len(tau), n)))[:, group] * dp
    if walk is not None:
        near = walk[:, None] * rng.standard_normal((len(walk), n))
        spread = spread + near[:, group] * d[None, :] ** WALK_POWER
    out = spread * share[None, :] + mean[:, None] * dp * mean_share[None, :]
    if gain is not None and late is not None:
        out = out + gain[:, None] * late[None, :]
    return out


def stored_drift(draws: Mapping[str, Any], axis: str) -> dict[str, np.ndarray | None]:
    """An axis's drift draws from a posterior's variables (``disc_<key>_<axis>``), flat:
    ``mean``, ``tau``, ``power``, ``walk`` (None in a file saved before the near part
    existed) and ``gain`` (None without ``late_trend``): the arguments of
    :func:`drift_draws`."""
    out: dict[str, np.ndarray | None] = {}
    for key in ("mean", "tau", "power", "walk", "gain"):
        name = f"disc_{key}_{axis}"
        out[key] = np.asarray(draws[name].values, np.float64).reshape(-1) \
            if name in draws else None
    return out


def drift_moments(mean: np.ndarray, tau: np.ndarray, power: np.ndarray,
                  walk: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The drift's moments over its draws, per growth power of :data:`MOMENT_POWERS`
    (the near part's, then :data:`POWERS`): ``E[m 1{power = p}]`` and
    ``E[(m^2 + tau^2) 1{power = p}]``, and for the near part 0 and ``E[walk^2]``. With
    them the mean and variance of the drift at any distance are closed forms
    (:func:`drift_variance`): no draws of the slopes are needed."""
    on = np.asarray(power)[None, :] == np.asarray(POWERS)[:, None]
    mean, tau = np.asarray(mean, np.float64), np.asarray(tau, np.float64)
    near = 0.0 if walk is None else float(np.mean(np.square(np.asarray(walk, np.float64))))
    return (np.concatenate([[0.0], (on * mean).mean(axis=1)]),
            np.concatenate([[near], (on * (mean**2 + tau**2)).mean(axis=1)]))


def mean_moment(mean: np.ndarray, power: np.ndarray) -> np.ndarray:
    """``E[m^2 1{power = p}]`` per power of :data:`MOMENT_POWERS` (0 for the near part,
    which has no mean): the mean's part of :func:`drift_moments`' second moments, which
    :func:`drift_variance` needs where the mean acts on another scale (``mean_on``)."""
    on = np.asarray(power)[None, :] == np.asarray(POWERS)[:, None]
    return np.concatenate([[0.0], (on * np.square(np.asarray(mean, np.float64))).mean(axis=1)])


def drift_variance(m1: np.ndarray, m2: np.ndarray, d: np.ndarray,
                   share: np.ndarray | float = 1.0, mean_share: np.ndarray | float | None = None,
                   m2_mean: np.ndarray | None = None) -> np.ndarray:
    """Variance of the drift (:func:`drift_draws`) at log distances ``d`` (any shape),
    over the draws of ``(m, tau, power, walk)`` and the group's slopes ``z, z' ~ N(0,
    1)``: ``share^2 (sum_p m2_p d^2p - (sum_p m1_p d^p)^2)`` over
    :data:`MOMENT_POWERS`, with the moments of :func:`drift_moments`. It is what
    :func:`drift_draws` spreads, in expectation. With the mean on its own scale
    (``mean_share``, and its moments ``m2_mean`` from :func:`mean_moment`), the mean's
    spread over the draws takes ``mean_share^2`` and the slopes' and near part's
    ``share^2``.

    Example:
        >>> m1, m2 = drift_moments(np.zeros(4), np.full(4, 0.1), np.ones(4))
        >>> round(float(drift_variance(m1, m2, np.array(2.0))), 6)   # (0.1 * 2)^2
        0.04
        >>> m1, m2 = drift_moments(np.zeros(4), np.zeros(4), np.ones(4), np.full(4, 0.1))
        >>> round(float(drift_variance(m1, m2, np.array(2.0))), 6)   # 0.1^2 * 2
        0.02
    """
    dp = np.asarray(d, np.float64)[..., None] ** np.asarray(MOMENT_POWERS)
    first, second = dp @ m1, (dp**2) @ m2
    if mean_share is None or m2_mean is None:
        return np.square(share) * np.maximum(second - first**2, 0.0)
    of_mean = (dp**2) @ m2_mean
    return (np.square(mean_share) * np.maximum(of_mean - first**2, 0.0)
            + np.square(share) * np.maximum(second - of_mean, 0.0))


def reducible_share(log_floor: np.ndarray, log_loss: np.ndarray) -> np.ndarray:
    """Each row's share of the loss above the floor, ``(L - E) / L``: the posterior
    median over draws ``(draws, rows)``, in [0, 1] (see :func:`drift_draws`)."""
    share = -np.expm1(np.broadcast_to(log_floor, np.shape(log_loss)) - log_loss)
    return np.clip(np.median(share, axis=0), 0.0, 1.0)


def part_shares(on: str, mean_on: str, reducible: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's share of the drift's spread and of its mean (:func:`drift_draws`):
    ``reducible`` (:func:`reducible_share`) for the part that acts on the reducible
    loss (``on``, ``mean_on``), ones for a part on the log loss.

    Example:
        >>> part_shares("reducible", "loss", np.array([0.3]))
        (array([0.3]), array([1.]))
    """
    ones = np.ones_like(reducible)
    return (reducible if on == "reducible" else ones,
            reducible if mean_on == "reducible" else ones)


def calibrate(disc: Discrepancy, feats: Mapping[str, np.ndarray], group: np.ndarray,
              n: int, predict_holdout: Callable[[np.ndarray, np.ndarray],
                                                tuple[np.ndarray, np.ndarray, np.ndarray]],
              draws: int, seed: int) -> dict[str, dict[str, Any]]:
    """Learn each axis's ``tau`` by internal extrapolations of the fitted table.

    ``predict_holdout(fit_mask, test_mask)`` fits the rows of ``fit_mask`` and returns,
    for the rows of ``test_mask`` (above the cut, of groups with rows below it), the log
    predictive median and sd, the observed log loss and the rows' shares of the drift's
    spread and of its mean (each ones, or with ``on`` or ``mean_on`` ``"reducible"`` the
    reducible share: :func:`drift_draws`); and
    for the rows of ``fit_mask``, the inner fit's log residuals (observed minus the law's
    median), from which ``late_trend`` continues each group's trend (None without it).

    With several holdouts (a rolling origin, as in the cross-validation of forecasts) each
    cut is one internal extrapolation, and their errors together inform ``tau`` and the
    growth power: a long holdout shows how the law errs far out, a short one how it errs
    one step beyond the data, which a power fitted to the far errors alone can make too
    small. A group's errors share one slope within a cut, not across cuts: each cut's
    fit is a different extrapolation. Returns per axis the ``tau`` draws and what the
    calibration saw (rows held out, the cuts, their median absolute log error, and
    ``max_distance``, the farthest log distance a held-out row lay beyond its group's
    range: beyond it the drift is carried out, not checked; see
    :func:`beyond_calibration`).
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
                log_med, log_sd, log_obs, (share, mean_share), fit_resid = \
                    predict_holdout(fit_mask, test)
                g = group[test]
                late = np.zeros(len(g))
                if disc.late_trend:
                    last, slope = late_trend(x[fit_mask], fit_resid, group[fit_mask], n)
                    late = late_covariate(last, slope, x[test], hi_g, g)
                parts.append((log_obs - log_med, log_sd,
                              distances(x[test], lo_g[g], hi_g[g]), g + k * n, share, late,
                              mean_share))
                cuts.append(float(np.exp(cut)))
        resid = sd = d = g = share = late = mean_share = np.zeros(0)
        info: dict[str, Any] = {"rows": 0, "median_abs_log_error": None}
        if parts:
            resid, sd, d, g, share, late, mean_share = (
                np.concatenate(column) for column in zip(*parts, strict=True))
            info["rows"] = len(resid)
            info.update(cut=cuts[0] if len(cuts) == 1 else cuts,
                        median_abs_log_error=float(np.median(np.abs(resid))),
                        max_distance=float(d.max()))
        sd = np.maximum(sd, 1e-6)
        # The mean's own regressor only where it acts on another scale than the spread.
        own_mean = None if disc.trend_on == disc.on else mean_share
        if disc.late_trend:
            mean, tau, power, walk, gain = drift_posterior_late(
                resid, sd, d, g, disc.scale, draws, rng, late, share=share,
                walk_scale=disc.near_scale, mean_share=own_mean)
        else:
            mean, tau, power, walk = drift_posterior(
                resid, sd, d, g, disc.scale, draws, rng, share=share,
                walk_scale=disc.near_scale, mean_share=own_mean)
        info["mean_median"] = float(np.median(mean))
        info["tau_median"] = float(np.median(tau))
        info["power_mean"] = float(np.mean(power))
        info["walk_median"] = float(np.median(walk))
        result = {"mean": mean, "tau": tau, "power": power, "walk": walk, "info": info}
        if disc.late_trend:
            info["gain_mean"] = float(np.mean(gain))
            result["gain"] = gain
        out[axis] = result
    return out


def beyond_calibration(d: np.ndarray, max_distance: float | None) -> np.ndarray:
    """Which rows lie farther beyond their group's range (log distances ``d``) than any
    row the internal extrapolations held out (``max_distance``; None: unknown, a file
    saved before it was stored, or an axis with nothing held out: no row is flagged).

    Why it matters: the drift's width there is its learned growth carried past the
    distances it was learned at. On Lin et al.'s FLAN curves, fitted up to 1/128 of the
    largest size, the internal extrapolations reached 8x and the largest size lies 128x
    out: the 90% intervals there covered 17 of 30 models (docs/measurements.md).

    Example:
        >>> beyond_calibration(np.array([0.0, 1.0, 3.0]), 2.0).tolist()
        [False, False, True]
    """
    d = np.asarray(d, np.float64)
    if max_distance is None:
        return np.zeros(d.shape, dtype=bool)
    return d > float(max_distance) + 1e-9
