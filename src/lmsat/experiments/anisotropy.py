"""Layer-wise anisotropy of one or more models on one token sample (docs/methods.md §1, study Fig. 2)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from lmsat.errors import UserError
from lmsat.experiments.common import model_inputs, model_key, still_current
from lmsat.experiments.representations import representation_pass
from lmsat.kinds.anisotropy import AnisotropyRecord
from lmsat.loading.corpus import CorpusSpec, check_corpus
from lmsat.loading.models import (
    ModelSpec,
    load_config,
    load_model,
    load_model_tokenizer,
)
from lmsat.loading.tokens import get_token_sample
from lmsat.store import Record, Store

KIND = "anisotropy"


def run_anisotropy(
    specs: list[ModelSpec],
    corpus: CorpusSpec,
    output: str | Path,
    n_tokens: int = 8192,
    seq_len: int = 256,
    seed: int = 0,
    batch_size: int = 8,
    force: bool = False,
) -> list[Record]:
    """Per-layer anisotropy and mean norm for each model; one record per model.

    A model whose record exists for the same token sample is skipped unless ``force``.
    """
    for spec in specs:  # every model must load its config before anything is written
        load_config(spec)
    check_corpus(corpus)
    store = Store(output)
    records = []
    for spec in specs:
        tokenizer = load_model_tokenizer(spec)
        tokens_dir = Path(output) / "tokens"
        before = set(tokens_dir.iterdir()) if tokens_dir.is_dir() else set()
        sample = get_token_sample(output, corpus, tokenizer, n_tokens, seq_len, seed)
        key = model_key(spec)
        done = store.get(KIND, key)
        if done and not force and done.inputs.get("token_sample", {}).get("hash") == sample.hash and still_current(done, spec):
            records.append(done)
            continue
        try:
            loaded = load_model(spec, require_causal=False)
        except UserError:  # weights refused at load time (pickled objects, ...): leave no sample behind
            for path in set(tokens_dir.iterdir()) - before:
                path.unlink(missing_ok=True)
            raise
        result = representation_pass(loaded, sample, batch_size=batch_size, layers="all", description=f"anisotropy {spec.label}")
        rec = AnisotropyRecord(
            key=key,
            inputs=model_inputs(loaded, sample, batch_size=batch_size),
            layers=[asdict(s) for s in result.layers],
            last_layer_anisotropy=result.layers[-1].anisotropy,
            cross_entropy=result.cross_entropy if loaded.is_causal else None,
            is_causal=loaded.is_causal,
        )
        records.append(rec.put(store))
        del loaded
    return records

