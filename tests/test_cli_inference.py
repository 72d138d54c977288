"""``bayes-transfer fit | report | predict | simulate`` through typer's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from bayes_transfer.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, tiny_sim):
    """A run table and the posterior `fit` wrote for it (tiny, for the plumbing only)."""
    d = tmp_path_factory.mktemp("cli")
    runs = d / "runs.csv"
    tiny_sim.runs.df.to_csv(runs, index=False)
    result = runner.invoke(app, ["fit", str(runs), "--spec", "transfer-gap", "--out",
                                 str(d / "post.nc"), "--chains", "1", "--draws", "30",
                                 "--warmup", "30", "--max-tree-depth", "4", "--no-progress"])
    return d, result


def test_fit_prints_diagnostics_and_gaps(fitted):
    d, result = fitted
    assert result.exit_code == 0, result.output
    assert (d / "post.nc").exists()
    # 30 draws cannot pass the ESS check: the warning says so, with its advice.
    assert "NOT trustworthy" in result.output and "run more draws" in result.output
    assert "b->y" not in result.output and "transfer gap G per pair" in result.output


def test_fit_strict_fails_on_bad_diagnostics(fitted, tiny_sim):
    d, _ = fitted
    result = runner.invoke(app, ["fit", str(d / "runs.csv"), "--out", str(d / "strict.nc"),
                                 "--chains", "1", "--draws", "10", "--warmup", "10",
                                 "--max-tree-depth", "3", "--no-progress", "--strict"])
    assert result.exit_code == 1 and "--strict" in result.output


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_report_formats(fitted, fmt):
    d, _ = fitted
    result = runner.invoke(app, ["report", str(d / "post.nc"), "--ci", "0.8", "--format", fmt])
    assert result.exit_code == 0, result.output
    if fmt == "csv":
        df = pd.read_csv(pd.io.common.StringIO(result.stdout))
        assert list(df.columns) == ["param", "source", "target", "observed", "median",
                                    "lower", "upper", "r_hat", "ess_bulk", "ess_tail",
                                    "mcse_median"]
        assert len(df) == 4 and df["observed"].tolist() == [True, True, True, False]
    elif fmt == "json":
        doc = json.loads(result.stdout)
        assert doc["ci"] == 0.8 and "ok" in doc["diagnostics"] and len(doc["rows"]) == 4
    else:
        assert "a->x" not in result.output and "transfer gap" in result.output


def test_report_params(fitted):
    d, _ = fitted
    result = runner.invoke(app, ["report", str(d / "post.nc"), "--params", "--format", "csv"])
    df = pd.read_csv(pd.io.common.StringIO(result.stdout))
    assert set(df["param"]) == {"A", "alpha", "G", "beta", "E"}
    assert (df.loc[df["param"] == "alpha", "level"] == "source").all()


def test_predict_writes_intervals(fitted):
    d, _ = fitted
    new = d / "new.csv"
    pd.DataFrame({"source": ["b", "a"], "target": ["y", "x"], "params": [10**6] * 2,
                  "pretrain_tokens": [10**6] * 2, "finetune_tokens": [10**5] * 2}).to_csv(
        new, index=False)
    out = d / "pred.csv"
    result = runner.invoke(app, ["predict", str(d / "post.nc"), "--runs", str(new),
                                 "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out)
    assert (pred["loss_lower"] < pred["loss_median"]).all()
    assert (pred["loss_median"] < pred["loss_upper"]).all()
    table = runner.invoke(app, ["predict", str(d / "post.nc"), "--runs", str(new),
                                "--format", "table", "--kind", "observation"])
    assert table.exit_code == 0 and "loss_median" in table.output
    # Written to a file, the format asked for wins over the file's suffix.
    for name, fmt, is_json in (("p.json", ["--format", "json"], True),
                               ("p2.json", ["--format", "csv"], False)):
        res = runner.invoke(app, ["predict", str(d / "post.nc"), "--runs", str(new),
                                  "--out", str(d / name), *fmt])
        assert res.exit_code == 0, res.output
        text = (d / name).read_text()
        assert text.startswith("{") is is_json, text[:80]
        if is_json:
            assert len(json.loads(text)["rows"]) == 2
    # Bambi's kind names; the older ones are aliases of them.
    widths = {}
    for kind in ("response_params", "mean", "response", "observation"):
        res = runner.invoke(app, ["predict", str(d / "post.nc"), "--runs", str(new),
                                  "--format", "csv", "--kind", kind, "--out",
                                  str(d / f"{kind}.csv")])
        assert res.exit_code == 0, res.output
        got = pd.read_csv(d / f"{kind}.csv")
        widths[kind] = (got["loss_upper"] - got["loss_lower"]).to_numpy()
    np.testing.assert_array_equal(widths["mean"], widths["response_params"])
    np.testing.assert_array_equal(widths["observation"], widths["response"])
    # Noise widens the interval of the observed pair (the second row, a -> x). The never-run pair
    # b -> y is ~50 nats wide from its crossed effects alone: 30 draws' quantiles move
    # more than the noise adds, so its two widths are not compared.
    assert widths["response"][1] > widths["response_params"][1]


def test_simulate_writes_table_and_truth(tmp_path):
    out = tmp_path / "sim.csv"
    result = runner.invoke(app, ["simulate", "transfer-gap", "--sources", "web,code",
                                 "--targets", "math", "--pretrain-tokens", "1e7",
                                 "--finetune-tokens", "1e4,1e5", "--out", str(out),
                                 "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 4
    truth = json.loads((tmp_path / "sim.truth.json").read_text())
    assert set(truth["params"]["G"]) == {"code->math", "web->math"} and truth["seed"] == 1


@pytest.mark.parametrize("args, words", [
    (["fit", "{d}/runs.csv", "--spec", "nope", "--out", "{d}/x.nc"], "bad model spec"),
    (["fit", "{d}/missing.csv", "--out", "{d}/x.nc"], "no such run table"),
    (["report", "{d}/runs.csv"], "bad posterior file"),
    (["predict", "{d}/post.nc", "--runs", "{d}/bad.csv"], "bad run table"),
    (["simulate", "transfer-gap", "--params", "big", "--out", "{d}/s.csv"], "--params"),
])
def test_bad_input_is_one_clear_message(fitted, args, words):
    d, _ = fitted
    pd.DataFrame({"source": ["zz"], "target": ["x"], "params": [1], "pretrain_tokens": [1],
                  "finetune_tokens": [1]}).to_csv(d / "bad.csv", index=False)
    result = runner.invoke(app, [a.format(d=d) for a in args])
    assert result.exit_code == 1
    assert words in result.output and "Traceback" not in result.output


def test_every_command_help_has_an_example():
    for cmd in ("fit", "report", "predict", "simulate"):
        result = runner.invoke(app, [cmd, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, cmd
