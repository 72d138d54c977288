"""One function evaluates a law at table rows, over posterior draws.

Every place that needs "the law's log loss at these rows under these parameters" calls
:func:`log_loss_at_rows`: :meth:`Posterior.predict_draws
<bayes_transfer.inference.Posterior.predict_draws>` (posterior draws), the acquisition's
jit-compiled blocks (:mod:`bayes_transfer.design.acquisition`), the loop's simulated
runner (a simulation's true parameters) and the point-estimate baseline (bootstrap
replicates already at the rows). The model likelihoods (NumPyro and PyMC) evaluate the
law on their own sampled sites, through the same :meth:`Law.log_loss
<bayes_transfer.laws.Law.log_loss>`.

A parameter arrives over the groups of its level (``global``, ``source``, ``target`` or
``pair``) in its last axis, with any number of leading draw axes; it is looked up at each
row's (source, target) by :func:`bayes_transfer.model.at_rows`. The level ``"row"`` means
the values are already at the rows (or broadcast against them). Arrays may be numpy or
JAX (pass the matching ``xp``), and the function is pure, so it works inside
``jax.jit``.

Example:
    >>> import numpy as np
    >>> from bayes_transfer.laws import features_from_arrays
    >>> feats = features_from_arrays(N=[1e6, 1e6], p=[1e8, 1e9], f=[1e5, 1e6])
    >>> draws = {"A": np.log([[1.0, 2.0]] * 3), "alpha": np.full(3, -1.0),
    ...          "G": np.log([[0.5, 0.4]] * 3), "beta": np.full(3, -2.0),
    ...          "E": np.full(3, 0.1)}
    >>> levels = {"A": "source", "alpha": "global", "G": "source", "beta": "global",
    ...           "E": "global"}
    >>> out = log_loss_at_rows("transfer-gap", feats, draws, levels=levels,
    ...                        source_idx=np.array([0, 1]), target_idx=np.array([0, 0]),
    ...                        n_targets=1, xp=np)
    >>> out.shape  # (draws, rows)
    (3, 2)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp

from bayes_transfer.laws import Law, get_law

if TYPE_CHECKING:
    from bayes_transfer.spec import ModelSpec

__all__ = ["log_loss_at_rows", "levels_of", "ROW"]

Array = Any
ROW = "row"  # a parameter already at the rows


def levels_of(spec: ModelSpec) -> dict[str, str]:
    """Each parameter's level in ``spec`` (``{"G": "pair", "alpha": "global", ...}``).

    Example:
        >>> from bayes_transfer.spec import load_spec
        >>> levels_of(load_spec("transfer-gap"))["G"]
        'pair'
    """
    return {name: p.level for name, p in spec.params.items()}


def log_loss_at_rows(
    law: Law | str,
    feats: Mapping[str, Array],
    log_params: Mapping[str, Array],
    *,
    levels: Mapping[str, str] | None = None,
    source_idx: Array = None,
    target_idx: Array = None,
    n_targets: int = 0,
    xp: Any = jnp,
) -> Array:
    """The law's log loss at each row under each draw of its parameters.

    Args:
        law: a registered law's name, or a :class:`~bayes_transfer.laws.Law`.
        feats: row features (:func:`bayes_transfer.laws.features`), each ``(rows,)``.
        log_params: ``log(param)`` by name, each ``(*draws, groups)`` over its level's
            groups (``(*draws,)`` for a global one), or, at level ``"row"``, values that
            broadcast against the rows.
        levels: each parameter's level (see :func:`levels_of`); None: every one ``"row"``.
        source_idx, target_idx: each row's source and target index (needed unless every
            level is ``"global"`` or ``"row"``).
        n_targets: the number of targets (a pair's group is ``source * n_targets +
            target``).
        xp: the array namespace of the arrays: ``jax.numpy`` (default; also under
            ``jax.jit``) or ``numpy``.

    Returns:
        The log loss, ``(*draws, rows)`` (as the inputs broadcast).

    Example:
        >>> import numpy as np
        >>> from bayes_transfer.laws import features_from_arrays
        >>> feats = features_from_arrays(N=[1e9], p=[2e10], f=[0.0])
        >>> lp = {k: np.log(v) for k, v in dict(E=1.82, A=482.01, alpha=0.3478,
        ...                                     B=2085.43, beta=0.3658).items()}
        >>> float(np.exp(log_loss_at_rows("chinchilla", feats, lp, xp=np))[0])
        ... # doctest: +ELLIPSIS
        2.532...
    """
    law = get_law(law) if isinstance(law, str) else law
    levels = levels or {}
    at_rows = None
    lp = {}
    for name, value in log_params.items():
        level = levels.get(name, ROW)
        if level == ROW:
            lp[name] = value
            continue
        if at_rows is None:
            # Imported here: the baseline, whose parameters are already at the rows,
            # then never loads the NumPyro model module.
            from bayes_transfer.model import at_rows
        lp[name] = at_rows(level, value, source_idx, target_idx, n_targets)
    return law.log_loss(feats, lp, xp=xp)
