"""Tests of the bundled trainer: model, corpora, grid specs, resumable grids, CLI, benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _grids import tiny_grid
from typer.testing import CliRunner

from bayes_transfer.trainer import (
    SHAPES,
    Grid,
    GridError,
    ModelConfig,
    TransformerLM,
    count_non_embedding_params,
    load_checkpoint,
    load_corpus,
    load_grid,
    non_embedding_params,
    run_grid,
)
from bayes_transfer.trainer.corpora import _c_src, is_heldout
from bayes_transfer.trainer.grid import plan_grid

REPO = Path(__file__).resolve().parents[1]
CONTRACT = ["run_id", "source", "target", "params", "pretrain_tokens", "finetune_tokens", "loss", "loss_se", "seed"]  # fmt: skip

TINY_GRID = tiny_grid(sources=["synth-a", "english"])


@pytest.fixture
def tiny_grid(tmp_path: Path) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(TINY_GRID)
    return path


def _losses(table: pd.DataFrame) -> pd.DataFrame:
    return table[CONTRACT + ["kind"]].sort_values(["run_id", "target"]).reset_index(drop=True)


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = _losses(a), _losses(b)
    pd.testing.assert_frame_equal(a.drop(columns=["loss", "loss_se"]), b.drop(columns=["loss", "loss_se"]))
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(a["loss_se"], b["loss_se"], rtol=0, atol=1e-6)


# -- model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["xs", "s", "m", "l"])
def test_param_count_matches_closed_form(shape: str) -> None:
    model = TransformerLM(ModelConfig.from_shape(shape, context=64))
    assert count_non_embedding_params(model) == non_embedding_params(SHAPES[shape])
    embeddings = model.tok_emb.weight.numel() + model.pos_emb.weight.numel()
    assert sum(p.numel() for p in model.parameters()) == non_embedding_params(SHAPES[shape]) + embeddings


def test_param_count_known_value() -> None:
    # xs: 2 blocks x (attention 4*48^2 + MLP 8*48^2 + 2 LayerNorms 4*48) + final LayerNorm 2*48
    assert non_embedding_params(SHAPES["xs"]) == 2 * (12 * 48 * 48 + 4 * 48) + 2 * 48 == 55776
    sizes = [non_embedding_params(dims) for dims in SHAPES.values()]
    assert sizes == sorted(sizes) and sizes[0] < 60_000 and 15_000_000 < sizes[-1] < 25_000_000


def test_model_is_causal() -> None:
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig.from_shape("xs", context=16)).eval()
    idx = torch.randint(0, 256, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % 256
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.allclose(a[0, :10], b[0, :10]) and not torch.allclose(a[0, 10:], b[0, 10:])


# -- corpora -------------------------------------------------------------------------------


def test_real_split_is_disjoint_by_file() -> None:
    corpus = load_corpus("c-src")
    docs = list(_c_src())
    held = [text for key, text in docs if is_heldout(key)]
    trained = [text for key, text in docs if not is_heldout(key)]
    assert held and trained
    for text in held:
        if len(text) > 500:  # short files (a few include lines) may repeat elsewhere
            assert text in corpus.heldout and text not in corpus.train


def test_synthetic_split_and_relatedness() -> None:
    from bayes_transfer.trainer.corpora import _rules

    a, b, c = load_corpus("synth-a"), load_corpus("synth-b"), load_corpus("synth-c")
    assert a.train != a.heldout and a.train[:1000] not in a.heldout
    shared_b = (_rules(0.8, 1) == _rules(1.0, 0)).all(axis=1).mean()
    shared_c = (_rules(0.2, 2) == _rules(1.0, 0)).all(axis=1).mean()
    assert 0.6 < shared_b < 0.95 and 0.05 < shared_c < 0.4
    assert b.digest != c.digest


def test_word_languages_are_english_words_under_related_grammars() -> None:
    from bayes_transfer.trainer.corpora import _WORDS, _rules

    a, b = load_corpus("words-a"), load_corpus("words-b")
    assert a.train[:1000] not in a.heldout and len(a.train) == 1_000_000
    # Every token is one of the family's English words, so text-trained models know them.
    assert set(a.train.split()[:-1]) <= {w.encode() for w in _WORDS}
    words = a.train.split()
    # The grammar is a first-order chain: a word has at most 8 distinct successors.
    successors: dict[bytes, set[bytes]] = {}
    for w, nxt in zip(words[:-2], words[1:-1], strict=True):
        successors.setdefault(w, set()).add(nxt)
    assert max(len(s) for s in successors.values()) <= 8
    shared_b = (_rules(0.8, 1, "words") == _rules(1.0, 0, "words")).all(axis=1).mean()
    shared_c = (_rules(0.2, 2, "words") == _rules(1.0, 0, "words")).all(axis=1).mean()
    assert 0.6 < shared_b < 0.95 and 0.05 < shared_c < 0.4
    assert b.digest != load_corpus("words-c").digest != load_corpus("synth-c").digest
    assert load_corpus("words:0.8:1").train == b.train


def test_corpora_deterministic_across_processes() -> None:
    names = ["c-src", "english", "synth-b", "words-b", "python-src"]
    code = f"from bayes_transfer.trainer import load_corpus; print([load_corpus(n).digest for n in {names!r}])"
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(REPO)}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert other.stdout.strip() == str([load_corpus(n).digest for n in names])


def test_user_directory_corpus(tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / f"doc{i}.txt").write_text(f"document {i} " * 50)
    corpus = load_corpus(f"dir:{tmp_path}")
    assert corpus.train and corpus.heldout and corpus.heldout not in corpus.train


# -- grid specs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"sources": ["no-such-corpus"]}, "unknown corpus 'no-such-corpus'"),
        ({"targets": ["words:many"]}, "expected words:SHARE"),
        ({"targets": ["words:1.5"]}, "SHARE must be in"),
        ({"shapes": ["huge"]}, "unknown shape 'huge'"),
        ({"pretrain_tokens": ["many"]}, "pretrain_tokens must be a non-empty list of integers"),
        ({"finetune_tokens": [0]}, "finetune_tokens must be a non-empty list of integers >= 1"),
        ({"train": {"lr": "fast"}}, "train.lr must be a finite number > 0"),
        ({"train": {"batch_size": 1.5}}, "train.batch_size must be an integer >= 1"),
        ({"epochs": 3}, "unknown key 'epochs'"),
        ({"train": {"lr_by_shape": {"s": 0.01}}}, r"train.lr_by_shape.s: 's' is not one of the grid's shapes"),
        ({"train": {"lr_by_shape": {"xs": 0}}}, "train.lr_by_shape.xs must be a finite number > 0"),
        ({"train": {"finetune_lr_by_shape": {"xs": "slow"}}}, "train.finetune_lr_by_shape.xs must be a finite number"),
        ({"train": {"lr_by_shape": 0.01}}, "train.lr_by_shape must be a table of shape = learning rate"),
    ],
)
def test_bad_grid_spec_gives_clear_error(edit: dict, message: str) -> None:
    spec = {"sources": ["synth-a"], "targets": ["synth-b"], "shapes": ["xs"], "pretrain_tokens": [1024], "finetune_tokens": [512]}  # fmt: skip
    with pytest.raises(GridError, match=message) as info:
        Grid.from_dict({**spec, **edit})
    assert "\n" not in str(info.value)


def test_cli_bad_grid_exits_1(tmp_path: Path) -> None:
    from bayes_transfer.cli import app

    bad = tmp_path / "bad.toml"
    bad.write_text('sources=["klingon"]\ntargets=["c-src"]\nshapes=["xs"]\npretrain_tokens=[1]\nfinetune_tokens=[1]\n')
    result = CliRunner().invoke(app, ["train", str(bad), "--out", str(tmp_path / "runs.csv")])
    assert result.exit_code == 1
    assert "unknown corpus 'klingon'" in result.output
    assert "Traceback" not in result.output


def test_plan_semantics(tiny_grid: Path) -> None:
    plan = plan_grid(load_grid(tiny_grid))
    # pre-trainings: 2 sources x 2 p > 0, plus p = 0 -> from scratch on the target for each f
    assert len(plan.pretrain) == 2 * 2 + 1
    assert sum(len(v) for v in plan.finetune.values()) == 2 * 2 * 1 * 1
    assert all(len(v) == 1 for v in plan.finetune.values())
    # rows: per pre-training on a source, scratch + zero-shot; one per fine-tune; one p=0 row
    assert len(plan.row_ids()) == 4 * 2 + 4 + 1


def test_lr_by_shape_sets_each_shapes_lr_and_is_part_of_the_run_identity() -> None:
    base = {"sources": ["synth-a"], "targets": ["synth-b"], "shapes": ["xs", "s"],
            "pretrain_tokens": [0, 1024], "finetune_tokens": [512]}
    plain = plan_grid(Grid.from_dict({**base, "train": {"lr": 0.01, "finetune_lr": 0.003}}))
    tuned = plan_grid(Grid.from_dict({**base, "train": {
        "lr": 0.01, "finetune_lr": 0.003, "lr_by_shape": {"s": 0.005},
        "finetune_lr_by_shape": {"xs": 0.002}}}))

    def lrs(plan) -> tuple[dict[int, set[float]], dict[int, set[float]]]:
        pre: dict[int, set[float]] = {}
        fine: dict[int, set[float]] = {}
        for job in plan.pretrain.values():
            pre.setdefault(job.model_config["d_model"], set()).add(job.train_config.lr)
        for job in (j for js in plan.finetune.values() for j in js):
            fine.setdefault(job.model_config["d_model"], set()).add(job.train_config.lr)
        return pre, fine

    # Pre-training (and from scratch): the shape's lr, else [train] lr; fine-tuning: the
    # shape's finetune lr, else finetune_lr.
    assert lrs(tuned) == ({48: {0.01}, 96: {0.005}}, {48: {0.002}, 96: {0.003}})
    # The lr actually used is in the run's identity: the runs of the changed lrs are new,
    # the runs whose lr did not change (xs pre-training) keep theirs.
    xs_pre = {k for k, j in plain.pretrain.items() if j.model_config["d_model"] == 48}
    s_pre = {k for k, j in plain.pretrain.items() if j.model_config["d_model"] == 96}
    assert xs_pre <= set(tuned.pretrain) and not s_pre & set(tuned.pretrain)
    xs_rows = {ev.row_id for k in xs_pre for ev in plain.pretrain[k].evaluations}
    assert xs_rows <= tuned.row_ids() and len(tuned.row_ids() - plain.row_ids()) > 0
    # Without the tables a grid plans exactly the runs it planned before they existed
    # (this digest of the row ids was computed with the trainer of before; synthetic
    # corpora only, so it is the same on every machine).
    import hashlib

    digest = hashlib.sha256("".join(sorted(plain.row_ids())).encode()).hexdigest()[:16]
    assert digest == "f3400210ccbc1f32"
    again = plan_grid(Grid.from_dict({**base, "train": {"lr": 0.01, "finetune_lr": 0.003,
                                                         "lr_by_shape": {}}}))
    assert again.row_ids() == plain.row_ids() and set(again.pretrain) == set(plain.pretrain)


# -- running grids --------------------------------------------------------------------------


def test_tiny_grid_end_to_end(tiny_grid: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs.csv"
    table = run_grid(tiny_grid, out, executor="serial", progress=False)
    assert list(table.columns[: len(CONTRACT)]) == CONTRACT
    assert len(table) == 13 and table["row_id"].is_unique
    assert_same_table(pd.read_csv(out), table)
    assert (table["loss"] > 0).all() and (table["loss"] < np.log(256)).all()
    assert (table["loss_se"] > 0).all()
    kinds = table.groupby("kind").size().to_dict()
    assert kinds == {"finetune": 4, "scratch": 5, "zero-shot": 4}
    scratch_on_target = table[(table.source == "synth-b") & (table.kind == "scratch")]
    assert scratch_on_target[["target", "pretrain_tokens", "finetune_tokens"]].values.tolist() == [["synth-b", 1024, 0]]
    # rerunning does nothing and gives the same table
    again = run_grid(tiny_grid, out, executor="serial", progress=False)
    assert_same_table(again, table)
    assert again["wall_seconds"].tolist() == table["wall_seconds"].tolist()


def test_checkpoints_load_with_weights_only(tiny_grid: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs.csv"
    run_grid(tiny_grid, out, executor="serial", progress=False)
    checkpoints = sorted((tmp_path / "runs.work" / "checkpoints").glob("*.pt"))
    assert len(checkpoints) == 4  # the p > 0 pre-trainings, which fine-tunings start from
    for path in checkpoints:
        payload = torch.load(path, weights_only=True)
        assert set(payload) == {"format", "model", "model_config", "run_config"}
        model, config = load_checkpoint(path)
        assert config["stage"] == "pretrain" and count_non_embedding_params(model) == non_embedding_params(payload["model_config"])  # fmt: skip


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from bayes_transfer.cli import main; main()", "train", *args]


def test_killed_grid_resumes_to_the_same_table(tiny_grid: Path, tmp_path: Path) -> None:
    reference = run_grid(tiny_grid, tmp_path / "ref.csv", executor="serial", workers=1, progress=False)

    out, work = tmp_path / "runs.csv", tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = _cli(str(tiny_grid), "--out", str(out), "--work-dir", str(work), "--workers", "1", "--no-progress")
    proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        rows = list((work / "rows").glob("*.json")) if (work / "rows").exists() else []
        if len(rows) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the grid finished before it could be killed: {proc.stderr.read()!r}"
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its pool workers
    proc.wait()
    done_before = len(list((work / "rows").glob("*.json")))
    assert 0 < done_before < len(reference)
    for row in (work / "rows").glob("*.json"):
        json.loads(row.read_text())  # atomic writes: no half-written file

    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    resumed = pd.read_csv(out)
    assert len(resumed) == len(reference) and resumed["row_id"].is_unique
    assert_same_table(resumed, reference)


def test_local_pool_matches_serial(tiny_grid: Path, tmp_path: Path) -> None:
    serial = run_grid(tiny_grid, tmp_path / "a.csv", executor="serial", workers=2, progress=False)
    pooled = run_grid(tiny_grid, tmp_path / "b.csv", executor="local", workers=2, progress=False)
    assert_same_table(pooled, serial)


# -- benchmark -----------------------------------------------------------------------------


def test_speed_benchmark_quick() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "trainer_speed.py"), "--quick"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("ratio trainer/bare = ")
    assert time.perf_counter() - start < 60
