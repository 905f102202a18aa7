"""`lmsat train`: schedules, learning, checkpoints that plain transformers loads, and the bottleneck ordering."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lmsat.store import Store
from lmsat.synth.truth import language_record
from lmsat.training.train import TrainConfig, batch_indices, checkpoint_steps, lr_at, read_metrics

from tests.conftest import files_under

# A tiny low-rank-logits language: V = C = 64, R = 16, entropy ~2.66 nats (ln 64 = 4.16).
LANGUAGE = ["--vocab", 64, "--contexts", 64, "--rank", 16, "--temperature", 0.5, "-n", 160_000, "--heldout-tokens", 4096]
TRAIN = ["--layers", 1, "--heads", 2, "--steps", 300, "--batch-size", 16, "--lr", 3e-3, "--warmup", 30,
         "--checkpoint-every", 100, "--eval-tokens", 4096, "--device", "cpu"]


def test_checkpoint_schedule_is_log_spaced_then_regular() -> None:
    assert checkpoint_steps(1000, 100) == [0, 1, 2, 4, 8, 16, 32, 64, *range(100, 1001, 100)]
    assert checkpoint_steps(250, 100) == [0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 250]
    assert checkpoint_steps(3, 100) == [0, 1, 2, 3]


def test_learning_rate_warms_up_then_follows_a_cosine() -> None:
    cfg = TrainConfig(lr=1e-3, warmup=10, steps=110, min_lr_ratio=0.1)
    assert [lr_at(s, cfg) for s in (0, 4, 9)] == pytest.approx([1e-4, 5e-4, 1e-3])
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half-way down the cosine
    assert lr_at(109, cfg) == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 99 / 100)))


def test_batches_visit_every_window_once_per_epoch() -> None:
    n, b = 50, 8  # 400 samples = 8 epochs
    seen = np.concatenate([batch_indices(s, b, n, seed=3) for s in range(50)])
    for epoch in range(8):
        assert sorted(seen[epoch * n : (epoch + 1) * n]) == list(range(n))
    np.testing.assert_array_equal(batch_indices(7, b, n, seed=3), batch_indices(7, b, n, seed=3))
    assert not np.array_equal(batch_indices(7, b, n, seed=3), batch_indices(7, b, n, seed=4))


@pytest.fixture(scope="module")
def family(tmp_path_factory) -> dict:
    """A language of rank 16 and two models trained on it: d = 4 (< R) and d = 32 (> R)."""
    from lmsat.cli import main

    root = tmp_path_factory.mktemp("family")
    for args in (["synth", "-o", root / "lang", *LANGUAGE],
                 ["train", "--data", root / "lang" / "corpus", "--tokenizer", root / "lang" / "tokenizer",
                  "--hidden-sizes", "4,32", "-o", root / "runs", *TRAIN]):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code in (0, None)
    records = {r.results["hidden_size"]: r for r in Store(root / "runs").records("train")}
    return {"root": root, "runs": root / "runs", "records": records}


def test_small_hidden_size_stays_above_the_entropy_while_a_large_one_gets_close(family: dict) -> None:
    small, large = family["records"][4].results, family["records"][32].results
    lang = language_record(family["root"] / "lang").results
    # the gap is measured on the held-out tokens against their true -ln p
    assert small["reference_entropy"] == pytest.approx(lang["heldout_true_entropy"], abs=0.05)
    assert small["final_gap"] > 0.3  # d = 4 < R = 16: measurably above the best achievable loss
    assert large["final_gap"] < 0.35 * small["final_gap"]  # d = 32 >= R: much closer
    assert large["final_eval_loss"] < small["final_eval_loss"] - 0.2


def test_training_lowers_the_held_out_loss(family: dict) -> None:
    for rec in family["records"].values():
        arr = rec.load_arrays()
        assert arr["checkpoint_steps"][0] == 0 and arr["checkpoint_steps"][-1] == 300
        # from about ln V at initialisation to well below the context-free (unigram) loss
        assert arr["eval_loss"][0] == pytest.approx(math.log(65), abs=0.1)
        lang = language_record(family["root"] / "lang").results
        assert arr["eval_loss"][-1] < lang["unigram_entropy"] - 0.3
        train = [r["train_loss"] for r in read_metrics(family["runs"] / rec.key) if "train_loss" in r]
        assert np.mean(train[-5:]) < np.mean(train[:3]) - 0.5


def test_checkpoints_load_with_plain_transformers_and_reproduce_the_logged_loss(family: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = family["runs"] / "gpt-neox-d32-l1"
    config = json.loads((model_dir / "train_config.json").read_text())
    assert config["tokens_per_step"] == 16 * 64 and config["hidden_size"] == 32
    assert sorted(int(p.name[4:]) for p in model_dir.glob("step*")) == checkpoint_steps(300, 100)
    logged = {r["step"]: r for r in read_metrics(model_dir) if "eval_loss" in r}
    # Independent evaluation: the held-out text through the tokenizer saved in the checkpoint,
    # the same windows (seq_len + 1 tokens, stride seq_len, spread evenly), plain cross-entropy.
    tok = AutoTokenizer.from_pretrained(model_dir / "step100")
    stream = []
    for path in sorted((family["root"] / "lang" / "heldout").glob("*.txt")):
        stream += tok(path.read_text(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    stream = np.array(stream)
    n = (len(stream) - 1) // 64
    pick = np.unique(np.linspace(0, n - 1, num=min(64, n)).round().astype(int))
    windows = torch.tensor(np.stack([stream[i * 64 : i * 64 + 65] for i in pick]))
    # the true -ln p of every held-out word, from the language's record, placed at the non-eos positions
    true_nll = np.full(len(stream), np.nan)
    arrays = Store(family["root"] / "lang").get("synth", "language").load_arrays()
    true_nll[stream != tok.eos_token_id] = arrays["heldout_neg_log_probs"]
    true_targets = np.stack([true_nll[i * 64 + 1 : i * 64 + 65] for i in pick])
    for step in (0, 100, 300):
        model = AutoModelForCausalLM.from_pretrained(model_dir / f"step{step}")
        assert sum(p.numel() for p in model.parameters()) == config["n_params"]
        assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
        with torch.no_grad():
            logits = model(windows[:, :-1]).logits
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1), reduction="none")
        assert float(nll.mean()) == pytest.approx(logged[step]["eval_loss"], abs=1e-4)
        diff = nll.numpy().reshape(true_targets.shape) - true_targets
        known = np.isfinite(diff)
        assert float(diff[known].mean()) == pytest.approx(logged[step]["gap"], abs=1e-4)
        assert float(diff[known].std() / np.sqrt(known.sum())) == pytest.approx(logged[step]["gap_standard_error"], rel=1e-3)
    # only the newest checkpoint keeps the optimizer state, and it loads with weights_only=True
    assert sorted(p.parent.name for p in model_dir.glob("step*/training_state.pt")) == ["step200", "step300"]  # the newest two
    state = torch.load(model_dir / "step300" / "training_state.pt", weights_only=True)
    assert state["step"] == 300 and state["optimizer"]["state"]


def test_finished_family_is_skipped_and_outputs_are_written(family: dict, cli) -> None:
    runs = family["runs"]
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("model.safetensors")}
    lang = family["root"] / "lang"
    res = cli("train", "--data", lang / "corpus", "--tokenizer", lang / "tokenizer", "--hidden-sizes", "4,32", "-o", runs, *TRAIN)
    assert res.code == 0
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("model.safetensors")} == before
    for name in ("training_loss.png", "training_head.png", "training_gap.png"):
        assert (runs / "figures" / name).stat().st_size > 1000
    import pandas as pd

    table = pd.read_csv(runs / "training.csv")
    assert list(table["hidden_size"]) == [4, 32]
    assert table["final_gap"].iloc[0] == pytest.approx(family["records"][4].results["final_gap"])


def test_changed_settings_are_refused_without_touching_the_model(family: dict, cli) -> None:
    lang, runs = family["root"] / "lang", family["runs"]
    before = files_under(runs / "gpt-neox-d4-l1")
    res = cli("train", "--data", lang / "corpus", "--tokenizer", lang / "tokenizer", "--hidden-sizes", "4",
              "-o", runs, *TRAIN[:-2], "--lr", 1e-2)
    assert res.code == 2 and "different settings lr" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert files_under(runs / "gpt-neox-d4-l1") == before


def _train_args(lang: Path, out: Path, *extra: object) -> list[str]:
    return [str(a) for a in ("train", "--data", lang / "corpus", "--tokenizer", lang / "tokenizer", "-o", out, *extra)]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--hidden-sizes", "16,30"], "hidden size 30 is not divisible by --heads 4"),
        (["--hidden-sizes", "16,x"], "--hidden-sizes must be comma-separated integers"),
        (["--hidden-sizes", "16", "--warmup", 5000, "--steps", 100], "--warmup must be between 0 and --steps 100"),
        (["--hidden-sizes", "16", "--arch", "gpt-5"], "--arch must be one of gpt-neox, llama"),
    ],
)
def test_bad_training_settings_exit_2_with_one_line_and_no_files(family: dict, tmp_path: Path, cli, extra, message) -> None:
    res = cli(*_train_args(family["root"] / "lang", tmp_path / "out", *extra))
    assert res.code == 2 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert files_under(tmp_path / "out") == []


def test_missing_corpus_or_tokenizer_exit_2_with_no_files(family: dict, tmp_path: Path, cli) -> None:
    lang = family["root"] / "lang"
    res = cli("train", "--data", tmp_path / "nope", "--tokenizer", lang / "tokenizer", "-o", tmp_path / "out")
    assert res.code == 2 and "corpus" in res.stderr and "does not exist" in res.stderr
    res = cli("train", "--data", lang / "corpus", "--tokenizer", tmp_path / "no-tok", "-o", tmp_path / "out")
    assert res.code == 2 and "does not exist" in res.stderr
    assert files_under(tmp_path / "out") == []


def test_max_tokens_reads_only_the_start_of_the_corpus(family: dict) -> None:
    from lmsat.training.train import prepare_data, resolve_inputs, token_stream

    lang = family["root"] / "lang"
    inputs = resolve_inputs(lang / "corpus", lang / "tokenizer")
    full = token_stream(inputs.corpus, inputs.tokenizer)
    data = prepare_data(inputs.corpus, inputs.tokenizer, 64, 4096, inputs.eval_corpus, max_tokens=10_001)
    assert data.info["tokens"] == 10_001 and len(full) == 160_000 + 5  # 5 files, eos after each
    assert data.train.shape == ((10_001 - 1) // 64, 65)
    np.testing.assert_array_equal(data.train[3], full[3 * 64 : 3 * 64 + 65])


def test_llama_architecture_trains_and_loads(family: dict, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from lmsat.training.train import train_family

    lang = family["root"] / "lang"
    cfg = TrainConfig(arch="llama", layers=1, heads=2, steps=4, batch_size=4, warmup=1, eval_tokens=256, device="cpu")
    (rec,) = train_family(lang / "corpus", lang / "tokenizer", tmp_path, [8], cfg)
    assert rec.results["checkpoints"] == ["step0", "step1", "step2", "step4"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "llama-d8-l1" / "step4")
    assert model.config.model_type == "llama" and model.config.hidden_size == 8
    assert not model.config.tie_word_embeddings


@pytest.mark.real
def test_trains_on_real_text_with_a_real_tokenizer(brown_dir: Path, smollm2_hf: Path, tmp_path: Path) -> None:
    """Any corpus lmsat loads: one Brown-corpus file, SmolLM2's 49k-token tokenizer, held-out tail of the text."""
    from lmsat.training.train import train_family

    cfg = TrainConfig(layers=1, heads=2, seq_len=32, steps=16, batch_size=8, lr=1e-2, warmup=2,
                      checkpoint_every=16, eval_tokens=512, device="cpu")
    (rec,) = train_family(brown_dir / "ca01.txt", smollm2_hf, tmp_path, [16], cfg)
    arr = rec.load_arrays()
    assert rec.results["reference_entropy"] is None  # real text: no known entropy
    assert "last windows" in rec.inputs["data"]["eval_corpus"]
    assert arr["eval_loss"][0] == pytest.approx(math.log(49152), abs=0.2)  # about uniform at initialisation
    assert arr["eval_loss"][-1] < arr["eval_loss"][0] - 1.0  # 16 steps: it learns the word frequencies
    config = json.loads((tmp_path / "gpt-neox-d16-l1" / "train_config.json").read_text())
    assert config["vocab_size"] == 49152 and config["tokens_per_step"] == 256
