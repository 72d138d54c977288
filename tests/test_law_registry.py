"""Adding a law is one registration: a toy law is fitted, predicted, baselined and advised.

The toy law below is registered with one :func:`register_law` call and removed after the
test; nothing else in the package is touched. Everything downstream (the spec builder,
the NumPyro model, predictions, the point-fit baseline, the allocation advice) must learn
what it needs from the :class:`Law` itself. The last tests check the metadata of every
registered law against the law's own formula.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import bayes_transfer as bt
from bayes_transfer.advise import advise
from bayes_transfer.baseline import fit_baseline
from bayes_transfer.diagnostics import SamplingWarning
from bayes_transfer.laws import LAWS, Law, features_from_arrays, get_law, register_law
from bayes_transfer.simulate import design_grid, simulate, typical_truth
from bayes_transfer.spec import ModelSpec


def toy_size_law(x: Mapping[str, Any], lp: Mapping[str, Any], xp: Any = jnp) -> Any:
    """Toy law: ``L = E + A N^-a + B f^-b`` (size and fine-tuning data, no pre-training)."""
    size = lp["A"] - xp.exp(lp["a"]) * x["log_N"]
    data = lp["B"] - xp.exp(lp["b"]) * x["log_f"]
    return xp.logaddexp(lp["E"], xp.logaddexp(size, data))


# Log-scale priors near a plausible table in reference units: E ~ 1.6 nats, A and B
# ~ 0.6 nats at the reference N and f, exponents ~ 0.3.
TOY = Law("toy-size", ("E", "A", "a", "B", "b"), toy_size_law, rows="finetuned",
          size_term="A N^-a",
          priors={"E": {"loc": 0.5, "scale": 0.3}, "A": {"loc": -0.5, "scale": 0.3},
                  "a": {"loc": -1.2, "scale": 0.3}, "B": {"loc": -0.5, "scale": 0.3},
                  "b": {"loc": -1.2, "scale": 0.3}})


@pytest.fixture
def toy() -> Iterator[Law]:
    """The toy law, registered for one test (the one registration a new law needs)."""
    register_law(TOY)
    try:
        yield TOY
    finally:
        LAWS.pop(TOY.name, None)


@pytest.fixture
def toy_sim(toy):
    """Nine fine-tuned rows of one pair drawn from the toy law at its priors' centres."""
    spec = ModelSpec.from_dict({"law": toy.name})
    design = design_grid(["web"], ["code"], params=[1e6, 4e6, 1.6e7], pretrain_tokens=[1e7],
                         finetune_tokens=[1e4, 1e5, 1e6])
    return simulate(spec, design, seed=2, truth=typical_truth(spec), loss_se=0.0)


def test_spec_takes_the_law_s_default_priors(toy):
    spec = ModelSpec.from_dict({"law": "toy-size", "params": {"E": {"scale": 0.1}}})
    assert spec.params["A"].loc == -0.5 and spec.params["A"].scale == 0.3
    # The spec's own keys win, key by key; the law's fill the rest.
    assert spec.params["E"].loc == 0.5 and spec.params["E"].scale == 0.1


def test_a_registered_toy_law_fits_predicts_baselines_and_advises(toy, toy_sim):
    runs = toy_sim.runs
    assert len(runs) == 9 and (runs.df["loss"] > 1).all() and (runs.df["loss"] < 10).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)  # 60 draws: diagnostics may warn
        post = bt.fit(runs, {"law": "toy-size"}, chains=1, draws=60, warmup=60, seed=0,
                      max_tree_depth=5, progress=False)
    assert {f"log_{p}" for p in toy.params} <= set(post.idata.posterior.data_vars)

    pred = post.predict(runs.df, ci=0.9)
    rel = (pred["loss_median"] / runs.df["loss"] - 1).abs()
    assert rel.max() < 0.1, pred  # a noiseless table of one law: the fit follows it
    assert (pred["loss_lower"] <= pred["loss_median"]).all()
    assert (pred["loss_median"] <= pred["loss_upper"]).all()

    base = fit_baseline(runs, "toy-size", by="global", bootstrap=3, seed=0)
    assert list(base.params.columns[-5:]) == list(toy.params)
    assert base.predict_draws(runs.df).shape == (3, 9)

    # The law has a size term, so the advice weighs model sizes, not only the split.
    adv = advise(post, "code", budget=6e15)
    assert adv.options["params"].nunique() > 1
    assert not any("model-size term" in note for note in adv.notes)


def _log_loss_at(law: Law, N: float, seed: int) -> np.ndarray:
    """The law's log loss at model size N over random log parameters and rows."""
    rng = np.random.default_rng(seed)
    lp = {p: rng.normal(0.0, 0.5, 64) for p in law.params}
    p_tok, f_tok = rng.uniform(1e5, 1e8, 64), rng.uniform(1e3, 1e6, 64)
    # Both kinds of row: fine-tuned (source != target) and from scratch (source == target).
    same = np.arange(64) % 2 == 0
    return np.asarray(law.log_loss(features_from_arrays(N, p_tok, f_tok, same), lp))


@pytest.mark.parametrize("name", sorted(LAWS))
def test_every_law_states_truly_whether_it_has_a_size_term(name):
    """``size_term`` is set exactly when the loss moves with N (both directions)."""
    law = get_law(name)
    moves = not np.allclose(_log_loss_at(law, 1e6, 0), _log_loss_at(law, 1e8, 0))
    assert moves == law.has_size_term, (name, law.size_term)


@pytest.mark.parametrize("name", sorted(LAWS))
def test_every_law_has_a_one_line_formula(name):
    law = get_law(name)
    assert law.formula.startswith("L") and "\n" not in law.formula


def test_a_law_refuses_priors_for_parameters_it_lacks():
    with pytest.raises(ValueError, match="not among its parameters"):
        Law("bad", ("E",), toy_size_law, priors={"G": {"loc": 0.0}})
