"""Probe: does the rectified law's own late misfit carry the late slope that AtS reads?

Model selection (benchmarks/finetune_selection.py) misses the paper's AtS Pearson at every
budget, and a straight line through each curve's last three sizes (no law) reaches it
(docs/measurements.md, "Model selection: what limits the Pearson correlation"). This
probe asks whether a discrepancy *inside* the fitted range, correlated along log f and
continued beyond it, would carry that information while keeping the law: per model, a
least-squares fit of the rectified law ``L(f) = B / (D_l + f^beta) + E`` in log loss on
the rows up to the budget (zero-shot included, as the selection fits them), then a line
through the law's residuals at the last K sizes, continued to the largest size: the
posterior mean of an integrated random walk on the residuals, roughly. No NUTS, no
hierarchy: what it measures is the point prediction's Pearson and median error.

    python docs/probes/late_residual_trend.py flan gigaword     # ~4 min a table on 2 cores
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
from scipy.optimize import least_squares

from bayes_transfer.public_data import load_public

LARGEST = 1_638_400
BUDGETS = (8, 16, 32, 64, 128, 256, 512)
ATS = {"flan": (90.9, 73.1, 65.5, 61.1, 52.2, 50.5, 45.6),
       "gigaword": (98.9, 97.6, 96.9, 92.0, 91.1, 89.1, 91.0)}
UNIT = 1e3  # examples; puts the coefficients near 1


def rectified(theta: np.ndarray, f: np.ndarray) -> np.ndarray:
    b, d_l, beta, e = np.exp(theta)
    return np.log(b / (d_l + (f / UNIT) ** beta) + e)


def fit(f: np.ndarray, y: np.ndarray, rng: np.random.Generator, starts: int = 8) -> np.ndarray:
    # Multi-start: the rectified law's least squares has minor modes.
    best = None
    for _ in range(starts):
        theta0 = rng.normal(0.0, 1.5, 4)
        theta0[2] = rng.normal(-0.5, 0.5)
        r = least_squares(lambda th: rectified(th, f) - y, theta0, bounds=(-12, 8))
        if best is None or r.cost < best.cost:
            best = r
    return best.x


def predictions(f: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Log loss at the largest size: the law, the law plus its late residual trend over
    K = 2, 3, 4 sizes, and a line through the last three sizes (AtS-like)."""
    theta = fit(f, y, rng)
    law = float(rectified(theta, np.array([float(LARGEST)]))[0])
    run = f > 0
    x, resid = np.log2(f[run]), (y - rectified(theta, f))[run]
    out = {"law": law}
    for k in (2, 3, 4):
        slope, level = np.polyfit(x[-k:], resid[-k:], 1)
        out[f"law+trend{k}"] = law + level + slope * np.log2(LARGEST)
    slope, level = np.polyfit(x[-3:], y[run][-3:], 1)
    out["line3"] = level + slope * np.log2(LARGEST)
    return out


def main(tables: list[str]) -> None:
    warnings.filterwarnings("ignore")
    for name in tables:
        rng = np.random.default_rng(0)  # per table: each table's figures alone
        df = load_public(f"rectified-scaling-{name}").df
        models = sorted(df["source"].unique())
        truth = np.array([df[(df["source"] == m) & (df["finetune_examples"] == LARGEST)]
                          ["loss"].iloc[0] for m in models])
        for budget, ats in zip(BUDGETS, ATS[name], strict=True):
            per_model = []
            for m in models:
                g = df[(df["source"] == m) & (df["finetune_examples"] <= LARGEST / budget)]
                g = g.sort_values("finetune_examples")
                per_model.append(predictions(g["finetune_examples"].to_numpy(float),
                                             np.log(g["loss"].to_numpy()), rng))
            cells = []
            for key in per_model[0]:
                pred = np.exp([p[key] for p in per_model])
                r = 100 * np.corrcoef(pred, truth)[0, 1]
                cells.append(f"{key} {r:.1f}/{np.median(np.abs(pred - truth)):.3f}")
            print(f"{name} 1/{budget} (AtS {ats}): " + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["flan", "gigaword"])
