"""Every command's output piped to a file: no carriage return, no cut line, full titles.

Each command runs as the real ``bayes-transfer`` console script with stdout and stderr
redirected to files (not a terminal), as in ``bayes-transfer fit ... > log 2>&1`` or a CI
log. A progress bar must then stay off (tqdm and rich draw theirs with ``\\r``), and a
table must be printed at its full width: rich cuts a cell with "…" and wraps a title or a
header when a table does not fit its console, and a console that is not a terminal is 80
columns wide unless told otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _grids import tiny_grid

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("bayes-transfer")
ELLIPSIS = "\u2026"

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed")


def run_piped(*args: str | Path, cwd: Path, timeout: float = 900) -> tuple[int, str, str]:
    """Run ``bayes-transfer ARGS`` with stdout and stderr written to files; their text."""
    # The timeout guards against a hang, not a slow machine: CI's run of `select` passed
    # 300 s (281 s in the fresh-clone check the same day) and failed the submission.
    # The environment of a plain pipe: no width, colour or terminal hints that rich reads.
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
                        "FORCE_TERMINAL", "JUPYTER_COLUMNS", "PY_COLORS")}
    out_path, err_path = cwd / "stdout.log", cwd / "stderr.log"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.run([str(SCRIPT), *map(str, args)], stdout=out, stderr=err,
                              stdin=subprocess.DEVNULL, cwd=cwd, env=env, timeout=timeout,
                              check=False)
    # Bytes, not text mode: text mode would turn a "\r" into "\n" and hide it.
    return (proc.returncode, out_path.read_bytes().decode("utf-8"),
            err_path.read_bytes().decode("utf-8"))


def assert_clean(result: tuple[int, str, str], *whole: str, codes: tuple[int, ...] = (0,)
                 ) -> str:
    """Exit status in ``codes``, no carriage return, no cut cell; each of ``whole`` on one
    line. The text."""
    code, out, err = result
    text = out + err
    assert code in codes, text
    assert "\r" not in text, f"carriage return in piped output:\n{text!r}"
    cut = [line for line in text.splitlines() if ELLIPSIS in line]
    assert not cut, "cut lines:\n" + "\n".join(cut)
    lines = text.splitlines()
    for piece in whole:
        assert any(piece in line for line in lines), f"{piece!r} not on one line:\n{text}"
    return text


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_sim) -> Path:
    """A folder with the tiny run table, rows to predict and candidates to score."""
    d = tmp_path_factory.mktemp("pipes")
    tiny_sim.runs.df.to_csv(d / "runs.csv", index=False)
    # Long names make wide tables: at 80 columns they would be cut.
    pd.DataFrame({"source": ["b", "a"], "target": ["y", "x"], "params": [10**6] * 2,
                  "pretrain_tokens": [10**6] * 2, "finetune_tokens": [10**5] * 2,
                  "note_with_a_rather_long_column_name": ["first", "second"]}).to_csv(
        d / "new.csv", index=False)
    (d / "cands.toml").write_text(
        "[candidates]\nparams = [1000000]\npretrain_tokens = [20000, 400000]\n"
        "finetune_tokens = [4000, 80000]\n")
    return d


@pytest.fixture(scope="module")
def fitted(work) -> tuple[Path, tuple[int, str, str]]:
    """``fit`` with its default progress setting, piped: the posterior and the output."""
    result = run_piped("fit", "runs.csv", "--spec", "transfer-gap", "--out", "post.nc",
                       "--chains", "1", "--draws", "30", "--warmup", "30",
                       "--max-tree-depth", "4", cwd=work)
    return work / "post.nc", result


def test_fit(fitted):
    post, result = fitted
    assert_clean(result, "transfer gap G per pair, 90% credible intervals", "ess_bulk")
    assert post.exists()


def test_validate(work):
    # A title wider than its table's cells: rich would wrap it to the table's width.
    name = "a-run-table-whose-file-name-is-much-wider-than-its-summary-cells.csv"
    (work / name).write_text("run_id,source,target,params,pretrain_tokens,finetune_tokens,"
                             "loss\nr1,a,a,1000,1000,0,3.5\n")
    assert_clean(run_piped("validate", name, cwd=work), f"{name}: valid run table")


def test_convert(work):
    assert_clean(run_piped("convert", "rectified-scaling",
                           REPO / "data" / "rectified-scaling" / "flan.csv", "--out",
                           "flan-runs.csv", cwd=work), "converted flan.csv")


@pytest.mark.parametrize("extra", [[], ["--params", "--units", "reference"]])
def test_report(fitted, extra):
    post, _ = fitted
    text = assert_clean(run_piped("report", post.name, *extra, cwd=post.parent), "r_hat")
    if extra:
        assert any("post.nc: parameters, 90% credible intervals, reference units (N in"
                   in line and "tokens)" in line for line in text.splitlines()), text


def test_predict_table(fitted):
    post, _ = fitted
    assert_clean(run_piped("predict", post.name, "--runs", "new.csv", "--format", "table",
                           cwd=post.parent),
                 "predicted loss, 90% credible intervals (response_params)",
                 "note_with_a_rather_long_column_name", "loss_median", "loss_upper")


def test_simulate(work):
    assert_clean(run_piped("simulate", "transfer-gap", "--out", "sim.csv", "--sources", "a",
                           "--targets", "x", "--pretrain-tokens", "1e6",
                           "--finetune-tokens", "1e4", "--force", cwd=work), "wrote 1 rows")


def test_compare(fitted):
    post, _ = fitted
    other = post.with_name("other.nc")
    other.write_bytes(post.read_bytes())
    assert_clean(run_piped("compare", post.name, other.name, cwd=post.parent),
                 "PSIS-LOO comparison, best first (elpd: higher is better)",
                 "elpd_loo", "pareto_k_max")


def test_suggest(fitted):
    post, _ = fitted
    assert_clean(run_piped("suggest", post.name, "--candidates", "cands.toml", "--batch",
                           "2", cwd=post.parent), "next runs (variance criterion",
                 "expected gain", "reuses ckpt")


def test_plot(fitted):
    post, _ = fitted
    assert_clean(run_piped("plot", post.name, "heatmap", "--out", "heat.png", "--force",
                           cwd=post.parent), "wrote heat.png")


def test_plot_all(fitted):
    post, _ = fitted
    assert_clean(run_piped("plot", post.name, "all", "--out-dir", "all-plots", "--force",
                           cwd=post.parent), "wrote all-plots/losses.png",
                 "wrote all-plots/acquisition.png")


def test_ppc(fitted):
    post, _ = fitted
    assert_clean(run_piped("ppc", post.name, "--out", "ppc.png", "--force", cwd=post.parent),
                 "post.nc: posterior predictive check of the 12 fitted rows (log loss)",
                 "loo_pit_coverage", "wrote ppc.png")


def test_advise(fitted):
    post, _ = fitted
    assert_clean(run_piped("advise", post.name, "--target", "x", "--budget", "1e13",
                           "--unit", "tokens", cwd=post.parent),
                 "options for the budget, best first (loss: mean and 90% interval)", "P(best)")


def test_backtest(work):
    assert_clean(run_piped("backtest", "runs.csv", "--spec", "transfer-gap", "--split",
                           "pretrain_tokens", "--at", "2e4", "--chains", "1", "--draws", "30",
                           "--warmup", "30", "--bootstrap", "2", cwd=work),
                 "backtest: fit", "(nats per token)", "median |err|", "mean |err|")


def test_select(work):
    from bayes_transfer.public_data import load_public

    df = load_public("rectified-scaling-flan").df
    keep = sorted(set(df["source"].astype(str)))[:3]
    df[df["source"].astype(str).isin(keep)].to_csv(work / "flan3.csv", index=False)
    assert_clean(run_piped("select", "flan3.csv", "--budget", "1/64", "--chains", "1",
                           "--draws", "30", "--warmup", "30", cwd=work),
                 "model selection on flan: loss at finetune_tokens", "loss_actual",
                 "chosen (highest p_best)")


TINY_GRID = tiny_grid(pretrain_tokens=[0, 1024], finetune_tokens=[512], eval_tokens=512,
                      lr=None, finetune_lr=None)


def test_train(work):
    (work / "grid.toml").write_text(TINY_GRID)
    text = assert_clean(run_piped("train", "grid.toml", "--out", "trained.csv", "--executor",
                                  "serial", cwd=work), "rows to trained.csv")
    # Rich prints a bar's last frame to a file: with the bar off there is none.
    assert not any(line.startswith(("runs ", "tokens ")) for line in text.splitlines()), text


@pytest.mark.slow
def test_loop(work):
    (work / "loop-grid.toml").write_text(TINY_GRID)
    # Ten draws do not converge: the loop may stop there (status 1, saying so). Either
    # way its log, piped, must be clean.
    assert_clean(run_piped("loop", "loop-grid.toml", "--out", "loop-out", "--rounds", "0",
                           "--batch", "1", "--chains", "1", "--draws", "10", "--warmup",
                           "10", cwd=work), "stopped", codes=(0, 1))


@pytest.mark.slow
def test_demo(work):
    assert_clean(run_piped("demo", "--quick", "--runs", "runs.csv", "--spec", "transfer-gap",
                           "--out", "demo-out", "--batch", "2", cwd=work),
                 "transfer gap per pair: median and 90% credible interval (pred. = no runs,",
                 "next runs to train, chosen greedily by expected gain per FLOP",
                 "gap var. left", "demo finished in")


def _command_names() -> list[str]:
    from bayes_transfer.cli import app

    return [c.name or c.callback.__name__ for c in app.registered_commands]


@pytest.mark.parametrize("command", [None, *_command_names()])
def test_help(command, tmp_path):
    # Typer draws help at 80 columns off a terminal and cuts long option names there.
    args = ["--help"] if command is None else [command, "--help"]
    assert_clean(run_piped(*args, cwd=tmp_path), "Usage: bayes-transfer")


def test_every_command_is_tested():
    """A new command gets a test here (or this fails)."""
    commands = set(_command_names())
    tested = {name.removeprefix("test_").split("_")[0] for name in globals()
              if name.startswith("test_")}
    assert commands <= tested, sorted(commands - tested)
