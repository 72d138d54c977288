"""Allocation advice: picks the truly best option when the posterior knows the truth,
and says plainly that it cannot tell when the posterior is wide."""

from __future__ import annotations

import numpy as np
import pytest
from _posteriors import known_posterior, simulated
from typer.testing import CliRunner

from bayes_transfer.advise import advise, budget_options, run_cost
from bayes_transfer.cli import app
from bayes_transfer.evaluate import levels_of, log_loss_at_rows
from bayes_transfer.laws import features

SIZES = [1e5, 1e6, 1e7]
FRACTIONS = [0.1, 0.5, 0.9]


@pytest.fixture(scope="module")
def sim():
    return simulated("transfer-gap-size")


def true_losses(sim, options):
    """The loss of each option under the parameters that simulated the data."""
    table = sim.runs
    codes = options.assign(
        s=options["source"].map({s: i for i, s in enumerate(table.sources)}),
        t=options["target"].map({t: i for i, t in enumerate(table.targets)}))
    lp = {name: np.asarray(sim.true_log(name)) for name in sim.spec.params}
    return np.exp(np.asarray(log_loss_at_rows(
        sim.spec.law, features(options, sim.units), lp, levels=levels_of(sim.spec),
        source_idx=codes["s"].to_numpy(), target_idx=codes["t"].to_numpy(),
        n_targets=len(table.targets))))


def test_budget_options_spend_the_budget():
    opts = budget_options(["web", "code"], "math", 1e16, sizes=SIZES, fractions=FRACTIONS)
    assert len(opts) == 2 * 3 * 3
    np.testing.assert_allclose(run_cost(opts), 1e16, rtol=1e-6)
    np.testing.assert_allclose(opts["pretrain_tokens"] / (opts["pretrain_tokens"] +
                                                          opts["finetune_tokens"]),
                               opts["fraction"], rtol=1e-6)
    tokens = budget_options(["web"], "math", 1e9, unit="tokens", sizes=[1e6])
    assert (tokens["pretrain_tokens"] + tokens["finetune_tokens"] >= 1e9 - 1).all()
    with pytest.raises(ValueError, match="--budget"):
        budget_options(["web"], "math", -1, sizes=SIZES)
    with pytest.raises(ValueError, match="fractions"):
        budget_options(["web"], "math", 1e16, sizes=SIZES, fractions=[1.0])


@pytest.mark.parametrize("target", ["math", "prose"])
def test_informative_posterior_picks_the_true_best(sim, target):
    post = known_posterior(sim, spread=0.01)
    adv = advise(post, target, 1e16, sizes=SIZES, fractions=FRACTIONS)
    truth = true_losses(sim, adv.options)
    assert adv.decisive, adv.message
    assert adv.best.name == 0 and int(np.argmin(truth)) == 0  # the true best is on top
    assert adv.message.startswith("best: ")
    assert adv.options["p_best"].sum() == pytest.approx(1.0)
    row = adv.best
    assert row["loss_lower"] <= truth[0] <= row["loss_upper"]


def test_wide_posterior_says_it_cannot_tell(sim):
    post = known_posterior(sim, spread=1.0)
    adv = advise(post, "math", 1e16, sizes=SIZES, fractions=FRACTIONS)
    assert not adv.decisive
    assert adv.message.startswith("the data cannot tell these options apart: ")
    assert len(adv.tied) >= 2
    assert adv.best["p_best"] < 0.8


def test_law_without_size_advises_only_the_split():
    sim = simulated("transfer-gap")
    adv = advise(known_posterior(sim, spread=0.01), "math", 1e16, source="web")
    assert adv.options["params"].nunique() == 1
    assert "no model-size term" in str(adv) and "only the split" in str(adv)
    assert set(adv.options["source"]) == {"web"}


def test_bad_input_names_the_flag(sim):
    post = known_posterior(sim, spread=0.01)
    with pytest.raises(ValueError, match="--target 'nope'"):
        advise(post, "nope", 1e16)
    with pytest.raises(ValueError, match="--source 'nope'"):
        advise(post, "math", 1e16, source="nope")
    with pytest.raises(ValueError, match="--ci"):
        advise(post, "math", 1e16, ci=1.5)


def test_cli_advise(sim, tmp_path):
    path = known_posterior(sim, spread=0.01).save(tmp_path / "post.nc")
    result = CliRunner().invoke(app, ["advise", str(path), "--target", "math", "--budget",
                                      "1e16", "--unit", "tokens"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "P(best)" in result.output and "only the split" in result.output
    result = CliRunner().invoke(app, ["advise", str(path), "--target", "nope",
                                      "--budget", "1e16"])
    assert result.exit_code == 1 and "--target 'nope'" in result.output
