"""Backtests on real public tables: are the 90% intervals 90% intervals on runs nobody
here produced?

Each backtest fits a shipped spec below a split and predicts above it (``bayes_transfer.
backtest``), next to the per-pair L-BFGS + bootstrap baseline on the same split in the
same run. Coverage is of the posterior predictive of a measured loss (law, discrepancy
and noise); errors are of its median, in nats per token.

=======================  ===================  ==============================================
table                    spec                 split
=======================  ===================  ==============================================
Chinchilla (Epoch)       chinchilla           fit N <= 1e9, predict above (up to 16x)
llm-line                 chinchilla-pairs (*) fit tokens <= 1e11, predict above (up to 3.6x)
llm-line, pairs out      chinchilla-pairs (*) the same, and 3 (source, target) pairs never run
rectified-scaling FLAN   finetune-curves      fit f <= 1/64 of the largest, predict the largest
rectified-scaling Gigaw. finetune-curves      the same
rectified-scaling, 2x    finetune-curves      fit f <= 1/2 of the largest, predict the largest
=======================  ===================  ==============================================

(*) without its model-size term (every llm-line row fitted or predicted is a checkpoint of a
1.7e9-parameter model) and in anchored coordinates (:func:`one_size_anchored`).

The 2x backtests (FLAN and Gigaword) test the intervals one doubling beyond the data,
where a drift that grows with distance is smallest (``docs/measurements.md``).

The Chinchilla table is read from ``../shared/data`` (it has no licence to bundle; the
backtest is skipped with a note when it is absent); the others ship in ``data/``.

Targets (issue 13): 90% coverage in [0.85, 0.95] on each table and a median absolute
error no larger than the baseline's; for never-run pairs, coverage in [0.85, 0.95] and a
median error at most 2x that of the observed pairs' held-out rows.

    python benchmarks/real_data.py            # full run, ~15 min on 2 cores
    python benchmarks/real_data.py --quick    # CI smoke run: Chinchilla, short chains
    python benchmarks/real_data.py --only rectified   # the four fine-tuning-curve backtests
"""

from __future__ import annotations

import json
import sys

from _common import SHARED_DATA, header, keep_compiled, parser, timer, verdict

from bayes_transfer.backtest import backtest
from bayes_transfer.public_data import load_public, read_chinchilla_svg
from bayes_transfer.spec import load_spec

FLAN_LARGEST = 1_638_400  # examples: the largest fine-tuning size of Lin et al.'s tables


def one_size_anchored(spec: str) -> dict:
    """``spec`` for a table of one model size: its model-size term ``A N^-alpha`` out of
    the fit (``A`` pinned at e^-20, a billionth of a nat) and each pair's data term in
    anchored coordinates (``bayes_transfer.anchor``). llm-line's rows below 1e11 tokens
    are all checkpoints of 1.7e9-parameter models, and so are the rows it predicts: the
    size term is one constant per target that the pairs' floors absorb
    (``UninformedSizeWarning``) and no prediction depends on it; left in, it is a ridge
    only the priors bound. Out, the pairs' floors and exponents still trade along a
    curved ridge in the log parameters, which the anchored coordinates remove (fit below
    the split: R-hat 2.54 -> 1.015, 2026-12-06)."""
    d = load_spec(spec).to_dict()
    d["params"]["A"] = {"level": "global", "loc": -20.0, "scale": 0.01}
    for name in ("E", "B", "beta"):
        d["params"][name]["centered"] = True
    d["sampler"] = {**d.get("sampler", {}), "coordinates": "anchored"}
    return d


def cases(quick: bool) -> list[dict]:
    out = []
    chinchilla = SHARED_DATA / "chinchilla_svg_extracted.csv"
    if chinchilla.exists():
        out.append({"name": "Chinchilla", "runs": read_chinchilla_svg(chinchilla),
                    "spec": "chinchilla", "split": "params", "at": 1e9})
    else:
        print(f"# note: {chinchilla} absent: Chinchilla backtest skipped")
    if quick:
        return out
    llm = load_public("llm-line")
    one_size = one_size_anchored("chinchilla-pairs")
    out.append({"name": "llm-line", "runs": llm, "spec": one_size,
                "split": "pretrain_tokens", "at": 1e11})
    out.append({"name": "llm-line, 3 pairs out", "runs": llm, "spec": one_size,
                "split": "pretrain_tokens", "at": 1e11, "leave_pairs_out": 3})
    for reach in (64, 2):
        for target in ("flan", "gigaword"):
            runs = load_public(f"rectified-scaling-{target}")
            tpe = float(runs.df["tokens_per_example"].iloc[0])
            out.append({"name": f"rectified {target}" + ("" if reach == 64 else f" {reach}x"),
                        "runs": runs, "spec": "finetune-curves", "split": "finetune_tokens",
                        "at": FLAN_LARGEST / reach * tpe, "predict_at": FLAN_LARGEST * tpe})
    return out


def main() -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--only", metavar="TEXT", help="only the backtests whose name contains "
                    "TEXT (e.g. rectified)")
    args = ap.parse_args()
    header("Backtests on real public tables: coverage and error vs the point-fit baseline")
    keep_compiled()
    draws = 150 if args.quick else 500
    chains = 1 if args.quick else 2
    results, ok = [], True
    print(f"# {chains} chains x {draws} draws + {draws} warmup per fit; baseline: per-pair "
          "L-BFGS + 100 bootstrap replicates")
    print(f"{'table':<24} {'rows fit/pred':>13} {'method':<9} {'cov50':>6} {'cov80':>6} "
          f"{'cov90':>6} {'cov95':>6} {'med|err|':>9} {'mean|err|':>9} {'sec':>6}", flush=True)
    for case in cases(args.quick):
        if args.only and args.only not in case["name"]:
            continue
        name, runs = case.pop("name"), case.pop("runs")
        spec = case.pop("spec")
        with timer() as t:
            bt = backtest(runs, spec, chains=chains, draws=draws, warmup=draws,
                          seed=args.seed, **case)
        s = bt.summary
        rows = f"{s['rows']['fit']}/{s['rows']['predicted']}"
        groups = ["model", "baseline"] + [g for g in ("observed", "never-run") if g in s]
        for g in groups:
            c = s[g]["coverage"]
            cell = [f"{c[k]:.2f}" if c[k] is not None else "-" for k in ("0.5", "0.8", "0.9",
                                                                          "0.95")]
            err = [f"{s[g][k]:.4f}" if s[g][k] is not None else "-"
                   for k in ("median_abs_error", "mean_abs_error")]
            print(f"{name if g == 'model' else '':<24} {rows if g == 'model' else '':>13} "
                  f"{g:<9} {' '.join(f'{v:>6}' for v in cell)} {err[0]:>9} {err[1]:>9} "
                  f"{t['seconds'] if g == 'model' else 0:>6.0f}", flush=True)
        d = bt.posterior.diagnostics
        steps = float(bt.posterior.idata.sample_stats["n_steps"].mean()) \
            if "n_steps" in bt.posterior.idata.sample_stats else float("nan")
        print(f"#   {name}: fit below the split: R-hat max {d.max_rhat:.3f} "
              f"({d.worst_rhat_var}), ESS bulk min {d.min_ess_bulk:.0f}, {d.divergences} "
              f"divergences, {steps:.0f} leapfrog steps a draw", flush=True)
        if not s["diagnostics_ok"]:
            print(f"#   {name}: the fit below the split failed its diagnostics: "
                  f"{bt.posterior.diagnostics}")
            rhat = s["prediction_rhat_max"]
            print(f"#   {name}: largest R-hat of the held-out rows' predictions: "
                  f"{'-' if rhat is None else f'{rhat:.3f}'}")
        info = bt.posterior.idata.posterior.attrs.get("discrepancy")
        if info:
            learned = {a: {k: round(v, 4) for k, v in d.items()
                           if k in ("rows", "mean_median", "tau_median")}
                       for a, d in json.loads(info).items()}
            print(f"#   {name}: discrepancy learned by internal extrapolation: {learned}")
        cov = s["model"]["coverage"]["0.9"]
        this_ok = 0.85 <= cov <= 0.95
        base = s["baseline"]["median_abs_error"]
        if base is not None:
            this_ok &= s["model"]["median_abs_error"] <= base
        if "never-run" in s:
            nr, ob = s["never-run"], s["observed"]
            this_ok &= 0.85 <= nr["coverage"]["0.9"] <= 0.95
            this_ok &= nr["median_abs_error"] <= 2 * ob["median_abs_error"]
        results.append((name, this_ok))
        ok &= this_ok
    missed = [n for n, good in results if not good]
    return verdict(ok and bool(results),
                   "90% coverage in [0.85, 0.95] and median error <= baseline on every table"
                   + (f" (missed: {', '.join(missed)})" if missed else ""),
                   enforce=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
