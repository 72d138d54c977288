r"""Acquisition: how much a run would teach us about the quantity of interest.

The estimator (linear-Gaussian, or *ensemble*, approximation)
--------------------------------------------------------------
Take the posterior draws ``d = 1..D`` as an ensemble. For the quantity of interest
``q`` (default: the log gap of every pair, observed or not) and a candidate ``c`` with the
law's log mean ``mu_c^(d)`` at its ``(source, target, N, p, f)``, a new measurement is
``y_c = mu_c + eps`` with ``Var(eps) = s^2``. If ``(q, y_c)`` were jointly Gaussian,
observing ``y_c`` would shrink the covariance of ``q`` by a rank-one term, whatever value
``y_c`` takes:

    Var(q_k | y_c) = Var(q_k) - Cov(q_k, mu_c)^2 / (Var(mu_c) + s^2)

``criterion="variance"`` (the default) scores a candidate by the expected reduction of
``sum_k Var(q_k)``: ``sum_k Cov(q_k, mu_c)^2 / (Var(mu_c) + s^2)``, in squared nats.
``criterion="information"`` scores it by the mutual information ``I(q; y_c)`` of the same
Gaussian, in nats: with ``R^2`` the share of ``Var(mu_c)`` explained linearly by ``q``,

    I(q; y_c) = -1/2 log det(Cov(q | y_c) Cov(q)^-1)
              = 1/2 log( (Var(mu_c) + s^2) / ((1 - R^2) Var(mu_c) + s^2) ),

which is ``1/2 log(1 + Var(mu_c)/s^2)`` when ``q`` determines ``mu_c`` and 0 when they are
unrelated: only the part of the run's predictive spread that informs ``q`` counts. The
variance criterion weighs pairs by their current variance (it chases the widest
intervals); the information criterion is invariant to rescaling ``q`` and weighs a
relative narrowing of any pair alike.

The moments are ensemble moments: ``Cov(q_k, mu_c)`` and ``Var(mu_c)`` from the ``D``
draws, and ``s^2 = E[sigma^2]`` over the draws, times ``nu / (nu - 2)`` for a Student-t
likelihood (its variance; for ``nu <= 2`` the scale is used). All of it is matrix products
of the draws' anomalies, jit-compiled and vectorised over candidates x draws.

Under a model discrepancy
-------------------------
When ``q`` is a predicted loss and the spec has a ``[discrepancy]``, part of ``Var(q_k)``
is the drift beyond the fitted range, independent of the law's parameters, so the
ensemble above gives a run no credit for it. A run that extends its group's range toward
``q_k`` shrinks it, whatever loss it measures: :mod:`.drift` computes that fall in closed
form, and :func:`~bayes_transfer.design.suggest` adds it to the gain (for the
information criterion, as each component's entropy reduction).

Its error
---------
* Monte Carlo: each covariance is estimated from ``D`` (correlated) draws, with a
  relative error of about ``1 / sqrt(ESS)`` (~3% at 1,000 effective draws), so two
  candidates whose gains differ by less than that are tied. For the information
  criterion the in-sample ``R^2`` of ``K`` components is biased up by about ``K / D``; it
  is corrected as an adjusted ``R^2``.
* Gaussian approximation: exact for a linear-Gaussian model (the tests check it against
  the closed form); for a posterior that is strongly non-Gaussian (banana-shaped, heavy
  tails, a gap near a hard boundary of identifiability) the linearisation over the
  ensemble's spread mis-states the gain of runs that would move the posterior far,
  usually understating it for runs in regions the draws disagree about most. It is a
  ranking heuristic there, not an exact expected utility.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> q = rng.normal(size=(4000, 1)); mu = q[:, 0] + 0.0   # a run that measures q
    >>> gains = ensemble_gains(q, mu[:, None], noise=1.0)
    >>> round(float(gains.sum()), 2)     # Var(q) - Var(q | y) = 1 - 1/2
    0.5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from bayes_transfer.data import RunTable, pair_label, query_rows
from bayes_transfer.design.drift import DriftModel, QuantityDrift, drift_model, quantity_drift
from bayes_transfer.evaluate import levels_of, log_loss_at_rows
from bayes_transfer.laws import ROW_RULES, Units, features, get_law
from bayes_transfer.spec import ModelSpec

if TYPE_CHECKING:
    from bayes_transfer.inference import Posterior

__all__ = ["PosteriorDraws", "Quantity", "Criterion", "as_draws", "quantity_draws",
           "log_mean_draws", "applicable", "ensemble_gains", "gain_terms", "condition"]

Criterion = Literal["variance", "information"]
CRITERIA = ("variance", "information")
_CHUNK = 1024  # candidates per compiled block: bounded memory, one compilation


@dataclass(frozen=True)
class PosteriorDraws:
    """What acquisition needs from a posterior: log-parameter draws, sigma, the levels.

    Build it from a :class:`~bayes_transfer.inference.Posterior` with :func:`as_draws`, or
    directly (e.g. from another sampler's draws) with the same shapes:
    ``log_params[name]`` is ``(draws,)`` or ``(draws, groups)`` over the parameter's level,
    with N and token counts measured in ``units`` (those the posterior was fitted in).
    """

    spec: ModelSpec
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    log_params: Mapping[str, np.ndarray]
    sigma: np.ndarray
    runs: RunTable | None = None
    units: Units = Units()
    #: The posterior's model discrepancy, if its spec has one (:mod:`.drift`).
    drift: DriftModel | None = None

    @property
    def n_draws(self) -> int:
        return int(np.shape(self.sigma)[0])

    @property
    def pair_labels(self) -> list[str]:
        return [pair_label(s, t) for s in self.sources for t in self.targets]

    def noise_variance(self) -> float:
        """``s^2``: the variance of a new measurement's log loss around the law."""
        s2 = float(np.mean(np.square(self.sigma)))
        lik = self.spec.likelihood
        if lik.family == "student_t" and lik.nu > 2:
            s2 *= lik.nu / (lik.nu - 2)
        return s2

    def thin(self, max_draws: int | None) -> PosteriorDraws:
        """At most ``max_draws`` draws, evenly spaced (cheaper scoring, more MC error)."""
        if max_draws is None or self.n_draws <= max_draws:
            return self
        keep = np.linspace(0, self.n_draws - 1, max_draws).round().astype(int)
        return PosteriorDraws(self.spec, self.sources, self.targets,
                              {k: np.asarray(v)[keep] for k, v in self.log_params.items()},
                              np.asarray(self.sigma)[keep], self.runs, self.units,
                              self.drift)


def as_draws(posterior: Posterior | PosteriorDraws) -> PosteriorDraws:
    """The draws of a fitted posterior (chains stacked)."""
    if isinstance(posterior, PosteriorDraws):
        return posterior
    return PosteriorDraws(
        spec=posterior.spec,
        sources=tuple(posterior.runs.sources),
        targets=tuple(posterior.runs.targets),
        log_params=posterior.flat_log_params(),
        sigma=posterior.idata.posterior["sigma"].values.reshape(-1),
        runs=posterior.runs,
        units=getattr(posterior, "units", Units()),
        drift=drift_model(posterior),
    )


def rows_table(draws: PosteriorDraws, rows: pd.DataFrame | RunTable,
               name: str = "candidates") -> RunTable:
    """``rows`` checked (:func:`~bayes_transfer.data.query_rows`) and indexed by the
    posterior's sources and targets."""
    return query_rows(rows, name).with_levels(draws.sources, draws.targets)


def applicable(draws: PosteriorDraws, rows: pd.DataFrame) -> np.ndarray:
    """Rows the spec's law can explain (others carry no information under this model)."""
    return get_law(draws.spec.law).explains(rows)


_LOG_MEAN_CACHE: dict[str, Any] = {}


def _log_mean_fn(spec: ModelSpec, n_targets: int) -> Any:
    key = f"{spec.to_json()}|{n_targets}"
    if key not in _LOG_MEAN_CACHE:
        law, levels = get_law(spec.law), levels_of(spec)

        @jax.jit
        def log_mean(feats, log_params, source_idx, target_idx):
            out = log_loss_at_rows(law, feats, log_params, levels=levels,
                                   source_idx=source_idx, target_idx=target_idx,
                                   n_targets=n_targets)
            return out + jnp.zeros((1, source_idx.shape[0]))

        _LOG_MEAN_CACHE[key] = log_mean
    return _LOG_MEAN_CACHE[key]


def log_mean_draws(draws: PosteriorDraws, rows: pd.DataFrame | RunTable) -> np.ndarray:
    """The law's log loss at each row under each draw, ``(draws, rows)`` (float32).

    Computed in fixed blocks of candidates, so that memory stays bounded and one compiled
    program serves any number of rows.
    """
    table = rows_table(draws, rows)
    fn = _log_mean_fn(draws.spec, len(draws.targets))
    feats = features(table.df, draws.units)
    sidx, tidx = table.source_idx, table.target_idx
    lp = {k: jnp.asarray(v, dtype=jnp.float32) for k, v in draws.log_params.items()}
    n = len(table)
    out = np.empty((draws.n_draws, n), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        pad = _CHUNK - (stop - start)
        take = np.concatenate([np.arange(start, stop), np.full(pad, start)])
        block = fn({k: jnp.asarray(v[take], dtype=jnp.float32) if v.dtype != bool
                    else jnp.asarray(v[take]) for k, v in feats.items()},
                   lp, jnp.asarray(sidx[take]), jnp.asarray(tidx[take]))
        out[:, start:stop] = np.asarray(block)[:, : stop - start]
    return out


@dataclass(frozen=True)
class Quantity:
    """Draws of the quantity of interest, ``(draws, K)``, and a label per component;
    for predicted losses under a spec with a discrepancy, the drift's share of their
    variance (:class:`~bayes_transfer.design.drift.QuantityDrift`), which runs nearer
    to them shrink."""

    draws: np.ndarray
    labels: list[str]
    drift: QuantityDrift | None = None


def quantity_draws(draws: PosteriorDraws,
                   quantity: str | Sequence[str | tuple[str, str]] | pd.DataFrame
                   | RunTable = "gaps") -> Quantity:
    """The quantity of interest as draws.

    Args:
        quantity: ``"gaps"``: the log gap of every pair of the source x target grid;
            a list of pairs (``"s->t"`` or ``(s, t)``): those pairs' log gaps;
            a DataFrame (or RunTable) of run rows (e.g. a target scale): the log loss
            the law predicts at each row.
    """
    if isinstance(quantity, (pd.DataFrame, RunTable)):
        table = rows_table(draws, quantity, "quantity rows")
        unexplained = np.flatnonzero(~applicable(draws, table.df))
        if len(unexplained):
            rule = ROW_RULES[get_law(draws.spec.law).rows][1]
            raise ValueError(f"quantity rows: row {unexplained[0] + 1} (of "
                             f"{len(unexplained)} such) is not one law {draws.spec.law} can "
                             f"predict: it {rule}")
        values = log_mean_draws(draws, table).astype(np.float64)
        labels = [f"log L {pair_label(str(s), str(t))} N={n:.3g} p={p:.3g} f={f:.3g}"
                  for s, t, n, p, f in
                  table.df[["source", "target", "params", "pretrain_tokens",
                            "finetune_tokens"]].itertuples(index=False)]
        drift = None
        if draws.drift is not None:
            floor = None
            if draws.drift.reducible:
                from bayes_transfer.model import at_rows

                floor = at_rows(draws.spec.params["E"].level, draws.log_params["E"],
                                table.source_idx, table.target_idx, len(draws.targets))
            drift = quantity_drift(draws.drift, table, draws.units, values, floor)
        return Quantity(values, labels, drift)
    gap = draws.spec.gap
    if gap is None:
        raise ValueError(f"law {draws.spec.law} has no per-pair gap; pass quantity= a "
                         "DataFrame of rows (the predicted loss at a target scale)")
    values = np.asarray(draws.log_params[gap], dtype=np.float64)
    if draws.spec.params[gap].level != "pair":
        raise ValueError(f"the gap {gap} is at the {draws.spec.params[gap].level} level, "
                         "not per pair")
    labels = draws.pair_labels
    if isinstance(quantity, str):
        if quantity != "gaps":
            raise ValueError(f"quantity must be 'gaps', a list of pairs or a DataFrame of "
                             f"rows, not {quantity!r}")
        pick = list(range(len(labels)))
    else:
        wanted = [q if isinstance(q, str) else pair_label(*q) for q in quantity]
        unknown = [w for w in wanted if w not in labels]
        if unknown or not wanted:
            raise ValueError(f"unknown pair {unknown[0] if unknown else None!r}; pairs are "
                             f"{', '.join(labels)}")
        pick = [labels.index(w) for w in dict.fromkeys(wanted)]
    return Quantity(values[:, pick], [f"log {gap} {labels[i]}" for i in pick])


def anomalies(x: Any) -> jnp.ndarray:
    """Deviations of each column from its ensemble mean, ``(draws, K)``."""
    x = jnp.asarray(x, dtype=jnp.float32)
    return x - x.mean(axis=0, keepdims=True)


@jax.jit
def gain_terms(q_anom: jnp.ndarray, m_anom: jnp.ndarray, noise: float) -> jnp.ndarray:
    """Per-component variance reductions ``Cov(q_k, mu_c)^2 / (Var(mu_c) + s^2)``, (K, C)."""
    dof = q_anom.shape[0] - 1
    cov = q_anom.T @ m_anom / dof
    var = jnp.sum(m_anom**2, axis=0) / dof
    return cov**2 / (var + noise)


@jax.jit
def _information(q_anom: jnp.ndarray, m_anom: jnp.ndarray, noise: float) -> jnp.ndarray:
    d = q_anom.shape[0]
    u, s, _ = jnp.linalg.svd(q_anom, full_matrices=False)
    keep = s > 1e-5 * s[0]
    rank = keep.sum()
    proj = (u * keep).T @ m_anom                      # m's coordinates in q's span
    var = jnp.sum(m_anom**2, axis=0) / (d - 1)
    explained = jnp.sum(proj**2, axis=0) / (d - 1)
    # Adjusted R^2: remove the ~rank/D share that any D-draw regression explains by chance.
    explained = jnp.clip(explained - rank / (d - rank - 1) * (var - explained), 0.0, var)
    return 0.5 * jnp.log((var + noise) / (var - explained + noise))


def ensemble_gains(q: Any, mu: Any, noise: float,
                   criterion: Criterion = "variance") -> np.ndarray:
    """Expected gain of observing each column of ``mu`` (+ noise) about ``q``, (C,).

    ``q``: draws of the quantity, ``(D, K)``; ``mu``: draws of each candidate's log mean,
    ``(D, C)``; ``noise``: the measurement variance ``s^2``.
    """
    qa, ma = anomalies(q), anomalies(mu)
    if criterion == "variance":
        return np.asarray(gain_terms(qa, ma, noise).sum(axis=0))
    if criterion == "information":
        return np.asarray(_information(qa, ma, noise))
    raise ValueError(f"criterion must be one of {CRITERIA}, not {criterion!r}")


def criterion_gains(q_anom: jnp.ndarray, m_anom: jnp.ndarray, noise: float,
                    criterion: Criterion) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(gain per candidate, per-component variance terms) on anomalies."""
    terms = gain_terms(q_anom, m_anom, noise)
    if criterion == "variance":
        return terms.sum(axis=0), terms
    if criterion == "information":
        return _information(q_anom, m_anom, noise), terms
    raise ValueError(f"criterion must be one of {CRITERIA}, not {criterion!r}")


@jax.jit
def condition(q_anom: jnp.ndarray, m_anom: jnp.ndarray, c: jnp.ndarray,
              noise: float) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Condition the ensemble on a hypothetical observation of candidate ``c``.

    The serial ensemble square-root Kalman update (Whitaker & Hamill 2002) for a scalar
    observation: every anomaly column ``a`` becomes ``a - alpha k_a m`` with ``m`` the
    candidate's anomalies, ``k_a = Cov(a, m) / (Var(m) + s^2)`` and
    ``alpha = 1 / (1 + sqrt(s^2 / (Var(m) + s^2)))``, so that the ensemble's covariance is
    exactly the Gaussian conditional one. Only ``Cov(., m)`` vectors are formed: never a
    candidates x candidates matrix. The mean is not needed (a Gaussian's conditional
    covariance does not depend on the value observed).
    """
    dof = q_anom.shape[0] - 1
    m = m_anom[:, c]
    total = m @ m / dof + noise
    alpha = 1.0 / (1.0 + jnp.sqrt(noise / total))
    kq = (q_anom.T @ m) / dof / total
    km = (m_anom.T @ m) / dof / total
    return (q_anom - alpha * m[:, None] * kq[None, :],
            m_anom - alpha * m[:, None] * km[None, :])
