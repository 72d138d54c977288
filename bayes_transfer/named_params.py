"""Law parameters under their own names, and the sampler's own coordinates kept aside.

A fit samples every law parameter on the log scale, as ``log_<name>`` over its level's
groups (``pair`` for a pair-level gap), from sites of its own: population means and sds
(``G_mu``, ``G_sd_pair``), non-centred offsets (``G_z_pair``), partially centred values
(``G_pc_pair``) and factor loadings (``E_a_source``). An ArviZ user expects instead the
parameters themselves, on their natural scale, with the dims they vary over:

================  ===========================  ==============================
level             ``log_<name>`` dims           ``<name>`` dims
================  ===========================  ==============================
global            ``(chain, draw)``             ``(chain, draw)``
source            ``(chain, draw, source)``     ``(chain, draw, source)``
target            ``(chain, draw, target)``     ``(chain, draw, target)``
pair              ``(chain, draw, pair)``       ``(chain, draw, source, target)``
================  ===========================  ==============================

:func:`organise` (called by every fit, both back ends, and by the posterior-file reader)
adds ``<name> = exp(log_<name>)`` to ``idata.posterior`` and moves the sampler-only sites
(:func:`sampler_sites`: offsets, partially centred values, loadings, hundreds of them on a
large table) to the ArviZ group ``unconstrained_posterior``, so that ``az.summary(idata)``
shows the law parameters, the population-level sites, ``sigma`` and ``log_<name>``, and
``idata.posterior["G"].sel(source="web", target="math")`` reads one pair's gap. The moved
sites are unconstrained reals (standard-normal offsets), hence the group; warm starts,
diagnostics and the log likelihood read them through :func:`all_draws`.

The pair dim is always the full source x target grid (a pair with no rows carries the
crossed-effects predictive, see :mod:`bayes_transfer.model`), so the reshape is exact.

Example:
    >>> import bayes_transfer as bt  # doctest: +SKIP
    >>> post = bt.fit(runs, "transfer-gap", chains=2, draws=200, warmup=200)  # doctest: +SKIP
    >>> post.idata.posterior["G"].sel(source="web", target="math").median()  # doctest: +SKIP
    >>> az.summary(post.idata, var_names=["G"])  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

if TYPE_CHECKING:
    import arviz as az

    from bayes_transfer.spec import ModelSpec

__all__ = ["UNCONSTRAINED", "natural_dims", "sampler_sites", "natural_param",
           "add_natural_params", "organise", "all_draws", "draw_names"]

#: The ArviZ group that holds the sampler-only sites.
UNCONSTRAINED = "unconstrained_posterior"
# Names a law parameter cannot take: they are already variables or dims of a posterior.
_RESERVED = {"sigma", "chain", "draw", "source", "target", "pair", "row", "factor",
             "pair_source", "pair_target", "pair_observed"}


def natural_dims(level: str) -> tuple[str, ...]:
    """The dims (after ``chain, draw``) of a parameter of ``level`` on its natural scale.

    Example:
        >>> natural_dims("pair")
        ('source', 'target')
    """
    return {"global": (), "source": ("source",), "target": ("target",),
            "pair": ("source", "target")}[level]


def sampler_sites(spec: ModelSpec) -> dict[str, tuple[str, ...]]:
    """The spec's sampler-only sites, with their dims: every site of a parameter that has
    dims and is not ``log_<name>`` (non-centred offsets ``*_z_*``, partially centred
    values ``*_pc_*``, factor loadings ``*_a_source``, ``*_b_target``).

    Example:
        >>> from bayes_transfer.spec import load_spec
        >>> sorted(sampler_sites(load_spec("transfer-gap")))[:4]
        ['A_z_pair', 'A_z_source', 'A_z_target', 'E_z_target']
    """
    return {site: dims for p in spec.params.values() for site, dims in p.site_names.items()
            if dims and site != f"log_{p.name}"}


def natural_param(posterior: xr.Dataset, name: str, level: str) -> xr.DataArray:
    """``exp(log_<name>)`` of ``posterior``, a pair-level one over ``(source, target)``.

    Pairs are placed by the ``pair_source`` and ``pair_target`` coordinates (by the order
    ``source x target`` of the ``pair`` labels when a posterior lacks them); a pair dim
    that is not every source x target pair exactly once is an error.

    Example:
        >>> G = natural_param(post.idata.posterior, "G", "pair")  # doctest: +SKIP
        >>> G.dims  # doctest: +SKIP
        ('chain', 'draw', 'source', 'target')
    """
    log = posterior[f"log_{name}"]
    value = np.exp(log).rename(name)
    value.attrs = {}
    if level != "pair":
        return value
    sources = [str(s) for s in posterior["source"].values]
    targets = [str(t) for t in posterior["target"].values]
    if "pair_source" in posterior.coords and "pair_target" in posterior.coords:
        pair_sources = [str(s) for s in posterior["pair_source"].values]
        pair_targets = [str(t) for t in posterior["pair_target"].values]
    else:
        pair_sources = [s for s in sources for _ in targets]
        pair_targets = [t for _ in sources for t in targets]
    s_at = {s: i for i, s in enumerate(sources)}
    t_at = {t: i for i, t in enumerate(targets)}
    try:
        cells = [s_at[s] * len(targets) + t_at[t]
                 for s, t in zip(pair_sources, pair_targets, strict=True)]
    except KeyError as exc:
        raise ValueError(f"log_{name}: the pair coordinates name {exc.args[0]!r}, not a "
                         "source or target of the posterior") from None
    if sorted(cells) != list(range(len(sources) * len(targets))):
        raise ValueError(f"log_{name}: the pair dim is not every source x target pair once")
    ordered = value.transpose("chain", "draw", "pair").values[..., np.argsort(cells)]
    grid = ordered.reshape(ordered.shape[:2] + (len(sources), len(targets)))
    return xr.DataArray(grid, dims=("chain", "draw", "source", "target"), name=name,
                        coords={"chain": posterior["chain"], "draw": posterior["draw"],
                                "source": posterior["source"], "target": posterior["target"]})


def add_natural_params(draws: xr.Dataset, spec: ModelSpec) -> None:
    """Add ``<name> = exp(log_<name>)`` for each law parameter of ``spec`` to ``draws`` (a
    posterior or a prior), in place; a parameter already there is left as it is.

    Example:
        >>> add_natural_params(post.idata.prior, post.spec)  # doctest: +SKIP
        >>> post.idata.prior["G"].dims  # doctest: +SKIP
        ('chain', 'draw', 'source', 'target')
    """
    for name, p in spec.params.items():
        if name in _RESERVED:
            raise ValueError(f"law parameter {name!r} clashes with a posterior variable or "
                             f"dim of that name; rename it (reserved: {sorted(_RESERVED)})")
        if name not in draws.data_vars:
            draws[name] = natural_param(draws, name, p.level)


def organise(idata: az.InferenceData, spec: ModelSpec) -> None:
    """Add each law parameter under its own name; move the sampler-only sites aside.

    In place and idempotent (see the module docs): ``idata.posterior`` gains
    ``<name> = exp(log_<name>)`` for every parameter of ``spec``, and the sites of
    :func:`sampler_sites` found in it move to ``idata.unconstrained_posterior``.

    Example:
        >>> organise(post.idata, post.spec)  # doctest: +SKIP
        >>> "G_z_pair" in post.idata.unconstrained_posterior  # doctest: +SKIP
        True
    """
    posterior = idata.posterior
    add_natural_params(posterior, spec)
    moved = [s for s in sampler_sites(spec) if s in posterior.data_vars]
    kept = [str(v) for v in posterior.data_vars if v not in moved]
    # What az.summary lists first: the law's parameters, the noise, the population-level
    # sites, and last the log-scale values the package computes with.
    first = [*spec.params, *(["sigma"] if "sigma" in kept else [])]
    rest = [v for v in kept if v not in first]
    order = first + [v for v in rest if not v.startswith("log_")] + \
        [v for v in rest if v.startswith("log_")]
    # Every coordinate is kept, even one no variable uses (ds[names] would drop it, and a
    # global-only posterior would then lose source, target and pair).
    idata.posterior = xr.Dataset({v: posterior[v] for v in order}, coords=posterior.coords,
                                 attrs=posterior.attrs)
    if not moved:
        return
    aside = posterior[moved]
    aside.attrs = {}
    if UNCONSTRAINED in idata.groups():
        idata[UNCONSTRAINED] = idata[UNCONSTRAINED].assign(aside.data_vars)
    else:
        idata.add_groups({UNCONSTRAINED: aside})


def all_draws(idata: az.InferenceData) -> xr.Dataset:
    """``idata.posterior`` with the variables of ``unconstrained_posterior`` added: every
    sampled site, for readers that need them all (warm starts, diagnostics, the log
    likelihood).

    Example:
        >>> sorted(all_draws(post.idata).data_vars)[:2]  # doctest: +SKIP
        ['A', 'A_mu']
    """
    if UNCONSTRAINED not in idata.groups():
        return idata.posterior
    return idata.posterior.assign(idata[UNCONSTRAINED].data_vars)


def draw_names(idata: az.InferenceData) -> set[str]:
    """Names of the variables of ``idata.posterior`` and ``unconstrained_posterior``.

    Example:
        >>> "G_z_pair" in draw_names(post.idata)  # doctest: +SKIP
        True
    """
    # Iterating a Dataset gives its variables' names (and a mapping its keys).
    names = {str(n) for n in idata.posterior}
    aside = getattr(idata, UNCONSTRAINED, None)
    return names | {str(n) for n in aside} if aside is not None else names
