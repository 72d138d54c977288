"""Shared fixtures: a tiny simulated run table and a small fitted posterior.

The posterior is fit once per test session with very few draws and a shallow tree: it is
for tests of the API (reports, predictions, save/load, plots), not of inference quality.
"""

from __future__ import annotations

import pytest

from bayes_transfer.runtime import use_host_devices
from bayes_transfer.simulate import Simulation, design_grid, simulate

# As the CLI does at its entry point: one XLA CPU device per core (before JAX's first
# computation, not its import), so that the tests' multi-chain fits run in parallel.
use_host_devices()

# Hyperparameters that give realistic losses (1.5-5 nats) on the tiny design below.
TINY_TRUTH = {"sigma": 0.03, "G_mu": 2.3, "A_mu": 5.7, "alpha_mu": -1.2, "beta_mu": -1.2,
              "E_mu": 0.4}


@pytest.fixture(scope="session")
def tiny_sim() -> Simulation:
    """2 sources x 2 targets of the bundled ``transfer-gap`` spec; pair b->y never run."""
    design = design_grid(["a", "b"], ["x", "y"], params=[1e6], pretrain_tokens=[2e4, 2e5],
                         finetune_tokens=[4e3, 4e4])
    design = design[~((design.source == "b") & (design.target == "y"))]
    return simulate("transfer-gap", design, seed=3, truth=TINY_TRUTH)


@pytest.fixture(scope="session")
def tiny_posterior(tiny_sim):
    """A quick 2-chain posterior of ``tiny_sim`` (API tests only: too short to trust)."""
    import warnings

    from bayes_transfer.diagnostics import SamplingWarning
    from bayes_transfer.inference import fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        return fit(tiny_sim.runs, "transfer-gap", chains=2, draws=100, warmup=100, seed=0,
                   max_tree_depth=5, progress=False)


def _resident_bytes() -> int | None:
    """This process's resident set size (Linux ``/proc``); None where unknown."""
    import os

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _release_free_memory() -> None:
    """Hand the allocator's free pages back to the system (glibc's ``malloc_trim``), so
    the resident size shows what a clear freed; elsewhere a no-op."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# Clearing after every test made the suite ~1.5x slower (every test recompiles); clearing
# above this size bounds memory with a handful of clears per run. A clear does not always
# give the memory back (the allocator keeps its pages), so the next clear waits until the
# process has grown REGROWTH_BYTES past what the last one left: otherwise a worker that
# stays above the threshold would clear, and recompile, after every test.
CLEAR_ABOVE_BYTES = 3 * 2**30
REGROWTH_BYTES = 2**30
_left_by_last_clear = [0]


def pytest_configure(config: pytest.Config) -> None:
    """One JAX persistent compilation cache for the test session: both xdist workers and
    the CLI and benchmark subprocesses they start (which inherit the variable).

    A fit compiles its whole sampler as one XLA program (~9 s even for the tiny table),
    and the program is the same for the same table and settings whatever the seed; in
    one process JAX's in-memory cache misses it (each fit builds new functions), the
    persistent cache, keyed by the program itself, does not: a repeated tiny fit took
    2.4 s instead of 12 s. The folder is pytest's own cache (``.pytest_cache``), so a
    developer's next run starts warm; a clean clone starts empty. A user's
    ``JAX_COMPILATION_CACHE_DIR`` wins, and ``BAYES_TRANSFER_JAX_CACHE=off`` turns it off.
    """
    import os
    import tempfile

    from bayes_transfer.runtime import CACHE_ENV, use_compilation_cache

    cache = getattr(config, "cache", None)
    folder = (cache.mkdir("jax-compilation") if cache is not None
              else os.path.join(tempfile.gettempdir(), "bayes_transfer-tests-jax"))
    os.environ.setdefault(CACHE_ENV, str(folder))  # the user's own setting (or off) wins
    used = use_compilation_cache()
    if used is not None:  # for child processes too, the CLI's and the benchmarks' alike
        os.environ["JAX_COMPILATION_CACHE_DIR"] = used


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with slow tests run first; every Ray test lives in one file.

    ``make test`` runs ``pytest -n 2 --dist loadfile --no-loadscope-reorder``: each file in
    one worker, so a module-scoped fixture (most are fitted posteriors) is built once, not
    once a worker. (``--dist loadgroup`` grouped nothing: xdist 3.8 renames the node ids of
    a group through an attribute pytest 9 no longer reads, so every module fixture was
    built twice, the PyMC back end's pair of fits among them.) xdist hands out files in
    the order collected here; its default reorder (most tests first) sent the files of a
    few long tests (recovery, centring, the notebook, the wheel) last. Longest first is
    the usual plan for two workers (a gain not shown: one measured run, 2026-12-04), and
    a slow mark is the cost estimate a fresh clone has.

    Two local Ray instances at once would each claim the machine's cores and a third of
    its memory for their object stores, so every Ray test must live in one file."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: file order kept
    ray_files = {str(item.path) for item in items if item.get_closest_marker("ray")}
    if len(ray_files) > 1:
        raise pytest.UsageError(f"Ray tests in {len(ray_files)} files ({sorted(ray_files)}): "
                                "keep them in one, which one worker runs")


@pytest.fixture(autouse=True)
def _free_compiled_programs():
    """Drop JAX's compiled programs when the process has grown past ``CLEAR_ABOVE_BYTES``.

    JAX keeps every compiled executable for the life of the process: one pytest process
    fitting hundreds of distinct models grew by 100-400 MB a fit until XLA aborted
    (a CI run on a 24 GiB machine died in the round-trip matrix); cleared, the resident
    size falls back near 1.5 GB.
    """
    yield
    import gc
    import os
    import sys

    jax = sys.modules.get("jax")
    size = _resident_bytes()
    limit = max(CLEAR_ABOVE_BYTES, _left_by_last_clear[0] + REGROWTH_BYTES)
    if jax is not None and (size is None or size > limit):
        jax.clear_caches()
        gc.collect()
        _release_free_memory()
        _left_by_last_clear[0] = _resident_bytes() or 0
        if os.environ.get("BAYES_TRANSFER_TEST_RSS_LOG"):  # to see how often it clears
            with open(os.environ["BAYES_TRANSFER_TEST_RSS_LOG"], "a") as f:
                f.write(f"{os.getpid()} cleared at {size} bytes, left "
                        f"{_left_by_last_clear[0]}\n")
