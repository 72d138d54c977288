"""Allocation advice: with a fixed budget, where should the next run's compute go?

For a target (and optionally a source), :func:`advise` enumerates the runs a budget can
buy -- a grid of model sizes N times splits of the tokens between pre-training (p) and
fine-tuning (f), each costing the whole budget under the project's cost model
(:func:`bayes_transfer.design.training_flops`, ``6 N (p + f)`` FLOPs) -- predicts each option's
loss under every posterior draw, and counts, draw by draw, which option is best. The
result is the posterior probability that each option is the best, and each option's
expected loss with its credible interval. When those probabilities are spread out (the
data cannot rank the options), the advice says so plainly instead of naming a winner.

Budgets are in training FLOPs (``unit="flops"``) or in tokens ``p + f``
(``unit="tokens"``: then the model size is held at ``params`` and only the split is
advised). A law without a model-size term (its :attr:`~bayes_transfer.laws.Law.size_term`
is None, e.g. ``transfer-gap``) cannot say anything about N: only the split is advised,
and the advice says so.

Example:
    >>> from bayes_transfer.inference import Posterior
    >>> post = Posterior.load("posterior.nc")  # doctest: +SKIP
    >>> adv = advise(post, target="c-src", budget=1e15)  # doctest: +SKIP
    >>> print(adv.message)  # doctest: +SKIP
    best: python-src->c-src, N=2.2e+06, p=6.8e+07, f=7.6e+06 (probability 0.91 of being best)
    >>> adv.options[["source", "params", "pretrain_tokens", "p_best"]]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from bayes_transfer.data import pair_label
from bayes_transfer.extrapolation import warn_extrapolation
from bayes_transfer.laws import get_law

if TYPE_CHECKING:
    from bayes_transfer.inference import Posterior

__all__ = ["Advice", "advise", "budget_options", "run_cost", "DEFAULT_FRACTIONS", "Frontier",
           "compute_frontier", "default_compute", "optimal_allocation", "MAX_FLOPS"]

Unit = Literal["flops", "tokens"]
# Share of the tokens given to pre-training (the rest fine-tunes).
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9, 0.97)


def run_cost(rows: pd.DataFrame) -> np.ndarray:
    """Training FLOPs of each row under the project's one cost model, ``6 N (p + f)``.

    Example:
        >>> run_cost(pd.DataFrame({"params": [1e6], "pretrain_tokens": [1e9],
        ...                        "finetune_tokens": [1e6]})).tolist()
        [6006000000000000.0]
    """
    from bayes_transfer.design import training_flops

    return training_flops(rows["params"], rows["pretrain_tokens"], rows["finetune_tokens"])


def budget_options(
    sources: Sequence[str],
    target: str,
    budget: float,
    *,
    unit: Unit = "flops",
    sizes: Sequence[float],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> pd.DataFrame:
    """Every (source, N, split) run that spends exactly ``budget``, as run-table rows.

    ``unit="flops"``: the tokens ``p + f`` of a run at size N are what the cost model
    allows (it is linear in tokens: ``cost(N, p, f) = (p + f) * cost(N, 1, 0)`` holds for
    ``6 N (p + f)``). ``unit="tokens"``: ``p + f = budget`` at every size. Options with
    fewer than one pre-training or fine-tuning token are dropped.

    Example:
        >>> opts = budget_options(["web"], "code", 6e12, sizes=[1e6], fractions=[0.5],
        ...                       unit="tokens")
        >>> opts[["params", "pretrain_tokens", "finetune_tokens"]].to_dict("records")
        [{'params': 1000000, 'pretrain_tokens': 3000000000000, 'finetune_tokens': 3000000000000}]
    """
    if not budget > 0:
        raise ValueError(f"--budget must be positive, not {budget}")
    if unit not in ("flops", "tokens"):
        raise ValueError(f"--unit must be 'flops' or 'tokens', not {unit!r}")
    bad = [s for s in fractions if not 0 < s < 1]
    if bad:
        raise ValueError(f"pre-training fractions must be strictly between 0 and 1: {bad}")
    grid = pd.DataFrame(
        [(s, target, float(n), float(fr)) for s in sources for n in sizes for fr in fractions],
        columns=["source", "target", "params", "fraction"],
    )
    if unit == "tokens":
        tokens = np.full(len(grid), float(budget))
    else:
        unit_rows = grid.assign(pretrain_tokens=1.0, finetune_tokens=0.0)
        tokens = budget / run_cost(unit_rows)
    grid["pretrain_tokens"] = np.floor(grid["fraction"] * tokens).astype(np.int64)
    grid["finetune_tokens"] = np.floor((1 - grid["fraction"]) * tokens).astype(np.int64)
    grid["params"] = grid["params"].round().astype(np.int64)
    grid = grid[(grid["pretrain_tokens"] >= 1) & (grid["finetune_tokens"] >= 1)]
    return grid.reset_index(drop=True)


@dataclass(frozen=True)
class Advice:
    """What :func:`advise` found.

    Attributes:
        options: one row per option, best first: ``source``, ``target``, ``params``,
            ``pretrain_tokens``, ``finetune_tokens``, ``fraction`` (share of tokens
            pre-training), ``cost``, ``loss_mean``, ``loss_lower``, ``loss_upper`` and
            ``p_best`` (posterior probability that it has the lowest loss).
        decisive: whether the data single out the top option.
        tied: the options the data cannot tell apart from the top one (the top included).
        message: the advice in words.
        notes: caveats (e.g. a law without a model-size term).
    """

    options: pd.DataFrame
    decisive: bool
    tied: pd.DataFrame
    message: str
    ci: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def best(self) -> pd.Series:
        return self.options.iloc[0]

    def __str__(self) -> str:
        return "\n".join((*self.notes, self.message))


def _describe(row: pd.Series) -> str:
    return (f"{pair_label(str(row['source']), str(row['target']))}, N={row['params']:.2g}, "
            f"p={row['pretrain_tokens']:.2g}, f={row['finetune_tokens']:.2g}")


def advise(
    post: Posterior,
    target: str,
    budget: float,
    *,
    source: str | None = None,
    unit: Unit = "flops",
    ci: float = 0.9,
    sizes: Sequence[float] | None = None,
    params: float | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    threshold: float = 0.8,
) -> Advice:
    """The posterior distribution of the best use of ``budget`` for ``target``.

    Args:
        post: a fitted posterior.
        target: the target distribution to do well on.
        budget: training FLOPs (``unit="flops"``) or tokens ``p + f`` (``"tokens"``).
        source: pre-training source; default: every source with runs on ``target``.
        ci: width of the loss intervals.
        sizes: model sizes to consider (FLOPs budgets with a size-aware law); default:
            7 sizes log-spaced from the table's smallest N to ten times its largest.
        params: the model size when N is not advised (token budgets, or a law without
            a size term); default: the table's largest N.
        fractions: shares of the tokens given to pre-training.
        threshold: the top option is named best only if, in at least this share of the
            posterior draws, it beats each other option (by default 0.8); otherwise the
            advice lists the options the data cannot tell apart.

    Returns:
        An :class:`Advice`; ``str(advice)`` is the advice in words. Options outside the
        fitted range of N, p or f raise one
        :class:`~bayes_transfer.extrapolation.ExtrapolationWarning` saying how far.
    """
    if not 0 < ci < 1:
        raise ValueError(f"--ci must be between 0 and 1 (e.g. 0.9), not {ci}")
    if not 0.5 < threshold < 1:
        raise ValueError(f"threshold must be between 0.5 and 1, not {threshold}")
    runs = post.runs
    if target not in runs.targets:
        raise ValueError(f"--target {target!r} is not a target of this posterior; "
                         f"targets: {', '.join(runs.targets)}")
    sources = _sources_for(post, target, source)
    table_sizes = runs.df["params"].astype(float)
    notes = []
    # The law says whether its loss depends on N (so that N is worth advising on).
    law = get_law(post.spec.law)
    size_aware = law.has_size_term
    if unit == "flops" and size_aware:
        sizes = list(sizes) if sizes is not None else list(
            np.geomspace(table_sizes.min(), 10 * table_sizes.max(), 7))
    else:
        sizes = [float(params if params is not None else table_sizes.max())]
        if not size_aware:
            notes.append(f"the law {law.name} ({law.formula}) has no model-size term, so "
                         f"it cannot advise on N: only the split between pre-training and "
                         f"fine-tuning is advised, at N={sizes[0]:.3g}.")
        else:
            notes.append(f"a token budget does not trade tokens against N: only the split "
                         f"is advised, at N={sizes[0]:.3g}.")
    options = budget_options(sources, target, budget, unit=unit, sizes=sizes,
                             fractions=fractions)
    if options.empty:
        raise ValueError(f"a budget of {budget:g} {unit} buys no run with at least one "
                         "pre-training and one fine-tuning token; raise --budget")
    options["cost"] = run_cost(options)
    draws = post.predict_draws(options, kind="mean")  # (draw, option)
    # The default sizes reach 10x the largest fitted N, and a budget above the table's
    # compute buys more tokens than were fitted: say so, and by how much.
    warn_extrapolation(options, post.runs, "options",
                       advice="Their losses rest on the law's extrapolation")
    return _decide(options, draws, ci=ci, threshold=threshold, notes=tuple(notes))


def _sources_for(post: Posterior, target: str, source: str | None) -> list[str]:
    runs = post.runs
    if source is not None:
        if source not in runs.sources:
            raise ValueError(f"--source {source!r} is not a source of this posterior; "
                             f"sources: {', '.join(runs.sources)}")
        return [source]
    observed = {s for (s, t), o in zip(runs.pairs, runs.observed_pairs, strict=True)
                if o and t == target}
    sources = [s for s in runs.sources if s in observed]
    if not sources:
        raise ValueError(f"no source has runs on target {target!r}; pass --source")
    return sources


def _decide(options: pd.DataFrame, draws: np.ndarray, *, ci: float, threshold: float,
            notes: tuple[str, ...]) -> Advice:
    """Rank options by their posterior probability of being best, and judge the ranking."""
    n_draws, n_options = draws.shape
    best = np.argmin(draws, axis=1)
    options = options.copy()
    options["p_best"] = np.bincount(best, minlength=n_options) / n_draws
    options["loss_mean"] = draws.mean(axis=0)
    options["loss_lower"], options["loss_upper"] = np.quantile(
        draws, [(1 - ci) / 2, (1 + ci) / 2], axis=0)
    order = np.lexsort((options["loss_mean"].to_numpy(), -options["p_best"].to_numpy()))
    options = options.iloc[order].reset_index(drop=True)
    draws = draws[:, order]
    # Head-to-head: in what share of the draws does the top option beat each other one?
    beats = (draws[:, :1] < draws).mean(axis=0)
    beats[0] = 1.0
    options["p_top_better"] = beats
    tied = options[beats < threshold]
    top = options.iloc[0]
    decisive = bool(len(tied) == 0 and top["p_best"] >= threshold)
    if decisive:
        message = (f"best: {_describe(top)} (probability {top['p_best']:.2f} of being the "
                   f"best; expected loss {top['loss_mean']:.4g}, {ci:.0%} interval "
                   f"[{top['loss_lower']:.4g}, {top['loss_upper']:.4g}])")
    else:
        tied = pd.concat([options.iloc[:1], tied]) if len(tied) else options.iloc[:2]
        listed = "; ".join(
            f"{_describe(r)} (P(best) {r['p_best']:.2f}, loss {r['loss_mean']:.4g} "
            f"[{r['loss_lower']:.4g}, {r['loss_upper']:.4g}])"
            for _, r in tied.head(5).iterrows())
        more = f" and {len(tied) - 5} more" if len(tied) > 5 else ""
        message = (f"the data cannot tell these options apart: {listed}{more}. The top "
                   f"option is the best in only {top['p_best']:.0%} of the posterior draws; "
                   "run experiments that separate them (bayes-transfer suggest) before "
                   "committing the budget.")
    return Advice(options=options, decisive=decisive, tied=tied.reset_index(drop=True),
                  message=message, ci=ci, notes=notes)


# ---- the compute-optimal frontier (laws with ``Law.compute_frontier``) ------------------

#: The largest compute budget the frontier takes (FLOPs): far beyond any training run, and
#: small enough that N_opt and D_opt stay exact as 64-bit integers.
MAX_FLOPS = 1e32


def optimal_allocation(log_params: Mapping[str, ArrayLike], compute: ArrayLike
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The (N, D) that minimise ``E + A N^-alpha + B D^-beta`` at compute ``C = 6 N D``.

    Hoffmann et al. 2022, eq. (4): ``N_opt = G (C/6)^a`` and ``D_opt = G^-1 (C/6)^b`` with
    ``a = beta / (alpha + beta)``, ``b = alpha / (alpha + beta)`` and
    ``G = (alpha A / (beta B))^(1 / (alpha + beta))``. Setting the derivative of
    ``A N^-alpha + B (N / (C/6))^beta`` in N to zero gives it. ``log_params`` holds
    ``log`` of ``A, alpha, B, beta`` in raw units (parameters and tokens of 1); arrays
    broadcast against ``compute`` (FLOPs), e.g. draws ``(draws, 1)`` with budgets ``(k,)``.

    Returns:
        ``(log N_opt, log D_opt)``, natural logs, broadcast.

    Example:
        >>> lp = {k: np.log(v) for k, v in
        ...       {"A": 482.01, "alpha": 0.3478, "B": 2085.43, "beta": 0.3658}.items()}
        >>> log_n, log_d = optimal_allocation(lp, 5.76e23)  # Chinchilla's budget
        >>> f"N={np.exp(log_n):.3g}, D={np.exp(log_d):.3g}"
        'N=7.22e+10, D=1.33e+12'
    """
    from bayes_transfer.design import training_flops

    alpha, beta = np.exp(log_params["alpha"]), np.exp(log_params["beta"])
    total = alpha + beta
    log_g = (log_params["alpha"] + log_params["A"] - log_params["beta"]
             - log_params["B"]) / total
    # C / 6: the cost model's FLOPs per parameter and token (6 N D), from its one home.
    log_c = np.log(np.asarray(compute, dtype=np.float64) / float(training_flops(1, 1, 0)))
    return log_g + beta / total * log_c, -log_g + alpha / total * log_c


@dataclass(frozen=True)
class Frontier:
    """What :func:`compute_frontier` found.

    Attributes:
        table: one row per group and budget: ``source``, ``target`` (``*``: every pair
            shares the law), ``compute`` (FLOPs), then ``median``, ``lower`` and ``upper``
            of ``params`` (N_opt, parameters), ``tokens`` (D_opt), ``tokens_per_param``
            and ``loss`` (the loss at the optimum, nats).
        exponents: per group, the exponents of ``N_opt ~ C^a`` and ``D_opt ~ C^b`` with
            their intervals (``a_median``, ``a_lower``, ... ``b_upper``).
        ci: width of the credible intervals.
        law: the law's name.
        notes: caveats in words.
    """

    table: pd.DataFrame
    exponents: pd.DataFrame
    ci: float
    law: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        lines = list(self.notes)
        for r in self.table.itertuples(index=False):
            lines.append(f"C={r.compute:.3g} FLOPs: N={r.params_median:.3g} "
                         f"[{r.params_lower:.3g}, {r.params_upper:.3g}], "
                         f"D={r.tokens_median:.3g} [{r.tokens_lower:.3g}, "
                         f"{r.tokens_upper:.3g}], loss {r.loss_median:.4g}")
        return "\n".join(lines)


def default_compute(post: Posterior, points: int = 5) -> np.ndarray:
    """Budgets log-spaced from the fitted table's cheapest run to 100 times its dearest.

    Example:
        >>> default_compute(post)  # doctest: +SKIP
        array([1.2e+18, ...])
    """
    cost = run_cost(post.runs.df)
    cost = cost[cost > 0]
    return np.geomspace(cost.min(), 100 * cost.max(), points)


def compute_frontier(
    post: Posterior,
    compute: Sequence[float] | None = None,
    *,
    ci: float = 0.9,
    source: str | None = None,
    target: str | None = None,
    seed: int = 0,
) -> Frontier:
    """The posterior of the compute-optimal model size and data, budget by budget.

    For each posterior draw, the closed form of :func:`optimal_allocation` gives its
    ``N_opt(C)`` and ``D_opt(C)``; the law (plus its learned discrepancy, where the spec
    has one) gives the loss there. Medians and central ``ci`` intervals over the draws
    are reported in raw units: parameters, tokens and FLOPs. A law whose parameters are
    all global has one frontier (``source = target = "*"``); otherwise each observed
    (source, target) pair has its own. This is the Chinchilla toolkit's allocation with
    a posterior instead of a point.

    Args:
        post: a posterior of a law with :attr:`~bayes_transfer.laws.Law.compute_frontier`.
        compute: budgets in training FLOPs (``6 N D``); default :func:`default_compute`.
        ci: width of the credible intervals.
        source, target: only the pairs with this source / target.
        seed: seed of the discrepancy draws.

    Returns:
        A :class:`Frontier`. Optima outside the fitted range of N or D raise one
        :class:`~bayes_transfer.extrapolation.ExtrapolationWarning` saying how far.

    Example:
        >>> post = Posterior.load("chinchilla.nc")  # doctest: +SKIP
        >>> compute_frontier(post, [5.76e23]).table[["params_median", "tokens_median"]]
        ... # doctest: +SKIP
    """
    from bayes_transfer.evaluate import log_loss_at_rows
    from bayes_transfer.laws import Units, features_from_arrays
    from bayes_transfer.model import at_rows

    if not 0 < ci < 1:
        raise ValueError(f"--ci must be between 0 and 1 (e.g. 0.9), not {ci}")
    law = get_law(post.spec.law)
    if not law.compute_frontier:
        raise ValueError(f"the law {law.name} ({law.formula}) has no compute-optimal "
                         "frontier; advise it with --target and --budget")
    budgets = np.asarray(default_compute(post) if compute is None else compute,
                         dtype=np.float64).reshape(-1)
    if budgets.size == 0 or not np.all((budgets > 0) & (budgets <= MAX_FLOPS)):
        raise ValueError(f"--compute must be FLOPs above 0 and at most {MAX_FLOPS:g}, not "
                         f"{budgets.tolist()}")
    groups, labels = _frontier_groups(post, source, target)
    runs = post.runs
    src = np.array([runs.sources.index(s) for s, _ in groups])
    tgt = np.array([runs.targets.index(t) for _, t in groups])
    # Reference-unit draws at each group, (draws, groups), then raw units: the papers'.
    lp_ref = {name: at_rows(p.level, draws, src, tgt, len(runs.targets))
              for (name, p), draws in zip(post.spec.params.items(),
                                          post.flat_log_params().values(), strict=True)}
    lp = {k: np.broadcast_to(v, (post.n_draws, len(groups)))[:, :, None]
          for k, v in law.to_raw(lp_ref, post.units, np).items()}  # (draws, groups, 1)
    log_n, log_d = optimal_allocation(lp, budgets)  # (draws, groups, budgets)
    n_opt, d_opt = np.exp(log_n), np.exp(log_d)
    # The law at each draw's own optimum, through the one evaluation of the law (the
    # parameters are already at these points: level "row").
    log_loss = np.asarray(log_loss_at_rows(
        law, features_from_arrays(n_opt, d_opt, 0.0, False, Units()), lp, xp=np))
    shape = (len(groups), len(budgets))
    rows = pd.DataFrame({  # the median optimum of each (group, budget), as run-table rows
        "source": np.repeat([s for s, _ in groups], len(budgets)),
        "target": np.repeat([t for _, t in groups], len(budgets)),
        "params": np.median(n_opt, axis=0).reshape(-1).round().astype(np.int64),
        "pretrain_tokens": np.median(d_opt, axis=0).reshape(-1).round().astype(np.int64),
        "finetune_tokens": 0,
    })
    if post.spec.discrepancy is not None:
        # The drift is read at the median optimum: the loss is flat in the allocation at
        # its minimum, and the drift depends on how far the point lies beyond the fitted
        # N and D.
        log_loss = log_loss + post.drift_draws(rows, seed=seed).reshape(
            (post.n_draws, *shape))
    lo_q, hi_q = (1 - ci) / 2, (1 + ci) / 2
    out = pd.DataFrame({"source": np.repeat([s for s, _ in labels], len(budgets)),
                        "target": np.repeat([t for _, t in labels], len(budgets)),
                        "compute": np.tile(budgets, len(groups))})
    for name, draws in (("params", n_opt), ("tokens", d_opt), ("tokens_per_param",
                                                                 d_opt / n_opt),
                        ("loss", np.exp(log_loss))):
        lo, med, hi = np.quantile(draws, [lo_q, 0.5, hi_q], axis=0)
        out[f"{name}_median"], out[f"{name}_lower"], out[f"{name}_upper"] = (
            med.reshape(-1), lo.reshape(-1), hi.reshape(-1))
    warn_extrapolation(rows, runs, "compute-optimal points",
                       advice="The frontier there rests on the law's extrapolation")
    alpha, beta = np.exp(lp["alpha"][..., 0]), np.exp(lp["beta"][..., 0])
    exps = pd.DataFrame({"source": [s for s, _ in labels], "target": [t for _, t in labels]})
    for name, draws in (("a", beta / (alpha + beta)), ("b", alpha / (alpha + beta))):
        lo, med, hi = np.quantile(draws, [lo_q, 0.5, hi_q], axis=0)
        exps[f"{name}_median"], exps[f"{name}_lower"], exps[f"{name}_upper"] = med, lo, hi
    notes = (f"{law.formula}; at compute C = 6 N D the optimum is N ~ C^a, D ~ C^b "
             f"(Hoffmann et al. 2022, eq. 4), per posterior draw.",)
    return Frontier(table=out, exponents=exps, ci=ci, law=law.name, notes=notes)


def _frontier_groups(post: Posterior, source: str | None, target: str | None
                     ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (source, target) pairs with their own frontier, and their labels: one pair,
    labelled ``("*", "*")``, when every pair shares the law (all of it global)."""
    runs = post.runs
    for flag, value, names in (("--source", source, runs.sources),
                               ("--target", target, runs.targets)):
        if value is not None and value not in names:
            raise ValueError(f"{flag} {value!r} is not in this posterior; "
                             f"{flag[2:]}s: {', '.join(names)}")
    pairs = [(s, t) for (s, t), o in zip(runs.pairs, runs.observed_pairs, strict=True)
             if o and source in (None, s) and target in (None, t)]
    if not pairs:
        raise ValueError(f"no observed pair has source {source!r} and target {target!r}")
    disc = post.spec.discrepancy
    if (all(p.level == "global" for p in post.spec.params.values())
            and (disc is None or disc.level == "global")):
        return [pairs[0]], [("*", "*")]
    return pairs, pairs
