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
* ``words-a`` .. ``words-d`` the same construction one level up: random grammars over
  common English words (see :func:`word_text`), so that a model pre-trained on real text
  already knows the words' spelling; ``words:SHARE[:VARIANT]`` makes any other
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
from collections.abc import Callable, Iterable
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
#: The word-level family: name -> (share with words-a, variant seed).
WORDS: dict[str, tuple[float, int]] = {
    "words-a": (1.0, 0),
    "words-b": (0.8, 1),
    "words-c": (0.2, 2),
    "words-d": (0.0, 3),
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
    return [*REAL, *SYNTHETIC, *WORDS]


def check_corpus_name(name: str) -> None:
    """Raise ``ValueError`` with a one-line message if ``name`` names no corpus."""
    if name in REAL or _synthetic(name):  # a malformed synth:/words: form raises there
        return
    kind, _, arg = name.partition(":")
    if kind == "dir" and Path(arg).is_dir():
        return
    if kind == "file" and _regular_text_file(Path(arg)):
        return
    if kind in ("dir", "file"):
        raise ValueError(f"corpus {name!r}: {arg!r} is not an existing {'directory' if kind == 'dir' else 'regular, non-empty file'}")
    raise ValueError(
        f"unknown corpus {name!r}; expected one of {', '.join(corpus_names())}, "
        "synth:SHARE[:VARIANT], words:SHARE[:VARIANT], dir:PATH or file:PATH"
    )


@functools.lru_cache(maxsize=16)
def load_corpus(name: str) -> Corpus:
    """Load (and cache, per process) the corpus called ``name``."""
    check_corpus_name(name)
    if family := _synthetic(name):
        sample, share, variant = family
        return Corpus(name, sample(share, variant, 0), sample(share, variant, 1))
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


def _synthetic(name: str) -> tuple[Callable[[float, int, int], bytes], float, int] | None:
    """(text sampler, share, variant) of a synthetic language's name, or None if it names
    none: a family's named language (``synth-b``) or its ``PREFIX:SHARE[:VARIANT]`` form."""
    for prefix, named, sample in (("synth", SYNTHETIC, synthetic_text), ("words", WORDS, word_text)):
        if name in named:
            return (sample, *named[name])
        if name.startswith(prefix + ":"):
            return (sample, *_parse_synth(name))
    return None


def _parse_synth(name: str) -> tuple[float, int]:
    fields = name.split(":")[1:]
    try:
        share = float(fields[0])
        variant = int(fields[1]) if len(fields) > 1 else 0
    except (ValueError, IndexError):
        kind = name.partition(":")[0]
        raise ValueError(f"corpus {name!r}: expected {kind}:SHARE[:VARIANT], e.g. {kind}:0.5:7") from None
    if not 0.0 <= share <= 1.0 or len(fields) > 2:
        raise ValueError(f"corpus {name!r}: SHARE must be in [0, 1]")
    return share, variant


def _random_rules(rng: np.random.Generator, n_contexts: int = len(_ALPHABET) ** _ORDER,
                  n_symbols: int = len(_ALPHABET), successors: int = _N_SUCCESSORS) -> np.ndarray:
    """For each context, its allowed next symbols (indices), most likely first."""
    keys = rng.random((n_contexts, n_symbols))
    return np.argsort(keys, axis=1)[:, :successors]


@functools.lru_cache(maxsize=16)
def _rules(share: float, variant: int, family: str = "synth") -> np.ndarray:
    """The base language's rules, each context's rule kept with probability ``share`` and
    redrawn otherwise: ``share`` is the relatedness to the family's base language
    (``synth-a`` or ``words-a``), by construction."""
    shape = () if family == "synth" else (len(_WORDS), len(_WORDS), _WORD_SUCCESSORS)
    base = _random_rules(np.random.default_rng(_FAMILY_SEED), *shape)
    if share >= 1.0:
        return base
    seed = [_FAMILY_SEED, variant, int(round(share * 1_000_000))]
    rng = np.random.default_rng(seed if family == "synth" else [*seed, 1])
    fresh = _random_rules(rng, *shape)
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


# The word-level family: common English words, so that a model pre-trained on real text
# knows their spelling and its zero-shot loss on them improves with what it learnt (on the
# letter-level family a text model's sharper English predictions only hurt, so zero-shot
# loss there did not fall with model size); the grammar stringing them together is random.
# A fixed list rather than words read from the Python install, so that these corpora (and
# every run id on them) are the same on every machine.
_WORDS = tuple(dict.fromkeys("""
the of and to in is that for it as with was on be by this are or from at which an not
have but all they one had were can there their has been more if when will would who so
no what out up about into than them only other its then two may some could time these
first over new very after also any most such like our well through where much before
must between each those back just many how made under same used while own work life
long because still way even here part place small without number world both never need
come water house old great general high state home since during good last give find
side year day hand point name case fact group problem system program order line value
data file list table text word page book start end true false open close read write call
return test code model field type class object string error result change given next
example default method module function source target series report simple single common
public local global left right early late large light sound form round power level paper
market plant river city north south east west ground heart voice color music money story
party study child woman man people family friend school course
""".split()))  # 220 words, in order, once each
_WORD_SUCCESSORS = 8  # each word allows this many next words, with Zipf weights 1/rank
_WORDS_PER_LINE = 12


def word_text(share: float, variant: int, stream: int) -> bytes:
    """Sample text from a language of the word-level family: a first-order Markov chain
    over :data:`_WORDS`, each word allowing ``_WORD_SUCCESSORS`` next words with weights
    proportional to 1/rank, twelve words a line. ``stream`` 0 is the training text and 1
    the held-out text (independent samples of the same language, ``_TRAIN_BYTES`` and
    ``_HELDOUT_BYTES`` long).

    Example:
        >>> word_text(1.0, 0, 1)[:9]
        b'during tr'
    """
    rules = _rules(share, variant, "words").tolist()
    seed = [_FAMILY_SEED, variant, int(round(share * 1_000_000)), 99, stream, 1]
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, _WORD_SUCCESSORS + 1)
    size = _TRAIN_BYTES if stream == 0 else _HELDOUT_BYTES
    # Each word and its separator take >= 2 bytes, so size // 2 draws always fill the text.
    ranks = rng.choice(_WORD_SUCCESSORS, size=size // 2, p=weights / weights.sum()).tolist()
    words = [w.encode() for w in _WORDS]
    out, length, word = [], 0, 0
    for i, rank in enumerate(ranks):
        word = rules[word][rank]
        end = b"\n" if i % _WORDS_PER_LINE == _WORDS_PER_LINE - 1 else b" "
        out += (words[word], end)
        length += len(words[word]) + 1
        if length >= size:
            break
    return b"".join(out)[:size]
