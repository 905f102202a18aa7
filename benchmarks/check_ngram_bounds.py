"""Check the top-k brackets and the tail estimate on d(W-error <= t) against an exact dense run at a 10k-20k block (issue 15 item 1).

Reads an exact (``complete``) ``ngram`` record of a run directory, rebuilds P from the stored
counts of the same run, computes only the top k singular values of P (Lanczos, as a block
over ``--max-dense`` would) for each k of ``--ks``, and prints, per threshold, the exact d,
the bracket [lo, hi] and whether it holds d; also the largest difference of W-error(d) for
d <= k between the two runs. Too slow for the test suite (minutes per k on 2 cores).

    lmsat ngram-rank -t ~/.cache/lmsat/gpt2-bpe/gpt2.tiktoken -d ~/.cache/lmsat/brown -o runs/fig7
    python benchmarks/check_ngram_bounds.py runs/fig7 --ks 1024,4096
    python benchmarks/check_ngram_bounds.py runs/fig7 --ks "" --tail 10000   # the tail estimate (top 512 + SLQ)
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from lmsat.experiments.ngram import COUNTS_KIND, KIND, THRESHOLDS
from lmsat.measure.ngram import NGramCounts, next_token_matrix
from lmsat.measure.sparse_spectrum import dimension_bounds, sparse_singular_values
from lmsat.measure.spectrum import w_error_curve
from lmsat.store import Store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--ks", default="1024,4096")
    ap.add_argument("--tail", type=int, default=None, metavar="MAX_DENSE",
                    help="also check the tail estimate with this --max-dense (e.g. 10000 for Brown's 15.8k block)")
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--top", type=int, default=512)
    ap.add_argument("--key", default=None, help="the exact record's key (default: the first complete one with the largest block)")
    args = ap.parse_args()
    store = Store(args.run_dir)
    recs = [r for r in store.records(KIND) if r.results.get("complete") and (args.key is None or r.key == args.key)]
    rec = max(recs, key=lambda r: max(r.results["blocks"].get("large_blocks") or [0]))
    print(f"exact record: {rec.key}; largest block {max(rec.results['blocks']['large_blocks'])}; load {os.getloadavg()[0]:.1f}")
    exact_curve = rec.load_arrays()["w_error"]
    counts_rec = store.get(COUNTS_KIND, rec.inputs["counts_key"])
    assert counts_rec is not None
    counts = NGramCounts.from_arrays(counts_rec.load_arrays())
    p = next_token_matrix(counts)
    del counts
    if args.tail:
        check_tail(p.matrix, rec, args.tail, args.probes, args.steps, args.top)
    for k in (int(x) for x in args.ks.split(",") if x):
        start = time.perf_counter()
        spec = sparse_singular_values(p.matrix, method="lanczos", truncated_k=k, device="cpu")
        seconds = time.perf_counter() - start
        curve = w_error_curve(spec.singular_values, spec.frobenius_norm)
        m = min(len(curve), len(exact_curve))
        print(f"k = {k}: {len(spec.singular_values)} values in {seconds:.0f} s; max |W-error(d) - exact| for d <= {m - 1}: {np.max(np.abs(curve[:m] - exact_curve[:m])):.2e}")
        for t in THRESHOLDS:
            d = rec.results["dims_for_w_error"][str(t)]
            lo, hi = dimension_bounds(spec.singular_values, spec.frobenius_norm, spec.rank_bound or 0, t)
            print(f"  W-error <= {t}: exact d = {d}, bracket [{lo}, {hi}] ({'holds' if lo <= d <= hi else 'VIOLATED'})")


def check_tail(p_matrix, rec, max_dense: int, probes: int, steps: int, top: int) -> None:
    """The default past-the-dense-limit route (top values + stochastic Lanczos quadrature) against the exact record."""
    from lmsat.measure.sparse_spectrum import spectrum_dimensions

    start = time.perf_counter()
    spec = sparse_singular_values(p_matrix, device="cpu", max_dense=max_dense, tail_probes=probes, tail_steps=steps, tail_top=top)
    seconds = time.perf_counter() - start
    print(f"tail estimate (--max-dense {max_dense}, top {top}, {probes} probes x {steps} steps): {seconds:.0f} s")
    for t, d in spectrum_dimensions(spec, THRESHOLDS).items():
        exact = rec.results["dims_for_w_error"][str(t)]
        print(f"  W-error <= {t}: exact d = {exact}, estimate {d['estimate']} ({100 * (d['estimate'] - exact) / exact:+.2f}%), "
              f"interval [{d['lo']}, {d['hi']}] ({'holds' if d['lo'] <= exact <= d['hi'] else 'VIOLATED'}; {d['how']})")


if __name__ == "__main__":
    main()
