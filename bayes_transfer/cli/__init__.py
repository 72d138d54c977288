"""Command-line interface: ``bayes-transfer COMMAND --help`` documents each command.

Each area of the package registers its commands on the shared typer app in its own
module here, so that the modules stay small and independent.
"""

from __future__ import annotations

import importlib

from bayes_transfer.cli._app import app

# Command modules, imported for their registrations on the shared app.
for _name in ("data", "convert", "inference", "backtest", "select", "compare", "design", "trainer",
              "plots", "demo"):
    importlib.import_module(f"bayes_transfer.cli.{_name}")


def main() -> None:
    """Entry point of the ``bayes-transfer`` console script.

    The process-wide settings the commands rely on are made here, not on import: one XLA
    host device per core (NumPyro's CPU chains run in parallel across them), JAX's
    persistent compilation cache (a repeated fit loads its compiled sampler instead of
    compiling it; ``BAYES_TRANSFER_JAX_CACHE=off`` disables it) and no warnings a
    command-line user cannot act on.
    """
    from bayes_transfer.runtime import (
        quiet_third_party_warnings,
        use_compilation_cache,
        use_host_devices,
    )

    use_host_devices()
    use_compilation_cache()
    quiet_third_party_warnings()
    _wide_help_when_piped()
    app()


#: Width of ``--help`` and usage errors written to a file or a pipe.
HELP_PIPE_WIDTH = 120


def _wide_help_when_piped() -> None:
    """Typer draws help at 80 columns off a terminal, and cuts long option names there
    (``--max-tree-dep…``); 120 columns hold every option whole. ``TERMINAL_WIDTH``, typer's
    own setting, still wins."""
    import os
    import sys

    if os.environ.get("TERMINAL_WIDTH") or sys.stdout.isatty():
        return
    # Help is rendered by typer.rich_utils: imported here only when not on a terminal.
    import typer.rich_utils

    typer.rich_utils.MAX_WIDTH = HELP_PIPE_WIDTH


__all__ = ["app", "main"]
