"""Credible-interval tables: gaps per pair, and every parameter at every group.

Intervals are central (equal-tailed) credible intervals of the posterior draws. They are
computed on the log scale and exponentiated, which gives the same quantiles as computing
them on the natural scale (the exponential is monotone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import arviz as az
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from bayes_transfer.inference import Posterior

__all__ = ["gap_table", "param_table", "format_table", "raw_units_available"]


def raw_units_available(post: Posterior) -> bool:
    """Can the parameters be reported in raw units (tokens and parameters of 1)?

    Yes when the law converts (``Law.to_raw``) and every parameter is global, so that a
    conversion cannot mix groups (e.g. the Chinchilla law on one distribution).
    """
    from bayes_transfer.laws import get_law

    return get_law(post.spec.law).to_raw is not None and all(
        p.level == "global" for p in post.spec.params.values())


def param_table(post: Posterior, ci: float = 0.9, params: list[str] | None = None,
                units: str = "reference") -> pd.DataFrame:
    """One row per (parameter, group): median, interval, log-scale sd, R-hat and ESS.

    ``units``: ``"reference"`` (as fitted, N and tokens in the posterior's reference
    units) or ``"raw"`` (the papers' units; see :func:`raw_units_available`).

    Columns: ``param``, ``level``, ``source``, ``target``, ``observed``, ``median``,
    ``lower``, ``upper``, ``log_sd``, ``r_hat``, ``ess_bulk``. ``observed`` is False for
    a pair with no rows in the table: its interval is the crossed-effects predictive.
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1, not {ci}")
    posterior = post.idata.posterior
    frames = []
    for name in params or list(post.spec.params):
        level = post.spec.params[name].level
        da = post.log_param(name, units=units)
        q = da.quantile([(1 - ci) / 2, 0.5, (1 + ci) / 2], dim=("chain", "draw")).values
        flat = da.values.reshape((-1,) + da.shape[2:])
        rhat = az.rhat(da.to_dataset(name="x"))["x"].values if da.sizes["chain"] > 1 else \
            np.full(flat.shape[1:], np.nan)
        ess = az.ess(da.to_dataset(name="x"), method="bulk")["x"].values
        groups = _group_labels(posterior, level, flat.shape[1:])
        frame = pd.DataFrame({
            "param": name,
            "level": level,
            "source": groups[0],
            "target": groups[1],
            "observed": groups[2],
            "median": np.exp(q[1]).reshape(-1),
            "lower": np.exp(q[0]).reshape(-1),
            "upper": np.exp(q[2]).reshape(-1),
            "log_sd": flat.std(axis=0).reshape(-1),
            "r_hat": np.asarray(rhat).reshape(-1),
            "ess_bulk": np.asarray(ess).reshape(-1),
        })
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _group_labels(posterior, level: str, shape: tuple[int, ...]):
    n = int(np.prod(shape)) if shape else 1
    if level == "pair":
        return (list(posterior.coords["pair_source"].values),
                list(posterior.coords["pair_target"].values),
                list(posterior.coords["pair_observed"].values.astype(bool)))
    if level == "source":
        return list(posterior.coords["source"].values), ["*"] * n, [True] * n
    if level == "target":
        return ["*"] * n, list(posterior.coords["target"].values), [True] * n
    return ["*"], ["*"], [True]


def gap_table(post: Posterior, ci: float = 0.9) -> pd.DataFrame:
    """One row per (source, target) pair: the law's gap parameter with its interval.

    For ``transfer-gap`` laws the gap is ``G``; for ``effective-data`` it is ``k``.
    """
    gap = post.spec.gap
    if gap is None:
        raise ValueError(f"law {post.spec.law} has no per-pair gap parameter; "
                         "use param_table() for its parameters")
    return param_table(post, ci=ci, params=[gap]).drop(columns=["level"])


def format_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A plain-text rendering of a report table, numbers to ``digits`` significant."""
    shown = df.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].map(lambda v: f"{v:.{digits}g}")
    return shown.to_string(index=False)
