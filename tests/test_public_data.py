"""Public tables as run tables: the bundled copies, the converters, unknown pre-training."""

from __future__ import annotations

import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import bayes_transfer as bt
from bayes_transfer.bundled import DATA_DIR
from bayes_transfer.cli import app
from bayes_transfer.data import RunTableError, load_runs, read_chinchilla_csv
from bayes_transfer.public_data import (
    LeftOutWarning,
    convert,
    load_public,
    read_chinchilla_svg,
    read_llm_line,
    read_rectified_scaling,
)

RECTIFIED = DATA_DIR / "rectified-scaling"
LLM_LINE = DATA_DIR / "llm-line" / "latest_pm_hf.csv"
CHINCHILLA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / \
    "chinchilla_svg_extracted.csv"
SIZES = [0, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 102400, 204800, 409600,
         819200, 1638400]
runner = CliRunner()


def quiet_llm_line(**kw) -> bt.RunTable:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeftOutWarning)
        return read_llm_line(LLM_LINE, **kw)


# ---- rectified scaling ----------------------------------------------------------------------
@pytest.mark.parametrize(("stem", "tokens"), [("flan", 35), ("gigaword", 44)])
def test_rectified_scaling_bundled_tables(stem, tokens):
    runs = read_rectified_scaling(RECTIFIED / f"{stem}.csv")
    df = runs.df
    assert len(df) == 30 * 15 and len(runs.sources) == 30 and runs.targets == (stem,)
    assert df["run_id"].is_unique
    assert df["pretrain_tokens"].isna().all() and df["pretrain_tokens"].dtype == np.float64
    assert sorted(df["finetune_examples"].unique()) == SIZES
    assert (df["finetune_tokens"] == df["finetune_examples"] * tokens).all()
    assert (df["tokens_per_example"] == tokens).all()
    assert int((df["finetune_tokens"] == 0).sum()) == 30  # the zero-shot rows
    raw = pd.read_csv(RECTIFIED / f"{stem}.csv")
    first = raw.iloc[0]
    row = df[df["run_id"] == f"{first['config name']}/ft1600"].iloc[0]
    assert row["source"] == first["config name"] and row["params"] == first["size"]
    assert row["loss"] == pytest.approx(first["1600"]) and row["family"] == first["family"]
    assert runs.summary()["unknown pretrain_tokens (p)"] == 450


def test_rectified_scaling_target_and_tokens_per_example(tmp_path):
    other = tmp_path / "alpaca.csv"
    shutil.copy(RECTIFIED / "flan.csv", other)
    with pytest.raises(ValueError, match="no known tokens per example for target 'alpaca'"):
        read_rectified_scaling(other)
    runs = read_rectified_scaling(other, tokens_per_example=10)
    assert runs.targets == ("alpaca",) and runs.df["finetune_tokens"].max() == 16_384_000
    runs = read_rectified_scaling(other, target="FLAN")  # the paper's name, any case
    assert runs.targets == ("FLAN",) and runs.df["tokens_per_example"].eq(35).all()
    with pytest.raises(ValueError, match="tokens_per_example must be a positive number"):
        read_rectified_scaling(other, tokens_per_example=-1)


def test_rectified_scaling_empty_cell_is_left_out_loudly(tmp_path):
    raw = pd.read_csv(RECTIFIED / "flan.csv", dtype=str)
    raw.loc[4, "3200"] = ""
    path = tmp_path / "flan.csv"
    raw.to_csv(path, index=False)
    with pytest.warns(LeftOutWarning, match="1 left out.*Cerebras-GPT-256M at 3200"):
        runs = read_rectified_scaling(path)
    assert len(runs) == 449
    left = convert("rectified-scaling", path).left_out
    assert left[["row", "what"]].values.tolist() == [[5, "cerebras/Cerebras-GPT-256M at 3200 "
                                                      "examples"]]


def _malformed_rectified(tmp_path, row: int, col: str, value: str) -> Path:
    raw = pd.read_csv(RECTIFIED / "gigaword.csv", dtype=str)
    raw.loc[row - 1, col] = value
    path = tmp_path / "gigaword.csv"
    raw.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("row", "col", "value", "words"), [
    (3, "1600", "abc", "'abc' is not a positive loss"),
    (7, "0", "-2.5", "'-2.5' is not a positive loss"),
    (2, "size", "1.5e3x", "'1.5e3x' is not a positive integer"),
    (9, "size", "", "empty is not a positive integer"),
    (20, "config name", "gpt2", "'gpt2' repeats row 18"),
])
def test_rectified_scaling_bad_cells_are_named(tmp_path, row, col, value, words):
    path = _malformed_rectified(tmp_path, row, col, value)
    with pytest.raises(RunTableError) as err:
        read_rectified_scaling(path)
    text = str(err.value)
    assert text.startswith(f"gigaword.csv, row {row}, column {col}: {words}"), text
    assert "\n" not in text and len(err.value.problems) == 1


def test_rectified_scaling_missing_column(tmp_path):
    path = tmp_path / "flan.csv"
    pd.read_csv(RECTIFIED / "flan.csv").drop(columns="size").to_csv(path, index=False)
    with pytest.raises(RunTableError, match=r"^flan.csv, column size: missing required column"):
        read_rectified_scaling(path)


# ---- llm-line -------------------------------------------------------------------------------
def test_llm_line_bundled_table():
    with pytest.warns(LeftOutWarning, match="50 left out.*allenai/OLMo-1B"):
        runs = read_llm_line(LLM_LINE)
    df = runs.df
    # 129 models, 46 OLMo rows without Size and Tokens; 83 x 5 sets less 4 empty cells.
    assert len(df) == 83 * 5 - 4 and df["run_id"].nunique() == 83
    assert runs.targets == ("C4", "FineWeb-Edu", "Pile", "RefinedWeb", "SlimPajama")
    assert runs.sources == ("C4", "FineWeb-Edu", "Pile", "Pile-dedup")
    assert (df["finetune_tokens"] == 0).all() and df["pretrain_tokens"].dtype == np.int64
    assert not df.duplicated(["run_id", "target"]).any()
    # A checkpointed model is one run per token count.
    c4 = df[df["Name"] == "HuggingFaceFW/ablation-model-c4"]
    assert c4["run_id"].nunique() == c4["pretrain_tokens"].nunique() == 26
    assert "HuggingFaceFW/ablation-model-c4@115000000000" in set(c4["run_id"])
    # Trained on C4, evaluated on C4: source == target, from scratch.
    scratch = df[(df["source"] == "C4") & (df["target"] == "C4")]
    assert len(scratch) == 26 and set(scratch["Pretraining Data"]) == {"C4"}
    assert set(df.loc[df["source"] == "Pile", "Pretraining Data"]) == {"The Pile"}


def test_llm_line_metrics_on_a_known_row():
    # EleutherAI/pythia-160m on The Pile UC: loss 3.3965..., BPB 0.58454831...
    def pile(runs):
        df = runs.df
        row = df[(df["run_id"] == "EleutherAI/pythia-160m") & (df["target"] == "Pile")]
        assert len(row) == 1
        return row.iloc[0]

    loss = pile(quiet_llm_line())
    assert loss["loss"] == pytest.approx(3.396583, abs=1e-6)
    assert loss["params"] == 123689472 and loss["pretrain_tokens"] == 299892736000
    assert loss["source"] == "Pile" and loss["loss_unit"] == "nats/token"
    bpb = pile(quiet_llm_line(metric="bpb"))
    assert bpb["loss"] == pytest.approx(0.584548317917044 * math.log(2), rel=1e-12)
    assert bpb["loss_unit"] == "nats/byte"
    with pytest.raises(ValueError, match="metric must be one of"):
        read_llm_line(LLM_LINE, metric="bits")


def test_llm_line_left_out_lists_every_model():
    left = convert("llm-line", LLM_LINE).left_out
    olmo = left[left["reason"].str.startswith("no Size and no Tokens")]
    assert len(olmo) == 46 and set(olmo["what"]) == {"allenai/OLMo-1B", "allenai/OLMo-7B"}
    cells = left[left["reason"].str.startswith("empty cell")]
    assert len(cells) == 4


def _llm_line_copy(tmp_path, edit) -> Path:
    lines = LLM_LINE.read_text().splitlines(keepends=True)
    raw = pd.read_csv(LLM_LINE, skiprows=[1], dtype=str, keep_default_na=False)
    edit(raw)
    path = tmp_path / "latest_pm_hf.csv"
    body = raw.to_csv(index=False, header=False)
    path.write_text(lines[0] + lines[1] + body)
    return path


def test_llm_line_bad_cells_are_named(tmp_path):
    def bad_loss(raw):
        raw.loc[2, "C4 Validation Loss"] = "n/a?"  # the file's line 5: row 4

    with pytest.raises(RunTableError) as err:
        read_llm_line(_llm_line_copy(tmp_path, bad_loss))
    assert str(err.value) == ("latest_pm_hf.csv, row 4, column C4 Validation Loss: 'n/a?' "
                              "is not a positive loss")

    def repeat(raw):
        raw.loc[3, :] = raw.loc[0, :]

    with pytest.raises(RunTableError, match="row 5, column Name: 'HuggingFaceFW/ablation-model-"
                       "c4' with Tokens 115000000000 repeats row 2"):
        read_llm_line(_llm_line_copy(tmp_path, repeat))


# ---- Chinchilla ------------------------------------------------------------------------------
def test_chinchilla_reader_has_one_home():
    if not CHINCHILLA.exists():
        pytest.skip(f"{CHINCHILLA} not present")
    runs = read_chinchilla_svg(CHINCHILLA)
    assert len(runs) == 245 and runs.sources == runs.targets == ("massivetext",)
    alias = read_chinchilla_csv(CHINCHILLA)
    pd.testing.assert_frame_equal(alias.df, runs.df)


def test_chinchilla_bad_cell_is_named_in_the_file_columns(tmp_path):
    path = tmp_path / "svg.csv"
    pd.DataFrame({"Model Size": [1e9, "big"], "Training FLOP": [1e20, 1e21],
                  "loss": [2.5, 2.4]}).to_csv(path, index=False)
    with pytest.raises(RunTableError) as err:
        read_chinchilla_svg(path)
    assert str(err.value) == "svg.csv, row 2, column Model Size: 'big' is not a positive number"


# ---- unknown pretrain_tokens in the run table ------------------------------------------------
def _rows(p) -> pd.DataFrame:
    return pd.DataFrame({"run_id": ["a", "b", "c"], "source": "web", "target": "code",
                         "params": 10**6, "pretrain_tokens": p,
                         "finetune_tokens": [0, 10, 20], "loss": [3.0, 2.5, 2.0]})


def test_unknown_pretrain_tokens_are_kept_as_nan_and_bad_ones_refused():
    runs = load_runs(_rows([np.nan, None, 10**8]))
    p = runs.df["pretrain_tokens"]
    assert p.dtype == np.float64 and p.isna().tolist() == [True, True, False]
    assert runs.summary()["unknown pretrain_tokens (p)"] == 2
    assert load_runs(_rows([1, 2, 3])).df["pretrain_tokens"].dtype == np.int64
    for bad, words in ((-1, "-1.0"), ("x", "'x'"), (1.5, "1.5"), (np.inf, "inf")):
        with pytest.raises(RunTableError) as err:
            load_runs(_rows([np.nan, bad, 10**8]).astype({"pretrain_tokens": object}))
        assert str(err.value).startswith(f"<DataFrame>, row 1, column pretrain_tokens: {words} "
                                         "is not a non-negative integer")


def test_unknown_pretrain_tokens_are_equal_keys_for_duplicates():
    df = pd.concat([_rows(np.nan), _rows(np.nan).iloc[[1]].assign(loss=9.0)],
                   ignore_index=True)
    with pytest.raises(RunTableError, match="row 3, column loss: 9.0 contradicts row 1"):
        load_runs(df)
    # Known and unknown p are different evaluations.
    df.loc[3, "pretrain_tokens"] = 5
    assert len(load_runs(df)) == 4


def test_unknown_pretrain_tokens_survive_a_csv_round_trip(tmp_path):
    path = tmp_path / "runs.csv"
    _rows([np.nan, 7, np.nan]).to_csv(path, index=False)
    assert path.read_text().splitlines()[1].split(",")[4] == ""  # an empty cell
    p = load_runs(path).df["pretrain_tokens"]
    assert p.isna().tolist() == [True, False, True] and p.iloc[1] == 7


def test_unknown_pretrain_tokens_survive_the_posterior_table(tmp_path):
    import xarray as xr

    from bayes_transfer.inference import _table_dataset, _table_from_dataset

    table = load_runs(read_rectified_scaling(RECTIFIED / "flan.csv").df)
    path = tmp_path / "table.nc"
    _table_dataset(table).to_netcdf(path)
    with xr.open_dataset(path) as ds:
        back = _table_from_dataset(ds.load(), "flan")
    assert back.df["pretrain_tokens"].isna().all() and len(back) == 450
    np.testing.assert_array_equal(back.df["loss"], table.df["loss"])
    assert back.df["family"].tolist() == table.df["family"].tolist()


# ---- load_public and the CLI -----------------------------------------------------------------
def test_load_public_names_the_known_tables():
    assert bt.load_public is load_public
    assert len(load_public("rectified-scaling-gigaword")) == 450
    with pytest.warns(LeftOutWarning):
        assert len(load_public("llm-line", metric="bpb")) == 411
    with pytest.raises(KeyError, match="known: rectified-scaling-flan, rectified-scaling-"
                       "gigaword, llm-line"):
        load_public("chinchilla")


def _convert(*args: str):
    return runner.invoke(app, ["convert", *args])


@pytest.mark.parametrize(("fmt", "src", "extra", "rows", "says"), [
    ("rectified-scaling", RECTIFIED / "flan.csv", [], 450,
     "unknown pretrain_tokens: all 450 rows"),
    ("llm-line", LLM_LINE, ["--metric", "bpb"], 411, "no Size and no Tokens"),
    ("chinchilla-svg", CHINCHILLA, ["--target", "mt"], 245, "Training FLOP / (6 x Model Size)"),
])
def test_cli_convert_writes_a_run_table_that_loads_back(tmp_path, fmt, src, extra, rows, says):
    if not src.exists():
        pytest.skip(f"{src} not present")
    out = tmp_path / "runs.csv"
    res = _convert(fmt, str(src), "--out", str(out), *extra)
    assert res.exit_code == 0, res.output
    assert f"{rows} rows" in res.stderr and says in res.stderr
    runs = load_runs(out)
    assert len(runs) == rows
    assert "loss_se" not in pd.read_csv(out).columns  # not invented either
    if fmt == "rectified-scaling":
        assert runs.df["pretrain_tokens"].isna().all()
    if fmt == "chinchilla-svg":
        assert runs.sources == ("mt",)


def _one_error(res, *words: str) -> None:
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and res.stdout == ""
    first, *_ = res.stderr.strip().splitlines()
    assert first.startswith(("error:", "cannot convert")), res.stderr
    for w in words:
        assert w in res.stderr, res.stderr


def test_cli_convert_refuses_malformed_inputs(tmp_path):
    out = tmp_path / "out.csv"
    bad = _malformed_rectified(tmp_path, 3, "1600", "abc")
    _one_error(_convert("rectified-scaling", str(bad), "--out", str(out)),
               "gigaword.csv, row 3, column 1600: 'abc' is not a positive loss")
    missing = tmp_path / "flan.csv"
    pd.read_csv(RECTIFIED / "flan.csv").drop(columns="config name").to_csv(missing,
                                                                             index=False)
    _one_error(_convert("rectified-scaling", str(missing), "--out", str(out)),
               "column config name: missing required column")
    _one_error(_convert("llm-line", str(missing), "--out", str(out)),
               "column Name: missing required column")
    _one_error(_convert("rectified-scaling", str(missing), "--out", str(missing)),
               "is the input file")
    _one_error(_convert("llm-line", str(LLM_LINE), "--out", str(out), "--tokens-per-example",
                        "3"), "does not take tokens_per_example")
    _one_error(_convert("llm-line", str(tmp_path / "nope.csv"), "--out", str(out)),
               "no such published table")
    assert not out.exists()


def test_cli_convert_help_shows_an_example():
    res = runner.invoke(app, ["convert", "--help"], terminal_width=100)
    assert res.exit_code == 0
    assert "Example" in res.output and "bayes-transfer convert rectified-scaling" in res.output


def test_cli_convert_never_replaces_a_file_without_force(tmp_path):
    out = tmp_path / "runs.csv"
    out.write_text("keep me\n")
    res = _convert("rectified-scaling", str(RECTIFIED / "flan.csv"), "--out", str(out))
    _one_error(res, "exists; pass --force")
    assert out.read_text() == "keep me\n"  # nothing lost
    res = _convert("rectified-scaling", str(RECTIFIED / "flan.csv"), "--out", str(out), "--force")
    assert res.exit_code == 0, res.output
    assert len(load_runs(out)) == 450
