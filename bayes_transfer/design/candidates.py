"""Candidate experiments and the cost model (the one home of ``6 N (p + f)``).

A candidate is one evaluated run ``(source, target, N, p, f)``, held as a DataFrame with
the run table's columns (``run_id``, ``source``, ``target``, ``params``,
``pretrain_tokens``, ``finetune_tokens``, ``seed``) and no ``loss``. Candidates come from
a grid of values or from ranges, in Python or in a TOML file::

    [candidates]
    sources = ["web", "code"]
    targets = ["math"]
    params = [1e6, 3e6, 1e7]
    pretrain_tokens = { min = 1e7, max = 1e10, num = 7, scale = "log" }
    finetune_tokens = { min = 1e5, max = 1e8, num = 7 }   # scale defaults to "log"

The cost of a run is its training FLOPs, ``6 N (p + f)`` (Kaplan et al. 2020's
``C = 6 N D``), less the pre-training ``6 N p`` when a checkpoint at ``(source, N, p)``
already exists: one pre-training serves every fine-tuning and target. A checkpoint exists
for any row of the run table with that source, ``params`` and ``pretrain_tokens``, and
for every run already chosen in the batch being built.

Example:
    >>> cands = candidate_grid(["web"], ["math"], params=[1e6], pretrain_tokens=[1e8],
    ...                        finetune_tokens=[1e5, 1e6])
    >>> candidate_costs(cands).tolist()            # 6 N (p + f)
    [600600000000000.0, 606000000000000.0]
    >>> candidate_costs(cands, checkpoints={("web", 1000000, 100000000)}).tolist()
    [600000000000.0, 6000000000000.0]
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayes_transfer._io import read_toml
from bayes_transfer.data import RunTable, load_runs

__all__ = [
    "CANDIDATE_COLUMNS",
    "CandidateSpecError",
    "CostFn",
    "HeldSizeWarning",
    "candidate_grid",
    "hold_model_size",
    "candidates_from_spec",
    "training_flops",
    "checkpoint_keys",
    "candidate_costs",
    "initial_design",
    "sequential_costs",
]

CANDIDATE_COLUMNS = ["run_id", "source", "target", "params", "pretrain_tokens",
                     "finetune_tokens", "seed"]
_AXES = ("sources", "targets", "params", "pretrain_tokens", "finetune_tokens")
#: The most candidates one grid or spec may expand to: each is scored over every
#: posterior draw, so more would take minutes and gigabytes (count before building).
MAX_CANDIDATES = 100_000
#: A user cost: candidates (with a bool column ``pretrained``: a checkpoint exists) -> costs.
CostFn = Callable[[pd.DataFrame], Any]
CheckpointKey = tuple[str, int, int]


class CandidateSpecError(ValueError):
    """A candidates spec with a missing or bad key; the message names the key."""


class HeldSizeWarning(UserWarning):
    """Candidates at other model sizes were set aside: the law has no model-size term."""


def hold_model_size(candidates: pd.DataFrame, law: str,
                    fitted: RunTable | pd.DataFrame | None = None,
                    params: float | None = None) -> pd.DataFrame:
    """The candidates at one model size when ``law`` has no size term; else all of them.

    A law without a size term (``get_law(law).has_size_term`` is False, e.g.
    ``transfer-gap``) predicts the same loss at every N, so every N looks equally
    informative and the cheapest would always win: a choice of N the law cannot make.
    As :func:`~bayes_transfer.advise.advise` does, N is then held at ``params`` (default:
    the candidates' size nearest, on a log scale, to the fitted table's largest N), and a
    :class:`HeldSizeWarning` names the sizes set aside.

    Example:
        >>> cands = candidate_grid(["a"], ["x"], params=[1e6, 1e7], pretrain_tokens=[1e8],
        ...                        finetune_tokens=[1e5])
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", HeldSizeWarning)
        ...     hold_model_size(cands, "transfer-gap", params=1e7)["params"].tolist()
        [10000000]
        >>> hold_model_size(cands, "transfer-gap-size")["params"].tolist()
        [1000000, 10000000]
        >>> one_size_each = candidate_grid(["a"], ["x"], params=[1e6], pretrain_tokens=[1e8],
        ...     finetune_tokens=[1e5]).assign(source=["small"])
        >>> both = pd.concat([one_size_each, one_size_each.assign(source="big", params=10**7)])
        >>> hold_model_size(both, "transfer-gap")["source"].tolist()  # each keeps its N
        ['small', 'big']
    """
    from bayes_transfer.laws import get_law

    spec_law = get_law(law)
    sizes = np.unique(candidates["params"].to_numpy(dtype=np.float64))
    # N is a choice only within a source: a source offered at one size (a public
    # pre-trained model, say, whose N is what it is) keeps its rows.
    sizes_per_source = candidates.groupby("source")["params"].nunique()
    if spec_law.has_size_term or (sizes_per_source.max() <= 1 and params is None) or \
            len(sizes) <= 1:
        return candidates
    if params is not None:
        if not np.isclose(sizes, float(params), rtol=1e-6).any():
            raise ValueError(f"params={params:.3g} is not a model size of the candidates "
                             f"({', '.join(f'{v:.3g}' for v in sizes)})")
        held = sizes[np.argmin(np.abs(sizes - float(params)))]
    else:
        df = None if fitted is None else (fitted.df if isinstance(fitted, RunTable)
                                          else fitted)
        ref = float(df["params"].max()) if df is not None and len(df) else sizes.max()
        held = sizes[np.argmin(np.abs(np.log(sizes) - np.log(ref)))]
    # Each source at its size nearest (log scale) to the held one.
    distance = np.abs(np.log(candidates["params"].to_numpy(dtype=np.float64)) - np.log(held))
    nearest = pd.Series(distance).groupby(candidates["source"].to_numpy()).transform("min")
    keep = np.isclose(distance, nearest.to_numpy(), rtol=0.0, atol=1e-9)
    dropped = np.setdiff1d(sizes, candidates["params"].to_numpy(dtype=np.float64)[keep])
    if len(dropped):
        warnings.warn(
            f"the law {spec_law.name} ({spec_law.formula}) has no model-size term, so it "
            f"cannot choose N: candidates are held at N={held:.3g} (set aside: N="
            f"{', '.join(f'{v:.3g}' for v in dropped)}; pass params= to hold another size)",
            HeldSizeWarning, stacklevel=4)
    return candidates[keep].reset_index(drop=True)


def training_flops(params: Any, pretrain_tokens: Any, finetune_tokens: Any,
                   pretrained: Any = False) -> np.ndarray:
    """Training FLOPs ``6 N (p + f)``; ``6 N f`` where the pre-training is already paid for.

    Example:
        >>> float(training_flops(1e6, 1e9, 1e6))
        6006000000000000.0
        >>> float(training_flops(1e6, 1e9, 1e6, pretrained=True))
        6000000000000.0
    """
    n, p, f = (np.asarray(v, dtype=np.float64) for v in (params, pretrain_tokens,
                                                          finetune_tokens))
    return 6.0 * n * (np.where(np.asarray(pretrained, dtype=bool), 0.0, p) + f)


def candidate_grid(
    sources: Iterable[str],
    targets: Iterable[str],
    *,
    params: Iterable[float],
    pretrain_tokens: Iterable[float],
    finetune_tokens: Iterable[float],
    seed: int = 0,
) -> pd.DataFrame:
    """Every ``(source, target, N, p, f)`` combination, as candidate rows.

    Raises ``CandidateSpecError`` when there would be more than :data:`MAX_CANDIDATES`
    (counted before any is built).
    """
    axes = [list(a) for a in (sources, targets, params, pretrain_tokens, finetune_tokens)]
    _check_count(axes, "the candidate grid")
    rows = [
        {"run_id": _run_id(s, t, n, p, f, seed), "source": str(s), "target": str(t),
         "params": int(n), "pretrain_tokens": int(p), "finetune_tokens": int(f),
         "seed": int(seed)}
        for s, t, n, p, f in itertools.product(*axes)
    ]
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)


def _check_count(axes: list[list[Any]], where: str) -> None:
    count = math.prod(len(a) for a in axes)
    if count > MAX_CANDIDATES:
        raise CandidateSpecError(
            f"{where}: {' x '.join(str(len(a)) for a in axes)} = {count:,} candidates; at "
            f"most {MAX_CANDIDATES:,} are scored (use fewer values or coarser ranges)")


def _run_id(s: str, t: str, n: float, p: float, f: float, seed: int) -> str:
    return f"cand-{s}-{t}-N{n:.4g}-p{p:.4g}-f{f:.4g}-s{seed}"


def candidates_from_spec(
    spec: str | os.PathLike[str] | Mapping[str, Any],
    runs: RunTable | pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Candidates from a TOML file or dict (see the module docstring for the format).

    ``sources`` and ``targets`` may be left out when ``runs`` is given: those of the run
    table are used. Each numeric axis is a list of numbers or a range
    ``{min, max, num, scale = "log" | "linear"}``; values are rounded to integers.

    Example:
        >>> cands = candidates_from_spec({"candidates": {"sources": ["a"], "targets": ["x"],
        ...     "params": [1e6], "pretrain_tokens": {"min": 1e7, "max": 1e9, "num": 3},
        ...     "finetune_tokens": [1e5]}})
        >>> cands["pretrain_tokens"].tolist()
        [10000000, 100000000, 1000000000]
    """
    if isinstance(spec, Mapping):
        raw, where = dict(spec), "candidates spec"
    else:
        path = Path(spec)
        raw = read_toml(path, CandidateSpecError, "candidates")
        where = str(path)
    table = raw.get("candidates", raw)
    if not isinstance(table, Mapping):
        raise CandidateSpecError(f"{where}: [candidates] must be a table")
    unknown = sorted(set(table) - set(_AXES) - {"seed"})
    if unknown:
        raise CandidateSpecError(f"{where}: unknown key candidates.{unknown[0]}; expected "
                                 f"{', '.join(_AXES)} (and optionally seed)")
    table = dict(table)
    if runs is not None:
        loaded = load_runs(runs)
        table.setdefault("sources", list(loaded.sources))
        table.setdefault("targets", list(loaded.targets))
    axes: dict[str, list[Any]] = {}
    for key in _AXES:
        if key not in table:
            raise CandidateSpecError(f"{where}: missing candidates.{key}")
        if key in ("sources", "targets"):
            axes[key] = _names(table[key], f"{where}: candidates.{key}")
        else:
            axes[key] = _values(table[key], f"{where}: candidates.{key}",
                                positive=key == "params")
    seed = table.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise CandidateSpecError(f"{where}: candidates.seed must be an integer from 0 to "
                                 f"2**32 - 1, not {seed!r}")
    _check_count([axes[k] for k in _AXES], where)
    return candidate_grid(axes["sources"], axes["targets"], params=axes["params"],
                          pretrain_tokens=axes["pretrain_tokens"],
                          finetune_tokens=axes["finetune_tokens"], seed=seed)


def _names(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise CandidateSpecError(f"{where} must be a non-empty list of names, not {value!r}")
    return list(dict.fromkeys(value))


def _values(value: Any, where: str, positive: bool) -> list[int]:
    if isinstance(value, Mapping):
        values = _range(value, where)
    elif isinstance(value, list) and value:
        values = np.asarray(value, dtype=object)
    else:
        raise CandidateSpecError(f"{where} must be a list of numbers or a range "
                                 f"{{min, max, num, scale}}, not {value!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) \
                or not np.isfinite(v) or v < 0 or (positive and v <= 0) or v >= 1e16:
            raise CandidateSpecError(f"{where}: {v!r} is not a "
                                     f"{'positive' if positive else 'non-negative'} number "
                                     "below 1e16")
        out.append(int(round(float(v))))
    return sorted(set(out))


def _range(spec: Mapping[str, Any], where: str) -> np.ndarray:
    unknown = sorted(set(spec) - {"min", "max", "num", "scale"})
    missing = [k for k in ("min", "max", "num") if k not in spec]
    if unknown or missing:
        raise CandidateSpecError(f"{where}: a range needs min, max and num (and optionally "
                                 f"scale); got keys {sorted(spec)}")
    lo, hi, num, scale = spec["min"], spec["max"], spec["num"], spec.get("scale", "log")
    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= MAX_CANDIDATES:
        raise CandidateSpecError(f"{where}: num must be an integer from 1 to "
                                 f"{MAX_CANDIDATES:,}, not {num!r}")
    if scale not in ("log", "linear"):
        raise CandidateSpecError(f"{where}: scale must be 'log' or 'linear', not {scale!r}")
    if isinstance(lo, bool) or isinstance(hi, bool) or not (
            isinstance(lo, (int, float)) and isinstance(hi, (int, float))
            and 0 <= lo <= hi < 1e16):
        raise CandidateSpecError(f"{where}: need 0 <= min <= max, numbers below 1e16; got "
                                 f"min={lo!r} max={hi!r}")
    if scale == "log":
        if lo <= 0:
            raise CandidateSpecError(f"{where}: a log range needs min > 0, got {lo!r}")
        return np.geomspace(lo, hi, num)
    return np.linspace(lo, hi, num)


def checkpoint_keys(rows: RunTable | pd.DataFrame | None) -> set[CheckpointKey]:
    """``(source, params, pretrain_tokens)`` of every pre-training the rows imply (p > 0)."""
    if rows is None:
        return set()
    df = rows.df if isinstance(rows, RunTable) else rows
    if len(df) == 0:
        return set()
    df = df[df["pretrain_tokens"] > 0]
    return set(zip(df["source"].astype(str), df["params"].astype(np.int64).tolist(),
                   df["pretrain_tokens"].astype(np.int64).tolist(), strict=True))


def _keys(candidates: pd.DataFrame) -> list[CheckpointKey]:
    # An unknown (NaN) pre-training size, as public tables of fine-tuning curves have, is
    # -1: never a checkpoint this package made.
    def counts(col: str) -> list[int]:
        values = candidates[col].to_numpy(dtype=np.float64)
        return np.where(np.isfinite(values), values, -1).astype(np.int64).tolist()

    return list(zip(candidates["source"].astype(str), counts("params"),
                    counts("pretrain_tokens"), strict=True))


def pretrained_mask(candidates: pd.DataFrame, checkpoints: Iterable[CheckpointKey]) -> np.ndarray:
    """Does a checkpoint exist for each candidate's ``(source, N, p)``?"""
    have = set(checkpoints)
    return np.array([k in have and k[2] > 0 for k in _keys(candidates)], dtype=bool)


def candidate_costs(
    candidates: pd.DataFrame,
    cost: str | CostFn = "flops",
    checkpoints: Iterable[CheckpointKey] = (),
) -> np.ndarray:
    """The cost of each candidate, given the checkpoints that exist.

    Args:
        candidates: candidate rows.
        cost: ``"flops"`` (``6 N (p + f)``, the default), ``"tokens"`` (``p + f``), or a
            callable ``cost(df) -> array``; ``df`` is ``candidates`` with a bool column
            ``pretrained`` (a checkpoint at its ``(source, N, p)`` exists).
        checkpoints: ``(source, params, pretrain_tokens)`` of existing pre-trainings.
    """
    pretrained = pretrained_mask(candidates, checkpoints)
    if cost == "flops":
        out = training_flops(candidates["params"], candidates["pretrain_tokens"],
                             candidates["finetune_tokens"], pretrained)
    elif cost == "tokens":
        out = np.where(pretrained, 0.0, candidates["pretrain_tokens"].to_numpy(np.float64)) \
            + candidates["finetune_tokens"].to_numpy(np.float64)
    elif callable(cost):
        out = np.asarray(cost(candidates.assign(pretrained=pretrained)), dtype=np.float64)
        if out.shape != (len(candidates),):
            raise ValueError(f"the cost function returned shape {out.shape}; expected "
                             f"({len(candidates)},), one cost per candidate")
    else:
        raise ValueError(f"cost must be 'flops', 'tokens' or a callable, not {cost!r}")
    bad = np.flatnonzero(~(np.isfinite(out) & (out >= 0)))
    if len(bad):
        raise ValueError(f"candidate {candidates['run_id'].iloc[bad[0]]!r}: cost "
                         f"{out[bad[0]]!r} is not a finite non-negative number")
    return out


def sequential_costs(runs: pd.DataFrame, cost: str | CostFn = "flops",
                     checkpoints: Iterable[CheckpointKey] = ()) -> np.ndarray:
    """Costs of runs done in order, each reusing the checkpoints of those before it.

    Example:
        >>> runs = candidate_grid(["a"], ["x", "y"], params=[10], pretrain_tokens=[100],
        ...                       finetune_tokens=[5])
        >>> sequential_costs(runs).tolist()   # the second fine-tunes the first's checkpoint
        [6300.0, 300.0]
    """
    have, out = set(checkpoints), []
    for i in range(len(runs)):
        row = runs.iloc[i : i + 1]
        out.append(float(candidate_costs(row, cost, have)[0]))
        have |= checkpoint_keys(row)
    return np.asarray(out, dtype=np.float64)


def initial_design(candidates: pd.DataFrame, per_pair: int = 4) -> pd.DataFrame:
    """A small first design: a few cheap, spread-out runs on pairs covering every level.

    Pairs: source ``i`` with target ``i mod T`` (and target ``j`` with source ``j mod S``),
    so that every source and every target has rows. For each such pair, at the smallest
    ``N``, the corners of its ``(p, f)`` range (smallest and largest p, each with the
    smallest and largest f), which pin down both ends of the law; ``per_pair`` of them.

    Example:
        >>> cands = candidate_grid(["a", "b"], ["x", "y"], params=[1e6, 1e7],
        ...     pretrain_tokens=[1e7, 1e8, 1e9], finetune_tokens=[1e5, 1e6])
        >>> initial_design(cands)[["source", "target"]].drop_duplicates().values.tolist()
        [['a', 'x'], ['b', 'y']]
    """
    sources = list(dict.fromkeys(candidates["source"].astype(str)))
    targets = list(dict.fromkeys(candidates["target"].astype(str)))
    n = max(len(sources), len(targets))
    pairs = list(dict.fromkeys((sources[i % len(sources)], targets[i % len(targets)])
                               for i in range(n)))
    chosen = []
    src, tgt = candidates["source"].astype(str), candidates["target"].astype(str)
    for s, t in pairs:
        sub = candidates[(src == s) & (tgt == t)]
        sub = sub[sub["params"] == sub["params"].min()]
        p_lo, p_hi = sub["pretrain_tokens"].min(), sub["pretrain_tokens"].max()
        f_lo, f_hi = sub["finetune_tokens"].min(), sub["finetune_tokens"].max()
        corners = [(p_hi, f_lo), (p_lo, f_hi), (p_hi, f_hi), (p_lo, f_lo)]
        for p, f in list(dict.fromkeys(corners))[:per_pair]:
            hit = sub[(sub["pretrain_tokens"] == p) & (sub["finetune_tokens"] == f)]
            chosen.append(hit.index[0])
    return candidates.loc[chosen].reset_index(drop=True)
