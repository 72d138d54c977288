"""Back ends behind one protocol and registry; sampler settings in one dataclass; no
import cycle between the orchestrator, the back ends and the reports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _posteriors import known_posterior, simulated

from bayes_transfer import backends
from bayes_transfer.backends import BACKENDS, get_backend, register_backend
from bayes_transfer.inference import fit
from bayes_transfer.sampling import Backend, SamplerSettings

PACKAGE = Path(__file__).resolve().parents[1] / "bayes_transfer"


# ---- SamplerSettings ------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"chains": 0}, "chains must be a whole number between 1 and 1024, not 0"),
    ({"chains": 2.5}, "chains must be a whole number between 1 and 1024, not 2.5"),
    ({"chains": True}, "chains must be a whole number between 1 and 1024, not True"),
    ({"chains": 2**70}, "chains must be a whole number between 1 and 1024"),
    ({"draws": -1}, "draws must be a whole number between 1 and 10000000, not -1"),
    ({"draws": 10_000_001}, "draws must be a whole number between 1 and 10000000"),
    ({"warmup": -5}, "warmup must be a whole number between 0 and 10000000, not -5"),
    ({"seed": -1}, r"seed must be a whole number between 0 and 4294967295, not -1"),
    ({"seed": 2**32}, r"seed must be a whole number between 0 and 4294967295"),
    ({"target_accept": 1.0}, r"target_accept must be a number between 0 and 1 .* not 1.0"),
    ({"target_accept": 0}, r"target_accept must be a number between 0 and 1 .* not 0"),
    ({"target_accept": "0.9"}, r"target_accept must be a number between 0 and 1"),
    ({"max_tree_depth": 0}, "max_tree_depth must be a whole number between 1 and 30"),
    ({"dense_mass": "yes"}, "dense_mass must be True or False, not 'yes'"),
    ({"progress": 1}, "progress must be True or False, not 1"),
    ({"init": "map"}, "unknown init 'map'; use 'auto', 'laplace' or 'prior'"),
    ({"device": ""}, "device must be 'cpu', 'gpu', 'auto' or None"),
    ({"centring": "auto"}, "unknown centring 'auto'; use 'spec' or 'mode'"),
])
def test_settings_refuse_bad_values_naming_them(changes, message):
    with pytest.raises(ValueError, match=message):
        SamplerSettings(**changes)
    with pytest.raises(ValueError, match=message):  # replace checks too
        SamplerSettings().replace(**changes)


def test_settings_accept_what_they_should_and_record_what_decides_the_draws():
    import numpy as np

    s = SamplerSettings(chains=np.int64(2), draws=50, warmup=0, seed=2**32 - 1,
                        target_accept=0.99, dense_mass=np.bool_(True), device="cpu")
    assert type(s.chains) is int and s.dense_mass is True and s.warmup == 0
    assert s.to_dict() == {"chains": 2, "draws": 50, "warmup": 0, "seed": 2**32 - 1,
                           "target_accept": 0.99, "max_tree_depth": 10, "dense_mass": True,
                           "init": "auto", "mode_starts": 1, "device": "cpu",
                           "centring": "spec", "shear": True}
    assert json.loads(json.dumps(s.to_dict())) == s.to_dict()
    assert SamplerSettings(**s.fit_kwargs()) == s
    assert s.for_rows(10).init == "prior" and s.for_rows(5000).init == "laplace"
    assert s.replace(init="laplace").for_rows(10).init == "laplace"
    assert s.replace(mode_starts=4).for_rows(10).init == "laplace"  # a mode search
    with pytest.raises(TypeError, match="unknown sampler setting.*chain.*the settings are"):
        s.replace(chain=3)


def test_fit_checks_its_sampler_keywords_before_loading_the_table():
    with pytest.raises(ValueError, match="draws must be a whole number"):
        fit("no-such-table.csv", draws=0)
    with pytest.raises(ValueError, match="unknown backend 'stan'; use 'numpyro' or 'pymc'"):
        fit("no-such-table.csv", backend="stan")


# ---- the registry -------------------------------------------------------------------

class Toy:
    """A back end that samples nothing: it hands back a known posterior's draws."""

    name, uses_init = "toy", False

    def __init__(self, sim):
        self.sim, self.calls = sim, []

    def sample(self, spec, table, units, settings):
        self.calls.append(settings)
        idata = known_posterior(self.sim, 0.01, draws=settings.draws).idata
        del idata["constant_data"]  # fit adds its own
        return idata


@pytest.fixture(scope="module")
def sim():
    return simulated("transfer-gap")


def _cli_fits(monkeypatch, tmp_path, sim, toy, spec: str, extras):
    """The settings that reach ``toy`` from one `bayes-transfer fit` of ``sim``'s table
    with ``spec`` per list of extra arguments in ``extras``."""
    from typer.testing import CliRunner

    import bayes_transfer.inference as inference
    from bayes_transfer.cli import app

    toy.calls.clear()
    real_fit = inference.fit
    monkeypatch.setattr(inference, "fit", lambda *a, **kw: real_fit(
        *a, **{**kw, "backend": "toy", "units": sim.units}))
    runs = tmp_path / "runs.csv"
    sim.runs.df.to_csv(runs, index=False)
    for i, extra in enumerate(extras):
        res = CliRunner().invoke(app, ["fit", str(runs), "--spec", spec,
                                       "--out", str(tmp_path / f"p{i}.nc"),
                                       "--chains", "2", "--draws", "30", *extra])
        assert res.exit_code == 0, res.output
    return list(toy.calls)


def test_the_specs_target_accept_is_the_default_of_fit_and_of_the_cli(monkeypatch,
                                                                       tmp_path):
    """A spec's [sampler] target_accept reaches the sampler unless the call overrides it,
    in Python and through `bayes-transfer fit` (the bundled transfer-gap-size asks 0.95)."""
    sized = simulated("transfer-gap-size")
    assert sized.spec.target_accept == 0.95
    monkeypatch.setattr(backends, "BACKENDS", dict(BACKENDS))
    toy = register_backend(Toy(sized))
    common = dict(backend="toy", chains=2, draws=30, progress=False, units=sized.units)
    for target_accept in (None, 0.8):
        fit(sized.runs, sized.spec, target_accept=target_accept, **common)
    unset = sized.spec.to_dict() | {"sampler": {}}
    fit(sized.runs, unset, **common)
    assert [s.target_accept for s in toy.calls] == [0.95, 0.8, 0.9]
    # The CLI's --target-accept defaults to the spec's, and overrides it when given.
    calls = _cli_fits(monkeypatch, tmp_path, sized, toy, "transfer-gap-size",
                      ([], ["--target-accept", "0.85"]))
    assert [s.target_accept for s in calls] == [0.95, 0.85]


def test_the_specs_mode_starts_reach_the_sampler_from_fit_the_cli_and_the_loop(
        monkeypatch, tmp_path):
    """A spec's [sampler] mode_starts is the default of every path that builds its own
    settings (the CLI and the loop pass every setting explicitly: a default of 1 there
    would silently replace the spec's)."""
    from bayes_transfer.loop import _NutsRefit
    from bayes_transfer.spec import load_spec

    sized = simulated("transfer-gap-size")
    text = (Path(__file__).resolve().parents[1] / "models" / "transfer-gap-size.toml"
            ).read_text().replace("target_accept = 0.95\n",
                                  "target_accept = 0.95\nmode_starts = 8\n")
    spec_path = tmp_path / "searched.toml"
    spec_path.write_text(text)
    assert "mode_starts = 8" in text
    monkeypatch.setattr(backends, "BACKENDS", dict(BACKENDS))
    toy = register_backend(Toy(sized))
    common = dict(backend="toy", chains=2, draws=30, progress=False, units=sized.units)
    for mode_starts in (None, 3):
        fit(sized.runs, spec_path, mode_starts=mode_starts, **common)
    fit(sized.runs, sized.spec, **common)  # the bundled spec states none
    assert [s.mode_starts for s in toy.calls] == [8, 3, 1]
    calls = _cli_fits(monkeypatch, tmp_path, sized, toy, str(spec_path),
                      ([], ["--mode-starts", "2"]))
    assert [s.mode_starts for s in calls] == [8, 2]
    assert _NutsRefit(load_spec(spec_path), {}).sampler.mode_starts == 8
    assert _NutsRefit(load_spec(spec_path), {"mode_starts": 5}).sampler.mode_starts == 5


def test_a_backend_registered_in_a_test_is_used_by_fit(sim, monkeypatch):
    monkeypatch.setattr(backends, "BACKENDS", dict(BACKENDS))  # undone after the test
    toy = register_backend(Toy(sim))
    with pytest.raises(ValueError, match="already registered"):
        register_backend(Toy(sim))
    post = fit(sim.runs, sim.spec, backend="toy", chains=2, draws=30, seed=7,
               target_accept=0.95, progress=False, units=sim.units)
    (settings,) = toy.calls
    assert settings == SamplerSettings(chains=2, draws=30, seed=7, target_accept=0.95,
                                       init="prior", progress=False)
    attrs = post.idata.posterior.attrs
    assert attrs["backend"] == "toy"
    recorded = json.loads(attrs["sampler_settings"])
    # A back end that starts its own way is recorded by name, as PyMC always was; one
    # that does not say which groups it centred sampled as the spec states.
    assert recorded == {**settings.to_dict(), "init": "toy", "centring": "spec"}
    assert post.n_draws == 2 * 30
    with pytest.raises(TypeError, match="needs a name, uses_init and sample"):
        register_backend(object())


@pytest.mark.parametrize("name", ["numpyro", "pymc"])
def test_both_backends_are_reached_through_the_registry(name, sim, monkeypatch):
    toy = Toy(sim)
    registered = BACKENDS[name]
    assert isinstance(registered, Backend) and registered.name == name
    monkeypatch.setattr(registered, "sample", toy.sample)  # the instance's, not the class's
    post = fit(sim.runs, sim.spec, backend=name, chains=2, draws=20, progress=False,
               units=sim.units)
    assert len(toy.calls) == 1 and post.idata.posterior.attrs["backend"] == name
    recorded = json.loads(post.idata.posterior.attrs["sampler_settings"])
    assert recorded["init"] == ("prior" if name == "numpyro" else "pymc")
    assert get_backend(name) is registered


def test_the_numpyro_backend_alone_offers_warm_starts():
    assert callable(getattr(BACKENDS["numpyro"], "sample_warm", None))
    assert getattr(BACKENDS["pymc"], "sample_warm", None) is None


# ---- imports --------------------------------------------------------------------------

MODULES = ("inference", "pymc_backend", "report", "backends", "sampling", "refit")


def _imports(path: Path) -> set[str]:
    """bayes_transfer modules ``path`` imports anywhere (functions too), except under
    ``if TYPE_CHECKING:`` (never run)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for b in node.body
            for n in ast.walk(b)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m.removeprefix("bayes_transfer.").split(".")[0] for m in found
            if m.startswith("bayes_transfer.")}


def _graph() -> dict[str, set[str]]:
    return {p.stem: _imports(p) for p in PACKAGE.glob("*.py")}


def _cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start over ``MODULES`` only, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, ()):
            if nxt == start:
                return [*path, start]
            if nxt in MODULES and nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_cycle_among_orchestrator_backends_and_reports():
    graph = _graph()
    assert "inference" not in graph["pymc_backend"] and "backends" not in graph["pymc_backend"]
    assert "inference" not in graph["backends"]
    cycles = [c for m in MODULES if (c := _cycle_through(graph, m))]
    assert cycles == []


def test_the_cycle_check_sees_a_cycle():
    graph = _graph()
    graph["pymc_backend"] = graph["pymc_backend"] | {"inference"}  # as it was
    assert _cycle_through(graph, "inference") == ["inference", "backends", "pymc_backend",
                                                  "inference"]


def test_each_module_imports_first_in_a_fresh_interpreter():
    checks = {m: f"import bayes_transfer.{m}" for m in ("inference", "pymc_backend",
                                                         "report")}
    # The registry and the settings load no sampler: PyMC is imported when it samples.
    checks["backends"] = ("import sys, bayes_transfer.backends as b; "
                          "assert sorted(b.BACKENDS) == ['numpyro', 'pymc']; "
                          "assert 'pymc' not in sys.modules and 'jax' not in sys.modules")
    procs = {m: subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE,
                                 text=True) for m, code in checks.items()}
    failed = {m: p.communicate()[1][-500:] for m, p in procs.items() if p.wait() != 0}
    assert failed == {}
