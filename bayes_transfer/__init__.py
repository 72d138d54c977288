"""bayes_transfer: Bayesian scaling laws of transfer learning.

Fit hierarchical posteriors over the transfer gaps of every (source, target) pair of a
run table with NumPyro NUTS, read credible intervals, and choose the next experiments.
"""

from __future__ import annotations

import os as _os
import warnings as _warnings


def _use_host_cores_for_chains() -> None:
    # NumPyro runs chains in parallel on the CPU only across XLA host devices, and their
    # number is fixed when JAX starts: ask for one per core (at least 4, the default
    # number of chains) unless the user already chose.
    flags = _os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        count = max(4, _os.cpu_count() or 1)
        _os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}"


_use_host_cores_for_chains()
# ArviZ 0.2x announces its 1.0 refactor on import; users cannot act on it here.
_warnings.filterwarnings("ignore", category=FutureWarning, module="arviz")

__version__ = "0.1.0"

# The public names, imported on first use (PEP 562): `import bayes_transfer` stays cheap,
# which matters for the trainer's worker processes that never touch JAX.
_EXPORTS = {
    "RunTable": "bayes_transfer.data",
    "RunTableError": "bayes_transfer.data",
    "load_runs": "bayes_transfer.data",
    "read_chinchilla_csv": "bayes_transfer.data",
    "LAWS": "bayes_transfer.laws",
    "Law": "bayes_transfer.laws",
    "get_law": "bayes_transfer.laws",
    "register_law": "bayes_transfer.laws",
    "load_spec": "bayes_transfer.spec",
    "ModelSpec": "bayes_transfer.spec",
    "fit": "bayes_transfer.inference",
    "Posterior": "bayes_transfer.inference",
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
