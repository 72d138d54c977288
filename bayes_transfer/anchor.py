"""Anchored coordinates: sample a pair's curve as the losses it predicts at its data.

A fine-tuning curve fitted on a handful of sizes pins a few losses well and its
parameters badly: for the rectified law ``L(f) = B / (D_l + f^beta) + E`` the rows fix the
zero-shot loss and the loss at the largest fitted size, while ``B``, ``D_l``, ``beta`` and
``E`` trade along a curved ridge. In the log parameters NUTS with a diagonal mass matrix
crosses that ridge at its maximum tree depth (Lin et al.'s FLAN curves up to 1/64 of the
largest size: every draw 1,023 leapfrog steps, R-hat 1.07, bulk ESS 28).

With ``[sampler] coordinates = "anchored"`` in a spec, NumPyro samples each pair with rows
in coordinates in which its rows pin three axes directly:

* ``l0``: the log loss at f = 0 (the zero-shot loss);
* ``h``: the logit of ``L(f_hi) / L(0)``, with ``f_hi`` the pair's largest fitted size;
* ``m``: the logit of where ``L(f_m)`` lies between ``L(f_hi)`` and ``L(0)``, with ``f_m``
  the fitted size nearest the middle of the pair's sizes (in log); the floor cancels
  from it, so it fixes the exponent given the curve's ends;
* ``z``: the floor ``E``, non-centred: the ``Phi(z)`` quantile of its prior truncated
  below ``L(f_hi)``. Rows far above their floor leave ``E`` to its prior; non-centred it
  makes no funnel with the floors' sd when that sd is small.

The map to the log parameters is a bijection of R^4 (a rectified curve falls from
``L(0)`` through ``L(f_m)`` and ``L(f_hi)`` towards ``E``), and the model's density is the
spec's hierarchical prior at the mapped parameters times the map's Jacobian
(:func:`rectified_log_prior`; ``tests/test_anchor.py`` checks it against autodiff and
finite differences of the whole map): the posterior is the spec's, only the coordinates
NUTS moves in change. Pairs without rows keep the non-centred coordinates (their prior
alone). The draws are returned on the spec's own sites (:func:`spec_sites`), so files,
reports, warm refits and the PyMC back end (which samples the spec's own coordinates)
never see the anchored ones.

Each pair's coordinates are shifted by its own rows (the observed log loss at its smallest
size, the observed fractions at ``f_hi`` and ``f_m``), a translation that starts NUTS near
the data without changing the density.

The Chinchilla law's data term ``E + B D^-beta`` has a map too
(:func:`chinchilla_log_params`; ``benchmarks/real_data.py`` fits llm-line in it): each
pair's data term at its smallest and largest data sizes, and its exponent non-centred (a
pair's exponent is mostly its source's and target's, so its pair sd is small and a
centred exponent makes a funnel with it); the model-size term, the target's, stays
outside the map.

Measured (2 chains x 500 + 500; docs/measurements.md, the sections "Anchored coordinates
for fine-tuning curves" and "... for the Chinchilla data term"): Lin et al.'s curves,
1,021 -> 79 leapfrog steps a draw; llm-line below 1e11 tokens without the size term,
R-hat 1.85-2.25 -> 1.013 and 1,023 -> 253 steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

if TYPE_CHECKING:
    from bayes_transfer.model import ModelData

__all__ = ["ANCHORED_LAWS", "Anchors", "rectified_log_params", "rectified_log_prior",
           "chinchilla_log_params", "chinchilla_log_prior",
           "log_abs_det", "prepare", "sample_pairs", "spec_sites", "anchored_names", "SITE"]

SITE = "anchor_pair"


_LOG_HALF = -0.6931471805599453


def _log1mexp(x: Any) -> Any:
    # log(1 - e^x) for x < 0, accurate near 0 and far below it (Maechler 2012).
    return jnp.where(x > _LOG_HALF, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def _log_phi(v: Any) -> Any:
    return -0.5 * v**2 - 0.9189385332046727


def _ndtri_exp(log_p: Any) -> Any:
    """``Phi^-1(e^log_p)`` for ``log_p <= log 1/2``, also where ``e^log_p`` underflows
    (float32: below ~1e-38): there from the tail's asymptotic start
    ``-sqrt(t - log t - log 2 pi)``, ``t = -2 log_p``, and three Newton steps on
    ``log Phi(x) = log_p`` (error < 1e-5 in ``log Phi`` down to ``log_p = -1e4``)."""
    tail = log_p < -30.0
    lp = jnp.minimum(log_p, -30.0)  # the tail branch's input, finite on both branches
    t = -2.0 * lp
    x = -jnp.sqrt(t - jnp.log(t) - 1.8378770664093453)
    for _ in range(3):
        log_cdf = jax.scipy.special.log_ndtr(x)
        x = x - (log_cdf - lp) * jnp.exp(log_cdf - _log_phi(x))
    return jnp.where(tail, x, jax.scipy.special.ndtri(jnp.exp(jnp.maximum(log_p, -30.0))))


@jax.custom_jvp
def _truncated_quantile(z: Any, c: Any) -> Any:
    """``Phi^-1(Phi(z) Phi(c))``: the ``Phi(z)`` quantile of a standard normal truncated
    to ``(-inf, c)``, computed from the log of its probability or, above 1/2, of its
    complement ``Phi(-z) + Phi(z) Phi(-c)`` (accurate near 0 and 1, and where a bound
    lies far beyond the prior: a chain's early steps go there)."""
    log_ndtr = jax.scipy.special.log_ndtr
    log_p = log_ndtr(z) + log_ndtr(c)
    q = -jnp.expm1(jnp.maximum(log_p, _LOG_HALF))
    # Above 1/2 the complement's own log only where q underflows: elsewhere the same
    # arithmetic as Phi^-1(1 - q) always had, so fits that never reach the far tail
    # (the rectified map's) draw what they drew before.
    log_q = jnp.logaddexp(log_ndtr(-z), log_ndtr(z) + log_ndtr(-c))
    upper = jnp.where(q > 1e-30, -jax.scipy.special.ndtri(jnp.maximum(q, 1e-30)),
                      -_ndtri_exp(jnp.minimum(log_q, -30.0)))
    return jnp.where(log_p < _LOG_HALF, _ndtri_exp(jnp.minimum(log_p, _LOG_HALF)), upper)


@_truncated_quantile.defjvp
def _truncated_quantile_jvp(primals, tangents):
    # d y = (phi(z) Phi(c) dz + Phi(z) phi(c) dc) / phi(y), in logs: ndtri's own
    # derivatives, through its polynomial branches, cost ~10x the rest of the model.
    (z, c), (dz, dc) = primals, tangents
    y = _truncated_quantile(z, c)
    log_ndtr = jax.scipy.special.log_ndtr
    dy_dz = jnp.exp(_log_phi(z) + log_ndtr(c) - _log_phi(y))
    dy_dc = jnp.exp(log_ndtr(z) + _log_phi(c) - _log_phi(y))
    return y, dy_dz * dz + dy_dc * dc


def _rectified_curve(v: Any, log_e: Any, x: Any) -> Any:
    # (log B, log D_l, log beta) of the curve through L(0) = e^l0, L(f_hi) = L(0) s(h),
    # L(f_m) at the fraction s(m) between them, with floor e^log_e < L(f_hi).
    l0, h, m = v[..., 0], v[..., 1], v[..., 2]
    x_m, x_hi = x[..., 0], x[..., 1]
    log_sh = jax.nn.log_sigmoid(h)
    log_sq = jnp.minimum(log_e - l0 - log_sh, -1e-6)  # log E / L(f_hi) < 0
    log_rho_1 = -h - _log1mexp(log_sq)  # log(rho - 1)
    log_t = jax.nn.log_sigmoid(-m) - jax.nn.softplus(jax.nn.log_sigmoid(m) + log_rho_1)
    beta = log_t / (x_m - x_hi)
    log_d = beta * x_hi - log_rho_1
    log_b = l0 + _log1mexp(log_sh + log_sq) + log_d
    return jnp.stack([log_b, log_d, jnp.log(beta)], axis=-1)


def _floor(a: Any, loc: Any, sd: Any) -> tuple[Any, Any]:
    # The floor's log (the last coordinate z, non-centred: the Phi(z) quantile of its
    # prior truncated below the loss at the second anchor, e^(a0 + log s(a1))) and the
    # truncation point in sd units.
    c = (a[..., 0] + jax.nn.log_sigmoid(a[..., 1]) - loc[..., -1]) / sd[..., -1]
    return loc[..., -1] + sd[..., -1] * _truncated_quantile(a[..., -1], c), c


def _curve_log_det(curve: Callable[..., Any], v: Any, fixed: Any, x: Any) -> Any:
    # log |det d curve / d v| per pair at a fixed non-centred coordinate (forward-mode
    # autodiff of elementary functions, one small Jacobian a pair).
    k = v.shape[-1]
    jac = jax.vmap(jax.jacfwd(curve))(v.reshape(-1, k), fixed.reshape(-1),
                                      x.reshape(-1, x.shape[-1]))
    return jnp.linalg.slogdet(jac)[1].reshape(v.shape[:-1])


def _log_params(curve: Callable[..., Any], a: Any, x: Any, loc: Any, sd: Any) -> Any:
    log_e, _ = _floor(a, loc, sd)
    return jnp.concatenate([curve(a[..., :-1], log_e, x), log_e[..., None]], axis=-1)


def _log_prior(curve: Callable[..., Any], a: Any, x: Any, loc: Any,
               sd: Any) -> tuple[Any, Any]:
    # The map is (v, z) -> (v, log E) -> (curve(v, log E), log E): its log Jacobian is
    # log d(log E)/dz plus that of the curve's parameters in v at fixed log E (forward-
    # mode autodiff of elementary functions). The floor's prior times d(log E)/dz is
    # phi(z) Phi(c) (the truncation of _truncated_quantile), so log E's density never
    # needs Phi^-1's second derivatives.
    log_e, c = _floor(a, loc, sd)
    params = curve(a[..., :-1], log_e, x)
    log_jac = _curve_log_det(curve, a[..., :-1], log_e, x)
    curve_prior = dist.Normal(loc[..., :-1], sd[..., :-1]).log_prob(params).sum(-1)
    return (jnp.concatenate([params, log_e[..., None]], axis=-1),
            curve_prior + log_jac + _log_phi(a[..., -1]) + jax.scipy.special.log_ndtr(c))


def rectified_log_params(a: Any, x: Any, loc: Any, sd: Any) -> Any:
    """Map anchored coordinates ``a[..., (l0, h, m, z)]`` to the rectified law's log
    parameters ``(log B, log D_l, log beta, log E)``; ``x[..., (x_m, x_hi)]`` are the logs
    of a middle and the largest fitted size of the pair (reference units, ``x_m < x_hi``)
    and ``loc``, ``sd`` (same layout as the output) the pair's prior.

    With ``s`` the logistic: ``L(0) = e^l0``, ``L(f_hi) = L(0) s(h)``, and ``L(f_m)`` lies
    the fraction ``s(m)`` of the way from ``L(f_hi)`` up to ``L(0)``; ``log E`` is the
    ``Phi(z)`` quantile of its prior truncated below ``log L(f_hi)`` (non-centred: a floor
    the rows leave to the prior makes no funnel with its level's sd). A rectified curve
    falls from ``L(0)`` through ``L(f_m)`` and ``L(f_hi)`` towards ``E``, so the map is a
    bijection of R^4. The floor cancels from the fraction ``s(m)``: it is
    ``(1 - t) / (1 + (rho - 1) t)`` with ``t = (f_m / f_hi)^beta`` and
    ``rho = (L(0) - E) / (L(f_hi) - E)``, which gives beta; ``L(0) = E + B / D_l`` and
    ``L(f_hi) = E + B / (D_l + f_hi^beta)`` then give ``D_l`` and ``B``.

    Example:
        >>> import jax.numpy as jnp
        >>> from bayes_transfer.laws import rectified
        >>> loc, sd = jnp.zeros(4), jnp.ones(4)
        >>> lp = rectified_log_params(jnp.array([1.0, 0.5, 0.2, 0.0]), jnp.array([0.5, 2.0]),
        ...                           loc, sd)
        >>> at = lambda log_f: float(rectified({"log_f": jnp.array(log_f)},
        ...                                    dict(zip(("B", "D_l", "beta", "E"), lp))))
        >>> l0, l_m, l_hi = (at(v) for v in (-jnp.inf, 0.5, 2.0))
        >>> round(l0, 5), round(l_hi - l0, 5)  # l0 and log s(0.5)
        (1.0, -0.47408)
        >>> round(float((jnp.exp(l_m) - jnp.exp(l_hi)) / (jnp.exp(l0) - jnp.exp(l_hi))), 4)
        0.5498
    """
    return _log_params(_rectified_curve, a, x, loc, sd)


def rectified_log_prior(a: Any, x: Any, loc: Any, sd: Any) -> tuple[Any, Any]:
    """The log parameters (:func:`rectified_log_params`) and, per pair, the log density of
    the pair's prior in the anchored coordinates (the prior at the log parameters plus the
    log Jacobian of the map). ``tests/test_anchor.py`` checks it against ``jax.jacfwd`` of
    the whole map."""
    return _log_prior(_rectified_curve, a, x, loc, sd)


def _chinchilla_exponent(a: Any, x: Any, loc: Any, sd: Any) -> tuple[Any, Any]:
    # log beta from w = a[..., 2], non-centred: the Phi(w) quantile of its prior truncated
    # above the least exponent with E > 0 (the data term falls by the ratio s(h) over the
    # anchors, and above a floor of zero only at beta >= -log s(h) / (x_hi - x_lo)); and
    # that bound in sd units.
    log_min = jnp.log(jax.nn.softplus(-a[..., 1])) - jnp.log(x[..., 1] - x[..., 0])
    c = (log_min - loc[..., 1]) / sd[..., 1]
    return loc[..., 1] - sd[..., 1] * _truncated_quantile(-a[..., 2], -c), c


def _chinchilla_curve(v: Any, log_beta: Any, x: Any) -> Any:
    # (log B, log E) of the data term E + B D^-beta through P(D_lo) = e^u and
    # P(D_hi) = P(D_lo) s(h): B (D_lo^-beta - D_hi^-beta) = P(D_lo) s(-h), and E the rest.
    u, h = v[..., 0], v[..., 1]
    beta = jnp.exp(log_beta)
    log_drop = _log1mexp(-beta * (x[..., 1] - x[..., 0]))  # log(1 - (D_lo/D_hi)^beta)
    log_fall = jax.nn.log_sigmoid(-h)
    log_b = u + log_fall + beta * x[..., 0] - log_drop
    log_e = u + _log1mexp(jnp.minimum(log_fall - log_drop, -1e-6))
    return jnp.stack([log_b, log_e], axis=-1)


def chinchilla_log_params(a: Any, x: Any, loc: Any, sd: Any) -> Any:
    """Map anchored coordinates ``a[..., (u, h, w)]`` to the log parameters
    ``(log B, log beta, log E)`` of the Chinchilla law's data term ``E + B D^-beta``;
    ``x[..., (x_lo, x_hi)]`` are the logs of the pair's smallest and largest fitted data
    sizes (reference units, ``x_lo < x_hi``), ``loc``, ``sd`` the pair's prior.

    The model-size term ``A N^-alpha`` is left out of the map (its parameters are the
    target's or the population's, not the pair's): ``e^u`` is the data term at ``D_lo``,
    ``E + B D_lo^-beta``, and ``s(h)`` its ratio at ``D_hi`` to ``D_lo``; ``log beta`` is
    the ``Phi(w)`` quantile of its prior truncated below the least exponent that keeps
    ``E > 0``, ``-log s(h) / (x_hi - x_lo)`` (non-centred: an exponent the rows leave to
    its pair prior makes no funnel with that prior's sd); ``B`` and ``E`` follow. So the
    map is a bijection of R^3. The rows pin ``u`` (given the size term) and ``h``; the
    exponent, which the rows' curvature over a decade or two barely informs, trades
    against the floor, along a curved ridge in the log parameters.

    Example:
        >>> import jax.numpy as jnp
        >>> lp = chinchilla_log_params(jnp.array([0.5, 1.0, 0.0]), jnp.array([-1.0, 1.0]),
        ...                            jnp.zeros(3), jnp.ones(3))
        >>> log_b, log_beta, log_e = lp
        >>> data_term = lambda x: jnp.exp(log_e) + jnp.exp(log_b - jnp.exp(log_beta) * x)
        >>> round(float(jnp.log(data_term(-1.0))), 5)  # u
        0.5
        >>> round(float(data_term(1.0) / data_term(-1.0)), 5)  # s(1)
        0.73106
    """
    log_beta, _ = _chinchilla_exponent(a, x, loc, sd)
    b_e = _chinchilla_curve(a[..., :2], log_beta, x)
    return jnp.stack([b_e[..., 0], log_beta, b_e[..., 1]], axis=-1)


def chinchilla_log_prior(a: Any, x: Any, loc: Any, sd: Any) -> tuple[Any, Any]:
    """:func:`chinchilla_log_params` and the pair's prior in the anchored coordinates: the
    map is ``(u, h, w) -> (u, h, log beta) -> (log B, log beta, log E)``, so its log
    Jacobian is ``log d(log beta)/dw`` (with the exponent's prior: ``phi(w) Phi(-c)``)
    plus that of ``(log B, log E)`` in ``(u, h)`` at fixed beta."""
    log_beta, c = _chinchilla_exponent(a, x, loc, sd)
    b_e = _chinchilla_curve(a[..., :2], log_beta, x)
    log_jac = _curve_log_det(_chinchilla_curve, a[..., :2], log_beta, x)
    params = jnp.stack([b_e[..., 0], log_beta, b_e[..., 1]], axis=-1)
    prior = (dist.Normal(loc[..., 0], sd[..., 0]).log_prob(b_e[..., 0])
             + dist.Normal(loc[..., 2], sd[..., 2]).log_prob(b_e[..., 1]))
    return params, prior + log_jac + _log_phi(a[..., 2]) + jax.scipy.special.log_ndtr(-c)


def log_abs_det(to_log: Callable[..., Any], a: Any, *args: Any) -> Any:
    """``log |det d to_log / d a|`` per pair (``a``: pairs x k; ``args`` per pair too), by
    forward-mode autodiff of the whole map (a check of a law's own density)."""
    jac = jax.vmap(jax.jacfwd(to_log))(a, *args)
    return jnp.linalg.slogdet(jac)[1]


def _rectified_offsets(log_f: np.ndarray, log_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One pair's anchors ``(x_m, x_hi)`` and its coordinates' shift, from its rows: the
    observed log loss at its smallest size, the observed fractions at ``f_hi`` and
    ``f_m`` (the fitted size nearest the middle of its positive sizes, in log)."""
    ell = {v: float(log_loss[log_f == v].mean()) for v in np.unique(log_f)}
    positive = np.array(sorted(v for v in ell if np.isfinite(v)))
    lo = min(ell)
    x_hi = positive[-1] if positive.size else 0.0
    x_m = (positive[np.argmin(np.abs(positive - (positive[0] + x_hi) / 2))]
           if positive.size else x_hi - 1.0)
    if x_m >= x_hi:  # one positive size: a middle anchor the rows do not pin
        x_m = x_hi - 1.0
    shift = np.array([ell[lo], 0.0, 0.0, 0.0])  # z: the prior's own centre
    if positive.size and x_hi > lo:
        l0, l_hi = np.exp(ell[lo]), np.exp(ell[x_hi])
        shift[1] = _logit(l_hi / l0)
        if x_m in ell:
            shift[2] = _logit((np.exp(ell[x_m]) - l_hi) / (l0 - l_hi))
    return np.array([x_m, x_hi]), shift


def _chinchilla_offsets(log_d: np.ndarray, log_loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One pair's anchors ``(x_lo, x_hi)`` (its smallest and largest data sizes) and its
    coordinates' shift: the observed log loss at ``D_lo`` and the observed ratio at
    ``D_hi`` (the size term is left in them: a shift only has to land near the data)."""
    ell = {v: float(log_loss[log_d == v].mean()) for v in np.unique(log_d)}
    x_lo, x_hi = min(ell), max(ell)
    shift = np.array([ell[x_lo], 0.0, 0.0])
    if x_hi > x_lo:
        shift[1] = _logit(np.exp(ell[x_hi] - ell[x_lo]))
    else:  # one data size: a second anchor the rows do not pin
        x_lo = x_hi - 1.0
    return np.array([x_lo, x_hi]), shift


def _logit(p: float) -> float:
    p = float(np.clip(p, 0.05, 0.95))
    return float(np.log(p / (1 - p)))


@dataclass(frozen=True)
class AnchoredLaw:
    """A law's anchored coordinates: the parameters they replace, in the map's order."""

    names: tuple[str, ...]
    to_log: Callable[..., Any]
    log_prior: Callable[..., tuple[Any, Any]]
    offsets: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    feature: str  # the row feature the anchors are sizes of


ANCHORED_LAWS: dict[str, AnchoredLaw] = {
    "rectified": AnchoredLaw(("B", "D_l", "beta", "E"), rectified_log_params,
                             rectified_log_prior, _rectified_offsets, "log_f"),
    "chinchilla": AnchoredLaw(("B", "beta", "E"), chinchilla_log_params,
                              chinchilla_log_prior, _chinchilla_offsets, "log_D"),
}


@dataclass(frozen=True)
class Anchors:
    """Per pair: whether it is sampled anchored (it has rows), its anchors and shift."""

    names: tuple[str, ...]
    mapped: np.ndarray  # (pairs,) bool
    x: np.ndarray  # (pairs, anchors): log sizes in reference units
    offset: np.ndarray  # (pairs, len(names))


def anchored_names(spec: Any) -> tuple[str, ...]:
    """The parameters a spec samples in anchored coordinates (none unless it asks)."""
    if spec.coordinates != "anchored":
        return ()
    return ANCHORED_LAWS[spec.law].names


def prepare(data: ModelData) -> ModelData:
    """``data`` with its pairs' anchors when its spec asks for anchored coordinates.

    Only NumPyro's cold fits call this; every other reader of the model (the prior
    predictive, warm refits, PSIS-LOO, the PyMC back end) samples the spec's own sites.
    """
    import dataclasses

    names = anchored_names(data.spec)
    if not names:
        return data
    law = ANCHORED_LAWS[data.spec.law]
    pairs = data.n_sources * data.n_targets
    pair_idx = np.asarray(data.pair_idx)
    size = np.asarray(data.features[law.feature], dtype=np.float64)
    log_loss = np.asarray(data.log_loss, dtype=np.float64)
    mapped = np.asarray(data.has_rows("pair"), dtype=bool)
    x, offset = np.zeros((pairs, 2)), np.zeros((pairs, len(names)))
    x[:, 0] = -1.0  # pairs without rows: any anchors (their coordinates are not mapped)
    # Rows grouped by pair once (a stable sort keeps each pair's rows in table order):
    # a mask per pair would read every row once for every pair.
    by_pair = np.argsort(pair_idx, kind="stable")
    starts = np.searchsorted(pair_idx[by_pair], np.arange(pairs + 1))
    for k in np.flatnonzero(mapped):
        rows = by_pair[starts[k]:starts[k + 1]]
        x[k], offset[k] = law.offsets(size[rows], log_loss[rows])
    return dataclasses.replace(data, anchor=Anchors(names, mapped, x, offset))


def sample_pairs(data: ModelData, priors: Mapping[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Inside the model: sample the anchored site and return each mapped parameter's log
    value over pairs (recorded as ``log_<name>``).

    ``priors[name]`` is the ``(loc over pairs, sd)`` of the parameter's centred pair level
    (:func:`bayes_transfer.model.group_prior`). A pair with rows contributes its prior in
    the anchored coordinates (the law's ``log_prior``: the hierarchical prior at the mapped
    values times the map's Jacobian); a pair without rows is non-centred,
    ``log = loc + sd z``.
    """
    anchors = data.anchor
    law = ANCHORED_LAWS[data.spec.law]
    pairs, k = anchors.offset.shape
    base = dist.Normal(0.0, 1.0)
    z = numpyro.sample(SITE, base.expand((pairs, k)).to_event(2))
    loc = jnp.stack([jnp.broadcast_to(priors[n][0], (pairs,)) for n in anchors.names], -1)
    sd = jnp.stack([jnp.broadcast_to(priors[n][1], (pairs,)) for n in anchors.names], -1)
    mapped = jnp.asarray(anchors.mapped)
    a, x = z + anchors.offset, jnp.asarray(anchors.x)
    curve, log_prior = law.log_prior(a, x, loc, sd)
    value = jnp.where(mapped[:, None], curve, loc + sd * z)
    # The sampled site's own N(0, 1) density is right for the non-centred pairs; for the
    # anchored ones it is replaced by their prior in the anchored coordinates.
    swap = log_prior - base.log_prob(z).sum(-1)
    numpyro.factor("anchor_prior", jnp.sum(jnp.where(mapped, swap, 0.0)))
    return {n: numpyro.deterministic(f"log_{n}", value[:, j])
            for j, n in enumerate(anchors.names)}


def spec_sites(samples: dict[str, np.ndarray], data: ModelData) -> dict[str, np.ndarray]:
    """Draws of the anchored model on the spec's own sites: ``log_<name>`` is kept (the
    site of a centred level), and where some pairs have no rows the partially centred
    ``<name>_pc_pair`` is rebuilt (the log value where a pair has rows, its offset z where
    not; see :func:`bayes_transfer.model.param_effect`)."""
    anchors = data.anchor
    out = {k: v for k, v in samples.items() if k != SITE}
    if anchors.mapped.all():
        return out
    z = samples[SITE]
    for j, name in enumerate(anchors.names):
        out[f"{name}_pc_pair"] = np.where(anchors.mapped, out[f"log_{name}"], z[..., j])
    return out
