"""The compute-optimal frontier of the Chinchilla law: ``advise`` on a chinchilla posterior."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from _posteriors import known_posterior
from scipy.optimize import minimize_scalar
from typer.testing import CliRunner

from bayes_transfer.advise import compute_frontier, optimal_allocation
from bayes_transfer.cli import app
from bayes_transfer.laws import LAWS, Units
from bayes_transfer.simulate import design_grid, simulate
from bayes_transfer.spec import load_spec

# Besiroglu et al. 2024 (Epoch AI's replication of Hoffmann et al. 2022), raw units.
REPLICATION = {"E": 1.82, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
CHINCHILLA_FLOPS = 5.76e23  # Chinchilla's own budget (70B parameters, 1.4T tokens)


def _numerical_optimum(E, A, alpha, B, beta, compute):
    """argmin over log N of the loss at D = C / (6 N): no closed form used."""
    def loss(log_n):
        n = np.exp(log_n)
        return E + A * n ** -alpha + B * (compute / (6 * n)) ** -beta
    res = minimize_scalar(loss, bounds=(np.log(1e2), np.log(compute / 6 / 1e2)),
                          method="bounded", options={"xatol": 1e-10})
    n = np.exp(res.x)
    return n, compute / (6 * n), res.fun


def test_closed_form_is_the_numerical_argmin_draw_by_draw():
    rng = np.random.default_rng(0)
    for _ in range(30):  # draws scattered widely around the replication
        raw = {k: v * np.exp(0.4 * rng.standard_normal()) for k, v in REPLICATION.items()}
        compute = 10 ** rng.uniform(18, 26)
        log_n, log_d = optimal_allocation({k: np.log(v) for k, v in raw.items()}, compute)
        n, d, _ = _numerical_optimum(**raw, compute=compute)
        assert np.exp(log_n) == pytest.approx(n, rel=1e-4)
        assert np.exp(log_d) == pytest.approx(d, rel=1e-4)
        assert 6 * np.exp(log_n + log_d) == pytest.approx(compute, rel=1e-9)


def _replication_posterior(spread: float, draws: int = 200):
    """A chinchilla posterior whose draws sit at (spread 0) or around the replication."""
    spec = dataclasses.replace(load_spec("chinchilla"), discrepancy=None)
    design = design_grid(["massivetext"], ["massivetext"], params=[1e8, 1e9, 1e10],
                         pretrain_tokens=[1e9, 1e10, 1e11], finetune_tokens=[0])
    units = Units(params=1e9, tokens=1e10)
    # Reference units: A N^-alpha = (A N0^-alpha) (N / N0)^-alpha; the same for B and T0.
    truth = {"log_E": np.log(REPLICATION["E"]), "log_alpha": np.log(REPLICATION["alpha"]),
             "log_beta": np.log(REPLICATION["beta"]),
             "log_A": np.log(REPLICATION["A"]) - REPLICATION["alpha"] * np.log(units.params),
             "log_B": np.log(REPLICATION["B"]) - REPLICATION["beta"] * np.log(units.tokens),
             "sigma": 0.02}
    sim = simulate(spec, design, seed=0, truth=truth, units=units)
    post = known_posterior(sim, spread=spread, draws=draws)
    # No parameter of this spec varies by source, target or pair, and xarray drops a
    # coordinate no variable uses; the posterior file's reader requires all three, so put
    # back any that are gone (inference._annotate does the same for a real fit).
    ds, runs = post.idata.posterior, sim.runs
    coords = {"source": list(runs.sources), "target": list(runs.targets),
              "pair": runs.pair_labels}
    post.idata.posterior = ds.assign_coords({d: v for d, v in coords.items()
                                             if d not in ds.coords})
    return post


def test_frontier_at_the_replication_gives_its_allocation():
    post = _replication_posterior(spread=0.0, draws=20)
    front = compute_frontier(post, [1e21, CHINCHILLA_FLOPS])
    for row in front.table.itertuples(index=False):
        n, d, loss = _numerical_optimum(**REPLICATION, compute=row.compute)
        assert row.params_median == pytest.approx(n, rel=1e-3)
        assert row.tokens_median == pytest.approx(d, rel=1e-3)
        assert row.loss_median == pytest.approx(loss, rel=1e-4)
        assert row.params_lower == pytest.approx(row.params_upper, rel=1e-3)  # no spread
    at_chinchilla = front.table.iloc[1]
    # The replication's optimum at Chinchilla's budget: ~72B parameters on ~1.33T tokens
    # (about 18 tokens a parameter), loss ~1.98 nats, computed above by the argmin.
    assert 6.5e10 < at_chinchilla.params_median < 8e10
    assert 1.2e12 < at_chinchilla.tokens_median < 1.45e12
    assert 17 < at_chinchilla.tokens_per_param_median < 20
    assert front.table[["source", "target"]].drop_duplicates().values.tolist() == [["*", "*"]]
    a = front.exponents.iloc[0]
    assert a.a_median == pytest.approx(0.3658 / (0.3478 + 0.3658), rel=1e-6)


def test_frontier_intervals_widen_with_the_posterior():
    narrow = compute_frontier(_replication_posterior(0.01), [CHINCHILLA_FLOPS]).table.iloc[0]
    wide = compute_frontier(_replication_posterior(0.1), [CHINCHILLA_FLOPS]).table.iloc[0]
    assert narrow.params_lower < narrow.params_median < narrow.params_upper
    # Ten times the spread of the log params: several times the log width of N_opt.
    assert (np.log(wide.params_upper / wide.params_lower)
            > 3 * np.log(narrow.params_upper / narrow.params_lower))
    assert wide.loss_lower < wide.loss_median < wide.loss_upper


def test_only_laws_with_the_trade_off_have_a_frontier():
    assert [name for name, law in LAWS.items() if law.compute_frontier] == ["chinchilla"]
    from _posteriors import simulated

    post = known_posterior(simulated("transfer-gap"), spread=0.01, draws=10)
    with pytest.raises(ValueError, match="no compute-optimal frontier"):
        compute_frontier(post, [1e18])


def test_cli_advise_prints_the_frontier(tmp_path):
    path = _replication_posterior(spread=0.02).save(tmp_path / "chin.nc")
    runner = CliRunner()
    res = runner.invoke(app, ["advise", str(path), "--compute", f"1e21,{CHINCHILLA_FLOPS}"])
    assert res.exit_code == 0, res.output
    assert "compute-optimal" in res.stdout and "tokens/param" in res.stdout
    assert "5.76e+23" in res.stdout and "7.2" in res.stdout  # ~72B parameters there
    res = runner.invoke(app, ["advise", str(path), "--compute-range", "1e20,1e24",
                              "--points", "5", "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["law"] == "chinchilla" and out["units"] == "raw"
    assert [r["compute"] for r in out["rows"]] == pytest.approx(np.geomspace(1e20, 1e24, 5))
    assert all(r["params_lower"] <= r["params_median"] <= r["params_upper"]
               for r in out["rows"])
    assert out["exponents"][0]["a_median"] == pytest.approx(0.513, abs=0.01)
    # Beyond the fitted table (N up to 1e10): one warning line, not a traceback.
    # (The short fit may also fail its diagnostics, which is its own warning line.)
    beyond = [line for line in res.stderr.splitlines()
              if line.startswith("warning:") and "beyond" in line]
    assert len(beyond) == 1 and "Traceback" not in res.stderr, res.stderr
    bad = runner.invoke(app, ["advise", str(path), "--compute", "1e21", "--unit", "tokens"])
    assert bad.exit_code == 1


def test_cli_advise_on_a_transfer_law_refuses_frontier_options(tmp_path):
    from _posteriors import simulated

    path = known_posterior(simulated("transfer-gap"), spread=0.01, draws=10).save(
        tmp_path / "tg.nc")
    runner = CliRunner()
    res = runner.invoke(app, ["advise", str(path), "--target", "math", "--budget", "1e16",
                              "--compute", "1e20"])
    assert res.exit_code == 1 and "compute frontier" in res.output
    res = runner.invoke(app, ["advise", str(path), "--compute", "1e20"])
    assert res.exit_code == 1 and "give --target and --budget" in res.output
