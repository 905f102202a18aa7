"""Rank probe on the real SmolLM2-135M (d = 576, V = 49152) and Brown text, with a small budget.

Budget: 24 training windows + 4 held-out windows of 128 tokens (3584 tokens through
the model), ranks 8 and 32 and the full-rank head, learning rates {3e-3, 3e-2}, 8
steps of 2 windows for the search and for the final run (under one epoch).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmsat.experiments import rank_probe as rp
from lmsat.loading.corpus import CorpusSpec
from lmsat.loading.models import ModelSpec
from lmsat.loading.tokens import load_token_sample
from lmsat.store import Store

pytestmark = [pytest.mark.real, pytest.mark.slow]

SETTINGS = rp.ProbeSettings(
    train_tokens=3072, eval_tokens=512, seq_len=128, lr_grid=(3e-3, 3e-2), search_steps=8, steps=8, batch_tokens=254, forward_batch=4,
    init="gaussian",  # the study's recipe; the SVD-initialised default is checked in docs/rank-probe.md's run
)


@pytest.fixture(scope="module")
def real_run(smollm2_hf, brown_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_probe")
    rp.run_rank_probe([ModelSpec(str(smollm2_hf), device="cpu")], CorpusSpec(str(brown_dir)), out, [8, 32], SETTINGS)
    store = Store(out)
    finals = {}
    for kind in (rp.KIND, rp.REF_KIND):
        for rec in store.records(kind):
            if rec.results.get("stage") == "final" or rec.results.get("head") == "own":
                finals["own" if rec.results["head"] == "own" else rec.results["rank"] if rec.results["head"] == "low-rank" else "full"] = rec
    return out, finals


def _paired(a, b) -> tuple[float, float]:
    """Mean and standard error of the per-token loss difference a - b (same held-out tokens)."""
    d = a.load_arrays()["eval_nll"].astype(np.float64) - b.load_arrays()["eval_nll"].astype(np.float64)
    return float(d.mean()), float(d.std() / math.sqrt(len(d)))


def test_own_head_loss_equals_the_models_own_cross_entropy(real_run, smollm2_hf):
    """Independent computation: a plain transformers forward with labels on the held-out windows."""
    from transformers import AutoModelForCausalLM

    out, finals = real_run
    own = finals["own"]
    sample = load_token_sample(out / "tokens" / f"{own.inputs['token_sample']['hash']}.npz")
    _, held_out = rp.split_windows(sample.ids.shape[0], SETTINGS.n_eval_seqs, SETTINGS.seed)
    ids = torch.from_numpy(sample.ids[held_out])
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32).eval()
    with torch.no_grad():
        out_hf = model(input_ids=ids, labels=ids)
    assert own.results["eval_tokens"] == ids.shape[0] * (ids.shape[1] - 1) == 508
    assert own.results["loss"] == pytest.approx(float(out_hf.loss), abs=2e-4)
    top1 = (out_hf.logits[:, :-1].argmax(-1) == ids[:, 1:]).float().mean()
    assert own.results["accuracy"] == pytest.approx(float(top1), abs=1e-6)
    # the cached float16 representations are what the head sees: W h reproduces the loss
    assert own.results["loss_from_features"] == pytest.approx(own.results["loss"], abs=5e-3)


def test_full_rank_head_is_no_worse_than_a_rank_8_head(real_run):
    _, finals = real_run
    diff, se = _paired(finals["full"], finals[8])
    assert diff <= 2 * se, (diff, se)


def test_loss_is_non_increasing_in_rank_within_noise(real_run):
    _, finals = real_run
    chain = [finals[8], finals[32], finals["full"]]
    for lower, higher in zip(chain, chain[1:]):
        diff, se = _paired(higher, lower)
        assert diff <= 2 * se, (higher.key, lower.key, diff, se)
    # all trained heads are far from the model's own head at this budget, but all learned something
    for rec in chain:
        assert finals["own"].results["loss"] < rec.results["loss"] < math.log(49152)


def test_w_error_of_the_real_head_decreases_with_rank(real_run):
    _, finals = real_run
    w8, w32 = finals[8].results["w_error"], finals[32].results["w_error"]
    s = finals["own"].load_arrays()["singular_values"]
    assert w8 == pytest.approx(math.sqrt((s[8:] ** 2).sum() / (s**2).sum()), rel=1e-9)
    assert 1 > w8 > w32 > 0 and finals["full"].results["w_error"] == 0.0
