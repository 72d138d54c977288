"""Command-line interface: ``bayes-transfer COMMAND --help`` documents each command.

Each area of the package registers its commands on the shared typer app in its own
module here, so that the modules stay small and independent.
"""

from __future__ import annotations

import importlib

from bayes_transfer.cli._app import app

# Command modules, imported for their registrations. A module that is missing (an area
# still being built) must not break the others.
_COMMAND_MODULES = ("data", "inference", "design", "trainer", "plots", "demo")

for _name in _COMMAND_MODULES:
    try:
        importlib.import_module(f"bayes_transfer.cli.{_name}")
    except ModuleNotFoundError as exc:  # pragma: no cover - only while building
        if exc.name != f"bayes_transfer.cli.{_name}":
            raise


def main() -> None:
    """Entry point of the ``bayes-transfer`` console script."""
    app()


__all__ = ["app", "main"]
