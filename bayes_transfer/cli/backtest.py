"""``bayes-transfer backtest``: check a spec's intervals on the user's own runs."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer

from bayes_transfer.cli import _checks as checks
from bayes_transfer.cli._app import Format, answer_warnings, app, console, table, user_errors


class Split(StrEnum):
    params = "params"
    pretrain_tokens = "pretrain_tokens"
    finetune_tokens = "finetune_tokens"


@app.command("backtest")
def backtest_command(
    runs: Path = typer.Argument(..., help="Run table (.csv or .parquet)."),
    spec: str = typer.Option(..., "--spec", "-s",
                             help="Model spec: a TOML path or a bundled name."),
    split: Split = typer.Option(..., help="Column to split on."),
    at: float = typer.Option(..., help="Fit rows with SPLIT <= AT, predict the others."),
    leave_pairs_out: int = typer.Option(0, min=0, help="Also leave this many (source, "
                                        "target) pairs out entirely and predict them."),
    fold: int | None = typer.Option(None, min=0, help="With --leave-pairs-out: leave out "
                                    "this fold (from 0) of a seeded partition of the pairs "
                                    "into groups of that many, instead of a random draw; "
                                    "run every fold to leave each pair out once."),
    predict_at: float | None = typer.Option(None, help="Predict only the rows at SPLIT == "
                                            "this value (e.g. the largest size)."),
    predictions: Path | None = typer.Option(None, help="Write every held-out row's "
                                            "predictions here (.csv)."),
    plot: Path | None = typer.Option(None, help="Write the calibration plot (PIT and "
                                     "coverage) here (.png, .pdf or .svg)."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    baseline: bool = typer.Option(True, help="Also score the per-pair L-BFGS + bootstrap "
                                  "baseline on the same split."),
    bootstrap: int = typer.Option(100, min=1, help="Bootstrap replicates of the baseline."),
    chains: int = typer.Option(2, min=1, help="NUTS chains."),
    draws: int = typer.Option(500, min=1, help="Kept draws per chain."),
    warmup: int = typer.Option(500, min=1, help="Warmup steps per chain."),
    seed: int = typer.Option(0, help="Random seed (fit, pairs left out, predictions)."),
    force: bool = typer.Option(False, help="Replace existing --predictions / --plot files."),
) -> None:
    """Fit below a split, predict above it, and score the intervals against the truth.

    Prints the coverage of the 50/80/90/95% predictive intervals of held-out losses and
    the median and mean absolute errors, for the model and for the point-fit baseline.
    With --leave-pairs-out, the never-run pairs are scored apart.

    Example:

        bayes-transfer backtest runs.csv --spec chinchilla-pairs --split params --at 1e9 --format json

        bayes-transfer backtest runs.csv --spec transfer-gap-size --split finetune_tokens --at 12288 --leave-pairs-out 3 --fold 0
    """
    checks.input_file(runs, "run table")
    checks.seed(seed)
    if predictions is not None:
        checks.output_file(predictions, inputs=[runs], force=force, flag="--predictions",
                           suffixes=(".csv",))
    if plot is not None:
        checks.output_file(plot, inputs=[runs, predictions], force=force, flag="--plot",
                           suffixes=(".png", ".pdf", ".svg"))
    with answer_warnings(), user_errors():
        from bayes_transfer._io import atomic_path
        from bayes_transfer.backtest import backtest
        from bayes_transfer.spec import load_spec

        spec_obj = load_spec(spec)
        result = backtest(runs, spec_obj, split=split.value, at=at,
                          leave_pairs_out=leave_pairs_out, fold=fold, predict_at=predict_at,
                          baseline=baseline,
                          bootstrap=bootstrap, chains=chains, draws=draws, warmup=warmup,
                          seed=seed)
        if predictions is not None:
            with atomic_path(predictions, suffix=".csv") as tmp:
                result.predictions.to_csv(tmp, index=False)
        if plot is not None:
            from bayes_transfer.plots import plot_calibration, save_figure

            save_figure(plot_calibration(result.predictions), plot)
    _print(result.summary, fmt)


def _print(summary: dict, fmt: Format) -> None:
    if fmt is Format.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    levels = list(summary["model"]["coverage"])
    groups = [k for k in ("model", "observed", "never-run", "baseline") if k in summary]
    # Which side the misses of one interval fall on: the 0.9 one where it was scored.
    side = "0.9" if "0.9" in levels else levels[-1]
    header = ["method", *[f"cover {lv}" for lv in levels], f"above {side}", f"below {side}",
              "median err", "median |err|", "mean |err|"]
    rows = []
    for g in groups:
        s = summary[g]
        rows.append([g, *[_num(s["coverage"][lv]) for lv in levels],
                     _num(s["above"][side]), _num(s["below"][side]),
                     _num(s["median_error"]), _num(s["median_abs_error"]),
                     _num(s["mean_abs_error"])])
    if fmt is Format.csv:
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(header)
        w.writerows(rows)
        return
    split = summary["split"]
    title = (f"backtest: fit {summary['rows']['fit']} rows with {split['column']} <= "
             f"{split['at']:g}, predict {summary['rows']['predicted']} (nats per token)")
    grid = table(title, title_justify="left")
    for h in header:
        grid.add_column(h, justify="left" if h == "method" else "right")
    for r in rows:
        grid.add_row(*r)
    console().print(grid)
    if summary.get("pairs_left_out"):
        console().print("pairs left out: " + ", ".join(summary["pairs_left_out"]))
    if not summary.get("diagnostics_ok", True):
        console(stderr=True).print("warning: the fit below the split failed its diagnostics",
                                   style="bold yellow")


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"
