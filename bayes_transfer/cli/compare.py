"""``bayes-transfer compare``: rank posteriors of one run table by PSIS-LOO."""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from rich.text import Text

from bayes_transfer.cli._app import Format, app, console, fail, user_errors
from bayes_transfer.cli._output import emit


def _names(paths: list[Path]) -> list[str]:
    """Each file's name without .nc; the whole path where two names are the same."""
    stems = [p.stem for p in paths]
    return [s if stems.count(s) == 1 else str(p) for s, p in zip(stems, paths, strict=True)]


@app.command("compare")
def compare_command(
    posteriors: list[Path] = typer.Argument(..., help="Two or more posterior files "
                                            "written by `fit`, of the same run table."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write here, not stdout."),
) -> None:
    """Rank laws or specs fitted to the same rows by PSIS-LOO.

    Computes each posterior's pointwise log-likelihood from its draws,
    then PSIS-LOO with ArviZ. One row per posterior, best first: elpd_loo,
    p_loo, elpd_diff to the best and its standard error dse, the stacking
    weight, and the Pareto-k checks: pareto_k_max and n_bad_k, the rows
    whose LOO estimate is unreliable (warning is then True). A difference
    of a few dse or less is no evidence either way.

    Example:

        bayes-transfer compare gap.nc gap-size.nc effective-data.nc --format csv
    """
    from bayes_transfer.comparison import compare
    from bayes_transfer.inference import Posterior

    if len(posteriors) < 2:
        raise fail("compare needs at least two posterior files")
    names = _names(posteriors)
    with user_errors():
        posts = {name: Posterior.load(path) for name, path in zip(names, posteriors,
                                                                   strict=True)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            table = compare(posts)
        df = table.reset_index()
        notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        err = console(stderr=True, soft_wrap=True)
        for note in notes:
            err.print(Text.assemble(("warning:", "bold yellow"), " ", note))
        emit(df, fmt, title="PSIS-LOO comparison, best first (elpd: higher is better)",
             extra={"posteriors": {n: str(p) for n, p in zip(names, posteriors,
                                                               strict=True)},
                    "ic": "loo", "scale": "log", "warnings": notes}, out=out)
