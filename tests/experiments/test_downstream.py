"""`lmsat downstream`: best vs final checkpoint with lm-evaluation-harness, checked against direct computations.

A tiny GPT-NeoX with SmolLM2's real tokenizer is trained for real on Brown text
(checkpoints step0, step12 and step16, the last after a learning-rate spike that
raises the loss), a sweep store is written for it with cross-entropies computed
here, and two custom lm-eval tasks over local Brown data are run through the
harness: a perplexity task (loglikelihood_rolling) and a 4-way cloze task
(multiple_choice). Their numbers are compared with the same quantities computed
directly with the model.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import yaml

from tests.contract import assert_user_error

TASK_SEQ = 64  # tokens per training sequence
PPL_DOCS = 6
CLOZE_DOCS = 12


# --- the tiny trained suite and its sweep store -------------------------------------------------


def _brown(brown_dir: Path, names: list[str]) -> list[str]:
    return [line for n in names for line in (brown_dir / f"{n}.txt").read_text().splitlines() if line.strip()]


def _train_suite(out: Path, tokenizer_dir: Path, brown_dir: Path) -> dict[str, Path]:
    """step0 (random), step12 (12 AdamW steps, lr 0.02), step16 (4 more at lr 0.3: the loss jumps up)."""
    import torch
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = torch.tensor(tok(" ".join(_brown(brown_dir, [f"ca{i:02d}" for i in range(1, 11)])))["input_ids"])
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=64, max_position_embeddings=256, tie_word_embeddings=False))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2)
    gen = torch.Generator().manual_seed(0)
    folders = {}

    def save(step: int) -> None:
        folder = out / "tiny-neox" / f"step{step}"
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        folders[f"step{step}"] = folder

    save(0)
    step = 0
    for lr, n in ((2e-2, 12), (0.3, 4)):
        for group in opt.param_groups:
            group["lr"] = lr
        for _ in range(n):
            starts = torch.randint(0, len(ids) - TASK_SEQ - 1, (2,), generator=gen)
            batch = torch.stack([ids[s : s + TASK_SEQ] for s in starts])
            model(batch, labels=batch).loss.backward()
            opt.step()
            opt.zero_grad()
            step += 1
        save(step)
    return folders


def _cross_entropy(folder: Path, text: str) -> float:
    """Mean next-token cross-entropy (nats/token) of ``text`` under the checkpoint, with lmsat's own loss."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmsat.measure.loss import logits_cross_entropy

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor(tok(text)["input_ids"][:1024]).view(8, 128)
    with torch.no_grad():
        logits = model(ids).logits
    total, n = logits_cross_entropy(logits[:, :-1], ids[:, 1:])
    return total / n


@pytest.fixture(scope="module")
def suite(tmp_path_factory, smollm2_hf, brown_dir):
    """Checkpoint folders, the sweep run directory and the cross-entropies written into it."""
    from lmsat.store import Store

    root = tmp_path_factory.mktemp("downstream_suite")
    folders = _train_suite(root / "train", smollm2_hf, brown_dir)
    held_out = " ".join(_brown(brown_dir, ["ca40", "ca41"]))
    losses = {rev: _cross_entropy(folder, held_out) for rev, folder in folders.items()}
    run = root / "run"
    store = Store(run)
    model = os.path.normpath(str(root / "train" / "tiny-neox"))
    for rev, folder in folders.items():
        step = int(rev[4:])
        store.put("sweep", f"{model}@{rev}", {"model": model, "revision": rev, "step": step, "source": "local", "path": str(folder)},
                  {"status": "ok", "cross_entropy": losses[rev]})
    # Two failed checkpoints: one with the lowest loss, one with the largest step; both must be ignored.
    store.put("sweep", f"{model}@step14", {"model": model, "revision": "step14", "step": 14, "source": "local",
                                           "path": str(root / "missing" / "step14")}, {"status": "failed", "cross_entropy": 0.01})
    store.put("sweep", f"{model}@step20", {"model": model, "revision": "step20", "step": 20, "source": "local",
                                           "path": str(root / "missing" / "step20")}, {"status": "failed", "cross_entropy": None})
    best = min(losses, key=losses.get)
    return {"root": root, "run": run, "model": model, "folders": folders, "losses": losses, "best": best, "final": "step16"}


# --- custom lm-eval tasks over local Brown text ---------------------------------------------------


@pytest.fixture(scope="module")
def brown_tasks(tmp_path_factory, brown_dir):
    """Task YAML folder (brown_ppl, brown_cloze) and the documents each task holds."""
    root = tmp_path_factory.mktemp("brown_tasks")
    lines = _brown(brown_dir, ["cb01", "cb02"])
    ppl_docs = [" ".join(lines[2 * i : 2 * i + 2]).strip() for i in range(PPL_DOCS)]
    sentences = [s.split() for s in lines if 10 <= len(s.split()) <= 30 and s.split()[-1] == "." and s.split()[-2].isalpha()]
    cloze_docs = []
    for i in range(CLOZE_DOCS):
        words = sentences[i]
        distractors = [sentences[(i + k * 7) % len(sentences)][-2] for k in (1, 2, 3)]
        choices = distractors[:]
        label = i % 4
        choices.insert(label, words[-2])
        cloze_docs.append({"context": " ".join(words[:-2]), "choices": choices, "label": label})
    data = root / "data"
    data.mkdir()
    (data / "ppl.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ppl_docs))
    (data / "cloze.jsonl").write_text("".join(json.dumps(d) + "\n" for d in cloze_docs))
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "brown_ppl.yaml").write_text(yaml.safe_dump({
        "task": "brown_ppl", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data / "ppl.jsonl")}},
        "output_type": "loglikelihood_rolling", "test_split": "test", "doc_to_text": "", "doc_to_target": "{{text}}",
        "metric_list": [{"metric": m, "higher_is_better": False} for m in ("word_perplexity", "byte_perplexity", "bits_per_byte")],
    }))
    (tasks / "brown_cloze.yaml").write_text(yaml.safe_dump({
        "task": "brown_cloze", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data / "cloze.jsonl")}},
        "output_type": "multiple_choice", "test_split": "test", "doc_to_text": "{{context}}", "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{label}}", "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }))
    return {"tasks": tasks, "ppl": ppl_docs, "cloze": cloze_docs, "root": root}


# --- direct computations with the model (independent of the harness) -----------------------------


def _load(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _sum_logprob(model, ids: list[int], n_target: int) -> float:
    """sum of log p(ids[t] | ids[:t]) over the last ``n_target`` positions, in nats."""
    import torch

    from lmsat.measure.loss import logits_cross_entropy

    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0]
    nll, n = logits_cross_entropy(logits[-n_target - 1 : -1], x[0, -n_target:])
    assert n == n_target
    return -nll


def direct_perplexities(folder: Path, docs: list[str]) -> dict[str, float]:
    """Word perplexity, byte perplexity and bits per byte of the documents, each scored from the start.

    Each document is conditioned on one start token (BOS, else EOS), as a
    language model scores a whole text; word = whitespace-separated word.
    """
    model, tok = _load(folder)
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    nll = words = nbytes = 0.0
    for doc in docs:
        ids = tok(doc, add_special_tokens=False)["input_ids"]
        nll -= _sum_logprob(model, [start] + ids, len(ids))
        words += len(doc.split())
        nbytes += len(doc.encode("utf-8"))
    return {"word_perplexity": math.exp(nll / words), "byte_perplexity": math.exp(nll / nbytes),
            "bits_per_byte": nll / nbytes / math.log(2)}


def direct_choice_logliks(folder: Path, docs: list[dict]) -> list[list[float]]:
    """log p(" " + choice | context) of every choice of every cloze document (sum over the choice's tokens)."""
    model, tok = _load(folder)
    out = []
    for doc in docs:
        ctx = tok(doc["context"], add_special_tokens=False)["input_ids"]
        row = []
        for choice in doc["choices"]:
            whole = tok(doc["context"] + " " + choice, add_special_tokens=False)["input_ids"]
            assert whole[: len(ctx)] == ctx
            row.append(_sum_logprob(model, whole, len(whole) - len(ctx)))
        out.append(row)
    return out


def accuracy(logliks: list[list[float]], labels: list[int]) -> float:
    return sum(max(range(len(r)), key=r.__getitem__) == y for r, y in zip(logliks, labels)) / len(labels)


# --- one evaluation of the suite through the CLI, shared by the tests below ------------------------


@pytest.fixture(scope="module")
def evaluated(suite, brown_tasks):
    from lmsat.cli import main

    args = [str(suite["run"]), "--include-path", str(brown_tasks["tasks"]), "--tasks", "brown_ppl,brown_cloze",
            "--bootstrap-iters", "0", "--batch-size", "4", "--device", "cpu"]
    try:
        main(["downstream", *args])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return {"args": args}


def _store(path: Path):
    from lmsat.store import Store

    return Store(path)


def test_best_is_lowest_loss_and_final_is_last_ok_checkpoint(suite, evaluated):
    tables = _store(suite["run"]).records("downstream_table")
    assert len(tables) == 1
    table = tables[0]
    assert suite["best"] == "step12"  # the lr spike made step16 worse: the suite saturates
    assert table.inputs["best"]["revision"] == min(suite["losses"], key=suite["losses"].get)
    assert table.inputs["best"]["cross_entropy"] == pytest.approx(suite["losses"]["step12"])
    assert table.inputs["final"]["revision"] == "step16"  # step20 has a larger step but failed
    assert any("failed" in n for n in table.inputs["notes"])


def test_table_difference_is_final_minus_best_of_the_stored_records(suite, evaluated):
    import pandas as pd

    store = _store(suite["run"])
    table = store.records("downstream_table")[0]
    best = store.get("downstream", table.inputs["best"]["record"])
    final = store.get("downstream", table.inputs["final"]["record"])
    rows = {(r["task"], r["metric"]): r for r in table.results["rows"]}
    assert set(rows) == {("brown_ppl", "word_perplexity"), ("brown_ppl", "byte_perplexity"), ("brown_ppl", "bits_per_byte"),
                         ("brown_cloze", "acc")}
    for (task, metric), row in rows.items():
        scale = 100.0 if metric == "acc" else 1.0
        assert row["best"] == pytest.approx(best.results["tasks"][task][metric] * scale)
        assert row["final"] == pytest.approx(final.results["tasks"][task][metric] * scale)
        assert row["difference"] == pytest.approx(row["final"] - row["best"])
    # Lower perplexity is better: the diverged final checkpoint is worse on the perplexity task.
    assert rows[("brown_ppl", "word_perplexity")]["final"] > rows[("brown_ppl", "word_perplexity")]["best"]
    assert rows[("brown_ppl", "word_perplexity")]["worse_at_final"] is True
    csv = pd.read_csv(suite["run"] / "downstream.csv")
    assert len(csv) == 4
    got = csv.set_index(["task", "metric"])["difference"]
    for key, row in rows.items():
        assert got[key] == pytest.approx(row["difference"])


def test_perplexity_task_matches_direct_cross_entropy(suite, brown_tasks, evaluated):
    store = _store(suite["run"])
    table = store.records("downstream_table")[0]
    for side in ("best", "final"):
        rec = store.get("downstream", table.inputs[side]["record"])
        want = direct_perplexities(suite["folders"][table.inputs[side]["revision"]], brown_tasks["ppl"])
        got = rec.results["tasks"]["brown_ppl"]
        for metric, value in want.items():
            assert got[metric] == pytest.approx(value, rel=1e-4), (side, metric)
        assert rec.results["n_samples"]["brown_ppl"] == PPL_DOCS


def test_cloze_accuracy_matches_hand_scored_choices(suite, brown_tasks, evaluated):
    store = _store(suite["run"])
    table = store.records("downstream_table")[0]
    labels = [d["label"] for d in brown_tasks["cloze"]]
    for side in ("best", "final"):
        rec = store.get("downstream", table.inputs[side]["record"])
        want = direct_choice_logliks(suite["folders"][table.inputs[side]["revision"]], brown_tasks["cloze"])
        assert rec.results["tasks"]["brown_cloze"]["acc"] == pytest.approx(accuracy(want, labels), abs=1e-12)
        samples = [json.loads(line) for line in (suite["run"] / rec.results["files"]["samples:brown_cloze"]).read_text().splitlines()]
        assert len(samples) == CLOZE_DOCS
        for s in samples:
            got = [float(r[0]) for r in s["filtered_resps"]]
            assert got == pytest.approx(want[s["doc_id"]], abs=2e-3)


def test_harness_logs_results_and_samples_are_kept(suite, evaluated):
    store = _store(suite["run"])
    for rec in store.records("downstream"):
        files = rec.results["files"]
        log = suite["run"] / files["log"]
        assert log.is_file() and "brown_cloze" in log.read_text()
        results = json.loads((suite["run"] / files["results"]).read_text())
        assert set(results["results"]) == {"brown_ppl", "brown_cloze"}
        assert results["results"]["brown_cloze"]["acc,none"] == rec.results["tasks"]["brown_cloze"]["acc"]
        assert (suite["run"] / files["samples:brown_ppl"]).is_file()
        assert rec.inputs["tasks"] == ["brown_ppl", "brown_cloze"] and rec.inputs["num_fewshot"] == 0


def test_rerun_skips_finished_checkpoints(suite, evaluated, cli):
    store = _store(suite["run"])
    before = {p: p.stat().st_mtime_ns for p in (suite["run"] / "downstream").glob("*.json")}
    assert len(before) == 2
    res = cli("downstream", *evaluated["args"])
    assert res.code == 0, res.stderr
    assert "lm-eval on" not in res.stdout  # nothing was evaluated again
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert "brown_cloze" in res.stdout and "worse at the final checkpoint: 3 of 4 metrics" in res.stdout
    assert len(store.records("downstream")) == 2


def test_explicit_local_revisions_give_the_sweep_numbers(suite, brown_tasks, evaluated, cli, tmp_path):
    """--model DIR --revisions BEST,FINAL; brown_ppl given as a YAML file path this time (the harness takes both)."""
    out = tmp_path / "explicit"
    res = cli("downstream", "--model", str(suite["root"] / "train" / "tiny-neox"), "--revisions", "step12,step16",
              "--include-path", brown_tasks["tasks"], "--tasks", f"{brown_tasks['tasks'] / 'brown_ppl.yaml'},brown_cloze",
              "--bootstrap-iters", "0", "--batch-size", "4", "--device", "cpu", "-o", out)
    assert res.code == 0, res.stderr
    mine = {r.inputs["revision"]: r for r in _store(out).records("downstream")}
    theirs = {r.inputs["revision"]: r for r in _store(suite["run"]).records("downstream")}
    assert set(mine) == set(theirs) == {"step12", "step16"}
    for rev in mine:
        assert mine[rev].inputs["model"] == theirs[rev].inputs["model"]  # a sweep names local models the same way
        assert set(mine[rev].results["tasks"]) == {"brown_ppl", "brown_cloze"}
        for task, metrics in theirs[rev].results["tasks"].items():
            assert mine[rev].results["tasks"][task] == pytest.approx(metrics, rel=1e-6)


def test_a_real_lmsat_sweep_feeds_downstream(suite, brown_tasks, brown_dir, evaluated, cli, tmp_path):
    """`lmsat sweep` on the local suite, then `lmsat downstream RUN_DIR`: its best/final are the sweep's saturation steps."""
    import pandas as pd

    run = tmp_path / "run"
    res = cli("sweep", suite["root"] / "train" / "tiny-neox", "--data", brown_dir / "ca40.txt", "--tokens", "2048",
              "--device", "cpu", "-o", run)
    assert res.code == 0, res.stderr
    saturation = pd.read_csv(run / "saturation.csv").iloc[0]
    res = cli("downstream", run, "--include-path", brown_tasks["tasks"], "--tasks", "brown_ppl,brown_cloze",
              "--bootstrap-iters", "0", "--batch-size", "4", "--device", "cpu")
    assert res.code == 0, res.stderr
    table = _store(run).records("downstream_table")[0]
    assert table.inputs["best"]["step"] == saturation["best_step"] == 12
    assert table.inputs["final"]["step"] == saturation["final_step"] == 16
    assert table.inputs["best"]["cross_entropy"] == pytest.approx(saturation["best_loss"])
    theirs = {r.key: r for r in _store(suite["run"]).records("downstream")}
    for rec in _store(run).records("downstream"):  # same checkpoints and tasks as the Store.put sweep: same numbers
        assert rec.results["tasks"]["brown_ppl"] == pytest.approx(theirs[rec.key].results["tasks"]["brown_ppl"], rel=1e-6)


def test_storycloze_dir_runs_the_harness_storycloze_task(suite, brown_dir, tmp_path):
    """storycloze_2016 with local CSVs in the official layout; accuracy against hand-scored endings."""
    from lmsat.experiments import downstream as ds
    from lmsat.store import Store

    lines = [s for s in _brown(brown_dir, ["cc01", "cc02"]) if 5 <= len(s.split()) <= 25]
    header = "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
    stories = []
    for i in range(8):
        s = lines[5 * i : 5 * i + 5]
        wrong = lines[-1 - i]
        right = 1 + i % 2
        endings = [s[4], wrong] if right == 1 else [wrong, s[4]]
        stories.append((s[:4], endings, right))

    def row(i, st):
        fields = [f"id{i}", *st[0], *st[1], str(st[2])]
        return ",".join('"' + f.replace('"', '""') + '"' for f in fields) + "\n"

    folder = tmp_path / "storycloze"
    folder.mkdir()
    (folder / "cloze_test_test__spring2016 - cloze_test_ALL_test.csv").write_text(header + "".join(row(i, s) for i, s in enumerate(stories)))
    (folder / "cloze_test_val__spring2016 - cloze_test_ALL_val.csv").write_text(header + row(99, stories[0]))
    plan = ds.resolve_tasks(ds.STORYCLOZE_TASK, storycloze_dir=folder)
    ckpt = ds.explicit_selection(str(suite["root"] / "train" / "tiny-neox"), "step12,step16").best
    with ds.harness_task_specs(plan) as specs:
        rec = ds.evaluate_checkpoint(ckpt, plan, specs, tmp_path / "run", device="cpu", batch_size=4, bootstrap_iters=0)
    docs = [{"context": " ".join(st[0]), "choices": st[1]} for st in stories]
    want = accuracy(direct_choice_logliks(suite["folders"]["step12"], docs), [st[2] - 1 for st in stories])
    assert rec.results["tasks"][ds.STORYCLOZE_TASK]["acc"] == pytest.approx(want, abs=1e-12)
    assert rec.results["n_samples"][ds.STORYCLOZE_TASK] == len(stories)  # the test split, not validation
    assert Store(tmp_path / "run").get("downstream", rec.key) is not None


# --- bad input: one line, exit 2, nothing written -------------------------------------------------


def _assert_user_error(res, out: Path, *words: str) -> None:
    assert_user_error(res, out, *words)


def test_unknown_task_is_a_clear_error(suite, cli, tmp_path):
    out = tmp_path / "out"
    res = cli("downstream", "--model", str(suite["root"] / "train" / "tiny-neox"), "--revisions", "step12,step16",
              "--tasks", "sciq,lambada_opneai", "-o", out)
    _assert_user_error(res, out, "unknown task 'lambada_opneai'", "lambada_openai")


def test_missing_paths_are_clear_errors(suite, brown_tasks, cli, tmp_path):
    out = tmp_path / "out"
    model = ["--model", str(suite["root"] / "train" / "tiny-neox"), "--revisions", "step12,step16", "-o", out]
    _assert_user_error(cli("downstream", *model, "--include-path", tmp_path / "nope", "--tasks", "brown_ppl"), out,
                       "--include-path", "does not exist")
    _assert_user_error(cli("downstream", *model, "--tasks", "storycloze_2016"), out, "--storycloze-dir")
    _assert_user_error(cli("downstream", *model, "--tasks", "storycloze_2016", "--storycloze-dir", tmp_path), out,
                       "test CSV")
    # A custom task whose data file is missing.
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    cfg = yaml.safe_load((brown_tasks["tasks"] / "brown_ppl.yaml").read_text())
    cfg["task"] = "brown_ppl_gone"
    cfg["dataset_kwargs"]["data_files"]["test"] = str(tmp_path / "gone.jsonl")
    (tasks / "gone.yaml").write_text(yaml.safe_dump(cfg))
    _assert_user_error(cli("downstream", *model, "--include-path", tasks, "--tasks", "brown_ppl_gone"), out,
                       "brown_ppl_gone", "cannot load its data")
    # A custom task whose template names a field the data does not have.
    cfg = yaml.safe_load((brown_tasks["tasks"] / "brown_cloze.yaml").read_text())
    cfg["task"] = "brown_cloze_typo"
    cfg["doc_to_text"] = "{{contxt}}"
    (tasks / "typo.yaml").write_text(yaml.safe_dump(cfg))
    _assert_user_error(cli("downstream", *model, "--include-path", tasks, "--tasks", "brown_cloze_typo"), out,
                       "brown_cloze_typo", "first document")
    # Checkpoints that do not exist.
    bad = ["--model", str(suite["root"] / "train" / "tiny-neox"), "--revisions", "step12,step99", "-o", out]
    _assert_user_error(cli("downstream", *bad, "--include-path", brown_tasks["tasks"], "--tasks", "brown_ppl"), out, "step99")
    _assert_user_error(cli("downstream", tmp_path / "no-run", "--tasks", "brown_ppl", "--include-path", brown_tasks["tasks"]),
                       tmp_path / "no-run", "does not exist")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    _assert_user_error(cli("downstream", empty, "--tasks", "brown_ppl", "--include-path", brown_tasks["tasks"]), empty,
                       "no sweep records")


def test_bad_arguments_are_clear_errors(suite, cli, tmp_path):
    out = tmp_path / "out"
    model = ["--model", str(suite["root"] / "train" / "tiny-neox"), "-o", out]
    _assert_user_error(cli("downstream", "-o", out), out, "--revisions")
    _assert_user_error(cli("downstream", *model, "--revisions", "step12"), out, "exactly two")
    _assert_user_error(cli("downstream", *model, "--revisions", "step12,step16", "--limit", "-3"), out, "--limit")
    _assert_user_error(cli("downstream", suite["run"], *model, "--revisions", "step12,step16"), out, "not both")
    _assert_user_error(cli("downstream", *model, "--revisions", "step12,step16", "--tasks", "storycloze"), out, "storycloze_2016")


def test_help_is_complete(cli):
    res = cli("downstream", "--help")
    assert res.code == 0
    for opt in ("--model", "--revisions", "--tasks", "--limit", "--include-path", "--storycloze-dir", "--batch-size",
                "--device", "--dtype", "--bootstrap-iters", "--output", "--force"):
        assert opt in res.stdout, opt


def test_hub_checkpoints_fail_clearly_offline(brown_tasks, cli, tmp_path, monkeypatch):
    """The hub path is real (transformers from_pretrained with revision); offline it is one clear line and no files."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    out = tmp_path / "out"
    res = cli("downstream", "--model", "EleutherAI/pythia-160m", "--revisions", "step100000,step143000",
              "--include-path", brown_tasks["tasks"], "--tasks", "brown_ppl", "-o", out)
    _assert_user_error(res, out, "EleutherAI/pythia-160m")


@pytest.mark.real
def test_real_smollm2_cloze_accuracy_matches_hand_scoring(smollm2_hf, brown_tasks, tmp_path):
    """The real SmolLM2-135M through the harness: per-choice log-likelihoods and accuracy equal a direct computation."""
    from lmsat.experiments import downstream as ds
    from lmsat.loading.checkpoints import Checkpoint

    ckpt = Checkpoint(model="SmolLM2-135M-Instruct", revision="main", step=None, source="local", path=str(smollm2_hf))  # type: ignore[arg-type]
    n = 6
    plan = ds.resolve_tasks("brown_cloze", [brown_tasks["tasks"]], limit=n)
    with ds.harness_task_specs(plan) as specs:
        rec = ds.evaluate_checkpoint(ckpt, plan, specs, tmp_path / "run", device="cpu", batch_size=8, bootstrap_iters=0)
    docs = brown_tasks["cloze"][:n]
    want = direct_choice_logliks(smollm2_hf, docs)
    acc = rec.results["tasks"]["brown_cloze"]["acc"]
    assert acc == pytest.approx(accuracy(want, [d["label"] for d in docs]), abs=1e-12)
    samples = [json.loads(line) for line in (tmp_path / "run" / rec.results["files"]["samples:brown_cloze"]).read_text().splitlines()]
    for s in samples:
        assert [float(r[0]) for r in s["filtered_resps"]] == pytest.approx(want[s["doc_id"]], abs=2e-3)
    assert acc >= 0.5  # a real LM picks the sentence's own word over words from other sentences (chance: 0.25)
