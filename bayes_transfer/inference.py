"""Fitting: NUTS on the hierarchical model, with diagnostics, as ArviZ InferenceData.

:func:`fit` samples with NumPyro (default) or PyMC and returns a :class:`Posterior`:
the InferenceData (named dims ``source``, ``target``, ``pair``, ``row``), the spec and
the run table it was fit on, and its :class:`~bayes_transfer.diagnostics.Diagnostics`.
A Posterior predicts losses for new rows, reports credible intervals, and saves to and
loads from netCDF (no pickle: everything is arrays, strings and JSON).

Example:
    >>> from bayes_transfer import simulate
    >>> design = simulate.design_grid(["a", "b"], ["x", "y"], params=[1e6],
    ...     pretrain_tokens=[1e6, 1e7, 1e8], finetune_tokens=[1e4, 1e5, 1e6])
    >>> sim = simulate.simulate("transfer-gap", design, seed=0)
    >>> post = fit(sim.runs, "transfer-gap", chains=2, draws=200, warmup=200,
    ...            progress=False)  # doctest: +SKIP
    >>> post.gap_table(ci=0.9)[["source", "target", "median"]]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import arviz as az
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

from bayes_transfer._io import atomic_write_bytes
from bayes_transfer.backends import chain_method as _chain_method  # noqa: F401 (tests)
from bayes_transfer.backends import get_backend
from bayes_transfer.data import Problem, RunTable, RunTableError, load_runs, query_rows
from bayes_transfer.diagnostics import Diagnostics, diagnose
from bayes_transfer.discrepancy import part_shares, reducible_share
from bayes_transfer.evaluate import levels_of, log_loss_at_rows
from bayes_transfer.extrapolation import UninformedSizeWarning, uninformed_size_message
from bayes_transfer.laws import Units, features, get_law
from bayes_transfer.model import at_rows, select_rows
from bayes_transfer.runtime import release_compiled_if_crowded

# Re-exported here, where users found them; their home is bayes_transfer.sampling.
from bayes_transfer.sampling import (  # noqa: F401
    LAPLACE_FROM_ROWS,
    Centring,
    Init,
    SamplerSettings,
    coords_for,
    pick_device,
    resolve_target_accept,
    spec_settings,
)
from bayes_transfer.spec import ModelSpec, load_spec

__all__ = ["fit", "Posterior", "PosteriorFileError", "coords_for", "FORMAT_VERSION",
           "pick_device"]

# 2: law parameters by name, unconstrained_posterior and the predictive groups (a reader
# of format 1 refuses those groups; this one reads format 1 files and reorganises them).
FORMAT_VERSION = 2
# A registered back end's name (bayes_transfer.backends.BACKENDS): "numpyro" or "pymc".
BackendName = str


class PosteriorFileError(ValueError):
    """A posterior file that is missing, truncated, corrupted or not ours."""


def fit(
    runs: RunTable | pd.DataFrame | str | os.PathLike[str],
    spec: ModelSpec | str | os.PathLike[str] | dict[str, Any] = "transfer-gap",
    *,
    chains: int = 4,
    draws: int = 1000,
    warmup: int = 1000,
    seed: int = 0,
    target_accept: float | None = None,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    init: Init = "auto",
    mode_starts: int | None = None,
    backend: BackendName = "numpyro",
    device: str | None = None,
    progress: bool = True,
    centring: Centring = "spec",
    shear: bool = True,
    units: Units | None = None,
    warm_start: Posterior | None = None,
    prior_draws: int = 0,
) -> Posterior:
    """Sample the posterior of ``spec`` given ``runs`` with NUTS.

    The sampler keywords (``chains`` .. ``progress``) are the fields of a
    :class:`~bayes_transfer.sampling.SamplerSettings`, which checks them (a bad value
    is a ``ValueError`` naming it) and which the file records as ``sampler_settings``.

    Args:
        runs: a run table (path, DataFrame or loaded table).
        spec: a model spec, its TOML path, or a bundled spec name.
        chains, draws, warmup: NUTS chains, kept draws per chain, and warmup steps.
        seed: the random seed; the same seed, data and spec give the same draws.
        target_accept: NUTS target acceptance; raise it (0.95, 0.99) on divergences.
            Default: the spec's ``[sampler] target_accept``, else 0.9.
        max_tree_depth: NUTS trajectories stop at ``2**max_tree_depth - 1`` leapfrog steps.
        dense_mass: adapt a dense mass matrix (the posterior covariance) during warmup
            instead of a diagonal one. Worth it when the rows pin correlated parameters
            (many precise rows a pair) and there are at most a few hundred of them; it
            needs a warmup of several hundred steps to estimate the covariance. In PyMC
            this is ``init="jitter+adapt_full"``.
        init: how NumPyro's chains start. ``"laplace"``: each at its own draw from a
            Laplace approximation at the posterior mode, with the approximation's
            variances as the initial mass matrix (see :mod:`bayes_transfer.laplace`;
            it spares warmup the search for the typical set, which dominates fits of
            tables with thousands of rows a pair). ``"prior"``: NumPyro's default,
            uniform on [-2, 2] in the unconstrained space. ``"auto"`` (default):
            ``"laplace"`` from 2,000 fitted rows on, ``"prior"`` below (the Laplace
            start costs a few seconds of compilation that small tables do not repay),
            and at any size when ``mode_starts`` > 1. PyMC starts its own way.
        mode_starts: the Laplace start searches for the mode from this many starts and
            keeps the one of largest Laplace mass, so that a chain does not start in a
            minor local mode (see :class:`~bayes_transfer.sampling.SamplerSettings`).
            Default: the spec's ``[sampler] mode_starts``, else 1.
        backend: a registered back end (:mod:`bayes_transfer.backends`): ``"numpyro"``
            (JAX, GPU when present) or ``"pymc"`` (cross-check).
        device: ``"cpu"``, ``"gpu"`` or None (GPU when present); NumPyro only.
        progress: show a progress bar.
        centring: ``"spec"`` (default): sample as the spec states. ``"mode"``: sample
            each group of a non-centred pooled parameter that the rows pin (the
            posterior's curvature at its mode says so) centred and the others
            non-centred, and return the draws on the spec's own sites: the same
            posterior without the ridges that make NUTS run at its maximum tree depth
            (bundled table: ~150-190 leapfrog steps a draw instead of 1,020, the fit in
            31 s instead of 73 s). It can move a funnel one level up, between the
            crossed offsets and their sd (divergences on some tables and seeds: see the
            README), so it is opt-in: check the diagnostics. The file records the
            groups (``centred_groups``). A warm start chooses them from the previous
            posterior instead. Both back ends centre the same groups.
        shear: with a Laplace start (``init``), NumPyro samples each centred
            pair-level parameter sheared off the source and target parameters it trades
            with (:mod:`bayes_transfer.shear`): the same posterior in fewer leapfrog
            steps when many pairs share a target. The file records which
            (``sheared``). ``False``: the spec's own sites.
        units: reference scales of N and tokens (default: the spec's, ``auto`` from the
            table); pin them to compare posteriors fitted on different tables.
        warm_start: a posterior of the same spec on a table this one extends (the
            previous round of a loop). NumPyro's chains then start at its last draws,
            with its draws' variances as the mass matrix, and the warmup is a quarter of
            ``warmup`` (at least 50 steps) tuning only the step size; the groups it pins
            are sampled centred, the others non-centred (the draws come back on the
            spec's own sites); the table is padded to a bucketed size so the compiled
            sampler is reused from refit to refit (see :mod:`bayes_transfer.refit`).
            Units default to its units. Ignored (a cold fit) when its parameters do not
            match the new table's (a new source, target or observed pair), with
            ``backend="pymc"``, and for a spec sampled in anchored coordinates
            (``[sampler] coordinates = "anchored"``, as ``finetune-curves``): its warm
            refits, in the spec's own coordinates, did not converge where its cold fits
            did (:mod:`bayes_transfer.refit`); only the units are kept.
        prior_draws: with a positive number, also draw that many times from the prior
            into the groups ``prior`` and ``prior_predictive``. The ``posterior_predictive``
            group is added either way, unless it would be huge (see
            :mod:`bayes_transfer.predictive`).

    Returns:
        A :class:`Posterior`; its ``diagnostics`` are computed, and any failure is
        raised as a :class:`~bayes_transfer.diagnostics.SamplingWarning` with advice.
        When every fitted row has one model size and the law has a size term, an
        :class:`~bayes_transfer.extrapolation.UninformedSizeWarning` says so first: that
        term's parameters then rest on their priors, along a ridge NUTS mixes slowly.
    """
    # A process that fits many times keeps every fit's compiled programs (NumPyro):
    # drop them before they exhaust its memory mappings.
    release_compiled_if_crowded()
    spec = load_spec(spec)
    asked = SamplerSettings(chains=chains, draws=draws, warmup=warmup, seed=seed,
                            max_tree_depth=max_tree_depth, dense_mass=dense_mass, init=init,
                            device=device, progress=progress, centring=centring, shear=shear,
                            **spec_settings(spec, target_accept=target_accept,
                                            mode_starts=mode_starts))
    sampler = get_backend(backend)
    table = load_runs(runs)
    table, left_out = select_rows(spec, table)
    if len(table) == 0:
        raise RunTableError(table.name, [Problem(None, None, "the table has no rows to fit")])
    uninformed = uninformed_size_message(get_law(spec.law).size_term, table)
    if uninformed is not None:
        warnings.warn(uninformed, UninformedSizeWarning, stacklevel=2)
    # A back end that can start from a previous posterior offers sample_warm (NumPyro).
    warm = getattr(sampler, "sample_warm", None) if warm_start is not None else None
    if warm is not None:
        # The previous posterior's coefficients are in its units: keep them, so that its
        # draws are a start point of the same parameters.
        units = units or warm_start.units
    units = units or spec.resolve_units(table.df)
    settings = asked.for_rows(len(table))
    idata, started = None, settings.init if sampler.uses_init else sampler.name
    if warm is not None:
        from bayes_transfer.refit import warm_warmup

        short = settings.replace(warmup=warm_warmup(settings.warmup))
        idata = warm(spec, table, units, short, warm_start)
        if idata is not None:
            settings, started = short, "warm"
    if idata is None:
        idata = sampler.sample(spec, table, units, settings)
    # What the file records: how the chains started and how the groups were centred (a
    # warm start chooses them from the previous posterior; a back end that does not say
    # which it centred sampled as the spec states).
    settings = settings.to_dict() | {"init": started}
    if started == "warm":
        settings["centring"] = "warm"
    elif "centred_groups" not in idata.posterior.attrs:
        settings["centring"] = "spec"
    _annotate(idata, spec, table, backend=backend, left_out=left_out, units=units,
              settings=settings)
    from bayes_transfer.predictive import add_predictive

    add_predictive(idata, spec, table, prior_draws=prior_draws, seed=seed, backend=backend)
    if spec.discrepancy is not None:
        _learn_discrepancy(idata, spec, table, units, asked, backend=backend)
    return Posterior(idata=idata, spec=spec, runs=table,
                     diagnostics=diagnose(idata, var_names=_diagnosed_vars(spec, idata)))


def _learn_discrepancy(idata, spec: ModelSpec, table: RunTable, units: Units,
                       settings: SamplerSettings, *, backend: str) -> None:
    """Learn the discrepancy's tau per axis by an internal extrapolation (see
    :mod:`bayes_transfer.discrepancy`) and store its draws as ``disc_<key>_<axis>``
    (``key``: ``mean``, ``tau``, ``power``, ``walk``).

    The inner fits are short (at most 2 chains x 400 draws after 400 warmup) with the
    default NUTS options; ``settings`` (the fit's own) gives their seed, device, target
    acceptance, mode search and upper bounds (chains, draws, warmup, tree depth). Each is
    padded to the whole table's bucket, so they compile one Laplace start between them
    (with a mode search) and, where their chains share one program (one chain, or
    vectorised), one sampler (see :func:`bayes_transfer.refit.padded_model`); parallel
    CPU chains' samplers are not padded."""
    from bayes_transfer import discrepancy as dsc
    from bayes_transfer.diagnostics import SamplingWarning
    from bayes_transfer.refit import padded_to

    disc, bare = spec.discrepancy, replace(spec, discrepancy=None)
    n = dsc.n_groups(disc.level, len(table.sources), len(table.targets))
    group = dsc.group_index(disc.level, table.source_idx, table.target_idx,
                            len(table.targets))

    def predict_holdout(fit_mask: np.ndarray, test_mask: np.ndarray):
        inner = table.subset(fit_mask)
        with warnings.catch_warnings():
            # Said of the user's table, not of an internal fit's first rows (an inner fit
            # of llm-line's early checkpoints has one model size where the table has 22).
            warnings.simplefilter("ignore", SamplingWarning)
            warnings.simplefilter("ignore", UninformedSizeWarning)
            short = SamplerSettings(
                chains=min(settings.chains, 2), draws=min(settings.draws, 400),
                warmup=min(settings.warmup, 400), seed=settings.seed,
                target_accept=settings.target_accept, mode_starts=settings.mode_starts,
                max_tree_depth=settings.max_tree_depth, device=settings.device,
                centring=settings.centring, progress=False)
            with padded_to(len(table)):
                post = fit(inner, bare, backend=backend, units=units, **short.fit_kwargs())
        held = table.subset(test_mask)
        log_draws = np.log(post.predict_draws(held, kind="observation",
                                              seed=settings.seed))
        fit_resid = log_residuals(post, inner) if disc.late_trend else None
        return (np.median(log_draws, axis=0), log_draws.std(axis=0),
                np.log(held.df["loss"].to_numpy(np.float64)), drift_shares(post, disc, held),
                fit_resid)

    n_chain, n_draw = idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]
    feats = features(table.df, units)
    learned = dsc.calibrate(disc, feats, group, n, predict_holdout,
                            draws=n_chain * n_draw, seed=settings.seed)
    resid = None
    if disc.late_trend:     # the whole fit's residuals, whose late trend it continues
        resid = log_residuals(Posterior(idata=idata, spec=bare, runs=table,
                                        diagnostics=None), table)  # type: ignore[arg-type]
    stored = {}
    for axis, result in learned.items():
        for key in ("mean", "tau", "power", "walk", "gain"):
            if key in result:
                idata.posterior[f"disc_{key}_{axis}"] = (("chain", "draw"),
                                                         result[key].reshape(n_chain, n_draw))
        x = np.asarray(feats[dsc.AXES[axis]], dtype=np.float64)
        lo, hi = dsc.ranges(x, group, n)
        stored[axis] = {"lo": [None if np.isnan(v) else float(v) for v in lo],
                        "hi": [None if np.isnan(v) else float(v) for v in hi],
                        **result["info"]}
        if resid is not None:
            last, slope = dsc.late_trend(x, resid, group, n)
            stored[axis].update(late_last=last.tolist(), late_slope=slope.tolist())
    idata.posterior.attrs["discrepancy"] = json.dumps(stored)


def log_residuals(post: Posterior, rows: RunTable) -> np.ndarray:
    """Each row's observed log loss less the posterior median of the law's there."""
    return np.log(rows.df["loss"].to_numpy(np.float64)) - \
        np.median(post.law_log_loss(rows), axis=0)


def drift_shares(post: Posterior, disc: Any, rows: RunTable,
                 log_loss: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row's share of the discrepancy drift's spread and of its mean (see
    :func:`bayes_transfer.discrepancy.drift_draws`): 1 where it acts on the log loss
    (``on``, ``mean_on``), and on the reducible loss the posterior median of
    ``(L - E) / L``, the share of the law's loss above its floor. The median, not each
    draw's share: a floor the rows leave loosely identified (its chains apart) would
    otherwise carry its R-hat into every prediction beyond the range. ``log_loss``: the
    law's log loss at the rows, where the caller has it already
    (:meth:`Posterior.law_log_loss`)."""
    ones = np.ones(len(rows))
    if "reducible" not in (disc.on, disc.trend_on):
        return ones, ones
    table = rows.with_levels(post.runs.sources, post.runs.targets)
    if log_loss is None:
        log_loss = post.law_log_loss(table)
    log_floor = at_rows(post.spec.params["E"].level, post.flat_log_params()["E"],
                        table.source_idx, table.target_idx, len(post.runs.targets))
    return part_shares(disc.on, disc.trend_on, reducible_share(log_floor, log_loss))


def _diagnosed_vars(spec: ModelSpec, idata: az.InferenceData) -> list[str]:
    names = ["sigma"]
    for p in spec.params.values():
        names += [s for s in p.site_names if s not in p.factor_sites or "_sd_" in s]
        names.append(f"log_{p.name}")
    # A centred parameter has a partially centred site only when some group has no rows.
    # Offsets and loadings live in unconstrained_posterior (named_params.organise).
    from bayes_transfer.named_params import draw_names

    return sorted(set(names) & draw_names(idata))


def _annotate(idata, spec: ModelSpec, table: RunTable, *, backend: str, left_out: int,
              units: Units | None = None, settings: dict[str, Any] | None = None) -> None:
    for ds in (idata.posterior,):
        # Every posterior carries the source, target and pair coordinates, even when no
        # parameter varies by them (xarray drops a coordinate no variable uses, and then
        # a global-only spec such as chinchilla.toml could not be reloaded).
        coords = coords_for(table)
        for dim in ("source", "target", "pair"):
            if dim not in ds.coords:
                ds.coords[dim] = (dim, coords[dim])
        ds.coords["pair_source"] = ("pair", [s for s, _ in table.pairs])
        ds.coords["pair_target"] = ("pair", [t for _, t in table.pairs])
        ds.coords["pair_observed"] = ("pair", table.observed_pairs)
    # The law's parameters under their own names (G over source x target), and the
    # sampler's offsets out of the default views (see bayes_transfer.named_params).
    from bayes_transfer.named_params import organise

    # What the back end says of how it sampled (centred groups, sheared parameters).
    said = {k: idata.posterior.attrs[k] for k in ("centred_groups", "sheared", "sheared_means")
            if k in idata.posterior.attrs}
    organise(idata, spec)
    idata.posterior.attrs.update(said)
    idata.posterior.attrs.update({
        "bayes_transfer_format": FORMAT_VERSION,
        "spec": spec.to_json(),
        "law": spec.law,
        "backend": backend,
        "rows_left_out": int(left_out),
        "table_name": table.name,
        "units": json.dumps((units or Units()).to_dict()),
        # How it was sampled, so that a saved posterior says how to reproduce it.
        "sampler_settings": json.dumps(settings or {}),
    })

    idata.add_groups({"constant_data": _table_dataset(table)}, warn_on_custom_groups=False) \
        if "constant_data" not in idata.groups() else None


def _table_dataset(table: RunTable) -> xr.Dataset:
    df = table.df.copy()
    out = {}
    for col in df.columns:
        s = df[col]
        if col == "seed":
            values = s.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        elif pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            values = s.to_numpy(dtype=np.float64 if s.dtype.kind == "f" else np.int64)
        else:
            values = s.astype(str).to_numpy(dtype=object)
        out[f"run_{col}"] = ("row", values)
    return xr.Dataset(out)


def _table_from_dataset(ds: xr.Dataset, name: str) -> RunTable:
    cols = {k[len("run_"):]: ds[k].values for k in ds.data_vars if k.startswith("run_")}
    df = pd.DataFrame(cols)
    return load_runs(df, name=name)


@dataclass(eq=False)
class Posterior:
    """A fitted posterior: InferenceData, the spec, the run table and the diagnostics."""

    idata: az.InferenceData
    spec: ModelSpec
    runs: RunTable
    diagnostics: Diagnostics

    # ---- draws ---------------------------------------------------------------------
    @property
    def units(self) -> Units:
        """The reference scales the coefficients were fitted in (see ``laws.Units``)."""
        stored = self.idata.posterior.attrs.get("units")
        return Units(**json.loads(stored)) if stored else Units()

    def features(self, df: pd.DataFrame) -> dict[str, np.ndarray]:
        """Row features of ``df`` in this posterior's units: what its laws take."""
        return features(df, self.units)

    def log_param(self, name: str, units: str = "reference") -> xr.DataArray:
        """Posterior draws of ``log(name)`` with dims ``(chain, draw[, level])``.

        ``units="reference"`` (default): as fitted, with N and tokens measured in
        :attr:`units`; ``"raw"``: converted to parameters and tokens of 1, the units of
        the papers (needs every parameter global, e.g. the chinchilla law on one
        distribution).
        """
        key = f"log_{name}"
        if key not in self.idata.posterior:
            raise KeyError(f"no parameter {name!r}; the law {self.spec.law} has "
                           f"{list(self.spec.params)}")
        if units == "reference":
            return self.idata.posterior[key]
        if units != "raw":
            raise ValueError(f"units must be 'reference' or 'raw', not {units!r}")
        law = get_law(self.spec.law)
        if law.to_raw is None or any(p.level != "global" for p in self.spec.params.values()):
            raise ValueError(f"raw units need a law with to_raw and global parameters; "
                             f"report {name} in reference units {self.units}")
        lp = {n: self.idata.posterior[f"log_{n}"] for n in self.spec.params}
        return law.to_raw(lp, self.units, np)[name]

    def flat_log_params(self) -> dict[str, np.ndarray]:
        """Every ``log(param)`` as ``(draws, groups...)`` arrays, chains stacked."""
        out = {}
        for name in self.spec.params:
            da = self.log_param(name)
            out[name] = da.values.reshape((-1,) + da.shape[2:])
        return out

    @property
    def n_draws(self) -> int:
        return int(self.idata.posterior.sizes["chain"] * self.idata.posterior.sizes["draw"])

    # ---- prediction ----------------------------------------------------------------
    def predict_draws(self, rows: pd.DataFrame | RunTable, *, kind: str = "mean",
                      seed: int = 0, name: str = "prediction rows") -> np.ndarray:
        """Draws of the loss at each row, shape ``(draws, rows)``.

        ``kind="mean"``: the law's loss (uncertainty of the curve); ``"observation"``:
        plus the likelihood's noise, i.e. the posterior predictive of a measured loss.
        Rows may be of pairs never observed, as long as their source and target were in
        the fitted table (their gap comes from the crossed effects).
        """
        table = query_rows(rows, name).with_levels(self.runs.sources,
                                                          self.runs.targets)
        # Every row must be one the law explains (a zero-shot row has log f = -inf).
        select_rows(replace(self.spec, rows="all"), table)
        if kind not in ("mean", "observation"):
            raise ValueError(f"kind must be 'mean' or 'observation', not {kind!r}")
        log_mean = self.law_log_loss(table)
        rng = np.random.default_rng(seed)
        if self.spec.discrepancy is not None:
            log_mean = log_mean + self._drift_given_law(table, log_mean, rng)
        if kind == "mean":
            return np.exp(log_mean)
        sigma = self.idata.posterior["sigma"].values.reshape(-1, 1)
        noise = rng.standard_normal(log_mean.shape) if self.spec.likelihood.family == \
            "normal" else rng.standard_t(self.spec.likelihood.nu, size=log_mean.shape)
        return np.exp(log_mean + sigma * noise)

    def law_log_loss(self, rows: pd.DataFrame | RunTable) -> np.ndarray:
        """The law's log loss at ``rows``, ``(draws, rows)``: the curve alone, without
        the discrepancy's drift or the noise (:meth:`predict_draws` adds those)."""
        table = query_rows(rows).with_levels(self.runs.sources, self.runs.targets)
        feats = {k: jnp.asarray(v) for k, v in self.features(table.df).items()}
        log_loss = np.asarray(log_loss_at_rows(
            self.spec.law, feats, {k: jnp.asarray(v) for k, v in self.flat_log_params().items()},
            levels=levels_of(self.spec), source_idx=table.source_idx,
            target_idx=table.target_idx, n_targets=len(self.runs.targets)))
        return np.broadcast_to(log_loss, (self.n_draws, len(table)))

    def drift_draws(self, rows: pd.DataFrame | RunTable, *, seed: int = 0) -> np.ndarray:
        """Draws ``(draws, rows)`` of the discrepancy's log drift at ``rows``: what
        :meth:`predict_draws` adds to :meth:`law_log_loss` (the same draws for the same
        seed); zeros for a spec without a ``[discrepancy]`` or inside the fitted range."""
        table = query_rows(rows).with_levels(self.runs.sources, self.runs.targets)
        if self.spec.discrepancy is None:
            return np.zeros((self.n_draws, len(table)))
        return self._drift_given_law(table, self.law_log_loss(table),
                                     np.random.default_rng(seed))

    def _drift_given_law(self, table: RunTable, log_mean: np.ndarray,
                         rng: np.random.Generator) -> np.ndarray:
        shares = drift_shares(self, self.spec.discrepancy, table, log_mean)
        return self._discrepancy_draws(table, rng, shares)

    def _discrepancy_draws(self, table: RunTable, rng: np.random.Generator,
                           shares: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Draws ``(draws, rows)`` of the discrepancy at ``table``'s rows: one drift slope
        per draw and group, times the row's shares (:func:`drift_shares`) and its log
        distance outside its group's range."""
        from bayes_transfer import discrepancy as dsc

        disc = self.spec.discrepancy
        stored = json.loads(self.idata.posterior.attrs["discrepancy"])
        n = dsc.n_groups(disc.level, len(self.runs.sources), len(self.runs.targets))
        total = np.zeros((self.n_draws, len(table)))
        for axis, (x, d, hi, group) in self._drift_distances(table, stored).items():
            draws = dsc.stored_drift(self.idata.posterior, axis)
            late = None
            if draws["gain"] is not None:
                late = dsc.late_covariate(np.asarray(stored[axis]["late_last"]),
                                          np.asarray(stored[axis]["late_slope"]), x, hi, group)
            total += dsc.drift_draws(draws["mean"], draws["tau"], draws["power"], d, group,
                                     n, rng, share=shares[0], walk=draws["walk"],
                                     gain=draws["gain"], late=late, mean_share=shares[1])
        return total

    def _drift_distances(self, table: RunTable, stored: dict[str, Any]
                         ) -> dict[str, tuple[np.ndarray, ...]]:
        """Per discrepancy axis: the rows' coordinate ``x``, their log distance ``d``
        beyond their group's fitted range, the groups' upper ends and the rows' groups."""
        from bayes_transfer import discrepancy as dsc

        disc = self.spec.discrepancy
        group = dsc.group_index(disc.level, table.source_idx, table.target_idx,
                                len(self.runs.targets))
        feats = self.features(table.df)
        out = {}
        for axis in disc.axes:
            lo, hi = dsc.fill_ranges(
                np.array([np.nan if v is None else v for v in stored[axis]["lo"]]),
                np.array([np.nan if v is None else v for v in stored[axis]["hi"]]))
            x = np.asarray(feats[dsc.AXES[axis]], dtype=np.float64)
            out[axis] = (x, dsc.distances(x, lo[group], hi[group]), hi, group)
        return out

    def beyond_calibration(self, rows: pd.DataFrame | RunTable,
                           what: str = "rows") -> tuple[np.ndarray, str | None]:
        """Which ``rows`` lie farther outside their group's fitted range than the
        discrepancy's internal extrapolations reached, or below it at all (they hold out
        the top of each range, never the bottom): a bool per row, and a sentence saying
        so (None if none does, the spec has no ``[discrepancy]``, or the file predates
        the stored reach).

        There the intervals widen by the drift's learned growth carried past the distances
        it was learned at: nothing in the table checked them
        (:func:`bayes_transfer.discrepancy.beyond_calibration`). :meth:`predict` warns
        with it; ``select_model`` reports it.

        Example:
            >>> flagged, why = post.beyond_calibration(rows)  # doctest: +SKIP
        """
        from bayes_transfer import discrepancy as dsc

        table = query_rows(rows).with_levels(self.runs.sources, self.runs.targets)
        flagged = np.zeros(len(table), dtype=bool)
        if self.spec.discrepancy is None:
            return flagged, None
        stored = json.loads(self.idata.posterior.attrs["discrepancy"])
        parts = []
        for axis, (x, d, hi, group) in self._drift_distances(table, stored).items():
            reach = stored[axis].get("max_distance")
            # The internal extrapolations hold out the top of each range, never the
            # bottom: below it no distance was checked (d > 0 only for a finite x). A
            # file without the reach (saved before it) flags nothing.
            below = (d > 0) & (x < hi[group]) & (reach is not None)
            above = dsc.beyond_calibration(np.where(below, 0.0, d), reach)
            if above.any():
                parts.append(f"{axis} up to {np.exp(d[above].max()):.3g}x beyond their "
                             f"group's fitted range, the internal extrapolations up to "
                             f"{np.exp(reach):.3g}x")
            if below.any():
                parts.append(f"{axis} up to {np.exp(d[below].max()):.3g}x below their "
                             "group's fitted range, where no internal extrapolation looked")
            flagged |= above | below
        if not parts:
            return flagged, None
        return flagged, (f"{int(flagged.sum())} of {len(table)} {what} lie beyond the "
                         f"distances the discrepancy was calibrated on: {'; '.join(parts)}. "
                         "Their intervals widen by the drift's growth carried past those "
                         "distances, which this table did not check")

    def discrepancy_table(self) -> pd.DataFrame:
        """What the model discrepancy learned, one row per axis (empty without one).

        Columns: ``axis``, ``on`` (what drifts: the log ``loss`` or its ``reducible``
        part), ``mean_on`` (what the drift's mean moves: ``on`` unless the spec splits
        them), ``level`` (one drift slope per pair, target, source or one global),
        ``cuts`` and ``rows_held_out`` (the internal extrapolations that calibrated it),
        ``median_abs_log_error`` (of the law's predictions there), ``reach`` (how many
        times beyond a group's fitted range the farthest held-out row lay: beyond it
        intervals are carried out, not checked; NaN in a file saved before it was
        recorded), then the drift's learned parameters over its draws: ``drift_mean``
        (median of ``m``, log loss per unit of log distance to the power), ``drift_tau``
        (median of the groups' sd around it), ``power`` (mean growth power), ``walk``
        (median of the near part's scale; NaN in a file saved before it existed) and
        ``late_gain`` (mean gain of the late residual trend; NaN without
        ``late_trend``).

        Example:
            >>> post.discrepancy_table()[["axis", "reach", "drift_mean"]]  # doctest: +SKIP
        """
        from bayes_transfer import discrepancy as dsc

        disc = self.spec.discrepancy
        columns = ["axis", "on", "mean_on", "level", "cuts", "rows_held_out", "median_abs_log_error",
                   "reach", "drift_mean", "drift_tau", "power", "walk", "late_gain"]
        if disc is None:
            return pd.DataFrame(columns=columns)
        stored = json.loads(self.idata.posterior.attrs["discrepancy"])
        rows = []
        for axis in disc.axes:
            info, draws = stored[axis], dsc.stored_drift(self.idata.posterior, axis)
            cut = info.get("cut")
            reach, error = info.get("max_distance"), info.get("median_abs_log_error")
            rows.append({
                "axis": axis, "on": disc.on, "mean_on": disc.trend_on, "level": disc.level,
                "cuts": 0 if cut is None else len(cut) if isinstance(cut, list) else 1,
                "rows_held_out": int(info.get("rows", 0)),
                "median_abs_log_error": np.nan if error is None else float(error),
                "reach": np.nan if reach is None else float(np.exp(reach)),
                "drift_mean": float(np.median(draws["mean"])),
                "drift_tau": float(np.median(draws["tau"])),
                "power": float(np.mean(draws["power"])),
                "walk": np.nan if draws["walk"] is None else float(np.median(draws["walk"])),
                "late_gain": np.nan if draws["gain"] is None else float(np.mean(draws["gain"])),
            })
        return pd.DataFrame(rows, columns=columns)

    def predict(self, rows: pd.DataFrame | RunTable, *, ci: float = 0.9, kind: str = "mean",
                seed: int = 0, name: str = "prediction rows",
                inplace: bool = False) -> pd.DataFrame:
        """``rows`` with ``loss_median``, ``loss_lower`` and ``loss_upper`` added.

        The interval is the central ``ci`` credible interval of the loss. ``kind``, with
        Bambi's names: ``"response_params"`` (alias ``"mean"``, the default) the law's
        mean loss, the uncertainty of the curve; ``"response"`` (alias
        ``"observation"``) a measured loss, with the likelihood's noise. Rows outside the
        fitted range of N, p or f raise one
        :class:`~bayes_transfer.extrapolation.ExtrapolationWarning` saying how many and
        how far (:meth:`predict_draws`, the internal workhorse, stays silent).

        With ``inplace=True`` the draws are also written into :attr:`idata` as the groups
        ``predictions`` (``loss`` or ``loss_mean``, dims ``chain, draw, row``: MCSE and
        R-hat of predictions work) and ``predictions_constant_data`` (the rows), replacing
        earlier ones, as Bambi's ``predict(..., inplace=True)`` does; see
        :func:`bayes_transfer.predictive.predictions` for a copy instead.

        Example:
            >>> post.predict(rows, kind="response", inplace=True)  # doctest: +SKIP
            >>> az.summary(post.idata.predictions)  # doctest: +SKIP
        """
        from bayes_transfer.extrapolation import ExtrapolationWarning, warn_extrapolation
        from bayes_transfer.predictive import draws_kind

        _check_ci(ci)
        draws = self.predict_draws(rows, kind=draws_kind(kind), seed=seed, name=name)
        if inplace:
            from bayes_transfer.predictive import prediction_groups, set_groups

            set_groups(self.idata, prediction_groups(self, rows, draws, kind=kind, name=name))
        # After the draws: a row the law cannot explain is an error, not a warning.
        warn_extrapolation(rows, self.runs, "prediction rows")
        _, beyond = self.beyond_calibration(rows, "prediction rows")
        if beyond is not None:
            warnings.warn(beyond, ExtrapolationWarning, stacklevel=2)
        lo, med, hi = np.quantile(draws, [(1 - ci) / 2, 0.5, (1 + ci) / 2], axis=0)
        out = (rows.df if isinstance(rows, RunTable) else rows).copy().reset_index(drop=True)
        out["loss_median"], out["loss_lower"], out["loss_upper"] = med, lo, hi
        return out

    # ---- reports -------------------------------------------------------------------
    def gap_table(self, ci: float = 0.9) -> pd.DataFrame:
        """One row per pair: the law's gap parameter with its credible interval."""
        from bayes_transfer.report import gap_table

        return gap_table(self, ci=ci)

    def param_table(self, ci: float = 0.9, units: str = "reference") -> pd.DataFrame:
        """Every parameter at every group, with credible intervals and diagnostics
        (``units="raw"``: in the papers' units, for laws whose parameters are global)."""
        from bayes_transfer.report import param_table

        return param_table(self, ci=ci, units=units)

    # ---- persistence ---------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to netCDF atomically (a reader never sees a partial file).

        A failed write (a full disk, no permission) raises one ``OSError`` naming
        ``path``; the file that was there before is left as it was.
        """
        path = Path(path)
        data = netcdf_bytes(self.idata)
        try:
            atomic_write_bytes(path, data)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write the posterior: {exc.strerror or exc}",
                          str(path)) from exc
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Posterior:
        """Read a posterior written by :meth:`save`; a bad file gives PosteriorFileError.

        The file is read by :func:`bayes_transfer.posterior_file.read_posterior`, which
        checks its HDF5 layout before reading any data (no external storage, links or
        virtual datasets; no dataset larger than the file can hold) and then its whole
        structure (groups, variables, dtypes, dims, the stored spec, units and run table).
        """
        from bayes_transfer.posterior_file import read_posterior

        idata, spec, table = read_posterior(path)
        return cls(idata=idata, spec=spec, runs=table,
                   diagnostics=diagnose(idata, var_names=_diagnosed_vars(spec, idata), warn=False))


def netcdf_bytes(idata: az.InferenceData) -> bytes:
    """The netCDF file ``idata.to_netcdf(path, engine="h5netcdf")`` writes (every group,
    numbers compressed), built in memory.

    The disk then sees one plain write: a full disk or a file-size limit fails it with
    one ``OSError``. Written by HDF5 straight to a file, the same failure printed HDF5
    errors from deallocated objects and then crashed the process (a segfault) as the
    half-written file was closed.
    """
    import io

    def compressible(dtype: np.dtype) -> bool:
        return dtype.kind in "biufcS"

    buf = io.BytesIO()
    mode = "w"
    if idata.attrs:
        xr.Dataset(attrs=idata.attrs).to_netcdf(buf, mode=mode, engine="h5netcdf", group="/")
        mode = "a"
    for group in idata.groups():
        data = getattr(idata, group)
        encoding = {name: {"zlib": True} for name, var in data.variables.items()
                    if compressible(var.dtype)}
        data.to_netcdf(buf, mode=mode, group=group, engine="h5netcdf", encoding=encoding)
        mode = "a"
    return buf.getvalue()


def _check_ci(ci: float) -> None:
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1 (e.g. 0.9), not {ci}")
