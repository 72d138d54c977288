"""The run-table contract: loading, validation messages, duplicates, scale."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bayes_transfer.cli import app
from bayes_transfer.data import RunTableError, load_runs, read_chinchilla_csv

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def good_rows(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(n)],
        "source": ["web", "code"] * (n // 2),
        "target": ["math"] * n,
        "params": [10**6] * n,
        "pretrain_tokens": [10**8] * n,
        "finetune_tokens": [10**5 * (i + 1) for i in range(n)],
        "loss": np.linspace(2.5, 2.0, n),
    })


def write_csv(tmp_path: Path, df: pd.DataFrame, name: str = "runs.csv") -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_loads_and_indexes_pairs_over_the_full_grid():
    runs = load_runs(good_rows())
    assert runs.sources == ("code", "web") and runs.targets == ("math",)
    assert runs.pair_labels == ["code->math", "web->math"]
    assert runs.observed_pairs.tolist() == [True, True]
    assert runs.df["params"].dtype == np.int64
    assert runs.df["loss_se"].eq(0).all() and runs.df["seed"].isna().all()


def test_csv_error_names_file_row_and_column(tmp_path):
    df = good_rows()
    df["loss"] = df["loss"].astype(object)
    df.loc[2, "loss"] = -0.3
    with pytest.raises(RunTableError) as err:
        load_runs(write_csv(tmp_path, df))
    assert str(err.value) == "runs.csv, row 3, column loss: -0.3 is not a positive number"
    assert err.value.problems[0].row == 3 and err.value.problems[0].column == "loss"


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("loss", "nan", "nan is not a positive number"),
        ("loss", "inf", "inf is not a positive number"),
        ("params", "abc", "'abc' is not a positive integer"),
        ("params", "1.5", "1.5 is not a positive integer"),
        ("pretrain_tokens", "-10", "-10 is not a non-negative integer"),
        ("finetune_tokens", "1e20", "is not a non-negative integer below 1e16"),
        ("source", "", "is empty"),
        ("loss_se", "-1", "is not a non-negative number"),
        ("seed", "1.5", "is not an integer"),
    ],
)
def test_each_bad_cell_is_named(tmp_path, column, value, words):
    df = good_rows().astype({c: object for c in good_rows().columns})
    if column not in df:
        df[column] = 0
        df = df.astype({column: object})
    df.loc[1, column] = value
    with pytest.raises(RunTableError) as err:
        load_runs(write_csv(tmp_path, df))
    assert f"runs.csv, row 2, column {column}: " in str(err.value)
    assert words in str(err.value)


def test_missing_column_and_unknown_dtype():
    with pytest.raises(RunTableError, match="column loss: missing required column"):
        load_runs(good_rows().drop(columns="loss"))
    df = good_rows()
    df["params"] = pd.to_datetime(df["params"])
    with pytest.raises(RunTableError, match="column params: dtype datetime64.* is not a number"):
        load_runs(df)
    df = good_rows()
    df["loss"] = df["loss"] + 1j
    with pytest.raises(RunTableError, match="column loss: dtype complex128 is not a number"):
        load_runs(df)


def test_dataframe_errors_use_index_labels():
    df = good_rows().set_index(pd.Index([10, 11, 12, 13]))
    df.loc[12, "loss"] = 0.0
    with pytest.raises(RunTableError, match="<DataFrame>, row 12, column loss"):
        load_runs(df)


def test_contradicting_duplicates_refused_replicate_seeds_kept():
    df = pd.concat([good_rows(2), good_rows(2).iloc[[0]].assign(loss=3.0)], ignore_index=True)
    with pytest.raises(RunTableError, match="row 2, column loss: 3.0 contradicts row 0"):
        load_runs(df)
    same = pd.concat([good_rows(2), good_rows(2).iloc[[0]]], ignore_index=True)
    with pytest.raises(RunTableError, match="row 2, column loss: repeats row 0"):
        load_runs(same)
    replicates = same.assign(seed=[0, 0, 1], loss=[2.5, 2.0, 2.6])
    assert len(load_runs(replicates)) == 3


def test_names_that_would_share_a_pair_label_are_refused(tmp_path):
    """"a->b" with "c" and "a" with "b->c" are both the pair "a->b->c": the posterior's pair
    coordinate, the baseline's groups and reports would mix the two pairs."""
    df = good_rows(4).assign(source=["a->b", "a", "a->b", "a"], target=["c", "b->c"] * 2)
    path = write_csv(tmp_path, df)
    with pytest.raises(RunTableError, match=r"runs.csv, row 1, column source: 'a->b' makes "
                       r"the pair label 'a->b->c' \('a->b' -> 'c'\), which the pair 'a' -> "
                       r"'b->c' also has"):
        load_runs(path)
    # The same names on a grid where no two pairs meet load, and keep their labels.
    runs = load_runs(df.assign(source=["a->b", "x", "a->b", "x"]))
    assert runs.pair_labels == ["a->b->b->c", "a->b->c", "x->b->c", "x->c"]
    assert len(set(runs.pair_labels)) == 4


def test_one_run_has_one_source_and_size():
    df = good_rows(2).assign(run_id="same", finetune_tokens=[1, 2])
    df.loc[1, "source"] = "web"
    df.loc[0, "source"] = "code"
    with pytest.raises(RunTableError, match="row 1, column source: web differs from code"):
        load_runs(df)


def test_empty_table_and_bad_files(tmp_path):
    with pytest.raises(RunTableError, match="no rows"):
        load_runs(good_rows().iloc[:0])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(RunTableError, match="empty.csv: cannot be parsed"):
        load_runs(tmp_path / "empty.csv")
    (tmp_path / "runs.json").write_text("{}")
    with pytest.raises(RunTableError, match="unknown file type"):
        load_runs(tmp_path / "runs.json")
    with pytest.raises(FileNotFoundError):
        load_runs(tmp_path / "nope.csv")


def test_parquet_round_trip_and_extra_columns_kept(tmp_path):
    df = good_rows().assign(note="x", loss_se=0.01, seed=[1, 2, 3, 4])
    df.to_parquet(tmp_path / "runs.parquet")
    runs = load_runs(tmp_path / "runs.parquet")
    assert list(runs.df["note"]) == ["x"] * 4
    assert runs.df["seed"].tolist() == [1, 2, 3, 4]


def test_identifiers_stay_strings(tmp_path):
    df = good_rows().assign(run_id=["007", "008", "009", "010"])
    assert load_runs(write_csv(tmp_path, df)).df["run_id"].tolist()[0] == "007"


def test_million_rows_validate_in_seconds():
    n = 1_000_000
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "run_id": np.char.add("r", np.arange(n).astype(str)),
        "source": rng.choice(["a", "b", "c"], n),
        "target": rng.choice(["x", "y"], n),
        "params": rng.integers(1, 10**9, n),
        "pretrain_tokens": rng.integers(0, 10**12, n),
        "finetune_tokens": rng.integers(0, 10**9, n),
        "loss": rng.uniform(1, 5, n),
    })
    start = time.perf_counter()
    runs = load_runs(df)
    elapsed = time.perf_counter() - start
    assert len(runs) == n
    # A generous bound: the point is "seconds, not minutes" on a loaded 2-core machine.
    assert elapsed < 60, elapsed


@pytest.mark.skipif(not (SHARED / "chinchilla_svg_extracted.csv").exists(),
                    reason="shared reference data not present")
def test_reads_chinchilla_data():
    runs = read_chinchilla_csv(SHARED / "chinchilla_svg_extracted.csv")
    assert len(runs) == 245
    row = runs.df.iloc[0]
    assert row["pretrain_tokens"] == pytest.approx(row["training_flop"] / (6 * row["params"]),
                                                   rel=1e-6, abs=1)
    assert (runs.df["finetune_tokens"] == 0).all()


def test_cli_validate_ok_and_errors(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(write_csv(tmp_path, good_rows()))])
    assert ok.exit_code == 0, ok.output
    assert "valid run table" in ok.output and "code, web" in ok.output
    before = sorted(p.name for p in tmp_path.iterdir())
    df = good_rows().astype({"loss": object})
    df.loc[0, "loss"] = "nan"
    bad = runner.invoke(app, ["validate", str(write_csv(tmp_path, df, "bad.csv"))])
    assert bad.exit_code == 1
    assert "bad.csv, row 1, column loss: nan is not a positive number" in bad.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["bad.csv"])
    missing = runner.invoke(app, ["validate", str(write_csv(tmp_path, good_rows().drop(
        columns="target"), "missing.csv"))])
    assert missing.exit_code == 1 and "column target: missing required column" in missing.output


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    import os

    from bayes_transfer._io import atomic_path, remove_stale_temps

    dead = tmp_path / ".runs.csv.999999999.abcd1234.csv.tmp"  # no such process
    live = tmp_path / f".runs.csv.{os.getpid()}.abcd1234.csv.tmp"
    other = tmp_path / ".post.nc.999999999.abcd1234.nc.tmp"
    unrelated = tmp_path / ".notes.tmp"
    for p in (dead, live, other, unrelated):
        p.write_text("half")
    assert remove_stale_temps(tmp_path, "runs.csv") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, other.name, unrelated.name])
    assert remove_stale_temps(tmp_path) == 1  # any destination
    assert not other.exists() and live.exists() and unrelated.exists()
    with atomic_path(tmp_path / "runs.csv") as tmp:  # the writer's own naming scheme
        assert tmp.name.startswith(f".runs.csv.{os.getpid()}.") and tmp.name.endswith(".tmp")
        tmp.write_text("a\n1\n")
    assert (tmp_path / "runs.csv").read_text() == "a\n1\n"
