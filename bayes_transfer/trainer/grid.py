"""Grid specs (TOML), the plan of jobs they imply, and the resumable grid runner.

A grid is the cross product sources x shapes x pretrain_tokens x seeds (pre-trainings, one
checkpoint each) times targets x finetune_tokens (fine-tunings of that checkpoint). Rows:

* **from scratch**: the pre-trained model on its own source's held-out text:
  ``source = target = s``, ``pretrain_tokens = p``, ``finetune_tokens = 0``.
* **zero-shot**: the pre-trained model on each target t != s: ``finetune_tokens = 0``.
* **fine-tuned**: pre-trained on s for p tokens, fine-tuned on t for f tokens, evaluated on
  t's held-out text.
* ``p = 0`` in ``pretrain_tokens`` means fine-tuning from random init, which *is* training
  from scratch on t for f tokens; it is recorded as the from-scratch row
  ``source = target = t``, ``pretrain_tokens = f``, ``finetune_tokens = 0``, once per
  (target, shape, f, seed), whatever the sources.

Every run's identity is the SHA-256 of its canonical JSON config (corpus contents
included), so a finished run is never redone, and a grid killed at any point resumes where
it stopped. Files under the work directory (all written atomically by the driver):
``checkpoints/<run_id>.pt`` and ``rows/<row_id>.json``; the output CSV is rebuilt from the
rows, sorted, after each finished job.

Example (a grid spec):

    sources = ["python-src", "english"]
    targets = ["c-src"]
    shapes = ["xs"]
    pretrain_tokens = [0, 20000]
    finetune_tokens = [5000]
    seeds = [0]

    [train]
    batch_size = 16
    context = 64
    lr = 0.01
    finetune_lr = 0.003
    eval_tokens = 4096

    # Optional: a learning rate per model shape (wider models want smaller ones), for
    # pre-training and for fine-tuning; a shape left out uses lr / finetune_lr above.
    [train.lr_by_shape]
    xs = 0.01
    [train.finetune_lr_by_shape]
    xs = 0.003

A run's identity includes the learning rate it actually trains with, so changing a shape's
learning rate makes new runs (and a spec without the per-shape tables plans the same runs
as before they existed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from bayes_transfer._io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    read_toml,
    remove_stale_temps,
)
from bayes_transfer.trainer.corpora import check_corpus_name, load_corpus
from bayes_transfer.trainer.executors import (
    EXECUTORS,
    default_workers,
    make_executor,
    threads_per_worker,
)
from bayes_transfer.trainer.model import SHAPES, non_embedding_params
from bayes_transfer.trainer.training import Evaluation, Job, JobResult, TrainConfig

#: The run-table contract's columns, then the extras this trainer adds.
COLUMNS = [
    "run_id", "source", "target", "params", "pretrain_tokens", "finetune_tokens",
    "loss", "loss_se", "seed",
    "shape", "kind", "wall_seconds", "device", "row_id",
]  # fmt: skip
_SORT = ["source", "target", "params", "pretrain_tokens", "finetune_tokens", "seed", "kind"]


class GridError(ValueError):
    """A grid spec that cannot be run; the message is one line that says why."""


@dataclass(frozen=True)
class Grid:
    """A validated grid spec. Build with :func:`load_grid` or :meth:`Grid.from_dict`."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    shapes: tuple[str, ...]
    pretrain_tokens: tuple[int, ...]
    finetune_tokens: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    train: TrainConfig = TrainConfig()
    finetune_lr: float | None = None  # None: the pre-training lr
    eval_tokens: int = 8192
    device: str = "auto"
    custom_shapes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    lr_by_shape: Mapping[str, float] = field(default_factory=dict)  # pre-training lr per shape
    finetune_lr_by_shape: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Grid:
        """Validate a parsed spec; raise :class:`GridError` with a one-line message."""
        spec = dict(spec)
        known = {"sources", "targets", "shapes", "pretrain_tokens", "finetune_tokens", "seeds", "train", "custom_shapes"}  # fmt: skip
        _no_unknown_keys(spec, known, "grid spec")
        lists = {
            "sources": _str_list(spec, "sources"),
            "targets": _str_list(spec, "targets"),
            "shapes": _str_list(spec, "shapes"),
            "pretrain_tokens": _int_list(spec, "pretrain_tokens", minimum=0),
            "finetune_tokens": _int_list(spec, "finetune_tokens", minimum=1),
            "seeds": _int_list(spec, "seeds", minimum=0, default=[0]),
        }
        for name in {*lists["sources"], *lists["targets"]}:
            try:
                check_corpus_name(name)
            except ValueError as exc:
                raise GridError(str(exc)) from None
        custom = _custom_shapes(spec.get("custom_shapes", {}))
        for shape in lists["shapes"]:
            if shape not in SHAPES and shape not in custom:
                raise GridError(
                    f"unknown shape {shape!r}; expected one of {', '.join([*SHAPES, *custom])} "
                    "(or define it under [custom_shapes.NAME])"
                )
        train = spec.get("train", {})
        if not isinstance(train, dict):
            raise GridError(f"[train] must be a table, got {train!r}")
        train = dict(train)
        extras = {"finetune_lr": None, "eval_tokens": 8192, "device": "auto"}
        by_shape = ("lr_by_shape", "finetune_lr_by_shape")
        _no_unknown_keys(train, {f.name for f in fields(TrainConfig)} | set(extras) | set(by_shape),
                         "[train]")
        values = {k: train.pop(k, v) for k, v in extras.items()}
        for key in by_shape:
            values[key] = _lr_by_shape(train.pop(key, {}), f"train.{key}", lists["shapes"])
        for f in fields(TrainConfig):
            if f.name in train:
                train[f.name] = _number(train[f.name], f"train.{f.name}", *_RANGES[f.name])
        if values["finetune_lr"] is not None:
            values["finetune_lr"] = _number(values["finetune_lr"], "train.finetune_lr",
                                            *_RANGES["lr"])
        values["eval_tokens"] = _number(values["eval_tokens"], "train.eval_tokens",
                                        *_RANGES["eval_tokens"])
        runs = (len(lists["sources"]) * len(lists["shapes"]) * len(lists["pretrain_tokens"])
                * len(lists["seeds"]) * (1 + len(lists["targets"]) * len(lists["finetune_tokens"])))
        if runs > MAX_JOBS:
            raise GridError(f"the grid has {runs:,} training runs; at most {MAX_JOBS:,} are run "
                            "from one spec (split it)")
        if not isinstance(values["device"], str):
            raise GridError("train.device must be a string such as 'auto', 'cpu' or 'cuda'")
        return cls(
            **{k: tuple(v) for k, v in lists.items()},
            train=TrainConfig(**train),
            custom_shapes=custom,
            **values,
        )

    def shape_dims(self, shape: str) -> dict[str, int]:
        return dict(self.custom_shapes.get(shape) or SHAPES[shape])

    def pretrain_config(self, shape: str | None = None) -> TrainConfig:
        """The pre-training hyperparameters of ``shape``: ``[train]``, with the shape's
        ``lr_by_shape`` learning rate where it has one."""
        if shape is None or shape not in self.lr_by_shape:
            return self.train
        return replace(self.train, lr=self.lr_by_shape[shape])

    def finetune_config(self, shape: str | None = None) -> TrainConfig:
        """The fine-tuning hyperparameters of ``shape``. Learning rate, most specific first:
        ``finetune_lr_by_shape``, ``finetune_lr``, then the shape's pre-training lr."""
        if shape is not None and shape in self.finetune_lr_by_shape:
            return replace(self.train, lr=self.finetune_lr_by_shape[shape])
        if self.finetune_lr is not None:
            return replace(self.train, lr=self.finetune_lr)
        return self.pretrain_config(shape)


def load_grid(path: str | os.PathLike[str]) -> Grid:
    """Read and validate a grid spec from a TOML file.

    Example:
        >>> import pathlib, tempfile
        >>> spec = pathlib.Path(tempfile.mkdtemp()) / "grid.toml"
        >>> _ = spec.write_text('sources=["synth-a"]\\ntargets=["synth-b"]\\nshapes=["xs"]\\n'
        ...                     'pretrain_tokens=[2048]\\nfinetune_tokens=[1024]\\n')
        >>> load_grid(spec).shapes
        ('xs',)
    """
    spec = read_toml(path, GridError, "grid spec")
    try:
        return Grid.from_dict(spec)
    except GridError as exc:
        raise GridError(f"{path}: {exc}") from None


# -- validation helpers ---------------------------------------------------------------------


def _no_unknown_keys(spec: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(spec) - known)
    if unknown:
        raise GridError(f"{where}: unknown key {unknown[0]!r}; expected one of {', '.join(sorted(known))}")


def _str_list(spec: Mapping[str, Any], key: str) -> list[str]:
    value = spec.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise GridError(f"{key} must be a non-empty list of strings, got {value!r}")
    return list(dict.fromkeys(value))


def _int_list(spec: Mapping[str, Any], key: str, minimum: int, default: list[int] | None = None) -> list[int]:
    value = spec.get(key, default)
    ok = isinstance(value, list) and value and all(type(v) is int and minimum <= v <= MAX_TOKENS for v in value)
    if not ok:
        raise GridError(f"{key} must be a non-empty list of integers >= {minimum} (and <= {MAX_TOKENS:.0e}), got {value!r}")
    return sorted(set(value))


#: [train] keys: (integer, low, high, low excluded). Outside these a run cannot work
#: (a batch of 0, a context of 1, a NaN learning rate) or is a unit mistake.
_RANGES: dict[str, tuple[bool, float, float, bool]] = {
    "batch_size": (True, 1, 4096, False),
    "context": (True, 2, 4096, False),
    "lr": (False, 0.0, 10.0, True),
    "warmup_fraction": (False, 0.0, 1.0, False),
    "min_lr_ratio": (False, 0.0, 1.0, False),
    "weight_decay": (False, 0.0, 10.0, False),
    "grad_clip": (False, 0.0, 1e6, True),
    "eval_tokens": (True, 1, 10**9, False),
}
#: The most training runs one grid spec may plan, and the largest token count of a run.
MAX_JOBS = 100_000
MAX_TOKENS = 10**13
_MAX_DIMS = {"n_layer": 64, "n_head": 64, "d_model": 8192}


def _number(value: Any, key: str, integer: bool = False, low: float = 0.0,
            high: float = float("inf"), open_low: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    ok = not isinstance(value, bool) and isinstance(value, kinds) and math.isfinite(value) \
        and low <= value <= high and not (open_low and value == low)
    if not ok:
        kind = "an integer" if integer else "a finite number"
        raise GridError(f"{key} must be {kind} {'>' if open_low else '>='} {low:g} and "
                        f"<= {high:g}, got {value!r}")
    return value


def _lr_by_shape(spec: Any, key: str, shapes: list[str]) -> dict[str, float]:
    """A ``[train.lr_by_shape]``-style table: shape name -> learning rate, for the grid's shapes."""
    if not isinstance(spec, dict):
        raise GridError(f"{key} must be a table of shape = learning rate, got {spec!r}")
    for name, value in spec.items():
        if name not in shapes:
            raise GridError(f"{key}.{name}: {name!r} is not one of the grid's shapes "
                            f"({', '.join(shapes)})")
        _number(value, f"{key}.{name}", *_RANGES["lr"])
    return {name: float(value) for name, value in spec.items()}


def _custom_shapes(spec: Any) -> dict[str, dict[str, int]]:
    if not isinstance(spec, dict):
        raise GridError("[custom_shapes] must be a table of tables")
    shapes = {}
    for name, dims in spec.items():
        keys = {"n_layer", "n_head", "d_model"}
        if not isinstance(dims, dict) or set(dims) != keys or not all(type(v) is int and 0 < v <= _MAX_DIMS[k] for k, v in dims.items()):
            raise GridError(f"custom_shapes.{name} must set positive integers n_layer (<= 64), n_head (<= 64) and d_model (<= 8192)")
        if dims["d_model"] % dims["n_head"]:
            raise GridError(f"custom_shapes.{name}: d_model must be a multiple of n_head")
        shapes[name] = dict(dims)
    return shapes


# -- the plan ----------------------------------------------------------------------------------


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of canonical JSON: a run's identity, stable across processes and machines."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


@dataclass
class Plan:
    """Pre-training jobs (by run id) and the fine-tuning jobs that depend on each."""

    pretrain: dict[str, Job]
    finetune: dict[str, list[Job]]

    def row_ids(self) -> set[str]:
        jobs = [*self.pretrain.values(), *(j for js in self.finetune.values() for j in js)]
        return {ev.row_id for job in jobs for ev in job.evaluations}


def plan_grid(grid: Grid, threads: int = 1) -> Plan:
    """Expand a grid into jobs. Loads every corpus once, for its content digest."""
    digests = {name: load_corpus(name).digest for name in {*grid.sources, *grid.targets}}
    pretrain: dict[str, Job] = {}
    finetune: dict[str, list[Job]] = {}

    def evaluation(run_id: str, target: str, row: dict[str, Any]) -> Evaluation:
        key = {"run": run_id, "target": target, "digest": digests[target], "eval_tokens": grid.eval_tokens}
        return Evaluation(config_hash(key), target, {**row, "target": target})

    def add_pretraining(corpus: str, shape: str, tokens: int, seed: int, targets: list[str]) -> str:
        dims = grid.shape_dims(shape)
        train_cfg = grid.pretrain_config(shape)  # the lr actually used is part of the identity
        config = {
            "stage": "pretrain", "corpus": corpus, "corpus_digest": digests[corpus],
            "model": {**dims, "context": grid.train.context}, "tokens": tokens, "seed": seed,
            "train": asdict(train_cfg),
        }  # fmt: skip
        run_id = config_hash(config)
        base = {"source": corpus, "pretrain_tokens": tokens, "finetune_tokens": 0, "seed": seed, "shape": shape}
        evaluations = [
            evaluation(run_id, t, {**base, "kind": "scratch" if t == corpus else "zero-shot"})
            for t in targets
        ]
        old = pretrain.get(run_id)
        if old is not None:  # the same run reached twice (p = 0 on a target that is a source)
            evaluations = list(dict.fromkeys([*old.evaluations, *evaluations]))
        pretrain[run_id] = Job(
            run_id=run_id, kind="pretrain", corpus=corpus, tokens=tokens, seed=seed,
            model_config={**dims, "context": grid.train.context}, train_config=train_cfg,
            evaluations=tuple(evaluations), eval_tokens=grid.eval_tokens, threads=threads,
            device=grid.device, run_config=config,
        )  # fmt: skip
        return run_id

    for seed in grid.seeds:
        for shape in grid.shapes:
            finetune_cfg = grid.finetune_config(shape)
            for source in grid.sources:
                for p in (p for p in grid.pretrain_tokens if p > 0):
                    pre_id = add_pretraining(source, shape, p, seed, [source, *grid.targets])
                    for target in grid.targets:
                        for f in grid.finetune_tokens:
                            config = {
                                "stage": "finetune", "init": pre_id, "corpus": target,
                                "corpus_digest": digests[target], "tokens": f, "seed": seed,
                                "train": asdict(finetune_cfg),
                            }  # fmt: skip
                            run_id = config_hash(config)
                            row = {"source": source, "pretrain_tokens": p, "finetune_tokens": f, "seed": seed, "shape": shape, "kind": "finetune"}  # fmt: skip
                            job = Job(
                                run_id=run_id, kind="finetune", corpus=target, tokens=f, seed=seed,
                                model_config=pretrain[pre_id].model_config, train_config=finetune_cfg,
                                evaluations=(evaluation(run_id, target, row),),
                                eval_tokens=grid.eval_tokens, threads=threads, device=grid.device,
                                run_config=config,
                            )  # fmt: skip
                            finetune.setdefault(pre_id, []).append(job)
            if 0 in grid.pretrain_tokens:
                for target in grid.targets:
                    for f in grid.finetune_tokens:
                        add_pretraining(target, shape, f, seed, [target])
    for run_id, job in pretrain.items():
        if finetune.get(run_id):  # keep the checkpoint only where fine-tunings need it
            pretrain[run_id] = replace(job, save_checkpoint=True)
    return Plan(pretrain, finetune)


# -- the runner --------------------------------------------------------------------------------


class _WorkDir:
    """Checkpoints and finished rows on disk: the state that makes a grid resumable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkpoints = root / "checkpoints"
        self.rows = root / "rows"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.rows.mkdir(parents=True, exist_ok=True)
        for d in (self.checkpoints, self.rows):  # half-written files of a killed grid
            remove_stale_temps(d)

    def checkpoint(self, run_id: str) -> Path:
        return self.checkpoints / f"{run_id}.pt"

    def finished_rows(self, wanted: set[str], retrain_damaged: bool = False
                      ) -> dict[str, dict[str, Any]]:
        rows = {}
        for row_id in wanted:
            path = self.rows / f"{row_id}.json"
            if path.exists():
                try:
                    row = json.loads(path.read_text(encoding="utf-8"))
                    if not isinstance(row, dict):
                        raise ValueError("not a JSON object")
                except (ValueError, RecursionError) as exc:
                    self._damaged(path, f"{type(exc).__name__}: {exc}", retrain_damaged)
                    continue
                rows[row_id] = row
        return rows

    def check_checkpoints(self, plan: Plan, rows: dict[str, Any],
                          retrain_damaged: bool = False) -> None:
        """Every checkpoint that pending fine-tunings will start from must load."""
        from bayes_transfer.trainer.training import CheckpointError, load_checkpoint

        for run_id, jobs in plan.finetune.items():
            path = self.checkpoint(run_id)
            if not path.exists() or all(j.evaluations[0].row_id in rows for j in jobs):
                continue
            try:
                load_checkpoint(path)
            except CheckpointError as exc:
                self._damaged(path, str(exc), retrain_damaged)

    @staticmethod
    def _damaged(path: Path, why: str, retrain_damaged: bool) -> None:
        if not retrain_damaged:
            raise GridError(f"damaged file {path} ({why}); rerun with --retrain-damaged "
                            "(retrain_damaged=True) to delete it and redo its run")
        path.unlink(missing_ok=True)  # missing now, so the run is done again

    def save(self, result: JobResult) -> None:
        # Checkpoint before rows: a kill in between leaves a checkpoint whose rows are
        # missing, which a resume evaluates without retraining.
        if result.checkpoint is not None:
            atomic_write_bytes(self.checkpoint(result.run_id), result.checkpoint)
        for row_id, row in result.rows.items():
            atomic_write_text(self.rows / f"{row_id}.json", json.dumps({**row, "row_id": row_id}))


def rows_to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The run table: contract columns first, sorted deterministically."""
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(_SORT + ["row_id"], kind="stable").reset_index(drop=True)


def _write_table(rows: dict[str, dict[str, Any]], out: Path) -> pd.DataFrame:
    frame = rows_to_frame(list(rows.values()))
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def default_work_dir(out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".work")


def run_grid(
    grid: Grid | str | os.PathLike[str],
    out: str | os.PathLike[str],
    executor: str = "local",
    workers: int | None = None,
    progress: bool = True,
    work_dir: str | os.PathLike[str] | None = None,
    address: str | None = None,
    retrain_damaged: bool = False,
) -> pd.DataFrame:
    """Train and evaluate every run of ``grid``, write the run table to ``out`` (CSV), return it.

    Finished runs (found in ``work_dir``, default ``<out stem>.work/`` next to ``out``) are
    not redone, so calling this again after an interruption resumes the grid, and calling it
    with a bigger grid only trains what is new.

    Args:
        grid: a :class:`Grid` or the path of a TOML grid spec.
        out: the CSV to write (rewritten atomically as rows come in).
        executor: ``"local"`` (process pool), ``"ray"`` or ``"serial"`` (this process).
        workers: parallel jobs; default one per core (one per GPU on CUDA).
        progress: show a live progress bar (runs and tokens, with ETA).
        work_dir: where checkpoints and finished rows are kept.
        address: Ray cluster address (``executor="ray"``); None starts a local Ray.
        retrain_damaged: delete damaged checkpoints and row files in ``work_dir`` and redo
            their runs (default: refuse with a :class:`GridError` naming the file).

    Example:
        >>> grid = Grid.from_dict({"sources": ["synth-a"], "targets": ["synth-b"],
        ...     "shapes": ["xs"], "pretrain_tokens": [2048], "finetune_tokens": [1024],
        ...     "train": {"eval_tokens": 512}})
        >>> import tempfile; out = tempfile.mkdtemp() + "/runs.csv"
        >>> table = run_grid(grid, out, executor="serial", progress=False)
        >>> sorted(table["kind"])
        ['finetune', 'scratch', 'zero-shot']
    """
    if not isinstance(grid, Grid):
        grid = load_grid(grid)
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; expected one of {', '.join(EXECUTORS)}")
    out = Path(out)
    workers = workers or default_workers(executor)
    threads = threads_per_worker(workers)
    plan = plan_grid(grid, threads)
    state = _WorkDir(Path(work_dir) if work_dir else default_work_dir(out))
    remove_stale_temps(out.parent, out.name)
    wanted = plan.row_ids()
    rows = state.finished_rows(wanted, retrain_damaged)
    state.check_checkpoints(plan, rows, retrain_damaged)
    todo = _Todo(plan, rows, state)
    if not todo.count():
        return _write_table(rows, out)
    from bayes_transfer.trainer.progress import GridProgress

    pool = make_executor(executor, workers, threads, address)
    last_write = 0.0
    try:
        with GridProgress(todo.count(), todo.tokens(), enabled=progress) as bar:
            handles = {pool.submit(job, None, trained): job for job, trained in todo.ready_pretrainings(pool)}
            handles |= {pool.submit(job, init): job for job, init in todo.ready_finetunings(pool)}
            while handles:
                done, _ = pool.wait(list(handles))
                for handle, result in done:
                    job = handles.pop(handle)
                    state.save(result)
                    rows.update({k: {**v, "row_id": k} for k, v in result.rows.items()})
                    bar.advance(result.tokens_trained or 0, job)
                    if job.kind == "pretrain":
                        for ft in todo.dependents(job.run_id):
                            handles[pool.submit(ft, pool.share(state.checkpoint(job.run_id)))] = ft
                if time.monotonic() - last_write > 2.0:  # a live table, without rewriting it per row
                    _write_table(rows, out)
                    last_write = time.monotonic()
    finally:
        pool.close()
    missing = wanted - set(rows)
    if missing:  # pragma: no cover - a bug, not a user error
        raise RuntimeError(f"{len(missing)} planned rows were not produced")
    return _write_table(rows, out)


class _Todo:
    """What is left of a plan, given the finished rows and checkpoints on disk."""

    def __init__(self, plan: Plan, rows: dict[str, Any], state: _WorkDir) -> None:
        self.state = state
        self.finetune = {
            pre_id: [j for j in jobs if j.evaluations[0].row_id not in rows]
            for pre_id, jobs in plan.finetune.items()
        }
        self.pretrain: list[tuple[Job, Path | None]] = []
        self.checkpointed: list[str] = []
        for run_id, job in plan.pretrain.items():
            missing = tuple(ev for ev in job.evaluations if ev.row_id not in rows)
            has_checkpoint = state.checkpoint(run_id).exists()
            if has_checkpoint and self.finetune.get(run_id):
                self.checkpointed.append(run_id)
            if missing or (self.finetune.get(run_id) and not has_checkpoint):
                trained = state.checkpoint(run_id) if has_checkpoint else None
                self.pretrain.append((replace(job, evaluations=missing), trained))
        # Biggest first: the long jobs start early, the short fine-tunings fill the gaps.
        self.pretrain.sort(key=lambda jt: (jt[1] is not None, -_cost(jt[0])))

    def count(self) -> int:
        return len(self.pretrain) + sum(len(v) for v in self.finetune.values())

    def tokens(self) -> int:
        jobs = [j for j, trained in self.pretrain if trained is None]
        return sum(j.tokens for j in jobs) + sum(j.tokens for js in self.finetune.values() for j in js)

    def ready_pretrainings(self, pool: Any) -> list[tuple[Job, Any]]:
        return [(job, pool.share(t) if t is not None else None) for job, t in self.pretrain]

    def ready_finetunings(self, pool: Any) -> list[tuple[Job, Any]]:
        """Fine-tunings whose checkpoint is already on disk (their pre-training is not rerun)."""
        running = {job.run_id for job, trained in self.pretrain if trained is None}
        ready = []
        for run_id in self.checkpointed:
            if run_id not in running:
                shared = pool.share(self.state.checkpoint(run_id))
                ready += [(ft, shared) for ft in self.finetune[run_id]]
        return ready

    def dependents(self, run_id: str) -> list[Job]:
        if run_id in self.checkpointed:  # already submitted by ready_finetunings
            return []
        return self.finetune.get(run_id, [])


def _cost(job: Job) -> float:
    return job.tokens * non_embedding_params(job.model_config)
