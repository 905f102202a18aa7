"""Benchmark of `lmsat ngram-rank`'s two stages against plain baselines, side by side in one process.

1. Counting 5-grams: lmsat's sort-based counter (:class:`lmsat.measure.ngram.NGramCounter`,
   20M-token shards merged) against ``collections.Counter`` over tuples of a Python
   list. The Counter runs on a prefix (``--counter-tokens``, default 2M) and its time is
   extrapolated linearly to the full stream (it is linear in tokens, and at 50M tokens
   would need tens of GB of Python objects); the table says so. Both count the prefix and
   must agree exactly; their peak memory on the prefix (tracemalloc) is reported per
   million tokens.
2. Time to the W-error curve: building P and its spectrum with lmsat's blockwise method
   (``sparse_singular_values``, method auto) against the plain route for the same output.
   Full spectrum: the dense Gram P^T P over the observed vocabulary and one ``eigvalsh``
   (torch float64, the solver lmsat uses),
   run when it has at most ``--baseline-max`` columns, else extrapolated as (V_obs / m)^3
   times the measured time of a random m x m Gram (m = ``--baseline-max``). Top-k spectrum
   (a block larger than ``--max-dense``): plain Lanczos on all of P^T P, extrapolated as
   lmsat's time plus its number of Gram products times the extra cost of one plain
   product (measured). The table says which were extrapolated.

Counting against KenLM's ``lmplz`` (the C++ tool practitioners use), side by side on the same ids at
10M-500M tokens: ``benchmarks/bench_ngram_kenlm.py`` (issue 15).

Token streams are synthetic: i.i.d. Zipf(1.1) over V ids (seeded), which has the
long-tailed unigram law of text; ``--real`` adds Brown + King James Bible with the
GPT-2 BPE (about 2.4M tokens, tokenisation included in the lmsat time).

    python benchmarks/bench_ngram.py                    # 1M, 10M, 50M tokens, V = 50257; V scaling at 1M
    python benchmarks/bench_ngram.py --sizes 1e6 --vocabs 50257 --real
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import Counter

import numpy as np

from lmsat.measure.ngram import NGramCounter, count_ngrams, next_token_matrix
from lmsat.measure.sparse_spectrum import bipartite_blocks, block_submatrix, sparse_singular_values, split_gram
from lmsat.measure.spectrum import dimension_for_w_error

N = 5


def zipf_stream(n_tokens: int, vocab: int, exponent: float = 1.1, seed: int = 0) -> np.ndarray:
    p = 1.0 / np.arange(1, vocab + 1) ** exponent
    return np.random.default_rng(seed).choice(vocab, size=n_tokens, p=p / p.sum()).astype(np.int64)


def counter_baseline(tokens: np.ndarray) -> tuple[Counter, float]:
    seq = tokens.tolist()
    start = time.perf_counter()
    counts = Counter(zip(*(seq[i:] for i in range(N))))
    return counts, time.perf_counter() - start


def peak_mb(fn) -> float:
    """Peak memory (MB) traced by tracemalloc (Python objects and numpy buffers) while running fn."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def lmsat_count(tokens: np.ndarray, vocab: int) -> tuple[object, float]:
    start = time.perf_counter()
    counter = NGramCounter(N, vocab)
    for piece in np.array_split(tokens, max(1, len(tokens) // 1_000_000)):
        counter.add(piece)
    counts = counter.finish()
    return counts, time.perf_counter() - start


def baseline_spectrum_seconds(p, max_cols: int) -> tuple[float, bool]:
    """Plain full spectrum: dense Gram over observed columns + eigvalsh; measured, or extrapolated from an m x m Gram."""
    import torch

    # The same eigensolver as lmsat (torch, float64), so only the method differs; warmed up first.
    torch.linalg.eigvalsh(torch.eye(256, dtype=torch.float64))
    v_obs = p.shape[1]
    if v_obs <= max_cols:
        start = time.perf_counter()
        gram = (p.T @ p).toarray()
        torch.linalg.eigvalsh(torch.from_numpy(gram))
        return time.perf_counter() - start, False
    m = max_cols
    a = np.random.default_rng(0).random((m, m))
    start = time.perf_counter()
    torch.linalg.eigvalsh(torch.from_numpy(a + a.T))
    return (time.perf_counter() - start) * (v_obs / m) ** 3, True


def _seconds_per_product(apply, n: int, repeats: int = 5) -> float:
    x = np.random.default_rng(0).standard_normal(n)
    start = time.perf_counter()
    for _ in range(repeats):
        apply(x)
    return (time.perf_counter() - start) / repeats


def baseline_truncated_seconds(p, spec, t_spec: float) -> float:
    """Plain top-k Lanczos on all of P^T P (no blocks, no one-hot folding), extrapolated.

    Same number of Gram products as lmsat's run, each at the cost of P^T (P x) on the
    whole matrix instead of lmsat's folded product on the largest block.
    """
    info = spec.accuracy["truncated_blocks"][0]
    n_blocks, row_block, col_block = bipartite_blocks(p)
    sizes = np.minimum(np.bincount(row_block, minlength=n_blocks), np.bincount(col_block, minlength=n_blocks))
    block = block_submatrix(p, row_block, col_block, int(np.argmax(sizes)))
    diag, multi = split_gram(block)
    multi_t = multi.T.tocsr()
    p_t = p.T.tocsr()
    t_plain = _seconds_per_product(lambda x: p_t @ (p @ x), p.shape[1])
    t_lmsat = _seconds_per_product(lambda x: diag * x + multi_t @ (multi @ x), block.shape[1])
    return t_spec + info["gram_products"] * (t_plain - t_lmsat)


def bench_stream(label: str, tokens: np.ndarray, vocab: int, args: argparse.Namespace, count_seconds: float | None = None) -> dict:
    counts, t_count = lmsat_count(tokens, vocab)
    if count_seconds is not None:
        t_count += count_seconds  # tokenisation time of a real corpus
    prefix = tokens[: args.counter_tokens]
    ref, t_ref = counter_baseline(prefix)
    assert count_ngrams(prefix, N, vocab).as_dict() == dict(ref), "lmsat and Counter disagree"
    t_ref_full = t_ref * len(tokens) / len(prefix)
    del ref
    mb_counter = peak_mb(lambda: counter_baseline(prefix))
    mb_lmsat = peak_mb(lambda: count_ngrams(prefix, N, vocab))

    start = time.perf_counter()
    p = next_token_matrix(counts)
    spec = sparse_singular_values(p.matrix, device="cpu", max_dense=args.max_dense, truncated_k=args.truncated_k)
    t_spec = time.perf_counter() - start
    if spec.complete:
        t_base, extrapolated = baseline_spectrum_seconds(p.matrix, args.baseline_max)
        base_name = "dense Gram eigvalsh"
    else:
        t_base, extrapolated = baseline_truncated_seconds(p.matrix, spec, t_spec), True
        base_name = f"plain Lanczos top {len(spec.singular_values)}"
    d10 = dimension_for_w_error(spec.singular_values, 0.1, spec.frobenius_norm)
    d50 = dimension_for_w_error(spec.singular_values, 0.5, spec.frobenius_norm)
    row = {
        "stream": label,
        "tokens": len(tokens),
        "V": vocab,
        "contexts": p.shape[0],
        "V_obs": p.shape[1],
        "largest block": max(spec.blocks["large_blocks"] or [0]),
        "count s": t_count,
        "tok/s": len(tokens) / t_count,
        "Counter s": t_ref_full,
        "Counter extrap.": len(prefix) < len(tokens),
        "count speed-up": t_ref_full / t_count,
        "Counter MB/Mtok": mb_counter / (len(prefix) / 1e6),
        "lmsat MB/Mtok": mb_lmsat / (len(prefix) / 1e6),
        "curve s": t_spec,
        "method": spec.method + ("" if spec.complete else f" (top {len(spec.singular_values)})"),
        "baseline": base_name,
        "baseline s": t_base,
        "baseline extrap.": extrapolated,
        "curve speed-up": t_base / t_spec,
        "d(0.5)": d50,
        "d(0.1)": d10,
    }
    print(" | ".join(f"{k}={_fmt(v)}" for k, v in row.items()), flush=True)
    return row


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def real_stream() -> tuple[np.ndarray, int, float]:
    from lmsat import assets
    from lmsat.experiments.ngram import token_stream
    from lmsat.loading.corpus import CorpusSpec
    from lmsat.loading.tokenizers import load_tokenizer

    tok = load_tokenizer(str(assets.gpt2_bpe_path()))
    start = time.perf_counter()
    ids = [a for src in (assets.brown_path(), assets.kjv_path()) for a, _ in token_stream(CorpusSpec(str(src)), tok)]
    return np.concatenate(ids), tok.vocab_size, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1e6,1e7,5e7", help="token counts at V = 50257")
    ap.add_argument("--vocabs", default="8192,50257,128000", help="vocabulary sizes at the first token count")
    ap.add_argument("--counter-tokens", type=int, default=2_000_000)
    ap.add_argument("--baseline-max", type=int, default=6000)
    ap.add_argument("--max-dense", type=int, default=20_000)
    ap.add_argument("--truncated-k", type=int, default=1024)
    ap.add_argument("--real", action="store_true", help="also Brown + KJV with the GPT-2 BPE")
    args = ap.parse_args()
    import torch

    print(f"machine: {platform.machine()}, nproc={os.cpu_count()}, torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")
    sizes = [int(float(x)) for x in args.sizes.split(",") if x]
    vocabs = [int(x) for x in args.vocabs.split(",") if x]
    rows = []
    for n in sizes:
        rows.append(bench_stream(f"zipf{n:.0e}", zipf_stream(n, 50257), 50257, args))
    for v in vocabs:
        if v != 50257:
            rows.append(bench_stream(f"zipf{sizes[0]:.0e}", zipf_stream(sizes[0], v), v, args))
    if args.real:
        ids, vocab, t_tok = real_stream()
        rows.append(bench_stream("brown+kjv gpt2", ids, vocab, args, count_seconds=t_tok))
    print()
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
