"""Simulation-based calibration (Talts et al. 2018) of the hierarchical transfer-gap model.

Datasets are drawn from the prior of the bundled ``transfer-gap`` spec on a small design
(2 sources x 2 targets, p and f on a 3 x 3 grid: 36 rows). Each is fitted by NUTS (one
chain, all datasets vectorised with ``jax.vmap`` so that one compiled program fits them
all), the kept draws are thinned to 100 roughly independent draws, and the rank of each true
value among them is recorded. If the sampler and the model are right, every rank is
uniform on 0..100.

Uniformity is tested per parameter group (the log gaps ``G`` of every pair, ``A``,
``alpha``, ``beta``, ``E`` and the noise ``sigma``) with a chi-square test on 10 bins.
Dataset k contributes the rank of one component of each group (component k mod size), so
the ranks in a test are independent; the overall p-value is the Bonferroni combination
(number of groups x the smallest p). A rank histogram of every component is saved as a
PNG (``--out``).

Target (exit status 1 when missed): uniformity not rejected, overall p >= 0.01.

    python benchmarks/calibration.py            # 200 datasets, ~2.5 min on 2 cores
    python benchmarks/calibration.py --quick    # 12 datasets, ~1 min
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _common import OUT, header, parser, timer, verdict
from numpyro.infer import Predictive
from numpyro.infer.hmc import hmc
from numpyro.infer.util import initialize_model
from scipy import stats

from bayes_transfer.model import hierarchical_model, model_data
from bayes_transfer.simulate import design_grid, simulate
from bayes_transfer.spec import load_spec

L = 100  # kept (thinned) draws per dataset: ranks take values 0..L
BINS = 10
ALPHA = 0.01


def base_data(spec):
    design = design_grid(["s1", "s2"], ["t1", "t2"], params=[1e6],
                         pretrain_tokens=[1e6, 1e7, 1e8], finetune_tokens=[1e4, 1e5, 1e6])
    runs = simulate(spec, design, seed=0).runs  # only its shape and features are used
    return model_data(spec, runs)


def sbc_ranks(spec, n_datasets: int, warmup: int, thin: int, seed: int,
              chunk: int = 50) -> tuple[dict[str, np.ndarray], int]:
    """Ranks ``{group: (datasets, components)}`` and the number of divergent draws."""
    data = base_data(spec)
    groups = [f"log_{p}" for p in spec.params] + ["sigma"]

    def model(log_loss):
        hierarchical_model(dataclasses.replace(data, log_loss=log_loss))

    key = jax.random.key(seed)
    prior = Predictive(hierarchical_model, num_samples=n_datasets)(key, data, observed=False)
    truths = {g: np.asarray(prior[g]).reshape(n_datasets, -1) for g in groups}
    y = jnp.asarray(prior["log_loss"])

    _, potential_gen, constrain_gen, _ = initialize_model(
        key, model, model_args=(y[0],), dynamic_args=True)
    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")
    constrain = constrain_gen(y[0])  # deterministic sites do not depend on the data

    def fit_one(rng, obs, init):
        state = init_kernel(init, warmup, target_accept_prob=0.9, max_tree_depth=8,
                            model_args=(obs,), rng_key=rng)

        def step(s, _):
            s = sample_kernel(s, model_args=(obs,))
            return s, (s.z, s.diverging)

        # One scan over warmup and sampling: a single copy of the NUTS kernel to compile.
        _, (z, div) = jax.lax.scan(step, state, None, length=warmup + L * thin)
        z = jax.tree.map(lambda a: a[warmup + thin - 1::thin], z)  # every thin-th kept draw
        kept = {g: v for g, v in jax.vmap(constrain)(z).items() if g in groups}
        return kept, div[warmup:].sum()

    run = jax.jit(jax.vmap(fit_one))
    ranks = {g: [] for g in groups}
    divergent = 0
    keys = jax.random.split(jax.random.key(seed + 1), n_datasets)
    # Initial values: uniform in (-2, 2) on the unconstrained scale, one per dataset.
    inits = initialize_model(keys, model, model_args=(y[0],), dynamic_args=True)[0].z
    for lo in range(0, n_datasets, chunk):
        part = slice(lo, lo + chunk)
        draws, div = run(keys[part], y[part], jax.tree.map(lambda a, s=part: a[s], inits))
        divergent += int(div.sum())
        for g in groups:
            d = np.asarray(draws[g]).reshape(len(div), L, -1)
            ranks[g].append((d < truths[g][lo:lo + chunk, None, :]).sum(axis=1))
        print(f"  {min(lo + chunk, n_datasets)}/{n_datasets} datasets fitted", flush=True)
    return {g: np.concatenate(r) for g, r in ranks.items()}, divergent


def uniformity(ranks: np.ndarray) -> tuple[float, float]:
    """Chi-square p-value on BINS bins of one rank per dataset (component k mod size)."""
    k = np.arange(len(ranks))
    picked = ranks[k, k % ranks.shape[1]]
    counts = np.bincount(np.minimum(picked * BINS // (L + 1), BINS - 1), minlength=BINS)
    chi2, p = stats.chisquare(counts)
    return float(chi2), float(p)


def save_histogram(ranks: dict[str, np.ndarray], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ranks), figsize=(3 * len(ranks), 2.6), sharey=False)
    for ax, (g, r) in zip(axes, ranks.items(), strict=True):
        flat = r.ravel()
        ax.hist(flat, bins=np.linspace(0, L + 1, BINS + 1), color="C0", edgecolor="white")
        expected = len(flat) / BINS
        band = stats.binom.ppf([0.005, 0.995], len(flat), 1 / BINS)
        ax.axhspan(*band, color="grey", alpha=0.25, lw=0)
        ax.axhline(expected, color="k", lw=0.8)
        ax.set_title(g.removeprefix("log_"))
        ax.set_xlabel("rank of the truth")
    axes[0].set_ylabel("count (all components)")
    fig.suptitle("SBC rank histograms (grey: 99% band of a uniform count)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--datasets", type=int, default=None,
                   help="simulated datasets (default 200; 12 with --quick)")
    p.add_argument("--out", default=str(OUT / "calibration_ranks.png"),
                   help="rank histogram PNG to write")
    args = p.parse_args(argv)
    n = args.datasets or (12 if args.quick else 200)
    warmup, thin = (100, 1) if args.quick else (300, 3)
    spec = load_spec("transfer-gap")
    header(f"simulation-based calibration: {n} datasets from the transfer-gap prior, "
           f"1 chain x {warmup} warmup + {L * thin} draws thinned by {thin} to {L}")
    with timer() as t:
        ranks, divergent = sbc_ranks(spec, n, warmup, thin, args.seed)
    save_histogram(ranks, Path(args.out))

    print(f"\nfitted in {t['seconds']:.0f} s; {divergent} divergent of {n * L * thin} kept "
          f"transitions; histogram: {args.out}")
    print(f"{'group':<8} {'components':>10} {'chi2':>7} {'p':>7}   (10 bins, one rank per "
          "dataset)")
    pvalues = []
    for g, r in ranks.items():
        chi2, pv = uniformity(r)
        pvalues.append(pv)
        print(f"{g.removeprefix('log_'):<8} {r.shape[1]:>10} {chi2:>7.2f} {pv:>7.3f}")
    overall = min(1.0, len(pvalues) * min(pvalues))
    print(f"{'overall':<8} {'':>10} {'':>7} {overall:>7.3f}   (Bonferroni over groups)")
    return verdict(overall >= ALPHA, f"rank uniformity not rejected at p < {ALPHA} "
                   f"(overall p = {overall:.3f})")


if __name__ == "__main__":
    sys.exit(main())
