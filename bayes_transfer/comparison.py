"""Model comparison: pointwise log-likelihoods and PSIS-LOO rankings of laws and specs.

A posterior's ``log_likelihood`` group (what ``az.loo``, ``az.waic`` and ``az.compare``
read) is computed from its draws, the way Bambi's ``compute_log_likelihood`` does: the
model of its spec is evaluated at its run table for every posterior draw with
``numpyro.infer.log_likelihood``. The observed variable is ``log_loss`` (the likelihood is
on the log loss) with dim ``row``, one value per fitted row. A saved posterior needs no
change: the group is computed when it is wanted, from the spec, table and units the file
carries.

Example::

    import bayes_transfer as bt
    runs = bt.load_runs("data/transfer_runs.csv")
    posts = {law: bt.fit(runs, law) for law in ("transfer-gap", "transfer-gap-size")}
    bt.compare(posts)   # best first: elpd_loo, elpd_diff, weight, Pareto-k columns
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

    from bayes_transfer.inference import Posterior

__all__ = ["log_likelihood", "add_log_likelihood", "compare", "row_labels", "OBSERVED"]

OBSERVED = "log_loss"  # the name of the observed variable in every group
# Draw-by-row elements evaluated at once: the model is vectorised over draws, and a table
# with many rows would otherwise hold every draw's every row in memory at once.
_CHUNK_ELEMENTS = 2**23


def log_likelihood(post: Posterior) -> xr.DataArray:
    """The log density of each fitted row under each posterior draw.

    Returns a ``log_loss`` DataArray of dims ``(chain, draw, row)``: the likelihood's log
    density of the row's log loss given that draw's parameters (its spec's Student-t or
    Normal, with the row's ``loss_se``). The draws passed to the model are the
    posterior's variables of every sample site of the model.
    """
    import xarray as xr
    from numpyro.infer import log_likelihood as numpyro_log_likelihood

    from bayes_transfer.model import hierarchical_model, latent_sites, model_data

    data = model_data(post.spec, post.runs, post.units)
    sites = list(latent_sites(data))
    from bayes_transfer.named_params import all_draws

    posterior = all_draws(post.idata)  # offsets live in unconstrained_posterior
    missing = [name for name in sites if name not in posterior]
    if missing:
        raise ValueError(f"the posterior has no draws of the model's sample sites {missing}"
                         f" (spec {post.spec.name or post.spec.law}); refit it with this "
                         "version of bayes_transfer")
    n_chain, n_draw = posterior.sizes["chain"], posterior.sizes["draw"]
    flat = {}
    for name in sites:
        values = posterior[name].transpose("chain", "draw", ...).values
        flat[name] = values.reshape((n_chain * n_draw,) + values.shape[2:])
    step = max(1, _CHUNK_ELEMENTS // max(data.n_rows, 1))
    parts = []
    for start in range(0, n_chain * n_draw, step):
        chunk = {k: v[start:start + step] for k, v in flat.items()}
        parts.append(np.asarray(
            numpyro_log_likelihood(hierarchical_model, chunk, data)[OBSERVED]))
    values = np.concatenate(parts).reshape(n_chain, n_draw, data.n_rows)
    return xr.DataArray(values, dims=("chain", "draw", "row"), name=OBSERVED,
                        coords={"chain": posterior["chain"].values,
                                "draw": posterior["draw"].values,
                                "row": row_labels(post)})


def row_labels(post: Posterior) -> np.ndarray:
    """The fitted rows' coordinate as ``observed_data`` has it (``run_id:target``).

    Every row-wise group (``log_likelihood``, ``posterior_predictive``) takes it, so that
    a row has one label in every group: ``.sel(row=...)`` works alike in each, and xarray
    arithmetic between groups (which aligns labels; integer rows against named ones
    would leave nothing) matches row with row.

    Example:
        >>> row_labels(post)[:2]  # doctest: +SKIP
        array(['r1:x', 'r2:x'], dtype=object)
    """
    if "observed_data" in post.idata.groups() and "row" in post.idata.observed_data.coords:
        return post.idata.observed_data["row"].values
    from bayes_transfer.inference import coords_for

    return np.asarray(coords_for(post.runs)["row"], dtype=object)


def add_log_likelihood(post: Posterior, *, overwrite: bool = False) -> Posterior:
    """Add (or, with ``overwrite``, replace) ``post.idata.log_likelihood``; returns ``post``.

    Afterwards ``az.loo(post.idata)``, ``az.waic`` and ``az.compare`` work on it.
    """
    if "log_likelihood" in post.idata.groups() and not overwrite:
        return post
    ds = log_likelihood(post).to_dataset()
    if "log_likelihood" in post.idata.groups():
        post.idata.log_likelihood = ds
    else:
        post.idata.add_groups({"log_likelihood": ds})
    return post


def compare(posts: Mapping[str, Posterior], *, ic: str = "loo",
            scale: str = "log") -> pd.DataFrame:
    """Rank posteriors of the same rows by expected log predictive density (PSIS-LOO).

    ``posts`` maps a name (a law, a spec) to a posterior; all must have been fitted to
    the same rows (same table, same row selection), or the comparison is refused. Returns
    ``az.compare``'s table (index: the names, best first: ``rank``, ``elpd_loo``,
    ``p_loo``, ``elpd_diff``, ``weight``, ``se``, ``dse``, ``warning``, ``scale``) with
    two Pareto-k columns added: ``pareto_k_max`` and ``n_bad_k``, the number of rows
    whose k exceeds ArviZ's threshold ``min(1 - 1/log10(draws), 0.7)`` (their LOO
    estimate is unreliable: the ``warning`` column is then True, and a ``UserWarning``
    names the posteriors). The posteriors are not modified.
    """
    import arviz as az

    if ic not in ("loo", "waic"):
        raise ValueError(f"ic must be 'loo' or 'waic', not {ic!r}")
    if len(posts) < 2:
        raise ValueError(f"compare needs at least two posteriors, got {len(posts)}")
    _check_same_rows(posts)
    elpds = {}
    bad: dict[str, int] = {}
    for name, post in posts.items():
        # The caller's posteriors are left as they are (a saved file keeps its groups);
        # an existing log_likelihood group is used as it is.
        idata = post.idata if "log_likelihood" in post.idata.groups() else az.InferenceData(
            posterior=post.idata.posterior, log_likelihood=log_likelihood(post).to_dataset())
        with warnings.catch_warnings():
            # Summarised below, once, with the names of the posteriors concerned.
            warnings.simplefilter("ignore", UserWarning)
            fn = az.loo if ic == "loo" else az.waic
            elpds[name] = fn(idata, pointwise=True, scale=scale, var_name=OBSERVED)
    with warnings.catch_warnings():
        # Its Pareto-k notes are the ones summarised below; the rest are ArviZ's own
        # deprecations (pandas' sort_values(inplace=...)), which a user cannot act on.
        warnings.simplefilter("ignore")
        table = az.compare(elpds, ic=ic, scale=scale)
    if ic == "loo":
        k_max, n_bad = {}, {}
        for name, elpd in elpds.items():
            k = np.asarray(elpd["pareto_k"])
            good_k = float(elpd.get("good_k", 0.7))
            k_max[name], n_bad[name] = float(np.max(k)), int(np.sum(k > good_k))
            if n_bad[name]:
                bad[name] = n_bad[name]
        table["pareto_k_max"] = [k_max[n] for n in table.index]
        table["n_bad_k"] = [n_bad[n] for n in table.index]
    if bad:
        listed = ", ".join(f"{n} ({k} rows)" for n, k in bad.items())
        warnings.warn(f"PSIS-LOO is unreliable for {listed}: Pareto k above the threshold; "
                      "those rows are influential (refit without them, or with longer "
                      "chains, before trusting the ranking)", UserWarning, stacklevel=2)
    table.index.name = "model"
    return table


def _check_same_rows(posts: Mapping[str, Posterior]) -> None:
    """Refuse posteriors of different rows: their elpds are not comparable."""
    names = list(posts)
    first = posts[names[0]].runs.df
    for name in names[1:]:
        other = posts[name].runs.df
        same = len(other) == len(first) and all(
            np.array_equal(first[c].to_numpy(), other[c].to_numpy())
            for c in ("source", "target", "params", "pretrain_tokens", "finetune_tokens",
                      "loss"))
        if not same:
            raise ValueError(
                f"{names[0]!r} ({len(first)} rows) and {name!r} ({len(other)} rows) were "
                "not fitted to the same rows; compare posteriors of one table, with laws "
                "that explain the same rows (see each spec's `rows`)")
