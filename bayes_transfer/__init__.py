"""bayes_transfer: Bayesian scaling laws of transfer learning.

Fit hierarchical posteriors over the transfer gaps of every (source, target) pair of a
run table with NumPyro NUTS, read credible intervals, and choose the next experiments.
"""

from __future__ import annotations

from bayes_transfer.data import RunTable, RunTableError, load_runs, read_chinchilla_csv
from bayes_transfer.laws import LAWS, Law, get_law, register_law

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
