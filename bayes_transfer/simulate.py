"""Simulated run tables: designs, and losses drawn from a spec's prior or given truths.

Used by the recovery and calibration tests, the benchmarks and the active-learning
studies, where the true gaps must be known.

Example:
    >>> design = design_grid(["web", "code"], ["math"], params=[1e6],
    ...                      pretrain_tokens=[1e8, 1e9], finetune_tokens=[1e5, 1e6])
    >>> sim = simulate("transfer-gap", design, seed=1)
    >>> len(sim.runs), sorted(sim.truth)[:3]
    (8, ['A_mu', 'A_sd_pair', 'A_z_pair'])
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import pandas as pd
from numpyro import handlers

from bayes_transfer.data import RunTable, load_runs
from bayes_transfer.laws import Units, get_law
from bayes_transfer.model import at_rows, hierarchical_model, model_data, select_rows
from bayes_transfer.spec import ModelSpec, load_spec

__all__ = ["design_grid", "simulate", "Simulation", "typical_truth", "coverage",
           "coverage_fractions"]


def design_grid(
    sources: Iterable[str],
    targets: Iterable[str],
    *,
    params: Iterable[float],
    pretrain_tokens: Iterable[float],
    finetune_tokens: Iterable[float],
    seeds: Iterable[int] = (0,),
) -> pd.DataFrame:
    """Every combination of the given values, as run-table rows without a loss.

    One training run (``run_id``) per (source, N, p, f, seed), evaluated on each target.
    """
    rows = []
    for s, n, p, f, seed, t in itertools.product(
        sources, params, pretrain_tokens, finetune_tokens, seeds, targets
    ):
        rows.append({"run_id": f"{s}-N{n:.3g}-p{p:.3g}-f{f:.3g}-{t}-s{seed}",
                     "source": s, "target": t, "params": int(n), "pretrain_tokens": int(p),
                     "finetune_tokens": int(f), "seed": int(seed)})
    return pd.DataFrame(rows)


#: Between-group sd of ``simulate(..., typical=True)``: on the CLI's default grid every
#: table of every shipped spec then has losses of 0.5-10 nats (0.3 reaches 14 nats).
PLAUSIBLE_GROUP_SD = 0.2


def typical_truth(spec: ModelSpec | str, *, group_sd: float = 0.3,
                  sigma: float = 0.02) -> dict[str, float]:
    """Hyperparameters of a typical, well-identified table for :func:`simulate`'s ``truth``.

    Every population mean sits at its prior centre (``loc``), every between-group sd is
    ``group_sd`` and the noise sd is ``sigma``; the group effects are then drawn from the
    prior. Draws of the hyperparameters from the prior itself often make a term of the law
    negligible (e.g. ``A p^-alpha << G``), whose parameters the rows then cannot pin:
    right for calibration studies, wrong for timing the sampler on a typical table.

    Example:
        >>> typical_truth("transfer-gap")["G_mu"], typical_truth("transfer-gap")["sigma"]
        (-1.0, 0.02)
    """
    spec = load_spec(spec)
    truth: dict[str, float] = {"sigma": sigma}
    for p in spec.params.values():
        if p.pooling != "none":
            truth[f"{p.name}_mu"] = p.loc
            truth.update({site: group_sd for site in p.site_names if "_sd_" in site})
    return truth


def _typical_sites(spec: ModelSpec, data: Any, *, seed: int, group_sd: float
                   ) -> dict[str, Any]:
    """:func:`typical_truth`, plus every unpooled parameter's ``log_<name>`` drawn around
    its prior centre with sd ``group_sd`` (a global one sits at its centre)."""
    sites: dict[str, Any] = typical_truth(spec, group_sd=group_sd)
    sizes = {"source": data.n_sources, "target": data.n_targets,
             "pair": data.n_sources * data.n_targets}
    # Its own stream, so that the group effects the model draws keep the seed's values.
    rng = np.random.default_rng([seed, 1])
    for p in spec.params.values():
        if p.pooling == "none":
            sites[f"log_{p.name}"] = (np.float32(p.loc) if p.level == "global" else (
                p.loc + group_sd * rng.standard_normal(sizes[p.level])).astype(np.float32))
    return sites


@dataclass(frozen=True)
class Simulation:
    """A simulated table and the true values of every model site that made it."""

    runs: RunTable
    truth: Mapping[str, np.ndarray]
    spec: ModelSpec
    units: Units = Units()

    def true_log(self, param: str) -> np.ndarray:
        """True ``log(param)`` over its level's groups (e.g. every pair's log gap)."""
        return self.truth[f"log_{param}"]

    def truth_dict(self, **extra: Any) -> dict[str, Any]:
        """The true values as plain JSON-ready data, plus ``extra`` keys.

        ``params``: every law parameter by group label (``*`` for a global one), natural
        scale, in the reference ``units`` the model uses (N in ``units.params``
        parameters, tokens in ``units.tokens`` tokens; what a fit of the table reports
        and :func:`coverage` scores). ``params_raw``: the same law in raw units
        (parameters and tokens of 1, the papers' units) at each pair, where the law
        converts. ``sites``: every sampled site as drawn.

        Example:
            >>> sim = simulate("transfer-gap", design_grid(["a"], ["x"], params=[1e6],
            ...     pretrain_tokens=[1e7], finetune_tokens=[1e5]), seed=0)
            >>> truth = sim.truth_dict()
            >>> sorted(truth["params"]["G"]), truth["units"]
            (['a->x'], {'params': 1000000.0, 'tokens': 1000000.0})
        """
        labels = {"global": ["*"], "source": list(self.runs.sources),
                  "target": list(self.runs.targets), "pair": self.runs.pair_labels}
        params = {}
        for name, p in self.spec.params.items():
            values = np.exp(np.atleast_1d(self.true_log(name))).astype(float)
            params[name] = dict(zip(labels[p.level], values.tolist(), strict=True))
        sites = {k: np.asarray(v, dtype=float).tolist() for k, v in self.truth.items()
                 if k != "log_loss"}
        u = self.units
        return {**extra, "spec": self.spec.to_dict(), "units": u.to_dict(),
                "params_units": f"reference: N in units of {u.params:g} parameters, token "
                                f"counts in units of {u.tokens:g} tokens",
                "params": params, "params_raw": self._raw_params(), "sites": sites}

    def _raw_params(self) -> dict[str, dict[str, float]] | None:
        """Every law parameter in raw units at each pair (None: the law does not convert)."""
        law = get_law(self.spec.law)
        if law.to_raw is None:
            return None
        runs = self.runs
        src = np.repeat(np.arange(len(runs.sources)), len(runs.targets))
        tgt = np.tile(np.arange(len(runs.targets)), len(runs.sources))
        lp = {name: np.asarray(at_rows(p.level, np.asarray(self.true_log(name), np.float64),
                                       src, tgt, len(runs.targets)))
              for name, p in self.spec.params.items()}
        raw = law.to_raw(lp, self.units, np)
        return {name: dict(zip(runs.pair_labels, np.broadcast_to(np.exp(raw[name]),
                                                                 len(src)).tolist(),
                               strict=True)) for name in self.spec.params}


def simulate(
    spec: ModelSpec | str,
    design: pd.DataFrame,
    *,
    seed: int = 0,
    truth: Mapping[str, Any] | None = None,
    loss_se: float = 0.0,
    units: Units | None = None,
    typical: bool = False,
    group_sd: float = PLAUSIBLE_GROUP_SD,
) -> Simulation:
    """Draw losses for ``design`` from the spec's prior (or from given true sites).

    Args:
        spec: a model spec or the name of a bundled one.
        design: run-table rows without ``loss`` (e.g. from :func:`design_grid`).
        seed: the random seed; the same seed gives the same table.
        truth: values of sampled sites (``"G_mu"``, ``"G_z_pair"``, ``"sigma"``, ...) to
            hold fixed; the rest are drawn from the prior.
        loss_se: the ``loss_se`` written to every row (0: none).
        units: reference units of the true coefficients (default: the spec's, ``auto``
            from the design); ``Simulation.units`` records them, so fits that should be
            compared with the truth pass ``fit(..., units=sim.units)``.
        typical: a typical table instead of one drawn from the whole prior: the sites of
            :func:`typical_truth` are held there, and each unpooled parameter (a global
            one, or one drawn per group without a population) is drawn around its prior
            centre with sd ``group_sd`` instead of the prior's own, often wide, scale.
            ``truth`` still wins. Losses are then a few nats (the CLI's default).
        group_sd: the between-group sd of a ``typical`` table.

    Example:
        >>> rows = design_grid(["web"], ["math"], params=[1e6], pretrain_tokens=[1e7],
        ...                    finetune_tokens=[1e5, 1e6])
        >>> sim = simulate("transfer-gap", rows, seed=0, typical=True)
        >>> bool(sim.runs.df["loss"].between(1, 10).all())
        True
    """
    spec = load_spec(spec)
    placeholder = design.assign(loss=1.0, loss_se=loss_se)
    table = load_runs(placeholder, name="design")
    table, _ = select_rows(spec, table)
    units = units or spec.resolve_units(table.df)
    data = model_data(spec, table, units)
    if typical:
        truth = {**_typical_sites(spec, data, seed=seed, group_sd=group_sd), **(truth or {})}
    model = handlers.condition(hierarchical_model, data=dict(truth or {}))
    trace = handlers.trace(handlers.seed(model, jax.random.key(seed))).get_trace(
        data, observed=False
    )
    values = {name: np.asarray(site["value"]) for name, site in trace.items()
              if site["type"] in ("sample", "deterministic")}
    df = table.df.copy()
    df["loss"] = np.exp(values.pop("log_loss"))
    for col in ("source", "target"):
        df[col] = df[col].astype(str)
    runs = load_runs(pd.DataFrame(df), name="simulated")
    # Keep every source and target of the design, even one whose rows were all left out.
    runs = runs.with_levels(table.sources, table.targets)
    return Simulation(runs=runs, truth=values, spec=spec, units=units)


#: The interval widths :func:`coverage` scores.
COVERAGE_PROBS = (0.5, 0.9)


def coverage(post: Any, truth: Mapping[str, Any],
             probs: tuple[float, ...] = COVERAGE_PROBS) -> pd.DataFrame:
    """Does each credible interval of ``post`` hold the true value it was simulated from?

    One row per law parameter and group (``*``: global): the true value and the posterior
    median (natural scale, reference units), for each width in ``probs`` the central
    interval and whether it holds the truth (``in_50``, ``in_90``), and ``quantile``, the
    share of the draws below the truth (uniform over many simulations when the posterior
    is calibrated). Over many parameters, about half the 50% intervals and 90% of the 90%
    ones should hold the truth; :func:`coverage_fractions` counts them.

    Args:
        post: a :class:`~bayes_transfer.inference.Posterior` fitted to the simulated table.
        truth: :meth:`Simulation.truth_dict` (``OUT.truth.json`` of ``bayes-transfer
            simulate``): its ``params`` and ``units`` are read.

    Example:
        >>> sim = simulate("transfer-gap", design, seed=0, typical=True)  # doctest: +SKIP
        >>> post = fit(sim.runs, "transfer-gap", units=sim.units)  # doctest: +SKIP
        >>> coverage_fractions(coverage(post, sim.truth_dict()))  # doctest: +SKIP
        {'50%': 0.55, '90%': 0.9, 'n': 20}
    """
    params, units = truth.get("params"), truth.get("units")
    if not isinstance(params, Mapping) or not isinstance(units, Mapping):
        raise ValueError("the truth file needs 'params' and 'units' (write it with "
                         "`bayes-transfer simulate`)")
    try:
        units = Units(**units)
    except TypeError as exc:
        raise ValueError(f"the truth's units must be params and tokens ({exc})") from None
    if units != post.units:
        raise ValueError(f"the truth is in units {units}, the posterior in "
                         f"{post.units}: fit the simulated table with the truth's units")
    rows = []
    for name, groups in params.items():
        if name not in post.spec.params:
            raise ValueError(f"the truth has parameter {name!r}, which the posterior's law "
                             f"{post.spec.law} lacks ({', '.join(post.spec.params)})")
        level = post.spec.params[name].level
        draws = post.log_param(name)
        if not isinstance(groups, Mapping):
            raise ValueError(f"the truth's {name} must map groups to values, not "
                             f"{groups!r:.40}")
        for label, value in groups.items():
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not 0 < value < float("inf")):
                raise ValueError(f"the truth's {name} of {label!r} must be a positive "
                                 f"number, not {value!r:.40}")
            if level == "global":
                d = draws.values.reshape(-1)
            elif label in draws.coords[level].values:
                d = draws.sel({level: label}).values.reshape(-1)
            else:
                raise ValueError(f"the truth's {name} has {level} {label!r}, which the "
                                 "posterior does not")
            true = float(np.log(value))
            row = {"param": name, "level": level, "group": label, "truth": float(value),
                   "median": float(np.exp(np.median(d)))}
            for prob in probs:
                lo, hi = np.quantile(d, [(1 - prob) / 2, (1 + prob) / 2])
                key = f"{prob * 100:g}"
                row[f"lower_{key}"], row[f"upper_{key}"] = float(np.exp(lo)), float(np.exp(hi))
                row[f"in_{key}"] = bool(lo <= true <= hi)
            row["quantile"] = float(np.mean(d < true))
            rows.append(row)
    return pd.DataFrame(rows)


def coverage_fractions(table: pd.DataFrame) -> dict[str, float]:
    """The share of :func:`coverage`'s intervals that hold the truth, per width, and ``n``.

    Example:
        >>> coverage_fractions(pd.DataFrame({"in_50": [True, False], "in_90": [True, True]}))
        {'50%': 0.5, '90%': 1.0, 'n': 2}
    """
    out: dict[str, float] = {f"{c[3:]}%": float(table[c].mean())
                             for c in table.columns if c.startswith("in_")}
    out["n"] = len(table)
    return out
