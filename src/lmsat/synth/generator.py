"""Synthetic languages whose next-token distributions have a known rank and entropy.

A language over tokens 0..V-1 is a k-th order source with C context classes:

* **Contexts.** The context of the token at position t is c_t = ctx(x_{t-k}, ..., x_{t-1}),
  a fixed map from the previous k tokens (a k-gram) to one of C classes. When V^k is
  at most :data:`EXPLICIT_MAX_KGRAMS` the map is an explicit random table that uses
  every class at least once (a random surjection); otherwise it is a seeded
  tabulation hash, ctx = (XOR_i T[i, x_{t-k+i}]) mod C.
* **Next-token distributions.** Row c of a C x V matrix P is p(. | c):

  - ``low-rank-logits``: logits Z = U W^T / (sqrt(R) * temperature), U (C x R) and
    W (V x R) with i.i.d. N(0, 1) entries, so Z has rank R and entries with standard
    deviation 1 / temperature; P = softmax(Z) row by row. The row-centred
    log-probabilities log P - mean_v log P equal the row-centred Z, of rank R: a linear
    softmax head of dimension >= R can be exact.
  - ``low-rank-probs``: P = A B, each row of A (C x R) ~ Dirichlet(mix_concentration),
    each base distribution (row of B, R x V) = (1 - 1e-3) Dirichlet(concentration) +
    1e-3 uniform (the floor keeps every probability > 0, so log P is finite). P has
    rank <= R (= R generically) while log P is generally of full rank.

* **Start of a chain.** Every chain starts from the fixed start context: a virtual
  prefix of k copies of token 0 (``w0``) that is not written. So the first k tokens
  of a chain have a full, known context too, and the true probability of every
  generated token is defined.

Entropies, all in nats/token:

* realised entropy: mean over the generated positions of -ln p(x_t | c_t), the loss of
  the true model on exactly this text (the best achievable loss on it);
* empirical-context entropy: sum_c (n_c / n) H(P_c) with n_c the number of positions in
  context c: the exact expectation of the realised entropy given the visited contexts;
* stationary entropy: sum_c pi_c H(P_c), pi the stationary distribution of contexts of
  the k-gram Markov chain (exact; computed when V^(k+1) <= :data:`STATIONARY_MAX_TRANSITIONS`).

Everything here is pure numpy and deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lmsat.errors import UserError

FAMILIES: tuple[str, ...] = ("low-rank-logits", "low-rank-probs")
START_TOKEN = 0
#: Explicit k-gram -> context table when V^k is at most this; a tabulation hash beyond.
EXPLICIT_MAX_KGRAMS = 1 << 20
#: The stationary distribution is computed when the k-gram chain has at most this many transitions.
STATIONARY_MAX_TRANSITIONS = 1 << 23
#: Dense C x V matrices are limited to this many entries (float64: 128 MB).
MAX_MATRIX_ENTRIES = 1 << 24
#: Weight of the uniform floor mixed into each base distribution of ``low-rank-probs``.
PROBS_FLOOR = 1e-3

# Independent random streams of one seed, so changing one part never shifts another.
_STREAM_MATRICES, _STREAM_CONTEXTS, _STREAM_TRAIN, _STREAM_HELDOUT = 0, 1, 2, 3


@dataclass(frozen=True)
class LanguageSpec:
    """Parameters of a synthetic language (see module docstring).

    ``temperature`` applies to ``low-rank-logits`` only; ``concentration`` and
    ``mix_concentration`` (Dirichlet parameters of the base distributions and of the
    mixture weights) to ``low-rank-probs`` only. With the defaults (V = C = 256, R = 32,
    k = 1) both families have a stationary entropy of about 3.83 nats/token.
    """

    family: str = "low-rank-logits"
    vocab: int = 256
    contexts: int = 256
    rank: int = 32
    order: int = 1
    temperature: float = 0.5
    concentration: float = 0.02
    mix_concentration: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`UserError` (one line, what to do) for impossible parameters."""
        if self.family not in FAMILIES:
            raise UserError(f"--family must be one of {', '.join(FAMILIES)} (got '{self.family}').")
        if self.vocab < 2:
            raise UserError(f"--vocab must be >= 2 (got {self.vocab}).")
        if self.contexts < 1:
            raise UserError(f"--contexts must be >= 1 (got {self.contexts}).")
        if self.order < 1:
            raise UserError(f"--order must be >= 1 (got {self.order}); contexts are set by the previous k >= 1 tokens.")
        if not 1 <= self.rank <= min(self.contexts, self.vocab):
            raise UserError(
                f"--rank {self.rank} is impossible for a {self.contexts} x {self.vocab} matrix (contexts x vocab); "
                f"use 1 <= rank <= min(contexts, vocab) = {min(self.contexts, self.vocab)}."
            )
        if self.vocab**self.order < self.contexts:
            raise UserError(
                f"--contexts {self.contexts} exceeds the {self.vocab**self.order} possible {self.order}-grams of a "
                f"{self.vocab}-token vocabulary, so some contexts could never occur; lower --contexts or raise --order."
            )
        if self.contexts * self.vocab > MAX_MATRIX_ENTRIES:
            raise UserError(
                f"contexts x vocab = {self.contexts * self.vocab} exceeds {MAX_MATRIX_ENTRIES} entries; "
                "synthetic languages are meant to be small: lower --contexts or --vocab."
            )
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise UserError(f"--temperature must be a positive number (got {self.temperature}).")
        if not (self.concentration > 0 and self.mix_concentration > 0):
            raise UserError("--concentration and --mix-concentration must be positive (Dirichlet parameters).")

    def describe(self) -> dict[str, Any]:
        """The parameters that define the language (those of the other family set to None)."""
        out = asdict(self)
        if self.family == "low-rank-logits":
            out["concentration"] = out["mix_concentration"] = None
        else:
            out["temperature"] = None
        return out


@dataclass(frozen=True)
class Language:
    """A language's exact quantities: P (C x V), log P, the context map, and the factors."""

    spec: LanguageSpec
    probs: np.ndarray  # (C, V) float64, rows sum to 1, all entries > 0
    log_probs: np.ndarray  # (C, V) float64
    logits: np.ndarray  # (C, V): Z (low-rank-logits) or log P (low-rank-probs); softmax(logits) = P
    context_table: np.ndarray | None  # (V^k,) int64 k-gram index -> context, or None (hash)
    hash_keys: np.ndarray | None  # (k, V) uint64 tabulation-hash keys, or None (table)
    factors: dict[str, np.ndarray]  # U, W (logits) or A, B (probs)

    @property
    def vocab(self) -> int:
        return self.spec.vocab

    @property
    def order(self) -> int:
        return self.spec.order


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(stream)])


def log_softmax_rows(z: np.ndarray) -> np.ndarray:
    """log softmax of each row: z - logsumexp(z), computed stably in float64."""
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))


def low_rank_logits(spec: LanguageSpec, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Z = U W^T / (sqrt(R) T), U ~ N(0,1)^{C x R}, W ~ N(0,1)^{V x R}: rank R, entry std 1/T."""
    u = rng.standard_normal((spec.contexts, spec.rank))
    w = rng.standard_normal((spec.vocab, spec.rank))
    z = (u @ w.T) / (np.sqrt(spec.rank) * spec.temperature)
    return z, {"U": u, "W": w}


def low_rank_probs(spec: LanguageSpec, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """P = A B: A rows ~ Dirichlet(mix_concentration), B rows = floored Dirichlet(concentration) bases."""
    a = rng.dirichlet(np.full(spec.rank, spec.mix_concentration), size=spec.contexts)
    b = rng.dirichlet(np.full(spec.vocab, spec.concentration), size=spec.rank)
    b = (1.0 - PROBS_FLOOR) * b + PROBS_FLOOR / spec.vocab
    b /= b.sum(axis=1, keepdims=True)
    p = a @ b
    return p / p.sum(axis=1, keepdims=True), {"A": a, "B": b}


def random_surjection(n_items: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A random map {0..n_items-1} -> {0..n_classes-1} hitting every class (needs n_items >= n_classes)."""
    labels = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n_items - n_classes)])
    return rng.permutation(labels).astype(np.int64)


def make_language(spec: LanguageSpec) -> Language:
    """Build the language's matrices and context map from its seed (validates ``spec`` first)."""
    spec.validate()
    rng = _rng(spec.seed, _STREAM_MATRICES)
    if spec.family == "low-rank-logits":
        z, factors = low_rank_logits(spec, rng)
        log_p = log_softmax_rows(z)
        probs = np.exp(log_p)
        probs /= probs.sum(axis=1, keepdims=True)
    else:
        probs, factors = low_rank_probs(spec, rng)
        log_p = z = np.log(probs)
    crng = _rng(spec.seed, _STREAM_CONTEXTS)
    n_kgrams = spec.vocab**spec.order
    if n_kgrams <= EXPLICIT_MAX_KGRAMS:
        table, keys = random_surjection(n_kgrams, spec.contexts, crng), None
    else:
        table, keys = None, crng.integers(0, 2**63 - 1, size=(spec.order, spec.vocab), dtype=np.int64).astype(np.uint64)
    return Language(spec=spec, probs=probs, log_probs=log_p, logits=z, context_table=table, hash_keys=keys, factors=factors)


def context_of(lang: Language, kgrams: np.ndarray) -> np.ndarray:
    """Context class of each k-gram: ``kgrams`` (n, k) int, oldest token first -> (n,) int64."""
    kgrams = np.asarray(kgrams, dtype=np.int64)
    if lang.context_table is not None:
        index = np.zeros(kgrams.shape[0], dtype=np.int64)
        for i in range(lang.order):
            index = index * lang.vocab + kgrams[:, i]
        return lang.context_table[index]
    assert lang.hash_keys is not None
    h = np.zeros(kgrams.shape[0], dtype=np.uint64)
    for i in range(lang.order):
        h ^= lang.hash_keys[i, kgrams[:, i]]
    return (h % np.uint64(lang.spec.contexts)).astype(np.int64)


def contexts_of_chains(lang: Language, tokens: np.ndarray) -> np.ndarray:
    """Context of every position of chains ``tokens`` (n_chains, T), with the fixed start prefix.

    Position t's context is ctx(x_{t-k}, ..., x_{t-1}) where x_{-k..-1} = START_TOKEN.
    This recomputes, from the tokens alone, the contexts :func:`sample_chains` used.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n, t_len = tokens.shape
    k = lang.order
    padded = np.concatenate([np.full((n, k), START_TOKEN, dtype=np.int64), tokens], axis=1)
    windows = np.stack([padded[:, i : i + t_len] for i in range(k)], axis=-1)  # (n, T, k)
    return context_of(lang, windows.reshape(-1, k)).reshape(n, t_len)


def sample_chains(lang: Language, n_chains: int, length: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_chains`` independent chains of ``length`` tokens from the start context.

    Returns (tokens, contexts), both (n_chains, length) int64: x_t ~ P[c_t], c_t the
    context of the previous k tokens (start prefix of k tokens ``w0``). Sampling is by
    inverse CDF on the rows of P (one uniform draw per token).
    """
    c_count, v = lang.probs.shape
    cdf = np.cumsum(lang.probs, axis=1)
    cdf[:, -1] = 1.0
    # One increasing array: row c's CDF shifted by c, so a single searchsorted serves all chains.
    flat = (cdf + np.arange(c_count)[:, None]).ravel()
    tokens = np.empty((n_chains, length), dtype=np.int64)
    contexts = np.empty((n_chains, length), dtype=np.int64)
    state = np.full((n_chains, lang.order), START_TOKEN, dtype=np.int64)
    uniforms = rng.random((length, n_chains))
    for t in range(length):
        c = context_of(lang, state)
        idx = np.searchsorted(flat, c + uniforms[t], side="right")
        x = np.minimum(idx - c * v, v - 1)
        tokens[:, t] = x
        contexts[:, t] = c
        if lang.order > 1:
            state[:, :-1] = state[:, 1:]
        state[:, -1] = x
    return tokens, contexts


def row_entropies(probs: np.ndarray) -> np.ndarray:
    """H(P_c) = -sum_v P[c, v] ln P[c, v] for each row, in nats."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=1)


def token_neg_log_probs(lang: Language, tokens: np.ndarray, contexts: np.ndarray) -> np.ndarray:
    """-ln p(x_t | c_t) of each position, in nats (same shape as ``tokens``)."""
    return -lang.log_probs[np.asarray(contexts), np.asarray(tokens)]


def stationary_context_distribution(lang: Language, tol: float = 1e-13, max_iter: int = 100_000) -> np.ndarray | None:
    """pi over contexts: the stationary distribution of the k-gram chain, summed per context.

    States are k-grams s = (x_1..x_k) (index sum x_i V^{k-i}); s -> (x_2..x_k, y) with
    probability P[ctx(s), y]. Iterates the lazy chain pi <- (pi + pi T) / 2 (same
    fixed point, converges even for periodic chains) until the L1 change is below ``tol``.
    Returns None when V^(k+1) > :data:`STATIONARY_MAX_TRANSITIONS` (too large to do exactly).
    """
    v, k, c_count = lang.vocab, lang.order, lang.spec.contexts
    n_states = v**k
    if n_states * v > STATIONARY_MAX_TRANSITIONS:
        return None
    states = np.arange(n_states, dtype=np.int64)
    digits = np.stack([(states // v ** (k - 1 - i)) % v for i in range(k)], axis=1)
    ctx = context_of(lang, digits)
    nxt = ((states * v) % n_states)[:, None] + np.arange(v)[None, :]  # (n_states, V)
    trans = lang.probs[ctx]  # (n_states, V)
    pi = np.full(n_states, 1.0 / n_states)
    for _ in range(max_iter):
        stepped = np.bincount(nxt.ravel(), weights=(pi[:, None] * trans).ravel(), minlength=n_states)
        new = 0.5 * (pi + stepped)
        new /= new.sum()
        done = np.abs(new - pi).sum() < tol
        pi = new
        if done:
            break
    return np.bincount(ctx, weights=pi, minlength=c_count)


def numerical_rank(s: np.ndarray, shape: tuple[int, int]) -> int:
    """Number of singular values above s_1 * max(shape) * eps (numpy's matrix_rank tolerance)."""
    s = np.asarray(s, dtype=np.float64)
    if len(s) == 0 or s[0] == 0:
        return 0
    return int((s > s[0] * max(shape) * np.finfo(np.float64).eps).sum())


def centered_log_probs(lang: Language) -> np.ndarray:
    """log P minus each row's mean: the logits that give P, with the free per-row shift removed.

    Computed from the family's logits (Z, or log P), so that the rank-R structure of Z is not
    blurred by the rounding of the normalisation.
    """
    return lang.logits - lang.logits.mean(axis=1, keepdims=True)


def svd_truncation_gaps(lang: Language, weights: np.ndarray, max_rank: int) -> np.ndarray:
    """gap(d) = sum_c w_c KL(P_c || softmax(Z_d)_c) for d = 0..max_rank, in nats/token.

    Z_d is the best rank-d approximation (truncated SVD, Frobenius sense) of the row-centred
    logits Z = log P - mean_v log P. It is what a rank-d linear softmax head gets by keeping the
    top-d directions of the true logits, so gap(d) is an upper bound on the smallest gap any
    head of rank d can reach (the KL-optimal rank-d logits are not the Frobenius-optimal ones).
    gap(0) = ln V - sum_c w_c H(P_c) (uniform prediction); gap(d) = 0 once Z_d = Z
    (d = R for ``low-rank-logits``). ``weights`` w are context probabilities (summing to 1).
    """
    z = centered_log_probs(lang)
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    plogp = (lang.probs * lang.log_probs).sum(axis=1)
    approx = np.zeros_like(z)
    gaps = np.empty(max_rank + 1)
    for d in range(max_rank + 1):
        if d > 0:
            approx += s[d - 1] * np.outer(u[:, d - 1], vt[d - 1])
        kl = plogp - (lang.probs * log_softmax_rows(approx)).sum(axis=1)
        gaps[d] = float(w @ np.maximum(kl, 0.0))
    return gaps


@dataclass(frozen=True)
class Sample:
    """Generated text of a language, chains concatenated: 1-D int64 ``tokens`` and ``contexts``,
    float64 ``neg_log_probs`` (-ln p(x_t | c_t)), and the length of each chain (they sum to n)."""

    tokens: np.ndarray
    contexts: np.ndarray
    neg_log_probs: np.ndarray
    chain_lengths: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)

    def chains(self) -> list[np.ndarray]:
        """The token ids of each chain, in order."""
        return np.split(self.tokens, np.cumsum(self.chain_lengths)[:-1])

    def realised_entropy(self) -> float:
        """mean_t -ln p(x_t | c_t), nats/token."""
        return float(self.neg_log_probs.mean())

    def entropy_standard_error(self) -> float:
        """std(-ln p) / sqrt(n): the i.i.d. standard error of the realised entropy (autocorrelation ignored)."""
        return float(self.neg_log_probs.std() / np.sqrt(max(1, self.neg_log_probs.size)))

    def context_counts(self, n_contexts: int) -> np.ndarray:
        """n_c: number of generated positions in each context."""
        return np.bincount(self.contexts, minlength=n_contexts)


def generate(lang: Language, n_tokens: int, chain_tokens: int, heldout: bool = False) -> Sample:
    """``n_tokens`` tokens as independent chains of ``chain_tokens`` tokens (the last one a shorter prefix).

    The training text and the held-out text use independent random streams of the seed.
    """
    if n_tokens < 1 or chain_tokens < 1:
        raise UserError(f"need at least one token (got n_tokens={n_tokens}, chain_tokens={chain_tokens}).")
    rng = _rng(lang.spec.seed, _STREAM_HELDOUT if heldout else _STREAM_TRAIN)
    length = min(chain_tokens, n_tokens)
    n_chains = -(-n_tokens // length)
    tokens, contexts = sample_chains(lang, n_chains, length, rng)
    lengths = np.full(n_chains, length, dtype=np.int64)
    lengths[-1] = n_tokens - length * (n_chains - 1)
    tokens, contexts = tokens.ravel()[:n_tokens], contexts.ravel()[:n_tokens]
    return Sample(tokens=tokens, contexts=contexts, neg_log_probs=token_neg_log_probs(lang, tokens, contexts), chain_lengths=lengths)


def empirical_context_entropy(probs: np.ndarray, counts: np.ndarray) -> float:
    """sum_c (n_c / n) H(P_c), nats/token."""
    counts = np.asarray(counts, dtype=np.float64)
    return float((counts * row_entropies(probs)).sum() / counts.sum())
