"""Warm-started NUTS refits that reuse one compiled sampler (the loop's rounds).

A refit of a table that grew by a few rows needs neither a cold start nor a new compiled
program. :func:`sample_warm` starts each chain at the last draw of a chain of the previous
posterior, takes the inverse mass matrix from the previous posterior's draws (their
variances in the unconstrained space), and adapts only the step size in a short warmup.
Each group of a non-centred parameter whose previous posterior is much narrower than its
level's sd (the data pin it) is sampled centred, the others non-centred, and the draws are
mapped back to the spec's own sites (:func:`centring_from`). A cold fit can make the
same choice from the curvature at the posterior's mode (``fit(..., centring="mode")``,
:func:`centring_from_mode`, :func:`cold_centring`).
The table is padded to a bucketed number of rows (:func:`bucket_rows`) with a mask on
the likelihood, so that the sampler, which takes the table's arrays as
arguments, is compiled once per bucket and reused in-process (and, with JAX's persistent
compilation cache on, across processes).

:func:`bayes_transfer.inference.fit` calls this when given ``warm_start``; a previous
posterior whose latent sites differ from the new model's (a new source, target or observed
pair changes them) gives None, and ``fit`` then samples cold. So does a spec sampled in
anchored coordinates (:mod:`bayes_transfer.anchor`): a warm refit samples the spec's own
coordinates, along the ridges those coordinates exist to avoid.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from bayes_transfer.data import RunTable
from bayes_transfer.laws import Units
from bayes_transfer.model import ModelData, hierarchical_model, latent_sites, model_data, site_dims
from bayes_transfer.sampling import (
    LAPLACE_FROM_ROWS,
    SamplerSettings,
    coords_for,
    pick_device,
    reached_max_treedepth,
    stamp_library,
)
from bayes_transfer.spec import ModelSpec

if TYPE_CHECKING:
    from bayes_transfer.inference import Posterior

__all__ = ["sample_warm", "bucket_rows", "padded_model", "padded_to", "cold_rows",
           "warm_warmup", "clear_compiled", "centring_from", "centring_from_mode", "cold_centring", "centred_start", "to_spec_sites",
           "record_centring",
           "MIN_ROWS_BUCKET"]

MIN_ROWS_BUCKET = 32
# A group is sampled centred in a warm refit when its previous posterior sd (of the log
# value) is below this fraction of the level's sd: the data pin it, and non-centred its z
# would have to move with mu and the crossed offsets along a narrow curved ridge.
# Measured on the loop's 2 x 2 tables (40-56 rows, benchmarks/refit_speed.py): 152-322
# leapfrog steps a draw in the warm refits against 1,002-1,023 in cold fits.
CENTRE_BELOW = 0.5
# Warm warmup: a quarter of the configured warmup, at least this many steps. The mass
# matrix comes from the previous posterior, so the warmup only tunes the step size and
# lets the chains move from the old posterior's typical set to the new one's.
MIN_WARM_WARMUP = 50
# Compiled samplers kept in this process: one, the loop's current one. A live compiled
# sampler was seen to slow other fits in the process (see backends.NumPyroBackend.sample), so
# the loop drops it when it ends (clear_compiled).
_KEEP = 1
_compiled: OrderedDict[tuple, Callable] = OrderedDict()
_lock = threading.Lock()


def clear_compiled() -> None:
    """Drop the compiled warm sampler kept for the next refit (the loop calls this when
    it ends), and collect it now rather than whenever its reference cycles are found."""
    import gc

    with _lock:
        _compiled.clear()
    gc.collect()


def bucket_rows(n: int) -> int:
    """The padded row count of an ``n``-row table: at least 32, and above that the next
    multiple of an eighth of the next power of two (33-64 rows: 40, 48, 56, 64).

    Padding costs likelihood work on every leapfrog step (rows of 64 for 44 made a warm
    refit's steps ~1.4x dearer in CPU time) and each new bucket costs a compilation;
    quarter steps between powers of two bound the padding at 25% with four compilations
    per doubling of the table.
    """
    n = int(n)
    if n <= MIN_ROWS_BUCKET:
        return MIN_ROWS_BUCKET
    step = (1 << (n - 1).bit_length()) // 8
    return -(-n // step) * step


def warm_warmup(warmup: int) -> int:
    """Warmup steps of a warm-started refit configured with ``warmup`` (a quarter)."""
    return max(MIN_WARM_WARMUP, int(warmup) // 4)


def _padded(data: ModelData, rows: int) -> dict[str, Any]:
    """The model's per-row arrays padded to ``rows`` (copies of row 0, masked out)."""
    n = data.n_rows
    take = np.concatenate([np.arange(n), np.zeros(rows - n, dtype=int)])

    def pad(x: Any) -> Any:
        return jnp.asarray(np.asarray(x)[take])

    arrays = {"features": {k: pad(v) for k, v in data.features.items()},
              "log_loss": pad(data.log_loss), "log_loss_se": pad(data.log_loss_se),
              "source_idx": pad(data.source_idx), "target_idx": pad(data.target_idx),
              "row_mask": jnp.asarray(np.arange(rows) < n)}
    if data.anchor is not None:
        # Each pair's anchors and shift come from its rows: values, like the rows'.
        arrays["anchor_x"] = jnp.asarray(data.anchor.x)
        arrays["anchor_offset"] = jnp.asarray(data.anchor.offset)
    return arrays


# Rows a cold fit pads its table to at least (see padded_to); 0: its own bucket.
_PAD_AT_LEAST: ContextVar[int] = ContextVar("bayes_transfer_pad_at_least", default=0)


@contextmanager
def padded_to(rows: int) -> Iterator[None]:
    """Within this block, cold NumPyro fits below the Laplace start's threshold pad their
    tables to at least ``rows`` rows (:func:`cold_rows`). The discrepancy's internal
    extrapolation fits two subsets of one table; padded to one size, both run one
    compiled sampler (and, where the settings match, the main fit's too)."""
    token = _PAD_AT_LEAST.set(int(rows))
    try:
        yield
    finally:
        _PAD_AT_LEAST.reset(token)


def cold_rows(n: int) -> int:
    """The row count a cold fit of ``n`` rows samples and starts from: ``n`` itself from
    :data:`~bayes_transfer.sampling.LAPLACE_FROM_ROWS` rows on (large tables, where
    padding would cost sampling time), else the bucket of ``n`` or of the size
    :func:`padded_to` asks for, whichever is larger. By size, not by how the chains
    start: a small table's Laplace start (a mode search) compiles a program as dear as
    the sampler, and shares it the same way."""
    if n >= LAPLACE_FROM_ROWS:
        return int(n)
    return bucket_rows(max(int(n), _PAD_AT_LEAST.get()))


def padded_model(data: ModelData, rows: int) -> tuple[Callable, dict[str, Any]]:
    """``hierarchical_model`` with ``data``'s per-row arrays as its argument, padded to
    ``rows`` (:func:`_padded`): ``(model, arrays)`` for ``MCMC(..., jit_model_args=True)
    .run(key, arrays)``.

    The compiled sampler then takes the table as an argument instead of baking its values
    into the program, so two fits of the same spec and structure on tables padded to the
    same size build one XLA program: JAX's persistent compilation cache (which the CLI
    turns on) hands the second its compiled sampler. Anchored pairs' anchors and shifts
    (:mod:`bayes_transfer.anchor`), numbers read off the rows, are arguments too. What
    fixes the model's structure (the groups with rows, the centring, the shear, which
    pairs are anchored) stays in the closure.
    """
    arrays = _padded(data, rows)

    def model(arrays: dict[str, Any]) -> None:
        anchor = data.anchor
        if anchor is not None:
            anchor = dataclasses.replace(anchor, x=arrays["anchor_x"],
                                         offset=arrays["anchor_offset"])
        hierarchical_model(dataclasses.replace(
            data, features=arrays["features"], log_loss=arrays["log_loss"],
            log_loss_se=arrays["log_loss_se"], source_idx=arrays["source_idx"],
            target_idx=arrays["target_idx"], row_mask=arrays["row_mask"], anchor=anchor))

    return model, arrays


def centring_from(previous: Posterior, data: ModelData) -> dict[str, np.ndarray]:
    """Per non-centred pooled parameter of ``data``'s spec, a bool per group of its
    innermost level: sample it centred in the refit (its previous posterior sd below
    ``CENTRE_BELOW`` times the level's sd), or not. A parameter whose previous draws do
    not have the new model's groups is left as the spec has it."""
    from bayes_transfer.named_params import all_draws

    post = all_draws(previous.idata)
    out = {}
    for p in data.spec.params.values():
        log, sd, z = f"log_{p.name}", f"{p.name}_sd_{p.level}", f"{p.name}_z_{p.level}"
        if p.pooling == "none" or p.centered or not {log, sd, z} <= set(post.data_vars):
            continue
        spread = post[log].std(("chain", "draw")).values.reshape(-1)
        if spread.size != data.has_rows(p.level).size:  # the level's groups, now
            continue
        out[p.name] = spread < CENTRE_BELOW * float(post[sd].median())
    return out


def centring_from_mode(data: ModelData, rng_key: Any) -> dict[str, np.ndarray]:
    """Per non-centred pooled parameter of ``data``'s spec, a bool per group of its
    innermost level: sample it centred in a cold fit, decided from the table alone.

    The rule of :func:`centring_from` read off the posterior's curvature at its mode
    instead of a previous posterior's draws: a group is centred where the rows alone pin
    its log value to an sd below ``CENTRE_BELOW`` times the level's sd, that is where
    :func:`information_at_mode` exceeds ``1 / CENTRE_BELOW^2``. Only parameters with at
    least one such group are returned.

    Measured on the bundled table (``transfer-gap-size``: A and G non-centred, 4 x 500 +
    1000, seeds 0-2): 156-200 leapfrog steps a draw instead of 1,020, R-hat <= 1.006, bulk
    ESS >= 801, 0-1 divergences; the fit in ~11 s instead of ~80 s.
    """
    out = {}
    for name, information in information_at_mode(data, rng_key).items():
        pinned = information > 1.0 / CENTRE_BELOW**2
        if pinned.any():
            out[name] = pinned
    return out


def information_at_mode(data: ModelData, rng_key: Any) -> dict[str, np.ndarray]:
    """Per non-centred pooled parameter with a free sd, ``sd^2 I`` per group of its
    innermost level: the rows' information ``I`` about the group's log value at the
    posterior's mode, in units of the level's sd (empty where no finite mode is found).

    Non-centred, a group's value is ``loc + sd z``, so the curvature of the log density
    in ``z`` at the mode is ``c(z) + sd^2 I``, where ``c`` is the z prior's own
    (:func:`prior_curvature`: 1 for a normal ``z``). A group without rows has 0. The mode
    and the curvature's diagonal are those of :mod:`bayes_transfer.laplace` (one compiled
    program).
    """
    from numpyro.infer.util import initialize_model

    from bayes_transfer.laplace import find_mode, hessian_diagonal

    candidates = [p for p in data.spec.params.values()
                  if p.pooling != "none" and not p.centered]
    if not candidates:
        return {}

    @jax.jit
    def curvature(key):
        info = initialize_model(key, hierarchical_model, model_args=(data,))
        flat0, unravel = ravel_pytree(info.param_info.z)

        def potential(flat):
            return info.potential_fn(unravel(flat))

        mode = find_mode(potential, flat0)
        return (unravel(hessian_diagonal(potential, mode)), unravel(mode),
                jnp.all(jnp.isfinite(mode)))

    curv, mode, finite = curvature(rng_key)
    if not bool(finite):
        return {}  # no usable mode: sample as the spec states
    out = {}
    for p in candidates:
        z, sd = f"{p.name}_z_{p.level}", f"{p.name}_sd_{p.level}"
        if z not in curv or sd not in curv:  # a fixed sd: nothing to centre against
            continue
        out[p.name] = np.asarray(curv[z]) - prior_curvature(np.asarray(mode[z]),
                                                            p.residual_nu)
    return out


def prior_curvature(z: np.ndarray, nu: float | None) -> np.ndarray:
    """The second derivative of ``-log p(z)`` of a non-centred group's own prior at ``z``:
    1 for a normal ``z``; for Student-t residuals (``residual_nu``) it is
    ``(nu + 1)(nu - z^2) / (nu + z^2)^2``, ``(nu + 1) / nu`` at 0 and negative in the
    tails, so the rows' share of the curvature is read off against it, not against 1.

    Example:
        >>> float(prior_curvature(np.array(0.0), 3.0))
        1.3333333333333333
    """
    if nu is None:
        return np.ones_like(z)
    return (nu + 1.0) * (nu - z**2) / (nu + z**2) ** 2


def cold_centring(data: ModelData, settings: SamplerSettings) -> dict[str, np.ndarray]:
    """The groups a cold fit samples centred: :func:`centring_from_mode` when
    ``settings.centring`` is ``"mode"``, none otherwise. Every back end calls it with the
    same key, folded from the seed, so that they sample the same parameterisation."""
    if settings.centring != "mode":
        return {}
    return centring_from_mode(data, jax.random.fold_in(jax.random.key(settings.seed), 2))


def record_centring(idata: az.InferenceData, centre: dict[str, np.ndarray]) -> None:
    """Record which groups a cold fit sampled centred (its draws are on the spec's own
    sites either way); ``fit`` keeps it in the file as ``centred_groups``."""
    import json

    idata.posterior.attrs["centred_groups"] = json.dumps(
        {k: np.asarray(v).astype(int).tolist() for k, v in centre.items()})


def centred_start(init: dict[str, Any], inverse_mass: Any, data: ModelData,
                  centre: dict[str, np.ndarray]) -> tuple[dict[str, Any], Any]:
    """A Laplace start of the spec's model (``data`` without ``centre``; unconstrained
    values with a leading chain axis, and its flat inverse mass diagonal) moved to the
    model that samples the groups of ``centre`` centred.

    The approximation is taken where it is sound, in the spec's non-centred coordinates:
    in centred ones its diagonal misses the strong coupling of the groups with their
    level's mean and sd (the simulated 10x table of ``benchmarks/sampler_speed.py``:
    R-hat 2.2, 15 divergences from such a start). A centred group starts at its log value
    ``loc + sd z``, with variance ``sd^2`` times that of ``z``; warmup adapts from there.
    """
    from numpyro.infer.util import constrain_fn

    first = {k: v[0] for k, v in init.items()}
    variances = ravel_pytree(first)[1](inverse_mass)
    values = jax.jit(jax.vmap(lambda z: constrain_fn(hierarchical_model, (data,), {}, z,
                                                     return_deterministic=True)))(init)
    init, variances = dict(init), dict(variances)
    for name, pinned in centre.items():
        level = data.spec.params[name].level
        z_site, pc_site = f"{name}_z_{level}", f"{name}_pc_{level}"
        c = jnp.asarray(pinned)
        sd = values[f"{name}_sd_{level}"]  # (chains,)
        init[pc_site] = jnp.where(c, values[f"log_{name}"], init.pop(z_site))
        scale = jnp.mean(sd) ** 2
        variances[pc_site] = jnp.where(c, scale * variances[z_site], variances.pop(z_site))
    return init, ravel_pytree(variances)[0]


def _previous_draws(post: Any, name: str, centre: dict[str, np.ndarray]) -> Any:
    """The previous posterior's draws of site ``name`` of the refit's model: the site
    itself, or for ``<p>_pc_<level>`` (a parameter the refit centres by group) log_<p>
    where the group is centred and the spec's z where not; None if missing."""
    for p, c in centre.items():
        if name.startswith(f"{p}_pc_"):
            level = name[len(p) + 4:]
            log, z = post.get(f"log_{p}"), post.get(f"{p}_z_{level}")
            if log is None or z is None:
                return None
            return np.where(c, log.values.reshape(z.shape), z.values)
    return post[name].values if name in post else None


def to_spec_sites(values: dict[str, Any], spec: ModelSpec, centre: dict[str, np.ndarray]
                   ) -> dict[str, Any]:
    """The refit's draws on the spec's own sites: z = (log - loc) / sd for every
    parameter the refit sampled partially centred."""
    out = dict(values)
    for name in centre:
        level = spec.params[name].level
        loc, sd = out.pop(f"{name}_loc_{level}"), out[f"{name}_sd_{level}"]
        out.pop(f"{name}_pc_{level}")
        out[f"{name}_z_{level}"] = (out[f"log_{name}"] - loc) / sd[..., None]
    return out


def _warm_init(previous: Posterior, sites: dict[str, Any], chains: int, dense: bool,
               centre: dict[str, np.ndarray] | None = None
               ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Unconstrained start points (one per chain) and an inverse mass matrix from the
    previous posterior's draws; None when its sites do not match the new model's."""
    from numpyro.distributions.transforms import biject_to

    from bayes_transfer.named_params import all_draws

    post = all_draws(previous.idata)  # the offsets live in unconstrained_posterior
    n_chain, n_draw = int(post.sizes["chain"]), int(post.sizes["draw"])
    flat_draws, starts = {}, {}
    for name, (shape, support) in sites.items():
        drawn = _previous_draws(post, name, centre or {})
        if drawn is None or tuple(drawn.shape[2:]) != shape:
            return None
        values = np.asarray(drawn, dtype=np.float64)
        z = np.asarray(biject_to(support).inv(jnp.asarray(values)), dtype=np.float64)
        if not np.isfinite(z).all():
            return None
        flat_draws[name] = z.reshape(n_chain * n_draw, *shape)
        # Chain c starts where chain c % n_chain ended (further back for extra chains).
        starts[name] = np.stack([z[c % n_chain, n_draw - 1 - (c // n_chain) % n_draw]
                                 for c in range(chains)])
    # The draws as rows of ravel_pytree's coordinates (the sites in jax.tree's order, each
    # flattened in C order), as NumPyro's mass matrix expects; in numpy, since a
    # ravel_pytree per draw dispatched ~25 small JAX operations each (2.1 s of a ~9 s
    # warm refit at 600 draws, 2026-12-03).
    n = n_chain * n_draw
    flat = np.concatenate([flat_draws[name].reshape(n, -1)
                           for name in jax.tree.leaves({k: k for k in flat_draws})], axis=1)
    # Stan's regularisation of the adapted mass matrix: shrink towards a small multiple
    # of the identity, so a coordinate with (nearly) constant draws keeps a usable scale.
    if dense:
        cov = np.atleast_2d(np.cov(flat, rowvar=False))
        inv_mass = (n / (n + 5.0)) * cov + 1e-3 * (5.0 / (n + 5.0)) * np.eye(len(cov))
    else:
        inv_mass = (n / (n + 5.0)) * flat.var(axis=0) + 1e-3 * (5.0 / (n + 5.0))
    return starts, inv_mass


def _sampler(spec: ModelSpec, data: ModelData, *, rows: int, chains: int, warmup: int,
             draws: int, target_accept: float, max_tree_depth: int, dense_mass: bool,
             parallel: bool, device: jax.Device) -> Callable:
    """The compiled sampler for this model structure and row bucket (cached)."""
    key = (spec.to_json(), data.n_sources, data.n_targets,
           tuple((k, v.tobytes()) for k, v in sorted((data.groups_with_rows or {}).items())),
           # Which parameters the refit centres by group; the groups are an argument.
           tuple(sorted(data.centre or {})),
           tuple(sorted(data.features)), rows, chains, warmup, draws, target_accept,
           max_tree_depth, dense_mass, parallel, str(device))
    with _lock:
        if key in _compiled:
            _compiled.move_to_end(key)
            return _compiled[key]
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import constrain_fn, potential_energy

    n_sources, n_targets = data.n_sources, data.n_targets
    units, with_rows = data.units, data.groups_with_rows

    def as_data(arrays: dict[str, Any]) -> ModelData:
        return ModelData(spec, arrays["features"], arrays["log_loss"], arrays["log_loss_se"],
                         arrays["source_idx"], arrays["target_idx"], n_sources, n_targets,
                         units, with_rows, row_mask=arrays["row_mask"],
                         centre=arrays["centre"] or None)

    def pe_gen(arrays: dict[str, Any]) -> Callable:
        return lambda z: potential_energy(hierarchical_model, (as_data(arrays),), {}, z)

    init_kernel, sample_kernel = hmc(potential_fn_gen=pe_gen, algo="NUTS")

    def one_chain(rng_key, arrays, z0, inv_mass):
        state = init_kernel(z0, warmup, inverse_mass_matrix=inv_mass,
                            adapt_mass_matrix=False, dense_mass=dense_mass,
                            target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                            find_heuristic_step_size=True, model_args=(arrays,),
                            rng_key=rng_key)

        def adapt(state, _):
            return sample_kernel(state, model_args=(arrays,)), None

        def draw(state, _):
            state = sample_kernel(state, model_args=(arrays,))
            return state, (state.z, state.diverging, state.energy, state.potential_energy,
                           state.num_steps)

        state, _ = jax.lax.scan(adapt, state, None, length=warmup)
        _, (zs, diverging, energy, potential, steps) = jax.lax.scan(draw, state, None,
                                                                    length=draws)
        model_args = (as_data(arrays),)
        values = jax.vmap(lambda z: constrain_fn(hierarchical_model, model_args, {}, z,
                                                 return_deterministic=True))(zs)
        return values, {"diverging": diverging, "energy": energy, "lp": -potential,
                        "n_steps": steps}

    if parallel:
        fn = jax.pmap(one_chain, in_axes=(0, None, 0, None), devices=jax.devices("cpu")[:chains])
    else:
        # Placed on ``device`` by the caller's jax.default_device (jit's device= is
        # deprecated).
        fn = jax.jit(jax.vmap(one_chain, in_axes=(0, None, 0, None)))
    with _lock:
        _compiled[key] = fn
        while len(_compiled) > _KEEP:
            _compiled.popitem(last=False)
    return fn


def sample_warm(spec: ModelSpec, table: RunTable, units: Units, previous: Posterior,
                settings: SamplerSettings) -> az.InferenceData | None:
    """NUTS on ``table`` warm-started from ``previous`` (see module docs), as
    InferenceData laid out as :func:`~bayes_transfer.inference.fit`'s; None when the
    previous posterior's sites do not match the new model's.

    ``settings.warmup`` is the number of (step-size only) warmup steps to run (``fit``
    passes :func:`warm_warmup` of its own); ``init`` and ``progress`` are not used.
    """
    from numpyro import __version__ as numpyro_version

    from bayes_transfer.anchor import anchored_names

    if anchored_names(spec):
        # Refit cold, in the anchored coordinates (with the spec's mode search). Lin et
        # al.'s FLAN curves, 4 models, 12-32 rows revealed cheapest first, 2 chains x
        # 300 + 300 (2026-12-06): warm refits in the spec's own coordinates ran at the
        # maximum tree depth with R-hat 1.18-1.48 (bulk ESS 4-10) at every round; cold
        # refits of the same tables reached 1.04, 1.02, 1.02, 1.01 from 20 rows on.
        return None
    chains, draws, seed = settings.chains, settings.draws, settings.seed
    device = pick_device(settings.device)
    with jax.default_device(device):
        data = model_data(spec, table, units)
        centre = centring_from(previous, data)
        data = dataclasses.replace(data, centre=centre or None)
        start = _warm_init(previous, latent_sites(data), chains, settings.dense_mass,
                           centre)
        if start is None:
            return None
        z0, inv_mass = start
        rows = bucket_rows(data.n_rows)
        parallel = (device.platform == "cpu" and chains > 1
                    and len(jax.devices("cpu")) >= chains)
        run = _sampler(spec, data, rows=rows, chains=chains, warmup=settings.warmup,
                       draws=draws, target_accept=settings.target_accept,
                       max_tree_depth=settings.max_tree_depth,
                       dense_mass=settings.dense_mass, parallel=parallel, device=device)
        keys = jax.random.split(jax.random.key(seed), chains)
        # The groups each parameter centres change from round to round: an argument of
        # the compiled sampler (0. or 1. per group), not part of its structure.
        arrays = _padded(data, rows) | {"centre": {k: jnp.asarray(v, dtype=float)
                                                   for k, v in centre.items()}}
        values, stats = run(keys, arrays,
                            {k: jnp.asarray(v) for k, v in z0.items()}, jnp.asarray(inv_mass))
        values = to_spec_sites(jax.tree.map(np.asarray, values), spec, centre)
        stats = jax.tree.map(np.asarray, stats)
        stats["reached_max_treedepth"] = reached_max_treedepth(stats["n_steps"],
                                                               settings.max_tree_depth)
    dims = site_dims(spec)
    return stamp_library(az.from_dict(
        posterior={k: v for k, v in values.items() if k != "log_loss"},
        sample_stats=stats,
        observed_data={"log_loss": np.asarray(data.log_loss)},
        coords=coords_for(table), dims={k: v for k, v in dims.items() if k != "log_loss"}
        | {"log_loss": ["row"]},
    ), "numpyro", numpyro_version)
