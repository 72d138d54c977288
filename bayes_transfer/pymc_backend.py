"""The PyMC back end: the same hierarchical model as :mod:`bayes_transfer.model`, in PyMC.

It exists so that a user can cross-check a NumPyro posterior with an independent
sampler, and so that the samplers' speeds can be compared on equal terms
(``benchmarks/sampler_speed.py``). Nothing is re-derived here: the arrays come from
:func:`~bayes_transfer.model.model_data`, the rows from
:func:`~bayes_transfer.model.select_rows`, the indexing from
:func:`~bayes_transfer.model.at_rows`, the dims from
:func:`~bayes_transfer.model.site_dims` and :func:`~bayes_transfer.inference.coords_for`,
and the mean function is the law's own formula, evaluated with PyTensor instead of JAX.
:func:`pymc_model` mirrors :func:`~bayes_transfer.model.hierarchical_model` function for
function (``param_effect``, ``_offsets``, ``_likelihood``), so the two read side by side.

Example:
    >>> from bayes_transfer import simulate
    >>> design = simulate.design_grid(["a", "b"], ["x"], params=[1e6],
    ...     pretrain_tokens=[1e6, 1e8], finetune_tokens=[1e4, 1e6])
    >>> sim = simulate.simulate("transfer-gap", design, seed=0)
    >>> model = pymc_model(sim.spec, sim.runs)
    >>> sorted(model.named_vars)[:4]
    ['A_mu', 'A_sd_pair', 'A_sd_source', 'A_sd_target']
    >>> idata = sample_pymc(sim.spec, sim.runs, chains=2, draws=100,
    ...                     warmup=100)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import types
from typing import Any, Literal

import arviz as az
import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayes_transfer.data import RunTable
from bayes_transfer.inference import coords_for
from bayes_transfer.laws import get_law
from bayes_transfer.model import ModelData, _group_size, at_rows, model_data, site_dims
from bayes_transfer.spec import ModelSpec, ParamSpec

__all__ = ["pymc_model", "sample_pymc", "PYTENSOR_XP", "NutsSampler"]

NutsSampler = Literal["pymc", "nutpie"]


def _logaddexp(a: Any, b: Any) -> Any:
    # Stable log(e^a + e^b), like jnp.logaddexp: pt.logaddexp is log(exp(a) + exp(b)),
    # whose *gradient* underflows when both terms are tiny. Equal infinities give a + b.
    hi = pt.maximum(a, b)
    delta = a - b
    same_inf = pt.isnan(delta)
    safe = pt.switch(same_inf, 0.0, delta)
    return pt.switch(same_inf, a + b, hi + pt.log1p(pt.exp(-pt.abs(safe))))


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
    if p.level == "pair" and p.pooling == "crossed":
        u = _offsets(p, "source", data, dims)
        v = _offsets(p, "target", data, dims)
        value = value + (u[:, None] + v[None, :]).reshape((-1,))
        value = value + _offsets(p, "pair", data, dims)
    else:
        value = value + _offsets(p, p.level, data, dims)
    return pm.Deterministic(f"log_{name}", value, dims=_dims(f"log_{name}", dims))


def _offsets(p: ParamSpec, group: str, data: ModelData, dims: dict[str, list[str]]) -> Any:
    # Non-centred, as in the NumPyro model.
    sd = pm.HalfNormal(f"{p.name}_sd_{group}", p.group_scale)
    z = pm.Normal(f"{p.name}_z_{group}", 0.0, 1.0, shape=(_group_size(group, data),),
                  dims=_dims(f"{p.name}_z_{group}", dims))
    return sd * z


def pymc_model(spec: ModelSpec, table: RunTable, observed: bool = True) -> pm.Model:
    """The PyMC model of ``spec`` on ``table`` (rows already selected by ``select_rows``).

    Same variable names, priors, dims and likelihood as
    :func:`bayes_transfer.model.hierarchical_model`. With ``observed=False`` the log
    losses are free variables (prior predictive).
    """
    data = _numpy_data(model_data(spec, table))
    law = get_law(spec.law)
    dims = site_dims(spec)
    with pm.Model(coords=coords_for(table)) as model:
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
    *,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    target_accept: float = 0.9,
    progress: bool = True,
    nuts_sampler: NutsSampler = "pymc",
) -> az.InferenceData:
    """Sample :func:`pymc_model` with NUTS; InferenceData shaped like the NumPyro back end's.

    ``nuts_sampler="pymc"`` is PyMC's own NUTS; ``"nutpie"`` is the Rust NUTS of the
    ``nutpie`` package (``pip install nutpie``). Sample stats include ``diverging``,
    ``energy`` and ``lp`` (the log density) for :func:`bayes_transfer.diagnostics.diagnose`.
    Called by ``bayes_transfer.inference.fit(..., backend="pymc")``.
    """
    if nuts_sampler not in ("pymc", "nutpie"):
        raise ValueError(f"nuts_sampler must be 'pymc' or 'nutpie', not {nuts_sampler!r}")
    if nuts_sampler == "nutpie":
        try:
            import nutpie  # noqa: F401
        except ImportError:
            raise ImportError("nuts_sampler='nutpie' needs the nutpie package: "
                              "pip install nutpie") from None
    model = pymc_model(spec, table)
    with model:
        idata = pm.sample(
            draws=draws, tune=warmup, chains=chains,
            cores=max(1, min(chains, os.cpu_count() or 1)),
            target_accept=target_accept, random_seed=seed, progressbar=progress,
            nuts_sampler=nuts_sampler, compute_convergence_checks=False,
            idata_kwargs={"log_likelihood": False},
        )
    stats = idata.sample_stats
    if "lp" not in stats and "logp" in stats:  # nutpie's name for the log density
        idata.sample_stats["lp"] = stats["logp"]
    return idata
