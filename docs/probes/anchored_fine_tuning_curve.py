"""Probe (docs/measurements.md, 2026-12-05): one pair's fine-tuning curve in anchored coordinates.

The first round of ``benchmarks/active_learning.py`` sees each pair's
``(A p^-alpha + G) f^-beta + E`` at the four (p, f) corners: two values of f leave E,
beta and the coefficient free along a curved line, and NUTS runs at its maximum depth.
This fits one such pair (the first of seed 0's initial design, the spec's marginal priors
for one pair, no hierarchy) twice, with the same prior: on the log-parameters, and on
anchored coordinates (log alpha, log beta, the log loss at (smallest p, largest f), where
the loss at the smallest f lies in its allowed range, and the size term's share of the
coefficient at the smallest p), the prior carried over by the Jacobian of the map.

Run: ``python docs/probes/anchored_fine_tuning_curve.py`` (about 90 s on 2 cores). Not a
test and not a benchmark: it is the evidence for a change not yet made to the model.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import warnings

import active_learning as al
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from numpyro.infer import MCMC, NUTS

from bayes_transfer.loop import simulated_runner
from bayes_transfer.simulate import simulate

warnings.filterwarnings("ignore")
jax.config.update("jax_enable_x64", True)
cands = al.candidates()
first = al.first_design()
one = cands.groupby(["source","target"]).head(1)
truth = simulate(al.SPEC, one, seed=1000, truth=al.HYPERS, units=al.UNITS)
table = simulated_runner(truth, seed=0)(first)
pair = table[(table.source == table.source.iloc[0]) & (table.target == table.target.iloc[0])]
print(pair[["source","target","pretrain_tokens","finetune_tokens","loss"]])
p = jnp.asarray(pair.pretrain_tokens.values / 1e8)  # the benchmark's units
f = jnp.asarray(pair.finetune_tokens.values / 1e8)
y = jnp.log(jnp.asarray(pair.loss.values))
# marginal priors of one pair's log-parameters under the spec (loc, sqrt(scale^2 + group scales^2))
PRI = {"A": (-0.5, (1.5**2 + 3 * 1.0**2) ** .5), "G": (-1.0, (1.5**2 + 3 * 1.0**2) ** .5),
       "alpha": (-1.2, (0.7**2 + 0.5**2) ** .5), "beta": (-1.6, (0.7**2 + 0.5**2) ** .5),
       "E": (0.3, (1.0**2 + 0.5**2) ** .5)}
NAMES = ("A", "G", "alpha", "beta", "E")
p_lo, f1, f2 = p.min(), f.min(), f.max()

def law(lp):
    A, G, a, b, E = (jnp.exp(lp[i]) for i in range(5))
    return jnp.log((A * p ** -a + G) * f ** -b + E)

def lik(lp):
    sigma = numpyro.sample("sigma", dist.HalfNormal(0.05))
    numpyro.sample("y", dist.StudentT(4.0, law(lp), sigma), obs=y)

def standard():
    lp = jnp.stack([numpyro.sample(n, dist.Normal(*PRI[n])) for n in NAMES])
    lik(lp)

def to_log_params(c):
    # c = (log alpha, log beta, log L2, q, g): L2 = loss at (p_lo, f2); L1 = L2 e^r at (p_lo, f1)
    la, lb, l2, q, g = c
    a, b = jnp.exp(la), jnp.exp(lb)
    r = b * jnp.log(f2 / f1) * jax.nn.sigmoid(q)   # 0 < log(L1/L2) < b log(f2/f1) keeps E > 0
    L2 = jnp.exp(l2)
    L1 = L2 * jnp.exp(r)
    C1 = (L1 - L2) / (f1 ** -b - f2 ** -b)          # C(p_lo)
    E = L1 - C1 * f1 ** -b
    s = jax.nn.sigmoid(g)                            # A p_lo^-a share of C(p_lo)
    A = C1 * s * p_lo ** a
    G = C1 * (1 - s)
    return jnp.stack([jnp.log(A), jnp.log(G), la, lb, jnp.log(E)])

def anchored():
    c = jnp.stack([numpyro.sample(n, dist.ImproperUniform(dist.constraints.real, (), ()))
                   for n in ("la", "lb", "l2", "q", "g")])
    lp = to_log_params(c)
    jac = jax.jacfwd(to_log_params)(c)
    numpyro.factor("prior", sum(dist.Normal(*PRI[n]).log_prob(lp[i]) for i, n in enumerate(NAMES))
                   + jnp.linalg.slogdet(jac)[1])
    for i, n in enumerate(NAMES):
        numpyro.deterministic("log_" + n, lp[i])
    lik(lp)

for name, model in (("standard", standard), ("anchored", anchored)):
    m = MCMC(NUTS(model, target_accept_prob=0.9, max_tree_depth=10), num_warmup=1000,
             num_samples=1000, num_chains=4, chain_method="sequential", progress_bar=False)
    t0 = time.time()
    m.run(jax.random.key(1), extra_fields=("num_steps", "adapt_state.step_size"))
    ex = m.get_extra_fields(group_by_chain=True)
    s = m.get_samples(group_by_chain=True)
    keys = ["log_" + n for n in NAMES] if name == "anchored" else list(NAMES)
    rh = max(float(split_gelman_rubin(np.asarray(s[k]))) for k in keys)
    ess = min(float(effective_sample_size(np.asarray(s[k]))) for k in keys)
    q = {k: np.quantile(np.asarray(s[k]), [0.05, 0.5, 0.95]).round(2).tolist() for k in keys}
    print(f"{name}: {time.time()-t0:.0f}s steps {float(ex['num_steps'].mean()):.0f} "
          f"step {float(ex['adapt_state.step_size'][:, -1].mean()):.4f} R-hat {rh:.3f} ESS {ess:.0f}", q, flush=True)
