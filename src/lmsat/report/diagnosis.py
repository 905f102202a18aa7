"""Per-model diagnosis: from stored records to findings, each with its evidence and caveats.

Pure: it reads records (and their stored arrays) and never recomputes a
measurement. Each :class:`Finding` says one thing about one model in plain
words, with the numbers behind it (``numbers``), the records it rests on
(``sources``) and what could make it wrong (``caveats``).

Findings, in the study's terms (SPEC sections 2.1-2.8):

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
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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

_CHECKPOINT_DIR = re.compile(r"(?:step[-_]?|checkpoint-)\d+")

BINDING, PARTIAL, NOT_BINDING, INFO, UNKNOWN = "binding", "partly binding", "not binding", "info", "inconclusive"


@dataclass
class Finding:
    """One statement about one model, with its evidence."""

    topic: str
    status: str  # binding / partly binding / not binding / info / inconclusive
    verdict: str  # one plain-language sentence
    numbers: dict[str, Any] = field(default_factory=dict)
    sources: list[tuple[str, str]] = field(default_factory=list)  # (kind, key) of the records used
    caveats: list[str] = field(default_factory=list)


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
        known = [f.status for f in self.findings if f.topic == "known rank"]
        if known:
            return known[0]
        statuses = [f.status for f in self.findings]
        for status in (BINDING, PARTIAL, NOT_BINDING):
            if status in statuses:
                return status
        return UNKNOWN


# --- reading records --------------------------------------------------------------------------


def model_name(inputs: dict[str, Any]) -> str:
    """The model's display name from a record's inputs (no revision): last path part or GGUF stem."""
    from pathlib import PurePath

    if inputs.get("gguf_file"):
        return PurePath(str(inputs["gguf_file"])).stem
    name = str(inputs.get("model") or inputs.get("name") or "?").rstrip("/")
    parts = [p for p in name.split("/") if p]
    # A checkpoint folder (``fam/model/step400``, as lmsat train writes) is the model at that step.
    if len(parts) > 1 and _CHECKPOINT_DIR.fullmatch(parts[-1]):
        parts = parts[:-1]
    return parts[-1] if parts else name


def hidden_size_of(rec: Record) -> int | None:
    for src in (rec.inputs, rec.results):
        for key in ("hidden_size", "d", "d_model"):
            value = src.get(key)
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                return int(value)
    return None


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _first(d: dict[str, Any], *names: str) -> Any:
    for n in names:
        if n in d and d[n] is not None:
            return d[n]
    return None


def w_error_curve_of(rec: Record) -> np.ndarray | None:
    """The W-error curve k = 0..K of an n-gram (or head) record: stored curve, else from stored singular values."""
    from lmsat.measure.spectrum import w_error_curve

    arrays = rec.load_arrays()
    for name in ("w_error", "w_error_curve"):
        if name in arrays:
            return np.asarray(arrays[name], dtype=np.float64)
    for name in ("singular_values", "s"):
        if name in arrays and len(arrays[name]):
            frob = _num(_first(rec.results, "frobenius_norm", "frob_norm", "fro_norm"))
            return w_error_curve(arrays[name], frob)
    curve = rec.results.get("w_error_curve") or rec.results.get("w_error")
    if isinstance(curve, list) and curve:
        return np.asarray(curve, dtype=np.float64)
    return None


def dimension_at(rec: Record, threshold: float) -> tuple[int | None, bool]:
    """(dimension, exact) at which a record's data reaches W-error <= threshold.

    Uses the stored value when the record has one (``dim_w_error_0.5`` style keys or a
    ``dimensions`` mapping), else reads the stored curve. ``exact`` is False when the
    curve ends above the threshold: the dimension is then only known to exceed its length.
    """
    res = rec.results
    dims = res.get("dims_for_w_error") or res.get("dimensions") or {}
    if isinstance(dims, dict):
        for k, v in dims.items():
            if _num(k) is not None and abs(float(k) - threshold) < 1e-9:
                if v is None:
                    break
                return int(v), True
    for key in (f"dim_w_error_{threshold}", f"dim_at_{threshold}", f"d_{threshold}"):
        if res.get(key) is not None:
            return int(res[key]), True
    curve = w_error_curve_of(rec)
    if curve is None:
        return None, False
    hits = np.nonzero(curve <= threshold + 1e-12)[0]
    if len(hits):
        return int(hits[0]), True
    return len(curve) - 1, False


def w_error_at(rec: Record, d: int) -> float | None:
    curve = w_error_curve_of(rec)
    if curve is None:
        return None
    return float(curve[min(d, len(curve) - 1)]) if d < len(curve) else float(curve[-1]) if curve[-1] == 0 else None


# --- findings ---------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}"
    return str(x)


def data_dimension_findings(d: int, ngram_records: list[Record], checked: list[bool | None] | None = None) -> list[Finding]:
    """d against each corpus's n-gram dimension at W-error 0.5 and 0.1 (SPEC 2.7).

    ``checked[i]`` says whether record i's tokenizer is known to be the model's (None: unknown).
    """
    out = []
    hi, lo = W_ERROR_THRESHOLDS
    for i, rec in enumerate(ngram_records):
        dim_hi, exact_hi = dimension_at(rec, hi)
        dim_lo, exact_lo = dimension_at(rec, lo)
        if dim_hi is None:
            continue
        corpus = _corpus_label(rec)
        err_at_d = w_error_at(rec, d)
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
        n_tokens = _num(_first(rec.inputs, "n_tokens", "tokens", "max_tokens")) or _num(_first(rec.results, "n_tokens", "tokens"))
        n_ctx = _num(_first(rec.results, "n_contexts", "contexts", "rows"))
        caveats.append(
            "The n-gram dimension depends on the corpus size and on n: rare contexts seen once add noisy directions, "
            "and a larger corpus reveals structure a small one hides."
            + (f" This matrix was built from {int(n_tokens)} tokens" if n_tokens else "")
            + (f" ({int(n_ctx)} contexts)." if n_ctx and n_tokens else "." if n_tokens else "")
        )
        if checked is not None and checked[i] is None:
            caveats.append("The records do not say whether this n-gram matrix used the model's tokenizer; "
                           "dimensions of different vocabularies compare only roughly.")
        out.append(Finding("data dimension", status, verdict, numbers, [(rec.kind, rec.key)], caveats))
    return out


def known_rank_finding(d: int, synth: Record, train: Record | None = None) -> Finding | None:
    """d against the exact rank R of a synthetic language (SPEC section 3, ground truth).

    With the model's ``train`` record, the evidence adds its held-out loss and the gap to the
    language's true entropy (the best loss any model can reach), in nats/token.
    """
    rank = _int(_first(synth.results, "rank", "true_rank", "known_rank")) or _int(_first(synth.inputs, "rank", "true_rank"))
    if rank is None:
        return None
    numbers: dict[str, Any] = {"hidden size d": d, "generator rank": rank}
    family = _first(synth.results, "family") or _first(synth.inputs, "family")
    if family:
        numbers["language family"] = family
    entropy = _num(_first(synth.results, "expected_entropy", "true_entropy", "entropy"))
    if entropy is not None:
        numbers["true entropy (nats/token)"] = entropy
    if train is not None:
        r = train.results
        for label, key in (("final held-out loss", "final_eval_loss"), ("best held-out loss", "best_eval_loss"),
                           ("final gap to true entropy", "final_gap"), ("standard error of that gap", "final_gap_standard_error"),
                           ("best gap to true entropy", "best_gap")):
            if _num(r.get(key)) is not None:
                numbers[f"{label} (nats/token)"] = _num(r.get(key))
    if d < rank:
        status, verdict = BINDING, f"d = {d} is below the generator's exact rank {rank}: no rank-{d} head can express this language; the model must underperform its ground-truth entropy."
    else:
        status, verdict = NOT_BINDING, f"d = {d} is at least the generator's exact rank {rank}: the head's rank is sufficient for this language."
    caveats = []
    if family == "low-rank-probs":
        caveats.append("In this family P itself has rank R but log P (what a softmax head must express) generally does not: "
                       "even d >= R may leave a gap.")
    sources = [(synth.kind, synth.key)] + ([(train.kind, train.key)] if train is not None else [])
    return Finding("known rank", status, verdict, numbers, sources, caveats)


def head_finding(rec: Record) -> Finding:
    """Singular entropy of the head relative to ln d (SPEC 2.5)."""
    r = rec.results
    ent = _num(r.get("singular_entropy"))
    max_ent = _num(r.get("max_singular_entropy")) or (math.log(hidden_size_of(rec) or 1) or None)
    ratio = ent / max_ent if ent is not None and max_ent else None
    numbers = {
        "singular entropy (nats, p = s^2/sum s^2)": ent,
        "maximum ln d": max_ent,
        "effective rank exp H(p)": _num(r.get("effective_rank")),
        "W-error at d/2": _num(r.get("w_error_d2")),
    }
    if ratio is None:
        return Finding("head spectrum", INFO, "The head record has no singular entropy.", numbers, [(rec.kind, rec.key)])
    if ratio >= COLLAPSED_ENTROPY_RATIO:
        verdict = (f"The head spectrum is collapsed: singular entropy {ent:.3g} is {ratio:.0%} of its maximum ln d = {max_ent:.3g}, "
                   "like the study's small Pythia models after saturation (one direction dominates the logits).")
    elif ratio <= SPREAD_ENTROPY_RATIO:
        verdict = (f"The head spectrum is spread out: singular entropy {ent:.3g} is {ratio:.0%} of its maximum ln d = {max_ent:.3g}, "
                   "like the study's larger models that do not saturate.")
    else:
        verdict = f"The head spectrum is intermediate: singular entropy {ent:.3g} is {ratio:.0%} of its maximum ln d = {max_ent:.3g}."
    return Finding("head spectrum", INFO, verdict, numbers, [(rec.kind, rec.key)],
                   ["A collapsed spectrum at one checkpoint is a symptom; the study's evidence is its timing against the loss curve (see the sweep)."])


def anisotropy_finding(rec: Record) -> Finding | None:
    layers = rec.results.get("layers") or []
    last = _num(rec.results.get("last_layer_anisotropy"))
    if last is None and layers:
        last = _num(layers[-1].get("anisotropy"))
    if last is None:
        return None
    inner = [x["anisotropy"] for x in layers[1:-1] if _num(x.get("anisotropy")) is not None]
    numbers = {"last-layer anisotropy": last, "mean anisotropy of inner layers": float(np.mean(inner)) if inner else None,
               "layers": len(layers) - 1 if layers else None}
    if last >= HIGH_ANISOTROPY:
        verdict = f"The last layer is highly anisotropic ({last:.3g}): its representations nearly share one direction, as in the study's Pythia <= 160M late in training."
    elif last <= LOW_ANISOTROPY:
        verdict = f"The last layer is close to isotropic ({last:.3g}), as in the study's models that do not saturate (and OPT)."
    else:
        verdict = f"The last layer is moderately anisotropic ({last:.3g})."
    caveats = []
    ts = rec.inputs.get("token_sample") or {}
    n = _num(ts.get("n_tokens"))
    if n is not None and n < SMALL_SAMPLE_TOKENS:
        caveats.append(f"Measured on {int(n)} tokens (the study used 50k): a small sample, though anisotropy is an average over n(n-1) pairs and settles fast.")
    return Finding("last-layer anisotropy", INFO, verdict, numbers, [(rec.kind, rec.key)], caveats)


def _int(value: Any) -> int | None:
    v = _num(value)
    return int(v) if v is not None else None


def usable_sweep(records: list[Record]) -> list[Record]:
    """Sweep records that measured a checkpoint (status ok, or no status) and are not duplicates of another revision."""
    return [r for r in records if r.results.get("status", "ok") == "ok" and not r.results.get("duplicate_of")]


def sweep_series(records: list[Record]) -> dict[str, np.ndarray]:
    """Per-checkpoint series of one model's usable sweep records, sorted by step: step, loss, singular entropy, last-layer anisotropy."""
    rows = []
    for rec in usable_sweep(records):
        r, i = rec.results, rec.inputs
        step = _num(_first(i, "step")) if _first(i, "step") is not None else _num(_first(r, "step"))
        if step is None:
            step = _step_from_revision(i.get("revision"))
        if step is None:
            continue
        rows.append((step, _num(_first(r, "cross_entropy", "loss")), _num(r.get("singular_entropy")), _num(r.get("last_layer_anisotropy"))))
    rows.sort(key=lambda t: t[0])
    as_arr = lambda j: np.array([np.nan if t[j] is None else t[j] for t in rows], dtype=np.float64)  # noqa: E731
    return {"step": as_arr(0), "loss": as_arr(1), "singular_entropy": as_arr(2), "last_layer_anisotropy": as_arr(3)}


def _step_from_revision(revision: Any) -> float | None:
    m = _CHECKPOINT_DIR.fullmatch(str(revision or ""))
    return float(re.sub(r"\D", "", m.group(0))) if m else None


def saturation_summary(records: list[Record], saturation: Record | None) -> dict[str, Any]:
    """Best/final step and loss, relative rise, spectrum-collapse and anisotropy-jump steps of one model.

    From the model's ``saturation`` record when there is one (``lmsat saturation``), else with
    the same definitions (:mod:`lmsat.experiments.saturation`) applied to the stored sweep numbers.
    """
    from lmsat.experiments import saturation as sat

    if saturation is not None:
        return dict(saturation.results)
    series = sweep_series(records)
    ok = np.isfinite(series["loss"])
    if not ok.any():
        return {}
    out: dict[str, Any] = sat.saturation_point(series["step"][ok].astype(int), series["loss"][ok])
    out["saturates"] = out["relative_rise"] > sat.DEFAULT_MAX_RISE
    out["collapse_step"], out["collapse_rise"] = sat.jump_step(series["step"][ok].astype(int), series["singular_entropy"][ok], sat.DEFAULT_MIN_ENTROPY_RISE)
    out["anisotropy_jump_step"], out["anisotropy_rise"] = sat.jump_step(
        series["step"][ok].astype(int), series["last_layer_anisotropy"][ok], sat.DEFAULT_MIN_ANISOTROPY_RISE)
    return out


def sweep_finding(model: str, records: list[Record], saturation: Record | None) -> Finding | None:
    """Saturation, spectrum-collapse step and last-layer anisotropy jump over a checkpoint sweep (SPEC 2.1, 2.4, 2.5)."""
    series = sweep_series(records)
    steps = series["step"]
    if len(steps) < 2:
        return None
    s = saturation_summary(records, saturation)
    best_step, best_loss, final_loss, rise = (_num(s.get("best_step")), _num(s.get("best_loss")), _num(s.get("final_loss")),
                                             _num(s.get("relative_rise")))
    collapse, collapse_rise = _num(s.get("collapse_step")), _num(s.get("collapse_rise"))
    jump, jump_rise = _num(s.get("anisotropy_jump_step")), _num(s.get("anisotropy_rise"))
    numbers: dict[str, Any] = {
        "checkpoints": len(steps), "best step": best_step, "best loss (nats/token)": best_loss,
        "final loss (nats/token)": final_loss, "relative rise final/best - 1": rise,
        "spectrum-collapse step": collapse, "singular-entropy rise (nats)": collapse_rise,
        "last-layer anisotropy jump step": jump, "anisotropy rise": jump_rise,
    }
    saturated = bool(s.get("saturates")) if s.get("saturates") is not None else (rise is not None and rise > SATURATION_RISE)
    parts = []
    if rise is None:
        parts.append("The sweep has no loss, so saturation cannot be judged.")
    elif saturated:
        parts.append(f"The model saturates: its loss is lowest at step {_fmt(best_step)} ({best_loss:.4g} nats/token) and ends "
                     f"{rise:.1%} higher ({final_loss:.4g}).")
    else:
        parts.append(f"No saturation: the final loss ({final_loss:.4g}) is within {SATURATION_RISE:.0%} of the best ({best_loss:.4g}).")
    if collapse is not None:
        parts.append(f"The head spectrum collapses at step {_fmt(collapse)} (singular entropy +{collapse_rise:.3g} nats).")
    else:
        parts.append("The head spectrum never collapses (no jump of singular entropy).")
    if jump is not None:
        parts.append(f"Last-layer anisotropy jumps at step {_fmt(jump)} (+{jump_rise:.3g}).")
    if saturated and best_step is not None and collapse is not None:
        parts.append("The collapse coincides with the saturation point, as the study reports." if _near(collapse, best_step, steps) else
                     "The collapse does not coincide with the saturation point.")
    caveats = ["One training run: a second seed (e.g. PolyPythias, arXiv 2503.09543) is needed to tell a systematic effect from noise."]
    if len(steps) < 8:
        caveats.append(f"Only {len(steps)} checkpoints: the steps of collapse and jump are known only to the spacing between checkpoints.")
    return Finding("saturation over training", INFO, " ".join(parts), numbers,
                   [(r.kind, r.key) for r in records] + ([(saturation.kind, saturation.key)] if saturation else []), caveats)


def _near(a: float, b: float, steps: np.ndarray) -> bool:
    """Whether steps a and b are at most one checkpoint apart."""
    ia, ib = int(np.argmin(np.abs(steps - a))), int(np.argmin(np.abs(steps - b)))
    return abs(ia - ib) <= 1


def rank_probe_points(records: list[Record]) -> list[tuple[int, float, float | None]]:
    """(rank r, validation loss, accuracy) for each probe record, best loss per rank, sorted by r."""
    best: dict[int, tuple[float, float | None]] = {}
    for rec in records:
        if rec.results.get("stage", "final") != "final":  # learning-rate search runs are not results
            continue
        r = _int(_first(rec.results, "rank", "r")) or _int(_first(rec.inputs, "rank", "r"))
        loss = _num(_first(rec.results, "val_loss", "validation_loss", "loss", "final_loss"))
        acc = _num(_first(rec.results, "val_accuracy", "accuracy", "top1_accuracy", "top1"))
        if r is None or loss is None:
            continue
        if r not in best or loss < best[r][0]:
            best[r] = (loss, acc)
    return [(r, lo, ac) for r, (lo, ac) in sorted(best.items())]


def rank_probe_finding(d: int, probes: list[Record], refs: list[Record]) -> Finding | None:
    """Loss of the rank-r probe at r = d against the full-rank head (SPEC 2.6)."""
    points = rank_probe_points(probes)
    if not points:
        return None
    ref_loss, full_label = None, "full-rank head"
    finals = [r for r in refs if r.results.get("stage", "final") == "final"]
    # A trained full-rank probe is the like-for-like reference; the model's own head is the fallback.
    for rec in sorted(finals, key=lambda r: r.results.get("head") == "own"):
        ref_loss = _num(_first(rec.results, "val_loss", "validation_loss", "loss", "final_loss"))
        if ref_loss is not None:
            full_label = "model's own head" if rec.results.get("head") == "own" else "full-rank head"
            break
    if ref_loss is None:  # the largest probed rank stands in for full rank
        ref_loss, full_label = points[-1][1], f"largest probed rank r = {points[-1][0]}"
    at_d = [p for p in points if p[0] <= d]
    numbers: dict[str, Any] = {"hidden size d": d, f"loss of {full_label}": ref_loss}
    for r, loss, _ in points:
        numbers[f"loss at r = {r}"] = loss
    enough = [r for r, loss, _ in points if loss - ref_loss <= PROBE_TOLERANCE]
    needed = min(enough) if enough else None
    numbers["smallest rank within %.2g nats of full rank" % PROBE_TOLERANCE] = needed
    parts = []
    if at_d:
        r_d, loss_d, _ = at_d[-1]
        gap = loss_d - ref_loss
        numbers[f"gap at r = {r_d} (nats)"] = gap
        parts.append(f"A rank-{r_d} head{' (r = d)' if r_d == d else ''} reaches loss {loss_d:.4g}, {gap:+.3g} nats from the {full_label} ({ref_loss:.4g}).")
    if needed is not None:
        parts.append(f"The smallest probed rank within {PROBE_TOLERANCE} nats of full rank is r = {needed}" + (
            f", below d = {d}: the frozen representations do not need all of d." if needed < d else
            f", at or above d = {d}: restricting the rank below d costs loss." if needed >= d else "."))
        status = NOT_BINDING if needed <= d else BINDING
    else:
        status = UNKNOWN
    return Finding("rank probe", status, " ".join(parts), numbers, [(r.kind, r.key) for r in probes],
                   ["Probe losses depend on the probe's training budget and learning rate; compare ranks trained the same way."])


def _corpus_label(rec: Record) -> str:
    """A corpus's short name: its file or folder name, with the parent for lmsat synth's ``LANG/corpus``."""
    c = _first(rec.inputs, "corpus", "data", "source")
    if isinstance(c, dict):
        c = _first(c, "source", "name")
    if c is None:
        return rec.key.split("|")[0]
    parts = [p for p in str(c).rstrip("/").split("/") if p]
    if len(parts) > 1 and parts[-1] in ("corpus", "heldout", "text", "data", "train"):
        return "/".join(parts[-2:])
    return parts[-1] if parts else str(c)


def _vocab_of_ngram(rec: Record) -> tuple[int | None, str | None]:
    tok = rec.inputs.get("tokenizer")
    if isinstance(tok, dict):
        return _int(tok.get("vocab_size")), tok.get("fingerprint")
    return _int(_first(rec.results, "vocab_size")), None


def same_vocabulary(ngram: Record, vocab: int | None, fingerprint: str | None) -> bool | None:
    """Whether an n-gram matrix's tokenizer is the model's: by fingerprint, else by vocabulary size
    (a model's embedding may be padded a little beyond its tokenizer); None when unknown."""
    nv, nfp = _vocab_of_ngram(ngram)
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


def trained_on(synth: Record, model_facts: list[dict[str, Any]]) -> bool:
    """Whether a model's inputs (or its train record) point at this synthetic language.

    True when one of their strings is a path inside the language's folder (the folder
    holding ``synth/<key>.json``, as ``lmsat synth -o LANG`` writes it, e.g. its
    ``LANG/corpus``), or names the language's key or name.
    """
    from pathlib import Path, PurePath

    from lmsat.store import slugify

    ids = {x for x in (synth.key, slugify(synth.key), synth.inputs.get("name"), synth.results.get("name")) if isinstance(x, str) and x}
    ids.discard("language")  # lmsat synth's fixed key says nothing about which language
    folder = synth.path.parent.parent.resolve() if synth.path is not None else None
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


def diagnose(records: dict[str, list[Record]]) -> list[ModelDiagnosis]:
    """One :class:`ModelDiagnosis` per model found in the records (head, anisotropy, sweep, rank probe, train).

    ``records`` maps a kind to its records (from every run directory). Data-level records
    (``ngram``, ``synth``) are compared with every model's hidden size.
    """
    models: dict[str, dict[str, Any]] = {}

    def entry(inputs: dict[str, Any], rec: Record) -> dict[str, Any]:
        name = model_name(inputs)
        e = models.setdefault(name, {"d": None, "inputs": inputs, "head": None, "anisotropy": None, "sweep": [],
                                     "saturation": None, "probe": [], "ref": [], "train": None})
        if e["d"] is None:
            e["d"] = hidden_size_of(rec)
        if e.get("vocab") is None:
            head = rec.results.get("head")
            e["vocab"] = _int(_first(rec.inputs, "vocab_size")) or (_int(head.get("vocab_rows")) if isinstance(head, dict) else None)
        if e.get("tokenizer_fp") is None:
            e["tokenizer_fp"] = _first(rec.inputs, "tokenizer_fingerprint")
        return e

    for rec in records.get("head", []):
        entry(rec.inputs, rec)["head"] = rec
    for rec in records.get("anisotropy", []):
        if rec.results.get("is_causal") is False:
            continue
        entry(rec.inputs, rec)["anisotropy"] = rec
    for rec in records.get("sweep", []):
        entry(rec.inputs, rec)["sweep"].append(rec)
    for rec in records.get("saturation", []):
        entry(rec.inputs, rec)["saturation"] = rec
    for rec in records.get("rank_probe", []):
        entry(rec.inputs, rec)["probe"].append(rec)
    for rec in records.get("rank_probe_ref", []):
        entry(rec.inputs, rec)["ref"].append(rec)
    for rec in records.get("train", []):
        entry(rec.inputs, rec)["train"] = rec

    ngrams = records.get("ngram", [])
    synths = records.get("synth", [])
    out = []
    for name, e in models.items():
        d = e["d"]
        diag = ModelDiagnosis(model=name, hidden_size=d, caveats=model_caveats(e["inputs"]) + [CONTESTED])
        if d is not None:
            for s in synths:
                if not trained_on(s, [e["inputs"]] + ([e["train"].inputs, e["train"].results] if e["train"] else [])):
                    continue
                f = known_rank_finding(d, s, e["train"])
                if f:
                    diag.findings.append(f)
            matching = [n for n in ngrams if same_vocabulary(n, e.get("vocab"), e.get("tokenizer_fp")) is not False]
            other = [_corpus_label(n) for n in ngrams if n not in matching]
            dims = data_dimension_findings(d, matching, checked=[same_vocabulary(n, e.get("vocab"), e.get("tokenizer_fp")) for n in matching])
            for lang in (s for s in synths if trained_on(s, [e["inputs"]] + ([e["train"].inputs, e["train"].results] if e["train"] else []))):
                w = _num(lang.results.get("w_error_probs_at_rank"))
                if w is not None and lang.results.get("family") == "low-rank-logits":
                    for f in dims:
                        f.caveats.append(
                            f"This language's logits have rank {lang.results.get('rank')}, yet its exact probability matrix P has W-error "
                            f"{w:.3g} at that rank: the softmax turns a rank-R logit matrix into a full-rank P, so the n-gram W-error of "
                            "probabilities overstates the dimension a softmax head needs (the known-rank finding is the ground truth).")
            diag.findings.extend(dims)
            if other:
                diag.caveats.append(f"Not compared with the n-gram dimension of {', '.join(other)}: that corpus was tokenised with another vocabulary.")
            if not ngrams and not synths:
                diag.findings.append(Finding(
                    "data dimension", UNKNOWN,
                    f"No n-gram or synthetic-language result in these run directories, so d = {d} cannot be compared with the "
                    "data's dimension: measure the corpus with `lmsat ngram-rank` into one of them.", {"hidden size d": d}))
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
                known = next((k.numbers["generator rank"] for k in diag.findings if k.topic == "known rank"), None)
                needed = f.numbers.get(f"smallest rank within {PROBE_TOLERANCE:.2g} nats of full rank")
                if known is not None:
                    f.numbers["generator rank"] = known
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
