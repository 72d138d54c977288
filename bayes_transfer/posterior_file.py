"""The one guarded reader of posterior files (``Posterior.load`` calls it).

A posterior file may come from someone else, so it is read in three steps, and every
problem with the file is a :class:`~bayes_transfer.inference.PosteriorFileError` that
names it; anything else that goes wrong is a bug of ours and surfaces as one.

1. **HDF5 layout, before any data is read** (with h5py): the root holds only the ArviZ
   groups the format uses (``posterior`` and ``constant_data``, optionally
   ``sample_stats``, ``observed_data``, ``log_likelihood``, ``posterior_predictive``,
   ``prior``, ``prior_predictive``, ``predictions`` and ``predictions_constant_data``),
   each holding only datasets by hard links.
   Refused: external links, soft links, nested groups, HDF5 external storage (a dataset
   whose bytes live in another file, e.g. ``/etc/passwd``), virtual datasets, filters
   other than deflate/shuffle/fletcher32 (no plugin is ever loaded), dtypes other than
   numbers and strings, and any dataset whose declared size is absurd for the bytes it
   has in the file (never-written chunks, or more than deflate's ~1000:1 can give), so
   that a small file cannot make the reader allocate gigabytes.
2. **The groups**, read with xarray into memory (the netCDF4 engine; h5netcdf where the
   netCDF4 package is missing).
3. **The structure, per format version**: the format version an integer scalar; the
   stored spec and units valid; every posterior variable a float with dims
   ``(chain, draw, ...)`` drawn from ``source``, ``target``, ``pair`` and ``row``, at
   least one chain and one draw; ``sigma`` and ``log_<p>`` for every parameter ``p`` of
   the spec, at the spec's level; the run table's columns of the right dtypes, and the
   table itself valid (:func:`~bayes_transfer.data.load_runs`). Extra float variables
   with known dims are accepted (sites a newer model adds). The optional groups of draws
   (see :mod:`bayes_transfer.predictive`): float variables only, with dims exactly
   ``(chain, draw, row)`` (``prior``: as the posterior's), as many chains and draws as
   the posterior (``prior`` and ``prior_predictive``: as each other), as many rows as the
   run table (``predictions``: as ``predictions_constant_data``, which it comes with),
   and only dimension coordinates. The law parameters under their own names
   (:mod:`bayes_transfer.named_params`): natural dims, and equal to ``exp(log_<p>)``;
   ``unconstrained_posterior``: only the spec's sampler sites (offsets, loadings), each
   with its dims and the posterior's coordinates, none also in the posterior. A file
   without them (written before) gains them as it is read.

Example:
    >>> idata, spec, runs = read_posterior("posterior.nc")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import xarray as xr

from bayes_transfer import named_params
from bayes_transfer.data import REQUIRED_COLUMNS, RunTable, RunTableError, load_runs, pair_label
from bayes_transfer.spec import ModelSpec, SpecError

__all__ = ["read_posterior", "REQUIRED_GROUPS", "OPTIONAL_GROUPS", "LEVEL_DIMS"]

REQUIRED_GROUPS = ("posterior", "constant_data")
OPTIONAL_GROUPS = ("sample_stats", "observed_data", "log_likelihood", "posterior_predictive",
                   "prior", "prior_predictive", "predictions", "predictions_constant_data",
                   "unconstrained_posterior")
#: Groups of draws over the fitted rows, dims exactly (chain, draw, row): the posterior's
#: chains and draws (``prior_predictive``: the ``prior`` group's).
_ROW_DRAW_GROUPS = ("log_likelihood", "posterior_predictive", "prior_predictive")
#: The dims a posterior variable may have after ``(chain, draw)``.
LEVEL_DIMS = ("source", "target", "pair", "row", "factor")
_POSTERIOR_COORDS = {"chain", "draw", *LEVEL_DIMS, "pair_source", "pair_target",
                     "pair_observed"}
# deflate cannot compress more than ~1032:1; a dataset declaring more than this many
# bytes per stored byte was never written (or was crafted), and is not read.
_MAX_RATIO = 1100
_SLACK = 1 << 16  # tiny datasets: header-sized differences are fine
_FILTERS = {h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32}
# netCDF marks a dimension that has no variable with this NAME; such a dataset is never
# read as data (its storage is unallocated by design).
_NC_DIM_ONLY = b"This is a netCDF dimension but not a netCDF variable."
_STRING_CHUNK = 65536
_TEXT_COLUMNS = ("run_id", "source", "target")
_NUMBER_COLUMNS = ("params", "pretrain_tokens", "finetune_tokens", "loss", "loss_se", "seed")


def _error(path: Path, message: str) -> Exception:
    from bayes_transfer.inference import PosteriorFileError

    return PosteriorFileError(f"{path}: {message}")


def read_posterior(path: str | os.PathLike[str]) -> tuple[Any, ModelSpec, RunTable]:
    """Read and validate a posterior file: ``(InferenceData, spec, run table)``.

    Raises:
        PosteriorFileError: a missing, unreadable, damaged, foreign or hostile file.
    """
    import arviz as az

    path = Path(path)
    _check_regular_file(path)
    names = _check_layout(path)
    groups = _read_groups(path, names)
    spec, table = _check_structure(path, groups)
    idata = az.InferenceData(**groups)
    # A file written before the named parameters gains them (validated files only).
    named_params.organise(idata, spec)
    return idata, spec, table


# ---- 0. a regular file -----------------------------------------------------------------


def _check_regular_file(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise _error(path, "no such posterior file") from None
    except OSError as exc:
        raise _error(path, f"cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise _error(path, f"is {kind}; expected a posterior file written by `fit`")


# ---- 1. HDF5 layout -------------------------------------------------------------------


def _check_layout(path: Path) -> list[str]:
    """Check the HDF5 layout without reading data; return the groups present."""
    size = path.stat().st_size
    try:
        fh = h5py.File(path, "r")
    except Exception as exc:  # h5py raises OSError, and others on garbage  # noqa: BLE001
        raise _error(path, "not a readable posterior file (not netCDF/HDF5, truncated or "
                           f"corrupted?): {type(exc).__name__}: {exc}") from None
    try:
        with fh:
            return _walk(path, fh, size)
    except _LayoutError as exc:
        raise _error(path, str(exc)) from None
    except Exception as exc:  # a damaged HDF5 header while walking  # noqa: BLE001
        raise _error(path, "not a readable posterior file (truncated or corrupted?): "
                           f"{type(exc).__name__}: {exc}") from None


class _LayoutError(Exception):
    pass


def _walk(path: Path, fh: h5py.File, file_size: int) -> list[str]:
    link = fh.get("posterior", getlink=True)
    if not isinstance(link, h5py.HardLink) or not isinstance(fh["posterior"], h5py.Group) \
            or "bayes_transfer_format" not in fh["posterior"].attrs:
        raise _LayoutError("not a bayes_transfer posterior (no posterior group with a "
                           "bayes_transfer_format attribute)")
    present = []
    for name in fh:
        link = fh.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise _LayoutError(f"/{name} is a {type(link).__name__}; a posterior file holds "
                               "no links to other files or objects")
        if name not in (*REQUIRED_GROUPS, *OPTIONAL_GROUPS):
            raise _LayoutError(f"unexpected /{name}; a posterior file holds only the groups "
                               f"{', '.join((*REQUIRED_GROUPS, *OPTIONAL_GROUPS))}")
        group = fh[name]
        if not isinstance(group, h5py.Group):
            raise _LayoutError(f"/{name} is not a group")
        for item in group:
            where = f"/{name}/{item}"
            link = group.get(item, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise _LayoutError(f"{where} is a {type(link).__name__}; a posterior file "
                                   "holds no links to other files or objects")
            obj = group[item]
            if not isinstance(obj, h5py.Dataset):
                raise _LayoutError(f"unexpected group {where}")
            _check_dataset(where, obj, file_size)
        present.append(name)
    missing = [g for g in REQUIRED_GROUPS if g not in present]
    if missing:
        raise _LayoutError(f"missing group(s) {', '.join(missing)}")
    return present


def _check_dataset(where: str, ds: h5py.Dataset, file_size: int) -> None:
    if ds.is_virtual:
        raise _LayoutError(f"{where} is a virtual dataset (it reads other files); refused")
    if ds.external:
        raise _LayoutError(f"{where} uses HDF5 external storage (its bytes live in another "
                           f"file, {ds.external[0][0]!r}); refused")
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, name = plist.get_filter(i)
        if code not in _FILTERS:
            raise _LayoutError(f"{where} uses the HDF5 filter {name.decode(errors='replace')!r}"
                               f" ({code}); only deflate, shuffle and fletcher32 are read")
    dtype = ds.dtype
    string = h5py.check_string_dtype(dtype)
    if string is None and dtype.kind not in "fiub":
        raise _LayoutError(f"{where} has dtype {dtype}; a posterior file holds numbers and "
                           "strings only")
    if _dimension_only(ds):
        return  # never read as data
    if ds.ndim > 8:
        raise _LayoutError(f"{where} has {ds.ndim} dimensions")
    if ds.size == 0:
        return
    stored = ds.id.get_storage_size()
    declared = ds.size * dtype.itemsize
    if stored == 0:
        raise _LayoutError(f"{where} declares {ds.shape} values that were never written")
    if declared > _MAX_RATIO * stored + _SLACK:
        raise _LayoutError(f"{where} declares {declared:,} bytes but stores {stored:,}: "
                           "more than compression can give; refused")
    if ds.chunks is not None:
        expected = math.prod(-(-n // c) for n, c in zip(ds.shape, ds.chunks, strict=True))
        if ds.id.get_num_chunks() < expected:
            raise _LayoutError(f"{where} has chunks that were never written")
    if string is not None and string.length is None:
        # Variable-length strings live in a heap that entries may share: count their
        # bytes before xarray reads them, so many entries cannot expand one big string.
        total = 0
        for start in range(0, ds.shape[0] if ds.ndim else 1, _STRING_CHUNK):
            part = ds[start:start + _STRING_CHUNK] if ds.ndim else [ds[()]]
            total += sum(len(v) for v in np.ravel(part))
            if total > file_size:
                raise _LayoutError(f"{where} holds more text than the file has bytes")


def _dimension_only(ds: h5py.Dataset) -> bool:
    name = ds.attrs.get("NAME") if "NAME" in ds.attrs else None
    return isinstance(name, bytes | np.bytes_) and bytes(name).startswith(_NC_DIM_ONLY)


# ---- 2. the groups ----------------------------------------------------------------------


def _engine() -> str:
    """xarray's engine for reading: netCDF4 (the netCDF-C library) where installed.

    h5netcdf looks each variable's dimensions up from the file's root again on every
    access (h5netcdf issue #195): ~4,000 HDF5 lookups, 1-1.6 s, for a small posterior
    file, paid by every ``report``, ``predict``, ``plot`` and ``suggest``; netCDF4 read
    the same groups identically 3.5-4.8x faster (``benchmarks/cli_startup.py``). Files are still
    written with h5netcdf (``inference.netcdf_bytes``)."""
    try:
        import netCDF4  # noqa: F401
    except ImportError:  # a dependency, but an install without it still reads files
        return "h5netcdf"
    return "netcdf4"


def _read_groups(path: Path, names: list[str]) -> dict[str, xr.Dataset]:
    groups = {}
    engine = _engine()
    for name in names:
        try:
            with xr.open_dataset(path, group=name, engine=engine) as ds:
                groups[name] = ds.load()
        except Exception as exc:  # netCDF-C/h5netcdf/xarray on a damaged file  # noqa: BLE001
            raise _error(path, f"group {name} cannot be read (truncated or corrupted?): "
                               f"{type(exc).__name__}: {exc}") from None
    return groups


# ---- 3. the structure ---------------------------------------------------------------------


def _check_structure(path: Path, groups: dict[str, xr.Dataset]) -> tuple[ModelSpec, RunTable]:
    post = groups["posterior"]
    attrs = post.attrs
    if "bayes_transfer_format" not in attrs:
        raise _error(path, "not a bayes_transfer posterior (no bayes_transfer_format "
                           "attribute)")
    version = _integer(path, attrs["bayes_transfer_format"], "the format version")
    from bayes_transfer.inference import FORMAT_VERSION

    if version > FORMAT_VERSION:
        raise _error(path, f"format {version} is newer than this bayes_transfer reads "
                           f"({FORMAT_VERSION}); upgrade")
    if version < 1:
        raise _error(path, f"format version {version} is not one bayes_transfer wrote")
    spec = _spec(path, attrs.get("spec"))
    _units(path, attrs.get("units"))
    for key in ("table_name", "law", "backend", "sampler_settings", "discrepancy",
                "centred_groups", "sheared", "sheared_means"):
        if key in attrs and not isinstance(attrs[key], str):
            raise _error(path, f"damaged posterior metadata: {key} is not text")
    if spec.discrepancy is not None:
        _discrepancy(path, attrs.get("discrepancy"), spec, post)
    if "rows_left_out" in attrs and _integer(path, attrs["rows_left_out"],
                                             "rows_left_out") < 0:
        raise _error(path, "damaged posterior metadata: rows_left_out is negative")
    levels = _posterior_coords(path, post)
    table = _run_table(path, groups["constant_data"], str(attrs.get("table_name", path.name)))
    try:
        table = table.with_levels(*levels)
    except RunTableError as exc:
        raise _error(path, f"damaged run table: {exc}") from None
    sizes = {"chain": post.sizes["chain"], "draw": post.sizes["draw"], "row": len(table),
             "source": len(levels[0]), "target": len(levels[1]),
             "pair": len(levels[0]) * len(levels[1]), "knot": post.sizes.get("knot", 0),
             # The rank of the spec's pair interactions (spec.ParamSpec.factors).
             "factor": spec.factor_rank}
    _posterior_vars(path, post, spec, sizes, groups.get(named_params.UNCONSTRAINED))
    if "sample_stats" in groups:
        _sample_stats(path, groups["sample_stats"], sizes)
    if "observed_data" in groups:
        _numeric_group(path, groups["observed_data"], "observed_data", sizes)
    _draw_groups(path, groups, sizes)
    return spec, table


def _integer(path: Path, value: Any, what: str) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise _error(path, f"damaged posterior metadata: {what} must be an integer, not "
                           f"{_show(value)}")
    return int(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _spec(path: Path, text: Any) -> ModelSpec:
    if not isinstance(text, str):
        raise _error(path, "damaged posterior metadata: no stored spec (text)")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _error(path, f"damaged posterior metadata: the stored spec is not JSON: "
                           f"{type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise _error(path, "damaged posterior metadata: the stored spec is not a table")
    try:
        return ModelSpec.from_dict(raw, source="<stored spec>")
    except SpecError as exc:
        raise _error(path, f"damaged posterior metadata: {exc}") from None


def _units(path: Path, text: Any) -> None:
    if text is None:
        return  # format 1 files written before units were stored: reference units of 1
    bad = _error(path, "damaged posterior metadata: units must be JSON with exactly the "
                       "keys params and tokens, each a positive number")
    if not isinstance(text, str):
        raise bad
    try:
        units = json.loads(text)
    except (ValueError, RecursionError):
        raise bad from None
    if not isinstance(units, dict) or set(units) != {"params", "tokens"}:
        raise bad
    for value in units.values():
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not (math.isfinite(value) and value > 0):
            raise bad


def _discrepancy(path: Path, text: Any, spec: ModelSpec, post: xr.Dataset) -> None:
    """The learned discrepancy: per axis of the spec, each group's fitted range (numbers
    or null, one list per end, equally long) and the ``disc_<key>_<axis>`` draws (``walk``
    may be absent: a file saved before the drift had a near part)."""
    bad = _error(path, "damaged posterior metadata: discrepancy must be JSON with, for "
                       "each axis of the spec, lists lo and hi of numbers or nulls")
    try:
        meta = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        raise bad from None
    if not isinstance(meta, dict) or set(meta) != set(spec.discrepancy.axes):
        raise bad
    for axis, entry in meta.items():
        if not isinstance(entry, dict):
            raise bad
        ends = [entry.get("lo"), entry.get("hi")]
        if not all(isinstance(e, list) and e for e in ends) or len(ends[0]) != len(ends[1]):
            raise bad
        if not all(v is None or _finite_number(v) for e in ends for v in e):
            raise bad
        if "max_distance" in entry and not (_finite_number(entry["max_distance"])
                                            and entry["max_distance"] >= 0):
            raise bad
        for key in ("mean", "tau", "power") + (("gain",) if spec.discrepancy.late_trend else ()):
            if f"disc_{key}_{axis}" not in post.data_vars:
                raise _error(path, f"damaged posterior: no disc_{key}_{axis} draws for the "
                                   "spec's discrepancy")
        if spec.discrepancy.late_trend:
            late = [entry.get("late_last"), entry.get("late_slope")]
            if not all(isinstance(e, list) and len(e) == len(ends[0])
                       and all(_finite_number(v) for v in e) for e in late):
                raise bad


def _finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


def _texts(path: Path, da: xr.DataArray, what: str) -> list[str]:
    values = da.values
    if values.ndim != 1 or values.dtype.kind not in "OU" or \
            not all(isinstance(v, str) for v in values.tolist()):
        raise _error(path, f"{what} must be a list of names")
    return values.tolist()


def _posterior_coords(path: Path, post: xr.Dataset) -> tuple[list[str], list[str]]:
    for dim in ("chain", "draw"):
        if dim not in post.dims or post.sizes[dim] < 1:
            raise _error(path, f"the posterior has no {dim}s (at least one is needed)")
    unknown = sorted(set(map(str, post.coords)) - _POSTERIOR_COORDS)
    if unknown:
        raise _error(path, f"unexpected posterior coordinate(s) {unknown}")
    for dim in ("chain", "draw", "knot", "factor"):
        if dim in post.coords and post[dim].dtype.kind not in "iu":
            raise _error(path, f"the posterior's {dim} coordinate is not integer")
    missing = [d for d in ("source", "target", "pair") if d not in post.coords]
    if missing:
        raise _error(path, f"the posterior lacks the coordinate(s) {', '.join(missing)}")
    sources = _texts(path, post["source"], "the posterior's source coordinate")
    targets = _texts(path, post["target"], "the posterior's target coordinate")
    pairs = _texts(path, post["pair"], "the posterior's pair coordinate")
    for what, names in (("source", sources), ("target", targets)):
        if not names or len(set(names)) != len(names):
            raise _error(path, f"the posterior's {what} coordinate is empty or repeats a name")
    if pairs != [pair_label(s, t) for s in sources for t in targets]:
        raise _error(path, "the posterior's pair coordinate is not every source->target")
    if len(set(pairs)) != len(pairs):
        raise _error(path, "two of the posterior's pairs share a source->target label "
                     "(a source or target name contains '->')")
    for name in ("pair_source", "pair_target", "pair_observed"):
        if name in post.coords and post[name].dims != ("pair",):
            raise _error(path, f"the posterior's {name} coordinate is not over pairs")
    return sources, targets


def _dims_ok(da: xr.DataArray, leading: tuple[str, ...]) -> bool:
    dims = da.dims
    rest = dims[len(leading):]
    return (dims[:len(leading)] == leading and set(rest) <= set(LEVEL_DIMS)
            and len(set(rest)) == len(rest))


def _posterior_vars(path: Path, post: xr.Dataset, spec: ModelSpec,
                    sizes: dict[str, int], unconstrained: xr.Dataset | None = None) -> None:
    for name, da in post.data_vars.items():
        _draw_var(path, "posterior", name, da, sizes, None)
    required = {"sigma": ("chain", "draw")}
    for p in spec.params.values():
        required[f"log_{p.name}"] = ("chain", "draw") + (() if p.level == "global"
                                                         else (p.level,))
    for name, dims in required.items():
        if name not in post.data_vars:
            raise _error(path, f"the posterior lacks the variable {name} (law "
                               f"{spec.law}, parameters {list(spec.params)})")
        if post[name].dims != dims:
            raise _error(path, f"posterior variable {name} has dims {post[name].dims}, "
                               f"not {dims}")
    _named_vars(path, post, spec)
    if unconstrained is not None:
        _unconstrained_vars(path, post, unconstrained, spec, sizes)


def _named_vars(path: Path, post: xr.Dataset, spec: ModelSpec) -> None:
    """The pair coordinates name each pair's own source and target, and each law
    parameter stored under its own name (bayes_transfer.named_params) has its natural
    dims and is ``exp(log_<name>)``: a file cannot say two things about one parameter."""
    sources, targets = post["source"].values.tolist(), post["target"].values.tolist()
    grid = {"pair_source": [s for s in sources for _ in targets],
            "pair_target": [t for _ in sources for t in targets]}
    for coord, expected in grid.items():
        if coord in post.coords and _texts(path, post[coord], f"the posterior's {coord} "
                                           "coordinate") != expected:
            raise _error(path, f"the posterior's {coord} coordinate does not match its "
                               "pair coordinate")
    if "pair_observed" in post.coords and post["pair_observed"].dtype.kind != "b":
        raise _error(path, "the posterior's pair_observed coordinate is not true/false")
    for name, p in spec.params.items():
        if name not in post.data_vars:
            continue  # a file written before the named parameters; the reader adds them
        dims = ("chain", "draw", *named_params.natural_dims(p.level))
        if post[name].dims != dims:
            raise _error(path, f"posterior variable {name} has dims {post[name].dims}, "
                               f"not {dims}")
        with np.errstate(over="ignore"):
            expected = named_params.natural_param(post, name, p.level).values
        if not np.allclose(post[name].values, expected, rtol=1e-5, atol=0.0,
                           equal_nan=True):
            raise _error(path, f"posterior variable {name} is not exp(log_{name})")


def _unconstrained_vars(path: Path, post: xr.Dataset, ds: xr.Dataset, spec: ModelSpec,
                        sizes: dict[str, int]) -> None:
    """The sampler-only sites (bayes_transfer.named_params.sampler_sites): only the
    spec's, each with its dims and the posterior's sizes and coordinates, none of them
    also in the posterior."""
    group = named_params.UNCONSTRAINED
    sites = named_params.sampler_sites(spec)
    unknown = sorted(set(map(str, ds.coords)) - _POSTERIOR_COORDS)
    if unknown:
        raise _error(path, f"unexpected {group} coordinate(s) {unknown}")
    for name, coord in ds.coords.items():
        if name not in post.coords or coord.dims != post[name].dims or \
                coord.shape != post[name].shape or \
                not np.array_equal(coord.values, post[name].values):
            raise _error(path, f"the {group} coordinate {name} is not the posterior's")
    for name, da in ds.data_vars.items():
        if name not in sites:
            raise _error(path, f"unexpected {group} variable {name}: the spec's sampler "
                               f"sites are {sorted(sites)}")
        if name in post.data_vars:
            raise _error(path, f"{name} is both a posterior and an {group} variable")
        _draw_var(path, group, name, da, sizes, ("chain", "draw", *sites[name]))


def _sample_stats(path: Path, stats: xr.Dataset, sizes: dict[str, int]) -> None:
    for name, da in stats.data_vars.items():
        if da.dtype.kind not in "fiub":
            raise _error(path, f"sample_stats variable {name} has dtype {da.dtype}")
        if da.dims[:2] != ("chain", "draw") or da.sizes["chain"] != sizes["chain"] or \
                da.sizes["draw"] != sizes["draw"]:
            raise _error(path, f"sample_stats variable {name} does not have the posterior's "
                               f"{sizes['chain']} chains x {sizes['draw']} draws")


def _numeric_group(path: Path, ds: xr.Dataset, group: str, sizes: dict[str, int]) -> None:
    for name, da in ds.data_vars.items():
        if da.dtype.kind not in "fiub":
            raise _error(path, f"{group} variable {name} has dtype {da.dtype}")
        if not _dims_ok(da, ()) or any(da.sizes[d] != sizes[d] for d in da.dims):
            raise _error(path, f"{group} variable {name} has dims {dict(da.sizes)}")


def _draw_groups(path: Path, groups: dict[str, xr.Dataset], sizes: dict[str, int]) -> None:
    """The optional groups of draws (bayes_transfer.predictive, comparison): see step 3."""
    if "prior" in groups or "prior_predictive" in groups:
        # The prior has its own chains and draws; its two groups share them.
        prior = next(groups[g] for g in ("prior", "prior_predictive") if g in groups)
        prior_sizes = {**sizes, **{d: prior.sizes.get(d, 0) for d in ("chain", "draw")}}
    if "prior" in groups:
        _draws(path, groups["prior"], "prior", prior_sizes, None)
    for group in _ROW_DRAW_GROUPS:
        if group in groups:
            _draws(path, groups[group], group,
                   prior_sizes if group == "prior_predictive" else sizes,
                   ("chain", "draw", "row"))
    if ("predictions" in groups) != ("predictions_constant_data" in groups):
        raise _error(path, "the groups predictions and predictions_constant_data come "
                           "together (the predicted rows' draws and their columns)")
    if "predictions" in groups:
        constant = groups["predictions_constant_data"]
        n_rows = constant.sizes.get("row", 0)
        _draws(path, groups["predictions"], "predictions", {**sizes, "row": n_rows},
               ("chain", "draw", "row"))
        _coords(path, constant, "predictions_constant_data", ("row",))
        for var, da in constant.data_vars.items():
            values = da.values
            if not str(var).startswith("run_") or da.dims != ("row",) or not (
                    values.dtype.kind in "fiub" or (values.dtype.kind in "OU" and all(
                        isinstance(v, str) for v in values.tolist()))):
                raise _error(path, f"predictions_constant_data variable {var} is not a "
                                   "run-table column (run_<name>, dims (row,), numbers or "
                                   "text)")


def _draws(path: Path, ds: xr.Dataset, group: str, sizes: dict[str, int],
           dims: tuple[str, ...] | None) -> None:
    """Float draws with ``dims`` (None: (chain, draw) then level dims) of ``sizes``."""
    if not ds.data_vars:
        raise _error(path, f"the group {group} holds no variables")
    for d in ("chain", "draw"):
        if sizes[d] < 1:
            raise _error(path, f"the group {group} has no {d}s (at least one is needed)")
    for name, da in ds.data_vars.items():
        _draw_var(path, group, name, da, sizes, dims)
    _coords(path, ds, group, ("chain", "draw", *LEVEL_DIMS))


def _draw_var(path: Path, group: str, name: str, da: xr.DataArray, sizes: dict[str, int],
              dims: tuple[str, ...] | None) -> None:
    """One variable of draws: floating point, with ``dims`` (None: chain, draw, then any
    level dims) of ``sizes``; the one check of every group of draws."""
    if da.dtype.kind != "f":
        raise _error(path, f"{group} variable {name} has dtype {da.dtype}; draws are "
                           "floating-point numbers")
    if (da.dims != dims) if dims else not _dims_ok(da, ("chain", "draw")):
        want = ", ".join(dims) if dims else "chain, draw, then any of " + ", ".join(LEVEL_DIMS)
        raise _error(path, f"{group} variable {name} has dims {da.dims}; expected ({want})")
    for dim in da.dims:
        if da.sizes[dim] != sizes[dim]:
            raise _error(path, f"{group} variable {name} has {da.sizes[dim]} {dim}s, "
                               f"not {sizes[dim]}")


def _coords(path: Path, ds: xr.Dataset, group: str, allowed: tuple[str, ...]) -> None:
    """Only dimension coordinates of ``allowed`` dims; chain and draw integer."""
    for name, coord in ds.coords.items():
        if name not in allowed or coord.dims != (name,):
            raise _error(path, f"unexpected {group} coordinate {name}")
        if name in ("chain", "draw", "factor") and coord.dtype.kind not in "iu":
            raise _error(path, f"the {group} group's {name} coordinate is not integer")


def _run_table(path: Path, ds: xr.Dataset, name: str) -> RunTable:
    cols: dict[str, np.ndarray] = {}
    for var, da in ds.data_vars.items():
        if not str(var).startswith("run_"):
            raise _error(path, f"unexpected constant_data variable {var}")
        if da.dims != ("row",):
            raise _error(path, f"run table column {var} has dims {da.dims}, not (row,)")
        col = str(var)[len("run_"):]
        values = da.values
        if col in _TEXT_COLUMNS:
            ok = values.dtype.kind in "OU" and all(isinstance(v, str) for v in values.tolist())
        elif col in _NUMBER_COLUMNS:
            ok = values.dtype.kind in "fiu"
        else:  # a column the user's table had besides the contract's: text or numbers
            ok = values.dtype.kind in "fiub" or (values.dtype.kind in "OU" and all(
                isinstance(v, str) for v in values.tolist()))
        if not ok:
            raise _error(path, f"run table column {col} has dtype {values.dtype}")
        cols[col] = values
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise _error(path, f"the stored run table lacks the column(s) {', '.join(missing)}")
    try:
        return load_runs(pd.DataFrame(cols), name=name)
    except RunTableError as exc:
        raise _error(path, f"damaged run table: {exc}") from None
