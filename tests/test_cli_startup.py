"""The CLI starts fast: ``--help`` and ``validate`` load no JAX, ArviZ, PyMC or torch, and
importing the package changes no process-wide setting (the CLI entry point does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "arviz", "pymc", "torch", "numpyro", "matplotlib", "scipy")


def _python(code: str, env_drop: tuple[str, ...] = ("XLA_FLAGS",)) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    env = {k: v for k, v in os.environ.items() if k not in env_drop}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


_LOADED = (f"import json, os, sys; heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
           "print(json.dumps({'heavy': heavy, 'xla': os.environ.get('XLA_FLAGS', '')}))")


@pytest.mark.parametrize("argv", [None, ["--help"], ["validate", "data/transfer_runs.csv"],
                                  ["report", "--help"], ["compare", "--help"], ["--version"]],
                         ids=["import", "help", "validate", "report-help", "compare-help",
                              "version"])
def test_cli_loads_no_heavy_library_for_help_and_validate(argv):
    run = "" if argv is None else (
        "from bayes_transfer.cli import main\n"
        f"sys.argv = ['bayes-transfer', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n")
    got = _python(f"import sys\nimport bayes_transfer.cli\n{run}{_LOADED}")
    assert got["heavy"] == []
    if argv is not None:  # the entry point asks for one XLA CPU device per core
        assert "xla_force_host_platform_device_count" in got["xla"]


def test_version_names_the_package_and_the_libraries_behind_its_results():
    """``--version`` prints the installed versions a bug report needs, and exits 0."""
    from importlib.metadata import version

    import bayes_transfer

    result = subprocess.run([sys.executable, "-m", "bayes_transfer", "--version"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"bayes-transfer {bayes_transfer.__version__} ("), line
    for name in ("jax", "numpyro", "arviz", "pymc", "xarray", "torch"):
        assert f"{name} {version(name)}" in line, (name, line)
    assert f"Python {sys.version.split()[0]}" in line


def test_importing_the_package_sets_no_process_wide_flag():
    # The libraries the package uses add filters of their own: import them first.
    got = _python("import json, os, warnings\n"
                  "import arviz, jax, numpyro, numpyro.infer, pandas, scipy.stats, xarray\n"
                  "before = list(warnings.filters)\n"
                  "import bayes_transfer as bt, bayes_transfer.cli, bayes_transfer.inference\n"
                  "print(json.dumps({'xla': os.environ.get('XLA_FLAGS', ''),"
                  " 'filters': len(warnings.filters) - len(before)}))")
    assert got == {"xla": "", "filters": 0}


def test_use_host_devices_gives_one_cpu_device_per_chain():
    got = _python("import json, bayes_transfer as bt\n"
                  "n = bt.use_host_devices(3)\n"
                  "import jax\n"
                  "print(json.dumps({'n': n, 'cpus': len(jax.devices('cpu'))}))")
    assert got == {"n": 3, "cpus": 3}


def test_use_host_devices_keeps_the_users_choice(monkeypatch):
    from bayes_transfer.runtime import use_host_devices

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=7")
    assert use_host_devices(2) == 7
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=7"


def test_use_host_devices_after_jax_started_warns(monkeypatch):
    import jax.numpy as jnp

    from bayes_transfer.runtime import use_host_devices

    jnp.ones(1).block_until_ready()  # JAX has started in this test process
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        use_host_devices(2)
    assert any("after JAX started" in str(w.message) for w in caught)
    assert "XLA_FLAGS" not in os.environ
