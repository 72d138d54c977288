"""The README's Python and CLI examples run as written, in a temp dir with the bundled data.

The fenced ``python`` blocks are read from README.md and executed in order in one
namespace. A few names the README leaves to the reader (``new_rows``, ``post2``,
``candidates``) are supplied by a curated preamble or substitution, each asserted to still
be needed, so that an edit of the README updates this test. Samplers are shortened (the
README's ``chains=4, draws=1000`` would take minutes): the calls, their arguments and the
spec names are what is checked, not the posterior. The CLI lines checked are the
``convert`` lines of the bundled tables (the command table's rows are templates).
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def _block(first_line: str) -> str:
    found = [b for b in BLOCKS if b.startswith(first_line)]
    assert len(found) == 1, f"no single README python block starts with {first_line!r}"
    return found[0]


def _substitute(code: str, old: str, new: str) -> str:
    assert old in code, f"the README no longer has {old!r}: update tests/test_readme.py"
    return code.replace(old, new)


@pytest.fixture
def readme_dir(tmp_path, monkeypatch) -> Path:
    """A temp dir where the README's relative paths (data/, models/) resolve."""
    for name in ("data", "models"):
        (tmp_path / name).symlink_to(REPO / name)
    shutil.copy(REPO / "data" / "llm-line" / "latest_pm_hf.csv", tmp_path)
    shutil.copy(REPO / "data" / "rectified-scaling" / "flan.csv", tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def short_fits(monkeypatch):
    """Every NUTS fit (the README's and those inside backtest) with a short sampler.

    Example: ``bt.fit(runs, spec, chains=4, draws=1000)`` runs 2 chains x 30 + 30.
    """
    import bayes_transfer
    from bayes_transfer import inference

    real = inference.fit

    def short(*args, **kwargs):
        kwargs.update(chains=2, draws=30, warmup=30, max_tree_depth=4, progress=False)
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "fit", short)
    monkeypatch.setattr(bayes_transfer, "fit", short, raising=False)


def _run(code: str, namespace: dict) -> None:
    with warnings.catch_warnings():
        # Short chains fail their diagnostics, and the README's rows may extrapolate:
        # warned, as they should be, but not what this test checks.
        warnings.simplefilter("ignore", UserWarning)
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102


def test_public_data_block(readme_dir):
    namespace: dict = {}
    exec("import bayes_transfer as bt", namespace)  # noqa: S102 (the first block's import)
    _run(_block('runs = bt.load_public("rectified-scaling-flan")'), namespace)
    assert len(namespace["runs"]) > 0


def test_convert_lines(readme_dir):
    from bayes_transfer.cli import app

    lines = re.findall(r"^ {4}bayes-transfer (convert .*)$", README, flags=re.M)
    assert len(lines) == 3, lines
    for line in lines:
        args = line.split()
        if args[1] == "chinchilla-svg":  # not bundled: its licence states none
            continue
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (line, result.output)
        assert (readme_dir / args[args.index("--out") + 1]).stat().st_size > 0


@pytest.mark.slow
def test_in_python_block(readme_dir, short_fits):
    import pandas as pd

    code = _block("import bayes_transfer as bt\n")
    # Names the README leaves to the reader: rows to predict, a second posterior, and
    # candidate runs (the bundled example file).
    code = _substitute(code, '"gap-size": post2', '"gap-size": post')
    preamble = {
        "new_rows": pd.DataFrame({"source": ["english"], "target": ["c-src"],
                                  "params": [590976], "pretrain_tokens": [196608],
                                  "finetune_tokens": [36864]}),
    }
    # The bundled example file, as the README's suggest line uses it.
    from bayes_transfer.design import candidates_from_spec

    preamble["candidates"] = candidates_from_spec(REPO / "models" / "candidates-example.toml")
    namespace: dict = dict(preamble)
    _run(code, namespace)
    assert (readme_dir / "posterior.nc").exists()
    assert namespace["post"].spec.law == "transfer-gap-size"


@pytest.mark.slow
def test_backtest_block(readme_dir, short_fits, monkeypatch):
    from bayes_transfer import baseline

    # The baseline's 100 bootstrap refits of each of FLAN's 30 pairs were half of this
    # test's time (3,240 L-BFGS runs); like the short NUTS fits, 10 run the same code.
    real = baseline.fit_baseline
    monkeypatch.setattr(baseline, "fit_baseline",
                        lambda *a, **kw: real(*a, **(kw | {"bootstrap": 10})))
    namespace: dict = {}
    exec("import bayes_transfer as bt", namespace)  # noqa: S102
    _run(_block("from bayes_transfer.backtest import backtest"), namespace)
    assert 0 <= namespace["result"].summary["model"]["coverage"]["0.9"] <= 1
