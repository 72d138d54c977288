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


def _anchored_data():
    # Lin et al.'s curves of two models on FLAN up to 1/64 of the largest size, in the
    # anchored coordinates of the finetune-curves spec (bayes_transfer.anchor).
    from dataclasses import replace

    from bayes_transfer import anchor
    from bayes_transfer.model import model_data
    from bayes_transfer.public_data import load_public
    from bayes_transfer.spec import load_spec

    spec = replace(load_spec("finetune-curves"), discrepancy=None)
    df = load_public("rectified-scaling-flan").df
    df = df[df.source.isin(sorted(df.source.unique())[:2])]
    df = df[df.finetune_tokens <= df.finetune_tokens.max() / 64]
    table = load_runs(df.reset_index(drop=True))
    data = anchor.prepare(model_data(spec, table, spec.resolve_units(table.df)))
    assert data.anchor is not None
    return data


def _transfer_gap_data():
    from bayes_transfer.model import model_data
    from bayes_transfer.spec import load_spec

    return model_data(load_spec("transfer-gap"), load_runs(_table(np.random.default_rng(0))))


@pytest.mark.parametrize("make_data", [_transfer_gap_data, _anchored_data])
def test_padding_leaves_the_log_density_unchanged(make_data):
    import jax
    from numpyro.infer.util import initialize_model, potential_energy

    from bayes_transfer.model import hierarchical_model

    data = make_data()
    model, arrays = padded_model(data, bucket_rows(data.n_rows) + 7)
    info = initialize_model(jax.random.key(0), hierarchical_model, model_args=(data,))
    z = info.param_info.z
    exact = float(potential_energy(hierarchical_model, (data,), {}, z))
    padded = float(potential_energy(model, (arrays,), {}, z))
    assert padded == pytest.approx(exact, rel=1e-12, abs=1e-9)
    # The padding rows repeat row 0; unmasked they would count.
    unmasked = {**arrays, "row_mask": arrays["row_mask"] | True}
    assert float(potential_energy(model, (unmasked,), {}, z)) != pytest.approx(exact)
    if data.anchor is not None:  # the anchors, arguments too, are the model's
        moved = {**arrays, "anchor_offset": arrays["anchor_offset"] + 0.1}
        assert float(potential_energy(model, (moved,), {}, z)) != pytest.approx(exact)


def test_padded_to_raises_the_bucket_below_the_laplace_threshold_only():
    assert cold_rows(40) == 40 and cold_rows(41) == 48
    with padded_to(100):
        assert cold_rows(40) == bucket_rows(100) == 112
        assert cold_rows(3000) == 3000  # large tables are not padded
    assert cold_rows(40) == 40


def test_a_second_laplace_start_of_the_same_structure_loads_the_compiled_program(caplog):
    # A mode search (mode_starts > 1) starts a small table's chains from the Laplace
    # approximation; its program, as dear to compile as the sampler, takes the padded rows
    # as arguments too. Fresh losses, as above, so no earlier run's program can match.
    rng = np.random.default_rng()
    first, second = _table(rng), _table(rng, drop=1)
    kw = dict(chains=1, draws=5, warmup=5, max_tree_depth=3, mode_starts=2,
              progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        fit(first, "transfer-gap", seed=0, **kw)
        with caplog.at_level(logging.DEBUG, logger="jax._src.compiler"):
            fit(second, "transfer-gap", seed=1, **kw)
    hits = [r.getMessage() for r in caplog.records if "cache hit" in r.getMessage()]
    assert any("jit_run" in h for h in hits), hits
