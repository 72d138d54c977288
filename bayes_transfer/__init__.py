"""bayes_transfer: Bayesian scaling laws of transfer learning.

Fit hierarchical posteriors over the transfer gaps of every (source, target) pair of a
run table with NumPyro NUTS, read credible intervals, and choose the next experiments.
"""

from __future__ import annotations

# Importing the package changes no process-wide setting (XLA_FLAGS, warning filters): the
# `bayes-transfer` command sets what it needs at its entry point, and a Python user calls
# `bt.use_host_devices()` before the first fit to run CPU chains in parallel (and
# `bt.use_compilation_cache()` to keep compiled programs on disk, as the CLI does).

__version__ = "0.1.0"

# The public names, imported on first use (PEP 562): `import bayes_transfer` stays cheap,
# which matters for the trainer's worker processes that never touch JAX.
_EXPORTS = {
    "RunTable": "bayes_transfer.data",
    "RunTableError": "bayes_transfer.data",
    "load_runs": "bayes_transfer.data",
    "read_chinchilla_csv": "bayes_transfer.data",
    "load_public": "bayes_transfer.public_data",
    "LAWS": "bayes_transfer.laws",
    "Law": "bayes_transfer.laws",
    "get_law": "bayes_transfer.laws",
    "register_law": "bayes_transfer.laws",
    "load_spec": "bayes_transfer.spec",
    "ModelSpec": "bayes_transfer.spec",
    "fit": "bayes_transfer.inference",
    "Posterior": "bayes_transfer.inference",
    "summary": "bayes_transfer.report",
    "use_host_devices": "bayes_transfer.runtime",
    "use_compilation_cache": "bayes_transfer.runtime",
    "compare": "bayes_transfer.comparison",
    "select_model": "bayes_transfer.selection",
    "ExtrapolationWarning": "bayes_transfer.extrapolation",
    "UninformedSizeWarning": "bayes_transfer.extrapolation",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bayes_transfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
