"""Hostile-input probe of every CLI command (issue 14's "Must show": zero raw tracebacks).

Drives every ``bayes-transfer`` command with hostile inputs, by category: malformed run
tables (CSV and Parquet), specs, candidate files, grid files, posteriors, output paths and
bad arguments, in-process with ``typer.testing.CliRunner``; a sample of the clean errors
again as real subprocesses of ``.venv/bin/bayes-transfer``; and, as subprocesses only,
kills (SIGKILL a small ``train`` midway, rerun: the rows of an uninterrupted run),
concurrent runs (two ``train``s on one ``--out``) and resource limits (a tiny
``RLIMIT_FSIZE``: a full disk under ``fit``, ``simulate``, ``predict --out``, ``plot``,
``train``).

Each invocation ends as one of:

* a clean error: exit status 1 or 2, no exception but ``SystemExit``, no "Traceback";
* accepted: exit status 0, or (in-process) the sampler, trainer or loop reached (they are
  patched to raise ``WorkStarted``: the input passed every check; no NUTS runs in-process);
* a raw traceback: any other exception, "Traceback" in the output, or a signal;
* and, either way, files wrongly written: anything written or changed on an error, or an
  existing file changed without ``--force``; cases marked as errors that exit 0 are
  counted as "should fail".

Posteriors are tiny, built from known draws (``tests/_posteriors.py``) and damaged with
the regression tests' own helpers (``tests/test_reliability2.py``, ``tests/test_cli_fuzz.py``).
Running as root, a read-only directory is writable; the in-process read-only cases then
deny writes through ``os.access`` (what the checks ask) as for another user.

    python benchmarks/hostile_probe.py [--quick] [--json OUT]

Exit status 1 when any raw traceback, wrongly written file or wrongly accepted case is
found (each is listed with its command line).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import random
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from _common import REPO, header, parser, verdict

sys.path.insert(0, str(REPO / "tests"))

CLI = REPO / ".venv" / "bin" / "bayes-transfer"
if not CLI.exists():
    CLI = Path(shutil.which("bayes-transfer") or CLI)

COLUMNS = ["run_id", "source", "target", "params", "pretrain_tokens", "finetune_tokens", "loss"]


class WorkStarted(Exception):
    """Raised by the patched sampler, trainer and loop: the input passed every check."""


@dataclasses.dataclass
class Case:
    category: str
    args: list[str]
    expect_error: bool = False  # exit 0 here is wrong (e.g. an existing file, no --force)
    readonly: bool = False  # deny writes in ro/ (root can write anywhere)
    subprocess_ok: bool = True  # may be re-run as a subprocess when it failed cleanly

    def line(self) -> str:
        return "bayes-transfer " + " ".join(shlex.quote(a) for a in self.args)


@dataclasses.dataclass
class Outcome:
    category: str
    command: str
    kind: str  # clean | accepted | traceback | should-fail
    written: bool = False
    detail: str = ""


# ---- the workspace ------------------------------------------------------------------------


def _good_runs():
    from _posteriors import simulated

    df = simulated("transfer-gap").runs.df
    return df.astype({"source": str, "target": str})


def run_tables(root: Path) -> list[str]:
    """Hostile run tables, CSV and Parquet, written under ``root``; their names."""
    import numpy as np
    import pandas as pd
    from test_cli_fuzz import RUN_TABLES

    good = _good_runs()
    names = []

    def csv(name: str, df: pd.DataFrame) -> None:
        df.to_csv(root / name, index=False)
        names.append(name)

    def parquet(name: str, df: pd.DataFrame) -> None:
        df.to_parquet(root / name, index=False)
        names.append(name)

    def raw(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        names.append(name)

    for name, text in RUN_TABLES.items():
        raw(f"fz-{name}", text.encode("utf-8", "surrogateescape"))
    variants: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
        "ok": lambda d: d,
        "loss-text": lambda d: d.assign(loss=d["loss"].astype(str).where(d.index != 2, "x")),
        "params-text": lambda d: d.assign(params="big"),
        "loss-nan": lambda d: d.assign(loss=d["loss"].where(d.index != 1, np.nan)),
        "loss-inf": lambda d: d.assign(loss=d["loss"].where(d.index != 1, np.inf)),
        "params-inf": lambda d: d.assign(params=np.inf),
        "tokens-neg": lambda d: d.assign(pretrain_tokens=-d["pretrain_tokens"]),
        "tokens-1e400": lambda d: d.assign(finetune_tokens=1e308 * 10),
        "no-loss": lambda d: d.drop(columns="loss"),
        "no-source": lambda d: d.drop(columns="source"),
        "only-loss": lambda d: d[["loss"]],
        "dup-run-id": lambda d: d.assign(run_id="same"),
        "dup-rows": lambda d: pd.concat([d, d]),
        "nul-name": lambda d: d.assign(source=d["source"].where(d.index != 0, "we\x00b")),
        "ctrl-name": lambda d: d.assign(target=d["target"].where(d.index != 0, "m\x1b[31mx")),
        "markup-names": lambda d: d.assign(
            source=d["source"].replace({"web": "[/]", "code": "[red]"}),
            target=d["target"].replace({"math": "[bold]"}),
        ),
        "na-names": lambda d: d.assign(source=d["source"].replace({"web": "NA", "code": "null"})),
        "empty-name": lambda d: d.assign(source=d["source"].where(d.index != 0, "")),
        "huge-se": lambda d: d.assign(loss_se=d["loss_se"].where(d.index != 1, 1e300)),
        "neg-se": lambda d: d.assign(loss_se=-1.0),
        "long-name": lambda d: d.assign(source="s" * 100_000),
        "no-rows": lambda d: d.iloc[:0],
        "one-row": lambda d: d.iloc[:1],
        "bool-loss": lambda d: d.assign(loss=True),
    }
    for name, change in variants.items():
        csv(f"rt-{name}.csv", change(good.copy()))
    for name in (
        "ok",
        "loss-text",
        "loss-nan",
        "no-loss",
        "nul-name",
        "markup-names",
        "na-names",
        "huge-se",
        "no-rows",
    ):
        parquet(f"rt-{name}.parquet", variants[name](good.copy()))
    parquet("rt-list-cells.parquet", good.assign(source=[[1, 2]] * len(good)))
    parquet("rt-int-names.parquet", good.assign(source=7))
    parquet("rt-bytes-names.parquet", good.assign(source=b"\xff\xfe"))
    parquet("rt-dict-cells.parquet", good.assign(loss=[{"a": 1.0}] * len(good)))
    text = (root / "rt-ok.csv").read_text()
    raw("rt-dup-columns.csv", text.replace("loss_se", "loss", 1).encode())
    raw("rt-bom.csv", b"\xef\xbb\xbf" + text.encode())
    raw("rt-utf16.csv", text.encode("utf-16"))
    raw("rt-random.csv", random.Random(0).randbytes(4096))
    raw("rt-random.parquet", b"PAR1" + random.Random(1).randbytes(4096) + b"PAR1")
    raw("rt-empty.parquet", b"")
    raw("rt-cut.parquet", (root / "rt-ok.parquet").read_bytes()[:300])
    raw("rt-quotes.csv", b'run_id,source\n"r1,"unterminated\n')
    raw("rt-wide.csv", (",".join(f"c{i}" for i in range(20_000)) + "\n").encode())
    raw("rt-table.xlsx", b"PK\x03\x04 not excel")
    (root / "rt-dir.csv").mkdir()
    names.append("rt-dir.csv")
    return names + ["missing.csv", "/dev/null", "/proc/self/environ"]


SPECS = {
    "sp-nu-text.toml": 'law = "transfer-gap"\n[likelihood]\nnu = "x"\n',
    "sp-sigma-text.toml": 'law = "transfer-gap"\n[likelihood]\nsigma = "0.05"\n',
    "sp-nu-list.toml": 'law = "transfer-gap"\n[likelihood]\nnu = [4]\n',
    "sp-bool-text.toml": 'law = "transfer-gap"\n[likelihood]\nuse_loss_se = "false"\n',
    "sp-scale-inf.toml": 'law = "transfer-gap"\n[params.G]\nscale = inf\n',
    "sp-scale-1e308.toml": 'law = "transfer-gap"\n[params.G]\nscale = 1e308\n',
    "sp-scale-neg.toml": 'law = "transfer-gap"\n[params.G]\nscale = -1.0\n',
    "sp-loc-nan.toml": 'law = "transfer-gap"\n[params.G]\nloc = nan\n',
    "sp-nu-neg.toml": 'law = "transfer-gap"\n[likelihood]\nnu = -3.0\n',
    "sp-law-markup.toml": 'law = "[/]"\n',
    "sp-law-int.toml": "law = 5\n",
    "sp-no-law.toml": "[likelihood]\nnu = 4.0\n",
    "sp-unknown-key.toml": 'law = "transfer-gap"\nbogus = 1\n',
    "sp-unknown-param.toml": 'law = "transfer-gap"\n[params.Q]\nscale = 1.0\n',
    "sp-unknown-section.toml": 'law = "transfer-gap"\n[nonsense.deep]\nx = 1\n',
    "sp-params-list.toml": 'law = "transfer-gap"\nparams = [1, 2]\n',
    "sp-level-bogus.toml": 'law = "transfer-gap"\n[params.G]\nlevel = "bogus"\n',
    "sp-deep.toml": "law = " + "[" * 3000 + "]" * 3000 + "\n",
    "sp-deep-tables.toml": "".join(f"[{'.'.join(['a'] * i)}]\n" for i in range(1, 200)),
    "sp-syntax.toml": "law = \n",
    "sp-binary.toml": "\x00\xff garbage",
    "sp-empty.toml": "",
    "sp-units.toml": 'law = "transfer-gap"\n[units]\nparams = -1\n',
}

CANDIDATES = {
    "ca-ok.toml": "[candidates]\nparams = [1e6]\npretrain_tokens = [1e7]\n"
    "finetune_tokens = [1e5]\n",
    "ca-huge.toml": '[candidates]\nsources = ["web"]\ntargets = ["math"]\n'
    "params = {min = 1e5, max = 1e8, num = 1000}\n"
    "pretrain_tokens = {min = 1e6, max = 1e9, num = 1000}\n"
    "finetune_tokens = {min = 1e4, max = 1e7, num = 1000}\n",
    "ca-num-huge.toml": "[candidates]\nparams = [1e6]\n"
    "pretrain_tokens = {min = 1, max = 2, num = 1e12}\n"
    "finetune_tokens = [1e4]\n",
    "ca-num-float.toml": "[candidates]\nparams = [1e6]\n"
    "pretrain_tokens = {min = 1, max = 2, num = 2.5}\n"
    "finetune_tokens = [1e4]\n",
    "ca-min-bool.toml": "[candidates]\nparams = [1e6]\n"
    "pretrain_tokens = {min = true, max = 2, num = 2}\n"
    "finetune_tokens = [1e4]\n",
    "ca-max-inf.toml": "[candidates]\nparams = [1e6]\n"
    "pretrain_tokens = {min = 1, max = inf, num = 3}\n"
    "finetune_tokens = [1e4]\n",
    "ca-reversed.toml": "[candidates]\nparams = [1e6]\n"
    "pretrain_tokens = {min = 1e9, max = 1e6, num = 3}\n"
    "finetune_tokens = [1e4]\n",
    "ca-table-int.toml": "candidates = 3\n",
    "ca-sources-int.toml": "[candidates]\nsources = 5\nparams = [1e6]\n"
    "pretrain_tokens = [1e7]\nfinetune_tokens = [1e5]\n",
    "ca-params-text.toml": '[candidates]\nparams = "x"\npretrain_tokens = [1e7]\n'
    "finetune_tokens = [1e5]\n",
    "ca-params-neg.toml": "[candidates]\nparams = [-1.0]\npretrain_tokens = [1e7]\n"
    "finetune_tokens = [1e5]\n",
    "ca-params-nan.toml": "[candidates]\nparams = [nan]\npretrain_tokens = [1e7]\n"
    "finetune_tokens = [1e5]\n",
    "ca-unknown-source.toml": '[candidates]\nsources = ["nowhere"]\nparams = [1e6]\n'
    "pretrain_tokens = [1e7]\nfinetune_tokens = [1e5]\n",
    "ca-markup-source.toml": '[candidates]\nsources = ["[/]"]\nparams = [1e6]\n'
    "pretrain_tokens = [1e7]\nfinetune_tokens = [1e5]\n",
    "ca-empty-lists.toml": "[candidates]\nparams = []\npretrain_tokens = []\n"
    "finetune_tokens = []\n",
    "ca-deep.toml": "[candidates]\nparams = " + "[" * 3000 + "]" * 3000 + "\n",
    "ca-empty.toml": "",
    "ca-syntax.toml": "[candidates\n",
}

GRID_BASE = (
    'sources = ["synth-a"]\ntargets = ["synth-b"]\nshapes = ["tiny"]\n'
    "pretrain_tokens = [2048]\nfinetune_tokens = [1024]\n"
    "[custom_shapes.tiny]\nn_layer = 1\nn_head = 2\nd_model = 16\n"
)
GRID_TRAIN = "[train]\nbatch_size = 8\ncontext = 32\neval_tokens = 1024\n"
GRIDS = {
    "gr-ok.toml": GRID_BASE + GRID_TRAIN,
    "gr-train-int.toml": "train = 5\n" + GRID_BASE,
    "gr-batch-0.toml": GRID_BASE + "[train]\nbatch_size = 0\n",
    "gr-context-0.toml": GRID_BASE + "[train]\ncontext = 0\n",
    "gr-lr-nan.toml": GRID_BASE + "[train]\nlr = nan\n",
    "gr-lr-inf.toml": GRID_BASE + "[train]\nlr = inf\n",
    "gr-lr-text.toml": GRID_BASE + '[train]\nlr = "fast"\n',
    "gr-eval-0.toml": GRID_BASE + "[train]\neval_tokens = 0\n",
    "gr-warmup-2.toml": GRID_BASE + "[train]\nwarmup_fraction = 2.0\n",
    "gr-train-unknown.toml": GRID_BASE + "[train]\nbogus = 1\n",
    "gr-shape-unknown.toml": GRID_BASE.replace('["tiny"]', '["bogus"]'),
    "gr-shape-heads.toml": GRID_BASE.replace("n_head = 2", "n_head = 0"),
    "gr-shape-odd.toml": GRID_BASE.replace("d_model = 16", "d_model = 15"),
    "gr-shape-huge.toml": GRID_BASE.replace("n_layer = 1", "n_layer = 100000"),
    "gr-shape-text.toml": GRID_BASE.replace("n_layer = 1", 'n_layer = "one"'),
    "gr-no-sources.toml": GRID_BASE.replace('sources = ["synth-a"]', "sources = []"),
    "gr-sources-int.toml": GRID_BASE.replace('sources = ["synth-a"]', "sources = 3"),
    "gr-tokens-0.toml": GRID_BASE.replace("pretrain_tokens = [2048]", "pretrain_tokens = [0]"),
    "gr-tokens-neg.toml": GRID_BASE.replace("finetune_tokens = [1024]", "finetune_tokens = [-5]"),
    "gr-tokens-text.toml": GRID_BASE.replace("finetune_tokens = [1024]", 'finetune_tokens = ["x"]'),
    "gr-tokens-huge.toml": GRID_BASE.replace(
        "pretrain_tokens = [2048]", "pretrain_tokens = [1e300]"
    ),
    "gr-seeds-neg.toml": GRID_BASE + "seeds = [-1]\n",
    "gr-corpus-proc.toml": GRID_BASE.replace('["synth-a"]', '["file:/proc/self/environ"]'),
    "gr-corpus-etc.toml": GRID_BASE.replace('["synth-a"]', '["dir:/etc"]'),
    "gr-corpus-markup.toml": GRID_BASE.replace('["synth-a"]', '["[/]"]'),
    "gr-unknown-key.toml": "bogus = 1\n" + GRID_BASE,
    "gr-deep.toml": "x = " + "[" * 3000 + "]" * 3000 + "\n",
    "gr-syntax.toml": "sources = [\n",
    "gr-empty.toml": "",
}


def posteriors(root: Path, good: Path, quick: bool = False) -> list[str]:
    """Hostile posterior files under ``root`` (from the valid ``good``); their names.

    ``quick``: three of the regression tests' structures and two flipped files."""
    import h5py
    import numpy as np
    from test_cli_fuzz import _hostile_posteriors
    from test_reliability2 import STRUCTURE, _rewrite, link_cases

    names = _hostile_posteriors(good.read_bytes(), root)
    structures = list(STRUCTURE.values())[: 3 if quick else None]
    for i, (mutate, _) in enumerate(structures):
        path = _rewrite(good, root, mutate).rename(root / f"po-structure-{i}.nc")
        names.append(path.name)
    secret = root / "secret.txt"
    secret.write_bytes(b"S3CRET" * 100)
    for i, mutate in enumerate(link_cases(root / "other.h5").values()):
        path = root / f"po-link-{i}.nc"
        shutil.copyfile(good, path)
        with h5py.File(path, "a") as f:
            mutate(f)
        names.append(path.name)
    # External storage in place of a real variable: with the guard gone, it loads.
    values = root / "sigma.bin"
    values.write_bytes(np.full(2 * 20, 0.02).tobytes())
    path = root / "po-external-sigma.nc"
    shutil.copyfile(good, path)
    with h5py.File(path, "a") as f:
        shape = f["posterior/sigma"].shape
        del f["posterior/sigma"]
        ds = f["posterior"].create_dataset(
            "sigma", shape=shape, dtype="f8", external=[(str(values), 0, values.stat().st_size)]
        )
        ds.dims[0].attach_scale(f["posterior/chain"])
        ds.dims[1].attach_scale(f["posterior/draw"])
    names.append(path.name)
    data = good.read_bytes()
    for cut in (0, 8, 512, len(data) // 3, len(data) - 1):
        (root / f"po-cut-{cut}.nc").write_bytes(data[:cut])
        names.append(f"po-cut-{cut}.nc")
    rng = random.Random(2)
    for i in range(2 if quick else 8):  # bytes flipped at random places (headers, b-trees, chunks)
        flipped = bytearray(data)
        for _ in range(4 if i < 4 else 64):
            at = rng.randrange(len(flipped))
            flipped[at] ^= 0xFF
        (root / f"po-flip-{i}.nc").write_bytes(bytes(flipped))
        names.append(f"po-flip-{i}.nc")
    (root / "po-dir.nc").mkdir()
    shutil.copyfile(root / "rt-ok.csv", root / "po-csv.nc")
    return names + ["po-dir.nc", "po-csv.nc", "missing.nc", "/dev/null"]


def build_workspace(root: Path, quick: bool = False) -> dict[str, list[str]]:
    from _posteriors import saved_posterior, simulated

    good = saved_posterior(root / "post-ok.nc", draws=20)
    pools = {"runs": run_tables(root)}
    for group in (SPECS, CANDIDATES, GRIDS):
        for name, text in group.items():
            (root / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    pools["post"] = posteriors(root, good, quick)
    truth = simulated("transfer-gap").truth_dict(seed=1, drawn="typical")
    (root / "truth.json").write_text(json.dumps(truth))
    (root / "truth-list.json").write_text("[1, 2]")
    (root / "truth-bad.json").write_text(json.dumps({**truth, "params": {"G": "x"}}))
    (root / "truth-units.json").write_text(json.dumps({**truth, "units": {"x": 1}}))
    (root / "truth-units-neg.json").write_text(
        json.dumps({**truth, "units": {"params": -1, "tokens": "x"}})
    )
    (root / "truth-deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "adir").mkdir()
    (root / "ro").mkdir()
    for name in ("exists.csv", "exists.nc", "exists.png", "a-file"):
        (root / name).write_text("keep")
    return pools


# ---- running one case in-process ----------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def restore(root: Path, pristine: Path, before: dict, after: dict) -> None:
    """Undo what a case wrote: new paths removed, changed files copied back."""
    for name in sorted(set(after) - set(before), key=len, reverse=True):
        p = root / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    for name in before:
        if after.get(name) != before[name] and not before[name][0]:
            shutil.copy2(pristine / name, root / name)
        elif after.get(name) is None and before[name][0]:
            shutil.copytree(pristine / name, root / name)


@contextlib.contextmanager
def patched_work() -> Iterator[None]:
    """No NUTS and no training: each raises WorkStarted once its inputs are read;
    ``fit`` then returns the valid posterior instead (so its save path runs)."""
    import bayes_transfer.inference as inference
    import bayes_transfer.loop as loop
    import bayes_transfer.trainer as trainer
    from bayes_transfer.inference import Posterior

    class Sampler:
        name, uses_init = "probe", False

        def sample(self, *args, **kwargs):
            raise WorkStarted

    real_fit, real_backend = inference.fit, inference.get_backend
    saved = (trainer.run_grid, loop.trainer_runner)

    def fit(*args, **kwargs):
        try:
            return real_fit(*args, **kwargs)
        except WorkStarted:
            if STATE.get("fit_returns"):
                return Posterior.load(STATE["good"])
            raise

    def started(*args, **kwargs):
        raise WorkStarted

    inference.fit, inference.get_backend = fit, lambda name: Sampler()
    # The loop runs its own checks, then its round 0 would train: it starts the work.
    trainer.run_grid, loop.trainer_runner = started, lambda *args, **kwargs: started
    try:
        yield
    finally:
        inference.fit, inference.get_backend = real_fit, real_backend
        trainer.run_grid, loop.trainer_runner = saved


STATE: dict = {}


@contextlib.contextmanager
def denied_writes(root: Path, enabled: bool) -> Iterator[None]:
    """As another user: ``os.access(ro/..., W_OK)`` is False (root may write anywhere)."""
    if not enabled or os.geteuid() != 0:
        yield
        return
    real = os.access
    ro = (root / "ro").resolve()

    def access(path, mode, *args, **kwargs):
        p = Path(path).resolve() if not isinstance(path, int) else None
        if p is not None and mode & os.W_OK and (p == ro or ro in p.parents):
            return False
        return real(path, mode, *args, **kwargs)

    os.access = access
    try:
        yield
    finally:
        os.access = real


def run_inprocess(case: Case, root: Path, pristine: Path) -> Outcome:
    from typer.testing import CliRunner

    from bayes_transfer.cli import app

    before = snapshot(root)
    STATE["fit_returns"] = case.args[0] == "fit"
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with denied_writes(root, case.readonly):
            result = CliRunner().invoke(app, case.args)
    finally:
        os.chdir(cwd)
    after = snapshot(root)
    out = Outcome(case.category, case.line(), "clean")
    exc = result.exception
    output = result.output or ""
    if isinstance(exc, WorkStarted):
        out.kind = "accepted"
    elif not (exc is None or isinstance(exc, SystemExit)) or "Traceback" in output:
        out.kind = "traceback"
        out.detail = repr(exc)[:300] + " | " + output.strip()[-300:]
    elif result.exit_code == 0:
        out.kind = "should-fail" if case.expect_error else "accepted"
        changed = [n for n in before if after.get(n) != before[n] and not before[n][0]]
        if changed and "--force" not in case.args:
            out.written, out.detail = True, f"changed without --force: {changed}"
    elif result.exit_code in (1, 2):
        if after != before:
            diff = sorted(set(after) ^ set(before)) + [
                n for n in before if n in after and after[n] != before[n]
            ]
            out.written, out.detail = True, f"written on error: {diff[:5]}"
    else:
        out.kind = "traceback"
        out.detail = f"exit status {result.exit_code}: {output.strip()[-300:]}"
    if after != before:
        restore(root, pristine, before, after)
    return out


# ---- the cases ------------------------------------------------------------------------------


def backtest_args(
    table: str = "rt-ok.csv",
    *extra: str,
    spec: str = "transfer-gap",
    split: str = "params",
    at: str = "1e5",
) -> list[str]:
    """A ``backtest`` command line: most cases change one thing of this one."""
    return ["backtest", table, "--spec", spec, "--split", split, "--at", at, *extra]


def cases(pools: dict[str, list[str]]) -> list[Case]:
    out: list[Case] = []
    fast = ["--draws", "20", "--warmup", "20", "--chains", "1"]
    for t in pools["runs"]:
        c = "run tables"
        out += [
            Case(c, ["validate", t]),
            Case(c, ["fit", t, "--out", "new.nc", *fast]),
            Case(c, ["predict", "post-ok.nc", "--runs", t]),
            Case(c, ["suggest", "post-ok.nc", "--candidates", "ca-ok.toml", "--at", t]),
            Case(c, ["simulate", "transfer-gap", "--design", t, "--out", "sim.csv"]),
            Case(
                c,
                backtest_args(t, *fast),
            ),
            Case(c, ["select", t, *fast]),
            Case(c, ["demo", "--runs", t, "--out", "demo-out", "--quick"]),
            Case(c, ["convert", "rectified-scaling", t, "--out", "conv.csv"]),
        ]
    for s in [*SPECS, "no-such-spec", "adir", "missing.toml", "chinchilla"]:
        c = "specs"
        out += [
            Case(c, ["fit", "rt-ok.csv", "--spec", s, "--out", "new.nc", *fast]),
            Case(c, ["simulate", s, "--out", "sim.csv"]),
            Case(c, backtest_args("rt-ok.csv", *fast, spec=s)),
            Case(c, ["loop", "gr-ok.toml", "--spec", s, "--out", "loop-out"]),
            Case(c, ["demo", "--spec", s, "--out", "demo-out", "--quick"]),
        ]
    for name in [*CANDIDATES, "adir", "missing.toml", "rt-ok.csv"]:
        c = "candidates"
        out += [
            Case(c, ["suggest", "post-ok.nc", "--candidates", name]),
            Case(
                c, ["plot", "post-ok.nc", "acquisition", "--candidates", name, "--out", "acq.png"]
            ),
        ]
    for name in [*GRIDS, "adir", "missing.toml", "rt-ok.csv"]:
        c = "grids"
        out += [
            Case(c, ["train", name, "--out", "train.csv", "--executor", "serial"]),
            Case(c, ["loop", name, "--out", "loop-out"]),
        ]
    for p in pools["post"]:
        c = "posteriors"
        # Every damaged file is refused; a flipped or cut byte may miss what is read.
        refuse = p != "post-ok.nc" and not p.startswith(("po-flip-", "po-cut-"))
        out += [
            Case(c, expect_error=refuse, args=["report", p]),
            Case(c, expect_error=refuse, args=["report", p, "--params", "--format", "json"]),
            Case(c, expect_error=refuse, args=["predict", p, "--runs", "rt-ok.csv"]),
            Case(c, expect_error=refuse, args=["suggest", p, "--candidates", "ca-ok.toml"]),
            Case(
                c, expect_error=refuse, args=["advise", p, "--target", "math", "--budget", "1e15"]
            ),
            Case(c, expect_error=refuse, args=["plot", p, "forest", "--out", "forest.png"]),
            Case(c, expect_error=refuse, args=["ppc", p]),
            Case(c, expect_error=refuse, args=["compare", p, "post-ok.nc"]),
            Case(c, expect_error=refuse, args=["simulate", "--check", p, "--truth", "truth.json"]),
        ]
    for truth in (
        "truth-list.json",
        "truth-bad.json",
        "truth-deep.json",
        "rt-ok.csv",
        "truth-units.json",
        "truth-units-neg.json",
        "adir",
        "missing.json",
    ):
        out.append(Case("posteriors", ["simulate", "--check", "post-ok.nc", "--truth", truth]))
    out += output_cases() + argument_cases()
    return out


def output_cases() -> list[Case]:
    c = "output paths"
    fast = ["--draws", "20", "--warmup", "20", "--chains", "1"]
    writers = {  # command line before --out, and the input it must not overwrite
        "fit": (["fit", "rt-ok.csv", *fast], "rt-ok.csv", "exists.nc"),
        "simulate": (
            ["simulate", "transfer-gap", "--design", "rt-ok.csv"],
            "rt-ok.csv",
            "exists.csv",
        ),
        "predict": (["predict", "post-ok.nc", "--runs", "rt-ok.csv"], "post-ok.nc", "exists.csv"),
        "plot": (["plot", "post-ok.nc", "forest"], "post-ok.nc", "exists.png"),
        "ppc": (["ppc", "post-ok.nc"], "post-ok.nc", "exists.png"),
        "train": (["train", "gr-ok.toml", "--executor", "serial"], "gr-ok.toml", "exists.csv"),
        "convert": (["convert", "rectified-scaling", "rt-ok.csv"], "rt-ok.csv", "exists.csv"),
        "select": (["select", "rt-ok.csv", *fast], "rt-ok.csv", "exists.csv"),
        "compare": (["compare", "post-ok.nc", "po-structure-0.nc"], "post-ok.nc", "exists.csv"),
    }
    out: list[Case] = []
    for name, (args, inp, exists) in writers.items():
        for target, kw in (
            ("adir", {}),
            ("a-file/x.nc", {}),
            (inp, {}),
            (exists, {}),
            ("/dev/null", {}),
            ("", {}),
            ("ro/x.png", {"readonly": True}),
            ("ro", {"readonly": True}),
        ):
            out.append(Case(c, [*args, "--out", target], expect_error=True, **kw))
        out.append(Case(c, [*args, "--out", inp, "--force"], expect_error=True))
        if name in ("plot", "ppc"):
            out += [
                Case(c, [*args, "--out", "x.xyz"], expect_error=True),
                Case(c, [*args, "--out", "noext"], expect_error=True),
            ]
    out += [
        Case(
            c,
            backtest_args("rt-ok.csv", "--predictions", "exists.csv", *fast),
            expect_error=True,
        ),
        Case(
            c,
            backtest_args("rt-ok.csv", "--plot", "x.xyz", *fast),
            expect_error=True,
        ),
        Case(
            c,
            backtest_args("rt-ok.csv", "--predictions", "rt-ok.csv", "--force"),
            expect_error=True,
        ),
        Case(c, ["plot", "post-ok.nc", "all", "--out-dir", "a-file"], expect_error=True),
        Case(
            c,
            ["plot", "post-ok.nc", "all", "--out-dir", "ro", "--force"],
            expect_error=True,
            readonly=True,
        ),
        Case(c, ["demo", "--out", "a-file"], expect_error=True),
        Case(c, ["demo", "--out", "ro/demo"], expect_error=True, readonly=True),
        Case(c, ["loop", "gr-ok.toml", "--out", "a-file"], expect_error=True),
        Case(c, ["loop", "gr-ok.toml", "--out", "gr-ok.toml"], expect_error=True),
        Case(c, ["loop", "gr-ok.toml", "--out", "ro/loop"], expect_error=True, readonly=True),
        Case(
            c, ["train", "gr-ok.toml", "--out", "t.csv", "--work-dir", "a-file"], expect_error=True
        ),
        Case(c, ["simulate", "transfer-gap", "--out", "exists.csv"], expect_error=True),
        Case(c, ["simulate", "transfer-gap", "--out", "sim.csv", "--force"]),
    ]
    return out


def argument_cases() -> list[Case]:
    c = "bad arguments"
    fast = ["--draws", "20", "--warmup", "20", "--chains", "1"]
    fit = ["fit", "rt-ok.csv", "--out", "new.nc"]
    bad = [
        [*fit, "--ci", "1.5"],
        [*fit, "--ci", "0"],
        [*fit, "--ci", "nan"],
        [*fit, "--ci", "-inf"],
        [*fit, "--seed", str(2**70)],
        [*fit, "--seed", "-1"],
        [*fit, "--chains", "0"],
        [*fit, "--draws", "-5"],
        [*fit, "--backend", "bogus"],
        [*fit, "--device", "tpu"],
        [*fit, "--init", "bogus"],
        [*fit, "--target-accept", "2"],
        [*fit, "--max-tree-depth", "99"],
        [*fit, "--prior-draws", "-1"],
        [*fit, "--spec", "[/]"],
        [*fit, "--chains", str(2**70)],
        [*fit, "--draws", str(2**70)],
        [*fit, "--warmup", str(10**9)],
        backtest_args("rt-ok.csv", "--chains", str(2**70)),
        ["select", "rt-ok.csv", "--draws", str(2**70)],
        ["loop", "gr-ok.toml", "--out", "l", "--chains", str(2**70)],
        ["report", "post-ok.nc", "--ci", "1.5"],
        ["report", "post-ok.nc", "--format", "xml"],
        ["report", "post-ok.nc", "--units", "bogus"],
        ["predict", "post-ok.nc", "--runs", "rt-ok.csv", "--ci", "1"],
        ["predict", "post-ok.nc", "--runs", "rt-ok.csv", "--seed", str(2**70)],
        ["predict", "post-ok.nc", "--runs", "rt-ok.csv", "--kind", "bogus"],
        ["simulate", "transfer-gap", "--out", "s.csv", "--params", "1e400"],
        ["simulate", "transfer-gap", "--out", "s.csv", "--params", "-1"],
        ["simulate", "transfer-gap", "--out", "s.csv", "--params", "x"],
        ["simulate", "transfer-gap", "--out", "s.csv", "--seed", str(2**70)],
        ["simulate", "transfer-gap", "--out", "s.csv", "--loss-se", "inf"],
        ["simulate", "transfer-gap", "--out", "s.csv", "--seeds", "-1"],
        ["simulate", "transfer-gap", "--out", "s.csv", "--pretrain-tokens", "1e300"],
        ["simulate", "transfer-gap", "--out", "s.csv", "--sources", ",,,"],
        [
            "simulate",
            "transfer-gap",
            "--out",
            "s.csv",
            "--params",
            ",".join(str(10**6 + i) for i in range(2000)),
        ],
        ["simulate", "transfer-gap"],
        ["simulate", "--check", "post-ok.nc"],
        ["suggest", "post-ok.nc", "--candidates", "ca-ok.toml", "--batch", "0"],
        ["suggest", "post-ok.nc", "--candidates", "ca-ok.toml", "--budget", "-1"],
        ["suggest", "post-ok.nc", "--candidates", "ca-ok.toml", "--budget", "nan"],
        ["suggest", "post-ok.nc", "--candidates", "ca-ok.toml", "--criterion", "bogus"],
        ["suggest", "post-ok.nc", "--candidates", "ca-ok.toml", "--cost", "bogus"],
        ["suggest", "post-ok.nc", "--candidates", "ca-ok.toml", "--pair", "[/]"],
        ["suggest", "post-ok.nc", "--candidates", "ca-ok.toml", "--max-draws", "5"],
        ["suggest", "post-ok.nc", "--candidates", "ca-ok.toml", "--format", "xml"],
        ["suggest", "post-ok.nc", "--candidates", "ca-ok.toml", "--at", "rt-ok.csv",
         "--pair", "a->b"],
        ["advise", "post-ok.nc", "--target", "math", "--budget", "-1"],
        ["advise", "post-ok.nc", "--target", "math", "--budget", "inf"],
        ["advise", "post-ok.nc", "--target", "[red]", "--budget", "1e15"],
        ["advise", "post-ok.nc", "--target", "math", "--budget", "1e15", "--top", "-3"],
        ["advise", "post-ok.nc", "--target", "math", "--budget", "1e15", "--ci", "1.5"],
        ["advise", "post-ok.nc", "--target", "math", "--budget", "1e15", "--source", "x"],
        ["advise", "post-ok.nc", "--compute", "1e400"],
        ["advise", "post-ok.nc", "--compute-range", "1e22,1e20"],
        ["advise", "post-ok.nc"],
        ["plot", "post-ok.nc", "bogus", "--out", "x.png"],
        ["plot", "post-ok.nc", "forest", "--out", "x.png", "--ci", "1.5"],
        ["plot", "post-ok.nc", "forest"],
        ["plot", "post-ok.nc", "all", "--out", "x.png"],
        ["ppc", "post-ok.nc", "--ci", "2"],
        ["ppc", "post-ok.nc", "--seed", str(2**70)],
        ["ppc", "post-ok.nc", "--kind", "bogus"],
        ["loop", "gr-ok.toml", "--out", "l", "--budget", "-1"],
        ["loop", "gr-ok.toml", "--out", "l", "--budget", "nan"],
        ["loop", "gr-ok.toml", "--out", "l", "--executor", "bogus"],
        ["loop", "gr-ok.toml", "--out", "l", "--target-width", "0"],
        ["loop", "gr-ok.toml", "--out", "l", "--seed", str(2**70)],
        ["loop", "gr-ok.toml", "--out", "l", "--criterion", "bogus"],
        ["loop", "gr-ok.toml", "--out", "l", "--rounds", "-1"],
        ["train", "gr-ok.toml", "--out", "t.csv", "--executor", "bogus"],
        ["train", "gr-ok.toml", "--out", "t.csv", "--workers", "0"],
        ["train", "gr-ok.toml", "--out", "t.csv", "--workers", str(2**70)],
        ["demo", "--out", "d", "--batch", "0"],
        ["demo", "--out", "d", "--batch", "-1"],
        ["demo", "--out", "d", "--seed", str(2**70)],
        ["demo", "--out", "d", "--spec", "x"],
        backtest_args(split="bogus", at="1"),
        backtest_args("rt-ok.csv", *fast, at="nan"),
        backtest_args("rt-ok.csv", *fast, at="1e400"),
        backtest_args("rt-ok.csv", "--leave-pairs-out", "99", *fast),
        backtest_args("rt-ok.csv", "--seed", str(2**70), *fast),
        ["select", "rt-ok.csv", "--ci", "1.5"],
        ["select", "rt-ok.csv", "--budget", "-1"],
        ["select", "rt-ok.csv", "--at", "nan"],
        ["select", "rt-ok.csv", "--seed", "-1"],
        ["select", "rt-ok.csv", "--target", "[/]", *fast],
        ["compare", "post-ok.nc"],
        ["compare", "post-ok.nc", "post-ok.nc", "--format", "x"],
        ["convert", "bogus", "rt-ok.csv", "--out", "c.csv"],
        ["convert", "llm-line", "rt-ok.csv", "--out", "c.csv", "--tokens-per-example", "-1"],
        ["convert", "rectified-scaling", "rt-ok.csv", "--out", "c.csv", "--metric", "x"],
        ["validate"],
        ["bogus-command"],
        ["validate", "rt-ok.csv", "--bogus"],
    ]
    return [Case(c, a, expect_error=True) for a in bad]


# ---- subprocesses ------------------------------------------------------------------------------


def run_cli(
    args: list[str],
    cwd: Path,
    *,
    timeout: float = 300,
    fsize: int | None = None,
) -> subprocess.CompletedProcess:
    """``bayes-transfer ARGS`` in its own session; ``fsize``: under that RLIMIT_FSIZE."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "MPLBACKEND": "Agg", "COLUMNS": "200"}
    with warnings.catch_warnings():  # JAX's warning on fork (the child only execs)
        warnings.simplefilter("ignore", RuntimeWarning)
        return subprocess.run(
            [str(CLI), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
            preexec_fn=limit if fsize is not None else None,
        )


def judge_process(
    category: str,
    args: list[str],
    res: subprocess.CompletedProcess,
    *,
    expect_error: bool,
    written: str = "",
) -> Outcome:
    line = "bayes-transfer " + " ".join(shlex.quote(a) for a in args)
    out = Outcome(category, line, "clean")
    if res.returncode < 0 or "Traceback" in res.stderr or "Traceback" in res.stdout:
        out.kind = "traceback"
        out.detail = f"status {res.returncode}: {res.stderr.strip()[-400:]}"
    elif res.returncode == 0:
        out.kind = "should-fail" if expect_error else "accepted"
    elif res.returncode not in (1, 2):
        out.kind = "traceback"
        out.detail = f"status {res.returncode}: {res.stderr.strip()[-400:]}"
    if written:
        out.written, out.detail = True, (out.detail + " " + written).strip()
    return out


def subprocess_sample(
    done: list[tuple[Case, Outcome]], root: Path, pristine: Path, n: int, light: bool = False
) -> list[Outcome]:
    """Clean in-process errors, re-run as real processes: still clean, nothing written.

    ``light``: only commands that start without JAX (``--quick``)."""
    pool = [
        c
        for c, o in done
        if o.kind == "clean"
        and not o.written
        and c.subprocess_ok
        and not c.readonly
        and c.args
        and c.args[0] not in ("demo",)
        and (not light or c.args[0] in ("validate", "convert", "train"))
    ]
    by_cat: dict[str, list[Case]] = {}
    for c in pool:
        by_cat.setdefault(c.category, []).append(c)
    rng = random.Random(0)
    chosen: list[Case] = []
    while len(chosen) < n and any(by_cat.values()):
        for cat in list(by_cat):
            if by_cat[cat] and len(chosen) < n:
                chosen.append(by_cat[cat].pop(rng.randrange(len(by_cat[cat]))))
    out = []
    for case in chosen:
        before = snapshot(root)
        res = run_cli(case.args, root)
        after = snapshot(root)
        written = "" if after == before else "written on error"
        if after != before:
            restore(root, pristine, before, after)
        out.append(
            judge_process(
                f"{case.category} (subprocess)", case.args, res, expect_error=True, written=written
            )
        )
    return out


def _rows(path: Path):
    import pandas as pd

    df = pd.read_csv(path).drop(columns=["wall_seconds"])
    return df.sort_values("row_id").reset_index(drop=True)


GRID_KILL = (
    GRID_BASE.replace("pretrain_tokens = [2048]", "pretrain_tokens = [2048, 4096]").replace(
        'targets = ["synth-b"]', 'targets = ["synth-b", "synth-c"]'
    )
    + GRID_TRAIN
)


def kill_and_concurrency(work: Path) -> list[Outcome]:
    """A killed ``train`` resumes to an uninterrupted run's rows; two on one --out too."""
    out: list[Outcome] = []
    grid = work / "grid.toml"
    grid.write_text(GRID_KILL)
    base = ["--executor", "serial", "--no-progress"]
    ref = ["train", str(grid), "--out", str(work / "ref.csv"), *base]
    out.append(judge_process("kills", ref, run_cli(ref, work), expect_error=False))
    expected = _rows(work / "ref.csv")
    # SIGKILL once the first rows are saved, before the table is written; then rerun.
    for when in (1, 3):
        name = work / f"killed-{when}.csv"
        args = ["train", str(grid), "--out", str(name), *base]
        proc = subprocess.Popen(
            [str(CLI), *args],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        rows = work / f"killed-{when}.work" / "rows"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if rows.is_dir() and len(list(rows.glob("*.json"))) >= when:
                break
            time.sleep(0.05)
        saved = len(list(rows.glob("*.json"))) if rows.is_dir() else 0
        midway = proc.poll() is None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        res = run_cli(args, work)
        o = judge_process(
            "kills", [*args, f"(SIGKILL after {saved} rows)"], res, expect_error=False
        )
        if o.kind == "accepted" and not (midway and _rows(name).equals(expected)):
            o.kind, o.detail = (
                "traceback",
                f"rows differ from an uninterrupted run (killed midway: {midway})",
            )
        out.append(o)
    # Two concurrent runs on one --out: the table is complete, nothing duplicated.
    name = work / "both.csv"
    args = ["train", str(grid), "--out", str(name), *base]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    procs = [
        subprocess.Popen(
            [str(CLI), *args],
            cwd=work,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(args, p.returncode, stdout, stderr))
    final = run_cli(args, work)  # a rerun completes whatever a loser left
    for res in [*results, final]:
        o = judge_process("concurrent runs", args, res, expect_error=False)
        out.append(o)
    if name.exists() and not _rows(name).equals(expected):
        out[-1].kind, out[-1].detail = "traceback", "concurrent rows differ from the reference"
    return out


def resource_limits(root: Path) -> list[Outcome]:
    """A full disk (RLIMIT_FSIZE) while writing: one clean error, the old file intact,
    no temporary file left behind."""
    out = []
    cases = [
        (
            [
                "fit",
                "rt-ok.csv",
                "--out",
                "full.nc",
                "--draws",
                "20",
                "--warmup",
                "20",
                "--chains",
                "1",
                "--force",
                "--no-progress",
            ],
            "full.nc",
            16_000,
        ),
        (["simulate", "transfer-gap", "--out", "full.csv", "--force"], "full.csv", 1_000),
        (["simulate", "transfer-gap", "--out", "full.csv", "--force"], "full.csv", 5_000),
        (
            ["predict", "post-ok.nc", "--runs", "rt-ok.csv", "--out", "full.csv", "--force"],
            "full.csv",
            1_000,
        ),
        (["plot", "post-ok.nc", "forest", "--out", "full.png", "--force"], "full.png", 2_000),
        (["ppc", "post-ok.nc", "--out", "full.png", "--force"], "full.png", 2_000),
        (
            [
                "convert",
                "rectified-scaling",
                str(REPO.parent / "shared" / "data" / "rectified-scaling" / "flan.csv"),
                "--out",
                "full.csv",
                "--force",
            ],
            "full.csv",
            1_000,
        ),
    ]
    for args, target, limit in cases:
        path = root / target
        path.write_bytes(b"the old file")
        before = {p.name for p in root.iterdir()}
        res = run_cli(args, root, fsize=limit)
        problems = []
        if path.read_bytes() != b"the old file" and res.returncode != 0:
            problems.append("the old file was changed")
        left = {p.name for p in root.iterdir()} - before
        if left:
            problems.append(f"left behind: {sorted(left)}")
        out.append(
            judge_process(
                "resource limits",
                [*args, f"(RLIMIT_FSIZE {limit})"],
                res,
                expect_error=True,
                written="; ".join(problems),
            )
        )
        for name in left:
            p = root / name
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        path.unlink(missing_ok=True)
    return out


# ---- report ------------------------------------------------------------------------------------


KINDS = ["clean", "accepted", "traceback", "should-fail"]


def table(outcomes: list[Outcome]) -> dict:
    cats: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = cats.setdefault(o.category, {"tried": 0, **{k: 0 for k in KINDS}, "written": 0})
        row["tried"] += 1
        row[o.kind] += 1
        row["written"] += o.written
    total = {k: sum(r[k] for r in cats.values()) for k in ["tried", *KINDS, "written"]}
    head = (
        f"{'category':<32} {'tried':>6} {'clean errors':>12} {'accepted':>9} "
        f"{'tracebacks':>10} {'should fail':>11} {'files written':>13}"
    )
    print(head)
    print("-" * len(head))
    for name, r in [*cats.items(), ("TOTAL", total)]:
        print(
            f"{name:<32} {r['tried']:>6} {r['clean']:>12} {r['accepted']:>9} "
            f"{r['traceback']:>10} {r['should-fail']:>11} {r['written']:>13}"
        )
    return {"categories": cats, "total": total}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, help="write the counts and failures here")
    p.add_argument(
        "--only",
        action="append",
        metavar="CATEGORY",
        help="rerun only these in-process categories (no kills, limits)",
    )
    p.add_argument(
        "--subprocesses",
        type=int,
        default=36,
        help="clean in-process errors re-run as real processes (default 36)",
    )
    args = p.parse_args()
    header("hostile-input probe of every CLI command (issue 14)")
    os.environ.setdefault("MPLBACKEND", "Agg")
    start = time.perf_counter()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="hostile-probe-") as tmp:
        root, pristine = Path(tmp) / "ws", Path(tmp) / "pristine"
        root.mkdir()
        pools = build_workspace(root, args.quick)
        shutil.copytree(root, pristine, symlinks=True)
        all_cases = cases(pools)
        if args.only:
            all_cases = [c for c in all_cases if c.category in args.only]
        if args.quick:  # `report` of every posterior, and 4 cases of each other category
            rng = random.Random(args.seed)
            by_cat: dict[str, list[Case]] = {}
            for c in all_cases:
                if c.args[0] not in ("plot", "ppc", "demo"):
                    by_cat.setdefault(c.category, []).append(c)
            posts = [c for c in by_cat.pop("posteriors") if c.args[0] == "report"]
            all_cases = [c for cs in by_cat.values() for c in rng.sample(cs, min(4, len(cs)))]
            all_cases += [c for c in posts if len(c.args) == 2]
        print(f"# {len(all_cases)} in-process cases", flush=True)
        done = []
        with patched_work(), contextlib.redirect_stderr(io.StringIO()):
            STATE["good"] = root / "post-ok.nc"
            for case in all_cases:
                done.append((case, run_inprocess(case, root, pristine)))
        outcomes += [o for _, o in done]
        print(f"# in-process: {time.perf_counter() - start:.0f} s", flush=True)
        n = 2 if args.quick else args.subprocesses
        outcomes += subprocess_sample(done, root, pristine, n, light=args.quick)
        print(f"# subprocesses: {time.perf_counter() - start:.0f} s", flush=True)
        if not (args.quick or args.only):
            outcomes += resource_limits(root)
            print(f"# resource limits: {time.perf_counter() - start:.0f} s", flush=True)
            work = Path(tmp) / "train"
            work.mkdir()
            outcomes += kill_and_concurrency(work)
            print(f"# kills and concurrency: {time.perf_counter() - start:.0f} s", flush=True)
    print()
    counts = table(outcomes)
    bad = [o for o in outcomes if o.kind in ("traceback", "should-fail") or o.written]
    for o in bad:
        print(
            f"\nFAIL [{o.category}] {o.kind}{' + file written' if o.written else ''}: "
            f"{o.command}\n    {o.detail}"
        )
    seconds = time.perf_counter() - start
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    **counts,
                    "seconds": round(seconds, 1),
                    "quick": args.quick,
                    "failures": [dataclasses.asdict(o) for o in bad],
                },
                indent=2,
            )
            + "\n"
        )
    print(f"\n{counts['total']['tried']} invocations in {seconds:.0f} s")
    return verdict(
        not bad,
        f"{len(bad)} raw tracebacks, wrongly written files or wrongly "
        f"accepted cases in {counts['total']['tried']} invocations (target 0)",
    )


if __name__ == "__main__":
    sys.exit(main())
