"""Fits of one structure share one compiled sampler: the table is its argument.

A one-chain (or vectorised) NumPyro fit pads its table to a bucketed size and passes the
rows to the compiled sampler as arguments (``bayes_transfer.refit.padded_model``), so a
second fit of another table of the same structure (the discrepancy's second internal fit;
a user's repeated CLI fit) loads the first one's XLA program from JAX's persistent cache
(which ``tests/conftest.py`` turns on for the session) instead of compiling its own.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from bayes_transfer.data import load_runs
from bayes_transfer.diagnostics import SamplingWarning
from bayes_transfer.inference import fit
from bayes_transfer.refit import bucket_rows, cold_rows, padded_model, padded_to
from bayes_transfer.simulate import design_grid, simulate


def _table(rng: np.random.Generator, drop: int = 0):
    design = design_grid(["a", "b"], ["x"], params=[1e6], pretrain_tokens=[2e4, 2e5],
                         finetune_tokens=[4e3, 4e4, 1e5])
    runs = simulate("transfer-gap", design, seed=int(rng.integers(2**31))).runs.df
    return runs.iloc[: len(runs) - drop].reset_index(drop=True)


def _quiet_fit(runs, seed: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        return fit(runs, "transfer-gap", chains=1, draws=20, warmup=20, seed=seed,
                   max_tree_depth=4, progress=False)


def test_a_second_table_of_the_same_structure_loads_the_compiled_sampler(caplog):
    # Fresh random losses every run: a program baked with these values cannot already
    # sit in a warm cache from an earlier run, so only an argument-taking sampler hits.
    rng = np.random.default_rng()
    first, second = _table(rng), _table(rng, drop=1)
    assert bucket_rows(len(first)) == bucket_rows(len(second))
    _quiet_fit(first, seed=0)
    with caplog.at_level(logging.DEBUG, logger="jax._src.compiler"):
        _quiet_fit(second, seed=1)
    hits = [r.getMessage() for r in caplog.records if "cache hit" in r.getMessage()]
    assert any("_fori_collect_loop" in h for h in hits), hits


def test_padding_leaves_the_log_density_unchanged():
    from numpyro.infer.util import initialize_model, potential_energy

    from bayes_transfer.model import hierarchical_model, model_data
    from bayes_transfer.spec import load_spec

    spec = load_spec("transfer-gap")
    table = load_runs(_table(np.random.default_rng(0)))
    data = model_data(spec, table)
    model, arrays = padded_model(data, bucket_rows(data.n_rows) + 7)
    import jax

    info = initialize_model(jax.random.key(0), hierarchical_model, model_args=(data,))
    z = info.param_info.z
    exact = float(potential_energy(hierarchical_model, (data,), {}, z))
    padded = float(potential_energy(model, (arrays,), {}, z))
    assert padded == pytest.approx(exact, rel=1e-12, abs=1e-9)
    # The padding rows repeat row 0; unmasked they would count.
    arrays["row_mask"] = arrays["row_mask"] | True
    assert float(potential_energy(model, (arrays,), {}, z)) != pytest.approx(exact)


def test_padded_to_raises_the_bucket_below_the_laplace_threshold_only():
    assert cold_rows(40, "prior") == 40 and cold_rows(41, "prior") == 48
    with padded_to(100):
        assert cold_rows(40, "prior") == bucket_rows(100) == 112
        assert cold_rows(3000, "laplace") == 3000  # large tables are not padded
    assert cold_rows(40, "prior") == 40
