"""Choosing the next experiments: candidates, the cost model, acquisition and batches.

Given a posterior, which runs ``(source, target, N, p, f)`` most reduce the uncertainty
of the transfer gaps per FLOP? (DESIGN.md, "Choosing the next experiments".)

* :mod:`.candidates` -- candidate grids and ranges (TOML or Python), and the cost model
  ``training_flops = 6 N (p + f)`` less pre-training already paid for.
* :mod:`.acquisition` -- the expected gain of a run, from the posterior draws (the
  linear-Gaussian ensemble estimator, its two criteria, and its error).
* :mod:`.batch` -- :func:`score_candidates` and the greedy batch :func:`suggest`.
* :mod:`.pool` -- replaying a finished table: :func:`pool_runner` "runs" a candidate by
  revealing its measured row (suggestions tested on real losses).

Example:
    >>> from bayes_transfer.design import candidates_from_spec, suggest
    >>> cands = candidates_from_spec("models/candidates-example.toml")  # doctest: +SKIP
    >>> suggest(posterior, cands, batch=8, budget=1e18)  # doctest: +SKIP
"""

from bayes_transfer.design.acquisition import (
    PosteriorDraws,
    as_draws,
    ensemble_gains,
    log_mean_draws,
    quantity_draws,
)
from bayes_transfer.design.batch import score_candidates, suggest
from bayes_transfer.design.candidates import (
    CANDIDATE_COLUMNS,
    CandidateSpecError,
    HeldSizeWarning,
    candidate_costs,
    candidate_grid,
    candidates_from_spec,
    checkpoint_keys,
    hold_model_size,
    initial_design,
    sequential_costs,
    training_flops,
)
from bayes_transfer.design.pool import PoolRunner, pool_candidates, pool_runner

__all__ = [
    "CANDIDATE_COLUMNS",
    "CandidateSpecError",
    "HeldSizeWarning",
    "PoolRunner",
    "PosteriorDraws",
    "as_draws",
    "candidate_costs",
    "candidate_grid",
    "candidates_from_spec",
    "checkpoint_keys",
    "ensemble_gains",
    "hold_model_size",
    "initial_design",
    "log_mean_draws",
    "pool_candidates",
    "pool_runner",
    "quantity_draws",
    "score_candidates",
    "sequential_costs",
    "suggest",
    "training_flops",
]
