"""The loop never chooses runs from an unconverged fit: it samples longer, then stops.

Most tests replace ``bayes_transfer.inference.fit`` with a stand-in whose diagnostics
pass or fail on demand (NUTS is slow and its convergence is not ours to choose in a
unit test); one runs real, deliberately short NUTS fits; one checks a warm-started refit.
"""

from __future__ import annotations

import json
import os
import warnings

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from _posteriors import loop_candidates
from rich.console import Console

import bayes_transfer.inference as inference
from bayes_transfer.diagnostics import diagnose, failing_parameters
from bayes_transfer.loop import UnconvergedFit, run_loop, simulated_runner
from bayes_transfer.named_params import organise
from bayes_transfer.simulate import simulate
from bayes_transfer.spec import load_spec

QUIET = Console(quiet=True)


def _cands():
    return loop_candidates()


@pytest.fixture(scope="module")
def truth():
    return simulate("transfer-gap", _cands(), seed=3)


@pytest.fixture(scope="module")
def real_posterior(tiny_posterior):
    """A real (short) NUTS posterior of pairs a, b x x, y: the stand-in fits return it."""
    return tiny_posterior


def _stuck(posterior):
    """``posterior`` with its chains pulled apart: log_G and G_z_pair fail R-hat."""
    idata = posterior.idata.copy()
    for name in ("G_z_pair", "log_G"):
        # The offsets live in unconstrained_posterior (bayes_transfer.named_params).
        group = idata.posterior if name in idata.posterior else idata.unconstrained_posterior
        values = group[name].values.copy()
        values[1] += 5.0  # chain 1 elsewhere: R-hat far above 1.01
        group[name] = (group[name].dims, values)
    # The named G follows log_G, as in any posterior (the file reader checks it).
    idata.posterior = idata.posterior.drop_vars("G")
    organise(idata, posterior.spec)
    return idata


class FakeFit:
    """Stands in for ``inference.fit``: records each call's settings; the posterior it
    returns passes its diagnostics from the ``passes_from``-th call on (never: None)."""

    def __init__(self, posterior, passes_from=None):
        self.posterior, self.passes_from, self.calls = posterior, passes_from, []

    def __call__(self, table, spec, **options):
        self.calls.append(options)
        ok = self.passes_from is not None and len(self.calls) >= self.passes_from
        base = self.posterior
        idata = base.idata if ok else _stuck(base)
        names = inference._diagnosed_vars(base.spec, idata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            diagnostics = diagnose(idata, var_names=names, warn=False)
        if ok:  # the conftest posterior is too short to pass: pretend it passed
            diagnostics = type(diagnostics)(**{**diagnostics.__dict__, "problems": ()})
        return inference.Posterior(idata=idata, spec=base.spec, runs=base.runs,
                                   diagnostics=diagnostics)


def test_failing_parameters_names_the_parameter_the_group_and_why(real_posterior):
    lines = failing_parameters(_stuck(real_posterior), ["G_z_pair", "log_G", "sigma"])
    assert lines and lines[0].startswith(("G_z_pair at pair=", "log_G at pair="))
    assert "R-hat" in lines[0] and "> 1.01" in lines[0]
    # Worst first: the pulled-apart gaps before sigma (short chains: it may fail too).
    assert not lines[0].startswith("sigma") and len(lines) <= 3


def test_a_fit_that_never_converges_stops_the_loop_and_keeps_the_runs(
        tmp_path, truth, real_posterior, monkeypatch):
    fake = FakeFit(real_posterior, passes_from=None)
    monkeypatch.setattr(inference, "fit", fake)
    console = Console(record=True, width=200)
    result = run_loop(_cands(), tmp_path / "loop", run_fn=simulated_runner(truth), rounds=2,
                      batch=2, console=console, fit_kwargs={"draws": 40, "warmup": 40})
    assert result.stopped == "unconverged" and result.rounds == []
    # Tried three times: as configured, then 2x and 4x the warmup and draws.
    assert [(c["warmup"], c["draws"]) for c in fake.calls] == [(40, 40), (80, 80), (160, 160)]
    text = console.export_text()
    for words in ("round 0: the fit did not converge after 2 longer refit(s)",
                  "160 draws after 160 warmup", "no runs were chosen", "R-hat",
                  "--allow-unconverged", "runs.csv"):
        assert words in result.message and words in text, words
    assert "sampling 2x longer" in text and "sampling 4x longer" in text
    assert "G_z_pair at pair=" in result.message or "log_G at pair=" in result.message
    # The initial design's runs were saved before the fit: nothing is lost.
    saved = (tmp_path / "loop" / "runs.csv").read_text().splitlines()
    assert len(saved) - 1 == len(result.runs) > 0
    assert not (tmp_path / "loop" / "rounds" / "round-000.json").exists()
    assert (tmp_path / "loop" / "posteriors" / "round-000.unconverged.nc").exists()
    assert not (tmp_path / "loop" / "rounds" / "round-001.plan.json").exists()  # no suggestion


def test_sampling_longer_that_converges_lets_the_loop_go_on(tmp_path, truth, real_posterior,
                                                            monkeypatch):
    fake = FakeFit(real_posterior, passes_from=2)   # the 2x refit converges
    monkeypatch.setattr(inference, "fit", fake)
    # Warm starts need a table that extends the posterior's: not this stand-in's.
    result = run_loop(_cands(), tmp_path / "loop", run_fn=simulated_runner(truth), rounds=0,
                      batch=2, console=QUIET, fit_kwargs={"draws": 40, "warmup": 40})
    assert result.stopped == "rounds" and len(result.rounds) == 1
    assert [(c["warmup"], c["draws"]) for c in fake.calls] == [(40, 40), (80, 80)]
    assert result.rounds[0]["longer_refits"] == 1 and result.rounds[0]["diagnostics_ok"]
    logged = json.loads((tmp_path / "loop" / "rounds" / "round-000.json").read_text())
    assert logged["longer_refits"] == 1


def test_allow_unconverged_chooses_runs_anyway(tmp_path, truth, real_posterior, monkeypatch):
    fake = FakeFit(real_posterior, passes_from=None)
    monkeypatch.setattr(inference, "fit", fake)
    result = run_loop(_cands(), tmp_path / "loop", run_fn=simulated_runner(truth), rounds=1,
                      batch=2, console=QUIET, allow_unconverged=True, retries=0)
    assert result.stopped == "rounds" and len(result.rounds) == 2
    assert len(result.rounds[1]["chosen"]) == 2
    assert result.rounds[0]["diagnostics_ok"] is False
    assert len(fake.calls) == 2  # retries=0: no longer refits


def test_a_resumed_loop_does_not_suggest_from_a_saved_unconverged_posterior(
        tmp_path, truth, real_posterior, monkeypatch):
    out = tmp_path / "loop"
    monkeypatch.setattr(inference, "fit", FakeFit(real_posterior, passes_from=None))
    run_loop(_cands(), out, run_fn=simulated_runner(truth), rounds=0, console=QUIET,
             allow_unconverged=True, retries=0)
    assert (out / "posteriors" / "round-000.nc").exists()
    # Resumed without the override: the saved round-0 posterior fails, so it is refitted
    # (longer), and that fails too: no round-1 plan.
    fake = FakeFit(real_posterior, passes_from=None)
    monkeypatch.setattr(inference, "fit", fake)
    result = run_loop(_cands(), out, run_fn=simulated_runner(truth), rounds=1, console=QUIET,
                      retries=1)
    assert result.stopped == "unconverged" and len(fake.calls) == 2
    assert not (out / "rounds" / "round-001.plan.json").exists()


def test_a_user_fit_fn_that_fails_stops_the_loop_without_retries(tmp_path, truth,
                                                                 real_posterior):
    fake = FakeFit(real_posterior, passes_from=None)
    result = run_loop(_cands(), tmp_path / "loop", run_fn=simulated_runner(truth), rounds=1,
                      console=QUIET, fit_fn=lambda table: fake(table, None))
    assert result.stopped == "unconverged" and len(fake.calls) == 1
    assert "cannot be asked to sample longer" in result.message


def test_retries_must_be_a_whole_number(tmp_path, truth):
    with pytest.raises(ValueError, match="retries"):
        run_loop(_cands(), tmp_path, run_fn=simulated_runner(truth), retries=-1)


@pytest.mark.slow
def test_real_short_fits_fail_and_the_loop_stops_saying_why(tmp_path, truth):
    """Real NUTS: 20 draws cannot pass ESS >= 200, so round 0 stops the loop."""
    result = run_loop(_cands(), tmp_path / "loop", run_fn=simulated_runner(truth), rounds=2,
                      batch=2, console=QUIET, retries=1,
                      fit_kwargs={"draws": 20, "warmup": 20, "max_tree_depth": 4})
    assert result.stopped == "unconverged" and result.rounds == []
    assert "ESS bulk" in result.message and "40 draws after 40 warmup" in result.message
    assert len(result.runs) > 0 and (tmp_path / "loop" / "runs.csv").exists()
    with pytest.raises(UnconvergedFit):
        raise UnconvergedFit(result.message, result.posterior)


def test_a_warm_refit_starts_from_the_previous_posterior(tiny_sim, tiny_posterior):
    """A refit of a grown table, warm-started: short warmup, same layout as a cold fit."""
    from bayes_transfer.refit import bucket_rows, warm_warmup

    table = tiny_sim.runs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = inference.fit(table, "transfer-gap", chains=2, draws=60, warmup=200, seed=1,
                             max_tree_depth=5, progress=False, warm_start=tiny_posterior)
    settings = json.loads(post.idata.posterior.attrs["sampler_settings"])
    assert settings["init"] == "warm" and settings["warmup"] == warm_warmup(200) == 50
    assert post.idata.posterior.sizes["draw"] == 60
    assert set(post.idata.posterior.data_vars) == set(tiny_posterior.idata.posterior.data_vars)
    assert post.idata.observed_data["log_loss"].shape == (len(table),)
    assert np.isfinite(post.gap_table()["median"]).all()
    assert [bucket_rows(n) for n in (1, 32, 33, 41, 64, 65, 100)] == \
        [32, 32, 40, 48, 64, 80, 112]


def test_the_warm_start_is_what_an_eager_trace_and_ravel_pytree_give(tiny_sim,
                                                                      tiny_posterior):
    """The warm start's latent sites (traced abstractly) and its mass matrix (the draws
    flattened in numpy) are exactly those of an eager trace and of ravel_pytree per draw,
    the order NumPyro's NUTS reads a flat mass matrix in."""
    from jax.flatten_util import ravel_pytree
    from numpyro import handlers
    from numpyro.distributions.transforms import biject_to

    from bayes_transfer.model import hierarchical_model, latent_sites, model_data
    from bayes_transfer.named_params import all_draws
    from bayes_transfer.refit import _warm_init

    data = model_data(load_spec("transfer-gap"), tiny_sim.runs)
    trace = handlers.trace(handlers.seed(hierarchical_model, 0)).get_trace(data)
    eager = {k: (tuple(v["value"].shape), v["fn"].support) for k, v in trace.items()
             if v["type"] == "sample" and not v["is_observed"]}
    sites = latent_sites(data)
    assert list(sites) == list(eager) and len(sites) > 5
    for name, (shape, support) in eager.items():
        assert sites[name][0] == shape and type(sites[name][1]) is type(support), name

    starts, inv_mass = _warm_init(tiny_posterior, sites, chains=2, dense=False)
    post = all_draws(tiny_posterior.idata).stack(sample=("chain", "draw"))
    rows = []
    for i in range(post.sizes["sample"]):
        z = {k: biject_to(sup).inv(jnp.asarray(np.moveaxis(post[k].values, -1, 0)[i]))
             for k, (_, sup) in sites.items()}
        rows.append(np.asarray(ravel_pytree(z)[0]))
    flat = np.stack(rows)
    n = len(flat)
    expected = (n / (n + 5.0)) * flat.var(axis=0) + 1e-3 * (5.0 / (n + 5.0))
    np.testing.assert_allclose(inv_mass, expected, rtol=1e-6, atol=1e-12)
    assert set(starts) == set(sites)


def test_the_compilation_cache_is_set_by_the_cli_not_by_import(tmp_path):
    """``use_compilation_cache`` sets JAX's cache folder (env var before JAX starts);
    importing the package sets nothing; ``off`` disables it."""
    import os
    import subprocess
    import sys

    code = ("import os, json, bayes_transfer, bayes_transfer.runtime as rt; "
            "before = os.environ.get('JAX_COMPILATION_CACHE_DIR'); "
            "used = rt.use_compilation_cache(); "
            "print(json.dumps([before, used, os.environ.get('JAX_COMPILATION_CACHE_DIR')]))")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    folder = str(tmp_path / "cache")
    for setting, expect in ((folder, folder), ("off", None)):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**env, "BAYES_TRANSFER_JAX_CACHE": setting}, check=True)
        before, used, after = json.loads(out.stdout)
        assert before is None and used == expect and after == expect
    assert os.path.isdir(folder)


_SMALL_PROGRAM = """
import os, sys, bayes_transfer.runtime as rt
rt.use_compilation_cache(sys.argv[1])
import jax, jax.numpy as jnp
jax.jit(lambda x: jnp.sin(x) * 3.0)(1.0).block_until_ready()
print(len(os.listdir(sys.argv[1])))
"""


def test_the_compilation_cache_keeps_small_programs_unless_the_user_says_otherwise(tmp_path):
    """A fit's ~190 small start-up programs (~0.06 s each to compile, under JAX's 1 s
    default) are kept too, so a new process loads them; a user's own
    ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` wins."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    kept = {}
    for name, extra in (("ours", {}), ("users", {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "60"})):
        folder = tmp_path / name
        out = subprocess.run([sys.executable, "-c", _SMALL_PROGRAM, str(folder)],
                             capture_output=True, text=True, env={**env, **extra}, check=True)
        kept[name] = int(out.stdout.split()[-1])
    assert kept == {"ours": 1, "users": 0}, kept


_COMPILE_ONCE = """
import sys, warnings, jax, jax.numpy as jnp
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
import bayes_transfer.model  # noqa: F401  (makes the cache's writes atomic)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    jax.jit(lambda x: jnp.sin(x) * 3.0 + jnp.cos(x) ** 2)(1.0).block_until_ready()
print(sum("persistent compilation cache" in str(w.message) for w in seen))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="Linux's /proc only")
def test_a_crowded_process_drops_its_compiled_programs():
    """Past the share of the kernel's memory-mapping limit, JAX's in-memory programs go
    (each fit's would otherwise pile up until XLA cannot map a new one); below it, they
    stay."""
    import jax

    from bayes_transfer.runtime import release_compiled_if_crowded

    add_one = jax.jit(lambda x: x + 1.0)
    add_one(1.0)
    assert add_one._cache_size() == 1
    assert release_compiled_if_crowded(share=1.0) is False  # below the whole limit
    assert add_one._cache_size() == 1
    assert release_compiled_if_crowded(share=0.0) is True
    assert add_one._cache_size() == 0


def test_every_fit_first_makes_room_for_its_programs(monkeypatch):
    class Called(Exception):
        pass

    def called() -> bool:
        raise Called

    monkeypatch.setattr(inference, "release_compiled_if_crowded", called)
    with pytest.raises(Called):
        inference.fit(pd.DataFrame(), "transfer-gap")


def test_a_truncated_compilation_cache_entry_heals_on_its_next_compilation(tmp_path):
    """A process killed while JAX wrote a cache entry leaves it truncated; JAX alone then
    fails to read it, warns and recompiles in every later process, and never rewrites it.
    With the package imported the next compilation replaces it."""
    import subprocess
    import sys

    folder = tmp_path / "cache"

    def compile_once() -> int:  # a fresh process each time: no in-memory cache
        out = subprocess.run([sys.executable, "-c", _COMPILE_ONCE, str(folder)],
                             capture_output=True, text=True, check=True)
        return int(out.stdout.split()[-1])

    assert compile_once() == 0
    entries = [p for p in folder.iterdir() if p.name.endswith("-cache")]
    assert entries, "nothing was cached"
    sizes = {p: p.stat().st_size for p in entries}
    for p in entries:  # what a kill mid-write leaves
        p.write_bytes(p.read_bytes()[: sizes[p] // 3])
    assert compile_once() >= 1  # read fails once: warned, recompiled, rewritten
    assert {p: p.stat().st_size for p in entries} == sizes
    assert compile_once() == 0  # healed: read without a warning


def test_a_failed_compilation_cache_write_leaves_no_entry(tmp_path, monkeypatch):
    """An entry is written to a temporary file and renamed into place: a write that fails
    part way (here, at the fsync before the rename) leaves no entry, not a truncated one."""
    from jax._src.lru_cache import LRUCache

    import bayes_transfer._io as io
    from bayes_transfer.runtime import atomic_compilation_cache

    assert atomic_compilation_cache()
    cache = LRUCache(str(tmp_path), max_size=-1)

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", fail)
    with pytest.raises(OSError):
        cache.put("k", b"x" * 4096)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    cache.put("k", b"y" * 10)
    assert cache.get("k") == b"y" * 10


def test_padded_rows_add_nothing_to_the_log_density(tiny_sim):
    """The masked padding of a warm refit leaves the posterior as it was."""
    from numpyro.infer.util import potential_energy

    from bayes_transfer.model import ModelData, hierarchical_model, latent_sites, model_data
    from bayes_transfer.refit import _padded, bucket_rows

    spec = load_spec("transfer-gap")
    data = model_data(spec, tiny_sim.runs)
    arrays = _padded(data, bucket_rows(data.n_rows))
    assert arrays["log_loss"].shape[0] == 32 > data.n_rows
    padded = ModelData(spec, arrays["features"], arrays["log_loss"], arrays["log_loss_se"],
                       arrays["source_idx"], arrays["target_idx"], data.n_sources,
                       data.n_targets, data.units, data.groups_with_rows,
                       row_mask=arrays["row_mask"])
    rng = np.random.default_rng(0)
    z = {name: rng.normal(size=shape) * 0.3 for name, (shape, _) in latent_sites(data).items()}
    exact = float(potential_energy(hierarchical_model, (data,), {}, z))
    assert float(potential_energy(hierarchical_model, (padded,), {}, z)) == \
        pytest.approx(exact, rel=1e-6)
    unmasked = ModelData(*[getattr(padded, f) for f in ("spec", "features", "log_loss",
                                                         "log_loss_se", "source_idx",
                                                         "target_idx", "n_sources",
                                                         "n_targets", "units",
                                                         "groups_with_rows")])
    assert float(potential_energy(hierarchical_model, (unmasked,), {}, z)) != \
        pytest.approx(exact, rel=1e-6)  # the mask is what keeps the copies out


def test_cli_loop_stops_with_status_1_and_passes_the_override(tmp_path, monkeypatch):
    """``bayes-transfer loop``: an unconverged stop exits 1; --allow-unconverged is passed."""
    from pathlib import Path

    from typer.testing import CliRunner

    from bayes_transfer import loop
    from bayes_transfer.cli import app
    from bayes_transfer.data import load_runs

    seen = {}

    def fake_loop_grid(grid, out, **options):
        seen.update(options)
        return loop.LoopResult(runs=load_runs(_cands().assign(loss=2.0)), rounds=[],
                               stopped="unconverged", message="round 0: ...")

    monkeypatch.setattr(loop, "loop_grid", fake_loop_grid)
    grid = Path(__file__).resolve().parents[1] / "data" / "transfer_grid.toml"
    res = CliRunner().invoke(app, ["loop", str(grid), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "not converged" in res.output and seen["allow_unconverged"] \
        is False
    CliRunner().invoke(app, ["loop", str(grid), "--out", str(tmp_path / "o"),
                             "--allow-unconverged"])
    assert seen["allow_unconverged"] is True


def test_a_warm_refit_centres_pinned_groups_and_returns_the_specs_sites(tiny_sim,
                                                                        tiny_posterior):
    """Groups the previous posterior pins are sampled centred, the others not; the draws
    come back on the spec's own non-centred sites, consistent with log_<name>."""
    from bayes_transfer.model import model_data
    from bayes_transfer.named_params import all_draws
    from bayes_transfer.refit import CENTRE_BELOW, centring_from

    spec = load_spec("transfer-gap")
    centre = centring_from(tiny_posterior,
                           model_data(spec, tiny_sim.runs, tiny_posterior.units))
    prev = tiny_posterior.idata.posterior
    spread = prev["log_G"].std(("chain", "draw")).values.reshape(-1)
    assert centre["G"].tolist() == (spread < CENTRE_BELOW
                                    * float(prev["G_sd_pair"].median())).tolist()
    assert set(centre) == {"G", "A", "alpha", "beta", "E"}  # every non-centred pooled one
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post = inference.fit(tiny_sim.runs, spec, chains=2, draws=60, warmup=200, seed=1,
                             max_tree_depth=5, progress=False, warm_start=tiny_posterior)
    draws = all_draws(post.idata)
    assert not any("_pc_" in k or "_loc_" in k for k in draws.data_vars)
    # log G[s, t] = mu + u_s + v_t + sd_pair * z_pair, draw by draw.
    g = {k: draws[k].values for k in ("G_mu", "G_sd_source", "G_z_source", "G_sd_target",
                                      "G_z_target", "G_sd_pair", "G_z_pair", "log_G")}
    u = g["G_sd_source"][..., None] * g["G_z_source"]
    v = g["G_sd_target"][..., None] * g["G_z_target"]
    loc = g["G_mu"][..., None] + (u[..., :, None] + v[..., None, :]).reshape(*u.shape[:2], 4)
    np.testing.assert_allclose(loc + g["G_sd_pair"][..., None] * g["G_z_pair"], g["log_G"],
                               rtol=1e-4, atol=1e-4)


def test_the_loops_refits_use_the_specs_target_accept_unless_told_otherwise(monkeypatch):
    """transfer-gap-size asks target_accept 0.95 ([sampler]); the loop's refits honour it
    (they used to pass SamplerSettings' own 0.9 explicitly, overriding the spec)."""
    from bayes_transfer.loop import _default_fit

    sized, plain = load_spec("transfer-gap-size"), load_spec("transfer-gap")
    assert _default_fit(sized, {}).settings().target_accept == 0.95
    assert _default_fit(sized, {"target_accept": 0.8}).settings(longer=2).target_accept == 0.8
    assert _default_fit(plain, {}).settings().target_accept == 0.9
    seen = []
    monkeypatch.setattr(inference, "fit", lambda table, spec, **kw: seen.append(kw))
    _default_fit(sized, {"chains": 3})(table=None)
    assert seen[0]["target_accept"] == 0.95 and seen[0]["chains"] == 3
