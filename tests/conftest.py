"""Shared fixtures: real assets (fetched by lmsat's own fetcher), tiny random models, and a CLI runner."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("LMSAT_PROGRESS", "0")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """Run ``lmsat ARGS`` in-process; returns exit code, stdout and stderr."""
    from lmsat.cli import main

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


# --- real assets (shared/ASSETS.md), fetched once into $LMSAT_CACHE -------------------------


@pytest.fixture(scope="session")
def smollm2_gguf() -> tuple[Path, str]:
    """(folder, gguf file name) of the real SmolLM2-135M-Instruct GGUF model."""
    from lmsat import assets

    return assets.smollm2_path(), assets.SMOLLM2_GGUF


@pytest.fixture(scope="session")
def smollm2_hf() -> Path:
    """SmolLM2-135M-Instruct converted once to a plain float32 safetensors folder."""
    from lmsat import assets

    return assets.smollm2_hf_path()


@pytest.fixture(scope="session")
def brown_dir() -> Path:
    from lmsat import assets

    return assets.brown_path()


@pytest.fixture(scope="session")
def kjv_dir() -> Path:
    from lmsat import assets

    return assets.kjv_path()


@pytest.fixture(scope="session")
def gpt2_bpe() -> Path:
    from lmsat import assets

    return assets.gpt2_bpe_path()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from lmsat import assets

    return assets.minilm_path()


# --- tiny random-weight models, built from configs (no download) ----------------------------


def _save_tiny(kind: str, folder: Path, tokenizer_dir: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    import torch
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                  intermediate_size=2 * hidden, max_position_embeddings=512)
    if kind == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**common, tie_word_embeddings=False))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, num_key_value_heads=4, tie_word_embeddings=True))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_neox(tmp_path_factory, smollm2_hf) -> Path:
    """A random GPT-NeoX (d=32, 2 layers, untied head) with SmolLM2's tokenizer, as an HF folder."""
    return _save_tiny("gpt_neox", tmp_path_factory.mktemp("tiny_neox"), smollm2_hf)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smollm2_hf) -> Path:
    """A random Llama (d=32, 2 layers, tied head) with SmolLM2's tokenizer, as an HF folder."""
    return _save_tiny("llama", tmp_path_factory.mktemp("tiny_llama"), smollm2_hf)


def files_under(path: Path) -> list[Path]:
    """Every file below ``path`` (empty if it does not exist): for 'no partial results' checks."""
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else []


@pytest.fixture(scope="module")
def ray_address():
    """One real local Ray instance (2 CPUs) per test module: its GCS address (ray.init takes ~10 s)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
