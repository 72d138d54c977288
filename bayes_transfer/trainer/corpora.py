"""Text distributions for the trainer: real text that ships with Python, and synthetic
languages whose relatedness is set by construction. Nothing is downloaded.

Names a grid may use:

* ``python-src``   the Python standard library's own ``.py`` source (no tests, no site-packages)
* ``python-tests`` the standard library's test suite (``Lib/test``), Python code of another style
* ``english``      English prose: ``pydoc_data.topics`` (the language reference pages that
  ``help()`` shows) and the standard library's module docstrings
* ``c-src``        C headers from ``sysconfig.get_paths()['include']`` (``Python.h`` and friends)
* ``synth-a`` .. ``synth-d`` random Markov languages of one family: ``synth-a`` is the base
  language, and ``synth-b``/``synth-c``/``synth-d`` share 80% / 20% / 0% of its
  transition rules (see :func:`synthetic_text`); ``synth:SHARE[:VARIANT]`` makes any other
* ``dir:PATH`` every text file under a directory; ``file:PATH`` one file

Each corpus is split once into a training part and a held-out part, deterministically on
every machine and in every process: file-based corpora put a file in the held-out part when
the SHA-256 of its relative path says so (about 10% of the files), so no file is in both;
synthetic languages draw the held-out text from its own random stream.

Example:
    >>> corpus = load_corpus("synth-b")
    >>> len(corpus.train) > len(corpus.heldout) > 0
    True
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
import stat
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HELDOUT_PERCENT = 10
_SEPARATOR = b"\n\n"

#: The synthetic family: name -> (share with synth-a, variant seed).
SYNTHETIC: dict[str, tuple[float, int]] = {
    "synth-a": (1.0, 0),
    "synth-b": (0.8, 1),
    "synth-c": (0.2, 2),
    "synth-d": (0.0, 3),
}
REAL = ("python-src", "python-tests", "english", "c-src")


@dataclass(frozen=True)
class Corpus:
    """A text distribution as bytes, split into disjoint training and held-out parts."""

    name: str
    train: bytes
    heldout: bytes

    @functools.cached_property
    def digest(self) -> str:
        """Content hash: part of a run's identity, so changed text means new runs."""
        h = hashlib.sha256()
        for part in (self.train, b"\x00heldout\x00", self.heldout):
            h.update(part)
        return h.hexdigest()[:16]


def corpus_names() -> list[str]:
    """The built-in corpus names (``dir:``, ``file:`` and ``synth:`` forms come on top)."""
    return [*REAL, *SYNTHETIC]


def check_corpus_name(name: str) -> None:
    """Raise ``ValueError`` with a one-line message if ``name`` names no corpus."""
    if name in REAL or name in SYNTHETIC:
        return
    kind, _, arg = name.partition(":")
    if kind == "dir" and Path(arg).is_dir():
        return
    if kind == "file" and _regular_text_file(Path(arg)):
        return
    if kind == "synth":
        _parse_synth(name)
        return
    if kind in ("dir", "file"):
        raise ValueError(f"corpus {name!r}: {arg!r} is not an existing {'directory' if kind == 'dir' else 'regular, non-empty file'}")
    raise ValueError(
        f"unknown corpus {name!r}; expected one of {', '.join(corpus_names())}, "
        "synth:SHARE[:VARIANT], dir:PATH or file:PATH"
    )


@functools.lru_cache(maxsize=16)
def load_corpus(name: str) -> Corpus:
    """Load (and cache, per process) the corpus called ``name``."""
    check_corpus_name(name)
    if name in SYNTHETIC or name.startswith("synth:"):
        share, variant = SYNTHETIC.get(name) or _parse_synth(name)
        return Corpus(name, synthetic_text(share, variant, 0), synthetic_text(share, variant, 1))
    kind, _, arg = name.partition(":")
    if kind == "file":
        return _split_bytes(name, Path(arg).read_bytes())
    if kind == "dir":
        root = Path(arg)
        files = sorted(p for p in root.rglob("*") if _inside(root, p) and not _is_binary(p))
        return _split_documents(name, ((p.relative_to(root).as_posix(), p.read_bytes()) for p in files))
    return _split_documents(name, _REAL_LOADERS[name]())


# -- real text ------------------------------------------------------------------------------


def _stdlib_files(tests: bool) -> Iterable[tuple[str, bytes]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if "site-packages" in parts or "__pycache__" in parts:
            continue
        in_tests = parts[0] == "test" or "tests" in parts or "test" in parts
        if in_tests == tests:
            yield path.relative_to(root).as_posix(), path.read_bytes()


def _python_src() -> Iterable[tuple[str, bytes]]:
    return _stdlib_files(tests=False)


def _python_tests() -> Iterable[tuple[str, bytes]]:
    return _stdlib_files(tests=True)


_MODULE_DOCSTRING = re.compile(rb'\A(?:[ \t]*(?:#[^\n]*)?\n)*[ \t]*[rRuU]?("""|\'\'\')(.*?)\1', re.S)


def _english() -> Iterable[tuple[str, bytes]]:
    import pydoc_data.topics

    for key in sorted(pydoc_data.topics.topics):
        yield f"topic:{key}", pydoc_data.topics.topics[key].encode("utf-8")
    # Module docstrings, keyed by the same relative path as in python-src, so a module
    # held out there is held out here too (its prose never trains a python-src model that
    # is then scored on it as English, or the other way round).
    for relpath, source in _python_src():
        match = _MODULE_DOCSTRING.match(source)
        if match and len(match.group(2).strip()) > 200:
            yield relpath, match.group(2).strip()


def _c_src() -> Iterable[tuple[str, bytes]]:
    root = Path(sysconfig.get_paths()["include"])
    for path in sorted(root.rglob("*.h")):
        yield path.relative_to(root).as_posix(), path.read_bytes()


_REAL_LOADERS = {
    "python-src": _python_src,
    "python-tests": _python_tests,
    "english": _english,
    "c-src": _c_src,
}


def is_heldout(key: str) -> bool:
    """Whether the document called ``key`` belongs to the held-out part (stable everywhere).

    Example:
        >>> is_heldout("os.py") == is_heldout("os.py")
        True
    """
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < HELDOUT_PERCENT


def _split_documents(name: str, documents: Iterable[tuple[str, bytes]]) -> Corpus:
    train, heldout = [], []
    for key, text in documents:
        (heldout if is_heldout(key) else train).append(text)
    if not train or not heldout:
        # Too few documents to split by name: fall back to a split of the text itself.
        return _split_bytes(name, _SEPARATOR.join(train + heldout))
    return Corpus(name, _SEPARATOR.join(train), _SEPARATOR.join(heldout))


def _split_bytes(name: str, text: bytes) -> Corpus:
    cut = len(text) * (100 - HELDOUT_PERCENT) // 100
    if cut == 0 or cut == len(text):
        raise ValueError(f"corpus {name!r} is too small to split ({len(text)} bytes)")
    return Corpus(name, text[:cut], text[cut:])


def _regular_text_file(path: Path) -> bool:
    """A regular file with bytes in it, not a kernel file (``/proc``, ``/sys``, ``/dev``):
    those report a size of 0 and read as the process's secrets (``/proc/self/environ``)."""
    try:
        info = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_size > 0


def _inside(root: Path, path: Path) -> bool:
    """A regular file under ``root`` that is no link and does not lead out of it."""
    if path.is_symlink() or not _regular_text_file(path):
        return False
    return path.resolve().is_relative_to(root.resolve())


def _is_binary(path: Path) -> bool:
    with open(path, "rb") as fh:
        return b"\x00" in fh.read(4096)


# -- synthetic languages ----------------------------------------------------------------------

_FAMILY_SEED = 20240817
_ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU "  # 48 symbols; the space makes "words"
_ORDER = 1  # the next symbol depends on the previous one
_N_SUCCESSORS = 6  # each context allows this many next symbols, with Zipf weights 1/rank
_TRAIN_BYTES = 1_000_000
_HELDOUT_BYTES = 100_000


def _parse_synth(name: str) -> tuple[float, int]:
    fields = name.split(":")[1:]
    try:
        share = float(fields[0])
        variant = int(fields[1]) if len(fields) > 1 else 0
    except (ValueError, IndexError):
        raise ValueError(f"corpus {name!r}: expected synth:SHARE[:VARIANT], e.g. synth:0.5:7") from None
    if not 0.0 <= share <= 1.0 or len(fields) > 2:
        raise ValueError(f"corpus {name!r}: SHARE must be in [0, 1]")
    return share, variant


def _random_rules(rng: np.random.Generator) -> np.ndarray:
    """For each context (the previous ``_ORDER`` symbols), its allowed next symbols, most likely first."""
    n_contexts = len(_ALPHABET) ** _ORDER
    keys = rng.random((n_contexts, len(_ALPHABET)))
    return np.argsort(keys, axis=1)[:, :_N_SUCCESSORS]


@functools.lru_cache(maxsize=8)
def _rules(share: float, variant: int) -> np.ndarray:
    """The base language's rules, each context's rule kept with probability ``share`` and
    redrawn otherwise: ``share`` is the relatedness to ``synth-a``, by construction."""
    base = _random_rules(np.random.default_rng(_FAMILY_SEED))
    if share >= 1.0:
        return base
    rng = np.random.default_rng([_FAMILY_SEED, variant, int(round(share * 1_000_000))])
    fresh = _random_rules(rng)
    keep = rng.random(len(base)) < share
    return np.where(keep[:, None], base, fresh)


def synthetic_text(share: float, variant: int, stream: int) -> bytes:
    """Sample text from a Markov language of the synthetic family.

    Each context allows ``_N_SUCCESSORS`` next symbols with weights proportional to 1/rank.
    ``stream`` 0 is the training text and 1 the held-out text: independent samples of the
    same language.
    """
    rules = _rules(share, variant).tolist()
    n_symbols = len(_ALPHABET)
    rng = np.random.default_rng([_FAMILY_SEED, variant, int(round(share * 1_000_000)), 99, stream])
    weights = 1.0 / np.arange(1, _N_SUCCESSORS + 1)
    cumulative = (np.cumsum(weights) / weights.sum()).tolist()
    size = _TRAIN_BYTES if stream == 0 else _HELDOUT_BYTES
    ranks = [min(bisect.bisect_left(cumulative, u), _N_SUCCESSORS - 1) for u in rng.random(size).tolist()]
    n_contexts = n_symbols**_ORDER
    context = 0  # the last _ORDER symbols, as a base-n_symbols number
    symbols = bytearray(size)
    for i, rank in enumerate(ranks):
        symbol = rules[context][rank]
        context = (context * n_symbols + symbol) % n_contexts
        symbols[i] = _ALPHABET[symbol]
    return bytes(symbols)
