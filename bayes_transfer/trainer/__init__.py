"""The bundled trainer: real loss grids on offline text, resumable, local or on Ray.

A small byte-level transformer (:mod:`.model`) is pre-trained on source corpora
(:mod:`.corpora`), fine-tuned on targets and evaluated on held-out text, one run-table row per
evaluation (:mod:`.grid`); jobs run in a local process pool or on Ray (:mod:`.executors`).

Example:
    >>> from bayes_transfer.trainer import load_grid, run_grid
    >>> table = run_grid(load_grid("data/transfer_grid.toml"), "runs.csv")  # doctest: +SKIP
"""

from bayes_transfer.trainer.corpora import Corpus, corpus_names, load_corpus
from bayes_transfer.trainer.grid import Grid, GridError, load_grid, plan_grid, run_grid
from bayes_transfer.trainer.model import (
    SHAPES,
    ModelConfig,
    TransformerLM,
    count_non_embedding_params,
    non_embedding_params,
)
from bayes_transfer.trainer.training import CheckpointError, TrainConfig, load_checkpoint

__all__ = [
    "SHAPES",
    "Corpus",
    "Grid",
    "GridError",
    "ModelConfig",
    "TrainConfig",
    "TransformerLM",
    "corpus_names",
    "count_non_embedding_params",
    "CheckpointError",
    "load_checkpoint",
    "load_corpus",
    "load_grid",
    "non_embedding_params",
    "plan_grid",
    "run_grid",
]
