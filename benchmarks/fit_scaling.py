"""Fit scaling: wall time and peak memory of a NUTS fit as rows and pairs grow.

Two series of simulated ``transfer-gap`` tables (``bayes_transfer.simulate`` with
``typical_truth``: population means at the prior centres, so every term of the law
matters; group effects drawn at a fixed seed), every size fitted with ``fit``'s defaults
but for the short chains (2 chains x 200 warmup + 200 draws), so that times compare.
From 2,000 rows on ``fit`` starts NUTS from a Laplace approximation
(``init="auto"``, ``bayes_transfer.laplace``): from its default start the 10,000-row
fit ran at 1,023 leapfrog steps a draw and did not mix (one-off run, 2026-11-25, one
chain x 200 + 200: ESS 1-9 of 200 draws).

* rows: 10 pairs, 100 -> 100,000 rows, with every pooled level centred
  (``centered = true``): with up to 10,000 rows a pair the rows pin each pair's
  parameters, and the stock spec's non-centred offsets would have to move in concert
  along ridges (one-off run, 2026-11-25, prior-drawn truth, 10,000 rows: 1,023 leapfrog
  steps a draw, R-hat 2.3; centred, this benchmark: 194) -- the advice of
  ``models/transfer-gap-size.toml`` for rich data;
* pairs: 10 rows per pair, 100 -> 10,000 pairs (1,000 -> 100,000 rows), the
  ``transfer-gap`` spec with ``centered = "auto"`` on every pooled parameter (each group
  centred where it has >= 5 rows): the stock non-centred spec ran 1,000 pairs at the
  maximum tree depth (R-hat 1.66). Columns ``gap_rhat`` and ``gap_ess`` are the largest
  R-hat and the smallest bulk ESS over the pairs' log gaps (issue target: <= 1.01 and
  >= 400 in <= 10 minutes; run with ``--draws 500`` to judge ESS). From 2,000 rows the
  Laplace start also shears each pair's gap and coefficient off its source's and
  target's parameters (``bayes_transfer.shear``; ``--no-shear`` to compare).

Column ``gap_chance`` is the largest R-hat that *independent* draws of the same shape
(chains x draws, one per pair) would reach over the gaps by chance
(``bayes_transfer.diagnostics.rhat_by_chance``, its median): no sampler does better, so
where it is above 1.01 the gaps' target needs more draws, not a better sampler (2 x 500
draws over 10,000 gaps: ~1.014; ``draws_for_rhat`` gives 682 independent draws a chain).

Each size runs in a fresh subprocess; the time is the wall time of ``fit`` (JIT
compilation included), the memory the subprocess's peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes the ~0.5 GB of the JAX
runtime itself). The growth exponent is the slope of log time against log rows between
consecutive sizes and, as the headline, between the two largest sizes of the rows series
(small sizes are dominated by fixed compilation cost and would flatter the slope).

Targets (exit status 1 when missed): growth exponent in rows <= 1.2 between the two
largest sizes; the 100,000-row fit under 10 minutes; and, where the pairs series reaches
10,000 pairs, issue 16's: every gap's R-hat <= 1.01 and bulk ESS >= 400 in <= 10 minutes.

    python benchmarks/fit_scaling.py --series rows   # the target: ~8 min on 2 idle cores
                                                     # (2026-11-25: 100,000 rows in 409 s)
    python benchmarks/fit_scaling.py            # both series, ~10.5 min (pairs: 2.4 min)
    python benchmarks/fit_scaling.py --quick    # CI smoke run, ~1 min (up to 1,000 rows)
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import arviz as az
import numpy as np
import pandas as pd
from _common import header, parser, verdict

from bayes_transfer.diagnostics import RHAT_MAX, rhat_by_chance
from bayes_transfer.spec import ModelSpec, load_spec

MAX_EXPONENT = 1.2
MAX_SECONDS_100K = 600.0
MANY_PAIRS, MAX_SECONDS_PAIRS, MIN_GAP_ESS = 10_000, 600.0, 400
CHAINS, WARMUP, DRAWS = 2, 200, 200


def grid_shape(pairs: int) -> tuple[int, int]:
    """Sources x targets with ``sources * targets == pairs`` and the two close."""
    targets = max(d for d in range(1, int(np.sqrt(pairs)) + 1) if pairs % d == 0)
    return pairs // targets, targets


def design(pairs: int, rows: int, seed: int) -> pd.DataFrame:
    """``rows`` fine-tuned runs spread evenly over ``pairs`` pairs, log-uniform p and f."""
    n_src, n_tgt = grid_shape(pairs)
    rng = np.random.default_rng(seed)
    pair = np.arange(rows) % pairs
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(rows)],
        "source": [f"s{k // n_tgt}" for k in pair],
        "target": [f"t{k % n_tgt}" for k in pair],
        "params": 1_000_000,
        "pretrain_tokens": np.round(10 ** rng.uniform(6, 9, rows)).astype(np.int64),
        "finetune_tokens": np.round(10 ** rng.uniform(4, 7, rows)).astype(np.int64),
    })


def centred(spec: ModelSpec, how: bool | str = True) -> ModelSpec:
    """``spec`` with every pooled level sampled centred (``how=True``, for groups with many
    rows) or centred per group by its row count (``how="auto"``)."""
    return replace(spec, params={
        name: replace(p, centered=how) if p.pooling != "none" else p
        for name, p in spec.params.items()})


SPEC_MODES = {"stock": False, "centred": True, "auto": "auto"}


def one(pairs: int, rows: int, seed: int, draws: int, mode: str,
        device: str | None = None, shear: bool = True) -> dict:
    """Fit one size in this process and return its figures (run in a subprocess)."""
    import resource
    import time
    import warnings

    from bayes_transfer.diagnostics import SamplingWarning
    from bayes_transfer.inference import fit
    from bayes_transfer.simulate import simulate, typical_truth

    spec = load_spec("transfer-gap")
    runs = simulate(spec, design(pairs, rows, seed), seed=seed, truth=typical_truth(spec)).runs
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # short chains: timing only
        post = fit(runs, centred(spec, SPEC_MODES[mode]) if SPEC_MODES[mode] else spec,
                   chains=CHAINS, warmup=draws, draws=draws, seed=seed, progress=False,
                   device=device, shear=shear)
    seconds = time.perf_counter() - start
    steps = post.idata.sample_stats["n_steps"]
    # Every site's diagnostics once: the gaps' rows, and the slowest site of all (which
    # direction still limits).
    summary = az.summary(post.idata, kind="diagnostics")
    gaps = summary[(summary.index == "log_G") | summary.index.str.startswith("log_G[")]
    every = summary["ess_bulk"]
    return {"pairs": pairs, "rows": len(runs), "seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "max_rhat": post.diagnostics.max_rhat, "steps": float(steps.mean()),
            "gap_rhat": float(gaps["r_hat"].max()), "gap_ess": float(gaps["ess_bulk"].min()),
            "min_ess": float(every.min()), "slowest": str(every.idxmin()),
            "spec": mode + ("" if shear else ", no shear"),
            "device": str(post.idata.posterior.attrs.get("device", device))}


def run_size(pairs: int, rows: int, seed: int, draws: int, mode: str,
             shear: bool = True) -> dict:
    cmd = [sys.executable, __file__, "--one", str(pairs), str(rows), "--seed", str(seed),
           "--draws", str(draws), "--mode", mode] + ([] if shear else ["--no-shear"])
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"size {pairs} pairs x {rows} rows failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def slopes(df: pd.DataFrame) -> list[float]:
    x, y = np.log(df["rows"].to_numpy(float)), np.log(df["seconds"].to_numpy(float))
    return [float("nan")] + list(np.diff(y) / np.diff(x))


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--one", nargs=2, type=int, metavar=("PAIRS", "ROWS"),
                   help="internal: fit one size in this process and print JSON")
    p.add_argument("--mode", choices=list(SPEC_MODES), default="stock",
                   help="internal: with --one, the spec's centring (stock, centred, auto)")
    p.add_argument("--draws", type=int, default=DRAWS, help="warmup and kept draws per chain")
    p.add_argument("--device", choices=["cpu", "gpu"], default=None,
                   help="internal: with --one, the JAX device to sample on (default: GPU "
                        "when present)")
    p.add_argument("--no-shear", action="store_true",
                   help="fit without sheared pair coordinates (fit(shear=False)), to "
                        "compare")
    p.add_argument("--series", choices=["rows", "pairs", "both"], default="both",
                   help="which series to run (default both; the target is on rows)")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(*args.one, seed=args.seed, draws=args.draws, mode=args.mode,
                             device=args.device, shear=not args.no_shear)))
        return 0

    if args.quick:
        args.draws = min(args.draws, 50)
    header(f"fit scaling: {CHAINS} chains x {args.draws} warmup + {args.draws} draws, "
           "transfer-gap spec, each size in a fresh process")
    if args.quick:
        series = {"rows": [(10, 100), (10, 1_000)], "pairs": [(30, 300)]}
    else:
        series = {"rows": [(10, 100), (10, 1_000), (10, 10_000), (10, 100_000)],
                  "pairs": [(100, 1_000), (1_000, 10_000), (10_000, 100_000)]}
    if args.series != "both":
        series = {args.series: series[args.series]}
    done: dict[tuple[int, int, str], dict] = {}
    frames = []
    for name, sizes in series.items():
        mode = "centred" if name == "rows" else "auto"
        for pairs, rows in sizes:
            if (pairs, rows, mode) not in done:
                r = done[pairs, rows, mode] = run_size(pairs, rows, args.seed, args.draws,
                                                       mode, shear=not args.no_shear)
                print(f"  {pairs:>5} pairs {rows:>7} rows ({r['spec']} spec): "
                      f"{r['seconds']:7.1f} s, {r['peak_rss_mb']:6.0f} MB, "
                      f"{r['steps']:.0f} steps a draw", flush=True)
        df = pd.DataFrame([done[s + (mode,)] for s in sizes]).assign(series=name)
        df["exponent"] = slopes(df)
        df["gap_chance"] = [rhat_by_chance(CHAINS, args.draws, int(n)) for n in df["pairs"]]
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    cols = ["series", "spec", "pairs", "rows", "seconds", "exponent", "steps", "peak_rss_mb",
            "max_rhat", "gap_rhat", "gap_chance", "gap_ess", "min_ess", "slowest"]
    print()
    print("exponent: slope of log(seconds) on log(rows) from the previous size of the series")
    print("peak_rss_mb: ru_maxrss of the fitting subprocess (JAX runtime included)")
    with pd.option_context("display.width", 200, "display.float_format", "{:.2f}".format):
        print(table[cols].to_string(index=False))

    print("gap_chance: the largest gap R-hat independent draws of this shape would reach "
          "by chance (median)")
    many = table[(table["series"] == "pairs") & (table["pairs"] == MANY_PAIRS)]
    status = 0
    if not many.empty:
        r = many.iloc[0]
        status = verdict(
            r["seconds"] <= MAX_SECONDS_PAIRS and r["gap_rhat"] <= RHAT_MAX
            and r["gap_ess"] >= MIN_GAP_ESS,
            f"{MANY_PAIRS:,} pairs in {r['seconds']:.0f} s (<= {MAX_SECONDS_PAIRS:.0f}), "
            f"gap R-hat {r['gap_rhat']:.3f} (<= {RHAT_MAX}; independent draws of this "
            f"shape: ~{r['gap_chance']:.3f}), gap bulk ESS {r['gap_ess']:.0f} "
            f"(>= {MIN_GAP_ESS})")
    rows_series = table[table["series"] == "rows"]
    if rows_series.empty:
        print("rows series not run: its target not judged")
        return status
    exponent = float(rows_series["exponent"].iloc[-1])
    largest = rows_series.iloc[-1]
    ok = exponent <= MAX_EXPONENT and largest["seconds"] <= MAX_SECONDS_100K
    return status | verdict(
        ok, f"growth exponent in rows {exponent:.2f} (<= {MAX_EXPONENT}) between "
            f"{int(rows_series['rows'].iloc[-2]):,} and {int(largest['rows']):,} rows; "
            f"largest fit {largest['seconds']:.0f} s (<= {MAX_SECONDS_100K:.0f} s)",
        enforce=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
