"""The sampler back ends behind one protocol, chosen from a registry like the laws.

:func:`bayes_transfer.inference.fit` asks :func:`get_backend` for the back end named by
its ``backend`` argument and calls its ``sample(spec, table, units, settings)`` (see
:class:`~bayes_transfer.sampling.Backend`). Two are registered: ``"numpyro"``
(:class:`NumPyroBackend`, JAX, GPU when present, warm-started refits) and ``"pymc"``
(:class:`PyMCBackend`, the cross-check; PyMC is imported only when it samples). A user
adds one with :func:`register_backend`::

    >>> class Echo:
    ...     '''A back end that only says what it would sample.'''
    ...     name, uses_init = "echo", False
    ...     def sample(self, spec, table, units, settings):
    ...         raise NotImplementedError(f"{settings.chains} chains of {spec.law}")
    >>> _ = register_backend(Echo(), overwrite=True)
    >>> get_backend("echo").name
    'echo'
    >>> del BACKENDS["echo"]

Import graph: this module imports :mod:`bayes_transfer.sampling` and the model; the
PyMC back end (:mod:`bayes_transfer.pymc_backend`) imports only
:mod:`~bayes_transfer.sampling` and the model, never this module nor the orchestrator
:mod:`bayes_transfer.inference`, so there is no import cycle among them.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import warnings
from typing import TYPE_CHECKING

from bayes_transfer.sampling import (
    Backend,
    SamplerSettings,
    coords_for,
    pick_device,
    reached_max_treedepth,
    stamp_library,
)

if TYPE_CHECKING:
    import arviz as az
    import jax

    from bayes_transfer.data import RunTable
    from bayes_transfer.inference import Posterior
    from bayes_transfer.laws import Units
    from bayes_transfer.spec import ModelSpec

__all__ = ["BACKENDS", "register_backend", "get_backend", "NumPyroBackend", "PyMCBackend",
           "chain_method"]

BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend, *, overwrite: bool = False) -> Backend:
    """Add ``backend`` to the registry under ``backend.name`` (``fit(backend=name)``)."""
    if not isinstance(backend, Backend):
        raise TypeError(f"a back end needs a name, uses_init and sample(spec, table, units, "
                        f"settings); {backend!r} lacks some")
    if backend.name in BACKENDS and not overwrite:
        raise ValueError(f"a back end named {backend.name!r} is already registered; "
                         "pass overwrite=True to replace it")
    BACKENDS[backend.name] = backend
    return backend


def get_backend(name: str) -> Backend:
    """The registered back end called ``name``; the error lists the known names.

    Example:
        >>> get_backend("numpyro").uses_init
        True
    """
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        known = " or ".join(repr(n) for n in BACKENDS)
        raise ValueError(f"unknown backend {name!r}; use {known}") from None


def chain_method(device: jax.Device, chains: int) -> str:
    """How NumPyro runs ``chains`` chains on ``device``."""
    import jax

    # One accelerator: vectorise the chains in one program. On the CPU, one XLA host
    # device per chain runs them in parallel (the CLI asks JAX for one per core at its
    # entry point; a Python user calls bt.use_host_devices()); with too few, vectorise.
    if device.platform != "cpu":
        return "vectorized"
    return "parallel" if len(jax.devices("cpu")) >= chains > 1 else "vectorized"


class NumPyroBackend:
    """NUTS in NumPyro (JAX): the default back end; GPU when present."""

    name = "numpyro"
    uses_init = True

    def sample(self, spec: ModelSpec, table: RunTable, units: Units,
               settings: SamplerSettings) -> az.InferenceData:
        """Sample ``spec`` on ``table``; ``settings.init`` must be concrete (not
        ``"auto"``: see :meth:`SamplerSettings.for_rows`)."""
        import arviz as az
        import jax
        import jax.numpy as jnp
        import numpy as np
        from jax.flatten_util import ravel_pytree
        from numpyro import __version__ as numpyro_version
        from numpyro.infer import MCMC, NUTS

        from bayes_transfer import anchor
        from bayes_transfer.model import hierarchical_model, model_data, site_dims

        s = settings.for_rows(len(table))
        dev = pick_device(s.device)
        with jax.default_device(dev):
            data = anchor.prepare(model_data(spec, table, units))
            # The chains' key is the seed's own (a "prior" start draws as it always did);
            # the Laplace start and the centring take keys folded from it.
            key = jax.random.key(s.seed)
            init_key = jax.random.fold_in(key, 1)
            from bayes_transfer.refit import (
                centred_start,
                cold_centring,
                cold_rows,
                padded_model,
                record_centring,
                to_spec_sites,
            )

            centre = cold_centring(data, s)
            rows = cold_rows(data.n_rows)
            init_params, inverse_mass, sheared = None, None, {}
            if s.init == "laplace":
                from bayes_transfer import shear
                from bayes_transfer.laplace import laplace_fit

                # In the spec's own coordinates, then moved to the centred groups' (see
                # refit.centred_start) or to the sheared ones (bayes_transfer.shear).
                sheared = shear.plan(data) if s.shear and not centre else {}
                # The rows as arguments, padded as a one-program sampler's are (below),
                # whatever the chains: the start's program is shared across tables of
                # one structure.
                start_model, start_rows = padded_model(data, rows)
                start = laplace_fit(start_model, (start_rows,), init_key, s.chains,
                                    shear.probes(sheared) if sheared else (),
                                    mode_starts=s.mode_starts)
                init_params, inverse_mass = start.init, start.inverse_mass
                if centre:
                    init_params, inverse_mass = centred_start(init_params, inverse_mass,
                                                              data, centre)
                elif sheared:
                    moved = shear.from_laplace(data, sheared, start.mode, start.curvature,
                                               start.probes)
                    first = {k: v[0] for k, v in init_params.items()}
                    variances = ravel_pytree(first)[1](inverse_mass)
                    data = dataclasses.replace(
                        data, shear=moved.slopes,
                        mean_shift=shear.mean_shifted(data, sheared, variances))
                    init_params, variances = shear.sheared_start(
                        init_params, variances, data, moved)
                    inverse_mass = ravel_pytree(variances)[0]
                gc.collect()  # its compiled program, lest it slow the sampler (see below)
                if s.chains == 1:
                    init_params = jax.tree.map(lambda v: v[0], init_params)
                if s.dense_mass:
                    inverse_mass = jnp.diag(inverse_mass)
            if centre:
                data = dataclasses.replace(data, centre=centre)
            method = chain_method(dev, s.chains)
            model, model_args = hierarchical_model, data
            if method != "parallel":
                # One chain, or chains vectorised in one program: the table becomes the
                # compiled sampler's argument, padded to a bucketed size below
                # LAPLACE_FROM_ROWS rows (refit.cold_rows), so fits of tables of one
                # structure (the discrepancy's internal fits; a repeated CLI fit) build
                # one XLA program, which JAX's persistent cache then hands out. NumPyro's
                # parallel chains close over the arguments whatever jit_model_args says,
                # so there padding would only cost.
                model, model_args = padded_model(data, rows)
            kernel = NUTS(model, target_accept_prob=s.target_accept,
                          max_tree_depth=s.max_tree_depth, dense_mass=s.dense_mass,
                          inverse_mass_matrix=inverse_mass)
            mcmc = MCMC(kernel, num_warmup=s.warmup, num_samples=s.draws,
                        num_chains=s.chains, chain_method=method, progress_bar=s.progress,
                        jit_model_args=method != "parallel")
            with warnings.catch_warnings():
                # NumPyro warns when there are fewer devices than chains; we chose for that.
                warnings.filterwarnings("ignore", message=".*There are not enough devices.*")
                mcmc.run(key, model_args, init_params=init_params, extra_fields=(
                    "diverging", "energy", "potential_energy", "num_steps"))
            extra = mcmc.get_extra_fields(group_by_chain=True)
            samples = {k: np.asarray(v) for k, v in
                       mcmc.get_samples(group_by_chain=True).items()}
            if centre:
                samples = to_spec_sites(samples, spec, centre)
            if sheared:
                samples = shear.spec_sites(samples, data)
            if data.anchor is not None:
                samples = anchor.spec_sites(samples, data)
        # The sampler's compiled program sits in reference cycles that outlive this call,
        # and while it lives the next fit in this process runs ~1.7x slower per leapfrog
        # step (bundled table, same seed, same trajectories: 70 s of CPU instead of 41).
        # Collect it now: every refit of the loop, the notebook and the benchmarks gain.
        del mcmc, kernel
        gc.collect()
        # Built directly rather than by az.from_numpyro, which traces the model again op
        # by op to find the observed sites (3 s of JAX dispatch per fit on the bundled
        # table).
        idata = az.from_dict(
            posterior={k: np.asarray(v) for k, v in samples.items()},
            sample_stats={
                "diverging": np.asarray(extra["diverging"]),
                "energy": np.asarray(extra["energy"]),
                # Log density of each draw (for the non-finite check), as PyMC's lp.
                "lp": -np.asarray(extra["potential_energy"]),
                # Leapfrog steps per draw, and whether the trajectory was cut at the
                # maximum tree depth, as PyMC calls them.
                "n_steps": np.asarray(extra["num_steps"]),
                "reached_max_treedepth": reached_max_treedepth(
                    np.asarray(extra["num_steps"]), s.max_tree_depth),
            },
            observed_data={"log_loss": np.asarray(data.log_loss)},
            coords=coords_for(table, spec), dims=site_dims(spec),
        )
        stamp_library(idata, "numpyro", numpyro_version)
        record_centring(idata, centre)
        idata.posterior.attrs["sheared"] = json.dumps({k: list(v) for k, v in sheared.items()})
        # The crossed means sampled shifted, each with its levels of centred deviations.
        idata.posterior.attrs["sheared_means"] = json.dumps(
            {k: list(v) for k, v in data.mean_shift.items()})
        return idata

    def sample_warm(self, spec: ModelSpec, table: RunTable, units: Units,
                    settings: SamplerSettings, previous: Posterior
                    ) -> az.InferenceData | None:
        """A refit started from ``previous`` (see :mod:`bayes_transfer.refit`);
        ``settings.warmup`` is the number of (step-size only) warmup steps to run."""
        from bayes_transfer.refit import sample_warm

        return sample_warm(spec, table, units, previous, settings)


class PyMCBackend:
    """NUTS in PyMC (or nutpie), the cross-check; PyMC is imported when it samples."""

    name = "pymc"
    uses_init = False  # PyMC starts its chains its own way

    def sample(self, spec: ModelSpec, table: RunTable, units: Units,
               settings: SamplerSettings) -> az.InferenceData:
        """Sample with :func:`bayes_transfer.pymc_backend.sample_pymc`."""
        from bayes_transfer.pymc_backend import sample_pymc

        return sample_pymc(spec, table, settings, units=units)


register_backend(NumPyroBackend())
register_backend(PyMCBackend())
