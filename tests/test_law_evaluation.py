"""One function evaluates a law at rows over draws (bayes_transfer.evaluate), and every
place that did it by hand now calls it."""

from __future__ import annotations

import ast
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from _posteriors import known_posterior, simulated

from bayes_transfer import simulate
from bayes_transfer.evaluate import levels_of, log_loss_at_rows
from bayes_transfer.laws import LAWS, features
from bayes_transfer.spec import load_spec

PACKAGE = Path(__file__).resolve().parents[1] / "bayes_transfer"
LEVELS = ("pair", "source", "target", "global")
DRAWS = 7


@pytest.fixture(scope="module")
def table():
    """A simulated table with self pairs (a->a) and cross pairs, every row p > 0, f > 0:
    a row every registered law explains."""
    design = simulate.design_grid(["a", "b", "c"], ["a", "x"], params=[1e5, 1e7],
                                  pretrain_tokens=[1e6, 1e8], finetune_tokens=[1e4, 1e6])
    return simulate.simulate("transfer-gap", design, seed=0).runs


def _draws(law, table, seed=0):
    """Random log params, each law parameter at a different level, ``(draws, groups)``."""
    rng = np.random.default_rng(seed)
    n_s, n_t = len(table.sources), len(table.targets)
    size = {"pair": n_s * n_t, "source": n_s, "target": n_t}
    levels = {p: LEVELS[i % len(LEVELS)] for i, p in enumerate(law.params)}
    lp = {p: rng.normal(0.0, 0.5, (DRAWS,) + ((size[lv],) if lv != "global" else ()))
          for p, lv in levels.items()}
    return levels, lp


def _by_hand(law, table, levels, lp):
    """Row by row, draw by draw: look each parameter up at the row's group by name."""
    feats = features(table.df)
    sources, targets = list(table.sources), list(table.targets)
    out = np.empty((DRAWS, len(table)))
    for i, row in enumerate(table.df.itertuples(index=False)):
        s, t = sources.index(str(row.source)), targets.index(str(row.target))
        group = {"pair": s * len(targets) + t, "source": s, "target": t}
        x = {k: v[i] for k, v in feats.items()}
        for d in range(DRAWS):
            at = {p: lp[p][d] if levels[p] == "global" else lp[p][d, group[levels[p]]]
                  for p in law.params}
            out[d, i] = law.fn(x, at, xp=np)
    return out


@pytest.mark.parametrize("name", sorted(LAWS))
def test_agrees_with_a_hand_computation_for_every_law_numpy_jax_and_jit(name, table):
    law = LAWS[name]
    levels, lp = _draws(law, table)
    expected = _by_hand(law, table, levels, lp)
    idx = {"source_idx": table.source_idx, "target_idx": table.target_idx,
           "n_targets": len(table.targets)}
    feats = features(table.df)
    got_np = log_loss_at_rows(law, feats, lp, levels=levels, xp=np, **idx)
    assert got_np.shape == (DRAWS, len(table))
    np.testing.assert_allclose(got_np, expected, rtol=1e-12)

    jfeats = {k: jnp.asarray(v) for k, v in feats.items()}
    jlp = {k: jnp.asarray(v) for k, v in lp.items()}
    got_jax = log_loss_at_rows(name, jfeats, jlp, levels=levels, **idx)
    np.testing.assert_allclose(np.asarray(got_jax), expected, rtol=1e-5, atol=1e-5)

    @jax.jit
    def jitted(f, p, s, t):
        return log_loss_at_rows(law, f, p, levels=levels, source_idx=s, target_idx=t,
                                n_targets=len(table.targets))

    got_jit = jitted(jfeats, jlp, jnp.asarray(table.source_idx), jnp.asarray(table.target_idx))
    np.testing.assert_allclose(np.asarray(got_jit), expected, rtol=1e-5, atol=1e-5)


def test_params_already_at_the_rows_give_the_same_values(table):
    law = LAWS["transfer-gap"]
    feats = features(table.df)
    levels, lp = _draws(law, table)
    group = {"pair": table.source_idx * len(table.targets) + table.target_idx,
             "source": table.source_idx, "target": table.target_idx}
    at = {p: v[:, None] if levels[p] == "global" else v[:, group[levels[p]]]
          for p, v in lp.items()}
    np.testing.assert_allclose(log_loss_at_rows(law, feats, at, xp=np),
                               log_loss_at_rows(law, feats, lp, levels=levels, xp=np,
                                                source_idx=table.source_idx,
                                                target_idx=table.target_idx,
                                                n_targets=len(table.targets)))
    assert levels_of(load_spec("transfer-gap"))["G"] == "pair"


# ---- every former copy calls it -------------------------------------------------------

# The modules allowed to call a law's log_loss directly: the function itself, the two
# model likelihoods (they evaluate the law on their sampled sites), and the law's own
# convenience method (Law.loss). Looking parameters up with model.at_rows for other ends
# (raw units per pair, say) is not evaluating the law, and is allowed anywhere.
ALLOWED = {"evaluate.py", "model.py", "pymc_backend.py", "laws.py"}


def _calls(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name == "log_loss":
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}()")
    return found


def test_no_module_evaluates_a_law_at_rows_by_hand():
    offenders = [c for path in sorted(PACKAGE.rglob("*.py")) if path.name not in ALLOWED
                 for c in _calls(path)]
    assert offenders == [], "call bayes_transfer.evaluate.log_loss_at_rows instead"


@pytest.fixture
def spy(monkeypatch):
    """Replace the function in each former copy's module with a counting wrapper."""
    import bayes_transfer.baseline as baseline
    import bayes_transfer.design.acquisition as acquisition
    import bayes_transfer.inference as inference
    import bayes_transfer.loop as loop

    calls: list[str] = []
    for mod in (inference, acquisition, loop, baseline):
        def wrapper(*args, _mod=mod.__name__, **kwargs):
            calls.append(_mod)
            return log_loss_at_rows(*args, **kwargs)

        monkeypatch.setattr(mod, "log_loss_at_rows", wrapper)
    # The acquisition keeps compiled programs that captured the function when traced.
    monkeypatch.setattr(acquisition, "_LOG_MEAN_CACHE", {})
    return calls


def test_predict_acquisition_simulator_and_baseline_route_through_it(spy):
    from bayes_transfer.baseline import BaselineFit
    from bayes_transfer.design.acquisition import as_draws, log_mean_draws
    from bayes_transfer.loop import simulated_runner

    sim = simulated("transfer-gap")
    post = known_posterior(sim, 0.01, draws=20)
    rows = sim.runs.df.iloc[:5]
    post.predict_draws(rows)
    assert spy == ["bayes_transfer.inference"]
    log_mean_draws(as_draws(post), rows)
    assert spy[-1] == "bayes_transfer.design.acquisition"
    simulated_runner(sim)(rows.drop(columns=["loss"]))
    assert spy[-1] == "bayes_transfer.loop"
    law = LAWS["transfer-gap"]
    point = np.zeros((1, len(law.params)))
    frame = pd.DataFrame(index=["*->*"])
    BaselineFit(law, "global", frame, point, point[None], {}).predict_draws(rows)
    assert spy[-1] == "bayes_transfer.baseline"
