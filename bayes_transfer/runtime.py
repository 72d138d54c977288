"""Process-wide settings that the package never makes on import: the caller opts in.

NumPyro runs chains in parallel on the CPU only across XLA host devices, and JAX fixes
their number when its backend starts (the first computation). The ``bayes-transfer``
command asks for one per core at its entry point; a Python user who wants the same calls
:func:`use_host_devices` before the first fit (otherwise the chains of a CPU fit are
vectorised in one program: correct, just slower on a multi-core machine).

This module imports nothing heavy, so that the CLI can call it before JAX is loaded.
The one change it makes by itself is a repair, not a setting: :func:`atomic_compilation_cache`
(called when :mod:`bayes_transfer.model` imports JAX) makes JAX's persistent cache write
its entries atomically, whoever turned the cache on.
"""

from __future__ import annotations

import os
import re
import sys
import warnings

__all__ = ["use_host_devices", "use_compilation_cache", "atomic_compilation_cache",
           "release_compiled_if_crowded", "quiet_third_party_warnings", "CACHE_ENV"]

#: Where the CLI keeps JAX's compiled programs: a folder, or ``off`` (also 0, false, no,
#: none, or empty) to compile every time.
CACHE_ENV = "BAYES_TRANSFER_JAX_CACHE"
_OFF = {"", "0", "off", "false", "no", "none"}
# JAX's own setting of the shortest compilation it keeps on disk (see use_compilation_cache).
_MIN_COMPILE_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"

_FLAG = "--xla_force_host_platform_device_count"


def use_host_devices(count: int | None = None) -> int:
    """Ask JAX for ``count`` CPU devices (default: one per core, at least 4).

    Sets ``XLA_FLAGS`` for this process (and its children) unless it already names a
    host device count (the user's choice wins). Call it before JAX runs anything; later
    it cannot take effect and a ``RuntimeWarning`` says so. Returns the count in force
    (the one asked for, or the user's own).

    Example::

        import bayes_transfer as bt
        bt.use_host_devices()  # first: then bt.fit(..., chains=4) runs them in parallel
        post = bt.fit("data/transfer_runs.csv", "transfer-gap-size")
    """
    flags = os.environ.get("XLA_FLAGS", "")
    chosen = re.search(_FLAG.lstrip("-") + r"=(\d+)", flags)
    if chosen:
        return int(chosen[1])
    want = count if count is not None else max(4, os.cpu_count() or 1)
    if want < 1:
        raise ValueError(f"count must be at least 1, not {want}")
    if _jax_started():
        warnings.warn("use_host_devices() called after JAX started: the number of CPU "
                      "devices is already fixed; call it before the first fit",
                      RuntimeWarning, stacklevel=2)
        return len(sys.modules["jax"].devices("cpu"))
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={want}".strip()
    return want


def use_compilation_cache(path: str | os.PathLike[str] | None = None) -> str | None:
    """Keep JAX's compiled programs on disk, so a repeated fit skips compilation.

    A fit compiles its sampler for several seconds; JAX's persistent compilation cache
    stores the program under a hash of it, and a later process that builds the same
    program (the same spec on a table of the same shape and values, or a loop refit of a
    table padded to the same size) loads it instead. The folder is ``path``, else the
    ``BAYES_TRANSFER_JAX_CACHE`` environment variable (``off`` disables the cache), else
    ``$XDG_CACHE_HOME/bayes_transfer/jax`` (``~/.cache/bayes_transfer/jax``). A setting
    the user made (``JAX_COMPILATION_CACHE_DIR``) wins. Returns the folder in use, or
    None when disabled.

    Set through environment variables when JAX has not been imported yet (the CLI calls
    this at its entry point, before any heavy import), else through ``jax.config``.
    """
    if path is None:
        if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            return os.environ["JAX_COMPILATION_CACHE_DIR"]
        env = os.environ.get(CACHE_ENV)
        if env is not None and env.strip().lower() in _OFF:
            return None
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                 ".cache")
        path = env or os.path.join(base, "bayes_transfer", "jax")
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:  # a read-only home: compile every time rather than fail the command
        return None
    # JAX persists only programs that took over a second to compile; a fit also compiles
    # ~190 small ones (NumPyro's eager start-up: finding initial values, the first
    # gradient), ~0.06 s each, which a new process compiled again every time: 10 of a
    # tiny CLI fit's 20 s (jax 0.10, 2026-12-04). Kept too, a repeated fit took 10 s.
    # The user's own setting wins; the variable also reaches child processes.
    ours = _MIN_COMPILE_ENV not in os.environ
    os.environ.setdefault(_MIN_COMPILE_ENV, "0")
    if "jax" in sys.modules:
        jax = sys.modules["jax"]
        jax.config.update("jax_compilation_cache_dir", path)
        if ours:
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        atomic_compilation_cache()
    else:  # bayes_transfer.model makes the writes atomic when it imports JAX
        os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    return path


def atomic_compilation_cache() -> bool:
    """Make JAX's persistent compilation cache write its entries atomically.

    JAX writes an entry with ``Path.write_bytes`` and never rewrites one that exists, so a
    process killed mid-write (a Ctrl-C'd fit, a SIGKILLed loop, two test workers sharing
    a folder) leaves a truncated entry that every later process fails to read, warns
    about and recompiles, for good. Here an entry is written to a temporary file and
    renamed over its name (:func:`bayes_transfer._io.atomic_write_bytes`), and an entry
    JAX asks to write although the file exists (which it does only after failing to read
    it) replaces it: a damaged entry heals on its next compilation. Only the local,
    size-unlimited cache (JAX's default) is changed; with ``jax_compilation_cache_max_size``
    set, JAX's own eviction bookkeeping is kept. Idempotent; imports JAX. Returns whether
    the writes are atomic (False on a JAX without the private class this wraps).
    """
    try:
        from jax._src import lru_cache
    except ImportError:  # another JAX layout: its own writes stand
        return False
    cache_class = getattr(lru_cache, "LRUCache", None)
    put = getattr(cache_class, "put", None)
    if put is None:
        return False
    if getattr(put, "_bayes_transfer_atomic", False):
        return True
    suffix = getattr(lru_cache, "_CACHE_SUFFIX", "-cache")

    def atomic_put(self, key: str, value: bytes) -> None:
        if getattr(self, "eviction_enabled", True) or not key or \
                not isinstance(getattr(self, "path", None), os.PathLike):
            return put(self, key, value)
        from bayes_transfer._io import atomic_write_bytes

        atomic_write_bytes(os.path.join(os.fspath(self.path), f"{key}{suffix}"), value)

    atomic_put._bayes_transfer_atomic = True  # type: ignore[attr-defined]
    atomic_put.__wrapped__ = put  # type: ignore[attr-defined]
    cache_class.put = atomic_put
    return True


def release_compiled_if_crowded(share: float = 0.5) -> bool:
    """Drop JAX's in-memory compiled programs when this process's memory mappings pass
    ``share`` of the kernel's limit (Linux; elsewhere nothing is done). Returns whether
    it dropped them.

    Each NumPyro MCMC run of a new model function compiles new programs that JAX keeps
    for the life of the process (pyro-ppl/numpyro#2172 for one cause), and each loaded
    program holds memory mappings: ~1,300 a small ``finetune-curves`` fit, ~500 a tiny
    plain NumPyro model (2026-12-06). Against Linux's default ``vm.max_map_count`` of
    65,530, a process that fits ~50 times (a long loop, a benchmark of many budgets)
    then dies in XLA's compiler with "LLVM ERROR: Unable to allocate section memory".
    :func:`bayes_transfer.inference.fit` calls this before each fit; the programs it
    drops are compiled again (or loaded from the persistent cache) when next used.
    Counting the mappings reads ``/proc/self/maps`` (a few ms).

    Example::

        from bayes_transfer.runtime import release_compiled_if_crowded
        release_compiled_if_crowded()  # False until the process nears the limit
    """
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
        with open("/proc/self/maps") as f:
            used = sum(1 for _ in f)
    except (OSError, ValueError):  # not Linux, or no /proc: no such limit to meet
        return False
    if used < share * limit or "jax" not in sys.modules:
        return False
    sys.modules["jax"].clear_caches()
    return True


def quiet_third_party_warnings() -> None:
    """Silence warnings a command-line user cannot act on (ArviZ's 1.0 announcement)."""
    warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")


def _jax_started() -> bool:
    # JAX reads XLA_FLAGS when its first backend starts, not when it is imported.
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # another JAX version: assume the worst
        return True
