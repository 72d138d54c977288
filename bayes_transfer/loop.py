"""The closed loop: fit -> suggest -> run -> append -> refit, resumable.

Round 0 runs a small initial design (or fits the run table given) and fits. Each later
round suggests a batch from the last posterior, runs it (the bundled trainer, a user's
``run_fn``, or a simulated truth), appends the rows to the table and refits. The loop stops
after ``rounds`` rounds, when the next batch would exceed ``budget``, when the mean 90%
interval width of the log gaps falls below ``target_width``, or, with ``goal_width``, once
every gap's interval is within it (each round's batch is then chosen by ``suggest``'s goal
rule toward that width instead of by gain per FLOP).

State lives in the output directory, every file written atomically:

* ``runs.csv`` -- the run table so far;
* ``rounds/round-NNN.plan.json`` -- the runs chosen for round N, written before running
  them, so that a resumed round runs the same batch;
* ``rounds/round-NNN.json`` -- the round's log, written last (the round is then done):
  chosen runs, cost, cumulative cost, mean and max 90% width of the log gaps, and the
  width per pair;
* ``posteriors/round-NNN.nc`` -- the posterior after round N.

A killed loop, started again with the same arguments, skips the finished rounds, and in the
unfinished one runs only the planned runs that are not yet in ``runs.csv`` (the bundled
trainer also keeps its own finished runs and checkpoints).

No runs are chosen from a posterior that fails its diagnostics (R-hat above 1.01, too few
effective draws, divergences; see :mod:`bayes_transfer.diagnostics`): a round whose fit
fails is refitted with twice the warmup and draws, then four times, and if it still fails
the loop stops with a message naming the parameters that did not converge (the round's
runs are already in ``runs.csv``; a rerun with longer sampling resumes there).
``allow_unconverged=True`` chooses runs anyway. Each refit after round 0 starts from the
previous round's posterior (see :func:`bayes_transfer.inference.fit`'s ``warm_start``),
except for a spec sampled in anchored coordinates, which refits cold.

Example:
    >>> from bayes_transfer.design import candidate_grid
    >>> from bayes_transfer.simulate import design_grid, simulate
    >>> cands = candidate_grid(["a", "b"], ["x", "y"], params=[1e6],
    ...     pretrain_tokens=[1e7, 1e8, 1e9], finetune_tokens=[1e5, 1e6, 1e7])
    >>> truth = simulate("transfer-gap", cands, seed=1)
    >>> result = run_loop(cands, "loop-out", run_fn=simulated_runner(truth),
    ...                   rounds=3, batch=4)  # doctest: +SKIP
    >>> [r["mean_width"] for r in result.rounds]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bayes_transfer._io import atomic_path, atomic_write_text, remove_stale_temps
from bayes_transfer.data import RunTable, load_runs, pair_label
from bayes_transfer.design import (
    PosteriorDraws,
    as_draws,
    checkpoint_keys,
    initial_design,
    sequential_costs,
    suggest,
)
from bayes_transfer.design.candidates import CostFn
from bayes_transfer.evaluate import levels_of, log_loss_at_rows
from bayes_transfer.laws import Units, features, get_law
from bayes_transfer.sampling import (
    MAX_DRAWS,
    SamplerSettings,
    spec_settings,
)
from bayes_transfer.spec import ModelSpec, load_spec

if TYPE_CHECKING:
    from bayes_transfer.inference import Posterior
    from bayes_transfer.simulate import Simulation
    from bayes_transfer.trainer import Grid

__all__ = ["LoopResult", "UnconvergedFit", "run_loop", "loop_grid", "grid_candidates", "simulated_runner",
           "trainer_runner", "gap_widths"]

RunFn = Callable[[pd.DataFrame], pd.DataFrame]
FitFn = Callable[[RunTable], "Posterior | PosteriorDraws"]
_KEY = ["source", "target", "params", "pretrain_tokens", "finetune_tokens", "seed"]


@dataclass
class LoopResult:
    """The run table at the end, every round's log, and why the loop stopped."""

    runs: RunTable
    rounds: list[dict[str, Any]]
    stopped: str
    posterior: Any = field(default=None, repr=False)
    #: Why the loop stopped, in words, when that needs more than ``stopped`` (e.g. which
    #: parameters of an unconverged fit failed); empty otherwise.
    message: str = ""


class UnconvergedFit(RuntimeError):
    """A round's fit failed its diagnostics even after sampling longer.

    ``posterior`` is the last (failed) fit; ``str(exc)`` says which parameters failed
    and why, and what to do.
    """

    def __init__(self, message: str, posterior: Any = None) -> None:
        super().__init__(message)
        self.posterior = posterior


def gap_widths(posterior: Posterior | PosteriorDraws, ci: float = 0.9,
               pairs: list[str] | None = None) -> pd.Series:
    """Width of the central ``ci`` interval of each pair's log gap, indexed by pair.

    ``pairs`` (``"s->t"`` labels) restricts it to those pairs (default: every pair).
    """
    draws = as_draws(posterior)
    gap = draws.spec.gap
    if gap is None:
        raise ValueError(f"law {draws.spec.law} has no per-pair gap to narrow")
    lo, hi = np.quantile(np.asarray(draws.log_params[gap]), [(1 - ci) / 2, (1 + ci) / 2],
                         axis=0)
    widths = pd.Series(hi - lo, index=draws.pair_labels, name="width")
    return widths if pairs is None else widths.loc[pairs]


class _NutsRefit:
    """The loop's default fit: NUTS, warm-started from the previous round's posterior.

    ``longer`` multiplies warmup and draws (the retries of a fit that failed its
    diagnostics); such a retry starts cold, with a full adaptation, since the short
    warm-started warmup is what it replaces.
    """

    def __init__(self, spec: ModelSpec, fit_kwargs: Mapping[str, Any]) -> None:
        self.spec = spec
        sampler = {k: v for k, v in fit_kwargs.items() if k in SamplerSettings.names()}
        sampler.update(spec_settings(spec, **sampler))
        # Checked now, not after round 0's runs have been trained.
        self.sampler = SamplerSettings(chains=2, draws=300, warmup=300,
                                       progress=False).replace(**sampler)
        self.options = {k: v for k, v in fit_kwargs.items() if k not in sampler}

    def settings(self, longer: int = 1) -> SamplerSettings:
        """The sampler settings of a try ``longer`` times the configured length."""
        return self.sampler.replace(warmup=min(self.sampler.warmup * longer, MAX_DRAWS),
                                    draws=min(self.sampler.draws * longer, MAX_DRAWS))

    def __call__(self, table: RunTable, previous: Any = None, longer: int = 1) -> Posterior:
        from bayes_transfer.inference import Posterior, fit

        opts = {**self.options, **self.settings(longer).fit_kwargs()}
        if longer == 1 and isinstance(previous, Posterior) and previous.spec == self.spec:
            opts["warm_start"] = previous
        with warnings.catch_warnings():
            # Diagnostics are recorded in each round's log instead of warned per refit.
            warnings.simplefilter("ignore")
            return fit(table, self.spec, **opts)


def _default_fit(spec: ModelSpec, fit_kwargs: Mapping[str, Any]) -> _NutsRefit:
    return _NutsRefit(spec, fit_kwargs)


def _converged(posterior: Any) -> bool:
    # A fit_fn's PosteriorDraws carry no diagnostics: nothing to judge them by.
    diagnostics = getattr(posterior, "diagnostics", None)
    return diagnostics is None or bool(diagnostics.ok)


def _unconverged_message(r: int, posterior: Any, tries: int, fit_fn: Any,
                         out: Path) -> str:
    from bayes_transfer.diagnostics import failing_parameters
    from bayes_transfer.inference import _diagnosed_vars

    diagnostics = posterior.diagnostics
    lines = []
    if hasattr(posterior, "idata"):
        lines = failing_parameters(posterior.idata,
                                   _diagnosed_vars(posterior.spec, posterior.idata))
    # The problems that are not per parameter (divergences, E-BFMI, non-finite draws).
    lines += [p for p in diagnostics.problems if not p.startswith(("R-hat", "ESS"))]
    if isinstance(fit_fn, _NutsRefit):
        o = fit_fn.settings(2 ** tries)
        how = (f"after {tries} longer refit(s), the last with {o.chains} chains x "
               f"{o.draws} draws after {o.warmup} warmup")
    else:
        how = "(the loop's fit_fn cannot be asked to sample longer)"
    return (f"round {r}: the fit did not converge {how}, so no runs were chosen from it.\n"
            + "\n".join(f"  - {line}" for line in lines)
            + f"\nThe finished runs are kept in {out / 'runs.csv'}. Run the loop again with "
            "more warmup and draws (it resumes at this round), or allow unconverged fits "
            "(--allow-unconverged; allow_unconverged=True) to choose runs anyway.")


def _fit_round(fit_fn: Any, table: pd.DataFrame, previous: Any, r: int, *, retries: int,
               allow_unconverged: bool, console: Console, out: Path) -> tuple[Any, int]:
    """Fit round ``r``'s table; refit longer while it fails its diagnostics.

    Returns the posterior and how many longer refits it took. Raises
    :class:`UnconvergedFit` when the last one still fails (unless allowed).
    """
    runs = load_runs(table, name="loop run table")
    nuts = isinstance(fit_fn, _NutsRefit)
    posterior = fit_fn(runs, previous) if nuts else fit_fn(runs)
    tries = 0
    while nuts and tries < retries and not _converged(posterior):
        tries += 1
        console.print(Text(f"round {r}: fit failed its diagnostics "
                           f"({posterior.diagnostics.problems[0].split(':')[0]}); "
                           f"sampling {2 ** tries}x longer", style="yellow"))
        posterior = fit_fn(runs, previous, longer=2 ** tries)
    if not _converged(posterior) and not allow_unconverged:
        raise UnconvergedFit(_unconverged_message(r, posterior, tries, fit_fn, out),
                             posterior)
    return posterior, tries


class _State:
    """The loop's files in its output directory."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.runs_path = out / "runs.csv"
        (out / "rounds").mkdir(parents=True, exist_ok=True)
        (out / "posteriors").mkdir(parents=True, exist_ok=True)
        for d in (out, out / "rounds", out / "posteriors"):  # left by a killed loop
            remove_stale_temps(d)

    def log_path(self, r: int) -> Path:
        return self.out / "rounds" / f"round-{r:03d}.json"

    def plan_path(self, r: int) -> Path:
        return self.out / "rounds" / f"round-{r:03d}.plan.json"

    def posterior_path(self, r: int) -> Path:
        return self.out / "posteriors" / f"round-{r:03d}.nc"

    def finished_rounds(self) -> list[dict[str, Any]]:
        logs, r = [], 0
        while self.log_path(r).exists():
            logs.append(json.loads(self.log_path(r).read_text()))
            r += 1
        return logs

    def runs(self) -> pd.DataFrame | None:
        if not self.runs_path.exists():
            return None
        return load_runs(self.runs_path).df

    def write_runs(self, df: pd.DataFrame) -> None:
        with atomic_path(self.runs_path) as tmp:
            df.to_csv(tmp, index=False)

    def write_json(self, path: Path, obj: Any) -> None:
        atomic_write_text(path, json.dumps(obj, indent=1, default=_json_default))


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if x is pd.NA:
        return None
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records"))


def _append(table: pd.DataFrame | None, rows: pd.DataFrame) -> pd.DataFrame:
    """The table with ``rows`` added; rows already there (same run and evaluation) once."""
    new = rows.copy()
    for col in ("source", "target"):
        new[col] = new[col].astype(str)
    frames = [new] if table is None else [table.astype({"source": str, "target": str}), new]
    df = pd.concat(frames, ignore_index=True)
    key = ["run_id", *_KEY]
    seen = df[key].astype({"seed": "Float64"}).fillna({"seed": -1})
    df = df[~seen.duplicated()].reset_index(drop=True)
    return load_runs(df, name="loop run table").df.astype({"source": str, "target": str})


def _done(plan: pd.DataFrame, table: pd.DataFrame | None) -> np.ndarray:
    if table is None:
        return np.zeros(len(plan), dtype=bool)
    have = set(table[_KEY].astype({"source": str, "target": str, "seed": "Float64"})
               .fillna({"seed": -1}).itertuples(index=False, name=None))
    wanted = plan[_KEY].astype({"source": str, "target": str, "seed": "Float64"}) \
        .fillna({"seed": -1}).itertuples(index=False, name=None)
    return np.array([w in have for w in wanted], dtype=bool)


def run_loop(
    candidates: pd.DataFrame,
    out: str | os.PathLike[str],
    *,
    run_fn: RunFn,
    runs: RunTable | pd.DataFrame | str | os.PathLike[str] | None = None,
    spec: ModelSpec | str | os.PathLike[str] | dict[str, Any] = "transfer-gap",
    rounds: int = 5,
    batch: int = 8,
    budget: float | None = None,
    target_width: float | None = None,
    goal_width: float | None = None,
    criterion: str = "variance",
    quantity: Any = "gaps",
    cost: str | CostFn = "flops",
    initial: pd.DataFrame | None = None,
    fit_fn: FitFn | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    ci: float = 0.9,
    console: Console | None = None,
    allow_unconverged: bool = False,
    retries: int = 2,
) -> LoopResult:
    """Run the closed loop for up to ``rounds`` rounds after round 0 (see module docs).

    Args:
        candidates: the runs the loop may choose from (see :mod:`bayes_transfer.design`).
        out: the output directory (its state makes the loop resumable).
        run_fn: runs a DataFrame of chosen runs and returns run-table rows (with ``loss``)
            for them; extra rows (e.g. the trainer's zero-shot evaluations) are kept.
        runs: an existing run table to start from; without one (and without ``runs.csv``
            in ``out``), round 0 runs ``initial`` (default: :func:`initial_design`).
        spec: the model spec to fit.
        rounds, batch: the most rounds after round 0, and runs per round.
        budget: the most total cost (the cost model's unit, FLOPs by default) of the runs
            the loop chooses, round 0 included.
        target_width: stop once the mean ``ci`` interval width of the log gaps is below.
        goal_width: choose each batch by :func:`~bayes_transfer.design.suggest`'s goal
            rule (the cheapest runs expected to bring each gap's 90% interval within it)
            and stop once every gap's ``ci`` interval is within it, or once no run is
            expected to help.
        criterion, quantity, cost: passed to :func:`~bayes_transfer.design.suggest`;
            ``quantity="gaps"`` means the log gaps of the candidates' pairs, whose mean
            width is also what ``target_width`` and the logs measure.
        fit_fn: ``fit_fn(table) -> Posterior`` (default: NUTS, 2 chains x 300 draws
            after 300 warmup, warm-started from the previous round; ``fit_kwargs``
            override those).
        console: where to print each round's log (None: a rich console on stdout).
        allow_unconverged: choose runs even from a fit that fails its diagnostics
            (default: stop, with ``stopped="unconverged"`` and the reasons in
            ``message``).
        retries: how many longer refits (2x, 4x, ... the warmup and draws) a failing fit
            of the default ``fit_fn`` gets before the loop stops.
    """
    spec = load_spec(spec)
    _check_options(spec, rounds=rounds, batch=batch, budget=budget,
                   target_width=target_width, ci=ci, goal_width=goal_width)
    if isinstance(retries, bool) or not isinstance(retries, int | np.integer) or retries < 0:
        raise ValueError(f"retries must be a whole number >= 0, not {retries!r}")
    # The spec and sampler settings are checked before the state directory is made.
    fit_fn = fit_fn or _default_fit(spec, fit_kwargs or {})
    if runs is None and not (Path(out) / "rounds").is_dir() \
            and len(_initial_plan(candidates, None, initial, cost)) == 0:
        raise ValueError("the candidates give no initial runs to train and there is no "
                         "run table to fit: nothing to do")
    state = _State(Path(out))
    # Names in the rounds' tables are the user's: never read as rich markup.
    console = console or Console(markup=False, highlight=False)
    # The quantity is the gaps of the pairs the loop can run: a table may hold other
    # pairs (e.g. the trainer's from-scratch rows make a source a target too).
    pairs = list(dict.fromkeys(pair_label(s, t) for s, t in
                               zip(candidates["source"], candidates["target"], strict=True)))
    if isinstance(quantity, str) and quantity == "gaps":
        quantity = pairs
    logs = state.finished_rounds()
    table = state.runs()
    if table is None and runs is not None:
        table = _append(None, load_runs(runs).df)
        state.write_runs(table)

    def fit_round(r: int, previous: Any) -> tuple[Any, int]:
        return _fit_round(fit_fn, table, previous, r, retries=retries,
                          allow_unconverged=allow_unconverged, console=console,
                          out=state.out)

    posterior = None
    stopped, message = "rounds", ""
    try:
        for r in range(len(logs), rounds + 1):
            if r > 0:
                if posterior is None:
                    posterior = _posterior_of(state, r - 1, fit_round, allow_unconverged)
                last = logs[-1]
                if target_width is not None and last["mean_width"] <= target_width:
                    stopped = "target width"
                    break
                if goal_width is not None and last["max_width"] <= goal_width:
                    stopped = "goal width"
                    break
            if state.plan_path(r).exists():
                plan = pd.DataFrame(json.loads(state.plan_path(r).read_text()))
            elif r == 0:
                plan = _initial_plan(candidates, table, initial, cost)
                if len(plan) == 0 and table is None:
                    raise ValueError("the candidates give no initial runs to train and "
                                     "there is no run table to fit: nothing to do")
                state.write_json(state.plan_path(r), _records(plan))
            else:
                spent = logs[-1]["cumulative_cost"]
                left = None if budget is None else budget - spent
                plan = pd.DataFrame() if left is not None and left <= 0 else suggest(
                    posterior, candidates, batch=batch, budget=left, criterion=criterion,
                    quantity=quantity, cost=cost, runs=table, goal_width=goal_width)
                if len(plan) == 0:
                    stopped = _why_no_plan(left, goal_width)
                    break
                state.write_json(state.plan_path(r), _records(plan))
            todo = plan[~_done(plan, table)] if len(plan) else plan
            if len(todo):
                rows = run_fn(todo.reset_index(drop=True))
                table = _append(table, _as_rows(rows))
                state.write_runs(table)  # saved before the fit: a failed fit loses no run
            posterior, longer = fit_round(r, posterior)
            if hasattr(posterior, "save"):
                posterior.save(state.posterior_path(r))
            log = _round_log(r, plan, table, posterior, logs, ci, pairs)
            log["longer_refits"] = longer
            state.write_json(state.log_path(r), log)
            logs.append(log)
            _print_round(console, log)
    except UnconvergedFit as exc:
        stopped, message = "unconverged", str(exc)
        if hasattr(exc.posterior, "save"):  # kept for inspection; never read back
            exc.posterior.save(state.out / "posteriors" / f"round-{r:03d}.unconverged.nc")
        console.print(Text(message, style="red"))
        posterior = exc.posterior
    finally:
        if isinstance(fit_fn, _NutsRefit):
            from bayes_transfer.refit import clear_compiled

            clear_compiled()  # the warm sampler served the rounds; free it for other fits
    if posterior is None and logs:
        posterior = _posterior_of(state, len(logs) - 1, fit_round, True)
    return LoopResult(runs=load_runs(table, name="loop run table"), rounds=logs,
                      stopped=stopped, posterior=posterior, message=message)


def _why_no_plan(left: float | None, goal_width: float | None) -> str:
    """Why ``suggest`` chose nothing: the budget is spent (or can pay for no run), every
    gap is expected within the goal (the goal rule's empty batch), or nothing helps."""
    if left is not None and (left <= 0 or goal_width is None):
        return "budget"
    if goal_width is not None:
        return "goal width expected"
    return "no informative candidate"


def _check_options(spec: ModelSpec, *, rounds: int, batch: int, budget: float | None,
                   target_width: float | None, ci: float,
                   goal_width: float | None = None) -> None:
    """Refuse options the loop could only fail on later (after training round 0)."""
    if get_law(spec.law).gap is None:
        raise ValueError(f"the loop narrows per-pair transfer gaps, and the law {spec.law} "
                         "has none; use a transfer-gap spec")
    if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 0:
        raise ValueError(f"rounds must be a whole number >= 0, not {rounds!r}")
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise ValueError(f"batch must be a whole number >= 1, not {batch!r}")
    for name, value in (("budget", budget), ("target_width", target_width),
                        ("goal_width", goal_width)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number above 0, not {value!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be between 0 and 1, not {ci!r}")


def _initial_plan(candidates, table, initial, cost) -> pd.DataFrame:
    if table is not None:
        # Fit what is there, plus first runs for any source or target it lacks (a
        # posterior knows nothing of a level it never saw, so cannot score its runs).
        new = ~candidates["source"].isin(table["source"]) \
            | ~candidates["target"].isin(table["target"])
        if not new.any():
            return candidates.iloc[:0]
        plan = initial_design(candidates[new])
    else:
        plan = initial if initial is not None else initial_design(candidates)
    return plan.assign(cost=sequential_costs(plan, cost, checkpoint_keys(table)))


def _as_rows(rows: Any) -> pd.DataFrame:
    if not isinstance(rows, pd.DataFrame):
        raise TypeError(f"run_fn must return a DataFrame of run-table rows, not "
                        f"{type(rows).__name__}")
    return rows


def _posterior_of(state: _State, r: int, fit_round: Callable[[int, Any], tuple[Any, int]],
                  allow_unconverged: bool) -> Any:
    """Round ``r``'s posterior after a resume: its file, or a refit when it has none (or,
    unless allowed, when the saved one fails its diagnostics)."""
    path = state.posterior_path(r)
    if path.exists():
        from bayes_transfer.inference import Posterior

        posterior = Posterior.load(path)
        if allow_unconverged or _converged(posterior):
            return posterior
    return fit_round(r, None)[0]


def _round_log(r: int, plan: pd.DataFrame, table: pd.DataFrame, posterior: Any,
               logs: list[dict[str, Any]], ci: float, pairs: list[str]) -> dict[str, Any]:
    widths = gap_widths(posterior, ci, pairs)
    cost = float(plan["cost"].sum()) if "cost" in plan.columns and len(plan) else 0.0
    cumulative = cost + (logs[-1]["cumulative_cost"] if logs else 0.0)
    diagnostics = getattr(posterior, "diagnostics", None)
    keep = [c for c in [*_KEY, "run_id", "cost", "expected_gain", "reason"] if c in plan]
    return {
        "round": r,
        "chosen": _records(plan[keep]) if len(plan) else [],
        "cost": cost,
        "cumulative_cost": cumulative,
        "rows": int(len(table)),
        "ci": ci,
        "mean_width": float(widths.mean()),
        "max_width": float(widths.max()),
        "widths": {k: float(v) for k, v in widths.items()},
        "diagnostics_ok": None if diagnostics is None else bool(diagnostics.ok),
        "diagnostics": [] if diagnostics is None else [str(p) for p in diagnostics.problems],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _print_round(console: Console, log: dict[str, Any]) -> None:
    t = Table(title=f"round {log['round']}: {len(log['chosen'])} runs, "
                    f"{log['cost']:.3g} FLOPs (total {log['cumulative_cost']:.3g}); "
                    f"log-gap {log['ci']:.0%} width mean {log['mean_width']:.3f}, "
                    f"max {log['max_width']:.3f}", title_justify="left")
    for col in ("source", "target", "params", "p", "f", "cost", "reason"):
        t.add_column(col)
    for run in log["chosen"][:12]:
        # Text cells: a name such as "[/]" is shown as it is, whatever the console.
        t.add_row(Text(str(run["source"])), Text(str(run["target"])), f"{run['params']:.3g}",
                  f"{run['pretrain_tokens']:.3g}", f"{run['finetune_tokens']:.3g}",
                  f"{run.get('cost', float('nan')):.3g}",
                  Text(str(run.get("reason", "initial design"))))
    console.print(t)
    if log["diagnostics_ok"] is False:
        console.print(Text(f"sampler diagnostics: {'; '.join(log['diagnostics'][:2])}",
                           style="yellow"))


# ---- runners ------------------------------------------------------------------------


def simulated_runner(truth: Simulation, seed: int = 0) -> RunFn:
    """A ``run_fn`` that draws each run's loss from a fixed simulated truth.

    ``truth`` is a :class:`~bayes_transfer.simulate.Simulation`: its true parameters and
    noise scale are held fixed, and each run's log loss is the law's value plus fresh noise
    from the spec's likelihood. The noise of a batch is seeded by its run ids, so a rerun
    of the same batch gives the same rows.
    """
    spec = truth.spec
    law = get_law(spec.law)
    sigma = float(np.asarray(truth.truth["sigma"]))
    units = getattr(truth, "units", Units())  # the units the true coefficients are in
    true_log = {name: np.asarray(truth.true_log(name)) for name in spec.params}

    def run_fn(chosen: pd.DataFrame) -> pd.DataFrame:
        rows = chosen[[c for c in ("run_id", *_KEY) if c in chosen.columns]].copy()
        table = load_runs(rows.assign(loss=1.0), name="simulated runs")
        table = table.with_levels(truth.runs.sources, truth.runs.targets)
        bad = np.flatnonzero(~law.explains(table.df))
        if len(bad):
            raise ValueError(f"run {rows['run_id'].iloc[bad[0]]!r}: the simulated truth's "
                             f"law {law.name} {law.row_needs}")
        mean = np.asarray(log_loss_at_rows(
            law, features(table.df, units), true_log, levels=levels_of(spec),
            source_idx=table.source_idx, target_idx=table.target_idx,
            n_targets=len(truth.runs.targets), xp=np))
        rng = np.random.default_rng([seed, zlib.crc32("|".join(map(str, rows["run_id"]))
                                                      .encode())])
        eps = rng.standard_normal(len(rows)) if spec.likelihood.family == "normal" else \
            rng.standard_t(spec.likelihood.nu, size=len(rows))
        return rows.assign(loss=np.exp(mean + sigma * eps), loss_se=0.0).reset_index(drop=True)

    return run_fn


def grid_candidates(grid: Grid) -> pd.DataFrame:
    """The runs a trainer grid spec can make: sources x targets x shapes x p (> 0) x f.

    ``params`` is each shape's non-embedding parameter count (the trainer's ``params``);
    the shape name is kept in a ``shape`` column.
    """
    from bayes_transfer.design import candidate_grid
    from bayes_transfer.trainer import non_embedding_params

    frames = []
    for shape in grid.shapes:
        n = non_embedding_params(grid.shape_dims(shape))
        frames.append(candidate_grid(grid.sources, grid.targets, params=[n],
                                     pretrain_tokens=[p for p in grid.pretrain_tokens if p > 0],
                                     finetune_tokens=grid.finetune_tokens,
                                     seed=grid.seeds[0]).assign(shape=shape))
    return pd.concat(frames, ignore_index=True)


def trainer_runner(grid: Grid, work_dir: str | os.PathLike[str], executor: str = "serial",
                   workers: int | None = None) -> RunFn:
    """A ``run_fn`` that trains the chosen runs with the bundled trainer.

    Each chosen run is a one-run grid with ``grid``'s training settings; all share one
    work directory, so a pre-training checkpoint is trained once and reused by every
    fine-tuning of it (and finished runs are never redone).
    """
    from bayes_transfer.trainer import run_grid

    work_dir = Path(work_dir)

    def run_fn(chosen: pd.DataFrame) -> pd.DataFrame:
        frames = []
        for i, run in enumerate(chosen.itertuples(index=False)):
            one = dataclasses.replace(
                grid, sources=(run.source,), targets=(run.target,), shapes=(run.shape,),
                pretrain_tokens=(int(run.pretrain_tokens),),
                finetune_tokens=(int(run.finetune_tokens),), seeds=(int(run.seed),))
            frames.append(run_grid(one, work_dir / f"batch-{i}.csv", executor=executor,
                                   workers=workers, progress=False,
                                   work_dir=work_dir / "work"))
        return pd.concat(frames, ignore_index=True)

    return run_fn


def loop_grid(
    grid: Grid | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    spec: ModelSpec | str | os.PathLike[str] | dict[str, Any] | None = None,
    executor: str = "serial",
    workers: int | None = None,
    **options: Any,
) -> LoopResult:
    """The closed loop on a trainer grid spec: its runs are the candidates.

    The spec defaults to ``transfer-gap-size`` when the grid has several shapes (model
    size varies) and ``transfer-gap`` otherwise. Other options are those of
    :func:`run_loop`.
    """
    from bayes_transfer.trainer import load_grid
    from bayes_transfer.trainer.executors import EXECUTORS

    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; expected one of "
                         f"{', '.join(EXECUTORS)}")
    if isinstance(grid, (str, os.PathLike)):
        grid = load_grid(grid)
    if spec is None:
        spec = "transfer-gap-size" if len(grid.shapes) > 1 else "transfer-gap"
    return run_loop(grid_candidates(grid), out, spec=spec,
                    run_fn=trainer_runner(grid, Path(out) / "trainer", executor, workers),
                    **options)
