"""Predictive groups of a posterior, as ArviZ names them, and posterior predictive checks.

:func:`~bayes_transfer.inference.fit` calls :func:`add_predictive`, which adds to the
InferenceData:

=========================  ================================================================
``posterior_predictive``   ``log_loss`` (dims ``chain, draw, row``): a replicate of every
                           fitted row's log loss under each posterior draw. Added by
                           default when it holds at most ``PPC_MAX_VALUES`` numbers (every
                           bundled table); otherwise :func:`add_posterior_predictive` adds
                           it later (``ppc`` computes it on the fly).
``prior``                  every model site drawn from the prior (one chain), with
``prior_predictive``       ``log_loss`` at every fitted row: only with ``prior_draws > 0``
                           (``fit(..., prior_draws=500)``, ``bayes-transfer fit
                           --prior-draws 500``). NumPyro's ``Predictive`` on
                           :func:`~bayes_transfer.model.hierarchical_model` with
                           ``observed=False``, or ``pm.sample_prior_predictive`` on the PyMC
                           model for ``backend="pymc"``.
=========================  ================================================================

The observed variable is ``log_loss`` in every group, as in ``observed_data`` (the
likelihood is on the log loss), so ``az.plot_ppc(post.idata)`` and, with
:func:`~bayes_transfer.comparison.add_log_likelihood`, ``az.plot_loo_pit(post.idata,
y="log_loss")`` work as they are. A replicate is the law's log mean from
:meth:`~bayes_transfer.inference.Posterior.predict_draws` (the one function that evaluates
a law at rows over draws) plus noise of the model's likelihood (its family, ``nu`` and
scale, with each row's ``loss_se``): what the model says a re-measured row is.

:func:`predictions` is the Bambi-style ``predict`` into InferenceData: draws at new rows
that keep ``chain`` and ``draw`` (so ``az.summary``, MCSE and R-hat work on predictions),
with Bambi's ``kind`` names: ``"response_params"`` (the law's mean loss, ``loss_mean``)
and ``"response"`` (a measured loss, with the observation noise: ``loss``).
``Posterior.predict(rows, kind=..., inplace=True)`` writes the same groups into
``post.idata``. :func:`ppc_check` scores a posterior predictive check with numbers.

Example:
    >>> import bayes_transfer as bt
    >>> post = bt.fit("data/transfer_runs.csv", prior_draws=500)  # doctest: +SKIP
    >>> sorted(post.idata.groups())  # doctest: +SKIP
    ['constant_data', 'observed_data', 'posterior', 'posterior_predictive', 'prior',
     'prior_predictive', 'sample_stats']
    >>> ppc_check(post)["coverage"]  # doctest: +SKIP
    0.93
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from bayes_transfer.comparison import OBSERVED, row_labels

if TYPE_CHECKING:
    import arviz as az
    import pandas as pd
    import xarray as xr

    from bayes_transfer.data import RunTable
    from bayes_transfer.inference import Posterior
    from bayes_transfer.laws import Units
    from bayes_transfer.spec import ModelSpec

__all__ = ["PPC_MAX_VALUES", "PREDICTION_KINDS", "add_predictive", "posterior_predictive",
           "add_posterior_predictive", "prior_groups", "draws_kind", "prediction_kind",
           "predictions", "prediction_groups", "ppc_idata", "ppc_check", "set_groups"]

#: ``fit`` adds ``posterior_predictive`` by default up to this many numbers (draws x rows:
#: 32 MB of float64; 4 chains x 1,000 draws of a 1,000-row table). Beyond it the group
#: would dominate the posterior file, so it is computed when asked for instead.
PPC_MAX_VALUES = 2**22
#: Bambi's ``kind`` names, and the names :meth:`Posterior.predict_draws` takes (kept as
#: aliases), each mapped to predict_draws's name.
PREDICTION_KINDS = {"response_params": "mean", "response": "observation",
                    "mean": "mean", "observation": "observation"}
#: The variable a ``predictions`` group holds, per Bambi kind (losses in nats per token).
_PREDICTION_VARS = {"response_params": "loss_mean", "response": "loss"}


def draws_kind(kind: str) -> str:
    """:meth:`~bayes_transfer.inference.Posterior.predict_draws`'s name of ``kind``.

    Example:
        >>> draws_kind("response"), draws_kind("mean")
        ('observation', 'mean')
    """
    try:
        return PREDICTION_KINDS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"kind must be 'response_params' (the law's mean loss) or "
                         f"'response' (with observation noise), or their aliases 'mean' "
                         f"and 'observation'; not {kind!r}") from None


def prediction_kind(kind: str) -> str:
    """Bambi's name of ``kind``: ``"response_params"`` or ``"response"``.

    Example:
        >>> prediction_kind("observation")
        'response'
    """
    return "response" if draws_kind(kind) == "observation" else "response_params"


# ---- posterior predictive --------------------------------------------------------------


def posterior_predictive(post: Posterior, *, seed: int = 0) -> xr.DataArray:
    """Replicates of every fitted row's log loss, one per posterior draw.

    Returns ``log_loss`` with dims ``(chain, draw, row)`` and the row coordinate of
    ``observed_data``: the law's log mean at the row under the draw plus the spec's
    likelihood noise (Student-t or Normal, scale ``sqrt(sigma^2 + (loss_se/loss)^2)``,
    as :func:`~bayes_transfer.model.hierarchical_model`'s likelihood).
    A spec's discrepancy is zero at the fitted rows (it grows only outside their range),
    so it is left out here.

    Example:
        >>> pp = posterior_predictive(post)  # doctest: +SKIP
        >>> pp.dims  # doctest: +SKIP
        ('chain', 'draw', 'row')
    """
    import xarray as xr

    from bayes_transfer.model import model_data

    posterior = post.idata.posterior
    n_chain, n_draw = posterior.sizes["chain"], posterior.sizes["draw"]
    # The discrepancy's draws need the attributes fit() writes after this runs; at the
    # fitted rows they are zero anyway (see the docstring).
    bare = dataclasses.replace(post, spec=dataclasses.replace(post.spec, discrepancy=None))
    log_mean = np.log(bare.predict_draws(post.runs, kind="mean", seed=seed))
    data = model_data(post.spec, post.runs, post.units)
    sigma = posterior["sigma"].transpose("chain", "draw").values.reshape(-1, 1)
    scale = np.sqrt(sigma**2 + np.asarray(data.log_loss_se)[None, :] ** 2)
    # The model's likelihood (family, nu, and loss_se through model_data), drawn with
    # numpy: JAX's Student-t sampler compiles a gamma sampler first, seconds (17 s on a
    # loaded 2-core machine) added to the first fit of every process for a few numbers.
    like = post.spec.likelihood
    rng = np.random.default_rng([seed, 2])
    noise = (rng.standard_normal(log_mean.shape) if like.family == "normal"
             else rng.standard_t(like.nu, size=log_mean.shape))
    values = log_mean + scale * noise
    return xr.DataArray(values.reshape(n_chain, n_draw, len(post.runs)),
                        dims=("chain", "draw", "row"), name=OBSERVED,
                        coords={"chain": posterior["chain"].values,
                                "draw": posterior["draw"].values,
                                "row": row_labels(post)})


def add_posterior_predictive(post: Posterior, *, seed: int = 0,
                             overwrite: bool = False) -> Posterior:
    """Add (or, with ``overwrite``, replace) ``post.idata.posterior_predictive``.

    Also adds ``observed_data`` (the fitted rows' log losses) when the posterior lacks it,
    so that ``az.plot_ppc(post.idata)`` works. Returns ``post``.

    Example:
        >>> import arviz as az
        >>> az.plot_ppc(add_posterior_predictive(post).idata)  # doctest: +SKIP
    """
    groups = post.idata.groups()
    if "posterior_predictive" in groups and not overwrite:
        return post
    new = {"posterior_predictive": posterior_predictive(post, seed=seed).to_dataset()}
    if "observed_data" not in groups:
        new["observed_data"] = _observed(post)
    set_groups(post.idata, new)
    return post


def _observed(post: Posterior) -> xr.Dataset:
    import xarray as xr

    log_loss = np.log(post.runs.df["loss"].to_numpy(np.float64))
    return xr.Dataset({OBSERVED: ("row", log_loss)}, coords={"row": row_labels(post)})


def set_groups(idata: az.InferenceData, groups: dict[str, xr.Dataset]) -> None:
    """Put ``groups`` into ``idata``, replacing any of the same name (no warning).

    Example:
        >>> set_groups(post.idata, {"predictions": ds})  # doctest: +SKIP
    """
    present = set(idata.groups())
    for name, ds in groups.items():
        if name in present:
            setattr(idata, name, ds)
        else:
            idata.add_groups({name: ds}, warn_on_custom_groups=False)


# ---- prior and prior predictive ---------------------------------------------------------


def prior_groups(spec: ModelSpec, table: RunTable, units: Units, *, draws: int,
                 seed: int = 0, backend: str = "numpyro") -> dict[str, xr.Dataset]:
    """``prior`` (every model site) and ``prior_predictive`` (``log_loss``) datasets.

    ``draws`` prior draws in one chain, at the fitted rows of ``table`` in ``units``;
    NumPyro's ``Predictive`` with ``observed=False``, or, for ``backend="pymc"``, PyMC's
    ``sample_prior_predictive`` on the same model written in PyMC.

    Example:
        >>> groups = prior_groups(spec, runs, units, draws=500)  # doctest: +SKIP
        >>> groups["prior_predictive"]["log_loss"].dims  # doctest: +SKIP
        ('chain', 'draw', 'row')
    """
    if isinstance(draws, bool) or not isinstance(draws, int | np.integer) or draws < 1:
        raise ValueError(f"prior draws must be a positive integer, not {draws!r}")
    if backend == "pymc":
        import pymc as pm

        from bayes_transfer.pymc_backend import pymc_model

        with warnings.catch_warnings():
            # PyMC notes which variables it samples; nothing for a user to act on.
            warnings.simplefilter("ignore")
            idata = pm.sample_prior_predictive(
                draws=int(draws), model=pymc_model(spec, table, units=units),
                random_seed=seed)
        return {"prior": _named(idata.prior, spec),
                "prior_predictive": idata.prior_predictive[[OBSERVED]]}
    import arviz as az
    import jax
    from numpyro.infer import Predictive

    from bayes_transfer.inference import coords_for
    from bayes_transfer.model import hierarchical_model, model_data, site_dims

    data = model_data(spec, table, units)
    out = Predictive(hierarchical_model, num_samples=int(draws))(
        jax.random.fold_in(jax.random.key(seed), 3), data, observed=False)
    values = {k: np.asarray(v)[None] for k, v in out.items()}  # one chain
    idata = az.from_dict(prior={k: v for k, v in values.items() if k != OBSERVED},
                         prior_predictive={OBSERVED: values[OBSERVED]},
                         coords=coords_for(table, spec), dims=site_dims(spec))
    return {"prior": _named(idata.prior, spec), "prior_predictive": idata.prior_predictive}


def _named(prior: xr.Dataset, spec: ModelSpec) -> xr.Dataset:
    # The law's parameters under their own names, as in the posterior, so that ArviZ's
    # prior-vs-posterior views (az.plot_dist_comparison, var_names=["G"]) line up.
    from bayes_transfer.named_params import add_natural_params

    prior = prior.copy()
    add_natural_params(prior, spec)
    return prior


def add_predictive(idata: az.InferenceData, spec: ModelSpec, table: RunTable, *,
                   prior_draws: int = 0, seed: int = 0, backend: str = "numpyro") -> None:
    """Add the predictive groups to a fit's annotated InferenceData (``fit`` calls this).

    ``posterior_predictive`` when it holds at most :data:`PPC_MAX_VALUES` numbers;
    ``prior`` and ``prior_predictive`` with ``prior_draws`` draws when it is positive.

    Example:
        >>> add_predictive(idata, spec, table, prior_draws=500)  # doctest: +SKIP
    """
    from bayes_transfer.inference import Posterior

    # The Posterior is not built yet (fit diagnoses it last): a view of the same objects.
    post = Posterior(idata=idata, spec=spec, runs=table, diagnostics=None)  # type: ignore[arg-type]
    groups: dict[str, Any] = {}
    if post.n_draws * len(table) <= PPC_MAX_VALUES:
        groups["posterior_predictive"] = posterior_predictive(post, seed=seed).to_dataset()
    if prior_draws:
        groups.update(prior_groups(spec, table, post.units, draws=prior_draws, seed=seed,
                                   backend=backend))
    set_groups(idata, groups)


# ---- predictions at new rows --------------------------------------------------------------


def prediction_groups(post: Posterior, rows: pd.DataFrame | RunTable, draws: np.ndarray, *,
                      kind: str, name: str = "prediction rows") -> dict[str, xr.Dataset]:
    """``predictions`` and ``predictions_constant_data`` from draws already made.

    ``draws`` is :meth:`~bayes_transfer.inference.Posterior.predict_draws`'s output at
    ``rows``, ``(chain * draw, rows)`` with the chains stacked chain-major; it becomes
    ``loss`` (``kind="response"``) or ``loss_mean`` (``"response_params"``) with dims
    ``(chain, draw, row)``. The rows' run-table columns go to
    ``predictions_constant_data`` as ``run_<column>`` (as ``constant_data`` holds the
    fitted table; ``run_loss`` only when the rows had a loss).
    """
    import xarray as xr

    from bayes_transfer.data import query_rows
    from bayes_transfer.inference import _table_dataset, coords_for

    kind = prediction_kind(kind)
    posterior = post.idata.posterior
    n_chain, n_draw = posterior.sizes["chain"], posterior.sizes["draw"]
    table = query_rows(rows, name)
    draws = np.asarray(draws, dtype=np.float64)
    if draws.shape != (n_chain * n_draw, len(table)):
        raise ValueError(f"draws of shape {draws.shape}; expected ({n_chain * n_draw}, "
                         f"{len(table)}): one per posterior draw and row")
    labels = np.asarray(coords_for(table)["row"], dtype=object)
    values = xr.DataArray(draws.reshape(n_chain, n_draw, len(table)),
                          dims=("chain", "draw", "row"),
                          coords={"chain": posterior["chain"].values,
                                  "draw": posterior["draw"].values, "row": labels})
    pred = xr.Dataset({_PREDICTION_VARS[kind]: values}, attrs={"kind": kind})
    constant = _table_dataset(table).assign_coords(row=labels)
    given = rows.df.columns if hasattr(rows, "df") else rows.columns
    if "loss" not in given:  # the placeholder query_rows put there
        constant = constant.drop_vars("run_loss")
    return {"predictions": pred, "predictions_constant_data": constant}


def predictions(post: Posterior, rows: pd.DataFrame | RunTable, *,
                kind: str = "response_params", seed: int = 0,
                name: str = "prediction rows") -> az.InferenceData:
    """Predictions at ``rows`` as InferenceData, keeping chain and draw (Bambi's kinds).

    ``kind="response_params"``: the law's mean loss (variable ``loss_mean``);
    ``"response"``: a measured loss, with the likelihood's noise (``loss``). Aliases
    ``"mean"`` and ``"observation"`` (:meth:`Posterior.predict_draws`'s names) are
    accepted. Returns groups ``posterior`` (the posterior's, so ``az.summary`` can find
    chains), ``predictions`` and ``predictions_constant_data``; ``post`` is unchanged
    (``post.predict(rows, kind=..., inplace=True)`` writes the groups into it instead).

    Example:
        >>> import arviz as az
        >>> pred = predictions(post, rows, kind="response")  # doctest: +SKIP
        >>> az.summary(pred.predictions)  # doctest: +SKIP
    """
    import arviz as az

    draws = post.predict_draws(rows, kind=draws_kind(kind), seed=seed, name=name)
    return az.InferenceData(posterior=post.idata.posterior,
                            **prediction_groups(post, rows, draws, kind=kind, name=name))


# ---- posterior predictive checks -----------------------------------------------------------


def ppc_idata(post: Posterior, *, seed: int = 0, log_likelihood: bool = True
              ) -> az.InferenceData:
    """What ``az.plot_ppc`` and ``az.plot_loo_pit`` read, from ``post``; ``post`` unchanged.

    Groups ``posterior``, ``observed_data``, ``posterior_predictive`` and (with
    ``log_likelihood``) ``log_likelihood``: the posterior's own where it has them,
    computed from its draws where it has not (a posterior fitted before these groups
    existed, or one too large for ``fit`` to add them).

    Example:
        >>> az.plot_loo_pit(ppc_idata(post), y="log_loss")  # doctest: +SKIP
    """
    import arviz as az

    from bayes_transfer.comparison import log_likelihood as compute_ll

    have = set(post.idata.groups())
    groups = {
        "posterior": post.idata.posterior,
        "observed_data": post.idata.observed_data if "observed_data" in have
        else _observed(post),
        "posterior_predictive": post.idata.posterior_predictive
        if "posterior_predictive" in have
        else posterior_predictive(post, seed=seed).to_dataset(),
    }
    if log_likelihood:
        groups["log_likelihood"] = (post.idata.log_likelihood if "log_likelihood" in have
                                    else compute_ll(post).to_dataset())
    return az.InferenceData(**groups)


def ppc_check(post: Posterior, *, ci: float = 0.9, seed: int = 0) -> dict[str, Any]:
    """Numbers of a posterior predictive check, for scripts (``ppc --format json``).

    Returns a dict with ``rows``, ``ci``, and:

    - ``coverage``: the fraction of fitted rows whose observed log loss lies inside the
      central ``ci`` interval of its posterior predictive (about ``ci`` when the noise
      model is right; well below it: overconfident; the row is in the fit, so a little
      above is usual);
    - ``loo_pit_coverage``: the same with leave-one-out predictives (LOO-PIT inside
      ``[(1 - ci) / 2, (1 + ci) / 2]``), which do not flatter the fit;
    - ``loo_pit_ks`` and ``loo_pit_ks_pvalue``: the Kolmogorov-Smirnov distance of the
      LOO-PIT values from uniform and its p-value (a small p-value: miscalibrated);
    - ``loo_pit_mean``: about 0.5; below, the model predicts losses too high;
    - ``pareto_k_max``: the largest PSIS Pareto k (above 0.7 the LOO-PIT of that row is
      unreliable).

    Example:
        >>> ppc_check(post, ci=0.9)["coverage"]  # doctest: +SKIP
        0.91
    """
    import arviz as az
    from scipy import stats

    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1 (e.g. 0.9), not {ci}")
    idata = ppc_idata(post, seed=seed)
    observed = idata.observed_data[OBSERVED].values
    pp = idata.posterior_predictive[OBSERVED].transpose("chain", "draw", "row").values
    pp = pp.reshape(-1, pp.shape[-1])
    lo, hi = np.quantile(pp, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
    with warnings.catch_warnings():
        # Pareto-k notes: reported as pareto_k_max instead.
        warnings.simplefilter("ignore", UserWarning)
        pit = np.asarray(az.loo_pit(idata, y=OBSERVED))
        k = np.asarray(az.loo(idata, pointwise=True, var_name=OBSERVED)["pareto_k"])
    ks = stats.kstest(pit, "uniform")
    return {
        "rows": int(observed.size),
        "ci": float(ci),
        "coverage": float(np.mean((observed >= lo) & (observed <= hi))),
        "loo_pit_coverage": float(np.mean((pit >= (1 - ci) / 2) & (pit <= (1 + ci) / 2))),
        "loo_pit_ks": float(ks.statistic),
        "loo_pit_ks_pvalue": float(ks.pvalue),
        "loo_pit_mean": float(np.mean(pit)),
        "pareto_k_max": float(np.max(k)),
    }
