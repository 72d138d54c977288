"""A 4,000-row fit with crossed source x target effects on five parameters.

Issue 13's size target: a table of 10 sources x 10 targets (100 pairs, 40 rows each,
noise 2%) drawn from a ``chinchilla`` spec whose five parameters all vary by pair with
crossed effects (``mu + u_s + v_t + w_st``; ``centered = "auto"``, as the spec docs advise
for many rows a pair: 40 precise rows pin each pair's values, so the pair level is centred),
fitted with 2 chains x 500 warmup + 500 draws. Non-centred, the same fit ran at NUTS's
maximum tree depth (1,023 leapfrog steps a draw, R-hat 1.50, 182 s). The figure is the wall time of ``fit`` (compilation included) and,
to read it on a noisy machine, its ratio to a 400-row fit of the same spec (4 x 4 pairs,
25 rows each) measured in the same run.

Target (exit status 1 when missed): <= 3 minutes on 2 cores.

    python benchmarks/crossed_fit.py            # ~4 min on 2 cores
    python benchmarks/crossed_fit.py --quick    # CI smoke run: 400 rows, short chains
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
from _common import header, parser, timer, verdict

from bayes_transfer.diagnostics import SamplingWarning
from bayes_transfer.inference import fit
from bayes_transfer.simulate import simulate, typical_truth
from bayes_transfer.spec import load_spec

LIMIT_S = 180.0


def crossed_spec():
    base = load_spec("chinchilla").to_dict()
    base["discrepancy"] = None
    for p in base["params"].values():
        p.update(level="pair", pooling="crossed", group_scale=0.5, centered="auto")
    base.pop("discrepancy")
    return load_spec(base)


def table(n_side: int, rows_per_pair: int, seed: int):
    spec = crossed_spec()
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_side):
        for t in range(n_side):
            for i in range(rows_per_pair):
                n = float(np.exp(rng.uniform(np.log(1e6), np.log(1e9))))
                d = float(n * np.exp(rng.uniform(np.log(2), np.log(200))))
                rows.append({"run_id": f"s{s}-t{t}-{i}", "source": f"s{s}", "target": f"t{t}",
                             "params": int(n), "pretrain_tokens": int(d),
                             "finetune_tokens": 0})
    import pandas as pd

    return spec, simulate(spec, pd.DataFrame(rows), seed=seed,
                          truth=typical_truth(spec, sigma=0.02)).runs


def timed_fit(spec, runs, chains: int, draws: int, seed: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        with timer() as t:
            post = fit(runs, spec, chains=chains, draws=draws, warmup=draws, seed=seed,
                       progress=False)
    return t["seconds"], post


def main() -> int:
    args = parser(__doc__.splitlines()[0]).parse_args()
    header("4,000-row fit, crossed effects on five parameters")
    chains, draws = (1, 100) if args.quick else (2, 500)
    spec, small = table(4, 25, args.seed)
    base_s, base_post = timed_fit(spec, small, chains, draws, args.seed)
    print(f"baseline: {len(small)} rows, 16 pairs: {base_s:.1f} s; {base_post.diagnostics}",
          flush=True)
    if args.quick:
        return verdict(True, "quick run: the 4,000-row fit is not timed", enforce=False)
    _, big = table(10, 40, args.seed)
    big_s, post = timed_fit(spec, big, chains, draws, args.seed)
    steps = float(post.idata.sample_stats["n_steps"].mean())
    print(f"{len(big)} rows, 100 pairs, {chains} chains x {draws} + {draws}: {big_s:.1f} s "
          f"({big_s / base_s:.2f}x the {len(small)}-row fit), {steps:.0f} leapfrog steps a "
          f"draw; {post.diagnostics}", flush=True)
    return verdict(big_s <= LIMIT_S, f"4,000-row crossed fit in {big_s:.0f} s "
                   f"(limit {LIMIT_S:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
