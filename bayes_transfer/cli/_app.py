"""The typer application that every CLI module registers its commands on."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

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


#: The libraries whose versions decide a fit's draws and a file's format: what a bug report
#: needs beside the package's own version (`bayes-transfer --version`).
VERSIONED = ("jax", "numpyro", "arviz", "pymc", "xarray", "torch")


def version_line() -> str:
    """``bayes-transfer X (jax Y, ...; Python Z)``, read from the installed metadata (no
    library is imported, so it stays as fast as ``--help``)."""
    from importlib.metadata import PackageNotFoundError, version

    from bayes_transfer import __version__

    def installed(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} not installed"

    libs = ", ".join(installed(name) for name in VERSIONED)
    return f"bayes-transfer {__version__} ({libs}; Python {sys.version.split()[0]})"


def _print_version(value: bool) -> None:
    if value:
        console().print(version_line())
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the versions of the package and of the "
                                      "libraries its results depend on, and exit."),
) -> None:
    # A callback keeps typer in multi-command mode even while only one command exists,
    # so that `bayes-transfer validate RUNS` never collapses to `bayes-transfer RUNS`.
    """Bayesian scaling laws of transfer learning."""


#: The width of a console that does not write to a terminal (a file, a pipe, a CI log).
#: Rich would use 80 columns there and cut or wrap wide tables; nobody reads a file
#: through an 80-column window, so tables are printed at their natural width instead.
PIPE_WIDTH = 10_000


def console(stderr: bool = False, **kwargs: Any) -> Console:
    """The one way commands print: a rich console that never reads markup.

    Names, cells, file names and messages come from users (a source called ``[/]``, a
    cell holding ``[red]``), so no text is ever parsed for ``[style]`` tags; style is
    given as ``style=`` or :class:`rich.text.Text` spans instead.

    On a terminal, tables wrap to the terminal's width. Anywhere else (stdout or stderr
    redirected to a file or a pipe) the console is :data:`PIPE_WIDTH` columns wide, so a
    table is never cut ("…") or wrapped: not even an exported ``COLUMNS`` narrows it.
    """
    kwargs.setdefault("highlight", False)
    con = Console(stderr=stderr, markup=False, **kwargs)
    if "width" not in kwargs and not con.is_terminal:
        con.width = PIPE_WIDTH
    return con


def table(title: str, **kwargs: Any) -> Table:
    """A rich :class:`~rich.table.Table` at least as wide as its ``title``.

    Rich wraps a title to the width of its table, so a narrow table (few columns) would
    print its title over several lines, and a piped log would no longer hold it whole.
    On a terminal narrower than the title the table stops at the terminal's width.
    """
    kwargs.setdefault("min_width", cell_len(title))
    return Table(title=title, **kwargs)


def show_progress(flag: bool | None, stderr: bool = True) -> bool:
    """Whether to draw a progress bar: ``--progress/--no-progress``, else only on a terminal.

    A bar redraws itself with carriage returns (tqdm) or cursor moves (rich); written to a
    file or a CI log that is noise, so with no flag a bar is drawn only when the stream it
    writes to (stderr for the sampler's tqdm, stdout for rich's bars) is a terminal.
    """
    if flag is not None:
        return flag
    stream = sys.stderr if stderr else sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


PROGRESS_HELP = "Draw a progress bar (default: only when the output is a terminal)."


def fail(message: str, kind: str = "error") -> typer.Exit:
    """Print ``kind: message`` on stderr and return the exit (status 1) to raise.

    The one way every command reports an error a user can fix: ``raise fail(str(exc))``.
    ``message`` is printed as it is (no markup is read in it).
    """
    console(stderr=True, soft_wrap=True).print(Text.assemble((f"{kind}:", "bold red"), " ",
                                                             str(message)))
    return typer.Exit(1)


@contextlib.contextmanager
def user_errors(kind: str | None = None) -> Iterator[None]:
    """Turn the errors a user can fix (bad input files, arguments, unwritable paths) into
    one ``fail`` line and exit status 1; anything else is a bug and propagates."""
    # The package's input errors (SpecError, RunTableError, PosteriorFileError, GridError,
    # CandidateSpecError, CheckpointError) are all ValueErrors; named here, not imported,
    # so that a light command does not load the heavy modules that define them.
    kinds = {"SpecError": "bad model spec", "RunTableError": "bad run table",
             "PosteriorFileError": "bad posterior file", "GridError": "bad grid spec",
             "CandidateSpecError": "bad candidates file"}
    try:
        yield
    except OSError as exc:  # a write that failed (full disk, permissions) or a read
        where = f"{exc.filename}: " if exc.filename else ""
        raise fail(f"{where}{exc.strerror or exc}", kind or "error") from None
    except (KeyError, ValueError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise fail(msg, kind or kinds.get(type(exc).__name__, "error")) from None


#: The package's warnings about an answer (not about the code): a command prints each
#: once on stderr as ``warning: MESSAGE``, not in Python's ``file:line: Category`` form.
#: Named, not imported, so that a light command does not load the modules defining them.
ANSWER_WARNINGS = ("ExtrapolationWarning", "HeldSizeWarning", "UninformedSizeWarning")


@contextlib.contextmanager
def answer_warnings() -> Iterator[None]:
    """Print the package's warnings about the answer (rows beyond the fitted range, a
    model size held fixed, a size term the rows cannot inform) once each on stderr; any
    other warning passes on as it was.

    Example:
        >>> with answer_warnings():  # doctest: +SKIP
        ...     post.predict(rows)
    """
    import warnings

    caught: list[warnings.WarningMessage] = []
    try:
        # Entering resets Python's once-per-location registry, so a warning an earlier
        # command in this process raised is recorded again; the filters stay the user's.
        with warnings.catch_warnings(record=True) as caught:
            yield
    finally:
        seen: set[str] = set()
        err = console(stderr=True, soft_wrap=True)
        for w in caught:
            text = str(w.message)
            if w.category.__name__ not in ANSWER_WARNINGS:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno,
                                       source=w.source)
            elif text not in seen:
                seen.add(text)
                err.print(Text.assemble(("warning:", "bold yellow"), " ", text))


def load_posterior(path: Path):
    """``Posterior.load(path)``, and one ``warning:`` line on stderr when its fit failed
    its diagnostics: what a command prints from it (predictions, advice, suggestions,
    pictures) rests on draws that may be wrong, and the user should hear so there, not
    only from ``report``. Errors pass to the caller's :func:`user_errors`."""
    from bayes_transfer.inference import Posterior

    post = Posterior.load(path)
    d = post.diagnostics
    if not d.ok:
        console(stderr=True, soft_wrap=True).print(Text.assemble(
            ("warning:", "bold yellow"),
            f" {path} failed its diagnostics (R-hat max {d.max_rhat:.3f}, bulk ESS min "
            f"{d.min_ess_bulk:.0f}, {d.divergences} divergences): what follows may be "
            f"wrong; `bayes-transfer report {path}` says what to change"))
    return post


class Format(StrEnum):
    """How a command prints its results: ``--format table|csv|json``."""

    table = "table"
    csv = "csv"
    json = "json"


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj

