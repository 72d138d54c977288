"""Start-up time of the CLI: ``--help``, ``validate`` and ``report``, before and after.

Each command runs as a fresh subprocess (what a user's shell pays), several times; the
median wall time is reported. "Before" is the start-up the package had while it imported
JAX and ArviZ whenever the CLI loaded (``bayes_transfer.spec`` -> ``laws`` -> ``jax``,
``cli.inference`` -> ``diagnostics`` -> ``arviz``): the same command with those two
preloaded (checked on commit c169256: its ``--help`` loaded jax, arviz, scipy, matplotlib
and xarray, not pymc or numpyro). "After" is the command as it is now, where they are
imported only inside the commands that use them. ``report`` needs ArviZ and JAX to load a
posterior either way, so its ratio stays near 1.

Also: reading a posterior file's groups (what every ``report``, ``predict``, ``plot`` and
``suggest`` does first) with xarray's netCDF4 engine, which the package uses, against the
h5netcdf engine it used before; in-process, the two alternating, the first round dropped.

Targets: ``--help`` under 1 s and ``validate`` under 2 s (medians).

    python benchmarks/cli_startup.py [--quick] [--runs N]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from _common import header, parser, verdict

from bayes_transfer import bundled

TARGETS = {"help": 1.0, "validate": 2.0}
ENTRY = "from bayes_transfer.cli import main; main()"
BEFORE = "import jax, arviz; " + ENTRY  # what the CLI loaded before the lazy imports


def tiny_posterior(folder: Path) -> Path:
    """A small saved posterior (2 x 100 draws of a 2 x 2 simulated table): seconds."""
    from bayes_transfer.diagnostics import SamplingWarning
    from bayes_transfer.inference import fit
    from bayes_transfer.simulate import design_grid, simulate

    design = design_grid(["a", "b"], ["x", "y"], params=[1e6], pretrain_tokens=[2e4, 2e5],
                         finetune_tokens=[4e3, 4e4])
    truth = {"sigma": 0.03, "G_mu": 2.3, "A_mu": 5.7, "alpha_mu": -1.2, "beta_mu": -1.2,
             "E_mu": 0.4}
    sim = simulate("transfer-gap", design, seed=3, truth=truth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        post = fit(sim.runs, "transfer-gap", chains=2, draws=100, warmup=100, seed=0,
                   max_tree_depth=5, progress=False)
    path = folder / "tiny.nc"
    post.save(path)
    return path


def median_seconds(args: list[str], runs: int, cwd: Path) -> tuple[float, float]:
    """Median wall times (before, after) of ``args``; the two variants alternate, so that
    a change in the machine's load during the measurement hits both alike."""
    times: dict[str, list[float]] = {BEFORE: [], ENTRY: []}
    for _ in range(runs):
        for code, seconds in times.items():
            start = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd,
                                 capture_output=True, text=True, timeout=300)
            seconds.append(time.perf_counter() - start)
            if res.returncode != 0:
                raise RuntimeError(f"{args} exited {res.returncode}:\n{res.stderr[-2000:]}")
    return statistics.median(times[BEFORE]), statistics.median(times[ENTRY])


def read_seconds(path: Path, runs: int) -> dict[str, float]:
    """Median seconds to read every group of the file at ``path`` into memory, per engine."""
    import h5py
    import xarray as xr

    with h5py.File(path, "r") as f:
        groups = list(f)
    times: dict[str, list[float]] = {"netcdf4": [], "h5netcdf": []}
    for _ in range(runs + 1):  # the first round imports the engines: dropped
        for engine, seconds in times.items():
            start = time.perf_counter()
            for group in groups:
                with xr.open_dataset(path, group=group, engine=engine) as ds:
                    ds.load()
            seconds.append(time.perf_counter() - start)
    return {engine: statistics.median(seconds[1:]) for engine, seconds in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=None,
                   help="subprocess runs per command and variant (default 7, --quick 1)")
    args = p.parse_args(argv)
    runs = args.runs or (1 if args.quick else 7)
    header(f"CLI start-up, median of {runs} subprocess runs per command")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        post = tiny_posterior(folder)
        commands = {"help": ["--help"],
                    "validate": ["validate", str(bundled.runs_path())],
                    "report": ["report", str(post), "--format", "csv"]}
        rows = {}
        for name, cmd in commands.items():
            rows[name] = median_seconds(cmd, runs, folder)
        reads = read_seconds(post, runs)
    print(f"{'command':<10} {'before s':>9} {'after s':>8} {'before/after':>13}")
    for name, (before, after) in rows.items():
        print(f"{name:<10} {before:>9.2f} {after:>8.2f} {before / after:>12.1f}x")
    print(f"reading the posterior file's groups: netCDF4 {reads['netcdf4']:.3f} s, h5netcdf "
          f"{reads['h5netcdf']:.3f} s (h5netcdf / netCDF4 "
          f"{reads['h5netcdf'] / reads['netcdf4']:.1f}x)")
    ok = all(rows[name][1] < limit for name, limit in TARGETS.items())
    return verdict(ok, ", ".join(f"{name} {rows[name][1]:.2f} s (< {limit:g} s)"
                                 for name, limit in TARGETS.items()),
                   enforce=not args.quick)


if __name__ == "__main__":
    sys.exit(main())
