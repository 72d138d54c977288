"""Convergence diagnostics, computed after every fit and reported, never hidden.

Thresholds follow Vehtari et al. 2021 ("Rank-normalization, folding, and localization"):
R-hat below 1.01, bulk and tail ESS above 100 per chain; plus no divergent transitions,
an E-BFMI above 0.3 in every chain, and a finite log density in every draw.

Draws whose trajectory was cut at the maximum tree depth are counted and reported as a
*note*, as Stan does: it is a cost (each such draw pays ``2**max_tree_depth - 1``
gradients and explores less far than NUTS would like), not by itself a wrong posterior,
so it does not fail ``ok``; R-hat and ESS say whether the draws are still good enough.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import arviz as az
import numpy as np

__all__ = ["Diagnostics", "SamplingWarning", "diagnose", "failing_parameters", "RHAT_MAX",
           "BFMI_MIN", "ESS_PER_CHAIN_MIN"]

RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100
BFMI_MIN = 0.3


class SamplingWarning(UserWarning):
    """The sampler's output fails a diagnostic; the message says what to change."""


@dataclass(frozen=True)
class Diagnostics:
    """Summary of a fit's diagnostics over every parameter (worst values)."""

    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    divergences: int
    n_draws: int
    chains: int
    bfmi: tuple[float, ...]
    nonfinite_draws: int
    worst_rhat_var: str = ""
    problems: tuple[str, ...] = field(default_factory=tuple)
    #: Draws whose trajectory stopped at the maximum tree depth (0 where not recorded).
    max_treedepth_draws: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = (f"R-hat max {self.max_rhat:.3f} ({self.worst_rhat_var}), ESS bulk min "
                f"{self.min_ess_bulk:.0f}, tail min {self.min_ess_tail:.0f}, divergences "
                f"{self.divergences}/{self.n_draws}, E-BFMI min "
                f"{min(self.bfmi) if self.bfmi else float('nan'):.2f}")
        notes = "".join(f"\n  note: {n}" for n in self.notes)
        if self.ok:
            return f"diagnostics OK: {head}{notes}"
        return ("diagnostics FAILED: " + head + "\n" + "\n".join(f"  - {p}" for p in
                                                                   self.problems) + notes)

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "max_rhat": self.max_rhat, "min_ess_bulk": self.min_ess_bulk,
                "min_ess_tail": self.min_ess_tail, "divergences": self.divergences,
                "n_draws": self.n_draws, "chains": self.chains, "bfmi": list(self.bfmi),
                "nonfinite_draws": self.nonfinite_draws,
                "max_treedepth_draws": self.max_treedepth_draws,
                "problems": list(self.problems), "notes": list(self.notes)}


def _worst(ds, fn) -> tuple[float, str]:
    worst, where = None, ""
    for name, da in ds.data_vars.items():
        vals = np.asarray(da.values, dtype=float)
        if vals.size == 0 or not np.isfinite(vals).any():
            continue
        v = fn(vals[np.isfinite(vals)])
        if worst is None or (fn is np.max and v > worst) or (fn is np.min and v < worst):
            worst, where = float(v), str(name)
    return (worst if worst is not None else float("nan")), where


def diagnose(idata: az.InferenceData, var_names: list[str] | None = None,
             warn: bool = True) -> Diagnostics:
    """Compute diagnostics of ``idata`` and (by default) warn about each failure.

    Example:
        >>> import arviz as az
        >>> d = diagnose(az.load_arviz_data("centered_eight"), warn=False)  # doctest: +SKIP
        >>> d.ok  # doctest: +SKIP
        False
    """
    from bayes_transfer.named_params import all_draws

    post = all_draws(idata)  # the sampler's offsets too, kept in unconstrained_posterior
    chains, draws = int(post.sizes["chain"]), int(post.sizes["draw"])
    names = var_names or [v for v in post.data_vars if post[v].size > 0]
    max_rhat, rhat_var = (_worst(az.rhat(post, var_names=names), np.max)
                          if chains > 1 else (float("nan"), ""))
    ess_bulk, _ = _worst(az.ess(post, var_names=names, method="bulk"), np.min)
    ess_tail, _ = _worst(az.ess(post, var_names=names, method="tail"), np.min)
    stats = getattr(idata, "sample_stats", None)
    divergences = int(stats["diverging"].sum()) if stats is not None and \
        "diverging" in stats else 0
    bfmi = tuple(float(b) for b in az.bfmi(idata)) if stats is not None and \
        "energy" in stats else ()
    nonfinite = 0
    if stats is not None and "lp" in stats:
        nonfinite = int((~np.isfinite(stats["lp"].values)).sum())
    # Every back end records it under PyMC's name (older files lack it: counted as 0).
    saturated = int(stats["reached_max_treedepth"].values.sum()) if stats is not None and \
        "reached_max_treedepth" in stats else 0

    problems = []
    if np.isfinite(max_rhat) and max_rhat > RHAT_MAX:
        problems.append(f"R-hat {max_rhat:.3f} > {RHAT_MAX} for {rhat_var}: chains disagree; "
                        "run more warmup and draws, or tighten the prior of that parameter")
    ess_min = ESS_PER_CHAIN_MIN * chains
    if min(ess_bulk, ess_tail) < ess_min:
        problems.append(f"ESS bulk {ess_bulk:.0f} / tail {ess_tail:.0f} < {ess_min}: too few "
                        "effective draws for stable intervals; run more draws")
    if divergences:
        problems.append(f"{divergences} divergent transitions: the sampler missed part of the "
                        "posterior; raise target_accept (e.g. 0.95 or 0.99) or tighten "
                        "group_scale priors")
    low = [i for i, b in enumerate(bfmi) if b < BFMI_MIN]
    if low:
        problems.append(f"E-BFMI < {BFMI_MIN} in chain(s) {low}: poor energy exploration; "
                        "reparameterise or tighten priors")
    if nonfinite:
        problems.append(f"{nonfinite} draws with a non-finite log density: check the run "
                        "table for extreme values and the priors for impossible regions")
    notes = []
    if saturated:
        notes.append(f"{saturated}/{chains * draws} draws ({saturated / (chains * draws):.0%}) "
                     "stopped at the maximum tree depth: each cost 2^max_tree_depth - 1 "
                     "gradients. An efficiency cost, not an error while R-hat and ESS pass; "
                     "a ridge or funnel in the posterior is the usual cause: fit with "
                     "centring=\"mode\" (--centring mode) if it was not, or change the "
                     "spec's centered, tighten its group_scale priors, or raise "
                     "max_tree_depth")
    diag = Diagnostics(max_rhat=max_rhat, min_ess_bulk=ess_bulk, min_ess_tail=ess_tail,
                       divergences=divergences, n_draws=chains * draws, chains=chains,
                       bfmi=bfmi, nonfinite_draws=nonfinite, worst_rhat_var=rhat_var,
                       problems=tuple(problems), max_treedepth_draws=saturated,
                       notes=tuple(notes))
    if warn:
        for p in problems:
            warnings.warn(p, SamplingWarning, stacklevel=2)
    return diag


def failing_parameters(idata: az.InferenceData, var_names: list[str] | None = None,
                       limit: int = 8) -> list[str]:
    """One line per parameter that fails R-hat or ESS, worst R-hat first.

    Each line names the parameter, the group where it is worst (e.g. ``pair=a->x``), and
    its R-hat and bulk / tail ESS, so that a stopped loop can say *what* did not
    converge rather than only that something did not. At most ``limit`` lines.
    """
    from bayes_transfer.named_params import all_draws

    post = all_draws(idata)
    chains = int(post.sizes["chain"])
    names = var_names or [v for v in post.data_vars if post[v].size > 0]
    rhat = az.rhat(post, var_names=names) if chains > 1 else None
    bulk = az.ess(post, var_names=names, method="bulk")
    tail = az.ess(post, var_names=names, method="tail")
    ess_min = ESS_PER_CHAIN_MIN * chains
    found = []
    for name in names:
        r = np.asarray(rhat[name].values, dtype=float) if rhat is not None else None
        b = np.asarray(bulk[name].values, dtype=float)
        t = np.asarray(tail[name].values, dtype=float)
        bad_r = r is not None and np.nanmax(r, initial=-np.inf) > RHAT_MAX
        bad_e = min(np.nanmin(b, initial=np.inf), np.nanmin(t, initial=np.inf)) < ess_min
        if not (bad_r or bad_e):
            continue
        # The group where R-hat is worst (or ESS lowest), named by its coordinates.
        flat = int(np.nanargmax(r)) if bad_r else int(np.nanargmin(np.minimum(b, t)))
        where = ""
        da = bulk[name]
        if da.ndim:
            idx = np.unravel_index(flat, da.shape)
            where = " at " + ", ".join(f"{d}={da[d].values[i]}" for d, i in
                                       zip(da.dims, idx, strict=True))
        why = []
        if bad_r:
            why.append(f"R-hat {np.nanmax(r):.3f} > {RHAT_MAX}")
        if bad_e:
            why.append(f"ESS bulk {np.nanmin(b):.0f} / tail {np.nanmin(t):.0f} < {ess_min}")
        found.append((np.nanmax(r) if r is not None else 0.0,
                      f"{name}{where}: {'; '.join(why)}"))
    found.sort(key=lambda x: -x[0])
    return [line for _, line in found[:limit]]
