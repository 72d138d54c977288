"""The point-estimate baseline: what users fit today, for comparison with the posterior.

Following the Chinchilla replication (Besiroglu et al. 2024, "Chinchilla Scaling: A
replication attempt"; Hoffmann et al. 2022, Approach 3): minimise the Huber loss
(``delta = 1e-3``) of the residuals of the *log* loss with L-BFGS from a grid of starts,
one independent fit per group of rows, and bootstrap the rows for intervals.

The law is the registered one (:mod:`bayes_transfer.laws`), evaluated on the log
parameters exactly as in the Bayesian model; only the way it is fit differs. The
grouping rule is what users do by hand: ``by="pair"`` fits each (source, target) pair
separately (a pair never run has no fit), ``by="global"`` fits one law to every row.

Example:
    >>> from bayes_transfer.data import read_chinchilla_csv
    >>> runs = read_chinchilla_csv("../shared/data/chinchilla_svg_extracted.csv")  # doctest: +SKIP
    >>> fit = fit_baseline(runs, "chinchilla", bootstrap=100)  # doctest: +SKIP
    >>> fit.params[["E", "A", "B", "alpha", "beta"]].round(3)  # doctest: +SKIP
                                 E       A        B   alpha   beta
    massivetext->massivetext  1.817  482.0  2085.4   0.348  0.366
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from bayes_transfer.data import RunTable, load_runs, pair_label, query_rows
from bayes_transfer.evaluate import log_loss_at_rows
from bayes_transfer.laws import Law, features, get_law
from bayes_transfer.spec import ModelSpec, SpecError, load_spec

__all__ = ["BaselineFit", "fit_baseline", "huber", "default_starts", "HUBER_DELTA"]

HUBER_DELTA = 1e-3  # the replication's (and Hoffmann et al.'s) choice
GLOBAL = "*->*"

Starts = Mapping[str, Sequence[float]] | np.ndarray | None


def huber(r: Any, delta: float = HUBER_DELTA, xp: Any = jnp) -> Any:
    """Huber loss of residuals ``r``: quadratic within ``delta``, linear beyond."""
    a = xp.abs(r)
    return xp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def default_starts(law: Law, per_param: int | None = None) -> np.ndarray:
    """A grid of starting log parameters, shape ``(starts, len(law.params))``.

    Each parameter's values span ``loc +- 2 scale`` of its prior: the law's own
    :attr:`~bayes_transfer.laws.Law.priors` when it has them, else the bundled spec of
    the same name (the bundled laws keep their priors there), else ``[-2, 8]``.
    ``per_param`` defaults to the largest count that keeps the grid under ~5,000 starts.
    """
    k = per_param or max(3, int(5000 ** (1 / len(law.params))))
    if law.priors:
        priors = ModelSpec.from_dict({"law": law.name}).params
    else:
        try:
            priors = load_spec(law.name).params
        except (SpecError, FileNotFoundError):
            priors = None
    if priors is None:
        axes = [np.linspace(-2.0, 8.0, k)] * len(law.params)
    else:
        axes = [np.linspace(priors[p].loc - 2 * priors[p].scale,
                            priors[p].loc + 2 * priors[p].scale, k) for p in law.params]
    return np.array(list(itertools.product(*axes)))


@dataclass(frozen=True, eq=False)
class BaselineFit:
    """Point estimates per group, bootstrap replicates, and predictions.

    Attributes:
        law: the fitted law.
        by: ``"pair"`` or ``"global"``.
        params: one row per group (index ``"source->target"``, or ``"*->*"``) with
            ``source``, ``target``, ``rows``, ``objective`` and each parameter's value.
        log_params: ``(groups, params)`` point estimates on the log scale.
        boot_log_params: ``(bootstrap, groups, params)`` bootstrap replicates.
        residuals: per group, the log-loss residuals (observed - fitted) of its rows.
    """

    law: Law
    by: str
    params: pd.DataFrame
    log_params: np.ndarray
    boot_log_params: np.ndarray
    residuals: Mapping[str, np.ndarray]
    rows_left_out: int = 0

    def _groups_of(self, table: RunTable) -> list[str]:
        if self.by == "global":
            return [GLOBAL] * len(table)
        labels = pair_label(table.df["source"].astype(str), table.df["target"].astype(str))
        unknown = sorted(set(labels) - set(self.params.index))
        if unknown:
            raise ValueError(f"the baseline has no fit for pair(s) {unknown}: a per-pair fit "
                             "cannot predict a pair it never saw")
        return list(labels)

    def predict_draws(self, rows: pd.DataFrame | RunTable, *, kind: str = "mean",
                      seed: int = 0) -> np.ndarray:
        """Bootstrap draws of the loss at each row, shape ``(bootstrap, rows)``.

        ``kind="mean"``: the refitted curves (the usual bootstrap interval);
        ``"observation"``: each draw plus a residual drawn from its group's fit (a residual
        bootstrap of a new measurement).
        """
        if kind not in ("mean", "observation"):
            raise ValueError(f"kind must be 'mean' or 'observation', not {kind!r}")
        if self.boot_log_params.shape[0] == 0:
            raise ValueError("fit with bootstrap > 0 to get intervals")
        table, groups = self._prepare(rows)
        idx = self.params.index.get_indexer(groups)
        log_loss = _log_loss(self.law, features(table.df), self.boot_log_params[:, idx, :])
        if kind == "observation":
            rng = np.random.default_rng(seed)
            for j, g in enumerate(groups):
                log_loss[:, j] += rng.choice(self.residuals[g], size=log_loss.shape[0])
        return np.exp(log_loss)

    def predict(self, rows: pd.DataFrame | RunTable, *, ci: float = 0.9, kind: str = "mean",
                seed: int = 0) -> pd.DataFrame:
        """``rows`` with ``loss_fit`` (the point estimate) and bootstrap ``loss_median``,
        ``loss_lower`` and ``loss_upper`` (the central ``ci`` interval) added."""
        if not 0 < ci < 1:
            raise ValueError(f"ci must be between 0 and 1 (e.g. 0.9), not {ci}")
        table, groups = self._prepare(rows)
        idx = self.params.index.get_indexer(groups)
        point = np.exp(_log_loss(self.law, features(table.df), self.log_params[idx, :]))
        out = (rows.df if isinstance(rows, RunTable) else rows).copy().reset_index(drop=True)
        out["loss_fit"] = point
        if self.boot_log_params.shape[0]:
            draws = self.predict_draws(table, kind=kind, seed=seed)
            lo, med, hi = np.quantile(draws, [(1 - ci) / 2, 0.5, (1 + ci) / 2], axis=0)
        else:
            lo, med, hi = np.full_like(point, np.nan), point, np.full_like(point, np.nan)
        out["loss_median"], out["loss_lower"], out["loss_upper"] = med, lo, hi
        return out

    def _prepare(self, rows: pd.DataFrame | RunTable) -> tuple[RunTable, list[str]]:
        table = query_rows(rows)
        return table, self._groups_of(table)


def fit_baseline(
    runs: RunTable | pd.DataFrame | str | os.PathLike[str],
    law: str | Law | ModelSpec = "chinchilla",
    *,
    by: Literal["pair", "global"] = "pair",
    starts: Starts = None,
    n_best: int = 8,
    bootstrap: int = 200,
    delta: float = HUBER_DELTA,
    seed: int = 0,
) -> BaselineFit:
    """Fit ``law`` by L-BFGS on the Huber loss of log-loss residuals, per group of rows.

    Args:
        runs: a run table (path, DataFrame or loaded table).
        law: a law name, a :class:`~bayes_transfer.laws.Law`, or a spec (its law is used).
        by: ``"pair"`` (one fit per observed (source, target) pair) or ``"global"``.
        starts: starting log parameters: ``{param: values}`` (their product is the grid),
            an array ``(starts, params)``, or None for :func:`default_starts`.
        n_best: L-BFGS runs from this many grid points with the lowest objective (the
            objective is evaluated on the whole grid first, which is cheap).
        bootstrap: replicates; each resamples the group's rows with replacement and is
            refitted from the point estimate. 0 skips intervals.
        delta: the Huber threshold on log-loss residuals.
        seed: seed of the bootstrap.

    Rows the law cannot explain (its row rule, e.g. zero-shot rows for ``transfer-gap``)
    are left out and counted in ``rows_left_out``; for laws whose rule admits
    from-scratch rows (``effective-data``), a pair's fit also uses its target's
    from-scratch rows, which pin down the target's own law.
    """
    law = _as_law(law)
    table = load_runs(runs)
    ok = law.explains(table.df)
    left_out = int((~ok).sum())
    table = table.subset(ok)
    grid = _start_grid(law, starts)
    rng = np.random.default_rng(seed)

    groups = _group_rows(table, by, law)
    all_feats = features(table.df)
    all_y = np.log(table.df["loss"].to_numpy(np.float64))
    names, point, boots, resid, info = [], [], [], {}, []
    # L-BFGS-B calls BLAS on 5-vectors: threads only add contention (7x slower on a busy
    # 2-core machine), so use one.
    with threadpool_limits(1, user_api="blas"), jax.enable_x64(True):
        for label, (src, tgt, mask) in groups.items():
            feats, y = {k: v[mask] for k, v in all_feats.items()}, all_y[mask]
            objective = _Objective(law, feats, y, delta)
            best = objective.fit_from_grid(grid, n_best)
            # Resampling rows with replacement = multinomial weights on the rows.
            weights = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=bootstrap)
            boots.append(np.array([objective.minimize(best.x, w).x for w in weights])
                         .reshape(bootstrap, len(law.params)))
            names.append(label)
            point.append(best.x)
            resid[label] = y - _log_loss(law, feats, best.x)
            info.append({"source": src, "target": tgt, "rows": int(mask.sum()),
                         "objective": float(best.fun)})

    log_params = np.array(point)
    frame = pd.DataFrame(info, index=pd.Index(names, name="pair"))
    for j, p in enumerate(law.params):
        frame[p] = np.exp(log_params[:, j])
    return BaselineFit(law=law, by=by, params=frame, log_params=log_params,
                       boot_log_params=np.stack(boots, axis=1), residuals=resid,
                       rows_left_out=left_out)


def _as_law(law: str | Law | ModelSpec) -> Law:
    if isinstance(law, Law):
        return law
    if isinstance(law, ModelSpec):
        return get_law(law.law)
    return get_law(law)


def _start_grid(law: Law, starts: Starts) -> np.ndarray:
    if starts is None:
        return default_starts(law)
    if isinstance(starts, Mapping):
        missing = [p for p in law.params if p not in starts]
        if missing:
            raise ValueError(f"starts has no values for {missing} (law {law.name} has "
                             f"{list(law.params)}); give log-scale values for each")
        return np.array(list(itertools.product(*(starts[p] for p in law.params))), float)
    grid = np.atleast_2d(np.asarray(starts, dtype=float))
    if grid.shape[1] != len(law.params):
        raise ValueError(f"starts must have {len(law.params)} columns ({law.params})")
    return grid


def _group_rows(table: RunTable, by: str, law: Law) -> dict[str, tuple[str, str, np.ndarray]]:
    df = table.df
    if by == "global":
        return {GLOBAL: ("*", "*", np.ones(len(df), bool))}
    if by != "pair":
        raise ValueError(f"by must be 'pair' or 'global', not {by!r}")
    src, tgt = df["source"].astype(str).to_numpy(), df["target"].astype(str).to_numpy()
    scratch = src == tgt
    groups = {}
    for s, t in dict.fromkeys(zip(src, tgt, strict=True)):
        mask = (src == s) & (tgt == t)
        if law.rows == "transfer" and s != t:
            mask |= scratch & (tgt == t)
        groups[pair_label(s, t)] = (s, t, mask)
    return groups


def _log_loss(law: Law, feats: Mapping[str, np.ndarray], log_params: np.ndarray) -> np.ndarray:
    """Log loss at rows for log params ``(..., rows?, params)``, in float64 numpy."""
    lp = {p: np.asarray(log_params)[..., j] for j, p in enumerate(law.params)}
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return np.asarray(log_loss_at_rows(law, feats, lp, xp=np))


class _Objective:
    """Weighted Huber objective of one group, with a float64 JAX gradient.

    Use inside ``jax.enable_x64(True)`` (as :func:`fit_baseline` does): the float32
    default would stop L-BFGS far from the optimum.
    """

    def __init__(self, law: Law, feats: Mapping[str, np.ndarray], y: np.ndarray,
                 delta: float) -> None:
        self.law, self.feats, self.y, self.delta = law, feats, y, delta
        x = {k: jnp.asarray(v) for k, v in feats.items()}
        obs = jnp.asarray(y)

        def value(theta, weights):
            lp = {p: theta[j] for j, p in enumerate(law.params)}
            return jnp.sum(weights * huber(log_loss_at_rows(law, x, lp) - obs, delta))

        # The rows are constants of the compiled function: a call costs ~0.1 ms, which is
        # what thousands of L-BFGS steps (bootstrap included) spend their time on.
        self._value_and_grad = jax.jit(jax.value_and_grad(value))

    def __call__(self, theta: np.ndarray, weights: jax.Array) -> tuple[float, np.ndarray]:
        v, g = self._value_and_grad(theta, weights)
        v, g = float(v), np.asarray(g, dtype=np.float64)
        if not np.isfinite(v) or not np.isfinite(g).all():
            return np.inf, np.zeros_like(g)  # L-BFGS's line search backs off
        return v, g

    def minimize(self, theta0: np.ndarray, weights: np.ndarray | None = None):
        w = jnp.asarray(np.ones_like(self.y) if weights is None else weights, jnp.float64)
        return minimize(self, theta0, args=(w,), jac=True, method="L-BFGS-B",
                        options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-9})

    def fit_from_grid(self, grid: np.ndarray, n_best: int):
        # The objective on every start at once (cheap, vectorised), then L-BFGS from the
        # most promising few: the full grid search of the replication, at a fraction of
        # the cost.
        values = np.empty(len(grid))
        for lo in range(0, len(grid), 512):
            chunk = grid[lo:lo + 512]
            r = _log_loss(self.law, self.feats, chunk[:, None, :]) - self.y
            values[lo:lo + 512] = np.nan_to_num(huber(r, self.delta, xp=np).sum(-1),
                                                nan=np.inf)
        order = np.argsort(values)[:max(1, n_best)]
        results = [self.minimize(grid[i]) for i in order]
        return min(results, key=lambda res: res.fun if np.isfinite(res.fun) else np.inf)
