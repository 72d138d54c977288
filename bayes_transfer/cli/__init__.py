"""Command-line interface: ``bayes-transfer COMMAND --help`` documents each command.

Each area of the package registers its commands on the shared typer app in its own
module here, so that the modules stay small and independent.
"""

from __future__ import annotations

import importlib

from bayes_transfer.cli._app import app

# Command modules, imported for their registrations on the shared app.
for _name in ("data", "inference", "design", "trainer", "plots", "demo"):
    importlib.import_module(f"bayes_transfer.cli.{_name}")


def main() -> None:
    """Entry point of the ``bayes-transfer`` console script."""
    app()


__all__ = ["app", "main"]
