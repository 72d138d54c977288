"""Shared helpers of the benchmark scripts: arguments, machine description, timing, tables.

Every script in ``benchmarks/`` runs with no arguments (the full measurement, under 10
minutes on a 2-core CPU) or with ``--quick`` (a smoke run for CI, about a minute), prints
its figures last and exits non-zero when its target is missed. Import with
``from _common import ...`` (scripts run as ``python benchmarks/NAME.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bayes_transfer.runtime import use_host_devices

# As the CLI does: one XLA CPU device per core, so that multi-chain fits run in parallel.
use_host_devices()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
OUT = REPO / "benchmarks" / "out"


def keep_compiled() -> None:
    """As the CLI does: JAX's persistent compilation cache, for a script of many fits
    whose figures are not times. Fits of one structure (a backtest's fit and the
    discrepancy's internal fits; one table at several budgets) build the same programs,
    which one process compiles again for every fit without it (each fit builds new
    functions): 31 of 38 s of a small ``finetune-curves`` fit, 2026-12-06."""
    from bayes_transfer.runtime import use_compilation_cache

    use_compilation_cache()


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with ``--quick`` (a CI-sized run) and ``--seed``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="a small, fast run (about a minute) for the test suite")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def machine() -> str:
    """One line: date, CPU, cores, and the versions that set the speed."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for mod in ("jax", "numpyro", "pymc", "torch"):
        if mod in sys.modules:
            versions.append(f"{mod} {getattr(sys.modules[mod], '__version__', '?')}")
    load = ""
    with contextlib.suppress(OSError):
        load = f", load {os.getloadavg()[0]:.1f}"
    return (f"{_dt.date.today().isoformat()}, {cpu}, {os.cpu_count()} cores{load}, "
            f"Python {platform.python_version()}" + (", " + ", ".join(versions) if versions
                                                      else ""))


@contextlib.contextmanager
def timer() -> Iterator[dict[str, float]]:
    """``with timer() as t: ...`` then ``t["seconds"]`` (wall clock)."""
    out: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start


def header(title: str) -> None:
    print(f"# {title}\n# {machine()}", flush=True)


def verdict(ok: bool, message: str, enforce: bool = True) -> int:
    """Print the target's outcome last and return the exit status (0 when met).

    ``enforce=False`` (a ``--quick`` run too small to judge the target) reports the
    outcome and returns 0.
    """
    note = "" if enforce else " (--quick run: too small to judge, not enforced)"
    print(("TARGET MET: " if ok else "TARGET MISSED: ") + message + note, flush=True)
    return 0 if ok or not enforce else 1
