"""`lmsat sweep` over tiny local checkpoint suites written here with real optimizer steps.

Each test checks stored numbers against an independent computation (a plain
forward pass and torch's cross-entropy, the O(n^2) anisotropy, numpy's SVD of the
head read straight from the safetensors file), or an exact answer (which
checkpoint is corrupt, NaN or a copy).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import files_under
from tests.contract import assert_user_error
from lmsat.store import record_name

SEQ_LEN = 32
TOKENS = 1024
STEPS = [0, 3, 6, 9, 12, 15]


# --- the tiny suite ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory, brown_dir) -> Path:
    """A word-level tokenizer (400 most frequent Brown words + [UNK], [EOS]) saved as an HF folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = " ".join(p.read_text() for p in sorted(brown_dir.glob("*.txt"))[:20]).split()
    vocab = {"[UNK]": 0, "[EOS]": 1}
    for w, _ in Counter(words).most_common(400):
        vocab[w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path_factory.mktemp("word_tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", eos_token="[EOS]").save_pretrained(folder)
    return folder


def write_suite(root: Path, tokenizer_dir: Path, brown_dir: Path) -> Path:
    """Two tiny GPT-NeoX models (d=16 and 32), 6 checkpoints each, 3 AdamW steps on Brown between checkpoints.

    tiny-a uses lmsat-trainer names (stepN), tiny-b the HF Trainer's (checkpoint-N);
    each model folder has train_config.json (tokens_per_step, n_params).
    """
    import torch
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = " ".join(p.read_text() for p in sorted(brown_dir.glob("*.txt"))[20:30])
    ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"][:20000])
    for name, d, layers, fmt in (("tiny-a", 16, 1, "step{}"), ("tiny-b", 32, 2, "checkpoint-{}")):
        torch.manual_seed(0)
        cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=d, num_hidden_layers=layers, num_attention_heads=4,
                            intermediate_size=2 * d, max_position_embeddings=128, tie_word_embeddings=False)
        model = GPTNeoXForCausalLM(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(1)
        for k, step in enumerate(STEPS):
            for _ in range(step - STEPS[k - 1] if k else 0):
                starts = torch.randint(0, len(ids) - 65, (8,), generator=gen)
                x = torch.stack([ids[s : s + 64] for s in starts])
                model(input_ids=x, labels=x).loss.backward()
                opt.step()
                opt.zero_grad()
            folder = root / name / fmt.format(step)
            model.save_pretrained(folder)
            tok.save_pretrained(folder)
        n = sum(p.numel() for p in model.parameters())
        (root / name / "train_config.json").write_text(json.dumps({"tokens_per_step": 512, "n_params": n}))
    return root


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory, word_tokenizer, brown_dir) -> Path:
    return write_suite(tmp_path_factory.mktemp("suite") / "fam", word_tokenizer, brown_dir)


def sweep_args(suite: Path, out: Path, brown_dir: Path, *extra: object) -> list[object]:
    return ["sweep", suite, "--data", brown_dir, "--tokens", TOKENS, "--seq-len", SEQ_LEN, "--device", "cpu", "-o", out, *extra]


def records(out: Path) -> dict[str, dict]:
    return {json.loads(p.read_text())["key"]: json.loads(p.read_text()) for p in sorted((out / "sweep").glob("*.json"))}


def expected_keys(suite: Path) -> set[str]:
    base = os.path.normpath(str(suite))
    return {f"{base}/tiny-a@step{s}" for s in STEPS} | {f"{base}/tiny-b@checkpoint-{s}" for s in STEPS}


# --- independent measurements -----------------------------------------------------------------


def independent_measures(folder: Path, ids: np.ndarray) -> dict[str, float | np.ndarray]:
    """Loss (torch cross_entropy), last-layer anisotropy (pairwise definition), head SVD (numpy, from the file)."""
    import torch
    import torch.nn.functional as F
    from safetensors.numpy import load_file
    from transformers import GPTNeoXForCausalLM

    from lmsat.measure.anisotropy import anisotropy_pairwise

    model = GPTNeoXForCausalLM.from_pretrained(folder).eval()
    x = torch.from_numpy(ids)
    with torch.no_grad():
        out = model(input_ids=x, output_hidden_states=True)
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1]).double()
    loss = float(F.cross_entropy(logits, x[:, 1:].reshape(-1)))
    last = out.hidden_states[-1].reshape(-1, out.hidden_states[-1].shape[-1])
    head = load_file(str(folder / "model.safetensors"))["embed_out.weight"].astype(np.float64)
    s = np.linalg.svd(head, compute_uv=False)
    p = s**2 / np.sum(s**2)
    return {"loss": loss, "anisotropy": anisotropy_pairwise(last), "s": s, "kl": math.log(len(s)) + float(np.sum(p * np.log(p)))}


def test_sweep_of_local_suite_stores_independently_checked_measurements(cli, tiny_suite, brown_dir, tmp_path):
    out = tmp_path / "run"
    res = cli(*sweep_args(tiny_suite, out, brown_dir))
    assert res.code == 0, res.stderr
    recs = records(out)
    assert set(recs) == expected_keys(tiny_suite)
    assert all(r["results"]["status"] == "ok" for r in recs.values())
    # one token sample shared by both models (same tokenizer), saved once
    hashes = {r["inputs"]["token_sample"]["hash"] for r in recs.values()}
    assert len(hashes) == 1 and len(list((out / "tokens").glob("*.npz"))) == 1
    ids = np.load(out / "tokens" / f"{hashes.pop()}.npz")["ids"]
    assert ids.shape == (TOKENS // SEQ_LEN, SEQ_LEN)
    # steps read from the folder names; tokens_per_step and n_params from train_config.json
    for key, r in recs.items():
        assert r["inputs"]["step"] == int(key.rsplit("@", 1)[1].replace("checkpoint-", "").replace("step", ""))
        assert r["inputs"]["source"] == "local" and r["inputs"]["tokens_per_step"] == 512
        cfg = json.loads((Path(r["inputs"]["path"]).parent / "train_config.json").read_text())
        assert r["results"]["n_params"] == cfg["n_params"]
    # weights really change between checkpoints: every hash differs, nothing flagged
    assert len({r["results"]["weights_hash"] for r in recs.values()}) == 12
    assert all(r["results"]["duplicate_of"] is None for r in recs.values())
    # numbers against independent computations, for one checkpoint of each model
    for key in (f"{os.path.normpath(str(tiny_suite))}/tiny-a@step9", f"{os.path.normpath(str(tiny_suite))}/tiny-b@checkpoint-15"):
        r = recs[key]
        ref = independent_measures(Path(r["inputs"]["path"]), ids)
        assert r["results"]["cross_entropy"] == pytest.approx(ref["loss"], rel=1e-5)
        assert r["results"]["last_layer_anisotropy"] == pytest.approx(ref["anisotropy"], abs=1e-5)
        s = np.load(out / "sweep" / f"{record_name(key)}.npz")["singular_values"]
        np.testing.assert_allclose(s, ref["s"], rtol=1e-6)
        assert r["results"]["singular_entropy"] == pytest.approx(ref["kl"], abs=1e-9)
        assert r["results"]["hidden_size"] == len(ref["s"])
    # derived views: per-checkpoint and per-model tables agree with the records; five figures
    sat = pd.read_csv(out / "saturation.csv")
    for model, group in pd.read_csv(out / "sweep.csv").groupby("model"):
        mine = {r["inputs"]["step"]: r["results"]["cross_entropy"] for r in recs.values() if r["inputs"]["model"] == model}
        best = min(mine, key=lambda s: (mine[s], s))
        row = sat[sat["model"] == model].iloc[0]
        assert row["best_step"] == best and row["final_step"] == max(mine)
        assert row["relative_rise"] == pytest.approx(mine[max(mine)] / mine[best] - 1, abs=1e-12)
        assert len(group) == 6
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == [
        "fig1a_loss_vs_step.png", "fig1b_loss_vs_compute.png", "fig3_loss_anisotropy.png",
        "fig4_spectrum_heatmap.png", "fig5_singular_entropy.png",
    ]
    assert len(list((out / "saturation").glob("*.json"))) == 2
    # a second run measures nothing and leaves every record as it was
    before = {p: p.stat().st_mtime_ns for p in (out / "sweep").glob("*.json")}
    again = cli(*sweep_args(tiny_suite, out, brown_dir))
    assert again.code == 0 and "skipped 12 already done" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (out / "sweep").glob("*.json")} == before


def comparable(rec: dict) -> tuple[dict, dict]:
    results = {k: v for k, v in rec["results"].items() if k != "wall_time_s"}
    return rec["inputs"], results


def assert_same_records(a: Path, b: Path) -> None:
    ra, rb = records(a), records(b)
    assert set(ra) == set(rb)
    for key in ra:
        ia, xa = comparable(ra[key])
        ib, xb = comparable(rb[key])
        assert ia == ib, key
        assert set(xa) == set(xb), key
        for name in xa:
            if isinstance(xa[name], float):
                assert xa[name] == pytest.approx(xb[name], rel=1e-5, abs=1e-7), (key, name)
            else:
                assert xa[name] == xb[name], (key, name)
        na = np.load(a / "sweep" / f"{record_name(key)}.npz")["singular_values"]
        nb = np.load(b / "sweep" / f"{record_name(key)}.npz")["singular_values"]
        np.testing.assert_allclose(na, nb, rtol=1e-6)


def test_sweep_killed_mid_run_resumes_to_the_records_of_an_uninterrupted_run(cli, tiny_suite, brown_dir, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert cli(*sweep_args(tiny_suite, whole, brown_dir, "--no-prefetch")).code == 0
    env = {**os.environ, "LMSAT_PROGRESS": "0", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "lmsat", *map(str, sweep_args(tiny_suite, killed, brown_dir))]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((killed / "sweep").glob("*.json"))) >= 3:
                break
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    done = len(list((killed / "sweep").glob("*.json")))
    assert 3 <= done < 12, f"the kill did not land mid-sweep ({done} records); stderr: {err.decode()[-500:]}"
    resumed = cli(*sweep_args(tiny_suite, killed, brown_dir))
    assert resumed.code == 0, resumed.stderr
    assert f"skipped {done} already done" in resumed.stdout
    assert_same_records(whole, killed)


def test_corrupt_nan_and_copied_checkpoints_are_recorded_and_the_sweep_completes(cli, tiny_suite, brown_dir, tmp_path):
    import torch
    from transformers import GPTNeoXForCausalLM

    suite = tmp_path / "fam"
    shutil.copytree(tiny_suite, suite)
    weights = suite / "tiny-b" / "checkpoint-6" / "model.safetensors"
    intact = weights.read_bytes()
    weights.write_bytes(intact[: len(intact) // 2])  # a download cut in half
    nan_dir = suite / "tiny-a" / "step9"
    model = GPTNeoXForCausalLM.from_pretrained(nan_dir)
    with torch.no_grad():
        model.gpt_neox.embed_in.weight[5].fill_(float("nan"))
    model.save_pretrained(nan_dir)
    shutil.copytree(suite / "tiny-a" / "step15", suite / "tiny-a" / "step18")  # a revision serving another's weights
    base = os.path.normpath(str(suite))

    out = tmp_path / "run"
    res = cli(*sweep_args(suite, out, brown_dir))
    assert res.code == 0, res.stderr
    recs = records(out)
    assert len(recs) == 13
    status = {k: r["results"]["status"] for k, r in recs.items()}
    assert {k for k, s in status.items() if s == "failed"} == {f"{base}/tiny-b@checkpoint-6", f"{base}/tiny-a@step9"}
    assert "deserializing header" in recs[f"{base}/tiny-b@checkpoint-6"]["results"]["error"]
    assert "not finite" in recs[f"{base}/tiny-a@step9"]["results"]["error"]
    assert not (out / "sweep" / f"{record_name(base + '/tiny-a@step9')}.npz").exists()
    dup = {k: r["results"]["duplicate_of"] for k, r in recs.items() if r["results"]["duplicate_of"]}
    assert dup == {f"{base}/tiny-a@step18": f"{base}/tiny-a@step15"}
    assert recs[f"{base}/tiny-a@step18"]["results"]["weights_hash"] == recs[f"{base}/tiny-a@step15"]["results"]["weights_hash"]
    assert "duplicate weights" in res.stdout and "failed: " in res.stdout
    sat = pd.read_csv(out / "saturation.csv").set_index("name")
    assert sat.loc["tiny-a", "n_failed"] == 1 and sat.loc["tiny-a", "n_duplicates"] == 1
    assert sat.loc["tiny-b", "n_failed"] == 1 and sat.loc["tiny-b", "n_duplicates"] == 0
    assert sat.loc["tiny-a", "final_step"] == 15  # the copy at step 18 is not a point of the curve

    # a plain re-run keeps failures as they are; --retry-failed measures them again
    created = {k: r["created"] for k, r in recs.items()}
    assert cli(*sweep_args(suite, out, brown_dir)).code == 0
    assert {k: r["created"] for k, r in records(out).items()} == created
    weights.write_bytes(intact)
    time.sleep(1.1)  # records carry a creation time in whole seconds
    assert cli(*sweep_args(suite, out, brown_dir, "--retry-failed")).code == 0
    after = records(out)
    assert after[f"{base}/tiny-b@checkpoint-6"]["results"]["status"] == "ok"
    assert after[f"{base}/tiny-a@step9"]["results"]["status"] == "failed"
    assert {k for k in after if after[k]["created"] != created[k]} == {f"{base}/tiny-b@checkpoint-6", f"{base}/tiny-a@step9"}
    original = records_of_clean(tiny_suite, tmp_path, cli, brown_dir)
    assert after[f"{base}/tiny-b@checkpoint-6"]["results"]["cross_entropy"] == pytest.approx(
        original[f"{os.path.normpath(str(tiny_suite))}/tiny-b@checkpoint-6"]["results"]["cross_entropy"], rel=1e-6
    )


def records_of_clean(tiny_suite: Path, tmp_path: Path, cli, brown_dir: Path) -> dict[str, dict]:
    out = tmp_path / "clean"
    assert cli(*sweep_args(tiny_suite, out, brown_dir, "--revisions", "step6")).code == 0
    return records(out)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--suite", "pythia", "--sizes", "15m"], "has no size '15m'"),
        (["--suite", "pythya"], "unknown suite 'pythya'"),
        (["--revisions", "alll"], "unknown revision or revision set 'alll'"),
        (["--revisions", "every:0"], "every:N needs a positive whole number"),
        (["--revisions", "step7"], "no checkpoint at step 7"),
        (["--tokens-per-step", "tiny-z=5"], "--tokens-per-step names 'tiny-z'"),
        (["--params", "tiny-a=-3"], "positive whole number"),
        (["--seq-len", "4096"], "longer than the context"),
        (["--layers", "some"], "--layers must be one of"),
    ],
)
def test_bad_sweep_input_exits_2_with_one_line_and_writes_nothing(cli, tiny_suite, brown_dir, tmp_path, extra, message):
    out = tmp_path / "run"
    res = cli(*sweep_args(tiny_suite, out, brown_dir, *extra))
    assert_user_error(res, out, message)


def test_sweep_of_a_folder_without_checkpoints_and_analysis_of_an_empty_run_exit_2(cli, tiny_suite, brown_dir, tmp_path):
    single = tiny_suite / "tiny-a" / "step0"
    res = cli(*sweep_args(single, tmp_path / "run", brown_dir))
    assert res.code == 2 and "single model folder" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "nothing").mkdir()  # an empty run directory (a missing one is its own error)
    for cmd in ("saturation", "scaling-fit"):
        res = cli(cmd, tmp_path / "nothing")
        assert res.code == 2 and "holds no sweep records" in res.stderr
    assert files_under(tmp_path / "run") == [] and files_under(tmp_path / "nothing") == []


@pytest.mark.real
def test_sweep_of_real_smollm2_checkpoint_matches_a_plain_forward_pass(cli, smollm2_hf, brown_dir, tmp_path):
    """The real SmolLM2-135M (float32 copy of the GGUF file) as a one-checkpoint suite."""
    import torch
    from transformers import AutoModelForCausalLM

    suite = tmp_path / "smol"
    suite.mkdir()
    (suite / "step2000").symlink_to(smollm2_hf, target_is_directory=True)
    out = tmp_path / "run"
    res = cli("sweep", suite, "--data", brown_dir, "--tokens", 256, "--seq-len", 128, "--device", "cpu", "-o", out)
    assert res.code == 0, res.stderr
    (rec,) = records(out).values()
    r = rec["results"]
    ids = np.load(out / "tokens" / f"{rec['inputs']['token_sample']['hash']}.npz")["ids"]
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf).eval()
    with torch.no_grad():
        x = torch.from_numpy(ids)
        ref_loss = float(model(input_ids=x, labels=x).loss)  # HF's own shifted mean cross-entropy
        s = torch.linalg.svdvals(model.get_input_embeddings().weight.double()).numpy()  # tied head
    assert r["status"] == "ok" and r["hidden_size"] == 576 and r["n_params"] == sum(p.numel() for p in model.parameters())
    assert r["cross_entropy"] == pytest.approx(ref_loss, rel=1e-4)
    assert 2.0 < r["cross_entropy"] < 6.0  # a trained model on English text, not a random one (ln V = 10.8)
    stored = np.load(next((out / "sweep").glob("*.npz")))["singular_values"]
    np.testing.assert_allclose(stored, s, rtol=1e-6)
    p = s**2 / np.sum(s**2)
    assert r["effective_rank"] == pytest.approx(float(np.exp(-np.sum(p * np.log(p)))), rel=1e-9)
    assert 0.0 < r["last_layer_anisotropy"] < 1.0


def test_pythia_suite_sweep_through_the_hub_code_path_from_a_local_hub_cache(cli, tiny_suite, brown_dir, tmp_path, monkeypatch):
    """`--suite pythia` loads by hub id and revision exactly as on a machine with hub access, here from a
    Hugging Face cache laid out on disk (offline). Four of the eleven `log` revisions are cached, like
    published branches that are missing: the other seven are recorded as failed and the sweep completes."""
    from huggingface_hub import constants

    from tests.loading.test_checkpoints import fake_hub_cache

    cache = tmp_path / "hub"
    branches = {"step0": "step0", "step1": "step3", "step2": "step6", "step4": "step9", "main": "step15"}
    files = {
        branch: {p.name: p.read_bytes() for p in (tiny_suite / "tiny-a" / local).iterdir()}
        for branch, local in branches.items()
    }
    commits = fake_hub_cache(cache, "EleutherAI/pythia-14m", files)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # As if step1, step2 and step4 were downloaded by this sweep (main and step0 were cached before it)
    import lmsat.experiments.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "hub_cached_commits", lambda repo: {commits["main"], commits["step0"]})

    out = tmp_path / "run"
    res = cli("sweep", "--suite", "pythia", "--sizes", "14m", "--revisions", "log", "--data", brown_dir,
              "--tokens", TOKENS, "--seq-len", SEQ_LEN, "--device", "cpu", "-o", out)
    assert res.code == 0, res.stderr
    recs = records(out)
    assert set(recs) == {f"EleutherAI/pythia-14m@step{s}" for s in (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)}
    ok = {k for k, r in recs.items() if r["results"]["status"] == "ok"}
    assert ok == {f"EleutherAI/pythia-14m@{b}" for b in ("step0", "step1", "step2", "step4")}
    assert all(recs[k]["results"]["error"] for k in set(recs) - ok)
    for r in recs.values():
        assert r["inputs"]["source"] == "hub" and r["inputs"]["path"] is None
        assert r["inputs"]["tokens_per_step"] == 2_097_152  # Pythia's batch, known without a config
    # the same weights give the same numbers as the local sweep of those folders
    local = records_of_local(tiny_suite, tmp_path, cli, brown_dir)
    for branch in ("step0", "step1", "step2", "step4"):
        hub_rec = recs[f"EleutherAI/pythia-14m@{branch}"]["results"]
        local_rec = local[f"{os.path.normpath(str(tiny_suite))}/tiny-a@{branches[branch]}"]["results"]
        assert hub_rec["weights_hash"] == local_rec["weights_hash"]
        assert hub_rec["cross_entropy"] == pytest.approx(local_rec["cross_entropy"], rel=1e-6)
    # each revision the sweep downloaded is deleted once measured; what was cached before is kept
    from lmsat.loading.checkpoints import hub_cached_commits

    assert hub_cached_commits("EleutherAI/pythia-14m") == {commits["main"], commits["step0"]}


def records_of_local(tiny_suite: Path, tmp_path: Path, cli, brown_dir: Path) -> dict[str, dict]:
    out = tmp_path / "local"
    res = cli(*sweep_args(tiny_suite / "tiny-a", out, brown_dir, "--revisions", "0,3,6,9"))
    assert res.code == 0, res.stderr
    return records(out)
