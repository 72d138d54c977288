"""Extrapolation: fit on the smaller runs, predict the largest, against the usual baseline.

For each table, the rows at the top model size or the top data size are held out; the
hierarchical posterior (NumPyro NUTS) and the point-estimate baseline (L-BFGS on a Huber
loss from a grid of starts, bootstrap intervals; ``bayes_transfer.baseline``) are fitted on
the rest, in the same run, and predict the held-out losses. Reported per method: the
coverage of the 90% predictive intervals and the median absolute error of the median
prediction (nats per token, and relative).

Tables: the bundled ``data/transfer_runs.csv`` (spec ``transfer-gap-size``, which fits its
fine-tuned rows; a simulated transfer table with a note when the file is absent), and the
Chinchilla data (spec ``chinchilla``; ``--chinchilla PATH``).

"Top" means the largest value when a column has at most 10 distinct values (a grid), and
the top decile otherwise (Chinchilla's sizes are read off a plot and vary continuously).
The data size is ``finetune_tokens`` for fine-tuned rows and ``pretrain_tokens`` for
from-scratch rows.

Target (exit status 1 when missed): the Bayesian 90% intervals cover at least 60% of the
held-out rows of every table. Coverage far below nominal means the posterior is
overconfident where users need it most.

    python benchmarks/extrapolation.py            # full run, ~3 min on 2 cores
    python benchmarks/extrapolation.py --quick    # CI smoke run, ~1 min
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from _common import REPO, SHARED_DATA, header, parser, timer, verdict

from bayes_transfer.baseline import fit_baseline
from bayes_transfer.data import RunTable, load_runs, read_chinchilla_csv
from bayes_transfer.diagnostics import SamplingWarning
from bayes_transfer.inference import fit
from bayes_transfer.model import select_rows
from bayes_transfer.simulate import design_grid, simulate
from bayes_transfer.spec import load_spec

CI = 0.9
MIN_COVERAGE = 0.6


def top(values: pd.Series) -> np.ndarray:
    """Rows at the top of ``values``: the largest grid value, or the top decile."""
    if values.nunique() <= 10:
        return (values == values.max()).to_numpy()
    return (values >= values.quantile(0.9)).to_numpy()


def holdout_mask(table: RunTable) -> np.ndarray:
    df = table.df
    data = df["finetune_tokens"].where(df["finetune_tokens"] > 0, df["pretrain_tokens"])
    return top(df["params"]) | top(data)


def bundled_or_simulated(seed: int, spec_name: str) -> tuple[str, RunTable]:
    path = REPO / "data" / "transfer_runs.csv"
    if path.exists():
        table = load_runs(path)
        fitted, _ = select_rows(load_spec(spec_name), table)
        held = holdout_mask(fitted)
        if (~held).sum() >= 20 and held.any():
            return "bundled transfer_runs.csv", table
        print(f"note: {path} has too few rows to split ({len(fitted)} fine-tuned); "
              "using a simulated transfer table instead", flush=True)
    else:
        print(f"note: {path} not found; using a simulated transfer table instead",
              flush=True)
    design = design_grid(["s1", "s2", "s3"], ["t1", "t2"], params=[1e5, 3e5, 1e6],
                         pretrain_tokens=[1e6, 1e7, 1e8], finetune_tokens=[1e4, 1e5, 1e6])
    return "simulated transfer table", simulate("transfer-gap-size", design, seed=seed).runs


def coverage_and_error(pred: pd.DataFrame) -> tuple[float, float, float]:
    obs = pred["loss"].to_numpy()
    inside = (pred["loss_lower"] <= obs) & (obs <= pred["loss_upper"])
    err = np.abs(pred["loss_median"].to_numpy() - obs)
    return float(inside.mean()), float(np.median(err)), float(np.median(err / obs))


def evaluate(name: str, table: RunTable, spec_name: str, *, chains: int, draws: int,
             bootstrap: int, seed: int) -> list[dict]:
    spec = load_spec(spec_name)
    table, _ = select_rows(spec, table)  # the rows the law explains
    held = holdout_mask(table)
    train, test = table.subset(~held), table.subset(held)
    print(f"{name}: {len(train)} rows fit, {len(test)} held out "
          f"(spec {spec_name}, {chains} chains x {draws} warmup + {draws} draws)", flush=True)
    rows = []
    with timer() as t, warnings.catch_warnings():
        # Printed once below rather than as one warning per problem.
        warnings.simplefilter("ignore", SamplingWarning)
        post = fit(train, spec, chains=chains, draws=draws, warmup=draws, seed=seed,
                   progress=False)
    if not post.diagnostics.ok:
        print(f"  {post.diagnostics}", flush=True)
    cov, mae, rel = coverage_and_error(post.predict(test, ci=CI, kind="observation",
                                                    seed=seed))
    rows.append({"table": name, "method": "bayes (hierarchical, predictive)",
                 "coverage_90": cov, "median_abs_err": mae, "median_rel_err": rel,
                 "fit_seconds": t["seconds"]})
    with timer() as t:
        base = fit_baseline(train, spec.law, bootstrap=bootstrap, seed=seed)
    for kind, label in (("mean", "baseline (bootstrap of the fit)"),
                        ("observation", "baseline (+ residual bootstrap)")):
        cov, mae, rel = coverage_and_error(base.predict(test, ci=CI, kind=kind, seed=seed))
        rows.append({"table": name, "method": label, "coverage_90": cov,
                     "median_abs_err": mae, "median_rel_err": rel,
                     "fit_seconds": t["seconds"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--chinchilla", default=str(SHARED_DATA / "chinchilla_svg_extracted.csv"),
                   help="path of the Chinchilla CSV (Model Size, Training FLOP, loss)")
    args = p.parse_args(argv)
    chains, draws, bootstrap = (2, 60, 10) if args.quick else (4, 500, 200)
    header("extrapolation: fit the smaller runs, predict the largest")

    tables = [(*bundled_or_simulated(args.seed, "transfer-gap-size"), "transfer-gap-size")]
    path = Path(args.chinchilla)
    if path.exists():
        tables.append(("chinchilla (Epoch extraction)", read_chinchilla_csv(path),
                       "chinchilla"))
    else:
        print(f"note: Chinchilla data {path} not found; pass --chinchilla PATH "
              "(Epoch AI's svg_extracted_data.csv) to include it", flush=True)

    results = []
    for name, table, spec_name in tables:
        results += evaluate(name, table, spec_name, chains=chains, draws=draws,
                            bootstrap=bootstrap, seed=args.seed)
    out = pd.DataFrame(results)
    print()
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(out.to_string(index=False))
    bayes = out[out["method"].str.startswith("bayes")]
    worst = float(bayes["coverage_90"].min())
    return verdict(worst >= MIN_COVERAGE,
                   f"Bayesian 90% predictive coverage of held-out rows >= {MIN_COVERAGE} on "
                   f"every table (worst {worst:.2f})", enforce=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
