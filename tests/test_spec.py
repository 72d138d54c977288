"""Model specs: bundled specs load; bad specs and tables the law cannot use are refused."""

from __future__ import annotations

import pandas as pd
import pytest

from bayes_transfer.bundled import MODELS_DIR
from bayes_transfer.data import RunTableError, load_runs
from bayes_transfer.model import select_rows
from bayes_transfer.spec import ModelSpec, SpecError, load_spec

BUNDLED = ["transfer-gap", "transfer-gap-size", "chinchilla", "effective-data"]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_specs_load_and_round_trip(name):
    spec = load_spec(name)
    assert spec == load_spec(MODELS_DIR / f"{name}.toml")
    assert ModelSpec.from_json(spec.to_json()) == spec


def test_unknown_law_is_named():
    with pytest.raises(SpecError, match="unknown law 'transfer-gapp'.*known laws"):
        load_spec({"law": "transfer-gapp"})


def test_unknown_parameter_is_named():
    with pytest.raises(SpecError, match=r"\['Gap'\] are not parameters of law 'transfer-gap'"):
        load_spec({"law": "transfer-gap", "params": {"Gap": {"level": "pair"}}})


@pytest.mark.parametrize("entry, words", [
    ({"level": "pairs"}, "level 'pairs'"),
    ({"level": "global", "pooling": "crossed"}, "pooling 'crossed' does not apply"),
    ({"scale": 0}, "scale must be > 0"),
    ({"loc": "big"}, "must be a number"),
    ({"prior": 1}, "unknown key of params.G"),
    ({"level": "pair", "pooling": "partial", "factors": 1}, "factors apply to level"),
    ({"level": "source", "factors": 1}, "factors apply to level"),
    ({"level": "pair", "pooling": "crossed", "factors": 4}, "factors must be an integer from 0"),
    ({"level": "pair", "pooling": "crossed", "factors": 1.5}, "factors must be an integer"),
    ({"level": "pair", "pooling": "crossed", "factors": True}, "factors must be an integer"),
    ({"level": "pair", "pooling": "crossed", "fixed_sd": ["pair"]}, "fixed_sd must be a list"),
    ({"level": "pair", "pooling": "crossed", "fixed_sd": "target"}, "fixed_sd must be a list"),
    ({"level": "pair", "pooling": "crossed", "fixed_sd": ["target", "target"]},
     "fixed_sd must be a list of distinct"),
    ({"level": "pair", "pooling": "partial", "fixed_sd": ["target"]}, "fixed_sd applies to"),
    ({"level": "pair", "pooling": "none", "residual_nu": 3}, "residual_nu applies to pooled"),
    ({"level": "pair", "pooling": "crossed", "residual_nu": 0}, "residual_nu must be > 0"),
    ({"level": "pair", "pooling": "crossed", "residual_nu": "t"}, "residual_nu must be a num"),
])
def test_bad_parameter_entries(entry, words):
    with pytest.raises(SpecError, match=words):
        load_spec({"law": "transfer-gap", "params": {"G": entry}})


@pytest.mark.parametrize("sampler, words", [
    ({"target_accept": 1.0}, r"sampler.target_accept must be >= 0.5 and <= 0.999"),
    ({"target_accept": 0.2}, r"sampler.target_accept must be >= 0.5"),
    ({"target_accept": "high"}, r"sampler.target_accept must be a number"),
    ({"target_accept": True}, r"sampler.target_accept must be a number"),
    ({"max_tree": 12}, r"unknown key of sampler \['max_tree'\]"),
    ({"mode_starts": 0}, r"sampler.mode_starts must be a whole number between 1 and 256"),
    ({"mode_starts": 2.5}, r"sampler.mode_starts must be a whole number"),
    ({"mode_starts": True}, r"sampler.mode_starts must be a whole number"),
    (0.95, r"'sampler' must be a table"),
])
def test_bad_sampler_defaults_are_named(sampler, words):
    with pytest.raises(SpecError, match=words):
        load_spec({"law": "transfer-gap", "sampler": sampler})


def test_residual_nu_round_trips_and_is_absent_when_normal():
    spec = load_spec({"law": "transfer-gap", "params": {
        "G": {"level": "pair", "pooling": "crossed", "residual_nu": 3}}})
    assert spec.params["G"].residual_nu == 3.0
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert "residual_nu" not in load_spec("transfer-gap").to_dict()["params"]["G"]


def test_anchored_coordinates_refuse_student_t_pairs():
    d = load_spec("chinchilla-pairs").to_dict()
    d["sampler"] = {"coordinates": "anchored"}
    for name in ("E", "B", "beta"):
        d["params"][name]["centered"] = True
    load_spec(d)  # anchored as it stands
    d["params"]["B"]["residual_nu"] = 3.0
    with pytest.raises(SpecError, match="params.B.residual_nu needs coordinates"):
        load_spec(d)


def test_sampler_defaults_round_trip_and_default_to_none():
    spec = load_spec({"law": "transfer-gap", "sampler": {"target_accept": 0.97}})
    assert spec.target_accept == 0.97
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert load_spec({"law": "transfer-gap"}).target_accept is None
    # A stored spec from before [sampler] existed (no key) still loads.
    old = load_spec("transfer-gap").to_dict()
    del old["sampler"]
    assert ModelSpec.from_dict(old).sampler == {}


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("law = \n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="no such model spec"):
        load_spec(tmp_path / "missing.toml")


def _rows(**overrides) -> pd.DataFrame:
    df = pd.DataFrame({"run_id": ["r1", "r2"], "source": ["web", "web"],
                       "target": ["code", "code"], "params": [10**6, 10**6],
                       "pretrain_tokens": [10**7, 10**7], "finetune_tokens": [10**5, 0],
                       "loss": [2.0, 2.5]})
    return df.assign(**overrides)


def test_missing_column_the_law_needs():
    with pytest.raises(RunTableError, match="column finetune_tokens: missing required"):
        load_runs(_rows().drop(columns="finetune_tokens"))


def test_zero_shot_row_refused_when_rows_all():
    spec = load_spec({"law": "transfer-gap", "rows": "all"})
    with pytest.raises(RunTableError, match="row 2, column finetune_tokens: law transfer-gap "
                                            "needs finetune_tokens > 0"):
        select_rows(spec, load_runs(_rows()))


def test_zero_shot_row_left_out_when_rows_applicable():
    table, left_out = select_rows(load_spec("transfer-gap"), load_runs(_rows()))
    assert (len(table), left_out) == (1, 1)
    # Leaving rows out keeps every source and target.
    assert table.targets == ("code",)
