"""The laws against hand-computed values, at extreme inputs, and the registry."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayes_transfer.laws import LAWS, Law, features_from_arrays, get_law, register_law

CHINCHILLA = {"E": 1.82, "A": 482.01, "alpha": 0.3478, "B": 2085.43, "beta": 0.3658}
GAP = {"A": 30.0, "alpha": 0.3, "G": 2.0, "beta": 0.2, "E": 1.1}


def test_chinchilla_matches_hand_computation():
    n, d = 1e9, 2e10
    expected = 1.82 + 482.01 * n**-0.3478 + 2085.43 * d**-0.3658
    assert float(get_law("chinchilla").loss(N=n, p=d, **CHINCHILLA)) == pytest.approx(
        expected, rel=1e-5)
    # D = p + f: pre-training and fine-tuning tokens both count for the from-scratch law.
    assert float(get_law("chinchilla").loss(N=n, p=d / 2, f=d / 2, **CHINCHILLA)) == \
        pytest.approx(expected, rel=1e-5)


def test_transfer_gap_matches_hand_computation():
    p, f = 1e8, 1e5
    expected = (30.0 * p**-0.3 + 2.0) * f**-0.2 + 1.1
    assert float(get_law("transfer-gap").loss(p=p, f=f, **GAP)) == pytest.approx(expected,
                                                                                   rel=1e-5)
    sized = get_law("transfer-gap-size").loss(N=1e6, p=p, f=f, K=50.0, gamma=0.25, **GAP)
    assert float(sized) == pytest.approx(expected + 50.0 * 1e6**-0.25, rel=1e-5)


def test_transfer_gap_approaches_gap_floor_as_pretraining_grows():
    f = 1e4
    floor = 2.0 * f**-0.2 + 1.1
    assert float(get_law("transfer-gap").loss(p=1e30, f=f, **GAP)) == pytest.approx(floor,
                                                                                      rel=1e-5)


def test_effective_data_matches_hand_computation():
    params = {"E": 1.5, "A_N": 100.0, "a": 0.3, "B": 300.0, "b": 0.35, "k": 20.0,
              "alpha": 0.4, "beta": 0.5}
    n, f = 1e7, 1e5
    d_t = 20.0 * f**0.4 * n**0.5
    expected = 1.5 + 100.0 * n**-0.3 + 300.0 * (f + d_t) ** -0.35
    law = get_law("effective-data")
    assert float(law.loss(N=n, f=f, **params)) == pytest.approx(expected, rel=1e-5)
    # A from-scratch row (source == target) is the target's own law on D = p + f.
    scratch = 1.5 + 100.0 * n**-0.3 + 300.0 * (1e9 + f) ** -0.35
    assert float(law.loss(N=n, p=1e9, f=f, same=True, **params)) == pytest.approx(scratch,
                                                                                   rel=1e-5)


@pytest.mark.parametrize("name", ["chinchilla", "transfer-gap", "transfer-gap-size",
                                  "effective-data", "rectified"])
def test_extreme_inputs_stay_finite(name):
    law = get_law(name)
    n = np.array([1e12, 1.0, 1e12, 50.0])
    p = np.array([1e13, 1.0, 1.0, 1e15])
    f = np.array([1.0, 1.0, 1e12, 1.0])
    params = {k: 10.0 ** (3 * (i % 2)) * 0.3 for i, k in enumerate(law.params)}
    loss = np.asarray(law.loss(N=n, p=p, f=f, **params))
    assert np.isfinite(loss).all() and (loss > 0).all()
    # Gradients too: NUTS differentiates through the law.
    feats = features_from_arrays(n, p, f)
    lp = {k: jnp.log(v) for k, v in params.items()}
    grads = jax.grad(lambda lp: law.log_loss(feats, lp).sum())(lp)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads.values())


def test_log_space_keeps_tiny_terms():
    # At N = 1e12 the size term is ~1e-9 of E; log-sum-exp must still see it.
    law = get_law("chinchilla")
    lp = {"E": jnp.log(2.0), "A": jnp.log(1.0), "alpha": jnp.log(0.7),
          "B": jnp.log(1e-30), "beta": jnp.log(0.5)}
    x = features_from_arrays(1e12, 1e12, 0.0)
    grad = jax.grad(lambda a: law.log_loss(x, {**lp, "A": a}))(lp["A"])
    assert float(grad) == pytest.approx((1e12**-0.7) / 2.0, rel=1e-3)


def test_vectorised_over_draws_and_rows():
    law = get_law("transfer-gap")
    feats = features_from_arrays(np.full(5, 1e6), np.geomspace(1e6, 1e9, 5), np.full(5, 1e4))
    draws = {k: jnp.log(jnp.full((7, 1), v)) for k, v in GAP.items()}
    out = law.log_loss(feats, draws)
    assert out.shape == (7, 5)
    expected = np.log((30.0 * np.geomspace(1e6, 1e9, 5) ** -0.3 + 2.0) * 1e4**-0.2 + 1.1)
    np.testing.assert_allclose(np.asarray(out[3]), expected, rtol=1e-5)


def test_registry_and_user_law():
    assert {"chinchilla", "transfer-gap", "transfer-gap-size", "effective-data"} <= set(LAWS)
    with pytest.raises(KeyError, match="unknown law 'nope'; known laws: chinchilla"):
        get_law("nope")

    def size_only(x, lp, xp=jnp):
        """L = E + A N^-alpha."""
        return xp.logaddexp(lp["E"], lp["A"] - xp.exp(lp["alpha"]) * x["log_N"])

    law = register_law(Law("test-size-only", ("E", "A", "alpha"), size_only), overwrite=True)
    try:  # out of the global registry even when an assertion fails
        assert float(law.loss(N=1e4, E=1.0, A=10.0, alpha=0.5)) == pytest.approx(1.1, rel=1e-5)
        assert law.doc == "L = E + A N^-alpha."
        with pytest.raises(ValueError, match="already registered"):
            register_law(law)
        with pytest.raises(ValueError, match="gap 'Z' is not one of"):
            Law("bad", ("E",), size_only, gap="Z")
    finally:
        LAWS.pop("test-size-only", None)


def test_every_law_documents_its_formula_and_source():
    for law in LAWS.values():
        assert "L" in law.doc and "=" in law.doc, law.name
        assert "Source" in law.doc or "DESIGN" in law.doc, law.name
    assert math.isfinite(float(get_law("transfer-gap").loss(p=1.0, f=1.0, **GAP)))


@pytest.mark.parametrize("name", ["chinchilla", "transfer-gap", "transfer-gap-size",
                                  "effective-data", "rectified"])
def test_reference_units_convert_back_to_raw(name):
    # The same loss in reference units and, after to_raw, in the papers' units.
    from bayes_transfer.laws import Units

    law = get_law(name)
    units = Units(params=1e7, tokens=1e5)
    lp = {k: jnp.log(0.2 + 0.1 * i) for i, k in enumerate(law.params)}
    n, p, f = np.array([3e6, 2e8]), np.array([4e7, 1e9]), np.array([2e4, 3e6])
    ref = law.log_loss(features_from_arrays(n, p, f, units=units), lp)
    raw = law.log_loss(features_from_arrays(n, p, f), law.to_raw(lp, units))
    np.testing.assert_allclose(np.asarray(ref), np.asarray(raw), rtol=1e-5)


def test_units_from_table_are_decades_of_geometric_means():
    import pandas as pd

    from bayes_transfer.laws import Units

    df = pd.DataFrame({"params": [1e6, 1e8], "pretrain_tokens": [0, 1e9],
                       "finetune_tokens": [1e5, 1e7]})
    assert Units.from_table(df) == Units(params=1e7, tokens=1e7)
    with pytest.raises(ValueError, match="units.tokens must be a positive number"):
        Units(tokens=0)


def test_rectified_matches_hand_computation_and_is_finite_at_zero_shot():
    law = get_law("rectified")
    params = {"B": 30.0, "D_l": 5.0, "beta": 0.4, "E": 1.2}
    f = np.array([0.0, 200.0, 1e6])
    got = np.asarray(law.loss(f=f, **params))
    want = 30.0 / (5.0 + f**0.4) + 1.2
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0] == pytest.approx(30.0 / 5.0 + 1.2)  # the zero-shot point: B / D_l + E
    # NUTS differentiates through f = 0 rows too.
    feats = features_from_arrays(np.ones(3), np.zeros(3), f)
    lp = {k: jnp.log(v) for k, v in params.items()}
    grads = jax.grad(lambda lp: law.log_loss(feats, lp).sum())(lp)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads.values())
    assert float(grads["beta"]) != 0.0

