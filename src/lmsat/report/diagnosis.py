"""Per-model diagnosis: from stored records to findings, each with its evidence and caveats.

Pure: it reads records through their kinds (:mod:`lmsat.kinds`: typed fields,
never guessed names) and never recomputes a measurement. Each :class:`Finding`
says one thing about one model in plain words, with the numbers behind it
(``values``, keyed by stable ids; ``numbers``, the same with display labels),
the records it rests on (``sources``) and what could make it wrong (``caveats``).

Findings, in the study's terms (docs/methods.md):

* **data dimension**: the model's hidden size d against the dimension at which
  the data's n-gram matrix P reaches W-error 0.5 and 0.1
  (W-error(k) = sqrt(sum_{i>k} s_i(P)^2) / |P|_F, Eckart-Young-Mirsky). If
  d < dim(0.5), a rank-d head cannot even halve the error of the best
  approximation of the data's next-token distributions: the softmax
  bottleneck binds. If d >= dim(0.1) it does not, at that threshold.
* **known rank**: for a synthetic language (kind ``synth``), d against the
  generator's exact rank: the ground truth the other findings are checked on.
* **head spectrum**: singular entropy KL(p || uniform_d) = ln d - H(p) of the
  head relative to its maximum ln d (p_i = s_i^2 / sum s^2). The study's
  collapsed heads (Pythia <= 160M after saturation) sit near ln d; healthy
  ones near 0.
* **last-layer anisotropy**: mean cosine similarity of the last hidden states.
* **saturation** (if a sweep exists): best step, relative rise of the final
  loss over the best, the step where the head spectrum collapses and where
  last-layer anisotropy jumps, with the definitions of ``lmsat saturation``
  (:mod:`lmsat.experiments.saturation`; its record when there is one).
* **rank probe**: loss of a rank-r head on the frozen model at r = d (or the
  largest probed r <= d) against the full-rank trained head (else the model's
  own head), and the smallest probed rank within :data:`PROBE_TOLERANCE` of it.

Thresholds are stated as constants below; they are this tool's reading of the
study's figures, not values the study defines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmsat import kinds
from lmsat.kinds.anisotropy import AnisotropyRecord
from lmsat.kinds.base import as_kind, integer, number
from lmsat.kinds.common import model_name
from lmsat.kinds.head import HeadRecord
from lmsat.kinds.ngram import NgramRecord
from lmsat.kinds.rank_probe import RankProbeRecord, RankProbeRefRecord
from lmsat.kinds.rank_probe import points as probe_points
from lmsat.kinds.saturation import SaturationRecord
from lmsat.kinds.sweep import SweepRecord
from lmsat.kinds.sweep import series as sweep_series_of
from lmsat.kinds.synth import SynthRecord
from lmsat.kinds.train import TrainRecord
from lmsat.store import Record

# W-error thresholds at which the data's dimension is read (the study: "halves", "negligible").
W_ERROR_THRESHOLDS: tuple[float, float] = (0.5, 0.1)
# Singular entropy / ln d above which a head is called collapsed, below which spread ([fig] 2.5).
COLLAPSED_ENTROPY_RATIO = 0.5
SPREAD_ENTROPY_RATIO = 0.2
# Last-layer anisotropy above which representations are called degenerate (Pythia <= 160M: ~0.99).
HIGH_ANISOTROPY = 0.9
LOW_ANISOTROPY = 0.3
# Relative loss rise (final / best - 1) above which a model is called saturated (as lmsat saturation's default).
SATURATION_RISE = 0.01
# A rank-r probe within this many nats of the full-rank probe is "as good as full rank".
PROBE_TOLERANCE = 0.05
# Fewer tokens than this in a measurement sample gets a small-sample caveat (the study: 50k).
SMALL_SAMPLE_TOKENS = 50_000

CONTESTED = (
    "The study's causal claim (a rank-limited head causes saturation) is contested: arXiv 2602.20433 finds "
    "that low-rank heads co-occur with, but do not always cause, late-training degradation. Read these findings "
    "as consistent with a bottleneck, not as proof of one."
)

BINDING, PARTIAL, NOT_BINDING, INFO, UNKNOWN = "binding", "partly binding", "not binding", "info", "inconclusive"

# Stable ids of the findings (their display titles may change; code keys on these).
DATA_DIMENSION, KNOWN_RANK, HEAD_SPECTRUM, ANISOTROPY, SATURATION, RANK_PROBE = (
    "data_dimension", "known_rank", "head_spectrum", "last_layer_anisotropy", "saturation", "rank_probe")
FINDINGS = (DATA_DIMENSION, KNOWN_RANK, HEAD_SPECTRUM, ANISOTROPY, SATURATION, RANK_PROBE)


@dataclass
class Finding:
    """One statement about one model, with its evidence."""

    topic: str  # display title
    status: str  # binding / partly binding / not binding / info / inconclusive
    verdict: str  # one plain-language sentence
    numbers: dict[str, Any] = field(default_factory=dict)  # display label -> value (rendered as the evidence table)
    sources: list[tuple[str, str]] = field(default_factory=list)  # (kind, key) of the records used
    caveats: list[str] = field(default_factory=list)
    id: str = ""  # stable id of the finding: one of FINDINGS
    values: dict[str, Any] = field(default_factory=dict)  # stable id -> value (what code reads)


@dataclass
class ModelDiagnosis:
    """Everything the report concludes about one model."""

    model: str
    hidden_size: int | None
    findings: list[Finding] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)

    @property
    def overall(self) -> str:
        """The generator's exact rank when known (ground truth), else the most severe judging status."""
        known = [f.status for f in self.findings if f.id == KNOWN_RANK]
        if known:
            return known[0]
        statuses = [f.status for f in self.findings]
        for status in (BINDING, PARTIAL, NOT_BINDING):
            if status in statuses:
                return status
        return UNKNOWN


# --- formatting -------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


# --- findings ---------------------------------------------------------------------------------


def data_dimension_findings(d: int, ngram_records: Sequence[NgramRecord | Record],
                            checked: list[bool | None] | None = None) -> list[Finding]:
    """d against each corpus's n-gram dimension at W-error 0.5 and 0.1 (docs/methods.md §9).

    ``checked[i]`` says whether record i's tokenizer is known to be the model's (None: unknown).
    """
    out = []
    hi, lo = W_ERROR_THRESHOLDS
    for i, rec in enumerate(as_kind(r, NgramRecord) for r in ngram_records):
        dim_hi, exact_hi = rec.dimension_at(hi)
        dim_lo, exact_lo = rec.dimension_at(lo)
        if dim_hi is None:
            continue
        corpus = rec.corpus
        err_at_d = rec.w_error_at_dim(d)
        values = {"hidden_size": d, "dim_0.5": dim_hi, "dim_0.5_exact": exact_hi, "dim_0.1": dim_lo, "dim_0.1_exact": exact_lo,
                  "w_error_at_d": err_at_d}
        numbers: dict[str, Any] = {
            "hidden size d": d,
            f"data dimension at W-error {hi}": dim_hi if exact_hi else f"> {dim_hi}",
            f"data dimension at W-error {lo}": (dim_lo if exact_lo else f"> {dim_lo}") if dim_lo is not None else "n/a",
            "data W-error at d": err_at_d if err_at_d is not None else "n/a",
        }
        if not exact_hi or d < dim_hi:
            status = BINDING
            verdict = (
                f"d = {d} is below the {dim_hi if exact_hi else f'more than {dim_hi}'} dimensions the {corpus} n-gram matrix "
                f"needs to reach W-error {hi}: any rank-{d} head leaves more than half of the data's next-token structure "
                "(in Frobenius norm) unexplained, so the softmax bottleneck binds."
            )
        elif dim_lo is None or not exact_lo or d < dim_lo:
            status = PARTIAL
            need = f"{dim_lo}" if exact_lo and dim_lo is not None else f"more than {dim_lo}"
            verdict = (
                f"d = {d} reaches W-error {hi} on {corpus} (needs {dim_hi}) but not {lo} (needs {need}): "
                "a rank-d head captures the bulk of the data's next-token structure but not its tail."
            )
        else:
            status = NOT_BINDING
            verdict = (
                f"d = {d} exceeds the {dim_lo} dimensions the {corpus} n-gram matrix needs to reach W-error {lo}: "
                "on this data the head's rank is not the limit."
            )
        caveats = []
        n_tokens, n_ctx = integer(rec.n_tokens), integer(rec.n_contexts)
        caveats.append(
            "The n-gram dimension depends on the corpus size and on n: rare contexts seen once add noisy directions, "
            "and a larger corpus reveals structure a small one hides."
            + (f" This matrix was built from {int(n_tokens)} tokens" if n_tokens else "")
            + (f" ({int(n_ctx)} contexts)." if n_ctx and n_tokens else "." if n_tokens else "")
        )
        if checked is not None and checked[i] is None:
            caveats.append("The records do not say whether this n-gram matrix used the model's tokenizer; "
                           "dimensions of different vocabularies compare only roughly.")
        out.append(Finding("data dimension", status, verdict, numbers, [rec.source], caveats, DATA_DIMENSION, values))
    return out


def known_rank_finding(d: int, synth: SynthRecord | Record, train: TrainRecord | Record | None = None) -> Finding | None:
    """d against the exact rank R of a synthetic language (docs/methods.md §10, ground truth).

    With the model's ``train`` record, the evidence adds its held-out loss and the gap to the
    language's true entropy (the best loss any model can reach), in nats/token.
    """
    synth = as_kind(synth, SynthRecord)
    train = as_kind(train, TrainRecord) if train is not None else None
    rank = synth.exact_rank
    if rank is None:
        return None
    values: dict[str, Any] = {"hidden_size": d, "generator_rank": rank}
    numbers: dict[str, Any] = {"hidden size d": d, "generator rank": rank}
    family = synth.family or None
    if family:
        values["family"] = numbers["language family"] = family
    # One true entropy per card: the one the gap is measured against (the held-out tokens' realised entropy,
    # from the train record), else the language's expected entropy; its label says which.
    reference = number(train.reference_entropy) if train is not None else None
    if reference is not None:
        values["true_entropy"] = numbers["true entropy of the held-out tokens (nats/token), the gap's reference"] = reference
    elif synth.entropy is not None:
        values["true_entropy"] = numbers["expected entropy of the language (nats/token)"] = synth.entropy
    if train is not None:
        for label, key in (("final held-out loss", "final_eval_loss"), ("best held-out loss", "best_eval_loss"),
                           ("final gap to true entropy", "final_gap"), ("standard error of that gap", "final_gap_standard_error"),
                           ("best gap to true entropy", "best_gap")):
            v = number(getattr(train, key))
            if v is not None:
                values[key] = numbers[f"{label} (nats/token)"] = v
    if d < rank:
        status, verdict = BINDING, f"d = {d} is below the generator's exact rank {rank}: no rank-{d} head can express this language; the model must underperform its ground-truth entropy."
    else:
        status, verdict = NOT_BINDING, f"d = {d} is at least the generator's exact rank {rank}: the head's rank is sufficient for this language."
    caveats = []
    if family == "low-rank-probs":
        caveats.append("In this family P itself has rank R but log P (what a softmax head must express) generally does not: "
                       "even d >= R may leave a gap.")
    sources = [synth.source] + ([train.source] if train is not None else [])
    return Finding("known rank", status, verdict, numbers, sources, caveats, KNOWN_RANK, values)


def head_finding(rec: HeadRecord | Record) -> Finding:
    """Singular entropy of the head relative to ln d (docs/methods.md §3)."""
    rec = as_kind(rec, HeadRecord)
    ent = number(rec.singular_entropy)
    max_ent = number(rec.max_singular_entropy) or (math.log(rec.hidden_size or 1) or None)
    ratio = ent / max_ent if ent is not None and max_ent else None
    values = {"singular_entropy": ent, "max_singular_entropy": max_ent, "effective_rank": number(rec.effective_rank),
              "w_error_d2": number(rec.w_error_d2), "entropy_ratio": ratio}
    numbers = {
        "singular entropy (nats, p = s^2/sum s^2)": ent,
        "maximum ln d": max_ent,
        "effective rank exp H(p)": values["effective_rank"],
        "W-error at d/2": values["w_error_d2"],
    }
    if ratio is None:
        return Finding("head spectrum", INFO, "The head record has no singular entropy.", numbers, [rec.source], [], HEAD_SPECTRUM, values)
    if ratio >= COLLAPSED_ENTROPY_RATIO:
        verdict = (f"The head spectrum is collapsed: singular entropy {ent:.3g} is {ratio:.0%} of its maximum ln d = {max_ent:.3g}, "
                   "like the study's small Pythia models after saturation (one direction dominates the logits).")
    elif ratio <= SPREAD_ENTROPY_RATIO:
        verdict = (f"The head spectrum is spread out: singular entropy {ent:.3g} is {ratio:.0%} of its maximum ln d = {max_ent:.3g}, "
                   "like the study's larger models that do not saturate.")
    else:
        verdict = f"The head spectrum is intermediate: singular entropy {ent:.3g} is {ratio:.0%} of its maximum ln d = {max_ent:.3g}."
    return Finding("head spectrum", INFO, verdict, numbers, [rec.source],
                   ["A collapsed spectrum at one checkpoint is a symptom; the study's evidence is its timing against the loss curve (see the sweep)."],
                   HEAD_SPECTRUM, values)


def anisotropy_finding(rec: AnisotropyRecord | Record) -> Finding | None:
    """Last-layer anisotropy (docs/methods.md §1)."""
    rec = as_kind(rec, AnisotropyRecord)
    layers = rec.layers or []
    last = rec.last
    if last is None:
        return None
    inner = [x["anisotropy"] for x in layers[1:-1] if number(x.get("anisotropy")) is not None]
    values = {"last_layer_anisotropy": last, "inner_mean": float(np.mean(inner)) if inner else None,
              "layers": len(layers) - 1 if layers else None}
    numbers = {"last-layer anisotropy": last, "mean anisotropy of inner layers": values["inner_mean"], "layers": values["layers"]}
    if last >= HIGH_ANISOTROPY:
        verdict = f"The last layer is highly anisotropic ({last:.3g}): its representations nearly share one direction, as in the study's Pythia <= 160M late in training."
    elif last <= LOW_ANISOTROPY:
        verdict = f"The last layer is close to isotropic ({last:.3g}), as in the study's models that do not saturate (and OPT)."
    else:
        verdict = f"The last layer is moderately anisotropic ({last:.3g})."
    caveats = []
    n = rec.sample_tokens
    if n is not None and n < SMALL_SAMPLE_TOKENS:
        caveats.append(f"Measured on {int(n)} tokens (the study used 50k): a small sample, though anisotropy is an average over n(n-1) pairs and settles fast.")
    return Finding("last-layer anisotropy", INFO, verdict, numbers, [rec.source], caveats, ANISOTROPY, values)


def sweep_series(records: Sequence[SweepRecord | Record]) -> dict[str, np.ndarray]:
    """Per-checkpoint series of one model's usable sweep records (:attr:`SweepRecord.usable`), by step."""
    return sweep_series_of([as_kind(r, SweepRecord) for r in records])


def saturation_summary(saturation: SaturationRecord | Record | None) -> dict[str, Any]:
    """Best/final step and loss, relative rise, spectrum-collapse and anisotropy-jump steps of one model, from
    its stored ``saturation`` record (``lmsat saturation``; ``lmsat sweep`` writes it), else {}: the report
    reads stored results only and never recomputes them."""
    return as_kind(saturation, SaturationRecord).results() if saturation is not None else {}


def sweep_finding(model: str, records: Sequence[SweepRecord | Record], saturation: SaturationRecord | Record | None) -> Finding | None:
    """Saturation, spectrum-collapse step and last-layer anisotropy jump over a checkpoint sweep (docs/methods.md §5)."""
    records = [as_kind(r, SweepRecord) for r in records]
    saturation = as_kind(saturation, SaturationRecord) if saturation is not None else None
    series = sweep_series(records)
    steps = series["step"]
    if len(steps) < 2:
        return None
    s = saturation_summary(saturation)
    best_step, best_loss, final_loss, rise = (number(s.get("best_step")), number(s.get("best_loss")), number(s.get("final_loss")),
                                             number(s.get("relative_rise")))
    collapse, collapse_rise = number(s.get("collapse_step")), number(s.get("collapse_rise"))
    jump, jump_rise = number(s.get("anisotropy_jump_step")), number(s.get("anisotropy_rise"))
    values = {"checkpoints": len(steps), "best_step": best_step, "best_loss": best_loss, "final_loss": final_loss,
              "relative_rise": rise, "collapse_step": collapse, "collapse_rise": collapse_rise,
              "anisotropy_jump_step": jump, "anisotropy_rise": jump_rise}
    numbers: dict[str, Any] = {
        "checkpoints": len(steps), "best step": best_step, "best loss (nats/token)": best_loss,
        "final loss (nats/token)": final_loss, "relative rise final/best - 1": rise,
        "spectrum-collapse step": collapse, "singular-entropy rise (nats)": collapse_rise,
        "last-layer anisotropy jump step": jump, "anisotropy rise": jump_rise,
    }
    saturated = (None if saturation is None else bool(s.get("saturates")) if s.get("saturates") is not None
                 else (rise is not None and rise > SATURATION_RISE))
    values["saturates"] = saturated
    parts = []
    if saturation is None:
        parts.append("This sweep has no saturation record: run `lmsat saturation RUN_DIR` (lmsat sweep writes it) to judge saturation.")
    elif rise is None:
        parts.append("The sweep has no loss, so saturation cannot be judged.")
    elif saturated:
        parts.append(f"The model saturates: its loss is lowest at step {_fmt(best_step)} ({best_loss:.4g} nats/token) and ends "
                     f"{rise:.1%} higher ({final_loss:.4g}).")
    else:
        parts.append(f"No saturation: the final loss ({final_loss:.4g}) is within {SATURATION_RISE:.0%} of the best ({best_loss:.4g}).")
    if saturation is None:
        pass
    elif collapse is not None:
        parts.append(f"The head spectrum collapses at step {_fmt(collapse)} (singular entropy +{collapse_rise:.3g} nats).")
    else:
        parts.append("The head spectrum never collapses (no jump of singular entropy).")
    if jump is not None:
        parts.append(f"Last-layer anisotropy jumps at step {_fmt(jump)} (+{jump_rise:.3g}).")
    if saturated and best_step is not None and collapse is not None:
        parts.append("The collapse coincides with the saturation point, as the study reports." if _near(collapse, best_step, steps) else
                     "The collapse does not coincide with the saturation point.")
    caveats = ["One training run: a second seed (e.g. PolyPythias, arXiv 2503.09543) is needed to tell a systematic effect from noise."]
    counted = integer(saturation.inputs.get("sweep_records")) if saturation is not None else None
    if counted is not None and counted != len(records):
        caveats.append(f"The saturation record was computed from {counted} checkpoint records; the sweep now has {len(records)}: "
                       "re-run `lmsat saturation RUN_DIR` to update it.")
    if len(steps) < 8:
        caveats.append(f"Only {len(steps)} checkpoints: the steps of collapse and jump are known only to the spacing between checkpoints.")
    return Finding("saturation over training", INFO, " ".join(parts), numbers,
                   [r.source for r in records] + ([saturation.source] if saturation else []), caveats, SATURATION, values)


def _near(a: float, b: float, steps: np.ndarray) -> bool:
    """Whether steps a and b are at most one checkpoint apart."""
    ia, ib = int(np.argmin(np.abs(steps - a))), int(np.argmin(np.abs(steps - b)))
    return abs(ia - ib) <= 1


def rank_probe_points(records: Sequence[RankProbeRecord | Record]) -> list[tuple[int, float, float | None]]:
    """(rank r, validation loss, accuracy) for each final probe record, best loss per rank, sorted by r."""
    return probe_points([as_kind(r, RankProbeRecord) for r in records])


def rank_probe_finding(d: int, probes: Sequence[RankProbeRecord | Record], refs: Sequence[RankProbeRefRecord | Record]) -> Finding | None:
    """Loss of the rank-r probe at r = d against the full-rank head (docs/methods.md §8)."""
    probes = [as_kind(r, RankProbeRecord) for r in probes]
    refs = [as_kind(r, RankProbeRefRecord) for r in refs]
    points = probe_points(probes)
    if not points:
        return None
    ref_loss, full_label = None, "full-rank head"
    finals = [r for r in refs if r.is_final]
    # A trained full-rank probe is the like-for-like reference; the model's own head is the fallback.
    for rec in sorted(finals, key=lambda r: r.head == "own"):
        ref_loss = rec.validation_loss
        if ref_loss is not None:
            full_label = "model's own head" if rec.head == "own" else "full-rank head"
            if rec.head != "own" and number(rec.lr) == 0:  # the search kept the SVD start: it is the own head, untrained
                full_label = "full-rank head (untrained: its SVD start, the model's own head, beat every rate)"
            break
    if ref_loss is None:  # the largest probed rank stands in for full rank
        ref_loss, full_label = points[-1][1], f"largest probed rank r = {points[-1][0]}"
    at_d = [p for p in points if p[0] <= d]
    values: dict[str, Any] = {"hidden_size": d, "reference_loss": ref_loss, "reference": full_label,
                              "loss_by_rank": {r: loss for r, loss, _ in points}}
    numbers: dict[str, Any] = {"hidden size d": d, f"loss of {full_label}": ref_loss}
    for r, loss, _ in points:
        numbers[f"loss at r = {r}"] = loss
    enough = [r for r, loss, _ in points if loss - ref_loss <= PROBE_TOLERANCE]
    needed = min(enough) if enough else None
    values["rank_needed"] = needed
    numbers["smallest rank within %.2g nats of full rank" % PROBE_TOLERANCE] = needed
    parts = []
    if at_d:
        r_d, loss_d, _ = at_d[-1]
        gap = loss_d - ref_loss
        values["gap_rank"], values["gap"] = r_d, gap
        numbers[f"gap at r = {r_d} (nats)"] = gap
        parts.append(f"A rank-{r_d} head{' (r = d)' if r_d == d else ''} reaches loss {loss_d:.4g}, {gap:+.3g} nats from the {full_label} ({ref_loss:.4g}).")
    if needed is not None:
        parts.append(f"The smallest probed rank within {PROBE_TOLERANCE} nats of full rank is r = {needed}" + (
            f", below d = {d}: the frozen representations do not need all of d." if needed < d else
            f", at or above d = {d}: restricting the rank below d costs loss." if needed >= d else "."))
        status = NOT_BINDING if needed <= d else BINDING
    else:
        status = UNKNOWN
    return Finding("rank probe", status, " ".join(parts), numbers, [r.source for r in probes],
                   ["Probe losses depend on the probe's training budget and learning rate; compare ranks trained the same way."],
                   RANK_PROBE, values)


def same_vocabulary(ngram: NgramRecord | Record, vocab: int | None, fingerprint: str | None) -> bool | None:
    """Whether an n-gram matrix's tokenizer is the model's: by fingerprint, else by vocabulary size
    (a model's embedding may be padded a little beyond its tokenizer); None when unknown."""
    ngram = as_kind(ngram, NgramRecord)
    nv, nfp = ngram.tokenizer_vocab, ngram.tokenizer_fingerprint
    if fingerprint and nfp:
        return fingerprint == nfp
    if vocab and nv:
        return nv <= vocab <= nv + max(128, nv // 50)
    return None


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _strings(v)]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in _strings(v)]
    return [str(obj)] if isinstance(obj, str) else []


def trained_on(synth: SynthRecord | Record, model_facts: list[dict[str, Any]]) -> bool:
    """Whether a model's inputs (or its train record) point at this synthetic language.

    True when one of their strings is a path inside the language's folder (the folder
    holding ``synth/<key>.json``, as ``lmsat synth -o LANG`` writes it, e.g. its
    ``LANG/corpus``), or names the language's key or name.
    """
    from pathlib import Path, PurePath

    from lmsat.store import slugify

    synth = as_kind(synth, SynthRecord)
    ids = {x for x in (synth.key, slugify(synth.key), synth.name) if isinstance(x, str) and x}
    ids.discard("language")  # lmsat synth's fixed key says nothing about which language
    path = synth.record.path if synth.record is not None else None
    folder = path.parent.parent.resolve() if path is not None else None
    for text in (t for facts in model_facts for t in _strings(facts)):
        if text in ids or any(part in ids for part in PurePath(text).parts):
            return True
        if folder is not None and "/" in text:
            try:
                if Path(text).resolve().is_relative_to(folder):
                    return True
            except (OSError, ValueError):
                continue
    return False


def model_caveats(inputs: dict[str, Any]) -> list[str]:
    """Caveats that hold for the model whatever the finding: instruction tuning, quantization."""
    out = []
    name = f"{inputs.get('model', '')} {inputs.get('gguf_file') or ''}".lower()
    if "smollm2-hf" in name:  # lmsat's float copy of the SmolLM2-135M-Instruct GGUF (lmsat.assets)
        name += " smollm2-135m-instruct.q4_1.gguf"
    if inputs.get("gguf_file") or ".gguf" in name or any(q in name for q in ("q4_", "q8_", "q5_", "int4", "int8", "gptq", "awq")):
        out.append("This model was loaded from a quantized file (GGUF): its weights were rounded to a few bits and "
                   "de-quantized, which perturbs small singular values and the representations.")
    if any(t in name for t in ("instruct", "chat", "-it", "sft", "rlhf", "dpo")):
        out.append("This is an instruction-tuned model, not a pretraining checkpoint: fine-tuning changes the head and "
                   "the last layers, so it says little about saturation during pretraining.")
    return out


def _hidden_size(rec: Any) -> int | None:
    """The model's hidden size d as its kind records it (every model-measuring kind has ``hidden_size``)."""
    return integer(getattr(rec, "hidden_size", None))


def _vocab(rec: Any) -> int | None:
    """The model's vocabulary (rows of its head) when its kind records it."""
    if isinstance(rec, HeadRecord):
        return rec.vocab_rows
    return integer(rec.inputs.get("vocab_size"))


def diagnose(records: dict[str, list[Record]] | dict[str, list[Any]]) -> list[ModelDiagnosis]:
    """One :class:`ModelDiagnosis` per model found in the records (head, anisotropy, sweep, rank probe, train).

    ``records`` maps a kind to its records (from every run directory; stored or typed).
    Data-level records (``ngram``, ``synth``) are compared with every model's hidden size.
    """
    typed = {k: [kinds.typed(r) if isinstance(r, Record) else r for r in recs]
             for k, recs in records.items() if k in kinds.REGISTRY}
    models: dict[str, dict[str, Any]] = {}

    def entry(rec: Any) -> dict[str, Any]:
        name = model_name(rec.inputs)
        e = models.setdefault(name, {"d": None, "inputs": rec.inputs, "head": None, "anisotropy": None, "sweep": [],
                                     "saturation": None, "probe": [], "ref": [], "train": None, "vocab": None, "tokenizer_fp": None})
        if e["d"] is None:
            e["d"] = _hidden_size(rec)
        if e["vocab"] is None:
            e["vocab"] = _vocab(rec)
        if e["tokenizer_fp"] is None:
            e["tokenizer_fp"] = rec.inputs.get("tokenizer_fingerprint")
        return e

    for rec in typed.get("head", []):
        entry(rec)["head"] = rec
    for rec in typed.get("anisotropy", []):
        if rec.is_causal is False:
            continue
        entry(rec)["anisotropy"] = rec
    for rec in typed.get("sweep", []):
        entry(rec)["sweep"].append(rec)
    for rec in typed.get("saturation", []):
        entry(rec)["saturation"] = rec
    for rec in typed.get("rank_probe", []):
        entry(rec)["probe"].append(rec)
    for rec in typed.get("rank_probe_ref", []):
        entry(rec)["ref"].append(rec)
    for rec in typed.get("train", []):
        entry(rec)["train"] = rec

    ngrams: list[NgramRecord] = typed.get("ngram", [])
    synths: list[SynthRecord] = typed.get("synth", [])
    out = []
    for name, e in models.items():
        d = e["d"]
        diag = ModelDiagnosis(model=name, hidden_size=d, caveats=model_caveats(e["inputs"]) + [CONTESTED])
        facts = [e["inputs"]] + ([dict(e["train"].inputs), e["train"].results()] if e["train"] else [])
        if d is not None:
            mine = [s for s in synths if trained_on(s, facts)]
            for s in mine:
                f = known_rank_finding(d, s, e["train"])
                if f:
                    diag.findings.append(f)
            matching = [n for n in ngrams if same_vocabulary(n, e["vocab"], e["tokenizer_fp"]) is not False]
            other = [n.corpus for n in ngrams if n not in matching]
            dims = data_dimension_findings(d, matching, checked=[same_vocabulary(n, e["vocab"], e["tokenizer_fp"]) for n in matching])
            for lang in mine:
                w = number(lang.w_error_probs_at_rank)
                if w is not None and lang.family == "low-rank-logits":
                    for f in dims:
                        f.caveats.append(
                            f"This language's logits have rank {lang.exact_rank}, yet its exact probability matrix P has W-error "
                            f"{w:.3g} at that rank: the softmax turns a rank-R logit matrix into a full-rank P, so the n-gram W-error of "
                            "probabilities overstates the dimension a softmax head needs (the known-rank finding is the ground truth).")
            diag.findings.extend(dims)
            if other:
                diag.caveats.append(f"Not compared with the n-gram dimension of {', '.join(other)}: that corpus was tokenised with another vocabulary.")
            if not ngrams and not synths:
                diag.findings.append(Finding(
                    "data dimension", UNKNOWN,
                    f"No n-gram or synthetic-language result in these run directories, so d = {d} cannot be compared with the "
                    "data's dimension: measure the corpus with `lmsat ngram-rank` into one of them.", {"hidden size d": d},
                    id=DATA_DIMENSION, values={"hidden_size": d}))
        if e["sweep"]:
            f = sweep_finding(name, e["sweep"], e["saturation"])
            if f:
                diag.findings.append(f)
        if e["head"] is not None:
            diag.findings.append(head_finding(e["head"]))
        if e["anisotropy"] is not None:
            f = anisotropy_finding(e["anisotropy"])
            if f:
                diag.findings.append(f)
        if e["probe"] and d is not None:
            f = rank_probe_finding(d, e["probe"], e["ref"])
            if f:
                known = next((k.values["generator_rank"] for k in diag.findings if k.id == KNOWN_RANK), None)
                needed = f.values.get("rank_needed")
                if known is not None:
                    f.numbers["generator rank"] = f.values["generator_rank"] = known
                    if needed is not None:
                        f.verdict += (f" The language's exact rank is {known}: the probe "
                                      + ("finds it." if needed == known else f"puts it at {needed}, within the probed grid's spacing."
                                         if known / 2 <= needed <= known * 2 else f"puts it at {needed}, far from it."))
                diag.findings.append(f)
        if d is None:
            diag.caveats.insert(0, "The records give no hidden size for this model, so it cannot be compared with the data's dimension.")
        out.append(diag)
    out.sort(key=lambda m: (m.hidden_size or 0, m.model))
    return out
