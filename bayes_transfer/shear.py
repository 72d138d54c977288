"""Shear each pair's parameters off the source and target parameters they trade with.

With many pairs a target's floor ``E_t`` and exponent ``beta_t`` are pinned by its pairs
only jointly with each pair's own gap and coefficient: near the reference ``f`` a pair's
loss is ``A p^-alpha + G + E``, so a higher floor means a lower gap in every pair of the
target. Sampled as they are, ``E_t`` is narrow given the pairs and wide across them, a
direction a diagonal mass matrix crosses in many small steps (simulated ``transfer-gap``,
10 rows a pair, centred: 127 leapfrog steps a draw at 1,000 pairs, 255 at 10,000; worst
bulk ESS 33-85 of 1,000 draws, all on floors, exponents and the gaps of their pairs).

A Laplace-started fit instead samples, for a pair-level parameter ``X`` whose
``log_X`` is itself a site, the sheared coordinate

    log_X[s, t] - sum_Y slope_Y[s, t] * (log_Y[g] - centre_Y[g])

over the source- and target-level parameters ``Y`` (``g`` the pair's source or target),
with slopes ``-H_xx^-1 H_xy`` from the Hessian at the posterior mode (``H_xx`` the
block of the pair's own sheared parameters): the slopes that remove the coupling of
the pair with ``Y`` there. A target's floor is likewise sampled as its residual on the
target's exponent (their correlation was 0.9). Given the ``Y`` values each is a
translation, so the model, its density and its posterior are unchanged (no Jacobian);
only the coordinates NUTS moves in differ. The draws are reported on the spec's own
sites (the sheared ones are dropped). The Hessian entries cost one Hessian-vector
product per ``Y`` and per sheared parameter (:func:`probes`): a pair's coordinate
couples with one group of each ``Y`` and with no other pair, so the product with the
indicator of all of a site's coordinates reads ``H[x, y]`` at every pair at once.

A crossed parameter's pairs are drawn around ``mu + u_s + v_t``; once the pairs are
pinned, so is that sum, and ``mu`` moves only if every ``u_s`` (or ``v_t``) shifts back.
The fit samples ``mu`` plus the mean of the effects instead (:func:`mean_shifted`), the
offsets of each level rotated so that their common shift is one coordinate
(:func:`bayes_transfer.model.helmert`), and, where the rows inform them more than their
prior, the deviations from that shift centred (``sd * w[1:]`` sampled itself): at
1,000 simulated pairs the means, then the common shifts, then the sds had been the
slowest directions, one after the other.

``fit`` does all this by itself with a Laplace start (``init="laplace"``, or ``"auto"``
from 2,000 rows) unless ``shear=False``; the file records what it sheared (``sheared``).

Example:
    >>> from dataclasses import replace
    >>> from bayes_transfer import simulate
    >>> from bayes_transfer.model import model_data
    >>> from bayes_transfer.spec import load_spec
    >>> spec = load_spec("transfer-gap")
    >>> spec = replace(spec, params={n: replace(p, centered=True)
    ...                              for n, p in spec.params.items()})
    >>> design = simulate.design_grid(["a", "b"], ["x", "y"], params=[1e6],
    ...     pretrain_tokens=[1e6, 1e8], finetune_tokens=[1e4, 1e6])
    >>> plan(model_data(spec, simulate.simulate(spec, design, seed=0).runs))
    {'A': ('alpha', 'beta', 'E'), 'G': ('alpha', 'beta', 'E')}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from bayes_transfer.model import (
    ModelData,
    centring,
    crossed,
    deviation_site,
    helmert_inverse,
    rotated_site,
)
from bayes_transfer.model import sheared_site as site
from bayes_transfer.spec import ParamSpec

__all__ = ["Shear", "plan", "mean_shifted", "probes", "shift_of", "from_laplace", "sheared_start", "spec_sites", "site"]


def _direct(p: ParamSpec, data: ModelData) -> bool:
    # Is log_<name> itself a sample site? Unpooled, or centred in every group.
    if data.anchor is not None and p.name in data.anchor.names:
        return False  # sampled in anchored coordinates (bayes_transfer.anchor)
    if p.pooling == "none":
        return True
    return bool(p.centered) and bool(np.all(centring(p, data)))


def plan(data: ModelData) -> dict[str, tuple[str, ...]]:
    """Which pair-level parameters to shear, and off which source and target parameters.

    Only parameters sampled as ``log_<name>`` themselves take part (a non-centred group
    is already a standardised offset); nothing when a refit chose its own centring
    (``data.centre``), or with one source and one target (nothing to share).
    """
    spec = data.spec
    if data.centre or data.n_sources * data.n_targets < 2:
        return {}
    others = tuple(n for n, p in spec.params.items()
                   if p.level in ("source", "target") and _direct(p, data))
    if not others:
        return {}
    return {n: others for n, p in spec.params.items()
            if p.level == "pair" and _direct(p, data)}


def mean_shifted(data: ModelData, shear_plan: Mapping[str, tuple[str, ...]],
                 variances: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """The crossed parameters among the sheared ones, whose mean ``<name>_mu`` the fit
    samples as ``<name>_sh_mu``, the mean plus the mean of its source and target effects;
    each with the levels whose effects' deviations are sampled centred.

    A sheared pair's value is pinned by its rows, so with the mean sampled as it is a step
    of ``<name>_mu`` moves the prior mean of every pair and the effects must shift back
    in concert: at 1,000 and 10,000 simulated pairs ``A_mu`` and ``G_mu`` were the sites
    of least bulk ESS (37-232 of 1,000 draws). The sum is what the pairs pin.

    A level's deviations are centred where the Laplace start's ``variances`` (in the
    spec's coordinates) say its rows inform its offsets ``z`` more than their N(0, 1)
    prior does: a mean start variance under 1/2.
    """
    out = {}
    for name in shear_plan:
        if crossed(data.spec.params[name], data):
            out[name] = tuple(g for g in ("source", "target")
                              if g not in data.spec.params[name].fixed_sd
                              and float(np.mean(np.asarray(variances[f"{name}_z_{g}"]))) < 0.5)
    return out


def _mean_shift_of(name: str, init: Mapping[str, Any], data: ModelData) -> Any:
    # The mean of a crossed parameter's effects over pairs, from unconstrained start
    # values (leading chain axis): sd * mean(z) per level, the interaction's mean.
    p = data.spec.params[name]
    total = 0.0
    for level in ("source", "target"):
        sd = (p.group_scale if level in p.fixed_sd
              else jnp.exp(init[f"{name}_sd_{level}"]))
        total = total + sd * init[f"{name}_z_{level}"].mean(-1)
    if p.factors:
        a, b = init[f"{name}_a_source"], init[f"{name}_b_target"]
        inter = jnp.einsum("csk,ctk->c", a, b) / (a.shape[1] * b.shape[1])
        total = total + jnp.exp(init[f"{name}_sd_factor"]) / np.sqrt(p.factors) * inter
    return total


def _group_of_pairs(level: str, data: ModelData) -> np.ndarray:
    # The source (or target) of each pair, in the model's pair order.
    pairs = np.arange(data.n_sources * data.n_targets)
    return pairs // data.n_targets if level == "source" else pairs % data.n_targets


def shift_of(name: str, shear: Mapping[str, tuple[Any, Any]],
             log_values: Mapping[str, Any], data: ModelData) -> Any:
    """``sum_Y slope_Y * (log_Y[g] - centre_Y[g])`` over ``name``'s groups (``g`` the
    group of ``Y`` each belongs to), from the ``log_values`` already sampled (the model
    calls it before sampling ``name``)."""
    level = data.spec.params[name].level
    total = 0.0
    for other, (slope, centre) in shear.items():
        same = data.spec.params[other].level == level
        g = slice(None) if same else _group_of_pairs(data.spec.params[other].level, data)
        total = total + slope * (log_values[other][g] - centre[g])
    return total


def probes(shear_plan: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The sites whose Hessian-vector products :func:`from_laplace` needs: every ``Y``
    (their couplings with the pairs and with each other), and the sheared parameters
    themselves (a pair's own block: its gap with its coefficient)."""
    names = set(shear_plan) | {y for ys in shear_plan.values() for y in ys}
    return sorted(f"log_{n}" for n in names)


def _pair_blocks(names: list[str], curvature: Mapping[str, Any],
                 probed: Mapping[str, Mapping[str, Any]]) -> np.ndarray:
    """Per pair, the Hessian block of its sheared parameters, ``(pairs, K, K)``: the
    diagonal from ``curvature``, ``H[a, b]`` from the product with ``b``'s indicator read
    at ``a`` (a pair's coordinate couples with no other pair's)."""
    k = len(names)
    n = len(np.asarray(curvature[f"log_{names[0]}"]))
    block = np.zeros((n, k, k))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            block[:, i, j] = (np.asarray(curvature[f"log_{a}"]) if i == j
                              else np.asarray(probed[f"log_{b}"][f"log_{a}"]))
    return block


@dataclass(frozen=True)
class Shear:
    """What :func:`from_laplace` read off the mode: ``slopes`` (``ModelData.shear``) and
    the variances of the coordinates NUTS then moves in, for its first mass matrix."""

    slopes: dict[str, dict[str, tuple[Any, Any]]]
    variances: dict[str, Any]


def _sequential(cov: np.ndarray, ok: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per group, ``cov``'s regression of each coordinate on the ones before it: slopes
    ``(groups, i)`` and residual variance ``(groups,)`` (a Schur complement); slopes 0
    and variance nan where ``ok`` is False."""
    out = []
    for i in range(cov.shape[1]):
        m = np.zeros((len(ok), i))
        if i:
            m = np.linalg.solve(cov[:, :i, :i], cov[:, :i, i][..., None])[..., 0]
        resid = cov[:, i, i] - np.einsum("pj,pj->p", m, cov[:, :i, i])
        good = ok & np.isfinite(resid) & (resid > 0)
        out.append((np.where(good[:, None], m, 0.0), np.where(good, resid, np.nan)))
    return out


def _inverse(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the inverse of a symmetric block and whether it was positive definite
    (where not, the identity's)."""
    k = block.shape[1]
    finite = np.isfinite(block).all(axis=(1, 2))
    safe = np.where(finite[:, None, None], block, np.eye(k))
    ok = finite & (np.linalg.eigvalsh(safe)[:, 0] > 0)
    return np.linalg.inv(np.where(ok[:, None, None], safe, np.eye(k))), ok


def _variance(resid: np.ndarray, curvature: Any) -> Any:
    # The Schur complement where sound, else the Laplace start's own 1 / curvature.
    h = np.asarray(curvature)
    fallback = np.where(np.isfinite(h) & (h > 0), 1.0 / np.where(h > 0, h, 1.0), 1.0)
    return jnp.asarray(np.where(np.isfinite(resid), resid, fallback),
                       dtype=jnp.result_type(float))


def from_laplace(data: ModelData, shear_plan: Mapping[str, tuple[str, ...]],
                 mode: Mapping[str, Any], curvature: Mapping[str, Any],
                 probed: Mapping[str, Mapping[str, Any]]) -> Shear:
    """The shear of ``data``'s pairs from a Laplace fit of its model in the spec's own
    coordinates (:func:`bayes_transfer.laplace.laplace_fit` with :func:`probes`).

    Per pair, with ``x`` its sheared parameters and ``H_xx`` their Hessian block at the
    mode, ``x`` given the ``y`` has mean slopes ``S = -H_xx^-1 H_xy`` and covariance
    ``H_xx^-1``: the pair is sampled as its residual on the ``y``, uncoupled from them at
    the mode. (Its own parameters stay coupled: decoupling them too, by regressing each
    on the ones before it, halved the leapfrog steps but the U-turns then came before
    the floors and exponents had moved, and their bulk ESS fell 4x: 1,000 simulated
    pairs, 2026-12-03.)

    Once the pairs no longer hold them, the ``y`` of one source or one target (a
    target's floor and exponent) have the precision ``H_yy + sum_pairs S^T H_xy``; where
    a level has several, each after the first is sampled as its residual on the ones
    before it (a target's floor and exponent correlate at 0.9). A block that is not
    positive definite at the mode is not sheared.
    """
    names = list(shear_plan)
    others = [n for n in data.spec.params if any(n in ys for ys in shear_plan.values())]
    cov, ok = _inverse(_pair_blocks(names, curvature, probed))
    h_xy = {y: np.nan_to_num(np.stack([np.asarray(probed[f"log_{y}"][f"log_{x}"])
                                       for x in names], 1)) for y in others}
    s_y = {y: np.where(ok[:, None], -np.einsum("pij,pj->pi", cov, h), 0.0)
           for y, h in h_xy.items()}
    f = jnp.result_type(float)
    slopes: dict[str, dict[str, tuple[Any, Any]]] = {}
    variances: dict[str, Any] = {}
    for i, name in enumerate(names):
        variances[site(name, "pair")] = _variance(np.where(ok, cov[:, i, i], np.nan),
                                                  curvature[f"log_{name}"])
        slopes[name] = {y: (jnp.asarray(s_y[y][:, i], dtype=f), jnp.asarray(mode[f"log_{y}"]))
                        for y in shear_plan[name]}
    for level in ("source", "target"):
        ys = [y for y in others if data.spec.params[y].level == level]
        if not ys:
            continue
        g = _group_of_pairs(level, data)
        n = len(np.asarray(curvature[f"log_{ys[0]}"]))
        block = np.zeros((n, len(ys), len(ys)))
        for a, ya in enumerate(ys):
            for b, yb in enumerate(ys):
                h = (np.asarray(curvature[f"log_{ya}"]) if a == b
                     else np.asarray(probed[f"log_{yb}"][f"log_{ya}"]))
                block[:, a, b] = h + np.bincount(
                    g, weights=np.einsum("pi,pi->p", s_y[ya], h_xy[yb]), minlength=n)
        ycov, yok = _inverse(block)
        for a, (m, resid) in enumerate(_sequential(ycov, yok)):
            key = f"log_{ys[a]}" if a == 0 else site(ys[a], level)
            variances[key] = _variance(resid, curvature[f"log_{ys[a]}"])
            if a:
                slopes[ys[a]] = {y: (jnp.asarray(m[:, j], dtype=f),
                                     jnp.asarray(mode[f"log_{y}"]))
                                 for j, y in enumerate(ys[:a])}
    return Shear(slopes, variances)


def sheared_start(init: Mapping[str, Any], variances: Mapping[str, Any],
                  data: ModelData, sheared: Shear) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Laplace start (``init`` with a leading chain axis; ``variances`` per site, both
    in the spec's coordinates) moved to the sheared coordinates of ``sheared``."""
    init, variances = dict(init), dict(variances)
    chains = next(iter(init.values())).shape[0]
    values = [{n: init[f"log_{n}"][c] for n in data.spec.params if f"log_{n}" in init}
              for c in range(chains)]
    for name, shear in sheared.slopes.items():
        level = data.spec.params[name].level
        shift = jnp.stack([shift_of(name, shear, values[c], data) for c in range(chains)])
        init[site(name, level)] = init.pop(f"log_{name}") - shift
        variances.pop(f"log_{name}")
    variances.update(sheared.variances)
    for name in data.mean_shift:
        # Given the effects the mean and its sheared site differ by a constant, so they
        # have the same curvature: the same start variance.
        init[site(name, "mu")] = init.pop(f"{name}_mu") + _mean_shift_of(name, init, data)
        variances[site(name, "mu")] = variances.pop(f"{name}_mu")
        for level in ("source", "target"):
            # The rotated offsets (model.helmert): the deviations get the groups' mean
            # start variance, the common shift its prior's (with the mean sheared, the
            # pairs no longer pin it).
            w = helmert_inverse(init.pop(f"{name}_z_{level}"))
            var = variances.pop(f"{name}_z_{level}")
            if level not in data.mean_shift[name]:
                init[rotated_site(name, level)] = w
                variances[rotated_site(name, level)] = (
                    jnp.full_like(var, jnp.mean(var)).at[0].set(1.0))
                continue
            # Centred deviations sd * w[1:], with the variance they have given the sd; the
            # sd given them has about 1 / (2 (n - 1)) on the log scale.
            sd = jnp.exp(init[f"{name}_sd_{level}"])
            init[rotated_site(name, level)] = w[..., :1]
            init[deviation_site(name, level)] = sd[..., None] * w[..., 1:]
            variances[rotated_site(name, level)] = jnp.ones_like(var[:1])
            variances[deviation_site(name, level)] = jnp.full_like(var[1:], jnp.mean(var)) * sd[0] ** 2
            variances[f"{name}_sd_{level}"] = jnp.full_like(
                variances[f"{name}_sd_{level}"], 0.5 / max(var.shape[0] - 1, 1))
    return init, variances


def spec_sites(samples: dict[str, Any], data: ModelData) -> dict[str, Any]:
    """Draws on the spec's own sites: the sheared coordinates dropped (``log_<name>``
    is recorded beside them)."""
    drop = ({site(n, data.spec.params[n].level) for n in (data.shear or {})}
            | {site(n, "mu") for n in data.mean_shift}
            | {named(n, g) for n in data.mean_shift for g in ("source", "target")
               for named in (rotated_site, deviation_site)})
    return {k: v for k, v in samples.items() if k not in drop}
