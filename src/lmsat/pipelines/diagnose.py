"""`lmsat diagnose MODEL --data CORPUS`: is the model's hidden size d what limits its softmax head on this data?

One command composes the existing experiments (their Python API, not copies), each
a resumable stage whose results are ordinary records in the run directory:

1. **head**: singular spectrum of the LM head (:func:`lmsat.experiments.head.run_head`).
2. **anisotropy**: layer-wise anisotropy on a token sample of the corpus
   (:func:`lmsat.experiments.anisotropy.run_anisotropy`).
3. **n-gram dimension** of the corpus, tokenised with the model's own tokenizer
   (:func:`lmsat.experiments.ngram.run_ngram`).
4. **rank probe** around d on the frozen model, which also measures the model's own loss
   on the same held-out tokens (:func:`lmsat.experiments.rank_probe.run_rank_probe`).
5. **checkpoint series** (a folder of ``stepN`` folders, or hub revisions): a sweep of
   every checkpoint and the saturation analysis (:mod:`lmsat.experiments.sweep`); stages
   1-4 use the last checkpoint.
6. **verdict**: :func:`verdict_of` reads the records of stages 1-5 (it never measures) and
   writes one ``verdict`` record: is d binding, why, every assumption, a recommendation
   with the numbers the probe measured.
7. **report**: :func:`lmsat.report.build_report` -> ``DIR/report.html``.

The verdict's reading (docs/report.md, "lmsat diagnose"):

* probe: ``cost of halving`` = loss(r = d/2) - loss(r = d), both heads trained with the
  same recipe on the same frozen representations. If it exceeds
  :data:`TOLERANCE` nats/token the loss is still falling with rank at r = d: the head's
  rank is a limit the representations could use more of.
* data: the dimension at which the corpus's n-gram matrix P reaches W-error 0.5
  (Eckart-Young-Mirsky; docs/methods.md, W-error). Above d: no rank-d head can even
  halve the error of the best approximation of the data's next-token distributions.
* both say so: **binding**; one of them: **partly binding**; neither: **not binding**.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lmsat import __version__
from lmsat.errors import UserError
from lmsat.pipelines import previous_inputs, run_stages
from lmsat.experiments.rank_probe.settings import SVD_LR_GRID
from lmsat.kinds.base import integer, number, value
from lmsat.kinds.verdict import VerdictRecord
from lmsat.store import Record, Store, atomic_write_json, fingerprint

KIND = VerdictRecord.KIND
REPORT = "report.html"
CONFIG_FILE = "diagnose.json"
# A rank change that moves the probe loss by less than this (nats/token) is called negligible
# (the same tolerance as the report's rank-probe finding, lmsat.report.diagnosis.PROBE_TOLERANCE).
TOLERANCE = 0.05
# A full-rank probe head this far above the model's own head (nats/token) is limited by the probe's budget, not its rank:
# the probe's rank comparisons are then not read as evidence (the model's own head has rank d too).
BUDGET_LIMITED = 0.5
# A head trained for fewer steps than this that training moved by more than BUDGET_LIMITED is taken as still improving
# (the records keep no loss curve to check convergence with): its loss only bounds the halving cost from above.
MIN_SETTLED_STEPS = 100
BINDING, PARTIAL, NOT_BINDING, UNKNOWN = "binding", "partly binding", "not binding", "inconclusive"


@dataclass(frozen=True)
class Budget:
    """Tokens and steps of every stage. Token counts are tokens of the model's tokenizer."""

    name: str
    anisotropy_tokens: int
    seq_len: int
    ngram_n: int
    ngram_max_tokens: int | None
    ngram_max_contexts: int | None
    ngram_top_k: int | None
    probe_train_tokens: int
    probe_eval_tokens: int
    probe_steps: int
    probe_search_steps: int
    probe_lr_grid: tuple[float, ...]
    probe_batch_tokens: int
    probe_ranks: int  # ranks probed below d: d/2, d/4, ... (this many), plus the full-rank head at r = d
    sweep_tokens: int

    def describe(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


# Costs measured with SmolLM2-135M (d = 576, V = 49,152) on the Brown corpus: docs/report.md.
# The probes start from the SVD truncation of the model's own head, so their learning rates come
# from the SVD grid (rates of 1e-3 and more wreck the truncation: docs/rank-probe.md). The search
# compares each rate with the untrained truncation (rate 0), so it needs search steps even for one rate.
BUDGETS: dict[str, Budget] = {
    "quick": Budget("quick", anisotropy_tokens=2048, seq_len=128, ngram_n=3, ngram_max_tokens=300_000, ngram_max_contexts=4000,
                    ngram_top_k=None, probe_train_tokens=8192, probe_eval_tokens=2048, probe_steps=30, probe_search_steps=10,
                    probe_lr_grid=(1e-4,), probe_batch_tokens=256, probe_ranks=2, sweep_tokens=4096),
    "standard": Budget("standard", anisotropy_tokens=8192, seq_len=256, ngram_n=5, ngram_max_tokens=None, ngram_max_contexts=16_000,
                       ngram_top_k=None, probe_train_tokens=32768, probe_eval_tokens=4096, probe_steps=200, probe_search_steps=10,
                       probe_lr_grid=SVD_LR_GRID, probe_batch_tokens=512, probe_ranks=3, sweep_tokens=16384),
    "study": Budget("study", anisotropy_tokens=50_000, seq_len=1024, ngram_n=5, ngram_max_tokens=None, ngram_max_contexts=None,
                    ngram_top_k=None, probe_train_tokens=1_000_000, probe_eval_tokens=50_000, probe_steps=2000, probe_search_steps=50,
                    probe_lr_grid=SVD_LR_GRID, probe_batch_tokens=8192, probe_ranks=5, sweep_tokens=50_000),
}


@dataclass
class DiagnoseResult:
    output: Path
    report: Path
    verdict: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def default_output(model: str) -> Path:
    """``lmsat-runs/diagnose-<model>``: one run folder per model (never the current directory's root)."""
    from lmsat.store import slugify

    name = Path(model.rstrip("/")).name or model
    return Path("lmsat-runs") / f"diagnose-{slugify(Path(name).stem if name.endswith('.gguf') else name)}"


def probe_ranks(d: int, n: int) -> list[int]:
    """d/2, d/4, ... (``n`` of them, each at least 1, unique); the full-rank head covers r = d."""
    out = []
    r = d
    for _ in range(n):
        r //= 2
        if r < 1:
            break
        out.append(r)
    return sorted(set(out))


def is_series(model: str, revisions: str | None) -> bool:
    """A checkpoint series: a local folder of ``stepN``/``checkpoint-N`` folders, or hub revisions asked for."""
    from lmsat.loading.checkpoints import checkpoint_folders

    path = Path(model).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and checkpoint_folders(path):
        return True
    return revisions is not None and not path.exists()


def check_output(output: Path, want: dict[str, Any]) -> None:
    """The output is new, or holds a diagnosis of exactly these inputs (``want``: model, revision(s),
    GGUF file, dtype, corpus, budget), so it resumes; a folder of other inputs is refused, since the
    verdict reads every record in it."""
    previous = previous_inputs(output, CONFIG_FILE, "diagnosis")
    if previous is not None and previous != want:
        raise UserError(
            f"'{output}' holds a diagnosis of other inputs ({_describe(previous)}); re-run with the same MODEL, --data, "
            "model and corpus options and --budget to continue it, or give another -o."
        )


def _describe(previous: Any) -> str:
    if not isinstance(previous, dict):
        return "unreadable diagnose.json"
    b = previous.get("budget", {})
    return f"model {previous.get('model')}, data {previous.get('data')}, budget {b.get('name') if isinstance(b, dict) else b}"


def run_diagnose(
    model: str,
    data: str,
    output: str | Path | None = None,
    budget: str | Budget = "quick",
    revision: str | None = None,
    revisions: str | None = None,
    gguf_file: str | None = None,
    dtype: str = "float32",
    device: str = "auto",
    trust_remote_code: bool = False,
    text_field: str = "text",
    data_config: str | None = None,
    split: str = "train",
    streaming: bool = True,
    say: Callable[[str], None] = print,
) -> DiagnoseResult:
    """Run every stage (module docstring) into ``output``; returns the report's path and the verdict."""
    from lmsat.loading.corpus import CorpusSpec, check_corpus
    from lmsat.loading.models import load_config, parse_model_arg, resolve_device

    if isinstance(budget, Budget):
        b = budget
    elif budget in BUDGETS:
        b = BUDGETS[budget]
    else:
        raise UserError(f"--budget must be one of {', '.join(BUDGETS)} (got '{budget}').")
    out = Path(output) if output is not None else default_output(model)
    resolve_device(device)
    corpus = CorpusSpec(source=data, text_field=text_field, config=data_config, split=split, streaming=streaming)
    check_corpus(corpus)
    series = is_series(model, revisions)
    checkpoints: list[Any] = []
    if series:
        from lmsat.loading.checkpoints import expand_sweep

        checkpoints = expand_sweep([model], revisions=revisions or "all")
        last = checkpoints[0].checkpoints[-1]
        spec = parse_model_arg(last.path if last.source == "local" else f"{model}@{last.revision}", None, gguf_file=gguf_file,
                               dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    else:
        spec = parse_model_arg(model, revision, gguf_file=gguf_file, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    from lmsat.loading.models import get_hidden_size

    d = int(get_hidden_size(load_config(spec)))  # a model that cannot load fails here, before anything is written
    identity = {"model": model, "data": data, "budget": b.describe(), "revision": revision, "revisions": revisions,
                "gguf_file": gguf_file, "dtype": dtype, "corpus": json.loads(json.dumps(corpus.describe()))}
    check_output(out, identity)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG_FILE, identity)

    result = DiagnoseResult(output=out, report=out / REPORT, verdict={})
    ranks = probe_ranks(d, b.probe_ranks)
    stages: list[tuple[str, Callable[[], Any]]] = [
        (f"LM-head spectrum (d = {d})", lambda: stage_head(spec, out)),
        (f"anisotropy per layer ({b.anisotropy_tokens:,} tokens)", lambda: stage_anisotropy(spec, corpus, out, b)),
        (f"n-gram dimension of the corpus (n = {b.ngram_n}, the model's tokenizer)", lambda: stage_ngram(spec, corpus, out, b)),
        (f"rank probe at r = {', '.join(map(str, ranks))} and d = {d}; the model's own loss",
         lambda: stage_rank_probe(spec, corpus, out, b, ranks)),
    ]
    if series:
        n_ck = sum(len(m.checkpoints) for m in checkpoints)
        stages.append((f"checkpoint sweep ({n_ck} checkpoints)", lambda: stage_sweep(checkpoints, corpus, out, b, device, dtype)))
    n = len(stages) + 2
    run_stages(stages, say, result.seconds, n)
    say(f"[{n - 1}/{n}] verdict ...")
    rec = write_verdict(out, b)
    result.verdict = VerdictRecord.from_record(rec).results()
    say(f"[{n}/{n}] writing the report ...")
    from lmsat.report import build_report

    start = time.perf_counter()
    build_report([out], result.report, title=f"lmsat diagnose: {Path(model.rstrip('/')).name} on {Path(data.rstrip('/')).name}")
    result.seconds["report"] = time.perf_counter() - start
    return result


# --- stages -----------------------------------------------------------------------------------


def stage_head(spec: Any, out: Path) -> Any:
    from lmsat.experiments.head import run_head

    return run_head([spec], out)


def stage_anisotropy(spec: Any, corpus: Any, out: Path, b: Budget) -> Any:
    from lmsat.experiments.anisotropy import run_anisotropy

    return run_anisotropy([spec], corpus, out, n_tokens=b.anisotropy_tokens, seq_len=b.seq_len, batch_size=4)


def ngram_settings(b: Budget) -> Any:
    from lmsat.experiments.ngram import NGramSettings

    return NGramSettings(n=b.ngram_n, max_tokens=b.ngram_max_tokens, max_contexts=b.ngram_max_contexts, top_k=b.ngram_top_k)


def stage_ngram(spec: Any, corpus: Any, out: Path, b: Budget) -> Any:
    from lmsat.experiments.ngram import run_ngram
    from lmsat.loading.models import load_model_tokenizer

    return run_ngram(corpus, load_model_tokenizer(spec), ngram_settings(b), out)


def probe_settings(b: Budget) -> Any:
    """The budget's probe recipe; heads start from the truncated SVD of the model's own head when lmsat offers it."""
    from lmsat.experiments.rank_probe import ProbeSettings

    settings = ProbeSettings(train_tokens=b.probe_train_tokens, eval_tokens=b.probe_eval_tokens, seq_len=b.seq_len,
                             lr_grid=b.probe_lr_grid, search_steps=b.probe_search_steps, steps=b.probe_steps,
                             batch_tokens=b.probe_batch_tokens)
    if "init" in {f.name for f in fields(ProbeSettings)}:
        settings = replace(settings, init="svd")  # type: ignore[call-arg]
    return settings


def stage_rank_probe(spec: Any, corpus: Any, out: Path, b: Budget, ranks: list[int]) -> Any:
    from lmsat.experiments.rank_probe import run_rank_probe

    return run_rank_probe([spec], corpus, out, ranks=ranks, settings=probe_settings(b))


def stage_sweep(models: list[Any], corpus: Any, out: Path, b: Budget, device: str, dtype: str) -> Any:
    from lmsat.experiments.saturation import run_saturation
    from lmsat.experiments.sweep import SweepSettings, plan_sweep, run_sweep

    settings = SweepSettings(n_tokens=b.sweep_tokens, seq_len=b.seq_len, batch_size=4, device=device, dtype=dtype, layers="last",
                             prefetch=False)
    plan = plan_sweep(models, corpus, out, settings)
    run_sweep(plan, corpus, out, settings)
    return run_saturation(out)


# --- verdict ----------------------------------------------------------------------------------


def probe_losses(store: Store) -> tuple[dict[int, float], float | None, dict[int, float], set[int]]:
    """({rank: held-out loss} of the trained low-rank and full-rank heads, the best final run per rank; own-head loss;
    {rank: held-out loss before training} of those best runs, when recorded; the ranks whose best run chose the
    largest learning rate of its grid, i.e. wanted to move faster than the grid allowed)."""
    from lmsat.kinds.rank_probe import RankProbeRecord, RankProbeRefRecord

    losses: dict[int, float] = {}
    start: dict[int, float] = {}
    edge: set[int] = set()
    own = None
    for rec in [*RankProbeRecord.load(store), *RankProbeRefRecord.load(store)]:
        if rec.head == "own":
            own = rec.validation_loss
        elif rec.is_final and rec.validation_loss is not None and integer(rec.rank) is not None:
            r, loss = int(rec.rank), rec.validation_loss
            if r not in losses or loss < losses[r]:
                losses[r] = loss
                if number(rec.step0_loss) is not None and number(rec.lr):
                    start[r] = float(rec.step0_loss)
                else:
                    start.pop(r, None)
                (edge.add if value(rec.lr_at_grid_edge) else edge.discard)(r)
    return losses, own, start, edge


def _corpus_name(data: str) -> str:
    return Path(str(data).rstrip("/")).name or str(data)


def verdict_of(d: int, data: str, losses: dict[int, float], own_loss: float | None, probe_inputs: dict[str, Any] | None,
               ngram: dict[str, Any] | None, model_caveats: list[str], truncation: dict[int, float] | None = None,
               start: dict[int, float] | None = None, at_grid_edge: set[int] | None = None) -> dict[str, Any]:
    """The verdict from stored numbers only (pure).

    ``losses``: held-out loss (nats/token) of heads of rank r trained on the frozen
    representations with one recipe, including r = d (the full-rank head).
    ``ngram``: the n-gram record's results and inputs ({"results": ..., "inputs": ...}) or None.
    Returns status, reason, evidence (label -> value, each label naming what it is measured on),
    assumptions and recommendation (module docstring).
    """
    corpus = _corpus_name(data)
    evidence: dict[str, Any] = {"hidden size d (width of the LM head's input)": d}
    assumptions: list[str] = []
    reasons: list[str] = []
    settings = (probe_inputs or {}).get("settings", {})
    eval_tokens = (probe_inputs or {}).get("eval_windows")
    seq = settings.get("seq_len")
    held = f"{eval_tokens * (seq - 1):,} held-out {corpus} tokens" if eval_tokens and seq else f"held-out {corpus} tokens"
    train = f"{settings.get('train_tokens', 0):,}" if settings else "?"

    probe_says: bool | None = None
    halving: float | None = None
    previous: float | None = None
    if own_loss is not None:
        evidence[f"model's own loss, nats/token ({held})"] = own_loss
    if d in losses:
        evidence[f"probe loss at r = d = {d}, nats/token ({held})"] = losses[d]
    for r in sorted(losses):
        if r != d:
            evidence[f"probe loss at r = {r}, nats/token ({held})"] = losses[r]
    if truncation and d in truncation:
        # The model's own head cut to rank r by its SVD, no training: a second, training-free reading of the same question.
        for r in sorted(truncation):
            if r in losses or r == d // 2:
                evidence[f"own head truncated to rank {r} (SVD, no training), nats/token ({held})"] = truncation[r]
    half = max((r for r in losses if r <= d // 2), default=None)
    if d in losses and half is not None:
        halving = losses[half] - losses[d]
        evidence[f"cost of halving the rank, r = {half} -> {d}, nats/token (probe)"] = halving
        quarter = max((r for r in losses if r <= half // 2), default=None)
        if quarter is not None:
            previous = losses[quarter] - losses[half]
            evidence[f"cost of the previous halving, r = {quarter} -> {half}, nats/token (probe)"] = previous
        probe_says = halving > TOLERANCE
        behind = losses[d] - own_loss if own_loss is not None else None
        moved = (start or {}).get(half, losses[half]) - losses[half]  # how far training moved the rank-d/2 head
        # Still moving: trained too briefly to have settled, or at the largest learning rate of its grid
        # (the search wanted faster steps). Either way its loss only bounds the rank-half head's from above.
        short = int(settings.get("steps") or 0) < MIN_SETTLED_STEPS
        pushing = half in (at_grid_edge or set())
        if probe_says and moved > BUDGET_LIMITED and (short or pushing):
            probe_says = None
            evidence[f"training moved the rank-{half} head by, nats/token (from {start[half]:.3f})"] = moved
            why = (f"in {settings.get('steps', '?')} steps" if short else
                   f"in {settings.get('steps', '?')} steps, at the largest learning rate of its grid")
            reasons.append(
                f"the rank-{half} head was still improving fast ({start[half]:.3f} -> {losses[half]:.3f} nats/token {why}), "
                f"so its loss is an upper bound and the halving cost ({halving:.3f} nats/token) "
                "can rule the bottleneck out but not in (a larger --budget trains it further)")
        elif behind is not None and behind > BUDGET_LIMITED:
            probe_says = None
            evidence["full-rank probe head above the model's own head, nats/token (both rank d)"] = behind
            reasons.append(
                f"the rank probe cannot tell: its full-rank head ends {behind:.2f} nats/token above the model's own head, which has the "
                f"same rank d, so the probe's budget ({train} tokens, {settings.get('steps', '?')} steps), not the rank, limits its losses "
                "(a larger --budget, ideally on a GPU, trains the heads long enough)")
        else:
            reasons.append(
                f"on the frozen representations, a head of rank {half} is {halving:.3f} nats/token worse than one of rank d = {d} "
                + ("(more than the %.2g-nat tolerance: the loss is still falling with rank at r = d, so more rank would help)" % TOLERANCE
                   if probe_says else "(within the %.2g-nat tolerance: the representations do not use the top half of d's rank)" % TOLERANCE))
    else:
        reasons.append("the rank probe has no pair of ranks d/2 and d to compare")

    data_says: bool | None = None
    if ngram is not None:
        res, inp = ngram["results"], ngram.get("inputs", {})
        dims = res.get("dims_for_w_error") or {}
        dim05, dim01 = dims.get("0.5"), dims.get("0.1")
        n_tok = res.get("n_tokens")
        nset = inp.get("settings", {})
        where = f"{n_tok:,} {corpus} tokens, n = {nset.get('n')}" if n_tok else corpus
        k = res.get("n_singular_values")
        kept, observed = res.get("n_contexts"), res.get("n_contexts_observed")
        partial = kept is not None and observed is not None and kept < observed
        if partial:
            where += f", the {kept:,} most frequent of {observed:,} contexts"
        if dim05 is not None:
            evidence[f"data dimension at W-error 0.5 ({where})"] = dim05
            # From a subset of the contexts the dimension is only a lower bound: it can show d is exceeded, never that it is not.
            data_says = True if dim05 > d else (None if partial else False)
        elif k is not None:
            evidence[f"data dimension at W-error 0.5 ({where})"] = f"> {k}"
            data_says = True if k >= d else None
        if dim01 is not None:
            evidence[f"data dimension at W-error 0.1 ({where})"] = dim01
        elif k is not None:
            evidence[f"data dimension at W-error 0.1 ({where})"] = f"> {k} (only the top {k} singular values were computed)"
        w_at_d = (res.get("w_error_at") or {}).get(str(d))
        if w_at_d is not None:
            evidence[f"data W-error at d = {d} ({where})"] = w_at_d
        if data_says is None and dim05 is not None:
            reasons.append(f"the {corpus} n-gram matrix reaches W-error 0.5 at {dim05} dimensions, but only on a subset of its "
                           "contexts, a lower bound that cannot rule the bottleneck out (a larger --budget keeps more contexts)")
        if data_says is not None:
            reasons.append(
                f"the {corpus} n-gram matrix needs {'more' if data_says else 'no more'} than d = {d} dimensions to halve its "
                f"best-approximation error (W-error 0.5 at {dim05 if dim05 is not None else '> %s' % k})")
        assumptions.append(
            f"The n-gram dimension is measured on {where}: it underestimates the dimension of the model's pretraining corpus (more text has more contexts), "
            "and n-gram probabilities are not logits (the softmax makes a low-rank logit matrix full-rank), so it is an upper bound on "
            "what a softmax head needs for these contexts and a lower bound for the pretraining data.")
    else:
        reasons.append("no n-gram dimension was measured")

    if probe_says is None and data_says is None:
        status = UNKNOWN
    elif probe_says and data_says is not False:
        status = BINDING
    elif not probe_says and not data_says:
        status = NOT_BINDING
    else:
        status = PARTIAL

    assumptions += [
        f"The rank probe freezes the model and trains only new heads W = A B (rank r, {train} training tokens, "
        f"{settings.get('steps', '?')} steps, learning rate {', '.join(f'{x:g}' for x in settings.get('lr_grid', [])) or '?'}"
        + (", initialised from the truncated SVD of the model's own head" if settings.get("init") == "svd" else "")
        + "): the gaps between ranks trained the same way are what is compared; the absolute losses are upper bounds.",
        "A head wider than d cannot be probed on d-dimensional representations: whatever the report says beyond r = d is an "
        "extrapolation of the measured trend, not a measurement.",
        f"{corpus} stands in for the data the model is used on; the verdict is about this corpus.",
        f"Thresholds ({TOLERANCE} nats/token for a negligible rank change, W-error 0.5 for the data's dimension) are lmsat's reading "
        "of the study's figures, not values the study defines.",
    ]
    assumptions += model_caveats

    if own_loss is not None and d in losses:
        diff = losses[d] - own_loss
        if abs(diff) < 0.005:
            own_note = (f"The full-rank probe head ({losses[d]:.3f}) and the model's own head ({own_loss:.3f}) agree: the probe kept the "
                        "own head it started from (its SVD at full rank), which no training step on this sample improved.")
        elif diff > 0:
            evidence["own head better than the full-rank probe by, nats/token"] = diff
            own_note = (
                f"The model's own head ({own_loss:.3f}) beats every probe head, the full-rank one included ({losses[d]:.3f}): it was "
                "trained jointly with the model on its whole pretraining corpus, while the probe heads see only "
                f"{train} tokens of {corpus} for {settings.get('steps', '?')} steps on frozen features. That is why "
                "the verdict compares probe heads with each other, never with the own head.")
        else:
            own_note = (
                f"The full-rank probe ({losses[d]:.3f}) beats the model's own head ({own_loss:.3f}) by {-diff:.3f} nats/token: it was "
                f"fitted to {corpus} itself, so that difference is adaptation to this corpus, not rank.")
    else:
        own_note = ""

    if status in (BINDING, PARTIAL) and halving is not None and halving > 0:
        if previous is not None and previous > halving > 0:
            q = halving / previous
            gain = halving * q
            how = (f"the last two halvings cost {previous:.3f} then {halving:.3f} nats/token; if the gain per doubling keeps shrinking by "
                   f"that ratio ({q:.2f})")
        else:
            gain = halving
            how = "if one more doubling gains what the last one did"
        recommendation = (
            f"A head of rank >= {2 * d} (e.g. a wider final projection, or a mixture-of-softmaxes head) would recover about "
            f"{gain:.3f} nats/token on {corpus} (perplexity x{math.exp(-gain):.3f}): {how}. Measured by the probe: halving the rank from "
            f"d = {d} costs {halving:.3f} nats/token.")
        evidence["estimated gain of a rank-2d head, nats/token (extrapolated from the probe)"] = gain
    elif status == NOT_BINDING:
        small = [r for r in sorted(losses) if d in losses and losses[r] - losses[d] <= TOLERANCE]
        recommendation = (
            f"No wider head is called for on {corpus}: the probe loses {halving if halving is not None else float('nan'):.3f} nats/token "
            f"when the rank is halved, and a head of rank {small[0] if small else d} is within {TOLERANCE} nats/token of rank d. "
            "Look elsewhere (depth, data, training length) for what limits this model.")
    else:
        recommendation = "Not enough evidence for a recommendation: run with a larger --budget (more probe ranks and tokens)."
    reason = "d is " + status + " because " + "; ".join(reasons) + "." if status != UNKNOWN else (
        "Inconclusive: " + "; ".join(reasons) + ".")
    return {"status": status, "hidden_size": d, "reason": reason, "evidence": evidence, "assumptions": assumptions,
            "recommendation": recommendation, "own_head_note": own_note, "corpus": data, "tolerance": TOLERANCE}


def write_verdict(out: Path, b: Budget) -> Record:
    """Read the stage records of ``out`` and store the verdict (recomputed from them on every run: it is cheap)."""
    from lmsat.kinds.head import HeadRecord
    from lmsat.kinds.ngram import NgramRecord
    from lmsat.kinds.rank_probe import RankProbeRefRecord
    from lmsat.report.diagnosis import model_caveats

    store = Store(out)
    config = json.loads((out / CONFIG_FILE).read_text())
    heads = HeadRecord.load(store)
    if not heads:
        raise UserError(f"'{out}' has no head record; re-run lmsat diagnose to measure it.")
    head = heads[-1]
    d = int(head.inputs["hidden_size"])
    losses, own, start, edge = probe_losses(store)
    refs = RankProbeRefRecord.load(store)
    owns = [r for r in refs if r.head == "own"]
    probe_inputs = dict(owns[-1].inputs) if owns else None
    grams = NgramRecord.load(store)
    ngram = {"results": grams[-1].results(), "inputs": dict(grams[-1].inputs)} if grams else None
    trunc = next((r for r in refs if r.head == "svd-truncation"), None)
    truncation = dict(zip(trunc.ranks, trunc.losses)) if trunc is not None else None
    v = verdict_of(d, config["data"], losses, own, probe_inputs, ngram, model_caveats(head.inputs), truncation, start, edge)
    sources = sorted(f"{r.kind}/{r.key}" for kind in store.kinds() if kind != KIND for r in store.records(kind))
    inputs = {"model": config["model"], "data": config["data"], "budget": b.describe(), "hidden_size": d,
              "sources": fingerprint(sources), "lmsat_version": __version__}
    return VerdictRecord(key="verdict", inputs=inputs, **v).put(store)


__all__ = ["BUDGETS", "Budget", "run_diagnose", "verdict_of", "write_verdict", "probe_ranks", "default_output"]
