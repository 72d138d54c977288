"""``bayes-transfer loop`` prints the package's answer warnings once each on stderr."""

from __future__ import annotations

import warnings

import pandas as pd
from typer.testing import CliRunner

from bayes_transfer.cli import app
from bayes_transfer.data import load_runs
from bayes_transfer.extrapolation import ExtrapolationWarning


def test_loop_routes_answer_warnings_through_the_cli(tmp_path, monkeypatch):
    """Every round's suggest may warn the same extrapolation: the user reads it once, as
    ``warning: ...``, not in Python's ``file:line: Category`` form."""
    from bayes_transfer import loop
    from bayes_transfer.loop import LoopResult

    runs = load_runs(pd.DataFrame({"run_id": ["r0"], "source": ["a"], "target": ["x"],
                                   "params": [10**6],
                                   "pretrain_tokens": [10**7], "finetune_tokens": [10**5],
                                   "loss": [2.0]}))

    def fake_loop(*args, **kwargs):
        for _ in range(3):  # three rounds, one message
            warnings.warn("3 options lie beyond the fitted range", ExtrapolationWarning,
                          stacklevel=2)
        return LoopResult(runs=runs, rounds=[], stopped="budget")

    monkeypatch.setattr(loop, "loop_grid", fake_loop)
    result = CliRunner().invoke(app, ["loop", "data/transfer_grid.toml", "--out",
                                      str(tmp_path / "out"), "--rounds", "0"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: 3 options lie beyond the fitted range") == 1
    assert "ExtrapolationWarning" not in result.stderr
