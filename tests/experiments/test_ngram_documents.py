"""`--documents`: what a document is, independent of the ~1 MB read blocks (issue 15, item 5)."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

import lmsat.loading.corpus as corpus_mod
from lmsat.experiments.ngram import NGramSettings, count_corpus, run_ngram
from lmsat.loading.corpus import CorpusSpec, _lines, _split_documents
from lmsat.measure.ngram import count_ngrams

TEXT = (
    "CHAPTER I.\n\nIt is a truth universally acknowledged, that a single man in possession\n"
    "of a good fortune, must be in want of a wife.\n  However little known the feelings or views\n"
    "of such a man may be on his first entering a neighbourhood, this truth is so well\n\n \n"
    "fixed in the minds of the surrounding families, that he is considered the rightful\n"
    "property of some one or other of their daughters.\n\t\"My dear Mr. Bennet,\" said his lady to him\n"
    "one day, \"have you heard that Netherfield Park is let at last?\"\n\nMr. Bennet replied that he had not.\n"
) * 7


def _random_blocks(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), 40))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def test_read_blocks_never_delimit_documents() -> None:
    rng = random.Random(0)
    # Independent references from the whole string.
    lines_ref = [line for line in TEXT.split("\n") if line.strip()]
    paras_ref = [p for p in re.split(r"\n(?:[ \t]*\n)+", TEXT) if p.strip()]
    paras_ref = [p.rstrip("\n") for p in paras_ref]
    for _ in range(5):
        blocks = _random_blocks(TEXT, rng)
        assert [t for t, _ in _split_documents(_lines(blocks), "line")] == lines_ref
        assert [t for t, _ in _split_documents(_lines(blocks), "blank-line")] == paras_ref
        assert list(_split_documents(_lines(blocks), "file")) == [(TEXT, True)]


@pytest.mark.parametrize("documents", ["file", "blank-line", "line"])
def test_same_counts_however_the_file_is_read(tmp_path, monkeypatch, gpt2_bpe, documents) -> None:
    from lmsat.loading.tokenizers import load_tokenizer

    tok = load_tokenizer(str(gpt2_bpe))
    path = tmp_path / "book.txt"
    path.write_text(TEXT)
    # Reference: encode each document whole (from the string, no reader), eos after each.
    if documents == "file":
        docs = [TEXT]
    elif documents == "line":
        docs = [line for line in TEXT.split("\n") if line.strip()]
    else:
        docs = [p.rstrip("\n") for p in re.split(r"\n(?:[ \t]*\n)+", TEXT) if p.strip()]
    ref_ids = np.concatenate([np.asarray(tok.encode_batch([d])[0] + [tok.eos_id]) for d in docs])
    ref = count_ngrams(ref_ids, 5, tok.vocab_size).as_dict()
    settings = NGramSettings(n=5, documents=documents)
    for chunk in (1 << 20, 300, 37, 1):  # read blocks (and long-document pieces) of very different sizes
        monkeypatch.setattr(corpus_mod, "_CHUNK_CHARS", chunk)
        counts, n_docs = count_corpus(CorpusSpec(str(path)), tok, settings)
        assert n_docs == len(docs)
        assert counts.n_tokens == ref_ids.size
        assert counts.as_dict() == ref


def test_documents_choice_is_in_key_and_record(tmp_path, gpt2_bpe) -> None:
    from lmsat.loading.tokenizers import load_tokenizer

    tok = load_tokenizer(str(gpt2_bpe))
    path = tmp_path / "book.txt"
    path.write_text(TEXT)
    recs = {d: run_ngram(CorpusSpec(str(path)), tok, NGramSettings(n=3, documents=d), tmp_path / "run") for d in ("file", "line")}
    assert "docs=" not in recs["file"].key and recs["line"].key.endswith("|docs=line")
    assert recs["line"].inputs["documents"] == "line" and recs["file"].inputs["settings"]["documents"] == "file"
    assert recs["file"].results["n_documents"] == 1
    assert recs["line"].results["n_documents"] == len([x for x in TEXT.split("\n") if x.strip()])
