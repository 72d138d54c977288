"""The Ray executor gives the same rows as a local run (needs a local Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_trainer import TINY_GRID, assert_same_table

from bayes_transfer.trainer import run_grid

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_matches_local(local_ray: None, tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(TINY_GRID)
    on_ray = run_grid(grid, tmp_path / "ray.csv", executor="ray", workers=2, progress=False)
    local = run_grid(grid, tmp_path / "local.csv", executor="serial", workers=2, progress=False)
    assert len(on_ray) == 13
    assert set(on_ray["device"]) == {"cpu"}
    assert_same_table(on_ray, local)
