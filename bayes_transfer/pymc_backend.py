"""The PyMC back end: the same hierarchical model as :mod:`bayes_transfer.model`, in PyMC.

It exists so that a user can cross-check a NumPyro posterior with an independent
sampler, and so that the samplers' speeds can be compared on equal terms
(``benchmarks/sampler_speed.py``). Nothing is re-derived here: the arrays come from
:func:`~bayes_transfer.model.model_data`, the rows from
:func:`~bayes_transfer.model.select_rows`, the indexing from
:func:`~bayes_transfer.model.at_rows`, the dims from
:func:`~bayes_transfer.model.site_dims` and :func:`~bayes_transfer.sampling.coords_for`,
and the mean function is the law's own formula, evaluated with PyTensor instead of JAX.
:func:`pymc_model` mirrors :func:`~bayes_transfer.model.hierarchical_model` function for
function (``param_effect``, ``_offsets``, ``_likelihood``), so the two read side by side.

Example:
    >>> from bayes_transfer import simulate
    >>> design = simulate.design_grid(["a", "b"], ["x"], params=[1e6],
    ...     pretrain_tokens=[1e6, 1e8], finetune_tokens=[1e4, 1e6])
    >>> sim = simulate.simulate("transfer-gap", design, seed=0)
    >>> model = pymc_model(sim.spec, sim.runs)
    >>> sorted(model.named_vars)[:4]  # one target: A is pooled over pairs, not crossed
    ['A_mu', 'A_sd_pair', 'A_z_pair', 'E_mu']
    >>> idata = sample_pymc(sim.spec, sim.runs, chains=2, draws=100,
    ...                     warmup=100)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import types
import warnings
from typing import Any, Literal

import arviz as az
import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayes_transfer.data import RunTable
from bayes_transfer.laws import Units, get_law
from bayes_transfer.model import (
    ModelData,
    _group_size,
    at_rows,
    centring,
    crossed,
    model_data,
    site_dims,
)
from bayes_transfer.sampling import SamplerSettings, coords_for
from bayes_transfer.spec import ModelSpec, ParamSpec

__all__ = ["pymc_model", "sample_pymc", "PYTENSOR_XP", "NutsSampler"]

NutsSampler = Literal["pymc", "nutpie"]


def _logaddexp(a: Any, b: Any) -> Any:
    # Stable log(e^a + e^b), like jnp.logaddexp: pt.logaddexp is log(exp(a) + exp(b)),
    # whose *gradient* underflows to 0/0 when both terms are tiny. The larger and smaller
    # input are picked with switch (not maximum, whose gradient goes to both inputs at a
    # tie); equal infinities give a + b, as in numpy.
    a_larger = a > b
    hi, lo = pt.switch(a_larger, a, b), pt.switch(a_larger, b, a)
    diff = lo - hi
    same_inf = pt.isnan(diff)
    return pt.switch(same_inf, a + b,
                     hi + pt.log1p(pt.exp(pt.switch(same_inf, 0.0, diff))))


# The array namespace the laws are written against (see bayes_transfer.laws).
PYTENSOR_XP = types.SimpleNamespace(exp=pt.exp, logaddexp=_logaddexp, where=pt.switch)


def _numpy_data(data: ModelData) -> ModelData:
    """The same ModelData with numpy arrays instead of JAX ones (PyTensor constants)."""
    return dataclasses.replace(
        data,
        features={k: np.asarray(v) for k, v in data.features.items()},
        log_loss=np.asarray(data.log_loss),
        log_loss_se=np.asarray(data.log_loss_se),
        source_idx=np.asarray(data.source_idx),
        target_idx=np.asarray(data.target_idx),
    )


def _dims(site: str, dims: dict[str, list[str]]) -> tuple[str, ...] | None:
    return tuple(dims[site]) or None


def param_effect(p: ParamSpec, data: ModelData, dims: dict[str, list[str]]) -> Any:
    """Create one parameter's variables; return its log value over its level's groups.

    Mirrors :func:`bayes_transfer.model.param_effect`.
    """
    name = p.name
    if p.pooling == "none":
        return pm.Normal(f"log_{name}", p.loc, p.scale, dims=_dims(f"log_{name}", dims))
    value = pm.Normal(f"{name}_mu", p.loc, p.scale)
    if crossed(p, data):
        u = _offsets(p, "source", data, dims)
        v = _offsets(p, "target", data, dims)
        value = value + (u[:, None] + v[None, :]).reshape((-1,))
        if p.factors:
            value = value + _interaction(p, data, dims)
    override = data.centre is not None and name in data.centre
    if p.centered or override:
        # Centred innermost level (partially centred when some groups have no rows, or
        # where a cold fit centres only the groups the rows pin), as in the NumPyro model.
        sd = pm.HalfNormal(f"{name}_sd_{p.level}", p.group_scale)
        n = _group_size(p.level, data)
        centre = np.asarray(centring(p, data), dtype=bool)
        if not override and centre.all():
            return _groups(p, f"log_{name}", value, sd, shape=(n,),
                           dims=_dims(f"log_{name}", dims))
        c = centre.astype(float)
        value = value * np.ones(n)
        if override:  # the draws are mapped back to the spec's own sites with it
            pm.Deterministic(f"{name}_loc_{p.level}", value, dims=_dims(f"log_{name}", dims))
        raw = _groups(p, f"{name}_pc_{p.level}", c * value, sd**c, shape=(n,),
                      dims=_dims(f"log_{name}", dims))  # the level's groups
        return pm.Deterministic(f"log_{name}", value + sd ** (1 - c) * (raw - c * value),
                                dims=_dims(f"log_{name}", dims))
    value = value + _offsets(p, p.level, data, dims)
    return pm.Deterministic(f"log_{name}", value, dims=_dims(f"log_{name}", dims))


def _offsets(p: ParamSpec, group: str, data: ModelData, dims: dict[str, list[str]]) -> Any:
    # Non-centred (and fixed_sd), as in the NumPyro model.
    sd = (p.group_scale if group in p.fixed_sd
          else pm.HalfNormal(f"{p.name}_sd_{group}", p.group_scale))
    z = _groups(p, f"{p.name}_z_{group}", 0.0, 1.0, innermost=group == p.level,
                shape=(_group_size(group, data),), dims=_dims(f"{p.name}_z_{group}", dims))
    return sd * z


def _groups(p: ParamSpec, name: str, loc: Any, scale: Any, innermost: bool = True,
            **kwargs: Any) -> Any:
    # A level's groups: normal, or at the innermost level Student-t (residual_nu), as in
    # the NumPyro model (bayes_transfer.model.group_distribution).
    if p.residual_nu is None or not innermost:
        return pm.Normal(name, loc, scale, **kwargs)
    return pm.StudentT(name, nu=p.residual_nu, mu=loc, sigma=scale, **kwargs)


def _interaction(p: ParamSpec, data: ModelData, dims: dict[str, list[str]]) -> Any:
    # Rank-K interaction, as in the NumPyro model.
    sd = pm.HalfNormal(f"{p.name}_sd_factor", p.group_scale)
    a = pm.Normal(f"{p.name}_a_source", 0.0, 1.0, shape=(data.n_sources, p.factors),
                  dims=_dims(f"{p.name}_a_source", dims))
    b = pm.Normal(f"{p.name}_b_target", 0.0, 1.0, shape=(data.n_targets, p.factors),
                  dims=_dims(f"{p.name}_b_target", dims))
    return (sd / np.sqrt(p.factors)) * pt.dot(a, b.T).reshape((-1,))


def pymc_model(spec: ModelSpec, table: RunTable, observed: bool = True,
               units: Units | None = None,
               centre: dict[str, np.ndarray] | None = None) -> pm.Model:
    """The PyMC model of ``spec`` on ``table`` (rows already selected by ``select_rows``).

    Same variable names, priors, dims and likelihood as
    :func:`bayes_transfer.model.hierarchical_model`. With ``observed=False`` the log
    losses are free variables (prior predictive). ``centre`` (a bool per group of
    non-centred parameters, :func:`bayes_transfer.refit.cold_centring`) samples those
    groups centred, as the NumPyro model does with ``ModelData.centre``.
    """
    # A spec's [discrepancy] is not part of the sampled model: fit() learns it afterwards
    # from an internal extrapolation, with whichever back end sampled the law.
    data = _numpy_data(model_data(spec, table, units))
    if centre:
        data = dataclasses.replace(data, centre=centre)
    law = get_law(spec.law)
    dims = site_dims(spec)
    with pm.Model(coords=coords_for(table, spec)) as model:
        log_params = {
            name: at_rows(p.level, param_effect(p, data, dims), data.source_idx,
                          data.target_idx, data.n_targets)
            for name, p in spec.params.items()
        }
        mean = law.log_loss(data.features, log_params, xp=PYTENSOR_XP)
        sigma = pm.HalfNormal("sigma", spec.likelihood.sigma)
        scale = pt.sqrt(sigma**2 + data.log_loss_se**2)
        _likelihood(spec, mean, scale, observed=data.log_loss if observed else None)
    return model


def _likelihood(spec: ModelSpec, mean: Any, scale: Any, observed: Any) -> Any:
    if spec.likelihood.family == "normal":
        return pm.Normal("log_loss", mean, scale, observed=observed, dims="row")
    return pm.StudentT("log_loss", nu=spec.likelihood.nu, mu=mean, sigma=scale,
                       observed=observed, dims="row")


def sample_pymc(
    spec: ModelSpec,
    table: RunTable,
    settings: SamplerSettings | None = None,
    *,
    units: Units | None = None,
    nuts_sampler: NutsSampler = "pymc",
    **changes: Any,
) -> az.InferenceData:
    """Sample :func:`pymc_model` with NUTS; InferenceData shaped like the NumPyro back end's.

    ``settings`` (default :class:`~bayes_transfer.sampling.SamplerSettings`) say how to
    sample; keywords named as its fields change them (``chains=2, draws=100``).
    ``init`` and ``device`` are NumPyro's and ignored here.
    ``nuts_sampler="pymc"`` is PyMC's own NUTS; ``"nutpie"`` is the Rust NUTS of the
    ``nutpie`` package (``pip install nutpie``). Sample stats include ``diverging``,
    ``energy`` and ``lp`` (the log density) for :func:`bayes_transfer.diagnostics.diagnose`.
    ``max_tree_depth`` caps each NUTS trajectory at ``2**max_tree_depth - 1`` steps, as
    in NumPyro (PyMC's ``max_treedepth``, nutpie's ``maxdepth``); ``dense_mass`` adapts a
    dense mass matrix (PyMC's ``init="jitter+adapt_full"``, nutpie's low-rank modified
    mass matrix). The ``"pymc"`` back end of ``bayes_transfer.inference.fit`` calls it.
    """
    s = (settings or SamplerSettings()).replace(**changes)
    if nuts_sampler not in ("pymc", "nutpie"):
        raise ValueError(f"nuts_sampler must be 'pymc' or 'nutpie', not {nuts_sampler!r}")
    if nuts_sampler == "nutpie":
        try:
            import nutpie  # noqa: F401
        except ImportError:
            raise ImportError("nuts_sampler='nutpie' needs the nutpie package: "
                              "pip install nutpie") from None
    from bayes_transfer.refit import cold_centring

    s = s.for_rows(len(table))
    centre = cold_centring(model_data(spec, table, units), s)
    model = pymc_model(spec, table, units=units, centre=centre)
    with model, warnings.catch_warnings():
        # PyMC forks one worker per chain; JAX (already started by model_data) warns on
        # any fork. The workers only run PyTensor code and never call into JAX, so the
        # deadlock it warns about cannot happen there. (A fork server would avoid the
        # warning but would make every user script need an `if __name__ == "__main__"`.)
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                category=RuntimeWarning)
        idata = pm.sample(
            draws=s.draws, tune=s.warmup, chains=s.chains,
            cores=max(1, min(s.chains, os.cpu_count() or 1)),
            target_accept=s.target_accept, random_seed=s.seed, progressbar=s.progress,
            nuts_sampler=nuts_sampler, compute_convergence_checks=False,
            **_sampler_kwargs(nuts_sampler, s.max_tree_depth, s.dense_mass),
        )
    idata = _like_numpyro(idata, model)
    if centre:
        idata.posterior = _on_spec_sites(idata.posterior, spec, table, centre)
    from bayes_transfer.refit import record_centring

    record_centring(idata, centre)
    return idata


def _on_spec_sites(posterior: Any, spec: ModelSpec, table: RunTable,
                   centre: dict[str, np.ndarray]) -> Any:
    """A partially centred sample's posterior on the spec's own sites (named dims)."""
    from bayes_transfer.refit import to_spec_sites

    values = to_spec_sites({k: posterior[k].values for k in posterior.data_vars}, spec,
                           centre)
    out = az.from_dict(posterior=values, coords=coords_for(table, spec),
                       dims=site_dims(spec)).posterior
    out.attrs = posterior.attrs
    return out


def _sampler_kwargs(nuts_sampler: str, max_tree_depth: int,
                    dense_mass: bool = False) -> dict[str, Any]:
    if nuts_sampler == "nutpie":
        # nutpie ignores idata_kwargs (with a warning) and stores no log likelihood.
        kw: dict[str, Any] = {"maxdepth": max_tree_depth}
        if dense_mass:
            kw["low_rank_modified_mass_matrix"] = True
        return {"nuts_sampler_kwargs": kw}
    return {"nuts": {"max_treedepth": max_tree_depth},
            "init": "jitter+adapt_full" if dense_mass else "jitter+adapt_diag",
            "idata_kwargs": {"log_likelihood": False}}


def _like_numpyro(idata: az.InferenceData, model: pm.Model) -> az.InferenceData:
    # nutpie also stores the unconstrained values (``sigma_log__``) and the warmup, and
    # calls the log density ``logp``; keep the model's own variables and PyMC's ``lp``.
    names = [v.name for v in model.free_RVs + model.deterministics]
    idata.posterior = idata.posterior[[n for n in idata.posterior.data_vars if n in names]]
    for group in ("warmup_posterior", "warmup_sample_stats"):
        if group in idata.groups():
            del idata[group]
    stats = idata.sample_stats
    if "lp" not in stats and "logp" in stats:
        idata.sample_stats["lp"] = stats["logp"]
    if "reached_max_treedepth" not in stats and "maxdepth_reached" in stats:
        idata.sample_stats["reached_max_treedepth"] = stats["maxdepth_reached"]
    return idata

