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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from bayes_transfer.extrapolation import warn_extrapolation
from bayes_transfer.laws import get_law

if TYPE_CHECKING:
    from bayes_transfer.inference import Posterior

__all__ = ["Advice", "advise", "budget_options", "run_cost", "DEFAULT_FRACTIONS"]

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
    return (f"{row['source']}->{row['target']}, N={row['params']:.2g}, "
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
