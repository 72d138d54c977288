"""The hierarchical model: a spec and a run table become a NumPyro model.

The model is a plain function of data, :func:`hierarchical_model`. Each law parameter
is built by :func:`param_effect` at its level (global, source, target or pair) with
non-centred crossed effects, e.g. for a pair-level gap::

    log G[s, t] = G_mu + G_sd_source * G_z_source[s] + G_sd_target * G_z_target[t]
                       + G_sd_pair * G_z_pair[s, t]

Pairs are the full source x target grid: a pair with no rows keeps its prior pair
residual, so its gap posterior is the predictive from its source's and target's effects.
The likelihood is on the log loss: Student-t (or Normal) around the law's log mean,
with scale ``sqrt(sigma^2 + (loss_se / loss)^2)``.

Example (NUTS on the model directly; :func:`bayes_transfer.inference.fit` does this with
diagnostics, a good start and named dims)::

    >>> import jax, numpyro
    >>> from bayes_transfer import simulate
    >>> from bayes_transfer.spec import load_spec
    >>> spec = load_spec("transfer-gap")
    >>> design = simulate.design_grid(["a", "b"], ["x"], params=[1e6],
    ...     pretrain_tokens=[1e6, 1e8], finetune_tokens=[1e4, 1e6])
    >>> table, _ = select_rows(spec, simulate.simulate(spec, design, seed=0).runs)
    >>> mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(hierarchical_model), num_warmup=100,
    ...                           num_samples=100, progress_bar=False)
    >>> mcmc.run(jax.random.key(0), model_data(spec, table))
    >>> mcmc.get_samples()["log_G"].shape  # 100 draws of the log gap of 2 pairs
    (100, 2)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

from bayes_transfer import anchor
from bayes_transfer.data import Problem, RunTable, RunTableError
from bayes_transfer.laws import Units, features, get_law
from bayes_transfer.runtime import atomic_compilation_cache
from bayes_transfer.spec import AUTO_CENTRE_ROWS, ModelSpec, ParamSpec

# Every fit compiles through this module's model: from here on, an entry of JAX's
# persistent compilation cache (if one is in use) is written atomically and a damaged
# one heals (a kill mid-write otherwise leaves it unreadable for good).
atomic_compilation_cache()

__all__ = ["ModelData", "model_data", "hierarchical_model", "latent_sites", "param_effect",
           "crossed", "centring", "at_rows", "group_prior", "site_dims", "select_rows"]


@dataclass(frozen=True)
class ModelData:
    """Everything the model needs, as arrays; built once per fit by :func:`model_data`."""

    spec: ModelSpec
    features: Mapping[str, Any]
    log_loss: Any
    log_loss_se: Any
    source_idx: Any
    target_idx: Any
    n_sources: int
    n_targets: int
    units: Units = Units()
    # Which groups of each level have rows (numpy bools); None: treat every group as having
    # rows (e.g. when the arrays are traced, as in a vmapped refit).
    groups_with_rows: Mapping[str, np.ndarray] | None = None
    # A bool per row: rows that are False add nothing to the likelihood. A refit pads its
    # table to a bucketed size with such rows, so one compiled sampler serves tables that
    # grow by a few rows (see bayes_transfer.refit). None: every row counts.
    row_mask: Any = None
    # Rows per group of each level (numpy ints), for centered = "auto"; None: decide as
    # centered = true does (every group with rows centred).
    rows_per_group: Mapping[str, np.ndarray] | None = None
    # Per parameter name, a bool per group of its innermost level that overrides the spec's
    # centring: a warm refit chooses it from the previous posterior (bayes_transfer.refit),
    # and the model then also records the level's mean as <name>_loc_<level>.
    centre: Mapping[str, np.ndarray] | None = None
    # Per pair-level parameter, the source- and target-level parameters its pairs are
    # sheared off, each as (slope per pair, centre per group): a Laplace-started fit
    # samples log_<name> - sum slope * (log_<other> - centre) (bayes_transfer.shear).
    shear: Mapping[str, Mapping[str, tuple[Any, Any]]] | None = None
    # Crossed parameters whose mean a sheared fit samples as <name>_sh_mu = <name>_mu +
    # the mean of the source and target effects over pairs, each with the levels whose
    # effects' deviations from their mean it samples centred (bayes_transfer.shear).
    mean_shift: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # Anchored coordinates of the pairs (bayes_transfer.anchor), set by a cold NumPyro
    # fit of a spec with [sampler] coordinates = "anchored"; None: the spec's own sites.
    anchor: Any = None

    @property
    def pair_idx(self) -> Any:
        return self.source_idx * self.n_targets + self.target_idx

    def has_rows(self, level: str) -> np.ndarray:
        """A bool per group of ``level``: does the table have rows for it?"""
        if self.groups_with_rows is None:
            return np.ones(_group_size(level, self), dtype=bool)
        return self.groups_with_rows[level]

    @property
    def n_rows(self) -> int:
        return int(self.log_loss.shape[0])


def select_rows(spec: ModelSpec, table: RunTable) -> tuple[RunTable, int]:
    """The rows the spec's law can explain, and how many rows were left out.

    With ``rows = "all"`` (the default) a row the law cannot explain is an error naming
    it; with ``rows = "applicable"`` such rows are left out and counted.
    """
    law = get_law(spec.law)
    words = law.row_needs
    ok = law.explains(table.df)
    if ok.all():
        return table, 0
    if spec.rows == "applicable":
        if not ok.any():
            raise RunTableError(table.name, [Problem(None, None, f"no row fits law "
                                                     f"{law.name}: it {words}")])
        return table.subset(ok, drop_unused=True), int((~ok).sum())
    bad = np.flatnonzero(~ok)
    problems = [
        Problem(int(i) + 1, "finetune_tokens",
                f"law {law.name} {words}; set rows = \"applicable\" in the spec to fit only "
                "the rows it explains")
        for i in bad[:5]
    ]
    raise RunTableError(table.name, problems, total=len(bad))


def model_data(spec: ModelSpec, table: RunTable, units: Units | None = None) -> ModelData:
    """Arrays for :func:`hierarchical_model` from a validated table (rows already selected).

    ``units`` (default: the spec's, ``auto`` from the table) are the reference scales the
    features are measured in; a posterior keeps them so predictions use the same ones.
    """
    df = table.df
    units = units or spec.resolve_units(df)
    feats = {k: jnp.asarray(v) for k, v in features(df, units).items()}
    n_sources, n_targets = len(table.sources), len(table.targets)
    counts = {"source": np.bincount(table.source_idx, minlength=n_sources),
              "target": np.bincount(table.target_idx, minlength=n_targets),
              "pair": np.bincount(table.source_idx * n_targets + table.target_idx,
                                  minlength=n_sources * n_targets)}
    with_rows = {"source": counts["source"] > 0, "target": counts["target"] > 0,
                 "pair": table.observed_pairs}
    loss = df["loss"].to_numpy(np.float64)
    se = df["loss_se"].to_numpy(np.float64) if spec.likelihood.use_loss_se else 0.0 * loss
    return ModelData(
        spec=spec,
        features=feats,
        log_loss=jnp.asarray(np.log(loss)),
        # The delta method: sd(log L) ~= se(L) / L.
        log_loss_se=jnp.asarray(se / loss),
        source_idx=jnp.asarray(table.source_idx),
        target_idx=jnp.asarray(table.target_idx),
        n_sources=n_sources,
        n_targets=n_targets,
        units=units,
        groups_with_rows=with_rows,
        rows_per_group=counts,
    )


def _group_size(group: str, data: ModelData) -> int:
    return {"source": data.n_sources, "target": data.n_targets,
            "pair": data.n_sources * data.n_targets}[group]


def param_effect(p: ParamSpec, data: ModelData, shift: Any = None) -> Any:
    """Sample one parameter's sites; return its log value over its level's groups.

    Returns a scalar (global) or an array over sources, targets or pairs, recorded as
    the deterministic site ``log_<name>``. ``shift`` (from :func:`bayes_transfer.shear.
    shift`, only for a parameter whose ``log_<name>`` is itself a site) moves the
    sampled coordinate: the sampler sees ``log_<name> - shift``, the model is the same.
    """
    name = p.name
    if p.pooling == "none":
        shape = () if p.level == "global" else (_group_size(p.level, data),)
        return _log_site(p, p.loc, p.scale, shape, shift)
    override = data.centre is not None and name in data.centre
    if p.centered or override:
        # Centred innermost level: when every group has many precise rows, the data pin
        # log_<name> itself, and the non-centred z would have to move in concert with mu
        # (and u, v) along a long ridge; sampling log_<name> directly removes the ridge.
        value, sd = group_prior(p, data)
        n = _group_size(p.level, data)
        centre = centring(p, data)
        if not override and centre.all():
            return _log_site(p, value, sd, (n,), shift)
        # Groups without rows (or, "auto", with few) have only or mostly their prior, and
        # centred they would make a funnel with sd: partially centred (Papaspiliopoulos et
        # al. 2007), centred where c = 1 and non-centred where c = 0.
        c = jnp.asarray(centre, dtype=jnp.result_type(float))
        value = jnp.broadcast_to(value, (n,))
        if override:  # the refit maps its draws back to the spec's own sites with it
            numpyro.deterministic(f"{name}_loc_{p.level}", value)
        raw = numpyro.sample(f"{name}_pc_{p.level}", group_distribution(p, c * value, sd**c))
        return numpyro.deterministic(f"log_{name}", value + sd ** (1 - c) * (raw - c * value))
    value = _level_mean(p, data)
    return numpyro.deterministic(f"log_{name}", value + _offsets(p, p.level, data))


def _level_mean(p: ParamSpec, data: ModelData) -> Any:
    # The population mean plus, when crossed, the source and target effects (and the
    # interaction): what the innermost level's groups are drawn around.
    if not crossed(p, data):
        return numpyro.sample(f"{p.name}_mu", dist.Normal(p.loc, p.scale))
    if p.name not in data.mean_shift:
        mu = numpyro.sample(f"{p.name}_mu", dist.Normal(p.loc, p.scale))
        return mu + _crossed_effects(p, data)
    # Sheared mean: the pairs pin mu + mean(effects), not mu, so the sampler moves that
    # sum (a translation of mu given the effects: no Jacobian) and the effects' common
    # shift no longer drags every pair's prior mean (bayes_transfer.shear).
    effects = _crossed_effects(p, data)
    moved = numpyro.sample(sheared_site(p.name, "mu"),
                           dist.Normal(p.loc + effects.mean(), p.scale))
    mu = numpyro.deterministic(f"{p.name}_mu", moved - effects.mean())
    return mu + effects


def _crossed_effects(p: ParamSpec, data: ModelData) -> Any:
    # u_s + v_t (+ the rank-K interaction) over all pairs.
    u = _offsets(p, "source", data)
    v = _offsets(p, "target", data)
    value = (u[:, None] + v[None, :]).reshape(-1)
    if p.factors:
        value = value + _interaction(p, data)
    return value


def group_prior(p: ParamSpec, data: ModelData) -> tuple[Any, Any]:
    """Sample the levels above a centred parameter's groups; return the ``(loc, sd)`` its
    groups are drawn from (by :func:`param_effect`, or :mod:`bayes_transfer.anchor` for
    the pairs it maps)."""
    loc = _level_mean(p, data)
    return loc, numpyro.sample(f"{p.name}_sd_{p.level}", dist.HalfNormal(p.group_scale))


def sheared_site(name: str, level: str) -> str:
    """The sampled site of a sheared parameter (``G`` at pair level: ``G_sh_pair``)."""
    return f"{name}_sh_{level}"


def rotated_site(name: str, level: str) -> str:
    """The sampled site of a mean-sheared parameter's rotated offsets (``G_w_source``):
    all of them, or only the common shift where the deviations are centred."""
    return f"{name}_w_{level}"


def deviation_site(name: str, level: str) -> str:
    """The sampled site of a mean-sheared parameter's centred deviations
    (``G_dev_source``)."""
    return f"{name}_dev_{level}"


def _log_site(p: ParamSpec, loc: Any, scale: Any, shape: tuple[int, ...], shift: Any) -> Any:
    """Sample ``log_<name> ~ Normal(loc, scale)`` over ``shape``, or with a ``shift``
    sample ``<name>_sh_<level> = log_<name> - shift`` from the prior moved by it (a
    translation given the other parameters: no Jacobian) and record ``log_<name>`` as a
    deterministic site."""
    if shift is None:
        return numpyro.sample(f"log_{p.name}", group_distribution(p, loc, scale).expand(shape))
    moved = numpyro.sample(sheared_site(p.name, p.level),
                           group_distribution(p, loc - shift, scale).expand(shape))
    return numpyro.deterministic(f"log_{p.name}", moved + shift)


def centring(p: ParamSpec, data: ModelData) -> np.ndarray:
    """A bool per group of ``p``'s level: sample that group centred (True) or not.

    ``centered = true``: every group with rows. ``centered = "auto"``: every group with at
    least ``AUTO_CENTRE_ROWS`` rows, where the rows pin the group's value (simulated
    1,000 pairs x 10 rows: non-centred ran at the maximum tree depth, R-hat 1.66; centred
    127 leapfrog steps a draw). Both back ends use this rule.
    """
    if data.centre is not None and p.name in data.centre:
        return data.centre[p.name]  # a warm refit's (possibly traced) 0/1 per group
    has_rows = data.has_rows(p.level)
    if p.centered != "auto" or data.rows_per_group is None:
        return has_rows
    return data.rows_per_group[p.level] >= AUTO_CENTRE_ROWS


def crossed(p: ParamSpec, data: ModelData) -> bool:
    """Does ``p`` get crossed source and target effects on this table?

    With one target (or one source) the source (target) effect and the pair residual
    index the same groups: two offsets for one quantity make a ridge NUTS cannot mix
    (R-hat 2.6 on a one-target table of fine-tuning curves). There a crossed
    parameter is partially pooled over pairs (``mu + w_st``), the same model without the
    redundant level. Both back ends use this rule.
    """
    return (p.level == "pair" and p.pooling == "crossed" and data.n_sources > 1
            and data.n_targets > 1)


def _offsets(p: ParamSpec, group: str, data: ModelData) -> Any:
    # Non-centred: sd * z with z ~ N(0, 1) avoids the funnel when a group has few rows.
    # A level in fixed_sd keeps its prior sd: too few groups to learn their spread.
    sd = (p.group_scale if group in p.fixed_sd
          else numpyro.sample(f"{p.name}_sd_{group}", dist.HalfNormal(p.group_scale)))
    n = _group_size(group, data)
    if p.name in data.mean_shift:
        # With the mean sheared, the groups' common shift is a free direction, but spread
        # over n coordinates that the data pin apart: a diagonal mass matrix crosses it in
        # many small steps (at 1,000 pairs the four slowest directions, each the common
        # shift of one level's z). Rotated, it is one coordinate, w[0].
        if group not in data.mean_shift[p.name]:
            w = numpyro.sample(rotated_site(p.name, group), dist.Normal(0.0, 1.0).expand((n,)))
            return sd * numpyro.deterministic(f"{p.name}_z_{group}", helmert(w))
        # Where the rows pin each group's deviation from the mean, sd * w[1:] is sampled
        # itself (centred): non-centred, a step of sd rescales all of them against the
        # data (at 1,000 pairs the sds were then the slowest sites).
        w0 = numpyro.sample(rotated_site(p.name, group), dist.Normal(0.0, 1.0).expand((1,)))
        dev = numpyro.sample(deviation_site(p.name, group),
                             dist.Normal(0.0, sd).expand((n - 1,)))
        effect = helmert(jnp.concatenate([sd * w0, dev]))
        numpyro.deterministic(f"{p.name}_z_{group}", effect / sd)
        return effect
    z = numpyro.sample(f"{p.name}_z_{group}", group_distribution(
        p, 0.0, 1.0, innermost=group == p.level).expand((n,)))
    return sd * z


def group_distribution(p: ParamSpec, loc: Any, scale: Any, innermost: bool = True
                       ) -> dist.Distribution:
    """How the groups of ``p``'s innermost level scatter around their level's value:
    ``Normal(loc, scale)``, or Student-t with ``p.residual_nu`` degrees of freedom.
    Upper levels (``innermost=False``: a crossed pair's source and target effects) stay
    normal, as do unpooled parameters' priors (the spec refuses ``residual_nu`` there).

    Example:
        >>> from bayes_transfer.spec import ParamSpec
        >>> p = ParamSpec("G", level="pair", pooling="crossed", residual_nu=3.0)
        >>> type(group_distribution(p, 0.0, 1.0)).__name__
        'StudentT'
    """
    if p.residual_nu is None or not innermost:
        return dist.Normal(loc, scale)
    return dist.StudentT(p.residual_nu, loc, scale)


def helmert(w: Any) -> Any:
    """``Q w`` for the orthonormal (Helmert) basis ``Q`` whose first column is constant:
    ``w[..., 0]`` sets the mean (``w0 / sqrt(n)``), the rest the deviations from it. An
    orthogonal map, so ``w ~ N(0, I)`` gives ``z ~ N(0, I)``. O(n), last axis.

    Example:
        >>> import numpy as np
        >>> z = helmert(np.array([2.0, 0.0, 0.0, 0.0]))
        >>> np.allclose(z, 1.0), np.allclose(helmert_inverse(z), [2.0, 0.0, 0.0, 0.0])
        (True, True)
    """
    xp = jnp if isinstance(w, jnp.ndarray) else np
    n = w.shape[-1]
    k = xp.arange(1, n)
    c = 1.0 / xp.sqrt(k * (k + 1.0))  # column k of Q: c_k on rows < k, -k c_k on row k
    tail = w[..., 1:] * c
    # Row j gets c_k w_k from every column k > j, and -j c_j w_j from its own column.
    later = xp.flip(xp.cumsum(xp.flip(tail, -1), -1), -1)
    later = xp.concatenate([later, xp.zeros_like(w[..., :1])], -1)
    own = xp.concatenate([xp.zeros_like(w[..., :1]), -k * tail], -1)
    return w[..., :1] / xp.sqrt(n) + later + own


def helmert_inverse(z: Any) -> Any:
    """``Q^T z``, the inverse of :func:`helmert` (``Q`` is orthogonal)."""
    xp = jnp if isinstance(z, jnp.ndarray) else np
    n = z.shape[-1]
    k = xp.arange(1, n)
    c = 1.0 / xp.sqrt(k * (k + 1.0))
    before = xp.cumsum(z, -1)[..., :-1]  # sum of rows < k, for k = 1 .. n-1
    rest = c * (before - k * z[..., 1:])
    return xp.concatenate([z.sum(-1, keepdims=True) / xp.sqrt(n), rest], -1)


def _interaction(p: ParamSpec, data: ModelData) -> Any:
    # Rank-K interaction over all pairs: with a, b ~ N(0, I) each product a_s . b_t has
    # prior sd sqrt(K), so sd_factor / sqrt(K) keeps its scale that of the pair residual.
    sd = numpyro.sample(f"{p.name}_sd_factor", dist.HalfNormal(p.group_scale))
    a = numpyro.sample(f"{p.name}_a_source",
                       dist.Normal(0.0, 1.0).expand((data.n_sources, p.factors)))
    b = numpyro.sample(f"{p.name}_b_target",
                       dist.Normal(0.0, 1.0).expand((data.n_targets, p.factors)))
    return (sd / np.sqrt(p.factors)) * (a @ b.T).reshape(-1)


def at_rows(level: str, value: Any, source_idx: Any, target_idx: Any, n_targets: int) -> Any:
    """Index a parameter's log value (last axis over its level's groups) at table rows.

    Works on model arrays of shape ``(groups,)`` and on posterior draws ``(draws, groups)``.
    """
    if level == "global":
        return value[..., None] if np.ndim(value) else value
    idx = {"source": source_idx, "target": target_idx,
           "pair": source_idx * n_targets + target_idx}[level]
    return value[..., idx]


def hierarchical_model(data: ModelData, observed: bool = True) -> None:
    """The NumPyro model: priors, crossed effects, the law, and the likelihood.

    With ``observed=False`` the log losses are sampled instead of conditioned on (prior
    predictive simulation).
    """
    spec = data.spec
    law = get_law(spec.law)
    sheared = data.shear or {}
    log_values: dict[str, Any] = {}
    # Sheared parameters after the ones their shift reads: pairs' last, and in spec order
    # among themselves (bayes_transfer.shear orders its slopes so). Without a shear the
    # spec's order, which the sites' start values (and so a seed's draws) depend on.
    order = list(spec.params)
    if sheared:
        order.sort(key=lambda n: (n in sheared, spec.params[n].level == "pair"))
    anchored = anchor.anchored_names(spec) if data.anchor is not None and observed else ()
    anchored_priors = {}
    for name in order:
        if name in anchored:
            anchored_priors[name] = group_prior(spec.params[name], data)
            if len(anchored_priors) == len(anchored):
                log_values.update(anchor.sample_pairs(data, anchored_priors))
            continue
        shift = None
        if name in sheared:
            from bayes_transfer.shear import shift_of

            shift = shift_of(name, sheared[name], log_values, data)
        log_values[name] = param_effect(spec.params[name], data, shift)
    log_params = {
        name: at_rows(p.level, log_values[name], data.source_idx, data.target_idx,
                      data.n_targets)
        for name, p in spec.params.items()
    }
    mean = law.log_loss(data.features, log_params)
    sigma = numpyro.sample("sigma", dist.HalfNormal(spec.likelihood.sigma))
    scale = jnp.sqrt(sigma**2 + data.log_loss_se**2)
    with numpyro.plate("row", data.n_rows):
        if data.row_mask is None:
            numpyro.sample("log_loss", _likelihood(spec, mean, scale),
                           obs=data.log_loss if observed else None)
        else:
            with numpyro.handlers.mask(mask=data.row_mask):
                numpyro.sample("log_loss", _likelihood(spec, mean, scale),
                               obs=data.log_loss if observed else None)


def latent_sites(data: ModelData) -> dict[str, Any]:
    """Name -> (shape, support) of the model's latent sample sites, in the model's order.

    The model is traced abstractly (``jax.eval_shape``): run eagerly, every operation of
    the trace was dispatched, and on a new row bucket compiled, one by one (1.5 s of a
    ~9 s warm refit of a 48-row table, 2026-12-03); only shapes and supports are needed.
    """
    supports: dict[str, Any] = {}

    def latent_values():
        tr = handlers.trace(handlers.seed(hierarchical_model, 0)).get_trace(data)
        latent = {name: site for name, site in tr.items()
                  if site["type"] == "sample" and not site["is_observed"]}
        supports.update({name: site["fn"].support for name, site in latent.items()})
        return {name: site["value"] for name, site in latent.items()}

    shapes = jax.eval_shape(latent_values)
    return {name: (tuple(shapes[name].shape), support) for name, support in supports.items()}


def _likelihood(spec: ModelSpec, mean: Any, scale: Any) -> dist.Distribution:
    if spec.likelihood.family == "normal":
        return dist.Normal(mean, scale)
    return dist.StudentT(spec.likelihood.nu, mean, scale)


def site_dims(spec: ModelSpec) -> dict[str, list[str]]:
    """Named dims of every site, for ArviZ (``log_G`` -> ``["pair"]``)."""
    dims: dict[str, list[str]] = {"log_loss": ["row"]}
    for p in spec.params.values():
        for site, d in p.site_names.items():
            dims[site] = list(d)
        dims[f"log_{p.name}"] = [] if p.level == "global" else [p.level]
    return dims
