"""Model specs: a short statement of *what* to fit (law, pooling, priors, likelihood).

A spec is a TOML file (see ``models/``) or a dict. Every law parameter is positive and
modelled on the log scale; for each one the spec says at which level it varies and how
the groups share strength:

=========  ===========  ========================================================
level      pooling      log-parameter of group g
=========  ===========  ========================================================
global     none         ``mu``
source     partial      ``mu + sd_source * z_s``           (non-centred)
target     partial      ``mu + sd_target * z_t``
pair       crossed      ``mu + u_s + v_t + w_st`` with u, v, w non-centred normals
                        (``factors = K``: plus ``sd_factor * a_s . b_t``, rank K)
pair       partial      ``mu + w_st``
any        none         each group independently ``Normal(loc, scale)``
=========  ===========  ========================================================

with ``mu ~ Normal(loc, scale)`` and every ``sd_* ~ HalfNormal(group_scale)``.
``centered = true`` samples the innermost level's log-parameter directly around the
upper levels' sum (centred) instead of as ``sd * z``: better when every group has many
precise rows, worse (a funnel) when groups have few. ``centered = "auto"`` decides per
group from the table: centred where a group has at least ``AUTO_CENTRE_ROWS`` rows,
non-centred where it has fewer (one partially centred parameterisation).

``fixed_sd = ["target"]`` (or ``"source"``; crossed pairs only) gives that level's offsets
the fixed prior sd ``group_scale`` instead of a learned ``sd_*``: a factor with two or
three levels cannot tell its spread, and a learned sd then makes a funnel with the offsets
(fixed effects with a shrinkage prior, in lme4's terms; Bambi's common effects).

``factors = K`` (crossed pairs only) adds a rank-K interaction ``sd_factor * a_s . b_t``
with ``a_s, b_t ~ Normal(0, I_K)``: sources that resemble each other on the targets they
share are predicted to resemble each other on the rest, so a never-run pair borrows from
similar pairs instead of drawing its residual ``w_st`` from the prior alone.

``residual_nu = 3`` (pooled levels) makes the innermost level's groups Student-t with that
many degrees of freedom around their level's value instead of normal (robust group effects,
brms's ``gr(..., dist = "student")``): a pair unlike the rest moves its own residual ``w_st``
rather than its source's and target's effects, and a never-run pair's predictive keeps
heavy tails. On the bundled grid, every pair left out once: the never-run pairs' median
error 0.247 -> 0.153 nats (``benchmarks/never_run.py``).

Example:
    >>> spec = ModelSpec.from_dict({
    ...     "law": "transfer-gap",
    ...     "params": {"G": {"level": "pair", "pooling": "crossed", "loc": -1.0}},
    ... })
    >>> spec.params["G"].level, spec.params["E"].level
    ('pair', 'global')
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bayes_transfer.bundled import MODELS_DIR
from bayes_transfer.discrepancy import Discrepancy
from bayes_transfer.laws import Units, get_law
from bayes_transfer.sampling import (  # the CLI's bounds too
    MAX_MODE_STARTS,
    TARGET_ACCEPT_RANGE,
)

__all__ = ["SpecError", "ParamSpec", "Likelihood", "ModelSpec", "load_spec", "LEVELS"]

LEVELS = ("global", "source", "target", "pair")
_POOLING = {
    "global": ("none",),
    "source": ("partial", "none"),
    "target": ("partial", "none"),
    "pair": ("crossed", "partial", "none"),
}
_FAMILIES = ("student_t", "normal")
_ROW_MODES = ("all", "applicable")


class SpecError(ValueError):
    """A model spec that names something unknown or holds a bad value."""


@dataclass(frozen=True)
class ParamSpec:
    """Level, pooling and log-scale prior of one law parameter."""

    name: str
    level: str = "global"
    pooling: str = ""
    loc: float = 0.0
    scale: float = 1.0
    group_scale: float = 0.5
    centered: bool | str = False
    factors: int = 0
    fixed_sd: tuple[str, ...] = ()
    residual_nu: float | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise SpecError(f"parameter {self.name}: level {self.level!r} is not one of {LEVELS}")
        if not self.pooling:
            object.__setattr__(self, "pooling", _POOLING[self.level][0])
        if self.pooling not in _POOLING[self.level]:
            raise SpecError(f"parameter {self.name}: pooling {self.pooling!r} does not apply at "
                            f"level {self.level!r}; use one of {_POOLING[self.level]}")
        if self.centered and self.pooling == "none":
            raise SpecError(f"parameter {self.name}: centered applies to pooled levels only")
        if not isinstance(self.centered, bool) and self.centered != "auto":
            raise SpecError(f"params.{self.name}.centered must be true, false or \"auto\"")
        if (not isinstance(self.factors, int) or isinstance(self.factors, bool)
                or not 0 <= self.factors <= MAX_FACTORS):
            raise SpecError(f"params.{self.name}.factors must be an integer from 0 to "
                            f"{MAX_FACTORS}")
        fixed = self.fixed_sd
        if (not isinstance(fixed, (list, tuple)) or len(set(fixed)) != len(fixed)
                or any(g not in ("source", "target") for g in fixed)):
            raise SpecError(f"params.{self.name}.fixed_sd must be a list of distinct levels "
                            f"from [\"source\", \"target\"], not {fixed!r}")
        object.__setattr__(self, "fixed_sd", tuple(fixed))
        if fixed and (self.level, self.pooling) != ("pair", "crossed"):
            raise SpecError(f"parameter {self.name}: fixed_sd applies to level = \"pair\" "
                            "with pooling = \"crossed\" only")
        if self.factors and (self.level, self.pooling) != ("pair", "crossed"):
            raise SpecError(f"parameter {self.name}: factors apply to level = \"pair\" with "
                            "pooling = \"crossed\" only")
        if self.residual_nu is not None:
            if self.pooling == "none":
                raise SpecError(f"parameter {self.name}: residual_nu applies to pooled levels "
                                "only (pooling = \"none\" has no group distribution)")
            object.__setattr__(self, "residual_nu", _real(
                self.residual_nu, f"params.{self.name}.residual_nu", low=0.0, high=_MAX_NU,
                open_low=True))
        # Log-scale priors: beyond these bounds a prior is a unit mistake (scale = 1e308
        # makes every transition diverge), not a belief about a scaling law.
        _real(self.loc, f"params.{self.name}.loc", low=-_MAX_LOC, high=_MAX_LOC)
        for key in ("scale", "group_scale"):
            _real(getattr(self, key), f"params.{self.name}.{key}", low=0.0, high=_MAX_SCALE,
                  open_low=True)

    @property
    def site_names(self) -> dict[str, tuple[str, ...]]:
        """The NumPyro sample sites this parameter creates, with their dims."""
        n = self.name
        if self.pooling == "none":
            return {f"log_{n}": () if self.level == "global" else (self.level,)}
        sites: dict[str, tuple[str, ...]] = {f"{n}_mu": ()}
        groups = {"source": ("source",), "target": ("target",),
                  "pair": ("source", "target", "pair") if self.pooling == "crossed"
                  else ("pair",)}[self.level]
        for g in groups:
            if g not in self.fixed_sd:
                sites[f"{n}_sd_{g}"] = ()
            sites[f"{n}_z_{g}"] = (g,)
        if self.centered:
            # The innermost level is sampled as log_<name> itself, or, when some groups
            # have no rows, as <name>_pc_<level>, partially centred (model.param_effect).
            del sites[f"{n}_z_{self.level}"]
            sites[f"log_{n}"] = (self.level,)
            sites[f"{n}_pc_{self.level}"] = (self.level,)
        if self.factors:
            sites.update(self.factor_sites)
        return sites

    @property
    def factor_sites(self) -> dict[str, tuple[str, ...]]:
        """Sites of the rank-``factors`` interaction (none when ``factors = 0``).

        The loadings ``a``, ``b`` are identified only up to sign and rotation, so they are
        left out of convergence diagnostics; their product enters ``log_<name>``, which is
        diagnosed.
        """
        if not self.factors:
            return {}
        n = self.name
        return {f"{n}_sd_factor": (), f"{n}_a_source": ("source", "factor"),
                f"{n}_b_target": ("target", "factor")}


@dataclass(frozen=True)
class Likelihood:
    """Noise model of the log loss.

    ``family``: ``student_t`` (robust, default) or ``normal``; ``nu``: Student-t degrees of
    freedom; ``sigma``: HalfNormal scale of the learned noise sd; ``use_loss_se``: add each
    row's ``loss_se / loss`` (the sd of its log loss) to the learned noise in quadrature.
    """

    family: str = "student_t"
    nu: float = 4.0
    sigma: float = 0.05
    use_loss_se: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.family, str) or self.family not in _FAMILIES:
            raise SpecError(f"likelihood.family {self.family!r} is not one of {_FAMILIES}")
        _real(self.nu, "likelihood.nu", low=0.0, high=_MAX_NU, open_low=True)
        _real(self.sigma, "likelihood.sigma", low=0.0, high=_MAX_SCALE, open_low=True)
        if not isinstance(self.use_loss_se, bool):
            raise SpecError(f"likelihood.use_loss_se must be true or false, not "
                            f"{self.use_loss_se!r}")


@dataclass(frozen=True)
class ModelSpec:
    """A law, a prior and pooling for each of its parameters, and a likelihood.

    ``rows``: ``"all"`` (every row must be one the law explains; others are an error) or
    ``"applicable"`` (fit the rows the law explains and report how many were left out).
    ``units``: the reference scales of N and of token counts that the coefficients are
    measured in (see :class:`bayes_transfer.laws.Units`); ``"auto"`` picks the power of
    ten nearest the geometric mean of the fitted rows.
    ``sampler``: defaults for NUTS that belong to the model's geometry, not to one run
    (``target_accept`` and ``mode_starts``, which arguments given to ``fit`` override;
    ``coordinates``: ``"anchored"`` samples each pair's curve by the losses it predicts
    at its rows, see :mod:`bayes_transfer.anchor`).
    """

    law: str
    params: dict[str, ParamSpec]
    likelihood: Likelihood = field(default_factory=Likelihood)
    rows: str = "all"
    name: str = ""
    description: str = ""
    units: dict[str, float | str] = field(
        default_factory=lambda: {"params": "auto", "tokens": "auto"})
    discrepancy: Discrepancy | None = None
    sampler: dict[str, float | str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<spec>") -> ModelSpec:
        """Build and validate a spec; parameters the dict leaves out get the law's default
        priors (:attr:`~bayes_transfer.laws.Law.priors`), else global defaults."""
        try:
            return cls._from_dict(dict(d))
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from None

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = {"law", "params", "likelihood", "rows", "name", "description", "units",
                 "discrepancy", "sampler"}
        _no_unknown(d, known, "top-level key")
        if "law" not in d:
            raise SpecError("missing key 'law'")
        try:
            law = get_law(str(d["law"]))
        except KeyError as exc:
            raise SpecError(exc.args[0]) from None
        raw_params = d.get("params", {})
        if not isinstance(raw_params, dict):
            raise SpecError("'params' must be a table of parameter tables")
        unknown = [p for p in raw_params if p not in law.params]
        if unknown:
            raise SpecError(f"parameter(s) {unknown} are not parameters of law {law.name!r} "
                            f"(its parameters: {list(law.params)})")
        params = {}
        for p in law.params:
            entry = raw_params.get(p, {})
            if not isinstance(entry, dict):
                raise SpecError(f"params.{p} must be a table")
            _no_unknown(entry, {f.name for f in fields(ParamSpec)} - {"name"},
                        f"key of params.{p}")
            # The law's own default priors fill what the spec leaves out, key by key.
            entry = {**law.priors.get(p, {}), **entry}
            params[p] = ParamSpec(name=p, **{k: _typed(k, v, p) for k, v in entry.items()})
        lik = d.get("likelihood", {})
        _no_unknown(lik, {f.name for f in fields(Likelihood)}, "key of likelihood")
        rows = d.get("rows", "all")
        if rows not in _ROW_MODES:
            raise SpecError(f"rows = {rows!r} is not one of {_ROW_MODES}")
        raw_units = d.get("units", {})
        _no_unknown(raw_units, {"params", "tokens"}, "key of units")
        units = {"params": "auto", "tokens": "auto", **raw_units}
        for key, value in units.items():
            if value != "auto" and (isinstance(value, bool) or not isinstance(
                    value, (int, float)) or not value > 0):
                raise SpecError(f"units.{key} must be \"auto\" or a positive number, "
                                f"not {value!r}")
        raw_disc = d.get("discrepancy")
        disc = None
        if raw_disc is not None:
            _no_unknown(raw_disc, {f.name for f in fields(Discrepancy)}, "key of discrepancy")
            disc = Discrepancy(**raw_disc)
            for key in ("on", "mean_on"):
                if getattr(disc, key) == "reducible" and "E" not in law.params:
                    raise SpecError(f'discrepancy.{key} = "reducible" needs a law with a '
                                    f"floor E; law {law.name!r} has {', '.join(law.params)}")
        return cls(law=law.name, params=params, likelihood=Likelihood(**lik), rows=rows,
                   name=str(d.get("name", law.name)), description=str(d.get("description", "")),
                   units=units, discrepancy=disc,
                   sampler=_sampler(d.get("sampler", {}), law.name, params))

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> ModelSpec:
        """Read a spec from a TOML file (parsed with ``tomllib``: no code is evaluated)."""
        from bayes_transfer._io import read_toml

        path = Path(path)
        d = read_toml(path, SpecError, "model spec")
        return cls.from_dict(d, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for p in d["params"].values():
            p.pop("name")
            if p["residual_nu"] is None:  # normal groups: TOML has no null
                del p["residual_nu"]
        if d["discrepancy"] is None:
            del d["discrepancy"]
        else:
            d["discrepancy"]["axes"] = list(d["discrepancy"]["axes"])
            if isinstance(d["discrepancy"]["holdout"], tuple):
                d["discrepancy"]["holdout"] = list(d["discrepancy"]["holdout"])
            for key in ("walk_scale", "mean_on"):   # unset: TOML has no null
                if d["discrepancy"][key] is None:
                    del d["discrepancy"][key]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return cls.from_dict(json.loads(text), source="<stored spec>")

    def resolve_units(self, df: Any) -> Units:
        """The reference units for a table's rows: the spec's numbers, or ``auto`` ones."""
        auto = Units.from_table(df)
        return Units(**{k: getattr(auto, k) if v == "auto" else float(v)
                        for k, v in self.units.items()})

    @property
    def target_accept(self) -> float | None:
        """NUTS target acceptance this spec's geometry needs (``[sampler]``), or None."""
        return self.sampler.get("target_accept")

    @property
    def coordinates(self) -> str:
        """How NumPyro samples the pairs (``[sampler] coordinates``): ``"log"`` (the log
        parameters, the default) or ``"anchored"`` (:mod:`bayes_transfer.anchor`)."""
        return str(self.sampler.get("coordinates", "log"))

    @property
    def factor_rank(self) -> int:
        """Length of the ``factor`` dim: the largest ``factors`` of any parameter (0: none)."""
        return max((p.factors for p in self.params.values()), default=0)

    @property
    def gap(self) -> str | None:
        """The law's transfer-gap parameter (``G``, ``k``), if it has one."""
        return get_law(self.law).gap


COORDINATES = ("log", "anchored")


def _sampler(raw: Any, law: str, params: dict[str, ParamSpec]) -> dict[str, float | str]:
    if not isinstance(raw, dict):
        raise SpecError("'sampler' must be a table, e.g. [sampler] target_accept = 0.95")
    _no_unknown(raw, {"target_accept", "coordinates", "mode_starts"}, "key of sampler")
    low, high = TARGET_ACCEPT_RANGE
    out: dict[str, float | str] = {k: _real(v, f"sampler.{k}", low=low, high=high)
                                   for k, v in raw.items() if k == "target_accept"}
    if "mode_starts" in raw:
        n = raw["mode_starts"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_MODE_STARTS:
            raise SpecError(f"sampler.mode_starts must be a whole number between 1 and "
                            f"{MAX_MODE_STARTS}, not {n!r}")
        out["mode_starts"] = n
    if "coordinates" in raw:
        out["coordinates"] = _coordinates(raw["coordinates"], law, params)
    return out


def _coordinates(value: Any, law: str, params: dict[str, ParamSpec]) -> str:
    if value not in COORDINATES:
        raise SpecError(f"sampler.coordinates must be one of {list(COORDINATES)}, "
                        f"not {value!r}")
    if value == "log":
        return value
    from bayes_transfer.anchor import ANCHORED_LAWS

    if law not in ANCHORED_LAWS:
        raise SpecError(f'sampler.coordinates = "anchored" has no map for law {law!r} '
                        f"(laws with one: {sorted(ANCHORED_LAWS)})")
    for name in ANCHORED_LAWS[law].names:
        p = params[name]
        if p.residual_nu is not None:
            raise SpecError(f'sampler.coordinates = "anchored" draws the pairs\' '
                            f"{', '.join(ANCHORED_LAWS[law].names)} from normals: params."
                            f"{name}.residual_nu needs coordinates = \"log\"")
        if p.level != "pair" or p.pooling == "none" or p.centered is not True:
            raise SpecError(f'sampler.coordinates = "anchored" samples each pair\'s '
                            f"{', '.join(ANCHORED_LAWS[law].names)} together: params.{name} "
                            f"needs level = \"pair\", pooling \"crossed\" or \"partial\" "
                            f"and centered = true (it has level = {p.level!r}, pooling = "
                            f"{p.pooling!r}, centered = {p.centered!r})")
    return value


def _no_unknown(d: dict[str, Any], known: set[str], what: str) -> None:
    if not isinstance(d, dict):
        raise SpecError(f"expected a table for {what}")
    bad = sorted(set(d) - known)
    if bad:
        raise SpecError(f"unknown {what} {bad}; known: {sorted(known)}")


def _typed(key: str, value: Any, param: str) -> Any:
    if key == "centered":
        if not isinstance(value, bool) and value != "auto":
            raise SpecError(f"params.{param}.centered must be true, false or \"auto\"")
        return value
    if key == "factors":
        if not isinstance(value, int) or isinstance(value, bool):
            raise SpecError(f"params.{param}.factors must be an integer from 0 to {MAX_FACTORS}")
        return value
    if key == "fixed_sd":
        return value  # checked (and made a tuple) by ParamSpec
    if key in ("level", "pooling"):
        if not isinstance(value, str):
            raise SpecError(f"params.{param}.{key} must be a string")
        return value
    return _real(value, f"params.{param}.{key}")


# centered = "auto": a group with at least this many rows is sampled centred. Five rows of
# a few-% noise pin a log-parameter far tighter than a group sd of ~0.5 does.
AUTO_CENTRE_ROWS = 5
MAX_FACTORS = 3  # rank of a pair interaction: beyond this, few tables identify it
_MAX_LOC = 50.0  # |log parameter| of a prior's centre: e^50 is no scaling-law value
_MAX_SCALE = 20.0  # sd of a log-scale prior (or of the noise): e^20 either way is vague
_MAX_NU = 1000.0  # Student-t degrees of freedom; beyond, it is the normal


def _real(value: Any, key: str, low: float = -math.inf, high: float = math.inf,
          open_low: bool = False) -> float:
    """``value`` as a float: a finite number (not a bool, not text) in ``[low, high]``."""
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{key} must be a number, got {shown}")
    x = float(value) if abs(value) < 1e308 or isinstance(value, float) else math.inf
    if not math.isfinite(x) or x < low or x > high or (open_low and x == low):
        lo = f"> {low:g}" if open_low else f">= {low:g}"
        bounds = [b for b in (lo if math.isfinite(low) else "",
                              f"<= {high:g}" if math.isfinite(high) else "") if b]
        what = f"{' and '.join(bounds)} (a finite number)" if bounds else "a finite number"
        raise SpecError(f"{key} must be {what}, got {shown}")
    return x


def load_spec(spec: str | os.PathLike[str] | ModelSpec | dict[str, Any]) -> ModelSpec:
    """A spec from a TOML path, a dict, a bundled spec name (``"transfer-gap"``) or a spec."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, dict):
        return ModelSpec.from_dict(spec)
    path = Path(spec)
    if not path.exists() and path.suffix == "" and (MODELS_DIR / f"{spec}.toml").exists():
        path = MODELS_DIR / f"{spec}.toml"
    return ModelSpec.from_toml(path)
