"""``bayes-transfer select``: which pre-trained model to fine-tune, from small runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bayes_transfer.cli import _checks as checks
from bayes_transfer.cli._app import Format, app, console, fail, table, user_errors
from bayes_transfer.cli._output import emit

if TYPE_CHECKING:
    from bayes_transfer.selection import Selection


def parse_budget(text: str | None, flag: str = "--budget") -> float | None:
    """``"1/64"`` or ``"0.015625"`` as a fraction strictly between 0 and 1 (None passes)."""
    if text is None:
        return None
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise fail(f"{flag}: expected a fraction such as 1/64 or 0.015625, got {text!r}"
                   ) from None
    if not (math.isfinite(value) and 0 < value < 1):
        raise fail(f"{flag} must be a fraction of --at between 0 and 1 (e.g. 1/64), "
                   f"not {text}")
    return value


@app.command("select")
def select_command(
    runs: Path = typer.Argument(..., help="Run table (.csv or .parquet): one source per "
                                "candidate model, fine-tuning curves on the target."),
    spec: str = typer.Option("finetune-curves", "--spec", "-s",
                             help="Model spec: a TOML path or a bundled name."),
    target: str | None = typer.Option(None, help="The fine-tuning target (needed when the "
                                      "table has several)."),
    at: float | None = typer.Option(None, help="Fine-tuning size to predict, in the table's "
                                    "finetune_tokens (default: the largest)."),
    budget: str | None = typer.Option(None, help="Fit only rows with finetune_tokens <= "
                                      "BUDGET x AT (1/64 or 0.015625); default: every row "
                                      "below AT."),
    ci: float = typer.Option(0.9, help="Credible-interval mass."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the table here (.csv "
                                    "or .json) instead of printing it."),
    chains: int = typer.Option(2, min=1, help="NUTS chains."),
    draws: int = typer.Option(500, min=1, help="Kept draws per chain."),
    warmup: int = typer.Option(500, min=1, help="Warmup steps per chain."),
    seed: int = typer.Option(0, help="Random seed (fit and predictions)."),
    plot: Path | None = typer.Option(None, "--plot", help="Also draw each model's predicted "
                                     "loss with its interval, best first, and the actual "
                                     "loss where known (.png, .pdf, .svg)."),
    force: bool = typer.Option(False, help="Replace --out and --plot if they exist."),
) -> None:
    """Predict each model's loss at the full fine-tuning size, rank the models, and give
    the probability that each is the best (Lin et al. 2024's model selection).

    One row per model (source): the predicted loss at AT (median and interval), its rank
    by median, p_best (the fraction of joint posterior draws in which it has the lowest
    loss) and the actual loss when the table has it. With the actual losses, also the
    Pearson correlation (%), RelAcc (%) of the model with the highest p_best, and the
    coverage of the intervals.

    --format json prints {"target", "at", "budget", "ci", "rows_fit", "models", "chosen",
    "chosen_p_best", "best_actual", "pearson", "relacc", "coverage", "above", "below",
    "median_error", "models_left_out",
    "diagnostics_ok", "rows": [{"rank", "source", "target", "params", "loss_median",
    "loss_lower", "loss_upper", "p_best", "loss_actual", "rows_fit"}, ...]} (null where
    unknown).

    Example:

        bayes-transfer select flan-runs.csv --spec finetune-curves --budget 1/64 --format json
        bayes-transfer select flan-runs.csv --budget 1/8 --plot select.png
    """
    checks.input_file(runs, "run table")
    checks.ci(ci)
    checks.seed(seed)
    checks.positive(at, "--at", maximum=checks.MAX_COUNT)
    fraction = parse_budget(budget)
    if out is not None:
        checks.output_file(out, inputs=[runs, spec], force=force, suffixes=(".csv", ".json"))
    if plot is not None:
        from bayes_transfer.cli.plots import IMAGE_SUFFIXES

        checks.output_file(plot, inputs=[runs, spec, out], force=force, flag="--plot",
                           suffixes=IMAGE_SUFFIXES)
    with user_errors():
        from bayes_transfer.selection import select_model
        from bayes_transfer.spec import load_spec

        spec_obj = load_spec(spec)  # a bad spec fails now, not after loading JAX
        sel = select_model(runs, spec_obj, target=target, at=at, budget=fraction, ci=ci,
                           chains=chains, draws=draws, warmup=warmup, seed=seed)
        emit(sel.table, fmt, extra=sel.summary, out=out, noun="models",
             show=lambda: _print_table(sel))
        if plot is not None:
            from bayes_transfer.plots import plot_selection, save_figure

            save_figure(plot_selection(sel.table, sel.summary), plot)
    err = console(stderr=True, soft_wrap=True)
    if sel.summary["models_left_out"]:
        err.print("left out (no row within the budget): "
                  + ", ".join(sel.summary["models_left_out"]), style="yellow")
    if sel.summary["beyond_calibration"]:
        err.print(f"warning: {sel.summary['beyond_calibration']}", style="yellow")
    if not sel.summary["diagnostics_ok"]:
        err.print("warning: the fit failed its diagnostics (R-hat, ESS, divergences or "
                  "E-BFMI); run more draws before trusting p_best", style="bold yellow")


def _print_table(sel: Selection) -> None:
    import numpy as np
    s = sel.summary
    budget = "every row below" if s["budget"] is None else f"{s['budget']:.4g} x"
    title = (f"model selection on {s['target']}: loss at finetune_tokens = {s['at']:g} "
             f"({s['ci']:.0%} intervals), fit {s['rows_fit']} rows ({budget} it)")
    grid = table(title, title_justify="left")
    cols = ["rank", "source", "loss_median", "loss_lower", "loss_upper", "p_best",
            "loss_actual"]
    for c in cols:
        grid.add_column(c, justify="left" if c == "source" else "right")
    for row in sel.table[cols].itertuples(index=False):
        cells = []
        for c, v in zip(cols, row, strict=True):
            if c == "p_best":
                cells.append(f"{v:.3f}")
            elif isinstance(v, (float, np.floating)):
                cells.append("-" if not np.isfinite(v) else f"{v:.4g}")
            else:
                cells.append(str(v))
        grid.add_row(*cells)
    con = console()
    con.print(grid)
    con.print(f"chosen (highest p_best): {s['chosen']} (p_best {s['chosen_p_best']:.3f})")
    if s["best_actual"] is not None:
        def pct(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}%"

        cov = "-" if s["coverage"] is None else (
            f"{s['coverage']:.2f} (misses above {s['above']:.2f}, below {s['below']:.2f}; "
            f"median error {s['median_error']:+.3g})")
        con.print(f"actual best: {s['best_actual']}; Pearson {pct(s['pearson'])}, "
                  f"RelAcc {pct(s['relacc'])}, coverage of the {s['ci']:.0%} intervals {cov}")
