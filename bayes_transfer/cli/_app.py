"""The typer application that every CLI module registers its commands on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="bayes-transfer",
    help=(
        "Bayesian scaling laws of transfer learning.\n\n"
        "Fit hierarchical transfer-gap posteriors to a run table, report credible "
        "intervals, and choose the next experiments.\n\n"
        "Example:\n\n"
        "    bayes-transfer validate data/transfer_runs.csv"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    # A callback keeps typer in multi-command mode even while only one command exists,
    # so that `bayes-transfer validate RUNS` never collapses to `bayes-transfer RUNS`.
    """Bayesian scaling laws of transfer learning."""
