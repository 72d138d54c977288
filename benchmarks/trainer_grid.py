"""Does the bundled trainer's grid scale? Monotonicity of a run table and a Chinchilla fit.

Reads a run table made by the bundled trainer (default: the bundled
``data/transfer_runs.csv``) and checks issue 16's targets for "a trainer whose grids scale":

* **N-monotonicity**: at fixed (kind, source, target, pretrain_tokens, finetune_tokens,
  seed), the loss falls from each model size to the next larger one (xs -> s, s -> m) in
  >= 90% of these neighbouring comparisons, counted over all rows (fine-tuned, zero-shot and
  from-scratch; each kind is printed too).
* **Chinchilla exponents**: the from-scratch rows (source == target, finetune_tokens = 0)
  fitted with the Chinchilla law ``L = E + A N^-alpha + B D^-beta`` (``models/chinchilla.toml``
  with E, A and B per distribution, partially pooled, and alpha, beta shared: the seven
  distributions have different floors) give posterior medians of alpha and beta in
  [0.15, 0.7].

Also printed (not targets): monotonicity in f and in p of the fine-tuned rows and in D of
the from-scratch rows.

Usage:
    python benchmarks/trainer_grid.py                       # the bundled table, 4 x 1000 + 1000
    python benchmarks/trainer_grid.py RUNS.csv --json out.json
    python benchmarks/trainer_grid.py --quick               # counts + a short fit, not enforced

Exit status: 1 if a target is missed (not with ``--quick``).
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import pandas as pd
from _common import REPO, header, parser, timer, verdict

MONOTONE_TARGET = 0.90
EXPONENT_RANGE = (0.15, 0.7)
KINDS = ("finetune", "zero-shot", "scratch")


def neighbour_counts(runs: pd.DataFrame, along: str, keys: list[str]) -> tuple[int, int]:
    """(falls, comparisons): at fixed ``keys``, does the loss fall from each value of
    ``along`` to the next larger one? Ties count as not falling."""
    falls = total = 0
    for _, group in runs.groupby(keys, sort=False):
        losses = group.sort_values(along)["loss"].to_numpy()
        falls += int((losses[1:] < losses[:-1]).sum())
        total += len(losses) - 1
    return falls, total


def monotonicity(runs: pd.DataFrame) -> dict[str, Any]:
    """Every neighbouring-comparison count the benchmark reports."""
    fixed = ["source", "target", "pretrain_tokens", "finetune_tokens", "seed"]
    by_n = {kind: neighbour_counts(runs[runs["kind"] == kind], "params", fixed) for kind in KINDS}
    falls = sum(f for f, _ in by_n.values())
    total = sum(t for _, t in by_n.values())
    fine = runs[runs["kind"] == "finetune"]
    scratch = runs[runs["kind"] == "scratch"]
    return {
        "n": {**{k: list(v) for k, v in by_n.items()}, "all": [falls, total]},
        "f_finetuned": list(
            neighbour_counts(
                fine, "finetune_tokens", ["source", "target", "params", "pretrain_tokens", "seed"]
            )
        ),
        "p_finetuned": list(
            neighbour_counts(
                fine, "pretrain_tokens", ["source", "target", "params", "finetune_tokens", "seed"]
            )
        ),
        "d_scratch": list(
            neighbour_counts(scratch, "pretrain_tokens", ["source", "params", "seed"])
        ),
    }


def scratch_spec() -> dict[str, Any]:
    """``models/chinchilla.toml`` with E, A, B per distribution (partially pooled)."""
    spec = tomllib.loads((REPO / "models" / "chinchilla.toml").read_text(encoding="utf-8"))
    spec.pop("discrepancy", None)  # the exponents are the question, not extrapolation
    spec["name"] = "chinchilla-by-target"
    for name in ("E", "A", "B"):
        spec["params"][name] = {
            **spec["params"][name],
            "level": "target",
            "pooling": "partial",
            "group_scale": 0.5,
        }
    return spec


def chinchilla_exponents(runs: pd.DataFrame, chains: int, draws: int, seed: int) -> dict[str, Any]:
    """Fit the from-scratch rows; medians and 90% intervals of alpha and beta, diagnostics."""
    import warnings

    import numpy as np

    import bayes_transfer as bt

    scratch = runs[(runs["source"] == runs["target"]) & (runs["finetune_tokens"] == 0)]
    with warnings.catch_warnings():  # failed diagnostics are printed below, not warned
        warnings.simplefilter("ignore")
        post = bt.fit(
            scratch.reset_index(drop=True),
            scratch_spec(),
            chains=chains,
            draws=draws,
            warmup=draws,
            seed=seed,
            progress=False,
        )
    out: dict[str, Any] = {"rows": len(scratch)}
    for name in ("alpha", "beta"):
        draws_ = np.exp(np.asarray(post.idata.posterior[f"log_{name}"]).ravel())
        out[name] = {
            "median": float(np.median(draws_)),
            "q05": float(np.quantile(draws_, 0.05)),
            "q95": float(np.quantile(draws_, 0.95)),
        }
    diag = post.diagnostics
    out["max_rhat"] = float(diag.max_rhat)
    out["divergences"] = int(diag.divergences)
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "runs",
        nargs="?",
        default=str(REPO / "data" / "transfer_runs.csv"),
        help="run table (CSV) made by the bundled trainer (default: the bundled one)",
    )
    p.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    # Long enough for a converged posterior (R-hat <= 1.01): exponents read off a fit
    # that has not converged are no evidence (2 x 300 + 300 gave R-hat 1.019 here).
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--draws", type=int, default=1000, help="draws and warmup steps per chain")
    args = p.parse_args(argv)
    if args.quick:
        args.draws = min(args.draws, 100)
    header(f"trainer grid scaling: {args.runs}")
    runs = pd.read_csv(args.runs)
    mono = monotonicity(runs)
    for kind in (*KINDS, "all"):
        falls, total = mono["n"][kind]
        print(f"loss falls with N ({kind}): {falls}/{total} = {falls / max(total, 1):.3f}")
    for key, label in (
        ("f_finetuned", "with f (fine-tuned)"),
        ("p_finetuned", "with p (fine-tuned)"),
        ("d_scratch", "with D (from scratch)"),
    ):
        falls, total = mono[key]
        print(f"loss falls {label}: {falls}/{total}")
    with timer() as t:
        fit = chinchilla_exponents(runs, args.chains, args.draws, args.seed)
    print(
        f"Chinchilla fit of {fit['rows']} from-scratch rows ({args.chains} chains x "
        f"{args.draws} + {args.draws}, {t['seconds']:.0f} s): max R-hat {fit['max_rhat']:.3f}, "
        f"{fit['divergences']} divergences"
    )
    for name in ("alpha", "beta"):
        q = fit[name]
        print(f"  {name}: median {q['median']:.3f}, 90% interval [{q['q05']:.3f}, {q['q95']:.3f}]")
    falls, total = mono["n"]["all"]
    share = falls / max(total, 1)
    low, high = EXPONENT_RANGE
    exponents_ok = all(low <= fit[name]["median"] <= high for name in ("alpha", "beta"))
    converged = fit["max_rhat"] <= 1.01 and fit["divergences"] == 0
    ok = share >= MONOTONE_TARGET and exponents_ok and converged
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "runs": args.runs,
                    "monotonicity": mono,
                    "n_share": share,
                    "chinchilla": fit,
                    "fit_seconds": t["seconds"],
                    "targets_met": ok,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    return verdict(
        ok,
        f"loss falls with N in {share:.1%} of {total} neighbouring comparisons "
        f"(target >= {MONOTONE_TARGET:.0%}); Chinchilla alpha "
        f"{fit['alpha']['median']:.3f}, beta {fit['beta']['median']:.3f} "
        f"(target both in [{low}, {high}]) from a fit with max R-hat {fit['max_rhat']:.3f} "
        f"and {fit['divergences']} divergences (must be <= 1.01 and 0)",
        enforce=not args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
