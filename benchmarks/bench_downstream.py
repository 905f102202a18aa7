"""Benchmark: `lmsat downstream` on one checkpoint vs the harness's own `lm_eval.simple_evaluate(model="hf")`.

Both load the same model folder and run the same lm-eval tasks (a cloze task and a perplexity
task over Brown text, built here as custom YAML tasks), alternated in the same process. lmsat's
side is `lmsat.experiments.downstream.evaluate_checkpoint`: lmsat's loader, the harness on the
loaded model (HFLM), and writing the record, the harness log, results JSON and samples. The
baseline is the harness loading the model itself, with nothing written. Goal: ratio ~1 (lmsat adds
no cost to the evaluation), and equal metrics. Wall time and this process's CPU time are both
reported: on a shared machine the CPU-time ratio is the steadier one.

Usage: python benchmarks/bench_downstream.py [--model DIR] [--docs N] [--repeats K] [--batch-size B]
(default model: SmolLM2-135M as a plain HF folder, from lmsat fetch-assets)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from lmsat import assets


def write_tasks(folder: Path, n_docs: int) -> None:
    lines = [ln for n in ("cb01", "cb02", "cb03") for ln in (assets.brown_path() / f"{n}.txt").read_text().splitlines() if ln.strip()]
    sents = [s.split() for s in lines if 10 <= len(s.split()) <= 30 and s.split()[-1] == "." and s.split()[-2].isalpha()]
    cloze = []
    for i in range(n_docs):
        w = sents[i]
        choices = [sents[(i + 7 * k) % len(sents)][-2] for k in (1, 2, 3)]
        choices.insert(i % 4, w[-2])
        cloze.append({"context": " ".join(w[:-2]), "choices": choices, "label": i % 4})
    ppl = [" ".join(lines[3 * i : 3 * i + 3]) for i in range(max(2, n_docs // 4))]
    (folder / "cloze.jsonl").write_text("".join(json.dumps(d) + "\n" for d in cloze))
    (folder / "ppl.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ppl))
    (folder / "bench_cloze.yaml").write_text(yaml.safe_dump({
        "task": "bench_cloze", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(folder / "cloze.jsonl")}},
        "output_type": "multiple_choice", "test_split": "test", "doc_to_text": "{{context}}", "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}", "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}))
    (folder / "bench_ppl.yaml").write_text(yaml.safe_dump({
        "task": "bench_ppl", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(folder / "ppl.jsonl")}},
        "output_type": "loglikelihood_rolling", "test_split": "test", "doc_to_text": "", "doc_to_target": "{{text}}",
        "metric_list": [{"metric": "word_perplexity", "higher_is_better": False}]}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    import lm_eval

    from lmsat.experiments import downstream as ds
    from lmsat.loading.checkpoints import Checkpoint

    folder = args.model or str(assets.smollm2_hf_path())
    tmp = Path(tempfile.mkdtemp(prefix="bench-downstream-"))
    (tmp / "tasks").mkdir()
    write_tasks(tmp / "tasks", args.docs)
    plan = ds.resolve_tasks("bench_cloze,bench_ppl", [tmp / "tasks"])
    ckpt = Checkpoint(model=Path(folder).name, revision="main", step=None, source="local", path=folder)  # type: ignore[arg-type]

    def run_lmsat() -> dict:
        with ds.harness_task_specs(plan) as specs:
            rec = ds.evaluate_checkpoint(ckpt, plan, specs, tmp / "run", device="cpu", batch_size=args.batch_size,
                                         bootstrap_iters=0, force=True)
        return rec.results["tasks"]

    def run_harness() -> dict:
        res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32", tasks=plan.names,
                                      task_manager=plan.task_manager, device="cpu", batch_size=args.batch_size,
                                      bootstrap_iters=0, log_samples=True)
        return {t: v["metrics"] for t, v in ds.metrics_of(res).items()}

    run_harness()  # warm-up: dataset cache, tokenizer files, kernels
    t_lmsat, t_harness, c_lmsat, c_harness = [], [], [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        mine = run_lmsat()
        t_lmsat.append(time.perf_counter() - t0)
        c_lmsat.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        theirs = run_harness()
        t_harness.append(time.perf_counter() - t0)
        c_harness.append(time.process_time() - c0)
    same = all(abs(mine[t][m] - theirs[t][m]) <= 1e-6 * max(1.0, abs(theirs[t][m])) for t in theirs for m in theirs[t])
    m_l, m_h = statistics.median(t_lmsat), statistics.median(t_harness)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"lm-eval {getattr(lm_eval, '__version__', '?')}")
    print(f"model {folder}; tasks {plan.names}; {args.docs} cloze docs x 4 choices + {max(2, args.docs // 4)} perplexity docs; "
          f"batch {args.batch_size}; {args.repeats} alternated repeats")
    print(f"lm_eval.simple_evaluate(model='hf') : median {m_h:.2f} s  (runs {', '.join(f'{t:.2f}' for t in t_harness)})")
    print(f"lmsat evaluate_checkpoint            : median {m_l:.2f} s  (runs {', '.join(f'{t:.2f}' for t in t_lmsat)})")
    cpu_l, cpu_h = statistics.median(c_lmsat), statistics.median(c_harness)
    print(f"ratio lmsat / harness: wall {m_l / m_h:.3f}, CPU time {cpu_l / cpu_h:.3f} (CPU s: {cpu_l:.2f} vs {cpu_h:.2f})   "
          f"metrics equal: {same}   {mine}")


if __name__ == "__main__":
    main()
