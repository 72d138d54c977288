"""Probe: a late residual trend added to the Bayesian model selection's predictions.

``select_model`` fits ``finetune-curves`` (with its discrepancy) to the rows up to a budget
and predicts each model's loss at the full size. Here, per model, the law's residuals
(observed log loss minus the posterior median of the law) at its three largest fitted
sizes give a line in log f; several ways of carrying it to the full size are added to the
predicted log median and interval (the intervals are shifted, not widened), and the
selection is rescored. "centred slope": the slope minus its median over the models, so that
only a model's departure from the others' late trend is continued (the common part is a
shared bias, the discrepancy's business). Uses the fitted rows only; the truth only scores.

    python docs/probes/late_trend_on_bayes.py flan 8      # ~7 min on 2 cores

Measured 2026-12-07 (docs/measurements.md, "Which side the misses fall on").
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

from bayes_transfer import load_public
from bayes_transfer.selection import pearson_percent, select_model

LARGEST = 1_638_400  # examples: the size Lin et al. predict


def main(name: str, denom: int) -> None:
    warnings.simplefilter("ignore")
    runs = load_public(f"rectified-scaling-{name}")
    at = float(runs.df.loc[runs.df["finetune_examples"] == LARGEST, "finetune_tokens"].iloc[0])
    sel = select_model(runs, "finetune-curves", target=name, at=at, budget=1 / denom, ci=0.9,
                       chains=2, draws=500, warmup=500, seed=0)
    post = sel.posterior
    law = np.median(post.law_log_loss(post.runs), axis=0)
    fitted = post.runs.df.assign(resid=np.log(post.runs.df["loss"].to_numpy()) - law)
    tuned = fitted[fitted["finetune_tokens"] > 0]
    xt = np.log(at)
    slope, last, x_last = {}, {}, {}
    for src, g in tuned.groupby("source"):
        g = g.sort_values("finetune_tokens").tail(3)
        x, r = np.log(g["finetune_tokens"].to_numpy()), g["resid"].to_numpy()
        slope[src], _ = np.polyfit(x, r, 1)
        last[src], x_last[src] = r[-1], x[-1]
    common = float(np.median(list(slope.values())))
    print(f"median late residual slope over the models: {common:+.4f} per unit log f")
    variants = {
        "bayes": {m: 0.0 for m in slope},
        "last residual only": last,
        "slope only": {m: slope[m] * (xt - x_last[m]) for m in slope},
        "last residual + slope": {m: last[m] + slope[m] * (xt - x_last[m]) for m in slope},
        "slope only (centred)": {m: (slope[m] - common) * (xt - x_last[m]) for m in slope},
        "last residual + slope (centred)": {m: last[m] + (slope[m] - common) * (xt - x_last[m])
                                            for m in slope},
    }
    t = sel.table
    y = np.log(t["loss_actual"].to_numpy())
    for label, shift in variants.items():
        off = t["source"].map(shift).to_numpy(np.float64)
        med, lo, hi = (np.log(t[c].to_numpy()) + off
                       for c in ("loss_median", "loss_lower", "loss_upper"))
        print(f"{name} 1/{denom} {label}: Pearson {pearson_percent(np.exp(med), np.exp(y)):.1f}"
              f", median |err| {np.median(np.abs(y - med)):.3f}, median err "
              f"{np.median(y - med):+.3f}, 90% coverage {np.mean((y >= lo) & (y <= hi)):.2f} "
              f"(above {np.mean(y > hi):.2f}, below {np.mean(y < lo):.2f})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "flan", int(sys.argv[2]) if len(sys.argv) > 2 else 8)
