"""Credible-interval tables: gaps per pair, and every parameter at every group.

Every number comes from ArviZ's ``az.summary`` with ``stat_focus="median"``: the median,
the central (equal-tailed) credible interval (the ``(1 - ci) / 2`` and ``(1 + ci) / 2``
quantiles of the draws, on the parameter's natural scale), the Monte Carlo standard
error of the median, R-hat and the tail ESS; plus the bulk ESS (``az.ess``) and the sd
of the log-scale draws. :func:`summary` is ``az.summary`` of a posterior's named law
parameters (see :mod:`bayes_transfer.named_params`) with these choices.

Example:
    >>> import bayes_transfer as bt  # doctest: +SKIP
    >>> bt.summary(post, ci=0.9)  # doctest: +SKIP
    >>> param_table(post)[["param", "source", "median", "mcse_median", "ess_tail"]]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

if TYPE_CHECKING:
    from bayes_transfer.inference import Posterior

__all__ = ["gap_table", "param_table", "format_table", "raw_units_available", "summary",
           "SUMMARY_COLUMNS"]

#: The statistics columns of :func:`param_table` (after its group columns), in order.
SUMMARY_COLUMNS = ("median", "lower", "upper", "log_sd", "r_hat", "ess_bulk", "ess_tail",
                   "mcse_median")


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
    """One row per (parameter, group): median, interval and diagnostics, by az.summary.

    ``units``: ``"reference"`` (as fitted, N and tokens in the posterior's reference
    units) or ``"raw"`` (the papers' units; see :func:`raw_units_available`).

    Columns: ``param``, ``level``, ``source``, ``target``, ``observed``, then
    :data:`SUMMARY_COLUMNS`: ``median``, ``lower``, ``upper`` (the central ``ci``
    interval), ``log_sd`` (sd of the log-scale draws), ``r_hat``, ``ess_bulk``,
    ``ess_tail`` and ``mcse_median`` (Monte Carlo standard error of the median, in the
    parameter's units). ``observed`` is False for a pair with no rows in the table: its
    interval is the crossed-effects predictive. R-hat is NaN for a single chain.

    Example:
        >>> param_table(post, ci=0.9, params=["G"])  # doctest: +SKIP
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1, not {ci}")
    posterior = post.idata.posterior
    frames = []
    for name in params or list(post.spec.params):
        level = post.spec.params[name].level
        # Over the level's own groups (pair, not source x target), in the order of the
        # group labels below; exp is monotone, so the quantiles are the natural ones.
        log = post.log_param(name, units=units)
        stats = _summary_metrics(xr.Dataset({name: np.exp(log)}), ci)[name]
        groups = _group_labels(posterior, level, log.shape[2:])
        frame = pd.DataFrame({"param": name, "level": level, "source": groups[0],
                              "target": groups[1], "observed": groups[2]})
        for col in SUMMARY_COLUMNS:
            values = log.std(("chain", "draw")) if col == "log_sd" else stats.sel(metric=col)
            frame[col] = np.asarray(values, dtype=np.float64).reshape(-1)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _summary_metrics(ds: xr.Dataset, ci: float) -> xr.Dataset:
    """``az.summary`` of ``ds`` (median focus: equal-tailed intervals) with the metrics
    renamed to our columns, plus the bulk ESS, over a ``metric`` dim."""
    with _quiet_arviz():
        stats = az.summary(ds, fmt="xarray", stat_focus="median", hdi_prob=ci,
                           round_to="none")
        bulk = az.ess(ds, method="bulk").expand_dims(metric=["ess_bulk"])
    # The interval ends by position: az.summary labels them with a rounded ci.
    lo, hi = (str(m) for m in stats["metric"].values if str(m).startswith("eti_"))
    renamed = {"median": "median", lo: "lower", hi: "upper", "mcse_median": "mcse_median",
               "ess_tail": "ess_tail", "r_hat": "r_hat"}
    stats = stats.sel(metric=list(renamed)).assign_coords(metric=list(renamed.values()))
    return xr.concat([stats, bulk], dim="metric")


@contextmanager
def _quiet_arviz() -> Iterator[None]:
    # ArviZ logs "Shape validation failed" for the R-hat of a single chain, which it
    # reports as NaN (as we do): the log line would only be noise on a report's stderr.
    # ArviZ 0.2x logs through its own Logger instance (``arviz._log``), which
    # logging.getLogger("arviz") does not return: quieting that one left the line printed.
    logger = getattr(az, "_log", None)
    if not isinstance(logger, logging.Logger):
        logger = logging.getLogger("arviz")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def summary(post: Posterior, var_names: Sequence[str] | None = None, ci: float = 0.9
            ) -> pd.DataFrame:
    """``az.summary`` of a posterior: by default its law parameters under their own
    names, on their natural scale, and the noise ``sigma``.

    The statistics are ArviZ's with ``stat_focus="median"``: ``median``, ``mad``, the
    equal-tailed interval of mass ``ci`` (``eti_5%``, ``eti_95%`` at 0.9), ``mcse_median``,
    ``ess_median``, ``ess_tail`` and ``r_hat``; a pair-level parameter has one row per
    ``(source, target)``, e.g. ``G[web, math]``. ``var_names`` takes any posterior
    variable (``"G_mu"``, ``"log_G"``) as ``az.summary`` does.

    Example:
        >>> import bayes_transfer as bt  # doctest: +SKIP
        >>> bt.summary(post, ci=0.9).loc["G[web, math]", ["median", "eti_5%", "eti_95%"]]  # doctest: +SKIP
    """
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1, not {ci}")
    names = list(var_names) if var_names is not None else [*post.spec.params, "sigma"]
    with _quiet_arviz():
        return az.summary(post.idata, var_names=names, stat_focus="median", hdi_prob=ci,
                          round_to="none")


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
