"""Convergence diagnostics, computed after every fit and reported, never hidden.

Thresholds follow Vehtari et al. 2021 ("Rank-normalization, folding, and localization"):
R-hat below 1.01, bulk and tail ESS above 100 per chain; plus no divergent transitions,
an E-BFMI above 0.3 in every chain, and a finite log density in every draw.

Draws whose trajectory was cut at the maximum tree depth are counted and reported as a
*note*, as Stan does: it is a cost (each such draw pays ``2**max_tree_depth - 1``
gradients and explores less far than NUTS would like), not by itself a wrong posterior,
so it does not fail ``ok``; R-hat and ESS say whether the draws are still good enough.

R-hat and the bulk and tail ESS are ArviZ's definitions (``az.rhat(method="rank")``,
``az.ess(method="bulk" | "tail")``, Vehtari et al. 2021), computed by
:func:`convergence` for every element of a variable at once: ArviZ loops over elements
in Python (7 s of a 79-s fit of 1,000 pairs, 2026-12-06; ``benchmarks/
diagnostics_speed.py`` times the two). ``tests/test_diagnostics.py`` checks they agree.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import arviz as az
import numpy as np
import xarray as xr

__all__ = ["Diagnostics", "SamplingWarning", "diagnose", "failing_parameters", "convergence",
           "convergence_arrays", "rhat_by_chance", "draws_for_rhat", "RHAT_MAX", "BFMI_MIN",
           "ESS_PER_CHAIN_MIN"]

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


#: Columns of draws handled at a time by :func:`convergence_arrays`: each holds a few
#: float64 and complex copies of its draws. 10,000 columns of 2 x 1,000 draws: peak 94 MB
#: and 5.7 s with 512, 376 MB and 6.9 s with 2,048 (tracemalloc, 2026-12-06).
_COLUMNS = 512


def _split_chains(x: np.ndarray) -> np.ndarray:
    # (k, chain, draw) -> (k, 2 chain, draw // 2): each chain's first and last halves.
    half = x.shape[2] // 2
    return np.concatenate([x[:, :, :half], x[:, :, x.shape[2] - half:]], axis=1)


def _z_scale(x: np.ndarray) -> np.ndarray:
    # Rank-normalise each column over all its chains and draws (Blom's offset 3/8).
    from scipy import special, stats

    flat = x.reshape(x.shape[0], -1)
    ranks = stats.rankdata(flat, method="average", axis=1)
    return special.ndtri((ranks - 3 / 8) / (flat.shape[1] + 1 / 4)).reshape(x.shape)


def _rhat(x: np.ndarray) -> np.ndarray:
    # Potential scale reduction of each column of (k, chain, draw).
    n = x.shape[2]
    between = n * x.mean(axis=2).var(axis=1, ddof=1)
    within = x.var(axis=2, ddof=1).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((between / within + n - 1) / n)


def _ess(x: np.ndarray) -> np.ndarray:
    # Effective sample size of each column of (k, chain, draw), with Geyer's initial
    # positive and then monotone sequences over pairs of autocorrelations, as ArviZ's
    # _ess does lag by lag: the pairs' sums are cut at the first non-positive one, then
    # made non-increasing (a running minimum).
    from scipy.fft import irfft, next_fast_len, rfft

    k, m, n = x.shape
    size = m * n
    centred = x - x.mean(axis=2, keepdims=True)
    length = next_fast_len(2 * n, real=True)
    spectrum = rfft(centred, n=length, axis=2)
    acov = irfft(spectrum * np.conj(spectrum), n=length, axis=2)[:, :, :n] / n
    mean_acov = acov.mean(axis=1)  # (k, lag)
    mean_var = mean_acov[:, :1] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus = var_plus + x.mean(axis=2).var(axis=1, ddof=1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var - mean_acov) / var_plus
    rho[:, 0] = 1.0
    last_pair = max((n - 3) // 2, 0)  # ArviZ's loop stops before lag n - 2
    pairs = rho[:, 0:2 * last_pair + 2:2] + rho[:, 1:2 * last_pair + 2:2]  # (k, pair)
    stop = pairs <= 0
    cut = np.where(stop.any(axis=1), stop.argmax(axis=1), last_pair)
    index = np.arange(pairs.shape[1])
    kept = index < cut[:, None]
    total = np.where(kept, np.minimum.accumulate(pairs, axis=1), 0.0).sum(axis=1)
    rows = np.arange(k)
    even = rho[rows, 2 * cut]
    # The even lag after the last kept pair counts where positive (or where its pair's
    # sum was kept: not negative).
    tail = np.where((even > 0) | (pairs[rows, cut] >= 0), even, 0.0)
    with np.errstate(invalid="ignore"):
        tau = np.maximum(-1.0 + 2.0 * total + tail, 1.0 / np.log10(size))
    ess = size / tau
    ess[np.isnan(np.where(index <= cut[:, None], pairs, 0.0)).any(axis=1)] = np.nan
    constant = (x.max(axis=(1, 2)) - x.min(axis=(1, 2))) < np.finfo(float).resolution
    ess[constant] = size
    return ess


def convergence_arrays(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank-normalised split R-hat, bulk ESS and tail ESS of each column of ``draws``.

    ``draws`` has shape ``(chain, draw, k)``; the results have shape ``(k,)``, equal to
    ArviZ's ``az.rhat`` (rank), ``az.ess`` (bulk) and ``az.ess`` (tail, quantiles 0.05
    and 0.95) of each column. A column with a NaN, or with fewer than 4 draws, gets NaN
    (R-hat also with one chain), as in ArviZ. Draws are taken as float64 (exactly, from
    NumPyro's float32): ArviZ folds float32 draws about their median in float32, so on
    them its R-hat can differ from this one by ~1e-5 (a real Chinchilla fit, 2026-12-06:
    at most 4.5e-5; 0 on the same draws as float64).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> rhat, bulk, tail = convergence_arrays(rng.normal(size=(4, 500, 3)))
        >>> bool(np.all(rhat < 1.01)), bool(np.all(bulk > 1000))
        (True, True)
    """
    x = np.asarray(draws)  # float64 a block at a time: a whole variable's copy is large
    chains, n_draws, k = x.shape
    rhat, bulk, tail = (np.full(k, np.nan) for _ in range(3))
    if n_draws < 4:
        return rhat, bulk, tail
    for lo in range(0, k, _COLUMNS):
        # Columns first, draws contiguous: the sorts and FFTs run along the last axis.
        block = np.ascontiguousarray(np.moveaxis(x[:, :, lo:lo + _COLUMNS], 2, 0),
                                     dtype=float)
        ok = ~np.isnan(block).any(axis=(1, 2))
        if not ok.any():
            continue
        block = block[ok]
        out = np.arange(lo, min(lo + _COLUMNS, k))[ok]
        split = _split_chains(block)
        z = _z_scale(split)
        flat = split.reshape(split.shape[0], -1)
        folded = _z_scale(np.abs(split - np.median(flat, axis=1)[:, None, None]))
        if chains > 1:
            rhat[out] = np.maximum(_rhat(z), _rhat(folded))
        bulk[out] = _ess(z)
        low, high = np.quantile(block.reshape(block.shape[0], -1), [0.05, 0.95], axis=1)
        tail[out] = np.minimum(
            _ess(_split_chains((block <= low[:, None, None]).astype(float))),
            _ess(_split_chains((block <= high[:, None, None]).astype(float))))
    return rhat, bulk, tail


def rhat_by_chance(chains: int, draws: int, quantities: int, prob: float = 0.5) -> float:
    """The largest R-hat that *independent* draws would reach by chance alone: its
    ``prob`` quantile over ``quantities`` quantities, each drawn ``chains`` x ``draws``.

    R-hat is a statistic with a spread, so the largest of many is larger than a typical
    one: 2 chains x 500 independent draws of 10,000 quantities give a largest R-hat of
    about 1.014 (its median), above the 1.01 threshold though nothing is wrong. No
    sampler can do better than independent draws, so a largest R-hat near this value
    asks for more draws, not a better sampler (:func:`draws_for_rhat` says how many).

    Why the formula: for independent normal draws split into ``M = 2 chains`` halves of
    ``n`` draws, ``R-hat^2 = (n - 1) / n + (B / n) / W`` with ``(B / n) / W`` an
    ``F(M - 1, M (n - 1)) / n`` variable; the rank-normalised R-hat is the larger of the
    bulk and the folded one (close to independent for continuous draws), so the largest
    over ``k`` quantities is the largest of ``2 k`` such variables.
    ``tests/test_diagnostics.py`` checks the quantile against simulated draws.

    Example:
        >>> round(rhat_by_chance(chains=2, draws=500, quantities=10_000), 3)
        1.014
        >>> round(rhat_by_chance(chains=4, draws=1000, quantities=10_000), 3)
        1.004
    """
    from scipy import stats

    if chains < 2 or draws < 4 or quantities < 1 or not 0 < prob < 1:
        raise ValueError("rhat_by_chance needs chains >= 2, draws >= 4, quantities >= 1 "
                         f"and 0 < prob < 1, not {chains}, {draws}, {quantities}, {prob}")
    halves, n = 2 * chains, draws // 2
    # P(all 2k below x) = prob  <=>  each one's upper tail is 1 - prob^(1 / 2k); expm1 and
    # log keep that tail accurate when it is tiny.
    tail = -np.expm1(np.log(prob) / (2 * quantities))
    ratio = stats.f.isf(tail, halves - 1, halves * (n - 1))
    return float(np.sqrt(1.0 + (ratio - 1.0) / n))


def draws_for_rhat(chains: int, quantities: int, rhat: float = RHAT_MAX,
                   prob: float = 0.5) -> int:
    """The fewest draws a chain for which independent draws of ``quantities`` quantities
    keep every R-hat at or below ``rhat`` with probability ``prob``
    (:func:`rhat_by_chance`): a floor for any sampler, whose draws are correlated.

    Example:
        >>> draws_for_rhat(chains=2, quantities=10_000)
        682
    """
    def over(half: int) -> bool:  # a chain of 2 half draws: R-hat splits it in halves
        return rhat_by_chance(chains, 2 * half, quantities, prob) > rhat

    low, high = 1, 2  # over(low) holds (a half of 1 draw is below R-hat's minimum)
    while over(high):
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if over(mid) else (low, mid)
    return 2 * high


def convergence(post: xr.Dataset, var_names: list[str] | None = None
                ) -> dict[str, xr.Dataset]:
    """R-hat, bulk ESS and tail ESS of every element of ``post``'s variables (dims
    ``chain``, ``draw`` first), as ``{"rhat": ds, "ess_bulk": ds, "ess_tail": ds}``
    with the variables' other dims: ``az.rhat(post)``, ``az.ess(post, method="bulk")``
    and ``az.ess(post, method="tail")`` in one pass (see :func:`convergence_arrays`)."""
    out: dict[str, dict[str, xr.DataArray]] = {"rhat": {}, "ess_bulk": {}, "ess_tail": {}}
    for name in var_names or list(post.data_vars):
        da = post[name].transpose("chain", "draw", ...)
        rest = da.shape[2:]
        values = convergence_arrays(da.values.reshape(da.shape[0], da.shape[1], -1))
        for key, v in zip(out, values, strict=True):
            out[key][name] = xr.DataArray(v.reshape(rest), dims=da.dims[2:],
                                          coords={d: da[d] for d in da.dims[2:]
                                                  if d in da.coords})
    return {key: xr.Dataset(v) for key, v in out.items()}


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


def _by_chance(rhat: xr.Dataset, largest: float, chains: int, draws: int) -> str:
    # Many quantities: say when chance alone could explain the largest R-hat (it is
    # within the 99% quantile of independent draws' largest, and their median is itself
    # near the threshold), and how many draws that many quantities need.
    # A parameter and its log (``A``, ``log_A``) have the same ranks: one quantity.
    quantities = sum(int(np.isfinite(v.values).sum()) for name, v in rhat.data_vars.items()
                     if f"log_{name}" not in rhat.data_vars)
    if draws < 4 or quantities < 1:
        return ""
    typical = rhat_by_chance(chains, draws, quantities)
    if typical <= 1 + (RHAT_MAX - 1) / 2 or largest > rhat_by_chance(chains, draws,
                                                                     quantities, 0.99):
        return ""
    return (f" (over these {quantities:,} quantities even independent draws would reach "
            f"about {typical:.3f} by chance: R-hat <= {RHAT_MAX} on every one needs at "
            f"least {draws_for_rhat(chains, quantities):,} draws a chain, more as draws "
            "are correlated)")


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
    found = convergence(post, names)
    max_rhat, rhat_var = (_worst(found["rhat"], np.max) if chains > 1
                          else (float("nan"), ""))
    ess_bulk, _ = _worst(found["ess_bulk"], np.min)
    ess_tail, _ = _worst(found["ess_tail"], np.min)
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
                        "run more warmup and draws, or tighten the prior of that parameter"
                        + _by_chance(found["rhat"], max_rhat, chains, draws))
    if chains > 1 and names and not np.isfinite(max_rhat):
        # Every value's R-hat is undefined: each one's draws are constant (or non-finite)
        # within the chains, i.e. no chain moved. Seen on a refit of 12 rows of fine-
        # tuning curves where every transition diverged (2026-12-06); the head line's
        # "R-hat max nan" said nothing of it.
        problems.append("R-hat is undefined for every value: the chains' draws are constant "
                        "(or not finite), so no chain moved from its start; check the "
                        "divergences, refit with another seed or a longer warmup")
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
    measured = convergence(post, names)
    rhat = measured["rhat"] if chains > 1 else None
    bulk, tail = measured["ess_bulk"], measured["ess_tail"]
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
