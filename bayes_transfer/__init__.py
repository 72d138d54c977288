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

from bayes_transfer.data import RunTable, RunTableError, load_runs, read_chinchilla_csv  # noqa: E402
from bayes_transfer.laws import LAWS, Law, get_law, register_law  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "LAWS",
    "Law",
    "RunTable",
    "RunTableError",
    "get_law",
    "load_runs",
    "read_chinchilla_csv",
    "register_law",
    "__version__",
]
