"""The model discrepancy's share of a quantity's variance, and how a run would shrink it.

A spec with a ``[discrepancy]`` widens every prediction beyond its group's fitted range
by a drift that grows with the log distance from that range
(:mod:`bayes_transfer.discrepancy`). The ensemble estimator of :mod:`.acquisition` sees
only the law's parameters, so it would give no credit to the one thing that shrinks
this drift: a run that moves the range toward the quantity of interest. A candidate
``c`` of group ``g`` at coordinates ``x_c`` extends ``g``'s range to include ``x_c``
(along every axis the drift runs on); each quantity row of ``g`` then lies closer to the
range, and its drift variance falls from ``V(d)`` to ``V(d')``
(:func:`~bayes_transfer.discrepancy.drift_variance`, a closed form of the drift's
learned moments). That fall, whatever the run's loss turns out to be, is the run's
discrepancy gain; :func:`bayes_transfer.design.suggest` adds it to the law's gain.

What it leaves out: the drift's moments are those learned on the fitted table; a refit
on the extended table relearns them (usually narrower, as the internal extrapolation
then reaches further), so the gain is, if anything, understated.

Example:
    >>> import numpy as np
    >>> from bayes_transfer.discrepancy import drift_moments
    >>> m1, m2 = drift_moments(np.zeros(2), np.full(2, 0.1), np.ones(2))
    >>> axis = DriftAxis("log_N", lo=np.array([0.0]), hi=np.array([1.0]), m1=m1, m2=m2)
    >>> q = QuantityDrift(group=np.array([0]), x={"log_N": np.array([3.0])},
    ...                   share=np.ones(1), axes=(axis,))
    >>> round(float(q.variance()[0]), 6)          # (0.1 * (3 - 1))^2
    0.04
    >>> # a run at log N = 2.5 leaves the quantity 0.5 beyond the range: 0.0025 left
    >>> round(float(q.reductions(np.array([0]), {"log_N": np.array([2.5])})[0, 0]), 6)
    0.0375
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from bayes_transfer import discrepancy as dsc
from bayes_transfer.laws import Units, features

if TYPE_CHECKING:
    from bayes_transfer.data import RunTable
    from bayes_transfer.inference import Posterior

__all__ = ["DriftAxis", "DriftModel", "QuantityDrift", "drift_model", "quantity_drift",
           "candidate_coordinates"]


@dataclass(frozen=True)
class DriftAxis:
    """One axis of the drift: its feature, each group's fitted range (NaN: no rows) and
    the moments of its learned slopes (:func:`~bayes_transfer.discrepancy.drift_moments`;
    ``m2_mean``, :func:`~bayes_transfer.discrepancy.mean_moment`, where the drift's mean
    acts on another scale than its spread)."""

    feature: str
    lo: np.ndarray
    hi: np.ndarray
    m1: np.ndarray
    m2: np.ndarray
    m2_mean: np.ndarray | None = None

    def extended(self, group: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ranges ``(lo, hi)`` of each of ``group`` once a run at ``x`` is in it
        (``x`` not finite, as f = 0 on the fine-tuning axis: unchanged)."""
        ok = np.isfinite(x)
        return (np.where(ok, np.fmin(self.lo[group], x), self.lo[group]),
                np.where(ok, np.fmax(self.hi[group], x), self.hi[group]))


@dataclass(frozen=True)
class DriftModel:
    """What a posterior's discrepancy says, for acquisition: its level and axes, and
    what its spread and its mean act on (``on``, ``mean_on``: ``"loss"`` or
    ``"reducible"``)."""

    level: str
    n_targets: int
    on: str
    axes: tuple[DriftAxis, ...]
    mean_on: str | None = None

    @property
    def reducible(self) -> bool:
        """Whether any part of the drift scales with the loss above the floor."""
        return "reducible" in (self.on, self.mean_on)

    def groups(self, source_idx: np.ndarray, target_idx: np.ndarray) -> np.ndarray:
        return dsc.group_index(self.level, source_idx, target_idx, self.n_targets)


def drift_model(posterior: Posterior) -> DriftModel | None:
    """The discrepancy of a fitted posterior (None for a spec without one)."""
    import json

    disc = posterior.spec.discrepancy
    if disc is None or "discrepancy" not in posterior.idata.posterior.attrs:
        return None
    stored = json.loads(posterior.idata.posterior.attrs["discrepancy"])
    axes = []
    for axis in disc.axes:
        # The late trend's gain (late_trend = true) shifts the drift's mean by a fixed
        # continuation of the group's residuals, which a run beyond the range replaces
        # rather than narrows: its spread is left out of the variance a run would reduce.
        draws = dsc.stored_drift(posterior.idata.posterior, axis)
        draws.pop("gain")
        m1, m2 = dsc.drift_moments(**draws)
        m2_mean = None if disc.trend_on == disc.on else dsc.mean_moment(draws["mean"],
                                                                        draws["power"])
        lo, hi = (np.array([np.nan if v is None else v for v in stored[axis][k]])
                  for k in ("lo", "hi"))
        axes.append(DriftAxis(dsc.AXES[axis], lo, hi, m1, m2, m2_mean))
    return DriftModel(disc.level, len(posterior.runs.targets), disc.on, tuple(axes),
                      disc.trend_on)


@dataclass(frozen=True)
class QuantityDrift:
    """The drift at the quantity's rows: their group, coordinates and share (1, or the
    reducible share with ``on = "reducible"``), given the ranges in ``axes``;
    ``mean_share``: the share of the drift's mean, where it differs (``mean_on``)."""

    group: np.ndarray
    x: dict[str, np.ndarray]
    share: np.ndarray
    axes: tuple[DriftAxis, ...]
    mean_share: np.ndarray | None = None

    def variance(self) -> np.ndarray:
        """The drift's variance at each quantity row, ``(K,)``."""
        total = np.zeros(len(self.group))
        for ax in self.axes:
            lo, hi = dsc.fill_ranges(ax.lo, ax.hi)
            d = dsc.distances(self.x[ax.feature], lo[self.group], hi[self.group])
            total += dsc.drift_variance(ax.m1, ax.m2, d, self.share, self.mean_share,
                                        ax.m2_mean)
        return total

    def reductions(self, group: np.ndarray, x: dict[str, np.ndarray],
                   block: int = 1024) -> np.ndarray:
        """How much each candidate (``group``, coordinates ``x``) would cut the drift
        variance of each quantity row, ``(K, C)``, never below 0 (a never-run group that
        now borrows the range of all groups can get a narrower range of its own: that
        is the fit's bookkeeping, not information lost)."""
        before = self.variance()
        out = np.zeros((len(self.group), len(group)))
        for start in range(0, len(group), block):
            sl = slice(start, start + block)
            after = np.zeros((len(self.group), len(group[sl])))
            for ax in self.axes:
                xc = x[ax.feature][sl]
                lo_c, hi_c = ax.extended(group[sl], xc)           # (C,)
                # Groups without rows take the range of all groups (as predictions do),
                # which the candidate may widen too.
                all_lo = np.fmin(np.nanmin(ax.lo, initial=np.inf), np.where(
                    np.isfinite(xc), xc, np.inf))
                all_hi = np.fmax(np.nanmax(ax.hi, initial=-np.inf), np.where(
                    np.isfinite(xc), xc, -np.inf))
                # No range anywhere, even with the run: zeros, as fill_ranges says.
                all_lo, all_hi = (np.where(np.isfinite(v), v, 0.0) for v in (all_lo, all_hi))
                same = self.group[:, None] == group[sl][None, :]  # (K, C)
                own_lo, own_hi = ax.lo[self.group][:, None], ax.hi[self.group][:, None]
                lo = np.where(same, lo_c[None, :], own_lo)
                hi = np.where(same, hi_c[None, :], own_hi)
                lo = np.where(np.isnan(lo), all_lo[None, :], lo)
                hi = np.where(np.isnan(hi), all_hi[None, :], hi)
                d = dsc.distances(self.x[ax.feature][:, None], lo, hi)
                after += dsc.drift_variance(
                    ax.m1, ax.m2, d, self.share[:, None],
                    None if self.mean_share is None else self.mean_share[:, None], ax.m2_mean)
            out[:, sl] = np.maximum(before[:, None] - after, 0.0)
        return out

    def extended(self, group: int, x: dict[str, float]) -> QuantityDrift:
        """The same quantity once a run of ``group`` at ``x`` is in the table."""
        axes = []
        for ax in self.axes:
            lo, hi = ax.lo.copy(), ax.hi.copy()
            new_lo, new_hi = ax.extended(np.array([group]), np.array([x[ax.feature]]))
            lo[group], hi[group] = new_lo[0], new_hi[0]
            axes.append(replace(ax, lo=lo, hi=hi))
        return replace(self, axes=tuple(axes))


def quantity_drift(model: DriftModel, table: RunTable, units: Units,
                   log_loss: np.ndarray, log_floor: np.ndarray | None) -> QuantityDrift:
    """The drift at the quantity's rows ``table`` (levels of the fitted posterior).

    ``log_loss``: the law's log loss there, ``(draws, rows)``; ``log_floor``: the floor
    ``E`` there (needed with ``on = "reducible"``, whose drift scales with the share of
    the loss above it)."""
    reducible = (dsc.reducible_share(log_floor, log_loss) if model.reducible
                 else np.ones(len(table)))
    share, mean_share = dsc.part_shares(model.on, model.mean_on or model.on, reducible)
    group, x = candidate_coordinates(model, table, units)
    return QuantityDrift(group, x, share, model.axes, mean_share)


def candidate_coordinates(model: DriftModel, table: RunTable, units: Units
                          ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Rows' drift groups and coordinates along the drift's axes."""
    feats = features(table.df, units)
    return (model.groups(table.source_idx, table.target_idx),
            {ax.feature: np.asarray(feats[ax.feature], np.float64) for ax in model.axes})
