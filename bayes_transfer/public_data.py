"""Readers of published scaling-law tables: each turns a public format into a run table.

One home for public formats. Each reader names the file, the row and the column of a bad
cell (``RunTableError``), never invents a quantity the source does not give (an unknown
``pretrain_tokens`` is an empty cell, see :mod:`bayes_transfer.data`), and never drops a
row silently: what cannot enter a run table is listed in :attr:`Conversion.left_out` and
announced with a :class:`LeftOutWarning`.

==========================  ===============================================================
format                      reader
==========================  ===============================================================
``rectified-scaling``       :func:`read_rectified_scaling`: fine-tuning curves of 30 models
                            (Lin et al. 2024, ``benchmark/flan.csv``, ``gigaword.csv``)
``llm-line``                :func:`read_llm_line`: public checkpoints on five validation
                            sets (Mayilvahanan et al. 2025, ``data/latest_pm_hf.csv``)
``chinchilla-svg``          :func:`read_chinchilla_svg`: Chinchilla's Figure 4 runs as
                            extracted by Epoch AI (Besiroglu et al. 2024)
==========================  ===============================================================

Rows are numbered as in the file: row 1 is the line after the (first) header line.

The first two tables ship with the package (``data/``, with their licences);
:func:`load_public` reads them. The Epoch table has no licence: convert it from your copy.

Example:
    >>> runs = load_public("rectified-scaling-flan")
    >>> len(runs), runs.targets
    (450, ('flan',))
    >>> int(runs.df["pretrain_tokens"].isna().sum())  # not stated by the models: unknown
    450
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayes_transfer import bundled
from bayes_transfer.data import Problem, RunTable, RunTableError, load_runs

__all__ = [
    "FORMATS",
    "PUBLIC_TABLES",
    "Conversion",
    "LeftOutWarning",
    "convert",
    "load_public",
    "read_chinchilla_svg",
    "read_llm_line",
    "read_rectified_scaling",
]

# Tokens per example (input + output) in the rectified-scaling paper's own code
# (src/draw.py, ``dataset2sampleLen``), keyed by the lower-cased target name.
RECTIFIED_TOKENS_PER_EXAMPLE: dict[str, float] = {"flan": 35.0, "gigaword": 44.0}

# llm-line's validation sets -> short target names, and its pre-training corpora -> the
# same names, so that a model pre-trained on C4 and evaluated on C4 is source == target.
LLM_LINE_SETS: dict[str, str] = {
    "C4": "C4",
    "The Pile UC": "Pile",
    "RefineWeb": "RefinedWeb",
    "Slimpajama": "SlimPajama",
    "FineWeb-Edu": "FineWeb-Edu",
}
LLM_LINE_SOURCES: dict[str, str] = {
    "C4": "C4",
    "The Pile": "Pile",
    "The Pile Deduped": "Pile-dedup",
    "FineWeb-Edu": "FineWeb-Edu",
    "Dolma": "Dolma",
}
_SET_COLUMN = re.compile(r"^(?P<set>.+) Validation (?P<metric>Loss|BPB)$")
_METRICS = {"loss": "Loss", "bpb": "BPB"}
_MAX_REPORTED = 20


class LeftOutWarning(UserWarning):
    """Rows of a public table that cannot enter a run table (e.g. no model size)."""


@dataclass(frozen=True)
class Conversion:
    """What a reader made of a public table.

    Attributes:
        runs: the validated run table.
        left_out: one row per thing not converted, with columns ``row`` (in the file),
            ``what`` (model, and target when one cell) and ``reason``.
        unknown: quantities the source does not give, e.g.
            ``"pretrain_tokens: all 450 rows"``.
        notes: how quantities were derived (units, tokens per example, ...).
    """

    runs: RunTable
    left_out: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["row", "what", "reason"]))
    unknown: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        """Lines saying what was converted, as ``bayes-transfer convert`` prints them."""
        df = self.runs.df
        lines = [
            f"{len(df)} rows, {df['run_id'].nunique()} runs",
            f"sources ({len(self.runs.sources)}): {_listing(self.runs.sources)}",
            f"targets ({len(self.runs.targets)}): {_listing(self.runs.targets)}",
        ]
        lines += [f"unknown {u}" for u in self.unknown]
        lines += list(self.notes)
        if len(self.left_out):
            lines.append(f"left out {len(self.left_out)} (row numbers as in the file):")
            for reason, group in self.left_out.groupby("reason", sort=False):
                rows = group.groupby("what", sort=False)["row"].agg(list)
                whats = [f"{w} (row {r[0]})" if len(r) == 1 else f"{w} ({len(r)} rows)"
                         for w, r in rows.items()]
                shown = ", ".join(whats[:_MAX_REPORTED])
                more = f", ... ({len(whats) - _MAX_REPORTED} more)" \
                    if len(whats) > _MAX_REPORTED else ""
                lines.append(f"  {reason}: {shown}{more}")
        else:
            lines.append("left out: nothing")
        return lines


def _listing(names: tuple[str, ...], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names) - most} more)" if len(names) > most else "")


def _warn_left_out(conv: Conversion, name: str) -> None:
    if len(conv.left_out):
        whats = ", ".join(dict.fromkeys(conv.left_out["what"].astype(str)).keys())
        warnings.warn(
            f"{name}: {len(conv.left_out)} left out of the run table "
            f"({'; '.join(dict.fromkeys(conv.left_out['reason']))}): "
            f"{whats[:300]}{'...' if len(whats) > 300 else ''}; see Conversion.left_out "
            "(bayes_transfer.public_data.convert)",
            LeftOutWarning, stacklevel=3,
        )


def _left_out(rows: list[tuple[int, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["row", "what", "reason"])


# ---- reading cells ----------------------------------------------------------------------
def _read_text_csv(path: Path) -> pd.DataFrame:
    """Every cell as a stripped string ("" when empty); refuses what pandas cannot parse."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as exc:
        raise RunTableError(path.name, [Problem(None, None, f"cannot be parsed: {exc}")]
                            ) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw.apply(lambda s: s.str.strip())


def _require(raw: pd.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in raw.columns]
    if missing:
        problems = [Problem(None, c, "missing required column") for c in missing]
        problems.append(Problem(None, None, f"its columns are {list(raw.columns)[:30]}"))
        raise RunTableError(name, problems)


def _parse(
    raw: pd.DataFrame, col: str, rows: np.ndarray, problems: list[Problem],
    ok: Callable[[np.ndarray], np.ndarray], what: str, *, empty_ok: bool = False,
) -> np.ndarray:
    """Column ``col`` as float64 (NaN where empty); a bad cell becomes a Problem."""
    text = raw[col]
    values = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(np.float64)
    empty = (text == "").to_numpy()
    with np.errstate(invalid="ignore"):
        good = np.isfinite(values) & ok(values)
    bad = ~good & ~(empty & empty_ok)
    for i in np.flatnonzero(bad):
        shown = "empty" if empty[i] else repr(text.iat[i])
        problems.append(Problem(int(rows[i]), col, f"{shown} {what}"))
    return values


def _positive(v: np.ndarray) -> np.ndarray:
    return v > 0


def _positive_integer(v: np.ndarray) -> np.ndarray:
    return (v > 0) & (v == np.round(v)) & (v < 1e16)


def _raise(name: str, problems: list[Problem]) -> None:
    if problems:
        raise RunTableError(name, problems[:_MAX_REPORTED], total=len(problems))


# ---- rectified scaling (Lin et al. 2024) -------------------------------------------------
def _rectified(path: str | os.PathLike[str], target: str | None,
               tokens_per_example: float | None) -> Conversion:
    path = Path(path)
    name = path.name
    raw = _read_text_csv(path)
    _require(raw, name, ("config name", "size"))
    target = (target or path.stem).strip()
    if not target:
        raise ValueError("target must be a non-empty name")
    if tokens_per_example is None:
        tokens_per_example = RECTIFIED_TOKENS_PER_EXAMPLE.get(target.lower())
        how = "from the paper's code, src/draw.py dataset2sampleLen"
        if tokens_per_example is None:
            raise ValueError(
                f"{name}: no known tokens per example for target {target!r} (known: "
                f"{', '.join(f'{k} {v:g}' for k, v in RECTIFIED_TOKENS_PER_EXAMPLE.items())});"
                " give tokens_per_example (--tokens-per-example)")
    else:
        how = "given"
    given = tokens_per_example
    try:
        tokens_per_example = float(given)
    except (TypeError, ValueError):
        tokens_per_example = math.nan
    if not (math.isfinite(tokens_per_example) and tokens_per_example > 0):
        raise ValueError(f"tokens_per_example must be a positive number, not {given!r}")

    problems: list[Problem] = []
    sizes_cols = []
    for col in raw.columns:
        if re.fullmatch(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?", col):
            number = float(col)
            if number < 0 or number != round(number):
                problems.append(Problem(None, col, "a fine-tuning size must be a "
                                        "non-negative whole number of examples"))
            else:
                sizes_cols.append((col, int(number)))
    if not sizes_cols:
        problems.append(Problem(None, None, "no fine-tuning size columns (headers 0, 200, "
                                "400, ...: examples; cells: test loss)"))
    _raise(name, problems)
    if len(raw) == 0:
        raise RunTableError(name, [Problem(None, None, "the table has no rows")])

    rows = np.arange(1, len(raw) + 1)
    models = raw["config name"]
    for i in np.flatnonzero((models == "").to_numpy()):
        problems.append(Problem(int(rows[i]), "config name", "is empty; every row needs a "
                                "model name"))
    first_seen: dict[str, int] = {}
    for i, m in enumerate(models):
        if m and m in first_seen:
            problems.append(Problem(int(rows[i]), "config name",
                                    f"{m!r} repeats row {first_seen[m]}"))
        first_seen.setdefault(m, int(rows[i]))
    size = _parse(raw, "size", rows, problems, _positive_integer, "is not a positive integer")
    losses = {col: _parse(raw, col, rows, problems, _positive,
                          "is not a positive loss (leave the cell empty when not measured)",
                          empty_ok=True)
              for col, _ in sizes_cols}
    _raise(name, problems)

    extra = [c for c in raw.columns if c not in ("config name", "size")
             and c not in dict(sizes_cols)]
    frames, left = [], []
    for col, examples in sizes_cols:
        loss = losses[col]
        missing = np.isnan(loss)
        left += [(int(rows[i]), f"{models.iat[i]} at {examples} examples",
                  f"empty cell in column {col}") for i in np.flatnonzero(missing)]
        keep = ~missing
        part = pd.DataFrame({
            "run_id": [f"{m}/ft{examples}" for m in models[keep]],
            "source": models[keep].to_numpy(),
            "target": target,
            "params": size[keep],
            "pretrain_tokens": np.nan,
            "finetune_tokens": np.round(examples * tokens_per_example),
            "loss": loss[keep],
            "finetune_examples": examples,
            "tokens_per_example": float(tokens_per_example),
            "_order": np.flatnonzero(keep),
        })
        for c in extra:
            part[c] = raw[c].to_numpy()[keep]
        frames.append(part)
    df = pd.concat(frames, ignore_index=True).sort_values(["_order", "finetune_examples"],
                                                          kind="stable")
    df = df.drop(columns="_order").reset_index(drop=True)
    runs = load_runs(df, name=name)
    return Conversion(
        runs=runs,
        left_out=_left_out(left),
        unknown=(f"pretrain_tokens: all {len(df)} rows (the models' pre-training tokens are "
                 "not in the table)",),
        notes=(f"finetune_tokens = examples x {tokens_per_example:g} tokens per example "
               f"({how}); finetune_examples keeps the count",
               "f = 0 rows are zero-shot evaluations of the pre-trained model",
               "tokenizers differ across families: compare losses within a family"),
    )


def read_rectified_scaling(
    path: str | os.PathLike[str], target: str | None = None,
    tokens_per_example: float | None = None,
) -> RunTable:
    """Read a fine-tuning table of Lin et al. 2024 (rectified scaling law) as a run table.

    The file has one row per pre-trained model (``config name``), one column per number
    of fine-tuning examples (``0, 200, ..., 1638400``; cells: test loss, nats per token),
    then ``size`` (parameters) and ``family``. Each (model, size) cell becomes a row:

    ==================  ============================================================
    ``run_id``          ``"<config name>/ft<examples>"``
    ``source``          the model (``config name``): its pre-training corpus
    ``target``          ``target``, else the file stem (``flan``, ``gigaword``)
    ``params``          ``size``
    ``pretrain_tokens`` unknown (empty): the table does not give it
    ``finetune_tokens`` examples x ``tokens_per_example``
    ``loss``            the cell; f = 0 is the zero-shot loss
    extra columns       ``finetune_examples``, ``tokens_per_example``, ``family``
    ==================  ============================================================

    Args:
        path: the CSV file (e.g. ``benchmark/flan.csv`` of linhaowei1/Fine-tuning-Scaling-Law).
        target: the target's name (default: the file stem).
        tokens_per_example: tokens of one fine-tuning example (input + output). Default:
            the paper's code's value for ``flan`` (35) and ``gigaword`` (44); other
            targets must give it.

    Raises:
        RunTableError: naming the file, row and column of a bad cell or a missing column.
        ValueError: no tokens per example for the target.

    Empty loss cells are left out with a :class:`LeftOutWarning` (use :func:`convert`
    for the list). Tokenizers differ across families, so losses compare within a family.

    Example:
        >>> from bayes_transfer.bundled import DATA_DIR
        >>> runs = read_rectified_scaling(DATA_DIR / "rectified-scaling" / "gigaword.csv")
        >>> row = runs.df.iloc[1]
        >>> row["run_id"], int(row["finetune_examples"]), int(row["finetune_tokens"])
        ('MBZUAI/LaMini-GPT-124M/ft200', 200, 8800)
    """
    conv = _rectified(path, target, tokens_per_example)
    _warn_left_out(conv, Path(path).name)
    return conv.runs


# ---- LLMs on the line (Mayilvahanan et al. 2025) ------------------------------------------
def _llm_line(path: str | os.PathLike[str], metric: str) -> Conversion:
    path = Path(path)
    name = path.name
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {list(_METRICS)}, not {metric!r}")
    raw = _read_text_csv(path)
    _require(raw, name, ("Name", "Size", "Pretraining Data", "Tokens"))
    rows = np.arange(1, len(raw) + 1)
    # The file's second line is a second header (its Name is empty): skip it.
    if len(raw) and raw["Name"].iat[0] == "":
        raw, rows = raw.iloc[1:].reset_index(drop=True), rows[1:]
    if len(raw) == 0:
        raise RunTableError(name, [Problem(None, None, "the table has no rows")])
    sets = [(m["set"], col) for col in raw.columns
            if (m := _SET_COLUMN.match(col)) and m["metric"] == _METRICS[metric]]
    if not sets:
        raise RunTableError(name, [Problem(None, None, f"no '<set> Validation "
                                           f"{_METRICS[metric]}' columns")])

    problems: list[Problem] = []
    for i in np.flatnonzero((raw["Name"] == "").to_numpy()):
        problems.append(Problem(int(rows[i]), "Name", "is empty; every row needs a model name"))
    size = _parse(raw, "Size", rows, problems, _positive_integer,
                  "is not a positive integer", empty_ok=True)
    tokens = _parse(raw, "Tokens", rows, problems, _positive_integer,
                    "is not a positive integer", empty_ok=True)
    what = "is not a positive loss" if metric == "loss" else "is not a positive BPB"
    values = {col: _parse(raw, col, rows, problems, _positive, what, empty_ok=True)
              for _, col in sets}
    _raise(name, problems)

    left: list[tuple[int, str, str]] = []
    corpus = raw["Pretraining Data"]
    usable = np.ones(len(raw), dtype=bool)
    for i in range(len(raw)):
        lacks = [what for what, bad in (("Size", np.isnan(size[i])),
                                        ("Tokens", np.isnan(tokens[i])),
                                        ("Pretraining Data", corpus.iat[i] == "")) if bad]
        if lacks:
            usable[i] = False
            left.append((int(rows[i]), raw["Name"].iat[i],
                         f"no {' and no '.join(lacks)}: cannot enter a scaling-law fit"))

    # One run per (Name, Tokens); a model saved at several token counts is one run per
    # checkpoint, named Name@tokens.
    seen: dict[tuple[str, float], int] = {}
    for i in np.flatnonzero(usable):
        key = (raw["Name"].iat[i], tokens[i])
        if key in seen:
            problems.append(Problem(int(rows[i]), "Name", f"{key[0]!r} with Tokens "
                                    f"{tokens[i]:.0f} repeats row {seen[key]}"))
        seen.setdefault(key, int(rows[i]))
    _raise(name, problems)
    counts = raw["Name"][usable].value_counts()
    run_ids = [f"{n}@{t:.0f}" if counts.get(n, 0) > 1 else n
               for n, t in zip(raw["Name"], tokens, strict=True)]

    factor = 1.0 if metric == "loss" else math.log(2.0)
    records = []
    for i in np.flatnonzero(usable):
        for set_name, col in sets:
            v = values[col][i]
            short = LLM_LINE_SETS.get(set_name, set_name)
            if np.isnan(v):
                left.append((int(rows[i]), f"{run_ids[i]} on {short}",
                             f"empty cell in column {col}"))
                continue
            source = corpus.iat[i]
            records.append({
                "run_id": run_ids[i],
                "source": LLM_LINE_SOURCES.get(source, source),
                "target": short,
                "params": size[i],
                "pretrain_tokens": tokens[i],
                "finetune_tokens": 0,
                "loss": v * factor,
                "loss_unit": "nats/token" if metric == "loss" else "nats/byte",
                "Name": raw["Name"].iat[i],
                "Pretraining Data": source,
                **{c: raw[c].iat[i] for c in ("Architecture", "Tokenizer") if c in raw},
            })
    if not records:
        raise RunTableError(name, [Problem(None, None, "no row has Size, Tokens, Pretraining "
                                           "Data and a validation value")])
    runs = load_runs(pd.DataFrame(records), name=name)
    unit = ("loss: nats per token (the tokenizers differ across model families; "
            "--metric bpb compares across them)" if metric == "loss" else
            "loss: bits per byte x ln 2 = nats per byte (comparable across tokenizers)")
    return Conversion(
        runs=runs,
        left_out=_left_out(sorted(left)),
        notes=(unit, "finetune_tokens = 0: every row is a zero-shot evaluation; "
               "source == target rows are from-scratch runs",
               "Pile is The Pile UC (uncopyrighted) validation set; Pile-dedup is the "
               "deduplicated Pile as a pre-training corpus"),
    )


def read_llm_line(path: str | os.PathLike[str], metric: str = "loss") -> RunTable:
    """Read ``latest_pm_hf.csv`` of Mayilvahanan et al. 2025 (LLMs on the line) as runs.

    Each (model, validation set) becomes a zero-shot row (``finetune_tokens = 0``):
    ``source`` = ``Pretraining Data``, ``target`` = the validation set, ``params`` =
    ``Size``, ``pretrain_tokens`` = ``Tokens``. Names are shortened so that corpora and
    validation sets meet: C4, Pile (The Pile, and The Pile UC validation set),
    Pile-dedup (The Pile Deduped), RefinedWeb, SlimPajama, FineWeb-Edu, Dolma; a model
    pre-trained on C4 and evaluated on C4 is then a from-scratch row. ``run_id`` is the
    model's ``Name``, or ``Name@Tokens`` for a model listed at several checkpoints.
    Extra columns: ``Name``, ``Pretraining Data``, ``Architecture``, ``Tokenizer``,
    ``loss_unit``. The file's second header line is skipped.

    Args:
        path: the CSV file.
        metric: ``"loss"`` (``<set> Validation Loss``, nats per token) or ``"bpb"``
            (``<set> Validation BPB`` converted to nats per byte: bits x ln 2). Tokenizers
            differ across families (GPT-2, GPT-NeoX, ...): a token is not the same unit
            for every model, a byte is, so ``"bpb"`` compares across families.

    Models without ``Size`` or ``Tokens`` (the OLMo rows) and empty cells cannot enter a
    fit: they are left out with a :class:`LeftOutWarning` naming them (use
    :func:`convert` for the list).

    Example:
        >>> import warnings
        >>> from bayes_transfer.bundled import DATA_DIR
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", LeftOutWarning)
        ...     runs = read_llm_line(DATA_DIR / "llm-line" / "latest_pm_hf.csv")
        >>> runs.targets
        ('C4', 'FineWeb-Edu', 'Pile', 'RefinedWeb', 'SlimPajama')
    """
    conv = _llm_line(path, metric)
    _warn_left_out(conv, Path(path).name)
    return conv.runs


# ---- Chinchilla (Hoffmann et al. 2022, extracted by Epoch AI) -----------------------------
def _chinchilla(path: str | os.PathLike[str], distribution: str = "massivetext"
                ) -> Conversion:
    path = Path(path)
    name = path.name
    raw = _read_text_csv(path)
    _require(raw, name, ("Model Size", "Training FLOP", "loss"))
    rows = np.arange(1, len(raw) + 1)
    problems: list[Problem] = []
    n = _parse(raw, "Model Size", rows, problems, _positive, "is not a positive number")
    c = _parse(raw, "Training FLOP", rows, problems, _positive, "is not a positive number")
    loss = _parse(raw, "loss", rows, problems, _positive, "is not a positive number")
    _raise(name, problems)
    df = pd.DataFrame({
        "run_id": [f"chinchilla-{i}" for i in range(len(raw))],
        "source": distribution,
        "target": distribution,
        "params": np.round(n),
        "pretrain_tokens": np.round(c / (6 * n)),
        "finetune_tokens": 0,
        "loss": loss,
        "training_flop": c,
    })
    runs = load_runs(df, name=name)
    return Conversion(runs=runs, notes=(
        "pretrain_tokens = Training FLOP / (6 x Model Size), rounded",
        "every row is a from-scratch run (source == target, finetune_tokens = 0)"))


def read_chinchilla_svg(
    path: str | os.PathLike[str], *, distribution: str = "massivetext"
) -> RunTable:
    """Read Chinchilla-style data (model size, training FLOP, loss) as a run table.

    The columns ``Model Size`` (N), ``Training FLOP`` (C) and ``loss`` are used, as in
    the Epoch AI replication's ``svg_extracted_data.csv`` (Besiroglu et al. 2024, runs
    of Hoffmann et al. 2022 recovered from its Figure 4; the file has no licence, so it
    is not bundled). Training tokens are ``D = C / (6 N)``, recorded as from-scratch rows
    (source = target = ``distribution``, f = 0); ``training_flop`` is kept.

    Example:
        >>> runs = read_chinchilla_svg("../shared/data/chinchilla_svg_extracted.csv")  # doctest: +SKIP
        >>> len(runs)  # doctest: +SKIP
        245
    """
    return _chinchilla(path, distribution).runs


# ---- one entry point ------------------------------------------------------------------------
FORMATS: dict[str, Callable[..., Conversion]] = {
    "rectified-scaling": _rectified,
    "llm-line": _llm_line,
    "chinchilla-svg": _chinchilla,
}


def convert(
    fmt: str, path: str | os.PathLike[str], *, target: str | None = None,
    metric: str = "loss", tokens_per_example: float | None = None,
) -> Conversion:
    """Convert a public table, with what was left out and what is unknown.

    Args:
        fmt: ``"rectified-scaling"``, ``"llm-line"`` or ``"chinchilla-svg"``.
        path: the file.
        target: rectified-scaling: the target's name; chinchilla-svg: the distribution's
            name (default ``massivetext``); not used by llm-line.
        metric: llm-line only: ``"loss"`` or ``"bpb"``.
        tokens_per_example: rectified-scaling only.

    Raises:
        ValueError: an unknown format, or an option the format does not take.

    Example:
        >>> from bayes_transfer.bundled import DATA_DIR
        >>> conv = convert("llm-line", DATA_DIR / "llm-line" / "latest_pm_hf.csv")
        >>> len(conv.runs), len(conv.left_out)
        (411, 50)
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    unused = [opt for opt, given, formats in (
        ("target", target is not None, ("rectified-scaling", "chinchilla-svg")),
        ("metric", metric != "loss", ("llm-line",)),
        ("tokens_per_example", tokens_per_example is not None, ("rectified-scaling",)),
    ) if given and fmt not in formats]
    if unused:
        raise ValueError(f"format {fmt} does not take " + ", ".join(
            f"{opt} (--{opt.replace('_', '-')})" for opt in unused))
    if fmt == "rectified-scaling":
        return _rectified(path, target, tokens_per_example)
    if fmt == "llm-line":
        return _llm_line(path, metric)
    return _chinchilla(path, target or "massivetext")


# The tables that ship in data/: name -> (format, path under bundled.DATA_DIR).
PUBLIC_TABLES: dict[str, tuple[str, str]] = {
    "rectified-scaling-flan": ("rectified-scaling", "rectified-scaling/flan.csv"),
    "rectified-scaling-gigaword": ("rectified-scaling", "rectified-scaling/gigaword.csv"),
    "llm-line": ("llm-line", "llm-line/latest_pm_hf.csv"),
}


def load_public(name: str, **options: object) -> RunTable:
    """A bundled public table as a run table (see ``data/*/README.md`` for each).

    Args:
        name: ``"rectified-scaling-flan"``, ``"rectified-scaling-gigaword"`` or
            ``"llm-line"``.
        **options: passed to the reader, e.g. ``metric="bpb"`` for ``"llm-line"``.

    Raises:
        KeyError: an unknown name (the message lists the known ones).

    Example:
        >>> load_public("chinchilla")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        KeyError: "no bundled public table 'chinchilla'; known: rectified-scaling-flan, ...
    """
    if name not in PUBLIC_TABLES:
        raise KeyError(f"no bundled public table {name!r}; known: {', '.join(PUBLIC_TABLES)}")
    fmt, rel = PUBLIC_TABLES[name]
    path = bundled.DATA_DIR / rel
    if not path.exists():
        raise FileNotFoundError(f"bundled table {path} not found; it ships with the source "
                                "checkout (install with `pip install -e .` from a clone)")
    conv = convert(fmt, path, **options)  # type: ignore[arg-type]
    _warn_left_out(conv, name)
    return conv.runs
