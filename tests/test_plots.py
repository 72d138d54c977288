"""Plots return Figures; the CLI writes PNGs of the fixed size, atomically."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _posteriors import TRUTH, known_posterior, simulated
from matplotlib.figure import Figure
from PIL import Image
from typer.testing import CliRunner

from bayes_transfer import plots, simulate
from bayes_transfer.cli import app

SIZE = (round(plots.FIGSIZE[0] * plots.DPI), round(plots.FIGSIZE[1] * plots.DPI))


@pytest.fixture(scope="module")
def post():
    return known_posterior(simulated(), spread=0.05)


@pytest.fixture(scope="module")
def post_file(post, tmp_path_factory):
    return post.save(tmp_path_factory.mktemp("post") / "posterior.nc")


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in (*ax.texts, *ax.get_yticklabels())]


def test_losses_one_panel_per_observed_pair_with_bands(post):
    fig = plots.plot_losses(post, "p")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert isinstance(fig, Figure)
    assert sorted(ax.get_title().split()[0] for ax in panels) == \
        ["code->math", "web->math", "web->prose"]
    assert all(ax.get_xscale() == "log" for ax in panels)
    # Two bands (curve and predictive) per fine-tuning amount, and the runs as points.
    assert all(len(ax.collections) == 3 * 3 for ax in panels)
    # The curves are on the data: each run is near its own curve (median of the curve at
    # its x; the known posterior is centred on the truth that simulated the runs).
    for ax in panels:
        for line, pts in zip(ax.lines, ax.collections[2::3], strict=True):
            x, y = line.get_data()
            xy = np.asarray(pts.get_offsets())
            curve = np.interp(np.log(xy[:, 0]), np.log(x), y)
            assert np.median(np.abs(np.log(xy[:, 1] / curve))) < 0.1


def test_losses_against_f_and_errors(post):
    assert isinstance(plots.plot_losses(post, "f", pairs=["code->prose"]), Figure)
    with pytest.raises(ValueError, match="against"):
        plots.plot_losses(post, "N")
    with pytest.raises(ValueError, match="unknown pair"):
        plots.plot_losses(post, pairs=["nope->math"])


def test_losses_of_fine_tuning_curves_default_to_f():
    """A table of fine-tuning curves of pre-trained models (p = 0 on every row, as the
    converted rectified-scaling tables) has nothing to place on a log p axis: by default
    its curves are drawn against f, and asking for p says why it cannot."""
    from dataclasses import replace

    from bayes_transfer.spec import load_spec

    design = simulate.design_grid(["m1", "m2"], ["flan"], params=[1e8], pretrain_tokens=[0],
                                  finetune_tokens=[1e4, 1e5, 1e6])
    spec = replace(load_spec("finetune-curves"), discrepancy=None)
    curves = known_posterior(simulate.simulate(spec, design, seed=1, loss_se=0.02), 0.05)
    panels = [ax for ax in plots.plot_losses(curves).axes if ax.get_visible()]
    assert len(panels) == 2 and all(ax.lines for ax in panels)
    assert {ax.get_xlabel() for ax in panels} == {"finetune_tokens (f)"}
    with pytest.raises(ValueError, match="no fitted row has pretrain_tokens > 0"):
        plots.plot_losses(curves, "p")


def test_losses_of_names_that_contain_the_arrow():
    """Labels are looked up among the table's pairs, not split at "->": each panel draws its
    own pair's curve through its own runs (labels two pairs would share are refused when
    the table is read: tests/test_data.py)."""
    design = simulate.design_grid(["a->b", "x"], ["c", "b->c"], params=[1e5, 1e6],
                                  pretrain_tokens=[1e6, 1e7, 1e8],
                                  finetune_tokens=[1e4, 1e5, 1e6])
    sim = simulate.simulate("transfer-gap-size", design, seed=1, truth=TRUTH, loss_se=0.02)
    arrows = known_posterior(sim, spread=0.05)
    fig = plots.plot_losses(arrows, "p", pairs=["a->b->b->c"])
    (panel,) = [ax for ax in fig.axes if ax.get_visible()]
    assert panel.get_title() == "a->b->b->c"
    rows = sim.runs.df[(sim.runs.df.source == "a->b") & (sim.runs.df.target == "b->c")]
    drawn = np.concatenate([np.asarray(c.get_offsets()) for c in panel.collections[2::3]])
    top = rows[rows.params == rows.params.max()]
    assert sorted(drawn[:, 1]) == pytest.approx(sorted(top["loss"]))
    for line, pts in zip(panel.lines, panel.collections[2::3], strict=True):
        x, y = line.get_data()
        xy = np.asarray(pts.get_offsets())
        curve = np.interp(np.log(xy[:, 0]), np.log(x), y)
        assert np.median(np.abs(np.log(xy[:, 1] / curve))) < 0.1
    default = [ax.get_title() for ax in plots.plot_losses(arrows, "p").axes
               if ax.get_visible()]
    assert len(default) == 4
    with pytest.raises(ValueError, match="unknown pair"):
        plots.plot_losses(arrows, pairs=["a->b->x"])


def test_forest_marks_unobserved_pair_and_sorts(post):
    fig = plots.plot_gap_forest(post, ci=0.9)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "code->prose  (pred.)" in labels
    assert sum("(pred.)" in label for label in labels) == 1
    gaps = post.gap_table(ci=0.9).assign(label=lambda d: d.source + "->" + d.target)
    order = [label.replace("  (pred.)", "") for label in labels]
    assert order == list(gaps.sort_values("median")["label"])


def test_heatmap_annotates_medians_widths_and_predicted_cells(post):
    fig = plots.plot_gap_heatmap(post, ci=0.9)
    texts = [t for t in _texts(fig) if "×" in t]
    assert len(texts) == 4  # 2 sources x 2 targets
    assert sum("pred." in t for t in texts) == 1
    gaps = post.gap_table(ci=0.9)
    row = gaps[(gaps.source == "code") & (gaps.target == "prose")].iloc[0]
    cell = next(t for t in texts if "pred." in t)
    assert cell.startswith(f"{row['median']:.3g}\n×{row['upper'] / row['lower']:.3g}")


def test_prior_posterior_panels_and_prior_draws(post):
    fig = plots.plot_prior_posterior(post, ["G_mu", "sigma"], n_prior=500)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["G_mu", "sigma"]
    draws = plots.prior_draws(post, ["G_mu"], n=4000)
    spec = post.spec.params["G"]
    # The prior is the spec's: G_mu ~ Normal(loc, scale).
    assert abs(draws["G_mu"].mean() - spec.loc) < 4 * spec.scale / np.sqrt(4000)
    assert abs(draws["G_mu"].std() / spec.scale - 1) < 0.06
    with pytest.raises(ValueError, match="no site"):
        plots.plot_prior_posterior(post, ["nope"])


def test_acquisition_plot_from_scores():
    scores = pd.DataFrame({"source": ["a", "b", "a"], "target": ["x", "x", "y"],
                           "params": [1e6] * 3, "pretrain_tokens": [1e8] * 3,
                           "finetune_tokens": [1e5, 1e6, 1e7],
                           "gain_per_cost": [3.0, 1.0, 2.0]})
    fig = plots.plot_acquisition(scores, top=2)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == 2 and labels[-1].startswith("a->x")  # best on top
    with pytest.raises(ValueError, match="value column"):
        plots.plot_acquisition(scores.drop(columns="gain_per_cost"))


@pytest.mark.parametrize("kind", ["losses", "forest", "heatmap", "prior", "acquisition"])
def test_cli_writes_png_of_fixed_size(post_file, tmp_path, kind):
    out = tmp_path / f"{kind}.png"
    result = CliRunner().invoke(app, ["plot", str(post_file), kind, "--out", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == SIZE
        extrema = im.convert("L").getextrema()
        assert extrema[0] < extrema[1]  # not a blank image
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary left


def test_cli_plot_errors_name_the_problem(post_file, tmp_path):
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "missing.nc"), "forest",
                                      "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "no such posterior file" in result.output
    bad = tmp_path / "cands.toml"
    bad.write_text("[candidates]\nparams = [1e6]\n")
    result = CliRunner().invoke(app, ["plot", str(post_file), "acquisition", "--out",
                                      str(tmp_path / "x.png"), "--candidates", str(bad)])
    assert result.exit_code == 1 and "candidates" in result.output
    assert not (tmp_path / "x.png").exists()


def test_default_candidates_thin_near_identical_sizes():
    # Sizes read off a published figure: 73824672 beside 73824689. The acquisition plot's
    # candidates keep one size a bin (8 a decade), so its top bars are different runs.
    from types import SimpleNamespace

    from bayes_transfer.cli.plots import default_candidates
    from bayes_transfer.data import load_runs

    n = np.array([7.3824672e7, 7.3824689e7, 7.3824701e7, 1.0e8, 1.0000003e8, 1e9])
    d = np.array([1e9, 1.0000001e9, 3e9, 3.0000002e9, 1e10, 1e10])
    df = pd.DataFrame({"run_id": [f"r{i}" for i in range(6)], "source": "web",
                       "target": "web", "params": n,
                       "pretrain_tokens": d, "finetune_tokens": 0.0,
                       "loss": 3.0 - 0.1 * np.arange(6)})
    cands = default_candidates(SimpleNamespace(runs=load_runs(df)))
    assert sorted(cands["params"].unique()) == [7.3824701e7, 1.0000003e8, 1e9]
    # The pre-training amounts, one a bin, then one step (the last ratio, 3.33x) beyond.
    np.testing.assert_allclose(sorted(cands["pretrain_tokens"].unique()),
                               [1.0000001e9, 3.0000002e9, 1e10, 1e10 * 1e10 / 3.0000002e9])
    assert (cands["finetune_tokens"] == 0).all()
    assert len(cands) == 3 * 4
