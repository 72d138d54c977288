"""``bayes-transfer train``: run a grid of pre-trainings and fine-tunings with the bundled trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bayes_transfer.cli import _checks as checks
from bayes_transfer.cli._app import PROGRESS_HELP, app, console, fail, show_progress, user_errors


@app.command()
def train(
    grid: Annotated[Path, typer.Argument(help="Grid spec (TOML): sources, targets, shapes, token counts, seeds.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run table to write (CSV).")],
    executor: Annotated[str, typer.Option(help="Where jobs run: local (process pool), ray, or serial.")] = "local",
    address: Annotated[str | None, typer.Option(help="Ray cluster address (with --executor ray); default: a local Ray.")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Parallel jobs; default one per CPU core (one per GPU).")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Checkpoints and finished rows; default OUT's stem + '.work'.")] = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help=PROGRESS_HELP, show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists and is not this grid's own table (no work dir).")] = False,
    retrain_damaged: Annotated[bool, typer.Option("--retrain-damaged", help="Delete damaged checkpoints in the work dir and train them again.")] = False,
) -> None:
    """Train a grid of models and write one run-table row per evaluation.

    Pre-trains one checkpoint per (source, shape, pretrain_tokens, seed), evaluates it on its source (from-scratch rows) and on every target (zero-shot rows), fine-tunes it on every target for each finetune_tokens and evaluates on the target's held-out text.

    Finished runs are never redone: rerun the same command to resume an interrupted grid. Checkpoints and finished rows are kept in --work-dir.

    Example:

        bayes-transfer train data/transfer_grid.toml --out runs.csv --workers 2

        bayes-transfer train grid.toml --out runs.csv --executor ray --address auto
    """
    from bayes_transfer.trainer.executors import EXECUTORS
    from bayes_transfer.trainer.grid import default_work_dir

    if executor not in EXECUTORS:
        raise fail(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")
    checks.input_file(grid, "grid spec")
    work = work_dir or default_work_dir(checks.file_name(out))
    checks.output_dir(work, inputs=[grid], flag="--work-dir")
    # An existing --out is this grid's own table when its work dir exists: a resume.
    checks.output_file(out, inputs=[grid], force=force, may_exist=work.is_dir())
    checks.positive(workers, "--workers", integer=True, maximum=1024)
    with user_errors():
        from bayes_transfer.trainer import load_grid, run_grid

        spec = load_grid(grid)
        table = run_grid(
            spec, out, executor=executor, workers=workers, progress=show_progress(progress, stderr=False),
            work_dir=work_dir, address=address, retrain_damaged=retrain_damaged,
        )  # fmt: skip
    console().print(f"wrote {len(table)} rows to {out}")
