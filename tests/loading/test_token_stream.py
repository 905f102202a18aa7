"""lmsat's one corpus-to-tokens function (lmsat.loading.tokens.token_pieces) against a hand-built stream.

The tokenizer is a character-level stand-in (id = code point - 96 for a..z, 27 for a space), so every
expected stream below is written out independently of lmsat.
"""

from __future__ import annotations

import numpy as np

from lmsat.loading.corpus import CorpusSpec
from lmsat.loading.tokenizers import TextTokenizer
from lmsat.loading.tokens import build_token_sample, token_pieces

EOS = 0


class _Chars:
    def encode_ordinary_batch(self, texts):
        return [[27 if c == " " else ord(c) - 96 for c in t if c == " " or c.isalpha()] for t in texts]


def chars() -> TextTokenizer:
    return TextTokenizer(name="chars", kind="tiktoken", backend=_Chars(), vocab_size=28, eos_id=EOS, fingerprint="chars")


def ids(text: str) -> list[int]:
    return [27 if c == " " else ord(c) - 96 for c in text]


def corpus(tmp_path, docs: list[str]) -> CorpusSpec:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"{i:03d}.txt").write_text(d)
    return CorpusSpec(source=str(folder))


def test_whole_documents_each_followed_by_end_of_text(tmp_path):
    spec = corpus(tmp_path, ["ab", "cde", "f"])
    pieces = list(token_pieces(spec, chars()))
    assert [p.tolist() for p, _ in pieces] == [ids("ab") + [EOS], ids("cde") + [EOS], ids("f") + [EOS]]
    assert all(end for _, end in pieces)


def test_max_tokens_cuts_the_stream_exactly(tmp_path):
    spec = corpus(tmp_path, ["ab", "cde", "f"])
    stream = np.concatenate([p for p, _ in token_pieces(spec, chars(), max_tokens=5)])
    assert stream.tolist() == (ids("ab") + [EOS] + ids("cde"))[:5]


def test_stop_at_batch_keeps_the_whole_batch_that_reaches_the_budget(tmp_path):
    docs = [f"{chr(97 + i % 26)}" * 3 for i in range(70)]  # 70 documents of 3 letters + eos = 4 tokens each
    spec = corpus(tmp_path, docs)
    # The first batch holds 64 documents (256 tokens) and reaches a budget of 10: it is kept whole, and nothing more is read.
    stream = np.concatenate([p for p, _ in token_pieces(spec, chars(), max_tokens=10, stop_at_batch=True)])
    assert len(stream) == 64 * 4
    # Without stop_at_batch the budget is exact.
    assert sum(len(p) for p, _ in token_pieces(spec, chars(), max_tokens=10)) == 10


def test_blank_line_documents_each_end_with_end_of_text(tmp_path):
    spec = corpus(tmp_path, ["ab cd\n\nef\n"])
    stream = np.concatenate([p for p, _ in token_pieces(spec, chars(), documents="blank-line")])
    assert stream.tolist() == ids("ab cd") + [EOS] + ids("ef") + [EOS]


def test_token_sample_windows_come_from_that_stream(tmp_path):
    docs = ["abcdefgh" * 4 for _ in range(10)]  # 10 x (32 + eos) = 330 tokens
    spec = corpus(tmp_path, docs)
    sample = build_token_sample(spec, chars(), n_tokens=32, seq_len=16, seed=0)
    stream = np.array([t for _ in range(10) for t in ids("abcdefgh" * 4) + [EOS]])
    windows = stream[: len(stream) // 16 * 16].reshape(-1, 16)
    for row in sample.ids:
        assert any((row == w).all() for w in windows)
