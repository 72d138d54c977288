"""Laplace initialisation of NUTS: start at the posterior mode, with its curvature.

NUTS started from NumPyro's default (uniform on [-2, 2] in the unconstrained space) with
a unit mass matrix spends its warmup finding the typical set and its scales. When the
rows pin the parameters tightly (thousands of rows a pair) the posterior is orders of
magnitude narrower than that start, and the first adaptation windows run at the
maximum tree depth (1,023 leapfrog steps a draw), sometimes without ever mixing
(a simulated 10,000-row table, one chain x 200 + 200, 2026-11-25: ESS 1-9 of 200 draws).

:func:`laplace_start` instead

1. finds the mode of the (unconstrained) posterior with Adam under a decaying learning
   rate, inside one compiled loop;
2. takes the diagonal of the Hessian there as the Laplace approximation's precision
   (one Hessian-vector product per site, checked, :func:`hessian_diagonal_by_probes`;
   one per dimension where the check fails; memory stays linear in the dimension);
3. starts each chain at its own draw from that approximation (distinct starts keep
   R-hat able to see chains that disagree) and gives NUTS the approximation's variances
   as its initial inverse mass matrix, which warmup then adapts as usual.

On the same table the warmup then ran at ~300 steps a draw from its first window,
sampling at ~220, and the chain mixed (ESS 28-376 of 200 draws); in
``benchmarks/fit_scaling.py`` the 10,000-row fit averages 194 steps a draw. A non-positive curvature
(a flat or non-convex direction at the mode) falls back to a variance of 1.

Example:
    >>> import jax  # doctest: +SKIP
    >>> init, inv_mass = laplace_start(hierarchical_model, (data,), jax.random.key(0),
    ...                                chains=4)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = ["find_mode", "hessian_diagonal", "hessian_diagonal_by_probes", "probe_diagonal",
           "probe_groups", "laplace_variance", "laplace_log_mass",
           "laplace_start", "laplace_fit", "LaplaceStart"]

ADAM_STEPS = 2000


def find_mode(potential: Callable[[Any], Any], z0: Any, *, steps: int = ADAM_STEPS,
              lr: float = 0.05, final_lr: float = 1e-4) -> Any:
    """Minimise ``potential`` (a function of a flat vector) from ``z0`` with Adam.

    The learning rate decays geometrically from ``lr`` to ``final_lr``: large steps to
    cross the prior-scale start, small ones to settle in a narrow mode. Non-finite
    gradients (a start far in a tail) count as zero.
    """
    b1, b2, eps = 0.9, 0.999, 1e-8
    grad = jax.grad(potential)
    decay = (final_lr / lr) ** (1.0 / max(steps - 1, 1))

    def step(i, carry):
        z, m, v = carry
        g = jnp.nan_to_num(grad(z), nan=0.0, posinf=0.0, neginf=0.0)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** (i + 1))
        v_hat = v / (1 - b2 ** (i + 1))
        return z - lr * decay**i * m_hat / (jnp.sqrt(v_hat) + eps), m, v

    zeros = jnp.zeros_like(z0)
    z, _, _ = jax.lax.fori_loop(0, steps, step, (z0, zeros, zeros))
    return z


def _hvp(potential: Callable[[Any], Any], z: Any) -> Callable[[Any], Any]:
    # v -> H(z) v, forward over reverse: memory linear in the dimension.
    grad = jax.grad(potential)
    return lambda v: jax.jvp(grad, (z,), (v,))[1]


def _diagonal_entries(potential: Callable[[Any], Any], z: Any, index: Any) -> Any:
    # H[i, i] for each i in index, one product with the one-hot vector of i each.
    hvp = _hvp(potential, z)
    return jax.lax.map(lambda i: hvp(jax.nn.one_hot(i, z.shape[0], dtype=z.dtype))[i], index)


def hessian_diagonal(potential: Callable[[Any], Any], z: Any) -> Any:
    """The Hessian's diagonal at ``z``: one Hessian-vector product per dimension."""
    return _diagonal_entries(potential, z, jnp.arange(z.shape[0]))


def probe_groups(tree: Any) -> Any:
    """A probe index per flat coordinate of ``tree`` (a dict of site arrays): one per
    site, and per column of a site with two or more axes (``(sources, factors)``)."""
    ids, start = {}, 0
    for name in sorted(tree):  # ravel_pytree's (sorted-key) order
        shape = jnp.shape(tree[name])
        cols = 1 if len(shape) < 2 else int(shape[-1])
        ids[name] = start + jnp.broadcast_to(jnp.arange(cols), shape) if shape else start
        start += cols
    return ravel_pytree({k: jnp.asarray(v) for k, v in ids.items()})[0].astype(int), start


def probe_diagonal(potential: Callable[[Any], Any], z: Any, groups: Any,
                   n_groups: int) -> Any:
    """``(H @ 1_g)[i]`` for each coordinate ``i`` of group ``g``: the Hessian's diagonal
    when no two coordinates of a group couple (unchecked; see
    :func:`hessian_diagonal_by_probes`)."""
    hvp = _hvp(potential, z)
    probed = jax.lax.map(lambda g: hvp((groups == g).astype(z.dtype)), jnp.arange(n_groups))
    return probed[groups, jnp.arange(z.shape[0])]


def hessian_diagonal_by_probes(potential: Callable[[Any], Any], z: Any, groups: Any,
                               n_groups: int) -> Any:
    """The Hessian's diagonal at ``z`` in one Hessian-vector product per probe group.

    ``H @ 1_g`` read at a coordinate of group ``g`` is its diagonal entry when the
    group's coordinates do not couple with each other, as in this package's models: a
    site's groups (pairs, sources, targets) never share a row or a prior term; a factor
    site's columns do, so each column is its own group (:func:`probe_groups`). The
    first and last coordinate of every group are checked against one-hot products, and
    on any disagreement the exact :func:`hessian_diagonal` is returned instead: a model
    whose coordinates do couple costs the full loop, never a wrong diagonal. (A
    10,000-pair table has 20,715 coordinates but 25 groups.)
    """
    diag = probe_diagonal(potential, z, groups, n_groups)
    index = jnp.arange(z.shape[0])
    firsts = jnp.array([jnp.min(jnp.where(groups == g, index, z.shape[0]))
                        for g in range(n_groups)])
    lasts = jnp.array([jnp.max(jnp.where(groups == g, index, -1)) for g in range(n_groups)])
    check = jnp.concatenate([firsts, lasts])
    exact = _diagonal_entries(potential, z, check)
    agree = jnp.all(jnp.abs(exact - diag[check]) <= 1e-3 * (jnp.abs(exact) + 1.0))
    return jax.lax.cond(agree, lambda: diag, lambda: hessian_diagonal(potential, z))


def laplace_variance(curvature: Any) -> Any:
    """The Laplace approximation's variances from the Hessian's diagonal: ``1 / H_ii``,
    and 1 where ``H_ii`` is not positive and finite (a flat or non-convex direction)."""
    ok = jnp.isfinite(curvature) & (curvature > 0)
    return jnp.where(ok, 1.0 / jnp.where(ok, curvature, 1.0), 1.0)


def laplace_log_mass(potential_at_mode: Any, curvature: Any) -> Any:
    """Log of a mode's probability mass under its (diagonal) Laplace approximation, up to
    a constant shared by every mode of one posterior: ``-U(mode) - sum(log H_ii) / 2``.

    It ranks modes the way their mass does, not their height: a narrow spike (a funnel's
    neck, where the curvature is huge) scores below a broad mode of the same height. A
    non-positive curvature counts as 1, as in the start's variance
    (:func:`laplace_variance`).

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(laplace_log_mass(jnp.array(0.0), jnp.array([4.0, 1.0]))), 4)  # -log 2
        -0.6931
    """
    return -potential_at_mode + 0.5 * jnp.sum(jnp.log(laplace_variance(curvature)))


@dataclass(frozen=True)
class LaplaceStart:
    """What :func:`laplace_fit` found, in the model's unconstrained coordinates.

    ``init``: start values per site (leading axis ``chains``); ``inverse_mass``: flat, in
    ``ravel_pytree`` order of the sites, as NumPyro's NUTS takes it; ``mode`` and
    ``curvature`` (the Hessian's diagonal, non-positive entries as found) per site;
    ``probes``: per probed site ``Y``, the Hessian times the indicator of ``Y``'s
    coordinates, per site: at a coordinate ``x`` that couples with one coordinate ``y``
    of ``Y`` (a pair's gap with its target's floor), ``H[x, y]``.
    """

    init: dict[str, Any]
    inverse_mass: Any
    mode: dict[str, Any]
    curvature: dict[str, Any]
    probes: dict[str, dict[str, Any]]


def laplace_fit(model: Callable[..., None], model_args: tuple, rng_key: Any, chains: int,
                probes: Sequence[str] = (), mode_starts: int = 1) -> LaplaceStart:
    """The Laplace start of ``model(*model_args)``, with one extra Hessian-vector product
    per name in ``probes`` (see :class:`LaplaceStart`; :mod:`bayes_transfer.shear` reads
    them). Everything, NumPyro's own setup of the unconstrained space included, runs in
    one compiled program (run eagerly, that setup alone took 6 s of op-by-op dispatch on
    the bundled table).

    ``mode_starts`` > 1 searches for the mode from that many starts (NumPyro's own and
    draws uniform on [-2, 2] in the unconstrained space, the same rule), one after
    another in the same compiled program, and keeps the mode of largest Laplace mass
    (:func:`laplace_log_mass`), so that a posterior with a minor local mode does not
    trap a chain that happened to start near it (Lin et al.'s ``google/mt5-large`` FLAN curve: a chain started from the prior
    stayed in a mode whose draws averaged 13 nats lower in log density, R-hat 1.5-1.8).

    The arrays among ``model_args`` (its pytree leaves) are the compiled program's
    arguments, the rest is closed over: a later call with the same model and arrays of
    the same shapes builds the same program, which JAX's persistent compilation cache
    then hands out. (The program costs ~20-30 s to compile on 2 CPU cores; baked into
    it, every table's values made a new one. :func:`bayes_transfer.refit.padded_model`
    gives a fit's rows as such arrays, padded to a bucketed size.)
    """
    from numpyro.infer.util import initialize_model

    leaves, treedef = jax.tree.flatten(model_args)
    traced = [isinstance(leaf, (jax.Array, np.ndarray)) for leaf in leaves]
    given_arrays = [leaf for leaf, t in zip(leaves, traced, strict=True) if t]
    closed = [leaf for leaf, t in zip(leaves, traced, strict=True) if not t]

    def rebuild(arrays: list[Any]) -> tuple:
        given, kept = iter(arrays), iter(closed)
        return treedef.unflatten([next(given) if t else next(kept) for t in traced])

    @jax.jit
    def run(key, arrays):
        model_args = rebuild(arrays)
        setup_key, noise_key = jax.random.split(key)
        info = initialize_model(setup_key, model, model_args=model_args)
        flat0, unravel = ravel_pytree(info.param_info.z)

        def potential(flat):
            return info.potential_fn(unravel(flat))

        groups, n_groups = probe_groups(info.param_info.z)
        if mode_starts == 1:
            mode = find_mode(potential, flat0)
        else:
            others = jax.random.uniform(jax.random.fold_in(setup_key, 1),
                                        (mode_starts - 1, flat0.shape[0]), flat0.dtype,
                                        -2.0, 2.0)

            def search(z):
                # Scored with the unchecked probe diagonal: exact for this package's
                # models (see hessian_diagonal_by_probes).
                m = find_mode(potential, z)
                return m, laplace_log_mass(potential(m),
                                           probe_diagonal(potential, m, groups, n_groups))

            # One start after another (lax.map), not vmapped: the batched program took
            # ~17 s more to compile on a 540-row table, more than the starts take to run.
            modes, mass = jax.lax.map(search, jnp.concatenate([flat0[None], others]))
            mode = modes[jnp.argmax(jnp.where(jnp.isfinite(mass), mass, -jnp.inf))]
        curvature = hessian_diagonal_by_probes(potential, mode, groups, n_groups)
        variance = laplace_variance(curvature)
        noise = jax.random.normal(noise_key, (chains, flat0.shape[0]), dtype=flat0.dtype)
        starts = mode + noise * jnp.sqrt(variance)
        # A draw that lands where the density is not finite starts at the mode instead.
        finite = jnp.isfinite(jax.vmap(potential)(starts))
        starts = jnp.where(finite[:, None], starts, mode)
        hvp = _hvp(potential, mode)
        probed = {}
        for name in probes:
            ones = unravel(jnp.zeros_like(flat0))
            ones[name] = jnp.ones_like(ones[name])
            probed[name] = unravel(hvp(ravel_pytree(ones)[0]))
        return (jax.vmap(unravel)(starts), variance, unravel(mode), unravel(curvature),
                probed, jnp.all(jnp.isfinite(mode)))

    init, variance, mode, curvature, probed, finite_mode = run(rng_key, given_arrays)
    if not bool(finite_mode):
        raise FloatingPointError("the Laplace initialisation found no finite mode; "
                                 "fit with init='prior'")
    return LaplaceStart(init, variance, mode, curvature, probed)


def laplace_start(model: Callable[..., None], model_args: tuple, rng_key: Any,
                  chains: int) -> tuple[dict[str, Any], Any]:
    """Initial unconstrained values (leading axis ``chains``) and inverse mass diagonal.

    ``model(*model_args)`` is a NumPyro model. The inverse mass matrix is flat, in
    ``ravel_pytree`` order of the sites, the order NumPyro's NUTS uses.
    """
    start = laplace_fit(model, model_args, rng_key, chains)
    return start.init, start.inverse_mass
