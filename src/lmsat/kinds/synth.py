"""``synth`` records: a synthetic language's generator truth (``lmsat synth``; docs/methods.md §10)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lmsat.kinds.base import UNSET, KindRecord, integer, number
from lmsat.kinds.common import drop_empty, labelled


@dataclass(frozen=True)
class SynthRecord(KindRecord):
    KIND = "synth"
    VERSION = 1
    WRITER = "lmsat synth"

    # The generator's parameters (LanguageSpec.describe()), then the measured truth, in the writer's order.
    family: str = UNSET
    vocab: int = UNSET
    contexts: int = UNSET
    rank: int = UNSET
    order: int = UNSET
    temperature: float | None = UNSET
    concentration: float | None = UNSET
    mix_concentration: float | None = UNSET
    seed: int = UNSET
    n_tokens: int = UNSET
    heldout_tokens: int = UNSET
    n_chains: int = UNSET
    true_entropy: float = UNSET
    true_entropy_standard_error: float = UNSET
    heldout_true_entropy: float = UNSET
    heldout_true_entropy_standard_error: float = UNSET
    expected_entropy_empirical: float = UNSET
    stationary_entropy: float | None = UNSET
    expected_entropy: float = UNSET
    expected_entropy_weighting: str = UNSET
    unigram_entropy: float = UNSET
    uniform_entropy: float = UNSET
    numerical_rank_probs: int = UNSET
    numerical_rank_logits: int = UNSET
    w_error_probs_at_rank: float = UNSET
    w_error_logits_at_rank: float = UNSET
    svd_truncation_gap: dict[str, float] = UNSET
    contexts_visited: int = UNSET
    context_map: str = UNSET
    start_context: str = UNSET
    eos_token: str = UNSET
    eos_id: int = UNSET
    notes: list[str] = UNSET

    @property
    def exact_rank(self) -> int | None:
        return integer(self.rank)

    @property
    def entropy(self) -> float | None:
        """The language's expected entropy per token (nats): the lowest loss any model can reach."""
        return number(self.expected_entropy)

    @property
    def name(self) -> Any:
        return self.inputs.get("name") or self.extra.get("name")


LABELS = {"language": "language", "family": "family", "vocab": "vocabulary V", "contexts": "contexts C", "rank": "rank R",
          "order": "order", "temperature": "temperature", "seed": "seed", "n_tokens": "training tokens",
          "expected_entropy": "expected entropy (nats/token)", "true_entropy": "realised entropy, training text (nats/token)",
          "heldout_true_entropy": "realised entropy, held-out text (nats/token)", "unigram_entropy": "unigram entropy (nats/token)",
          "numerical_rank_logits": "numerical rank of the logits", "numerical_rank_probs": "numerical rank of P",
          "w_error_probs_at_rank": "W-error of P at R"}


def frame(records: Sequence[SynthRecord]) -> pd.DataFrame:
    """The generator truth of each language (machine column names)."""
    rows = []
    for rec in records:
        res = rec.results()
        rows.append({"language": rec.key, **{c: res[c] for c in LABELS if c in res}})
    return drop_empty(pd.DataFrame(rows))


def table(records: Sequence[SynthRecord]) -> pd.DataFrame:
    return labelled(frame(records), LABELS)


TRUTH = ("family", "vocab", "contexts", "rank", "order", "temperature", "concentration", "mix_concentration", "seed",
         "n_tokens", "heldout_tokens", "true_entropy", "heldout_true_entropy", "expected_entropy",
         "expected_entropy_weighting", "unigram_entropy", "uniform_entropy", "numerical_rank_probs",
         "numerical_rank_logits", "w_error_probs_at_rank", "w_error_logits_at_rank")


def truth_table(record: SynthRecord) -> pd.DataFrame:
    """The scalar truth of one language as a two-column table (quantity, value); entropies in nats/token."""
    res = record.results()

    def shown(x: Any) -> str:
        return "-" if x is None else (f"{x:.6g}" if isinstance(x, float) else str(x))

    return pd.DataFrame({"quantity": list(TRUTH), "value": [shown(res.get(k)) for k in TRUTH]})
