"""CLI fuzz (issue 14): every command, hostile arguments and small hostile files.

For every command, hypothesis draws arguments from pools of bad values (0, -1, NaN, inf,
1e400, 2**70, text, markup, NUL) and paths (missing, a directory, an existing output,
the command's own input, hostile run tables, specs, grids, candidates and posteriors).
Each invocation must end in one of three ways:

* exit status 1 or 2 with a message whose first line names the problem, no traceback,
  and no file written or changed;
* exit status 0 (the input was valid: ``validate``, ``report``, ...);
* the sampler, trainer or loop reached (they are patched to raise ``WorkStarted``): the
  input passed every check. No NUTS runs and nothing trains.
"""

from __future__ import annotations

import collections
import os
import re
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from _posteriors import known_posterior, simulated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bayes_transfer.cli import app

runner = CliRunner()
COUNTS: collections.Counter[str] = collections.Counter()


class WorkStarted(Exception):
    pass


NUMBERS = ["0", "-1", "1.5", "nan", "inf", "-inf", "1e400", "x", "", "0.9", "1e15",
           str(2**70)]
INTS = ["0", "-1", "1", "4", str(2**70), "x", "1e3", "-99999999999999999999"]
NAMES = ["[/]", "[red]x", "a\x00b", "NA", "", "x" * 300, "web", "[candidates]"]

RUN_TABLES = {
    "markup.csv": "run_id,source,target,params,pretrain_tokens,finetune_tokens,loss\n"
                  "r1,[/],[red],1e6,1e8,1e4,2.5\nr2,[/],[red],1e6,1e8,1e5,[bold]\n",
    "nul.csv": "run_id,source,target,params,pretrain_tokens,finetune_tokens,loss\n"
               "r1,we\x00b,math,1e6,1e8,1e4,2.5\n",
    "huge-se.csv": "run_id,source,target,params,pretrain_tokens,finetune_tokens,loss,loss_se\n"
                   "r1,web,math,1e6,1e8,1e4,2.5,1e300\n",
    "empty.csv": "",
    "header.csv": "run_id,source,target,params,pretrain_tokens,finetune_tokens,loss\n",
    "inf.csv": "run_id,source,target,params,pretrain_tokens,finetune_tokens,loss\n"
               "r1,web,math,inf,1e400,-1,nan\n",
    "binary.csv": "\x00\xff\xfe garbage \x89PNG",
    "runs.parquet": "PAR1 not really",
    "wide.tsv": "a\tb\n" + "1\t2\n" * 10,
}
SPECS = {
    "nu.toml": 'law = "transfer-gap"\n[likelihood]\nnu = "x"\n',
    "scale.toml": 'law = "transfer-gap"\n[params.G]\nscale = inf\n',
    "bool.toml": 'law = "transfer-gap"\n[likelihood]\nuse_loss_se = "false"\n',
    "law.toml": 'law = "[/]"\n',
    "list.toml": 'law = "transfer-gap"\n[likelihood]\nnu = [4]\n',
    "bad.toml": "law = \n",
}
GRIDS = {
    "grid-train.toml": 'sources=["synth-a"]\ntargets=["synth-b"]\nshapes=["xs"]\n'
                       "pretrain_tokens=[2048]\nfinetune_tokens=[1024]\ntrain = 5\n",
    "grid-batch.toml": 'sources=["synth-a"]\ntargets=["synth-b"]\nshapes=["xs"]\n'
                       "pretrain_tokens=[2048]\nfinetune_tokens=[1024]\n[train]\nbatch_size=0\n",
    "grid-lr.toml": 'sources=["synth-a"]\ntargets=["synth-b"]\nshapes=["xs"]\n'
                    "pretrain_tokens=[2048]\nfinetune_tokens=[1024]\n[train]\nlr=nan\n",
    "grid-proc.toml": 'sources=["file:/proc/self/environ"]\ntargets=["synth-b"]\n'
                      'shapes=["xs"]\npretrain_tokens=[2048]\nfinetune_tokens=[1024]\n',
    "grid-ok.toml": 'sources=["synth-a"]\ntargets=["synth-b"]\nshapes=["xs"]\n'
                    "pretrain_tokens=[2048]\nfinetune_tokens=[1024]\n",
    "grid-deep.toml": "x = " + "[" * 3000 + "]" * 3000 + "\n",
}
CANDIDATES = {
    "cands-huge.toml": '[candidates]\nsources=["web"]\ntargets=["math"]\n'
                       "params={min=1e5,max=1e8,num=1000}\n"
                       "pretrain_tokens={min=1e6,max=1e9,num=1000}\n"
                       "finetune_tokens={min=1e4,max=1e7,num=1000}\n",
    "cands-num.toml": '[candidates]\nparams=[1e6]\npretrain_tokens={min=1,max=2,num=1e12}\n'
                      "finetune_tokens=[1e4]\n",
    "cands-table.toml": "candidates = 3\n",
    "cands-ok.toml": '[candidates]\nparams=[1e6]\npretrain_tokens=[1e7]\n'
                     "finetune_tokens=[1e5]\n",
}


@pytest.fixture(scope="module")
def good_posterior(tmp_path_factory) -> bytes:
    post = known_posterior(simulated("transfer-gap"), spread=0.1, draws=20)
    return post.save(tmp_path_factory.mktemp("fuzz") / "post.nc").read_bytes()


def _hostile_posteriors(good: bytes, root: Path) -> list[str]:
    names = []
    (root / "post-random.nc").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "post-cut.nc").write_bytes(good[: len(good) // 2])
    names += ["post-random.nc", "post-cut.nc"]
    for name, mutate in {
        "post-version.nc": lambda f: f["posterior"].attrs.__setitem__(
            "bayes_transfer_format", np.array([1, 2])),
        "post-external.nc": lambda f: f["constant_data"].create_dataset(
            "run_secret", shape=(4,), dtype="S1", external=[("/etc/hostname", 0, 4)]),
        "post-group.nc": lambda f: f.create_group("evil"),
        "post-bomb.nc": lambda f: f["posterior"].create_dataset(
            "bomb", shape=(2, 20, 10**6), dtype="f8", chunks=(1, 20, 10**4),
            compression="gzip"),
    }.items():
        (root / name).write_bytes(good)
        with h5py.File(root / name, "a") as f:
            mutate(f)
        names.append(name)
    return names


def _workspace(root: Path, good: bytes) -> dict[str, list[str]]:
    for group in (RUN_TABLES, SPECS, GRIDS, CANDIDATES):
        for name, text in group.items():
            (root / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    simulated("transfer-gap").runs.df.to_csv(root / "runs-ok.csv", index=False)
    (root / "post-ok.nc").write_bytes(good)
    (root / "adir").mkdir()
    for name in ("exists.csv", "exists.nc", "exists.png"):
        (root / name).write_text("keep")
    common = ["missing.csv", "adir", "exists.csv", "/proc/self/environ", "/dev/null"]
    return {
        "runs": [*RUN_TABLES, "runs-ok.csv", *common],
        "post": [*_hostile_posteriors(good, root), "post-ok.nc", *common],
        "spec": [*SPECS, "transfer-gap", "no-such-spec", "chinchilla", *common],
        "grid": [*GRIDS, *common],
        "cands": [*CANDIDATES, *common],
        "out": ["new.csv", "new.nc", "new.png", "exists.csv", "exists.nc", "adir",
                "runs-ok.csv", "post-ok.nc", "exists.csv/x.nc", "x.xyz", "/dev/null"],
        "dir": ["newdir", "adir", "exists.csv", "runs-ok.csv"],
    }


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def _args(data, pools: dict[str, list[str]]) -> list[str]:
    def one(pool: str) -> str:
        return data.draw(st.sampled_from(pools[pool]) if pool in pools else
                         st.sampled_from({"num": NUMBERS, "int": INTS, "name": NAMES}[pool]))

    def options(spec: dict[str, str]) -> list[str]:
        out: list[str] = []
        for flag, pool in spec.items():
            if data.draw(st.booleans()):
                out += [flag, one(pool)]
        return out

    command = data.draw(st.sampled_from(COMMANDS))
    if command == "validate":
        return [command, one("runs")]
    if command == "fit":
        return [command, one("runs"), "--out", one("out"),
                *options({"--spec": "spec", "--ci": "num", "--seed": "int", "--chains": "int"})]
    if command == "report":
        return [command, one("post"), *options({"--ci": "num", "--format": "name"})]
    if command == "predict":
        return [command, one("post"), "--runs", one("runs"),
                *options({"--out": "out", "--ci": "num", "--seed": "int"})]
    if command == "simulate":
        return [command, one("spec"), "--out", one("out"),
                *options({"--params": "num", "--seed": "int", "--design": "runs",
                          "--loss-se": "num", "--sources": "name"})]
    if command == "suggest":
        return [command, one("post"), "--candidates", one("cands"),
                *options({"--batch": "int", "--budget": "num", "--pair": "name"})]
    if command == "loop":
        return [command, one("grid"), "--out", one("dir"),
                *options({"--budget": "num", "--spec": "spec", "--executor": "name",
                          "--rounds": "int", "--target-width": "num", "--seed": "int"})]
    if command == "train":
        return [command, one("grid"), "--out", one("out"),
                *options({"--executor": "name", "--workers": "int"})]
    if command == "plot":
        kind = data.draw(st.sampled_from(["forest", "heatmap", "losses", "bogus"]))
        return [command, one("post"), kind, "--out", one("out"), *options({"--ci": "num"})]
    if command == "ppc":
        kind = data.draw(st.sampled_from(["ppc", "loo-pit", "bogus"]))
        return [command, one("post"), "--kind", kind,
                *options({"--out": "out", "--ci": "num", "--seed": "int",
                          "--format": "name"})]
    if command == "advise":
        return [command, one("post"), "--target", one("name"), "--budget", one("num"),
                *options({"--ci": "num", "--top": "int"})]
    if command == "demo":
        return [command, "--out", one("dir"),
                *options({"--batch": "int", "--runs": "runs", "--seed": "int",
                          "--spec": "spec"})]
    if command == "backtest":
        split = data.draw(st.sampled_from(["params", "pretrain_tokens", "bogus"]))
        return [command, one("runs"), "--spec", one("spec"), "--split", split, "--at",
                one("num"), *options({"--predictions": "out", "--plot": "out",
                                      "--seed": "int", "--chains": "int"})]
    if command == "select":
        return [command, one("runs"),
                *options({"--spec": "spec", "--target": "name", "--at": "num",
                          "--budget": "num", "--ci": "num", "--out": "out", "--seed": "int"})]
    if command == "compare":
        return [command, one("post"), one("post"), *options({"--out": "out"})]
    fmt = data.draw(st.sampled_from(["rectified-scaling", "llm-line", "chinchilla-svg",
                                     "bogus"]))
    return ["convert", fmt, one("runs"), "--out", one("out")]


#: Every command of the CLI (``test_the_fuzz_drives_every_command`` keeps it whole).
COMMANDS = ["validate", "fit", "report", "predict", "simulate", "suggest", "loop", "train",
            "plot", "ppc", "advise", "demo", "convert", "backtest", "select", "compare"]


def test_the_fuzz_drives_every_command():
    import typer.main

    assert sorted(COMMANDS) == sorted(typer.main.get_command(app).commands)


_FIRST_LINE = re.compile(r"^\s*\S")  # a message first, not a blank line or a traceback


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_command_fails_cleanly_on_hostile_input(good_posterior, monkeypatch, data):
    import bayes_transfer.inference as inference
    import bayes_transfer.loop as loop
    import bayes_transfer.trainer as trainer

    def started(*args, **kwargs):
        raise WorkStarted

    monkeypatch.setattr(inference, "fit", started)
    monkeypatch.setattr(trainer, "run_grid", started)
    monkeypatch.setattr(loop, "run_loop", started)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pools = _workspace(root, good_posterior)
        before = _snapshot(root)
        args = _args(data, pools)
        cwd = os.getcwd()
        os.chdir(root)
        try:
            result = runner.invoke(app, args)
        finally:
            os.chdir(cwd)
        COUNTS["inputs tried"] += 1
        if isinstance(result.exception, WorkStarted):
            COUNTS["reached the work (valid input)"] += 1
            return
        assert isinstance(result.exception, SystemExit) or result.exception is None, (
            args, repr(result.exception), result.output)
        assert "Traceback" not in result.output, (args, result.output)
        if result.exit_code == 0:
            COUNTS["succeeded (valid input)"] += 1
            return
        assert result.exit_code in (1, 2), (args, result.exit_code, result.output)
        assert _FIRST_LINE.match(result.output), (args, result.output)
        assert _snapshot(root) == before, (args, "a file was written on error")
        COUNTS["clean errors"] += 1


def test_zz_fuzz_counts():
    """Print the fuzz counts (``pytest -s``); runs after the fuzz test in file order."""
    print(f"\nCLI fuzz: {dict(COUNTS)}")
    if COUNTS:
        assert COUNTS["clean errors"] > COUNTS["inputs tried"] // 2
