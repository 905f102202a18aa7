"""The full W-error curve of a 50M-token x 50k-vocabulary stream that looks like text (issue 15 items 1-2).

Generates a text-like token stream (``text_like_stream``: a 2nd-order source over a Zipf vocabulary,
see its docstring), counts its 5-grams, builds P (uniform rows, the study's), and computes the
dims for W-error 0.5, 0.2, 0.1, 0.05 with intervals (:func:`lmsat.measure.sparse_spectrum.sparse_singular_values`
with ``method="auto"``: blocks over ``--max-dense`` get their top values exactly and the tail by stochastic
Lanczos quadrature, docs/ngram.md "Past the dense limit"). Prints wall time per stage, peak RSS and the dims.

    python benchmarks/bench_ngram_scale.py --tokens 50000000 --vocab 50000

``--exact`` also diagonalises every block densely (float64; slow, O(b^3), 8 b^2 bytes per block) and prints
each estimated dim next to the exact one: the check of the estimate at a 30k+ block
(``--tokens 5000000 --exact`` on this generator gives a ~30k block; run it niced, it takes long).
``--save PATH`` writes the singular values / curve to an ``.npz``; ``--compare PATH`` checks against a saved exact one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np


def text_like_stream(n_tokens: int, vocab: int, seed: int = 0, classes: int = 200_000, support: int = 64,
                     background: float = 0.15, zipf: float = 1.1, chains: int = 20_000) -> np.ndarray:
    """A token stream with text's n-gram statistics in outline (not i.i.d.): a 2nd-order source.

    Unigram prior: Zipf, p(w) ~ (w + 2.7)^-zipf over w < ``vocab``. The next token's distribution is
    set by the previous two tokens, hashed into one of ``classes`` context classes; class c has its own
    ``support`` tokens drawn from the Zipf prior, with weights ~ 1/rank (heavy head, long tail), and with
    probability ``background`` the next token is drawn from the Zipf prior instead (unseen continuations).
    ``chains`` independent chains are generated side by side (vectorised over chains) and concatenated;
    all seeded by ``seed``. Returns int32 ids.
    """
    rng = np.random.default_rng(seed)
    prior = (np.arange(vocab) + 2.7) ** -zipf
    prior_cdf = np.cumsum(prior / prior.sum())
    table = np.searchsorted(prior_cdf, rng.random((classes, support)))
    table = np.minimum(table, vocab - 1).astype(np.int32)
    w = 1.0 / np.arange(1, support + 1)
    class_cdf = np.cumsum(w / w.sum()).astype(np.float32)
    chains = max(1, min(chains, n_tokens // 64))
    length = -(-n_tokens // chains)
    out = np.empty((length, chains), dtype=np.int32)
    a = rng.integers(0, vocab, chains).astype(np.int64)
    b = rng.integers(0, vocab, chains).astype(np.int64)
    mult_a, mult_b = np.int64(1_000_003), np.int64(998_244_353)
    for t in range(length):
        cls = ((a * mult_a) ^ (b * mult_b)) % classes
        pick = np.searchsorted(class_cdf, rng.random(chains, dtype=np.float32))
        nxt = table[cls, np.minimum(pick, support - 1)].astype(np.int64)
        bg = rng.random(chains) < background
        if bg.any():
            nxt[bg] = np.minimum(np.searchsorted(prior_cdf, rng.random(int(bg.sum()))), vocab - 1)
        out[t] = nxt
        a, b = b, nxt
    return out.T.reshape(-1)[:n_tokens]


def exact_singular_values(matrix) -> tuple[np.ndarray, float]:
    """All singular values of P, exactly: every block but the largest by :func:`sparse_singular_values` (dense),
    the largest through its dense float64 Gram matrix diagonalised in place (``scipy.linalg.eigvalsh``,
    ``overwrite_a``: 8 b^2 bytes, half of torch's copy). Returns (s descending, seconds of the largest block)."""
    import scipy.linalg as sla
    import scipy.sparse as sp

    from lmsat.measure.sparse_spectrum import bipartite_blocks, block_submatrix, gram_dense, sparse_singular_values

    n_blocks, row_block, col_block = bipartite_blocks(matrix)
    side = np.minimum(np.bincount(row_block, minlength=n_blocks), np.bincount(col_block, minlength=n_blocks))
    big = int(np.argmax(side))
    sub = block_submatrix(matrix, row_block, col_block, big)
    gram = gram_dense(sub)
    start = time.perf_counter()
    ev = sla.eigvalsh(gram, overwrite_a=True, check_finite=False, driver="ev")
    seconds = time.perf_counter() - start
    del gram
    rest_rows = np.nonzero(row_block != big)[0]
    rest = sparse_singular_values(sp.csr_matrix(matrix[rest_rows]), method="dense", device="cpu")
    values = np.concatenate([np.clip(ev, 0, None), rest.singular_values ** 2])
    return np.sqrt(np.sort(values[values > 0])[::-1]), seconds


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=50_000_000)
    ap.add_argument("--vocab", type=int, default=50_000)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--classes", type=int, default=200_000, help="context classes of the source")
    ap.add_argument("--chains", type=int, default=20_000, help="chains generated side by side")
    ap.add_argument("--max-dense", type=int, default=None, help="blocks over this many columns get top values + SLQ tail")
    ap.add_argument("--exact", action="store_true", help="dense float64 spectrum of every block (slow), compared with the estimate")
    ap.add_argument("--save", default=None, help="write the spectrum (singular values, curve, dims) to this .npz")
    ap.add_argument("--compare", default=None, help="an .npz written by --exact --save: print the estimate's error against it")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--probes", type=int, default=None, help="tail probes (default: lmsat's TAIL_PROBES)")
    ap.add_argument("--steps", type=int, default=None, help="Lanczos steps per probe (default: TAIL_STEPS)")
    ap.add_argument("--top", type=int, default=None, help="top eigenpairs computed exactly per large block (default: TAIL_TOP)")
    args = ap.parse_args()

    from lmsat.measure.ngram import count_ngrams, next_token_matrix
    from lmsat.measure import sparse_spectrum as ss

    thresholds = (0.5, 0.2, 0.1, 0.05)
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; {os.cpu_count()} cores", flush=True)
    t0 = time.perf_counter()
    ids = text_like_stream(args.tokens, args.vocab, args.seed, classes=args.classes, chains=args.chains)
    t1 = time.perf_counter()
    print(f"generate: {len(ids):,} tokens in {t1 - t0:.1f} s", flush=True)
    counts = count_ngrams(ids, args.n, args.vocab)
    del ids
    t2 = time.perf_counter()
    print(f"count: {counts.n_contexts:,} contexts, {counts.n_ngrams:,} distinct {args.n}-grams in {t2 - t1:.1f} s; "
          f"peak RSS {peak_rss_gb():.1f} GB", flush=True)
    p = next_token_matrix(counts)
    del counts
    t3 = time.perf_counter()
    one_hot = float((np.diff(p.matrix.indptr) == 1).mean())
    print(f"P: {p.shape[0]:,} x {p.shape[1]:,}, {p.matrix.nnz:,} non-zeros, {100 * one_hot:.1f}% one-hot rows, in {t3 - t2:.1f} s",
          flush=True)
    if args.exact:
        from lmsat.measure.sparse_spectrum import frobenius_norm
        from lmsat.measure.spectrum import dimension_for_w_error

        s, seconds = exact_singular_values(p.matrix)
        fro = frobenius_norm(p.matrix)
        print(f"exact: {len(s):,} singular values, largest block diagonalised in {seconds:.0f} s; trace check "
              f"{abs(float(np.sum(s * s)) - fro * fro) / (fro * fro):.1e}; peak RSS {peak_rss_gb():.1f} GB", flush=True)
        for t in thresholds:
            print(f"  exact d(W-error <= {t}) = {dimension_for_w_error(s, t, fro):,}", flush=True)
        if args.save:
            np.savez(args.save, singular_values=s, frobenius_norm=fro)
            print(f"saved {args.save}")
        return
    method = "auto"
    spec = ss.sparse_singular_values(p.matrix, method=method, device=args.device, max_dense=args.max_dense, seed=args.seed,
                                     tail_probes=args.probes or ss.TAIL_PROBES, tail_steps=args.steps or ss.TAIL_STEPS,
                                     tail_top=args.top or ss.TAIL_TOP)
    t4 = time.perf_counter()
    print(f"spectrum: {spec.method} on {spec.device} in {t4 - t3:.1f} s; blocks {spec.blocks.get('large_blocks')}; "
          f"peak RSS {peak_rss_gb():.1f} GB", flush=True)
    dims = ss.spectrum_dimensions(spec, thresholds)
    for t in thresholds:
        d = dims[t]
        print(f"  d(W-error <= {t}) = {d['estimate']:,}  interval [{d['lo']:,}, {d['hi']:,}]  ({d['how']})", flush=True)
    if spec.tail is not None:
        print("  tail estimate: " + json.dumps(spec.accuracy.get("tail_estimate")), flush=True)
    load = os.getloadavg()
    print(f"total wall {t4 - t0:.1f} s (without generation {t4 - t1:.1f} s); peak RSS {peak_rss_gb():.1f} GB; "
          f"load average now {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    if args.save:
        np.savez(args.save, singular_values=spec.singular_values, frobenius_norm=spec.frobenius_norm,
                 dims=np.array([dims[t]["estimate"] for t in thresholds]))
        print(f"saved {args.save}")
    if args.compare:
        ref = np.load(args.compare)
        from lmsat.measure.spectrum import dimension_for_w_error

        for t in thresholds:
            exact = dimension_for_w_error(ref["singular_values"], t, float(ref["frobenius_norm"]))
            d = dims[t]
            inside = d["lo"] <= exact <= d["hi"]
            print(f"  t = {t}: exact {exact:,}, estimate {d['estimate']:,} ({100 * (d['estimate'] - exact) / exact:+.2f}%), "
                  f"interval [{d['lo']:,}, {d['hi']:,}] {'holds' if inside else 'MISSES'} it")


if __name__ == "__main__":
    main()
