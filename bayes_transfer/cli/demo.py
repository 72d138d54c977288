"""``bayes-transfer demo``: the whole loop on the bundled run table, in a few minutes.

Fit -> diagnostics -> gap credible intervals -> plots -> allocation advice -> the next
runs to train. This is what ``make demo`` (the README's first command) runs.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from bayes_transfer.cli import _checks as checks
from bayes_transfer.cli._app import (
    PROGRESS_HELP,
    answer_warnings,
    app,
    show_progress,
    user_errors,
)
from bayes_transfer.cli._app import console as make_console
from bayes_transfer.cli._app import table as titled_table

# NUTS settings: the full demo keeps R-hat and ESS checks meaningful (4 chains); --quick
# is a smoke run for tests and first looks (intervals are rougher, diagnostics may warn).
# The target acceptance is the spec's own ([sampler]; 0.95 for transfer-gap-size).
SETTINGS = {
    False: {"chains": 4, "draws": 1000, "warmup": 500},
    True: {"chains": 2, "draws": 150, "warmup": 150},
}
PLOTS = (("losses_p", "losses", "p"), ("losses_f", "losses", "f"), ("forest", "forest", None),
         ("heatmap", "heatmap", None), ("prior", "prior", None))


def demo_table(runs: Path | None = None):
    """The demo's run table: the fine-tuned rows of ``runs`` (default: the bundled table).

    The transfer-gap laws explain fine-tuned rows only; keeping just those (and so just
    the sources that were fine-tuned from) keeps the pair grid to real transfer pairs.
    """
    from bayes_transfer.bundled import runs_path
    from bayes_transfer.data import load_runs

    table = load_runs(runs if runs is not None else runs_path())
    df = table.df
    df = df[(df["pretrain_tokens"] > 0) & (df["finetune_tokens"] > 0)].copy()
    for col in ("source", "target"):
        df[col] = df[col].astype(str)
    return load_runs(df, name=table.name)


def gap_rich_table(gaps, ci: float) -> Table:
    """The gap credible-interval table (from ``Posterior.gap_table``) as a rich Table."""
    table = titled_table(f"transfer gap per pair: median and {ci:.0%} credible interval "
                        "(pred. = no runs, predicted from source and target effects)")
    for col in ("source", "target", "median", f"{ci:.0%} CI", "R-hat", "ESS", ""):
        table.add_column(col, justify="left" if col in ("source", "target", "") else "right")
    for _, r in gaps.sort_values("median").iterrows():
        table.add_row(str(r["source"]), str(r["target"]), f"{r['median']:.3g}",
                      f"{r['lower']:.3g}-{r['upper']:.3g}", f"{r['r_hat']:.3f}",
                      f"{r['ess_bulk']:.0f}", "" if r["observed"] else "pred.")
    return table


def _suggestions_table(batch) -> Table:
    from bayes_transfer.data import pair_label

    table = titled_table("next runs to train, chosen greedily by expected gain per FLOP")
    for col in ("#", "pair", "N", "p", "f", "FLOPs", "gap var. left"):
        table.add_column(col, justify="left" if col == "pair" else "right", no_wrap=True)
    for _, r in batch.iterrows():
        table.add_row(str(r["rank"]), pair_label(str(r["source"]), str(r["target"])),
                      f"{r['params']:.2g}",
                      f"{r['pretrain_tokens']:.2g}", f"{r['finetune_tokens']:.2g}",
                      f"{r['cost']:.2g}", f"{r['uncertainty_left']:.0%}")
    return table


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-output"), "--out", "-o",
                             help="Folder for the plots, posterior and suggestions."),
    quick: bool = typer.Option(False, "--quick", help="Short chains (2 x 150 draws): a "
                               "smoke run in about a minute; intervals are rougher."),
    runs: Path | None = typer.Option(None, help="Run table to use instead of the bundled "
                                     "data/transfer_runs.csv."),
    spec: str = typer.Option("transfer-gap-size", help="Model spec (bundled name or TOML)."),
    batch: int = typer.Option(4, help="How many next runs to suggest."),
    seed: int = typer.Option(0, help="Random seed of the sampler."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress",
                                         help=PROGRESS_HELP, show_default=False),
) -> None:
    """Fit the bundled run table and show the gaps, plots and next runs.

    Loads the bundled table (fine-tuned rows), fits the hierarchical
    transfer-gap posterior with NUTS, prints the diagnostics and every
    pair's gap with its credible interval, writes the plots (PNG) and the
    posterior into --out, advises how to spend a budget on one target,
    and suggests the next runs to train. About 3 minutes of CPU time
    (--quick: about 1.5).

    Example:

        bayes-transfer demo --out demo-output
    """
    from bayes_transfer import plots
    from bayes_transfer.advise import advise
    from bayes_transfer.cli.plots import advice_table, make_figure
    from bayes_transfer.diagnostics import SamplingWarning
    from bayes_transfer.inference import fit

    checks.input_file(runs, "run table", "--runs")
    checks.output_dir(out, inputs=[runs])
    checks.positive(batch, "--batch", integer=True, maximum=1000)
    checks.seed(seed)
    with user_errors():  # the spec and the table are checked before anything is written
        from bayes_transfer.spec import load_spec

        load_spec(spec)
        table = demo_table(runs)
    console = make_console()
    start = time.perf_counter()
    settings = SETTINGS[quick]
    if (out / "posterior.nc").exists():
        console.print(f"replacing the previous demo output in {out}/")
    with user_errors():
        out.mkdir(parents=True, exist_ok=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    # A failed write (full disk) ends the progress display, then prints one line.
    # The advice and suggestions go beyond the table (a step up): said once on stderr.
    with answer_warnings(), user_errors(), Progress(
            *columns, console=console, transient=False,
            disable=not show_progress(progress, stderr=False)) as bar:
        steps = bar.add_task("loading the run table", total=4 + len(PLOTS))
        console.print(Text.assemble("run table ", (table.name, "bold"), f": {len(table)} "
                                    f"fine-tuned rows, {len(table.sources)} sources x "
                                    f"{len(table.targets)} targets, "
                                    f"{int(table.observed_pairs.sum())} pairs observed"))
        bar.update(steps, advance=1, description=(
            f"fitting {spec} with NUTS ({settings['chains']} chains x "
            f"{settings['warmup']}+{settings['draws']})"))
        with warnings.catch_warnings(record=True):
            # Failures are printed below with the diagnostics, not as warnings.
            warnings.simplefilter("always", SamplingWarning)
            post = fit(table, spec, seed=seed, progress=False, **settings)
        post.save(out / "posterior.nc")
        bar.update(steps, advance=1, description="drawing the plots")
        for name, kind, against in PLOTS:
            fig = make_figure(post, kind, against=against)
            plots.save_figure(fig, out / f"{name}.png")
            bar.update(steps, advance=1)
        bar.update(steps, description="scoring candidate runs")
        suggestions = _suggest(post, batch, out)
        bar.update(steps, advance=1, description="advising a budget")
        target = table.targets[0]
        budget = _demo_budget(table)
        adv = advise(post, target, budget)
        bar.update(steps, advance=1, description="done")

    style = "green" if post.diagnostics.ok else "bold yellow"
    console.print(str(post.diagnostics), style=style)
    if quick and not post.diagnostics.ok:
        console.print("(--quick uses short chains; run without --quick for reliable "
                      "intervals)")
    console.print(gap_rich_table(post.gap_table(ci=0.9), ci=0.9))
    console.print(advice_table(adv, top=5))
    for note in adv.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(Text.assemble((f"advice for {target} at {budget:.2g} FLOPs:", "bold"),
                                f" {adv.message}"))
    console.print(_suggestions_table(suggestions))
    console.print(f"wrote {', '.join(n + '.png' for n, *_ in PLOTS)}, acquisition.png, "
                  f"suggestions.csv and posterior.nc to {out}/", highlight=False)
    console.print(f"demo finished in {time.perf_counter() - start:.0f} s. Next: "
                  f"bayes-transfer plot {out}/posterior.nc heatmap --out heatmap.png; "
                  f"bayes-transfer advise {out}/posterior.nc --target {target} "
                  f"--budget {budget:.2g}", highlight=False)


def _demo_budget(table) -> float:
    # Ten times the compute of the biggest run in the table: a next step up.
    from bayes_transfer.advise import run_cost

    return float(10 * run_cost(table.df).max())


def _suggest(post, batch: int, out: Path):
    """Score the default candidates, plot them, and pick the next batch."""
    from bayes_transfer import design, plots
    from bayes_transfer._io import atomic_path
    from bayes_transfer.cli.plots import default_candidates

    candidates = default_candidates(post)
    scores = design.score_candidates(post, candidates)
    plots.save_figure(plots.plot_acquisition(scores), out / "acquisition.png")
    chosen = design.suggest(post, candidates, batch=batch)
    with atomic_path(out / "suggestions.csv") as tmp:
        chosen.to_csv(tmp, index=False)
    return chosen
