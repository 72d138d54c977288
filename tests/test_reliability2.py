"""Reliability, round 2 (issue 14): one regression test (or a few) per numbered defect.

Each test was run against the code before its fix and seen to fail (see the issue's
closing note). Nothing here samples with NUTS for more than a moment: posteriors are
built from known draws (``tests/_posteriors.py``), and commands are stopped by their
argument checks before any work.
"""

from __future__ import annotations

import json
from pathlib import Path

import arviz as az
import h5py
import numpy as np
import pandas as pd
import pytest
from _grids import tiny_grid
from _posteriors import known_posterior, saved_posterior, simulated
from typer.testing import CliRunner

from bayes_transfer.cli import app
from bayes_transfer.inference import Posterior, PosteriorFileError

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def post_file(tmp_path_factory) -> Path:
    """A valid posterior file (known draws, with sample stats), loaded once to prove it."""
    return saved_posterior(tmp_path_factory.mktemp("post") / "post.nc", draws=50)


def copy_of(post_file: Path, tmp_path: Path, name: str = "evil.nc") -> Path:
    out = tmp_path / name
    out.write_bytes(post_file.read_bytes())
    return out


# ---- 1. a hostile posterior must not read local files -----------------------------------


def _attach_row(f: h5py.File, ds: h5py.Dataset) -> None:
    ds.dims[0].attach_scale(f["constant_data/row"])


def test_1_external_storage_is_refused_and_never_read(post_file, tmp_path):
    secret = tmp_path / "secret.txt"
    n = Posterior.load(post_file).runs.df.shape[0]
    secret.write_bytes(b"S3CRET-" + b"x" * (n - 7))
    evil = copy_of(post_file, tmp_path)
    with h5py.File(evil, "a") as f:
        ds = f["constant_data"].create_dataset("run_secret", shape=(n,), dtype="S1",
                                               external=[(str(secret), 0, n)])
        _attach_row(f, ds)
    with pytest.raises(PosteriorFileError, match="external storage"):
        Posterior.load(evil)


def test_1_external_links_virtual_datasets_and_unknown_groups_are_refused(post_file,
                                                                         tmp_path):
    for words, mutate in link_cases(tmp_path / "other.h5").items():
        evil = copy_of(post_file, tmp_path)
        with h5py.File(evil, "a") as f:
            mutate(f)
        with pytest.raises(PosteriorFileError, match=words):
            Posterior.load(evil)


def link_cases(other: Path) -> dict:
    """Mutations of an open posterior file that point outside it (a link, a virtual
    dataset, at the local file ``other``, written here) or add an unknown group, by the
    words the refusal names."""
    with h5py.File(other, "w") as f:
        f["data"] = np.arange(54.0)
    return {
        "ExternalLink": lambda f: f["posterior"].__setitem__(
            "evil", h5py.ExternalLink(str(other), "/data")),
        "SoftLink": lambda f: f["posterior"].__setitem__("evil", h5py.SoftLink(
            "/posterior/sigma")),
        "virtual": lambda f: f["posterior"].create_virtual_dataset("evil", _layout(other)),
        "unexpected": lambda f: f.create_group("evil"),
        "unexpected group": lambda f: f["posterior"].create_group("evil"),
    }


def _layout(other: Path) -> h5py.VirtualLayout:
    layout = h5py.VirtualLayout(shape=(54,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(other), "data", shape=(54,))
    return layout


# ---- 2. the whole structure is validated at load --------------------------------------------


def _rewrite(post_file: Path, tmp_path: Path, mutate) -> Path:
    idata = az.from_netcdf(str(post_file), engine="netcdf4")  # as the reader does: fast
    mutate(idata)
    out = tmp_path / "bad.nc"
    out.unlink(missing_ok=True)
    idata.to_netcdf(str(out), engine="h5netcdf")
    return out


def _set_attr(key, value):
    def mutate(idata):
        idata.posterior.attrs[key] = value
    return mutate


def _set_var(name, fn):
    def mutate(idata):
        idata.posterior[name] = fn(idata.posterior[name])
    return mutate


STRUCTURE = {
    "format version as an array": (_set_attr("bayes_transfer_format", np.array([1, 1])),
                                   "format version must be an integer"),
    "format version as text": (_set_attr("bayes_transfer_format", "1"),
                               "format version must be an integer"),
    "sigma as a string": (_set_var("sigma", lambda da: da.astype(str)), "sigma has dtype"),
    "zero draws": (lambda i: setattr(i, "posterior", i.posterior.isel(draw=slice(0, 0))),
                   "no draws"),
    "missing log_G": (lambda i: setattr(i, "posterior", i.posterior.drop_vars("log_G")),
                      "lacks the variable log_G"),
    "extra units key": (_set_attr("units", json.dumps({"params": 1e6, "tokens": 1e6,
                                                       "x": 1})), "units must be JSON"),
    "units not positive": (_set_attr("units", json.dumps({"params": -1, "tokens": 1e6})),
                           "units must be JSON"),
    "spec not JSON": (_set_attr("spec", "{"), "stored spec is not JSON"),
    "spec nested deep": (_set_attr("spec", "[" * 100000 + "]" * 100000), "not JSON"),
    "unknown dim": (_set_var("log_G", lambda da: da.rename(pair="bogus")), "bogus"),
    "no chain dim": (_set_var("sigma", lambda da: da.isel(chain=0)), "dims"),
    "log_G at the wrong level": (
        lambda i: i.posterior.__setitem__("log_G", i.posterior["log_E"]), "log_G has dims"),
    "integer draws": (_set_var("sigma", lambda da: da.astype(np.int64)), "sigma has dtype"),
    "loss as text": (lambda i: i.constant_data.__setitem__(
        "run_loss", i.constant_data["run_loss"].astype(str)), "column loss has dtype"),
    "source as numbers": (lambda i: i.constant_data.__setitem__(
        "run_source", ("row", np.arange(i.constant_data.sizes["row"]))),
        "column source has dtype"),
    "missing run column": (lambda i: setattr(i, "constant_data",
                                             i.constant_data.drop_vars("run_params")),
                           "lacks the column"),
    "bad loss value": (lambda i: i.constant_data.__setitem__(
        "run_loss", i.constant_data["run_loss"] * -1), "damaged run table"),
    "sample stats of other draws": (lambda i: setattr(i, "sample_stats", i.sample_stats.isel(
        draw=slice(0, 5))), "sample_stats"),
    # ("a->b", "c") and ("a", "b->c"): one label, two pairs (tables are refused so at load).
    "two pairs of one label": (lambda i: setattr(i, "posterior", i.posterior.assign_coords(
        source=["a->b", "a"], target=["b->c", "c"],
        pair=["a->b->b->c", "a->b->c", "a->b->c", "a->c"])), "share a source->target label"),
}


@pytest.mark.parametrize("case", list(STRUCTURE))
def test_2_a_wrong_structure_is_refused_at_load(post_file, tmp_path, case):
    mutate, words = STRUCTURE[case]
    path = _rewrite(post_file, tmp_path, mutate)
    with pytest.raises(PosteriorFileError, match=words) as info:
        Posterior.load(path)
    assert str(path) in str(info.value)


def test_2_extra_float_sites_with_known_dims_are_accepted(post_file, tmp_path):
    def mutate(idata):
        idata.posterior["delta_pair"] = idata.posterior["log_G"] * 0.5
        idata.posterior["tau"] = idata.posterior["sigma"] * 2
    post = Posterior.load(_rewrite(post_file, tmp_path, mutate))
    assert "delta_pair" in post.idata.posterior and len(post.gap_table()) == 4


def test_2_a_file_of_never_written_chunks_is_refused_before_it_is_read(post_file,
                                                                      tmp_path):
    # 240 MB declared in a file of a few hundred KB: refused from the layout alone.
    evil = copy_of(post_file, tmp_path)
    with h5py.File(evil, "a") as f:
        f["posterior"].create_dataset("bomb", shape=(2, 50, 300_000), dtype="f8",
                                      chunks=(1, 50, 10_000), compression="gzip")
    assert evil.stat().st_size < 1_000_000
    with pytest.raises(PosteriorFileError, match="never written"):
        Posterior.load(evil)
    # ... and a written but all-zero block larger than deflate can give is refused too.
    with h5py.File(evil, "a") as f:
        del f["posterior/bomb"]
        ds = f["posterior"].create_dataset("bomb", shape=(2, 50, 300_000), dtype="f8",
                                           chunks=(2, 50, 300_000), compression="gzip")
        ds[0, 0, 0] = 0.0
    with pytest.raises(PosteriorFileError):
        Posterior.load(evil)


def test_2_a_valid_file_still_loads_and_reports(post_file):
    post = Posterior.load(post_file)
    assert post.idata.posterior.sizes["draw"] == 50
    assert set(post.gap_table()["source"]) == {"web", "code"}
    result = cli("report", post_file, "--format", "csv")
    assert result.exit_code == 0, result.output


# ---- shared: commands stopped before their work ----------------------------------------------


class WorkStarted(Exception):
    """Raised by a patched sampler or trainer: the command got past its checks."""


@pytest.fixture
def no_work(monkeypatch):
    """Sampling, training and the loop raise WorkStarted instead of running."""
    import bayes_transfer.inference as inference
    import bayes_transfer.loop as loop
    import bayes_transfer.trainer as trainer

    def started(*args, **kwargs):
        raise WorkStarted

    monkeypatch.setattr(inference, "fit", started)
    monkeypatch.setattr(trainer, "run_grid", started)
    monkeypatch.setattr(loop, "run_loop", started)
    return WorkStarted


@pytest.fixture
def runs_csv(tmp_path) -> Path:
    path = tmp_path / "runs.csv"
    simulated("transfer-gap").runs.df.to_csv(path, index=False)
    return path


def refused(result, *words: str) -> str:
    """The command exited 1 with a clean message containing ``words`` (no traceback)."""
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    for w in words:
        assert w in text, text
    return text


def _grid(pretrain_tokens: list[int]) -> str:
    # The trainer's own learning rates: these tests refuse or interrupt, never compare losses.
    return tiny_grid(pretrain_tokens=pretrain_tokens, lr=None, finetune_lr=None)


GRID = _grid([2048])


# ---- 3. data is never destroyed silently ------------------------------------------------------


def test_3_fit_refuses_to_write_over_its_run_table(runs_csv, no_work):
    before = runs_csv.read_bytes()
    refused(cli("fit", runs_csv, "--out", runs_csv), "is the input")
    refused(cli("fit", runs_csv, "--out", runs_csv, "--force"), "is the input")
    assert runs_csv.read_bytes() == before


def test_3_existing_outputs_are_replaced_only_with_force(runs_csv, post_file, tmp_path,
                                                         no_work):
    old = tmp_path / "old.txt"
    old.write_text("keep me")
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    commands = {
        "fit": ["fit", runs_csv, "--out", old],
        "simulate": ["simulate", "transfer-gap", "--out", old],
        "predict": ["predict", post_file, "--runs", runs_csv, "--out", old],
        "train": ["train", grid, "--out", old],
        "plot": ["plot", post_file, "forest", "--out", old.with_suffix(".png")],
    }
    old.with_suffix(".png").write_text("keep me")
    for name, args in commands.items():
        refused(cli(*args), "exists", "--force")
        assert old.read_text() == "keep me", name
        assert old.with_suffix(".png").read_text() == "keep me", name
    result = cli("simulate", "transfer-gap", "--out", old, "--force")
    assert result.exit_code == 0, result.output
    assert old.read_text().startswith("run_id")


def test_3_predict_and_simulate_refuse_to_write_over_an_input(runs_csv, post_file, no_work):
    refused(cli("predict", post_file, "--runs", runs_csv, "--out", runs_csv, "--force"),
            "is the input")
    refused(cli("predict", post_file, "--runs", runs_csv, "--out", post_file, "--force"),
            "is the input")
    refused(cli("simulate", "transfer-gap", "--design", runs_csv, "--out", runs_csv,
                "--force"), "is the input")


# ---- 4. every argument and the output location are checked before the work ----------------


def test_4_bad_outputs_and_arguments_fail_before_any_work(runs_csv, post_file, tmp_path,
                                                          no_work):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["fit", runs_csv, "--out", tmp_path], "is a directory"),
        (["fit", runs_csv, "--out", a_file / "post.nc"], "is not a directory"),
        (["fit", runs_csv, "--out", tmp_path / "p.nc", "--ci", "1.5"], "--ci"),
        (["fit", runs_csv, "--out", tmp_path / "p.nc", "--seed", str(2**70)], "--seed"),
        (["demo", "--out", tmp_path / "d", "--batch", "0"], "--batch"),
        (["demo", "--out", a_file], "not a directory"),
        (["report", post_file, "--ci", "0"], "--ci"),
        (["predict", post_file, "--runs", runs_csv, "--ci", "1"], "--ci"),
        (["advise", post_file, "--target", "math", "--budget", "-1"], "--budget"),
        (["suggest", post_file, "--candidates", runs_csv, "--budget", "0"], "--budget"),
        (["simulate", "transfer-gap", "--out", tmp_path / "s.csv", "--params", "1e400"],
         "--params"),
        (["loop", runs_csv, "--out", a_file], "not a directory"),
        (["train", runs_csv, "--out", tmp_path], "is a directory"),
        (["plot", post_file, "forest", "--out", tmp_path / "x.xyz"], ".png"),
    ]
    for args, words in cases:
        result = cli(*args)
        assert not isinstance(result.exception, WorkStarted), (args, "work started")
        assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
        assert result.exit_code in (1, 2), (args, result.output)
        assert words in " ".join(result.output.split()), (args, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "runs.csv"]


def test_4_a_write_failure_is_one_clear_error_and_the_old_file_stays(runs_csv, tmp_path,
                                                                     monkeypatch):
    import bayes_transfer.inference as inference

    post = known_posterior(simulated("transfer-gap"), spread=0.1, draws=20)
    monkeypatch.setattr(inference, "fit", lambda *a, **k: post)
    out = tmp_path / "post.nc"
    out.write_bytes(b"the old posterior")

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)  # the file's one write
    text = refused(cli("fit", runs_csv, "--out", out, "--force"), "No space left")
    assert "Traceback" not in text
    assert out.read_bytes() == b"the old posterior"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_4_a_full_disk_under_save_is_one_oserror_not_a_segfault(post_file, tmp_path):
    # A real failing disk (RLIMIT_FSIZE) under HDF5: it used to print HDF5 tracebacks,
    # raise, then segfault while closing the half-written file (found by the probe,
    # benchmarks/hostile_probe.py).
    import subprocess
    import sys

    out = tmp_path / "post.nc"
    out.write_bytes(b"the old posterior")
    script = (
        "import resource, sys\n"
        "from bayes_transfer.inference import Posterior\n"
        f"post = Posterior.load({str(post_file)!r})\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (16000, 16000))\n"
        "try:\n"
        f"    post.save({str(out)!r})\n"
        "except OSError as exc:\n"
        "    print('OSError', exc.errno, exc.filename)\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.split() == ["OSError", "27", str(out)], res.stdout
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    assert out.read_bytes() == b"the old posterior"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.nc"]


def test_4_an_empty_out_name_and_absurd_sampler_sizes_are_refused_first(tmp_path, runs_csv,
                                                                       no_work):
    # Found by the probe: `simulate --out ''` and `train --out ''` raised ValueError from
    # deriving OUT.truth.json / OUT.work; `fit --chains 2**70` passed every check.
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    refused(cli("simulate", "transfer-gap", "--out", ""), "give a file name")
    refused(cli("train", grid, "--out", ""), "give a file name")
    for flag in ("--chains", "--draws", "--warmup"):
        refused(cli("fit", runs_csv, "--out", tmp_path / "p.nc", flag, str(2**70)),
                flag[2:], "between")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml", "runs.csv"]


# ---- 6. user text is never read as rich markup ------------------------------------------------


def test_6_names_and_cells_with_markup_print_as_they_are(tmp_path, post_file):
    df = simulated("transfer-gap").runs.df.copy()
    df["source"] = df["source"].astype(str).replace({"web": "[/]", "code": "[bold]x"})
    good = tmp_path / "runs.csv"
    df.to_csv(good, index=False)
    result = cli("validate", good)
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output and "[bold]x" in result.output
    df["loss"] = df["loss"].astype(object)
    df.loc[3, "loss"] = "[red]oops"
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    result = cli("validate", bad)
    assert result.exit_code == 1 and "[red]oops" in result.output, result.output
    cands = tmp_path / "cands.toml"
    cands.write_text("candidates = 3\n")
    result = cli("suggest", post_file, "--candidates", cands)
    assert result.exit_code == 1 and "[candidates]" in result.output, result.output


def test_6_a_posterior_with_markup_in_its_names_reports(tmp_path):
    from _posteriors import TRUTH

    from bayes_transfer import simulate

    design = simulate.design_grid(["[/]", "[red]"], ["[bold]t"], params=[1e6],
                                  pretrain_tokens=[1e6, 1e8], finetune_tokens=[1e4, 1e6])
    truth = {k: v for k, v in TRUTH.items() if k[0] not in "Kg"}
    sim = simulate.simulate("transfer-gap", design, seed=0, truth=truth)
    path = known_posterior(sim, spread=0.1, draws=20).save(tmp_path / "post.nc")
    result = cli("report", path)
    assert result.exit_code == 0, result.output
    assert "[/]" in result.output and "[red]" in result.output


# ---- 7. types and ranges are checked in specs, grids and candidates --------------------------


@pytest.mark.parametrize("entry, words", [
    ({"likelihood": {"nu": "x"}}, "likelihood.nu must be a number"),
    ({"likelihood": {"sigma": "0.05"}}, "likelihood.sigma must be a number"),
    ({"likelihood": {"nu": [4]}}, "likelihood.nu must be a number"),
    ({"likelihood": {"use_loss_se": "false"}}, "use_loss_se must be true or false"),
    ({"likelihood": {"family": 1}}, "likelihood.family"),
    ({"likelihood": {"nu": float("nan")}}, "likelihood.nu"),
    ({"params": {"G": {"scale": float("inf")}}}, "params.G.scale"),
    ({"params": {"G": {"scale": 1e308}}}, "params.G.scale"),
    ({"params": {"G": {"group_scale": 10**400}}}, "params.G.group_scale"),
    ({"params": {"G": {"loc": float("nan")}}}, "params.G.loc"),
])
def test_7_spec_values_of_the_wrong_type_or_range_are_named(entry, words):
    from bayes_transfer.spec import ModelSpec, SpecError

    with pytest.raises(SpecError, match=words):
        ModelSpec.from_dict({"law": "transfer-gap", **entry})


def test_7_deep_nesting_in_a_spec_toml_is_a_spec_error(tmp_path):
    from bayes_transfer.spec import SpecError, load_spec

    path = tmp_path / "deep.toml"
    path.write_text("law = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(SpecError, match="nested too deeply"):
        load_spec(path)


@pytest.mark.parametrize("change, words", [
    ("[train]\n", None),  # the valid grid, as a control
    ("train = 5\n", "[train] must be a table"),
    ("[train]\nbatch_size = 0\n", "train.batch_size"),
    ("[train]\ncontext = 0\n", "train.context"),
    ("[train]\nlr = nan\n", "train.lr"),
    ("[train]\nlr = inf\n", "train.lr"),
    ("[train]\nfinetune_lr = -1.0\n", "train.finetune_lr"),
    ("[train]\neval_tokens = 0\n", "train.eval_tokens"),
    ("[train]\nwarmup_fraction = 2.0\n", "train.warmup_fraction"),
    ("deep = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
])
def test_7_grid_values_of_the_wrong_type_or_range_are_named(tmp_path, change, words):
    from bayes_transfer.trainer import GridError, load_grid

    base = GRID.split("[train]")[0]
    path = tmp_path / "grid.toml"
    path.write_text(change + base if not change.startswith("[train]") else base + change)
    if words is None:
        load_grid(path)
        return
    with pytest.raises(GridError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load_grid(path)


@pytest.mark.parametrize("axis, words", [
    ("{ min = true, max = 10, num = 2 }", "min"),
    ("{ min = 1, max = 10, num = 1.5 }", "num must be an integer"),
    ("{ min = 1, max = inf, num = 3 }", "below 1e16"),
    ("[" * 3000 + "]" * 3000, "nested too deeply"),
])
def test_7_candidate_values_of_the_wrong_type_are_named(tmp_path, axis, words):
    from bayes_transfer.design import CandidateSpecError, candidates_from_spec

    path = tmp_path / "cands.toml"
    path.write_text('[candidates]\nsources = ["a"]\ntargets = ["x"]\nparams = [1e6]\n'
                    f"finetune_tokens = [1e4]\npretrain_tokens = {axis}\n")
    with pytest.raises(CandidateSpecError, match=words):
        candidates_from_spec(path)


# ---- 8. NUL in names; predict reads rows as validate does ------------------------------------


def test_8_control_characters_in_names_are_refused_with_row_and_column(runs_csv, tmp_path):
    from bayes_transfer.data import RunTableError, load_runs

    df = pd.read_csv(runs_csv)
    df.loc[2, "source"] = "we\x00b"
    df.loc[4, "target"] = "ma\nth"
    path = tmp_path / "nul.csv"
    df.to_csv(path, index=False)
    with pytest.raises(RunTableError) as info:
        load_runs(path)
    text = str(info.value)
    assert "row 3, column source" in text and "row 5, column target" in text, text
    assert "control character" in text
    refused(cli("validate", path), "row 3, column source")


def test_8_predict_reads_names_as_validate_does_and_numbers_rows_from_1(tmp_path):
    from _posteriors import TRUTH

    from bayes_transfer import simulate

    design = simulate.design_grid(["NA", "null"], ["None"], params=[1e6],
                                  pretrain_tokens=[1e6, 1e8], finetune_tokens=[1e4, 1e6])
    truth = {k: v for k, v in TRUTH.items() if k[0] not in "Kg"}
    sim = simulate.simulate("transfer-gap", design, seed=0, truth=truth)
    post = known_posterior(sim, spread=0.1, draws=20).save(tmp_path / "post.nc")
    rows = tmp_path / "rows.csv"
    design.to_csv(rows, index=False)
    assert cli("validate", rows).exit_code == 1  # no loss column: only predict takes it
    result = cli("predict", post, "--runs", rows)
    assert result.exit_code == 0, result.output
    assert "NA,None" in result.output and "null,None" in result.output
    bad = design.copy()
    bad.loc[0, "params"] = -5
    bad.to_csv(rows, index=False)
    refused(cli("predict", post, "--runs", rows), "row 1, column params")


def test_8_bytes_lists_and_dicts_in_a_parquet_name_column_are_refused(runs_csv, tmp_path):
    # Found by the probe: bytes names in a Parquet file raised UnicodeDecodeError.
    from bayes_transfer.data import RunTableError, load_runs

    df = pd.read_csv(runs_csv)
    for value, kind in ((b"\xff\xfe", "bytes"), (b"web", "bytes"), ([1, 2], "ndarray")):
        path = tmp_path / "names.parquet"
        df.assign(source=[value] * len(df)).to_parquet(path)
        with pytest.raises(RunTableError, match=f"row 1, column source: a {kind} value"):
            load_runs(path)
        refused(cli("validate", path), "column source", "is not text")


# ---- 9. the loop checks everything before round 0 --------------------------------------------


@pytest.fixture
def loop_grid_file(tmp_path, monkeypatch):
    import bayes_transfer.inference as inference
    import bayes_transfer.loop as loop

    def started(*args, **kwargs):
        raise WorkStarted

    monkeypatch.setattr(loop, "trainer_runner", lambda *a, **k: started)
    monkeypatch.setattr(inference, "fit", started)
    path = tmp_path / "grid.toml"
    path.write_text(_grid([2048, 4096]))
    return path


@pytest.mark.parametrize("extra, words", [
    (["--spec", "no-such-spec"], "no-such-spec"),
    (["--spec", "chinchilla"], "has none"),
    (["--executor", "bogus"], "bogus"),
    (["--budget", "-1"], "--budget"),
    (["--budget", "nan"], "--budget"),
    (["--target-width", "0"], "--target-width"),
])
def test_9_loop_refuses_bad_options_before_round_0(loop_grid_file, tmp_path, extra, words):
    out = tmp_path / "loop"
    result = cli("loop", loop_grid_file, "--out", out, *extra)
    assert not isinstance(result.exception, WorkStarted), "round 0 started"
    refused(result, words)
    assert not list(out.rglob("*.json")), "a plan was written"


def test_9_loop_refuses_absurd_sampler_sizes_and_an_empty_design_writing_nothing(
        loop_grid_file, tmp_path):
    # Found by the probe: `--chains 2**70` was refused only after the state directory was
    # made; a grid with no initial runs (pretrain_tokens = [0]) gave a TypeError.
    out = tmp_path / "loop"
    refused(cli("loop", loop_grid_file, "--out", out, "--chains", str(2**70)), "chains")
    assert not out.exists()
    empty = tmp_path / "empty.toml"
    empty.write_text(_grid([0]))
    refused(cli("loop", empty, "--out", out), "no initial runs")
    assert not out.exists()


# ---- 10. candidate ranges cannot blow up memory -----------------------------------------------


def test_10_a_huge_candidate_grid_is_refused_with_its_count_and_the_limit(tmp_path):
    import time

    from bayes_transfer.design import CandidateSpecError, candidates_from_spec

    path = tmp_path / "cands.toml"
    path.write_text('[candidates]\nsources = ["a", "b", "c"]\ntargets = ["x"]\n'
                    "params = { min = 1e5, max = 1e8, num = 100 }\n"
                    "pretrain_tokens = { min = 1e6, max = 1e9, num = 100 }\n"
                    "finetune_tokens = { min = 1e4, max = 1e7, num = 30 }\n")
    start = time.perf_counter()
    with pytest.raises(CandidateSpecError, match=r"900,000 candidates; at most 100,000"):
        candidates_from_spec(path)
    assert time.perf_counter() - start < 2.0


def test_10_a_huge_range_is_refused_before_it_is_built(tmp_path):
    # The probe's three ranges: ~108M candidates, 4.3 GB before a MemoryError.
    from bayes_transfer.design import CandidateSpecError, candidates_from_spec

    path = tmp_path / "cands.toml"
    path.write_text('[candidates]\nsources = ["a"]\ntargets = ["x"]\n'
                    "params = { min = 1e5, max = 1e8, num = 1000000000 }\n"
                    "pretrain_tokens = { min = 1e6, max = 1e9, num = 480 }\n"
                    "finetune_tokens = { min = 1e4, max = 1e7, num = 480 }\n")
    with pytest.raises(CandidateSpecError, match="num must be an integer from 1 to 100,000"):
        candidates_from_spec(path)


# ---- 5. the serial trainer saves each run as it ends ------------------------------------------


def test_5_a_serial_grid_killed_midway_keeps_the_runs_that_finished(tmp_path, monkeypatch):
    from bayes_transfer.trainer import executors, load_grid, run_grid
    from bayes_transfer.trainer.training import JobResult

    done: list[str] = []

    def fake_job(job, init=None, trained=None):
        if len(done) == 1:
            raise KeyboardInterrupt  # the kill, during the second pre-training
        done.append(job.run_id)
        return JobResult(run_id=job.run_id, rows={ev.row_id: {**ev.row, "loss": 2.0,
                                                              "loss_se": 0.01}
                                                  for ev in job.evaluations},
                         checkpoint=b"weights" if job.save_checkpoint else None,
                         tokens_trained=job.tokens)

    monkeypatch.setattr(executors, "run_job", fake_job)
    grid = tmp_path / "grid.toml"
    grid.write_text(_grid([2048, 4096]))
    with pytest.raises(KeyboardInterrupt):
        run_grid(load_grid(grid), tmp_path / "runs.csv", executor="serial", progress=False)
    saved = list((tmp_path / "runs.work" / "rows").glob("*.json"))
    assert len(done) == 1 and len(saved) == 2, (done, saved)  # its scratch and zero-shot rows
    assert len(list((tmp_path / "runs.work" / "checkpoints").glob("*.pt"))) == 1


# ---- 11. smaller ------------------------------------------------------------------------------


def test_11_a_damaged_checkpoint_is_named_and_retrain_damaged_recovers(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    out = tmp_path / "runs.csv"
    args = ["train", grid, "--out", out, "--executor", "serial", "--no-progress"]
    assert cli(*args).exit_code == 0
    rows = pd.read_csv(out)
    (ckpt,) = (tmp_path / "runs.work" / "checkpoints").glob("*.pt")
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # damaged
    finetune_row = rows.loc[rows["kind"] == "finetune", "row_id"].iloc[0]
    (tmp_path / "runs.work" / "rows" / f"{finetune_row}.json").unlink()  # to be redone
    refused(cli(*args), ckpt.name, "--retrain-damaged")
    refused(cli(*args), ckpt.name)  # still refused: never wedged into a traceback
    result = cli(*args, "--retrain-damaged")
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == len(rows)


def test_11_a_loss_se_larger_than_the_loss_is_refused(runs_csv, tmp_path):
    from bayes_transfer.data import RunTableError, load_runs

    df = pd.read_csv(runs_csv)
    df.loc[1, "loss_se"] = 1e300
    with pytest.raises(RunTableError, match="row 2, column loss_se: 1e[+]?300 is larger than"):
        load_runs(df.set_axis(range(1, len(df) + 1)))


def test_11_report_json_is_strict_json(tmp_path):
    post = known_posterior(simulated("transfer-gap"), spread=0.1, draws=20)
    post.idata = post.idata.isel(chain=[0])  # R-hat: NaN (every group of draws)
    path = post.save(tmp_path / "post.nc")

    def no_constants(text):
        raise AssertionError(f"invalid JSON constant {text}")

    result = cli("report", path, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout, parse_constant=no_constants)
    assert data["rows"][0]["r_hat"] is None


@pytest.mark.parametrize("change, words", [
    ({"params": {"G": "x"}}, "must map groups to values"),
    ({"params": {"G": {"web/math": "x"}}}, "must be a positive number"),
    ({"params": {"G": {"web/math": -1.0}}}, "must be a positive number"),
    ({"units": {"x": 1}}, "units must be params and tokens"),
    ({"units": {"params": -1, "tokens": 1}}, "units.params must be a positive number"),
    (None, "not a truth file"),  # nested too deeply for json
])
def test_11_a_malformed_truth_file_is_one_clean_error(post_file, tmp_path, change, words):
    # Found by the probe: `simulate --check` raised AttributeError on a value that was not
    # a table of groups, TypeError on unknown units keys, RecursionError on deep JSON.
    truth = tmp_path / "truth.json"
    if change is None:
        truth.write_text("[" * 100_000 + "]" * 100_000)
    else:
        good = simulated("transfer-gap").truth_dict(seed=1, drawn="typical")
        truth.write_text(json.dumps({**good, **change}))
    refused(cli("simulate", "--check", post_file, "--truth", truth), words)


def test_11_corpora_stay_inside_what_the_user_named(tmp_path):
    from bayes_transfer.trainer.corpora import check_corpus_name, load_corpus

    outside = tmp_path / "outside.txt"
    outside.write_text("SECRET " * 100)
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.txt").write_text("hello world " * 200)
    (root / "link.txt").symlink_to(outside)
    (root / "sub").symlink_to(tmp_path, target_is_directory=True)
    corpus = load_corpus(f"dir:{root}")
    assert b"SECRET" not in corpus.train + corpus.heldout
    with pytest.raises(ValueError, match="regular, non-empty file"):
        check_corpus_name("file:/proc/self/environ")
    with pytest.raises(ValueError, match="regular, non-empty file"):
        check_corpus_name(f"file:{root}")


def test_11_a_directory_where_a_file_is_expected_is_one_clean_error(tmp_path, post_file):
    d = tmp_path / "adir.csv"
    d.mkdir()
    for args in (["validate", d], ["report", d], ["train", d, "--out", tmp_path / "r.csv"],
                 ["suggest", post_file, "--candidates", d],
                 ["predict", post_file, "--runs", d],
                 ["simulate", "transfer-gap", "--design", d, "--out", tmp_path / "s.csv"],
                 ["plot", d, "forest", "--out", tmp_path / "f.png"],
                 ["advise", d, "--target", "x", "--budget", "1e15"],
                 ["fit", d, "--out", tmp_path / "p.nc"]):
        result = cli(*args)
        assert isinstance(result.exception, SystemExit), (args, repr(result.exception))
        assert result.exit_code == 1, (args, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.csv"]
