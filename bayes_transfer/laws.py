"""Scaling laws: the mean functions of every model, implemented once.

Every parameter of every law is positive and is handled on the log scale: a law
receives ``log_params`` (a mapping from parameter name to ``log(value)``) and row
``features`` (``log_N``, ``log_p``, ``log_f``, ``log_D``, ``is_self``) and returns the
*log* of the predicted loss. Sums of power-law terms are computed with
``logaddexp`` (log-sum-exp), so N = 1e12 or f = 1 neither overflows nor loses the small
terms. Arrays broadcast: log params of shape ``(draws, rows)`` or ``(rows,)`` work alike.

Laws are written against an array namespace ``xp`` (``jax.numpy`` by default) that
provides ``exp`` and ``logaddexp``; the PyMC back end passes ``pytensor.tensor`` so that
both back ends evaluate the very same formula.

Everything the rest of the package needs to know about a law is on its :class:`Law`:
its formula, which rows it explains, whether it has a model-size term, its conversion to
raw units and (optionally) default priors. Specs, the model, the baseline, the
acquisition and the allocation advice ask the law; none of them names one. A user adds a
law with one call, :func:`register_law`::

    >>> import jax.numpy as jnp
    >>> def my_law(x, lp, xp=jnp):
    ...     '''L = E + A N^-alpha.'''
    ...     return xp.logaddexp(lp["E"], lp["A"] - xp.exp(lp["alpha"]) * x["log_N"])
    >>> law = register_law(Law("my-size-law", ("E", "A", "alpha"), my_law,
    ...                        gap=None, rows="any", formula="L = E + A N^-alpha",
    ...                        size_term="A N^-alpha"), overwrite=True)
    >>> round(float(law.loss(N=1e6, E=1.5, A=10.0, alpha=0.3)), 5)  # 1.5 + 10 * 1e6**-0.3
    1.65849
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np
import pandas as pd

__all__ = [
    "Law",
    "LAWS",
    "Units",
    "ROW_RULES",
    "register_law",
    "get_law",
    "features",
    "chinchilla",
    "transfer_gap",
    "transfer_gap_size",
    "effective_data",
    "rectified",
]

Array = Any
LawFn = Callable[..., Array]

# Which rows a law can explain: the name of a rule, its mask over the table, and the
# words used when a row breaks it.
ROW_RULES: dict[str, tuple[Callable[[pd.DataFrame], np.ndarray], str]] = {
    "any": (
        lambda df: (df["pretrain_tokens"] + df["finetune_tokens"]).to_numpy() > 0,
        "needs pretrain_tokens + finetune_tokens > 0",
    ),
    "finetuned": (
        lambda df: ((df["finetune_tokens"] > 0) & (df["pretrain_tokens"] > 0)).to_numpy(),
        "needs finetune_tokens > 0 and pretrain_tokens > 0 (a fine-tuned row)",
    ),
    "transfer": (
        # From-scratch rows (source == target) and fine-tuned rows; not cross-pair zero-shot.
        lambda df: (
            ((df["source"].astype(str) == df["target"].astype(str))
             & (df["pretrain_tokens"] + df["finetune_tokens"] > 0))
            | (df["finetune_tokens"] > 0)
        ).to_numpy(),
        "needs finetune_tokens > 0, or source == target (a from-scratch row)",
    ),
    "curve": (
        # A fine-tuning curve of a pre-trained model: zero-shot (f = 0) and fine-tuned rows
        # alike; the pre-training amount is not used (and may be unknown).
        lambda df: (df["finetune_tokens"] >= 0).to_numpy(),
        "needs finetune_tokens >= 0",
    ),
}


@dataclass(frozen=True)
class Law:
    """A named scaling law.

    Attributes:
        name: registry key, used in model specs (``law = "transfer-gap"``).
        params: parameter names; each is positive and modelled as ``log(param)``.
        fn: ``fn(features, log_params, xp=jnp) -> log loss``.
        gap: the parameter that measures a pair's transfer gap (reported first), if any.
        rows: the row rule (a key of :data:`ROW_RULES`) saying which rows it can explain.
        to_raw: ``to_raw(log_params, units, xp)`` converts log parameters fitted in
            reference :class:`Units` to tokens and parameters of 1 (the papers' units).
        formula: the law in one line, for people (``"L = E + A N^-alpha"``); defaults to
            the first line of ``fn``'s docstring.
        size_term: the term through which the model size N enters the loss
            (``"K N^-gamma"``), or None for a law whose loss does not depend on N; a law
            without one is never asked to advise on N.
        priors: default prior and pooling of each parameter, as the keys of a spec's
            ``[params.NAME]`` table (``{"G": {"level": "pair", "loc": -1.0}}``). A spec
            that leaves out a parameter, or a key of it, gets these; the baseline starts
            its optimiser within them. Parameters not named get the spec defaults.
        compute_frontier: the law is ``E + A N^-alpha + B D^-beta`` in its parameters
            ``E, A, alpha, B, beta``, so that at a fixed compute ``C = 6 N D`` the best
            (N, D) has a closed form (Hoffmann et al. 2022, eq. 4): ``advise`` then gives
            the compute-optimal frontier instead of transfer options.
    """

    name: str
    params: tuple[str, ...]
    fn: LawFn
    gap: str | None = None
    rows: str = "any"
    to_raw: Callable[[Mapping[str, Array], Units, Any], dict[str, Array]] | None = None
    formula: str = ""
    size_term: str | None = None
    # hash=False: a dict is unhashable, and the name and params already identify a law.
    priors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    compute_frontier: bool = False

    def __post_init__(self) -> None:
        if self.gap is not None and self.gap not in self.params:
            raise ValueError(f"law {self.name}: gap {self.gap!r} is not one of {self.params}")
        if self.rows not in ROW_RULES:
            raise ValueError(f"law {self.name}: unknown row rule {self.rows!r}; "
                             f"use one of {sorted(ROW_RULES)}")
        if self.compute_frontier and not {"E", "A", "alpha", "B", "beta"} <= set(self.params):
            raise ValueError(f"law {self.name}: compute_frontier needs the parameters E, A, "
                             f"alpha, B and beta of E + A N^-alpha + B D^-beta")
        unknown = [p for p in self.priors if p not in self.params]
        if unknown:
            raise ValueError(f"law {self.name}: priors for {unknown}, which are not among "
                             f"its parameters {self.params}")
        if not self.formula:
            # Frozen: set through object.__setattr__, once, at construction.
            first = self.doc.splitlines()[0] if self.doc else self.name
            object.__setattr__(self, "formula", first)

    def explains(self, df: pd.DataFrame) -> np.ndarray:
        """A bool per row of ``df``: can this law explain the row (its row rule)?

        Example:
            >>> import pandas as pd
            >>> rows = pd.DataFrame({"source": ["a", "a"], "target": ["b", "b"],
            ...                      "pretrain_tokens": [10, 10], "finetune_tokens": [0, 5]})
            >>> get_law("transfer-gap").explains(rows).tolist()
            [False, True]
        """
        return np.asarray(ROW_RULES[self.rows][0](df), dtype=bool)

    @property
    def row_needs(self) -> str:
        """What the row rule needs, in words, for errors (``"needs finetune_tokens >= 0"``)."""
        return ROW_RULES[self.rows][1]

    @property
    def has_size_term(self) -> bool:
        """Whether the loss depends on the model size N (so advice on N means something)."""
        return self.size_term is not None

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()

    def log_loss(self, feats: Mapping[str, Array], log_params: Mapping[str, Array],
                 xp: Any = jnp) -> Array:
        """Log of the predicted loss; see the law's docstring for the formula."""
        missing = [p for p in self.params if p not in log_params]
        if missing:
            raise KeyError(f"law {self.name} needs parameters {missing}")
        return self.fn(feats, log_params, xp=xp)

    def loss(self, *, N: Array = 1.0, p: Array = 0.0, f: Array = 0.0, same: Array = False,
             units: Units | None = None, **params: Array) -> Array:
        """The predicted loss on the natural scale, for hand checks and plots.

        Example:
            >>> float(get_law("chinchilla").loss(N=1e9, p=2e10, E=1.82, A=482.01,
            ...       alpha=0.3478, B=2085.43, beta=0.3658))  # doctest: +ELLIPSIS
            2.532...
        """
        feats = features_from_arrays(N, p, f, same, units or Units())
        lp = {k: jnp.log(jnp.asarray(v, dtype=float)) for k, v in params.items()}
        return jnp.exp(self.log_loss(feats, lp))


@dataclass(frozen=True)
class Units:
    """The reference scales that model sizes and token counts are measured in.

    Fitting in reference units (``N / params``, ``tokens / tokens``) keeps the log
    features near zero, which removes the strong posterior correlation between a
    coefficient and its exponent (``log A`` vs ``alpha`` through ``log p`` ~ 10-25) that
    otherwise drives NUTS to its maximum tree depth. It also makes every coefficient a
    loss in nats: ``A`` is the pre-training term's contribution at ``p = tokens``, ``G``
    the gap's at ``f = tokens``. :meth:`Law.to_raw` converts back to the units of the
    papers (tokens and parameters of 1).
    """

    params: float = 1.0
    tokens: float = 1.0

    def __post_init__(self) -> None:
        for name in ("params", "tokens"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"units.{name} must be a positive number, not {value!r}")

    @classmethod
    def from_table(cls, df: pd.DataFrame) -> Units:
        """Powers of ten nearest the geometric means of N and of the positive token counts."""
        tokens = np.concatenate([df["pretrain_tokens"].to_numpy(np.float64),
                                 df["finetune_tokens"].to_numpy(np.float64)])
        tokens = tokens[tokens > 0]
        return cls(params=_round_decade(df["params"].to_numpy(np.float64)),
                   tokens=_round_decade(tokens) if len(tokens) else 1.0)

    def to_dict(self) -> dict[str, float]:
        return {"params": float(self.params), "tokens": float(self.tokens)}


def _round_decade(values: np.ndarray) -> float:
    return float(10.0 ** np.round(np.mean(np.log10(values))))


def features_from_arrays(N: Array, p: Array, f: Array, same: Array = False,
                         units: Units = Units()) -> dict[str, Array]:
    """Row features (logs of N, p, f, D = p + f, in ``units``) from raw sizes and counts.

    ``log 0 = -inf`` is allowed (a law that needs p > 0 says so in its row rule).
    """
    N, p, f = (np.asarray(v, dtype=np.float64) for v in (N, p, f))
    log_n0, log_t0 = np.log(units.params), np.log(units.tokens)
    with np.errstate(divide="ignore"):
        return {
            "log_N": np.log(N) - log_n0,
            "log_p": np.log(p) - log_t0,
            "log_f": np.log(f) - log_t0,
            "log_D": np.log(p + f) - log_t0,
            "is_self": np.asarray(same, dtype=bool) & np.ones_like(N, dtype=bool),
        }


def features(df: pd.DataFrame, units: Units = Units()) -> dict[str, np.ndarray]:
    """Row features of a validated run table, as float64 numpy arrays (see ``Units``)."""
    return features_from_arrays(
        df["params"].to_numpy(np.float64),
        df["pretrain_tokens"].to_numpy(np.float64),
        df["finetune_tokens"].to_numpy(np.float64),
        (df["source"].astype(str) == df["target"].astype(str)).to_numpy(),
        units,
    )


def chinchilla(x: Mapping[str, Array], lp: Mapping[str, Array], xp: Any = jnp) -> Array:
    """Chinchilla law: ``L(N, D) = E + A N^-alpha + B D^-beta`` with ``D = p + f``.

    Source: Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models",
    eq. (2) and Approach 3; refitted by Besiroglu et al. 2024 (Epoch AI replication).
    """
    size = lp["A"] - xp.exp(lp["alpha"]) * x["log_N"]
    data = lp["B"] - xp.exp(lp["beta"]) * x["log_D"]
    return xp.logaddexp(lp["E"], xp.logaddexp(size, data))


def transfer_gap(x: Mapping[str, Array], lp: Mapping[str, Array], xp: Any = jnp) -> Array:
    """Transfer-gap law: ``L(p, f) = (A p^-alpha + G) f^-beta + E``.

    Fine-tuning ``f`` tokens of target t after pre-training ``p`` tokens of source s.
    As p grows the loss approaches ``G f^-beta + E``: the gap G is what pre-training on s
    can never buy for t (G = 0 is perfect transfer). Needs p > 0 and f > 0.
    Source: Barnett 2024, "An Empirical Study of Scaling Laws for Transfer", eq. (1).
    """
    pretrain = xp.logaddexp(lp["A"] - xp.exp(lp["alpha"]) * x["log_p"], lp["G"])
    return xp.logaddexp(pretrain - xp.exp(lp["beta"]) * x["log_f"], lp["E"])


def transfer_gap_size(x: Mapping[str, Array], lp: Mapping[str, Array], xp: Any = jnp) -> Array:
    """Transfer-gap law with model size: ``L = (A p^-alpha + G) f^-beta + K N^-gamma + E``.

    Barnett 2024's law plus the model-size term ``K N^-gamma`` of DESIGN.md, for tables
    that vary N as well as p and f. Needs p > 0 and f > 0.
    """
    size = lp["K"] - xp.exp(lp["gamma"]) * x["log_N"]
    return xp.logaddexp(transfer_gap(x, lp, xp=xp), size)


def effective_data(x: Mapping[str, Array], lp: Mapping[str, Array], xp: Any = jnp) -> Array:
    """Effective data transferred: ``L_st(N, f) = L_t(N, f + D_T)``, ``D_T = k f^alpha N^beta``.

    The fine-tuned model behaves like a from-scratch model of the target on ``f + D_T``
    tokens, with the target's own from-scratch law
    ``L_t(N, D) = E + A_N N^-a + B D^-b``. From-scratch rows (source == target) use
    ``D = p + f``. ``alpha`` measures the (directed) proximity of the distributions,
    ``beta`` the generality of what the source teaches; ``k`` is the pair's transfer
    coefficient (large k: much data transferred). The pre-training amount p of a
    transfer row is taken as fixed, as in the paper.
    Source: Hernandez et al. 2021, "Scaling Laws for Transfer", eqs. (1.1)-(1.2).
    """
    # From-scratch rows may have f = 0 (log f = -inf); they take the other branch of the
    # where below, but a -inf here would still make its gradient NaN.
    log_f = xp.where(x["is_self"], 0.0, x["log_f"])
    log_dt = lp["k"] + xp.exp(lp["alpha"]) * log_f + xp.exp(lp["beta"]) * x["log_N"]
    log_data = xp.where(x["is_self"], x["log_D"], xp.logaddexp(log_f, log_dt))
    size = lp["A_N"] - xp.exp(lp["a"]) * x["log_N"]
    data = lp["B"] - xp.exp(lp["b"]) * log_data
    return xp.logaddexp(lp["E"], xp.logaddexp(size, data))


def rectified(x: Mapping[str, Array], lp: Mapping[str, Array], xp: Any = jnp) -> Array:
    """Rectified fine-tuning law: ``L(f) = B / (D_l + f^beta) + E``.

    One formula for the zero-shot point (f = 0: ``L = B / D_l + E``, finite) and the
    fine-tuning curve: ``D_l`` is the "pre-learned data size", what pre-training already
    taught the model about the target, in fine-tuning tokens to the power beta. As f
    grows the curve becomes the vanilla power law ``B f^-beta + E``. Each parameter
    belongs to a (pre-trained model, target) pair; the pre-training amount is not used.
    Source: Lin et al. 2024, "Selecting Large Language Model to Fine-tune via Rectified
    Scaling Law" (ICML 2024), eq. (3).
    """
    # f = 0 has log f = -inf: keep it out of the product with beta (its gradient would
    # be NaN) and put -inf, which logaddexp handles, in its place.
    zero_shot = x["log_f"] == -np.inf
    log_f = xp.where(zero_shot, 0.0, x["log_f"])
    fine = xp.where(zero_shot, -np.inf, xp.exp(lp["beta"]) * log_f)
    return xp.logaddexp(lp["E"], lp["B"] - xp.logaddexp(lp["D_l"], fine))


def _shift(lp: Mapping[str, Array], **shifts: Array) -> dict[str, Array]:
    out = dict(lp)
    for name, shift in shifts.items():
        out[name] = lp[name] + shift
    return out


# Each to_raw follows from its law: e.g. A (p / T0)^-alpha = (A T0^alpha) p^-alpha.
def _chinchilla_raw(lp, u: Units, xp=jnp):
    return _shift(lp, A=xp.exp(lp["alpha"]) * np.log(u.params),
                  B=xp.exp(lp["beta"]) * np.log(u.tokens))


def _transfer_gap_raw(lp, u: Units, xp=jnp):
    log_t0 = np.log(u.tokens)
    beta = xp.exp(lp["beta"]) * log_t0
    return _shift(lp, A=xp.exp(lp["alpha"]) * log_t0 + beta, G=beta)


def _transfer_gap_size_raw(lp, u: Units, xp=jnp):
    out = _transfer_gap_raw(lp, u, xp)
    out["K"] = lp["K"] + xp.exp(lp["gamma"]) * np.log(u.params)
    return out


def _effective_data_raw(lp, u: Units, xp=jnp):
    log_n0, log_t0 = np.log(u.params), np.log(u.tokens)
    return _shift(lp, A_N=xp.exp(lp["a"]) * log_n0, B=xp.exp(lp["b"]) * log_t0,
                  k=(1 - xp.exp(lp["alpha"])) * log_t0 - xp.exp(lp["beta"]) * log_n0)


def _rectified_raw(lp, u: Units, xp=jnp):
    # D_l + (f/T0)^beta = T0^-beta (D_l T0^beta + f^beta): both D_l and B scale by T0^beta.
    shift = xp.exp(lp["beta"]) * np.log(u.tokens)
    return _shift(lp, D_l=shift, B=shift)


LAWS: dict[str, Law] = {}


def register_law(law: Law, *, overwrite: bool = False) -> Law:
    """Add ``law`` to the registry so that model specs can name it."""
    if law.name in LAWS and not overwrite:
        raise ValueError(f"a law named {law.name!r} is already registered; "
                         "pass overwrite=True to replace it")
    LAWS[law.name] = law
    return law


def get_law(name: str) -> Law:
    """The registered law called ``name``; the error lists the known names."""
    try:
        return LAWS[name]
    except KeyError:
        raise KeyError(f"unknown law {name!r}; known laws: {', '.join(sorted(LAWS))}") from None


# The bundled laws. Their default priors live in the bundled spec of the same name
# (models/NAME.toml), which every shipped example and test reads; ``priors`` is for laws
# registered without a spec file.
register_law(Law("chinchilla", ("E", "A", "alpha", "B", "beta"), chinchilla,
                 to_raw=_chinchilla_raw, formula="L = E + A N^-alpha + B D^-beta, D = p + f",
                 size_term="A N^-alpha", compute_frontier=True))
register_law(Law("transfer-gap", ("A", "alpha", "G", "beta", "E"), transfer_gap,
                 gap="G", rows="finetuned", to_raw=_transfer_gap_raw,
                 formula="L = (A p^-alpha + G) f^-beta + E"))
register_law(Law("transfer-gap-size", ("A", "alpha", "G", "beta", "K", "gamma", "E"),
                 transfer_gap_size, gap="G", rows="finetuned", to_raw=_transfer_gap_size_raw,
                 formula="L = (A p^-alpha + G) f^-beta + K N^-gamma + E",
                 size_term="K N^-gamma"))
register_law(Law("effective-data", ("E", "A_N", "a", "B", "b", "k", "alpha", "beta"),
                 effective_data, gap="k", rows="transfer", to_raw=_effective_data_raw,
                 formula="L = E + A_N N^-a + B (f + D_T)^-b, D_T = k f^alpha N^beta",
                 size_term="A_N N^-a + D_T(N)"))
register_law(Law("rectified", ("B", "D_l", "beta", "E"), rectified, rows="curve",
                 to_raw=_rectified_raw, formula="L = B / (D_l + f^beta) + E"))
