"""Corpora in every supported format, and the deterministic token sample."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmsat.errors import UserError
from lmsat.loading.corpus import CorpusSpec, iter_documents
from lmsat.loading.tokenizers import load_tiktoken, load_tokenizer
from lmsat.loading.tokens import build_token_sample, get_token_sample, ids_hash, load_token_sample

DOCS = ["The first document is here.", "A second one, a bit longer than the first.", "Third."]


@pytest.fixture
def corpora(tmp_path):
    (tmp_path / "txt").mkdir()
    for i, d in enumerate(DOCS):
        (tmp_path / "txt" / f"{i}.txt").write_text(d)
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"body": d, "id": i}) for i, d in enumerate(DOCS)))
    pq.write_table(pa.table({"body": DOCS}), tmp_path / "c.parquet")
    return tmp_path


def test_every_local_format_yields_the_same_documents(corpora):
    assert list(iter_documents(CorpusSpec(str(corpora / "txt")))) == DOCS
    assert list(iter_documents(CorpusSpec(str(corpora / "txt" / "*.txt")))) == DOCS
    assert list(iter_documents(CorpusSpec(str(corpora / "c.jsonl"), text_field="body"))) == DOCS
    assert list(iter_documents(CorpusSpec(str(corpora / "c.parquet"), text_field="body"))) == DOCS


def test_corpus_errors_say_what_to_do(corpora, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        list(iter_documents(CorpusSpec(str(tmp_path / "nope"))))
    with pytest.raises(UserError, match="--text-field"):
        list(iter_documents(CorpusSpec(str(corpora / "c.jsonl"))))
    with pytest.raises(UserError, match="--text-field"):
        list(iter_documents(CorpusSpec(str(corpora / "c.parquet"))))
    with pytest.raises(UserError, match="no corpus files match"):
        list(iter_documents(CorpusSpec(str(tmp_path / "*.nothing"))))


def test_hub_dataset_unreachable_is_a_user_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(UserError, match="cannot reach the Hugging Face hub"):
        next(iter_documents(CorpusSpec("hf:lmsat-test/does-not-exist", split="train")))


def test_token_sample_is_deterministic_and_matches_the_tokenized_stream(brown_dir, gpt2_bpe):
    tok = load_tiktoken(gpt2_bpe)
    spec = CorpusSpec(str(brown_dir))
    a = build_token_sample(spec, tok, n_tokens=1000, seq_len=100, seed=3)
    b = build_token_sample(spec, tok, n_tokens=1000, seq_len=100, seed=3)
    c = build_token_sample(spec, tok, n_tokens=1000, seq_len=100, seed=4)
    assert a.ids.shape == (10, 100) and a.ids.dtype == np.int64
    assert np.array_equal(a.ids, b.ids) and a.hash == b.hash
    assert a.hash != c.hash
    # Independent re-tokenisation: every window is a contiguous piece of the corpus stream.
    stream: list[int] = []
    for doc in iter_documents(spec):
        stream += tok.backend.encode_ordinary(doc) + [tok.eos_id]
        if len(stream) > a.describe()["pool_tokens"]:
            break
    windows = np.asarray(stream[: len(stream) // 100 * 100]).reshape(-1, 100)
    rows = {w.tobytes() for w in windows}
    assert all(row.tobytes() in rows for row in a.ids)
    assert len({row.tobytes() for row in a.ids}) == 10  # drawn without replacement


def test_same_vocabulary_gives_same_sample_for_different_models(brown_dir, tiny_neox, tiny_llama, tmp_path):
    spec = CorpusSpec(str(brown_dir))
    t1, t2 = load_tokenizer(str(tiny_neox)), load_tokenizer(str(tiny_llama))
    assert t1.fingerprint == t2.fingerprint
    s1 = get_token_sample(tmp_path, spec, t1, 512, 64, 0)
    s2 = get_token_sample(tmp_path, spec, t2, 512, 64, 0)
    assert s1.hash == s2.hash == ids_hash(s1.ids)
    reloaded = load_token_sample(tmp_path / "tokens" / f"{s1.hash}.npz")
    assert np.array_equal(reloaded.ids, s1.ids)
    assert len(list((tmp_path / "tokens").glob("*.npz"))) == 1


def test_too_little_text_for_one_sequence(tmp_path, gpt2_bpe):
    (tmp_path / "small.txt").write_text("only a few words")
    with pytest.raises(UserError, match="fewer than one sequence"):
        build_token_sample(CorpusSpec(str(tmp_path / "small.txt")), load_tiktoken(gpt2_bpe), 64, 32)
