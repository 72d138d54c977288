"""Training throughput of the bundled trainer vs a bare PyTorch loop on the same model and data.

The trainer's step (:func:`bayes_transfer.trainer.training.train`: seeded batch sampling,
warmup + cosine learning rate, gradient clipping, AdamW) is timed against a bare loop
(sample a batch, forward, backward, AdamW step; nothing else) on the same model, the same
initial weights and the same text. The two are run in alternating rounds (ABBA order) so that
load from other processes hits both alike; each side's throughput is the median over rounds.
The ratio trainer / bare is printed last.

Usage:
    python benchmarks/trainer_speed.py            # full: shape "s", ~1-2 minutes on 2 cores
    python benchmarks/trainer_speed.py --quick    # < 30 s: shape "xs", few steps

Exit status: 1 if the full run measures the trainer below 0.9x of the bare loop. The quick
run only reports (few steps on a shared machine are too noisy to fail on).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch

from bayes_transfer.trainer.corpora import load_corpus
from bayes_transfer.trainer.model import ModelConfig, TransformerLM, make_optimizer
from bayes_transfer.trainer.training import BatchSampler, TrainConfig, as_tensor, train

THRESHOLD = 0.9


def bare_loop(model: TransformerLM, data: torch.Tensor, steps: int, cfg: TrainConfig) -> None:
    """The reference: nothing but sampling, forward, backward and an AdamW step."""
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    generator = torch.Generator().manual_seed(0)
    offsets = torch.arange(cfg.context + 1)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - cfg.context - 1, (cfg.batch_size,), generator=generator)
        windows = data[starts[:, None] + offsets].long()
        loss = model.loss(windows[:, :-1], windows[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def trainer_loop(model: TransformerLM, data: torch.Tensor, steps: int, cfg: TrainConfig) -> None:
    sampler = BatchSampler(data, cfg.batch_size, cfg.context, seed=0)
    train(model, sampler, steps * cfg.batch_size * cfg.context, cfg, "cpu")


def measure(loop, init: TransformerLM, data: torch.Tensor, steps: int, cfg: TrainConfig) -> float:
    """Tokens per second of ``loop`` on a fresh copy of the initial model."""
    model = copy.deepcopy(init)
    start = time.perf_counter()
    loop(model, data, steps, cfg)
    return steps * cfg.batch_size * cfg.context / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a < 30 s run that only reports")
    parser.add_argument("--shape", default=None, help="model shape (default: s; xs with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="steps per round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    shape = args.shape or ("xs" if args.quick else "s")
    steps = args.steps or (15 if args.quick else 40)
    rounds = args.rounds or (3 if args.quick else 10)
    torch.set_num_threads(args.threads)

    cfg = TrainConfig(batch_size=16, context=64, lr=3e-3)
    data = as_tensor(load_corpus("python-src").train)
    torch.manual_seed(0)
    init = TransformerLM(ModelConfig.from_shape(shape, cfg.context))
    loops = {"trainer": trainer_loop, "bare": bare_loop}
    measure(bare_loop, init, data, 3, cfg)  # warm-up: first-call allocations, lazy init
    measure(trainer_loop, init, data, 3, cfg)

    speeds: dict[str, list[float]] = {name: [] for name in loops}
    for r in range(rounds):
        order = ["trainer", "bare"] if r % 2 == 0 else ["bare", "trainer"]  # ABBA
        for name in order:
            speeds[name].append(measure(loops[name], init, data, steps, cfg))
    medians = {name: statistics.median(v) for name, v in speeds.items()}
    for name, v in speeds.items():
        print(f"{name:8s} median {medians[name]:10.0f} tok/s  rounds: {', '.join(f'{s:.0f}' for s in v)}")
    print(f"shape={shape} steps/round={steps} rounds={rounds} threads={args.threads} batch={cfg.batch_size}x{cfg.context}")
    ratio = medians["trainer"] / medians["bare"]
    print(f"ratio trainer/bare = {ratio:.3f}")
    if ratio < THRESHOLD and not args.quick:
        print(f"FAIL: trainer below {THRESHOLD}x of the bare loop", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
