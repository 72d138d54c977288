"""``bayes-transfer suggest`` and ``loop`` (choose and run the next experiments), and the
compute-optimal frontier that ``bayes-transfer advise`` prints for the chinchilla law."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from bayes_transfer.cli import _checks as checks
from bayes_transfer.cli._app import (
    Format,
    answer_warnings,
    app,
    console,
    fail,
    load_posterior,
    table,
    user_errors,
)

_CRITERIA = ("variance", "information")

#: What ``suggest`` and ``plot acquisition`` say of a law without a per-pair gap.
NO_GAP = ("law {law} has no per-pair gap to narrow: give --at RUNS.csv, the runs whose "
          "predicted loss to narrow (e.g. the scale you will train at)")


def rows_to_narrow(at: Path):
    """The runs of ``--at`` whose predicted loss the acquisition narrows, checked, with
    rows numbered as in the file (for its errors)."""
    import pandas as pd

    from bayes_transfer.data import query_rows, read_table

    rows = read_table(at)
    rows.index = pd.RangeIndex(1, len(rows) + 1)
    return query_rows(rows, at.name)


@app.command("suggest")
def suggest_command(
    posterior: Path = typer.Argument(..., help="Posterior file written by `bayes-transfer fit`."),
    candidates: Path = typer.Option(..., "--candidates", "-c",
                                    help="Candidates TOML ([candidates] sources, targets, "
                                         "params, pretrain_tokens, finetune_tokens)."),
    batch: int = typer.Option(8, "--batch", "-b", min=1, help="Most runs to suggest."),
    budget: float | None = typer.Option(None, "--budget",
                                        help="Most total cost of the batch (FLOPs, e.g. 1e18)."),
    criterion: str = typer.Option("variance", "--criterion",
                                  help="variance (expected variance reduction) or "
                                       "information (mutual information)."),
    pair: list[str] = typer.Option([], "--pair",
                                   help="Only narrow these pairs' gaps (repeat; 'src->tgt'); "
                                        "default: every pair."),
    at: Path | None = typer.Option(
        None, "--at", help="CSV of runs (source, target, params, pretrain_tokens, "
                           "finetune_tokens) whose predicted loss to narrow instead of the "
                           "gaps, e.g. the scale you will train at; needed for a law "
                           "without a per-pair gap (chinchilla, finetune-curves)."),
    cost: str = typer.Option("flops", "--cost", help="flops (6 N (p + f)) or tokens (p + f)."),
    goal_width: float | None = typer.Option(
        None, "--goal-width", help="Aim at this 90% interval width of each log gap (or log "
                                   "loss, with --at): pick the cheapest run expected to get "
                                   "one there, instead of the most narrowing per FLOP."),
    max_draws: int | None = typer.Option(None, "--max-draws", min=10,
                                         help="Use at most this many posterior draws."),
    fmt: str = typer.Option("table", "--format", help="table or csv (to stdout)."),
) -> None:
    """Suggest the next runs: the most expected narrowing of the log gaps per FLOP.

    Runs are chosen greedily: each pick accounts for what the runs before it will teach
    and for the checkpoints they leave (a shared pre-training is paid once). Candidates
    already in the posterior's run table are left out. For a law without a model-size
    term the candidates are held at one N (the one nearest the largest fitted), and
    suggestions beyond the fitted range of N, p or f are counted in one warning on stderr.
    With --at, the quantity is the predicted log loss at those runs; under a spec with
    a discrepancy, a candidate also counts for how far it moves the fitted range toward
    them (the drift beyond the range shrinks). With --goal-width the runs are chosen to
    reach that width: the cheapest run expected to bring a gap (or loss) there, else the
    cheapest of those that narrow it nearly the most; fewer than --batch runs when every
    one is expected to be there. Gain per FLOP would climb a ladder of cheap runs that
    each narrow a little, and pay for every rung.

    Example:

        bayes-transfer suggest post.nc --candidates models/candidates-example.toml --batch 8 --budget 1e17

        bayes-transfer suggest chinchilla.nc --candidates cands.toml --at target_scale.csv

        bayes-transfer suggest post.nc --candidates cands.toml --goal-width 0.2
    """
    from bayes_transfer.design import candidates_from_spec, suggest

    checks.input_file(candidates, "candidates file", "--candidates")
    if at is not None:
        checks.input_file(at, "table of runs to narrow", "--at")
        if pair:
            raise fail("give --pair (gaps to narrow) or --at (losses to narrow), not both")
    checks.positive(budget, "--budget")
    checks.positive(goal_width, "--goal-width")
    if criterion not in _CRITERIA:
        raise fail(f"--criterion must be one of {', '.join(_CRITERIA)}, not {criterion!r}")
    if cost not in ("flops", "tokens"):
        raise fail(f"--cost must be flops or tokens, not {cost!r}")
    if fmt not in ("table", "csv"):
        raise fail(f"--format must be table or csv, not {fmt!r}")
    with answer_warnings(), user_errors():
        post = load_posterior(posterior)
        cands = candidates_from_spec(candidates, runs=post.runs)
        quantity = list(pair) or "gaps"
        if at is not None:
            quantity = rows_to_narrow(at)
        elif post.spec.gap is None:
            raise fail(NO_GAP.format(law=post.spec.law))
        chosen = suggest(post, cands, batch=batch, budget=budget, criterion=criterion,
                         quantity=quantity, cost=cost, max_draws=max_draws,
                         goal_width=goal_width)
    if fmt == "csv":
        chosen.to_csv(sys.stdout, index=False)
        return
    if goal_width is not None and len(chosen) == 0:
        console().print(f"nothing to run: every 90% interval is already expected within "
                        f"--goal-width {goal_width:g}")
        return
    unit = "FLOPs" if cost == "flops" else "tokens"
    rule = (f"toward a 90% width of {goal_width:g}" if goal_width is not None
            else f"{criterion} criterion")
    grid = table(f"next runs ({rule}, {len(chosen)} of {batch}; "
                        f"total {chosen['cost'].sum():.3g} {unit})", title_justify="left")
    # Under the goal rule, the widest 90% interval expected after each pick says how near
    # the goal the batch gets (and whether it can).
    last = "widest 90% left" if goal_width is not None else f"gain/{unit[:-1]}"
    for col in ("#", "source", "target", "params", "p", "f", f"cost ({unit})", "reuses ckpt",
                "expected gain", last, "reason"):
        grid.add_column(col, overflow="fold")
    for r in chosen.itertuples(index=False):
        grid.add_row(str(r.rank), str(r.source), str(r.target), f"{r.params:.3g}",
                      f"{r.pretrain_tokens:.3g}", f"{r.finetune_tokens:.3g}", f"{r.cost:.3g}",
                      "yes" if r.pretrained else "", f"{r.expected_gain:.3g}",
                      f"{r.widest_left:.3g}" if goal_width is not None else _per_cost(r),
                      r.reason)
    console().print(grid)


def _per_cost(pick: Any) -> str:
    """A pick's gain per unit of cost, or "free" for one that costs nothing (a zero-shot
    evaluation of a checkpoint the batch already trains), whose ratio is the gain over
    the 1-unit floor that keeps the ranking finite, not a rate."""
    return "free" if pick.cost <= 0 else f"{pick.gain_per_cost:.3g}"


@app.command("loop")
def loop_command(
    grid: Path = typer.Argument(..., help="Trainer grid TOML: its sources, targets, shapes, "
                                          "p and f are the candidate runs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (resumable state)."),
    rounds: int = typer.Option(3, "--rounds", "-r", min=0, help="Rounds after round 0."),
    batch: int = typer.Option(4, "--batch", "-b", min=1, help="Runs per round."),
    budget: float | None = typer.Option(None, "--budget", help="Most total training FLOPs."),
    target_width: float | None = typer.Option(
        None, "--target-width", help="Stop when the mean 90% width of the log gaps is below."),
    goal_width: float | None = typer.Option(
        None, "--goal-width", help="Choose each batch to bring every log gap's 90% interval "
                                   "within this width (the cheapest runs expected to get "
                                   "there), and stop once all are."),
    spec: str | None = typer.Option(None, "--spec", help="Model spec (default: transfer-gap, "
                                                         "or transfer-gap-size if the grid "
                                                         "has several shapes)."),
    criterion: str = typer.Option("variance", "--criterion", help="variance or information."),
    chains: int = typer.Option(2, "--chains", min=1),
    draws: int = typer.Option(300, "--draws", min=10),
    warmup: int = typer.Option(300, "--warmup", min=10),
    executor: str = typer.Option("serial", "--executor", help="Trainer executor: serial, "
                                                              "local or ray."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the sampler."),
    retries: int = typer.Option(
        2, "--retries", min=0,
        help="Longer refits (2x, 4x, ... the warmup and draws) of a round's fit that "
             "fails its diagnostics, before the loop stops (0: none)."),
    allow_unconverged: bool = typer.Option(
        False, "--allow-unconverged",
        help="Choose runs even from a fit that fails its diagnostics after sampling "
             "longer (default: stop and say which parameters failed)."),
) -> None:
    """Run the closed loop with the bundled trainer: fit, suggest, train, append, refit.

    Round 0 trains a small initial design (the cheapest corner runs covering every source
    and target); each later round trains the suggested batch. Each round is logged, and
    the state in --out (runs.csv, rounds/, posteriors/) makes a killed loop resume
    where it stopped. A fit that fails its diagnostics is refitted 2x and 4x longer
    (--retries); if it still fails, the loop stops (exit status 1) and says which
    parameters failed, instead of choosing runs from it. With --goal-width each batch is
    the cheapest runs expected to bring the gaps' intervals within that width, not the
    most narrowing per FLOP, and the loop stops once every gap's interval is within it.

    Example:

        bayes-transfer loop data/transfer_grid.toml --rounds 3 --batch 4 --out loop-out

        bayes-transfer loop data/transfer_grid.toml --rounds 5 --goal-width 1.0 --out loop-out
    """
    from bayes_transfer.trainer.executors import EXECUTORS

    # Everything is checked before round 0 trains anything.
    checks.input_file(grid, "grid spec")
    checks.output_dir(out, inputs=[grid])
    checks.positive(budget, "--budget")
    checks.positive(target_width, "--target-width")
    checks.positive(goal_width, "--goal-width")
    checks.seed(seed)
    if criterion not in _CRITERIA:
        raise fail(f"--criterion must be one of {', '.join(_CRITERIA)}, not {criterion!r}")
    if executor not in EXECUTORS:
        raise fail(f"--executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    # The rounds' fits, suggestions and refits warn about their answers (extrapolation, a
    # held model size): each is printed once on stderr, as predict and suggest do.
    with answer_warnings(), user_errors():
        from bayes_transfer import loop
        from bayes_transfer.trainer import load_grid

        spec_grid = load_grid(grid)
        result = loop.loop_grid(spec_grid, out, spec=spec, executor=executor, rounds=rounds,
                                batch=batch, budget=budget, target_width=target_width,
                                goal_width=goal_width, criterion=criterion, console=console(),
                                allow_unconverged=allow_unconverged, retries=retries,
                                fit_kwargs={"chains": chains, "draws": draws,
                                            "warmup": warmup, "seed": seed})
    if result.stopped == "unconverged":
        # The message (which parameters failed, what to do) is printed by the loop.
        raise fail(f"stopped: a fit did not converge; finished runs and state in {out}",
                   "not converged")
    if not result.rounds:
        console().print(f"stopped ({result.stopped}) before round 0; state in {out}")
        return
    last = result.rounds[-1]
    console().print(f"stopped ({result.stopped}) after round {last['round']}: "
                    f"{len(result.runs)} rows, {last['cumulative_cost']:.3g} FLOPs, "
                    f"mean 90% log-gap width {last['mean_width']:.3f}; state in {out}")


def show_frontier(post, *, compute: str | None, compute_range: str | None, points: int,
                  budget: float | None, unit: str, source: str | None, target: str | None,
                  ci: float, fmt: Format) -> None:
    """``bayes-transfer advise`` for a law with a compute frontier: print the frontier.

    The budgets are ``--compute``'s list, ``--compute-range``'s log-spaced points and
    ``--budget``, together; none of them: :func:`bayes_transfer.advise.default_compute`.

    Example:

        bayes-transfer advise chinchilla.nc --compute-range 1e20,1e24 --points 5
    """
    import numpy as np

    from bayes_transfer.advise import MAX_FLOPS, compute_frontier
    from bayes_transfer.cli._output import emit
    from bayes_transfer.data import pair_label

    if unit != "flops":
        raise fail("the compute frontier trades N against D at fixed FLOPs: --unit tokens "
                   "does not apply; give --compute in FLOPs")
    budgets: list[float] = []
    if compute is not None:
        budgets += checks.numbers(compute, "--compute", strict=True, maximum=MAX_FLOPS)
    if compute_range is not None:
        ends = checks.numbers(compute_range, "--compute-range", strict=True,
                              maximum=MAX_FLOPS)
        if len(ends) != 2 or not ends[0] < ends[1]:
            raise fail(f"--compute-range: give LOW,HIGH with LOW < HIGH, not {compute_range!r}")
        budgets += np.geomspace(ends[0], ends[1], points).tolist()
    if budget is not None:
        budgets.append(checks.positive(budget, "--budget", maximum=MAX_FLOPS))
    with answer_warnings(), user_errors():
        front = compute_frontier(post, budgets or None, ci=ci, source=source, target=target)
    df = front.table
    where = "raw units: N in parameters, D in tokens, C in FLOPs (C = 6 N D)"
    if fmt is not Format.table:
        emit(df, fmt, title="compute-optimal frontier",
             extra={"law": front.law, "ci": ci, "units": "raw", "units_note": where,
                    "exponents": json.loads(front.exponents.to_json(orient="records")),
                    "notes": list(front.notes)})
        return
    shared = df["source"].eq("*").all()
    grid = table(f"compute-optimal frontier of {front.law}: medians and {ci:.0%} intervals, "
                 f"{where}", title_justify="left")
    cols = ([] if shared else ["source", "target"]) + [
        "C (FLOPs)", "N_opt", f"N {ci:.0%} CI", "D_opt", f"D {ci:.0%} CI", "tokens/param",
        "loss", f"loss {ci:.0%} CI"]
    for col in cols:
        grid.add_column(col, justify="left" if col in ("source", "target") else "right",
                        no_wrap=True)
    for r in df.itertuples(index=False):
        cells = [] if shared else [str(r.source), str(r.target)]
        grid.add_row(*cells, f"{r.compute:.3g}", f"{r.params_median:.3g}",
                     f"{r.params_lower:.3g}-{r.params_upper:.3g}", f"{r.tokens_median:.3g}",
                     f"{r.tokens_lower:.3g}-{r.tokens_upper:.3g}",
                     f"{r.tokens_per_param_median:.3g}", f"{r.loss_median:.4g}",
                     f"{r.loss_lower:.4g}-{r.loss_upper:.4g}")
    out = console()
    out.print(grid)
    for e in front.exponents.itertuples(index=False):
        who = "" if shared else f"{pair_label(str(e.source), str(e.target))}: "
        out.print(f"{who}N_opt ~ C^{e.a_median:.3f} [{e.a_lower:.3f}, {e.a_upper:.3f}], "
                  f"D_opt ~ C^{e.b_median:.3f} [{e.b_lower:.3f}, {e.b_upper:.3f}]")
    for note in front.notes:
        out.print(Text.assemble(("note:", "yellow"), f" {note}"))
