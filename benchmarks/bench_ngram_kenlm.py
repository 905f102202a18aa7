"""lmsat's 5-gram counting against KenLM's ``lmplz`` stage 1, side by side on the same ids (issue 15).

KenLM (https://github.com/kpu/kenlm) is the C++ n-gram toolkit practitioners use; its
``lmplz`` stage 1 is "Counting and sorting n-grams". This script

1. finds ``lmplz`` ($LMPLZ, the PATH, or a previous build under --work), else builds it
   from the ``kenlm`` source distribution on PyPI (``pip download --no-binary :all:``;
   it holds the full C++ tree with ``lm/builder``) with cmake, a C++ compiler and Debian's
   Boost (``apt-get install cmake libboost-program-options-dev libboost-system-dev
   libboost-thread-dev libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev``). When that
   is not possible it prints a note and runs lmsat alone;
2. writes each token stream once as ids (``.npy``, for lmsat) and once as text, the ids
   as words on one line (for lmplz: the same ids, so the same distinct n-grams, plus the
   two that hold KenLM's ``<s>`` and ``</s>``);
3. runs each tool in its own process: lmsat ``count_ngrams`` on the loaded ids (numba kernels
   when installed, loaded before timing; ``--numpy`` also times the numpy route) or, above
   --shard-tokens, ``NGramCounter`` fed 4M-token pieces read from disk, its shard tables spilled
   as first-token range buckets and merged bucket by bucket as sorted runs
   (``finish_buckets``: the full table never sits in memory at once); ``lmplz -o 5 -S 40% -T tmp
   --discount_fallback`` timed from its start to the "2/5" line (stage 1 includes reading
   the text: that is how lmplz takes its input), peak RSS (VmHWM) read from /proc at that
   moment, then run on to its statistics (distinct 5-grams) and stopped;
4. checks that both count the same distinct 5-grams (KenLM = lmsat + 2).

Wall seconds and CPU seconds (user + sys) of each; lmsat is single-threaded (numpy / numba), lmplz
uses its default threads. ``uptime`` is printed at the start and the end.

    python benchmarks/bench_ngram_kenlm.py --sizes 1e7,5e7 --real --numpy
    python benchmarks/bench_ngram_kenlm.py --sizes 5e8    # sharded, spilled, ~30 GB of disk under --work
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

N = 5
VOCAB = 50257


def zipf_stream(n_tokens: int, vocab: int = VOCAB, exponent: float = 1.1, seed: int = 0) -> np.ndarray:
    p = 1.0 / np.arange(1, vocab + 1) ** exponent
    return np.random.default_rng(seed).choice(vocab, size=n_tokens, p=p / p.sum()).astype(np.int64)


def find_or_build_lmplz(work: Path) -> tuple[Path | None, str]:
    """(path to lmplz, how it was found) or (None, why not)."""
    for cand in (os.environ.get("LMPLZ"), shutil.which("lmplz"), str(work / "build" / "bin" / "lmplz"), "/tmp/kenlm/build/bin/lmplz"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand), f"found at {cand}"
    for tool in ("cmake", "c++", "make"):
        if shutil.which(tool) is None:
            return None, f"no {tool} on PATH (apt-get install cmake g++ make and the Boost -dev packages)"
    work.mkdir(parents=True, exist_ok=True)
    sdists = sorted(work.glob("kenlm-*.tar.gz"))
    if not sdists:
        res = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation", "kenlm", "-d", str(work)],
            capture_output=True,
            text=True,
            check=False,
        )
        sdists = sorted(work.glob("kenlm-*.tar.gz"))
        if not sdists:
            return None, "could not download the kenlm source distribution from PyPI: " + (res.stderr.strip().splitlines() or ["?"])[-1]
    with tarfile.open(sdists[-1]) as tar:
        tar.extractall(work, filter="data")
    src = next(p for p in work.iterdir() if p.is_dir() and p.name.startswith("kenlm-"))
    build = work / "build"
    build.mkdir(exist_ok=True)
    for cmd in (["cmake", str(src), "-DCMAKE_BUILD_TYPE=Release"], ["make", f"-j{os.cpu_count() or 1}", "lmplz"]):
        res = subprocess.run(cmd, cwd=build, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
            return None, f"building lmplz failed at '{' '.join(cmd[:2])}': {' | '.join(tail)} (Debian: apt-get install libboost-all-dev zlib1g-dev)"
    lmplz = build / "bin" / "lmplz"
    return (lmplz, f"built from {sdists[-1].name}") if lmplz.is_file() else (None, "cmake build produced no bin/lmplz")


def _proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # kB
    return 0


def _proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_lmplz(lmplz: Path, text: Path, tmp: Path) -> dict:
    """Stage-1 wall and CPU seconds, peak RSS at its end, and the distinct 5-grams lmplz reports."""
    tmp.mkdir(parents=True, exist_ok=True)
    with open(text, "rb") as fin:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [str(lmplz), "-o", str(N), "-S", "40%", "-T", str(tmp), "--discount_fallback"],
            stdin=fin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        out: dict = {}
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("=== 2/5") and "stage1_seconds" not in out:
                out["stage1_seconds"] = time.perf_counter() - start
                out["stage1_cpu_seconds"] = _proc_cpu_seconds(proc.pid)
                out["stage1_peak_mb"] = _proc_status(proc.pid, "VmHWM") / 1024
            if line.startswith(f"{N} ") and "stage1_seconds" in out:
                out["distinct_ngrams"] = int(line.split()[1])
                out["peak_mb_at_stop"] = _proc_status(proc.pid, "VmHWM") / 1024
                proc.kill()
                break
        proc.wait()
    return out


LMSAT_CHILD = r"""
import json, resource, sys, time
import numpy as np
import lmsat.measure.ngram as ngram
from lmsat.measure.ngram import NGramCounter, count_ngrams, merge_counts
path, shard, vocab, use_numba, spill = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
ngram.USE_NUMBA = use_numba and ngram._kernels.HAVE_NUMBA
# Load (or compile, the first time) the kernels before timing, as lmplz is compiled before it runs.
warm, min_rows = np.arange(20000) % 7001, ngram.NUMBA_MIN_ROWS
ngram.NUMBA_MIN_ROWS = 0
merge_counts([count_ngrams(warm, 5, vocab), count_ngrams(warm[::-1], 5, vocab)])
ngram.NUMBA_MIN_ROWS = min_rows
with open(path, "rb") as fh:
    np.lib.format.read_magic(fh)
    shape, _, _ = np.lib.format.read_array_header_1_0(fh)
    offset = fh.tell()
n_tok = int(shape[0])
cpu0 = time.process_time(); t0 = time.perf_counter()
if shard >= n_tok:
    ids = np.fromfile(path, dtype=np.int64, count=n_tok, offset=offset)
    c = count_ngrams(ids, 5, vocab)
    distinct = c.n_ngrams
    del ids, c
else:  # streamed from disk in 4M-token pieces, shards spilled as first-token range buckets, merged bucket by bucket
    counter = NGramCounter(5, vocab, shard_tokens=shard, spill_dir=spill if spill != "-" else None)
    with open(path, "rb") as fh:
        fh.seek(offset)
        for i in range(0, n_tok, 1 << 22):
            counter.add(np.fromfile(fh, dtype=np.int64, count=min(1 << 22, n_tok - i)))
    distinct = sum(b.n_ngrams for b in counter.finish_buckets())
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0, "distinct_ngrams": distinct,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "numba": bool(ngram.USE_NUMBA)}))
"""


def run_lmsat(ids_path: Path, shard_tokens: int, vocab: int, use_numba: bool = True, spill: Path | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    argv = [str(ids_path), str(shard_tokens), str(vocab), "1" if use_numba else "0", str(spill) if spill else "-"]
    res = subprocess.run([sys.executable, "-c", LMSAT_CHILD, *argv], capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def write_zipf_ids(path: Path, n_tokens: int, vocab: int = VOCAB, exponent: float = 1.1, seed: int = 0, chunk: int = 25_000_000) -> None:
    """Zipf ids written to ``path`` (.npy) in chunks (500M tokens never sit in memory twice); equal to zipf_stream when one chunk."""
    p = 1.0 / np.arange(1, vocab + 1) ** exponent
    p /= p.sum()
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.int64, shape=(n_tokens,))
    for i in range(0, n_tokens, chunk):
        out[i : i + chunk] = rng.choice(vocab, size=min(chunk, n_tokens - i), p=p)
    out.flush()
    del out


def write_text(ids_path: Path, text: Path) -> None:
    """The ids as words of one line (lmplz's input)."""
    ids = np.load(ids_path, mmap_mode="r")
    words = [str(i) for i in range(int(ids.max()) + 1 if ids.size else 1)]
    with open(text, "w") as fh:
        for i in range(0, ids.size, 1 << 20):
            fh.write(" ".join([words[t] for t in ids[i : i + (1 << 20)].tolist()]))
            fh.write(" " if i + (1 << 20) < ids.size else "\n")


def real_ids() -> np.ndarray:
    """Brown + King James Bible with the GPT-2 BPE (lmsat's offline assets), documents = files."""
    from lmsat import assets
    from lmsat.experiments.ngram import token_stream
    from lmsat.loading.corpus import CorpusSpec
    from lmsat.loading.tokenizers import load_tokenizer

    tok = load_tokenizer(str(assets.gpt2_bpe_path()))
    return np.concatenate([a for src in (assets.brown_path(), assets.kjv_path()) for a, _ in token_stream(CorpusSpec(str(src)), tok)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1e7,5e7", help="Zipf(1.1) token counts at V = 50257 (e.g. 1e7,5e7,5e8)")
    ap.add_argument("--real", action="store_true", help="also Brown + KJV with the GPT-2 BPE")
    ap.add_argument("--shard-tokens", type=float, default=5e7, help="lmsat counts in shards of this many tokens (merged as sorted runs)")
    ap.add_argument("--numpy", action="store_true", help="also time lmsat's numpy route (without the numba kernels)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmsat-kenlm"), help="where lmplz is built and the streams are written")
    args = ap.parse_args()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}, numpy {np.__version__}; uptime: {uptime}")
    lmplz, how = find_or_build_lmplz(args.work)
    print(f"lmplz: {how}" if lmplz else f"NOTE: KenLM comparison skipped: {how}")
    args.work.mkdir(parents=True, exist_ok=True)
    streams: list[tuple[str, int | None]] = [(f"Zipf {float(s) / 1e6:g}M", int(float(s))) for s in args.sizes.split(",") if s]
    if args.real:
        streams.append(("Brown + KJV, GPT-2", None))
    print("| stream | tokens | route | lmsat s | lmsat CPU s | lmsat peak MB | lmplz stage 1 s | lmplz CPU s | lmplz peak MB | speed-up (wall) | speed-up (CPU) | distinct 5-grams lmsat / lmplz |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, size in streams:
        ids_path = args.work / "ids.npy"
        if size is None:
            np.save(ids_path, real_ids())
        else:
            write_zipf_ids(ids_path, size)
        n_tok = int(np.load(ids_path, mmap_mode="r").shape[0])
        spill = args.work / "spill" if n_tok > args.shard_tokens else None
        runs = [("numba", run_lmsat(ids_path, int(args.shard_tokens), VOCAB, True, spill))]
        if args.numpy:
            runs.append(("numpy", run_lmsat(ids_path, int(args.shard_tokens), VOCAB, False, spill)))
        for route, ours in runs:  # shown before lmplz runs (at 500M tokens it takes many minutes)
            print(f"lmsat {label} {route}: {json.dumps(ours)}", file=sys.stderr, flush=True)
        theirs: dict = {}
        if lmplz is not None:
            text = args.work / "ids.txt"
            write_text(ids_path, text)
            theirs = run_lmplz(lmplz, text, args.work / "tmp")
            text.unlink()
        ids_path.unlink()

        def f(v: object, spec: str = ".1f") -> str:
            return "-" if v is None else format(v, spec)

        for route, ours in runs:
            if theirs.get("distinct_ngrams") is not None and theirs["distinct_ngrams"] != ours["distinct_ngrams"] + 2:
                print(f"MISMATCH: lmplz counts {theirs['distinct_ngrams']} distinct 5-grams, lmsat {ours['distinct_ngrams']} (+2 for <s>, </s>)")
            route = route if ours.get("numba") or route == "numpy" else "numpy (numba not installed)"
            s1, c1 = theirs.get("stage1_seconds"), theirs.get("stage1_cpu_seconds")
            print(
                f"| {label} | {n_tok:,} | {route} | {ours['seconds']:.1f} | {ours['cpu_seconds']:.1f} | {ours['peak_mb']:,.0f} | {f(s1)} | {f(c1)} | "
                f"{f(theirs.get('stage1_peak_mb'), ',.0f')} | {f(s1 / ours['seconds'] if s1 else None, '.2f')} | "
                f"{f(c1 / ours['cpu_seconds'] if c1 else None, '.2f')} | {ours['distinct_ngrams']:,} / {f(theirs.get('distinct_ngrams'), ',')} |",
                flush=True,
            )
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"uptime at the end: {uptime}")


if __name__ == "__main__":
    main()
