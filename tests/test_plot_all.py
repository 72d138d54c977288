"""``bayes-transfer plot POST.nc all --out-dir DIR``: every kind in one process.

One PNG per kind, written atomically with the user's umask; an existing file is replaced
only with ``--force`` (checked for every kind before any is drawn); a kind that does not
apply to the posterior is skipped with a one-line note. Known posteriors: no sampler.
"""

from __future__ import annotations

import dataclasses
import os
import stat

import pytest
from _posteriors import known_posterior, simulated
from PIL import Image
from typer.testing import CliRunner

from bayes_transfer import plots, simulate
from bayes_transfer.cli import app
from bayes_transfer.spec import load_spec

SIZE = (round(plots.FIGSIZE[0] * plots.DPI), round(plots.FIGSIZE[1] * plots.DPI))


@pytest.fixture(scope="module")
def post_file(tmp_path_factory):
    post = known_posterior(simulated("transfer-gap-size"), spread=0.05)
    return post.save(tmp_path_factory.mktemp("plot-all") / "post.nc")


@pytest.fixture(scope="module")
def gapless_file(tmp_path_factory):
    """A chinchilla posterior: no per-pair gap, so no forest, heatmap or acquisition."""
    design = simulate.design_grid(["web", "code"], ["math", "prose"], params=[1e5, 1e6],
                                  pretrain_tokens=[1e6, 1e7, 1e8],
                                  finetune_tokens=[1e4, 1e5, 1e6])
    spec = dataclasses.replace(load_spec("chinchilla"), discrepancy=None)
    post = known_posterior(simulate.simulate(spec, design, seed=1), spread=0.05)
    return post.save(tmp_path_factory.mktemp("plot-all") / "chinchilla.nc")


@pytest.fixture(scope="module")
def from_scratch_file(tmp_path_factory):
    """A chinchilla posterior of a from-scratch table (no fine-tuning at all), as the
    Epoch table converts: the default candidates must keep f = 0."""
    design = simulate.design_grid(["web"], ["web"], params=[1e5, 1e6, 1e7],
                                  pretrain_tokens=[1e6, 1e7, 1e8], finetune_tokens=[0])
    spec = dataclasses.replace(load_spec("chinchilla"), discrepancy=None)
    post = known_posterior(simulate.simulate(spec, design, seed=1), spread=0.05)
    return post.save(tmp_path_factory.mktemp("plot-all") / "scratch.nc")


def _plot(*args):
    return CliRunner().invoke(app, ["plot", *map(str, args)])


def _skipped(result) -> list[str]:
    """``plot all``'s notes of the kinds it skipped, one line each."""
    return [line for line in result.stdout.splitlines() if line.startswith("skipped")]


def test_all_kinds_in_one_call_with_the_umask(post_file, tmp_path):
    out = tmp_path / "plots"
    old = os.umask(0o027)
    try:
        result = _plot(post_file, "all", "--out-dir", out)
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{k}.png" for k in plots.KINDS)
    for kind in plots.KINDS:
        path = out / f"{kind}.png"
        assert f"wrote {path}" in result.stdout
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == SIZE
        assert stat.S_IMODE(path.stat().st_mode) == 0o640  # 0o666 & ~0o027
    assert "skipped" not in result.output


def test_existing_files_are_kept_without_force(post_file, tmp_path):
    out = tmp_path / "plots"
    out.mkdir()
    (out / "heatmap.png").write_bytes(b"mine")
    result = _plot(post_file, "all", "--out-dir", out)
    assert result.exit_code == 1
    assert "heatmap.png exists; pass --force to replace it (nothing was written)" in \
        result.output
    # Checked before drawing: no other kind was written either.
    assert [p.name for p in out.iterdir()] == ["heatmap.png"]
    assert (out / "heatmap.png").read_bytes() == b"mine"
    result = _plot(post_file, "all", "--out-dir", out, "--force")
    assert result.exit_code == 0, result.output
    assert len(list(out.iterdir())) == len(plots.KINDS)
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_kinds_that_do_not_apply_are_skipped_with_a_note(gapless_file, tmp_path):
    out = tmp_path / "plots"
    result = _plot(gapless_file, "all", "--out-dir", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["loo-pit.png", "losses.png", "ppc.png",
                                                     "prior.png"]
    skipped = _skipped(result)
    assert [line.split(":")[0] for line in skipped] == [
        "skipped forest", "skipped heatmap", "skipped acquisition"]
    assert "no per-pair gap" in skipped[0]
    # The CLI's own words: the flag that makes the acquisition apply, not a Python keyword.
    assert "give --at RUNS.csv" in skipped[2] and "quantity=" not in skipped[2]


def test_acquisition_of_a_gapless_law_narrows_the_losses_at_given_runs(gapless_file,
                                                                      tmp_path):
    at = tmp_path / "target_scale.csv"
    at.write_text("source,target,params,pretrain_tokens,finetune_tokens\n"
                  "web,math,1e7,1e9,1e6\ncode,prose,1e7,1e9,1e6\n")
    out = tmp_path / "plots"
    result = _plot(gapless_file, "all", "--out-dir", out, "--at", at)
    assert result.exit_code == 0, result.output
    assert (out / "acquisition.png").exists()
    assert [line.split(":")[0] for line in _skipped(result)] == ["skipped forest",
                                                               "skipped heatmap"]
    one = tmp_path / "acq.png"
    result = _plot(gapless_file, "acquisition", "--at", at, "--out", one)
    assert result.exit_code == 0, result.output
    with Image.open(one) as img:
        assert img.format == "PNG" and img.size == SIZE
    bad = tmp_path / "bad.csv"
    bad.write_text("source,target,params,pretrain_tokens,finetune_tokens\n"
                   "web,math,-1,1e9,1e6\n")
    result = _plot(gapless_file, "acquisition", "--at", bad, "--out", tmp_path / "b.png")
    assert result.exit_code == 1 and "row 1" in result.output, result.output
    assert not (tmp_path / "b.png").exists()


def test_a_from_scratch_table_plots_every_kind_that_applies(from_scratch_file, tmp_path):
    out = tmp_path / "plots"
    result = _plot(from_scratch_file, "all", "--out-dir", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["loo-pit.png", "losses.png", "ppc.png",
                                                     "prior.png"]
    assert [line.split(":")[0] for line in _skipped(result)] == [
        "skipped forest", "skipped heatmap", "skipped acquisition"]


@pytest.mark.parametrize("args, message", [
    (["all", "--out", "x.png"], "give --out-dir DIR, not --out"),
    (["all"], "give --out-dir DIR"),
    (["heatmap", "--out-dir", "d"], "plot heatmap writes one image: give --out FILE"),
    (["heatmap"], "give --out FILE"),
])
def test_out_and_out_dir_are_not_mixed_up(post_file, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = _plot(post_file, *args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_losses_draws_the_pairs_named_by_pair(post_file, tmp_path, monkeypatch):
    """``--pair`` reaches plot_losses (one panel per named pair, in order) for losses and
    all; it is refused for kinds without pair panels, and an unknown pair is named."""
    from bayes_transfer.inference import Posterior

    labels = Posterior.load(post_file).runs.pair_labels
    chosen = [labels[-1], labels[0]]
    drawn = []
    real = plots.plot_losses

    def spy(post, against="p", **kw):
        fig = real(post, against, **kw)
        drawn.append([ax.get_title() for ax in fig.axes if ax.get_visible()])
        return fig

    monkeypatch.setattr(plots, "plot_losses", spy)
    args = [a for label in chosen for a in ("--pair", label)]
    result = _plot(post_file, "losses", *args, "--out", tmp_path / "l.png")
    assert result.exit_code == 0, result.output
    assert drawn == [chosen]
    result = _plot(post_file, "all", *args, "--out-dir", tmp_path / "all")
    assert result.exit_code == 0, result.output
    assert drawn[-1] == chosen
    result = _plot(post_file, "forest", "--pair", chosen[0], "--out", tmp_path / "f.png")
    assert result.exit_code != 0 and "--pair chooses the panels of losses" in result.output
    assert not (tmp_path / "f.png").exists()
    result = _plot(post_file, "losses", "--pair", "nope->none", "--out", tmp_path / "n.png")
    assert result.exit_code == 1 and "unknown pair(s)" in result.output
    assert "nope->none" in result.output and not (tmp_path / "n.png").exists()
    # all fails too, before drawing any kind: an unknown pair is a mistake, not a kind
    # that does not apply (which all skips with a note).
    result = _plot(post_file, "all", "--pair", chosen[0], "--pair", "nope->none",
                   "--out-dir", tmp_path / "all-bad")
    assert result.exit_code == 1 and "unknown pair(s)" in result.output
    assert "nope->none" in result.output and not (tmp_path / "all-bad").exists()
