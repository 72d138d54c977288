"""``bayes-transfer validate``: check a run table against the contract."""

from __future__ import annotations

from pathlib import Path

import typer

from bayes_transfer.cli._app import app, console, fail
from bayes_transfer.cli._app import table as titled_table


@app.command()
def validate(
    runs: Path = typer.Argument(..., help="Run table to check (.csv or .parquet)."),
) -> None:
    """Check a run table and print a summary, or every bad row and column.

    Exits with status 0 when the table is valid and 1 when it is not; nothing is written.

    Example:

        bayes-transfer validate data/transfer_runs.csv
    """
    from bayes_transfer.data import RunTableError, load_runs

    try:
        table = load_runs(runs)
    except (RunTableError, FileNotFoundError) as exc:
        raise fail(str(exc), "invalid run table") from None
    summary = titled_table(f"{runs.name}: valid run table", show_header=False)
    for key, value in table.summary().items():
        summary.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    console().print(summary)
