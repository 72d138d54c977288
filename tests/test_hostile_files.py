"""Hostile and damaged files: parsed safely (no pickle, no eval), refused with clear errors.

A posterior file, a model spec, a run table or a checkpoint may come from someone else.
Reading one must never run code it carries (each payload here would create a marker file),
and a truncated or corrupted one must give the package's own error naming the file, never
a raw traceback from h5py, tomllib, pandas, pyarrow or torch.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import arviz as az
import h5py
import jax
import numpy as np
import pandas as pd
import pytest
from numpyro.infer import Predictive

from bayes_transfer.data import RunTableError, load_runs
from bayes_transfer.diagnostics import diagnose
from bayes_transfer.inference import (
    Posterior,
    PosteriorFileError,
    _annotate,
    _diagnosed_vars,
    coords_for,
)
from bayes_transfer.model import hierarchical_model, model_data, site_dims
from bayes_transfer.simulate import design_grid, simulate
from bayes_transfer.spec import ModelSpec, SpecError, load_spec


class Payload:
    """Unpickling this creates ``path``: proof that a loader ran code from a file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def damaged_copies(data: bytes, seed: int = 0) -> list[tuple[str, bytes]]:
    """Truncations at several points and a few byte-flipped copies of ``data``."""
    rng = np.random.default_rng(seed)
    out = [(f"truncated at {f:.0%}", data[: int(len(data) * f)])
           for f in (0.0, 0.01, 0.1, 0.5, 0.9, 0.999)]
    for k in range(4):
        blob = bytearray(data)
        for i in rng.integers(0, len(blob), size=16 * (k + 1)):
            blob[i] ^= 0xFF
        out.append((f"{16 * (k + 1)} bytes flipped", bytes(blob)))
    out.append(("random bytes", rng.bytes(len(data))))
    return out


# ---- posterior files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def posterior_file(tmp_path_factory) -> Path:
    """A valid posterior file, from prior draws (no NUTS needed to test file handling)."""
    spec = load_spec("transfer-gap")
    design = design_grid(["a", "b"], ["x"], params=[1e6], pretrain_tokens=[1e6, 1e8],
                         finetune_tokens=[1e4, 1e6])
    runs = simulate(spec, design, seed=0).runs
    data = model_data(spec, runs)
    draws = Predictive(hierarchical_model, num_samples=100)(jax.random.key(0), data,
                                                           observed=False)
    post = {k: np.asarray(v).reshape((2, 50) + v.shape[1:]) for k, v in draws.items()
            if k != "log_loss"}
    idata = az.from_dict(posterior=post, coords=coords_for(runs), dims=site_dims(spec))
    units = {"units": data.units} if hasattr(data, "units") else {}  # reference scales
    _annotate(idata, spec, runs, backend="numpyro", left_out=0, **units)
    path = tmp_path_factory.mktemp("post") / "post.nc"
    Posterior(idata=idata, spec=spec, runs=runs,
              diagnostics=diagnose(idata, var_names=_diagnosed_vars(spec, idata), warn=False)
              ).save(path)
    Posterior.load(path)  # the intact file loads
    return path


def test_a_pickled_attribute_in_a_posterior_file_is_never_unpickled(posterior_file, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.nc"
    evil.write_bytes(posterior_file.read_bytes())
    blob = pickle.dumps(Payload(marker))
    with h5py.File(evil, "a") as f:
        f["posterior"].attrs["evil"] = np.void(blob)
        f["constant_data"].create_dataset("evil_var", data=np.frombuffer(blob, np.uint8))
    try:
        post = Posterior.load(evil)
        assert post.gap_table() is not None
    except PosteriorFileError:
        pass
    assert not marker.exists()


def test_code_in_the_stored_spec_is_not_evaluated(posterior_file, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.nc"
    evil.write_bytes(posterior_file.read_bytes())
    with h5py.File(evil, "a") as f:
        f["posterior"].attrs["spec"] = json.dumps(
            {"law": f"__import__('os').system('touch {marker}')", "params": {}})
    with pytest.raises(PosteriorFileError, match="damaged posterior metadata"):
        Posterior.load(evil)
    assert not marker.exists()


def test_damaged_posterior_files_raise_posterior_file_error(posterior_file, tmp_path):
    for what, blob in damaged_copies(posterior_file.read_bytes()):
        path = tmp_path / "damaged.nc"
        path.write_bytes(blob)
        try:
            Posterior.load(path)  # a flip in unused padding may leave the file readable
        except PosteriorFileError as err:
            assert str(path) in str(err), what
        except Exception as err:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{what}: raw {type(err).__name__} from Posterior.load: {err}")


def test_foreign_and_missing_posterior_files_are_refused(tmp_path):
    other = tmp_path / "other.nc"
    az.from_dict(posterior={"x": np.zeros((1, 5))}).to_netcdf(str(other), engine="h5netcdf")
    with pytest.raises(PosteriorFileError, match="not a bayes_transfer posterior"):
        Posterior.load(other)
    with pytest.raises(PosteriorFileError, match="no such posterior file"):
        Posterior.load(tmp_path / "absent.nc")


# ---- model specs ---------------------------------------------------------------------------


def test_code_in_a_toml_spec_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    cases = {
        "law": f'law = "{code}"\n',
        "description": f'law = "transfer-gap"\ndescription = "{code}"\n',
        "loc": f'law = "transfer-gap"\n[params.G]\nloc = "{code}"\n',
        "level": f'law = "transfer-gap"\n[params.G]\nlevel = "{code}"\n',
        "key": f'law = "transfer-gap"\n[params.G]\n"{code}" = 1\n',
    }
    for what, text in cases.items():
        path = tmp_path / f"{what}.toml"
        path.write_text(text)
        try:
            spec = ModelSpec.from_toml(path)
            assert what == "description" and spec.description == code  # kept as text
        except SpecError as err:
            assert str(path) in str(err), what
    assert not marker.exists()


def test_damaged_spec_files_raise_spec_error(tmp_path):
    from bayes_transfer.bundled import spec_path

    data = spec_path("transfer-gap").read_bytes()
    for what, blob in damaged_copies(data):
        path = tmp_path / "spec.toml"
        path.write_bytes(blob)
        try:
            load_spec(path)
        except SpecError:
            pass
        except Exception as err:  # noqa: BLE001
            pytest.fail(f"{what}: raw {type(err).__name__} from load_spec: {err}")
    with pytest.raises(SpecError, match="no such model spec"):
        load_spec(tmp_path / "absent.toml")


def test_a_directory_given_as_a_spec_is_refused_clearly(tmp_path):
    with pytest.raises(SpecError):
        ModelSpec.from_toml(tmp_path)


# ---- run tables ----------------------------------------------------------------------------


def runs_frame(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame({"run_id": [f"r{i}" for i in range(n)], "source": "web",
                         "target": "code", "params": 10**6, "pretrain_tokens": 10**8,
                         "finetune_tokens": np.arange(1, n + 1) * 1000,
                         "loss": np.linspace(2, 3, n), "seed": 0})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_damaged_run_tables_raise_run_table_error(tmp_path, suffix):
    good = tmp_path / f"good{suffix}"
    df = runs_frame()
    df.to_csv(good, index=False) if suffix == ".csv" else df.to_parquet(good, index=False)
    assert len(load_runs(good)) == 20
    for what, blob in damaged_copies(good.read_bytes()):
        path = tmp_path / f"runs{suffix}"
        path.write_bytes(blob)
        try:
            table = load_runs(path)
        except RunTableError as err:
            assert "runs" in str(err), what
            continue
        except Exception as err:  # noqa: BLE001
            pytest.fail(f"{what}: raw {type(err).__name__} from load_runs: {err}")
        # A CSV cut at a line boundary is a shorter valid table: no row is invented.
        assert len(table) <= 20, what


def test_a_parquet_file_with_a_pickled_pandas_object_column_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    df = runs_frame(3)
    df["blob"] = [pickle.dumps(Payload(marker))] * 3  # bytes stay bytes
    path = tmp_path / "runs.parquet"
    df.to_parquet(path, index=False)
    table = load_runs(path)
    assert not marker.exists() and isinstance(table.df["blob"].iloc[0], bytes)


# ---- checkpoints ----------------------------------------------------------------------------


trainer = pytest.importorskip("bayes_transfer.trainer.training")


def test_a_checkpoint_with_a_pickle_payload_is_refused_and_never_run(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_config": {}, "model": Payload(marker), "run_config": {}}, path)
    with pytest.raises(Exception) as info:  # noqa: B017 - any refusal, checked below
        trainer.load_checkpoint(path)
    assert not marker.exists()
    assert "weights" in str(info.value).lower() or "checkpoint" in str(info.value).lower()
    with pytest.raises(Exception):  # noqa: B017
        trainer.load_checkpoint(path.read_bytes())
    assert not marker.exists()


def _a_real_checkpoint() -> bytes:
    import torch

    from bayes_transfer.trainer.model import SHAPES, ModelConfig, TransformerLM

    config = ModelConfig.from_shape(next(iter(SHAPES)), context=16)
    model = TransformerLM(config)
    buffer = io.BytesIO()
    torch.save({"model_config": config.to_dict(), "model": model.state_dict(),
                "run_config": {}}, buffer)
    return buffer.getvalue()


def test_damaged_checkpoints_give_a_clear_trainer_error(tmp_path):
    data = _a_real_checkpoint()
    trainer.load_checkpoint(data)  # the intact checkpoint loads
    path = tmp_path / "ckpt.pt"
    for what, blob in damaged_copies(data):
        path.write_bytes(blob)
        try:
            trainer.load_checkpoint(path)
        except ValueError as err:  # the package's own errors are ValueErrors
            assert "checkpoint" in str(err).lower(), what
        except Exception as err:  # noqa: BLE001
            pytest.fail(f"{what}: raw {type(err).__name__} from load_checkpoint: {err}")
