"""``bayes-transfer demo`` end to end, and the help of the user-facing commands."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from bayes_transfer import plots
from bayes_transfer.cli import app
from bayes_transfer.cli.demo import PLOTS

SIZE = (round(plots.FIGSIZE[0] * plots.DPI), round(plots.FIGSIZE[1] * plots.DPI))


@pytest.mark.parametrize("command", ["demo", "plot", "advise"])
def test_help_says_what_and_shows_an_example(command):
    result = CliRunner().invoke(app, [command, "--help"], terminal_width=100)
    assert result.exit_code == 0
    assert "Example" in result.output and f"bayes-transfer {command}" in result.output


def test_top_level_help_lists_the_commands():
    result = CliRunner().invoke(app, ["--help"], terminal_width=100)
    assert result.exit_code == 0
    for command in ("demo", "plot", "advise"):
        assert command in result.output


def test_demo_on_a_missing_table_fails_clearly(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--runs", str(tmp_path / "none.csv"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "none.csv" in result.output


@pytest.mark.slow
def test_quick_demo_prints_gaps_and_suggestions_and_writes_plots(tmp_path):
    out = tmp_path / "demo-output"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)],
                                terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "transfer gap per pair" in result.output
    assert "next runs to train" in result.output
    assert "R-hat" in result.output  # diagnostics are printed, whatever they say
    names = [f"{name}.png" for name, *_ in PLOTS] + ["acquisition.png"]
    for name in names:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size == SIZE
            lo, hi = im.convert("L").getextrema()
            assert lo < hi, f"{name} is blank"
    batch = pd.read_csv(out / "suggestions.csv")
    assert 1 <= len(batch) <= 4 and {"source", "target", "cost"} <= set(batch.columns)
    assert (out / "posterior.nc").stat().st_size > 0
