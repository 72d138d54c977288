"""``bayes-transfer convert``: a published scaling-law table as a run table."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from bayes_transfer._io import atomic_path
from bayes_transfer.cli._app import app, fail

_err = Console(stderr=True, highlight=False, soft_wrap=True)


class PublicFormat(StrEnum):
    rectified_scaling = "rectified-scaling"
    llm_line = "llm-line"
    chinchilla_svg = "chinchilla-svg"


class Metric(StrEnum):
    loss = "loss"
    bpb = "bpb"


@app.command("convert")
def convert_command(
    fmt: PublicFormat = typer.Argument(..., metavar="FORMAT",
                                       help="rectified-scaling, llm-line or chinchilla-svg."),
    src: Path = typer.Argument(..., metavar="IN.csv", help="The published table."),
    out: Path = typer.Option(..., "--out", "-o", help="Run table to write (.csv or .parquet)."),
    target: str | None = typer.Option(
        None, help="rectified-scaling: the target's name (default: the file stem); "
        "chinchilla-svg: the distribution's name (default: massivetext)."),
    metric: Metric = typer.Option(
        Metric.loss, help="llm-line: loss (nats/token) or bpb (bits per byte, written as "
        "nats per byte; comparable across tokenizers)."),
    tokens_per_example: float | None = typer.Option(
        None, help="rectified-scaling: tokens of one fine-tuning example (default: flan 35, "
        "gigaword 44, from the paper's code)."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
) -> None:
    """Convert a published table into a run table that `fit` and `validate` read.

    Formats: rectified-scaling (Lin et al. 2024, benchmark/flan.csv and gigaword.csv of
    linhaowei1/Fine-tuning-Scaling-Law), llm-line (Mayilvahanan et al. 2025,
    data/latest_pm_hf.csv of brendel-group/llm-line) and chinchilla-svg (Epoch AI's
    svg_extracted_data.csv of Hoffmann et al. 2022's runs). Prints on stderr what was
    converted, what was left out and why, and which quantities are unknown (written as
    empty cells, e.g. pretrain_tokens of the rectified-scaling models).

    Example:

        bayes-transfer convert rectified-scaling flan.csv --out flan-runs.csv
    """
    # Imported here, not at the top: pandas would slow `bayes-transfer --help`.
    from bayes_transfer.cli._checks import input_file, output_file, same_file
    from bayes_transfer.data import RunTableError
    from bayes_transfer.public_data import convert

    input_file(src, "published table")
    if same_file(src, out):
        raise fail(f"--out {out} is the input file; give another path")
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise fail(f"--out {out}: use a .csv or .parquet file name")
    output_file(out, inputs=[src], force=force)
    try:
        conv = convert(fmt.value, src, target=target, metric=metric.value,
                       tokens_per_example=tokens_per_example)
    except RunTableError as exc:
        raise fail(str(exc), f"cannot convert {src.name}") from None
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from None
    df = conv.runs.df
    # Columns the schema fills in when absent (no standard error, no seed) stay absent.
    if "loss_se" in df and (df["loss_se"] == 0).all():
        df = df.drop(columns="loss_se")
    if "seed" in df and df["seed"].isna().all():
        df = df.drop(columns="seed")
    try:
        with atomic_path(out) as tmp:
            if suffix == ".csv":
                df.to_csv(tmp, index=False)
            else:
                df.to_parquet(tmp, index=False)
    except (OSError, ImportError) as exc:
        raise fail(f"cannot write {out}: {exc}") from None
    _err.print(f"converted {escape(src.name)} ({fmt.value}) to {escape(str(out))}")
    for line in conv.describe():
        _err.print(line, markup=False)
