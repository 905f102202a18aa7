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
3. runs each tool in its own process: lmsat ``count_ngrams`` (or ``NGramCounter`` in
   shards with --shard-tokens) on the loaded ids; ``lmplz -o 5 -S 40% -T tmp
   --discount_fallback`` timed from its start to the "2/5" line (stage 1 includes reading
   the text: that is how lmplz takes its input), peak RSS (VmHWM) read from /proc at that
   moment, then run on to its statistics (distinct 5-grams) and stopped;
4. checks that both count the same distinct 5-grams (KenLM = lmsat + 2).

Wall seconds and CPU seconds (user + sys) of each; lmsat is single-threaded numpy.

    python benchmarks/bench_ngram_kenlm.py --sizes 1e7,5e7 --real
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
    for cand in (os.environ.get("LMPLZ"), shutil.which("lmplz"), str(work / "build" / "bin" / "lmplz")):
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
from lmsat.measure.ngram import NGramCounter, count_ngrams
ids = np.load(sys.argv[1])
shard = int(sys.argv[2])
cpu0 = time.process_time(); t0 = time.perf_counter()
if shard >= ids.size:
    c = count_ngrams(ids, 5, int(sys.argv[3]))
else:
    counter = NGramCounter(5, int(sys.argv[3]), shard_tokens=shard)
    for i in range(0, ids.size, 1 << 22):
        counter.add(ids[i : i + (1 << 22)])
    c = counter.finish()
print(json.dumps({"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0,
                  "distinct_ngrams": c.n_ngrams, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_lmsat(ids_path: Path, shard_tokens: int, vocab: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", LMSAT_CHILD, str(ids_path), str(shard_tokens), str(vocab)], capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


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
    ap.add_argument("--sizes", default="1e7,5e7", help="Zipf(1.1) token counts at V = 50257")
    ap.add_argument("--real", action="store_true", help="also Brown + KJV with the GPT-2 BPE")
    ap.add_argument("--shard-tokens", type=float, default=5e7, help="lmsat counts in shards of this many tokens (merged as sorted runs)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lmsat-kenlm"), help="where lmplz is built and the streams are written")
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load[0]:.1f}; python {platform.python_version()}, numpy {np.__version__}")
    lmplz, how = find_or_build_lmplz(args.work)
    print(f"lmplz: {how}" if lmplz else f"NOTE: KenLM comparison skipped: {how}")
    streams: list[tuple[str, np.ndarray]] = [(f"Zipf {float(s) / 1e6:g}M", zipf_stream(int(float(s)))) for s in args.sizes.split(",") if s]
    if args.real:
        streams.append(("Brown + KJV, GPT-2", real_ids()))
    print("| stream | tokens | lmsat s | lmsat CPU s | lmsat peak MB | lmplz stage 1 s | lmplz CPU s | lmplz peak MB | speed-up (wall) | speed-up (CPU) | distinct 5-grams lmsat / lmplz |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label, ids in streams:
        ids_path = args.work / "ids.npy"
        args.work.mkdir(parents=True, exist_ok=True)
        np.save(ids_path, ids)
        ours = run_lmsat(ids_path, int(args.shard_tokens), VOCAB)
        theirs: dict = {}
        if lmplz is not None:
            text = args.work / "ids.txt"
            with open(text, "w") as fh:
                for i in range(0, ids.size, 1 << 20):
                    fh.write(" ".join(map(str, ids[i : i + (1 << 20)].tolist())))
                    fh.write(" " if i + (1 << 20) < ids.size else "\n")
            theirs = run_lmplz(lmplz, text, args.work / "tmp")
            text.unlink()
            if theirs.get("distinct_ngrams") is not None and theirs["distinct_ngrams"] != ours["distinct_ngrams"] + 2:
                print(f"MISMATCH: lmplz counts {theirs['distinct_ngrams']} distinct 5-grams, lmsat {ours['distinct_ngrams']} (+2 for <s>, </s>)")
        ids_path.unlink()

        def f(v: object, spec: str = ".1f") -> str:
            return "-" if v is None else format(v, spec)

        s1, c1 = theirs.get("stage1_seconds"), theirs.get("stage1_cpu_seconds")
        print(
            f"| {label} | {ids.size:,} | {ours['seconds']:.1f} | {ours['cpu_seconds']:.1f} | {ours['peak_mb']:,.0f} | {f(s1)} | {f(c1)} | "
            f"{f(theirs.get('stage1_peak_mb'), ',.0f')} | {f(s1 / ours['seconds'] if s1 else None, '.2f')} | "
            f"{f(c1 / ours['cpu_seconds'] if c1 else None, '.2f')} | {ours['distinct_ngrams']:,} / {f(theirs.get('distinct_ngrams'), ',')} |",
            flush=True,
        )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
