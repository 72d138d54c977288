"""The run table: load, validate and index the data every model consumes.

One row per evaluated run, long format (see DESIGN.md, "The run table"):

==================  =========  ==========================================================
column              type       meaning
==================  =========  ==========================================================
``run_id``          str        unique id of the training run
``source``          str        distribution the model was pre-trained on
``target``          str        distribution it was fine-tuned (if f > 0) and evaluated on
``params``          int > 0    model size N (non-embedding parameters)
``pretrain_tokens`` int >= 0   p, tokens of ``source`` seen in pre-training; an empty
                               cell means unknown (kept as NaN, the column is then float64)
``finetune_tokens`` int >= 0   f, tokens of ``target`` seen in fine-tuning
``loss``            float > 0  evaluation cross-entropy on ``target``, nats per token
``loss_se``         float >= 0 optional standard error of ``loss`` (missing: unknown)
``seed``            int        optional training seed; replicates differ in seed
==================  =========  ==========================================================

An unknown ``pretrain_tokens`` is not 0: 0 means "from scratch", while most public
fine-tuned models simply do not state how many tokens they were pre-trained on (see
:mod:`bayes_transfer.public_data`). Laws that need p cannot use such rows.

Bad rows are refused with a message that names the file, the row (1-based, counting
data rows: row 1 is the first line after a CSV header) and the column. Nothing is
silently dropped. Validation is vectorised: a 1,000,000-row table validates in seconds.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"run_id": ["r1", "r2"], "source": ["web", "web"],
    ...     "target": ["code", "code"], "params": [1e6, 1e6],
    ...     "pretrain_tokens": [10**8, 10**8], "finetune_tokens": [10**5, 10**6],
    ...     "loss": [2.1, 1.9]})
    >>> runs = load_runs(df)
    >>> runs.sources, runs.targets, len(runs)
    (('web',), ('code',), 2)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "Problem",
    "RunTableError",
    "RunTable",
    "load_runs",
    "pair_label",
    "query_rows",
    "read_table",
    "read_chinchilla_csv",
]

REQUIRED_COLUMNS: tuple[str, ...] = (
    "run_id",
    "source",
    "target",
    "params",
    "pretrain_tokens",
    "finetune_tokens",
    "loss",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("loss_se", "seed")

# Token counts and sizes above this are not real runs but unit mistakes or overflow:
# 1e16 tokens is ~1000x the largest published pre-training corpus.
_MAX_COUNT = 1e16
# Keys that identify one evaluation; rows sharing them (and the seed) are duplicates.
# An unknown (NaN) pretrain_tokens equals another unknown one here.
_EVAL_KEY = ("run_id", "source", "target", "params", "pretrain_tokens", "finetune_tokens")
_MAX_REPORTED = 20
# Joins a source and a target into the pair's label ("web->code").
ARROW = "->"
_CONTROL = r"[\x00-\x1f\x7f]"
# Required numeric columns where an empty cell means "unknown" (NaN), not an error.
_MAY_BE_UNKNOWN = ("pretrain_tokens",)
_NA_SPELLINGS = ["", "NA", "N/A", "n/a", "NaN", "nan", "-nan", "NULL", "null", "None", "<NA>",
                 "#N/A"]


@dataclass(frozen=True)
class Problem:
    """One bad cell (or row, when ``column`` is None) of a run table."""

    row: int | str | None
    column: str | None
    message: str

    def render(self, name: str) -> str:
        where = [name]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column}")
        return f"{', '.join(where)}: {self.message}"


def _row_key(row: int | str | None) -> tuple[int, int | str]:
    return (0, row) if isinstance(row, int) else (1, str(row))


class RunTableError(ValueError):
    """A run table that does not meet the contract; ``problems`` lists every bad cell."""

    def __init__(self, name: str, problems: Sequence[Problem], total: int | None = None):
        self.name = name
        # Row order reads best; problems without a row (whole-column ones) come first.
        self.problems = sorted(problems, key=lambda p: (p.row is not None, _row_key(p.row)))
        self.total = total if total is not None else len(self.problems)
        lines = [p.render(name) for p in self.problems[:_MAX_REPORTED]]
        if self.total > len(lines):
            lines.append(f"... and {self.total - len(lines)} more problems in {name}")
        super().__init__("\n".join(lines))


@dataclass(frozen=True, eq=False)
class RunTable:
    """A validated run table with sources, targets and pairs as integer codes.

    Pairs are the full ``source x target`` grid (``pair = source_code * n_targets +
    target_code``), so a pair never observed still has a place: crossed effects give it
    a predictive posterior. ``observed_pairs`` marks the pairs with at least one row.
    """

    df: pd.DataFrame
    name: str = "<DataFrame>"
    sources: tuple[str, ...] = field(init=False)
    targets: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.df["source"].cat.categories))
        object.__setattr__(self, "targets", tuple(self.df["target"].cat.categories))

    def __len__(self) -> int:
        return len(self.df)

    @property
    def source_idx(self) -> np.ndarray:
        return self.df["source"].cat.codes.to_numpy(np.int32)

    @property
    def target_idx(self) -> np.ndarray:
        return self.df["target"].cat.codes.to_numpy(np.int32)

    @property
    def pair_idx(self) -> np.ndarray:
        return self.source_idx * len(self.targets) + self.target_idx

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """Every (source, target) of the grid, in pair-code order."""
        return [(s, t) for s in self.sources for t in self.targets]

    @property
    def pair_labels(self) -> list[str]:
        """``"source->target"`` of every pair, in pair-code order (unique: validation
        refuses names that would make two pairs share a label)."""
        return [pair_label(s, t) for s, t in self.pairs]

    @property
    def observed_pairs(self) -> np.ndarray:
        """Boolean mask over the pair grid: does the pair have at least one row?"""
        mask = np.zeros(len(self.sources) * len(self.targets), dtype=bool)
        mask[np.unique(self.pair_idx)] = True
        return mask

    def subset(self, mask: np.ndarray | pd.Series, *, drop_unused: bool = False) -> RunTable:
        """Rows where ``mask`` holds.

        By default every source and target is kept (and so are the codes); with
        ``drop_unused=True`` those left without rows are dropped from the levels, so that
        the pair grid only spans what the rows can inform.
        """
        df = self.df.loc[np.asarray(mask)].reset_index(drop=True)
        if drop_unused:
            for col in ("source", "target"):
                df[col] = df[col].cat.remove_unused_categories()
        return RunTable(df, self.name)

    def with_levels(self, sources: Sequence[str], targets: Sequence[str]) -> RunTable:
        """Re-code against given source and target lists (e.g. those a posterior was fit on).

        Raises ``RunTableError`` naming the first row whose source or target is not listed.
        """
        df = self.df.copy()
        problems = []
        for col, levels in (("source", sources), ("target", targets)):
            unknown = ~df[col].astype(str).isin(levels)
            for i in np.flatnonzero(unknown.to_numpy())[:_MAX_REPORTED]:
                problems.append(
                    Problem(i + 1, col, f"{df[col].iloc[i]!r} is not one of the fitted {col}s "
                            f"{list(levels)}")
                )
        if problems:
            raise RunTableError(self.name, problems)
        for col, levels in (("source", sources), ("target", targets)):
            df[col] = pd.Categorical(df[col].astype(str), categories=list(levels))
        return RunTable(df, self.name)

    def summary(self) -> dict[str, object]:
        """Counts and ranges, as printed by ``bayes-transfer validate``."""
        df = self.df
        return {
            "rows": len(df),
            "runs": int(df["run_id"].nunique()),
            "sources": list(self.sources),
            "targets": list(self.targets),
            "pairs observed": f"{int(self.observed_pairs.sum())} of {len(self.pairs)}",
            "params (N)": _range(df["params"]),
            "pretrain_tokens (p)": _range(df["pretrain_tokens"]),
            "unknown pretrain_tokens (p)": int(df["pretrain_tokens"].isna().sum()),
            "finetune_tokens (f)": _range(df["finetune_tokens"]),
            "loss": f"{df['loss'].min():.4g} .. {df['loss'].max():.4g}",
            "zero-shot rows (f = 0)": int((df["finetune_tokens"] == 0).sum()),
        }


def _range(s: pd.Series) -> str:
    if s.isna().all():
        return "unknown"
    return f"{s.min():.3g} .. {s.max():.3g}"


def load_runs(
    source: str | os.PathLike[str] | pd.DataFrame | RunTable, *, name: str | None = None
) -> RunTable:
    """Load and validate a run table from a CSV or Parquet path, or a DataFrame.

    Args:
        source: a ``.csv`` / ``.parquet`` path, a DataFrame, or an already loaded table.
        name: how error messages call the table (default: the file name).

    Raises:
        RunTableError: naming each bad row and column (the first 20 are listed).
        FileNotFoundError: when the path does not exist.

    Example:
        >>> load_runs(pd.DataFrame({"run_id": ["a"]}))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        bayes_transfer.data.RunTableError: <DataFrame>, column source: missing required column...
    """
    if isinstance(source, RunTable):
        return source
    if isinstance(source, pd.DataFrame):
        return validate(source, name or "<DataFrame>", row_base=None)
    path = Path(source)
    return validate(read_table(path, name=name), name or path.name, row_base=1)


def query_rows(rows: pd.DataFrame | RunTable, name: str = "prediction rows") -> RunTable:
    """Rows to predict or score (runs not yet measured), checked as a run table:
    ``loss`` and ``run_id`` may be missing (a placeholder loss is never used; ids are
    numbered). A malformed row is named by its row and column, as in :func:`load_runs`.

    Example:
        >>> import pandas as pd
        >>> rows = pd.DataFrame({"source": ["a"], "target": ["x"], "params": [1e6],
        ...                      "pretrain_tokens": [1e8], "finetune_tokens": [0]})
        >>> len(query_rows(rows))
        1
    """
    if isinstance(rows, RunTable):
        return rows
    missing = [c for c in REQUIRED_COLUMNS if c not in ("run_id", "loss")
               and c not in rows.columns]
    if missing:  # said before the placeholders below join the columns listed
        raise RunTableError(name, [Problem(None, c, "missing required column")
                                   for c in missing]
                            + [Problem(None, None, f"its columns are "
                                                   f"{list(map(str, rows.columns))}")])
    df = rows.copy()
    if "loss" not in df.columns:
        df["loss"] = 1.0  # placeholder so the schema check passes; never used
    if "run_id" not in df.columns:
        df["run_id"] = [f"new-{i}" for i in range(len(df))]
    return load_runs(df, name=name)


def read_table(path: str | os.PathLike[str], *, name: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet table as :func:`load_runs` does, without validating it.

    The one reader of tabular input files (run tables, prediction rows, designs): names
    are read as text (``"007"`` stays ``"007"``, ``"NA"`` and ``"null"`` stay names; only
    an empty cell is missing), numbers keep pandas' missing-value spellings.

    Raises:
        RunTableError: the file cannot be read or parsed, or is of an unknown type.
        FileNotFoundError: when the path does not exist.
    """
    path = Path(path)
    name = name or path.name
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run table")
    if not path.is_file():
        raise RunTableError(name, [Problem(None, None, f"{path} is not a file")])
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".tsv"):
            # Read identifiers as strings so that "007" stays "007"; numbers are checked below.
            df = pd.read_csv(
                path,
                sep="\t" if suffix == ".tsv" else ",",
                dtype={c: "string" for c in ("run_id", "source", "target")},
                # A distribution may well be called "NA" or "null": only an empty cell is
                # missing in a name column; numeric columns keep pandas' NA spellings.
                keep_default_na=False,
                na_values={c: [""] if c in ("run_id", "source", "target") else _NA_SPELLINGS
                           for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)},
                low_memory=False,
            )
        else:
            raise RunTableError(name, [Problem(None, None, f"unknown file type {suffix!r}; "
                                               "use .csv or .parquet")])
    except RunTableError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            OSError, ValueError) as exc:
        raise RunTableError(name, [Problem(None, None, f"cannot be parsed: {exc}")]) from exc
    return df


def validate(df: pd.DataFrame, name: str, row_base: int | None = 1) -> RunTable:
    """Check ``df`` against the contract and return a typed :class:`RunTable`.

    ``row_base`` = 1 numbers rows from 1 as in a file; None uses the DataFrame's index labels.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    labels = (np.arange(len(df)) + row_base) if row_base is not None else np.asarray(df.index)
    problems: list[Problem] = []
    total = 0

    def flag(mask: np.ndarray, column: str, describe) -> None:
        nonlocal total
        bad = np.flatnonzero(mask)
        total += len(bad)
        for i in bad[: max(0, _MAX_REPORTED - len(problems))]:
            problems.append(Problem(_label(labels[i]), column, describe(i)))

    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    problems += [Problem(None, c, "missing required column") for c in missing]
    if missing:
        problems.append(Problem(None, None, f"its columns are {list(map(str, df.columns))}"))
        raise RunTableError(name, problems)
    if len(df) == 0:
        raise RunTableError(name, [Problem(None, None, "the table has no rows")])

    out = pd.DataFrame(index=pd.RangeIndex(len(df)))
    for col in ("run_id", "source", "target"):
        raw = df[col]
        if not _is_text_like(raw):
            problems.append(Problem(None, col, f"dtype {raw.dtype} is not text"))
            total += 1
            continue
        if pd.api.types.is_object_dtype(raw):
            # Parquet (or a DataFrame) may hold bytes, lists or dicts in a name column.
            other = raw.map(_not_text).to_numpy(bool)
            if other.any():
                flag(other, col, lambda i, r=raw: f"a {type(r.iloc[i]).__name__} value "
                     f"({_show(r.iloc[i])[:40]}) is not text")
                continue
        values = raw.astype("string")
        empty = (values.isna() | (values.str.strip() == "")).to_numpy(bool)
        flag(empty, col, lambda i, col=col: "is empty; every row needs a " + col)
        # NUL, newlines and other control characters break the files a name is written to
        # (netCDF, CSV) and the terminal it is printed on.
        control = values.str.contains(_CONTROL, regex=True, na=False).to_numpy(bool)
        flag(control & ~empty, col, lambda i, v=values: f"{v.iloc[i]!r} contains a control "
             "character (NUL, a newline, a tab...)")
        out[col] = values.astype(str).str.strip().to_numpy()

    numeric_rules = {
        "params": (True, lambda v: v > 0, "is not a positive integer"),
        "pretrain_tokens": (True, lambda v: v >= 0, "is not a non-negative integer"),
        "finetune_tokens": (True, lambda v: v >= 0, "is not a non-negative integer"),
        "loss": (False, lambda v: v > 0, "is not a positive number"),
    }
    for col, (integer, ok, what) in numeric_rules.items():
        values = _numeric(df[col], col, problems)
        if values is None:
            total += 1
            continue
        with np.errstate(invalid="ignore"):
            good = np.isfinite(values) & ok(values)
            if integer:
                good &= (values == np.round(values)) & (values < _MAX_COUNT)
        unknown = np.zeros(len(values), dtype=bool)
        if col in _MAY_BE_UNKNOWN:
            # An empty cell (or NA) is "unknown"; text that is not a number stays an error.
            unknown = np.isnan(values) & ~_not_a_number(df[col], values)
            good |= unknown
        raw = df[col].to_numpy()
        if integer:
            what += " below 1e16"
        if col in _MAY_BE_UNKNOWN:
            what += " (leave it empty when unknown)"
        flag(~good, col, lambda i, raw=raw, what=what: f"{_show(raw[i])} {what}")
        whole = integer and good.all() and not unknown.any()
        out[col] = values.astype(np.int64 if whole else np.float64)

    if "loss_se" in df.columns:
        values = _numeric(df["loss_se"], "loss_se", problems)
        if values is None:
            total += 1
        else:
            raw = df["loss_se"].to_numpy()
            with np.errstate(invalid="ignore"):
                bad = ~np.isnan(values) & ~(np.isfinite(values) & (values >= 0))
            bad |= _not_a_number(df["loss_se"], values)
            flag(bad, "loss_se", lambda i: f"{_show(raw[i])} is not a non-negative number "
                 "(leave it empty when unknown)")
            if "loss" in out.columns:
                # A standard error above the loss itself carries no information and, as
                # the sd of a log loss, would swamp every other row's weight.
                with np.errstate(invalid="ignore"):
                    huge = ~bad & (values > out["loss"].to_numpy(np.float64))
                flag(huge, "loss_se", lambda i: f"{_show(raw[i])} is larger than the loss "
                     f"itself ({out['loss'].iat[i]}); leave it empty when unknown")
            out["loss_se"] = np.nan_to_num(values, nan=0.0)
    else:
        out["loss_se"] = 0.0

    if "seed" in df.columns:
        values = _numeric(df["seed"], "seed", problems)
        if values is None:
            total += 1
        else:
            raw = df["seed"].to_numpy()
            with np.errstate(invalid="ignore"):
                # inf and |seed| >= 2**63 would overflow Int64 below.
                bad = ~np.isnan(values) & ~(np.isfinite(values) & (values == np.round(values))
                                            & (np.abs(values) < 2.0**63))
            bad |= _not_a_number(df["seed"], values)
            flag(bad, "seed", lambda i: f"{_show(raw[i])} is not an integer")
            if not bad.any():
                out["seed"] = pd.array(np.where(np.isnan(values), pd.NA, values), dtype="Int64")
    else:
        out["seed"] = pd.array([pd.NA] * len(df), dtype="Int64")

    if problems:
        raise RunTableError(name, problems, total=max(total, len(problems)))

    _check_duplicates(out, labels, name)
    _check_run_consistency(out, labels, name)
    _check_pair_labels(out, labels, name)

    for col in ("source", "target"):
        out[col] = pd.Categorical(out[col], categories=sorted(out[col].unique()))
    extra = [c for c in df.columns if c not in out.columns]
    for c in extra:
        out[c] = df[c].to_numpy()
    return RunTable(out, name)


def _label(x) -> int | str:
    return int(x) if isinstance(x, (int, np.integer)) else str(x)


def _show(x) -> str:
    return repr(x) if isinstance(x, str) else str(x)


def _not_text(v) -> bool:
    """A cell of a name column that is neither text, a whole number nor missing."""
    if v is None or v is pd.NA or isinstance(v, str | int | np.integer):
        return False
    return not (isinstance(v, float | np.floating) and np.isnan(v))


def _is_text_like(s: pd.Series) -> bool:
    return (
        pd.api.types.is_string_dtype(s)
        or pd.api.types.is_object_dtype(s)
        or isinstance(s.dtype, pd.CategoricalDtype)
        or pd.api.types.is_integer_dtype(s)
    )


def _numeric(s: pd.Series, col: str, problems: list[Problem]) -> np.ndarray | None:
    """Parse a column as float64; unparseable cells become NaN (and are then flagged)."""
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_complex_dtype(s) or \
            pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_timedelta64_dtype(s):
        problems.append(Problem(None, col, f"dtype {s.dtype} is not a number"))
        return None
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _not_a_number(s: pd.Series, values: np.ndarray) -> np.ndarray:
    """Cells of an optional column that hold text that is not a number (e.g. "x").

    Parsing turned them into NaN, which would otherwise read as "unknown"; empty cells and
    the usual missing-value spellings ("nan", "NA", "null", "None") stay missing.
    """
    if pd.api.types.is_numeric_dtype(s):
        return np.zeros(len(s), dtype=bool)
    text = s.astype("string").str.strip().str.lower()
    missing = text.isna() | text.isin(["", "nan", "na", "n/a", "null", "none", "<na>"])
    return np.isnan(values) & ~missing.to_numpy(dtype=bool, na_value=True)


def _check_duplicates(out: pd.DataFrame, labels: np.ndarray, name: str) -> None:
    key = list(_EVAL_KEY) + ["seed"]
    keyed = out[key].copy()
    keyed["seed"] = keyed["seed"].astype("Float64").fillna(-1.0)
    dup = keyed.duplicated(keep=False).to_numpy()
    if not dup.any():
        return
    problems = []
    dup_rows = np.flatnonzero(dup)
    groups = keyed.iloc[dup_rows].groupby(key, sort=False, dropna=False).indices
    for positions in list(groups.values())[:_MAX_REPORTED]:
        idx = dup_rows[positions]
        first, rest = idx[0], idx[1:]
        for j in rest:
            same = out["loss"].iat[j] == out["loss"].iat[first]
            msg = (f"repeats row {_label(labels[first])} (same run, target, token counts and "
                   "seed); give replicates distinct seeds") if same else (
                f"{out['loss'].iat[j]} contradicts row {_label(labels[first])} "
                f"({out['loss'].iat[first]}) for the same run, target, token counts and seed")
            problems.append(Problem(_label(labels[j]), "loss", msg))
    raise RunTableError(name, problems, total=int(dup.sum()) - len(groups))


def _check_run_consistency(out: pd.DataFrame, labels: np.ndarray, name: str) -> None:
    # One training run has one source and one size, whatever it is evaluated on.
    problems = []
    for col in ("source", "params"):
        first = out.groupby("run_id", sort=False)[col].transform("first")
        bad = np.flatnonzero((out[col] != first).to_numpy())
        for i in bad[:_MAX_REPORTED]:
            problems.append(Problem(_label(labels[i]), col, f"{out[col].iat[i]} differs from "
                                    f"{first.iat[i]} given for run {out['run_id'].iat[i]!r} "
                                    "in an earlier row"))
    if problems:
        raise RunTableError(name, problems)


def pair_label(source, target):
    """The label ``"source->target"`` of a pair; ``source`` and ``target`` may be strings
    or pandas Series of strings (then the labels of rows).

    Example:
        >>> pair_label("web", "code")
        'web->code'
    """
    return source + ARROW + target


def _check_pair_labels(out: pd.DataFrame, labels: np.ndarray, name: str) -> None:
    # "source->target" names a pair in the posterior's ``pair`` coordinate, in reports and
    # in the baseline's groups, so two pairs of the grid must not share it. Only names
    # that contain the arrow can collide: source "a->b" with target "c" and source "a"
    # with target "b->c" are both "a->b->c".
    sources, targets = out["source"].unique(), out["target"].unique()
    if not any(ARROW in str(n) for n in (*sources, *targets)):
        return
    seen: dict[str, tuple[str, str]] = {}
    for s in sorted(sources):
        for t in sorted(targets):
            label = pair_label(s, t)
            if label not in seen:
                seen[label] = (s, t)
                continue
            first = seen[label]
            # Name the row of the pair whose source carries the arrow (its name is the one
            # to change); the other pair may have no row at all.
            col, value = ("source", s) if ARROW in s else ("target", t)
            row = int(np.flatnonzero((out[col] == value).to_numpy())[0])
            raise RunTableError(name, [Problem(
                _label(labels[row]), col,
                f"{value!r} makes the pair label {label!r} ({s!r} -> {t!r}), which the "
                f"pair {first[0]!r} -> {first[1]!r} also has; rename a dataset so that "
                f"pairs stay distinct once written as source{ARROW}target")])


def read_chinchilla_csv(
    path: str | os.PathLike[str], *, distribution: str = "massivetext"
) -> RunTable:
    """Alias of :func:`bayes_transfer.public_data.read_chinchilla_svg`, the readers' home.

    Example:
        >>> runs = read_chinchilla_csv("../shared/data/chinchilla_svg_extracted.csv")  # doctest: +SKIP
        >>> len(runs)  # doctest: +SKIP
        245
    """
    from bayes_transfer.public_data import read_chinchilla_svg

    return read_chinchilla_svg(path, distribution=distribution)
