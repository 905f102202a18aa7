"""`lmsat synth`: the written corpus, tokenizer and truth record, checked against independent computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmsat.experiments.synth import language_record
from lmsat.synth.generator import LanguageSpec, contexts_of_chains, generate, make_language

from tests.conftest import files_under

SMALL = ["--vocab", 16, "--contexts", 16, "--rank", 4, "--order", 2, "-n", 20_000, "--heldout-tokens", 4096, "--doc-tokens", 32]


def _spec_of(record) -> LanguageSpec:
    keys = ("family", "vocab", "contexts", "rank", "order", "temperature", "concentration", "mix_concentration", "seed")
    defaults = LanguageSpec()
    return LanguageSpec(**{k: (record.inputs[k] if record.inputs[k] is not None else getattr(defaults, k)) for k in keys})


def _read_chains(folder: Path, vocab: int) -> list[np.ndarray]:
    """Independent reader: word 'wI' -> I, one chain per file."""
    out = []
    for path in sorted(folder.glob("*.txt")):
        words = path.read_text().split()
        assert all(w[0] == "w" and 0 <= int(w[1:]) < vocab for w in words)
        out.append(np.array([int(w[1:]) for w in words]))
    return out


@pytest.fixture(scope="module")
def small_language(tmp_path_factory) -> Path:
    from lmsat.cli import main

    out = tmp_path_factory.mktemp("synth") / "lang"
    try:
        main(["synth", "-o", str(out), *map(str, SMALL)])
    except SystemExit as exc:  # typer exits 0 on success
        assert exc.code in (0, None)
    return out


def test_synth_writes_corpus_tokenizer_and_record(small_language: Path) -> None:
    rec = language_record(small_language)
    assert rec is not None and rec.schema == "lmsat.synth/1"
    assert rec.results["n_tokens"] == 20_000 and rec.results["heldout_tokens"] == 4096
    lines = (small_language / "corpus" / "part-00000.txt").read_text().splitlines()
    assert all(len(line.split()) == 32 for line in lines)
    assert (small_language / "tokenizer" / "tokenizer.json").is_file()
    assert (small_language / "figures" / "true_spectra.png").stat().st_size > 1000
    assert not list(small_language.glob(".synth*"))


def test_tokenising_the_text_returns_the_generated_ids(small_language: Path) -> None:
    from transformers import AutoTokenizer

    from lmsat.loading.tokenizers import load_tokenizer

    rec = language_record(small_language)
    lang = make_language(_spec_of(rec))
    expected = generate(lang, rec.results["n_tokens"], chain_tokens=rec.inputs["chain_tokens"])
    texts = [p.read_text() for p in sorted((small_language / "corpus").glob("*.txt"))]
    tok = load_tokenizer(str(small_language / "tokenizer"))
    assert tok.vocab_size == 17 and tok.eos_id == 16
    ids = np.concatenate([np.array(x) for x in tok.encode_batch(texts)])
    np.testing.assert_array_equal(ids, expected.tokens)
    hf = AutoTokenizer.from_pretrained(small_language / "tokenizer")
    assert hf.decode(hf("w3 w15 w0", add_special_tokens=False)["input_ids"]) == "w3 w15 w0"
    assert hf.convert_tokens_to_ids("<eos>") == 16


def test_recorded_entropies_match_a_recomputation_from_the_text(small_language: Path) -> None:
    rec = language_record(small_language)
    lang = make_language(_spec_of(rec))
    for folder, key in (("corpus", "true_entropy"), ("heldout", "heldout_true_entropy")):
        nll = []
        for chain in _read_chains(small_language / folder, 16):
            ctx = contexts_of_chains(lang, chain[None, :])[0]
            nll.append(-np.log(lang.probs[ctx, chain]))
        assert rec.results[key] == pytest.approx(float(np.concatenate(nll).mean()), abs=1e-12)
    arrays = rec.load_arrays()
    # stored matrices and spectra agree with numpy, and the numerical ranks are R / full
    np.testing.assert_allclose(arrays["probs"], lang.probs, atol=0)
    np.testing.assert_allclose(arrays["singular_values_probs"], np.linalg.svd(lang.probs, compute_uv=False), rtol=1e-10, atol=1e-13)
    assert rec.results["numerical_rank_logits"] == np.linalg.matrix_rank(arrays["logits"]) == 4
    assert rec.results["numerical_rank_probs"] == np.linalg.matrix_rank(arrays["probs"]) == 16
    pi = arrays["stationary_context_probs"]
    assert rec.results["expected_entropy"] == pytest.approx(float(pi @ arrays["context_entropy"]), abs=1e-12)
    assert rec.results["expected_entropy_weighting"] == "stationary"
    gaps = arrays["svd_truncation_gap"]
    assert gaps[0] == pytest.approx(rec.results["uniform_entropy"] - rec.results["expected_entropy"], abs=1e-12)
    assert gaps[4] < 1e-12 < gaps[3]  # a rank-4 head is exact for a rank-4 logit language


def _empirical_matrix(folder: Path, vocab: int, n_files: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows: observed previous token (the k = 1 context); row = empirical next-token distribution."""
    counts = np.zeros((vocab, vocab))
    for chain in _read_chains(folder, vocab)[:n_files]:
        np.add.at(counts, (chain[:-1], chain[1:]), 1)
    seen = counts.sum(axis=1) > 0
    return counts[seen] / counts[seen].sum(axis=1, keepdims=True), counts[seen].sum(axis=1)


def _w_error(m: np.ndarray, d: int) -> float:
    s = np.linalg.svd(m, compute_uv=False)
    return float(np.sqrt((s[d:] ** 2).sum() / (s**2).sum()))


def test_ngram_svd_of_a_low_rank_probs_corpus_recovers_its_rank(tmp_path: Path, cli) -> None:
    common = ["--vocab", 32, "--contexts", 32, "--rank", 4, "-n", 1_048_576, "--heldout-tokens", 64, "--seed", 4]
    smooth = ["--concentration", 1.0, "--mix-concentration", 1.0]  # every context visited often
    assert cli("synth", "--family", "low-rank-probs", "-o", tmp_path / "probs", *common, *smooth).code == 0
    assert cli("synth", "--family", "low-rank-logits", "-o", tmp_path / "logits", *common).code == 0
    p_hat, n_rows = _empirical_matrix(tmp_path / "probs" / "corpus", 32)
    # Sampling noise alone: E|P_hat - P|_F^2 = sum_c (1 - |p_c|^2) / n_c; W-error(R) must sit at that floor.
    noise = np.sqrt(((1 - (p_hat**2).sum(axis=1)) / n_rows).sum()) / np.linalg.norm(p_hat)
    assert _w_error(p_hat, 4) < 1.2 * noise < 0.04
    assert _w_error(p_hat, 3) > 3 * _w_error(p_hat, 4)
    # ... and goes to 0 with more text: 1/16 of the chains leaves about 4x the error.
    p_part, _ = _empirical_matrix(tmp_path / "probs" / "corpus", 32, n_files=2)
    assert _w_error(p_part, 4) > 2.5 * _w_error(p_hat, 4)
    # The same rank in the logits leaves P itself far from rank 4.
    q_hat, _ = _empirical_matrix(tmp_path / "logits" / "corpus", 32)
    assert _w_error(q_hat, 4) > 0.2


def _language_json(run: Path) -> Path:
    """The stored 'synth' record file of the language (its name is derived from the key by the store)."""
    from lmsat.store import Store
    from lmsat.synth.truth import KEY, KIND

    return Store(run).record_path(KIND, KEY)


def test_rerun_is_skipped_and_a_different_language_is_refused(small_language: Path, cli) -> None:
    before = _language_json(small_language).read_text()
    again = cli("synth", "-o", small_language, *SMALL)
    assert again.code == 0
    assert _language_json(small_language).read_text() == before
    other = cli("synth", "-o", small_language, *SMALL[:-2], "--doc-tokens", 16)
    assert other.code == 2 and "already holds a different synthetic language" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    assert json.loads(_language_json(small_language).read_text())["inputs"]["doc_tokens"] == 32


@pytest.mark.parametrize(
    "args, message",
    [
        (["--vocab", 16, "--contexts", 8, "--rank", 9], "--rank 9 is impossible for a 8 x 16 matrix"),
        (["--vocab", 4, "--contexts", 20, "--rank", 2], "--contexts 20 exceeds the 4 possible 1-grams"),
        (["--family", "low-rank-probs", "--temperature", 2], "--temperature applies to --family low-rank-logits"),
        (["--family", "flat"], "--family must be one of"),
        (["--vocab", 16, "--contexts", 8, "--rank", 2, "-n", 0], "--tokens must be >= 1 (got 0)"),
    ],
)
def test_bad_synth_inputs_exit_2_with_one_line_and_no_files(tmp_path: Path, cli, args: list, message: str) -> None:
    out = tmp_path / "lang"
    res = cli("synth", "-o", out, *args)
    assert res.code == 2
    assert message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert files_under(out) == []


def test_an_interrupted_synth_is_redone_on_the_next_run(tmp_path: Path, cli) -> None:
    """A kill after the text moved into place but before the record: the marker makes the re-run start over."""
    out = tmp_path / "lang"
    args = ["--vocab", 8, "--contexts", 8, "--rank", 2, "-n", 2000, "--heldout-tokens", 256]
    assert cli("synth", "-o", out, *args).code == 0
    good = (out / "corpus" / "part-00000.txt").read_text()
    _language_json(out).unlink()  # as if killed before the record was written
    (out / ".synth-incomplete").write_text("")
    (out / "corpus" / "part-00000.txt").write_text("w0 w0\n")  # a torn file
    (out / ".synth-staging-12345").mkdir()
    assert cli("synth", "-o", out, *args).code == 0
    assert (out / "corpus" / "part-00000.txt").read_text() == good
    assert not (out / ".synth-incomplete").exists() and not list(out.glob(".synth-staging-*"))
    # without the marker, folders lmsat did not write are never deleted
    other = tmp_path / "other"
    (other / "corpus").mkdir(parents=True)
    res = cli("synth", "-o", other, *args)
    assert res.code == 2 and "that lmsat synth did not write" in res.stderr
    assert files_under(other) == []
