"""Rows beyond the fitted range are counted in one ExtrapolationWarning (predict, advise,
suggest; Python and CLI), and a law without a size term is never given a choice of N.

The posteriors are ``known_posterior``s (no sampler): fitted on N in [1e5, 1e6],
p in [1e6, 1e8] and f in [1e4, 1e6] (``_posteriors.simulated``).
"""

from __future__ import annotations

import io
import warnings

import pandas as pd
import pytest
from _posteriors import known_posterior, simulated
from typer.testing import CliRunner

from bayes_transfer import ExtrapolationWarning
from bayes_transfer.advise import advise
from bayes_transfer.cli import app
from bayes_transfer.design import HeldSizeWarning, candidate_grid, score_candidates, suggest
from bayes_transfer.extrapolation import excess, extrapolation_message, fitted_ranges


@pytest.fixture(scope="module")
def post():
    return known_posterior(simulated("transfer-gap-size"), spread=0.05)


@pytest.fixture(scope="module")
def sizeless():
    return known_posterior(simulated("transfer-gap"), spread=0.05)


def _rows(params, p=1e7, f=1e5, pairs=(("web", "math"),)):
    n = len(params)
    src, tgt = zip(*(pairs * n)[:n], strict=True)
    return pd.DataFrame({"source": src, "target": tgt, "params": params,
                         "pretrain_tokens": [p] * n, "finetune_tokens": [f] * n})


def _no_extrapolation_warning():
    """A context in which an ExtrapolationWarning fails the test."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("error", ExtrapolationWarning)
    return ctx


# ---- the helper -----------------------------------------------------------------------


def test_message_counts_rows_and_says_how_many_times():
    fitted = pd.DataFrame({"params": [1e6, 1e9], "pretrain_tokens": [0, 1e10],
                           "finetune_tokens": [1e4, 1e6]})
    rows = pd.DataFrame({"params": [1.6e10, 4e9, 1e8, 1e7],
                         "pretrain_tokens": [1e10, 1e10, 0, float("nan")],
                         "finetune_tokens": [1e5, 1e5, 1e5, 2.5e3]})
    assert extrapolation_message(rows, fitted) == (
        "3 of 4 rows lie beyond the fitted range: params up to 16x above the largest "
        "fitted (1e+09); finetune_tokens up to 4x below the smallest fitted (1e+04)")
    # Zero (from scratch) and unknown (NaN) counts have no position on the log axis.
    assert fitted_ranges(fitted)["pretrain_tokens"] == (1e10, 1e10)
    outside, axes = excess(rows, fitted)
    assert outside.tolist() == [True, True, False, True]
    assert [a.axis for a in axes] == ["params", "finetune_tokens"]
    # On the edge (a rounded candidate) is inside.
    assert extrapolation_message(fitted.assign(params=[1e6, 1e9 * (1 + 1e-9)]), fitted) is None


# ---- Python API -----------------------------------------------------------------------


def test_predict_warns_beyond_the_range_and_not_inside(post):
    ctx = _no_extrapolation_warning()
    try:
        post.predict(_rows([1e5, 1e6]))
    finally:
        ctx.__exit__(None, None, None)
    with pytest.warns(ExtrapolationWarning) as record:
        post.predict(_rows([1e6, 1.6e7, 3e5], f=2e6))
    assert len(record) == 1
    assert str(record[0].message) == (
        "3 of 3 prediction rows lie beyond the fitted range: params up to 16x above the "
        "largest fitted (1e+06); finetune_tokens up to 2x above the largest fitted (1e+06)")
    # The warning points at the caller, not at the package.
    assert record[0].filename == __file__


def test_advise_warns_for_options_beyond_the_range(post):
    # Default sizes reach 10x the largest fitted N.
    with pytest.warns(ExtrapolationWarning, match=r"options lie beyond the fitted range: "
                      r"params up to 10x above the largest fitted \(1e\+06\)"):
        advise(post, "math", 1e16)
    ctx = _no_extrapolation_warning()
    try:  # a token budget whose every option lies inside the table's range
        advise(post, "math", 2e6, unit="tokens", params=1e6, fractions=[0.5])
    finally:
        ctx.__exit__(None, None, None)


def test_suggest_warns_for_suggestions_beyond_the_range(post):
    inside = candidate_grid(["web", "code"], ["math", "prose"], params=[1e5, 1e6],
                            pretrain_tokens=[3e6, 3e7], finetune_tokens=[3e4])
    ctx = _no_extrapolation_warning()
    try:
        suggest(post, inside, batch=3)
    finally:
        ctx.__exit__(None, None, None)
    beyond = candidate_grid(["web"], ["prose"], params=[1e7], pretrain_tokens=[1e9],
                            finetune_tokens=[3e4])
    with pytest.warns(ExtrapolationWarning, match=r"1 of 1 suggested runs lie beyond the "
                      r"fitted range: params up to 10x above .*pretrain_tokens up to 10x"):
        suggest(post, beyond, batch=1)


def test_a_law_without_a_size_term_never_chooses_n(sizeless, post):
    cands = candidate_grid(["web", "code"], ["math", "prose"], params=[1e4, 1e5, 1e6, 1e7],
                           pretrain_tokens=[3e6, 3e7], finetune_tokens=[3e4])
    # As advise: N is held at the largest fitted (1e6), however much cheaper 1e4 is.
    with pytest.warns(HeldSizeWarning, match=r"no model-size term.*held at N=1e\+06 "
                      r"\(set aside: N=1e\+04, 1e\+05, 1e\+07"):
        chosen = suggest(sizeless, cands, batch=4)
    assert len(chosen) == 4 and set(chosen["params"]) == {10**6}
    with pytest.warns(HeldSizeWarning):
        scored = score_candidates(sizeless, cands)
    assert set(scored["params"]) == {10**6}
    with pytest.warns(HeldSizeWarning, match="held at N=1e\\+05"):
        assert set(suggest(sizeless, cands, batch=2, params=1e5)["params"]) == {10**5}
    with pytest.raises(ValueError, match="params=3e\\+05 is not a model size"):
        suggest(sizeless, cands, params=3e5)
    # A law with a size term keeps every N (its gain depends on N).
    with warnings.catch_warnings():
        warnings.simplefilter("error", HeldSizeWarning)
        warnings.simplefilter("ignore", ExtrapolationWarning)
        assert len(set(score_candidates(post, cands)["params"])) == 4


# ---- CLI ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def post_file(post, tmp_path_factory):
    return post.save(tmp_path_factory.mktemp("extrapolation") / "post.nc")


def test_cli_predict_prints_the_warning_once_on_stderr(post_file, tmp_path):
    rows = tmp_path / "rows.csv"
    _rows([1e6, 1.6e7, 1.6e7]).to_csv(rows, index=False)
    result = CliRunner().invoke(app, ["predict", str(post_file), "--runs", str(rows)])
    assert result.exit_code == 0, result.output
    line = ("warning: 2 of 3 prediction rows lie beyond the fitted range: params up to 16x "
            "above the largest fitted (1e+06)")
    assert result.stderr.count("prediction rows lie beyond") == 1, result.stderr
    assert line in result.stderr
    assert "ExtrapolationWarning" not in result.stderr  # not Python's file:line form
    assert "beyond" not in result.stdout  # the CSV stays clean
    assert len(pd.read_csv(io.StringIO(result.stdout))) == 3


def test_cli_advise_and_suggest_warn_on_stderr(post_file, sizeless, tmp_path):
    result = CliRunner().invoke(app, ["advise", str(post_file), "--target", "math",
                                      "--budget", "1e16"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning: ") == 1, result.stderr
    assert "options lie beyond the fitted range: params up to 10x" in result.stderr
    cands = tmp_path / "cands.toml"
    cands.write_text("[candidates]\nparams = [10000, 1000000]\npretrain_tokens = [1e9]\n"
                     "finetune_tokens = [30000]\n")
    path = sizeless.save(tmp_path / "sizeless.nc")
    result = CliRunner().invoke(app, ["suggest", str(path), "--candidates", str(cands),
                                      "--batch", "2", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "warning: the law transfer-gap" in result.stderr
    assert ("warning: 2 of 2 suggested runs lie beyond the fitted range: pretrain_tokens up "
            "to 10x above the largest fitted (1e+08)") in result.stderr
    chosen = pd.read_csv(io.StringIO(result.stdout))
    assert set(chosen["params"]) == {10**6}


def test_cli_prints_each_answer_warning_once_and_passes_others_on(capsys):
    from bayes_transfer.cli._app import answer_warnings

    with pytest.warns(DeprecationWarning, match="not ours"), answer_warnings():
        for _ in range(2):  # the same warning from two calls: printed once
            warnings.warn("5 of 5 rows lie beyond the fitted range", ExtrapolationWarning,
                          stacklevel=1)
            warnings.warn("held at N=1e+06", HeldSizeWarning, stacklevel=1)
        warnings.warn("not ours", DeprecationWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: 5 of 5 rows lie beyond the fitted range",
                                "warning: held at N=1e+06"]
