"""A small decoder-only byte-level transformer, nanoGPT style, and its optimiser.

Pre-norm blocks (LayerNorm -> causal self-attention -> residual, LayerNorm -> MLP ->
residual), learned position embeddings, and an output layer tied to the token embedding, so
that the only "embedding" parameters are the token and position tables. Tokens are raw
bytes (vocabulary 256): nothing to download, and every text is representable.

Model sizes are NAMED shapes (:data:`SHAPES`), so that a grid spec and a run table say
``"s"`` rather than a tuple of numbers.

Example:
    >>> model = TransformerLM(ModelConfig.from_shape("xs", context=64))
    >>> count_non_embedding_params(model) == non_embedding_params(SHAPES["xs"])
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

VOCAB_SIZE = 256  # byte-level tokens

#: Named model shapes, smallest to largest. Non-embedding parameters are
#: ``n_layer * (12 d^2 + 4 d) + 2 d`` (attention 4 d^2, MLP 8 d^2, two LayerNorms per
#: block, one final LayerNorm); see :func:`non_embedding_params`.
SHAPES: dict[str, dict[str, int]] = {
    "xs": {"n_layer": 2, "n_head": 3, "d_model": 48},  # ~56k
    "s": {"n_layer": 2, "n_head": 4, "d_model": 96},  # ~222k
    "m": {"n_layer": 3, "n_head": 4, "d_model": 128},  # ~591k
    "l": {"n_layer": 4, "n_head": 4, "d_model": 256},  # ~3.2M
    "xl": {"n_layer": 8, "n_head": 7, "d_model": 448},  # ~19.3M
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a :class:`TransformerLM`; plain ints so it round-trips through JSON."""

    n_layer: int
    n_head: int
    d_model: int
    context: int
    vocab_size: int = VOCAB_SIZE

    @classmethod
    def from_shape(cls, shape: dict[str, int] | str, context: int) -> ModelConfig:
        """Build a config from a named shape (a key of :data:`SHAPES`) or a shape dict."""
        dims = SHAPES[shape] if isinstance(shape, str) else shape
        return cls(context=context, **dims)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def non_embedding_params(shape: dict[str, int]) -> int:
    """Non-embedding parameter count of a shape, in closed form (the run table's ``params``).

    Example:
        >>> non_embedding_params({"n_layer": 2, "n_head": 3, "d_model": 48})
        55776
    """
    d, n_layer = shape["d_model"], shape["n_layer"]
    return n_layer * (12 * d * d + 4 * d) + 2 * d


def count_non_embedding_params(model: nn.Module) -> int:
    """Count a model's parameters, leaving out the token and position embedding tables.

    The output layer is tied to the token embedding, so it is left out with it (Kaplan et
    al. 2020's convention for N).
    """
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.d_model % cfg.n_head:
            raise ValueError(f"d_model={cfg.d_model} is not a multiple of n_head={cfg.n_head}")
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        # (batch, length, width) -> (batch, head, length, head_dim)
        q, k, v = (t.view(batch, length, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg)
        self.ln_mlp = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, 4 * cfg.d_model, bias=False),
            nn.GELU(),
            nn.Linear(4 * cfg.d_model, cfg.d_model, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.mlp(self.ln_mlp(x))


class TransformerLM(nn.Module):
    """Decoder-only transformer over bytes; ``forward(idx)`` returns next-byte logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.d_model)
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by depth so the residual stream's variance
        # does not grow with the number of layers.
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(positions)
        for block in self.blocks:
            x = block(x)
        # Output layer tied to the token embedding (saves parameters, standard for GPTs).
        return F.linear(self.ln_out(x), self.tok_emb.weight)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-byte cross-entropy in nats."""
        logits = self(idx)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, device_type: str = "cpu"
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on LayerNorm gains/biases)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel is the fastest on CUDA; on CPU the default (foreach) is.
    return torch.optim.AdamW(
        groups, lr=lr, betas=(0.9, 0.95), fused=device_type == "cuda" or None
    )


def lr_at(step: int, total_steps: int, peak_lr: float, warmup_steps: int, min_ratio: float) -> float:
    """Linear warmup to ``peak_lr``, then cosine decay to ``min_ratio * peak_lr``.

    Example:
        >>> lr_at(0, 100, 1.0, 10, 0.1), lr_at(9, 100, 1.0, 10, 0.1), lr_at(99, 100, 1.0, 10, 0.1)
        (0.1, 1.0, 0.1)
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps) if total_steps > warmup_steps + 1 else 1.0
    return peak_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
