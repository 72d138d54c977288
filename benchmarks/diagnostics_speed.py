"""Diagnostics of a many-pair posterior: ``bayes_transfer.diagnostics.convergence`` vs ArviZ.

Every fit ends with R-hat, bulk ESS and tail ESS of every element of every variable
(``diagnose``). ArviZ computes them element by element in Python; ``convergence`` does
all elements of a variable at once, with the same definitions. Both run here on the same
draws, shaped as a fit of ``--pairs`` pairs records them (2 chains x 500 draws; per pair
the gap and coefficient on the log scale and as values, and the sampler's two offsets:
six columns a pair), alternating, the first round dropped; the script checks the two
agree to 1e-9 and prints the ratio of their times.

    python benchmarks/diagnostics_speed.py [--pairs 1000] [--rounds 3] [--quick]
"""

from __future__ import annotations

import statistics
import time
import warnings

import arviz as az
import numpy as np
import xarray as xr
from _common import header, parser, verdict

from bayes_transfer.diagnostics import convergence


def posterior(pairs: int, seed: int, chains: int = 2, draws: int = 500) -> xr.Dataset:
    """AR(1) draws of six pair-level variables (autocorrelation 0.5, as a NUTS chain's
    slowest gaps) and two scalars."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((chains, draws, 4, pairs))
    for j in range(1, draws):
        noise[:, j] += 0.5 * noise[:, j - 1]
    pair = [f"s{i // 100}->t{i % 100}" for i in range(pairs)]
    dims = ("chain", "draw", "pair")
    data = {"log_G": noise[:, :, 0], "log_A": noise[:, :, 1],
            "G": np.exp(noise[:, :, 0]), "A": np.exp(noise[:, :, 1]),
            "G_z": noise[:, :, 2], "A_z": noise[:, :, 3]}
    ds = xr.Dataset({k: (dims, v) for k, v in data.items()}, coords={"pair": pair})
    ds["sigma"] = (("chain", "draw"), np.abs(noise[:, :, 0, 0]))
    ds["G_mu"] = (("chain", "draw"), noise[:, :, 1, 0])
    return ds


def arviz_convergence(post: xr.Dataset) -> dict[str, xr.Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"rhat": az.rhat(post), "ess_bulk": az.ess(post, method="bulk"),
                "ess_tail": az.ess(post, method="tail")}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=1000, help="pairs (default 1000)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds of each (default 3)")
    args = p.parse_args(argv)
    pairs, rounds = (50, 2) if args.quick else (args.pairs, args.rounds)
    header(f"R-hat, bulk and tail ESS of a {pairs:,}-pair posterior ({6 * pairs + 2:,} "
           "columns, 2 chains x 500 draws)")
    post = posterior(pairs, args.seed)
    times: dict[str, list[float]] = {"arviz": [], "convergence": []}
    results = {}
    for _ in range(rounds + 1):  # the first round warms caches and is dropped
        for name, fn in (("arviz", arviz_convergence), ("convergence", convergence)):
            t = time.perf_counter()
            results[name] = fn(post)
            times[name].append(time.perf_counter() - t)
    worst = 0.0
    for key, theirs in results["arviz"].items():
        for var in theirs.data_vars:
            a, b = results["convergence"][key][var].values, theirs[var].values
            worst = max(worst, float(np.nanmax(np.abs(a - b) / np.abs(b))))
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    print(f"ArviZ (az.rhat + az.ess bulk + tail): {med['arviz']:.2f} s; "
          f"convergence: {med['convergence']:.2f} s (medians of {rounds})")
    print(f"largest relative difference: {worst:.1e}")
    print(f"ratio convergence / ArviZ: {med['convergence'] / med['arviz']:.3f}")
    return verdict(worst < 1e-9, f"the two agree to {worst:.1e} (limit 1e-9)")


if __name__ == "__main__":
    raise SystemExit(main())
