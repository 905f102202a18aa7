"""`lmsat rank-probe` end to end on a tiny random Llama (d = 32) and Brown text: outputs, cache reuse,
crash and resume, disjoint samples, bad input."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from transformers.models.llama.modeling_llama import LlamaForCausalLM

from tests.conftest import files_under
from lmsat.experiments import rank_probe as rp
from lmsat.experiments.rank_probe import run as rp_run  # where probe_rank looks up train_head
from lmsat.loading.corpus import CorpusSpec, iter_documents
from lmsat.loading.models import ModelSpec
from lmsat.loading.tokenizers import load_tokenizer
from lmsat.store import Store

# 16 training + 4 held-out windows of 64 tokens; batches of 4 windows; 2 search steps and 4 final steps.
SETTINGS = rp.ProbeSettings(
    train_tokens=1024, eval_tokens=256, seq_len=64, lr_grid=(1e-2, 3e-2), search_steps=2, steps=4, batch_tokens=256, forward_batch=2,
    init="gaussian",  # every search rate trains (with --init svd the untrained truncation is a candidate too)
)
ARGS = ["--train-tokens", 1024, "--eval-tokens", 256, "--seq-len", 64, "--lr-grid", "1e-2,3e-2", "--search-steps", 2,
        "--steps", 4, "--batch-tokens", 256, "-b", 2, "--device", "cpu"]
RUNS_PER_HEAD = 3  # two search runs and one final run


def _run(model, brown, out, ranks=(4, 8), settings=SETTINGS):
    """The rank probe of the tiny Llama on Brown text, into run directory ``out``."""
    return rp.run_rank_probe([ModelSpec(str(model), device="cpu")], CorpusSpec(str(brown)), out, list(ranks), settings)


def _finals(out) -> dict[str, float]:
    store = Store(out)
    return {r.key: r.results["loss"] for k in (rp.KIND, rp.REF_KIND) for r in store.records(k) if r.results.get("stage") == "final"}


def _counter(fn, fail_after=None):
    """``fn`` wrapped as a plain function (so it binds as a method) counting its calls; it raises
    after ``fail_after`` calls when given."""

    def wrapper(*a, **kw):
        if fail_after is not None and wrapper.calls >= fail_after:
            raise RuntimeError("simulated crash")
        wrapper.calls += 1
        return fn(*a, **kw)

    wrapper.calls, wrapper.fn = 0, fn
    return wrapper


@pytest.fixture(scope="module")
def clean_run(tiny_llama, brown_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    _run(tiny_llama, brown_dir, out)
    return out


def test_cli_writes_table_figures_and_one_record_per_run(cli, tiny_llama, brown_dir, tmp_path):
    res = cli("rank-probe", tiny_llama, "-d", brown_dir, "--ranks", "4,8", "-o", tmp_path, *ARGS)
    assert res.code == 0, res.stderr
    table = pd.read_csv(tmp_path / "rank_probe.csv")
    assert list(table["head"]) == ["low-rank", "low-rank", "full-rank", "own"]
    assert list(table["rank"]) == [4, 8, 32, 32]
    assert (table["loss"] > 0).all() and np.allclose(table["perplexity"], np.exp(table["loss"]))
    # W-error(r) of the model's own head, from its singular values (independent SVD)
    import torch
    from transformers import AutoModelForCausalLM

    w = AutoModelForCausalLM.from_pretrained(tiny_llama).get_output_embeddings().weight.detach().double()
    s = torch.linalg.svdvals(w).numpy()
    for r, werr in zip(table["rank"][:2], table["w_error"][:2]):
        assert werr == pytest.approx(np.sqrt((s[r:] ** 2).sum() / (s**2).sum()), rel=1e-6)
    per_head = RUNS_PER_HEAD + 1  # the CLI's default --init svd also records the untrained truncation (rate 0) as a search run
    assert len(list((tmp_path / "rank_probe").glob("*.json"))) == 2 * per_head
    from lmsat.store import Store

    finals = [r for r in Store(tmp_path).records("rank_probe") if r.key.endswith("final")]
    assert len(finals) == 2 and all(r.path.with_suffix(".npz").is_file() for r in finals)  # per-token held-out losses
    assert len(list((tmp_path / "rank_probe_ref").glob("*.json"))) == per_head + 2  # + own head, + SVD-truncation curve
    for name in ("rank_probe_loss", "rank_probe_w_error", "rank_probe_lr"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 10_000
    assert "own" in res.stdout and "held-out loss" in res.stdout


def test_second_run_reuses_the_cache_without_a_forward_pass(clean_run, tiny_llama, brown_dir, monkeypatch):
    forward = _counter(LlamaForCausalLM.forward, fail_after=0)
    monkeypatch.setattr(LlamaForCausalLM, "forward", forward)
    before = _finals(clean_run)
    _run(tiny_llama, brown_dir, clean_run, ranks=(2, 4, 8))  # r = 2 is new and needs the features
    after = _finals(clean_run)
    assert forward.calls == 0
    assert {k: after[k] for k in before} == before
    assert any("|r=2|" in k for k in after)


def test_crash_then_rerun_continues_and_matches_an_uninterrupted_run(clean_run, tiny_llama, brown_dir, tmp_path, monkeypatch):
    crashing = _counter(rp_run.train_head, fail_after=4)
    monkeypatch.setattr(rp_run, "train_head", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tiny_llama, brown_dir, tmp_path)
    done = len(list((tmp_path / "rank_probe").glob("*.json"))) + len(list((tmp_path / "rank_probe_ref").glob("*.json")))
    assert done == 4 + 2  # four finished runs, the own-head reference and the SVD-truncation curve; nothing of the fifth
    resumed = _counter(rp_run.train_head.fn)
    monkeypatch.setattr(rp_run, "train_head", resumed)
    _run(tiny_llama, brown_dir, tmp_path)
    assert resumed.calls == 3 * RUNS_PER_HEAD - 4
    clean = {k: v for k, v in _finals(clean_run).items() if "|r=2|" not in k}
    assert _finals(tmp_path) == pytest.approx(clean, rel=1e-6)


def test_interrupted_feature_extraction_resumes_at_the_missing_blocks(clean_run, tiny_llama, brown_dir, tmp_path, monkeypatch):
    crashing = _counter(LlamaForCausalLM.forward, fail_after=3)
    monkeypatch.setattr(LlamaForCausalLM, "forward", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tiny_llama, brown_dir, tmp_path)
    assert not list(tmp_path.glob("features/*/meta.json")) and list(tmp_path.glob("features/*/progress.json"))
    resumed = _counter(crashing.fn)
    monkeypatch.setattr(LlamaForCausalLM, "forward", resumed)
    _run(tiny_llama, brown_dir, tmp_path, ranks=(4,), settings=replace(SETTINGS, full_rank=False))  # features are what matters here
    assert resumed.calls == (16 + 4) // 2 - 3  # forward batches of 2 windows; 3 were done before the crash
    (mine,) = tmp_path.glob("features/*")
    clean = clean_run / "features" / mine.name
    for name in ("train_h.npy", "train_y.npy", "eval_h.npy", "eval_y.npy"):
        assert np.array_equal(np.load(mine / name), np.load(clean / name)), name
    assert json.loads((mine / "meta.json").read_text())["splits"] == json.loads((clean / "meta.json").read_text())["splits"]


def test_cached_training_and_heldout_pairs_come_from_disjoint_stream_positions(clean_run, tiny_llama, brown_dir):
    """Locate every cached window in the token stream of the corpus: no position is in both samples."""
    tok = load_tokenizer(str(tiny_llama))
    stream: list[int] = []
    for i, doc in enumerate(iter_documents(CorpusSpec(str(brown_dir)))):
        stream.extend(tok.encode_batch([doc])[0] + [tok.eos_id])
        if i == 127:  # the sampler reads whole batches of 64 documents until it holds 20 x 1280 tokens
            break
    stream_arr = np.asarray(stream)
    (folder,) = clean_run.glob("features/*")
    cache = rp.open_feature_cache(folder)
    positions = {}
    for split in (cache.train, cache.eval):
        pos = set()
        for s in range(split.n_seqs):
            targets = split.y[s * 63 : (s + 1) * 63].astype(np.int64)  # tokens 1..63 of the window
            starts = [i - 1 for i in np.flatnonzero(stream_arr == targets[0]) if i >= 1 and np.array_equal(stream_arr[i : i + 63], targets)]
            assert len(starts) >= 1
            pos.update(range(starts[0], starts[0] + 64))
        positions[split.name] = pos
    assert len(positions["train"]) == 16 * 64 and len(positions["eval"]) == 4 * 64
    assert not positions["train"] & positions["eval"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--ranks", "33"], "outside [1, 32]"),
        (["--ranks", "0,4"], "outside [1, 32]"),
        (["--ranks", "4,x"], "--ranks must be comma-separated integers"),
        (["--ranks", "4", "--lr-grid", "0.01,-1"], "--lr-grid values must be in (0, 1]"),
        (["--ranks", "4", "--feature-dtype", "bfloat16"], "--feature-dtype"),
        (["--ranks", "4", "--full-rank-head", "dense"], "--full-rank-head must be one of factorized, plain"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(cli, tiny_llama, brown_dir, tmp_path, extra, message):
    out = tmp_path / "run"
    res = cli("rank-probe", tiny_llama, "-d", brown_dir, "-o", out, *ARGS, *extra)
    assert res.code == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
    assert files_under(out) == []


def test_other_settings_in_the_same_run_directory_are_refused(cli, clean_run, tiny_llama, brown_dir):
    before = files_under(clean_run)
    res = cli("rank-probe", tiny_llama, "-d", brown_dir, "-o", clean_run, "--ranks", "4", *ARGS, "--steps", 5)
    assert res.code == 2 and "other settings" in res.stderr
    assert files_under(clean_run) == before


def test_a_non_causal_model_is_refused(cli, minilm_dir, brown_dir, tmp_path):
    res = cli("rank-probe", minilm_dir, "-d", brown_dir, "-o", tmp_path / "run", "--ranks", "4", *ARGS)
    assert res.code == 2 and "causal" in res.stderr
    assert files_under(tmp_path / "run") == []


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_neox"])
def test_cached_representations_are_the_last_hidden_state_and_own_loss_the_models(fixture, request, tmp_path):
    """Independent: plain transformers forward with output_hidden_states and labels (Llama: tied head;
    GPT-NeoX: untied head and a final layer norm)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lmsat.loading.models import load_model

    folder = request.getfixturevalue(fixture)
    ids = np.random.default_rng(0).integers(0, 49152, (6, 17))
    loaded = load_model(ModelSpec(str(folder), device="cpu"))
    cache = rp.extract_features(loaded, {"train": ids[:4], "eval": ids[4:]}, tmp_path / "f", {"test": fixture}, "float32", block_seqs=3)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids[4:]), labels=torch.from_numpy(ids[4:]), output_hidden_states=True)
    h, y = cache.eval.rows([0, 1])
    assert np.allclose(h, out.hidden_states[-1][:, :-1].reshape(-1, h.shape[1]).numpy(), atol=1e-5)
    assert np.array_equal(y, ids[4:, 1:].reshape(-1))
    own = cache.meta["splits"]["eval"]["own_head"]
    assert own["n"] == 2 * 16 and own["loss_sum"] / own["n"] == pytest.approx(float(out.loss), abs=1e-5)


def test_svd_init_starts_at_the_own_head_and_other_heads_run_from_the_cli(cli, tiny_llama, brown_dir, tmp_path):
    """Tied embeddings (the tiny Llama ties its head to its input embedding): at r = d the SVD-initialised
    probe starts exactly at the model's own head; `--head mos:4` runs into the same directory."""
    out = tmp_path / "run"
    assert cli("rank-probe", tiny_llama, "-d", brown_dir, "-o", out, "--ranks", "4", *ARGS).code == 0
    store = Store(out)
    own = store.get(rp.REF_KIND, f"{tiny_llama}|own-head")
    (full,) = [r for r in store.records(rp.REF_KIND) if r.results.get("stage") == "final"]
    assert full.results["init"] == "svd" and full.results["head_function"] == "softmax"
    assert full.results["step0_loss"] == pytest.approx(own.results["loss_from_features"], abs=1e-4)
    assert "0" in full.results["search_dev_loss"]  # the untrained truncation was a candidate of the search
    res = cli("rank-probe", tiny_llama, "-d", brown_dir, "-o", out, "--ranks", "4", "--no-full-rank", "--head", "mos:4", *ARGS)
    assert res.code == 0, res.stderr
    (mos,) = [r for r in store.records(rp.KIND) if r.results.get("stage") == "final" and r.results.get("head_function") == "mos:4"]
    V, d, K, r = own.results["head_info"]["vocab_rows"], full.results["rank"], 4, 4
    assert mos.results["n_parameters"] == r * (V + d) + (d * K + K) + K * d * d + K * d
    assert "|mos:4|svd|r=4|" in mos.key


def test_a_run_directory_refuses_probes_of_the_same_model_on_another_corpus(cli, clean_run, tiny_llama, kjv_dir, tmp_path):
    """Keys name model, head and rank; the corpus is checked from the stored records, so a re-run on
    other text is refused (one line, exit 2, nothing written) instead of returning the first corpus's losses."""
    import shutil

    from tests.contract import assert_user_error, snapshot

    out = tmp_path / "run"
    shutil.copytree(clean_run, out)
    before = snapshot(out)
    res = cli("rank-probe", tiny_llama, "-d", kjv_dir, "--ranks", "4,8", "-o", out, *ARGS, "--init", "gaussian")
    assert_user_error(res, out, "another corpus", before=before)
