"""Pictures of a posterior: fitted curves, gaps, priors, and what to run next.

Every function takes a :class:`~bayes_transfer.inference.Posterior` (or, for
:func:`plot_acquisition`, a table of candidate scores), returns a matplotlib
:class:`~matplotlib.figure.Figure` and never shows or saves it: call
:func:`save_figure` (atomic, fixed size) or ``fig.savefig`` yourself. Figures are
``FIGSIZE`` inches at ``DPI`` dots per inch, so every PNG has the same pixel size.

================================  ===========================================================
:func:`plot_losses`               observed losses and posterior predictive bands, per pair
:func:`plot_gap_forest`           every pair's gap with its credible interval, sorted
:func:`plot_gap_heatmap`          source x target gap medians, interval widths annotated
:func:`plot_prior_posterior`      prior vs posterior of the population-level parameters
:func:`plot_acquisition`          value per unit cost of candidate runs
:func:`plot_ppc`                  posterior predictive check of the fitted rows
:func:`plot_loo_pit`              LOO-PIT calibration of the fitted rows
================================  ===========================================================

Unobserved pairs (no rows in the table) get their gap from the crossed source and target
effects; they are drawn hollow, grey or hatched and labelled "pred.".

Example:
    >>> from bayes_transfer.inference import Posterior
    >>> post = Posterior.load("posterior.nc")  # doctest: +SKIP
    >>> fig = plot_gap_forest(post, ci=0.9)  # doctest: +SKIP
    >>> save_figure(fig, "forest.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullFormatter

from bayes_transfer._io import atomic_path
from bayes_transfer.data import pair_label

if TYPE_CHECKING:
    from bayes_transfer.data import RunTable
    from bayes_transfer.inference import Posterior

__all__ = ["FIGSIZE", "DPI", "KINDS", "plot_losses", "plot_gap_forest", "plot_gap_heatmap",
           "plot_prior_posterior", "plot_acquisition", "plot_calibration", "prior_draws",
           "plot_ppc", "plot_loo_pit", "plot_selection", "pair_keys", "save_figure"]

FIGSIZE = (10.0, 6.5)
DPI = 100
KINDS = ("losses", "forest", "heatmap", "prior", "acquisition", "ppc", "loo-pit")

_OBSERVED = "#1f4e79"
_PREDICTED = "#8c8c8c"
_PRIOR = "#d9a441"
_STYLE = {
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "font.size": 9,
    "axes.titlesize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
}


@contextmanager
def _style():
    with matplotlib.rc_context(_STYLE):
        yield


def _figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, np.ndarray]:
    # Figure, not pyplot.figure: no backend or display is needed (works under Agg, in CI,
    # in notebooks) and no global figure state leaks between calls.
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _grid_shape(n: int) -> tuple[int, int]:
    ncols = math.ceil(math.sqrt(n * FIGSIZE[0] / FIGSIZE[1]))
    ncols = max(1, min(n, ncols))
    return math.ceil(n / ncols), ncols


def _quantiles(draws: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1 (e.g. 0.9), not {ci}")
    lo, med, hi = np.quantile(draws, [(1 - ci) / 2, 0.5, (1 + ci) / 2], axis=0)
    return lo, med, hi


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` to ``path`` atomically at ``DPI``; the pixel size is ``FIGSIZE * DPI``.

    The format comes from the extension (``.png``, ``.pdf``, ``.svg``).
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format=fmt)
    return path


# ---- (1) losses with predictive bands -----------------------------------------------------

def plot_losses(post: Posterior, against: str | None = None, *, ci: float = 0.9,
                params: float | None = None, pairs: Sequence[str] | None = None,
                max_pairs: int = 12, points: int = 40) -> Figure:
    """Observed losses and posterior predictive bands, one panel per pair (log x axis).

    Args:
        post: a fitted posterior.
        against: ``"p"`` (pre-training tokens on x, one curve per fine-tuning amount) or
            ``"f"`` (fine-tuning tokens on x, one curve per pre-training amount); default:
            ``"p"``, or ``"f"`` for a table whose rows all have p = 0 (fine-tuning curves
            of pre-trained models whose pre-training is not in the table).
        ci: width of the bands: the dark band is the curve's credible interval, the light
            band the posterior predictive of a measured loss (curve plus noise).
        params: the model size N of the curves; default: each pair's largest N. Only the
            runs at that N are drawn.
        pairs: pair labels (``"s->t"``) to draw; default: the observed pairs, at most
            ``max_pairs`` of them (those with the most rows).
        points: x positions per curve.

    Example:
        >>> fig = plot_losses(post, "f", ci=0.9)  # doctest: +SKIP
    """
    df = post.runs.df.assign(source=lambda d: d["source"].astype(str),
                             target=lambda d: d["target"].astype(str))
    if against is None:
        against = "p" if (pd.to_numeric(df["pretrain_tokens"], errors="coerce") > 0).any() \
            else "f"
    if against not in ("p", "f"):
        raise ValueError(f"against must be 'p' or 'f', not {against!r}")
    x_col, c_col = (("pretrain_tokens", "finetune_tokens") if against == "p"
                    else ("finetune_tokens", "pretrain_tokens"))
    if not (pd.to_numeric(df[x_col], errors="coerce") > 0).any():
        other = "f" if against == "p" else "p"
        raise ValueError(f"no fitted row has {x_col} > 0 to place on the log x axis of "
                         f"against={against!r}; plot against {other!r}")
    if pairs is None:
        counts = df.value_counts(["source", "target"], sort=True)
        keys = sorted(counts.index[:max_pairs])
    else:
        keys = pair_keys(post.runs, pairs)
    with _style():
        fig, axes = _figure(*_grid_shape(len(keys)), sharey=True)
        cmap = matplotlib.colormaps["viridis"]
        for ax, (source, target) in zip(axes.flat, keys, strict=False):
            rows = df[(df["source"] == source) & (df["target"] == target)]
            _loss_panel(post, ax, rows, source, target, x_col, c_col, ci, params, points,
                        cmap)
        # The curves' levels are the same in every panel: one legend is enough.
        if axes.flat[0].get_legend_handles_labels()[0]:
            axes.flat[0].legend(loc="upper right", fontsize=7)
        for ax in axes.flat[len(keys):]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("loss (nats/token)")
        for ax in axes[-1, :]:
            ax.set_xlabel(f"{x_col} ({against})")
        fig.suptitle(f"{post.spec.law}: observed losses with {ci:.0%} credible (dark) and "
                     f"posterior predictive (light) bands")
    return fig


def pair_keys(table: RunTable, labels: Sequence[str]) -> list[tuple[str, str]]:
    """The (source, target) of each ``"s->t"`` label, looked up among the table's pairs;
    a ``ValueError`` names the labels the table does not have.

    Looked up rather than split at ``"->"`` so that names which contain ``"->"`` still
    resolve (validation keeps the labels distinct).
    """
    by_label = dict(zip(table.pair_labels, table.pairs, strict=True))
    unknown = sorted(set(labels) - set(by_label))
    if unknown:
        raise ValueError(f"unknown pair(s) {unknown}; the posterior has {sorted(by_label)}")
    return [by_label[label] for label in labels]


def _loss_panel(post, ax, rows: pd.DataFrame, source: str, target: str, x_col: str,
                c_col: str, ci: float, params: float | None, points: int, cmap) -> None:
    label = pair_label(source, target)
    size = params if params is not None else (
        float(rows["params"].max()) if len(rows) else float(post.runs.df["params"].max()))
    rows = rows[np.isclose(rows["params"], size)]
    table_df = post.runs.df
    x_vals = rows[x_col] if len(rows) else table_df[x_col]
    x_vals = x_vals[x_vals > 0]
    if x_vals.empty:
        x_vals = table_df[x_col][table_df[x_col] > 0]
    lo, hi = np.log10(x_vals.min()) - 0.3, np.log10(x_vals.max()) + 0.3
    grid = np.logspace(lo, hi, points)
    # Every level the panel's rows (else the table's) have, 0 included (from-scratch rows
    # plotted against p are the curve f = 0), where the law explains the curve's rows.
    from bayes_transfer.laws import get_law

    law = get_law(post.spec.law)
    curves = []
    for level in sorted((rows[c_col] if len(rows) else table_df[c_col]).dropna().unique()):
        new = pd.DataFrame({"source": source, "target": target, "params": int(size),
                            x_col: grid.astype(np.int64), c_col: int(level)})
        if level >= 0 and law.explains(new).all():
            curves.append((level, new))
    for i, (level, new) in enumerate(curves):
        color = cmap(i / max(1, len(curves) - 1) * 0.85)
        mean = post.predict_draws(new, kind="mean")
        obs = post.predict_draws(new, kind="observation", seed=i)
        m_lo, m_med, m_hi = _quantiles(mean, ci)
        o_lo, _, o_hi = _quantiles(obs, ci)
        ax.fill_between(grid, o_lo, o_hi, color=color, alpha=0.12, linewidth=0)
        ax.fill_between(grid, m_lo, m_hi, color=color, alpha=0.35, linewidth=0)
        ax.plot(grid, m_med, color=color, linewidth=1.2,
                label=f"{c_col.split('_')[0]} = {level:.3g}")
        pts = rows[rows[c_col] == level]
        ax.scatter(pts[x_col], pts["loss"], color=color, edgecolor="black", linewidth=0.5,
                   s=18, zorder=3)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide in small panels
    observed = len(rows) > 0
    ax.set_title(label + ("" if observed else "  (pred., no runs)"), fontsize=8,
                 color="black" if observed else _PREDICTED)
    ax.text(0.03, 0.03, f"N = {size:.2g}", transform=ax.transAxes, fontsize=7,
            color="0.35")


# ---- (2) forest plot of gaps ---------------------------------------------------------------

def _gap_draws(post: Posterior) -> tuple[str, np.ndarray, pd.DataFrame]:
    gap = post.spec.gap
    if gap is None:
        raise ValueError(f"law {post.spec.law} has no per-pair gap parameter to plot")
    if post.spec.params[gap].level != "pair":
        raise ValueError(f"the gap {gap} of this spec varies by "
                         f"{post.spec.params[gap].level}, not by pair")
    draws = post.flat_log_params()[gap]  # (draws, pair), log scale
    pc = post.idata.posterior.coords
    pairs = pd.DataFrame({"source": pc["pair_source"].values.astype(str),
                          "target": pc["pair_target"].values.astype(str),
                          "observed": pc["pair_observed"].values.astype(bool)})
    pairs["label"] = pair_label(pairs["source"], pairs["target"])
    return gap, draws, pairs


def plot_gap_forest(post: Posterior, *, ci: float = 0.9, inner: float = 0.5) -> Figure:
    """Every pair's gap: median, ``inner`` (thick) and ``ci`` (thin) intervals, sorted.

    Observed pairs are filled dots; pairs with no runs (gap predicted from their source's
    and target's effects) are hollow, grey, and labelled "pred.".

    Example:
        >>> fig = plot_gap_forest(post, ci=0.9)  # doctest: +SKIP
    """
    gap, draws, pairs = _gap_draws(post)
    lo, med, hi = (np.exp(q) for q in _quantiles(draws, ci))
    ilo, _, ihi = (np.exp(q) for q in _quantiles(draws, inner))
    order = np.argsort(med)
    with _style():
        fig, axes = _figure()
        ax = axes[0, 0]
        for y, i in enumerate(order):
            obs = bool(pairs["observed"][i])
            color = _OBSERVED if obs else _PREDICTED
            ax.plot([lo[i], hi[i]], [y, y], color=color, linewidth=1.2)
            ax.plot([ilo[i], ihi[i]], [y, y], color=color, linewidth=3.5)
            ax.plot(med[i], y, "o", markersize=6, color=color,
                    markerfacecolor=color if obs else "white")
        labels = [pairs["label"][i] + ("" if pairs["observed"][i] else "  (pred.)")
                  for i in order]
        ax.set_yticks(range(len(order)), labels)
        ax.set_xscale("log")
        ax.set_xlabel(f"gap {gap} (log scale)")
        ax.grid(axis="y", visible=False)
        ax.plot([], [], "o-", color=_OBSERVED, label="observed pair")
        ax.plot([], [], "o-", color=_PREDICTED, markerfacecolor="white",
                label="no runs: predicted from source and target effects")
        ax.legend(loc="lower right")
        ax.set_title(f"{post.spec.law}: transfer gap {gap} per pair, median with "
                     f"{inner:.0%} (thick) and {ci:.0%} (thin) credible intervals")
    return fig


# ---- (3) heatmap of gaps -------------------------------------------------------------------

def plot_gap_heatmap(post: Posterior, *, ci: float = 0.9) -> Figure:
    """Source x target grid of gap medians (colour, log scale), interval widths written in.

    Each cell reads ``median`` over ``xW``: the ``ci`` interval spans a factor W
    (upper / lower). Cells of pairs with no runs are hatched and labelled "pred.".

    Example:
        >>> fig = plot_gap_heatmap(post, ci=0.9)  # doctest: +SKIP
    """
    gap, draws, pairs = _gap_draws(post)
    lo, med, hi = _quantiles(draws, ci)
    sources, targets = list(post.runs.sources), list(post.runs.targets)
    shape = (len(sources), len(targets))
    log10_med = (med / np.log(10)).reshape(shape)
    width = np.exp(hi - lo).reshape(shape)
    observed = pairs["observed"].to_numpy().reshape(shape)
    with _style():
        fig, axes = _figure()
        ax = axes[0, 0]
        ax.grid(False)
        image = ax.imshow(log10_med, cmap="magma_r", aspect="auto")
        cbar = fig.colorbar(image, ax=ax)
        cbar.set_label(f"log10 median gap {gap}")
        norm_mid = np.nanmean(image.get_clim())
        for (i, j), value in np.ndenumerate(log10_med):
            text = f"{10 ** value:.3g}\n×{width[i, j]:.3g}"
            if not observed[i, j]:
                text += "\npred."
                ax.add_patch(Rectangle(
                    (j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", edgecolor="white",
                    linewidth=0))
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if value > norm_mid else "black")
        ax.set_xticks(range(len(targets)), targets)
        ax.set_yticks(range(len(sources)), sources)
        ax.set_xlabel("target (fine-tuned on)")
        ax.set_ylabel("source (pre-trained on)")
        ax.set_title(f"{post.spec.law}: median gap {gap}; ×W = the {ci:.0%} interval spans a "
                     "factor W; hatched 'pred.' = no runs, predicted")
    return fig


# ---- (4) prior vs posterior ----------------------------------------------------------------

def _population_sites(post: Posterior) -> list[str]:
    sites = []
    for p in post.spec.params.values():
        if p.pooling == "none":
            if p.level == "global":
                sites.append(f"log_{p.name}")
            continue
        sites += [s for s, dims in p.site_names.items() if not dims]  # scalars only
    # A crossed level collapses on a one-source or one-target table (model.crossed):
    # only the sites the fit made exist.
    return [s for s in sites + ["sigma"] if s in post.idata.posterior]


def prior_draws(post: Posterior, sites: Sequence[str] | None = None, *, n: int = 1000,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Draws of the prior of ``sites`` (default: population-level ones), from the model.

    Runs NumPyro's ``Predictive`` on :func:`~bayes_transfer.model.hierarchical_model` with
    ``observed=False``, so the prior is exactly the one that was fit.
    """
    import jax
    from numpyro.infer import Predictive

    from bayes_transfer.model import hierarchical_model, model_data

    sites = list(sites or _population_sites(post))
    data = model_data(post.spec, post.runs)
    predictive = Predictive(hierarchical_model, num_samples=n, return_sites=sites)
    out = predictive(jax.random.key(seed), data, observed=False)
    return {k: np.asarray(v) for k, v in out.items()}


def plot_prior_posterior(post: Posterior, sites: Sequence[str] | None = None, *,
                         n_prior: int = 2000, seed: int = 0) -> Figure:
    """Prior and posterior densities of the population-level parameters, one panel each.

    The default sites are each pooled parameter's population mean ``<P>_mu`` (log scale)
    and between-group sds ``<P>_sd_<group>``, global parameters ``log_<P>``, and the noise
    ``sigma``. A posterior as wide as its prior means the data said little about it.

    Example:
        >>> fig = plot_prior_posterior(post)  # doctest: +SKIP
    """
    sites = list(sites or _population_sites(post))
    missing = [s for s in sites if s not in post.idata.posterior]
    if missing:
        raise ValueError(f"no site(s) {missing} in the posterior")
    prior = prior_draws(post, sites, n=n_prior, seed=seed)
    with _style():
        fig, axes = _figure(*_grid_shape(len(sites)))
        for ax, site in zip(axes.flat, sites, strict=False):
            posterior = post.idata.posterior[site].values.reshape(-1)
            both = np.concatenate([prior[site].reshape(-1), posterior])
            bins = np.linspace(*np.quantile(both, [0.005, 0.995]), 40)
            ax.hist(prior[site].reshape(-1), bins=bins, density=True, color=_PRIOR,
                    alpha=0.5, label="prior")
            ax.hist(posterior, bins=bins, density=True, color=_OBSERVED, alpha=0.6,
                    label="posterior")
            ax.set_title(site)
            ax.set_yticks([])
        for ax in axes.flat[len(sites):]:
            ax.set_visible(False)
        axes.flat[0].legend(loc="upper right")
        fig.suptitle(f"{post.spec.law}: prior vs posterior of the population-level "
                     "parameters (log scale for <P>_mu)")
    return fig


# ---- (5) acquisition -----------------------------------------------------------------------

_VALUE_COLUMNS = ("gain_per_cost", "value", "score", "acquisition", "expected_gain")


def plot_acquisition(scores: pd.DataFrame, *, value: str | None = None, top: int = 20,
                     chosen: Sequence[int] | None = None) -> Figure:
    """The ``top`` candidate runs by acquisition value per unit cost, as horizontal bars.

    Args:
        scores: one row per candidate, as from ``bayes_transfer.design.score_candidates``:
            ``source``, ``target``, ``params``, ``pretrain_tokens``, ``finetune_tokens``
            and a value column.
        value: the value column; default: the first of ``gain_per_cost``, ``value``,
            ``score``, ``acquisition``, ``expected_gain`` that exists.
        chosen: row positions of candidates picked for the next batch, drawn highlighted.

    Example:
        >>> fig = plot_acquisition(score_candidates(post, candidates))  # doctest: +SKIP
    """
    value = value or next((c for c in _VALUE_COLUMNS if c in scores.columns), None)
    if value is None or value not in scores.columns:
        raise ValueError(f"no value column among {list(scores.columns)}; pass value=")
    if scores.empty:
        raise ValueError("no candidates to plot")
    shown = scores.reset_index(drop=True).nlargest(top, value).iloc[::-1]
    labels = [f"{pair_label(str(r.source), str(r.target))}  N={r.params:.2g} "
              f"p={r.pretrain_tokens:.2g} f={r.finetune_tokens:.2g}" for r in shown.itertuples()]
    picked = set(chosen or ())
    colors = [_PRIOR if i in picked else _OBSERVED for i in shown.index]
    with _style():
        fig, axes = _figure()
        ax = axes[0, 0]
        ax.barh(range(len(shown)), shown[value], color=colors)
        ax.set_yticks(range(len(shown)), labels, fontsize=7)
        ax.set_xlabel(value.replace("_", " "))
        ax.grid(axis="y", visible=False)
        title = f"top {len(shown)} of {len(scores)} candidate runs by {value}"
        if picked:
            title += " (highlighted: chosen for the next batch)"
        ax.set_title(title)
    return fig


# ---- (6) posterior predictive checks ---------------------------------------------------------

def plot_ppc(post: Posterior, *, ci: float = 0.9, num_pp_samples: int = 100,
             seed: int = 0) -> Figure:
    """Posterior predictive check of the fitted rows' log losses, in two panels.

    Left, ``az.plot_ppc``: the density of the observed log losses over that of
    ``num_pp_samples`` replicated tables. Right: every row's observed log loss against
    the central ``ci`` interval of its posterior predictive (rows sorted by the
    predictive median; a row outside its interval is drawn in the prior colour). About
    ``ci`` of the rows inside is a noise model that fits; far fewer, an overconfident
    one. The replicates are the posterior's ``posterior_predictive`` group, computed
    from its draws when it has none (see :mod:`bayes_transfer.predictive`).

    Example:
        >>> fig = plot_ppc(post, ci=0.9)  # doctest: +SKIP
    """
    import arviz as az

    from bayes_transfer.comparison import OBSERVED
    from bayes_transfer.predictive import ppc_idata

    idata = ppc_idata(post, seed=seed, log_likelihood=False)
    observed = idata.observed_data[OBSERVED].values
    pp = idata.posterior_predictive[OBSERVED].transpose("chain", "draw", "row").values
    lo, med, hi = _quantiles(pp.reshape(-1, pp.shape[-1]), ci)
    inside = (observed >= lo) & (observed <= hi)
    order = np.argsort(med)
    with _style():
        fig, axes = _figure(1, 2)
        az.plot_ppc(idata, var_names=[OBSERVED], ax=axes[0, 0],
                    num_pp_samples=min(num_pp_samples, pp.shape[0] * pp.shape[1]),
                    random_seed=seed)
        axes[0, 0].set_xlabel("log of the loss (loss in nats/token)")
        axes[0, 0].set_title("density of the log losses: observed vs replicated tables")
        ax = axes[0, 1]
        x = np.arange(len(order))
        ax.vlines(x, lo[order], hi[order], color=_OBSERVED, alpha=0.5, linewidth=2,
                  label=f"{ci:.0%} predictive interval")
        colors = np.where(inside[order], _OBSERVED, _PRIOR)
        ax.scatter(x, observed[order], c=colors, s=14, zorder=3, edgecolor="black",
                   linewidth=0.4, label="observed")
        ax.set_xlabel("fitted rows, by predictive median")
        ax.set_ylabel("log loss")
        ax.legend(loc="upper left")
        ax.set_title(f"{int(inside.sum())} of {len(inside)} rows ({inside.mean():.0%}) "
                     f"inside their {ci:.0%} interval")
        fig.suptitle(f"{post.spec.law}: posterior predictive check of the fitted rows")
    return fig


def plot_loo_pit(post: Posterior, *, seed: int = 0) -> Figure:
    """LOO-PIT of the fitted rows: the leave-one-out predictive CDF at each observed row.

    Calibrated predictions give uniform LOO-PIT values. Left, ``az.plot_loo_pit``: their
    density against uniform ones; right, their ECDF minus the uniform CDF with its
    simultaneous band. A U shape (values piled at 0 and 1) is an overconfident model, a
    hump an underconfident one, a slope a biased one. Needs the log likelihood, computed
    from the draws when the posterior has no ``log_likelihood`` group.

    Example:
        >>> fig = plot_loo_pit(post)  # doctest: +SKIP
    """
    import warnings

    import arviz as az

    from bayes_transfer.comparison import OBSERVED
    from bayes_transfer.predictive import ppc_idata

    idata = ppc_idata(post, seed=seed)
    with _style(), warnings.catch_warnings():
        # PSIS's Pareto-k notes: the figure is the check; ppc --format json reports k.
        warnings.simplefilter("ignore", UserWarning)
        fig, axes = _figure(1, 2)
        az.plot_loo_pit(idata, y=OBSERVED, ax=axes[0, 0])
        az.plot_loo_pit(idata, y=OBSERVED, ecdf=True, ax=axes[0, 1])
        axes[0, 0].set_title("LOO-PIT density vs uniform")
        axes[0, 1].set_title("LOO-PIT ECDF minus uniform CDF, with its band")
        for ax in axes[0]:
            ax.set_xlabel("LOO-PIT: leave-one-out predictive CDF at the observed log loss")
        fig.suptitle(f"{post.spec.law}: leave-one-out PIT of the "
                     f"{idata.observed_data.sizes['row']} fitted rows (uniform if calibrated)")
    return fig


def plot_calibration(predictions: pd.DataFrame, *, levels: Sequence[float] = (0.5, 0.8, 0.9,
                                                                              0.95)) -> Figure:
    """A backtest's calibration: PIT histogram and coverage against nominal.

    ``predictions`` is :attr:`bayes_transfer.backtest.Backtest.predictions` (columns
    ``model_pit``, ``model_lower_<l>``/``model_upper_<l>``, ``loss``, and the same
    ``baseline_*`` columns when there is a baseline). A calibrated model has a flat PIT
    histogram and its coverage on the diagonal.
    """
    with _style():
        fig, axes = _figure(1, 2)
        ax_pit, ax_cov = axes[0, 0], axes[0, 1]
        methods = [("model", _OBSERVED), ("baseline", _PRIOR)]
        for method, color in methods:
            col = f"{method}_pit"
            if col not in predictions or predictions[col].isna().all():
                continue
            pit = predictions[col].dropna().to_numpy()
            ax_pit.hist(pit, bins=10, range=(0, 1), density=True, histtype="step",
                        color=color, linewidth=2, label=method)
            cov = [float(np.mean((predictions["loss"] >= predictions[f"{method}_lower_{lv:g}"])
                                 & (predictions["loss"] <= predictions[f"{method}_upper_{lv:g}"])
                                 ))
                   for lv in levels]
            ax_cov.plot(levels, cov, "o-", color=color, label=method)
        ax_pit.axhline(1.0, color="black", linestyle=":", linewidth=1)
        ax_pit.set(xlabel="PIT (predictive CDF at the held-out loss)", ylabel="density",
                   title=f"PIT of {len(predictions)} held-out rows")
        ax_cov.plot([0, 1], [0, 1], color="black", linestyle=":", linewidth=1)
        ax_cov.set(xlim=(0.4, 1.0), ylim=(0.0, 1.02), xlabel="nominal interval mass",
                   ylabel="coverage of held-out rows", title="coverage vs nominal")
        ax_pit.legend(frameon=False)
        ax_cov.legend(frameon=False)
    return fig


# ---- model selection ------------------------------------------------------------------------

_MISS = "#b2182b"


def plot_selection(table: pd.DataFrame, summary: dict[str, Any] | None = None) -> Figure:
    """A model selection (:func:`bayes_transfer.selection.select_model`): each candidate's
    predicted loss at the full fine-tuning size, median and interval, best first, with
    ``p_best`` beside it and the actual loss where the table has it (a red cross, and the
    interval red where the actual loss falls outside it).

    ``table`` is :attr:`~bayes_transfer.selection.Selection.table`; ``summary`` (its
    :attr:`~bayes_transfer.selection.Selection.summary`) adds the size, the interval mass
    and, with the truth, the coverage and which side the misses fall on to the title.

    Example:
        >>> sel = select_model(runs, "finetune-curves", budget=1 / 64)  # doctest: +SKIP
        >>> save_figure(plot_selection(sel.table, sel.summary), "select.png")  # doctest: +SKIP
    """
    rows = table.sort_values("rank").reset_index(drop=True)
    actual = rows["loss_actual"].to_numpy(np.float64)
    known = np.isfinite(actual)
    outside = known & ((actual < rows["loss_lower"]) | (actual > rows["loss_upper"])).to_numpy()
    with _style():
        fig, axes = _figure()
        ax = axes[0, 0]
        y = np.arange(len(rows))[::-1]  # rank 1 at the top
        for i, row in rows.iterrows():
            color = _MISS if outside[i] else _OBSERVED
            ax.plot([row["loss_lower"], row["loss_upper"]], [y[i], y[i]], color=color,
                    linewidth=2)
            ax.plot(row["loss_median"], y[i], "o", color=color, markersize=5)
            if known[i]:
                ax.plot(actual[i], y[i], "x", color=_MISS, markersize=7, mew=2)
        ax.set_yticks(y, [f"{s}  (p_best {p:.2f})" for s, p in
                          zip(rows["source"], rows["p_best"], strict=True)])
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("loss at the full fine-tuning size (nats/token)")
        ax.plot([], [], "o-", color=_OBSERVED, label="predicted: median and interval")
        if known.any():
            ax.plot([], [], "x", color=_MISS, mew=2, label="actual loss")
            ax.plot([], [], "-", color=_MISS, label="interval missing the actual loss")
        ax.legend(loc="upper right")  # the worst models' intervals reach the lower right
        title = "model selection: predicted loss, best first"
        if summary is not None:
            title = (f"model selection: predicted loss at f = {summary['at']:,.0f} tokens, "
                     f"{summary['ci']:.0%} intervals, best first")
            if summary.get("coverage") is not None:
                title += (f"\ncoverage {summary['coverage']:.2f}: misses above "
                          f"{summary['above']:.2f}, below {summary['below']:.2f}")
        ax.set_title(title)
    return fig
