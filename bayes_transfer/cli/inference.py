"""``bayes-transfer fit | report | predict | simulate``: posteriors from the command line.

Every command prints one clear message and exits with status 1 on bad input (a spec, a
run table or a posterior file it cannot use); files are written atomically. NumPy, pandas,
JAX and ArviZ are imported inside the commands, so that ``--help`` starts fast.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from bayes_transfer._io import atomic_path, atomic_write_text
from bayes_transfer.cli import _checks as checks
from bayes_transfer.cli._app import (
    PROGRESS_HELP,
    Format,
    answer_warnings,
    app,
    console,
    fail,
    load_posterior,
    show_progress,
    user_errors,
)
from bayes_transfer.cli._output import emit, print_frame
from bayes_transfer.sampling import MAX_MODE_STARTS, TARGET_ACCEPT_RANGE

if TYPE_CHECKING:
    import pandas as pd

_err = console(stderr=True, soft_wrap=True)
MAX_SIMULATED_ROWS = 1_000_000


class Units(StrEnum):
    raw = "raw"
    reference = "reference"


class Kind(StrEnum):
    # Bambi's names, and the package's older ones (aliases).
    response_params = "response_params"
    response = "response"
    mean = "mean"
    observation = "observation"


class BackendName(StrEnum):
    numpyro = "numpyro"
    pymc = "pymc"


class InitName(StrEnum):
    auto = "auto"
    laplace = "laplace"
    prior = "prior"


class CentringName(StrEnum):
    spec = "spec"
    mode = "mode"


class DeviceName(StrEnum):
    auto = "auto"
    cpu = "cpu"
    gpu = "gpu"


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one line on stderr and exit status 1."""
    with user_errors():
        yield


def _report_frame(post, ci: float, params: bool, units: str = "reference"
                  ) -> tuple[pd.DataFrame, str]:
    if params or post.spec.gap is None:
        from bayes_transfer.report import raw_units_available

        if units == "raw" and not raw_units_available(post):
            units = "reference"
        df = post.param_table(ci=ci, units=units)
        cols = ["param", "level", "source", "target", "observed", "median", "lower",
                "upper", "r_hat", "ess_bulk", "ess_tail", "mcse_median"]
        where = ("raw units (parameters and tokens of 1)" if units == "raw" else
                 f"reference units (N in {post.units.params:g} parameters, tokens in "
                 f"{post.units.tokens:g} tokens)")
        return df[cols], f"parameters, {ci:.0%} credible intervals, {where}"
    df = post.gap_table(ci=ci)
    cols = ["param", "source", "target", "observed", "median", "lower", "upper", "r_hat",
            "ess_bulk", "ess_tail", "mcse_median"]
    return df[cols], f"transfer gap {post.spec.gap} per pair, {ci:.0%} credible intervals"


_DRIFT_TITLE = ("model discrepancy, as learned by internal extrapolations: intervals "
                "beyond a group's fitted range widen by the drift; past `reach` times the "
                "range they are carried out, not checked")


def _print_diagnostics(diag, strict: bool) -> None:
    if diag.ok:
        _err.print(str(diag), style="green")
        return
    _err.print(f"warning: {diag}", style="bold yellow")
    _err.print("This fit is NOT trustworthy until the problems above are fixed "
               f"(intervals may be wrong).{' --strict: exiting with status 1.' if strict else ''}",
               style="bold yellow")


@app.command("fit")
def fit_command(
    runs: Path = typer.Argument(..., help="Run table (.csv or .parquet)."),
    spec: str = typer.Option("transfer-gap", "--spec", "-s",
                             help="Model spec: a TOML path or a bundled name."),
    out: Path = typer.Option(..., "--out", "-o", help="Posterior file to write (.nc)."),
    chains: int = typer.Option(4, min=1, help="NUTS chains."),
    draws: int = typer.Option(1000, min=1, help="Kept draws per chain."),
    warmup: int = typer.Option(1000, min=1, help="Warmup (adaptation) steps per chain."),
    seed: int = typer.Option(0, help="Random seed: same seed, data and spec, same draws."),
    backend: BackendName = typer.Option(BackendName.numpyro, help="Sampler back end."),
    target_accept: float | None = typer.Option(
        None, min=TARGET_ACCEPT_RANGE[0], max=TARGET_ACCEPT_RANGE[1], show_default=False,
        help="NUTS target acceptance; raise on divergences. (default: the spec's "
        "sampler.target_accept, else 0.9)"),
    max_tree_depth: int = typer.Option(10, min=1, max=15, help="NUTS maximum tree depth."),
    dense_mass: bool = typer.Option(
        False, help="Adapt a dense mass matrix (correlated parameters, many rows a pair)."),
    init: InitName = typer.Option(
        InitName.auto, help="Chain starts: laplace (at the mode, with its curvature), prior "
        "(NumPyro's default), auto (laplace from 2,000 rows on). NumPyro only."),
    mode_starts: int | None = typer.Option(
        None, "--mode-starts", min=1, max=MAX_MODE_STARTS, show_default=False,
        help="Search for the posterior's mode from this many starts and start the chains "
        "at the one of largest Laplace mass (a posterior with minor local modes). (default: "
        "the spec's sampler.mode_starts, else 1)"),
    device: DeviceName = typer.Option(DeviceName.auto, help="JAX device (numpyro only)."),
    centring: CentringName = typer.Option(
        CentringName.spec, help="Non-centred pooled parameters: spec (sample as the spec "
        "states) or mode (centre each group the rows pin, from the curvature at the "
        "posterior's mode; the draws come back on the spec's sites; fewer leapfrog steps, "
        "but check for divergences)."),
    shear: bool = typer.Option(
        True, "--shear/--no-shear", help="With a Laplace start, sample each centred "
        "pair-level parameter sheared off its source's and target's parameters (the same "
        "posterior, fewer leapfrog steps with many pairs a target). NumPyro only."),
    prior_draws: int = typer.Option(
        0, min=0, max=100_000, help="Also save this many prior draws (groups prior and "
        "prior_predictive); posterior_predictive is saved either way."),
    ci: float = typer.Option(0.9, help="Credible-interval mass of the printed table."),
    strict: bool = typer.Option(False, help="Exit with status 1 when a diagnostic fails."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress",
                                         help=PROGRESS_HELP, show_default=False),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Fit a model spec to a run table with NUTS and save the posterior.

    Prints the diagnostics and the gap table. A failed diagnostic is printed as a warning
    with advice, and the fit is saved anyway (exit status 0) unless --strict is given.

    Example:

        bayes-transfer fit data/transfer_runs.csv --spec models/transfer-gap.toml --out post.nc --chains 4 --draws 1000
    """
    from bayes_transfer.diagnostics import SamplingWarning
    from bayes_transfer.inference import fit

    checks.input_file(runs, "run table")
    checks.output_file(out, inputs=[runs, spec], force=force)
    checks.ci(ci)
    checks.seed(seed)
    with answer_warnings(), _user_errors():
        from bayes_transfer.sampling import SamplerSettings, spec_settings
        from bayes_transfer.spec import load_spec

        model_spec = load_spec(spec)  # a bad spec fails now, not after loading JAX
        settings = SamplerSettings(  # so do bad sampler settings
            chains=chains, draws=draws, warmup=warmup, seed=seed,
            max_tree_depth=max_tree_depth,
            dense_mass=dense_mass, init=init.value, device=device.value,
            centring=centring.value, shear=shear, progress=show_progress(progress),
            **spec_settings(model_spec, target_accept=target_accept,
                            mode_starts=mode_starts))
        with warnings.catch_warnings():
            # Diagnostics are printed below, once, with advice.
            warnings.simplefilter("ignore", SamplingWarning)
            post = fit(runs, spec, backend=backend.value, prior_draws=prior_draws,
                       **settings.fit_kwargs())
        post.save(out)
        _err.print(f"wrote posterior to {out} ({len(post.runs)} rows, "
                   f"{post.idata.posterior.attrs.get('rows_left_out', 0)} left out)")
        _print_diagnostics(post.diagnostics, strict)
        df, title = _report_frame(post, ci, params=False)
        print_frame(df, title)
    if strict and not post.diagnostics.ok:
        raise typer.Exit(1)


@app.command("report")
def report_command(
    posterior: Path = typer.Argument(..., help="Posterior file written by `fit`."),
    ci: float = typer.Option(0.9, help="Credible-interval mass, e.g. 0.9 or 0.95."),
    fmt: Format = typer.Option(Format.table, "--format", "-f", help="Output format."),
    params: bool = typer.Option(False, "--params",
                                help="Every parameter (exponents, floors) at every group."),
    units: Units = typer.Option(Units.raw, help="Parameter units: raw (the papers': "
                                "parameters and tokens of 1; laws with global parameters "
                                "only) or reference (as fitted)."),
) -> None:
    """Credible intervals of the transfer gap of every pair (or of every parameter).

    The title states the units of the coefficients: raw where the law's parameters are
    all global (e.g. the Chinchilla law, whose A and B then read as in the papers),
    reference units otherwise.

    One row per pair: source, target, observed (False: a pair with no runs, whose
    interval is the crossed-effects predictive), median, lower, upper (equal-tailed),
    r_hat, ess_bulk, ess_tail and mcse_median (Monte Carlo error of the median), all
    from ArviZ's az.summary.

    With a model discrepancy in the spec, a second table (JSON: "discrepancy") says what
    it learned per axis: the drift's mean, sd and growth power, the late trend's gain, and
    its reach, how many times beyond a group's fitted range the internal extrapolations
    checked it (predictions farther out are carried, not checked).

    Example:

        bayes-transfer report post.nc --ci 0.9 --format csv > gaps.csv
    """
    from bayes_transfer.inference import Posterior

    checks.ci(ci)
    with _user_errors():
        post = Posterior.load(posterior)
        df, title = _report_frame(post, ci, params, units.value)
        drift = post.discrepancy_table()
        if fmt is Format.table:
            _print_diagnostics(post.diagnostics, strict=False)

        def show() -> None:
            print_frame(df, f"{posterior.name}: {title}")
            if len(drift):
                print_frame(drift, _DRIFT_TITLE)

        extra = {"posterior": str(posterior), "law": post.spec.law, "ci": ci,
                 "diagnostics": post.diagnostics.to_dict()}
        if len(drift):
            extra["discrepancy"] = json.loads(drift.to_json(orient="records"))
        emit(df, fmt, title=f"{posterior.name}: {title}", extra=extra, show=show)


@app.command("predict")
def predict_command(
    posterior: Path = typer.Argument(..., help="Posterior file written by `fit`."),
    runs: Path = typer.Option(..., "--runs", "-r",
                              help="Rows to predict (run-table columns; loss optional)."),
    ci: float = typer.Option(0.9, help="Credible-interval mass."),
    kind: Kind = typer.Option(Kind.response_params, help="response_params (alias mean): "
                              "the law's loss; response (alias observation): plus the "
                              "measurement noise, Bambi's names."),
    fmt: Format = typer.Option(Format.csv, "--format", "-f", help="Output format."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write here, not stdout."),
    seed: int = typer.Option(0, help="Seed of the observation noise."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Predict the loss of new runs: adds loss_median, loss_lower and loss_upper.

    Rows may be of pairs never run, if their source and target were in the fitted table.
    Rows beyond the fitted range of N, p or f are counted in one warning on stderr,
    saying by how many times.

    Example:

        bayes-transfer predict post.nc --runs next_runs.csv --ci 0.9 --format csv --out pred.csv
    """
    import pandas as pd

    from bayes_transfer.data import read_table

    checks.input_file(runs, "table of rows to predict", "--runs")
    if out is not None:
        checks.output_file(out, inputs=[posterior, runs], force=force)
    checks.ci(ci)
    checks.seed(seed)
    with answer_warnings(), _user_errors():
        # The run table's own reader (names such as "NA" stay names); rows are numbered
        # from 1 in messages, as `validate` numbers them.
        rows = read_table(runs)
        rows.index = pd.RangeIndex(1, len(rows) + 1)
        post = load_posterior(posterior)
        pred = post.predict(rows, ci=ci, kind=kind.value, seed=seed, name=runs.name)
        emit(pred, fmt, title=f"predicted loss, {ci:.0%} credible intervals ({kind.value})",
             extra={"posterior": str(posterior), "ci": ci, "kind": kind.value}, out=out)


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


@app.command("simulate")
def simulate_command(
    spec: str | None = typer.Argument(None, help="Model spec: a TOML path or a bundled name."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run table to write (.csv)."),
    design: Path | None = typer.Option(None, "--design", "-d",
                                       help="Design CSV: run-table columns without loss."),
    sources: str = typer.Option("s1,s2,s3,s4", help="Grid: comma-separated sources."),
    targets: str = typer.Option("t1,t2,t3", help="Grid: comma-separated targets."),
    params: str = typer.Option("1e6", help="Grid: model sizes N."),
    pretrain_tokens: str = typer.Option("1e6,1e7,1e8", help="Grid: pre-training tokens."),
    finetune_tokens: str = typer.Option("1e4,1e5,1e6", help="Grid: fine-tuning tokens."),
    seeds: str = typer.Option("0", help="Grid: training seeds (replicates)."),
    seed: int = typer.Option(0, help="Random seed of the simulation."),
    loss_se: float = typer.Option(0.0, min=0.0, help="loss_se written to every row."),
    force: bool = typer.Option(False, "--force", help="Replace --out (and its .truth.json) "
                               "if they exist."),
    from_prior: bool = typer.Option(
        False, "--from-prior", help="Draw the population means and sds from the spec's "
        "prior too (calibration studies; losses may reach thousands of nats), instead of "
        "a typical table around the prior centres."),
    check: Path | None = typer.Option(
        None, "--check", help="Score this posterior (a fit of a simulated table) against "
        "--truth: does each 50% and 90% interval hold the true value?"),
    truth: Path | None = typer.Option(None, "--truth",
                                      help="With --check: the OUT.truth.json to score."),
    fmt: Format = typer.Option(Format.table, "--format", "-f",
                               help="With --check: table, csv or json."),
) -> None:
    """Draw a run table from a spec; the true values, with their units, go to OUT.truth.json.

    The design is a CSV (--design) or the grid of the --sources, --targets, --params,
    --pretrain-tokens, --finetune-tokens and --seeds values. By default the table is
    typical: population means at the prior centres, group effects of sd 0.2 and 2%
    noise, so losses are a few nats; --from-prior draws everything from the prior.

    With --check POST.nc --truth OUT.truth.json, scores the coverage of a posterior
    fitted to the table instead: per parameter and group, whether the 50% and 90%
    intervals hold the truth, and the share of intervals that do.

    Example:

        bayes-transfer simulate transfer-gap --sources web,code --targets math --out sim.csv --seed 1

        bayes-transfer simulate --check post.nc --truth sim.truth.json --format json
    """
    from bayes_transfer.data import read_table
    from bayes_transfer.simulate import design_grid, simulate

    if check is not None:
        _check_truth(check, truth, fmt)
        return
    if spec is None or out is None:
        raise fail("give a SPEC and --out to simulate a table, or --check POST.nc --truth "
                   "TRUTH.json to score a posterior")
    truth_path = checks.file_name(out).with_suffix(".truth.json")
    checks.input_file(design, "design table", "--design")
    for path in (out, truth_path):
        checks.output_file(path, inputs=[design, spec], force=force)
    checks.seed(seed)
    if not (math.isfinite(loss_se) and loss_se < 1e3):
        raise fail(f"--loss-se must be a finite number below 1000, not {loss_se}")
    if design is None:
        grid = {"params": checks.numbers(params, "--params", integer=True, strict=True),
                "pretrain_tokens": checks.numbers(pretrain_tokens, "--pretrain-tokens",
                                                  integer=True),
                "finetune_tokens": checks.numbers(finetune_tokens, "--finetune-tokens",
                                                  integer=True),
                "seeds": [int(s) for s in checks.numbers(seeds, "--seeds", integer=True,
                                                         maximum=2**31)]}
        size = len(_names(sources)) * len(_names(targets)) * math.prod(map(len, grid.values()))
        if size > MAX_SIMULATED_ROWS:
            raise fail(f"the grid has {size:,} rows; at most {MAX_SIMULATED_ROWS:,} are "
                       "simulated (use --design for a bigger table)")
    with _user_errors():
        if design is not None:
            rows = read_table(design)
        else:
            rows = design_grid(_names(sources), _names(targets), **grid)
        sim = simulate(spec, rows, seed=seed, loss_se=loss_se, typical=not from_prior)
        with atomic_path(out, suffix=".csv") as tmp:
            sim.runs.df.to_csv(tmp, index=False)
        atomic_write_text(truth_path, json.dumps(
            sim.truth_dict(seed=seed, drawn="prior" if from_prior else "typical"),
            indent=2) + "\n")
        _err.print(f"wrote {len(sim.runs)} rows to {out} and the true values to {truth_path}")


def _check_truth(posterior: Path, truth: Path | None, fmt: Format) -> None:
    """``simulate --check``: the coverage of ``posterior``'s intervals of the truths."""
    from bayes_transfer.inference import Posterior
    from bayes_transfer.simulate import coverage, coverage_fractions

    if truth is None:
        raise fail("--check needs --truth TRUTH.json (written by `simulate` beside its table)")
    checks.input_file(posterior, "posterior file", "--check")
    checks.input_file(truth, "truth file", "--truth")
    try:
        values = json.loads(truth.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise fail(f"{truth}: not a truth file written by `simulate` ({exc})",
                   "bad truth file") from None
    if not isinstance(values, dict):
        raise fail(f"{truth}: not a truth file written by `simulate`", "bad truth file")
    with _user_errors():
        post = Posterior.load(posterior)
        df = coverage(post, values)
    fractions = coverage_fractions(df)
    title = (f"coverage of the truths by {posterior.name}'s intervals (natural scale, "
             f"reference units {post.units.params:g} parameters, {post.units.tokens:g} "
             "tokens)")
    emit(df, fmt, title=title, extra={"posterior": str(posterior), "truth": str(truth),
                                      "units": post.units.to_dict(), "coverage": fractions})
    if fmt is Format.table:
        console().print(f"{fractions['50%']:.0%} of the 50% intervals and "
                        f"{fractions['90%']:.0%} of the 90% intervals hold the truth "
                        f"({fractions['n']} parameters and groups)")
