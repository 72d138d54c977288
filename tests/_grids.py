"""Trainer grid files for tests that train: one home for the tiny shape and its training
settings, so a test states only the sizes it trains.

``tiny_grid()`` is the TOML text of a grid of the 1-layer, width-16 shape (a run takes
well under a second on a CPU); the defaults are those of the trainer's tests.
"""

from __future__ import annotations

import json
from collections.abc import Sequence


def tiny_grid(*, sources: Sequence[str] = ("synth-a",), targets: Sequence[str] = ("synth-b",),
              pretrain_tokens: Sequence[int] = (0, 2048, 4096),
              finetune_tokens: Sequence[int] = (1024,), eval_tokens: int = 1024,
              lr: float | None = 0.01, finetune_lr: float | None = 0.005) -> str:
    """The TOML of a tiny grid; ``lr=None`` (or ``finetune_lr=None``) leaves the trainer's
    default.

    Example:
        >>> "pretrain_tokens = [2048]" in tiny_grid(pretrain_tokens=[2048])
        True
    """
    rates = "".join(f"{k} = {v}\n" for k, v in (("lr", lr), ("finetune_lr", finetune_lr))
                    if v is not None)
    return (f"sources = {json.dumps(list(sources))}\n"
            f"targets = {json.dumps(list(targets))}\n"
            'shapes = ["tiny"]\n'
            f"pretrain_tokens = {json.dumps(list(pretrain_tokens))}\n"
            f"finetune_tokens = {json.dumps(list(finetune_tokens))}\n"
            "seeds = [0]\n\n"
            "[custom_shapes.tiny]\nn_layer = 1\nn_head = 2\nd_model = 16\n\n"
            f"[train]\nbatch_size = 8\ncontext = 32\n{rates}eval_tokens = {eval_tokens}\n")
