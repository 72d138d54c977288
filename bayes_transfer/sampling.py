"""What every back end shares: the sampler settings, the back-end protocol, the layout.

:class:`SamplerSettings` holds how to sample (chains, draws, warmup, seed, NUTS options,
device, progress), validated once. A back end is any object with a name and a
``sample(spec, table, units, settings) -> az.InferenceData`` method (:class:`Backend`);
:mod:`bayes_transfer.backends` keeps the registry (NumPyro and PyMC) that
:func:`bayes_transfer.inference.fit` picks from. :func:`coords_for` gives the named
coordinates both back ends lay their draws out in.

This module imports neither JAX nor a back end, so that a back end can import it without
importing the orchestrator (no import cycle), and the CLI can check settings cheaply.

Example:
    >>> s = SamplerSettings(chains=2, draws=200, warmup=200, progress=False)
    >>> s.to_dict()["draws"], s.replace(seed=3).seed
    (200, 3)
    >>> SamplerSettings(chains=0)
    Traceback (most recent call last):
    ...
    ValueError: chains must be a whole number between 1 and 1024, not 0
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import arviz as az
    import jax

    from bayes_transfer.data import RunTable
    from bayes_transfer.laws import Units
    from bayes_transfer.spec import ModelSpec

__all__ = ["SamplerSettings", "Backend", "coords_for", "pick_device", "INITS", "stamp_library",
           "CENTRINGS", "LAPLACE_FROM_ROWS", "MAX_SEED", "MAX_MODE_STARTS",
           "SPEC_SETTINGS", "spec_settings", "resolve_target_accept",
           "reached_max_treedepth"]

Init = Literal["auto", "laplace", "prior"]
INITS = ("auto", "laplace", "prior")
Centring = Literal["spec", "mode"]
CENTRINGS = ("spec", "mode")
# init="auto" starts from the Laplace approximation from this many fitted rows on: below
# it, the extra compilation (~6 s on 2 CPU cores) costs more than the warmup it saves.
LAPLACE_FROM_ROWS = 2000
MAX_SEED = 2**32 - 1  # what every sampler's seed accepts (PyMC's through numpy)
#: More chains, or draws a chain, than any fit needs; 2**70 would only fail deep in JAX.
MAX_CHAINS = 1024
MAX_DRAWS = 10_000_000
#: The most starts a Laplace start's mode search takes (each is a full Adam run).
MAX_MODE_STARTS = 256
#: What a user may ask for (the CLI's --target-accept, a spec's [sampler]): below 0.5 NUTS
#: steps too coarsely to be useful; at 1.0 the step size adapts to zero.
TARGET_ACCEPT_RANGE = (0.5, 0.999)


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample a posterior with NUTS; every field is checked when it is built.

    Attributes:
        chains, draws, warmup: NUTS chains, kept draws per chain, and warmup steps.
        seed: the random seed (0 .. 2**32 - 1); the same seed, data and spec give the
            same draws.
        target_accept: NUTS target acceptance, between 0 and 1 (exclusive).
        max_tree_depth: trajectories stop at ``2**max_tree_depth - 1`` leapfrog steps.
        dense_mass: adapt a dense mass matrix instead of a diagonal one.
        init: how NumPyro's chains start: ``"auto"``, ``"laplace"`` or ``"prior"`` (see
            :func:`bayes_transfer.inference.fit`); a back end that starts its own way
            ignores it.
        mode_starts: how many starts a Laplace start's mode search takes; the chains
            start around the mode of largest Laplace mass
            (:func:`bayes_transfer.laplace.laplace_fit`). Above 1, ``init="auto"``
            starts from the Laplace approximation at any table size. For posteriors with
            minor local modes that trap a chain started from the prior (a spec says so
            in ``[sampler] mode_starts``); the chains then all start near one mode, so
            R-hat no longer checks that no other mode holds real mass: the search's
            ranking does.
        device: ``"cpu"``, ``"gpu"`` or None / ``"auto"`` (GPU when present); NumPyro only.
        progress: show a progress bar.
        centring: how the spec's non-centred pooled parameters are sampled.
            ``"mode"``: each group the rows pin (read off the posterior's curvature at
            its mode, :func:`bayes_transfer.refit.centring_from_mode`) is sampled
            centred, the others non-centred, and the draws come back on the spec's own
            sites: the same posterior, explored without the ridges a pinned non-centred
            group makes, but it can make funnels one level up (divergences): opt in and
            check the diagnostics. ``"spec"`` (default): exactly as the spec states.
            Both back ends centre the same groups.
        shear: with a Laplace start (``init``), sample each centred pair-level
            parameter in coordinates sheared off the source and target parameters it
            trades with, slopes read off the Hessian at the mode
            (:mod:`bayes_transfer.shear`): the same model and posterior, fewer leapfrog
            steps with many pairs. NumPyro only; ``False`` samples the spec's own sites.

    Example:
        >>> SamplerSettings(target_accept=1.0)
        Traceback (most recent call last):
        ...
        ValueError: target_accept must be a number between 0 and 1 (e.g. 0.9 or 0.99), not 1.0
    """

    chains: int = 4
    draws: int = 1000
    warmup: int = 1000
    seed: int = 0
    target_accept: float = 0.9
    max_tree_depth: int = 10
    dense_mass: bool = False
    init: Init = "auto"
    mode_starts: int = 1
    device: str | None = None
    progress: bool = True
    centring: Centring = "spec"
    shear: bool = True

    def __post_init__(self) -> None:
        for name, low, high in (("chains", 1, MAX_CHAINS), ("draws", 1, MAX_DRAWS),
                                ("warmup", 0, MAX_DRAWS),
                                ("seed", 0, MAX_SEED), ("max_tree_depth", 1, 30),
                                ("mode_starts", 1, MAX_MODE_STARTS)):
            self._set(name, _whole(name, getattr(self, name), low, high))
        ta = self.target_accept
        if (isinstance(ta, bool) or not isinstance(ta, numbers.Real)
                or not 0 < float(ta) < 1):
            raise ValueError(f"target_accept must be a number between 0 and 1 (e.g. 0.9 or "
                             f"0.99), not {ta!r}")
        self._set("target_accept", float(ta))
        for name in ("dense_mass", "progress", "shear"):
            value = getattr(self, name)
            if not isinstance(value, bool | _np_bool()):
                raise ValueError(f"{name} must be True or False, not {value!r}")
            self._set(name, bool(value))
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; use 'auto', 'laplace' or 'prior'")
        if self.centring not in CENTRINGS:
            raise ValueError(f"unknown centring {self.centring!r}; use 'spec' or 'mode'")
        if self.device is not None and (not isinstance(self.device, str) or not self.device):
            raise ValueError(f"device must be 'cpu', 'gpu', 'auto' or None, "
                             f"not {self.device!r}")

    def _set(self, name: str, value: Any) -> None:
        # Frozen: normalised values (numpy ints to int) are set once, at construction.
        object.__setattr__(self, name, value)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settings' names, which are also :func:`~bayes_transfer.inference.fit`'s
        sampler keywords."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> SamplerSettings:
        """A copy with ``changes`` (validated); an unknown name is an error naming the
        known ones.

        Example:
            >>> SamplerSettings().replace(draws=50).draws
            50
        """
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise TypeError(f"unknown sampler setting(s) {', '.join(unknown)}; the settings "
                            f"are {', '.join(self.names())}")
        return dataclasses.replace(self, **changes)

    def for_rows(self, n_rows: int) -> SamplerSettings:
        """``init="auto"`` made concrete for a table of ``n_rows`` fitted rows:
        ``"laplace"`` from :data:`LAPLACE_FROM_ROWS` rows on or with a mode search
        (``mode_starts`` > 1), ``"prior"`` otherwise."""
        if self.init != "auto":
            return self
        if self.mode_starts > 1:
            return self.replace(init="laplace")
        return self.replace(init="laplace" if n_rows >= LAPLACE_FROM_ROWS else "prior")

    def fit_kwargs(self) -> dict[str, Any]:
        """Every setting as keywords of :func:`~bayes_transfer.inference.fit`."""
        return {name: getattr(self, name) for name in self.names()}

    def to_dict(self) -> dict[str, Any]:
        """The settings that decide the draws, as JSON-ready data: what a posterior file
        records (``sampler_settings``) so that it says how to reproduce it. ``progress``
        is left out: it changes what is shown, not what is drawn."""
        out = self.fit_kwargs()
        del out["progress"]
        return out


#: The settings a spec's ``[sampler]`` table may give defaults for: its model's geometry
#: asks for them (a smaller step, a mode search), and an argument given to a fit overrides.
SPEC_SETTINGS = ("target_accept", "mode_starts")


def spec_settings(spec: ModelSpec, **asked: Any) -> dict[str, Any]:
    """Each of :data:`SPEC_SETTINGS`: the value asked for (``None``: not asked), else the
    spec's, else :class:`SamplerSettings`' default. Other keywords are ignored, so a
    caller can pass all of its sampler keywords.

    A spec states its geometry's needs once, so every path that builds its own settings
    (``fit``, the CLI, the loop) gets them without a flag: a default there would
    silently replace the spec's.

    Example:
        >>> from bayes_transfer.spec import load_spec
        >>> spec_settings(load_spec("finetune-curves"))
        {'target_accept': 0.9, 'mode_starts': 16}
        >>> spec_settings(load_spec("transfer-gap-size"), target_accept=0.8, chains=2)
        {'target_accept': 0.8, 'mode_starts': 1}
    """
    return {name: asked[name] if asked.get(name) is not None
            else spec.sampler.get(name, getattr(SamplerSettings, name))
            for name in SPEC_SETTINGS}


def resolve_target_accept(spec: ModelSpec, target_accept: float | None) -> float:
    """The target acceptance a fit uses: the one asked for, else the spec's, else 0.9
    (:func:`spec_settings`).

    Example:
        >>> from bayes_transfer.spec import load_spec
        >>> resolve_target_accept(load_spec("transfer-gap-size"), None)
        0.95
        >>> resolve_target_accept(load_spec("transfer-gap"), None)
        0.9
        >>> resolve_target_accept(load_spec("transfer-gap-size"), 0.8)
        0.8
    """
    return spec_settings(spec, target_accept=target_accept)["target_accept"]


def reached_max_treedepth(n_steps: Any, max_tree_depth: int) -> Any:
    """Whether each draw's trajectory was cut at the maximum tree depth, from its leapfrog
    steps: a full tree of depth ``d`` takes ``2**d - 1`` (PyMC records the same flag).

    Example:
        >>> import numpy as np
        >>> reached_max_treedepth(np.array([7, 1023, 500]), 10).tolist()
        [False, True, False]
    """
    import numpy as np

    return np.asarray(n_steps) >= 2 ** int(max_tree_depth) - 1


def stamp_library(idata: Any, library: str, version: str) -> Any:
    """Record the sampling library in every group's attrs, as ``az.from_numpyro`` and
    PyMC do (``inference_library``, ``inference_library_version``). ``az.from_dict``
    of arviz 0.2x drops its ``attrs`` argument, so it is set afterwards."""
    for group in idata.groups():
        idata[group].attrs.update(inference_library=library,
                                  inference_library_version=version)
    return idata


def _np_bool() -> type:
    import numpy as np

    return np.bool_


def _whole(name: str, value: Any, low: int, high: int | None) -> int:
    ok = (isinstance(value, numbers.Integral) and not isinstance(value, bool | _np_bool())
          and value >= low and (high is None or value <= high))
    if not ok:
        bound = f">= {low}" if high is None else f"between {low} and {high}"
        raise ValueError(f"{name} must be a whole number {bound}, not {value!r}")
    return int(value)


@runtime_checkable
class Backend(Protocol):
    """A sampler of the hierarchical model: how :func:`~bayes_transfer.inference.fit`
    sees a back end.

    ``sample`` returns InferenceData with a ``posterior`` of the model's sites (dims
    from :func:`bayes_transfer.model.site_dims`, coords from :func:`coords_for`),
    ``sample_stats`` with ``diverging``, ``energy``, ``lp``, ``n_steps`` and
    ``reached_max_treedepth`` (:func:`reached_max_treedepth`), and
    ``observed_data`` ``log_loss``; ``fit`` adds the rest. ``uses_init`` says whether
    ``settings.init`` chooses its chains' starts (a file records the back end's name as
    ``init`` otherwise). A back end may also offer
    ``sample_warm(spec, table, units, settings, previous) -> InferenceData | None``
    (a refit started from a previous posterior; None when it cannot be).

    Example:
        >>> class Toy:
        ...     name, uses_init = "toy", False
        ...     def sample(self, spec, table, units, settings):
        ...         ...
        >>> isinstance(Toy(), Backend)
        True
    """

    name: str
    uses_init: bool

    def sample(self, spec: ModelSpec, table: RunTable, units: Units,
               settings: SamplerSettings) -> az.InferenceData:
        ...


def coords_for(table: RunTable, spec: ModelSpec | None = None) -> dict[str, list]:
    """Coordinates of the named dims, shared by both back ends.

    With ``spec``, also ``factor`` (0 .. K-1) when a parameter has a rank-K interaction.
    """
    coords: dict[str, list] = {
        "source": list(table.sources),
        "target": list(table.targets),
        "pair": table.pair_labels,
        "row": [str(r) for r in table.df["run_id"].astype(str) + ":" +
                table.df["target"].astype(str)],
    }
    rank = spec.factor_rank if spec else 0
    if rank:
        coords["factor"] = list(range(rank))
    return coords


def pick_device(device: str | None = None) -> jax.Device:
    """The JAX device to sample on: ``"gpu"``, ``"cpu"``, or None for GPU when present."""
    import jax

    if device in (None, "auto"):
        for platform in ("gpu", "cpu"):
            try:
                return jax.devices(platform)[0]
            except RuntimeError:
                continue
    try:
        return jax.devices(device)[0]
    except RuntimeError as exc:
        raise ValueError(f"no JAX device of kind {device!r}: {exc}") from None
