"""One way every command prints or writes a result table: a rich table, CSV or JSON.

``--format table`` prints a rich table (or the command's own view of it); ``csv`` and
``json`` print machine-readable text. With ``--out`` the text is written atomically
instead: in the format asked for, or with the default ``table``, as JSON when the file
name ends in ``.json`` and as CSV otherwise.
JSON is strict: a NaN or infinite number (say, the R-hat of one chain) is written as null.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bayes_transfer.cli._app import Format, console, finite_json, table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["emit", "print_frame"]


def print_frame(df: pd.DataFrame, title: str, digits: int = 4) -> None:
    """Print a data frame as a rich table, numbers right-aligned to ``digits`` figures."""
    import numpy as np
    import pandas as pd

    grid = table(title, title_justify="left")
    for col in df.columns:
        grid.add_column(str(col), justify="right" if pd.api.types.is_numeric_dtype(df[col])
                        and not pd.api.types.is_bool_dtype(df[col]) else "left")
    for row in df.itertuples(index=False):
        grid.add_row(*[f"{v:.{digits}g}" if isinstance(v, (float, np.floating)) else str(v)
                       for v in row])
    console().print(grid)


def emit(df: pd.DataFrame, fmt: Format, *, title: str = "",
         extra: Mapping[str, Any] | None = None, out: Path | None = None,
         noun: str = "rows", show: Callable[[], None] | None = None) -> None:
    """Print ``df`` in ``fmt``, or write it to ``out``.

    ``extra`` goes into the JSON document beside ``"rows"`` (the records of ``df``);
    ``show`` replaces the default rich table (``print_frame(df, title)``); ``noun`` names
    the rows in the "wrote N rows to OUT" message.
    """
    from bayes_transfer._io import atomic_write_text

    if fmt is Format.table and out is None:
        if show is None:
            print_frame(df, title)
        else:
            show()
        return
    # An explicit --format wins; the default (table) written to a file follows its suffix.
    as_json = fmt is Format.json or (fmt is Format.table and out is not None
                                     and out.suffix.lower() == ".json")
    if as_json:
        doc = {**(extra or {}), "rows": json.loads(df.to_json(orient="records"))}
        text = json.dumps(finite_json(doc), indent=2, allow_nan=False) + "\n"
    else:
        text = df.to_csv(index=False)
    if out is None:
        sys.stdout.write(text)
    else:
        atomic_write_text(out, text)
        console(stderr=True, soft_wrap=True).print(f"wrote {len(df)} {noun} to {out}")
