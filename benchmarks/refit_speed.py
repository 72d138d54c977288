"""Refit speed: a loop round's warm-started refit vs a cold fit, and a cached CLI fit.

Two measurements, each a ratio against a baseline measured in the same run:

* **Refit vs cold fit.** A simulated loop table (``transfer-gap``, 2 sources x 2 targets,
  rows added 4 at a time, as the loop's rounds add them) is fitted cold at round 0, then
  each round is refitted warm (:func:`bayes_transfer.inference.fit` with ``warm_start``:
  chains start at the previous posterior's last draws, its draws' variances are the mass
  matrix, a quarter of the warmup tunes the step size, the groups the previous posterior
  pins are sampled centred, and the padded table reuses the compiled sampler). Each warm
  refit is timed (CPU seconds of the process, all threads) against a cold fit of the
  *same* table with the same settings (compilation + full warmup + draws, what every round cost before).
  The first warm refit compiles the warm sampler; later ones in the same row bucket
  reuse it. Target: a round's refit (compiled sampler reused) <= 25% of the cold fit.
  Each fit's max R-hat is printed beside it.
* **CLI fit with a warm compilation cache.** ``bayes-transfer fit`` of the same table
  in fresh processes: with the cache off, into an empty cache folder, and again with that
  folder filled; short chains (2 x 50 + 50), so that what the cache saves is not lost in
  the sampling's noise on a shared machine, and the faster of two runs for "off" and
  "warm cache". Ratio: warm cache / cache off (wall clock of the whole command).

* **Another table of one structure.** A fit of ``finetune-curves`` (three of Lin et
  al.'s models fine-tuned on Gigaword, up to 1/64 of the largest size) in a fresh process
  into an empty compilation cache, against the same fit from a cache that a fit of the
  same models on FLAN (other values, the same shapes) has just filled. The Laplace start's
  mode search and the sampler take the rows as arguments, so the second table reuses both
  programs. Ratio: Gigaword after FLAN / Gigaword alone (wall clock). With
  ``--quick`` the spec's discrepancy term is left out (one fit a process, not five).

Run: ``python benchmarks/refit_speed.py`` (2 chains x 300 + 300, 5 warm rounds: 40-56
rows, two of them in the previous round's row bucket), or ``--quick`` (2 chains x 60 + 60, depth 6, 2 warm rounds of 44 and 48 rows, one
row bucket; one CLI fit each into and from the cache; the target is not enforced).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from _common import REPO, header, parser, verdict

import bayes_transfer.inference as inference
from bayes_transfer.data import load_runs
from bayes_transfer.design import candidate_grid
from bayes_transfer.loop import simulated_runner
from bayes_transfer.refit import bucket_rows, clear_compiled
from bayes_transfer.simulate import simulate

TARGET = 0.25


def _table(rows: int, seed: int):
    cands = candidate_grid(["a", "b"], ["x", "y"], params=[1e6, 1e7],
                           pretrain_tokens=[1e7, 1e8, 1e9], finetune_tokens=[1e5, 1e6, 1e7])
    truth = simulate("transfer-gap", cands, seed=seed)
    order = cands.sample(len(cands), random_state=seed)
    run = simulated_runner(truth, seed=seed)
    return lambda n: load_runs(run(order.iloc[:n]), name=f"{n} rows")


def _fit(table, settings, **extra):
    """The posterior and the CPU seconds of the fit (every thread of this process: on a
    shared machine wall time moved 2x between fits of one table; CPU time far less)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.process_time()
        post = inference.fit(table, "transfer-gap", progress=False, **settings, **extra)
        return post, time.process_time() - t0


def refits(settings: dict, first_rows: int, rounds: int, seed: int) -> list[dict]:
    table = _table(first_rows + 4 * rounds, seed)
    # Cold fits first, while no warm sampler is alive in the process (a live compiled
    # sampler can slow other fits; the baseline must not pay for it).
    previous, _ = _fit(table(first_rows), settings, seed=seed)
    cold = {}
    for r in range(1, rounds + 1):
        cold[r] = _fit(table(first_rows + 4 * r), settings, seed=seed + r)
    out = []
    for r in range(1, rounds + 1):
        rows = first_rows + 4 * r
        warm, warm_s = _fit(table(rows), settings, seed=seed + r, warm_start=previous)
        fit, cold_s = cold[r]
        steps = {k: float(p.idata.sample_stats["n_steps"].mean())
                 for k, p in (("warm", warm), ("cold", fit))}
        out.append({"round": r, "rows": rows, "bucket": bucket_rows(rows), "warm_s": warm_s,
                    "cold_s": cold_s, "warm_rhat": warm.diagnostics.max_rhat,
                    "cold_rhat": fit.diagnostics.max_rhat})
        print(f"round {r}: {rows} rows (padded to {bucket_rows(rows)}): warm refit "
              f"{warm_s:.1f} CPU s (R-hat {warm.diagnostics.max_rhat:.3f}), cold fit "
              f"{cold_s:.1f} CPU s (R-hat {fit.diagnostics.max_rhat:.3f}): "
              f"{warm_s / cold_s:.2f}; leapfrog steps a draw {steps['warm']:.0f} warm, "
              f"{steps['cold']:.0f} cold", flush=True)
        previous = warm
    clear_compiled()
    return out


def cli_fits(rows: int, seed: int, repeats: int = 2, with_off: bool = True
             ) -> dict[str, float]:
    """Wall-clock seconds of ``bayes-transfer fit``: cache off (``with_off``), empty
    cache ("cold cache"), warm cache."""
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "runs.csv"
        _table(rows, seed)(rows).df.to_csv(csv, index=False)
        cmd = [sys.executable, "-c", "from bayes_transfer.cli import main; main()", "fit",
               str(csv), "--out", str(Path(tmp) / "post.nc"), "--force", "--no-progress",
               "--chains", "2", "--draws", "50", "--warmup", "50"]
        cache = str(Path(tmp) / "cache")
        times: dict[str, float] = {}
        runs = [("off", "off")] * (repeats if with_off else 0) + [("cold cache", cache)] + \
            [("warm cache", cache)] * repeats
        for name, where in runs:
            env = {**os.environ, "PYTHONPATH": str(REPO), "BAYES_TRANSFER_JAX_CACHE": where}
            env.pop("JAX_COMPILATION_CACHE_DIR", None)
            t0 = time.perf_counter()
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            took = time.perf_counter() - t0
            if res.returncode != 0:
                raise SystemExit(f"bayes-transfer fit failed:\n{res.stderr[-2000:]}")
            times[name] = min(times.get(name, took), took)
            print(f"CLI fit (2 chains x 50 + 50), {name}: {took:.1f} s", flush=True)
    return times


_STRUCTURE_FIT = """
import dataclasses, sys, warnings
from bayes_transfer.runtime import use_compilation_cache
use_compilation_cache(sys.argv[2])
from bayes_transfer import fit, load_spec
spec = load_spec("finetune-curves")
if sys.argv[3] == "bare":
    spec = dataclasses.replace(spec, discrepancy=None)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fit(sys.argv[1], spec, chains=1, draws=30, warmup=30, seed=0, progress=False)
"""


def structure_fits(bare: bool) -> dict[str, float]:
    """Wall-clock seconds of a Gigaword fit into an empty cache ("alone"), and of the same
    fit from a cache a FLAN fit of the same models filled ("after FLAN")."""
    from bayes_transfer.public_data import load_public

    with tempfile.TemporaryDirectory() as tmp:
        csv = {}
        for name in ("flan", "gigaword"):
            df = load_public(f"rectified-scaling-{name}").df
            df = df[df.source.isin(sorted(df.source.unique())[:3])]
            df = df[df.finetune_tokens <= df.finetune_tokens.max() / 64]
            csv[name] = Path(tmp) / f"{name}.csv"
            df.to_csv(csv[name], index=False)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)

        def run(name: str, cache: str) -> float:
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", _STRUCTURE_FIT, str(csv[name]),
                                  str(Path(tmp) / cache), "bare" if bare else "full"],
                                 env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"the finetune-curves fit failed:\n{res.stderr[-2000:]}")
            return time.perf_counter() - t0

        times = {"alone": run("gigaword", "empty"), "flan": run("flan", "shared")}
        times["after FLAN"] = run("gigaword", "shared")
    what = "without its discrepancy" if bare else "with its discrepancy (5 fits)"
    print(f"finetune-curves {what}, 1 chain x 30 + 30: Gigaword alone {times['alone']:.1f} "
          f"s, FLAN {times['flan']:.1f} s, then Gigaword {times['after FLAN']:.1f} s",
          flush=True)
    return times


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    header("refit speed: warm-started loop refits, and the CLI's compilation cache")
    if args.quick:
        # 44 and 48 rows share a row bucket: the second warm refit reuses the sampler.
        settings = {"chains": 2, "draws": 60, "warmup": 60, "max_tree_depth": 6}
        first_rows, rounds = 40, 2
    else:
        settings = {"chains": 2, "draws": 300, "warmup": 300, "max_tree_depth": 10}
        first_rows, rounds = 36, 5
    t0 = time.perf_counter()
    log = refits(settings, first_rows=first_rows, rounds=rounds, seed=args.seed)
    # --quick: one CLI fit into an empty cache and one from it; the cold-cache fit
    # compiles as a fit with the cache off does, so it stands in for "off".
    cli = cli_fits(rows=36, seed=args.seed, repeats=1 if args.quick else 2,
                   with_off=not args.quick)
    shared = structure_fits(bare=args.quick)
    # A warm refit in a new row bucket compiles the warm sampler; one in the previous
    # round's bucket reuses it: that is what most rounds of a running loop cost.
    reused = [r for prev, r in zip(log, log[1:], strict=False) if r["bucket"] == prev["bucket"]]
    ratio = max(r["warm_s"] / r["cold_s"] for r in reused) if reused else float("nan")
    print()
    print(f"settings: {settings['chains']} chains x {settings['draws']} draws + "
          f"{settings['warmup']} warmup (warm: a quarter), max tree depth "
          f"{settings['max_tree_depth']}; {time.perf_counter() - t0:.0f} s in all")
    print(f"first warm refit (compiles the warm sampler): {log[0]['warm_s']:.1f} vs cold "
          f"{log[0]['cold_s']:.1f} CPU s ({log[0]['warm_s'] / log[0]['cold_s']:.2f})")
    # Without an "off" fit (--quick) the cold-cache fit is the baseline, and the label says so.
    base, label = ("off", "cache off") if "off" in cli else ("cold cache", "cold cache")
    print(f"CLI fit (2 x 50 + 50): warm cache / {label} {cli['warm cache'] / cli[base]:.2f} "
          f"({cli['warm cache']:.1f} s vs {cli[base]:.1f} s; cold cache "
          f"{cli['cold cache']:.1f} s)")
    print(f"another table of one structure (finetune-curves): after FLAN / alone "
          f"{shared['after FLAN'] / shared['alone']:.2f} ({shared['after FLAN']:.1f} s vs "
          f"{shared['alone']:.1f} s)")
    print("max R-hat, warm refits: " + ", ".join(f"{r['warm_rhat']:.3f}" for r in log)
          + "; cold fits: " + ", ".join(f"{r['cold_rhat']:.3f}" for r in log))
    return verdict(ratio <= TARGET, f"a round's refit (compiled sampler reused) / a cold fit "
                   f"of the same table: worst {ratio:.2f} (target <= {TARGET})",
                   enforce=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
