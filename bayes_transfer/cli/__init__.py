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
    app()


__all__ = ["app", "main"]
