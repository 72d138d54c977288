"""Fit scaling: wall time and peak memory of a NUTS fit as rows and pairs grow.

Two series of simulated ``transfer-gap`` tables (``bayes_transfer.simulate``, losses drawn
from the spec's prior at a fixed seed), every size fitted with the same short chains
(2 chains x 200 warmup + 200 draws) so that times compare:

* rows: 10 pairs, 100 -> 100,000 rows;
* pairs: 10 rows per pair, 10 -> 1,000 pairs (100 -> 10,000 rows).

Each size runs in a fresh subprocess; the time is the wall time of ``fit`` (JIT
compilation included), the memory the subprocess's peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes the ~0.5 GB of the JAX
runtime itself). The growth exponent is the slope of log time against log rows between
consecutive sizes and, as the headline, between the two largest sizes of the rows series
(small sizes are dominated by fixed compilation cost and would flatter the slope).

Targets (exit status 1 when missed): growth exponent in rows <= 1.2 between the two
largest sizes; the 100,000-row fit under 10 minutes.

    python benchmarks/fit_scaling.py            # full run: over 10 min on 2 cores (2026-11-25:
                                                # the 100,000-row fit alone ran > 9.5 min)
    python benchmarks/fit_scaling.py --quick    # CI smoke run, ~1 min (up to 1,000 rows)
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
from _common import header, parser, verdict

MAX_EXPONENT = 1.2
MAX_SECONDS_100K = 600.0
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


def one(pairs: int, rows: int, seed: int, draws: int) -> dict:
    """Fit one size in this process and return its figures (run in a subprocess)."""
    import resource
    import time
    import warnings

    from bayes_transfer.diagnostics import SamplingWarning
    from bayes_transfer.inference import fit
    from bayes_transfer.simulate import simulate

    runs = simulate("transfer-gap", design(pairs, rows, seed), seed=seed).runs
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # short chains: timing only
        post = fit(runs, "transfer-gap", chains=CHAINS, warmup=draws, draws=draws,
                   seed=seed, progress=False)
    seconds = time.perf_counter() - start
    return {"pairs": pairs, "rows": len(runs), "seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "max_rhat": post.diagnostics.max_rhat}


def run_size(pairs: int, rows: int, seed: int, draws: int) -> dict:
    cmd = [sys.executable, __file__, "--one", str(pairs), str(rows), "--seed", str(seed),
           "--draws", str(draws)]
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
    p.add_argument("--draws", type=int, default=DRAWS, help="warmup and kept draws per chain")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(*args.one, seed=args.seed, draws=args.draws)))
        return 0

    if args.quick:
        args.draws = min(args.draws, 50)
    header(f"fit scaling: {CHAINS} chains x {args.draws} warmup + {args.draws} draws, "
           "transfer-gap spec, each size in a fresh process")
    if args.quick:
        series = {"rows": [(10, 100), (10, 1_000)], "pairs": [(10, 100), (100, 1_000)]}
    else:
        series = {"rows": [(10, 100), (10, 1_000), (10, 10_000), (10, 100_000)],
                  "pairs": [(10, 100), (100, 1_000), (1_000, 10_000)]}
    done: dict[tuple[int, int], dict] = {}
    frames = []
    for name, sizes in series.items():
        for pairs, rows in sizes:
            if (pairs, rows) not in done:
                done[pairs, rows] = run_size(pairs, rows, args.seed, args.draws)
                r = done[pairs, rows]
                print(f"  {pairs:>5} pairs {rows:>7} rows: {r['seconds']:7.1f} s, "
                      f"{r['peak_rss_mb']:6.0f} MB", flush=True)
        df = pd.DataFrame([done[s] for s in sizes]).assign(series=name)
        df["exponent"] = slopes(df)
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    cols = ["series", "pairs", "rows", "seconds", "exponent", "peak_rss_mb", "max_rhat"]
    print()
    print("exponent: slope of log(seconds) on log(rows) from the previous size of the series")
    print("peak_rss_mb: ru_maxrss of the fitting subprocess (JAX runtime included)")
    with pd.option_context("display.width", 200, "display.float_format", "{:.2f}".format):
        print(table[cols].to_string(index=False))

    rows_series = table[table["series"] == "rows"]
    exponent = float(rows_series["exponent"].iloc[-1])
    largest = rows_series.iloc[-1]
    ok = exponent <= MAX_EXPONENT and largest["seconds"] <= MAX_SECONDS_100K
    return verdict(ok, f"growth exponent in rows {exponent:.2f} (<= {MAX_EXPONENT}) between "
                   f"{int(rows_series['rows'].iloc[-2]):,} and {int(largest['rows']):,} rows; "
                   f"largest fit {largest['seconds']:.0f} s (<= {MAX_SECONDS_100K:.0f} s)",
                   enforce=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
