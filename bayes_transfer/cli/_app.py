"""The typer application that every CLI module registers its commands on."""

from __future__ import annotations

import typer
from rich.console import Console

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


def fail(message: str, kind: str = "error") -> typer.Exit:
    """Print ``kind: message`` on stderr and return the exit (status 1) to raise.

    The one way every command reports an error a user can fix: ``raise fail(str(exc))``.
    """
    Console(stderr=True).print(f"[bold red]{kind}:[/] {message}", highlight=False,
                               soft_wrap=True)
    return typer.Exit(1)
