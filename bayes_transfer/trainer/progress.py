"""A live progress display for a grid: runs done and tokens trained, with an ETA."""

from __future__ import annotations

from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bayes_transfer.trainer.training import Job


class GridProgress:
    """Two bars: finished jobs (M/N) and trained tokens (the ETA: tokens are the cost)."""

    def __init__(self, total_runs: int, total_tokens: int, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[last]}"),
            disable=not enabled,
            transient=False,
        )
        self.runs = self.progress.add_task("runs", total=total_runs, last="")
        self.tokens = self.progress.add_task("tokens", total=max(1, total_tokens), last="")

    def __enter__(self) -> GridProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def advance(self, tokens: int, job: Job) -> None:
        last = f"{job.kind} {job.corpus} {job.tokens} tok"
        self.progress.advance(self.runs)
        self.progress.update(self.runs, last=last)
        self.progress.advance(self.tokens, tokens)
