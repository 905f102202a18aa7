"""`lmsat ngram-rank`: bad inputs fail with one line, exit 2 and no files; --help is complete."""

from __future__ import annotations

import pytest

from tests.conftest import files_under
from tests.contract import assert_user_error


@pytest.fixture
def small_corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("the cat sat on the mat and the dog sat on the log\n" * 20)
    return folder


def assert_clean_failure(res, out, *fragments):
    assert_user_error(res, out, *fragments)


def test_empty_corpus_file_and_empty_folder(cli, tmp_path, gpt2_bpe):
    out = tmp_path / "run"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    assert_clean_failure(cli("ngram-rank", "-t", gpt2_bpe, "-d", empty, "-o", out), out, "contains no text")
    folder = tmp_path / "nothing"
    folder.mkdir()
    assert_clean_failure(cli("ngram-rank", "-t", gpt2_bpe, "-d", folder, "-o", out), out, "holds no corpus files")
    assert_clean_failure(cli("ngram-rank", "-t", gpt2_bpe, "-d", tmp_path / "missing", "-o", out), out, "does not exist")


def test_corpus_shorter_than_one_ngram(cli, tmp_path, gpt2_bpe):
    out = tmp_path / "run"
    short = tmp_path / "short.txt"
    short.write_text("hi")
    assert_clean_failure(cli("ngram-rank", "-t", gpt2_bpe, "-d", short, "--n", 5, "-o", out), out, "fewer than one 5-gram")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--n", 1), "--n must be at least 2"),
        (("--n", 0), "--n must be at least 2"),
        (("--min-count", 0), "--min-count"),
        (("--max-contexts", 0), "--max-contexts"),
        (("--row-weight", "idf"), "--row-weight must be one of uniform, frequency"),
        (("--context-selection", "best"), "--context-selection"),
        (("--top-k", 0), "--top-k"),
        (("--max-tokens", 3), "--max-tokens must be at least --n"),
        (("--method", "qr"), "--method must be one of"),
        (("--shard-tokens", 3), "--shard-tokens must be at least --n"),
        (("--documents", "pages"), "--documents must be one of file, blank-line, line"),
        (("--device", "tpu"), "--device must be one of"),
    ],
)
def test_bad_options(cli, tmp_path, small_corpus, gpt2_bpe, args, fragment):
    out = tmp_path / "run"
    assert_clean_failure(cli("ngram-rank", "-t", gpt2_bpe, "-d", small_corpus, *args, "-o", out), out, fragment)


def test_tokenizer_that_cannot_be_loaded(cli, tmp_path, small_corpus):
    out = tmp_path / "run"
    assert_clean_failure(cli("ngram-rank", "-t", tmp_path / "nope.tiktoken", "-d", small_corpus, "-o", out), out, "does not exist")
    junk = tmp_path / "junk.tiktoken"
    junk.write_text("this is not a BPE rank file\n")
    assert_clean_failure(cli("ngram-rank", "-t", junk, "-d", small_corpus, "-o", out), out, "cannot read tiktoken BPE file")
    empty_folder = tmp_path / "no_tokenizer_here"
    empty_folder.mkdir()
    assert_clean_failure(cli("ngram-rank", "-t", empty_folder, "-d", small_corpus, "-o", out), out, "cannot load tokenizer")
    assert_clean_failure(cli("ngram-rank", "-t", tmp_path / "missing" / "dir", "-d", small_corpus, "-o", out), out, "does not exist")


def test_min_count_above_every_context_keeps_the_counts_but_writes_no_result(cli, tmp_path, small_corpus, gpt2_bpe):
    out = tmp_path / "run"
    res = cli("ngram-rank", "-t", gpt2_bpe, "-d", small_corpus, "--min-count", 10_000, "-o", out)
    assert res.code == 2 and "lower --min-count" in res.stderr and "Traceback" not in res.stderr
    # The counting stage finished and is kept (so a re-run resumes); no ngram record or figure exists.
    assert [p.parent.name for p in files_under(out) if p.suffix == ".json"] == ["ngram_counts"]


def test_help_lists_every_option(cli):
    res = cli("ngram-rank", "--help")
    assert res.code == 0
    for opt in ("--tokenizer", "--data", "--n", "--min-count", "--max-contexts", "--context-selection", "--row-weight",
                "--top-k", "--max-tokens", "--method", "--max-dense", "--device", "--output", "--force"):
        assert opt in res.stdout, opt
    top = cli("--help")
    assert "ngram-rank" in top.stdout and "Data dimension" in top.stdout


def test_past_the_dense_limit_every_dim_has_an_estimate_and_interval(cli, tmp_path):
    """--max-dense under the largest block: the CLI prints estimated dims with intervals, the record holds them
    (dims_estimate, tail_curve), they agree with an exact dense run of the same counts, and ngram.csv / the
    figure are written (issue 15 item 1)."""
    import sys
    from pathlib import Path

    import numpy as np
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lmsat.measure.ngram import NGramCounts, next_token_matrix
    from lmsat.measure.sparse_spectrum import sparse_singular_values
    from lmsat.measure.spectrum import dimension_for_w_error
    from lmsat.store import Store

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_ngram_scale import text_like_stream

    vocab = 3_000
    ids = text_like_stream(200_000, vocab, classes=3_000, chains=400)
    (tmp_path / "corpus").mkdir()
    words = [f"w{i}" for i in ids]
    (tmp_path / "corpus" / "a.txt").write_text("\n".join(" ".join(words[i : i + 50]) for i in range(0, len(words), 50)))
    tok = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(vocab)} | {"[UNK]": vocab}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    out = tmp_path / "run"
    res = cli("ngram-rank", "-t", tmp_path / "tok", "-d", tmp_path / "corpus", "--max-dense", 200, "-o", out)
    assert res.code == 0, res.stderr
    assert "estimated" in res.stdout, res.stdout
    (rec,) = Store(out).records("ngram")
    assert not rec.results["complete"] and "tail_curve" in rec.load_arrays()
    (counts,) = Store(out).records("ngram_counts")
    exact = sparse_singular_values(next_token_matrix(NGramCounts.from_arrays(counts.load_arrays())).matrix, device="cpu")
    assert exact.complete
    for t, est in rec.results["dims_estimate"].items():
        d = dimension_for_w_error(exact.singular_values, float(t), exact.frobenius_norm)
        assert est["lo"] <= d <= est["hi"], (t, est, d)
    assert (out / "ngram.csv").exists() and (out / "figures" / "ngram_w_error.png").stat().st_size > 0
