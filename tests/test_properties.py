"""Property tests of the run-table loader: any table loads correctly or is refused clearly.

Whatever the table (wrong types, NaN and inf, negative or huge token counts, empty tables,
unicode names, duplicate runs, one row), ``load_runs`` either returns a table that meets
the contract with no row dropped, or raises ``RunTableError`` whose problems name the row
and column. Any other exception (from deep inside pandas, numpy or JAX) fails the test.
"""

from __future__ import annotations

import math
import time
import unicodedata
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bayes_transfer.data import REQUIRED_COLUMNS, RunTable, RunTableError, load_runs

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

names = st.one_of(
    st.sampled_from(["web", "code", "math", " padded ", "007", "😀", "ünïcødé", "a,b",
                     'quo"te', "new\nline", ""]),
    st.text(max_size=6),
)
numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 10**6, 10**15, 10**16, 10**17, 2**63 - 1, -1, 0.5, 1e-300]),
)
cells = st.one_of(numbers, names, st.none(), st.booleans())


def valid_rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(n)],
        "source": rng.choice(["web", "code"], n),
        "target": rng.choice(["math", "prose"], n),
        "params": rng.choice([10**5, 10**6], n),
        "pretrain_tokens": rng.integers(0, 10**9, n),
        "finetune_tokens": rng.integers(0, 10**7, n),
        "loss": rng.uniform(1.0, 5.0, n),
    })


@st.composite
def messy_tables(draw) -> pd.DataFrame:
    """A table with some columns valid, some garbage; maybe missing or extra columns."""
    n = draw(st.integers(min_value=0, max_value=6))
    df = valid_rows(n, seed=draw(st.integers(0, 3)))
    columns = list(REQUIRED_COLUMNS) + ["loss_se", "seed"]
    for col in draw(st.lists(st.sampled_from(columns), max_size=4, unique=True)):
        df[col] = draw(st.lists(cells, min_size=n, max_size=n)) if n else []
    if n and draw(st.booleans()):  # duplicate runs, contradicting or not
        df = pd.concat([df, df.iloc[[0]]], ignore_index=True)
        if draw(st.booleans()):
            df["loss"] = df["loss"].astype(object)
            df.loc[len(df) - 1, "loss"] = 2.5
    if draw(st.booleans()):
        df = df.drop(columns=[draw(st.sampled_from(list(REQUIRED_COLUMNS)))])
    if draw(st.booleans()):
        df["extra ✓"] = range(len(df))
    return df


def check_loaded(table: RunTable, n_rows: int) -> None:
    df = table.df
    assert len(df) == n_rows, "no row may be dropped"
    for col in ("params", "pretrain_tokens", "finetune_tokens"):
        known = df[col].dropna() if col == "pretrain_tokens" else df[col]  # NaN: unknown p
        assert df[col].dtype == (np.int64 if len(known) == len(df) else np.float64), col
        assert (known >= 0).all() and (known < 1e16).all() and (known == known.round()).all()
    assert (df["params"] > 0).all()
    assert df["loss"].dtype == np.float64
    assert np.isfinite(df["loss"]).all() and (df["loss"] > 0).all()
    assert np.isfinite(df["loss_se"]).all() and (df["loss_se"] >= 0).all()
    assert str(df["seed"].dtype) == "Int64"
    for col in ("source", "target"):
        assert isinstance(df[col].dtype, pd.CategoricalDtype)
        cats = list(df[col].cat.categories)
        assert cats == sorted(set(cats)) and df[col].notna().all()
        assert all(isinstance(c, str) and c.strip() == c and c for c in cats)
    assert (df["run_id"].map(lambda s: isinstance(s, str) and s != "")).all()
    # Codes index the declared levels.
    assert table.pair_idx.min() >= 0
    assert table.pair_idx.max() < len(table.sources) * len(table.targets)


def check_refused(err: RunTableError, name: str) -> None:
    assert err.problems, "a refusal lists its problems"
    text = str(err)
    assert name in text
    for p in err.problems[:20]:
        if p.row is not None:
            assert f"row {p.row}" in text
        if p.column is not None:
            assert f"column {p.column}" in text
        assert p.message


def load_or_refuse(source, n_rows: int, name: str) -> RunTable | None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning from pandas is a leak too
        try:
            table = load_runs(source, name=name)
        except RunTableError as err:
            check_refused(err, name)
            return None
    check_loaded(table, n_rows)
    return table


@SETTINGS
@given(messy_tables())
def test_dataframes_load_or_are_refused_clearly(df):
    load_or_refuse(df, len(df), "t.df")


@SETTINGS
@given(messy_tables())
def test_csv_files_load_or_are_refused_clearly(tmp_path_factory, df):
    path = tmp_path_factory.mktemp("csv") / "runs.csv"
    df.to_csv(path, index=False)
    load_or_refuse(path, len(df), "runs.csv")


@SETTINGS
@given(messy_tables())
def test_parquet_files_load_or_are_refused_clearly(tmp_path_factory, df):
    path = tmp_path_factory.mktemp("pq") / "runs.parquet"
    try:
        df.to_parquet(path, index=False)
    except Exception:  # mixed-type columns cannot be written as Parquet at all
        assume(False)
    load_or_refuse(path, len(df), "runs.parquet")


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_csv_are_refused_clearly(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("bytes") / "runs.csv"
    path.write_bytes(blob)
    with pytest.raises(RunTableError) as info:
        load_runs(path)
    check_refused(info.value, "runs.csv")


def should_accept(column: str, value) -> bool:
    """The contract, cell by cell, for the values the test injects."""
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    if column in ("run_id", "source", "target"):
        return not missing and value != ""  # any other value is a name
    if column in ("loss_se", "seed"):
        if missing or value == "":
            return True  # optional: empty means unknown
        if isinstance(value, str):
            return False
        if column == "loss_se":
            return math.isfinite(value) and value >= 0
        return math.isfinite(value) and value == round(value)
    if column == "pretrain_tokens" and (missing or value == ""):
        return True  # p unknown (an empty cell), not from scratch
    if isinstance(value, str) or missing or not math.isfinite(value):
        return False
    if column == "loss":
        return value > 0
    ok = value == round(value) and value < 1e16
    return ok and (value > 0 if column == "params" else value >= 0)


@SETTINGS
@given(n=st.integers(1, 8), row=st.integers(0, 7),
       column=st.sampled_from(["params", "pretrain_tokens", "finetune_tokens", "loss",
                               "source", "target", "run_id", "loss_se", "seed"]),
       bad=st.sampled_from([math.nan, math.inf, -math.inf, -1, "x", None, "", 1e17, 0.5]))
def test_one_bad_cell_is_named_by_row_and_column(n, row, column, bad):
    df = valid_rows(n).assign(loss_se=0.01, seed=0).astype(object)
    row = row % n
    df.loc[row, column] = bad
    try:
        table = load_runs(df, name="t")
    except RunTableError as err:
        check_refused(err, "t")
        assert any(p.row == row and p.column == column for p in err.problems), str(err)
        return
    assert should_accept(column, bad), f"{column}={bad!r} was accepted"
    check_loaded(table, n)


# pandas reads these as missing values in a CSV by default; the random names below avoid
# them, and test_a_source_called_null_survives_a_csv_round_trip checks one of them.
NA_SPELLINGS = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
                "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a",
                "nan", "null"}


@SETTINGS
@given(st.lists(names, min_size=1, max_size=5))
def test_unicode_and_odd_names_survive_a_csv_round_trip(tmp_path_factory, labels):
    # Control characters (NUL, ESC, ...) are refused by design (issue 14, item 8): see
    # test_reliability2.test_8_control_characters...
    assume(all(s.strip() and "\r" not in s and s.strip() not in NA_SPELLINGS
               and not any(unicodedata.category(c) == "Cc" for c in s) for s in labels))
    n = len(labels)
    df = valid_rows(n).assign(source=labels, run_id=[f"{s}#{i}" for i, s in enumerate(labels)])
    path = tmp_path_factory.mktemp("uni") / "runs.csv"
    df.to_csv(path, index=False)
    table = load_or_refuse(path, n, "runs.csv")
    assert table is not None
    assert sorted(table.sources) == sorted({s.strip() for s in labels})


def test_a_source_called_null_survives_a_csv_round_trip(tmp_path):
    path = tmp_path / "runs.csv"
    valid_rows(2).assign(source="null").to_csv(path, index=False)
    assert load_runs(path).sources == ("null",)


def test_empty_and_header_only_tables_are_refused(tmp_path):
    for text in ("", "\n", ",".join(REQUIRED_COLUMNS) + "\n"):
        path = tmp_path / "runs.csv"
        path.write_text(text)
        with pytest.raises(RunTableError):
            load_runs(path)
    with pytest.raises(RunTableError, match="no rows"):
        load_runs(valid_rows(0))


def test_one_row_loads():
    table = load_runs(valid_rows(1))
    check_loaded(table, 1)


@pytest.mark.slow
def test_a_million_rows_validate(tmp_path):
    n = 1_000_000
    df = valid_rows(n, seed=1)
    df["seed"] = np.arange(n) % 3
    start = time.perf_counter()
    table = load_runs(df)
    seconds = time.perf_counter() - start
    print(f"\n1,000,000-row DataFrame validated in {seconds:.1f} s")
    check_loaded(table, n)
    assert seconds < 60  # a sanity bound, not a timing claim
    df.loc[123_456, "loss"] = -1.0
    with pytest.raises(RunTableError, match="row 123456, column loss"):
        load_runs(df)


def test_fit_refuses_a_table_with_no_rows_clearly():
    from bayes_transfer.inference import fit

    table = load_runs(valid_rows(4).assign(pretrain_tokens=10**6, finetune_tokens=10**4))
    with pytest.raises(RunTableError):
        fit(table.subset(np.zeros(4, bool)), "transfer-gap", chains=1, draws=5, warmup=5,
            progress=False)
