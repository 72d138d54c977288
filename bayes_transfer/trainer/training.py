"""Training, evaluation and checkpoints: the work that one job of a grid does.

Everything here is a pure function of its arguments (seeded), so that a job gives the same
result in any process, on any executor, and after a resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bayes_transfer.trainer.corpora import load_corpus
from bayes_transfer.trainer.model import (
    ModelConfig,
    TransformerLM,
    count_non_embedding_params,
    lr_at,
    make_optimizer,
)

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training stage (pre-training or fine-tuning)."""

    batch_size: int = 16
    context: int = 64
    lr: float = 3e-3
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0

    def steps(self, tokens: int) -> int:
        """Optimiser steps that see (at least) ``tokens`` tokens."""
        return max(1, math.ceil(tokens / (self.batch_size * self.context)))


def pick_device(requested: str = "auto") -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def autocast(device: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA (fast, no loss scaling needed); full precision on CPU, where
    bf16 matmuls are slow on most machines and would change the numbers."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def stream_seed(*key: object) -> int:
    """A 63-bit seed from a key, the same in every process (Python's hash() is salted)."""
    digest = hashlib.sha256(repr(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def as_tensor(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())


class BatchSampler:
    """Random windows of ``context + 1`` bytes from a text, from a seeded generator."""

    def __init__(self, data: torch.Tensor, batch_size: int, context: int, seed: int) -> None:
        if len(data) <= context + 1:
            raise ValueError(f"text of {len(data)} bytes is shorter than a context of {context}")
        self.data, self.batch_size, self.context = data, batch_size, context
        self.generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(context + 1)

    def next(self, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(
            0, len(self.data) - self.context - 1, (self.batch_size,), generator=self.generator
        )
        windows = self.data[starts[:, None] + self.offsets].long().to(device, non_blocking=True)
        return windows[:, :-1], windows[:, 1:]


def train(
    model: TransformerLM,
    sampler: BatchSampler,
    tokens: int,
    cfg: TrainConfig,
    device: str,
    on_step: Any = None,
) -> int:
    """Train ``model`` on ``tokens`` tokens from ``sampler``; AdamW, warmup + cosine.

    Returns the number of tokens actually seen (whole batches). A fresh optimiser per
    stage: fine-tuning starts from the pre-trained weights, not the optimiser state.
    """
    steps = cfg.steps(tokens)
    warmup = max(1, round(cfg.warmup_fraction * steps))
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, device.split(":")[0])
    model.train()
    for step in range(steps):
        lr = lr_at(step, steps, cfg.lr, warmup, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = sampler.next(device)
        with autocast(device):
            loss = model.loss(inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if on_step is not None:
            on_step(step, loss)
    return steps * cfg.batch_size * cfg.context


@torch.no_grad()
def evaluate(
    model: TransformerLM, heldout: torch.Tensor, tokens: int, context: int, device: str
) -> tuple[float, float]:
    """Mean held-out cross-entropy (nats/token) and its standard error.

    The held-out text is cut into ``tokens // context`` windows spread evenly over it (so
    every part of it counts, not only its beginning); the loss is the mean of the windows'
    mean losses and the standard error is their standard deviation / sqrt(windows).
    """
    n_windows = max(2, tokens // context)
    last_start = len(heldout) - context - 1
    if last_start < 0:
        raise ValueError(f"held-out text of {len(heldout)} bytes is shorter than the context")
    starts = torch.linspace(0, last_start, n_windows).round().long()
    windows = heldout[starts[:, None] + torch.arange(context + 1)].long()
    model.eval()
    window_losses = []
    for chunk in windows.split(256):
        chunk = chunk.to(device)
        with autocast(device):
            logits = model(chunk[:, :-1])
        per_token = torch.nn.functional.cross_entropy(
            logits.float().transpose(1, 2), chunk[:, 1:], reduction="none"
        )
        window_losses.append(per_token.mean(dim=1).double().cpu())
    losses = torch.cat(window_losses)
    return float(losses.mean()), float(losses.std(correction=1) / math.sqrt(len(losses)))


# -- checkpoints ---------------------------------------------------------------------------


def checkpoint_bytes(model: TransformerLM, run_config: dict[str, Any]) -> bytes:
    """Serialise weights (tensors) and plain config dicts, loadable with weights_only=True."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model": state,
        "model_config": model.cfg.to_dict(),
        "run_config": run_config,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely (damaged, or not one of ours)."""


def load_checkpoint(source: bytes | str | os.PathLike[str]) -> tuple[TransformerLM, dict[str, Any]]:
    """Rebuild a model from checkpoint bytes or a checkpoint file (``weights_only=True``)."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    where = "checkpoint bytes" if isinstance(source, bytes) else f"checkpoint {source}"
    try:
        payload = torch.load(stream, map_location="cpu", weights_only=True)
        model = TransformerLM(ModelConfig(**payload["model_config"]))
        model.load_state_dict(payload["model"])
        return model, payload["run_config"]
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises EOFError, RuntimeError, UnpicklingError, ...
        raise CheckpointError(f"{where} is truncated, corrupted or not a bayes_transfer "
                              f"checkpoint: {type(exc).__name__}: {exc}") from None


# -- jobs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """One run-table row to produce: evaluate the job's model on ``target``'s held-out text."""

    row_id: str
    target: str
    row: dict[str, Any]  # the row's identifying columns (source, target, tokens, seed, ...)


@dataclass(frozen=True)
class Job:
    """Train (unless a checkpoint is given) and evaluate: a pre-training or a fine-tuning.

    ``init`` is None for a pre-training from random init, else the pre-trained checkpoint
    (a path, or bytes on Ray) that a fine-tuning starts from.
    """

    run_id: str
    kind: str  # "pretrain" or "finetune"
    corpus: str
    tokens: int
    seed: int
    model_config: dict[str, int]
    train_config: TrainConfig
    evaluations: tuple[Evaluation, ...]
    eval_tokens: int
    threads: int = 1
    device: str = "auto"
    save_checkpoint: bool = False
    run_config: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobResult:
    run_id: str
    rows: dict[str, dict[str, Any]]  # row_id -> row
    checkpoint: bytes | None
    tokens_trained: int


def run_job(job: Job, init: bytes | str | None = None, trained: bytes | str | None = None) -> JobResult:
    """Do one job. ``init``: checkpoint to fine-tune from; ``trained``: the job's own
    finished checkpoint (after a resume), in which case only the evaluations are done."""
    torch.set_num_threads(job.threads)
    device = pick_device(job.device)
    for name in (job.corpus, *(ev.target for ev in job.evaluations)):
        load_corpus(name)  # cached per process; loaded before the clock starts
    start = time.perf_counter()
    tokens_trained = 0
    if trained is not None:
        model, _ = load_checkpoint(trained)
    else:
        if init is not None:
            model, _ = load_checkpoint(init)
        else:
            # Same init for every source at a given shape and seed: common random numbers
            # make the differences between sources less noisy.
            torch.manual_seed(stream_seed(job.seed, "init", job.model_config))
            model = TransformerLM(ModelConfig(**job.model_config))
        model.to(device)
        data = as_tensor(load_corpus(job.corpus).train)
        # The data order depends on the stage, corpus and seed, not on the source or p, so
        # fine-tunings of different pre-trained models on one target see the same batches.
        sampler = BatchSampler(
            data,
            job.train_config.batch_size,
            job.train_config.context,
            stream_seed(job.seed, job.kind, job.corpus),
        )
        tokens_trained = train(model, sampler, job.tokens, job.train_config, device)
    model.to(device)
    train_seconds = time.perf_counter() - start
    params = count_non_embedding_params(model)
    rows = {}
    for ev in job.evaluations:
        heldout = as_tensor(load_corpus(ev.target).heldout)
        loss, loss_se = evaluate(model, heldout, job.eval_tokens, job.train_config.context, device)
        rows[ev.row_id] = {
            **ev.row,
            "run_id": job.run_id,
            "params": params,
            "loss": loss,
            "loss_se": loss_se,
            "wall_seconds": round(train_seconds, 3),
            "device": device,
        }
    checkpoint = None
    if job.save_checkpoint and trained is None:
        checkpoint = checkpoint_bytes(model.cpu(), job.run_config)
    return JobResult(job.run_id, rows, checkpoint, tokens_trained)
