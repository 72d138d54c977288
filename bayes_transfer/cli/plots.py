"""``bayes-transfer plot``, ``ppc`` and ``advise``: pictures, predictive checks, advice."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from bayes_transfer.cli import _checks as checks
from bayes_transfer.cli._app import (
    Format,
    answer_warnings,
    app,
    console,
    fail,
    load_posterior,
    user_errors,
)
from bayes_transfer.cli._app import table as titled_table

#: The image formats ``plot --out`` writes (matplotlib's, by extension).
IMAGE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff",
                  ".webp")


class PlotKind(StrEnum):
    losses = "losses"
    forest = "forest"
    heatmap = "heatmap"
    prior = "prior"
    acquisition = "acquisition"
    ppc = "ppc"
    loo_pit = "loo-pit"
    all = "all"


class CheckKind(StrEnum):
    ppc = "ppc"
    loo_pit = "loo-pit"


class Against(StrEnum):
    p = "p"
    f = "f"


class Unit(StrEnum):
    flops = "flops"
    tokens = "tokens"


def _load(posterior: Path):
    with user_errors():
        return load_posterior(posterior)


def default_candidates(post, per_decade: int = 8):
    """Candidate runs from the posterior's own table: its observed pairs and sizes, and
    its pre-training and fine-tuning amounts plus one geometric step beyond the largest.

    The step up keeps the candidates new when the table already holds its whole grid (the
    bundled one does), and asks the question a user asks next: what do bigger runs teach?
    Sizes are thinned to at most ``per_decade`` a decade (the largest of each bin): a
    published table read off a figure (Epoch's Chinchilla extraction: 142 model sizes,
    73824672 beside 73824689) otherwise fills the plot's top bars with the same run.
    """
    import numpy as np
    import pandas as pd

    from bayes_transfer.design import candidate_grid

    df = post.runs.df

    def levels(values):
        v = np.unique(values[values > 0])
        if not len(v):  # never varied (a from-scratch table: no fine-tuning): as it is
            return np.unique(values)
        bins = np.round(np.log10(v) * per_decade)
        last = np.append(bins[1:] != bins[:-1], True)  # the largest value of each bin
        return v[last]

    def with_step(values):
        v = levels(values)
        if not (v > 0).any():
            return v.tolist()
        ratio = max(v[-1] / v[-2], 2.0) if len(v) > 1 else 4.0
        return [*v.tolist(), float(v[-1] * ratio)]

    pairs = [pair for pair, seen in zip(post.runs.pairs, post.runs.observed_pairs,
                                        strict=True) if seen]
    grids = [candidate_grid([s], [t], params=levels(df["params"].to_numpy()).tolist(),
                            pretrain_tokens=with_step(df["pretrain_tokens"].to_numpy()),
                            finetune_tokens=with_step(df["finetune_tokens"].to_numpy()))
             for s, t in pairs]
    return pd.concat(grids, ignore_index=True)


def make_figure(post, kind: str, *, ci: float = 0.9, against: str | None = None,
                candidates: Path | None = None, at: Path | None = None,
                pairs: Sequence[str] | None = None):
    """The figure of ``kind`` for ``post`` (shared by ``plot`` and ``demo``); ``at``: the
    runs whose predicted loss the acquisition narrows (default: the gaps); ``pairs``: the
    ``"source->target"`` panels of ``losses`` (default: the observed pairs with the most
    rows)."""
    from bayes_transfer import plots

    if kind == "losses":
        return plots.plot_losses(post, against, ci=ci, pairs=pairs or None)
    if kind == "forest":
        return plots.plot_gap_forest(post, ci=ci)
    if kind == "heatmap":
        return plots.plot_gap_heatmap(post, ci=ci)
    if kind == "prior":
        return plots.plot_prior_posterior(post)
    if kind == "acquisition":
        from bayes_transfer import design
        from bayes_transfer.cli.design import NO_GAP, rows_to_narrow

        if at is None and post.spec.gap is None:
            raise ValueError(NO_GAP.format(law=post.spec.law))
        cands = (design.candidates_from_spec(candidates, runs=post.runs)
                 if candidates is not None else default_candidates(post))
        quantity = rows_to_narrow(at) if at is not None else "gaps"
        return plots.plot_acquisition(design.score_candidates(
            post, cands, quantity=quantity, exclude_existing=True))
    if kind == "ppc":
        return plots.plot_ppc(post, ci=ci)
    if kind == "loo-pit":
        return plots.plot_loo_pit(post)
    raise ValueError(f"unknown plot kind {kind!r}; use one of {', '.join(plots.KINDS)}")


def draw_all(post, out_dir: Path, *, ci: float = 0.9, against: str | None = None,
             candidates: Path | None = None, at: Path | None = None,
             pairs: Sequence[str] | None = None) -> list[tuple[str, Path | None, str]]:
    """Draw every plot kind of ``post`` into ``out_dir/KIND.png`` in one process.

    A kind that does not apply to the posterior (forest and heatmap need a per-pair gap,
    acquisition a gap to narrow) is skipped, not a failure: its row is
    ``(kind, None, why)``; a drawn one is ``(kind, path, "")``.

    Example:
        >>> draw_all(post, Path("plots"))  # doctest: +SKIP
        [('losses', PosixPath('plots/losses.png'), ''), ...]
    """
    from bayes_transfer.plots import KINDS, save_figure

    done: list[tuple[str, Path | None, str]] = []
    for kind in KINDS:
        try:
            fig = make_figure(post, kind, ci=ci, against=against, candidates=candidates,
                              at=at, pairs=pairs)
        except ValueError as exc:  # the plot's own "does not apply" (or a bad candidate)
            done.append((kind, None, str(exc)))
            continue
        done.append((kind, save_figure(fig, out_dir / f"{kind}.png"), ""))
    return done


@app.command()
def plot(
    posterior: Path = typer.Argument(..., help="Posterior file written by `fit` (.nc)."),
    kind: PlotKind = typer.Argument(..., help="Which picture: losses (observed losses with "
                                    "predictive bands per pair), forest (gaps with "
                                    "intervals), heatmap (source x target gaps), prior "
                                    "(prior vs posterior), acquisition (value of candidate "
                                    "runs), ppc (posterior predictive check), loo-pit "
                                    "(LOO-PIT calibration), or all (each kind as "
                                    "--out-dir/KIND.png)."),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="Image to write (.png, .pdf, .svg)."),
    out_dir: Path | None = typer.Option(None, "--out-dir",
                                        help="all: folder for one PNG per kind."),
    ci: float = typer.Option(0.9, help="Credible-interval width."),
    against: Against | None = typer.Option(None, help="losses: x axis, pre-training (p) or "
                                           "fine-tuning (f) tokens; default p, or f when "
                                           "no fitted row has pre-training tokens."),
    candidates: Path | None = typer.Option(None, help="acquisition: candidate runs (TOML); "
                                           "default: the table's own values."),
    at: Path | None = typer.Option(None, "--at", help="acquisition: CSV of runs whose "
                                   "predicted loss to narrow (as `suggest --at`); default: "
                                   "the gaps."),
    pairs: list[str] | None = typer.Option(None, "--pair", help="losses: a pair to draw, "
                                           "as 'source->target' (repeat for several); "
                                           "default: the observed pairs with the most "
                                           "rows."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Draw one picture of a fitted posterior (or all of them) and write it atomically.

    Every image is 1000 x 650 pixels (10 x 6.5 inches at 100 dpi).
    Pairs with no runs are drawn hollow, grey or hatched and marked
    "pred.": their gaps are predicted from their source's and target's
    effects. `all` draws every kind in one process, as --out-dir/KIND.png;
    a kind that does not apply to the posterior is skipped with a note.

    Example:

        bayes-transfer plot posterior.nc heatmap --out heatmap.png
        bayes-transfer plot posterior.nc all --out-dir plots
        bayes-transfer plot posterior.nc losses --pair "web->code" --out losses.png
        bayes-transfer plot chinchilla.nc acquisition --at target_scale.csv --out acq.png
    """
    from bayes_transfer.plots import KINDS, save_figure

    checks.input_file(candidates, "candidates file", "--candidates")
    checks.input_file(at, "table of runs to narrow", "--at")
    if pairs and kind not in (PlotKind.losses, PlotKind.all):
        raise fail(f"--pair chooses the panels of losses (or of all), not of {kind.value}")
    if kind is PlotKind.all:
        if out is not None or out_dir is None:
            raise fail("plot all writes one PNG per kind: give --out-dir DIR, not --out")
        checks.output_dir(out_dir, inputs=[posterior, candidates, at], flag="--out-dir")
        # Every file is checked before any is drawn: nothing is written on a refusal.
        for name in KINDS:
            checks.output_file(out_dir / f"{name}.png", inputs=[posterior, candidates, at],
                               force=force, flag="--out-dir")
    else:
        if out is None or out_dir is not None:
            raise fail(f"plot {kind.value} writes one image: give --out FILE "
                       "(--out-dir is for `all`)")
        checks.output_file(out, inputs=[posterior, candidates, at], force=force,
                           suffixes=IMAGE_SUFFIXES)
    checks.ci(ci)
    post = _load(posterior)
    if pairs:
        # Checked before any plot is drawn: `all` would otherwise skip losses with a note
        # and write the other kinds, and an unknown pair is a mistake, not "does not apply".
        from bayes_transfer.plots import pair_keys

        with user_errors("--pair"):
            pair_keys(post.runs, pairs)
    if kind is PlotKind.all:
        with answer_warnings(), user_errors():
            out_dir.mkdir(parents=True, exist_ok=True)
            drawn = draw_all(post, out_dir, ci=ci, against=against and against.value,
                             candidates=candidates, at=at, pairs=pairs)
        con = console()
        for name, path, why in drawn:
            if path is None:
                con.print(Text.assemble(("skipped", "yellow"), f" {name}: {why}"))
            else:
                con.print(f"wrote {path}")
        return
    with answer_warnings(), user_errors():
        fig = make_figure(post, kind.value, ci=ci, against=against and against.value,
                          candidates=candidates, at=at, pairs=pairs)
        save_figure(fig, out)
    console().print(f"wrote {out}")


#: What each number of ``ppc``'s check says (its table's third column).
CHECK_MEANINGS = {
    "rows": "fitted rows checked",
    "ci": "interval mass",
    "coverage": "rows inside their posterior predictive interval (about ci if calibrated)",
    "loo_pit_coverage": "the same, leave-one-out (LOO-PIT inside the central ci)",
    "loo_pit_ks": "Kolmogorov-Smirnov distance of the LOO-PIT values from uniform",
    "loo_pit_ks_pvalue": "its p-value (small: miscalibrated)",
    "loo_pit_mean": "mean LOO-PIT (about 0.5; below: losses predicted too high)",
    "pareto_k_max": "largest PSIS Pareto k (above 0.7: LOO-PIT unreliable for that row)",
}


@app.command("ppc")
def ppc_command(
    posterior: Path = typer.Argument(..., help="Posterior file written by `fit` (.nc)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Image to write (.png, .pdf, "
                                    ".svg); without it only the check is printed."),
    kind: CheckKind = typer.Option(CheckKind.ppc, help="The picture: ppc (observed vs "
                                   "replicated log losses) or loo-pit (LOO-PIT "
                                   "calibration)."),
    ci: float = typer.Option(0.9, help="Interval mass of the coverage check."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format of the "
                               "check."),
    seed: int = typer.Option(0, help="Seed of the replicates, when the file has none."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Posterior predictive check of a fit: numbers, and a picture with --out.

    Replicates every fitted row's log loss from the posterior (the file's
    posterior_predictive group, computed from its draws when it has none)
    and prints: the fraction of rows inside their --ci predictive interval
    (coverage), the same with leave-one-out predictives (LOO-PIT), the
    LOO-PIT's distance from uniform (Kolmogorov-Smirnov, with p-value) and
    the largest Pareto k. With --out, draws the check (--kind ppc or
    loo-pit), as `plot POST ppc` and `plot POST loo-pit` do.

    Example:

        bayes-transfer ppc posterior.nc --out ppc.png --kind loo-pit --format json
    """
    import json
    import sys

    from bayes_transfer.cli._app import finite_json

    if out is not None:
        checks.output_file(out, inputs=[posterior], force=force, suffixes=IMAGE_SUFFIXES)
    checks.ci(ci)
    checks.seed(seed)
    post = _load(posterior)
    with answer_warnings(), user_errors():
        from bayes_transfer.plots import save_figure
        from bayes_transfer.predictive import ppc_check

        check = ppc_check(post, ci=ci, seed=seed)
        if out is not None:
            fig = make_figure(post, kind.value, ci=ci)
            save_figure(fig, out)
    if fmt is Format.json:
        sys.stdout.write(json.dumps(finite_json({"posterior": str(posterior), **check}),
                                    indent=2, allow_nan=False) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(",".join(check) + "\n" + ",".join(f"{v:.6g}" for v in
                                                           check.values()) + "\n")
    else:
        grid = titled_table(f"{posterior.name}: posterior predictive check of the "
                            f"{check['rows']} fitted rows (log loss)", title_justify="left")
        for col, justify in (("check", "left"), ("value", "right"), ("meaning", "left")):
            grid.add_column(col, justify=justify)
        for name, value in check.items():
            grid.add_row(name, f"{value:.4g}", CHECK_MEANINGS[name])
        console().print(grid)
    if out is not None:
        console(stderr=True, soft_wrap=True).print(f"wrote {out}")


@app.command()
def advise(
    posterior: Path = typer.Argument(..., help="Posterior file written by `fit` (.nc)."),
    target: str | None = typer.Option(None, help="Target distribution to do well on "
                                      "(required, except for the compute frontier)."),
    budget: float | None = typer.Option(None, help="Budget of the run, in --unit (e.g. "
                                        "1e18; required, except for the compute frontier)."),
    source: str | None = typer.Option(None, help="Pre-training source; default: every "
                                      "source with runs on the target."),
    unit: Unit = typer.Option(Unit.flops, help="flops: training FLOPs 6 N (p + f), advising "
                              "N and the split; tokens: p + f, advising the split."),
    ci: float = typer.Option(0.9, help="Credible-interval width of the losses."),
    top: int = typer.Option(10, help="How many options to list."),
    compute: str | None = typer.Option(None, help="Compute frontier (chinchilla law): "
                                       "budgets in FLOPs, comma-separated (e.g. 1e21,1e23)."),
    compute_range: str | None = typer.Option(None, help="Compute frontier: LOW,HIGH FLOPs, "
                                             "--points budgets log-spaced between them."),
    points: int = typer.Option(5, min=2, max=1000, help="Budgets in --compute-range."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Compute frontier: "
                               "table, csv or json."),
) -> None:
    """Advise how to spend a budget: model size and pre-training vs fine-tuning.

    For every run the budget can buy (a grid of model sizes N and splits
    of the tokens between pre-training p and fine-tuning f), prints the
    expected loss with its credible interval and the posterior probability
    that it is the best, and says plainly when the data cannot tell the
    top options apart. A law without a model-size term (transfer-gap)
    advises only the split. Options beyond the fitted range of N, p or f
    are counted in one warning on stderr, saying by how many times.

    A law with a compute trade-off (chinchilla: L = E + A N^-alpha + B D^-beta)
    gives the compute-optimal frontier instead: for each budget C (--compute,
    --compute-range, or --budget), the posterior median and interval of the
    best N and D at C = 6 N D and of the loss there, in parameters, tokens
    and FLOPs.

    Example:

        bayes-transfer advise posterior.nc --target c-src --budget 1e15 --unit flops

        bayes-transfer advise chinchilla.nc --compute 1e21,5.76e23 --format json
    """
    from bayes_transfer.advise import advise as advise_fn
    from bayes_transfer.laws import get_law

    checks.positive(budget, "--budget")
    checks.ci(ci)
    checks.positive(top, "--top", integer=True)
    post = _load(posterior)
    if get_law(post.spec.law).compute_frontier:
        from bayes_transfer.cli.design import show_frontier

        show_frontier(post, compute=compute, compute_range=compute_range, points=points,
                      budget=budget, unit=unit.value, source=source, target=target, ci=ci,
                      fmt=fmt)
        return
    if target is None or budget is None:
        raise fail(f"the law {post.spec.law} advises on transfer: give --target and --budget")
    if compute is not None or compute_range is not None or fmt is not Format.table:
        raise fail(f"--compute, --compute-range and --format are for a law with a compute "
                   f"frontier (chinchilla), not {post.spec.law}")
    with answer_warnings(), user_errors():
        adv = advise_fn(post, target, budget, source=source, unit=unit.value, ci=ci)
    out = console()
    out.print(advice_table(adv, top=top))
    for note in adv.notes:
        out.print(Text.assemble(("note:", "yellow"), f" {note}"))
    out.print(adv.message, style="bold green" if adv.decisive else "bold yellow")


def advice_table(adv, top: int = 10) -> Table:
    """A rich table of the ``top`` options of an :class:`~bayes_transfer.advise.Advice`."""
    ci = f"{adv.ci:.0%}"
    table = titled_table(f"options for the budget, best first (loss: mean and {ci} interval)")
    for col in ("source", "N", "p", "f", "loss", ci + " CI", "P(best)"):
        table.add_column(col, justify="left" if col == "source" else "right", no_wrap=True)
    for _, r in adv.options.head(top).iterrows():
        table.add_row(str(r["source"]), f"{r['params']:.2g}", f"{r['pretrain_tokens']:.2g}",
                      f"{r['finetune_tokens']:.2g}", f"{r['loss_mean']:.4g}",
                      f"{r['loss_lower']:.4g}-{r['loss_upper']:.4g}", f"{r['p_best']:.2f}")
    return table
