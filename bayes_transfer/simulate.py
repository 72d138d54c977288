"""Simulated run tables: designs, and losses drawn from a spec's prior or given truths.

Used by the recovery and calibration tests, the benchmarks and the active-learning
studies, where the true gaps must be known.

Example:
    >>> design = design_grid(["web", "code"], ["math"], params=[1e6],
    ...                      pretrain_tokens=[1e8, 1e9], finetune_tokens=[1e5, 1e6])
    >>> sim = simulate("transfer-gap", design, seed=1)
    >>> len(sim.runs), sorted(sim.truth)[:3]
    (8, ['A_mu', 'A_sd_pair', 'A_sd_source'])
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
from bayes_transfer.laws import Units
from bayes_transfer.model import hierarchical_model, model_data, select_rows
from bayes_transfer.spec import ModelSpec, load_spec

__all__ = ["design_grid", "simulate", "Simulation", "typical_truth"]


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
        """The true values as plain JSON-ready data: every law parameter by group label
        (natural scale) and every sampled site (as drawn), plus ``extra`` keys.

        Example:
            >>> sim = simulate("transfer-gap", design_grid(["a"], ["x"], params=[1e6],
            ...     pretrain_tokens=[1e7], finetune_tokens=[1e5]), seed=0)
            >>> sorted(sim.truth_dict()["params"]["G"])
            ['a->x']
        """
        labels = {"global": ["*"], "source": list(self.runs.sources),
                  "target": list(self.runs.targets), "pair": self.runs.pair_labels}
        params = {}
        for name, p in self.spec.params.items():
            values = np.exp(np.atleast_1d(self.true_log(name))).astype(float)
            params[name] = dict(zip(labels[p.level], values.tolist(), strict=True))
        sites = {k: np.asarray(v, dtype=float).tolist() for k, v in self.truth.items()
                 if k != "log_loss"}
        return {**extra, "spec": self.spec.to_dict(), "params": params, "sites": sites}


def simulate(
    spec: ModelSpec | str,
    design: pd.DataFrame,
    *,
    seed: int = 0,
    truth: Mapping[str, Any] | None = None,
    loss_se: float = 0.0,
    units: Units | None = None,
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
    """
    spec = load_spec(spec)
    placeholder = design.assign(loss=1.0, loss_se=loss_se)
    table = load_runs(placeholder, name="design")
    table, _ = select_rows(spec, table)
    units = units or spec.resolve_units(table.df)
    data = model_data(spec, table, units)
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
