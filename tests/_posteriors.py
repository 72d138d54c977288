"""Posteriors with known draws, for tests that need a Posterior but not a fit.

``known_posterior`` scatters every ``log(param)`` around a simulation's true value with a
chosen spread: spread 0.01 is a posterior that has learned the truth, spread 1 one that
has learned little. No sampler runs, so a test that uses one takes milliseconds.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pandas as pd

from bayes_transfer import simulate
from bayes_transfer.diagnostics import diagnose
from bayes_transfer.inference import Posterior, _annotate

TRUTH = {"sigma": 0.02, "G_mu": -1.0, "A_mu": 2.5, "alpha_mu": -1.0, "beta_mu": -1.8,
         "K_mu": 1.5, "log_gamma": -1.2, "E_mu": 0.3}


def simulated(law: str = "transfer-gap-size", seed: int = 1) -> simulate.Simulation:
    """Two sources x two targets, pair code->prose never run, two model sizes."""
    design = simulate.design_grid(["web", "code"], ["math", "prose"], params=[1e5, 1e6],
                                  pretrain_tokens=[1e6, 1e7, 1e8],
                                  finetune_tokens=[1e4, 1e5, 1e6])
    design = design[~((design.source == "code") & (design.target == "prose"))]
    truth = {k: v for k, v in TRUTH.items() if law != "transfer-gap" or k[0] not in "Kg"}
    return simulate.simulate(law, design, seed=seed, truth=truth, loss_se=0.02)


def known_posterior(sim: simulate.Simulation, spread: float, *, draws: int = 300,
                    seed: int = 0) -> Posterior:
    """A 2-chain Posterior whose log params are the truth plus N(0, spread) noise."""
    rng = np.random.default_rng(seed)
    spec, runs = sim.spec, sim.runs
    values, dims = {}, {}
    for name, p in spec.params.items():
        true = np.asarray(sim.true_log(name))
        values[f"log_{name}"] = true + spread * rng.standard_normal((2, draws) + true.shape)
        dims[f"log_{name}"] = [] if p.level == "global" else [p.level]
        for site, site_dims in p.site_names.items():  # mu, sds and z's of the model
            if site not in sim.truth:  # e.g. a partially centred site this table lacks
                continue
            true = np.asarray(sim.truth[site])
            values[site] = true + spread * rng.standard_normal((2, draws) + true.shape)
            dims[site] = list(site_dims)
    values["sigma"] = np.abs(0.02 + 0.005 * rng.standard_normal((2, draws)))
    coords = {"source": list(runs.sources), "target": list(runs.targets),
              "pair": runs.pair_labels}
    idata = az.from_dict(posterior=values, coords=coords, dims=dims)
    _annotate(idata, spec, runs, backend="known", left_out=0, units=sim.units)
    return Posterior(idata=idata, spec=spec, runs=runs,
                     diagnostics=diagnose(idata, warn=False))


def saved_posterior(path, draws: int = 50):
    """A valid posterior file of known draws, with sample stats (``lp``, ``energy``, no
    divergences), saved at ``path`` and loaded once to prove it; returns the path."""
    from pathlib import Path

    post = known_posterior(simulated("transfer-gap"), spread=0.1, draws=draws)
    rng = np.random.default_rng(0)
    post.idata.add_groups({"sample_stats": az.from_dict(sample_stats={
        "diverging": np.zeros((2, draws), bool), "lp": rng.standard_normal((2, draws)),
        "energy": rng.standard_normal((2, draws))}).sample_stats})
    path = post.save(Path(path))
    Posterior.load(path)
    return path


def loop_candidates() -> pd.DataFrame:
    """The loop tests' candidate grid: 2 x 2 pairs at one N, 3 x 3 token sizes."""
    from bayes_transfer.design import candidate_grid

    return candidate_grid(["a", "b"], ["x", "y"], params=[1e6],
                          pretrain_tokens=[1e7, 1e8, 1e9], finetune_tokens=[1e5, 1e6, 1e7])


def drift_fit(late_trend: bool = False, **discrepancy: str) -> Posterior:
    """A Chinchilla fit with a discrepancy along N (one global slope, scale 0.05) on 60
    rows whose law is slightly wrong (a log-curvature it cannot follow, so its
    extrapolations drift): fitted N from 1e6 to 1e8, 1 chain x 300 + 300. ``late_trend``:
    the discrepancy continues the residuals' late trend too; ``discrepancy``: other keys
    of the spec's section (``on``, ``mean_on``)."""
    import warnings

    from bayes_transfer.diagnostics import SamplingWarning
    from bayes_transfer.inference import fit
    from bayes_transfer.spec import ModelSpec

    rng = np.random.default_rng(3)
    n = np.exp(rng.uniform(np.log(1e6), np.log(1e8), 60))
    d = 20 * n * np.exp(rng.uniform(-1, 1, 60))
    loss = (1.7 + 30 * n**-0.3 + 60 * d**-0.3) * np.exp(0.01 * (np.log(n) - 16) ** 2)
    loss *= np.exp(0.005 * rng.standard_normal(60))
    df = pd.DataFrame({"run_id": [f"r{i}" for i in range(60)], "source": "web",
                       "target": "web", "params": n.astype(int),
                       "pretrain_tokens": d.astype(int), "finetune_tokens": 0, "loss": loss})
    spec = ModelSpec.from_dict({"law": "chinchilla", "discrepancy": {
        "axes": ["params"], "level": "global", "scale": 0.05, "late_trend": late_trend,
        **discrepancy}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        return fit(df, spec, chains=1, draws=300, warmup=300, seed=0, progress=False)
