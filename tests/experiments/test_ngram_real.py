"""Real text: the Brown corpus and the King James Bible with the GPT-2 BPE and a BPE trained here.

Each corpus is capped at the same number of tokens (--max-tokens) so the
comparison is fair and the test fast. What the measurement supports and this
test checks, for both tokenizers:

* every W-error curve is valid: 1 at d = 0, non-increasing, in [0, 1], 0 at
  d = rank (the spectrum is complete), and rank <= observed vocabulary;
* the Brown corpus (500 samples of 15 genres) has a larger observed vocabulary
  than the King James Bible (one book, one register) at equal token counts, and
  needs at least as many dimensions for W-error 0.1 and 0.5 (measured at 100k
  tokens: d(0.1) = 11,609 vs 2,777 with GPT-2, 2,591 vs 1,862 with the 4k BPE).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lmsat.store import Store

MAX_TOKENS = 100_000
pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def trained_bpe(tmp_path_factory, brown_dir, kjv_dir):
    """A byte-level BPE (4,000 tokens) trained on the spot on parts of both corpora, saved as an HF folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [p.read_text(encoding="utf-8") for p in sorted(brown_dir.glob("*.txt"))[::5]]
    kjv = (kjv_dir / "kjv.txt").read_text(encoding="utf-8")
    texts += [kjv[i : i + 100_000] for i in range(0, min(len(kjv), 1_000_000), 100_000)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=4000, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    folder = tmp_path_factory.mktemp("bpe4k")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, brown_dir, kjv_dir, gpt2_bpe, trained_bpe):
    """One run directory holding the four (corpus x tokenizer) records."""
    from lmsat.cli import main

    out = tmp_path_factory.mktemp("ngram_real")
    for corpus in (brown_dir, kjv_dir):
        for tok in (gpt2_bpe, trained_bpe):
            try:
                main(["ngram-rank", "-t", str(tok), "-d", str(corpus), "--max-tokens", str(MAX_TOKENS), "-o", str(out)])
            except SystemExit as exc:
                assert exc.code in (0, None)
    return out, {(r.key.split("|")[0], r.key.split("|")[1]): r for r in Store(out).records("ngram")}


def test_w_error_curves_are_valid(real_runs):
    out, records = real_runs
    assert len(records) == 4 and {c for c, _ in records} == {"brown", "kjv"} and "gpt2" in {t for _, t in records}
    for rec in records.values():
        curve = rec.load_arrays()["w_error"]
        s = rec.load_arrays()["singular_values"]
        r = rec.results
        assert r["complete"] and r["n_tokens"] == MAX_TOKENS
        assert curve[0] == pytest.approx(1.0)
        assert np.all(np.diff(curve) <= 1e-12) and curve.min() >= 0 and curve.max() <= 1
        assert curve[-1] < 1e-6  # full spectrum: W-error reaches 0 at d = rank
        assert np.all(np.diff(s) <= 0) and s[-1] > 0
        assert r["rank"] == len(s) <= r["observed_vocab"] <= r["vocab_size"]
        assert r["accuracy"]["trace_relative_error"] < 1e-10
        dims = [r["dims_for_w_error"][t] for t in ("0.5", "0.2", "0.1", "0.05", "0.01")]
        assert dims == sorted(dims) and dims[-1] <= r["rank"]
        # dims are the first d under each threshold, read off the stored curve
        assert curve[dims[2]] <= 0.1 < curve[dims[2] - 1]
    assert (out / "figures" / "ngram_w_error.png").stat().st_size > 0
    assert (out / "figures" / "ngram_spectrum.png").stat().st_size > 0


def test_brown_needs_more_dimensions_than_the_bible(real_runs):
    _, records = real_runs
    for tok in {t for _, t in records}:
        brown, kjv = records[("brown", tok)].results, records[("kjv", tok)].results
        assert brown["observed_vocab"] > kjv["observed_vocab"]
        assert brown["dims_for_w_error"]["0.1"] >= kjv["dims_for_w_error"]["0.1"]
        assert brown["dims_for_w_error"]["0.5"] >= kjv["dims_for_w_error"]["0.5"]


def test_brown_gpt2_counts_match_an_independent_tokenisation(real_runs, brown_dir, gpt2_bpe):
    """Contexts, n-grams and |P|_F equal a Counter over tiktoken's own encoding (files in order, <|endoftext|> after each)."""
    import tiktoken
    import tiktoken.load

    from lmsat.assets import GPT2_PAT_STR

    _, records = real_runs
    ranks = tiktoken.load.load_tiktoken_bpe(str(gpt2_bpe))
    enc = tiktoken.Encoding(name="gpt2", pat_str=GPT2_PAT_STR, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    stream: list[int] = []
    for path in sorted(brown_dir.glob("*.txt")):
        stream += enc.encode_ordinary(path.read_text(encoding="utf-8")) + [50256]
        if len(stream) >= MAX_TOKENS:
            break
    stream = stream[:MAX_TOKENS]
    grams = Counter(tuple(stream[i : i + 5]) for i in range(len(stream) - 4))
    contexts: dict[tuple, Counter] = {}
    for g, c in grams.items():
        contexts.setdefault(g[:4], Counter())[g[4]] = c
    fro_sq = sum(sum(v * v for v in row.values()) / sum(row.values()) ** 2 for row in contexts.values())
    r = records[("brown", "gpt2")].results
    assert r["n_contexts"] == len(contexts)
    assert r["n_ngrams"] == len(grams)
    assert r["observed_vocab"] == len({g[4] for g in grams})
    assert r["frobenius_norm"] ** 2 == pytest.approx(fro_sq, rel=1e-12)
    s = records[("brown", "gpt2")].load_arrays()["singular_values"]
    assert float(np.sum(s**2)) == pytest.approx(fro_sq, rel=1e-9)  # the spectrum holds all of |P|_F^2
