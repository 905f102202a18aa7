"""`lmsat anisotropy` and `lmsat head` end to end: tiny random models, the real SmolLM2, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from tests.conftest import files_under
from transformers import AutoModelForCausalLM

from lmsat.measure.anisotropy import anisotropy_pairwise
from lmsat.store import Store


def test_anisotropy_and_head_on_tiny_neox_and_llama(cli, tiny_neox, tiny_llama, brown_dir, tmp_path):
    out = tmp_path / "run"
    r = cli("anisotropy", tiny_neox, tiny_llama, "--data", brown_dir, "-n", 256, "--seq-len", 32, "-o", out)
    assert r.code == 0, r.stderr
    table = pd.read_csv(out / "anisotropy.csv")
    assert len(table) == 2 * 3  # two models x (embeddings + 2 layers)
    assert set(table["depth"]) == {0.0, 0.5, 1.0}
    assert (out / "figures" / "anisotropy.png").stat().st_size > 1000
    recs = Store(out).records("anisotropy")
    assert {r.inputs["model_type"] for r in recs} == {"gpt_neox", "llama"}
    assert len({r.inputs["token_sample"]["hash"] for r in recs}) == 1  # one sample for a shared tokenizer
    assert all(r.inputs["lmsat_version"] and r.schema == "lmsat.anisotropy/1" for r in recs)

    r = cli("head", tiny_neox, tiny_llama, "-o", out)
    assert r.code == 0, r.stderr
    for rec in Store(out).records("head"):
        model = AutoModelForCausalLM.from_pretrained(rec.inputs["model"])
        w = model.get_output_embeddings().weight.detach().double().numpy()
        np.testing.assert_allclose(rec.load_arrays()["singular_values"], np.linalg.svd(w, compute_uv=False), rtol=1e-9)
        # the stored W-error curve: |W - W_k|_F / |W|_F of the truncated SVD, k = 0..d
        u, sv, vt = np.linalg.svd(w, full_matrices=False)
        direct = [np.linalg.norm(w - (u[:, :k] * sv[:k]) @ vt[:k]) / np.linalg.norm(w) for k in range(len(sv) + 1)]
        np.testing.assert_allclose(rec.load_arrays()["w_error"], direct, atol=1e-9)
        assert rec.results["head"]["tied"] == (rec.inputs["model_type"] == "llama")
    assert (out / "figures" / "head_spectrum.png").exists() and (out / "figures" / "head_w_error.png").exists()


def test_rerun_skips_finished_models(cli, tiny_neox, brown_dir, tmp_path):
    out = tmp_path / "run"
    assert cli("anisotropy", tiny_neox, "-d", brown_dir, "-n", 128, "--seq-len", 32, "-o", out).code == 0
    first = (out / "anisotropy").glob("*.json").__next__().read_text()
    assert cli("anisotropy", tiny_neox, "-d", brown_dir, "-n", 128, "--seq-len", 32, "-o", out).code == 0
    assert next((out / "anisotropy").glob("*.json")).read_text() == first  # not rewritten


@pytest.mark.real
def test_real_smollm2_gguf_anisotropy_and_head_match_independent_computation(cli, smollm2_gguf, smollm2_hf, brown_dir, tmp_path):
    folder, gguf = smollm2_gguf
    out = tmp_path / "smol"
    r = cli("anisotropy", folder / gguf, "-d", brown_dir, "-n", 256, "--seq-len", 64, "-b", 4, "-o", out)
    assert r.code == 0, r.stderr
    rec = Store(out).records("anisotropy")[0]
    assert len(rec.results["layers"]) == 31  # embeddings + 30 layers

    # Independent: plain transformers forward (the same weights, de-quantized once and saved as
    # safetensors by lmsat.assets) on the stored token sample, pairwise cosine per layer.
    ids = np.load(out / "tokens" / f"{rec.inputs['token_sample']['hash']}.npz")["ids"]
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf)
    with torch.no_grad():
        outputs = model(torch.from_numpy(ids), output_hidden_states=True, labels=torch.from_numpy(ids))
    for layer in (0, 15, 29, 30):
        h = outputs.hidden_states[layer].reshape(-1, 576)
        assert rec.results["layers"][layer]["anisotropy"] == pytest.approx(anisotropy_pairwise(h), abs=1e-5)
    assert rec.results["cross_entropy"] == pytest.approx(float(outputs.loss), rel=1e-4)

    r = cli("head", folder / gguf, "-o", out)
    assert r.code == 0, r.stderr
    assert "singular entropy, p = s^2" in r.stdout and "effective rank" in r.stdout
    head = Store(out).records("head")[0]
    w = model.get_output_embeddings().weight.detach().double().numpy()
    s = np.linalg.svd(w, compute_uv=False)
    p = s**2 / (s**2).sum()
    assert head.results["singular_entropy"] == pytest.approx(np.log(576) + float(np.sum(p * np.log(p))), abs=1e-8)
    q = s / s.sum()
    assert head.results["singular_entropy_linear"] == pytest.approx(np.log(576) + float(np.sum(q * np.log(q))), abs=1e-8)
    assert head.results["effective_rank"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-8)
    assert head.results["head"]["tied"] is True
    assert f"{head.results['singular_entropy']:.4f}" in r.stdout


# --- bad input: one line, exit 2, no traceback, no files -------------------------------------


def _assert_clean_failure(r, out, pattern):
    assert r.code == 2, (r.code, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lmsat: error:"), r.stderr
    assert pattern in lines[0]
    assert "Traceback" not in r.stderr
    assert files_under(out) == []


def test_missing_model_path(cli, brown_dir, tmp_path):
    out = tmp_path / "out"
    _assert_clean_failure(cli("head", tmp_path / "no-such-model", "-o", out), out, "does not exist")


def test_hub_id_without_network(cli, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    out = tmp_path / "out"
    _assert_clean_failure(cli("head", "EleutherAI/pythia-70m", "--revision", "step1000", "-o", out), out, "hub")


def test_non_causal_model_is_refused_by_head(cli, minilm_dir, tmp_path):
    out = tmp_path / "out"
    _assert_clean_failure(cli("head", minilm_dir, "-o", out), out, "causal")


def test_encoder_anisotropy_works(cli, minilm_dir, brown_dir, tmp_path):
    out = tmp_path / "out"
    r = cli("anisotropy", minilm_dir, "-d", brown_dir, "-n", 128, "--seq-len", 32, "-o", out)
    assert r.code == 0, r.stderr
    rec = Store(out).records("anisotropy")[0]
    assert rec.results["is_causal"] is False and len(rec.results["layers"]) == 7


def test_missing_and_empty_corpus(cli, tiny_neox, tmp_path):
    out = tmp_path / "out"
    _assert_clean_failure(cli("anisotropy", tiny_neox, "-d", tmp_path / "missing", "-o", out), out, "does not exist")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("   \n\n")
    _assert_clean_failure(cli("anisotropy", tiny_neox, "-d", tmp_path / "empty", "-o", out), out, "no text")


def test_fewer_tokens_than_one_sequence(cli, tiny_neox, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "c.txt").write_text("a short text")
    _assert_clean_failure(cli("anisotropy", tiny_neox, "-d", tmp_path / "c.txt", "--seq-len", 256, "-o", out), out, "fewer than one sequence")


def test_unreadable_gguf(cli, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "broken.gguf").write_bytes(b"GGUF" + b"\x00" * 64)
    out = tmp_path / "out"
    _assert_clean_failure(cli("head", tmp_path / "m" / "broken.gguf", "-o", out), out, "GGUF")


def test_cli_subprocess_exit_code_and_single_line(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "lmsat", "head", str(tmp_path / "none"), "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    assert not out.exists()


def test_records_are_json_with_schema_and_inputs(cli, tiny_neox, tmp_path):
    out = tmp_path / "run"
    assert cli("head", tiny_neox, "-o", out, "--dtype", "bfloat16").code == 0
    raw = json.loads(next((out / "head").glob("*.json")).read_text())
    assert raw["schema"] == "lmsat.head/2"  # 2: the W-error curve is stored with the spectrum
    assert raw["inputs"]["dtype"] == "bfloat16" and raw["inputs"]["device"] == "cpu"
    assert raw["arrays"] == ["singular_values", "w_error"]
