"""A battery of bad inputs across every command: one line ``lmsat: error: ...``, exit 2, nothing written.

Each case runs the real CLI in-process and asserts: exit code 2; exactly one
non-empty stderr line, starting with ``lmsat: error:`` and naming what is wrong
(an expected fragment); no traceback; no new file in the output folder. The
output-path cases use a real immutable folder (``chattr +i``) and a real
read-only mount when the machine allows them (root), else they are skipped.
Ctrl-C: exit 130 and one line saying the run can be resumed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import files_under
from tests.contract import assert_user_error, snapshot

WORDS = ("the of and to a in that is was he for it with as his on be at by had not are but from or have an they which one "
         "you were her all she there would their we him been has when who will more no if out so said what up its about").split()


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    expect: str  # a fragment of the one error line (case-sensitive)
    needs: str | None = None  # a fixture the case needs (immutable_dir, readonly_dir)
    output: bool = True  # append -o {out}/run unless the argv has its own output
    pre_file: bool = False  # create {out}/afile before the run
    cache: str | None = None  # $LMSAT_CACHE for the run


def C(id: str, *argv: str, expect: str, **kw) -> Case:
    return Case(id, argv, expect, **kw)


# --- fixtures: tiny models and corpora, built once per module ---------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_neox, tiny_llama, smollm2_hf) -> dict[str, str]:
    """Paths the cases name: models (GPT-2 with a 64-token context, custom code, pickled), corpora, a synth tokenizer."""
    import numpy as np
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    root = tmp_path_factory.mktemp("bad_inputs")
    rng = np.random.default_rng(0)
    (root / "text.txt").write_text("\n".join(" ".join(rng.choice(WORDS, 12)) for _ in range(400)) + "\n")
    (root / "empty.txt").write_text("")
    (root / "bad.jsonl").write_text('{"text": "fine"}\nnot json\n')
    (root / "nofield.jsonl").write_text('{"body": "the text"}\n')
    (root / "nothing").mkdir()

    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=8, n_layer=1, n_head=2, n_positions=64,
                                      bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    gpt2.save_pretrained(root / "gpt2")
    tok.save_pretrained(root / "gpt2")

    # a word-level tokenizer without an unknown token, as `lmsat synth` writes one
    vocab = {w: i for i, w in enumerate(WORDS)}
    vocab["<eos>"] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>").save_pretrained(root / "wordtok")
    (root / "oov.txt").write_text("these words are mostly outside the vocabulary\n" * 50)

    custom = root / "custom"
    shutil.copytree(tiny_neox, custom)
    import json

    cfg = json.loads((custom / "config.json").read_text())
    cfg.update(model_type="mystery_lm", auto_map={"AutoConfig": "cfg.MyConfig", "AutoModelForCausalLM": "mdl.MyModel"},
               architectures=["MyModelForCausalLM"])
    (custom / "config.json").write_text(json.dumps(cfg))
    (custom / "cfg.py").write_text("raise SystemExit('custom code ran')\n")

    pickled = root / "pickled"
    shutil.copytree(root / "gpt2", pickled)
    (pickled / "model.safetensors").unlink()
    state = dict(gpt2.state_dict())
    state["extra"] = _Evil()
    torch.save(state, pickled / "pytorch_model.bin")

    ckpts = root / "ckpts" / "m"
    for step in (0, 1):
        shutil.copytree(root / "gpt2", ckpts / f"step{step}")
    sweep_run = root / "sweep_run"  # a run directory with no sweep records
    sweep_run.mkdir()
    (root / "afile").write_text("not a folder\n")
    return {
        "root": str(root), "neox": str(tiny_neox), "llama": str(tiny_llama), "gpt2": str(root / "gpt2"),
        "data": str(root / "text.txt"), "empty": str(root / "empty.txt"), "badjsonl": str(root / "bad.jsonl"),
        "nofield": str(root / "nofield.jsonl"), "nothing": str(root / "nothing"), "wordtok": str(root / "wordtok"),
        "oov": str(root / "oov.txt"), "custom": str(custom), "pickled": str(pickled), "ckpts": str(ckpts),
        "rundir": str(sweep_run), "afile": str(root / "afile"), "hftok": str(smollm2_hf),
    }


class _Evil:
    """A pickled object other than a tensor: torch.load(weights_only=True) must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > /dev/null",))


@pytest.fixture(scope="module")
def immutable_dir(tmp_path_factory):
    """A folder nobody may write into (chattr +i, effective even for root); skipped where chattr is unavailable."""
    folder = tmp_path_factory.mktemp("immutable")
    try:
        subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("chattr +i is not available here (needs root and a filesystem with attributes)")
    yield str(folder)
    subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


@pytest.fixture(scope="module")
def readonly_dir(tmp_path_factory):
    """A read-only tmpfs mount; skipped where mounting is not allowed."""
    folder = tmp_path_factory.mktemp("readonly")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount a read-only filesystem here (needs root)")
    yield str(folder)
    subprocess.run(["umount", str(folder)], capture_output=True)


# --- the cases --------------------------------------------------------------------------------

ANISO = ("anisotropy", "{neox}", "-d", "{data}", "--tokens", "64", "--seq-len", "16", "--device", "cpu")
HEAD = ("head", "{neox}", "--device", "cpu")
PROBE = ("rank-probe", "{neox}", "-d", "{data}", "--train-tokens", "128", "--eval-tokens", "32", "--seq-len", "16",
         "--device", "cpu", "--ranks", "2", "--lr-grid", "1e-2", "--steps", "1")
NGRAM = ("ngram-rank", "-t", "{hftok}", "-d", "{data}", "--n", "2", "--device", "cpu")
SWEEP = ("sweep", "{ckpts}", "-d", "{data}", "--tokens", "64", "--seq-len", "16", "--device", "cpu")
SYNTH = ("synth", "--vocab", "16", "--contexts", "8", "--rank", "2", "--tokens", "1000", "--heldout-tokens", "100")
TRAIN = ("train", "-d", "{data}", "--tokenizer", "{hftok}", "--hidden-sizes", "8", "--steps", "2", "--warmup", "1",
         "--seq-len", "16", "--batch-size", "2", "--eval-tokens", "64", "--device", "cpu")
DOWN = ("downstream", "--model", "{ckpts}", "--revisions", "step0,step1")
DEMO = ("demo", "--quick", "--device", "cpu")

CASES: list[Case] = []

# Output paths, first in every command: an existing file, a path under a file, an immutable folder, a read-only filesystem.
for name, base in {"anisotropy": ANISO, "head": HEAD, "rank-probe": PROBE, "ngram-rank": NGRAM, "sweep": SWEEP,
                   "synth": SYNTH, "train": TRAIN, "demo": DEMO, "downstream": DOWN}.items():
    CASES += [
        C(f"{name}-output-is-a-file", *base, "-o", "{out}/afile", expect="is an existing file", output=False, pre_file=True),
        C(f"{name}-output-under-a-file", *base, "-o", "{out}/afile/sub", expect="is a file", output=False, pre_file=True),
        C(f"{name}-output-immutable", *base, "-o", "{immutable_dir}/sub", expect="cannot be written", output=False, needs="immutable_dir"),
        C(f"{name}-output-read-only-fs", *base, "-o", "{readonly_dir}/sub", expect="read-only filesystem", output=False, needs="readonly_dir"),
    ]
CASES += [
    C("report-output-is-a-folder", "report", "{rundir}", "-o", "{out}", expect="is a folder", output=False),
    C("report-output-under-a-file", "report", "{rundir}", "-o", "{out}/afile/r.html", expect="is a file", output=False, pre_file=True),
    C("report-output-immutable", "report", "{rundir}", "-o", "{immutable_dir}/r.html", expect="cannot be written", output=False, needs="immutable_dir"),
    C("report-output-read-only-fs", "report", "{rundir}", "-o", "{readonly_dir}/r.md", expect="read-only filesystem", output=False, needs="readonly_dir"),
    C("saturation-run-dir-immutable", "saturation", "{immutable_dir}", expect="cannot be written", output=False, needs="immutable_dir"),
    C("scaling-fit-run-dir-read-only", "scaling-fit", "{readonly_dir}", expect="read-only filesystem", output=False, needs="readonly_dir"),
]

# anisotropy: options validated before the token sample is written
CASES += [
    C("anisotropy-device-tpu", *ANISO, "--device", "tpu", expect="--device must be one of"),
    C("anisotropy-dtype-float8", *ANISO, "--dtype", "float8", expect="--dtype must be one of"),
    C("anisotropy-batch-size-0", *ANISO, "--batch-size", "0", expect="--batch-size must be >= 1 (got 0)"),
    C("anisotropy-seed-negative", *ANISO, "--seed", "-1", expect="--seed must be in [0, 4294967295] (got -1)"),
    C("anisotropy-tokens-0", *ANISO, "--tokens", "0", expect="--tokens must be >= 1 (got 0)"),
    C("anisotropy-seq-len-1", *ANISO, "--seq-len", "1", expect="--seq-len must be >= 2 (got 1)"),
    C("anisotropy-seq-len-beyond-gpt2-context", "anisotropy", "{gpt2}", "-d", "{data}", "--tokens", "128", "--seq-len", "128",
      "--device", "cpu", expect="longer than the context"),
    C("anisotropy-seq-len-beyond-rotary-context", *ANISO, "--seq-len", "1024", expect="(512 tokens)"),
    C("anisotropy-tokens-not-a-number", *ANISO, "--tokens", "many", expect="'--tokens'"),
    C("anisotropy-no-data", "anisotropy", "{neox}", expect="Missing option '--data'"),
    C("anisotropy-missing-model", "anisotropy", "{root}/nope", "-d", "{data}", expect="does not exist"),
    C("anisotropy-missing-corpus", "anisotropy", "{neox}", "-d", "{root}/nope.txt", expect="does not exist"),
    C("anisotropy-empty-corpus", "anisotropy", "{neox}", "-d", "{empty}", expect="contains no text"),
    C("anisotropy-folder-without-corpus-files", "anisotropy", "{neox}", "-d", "{nothing}", expect="holds no corpus files"),
    C("anisotropy-jsonl-not-json", "anisotropy", "{neox}", "-d", "{badjsonl}", expect="is not valid JSON"),
    C("anisotropy-jsonl-no-field", "anisotropy", "{neox}", "-d", "{nofield}", expect="has no field 'text'"),
    C("anisotropy-at-revision-on-local-folder", "anisotropy", "{neox}@step1", "-d", "{data}", expect="'@step1' was given for the local model"),
    C("anisotropy-revision-on-local-folder", *ANISO, "--revision", "main", expect="--revision main was given for the local model"),
    C("anisotropy-empty-revision", "anisotropy", "{root}/x@", "-d", "{data}", expect="ends in '@' with no revision"),
    C("anisotropy-missing-gguf", "anisotropy", "{root}/model.gguf", "-d", "{data}", expect="GGUF file"),
    C("anisotropy-gguf-file-not-in-folder", *ANISO, "--gguf-file", "x.gguf", expect="is not in"),
    C("anisotropy-custom-code", "anisotropy", "{custom}", "-d", "{data}", "--tokens", "64", "--seq-len", "16", "--device", "cpu",
      expect="--trust-remote-code"),
    C("anisotropy-bad-hub-id", "anisotropy", "no/such/model/x", "-d", "{data}", expect="does not exist"),
]
# head
CASES += [
    C("head-device-tpu", *HEAD, "--device", "tpu", expect="--device must be one of"),
    C("head-dtype-int8", *HEAD, "--dtype", "int8", expect="--dtype must be one of"),
    C("head-at-revision-on-local-folder", "head", "{neox}@v1", expect="'@v1' was given for the local model"),
    C("head-pickled-weights", "head", "{pickled}", "--device", "cpu", expect="refused to load the weights"),
    C("anisotropy-pickled-weights", "anisotropy", "{pickled}", "-d", "{data}", "--tokens", "64", "--seq-len", "16", "--device", "cpu",
      expect="refused to load the weights"),
    C("head-unknown-option", *HEAD, "--frobnicate", expect="No such option"),
    C("head-no-model", "head", expect="Missing argument"),
]
# rank-probe
CASES += [
    C("rank-probe-rank-above-d", *PROBE[:-6], "--ranks", "999", "--lr-grid", "1e-2", "--steps", "1", expect="--ranks 999 is outside"),
    C("rank-probe-rank-0", *PROBE[:-6], "--ranks", "0", "--lr-grid", "1e-2", "--steps", "1", expect="--ranks 0 is outside"),
    C("rank-probe-ranks-not-integers", *PROBE[:-6], "--ranks", "a,b", "--lr-grid", "1e-2", "--steps", "1", expect="--ranks must be"),
    C("rank-probe-seq-len-beyond-gpt2-context", "rank-probe", "{gpt2}", *PROBE[2:], "--seq-len", "128", "--train-tokens", "512",
      expect="longer than the context"),
    C("rank-probe-seq-len-beyond-rotary-context", "rank-probe", "{llama}", *PROBE[2:], "--seq-len", "600", "--train-tokens", "1200",
      expect="(512 tokens)"),
    C("rank-probe-batch-size-0", *PROBE, "--batch-size", "0", expect="--batch-size must be >= 1"),
    C("rank-probe-seed-negative", *PROBE, "--seed", "-5", expect="--seed must be in"),
    C("rank-probe-device-tpu", *PROBE, "--device", "tpu", expect="--device must be one of"),
    C("rank-probe-dtype-float8", *PROBE, "--dtype", "float8", expect="--dtype must be one of"),
    C("rank-probe-warmup-2", *PROBE, "--warmup", "2", expect="--warmup must be in [0, 1) (got 2)"),
    C("rank-probe-weight-decay-negative", *PROBE, "--weight-decay", "-1", expect="--weight-decay must be >= 0"),
    C("rank-probe-lr-0", *PROBE[:-4], "--lr-grid", "0", "--steps", "1", expect="--lr-grid values must be in (0, 1]"),
    C("rank-probe-lr-grid-empty", *PROBE[:-4], "--lr-grid", ",", "--steps", "1", expect="--lr-grid must be comma-separated numbers"),
    C("rank-probe-lr-nan", *PROBE[:-4], "--lr-grid", "nan", "--steps", "1", expect="--lr-grid must be comma-separated numbers"),
    C("rank-probe-lr-not-numbers", *PROBE[:-4], "--lr-grid", "fast", "--steps", "1", expect="--lr-grid must be"),
    C("rank-probe-feature-dtype-int8", *PROBE, "--feature-dtype", "int8", expect="--feature-dtype must be one of"),
    C("rank-probe-chunk-tokens-negative", *PROBE, "--chunk-tokens", "-1", expect="--chunk-tokens must be >= 0"),
    C("rank-probe-steps-0", *PROBE[:-2], "--steps", "0", expect="--steps must be >= 1"),
    C("rank-probe-train-tokens-0", *PROBE, "--train-tokens", "0", expect="--train-tokens must be >= 1"),
    C("rank-probe-eval-tokens-0", *PROBE, "--eval-tokens", "0", expect="--eval-tokens must be >= 1"),
    C("rank-probe-batch-tokens-0", *PROBE, "--batch-tokens", "0", expect="--batch-tokens must be >= 1"),
    C("rank-probe-full-rank-head-unknown", *PROBE, "--full-rank-head", "huge", expect="--full-rank-head must be one of"),
]
# ngram-rank
CASES += [
    C("ngram-n-1", *NGRAM[:-4], "--n", "1", expect="--n must be at least 2"),
    C("ngram-n-negative", *NGRAM[:-4], "--n", "-3", expect="--n must be at least 2"),
    C("ngram-min-count-0", *NGRAM, "--min-count", "0", expect="--min-count must be at least 1"),
    C("ngram-max-contexts-0", *NGRAM, "--max-contexts", "0", expect="--max-contexts must be at least 1"),
    C("ngram-context-selection-unknown", *NGRAM, "--max-contexts", "5", "--context-selection", "best", expect="--context-selection must be one of"),
    C("ngram-seed-negative", *NGRAM, "--seed", "-1", expect="--seed must be in"),
    C("ngram-row-weight-unknown", *NGRAM, "--row-weight", "heavy", expect="--row-weight must be one of"),
    C("ngram-top-k-0", *NGRAM, "--top-k", "0", expect="--top-k must be at least 1"),
    C("ngram-method-unknown", *NGRAM, "--method", "magic", expect="--method must be one of"),
    C("ngram-max-dense-0", *NGRAM, "--max-dense", "0", expect="--max-dense must be at least 1"),
    C("ngram-shard-tokens-0", *NGRAM, "--shard-tokens", "0", expect="--shard-tokens must be at least"),
    C("ngram-device-tpu", *NGRAM[:-2], "--device", "tpu", expect="--device must be one of"),
    C("ngram-missing-tokenizer", "ngram-rank", "-t", "{root}/nope", "-d", "{data}", expect="does not exist"),
    C("ngram-blank-tokenizer", "ngram-rank", "-t", " ", "-d", "{data}", expect="--tokenizer is empty"),
    C("ngram-tokenizer-revision-on-local-folder", *NGRAM, "--tokenizer-revision", "v2", expect="--tokenizer-revision v2 was given"),
    C("ngram-out-of-vocabulary-text", "ngram-rank", "-t", "{wordtok}", "-d", "{oov}", "--n", "2", "--device", "cpu",
      expect="cannot encode the word 'these'"),
]
# sweep, saturation, scaling-fit
CASES += [
    C("sweep-tokens-0", *SWEEP, "--tokens", "0", expect="--tokens must be >= 1 (got 0)"),
    C("sweep-batch-size-0", *SWEEP, "--batch-size", "0", expect="--batch-size must be >= 1"),
    C("sweep-seed-negative", *SWEEP, "--seed", "-1", expect="--seed must be in"),
    C("sweep-layers-unknown", *SWEEP, "--layers", "some", expect="--layers must be one of last, all"),
    C("sweep-device-tpu", *SWEEP, "--device", "tpu", expect="--device must be one of"),
    C("sweep-dtype-float8", *SWEEP, "--dtype", "float8", expect="--dtype must be one of"),
    C("sweep-seq-len-beyond-context", *SWEEP, "--seq-len", "128", expect="longer than the context"),
    C("sweep-seq-len-1", *SWEEP, "--seq-len", "1", expect="--seq-len must be >= 2"),
    C("sweep-revisions-every-0", *SWEEP, "--revisions", "every:0", expect="every:N needs a positive"),
    C("sweep-revision-missing", *SWEEP, "--revisions", "step99", expect="has no checkpoint at step 99"),
    C("sweep-suite-unknown", "sweep", "-d", "{data}", "--suite", "gpt9", expect="unknown suite 'gpt9'"),
    C("sweep-nothing-to-sweep", "sweep", "-d", "{data}", expect="nothing to sweep"),
    C("sweep-params-0", *SWEEP, "--params", "0", expect="--params '0'"),
    C("sweep-tokens-per-step-negative", *SWEEP, "--tokens-per-step", "-1", expect="--tokens-per-step '-1'"),
    C("sweep-params-inf", *SWEEP, "--params", "inf", expect="--params 'inf'"),
    C("sweep-tokens-per-step-1e400", *SWEEP, "--tokens-per-step", "m=1e400", expect="--tokens-per-step 'm=1e400'"),
    C("saturation-missing-run-dir", "saturation", "{root}/nope", expect="does not exist", output=False),
    C("saturation-run-dir-is-a-file", "saturation", "{afile}", expect="is a file", output=False),
    C("saturation-no-sweep-records", "saturation", "{rundir}", expect="holds no sweep records", output=False),
    C("saturation-max-rise-negative", "saturation", "{rundir}", "--max-rise", "-0.1", expect="--max-rise must be >= 0", output=False),
    C("saturation-min-entropy-rise-0", "saturation", "{rundir}", "--min-entropy-rise", "0", expect="--min-entropy-rise must be > 0", output=False),
    C("saturation-min-anisotropy-rise-negative", "saturation", "{rundir}", "--min-anisotropy-rise", "-1",
      expect="--min-anisotropy-rise must be > 0", output=False),
    C("saturation-from-step-negative", "saturation", "{rundir}", "--from-step", "-1", expect="--from-step must be >= 0", output=False),
    C("scaling-fit-missing-run-dir", "scaling-fit", "{root}/nope", expect="does not exist", output=False),
    C("scaling-fit-max-rise-negative", "scaling-fit", "{rundir}", "--max-rise", "-1", expect="--max-rise must be >= 0", output=False),
    C("scaling-fit-no-sweep-records", "scaling-fit", "{rundir}", expect="holds no sweep records", output=False),
]
# synth and train
CASES += [
    C("synth-vocab-1", *SYNTH, "--vocab", "1", expect="--vocab must be >= 2"),
    C("synth-rank-0", *SYNTH, "--rank", "0", expect="--rank 0 is impossible"),
    C("synth-rank-above-contexts", *SYNTH, "--rank", "99", expect="--rank 99 is impossible"),
    C("synth-contexts-0", *SYNTH, "--contexts", "0", expect="--contexts must be >= 1"),
    C("synth-order-0", *SYNTH, "--order", "0", expect="--order must be >= 1"),
    C("synth-temperature-0", *SYNTH, "--temperature", "0", expect="--temperature must be a positive number"),
    C("synth-temperature-nan", *SYNTH, "--temperature", "nan", expect="--temperature must be a positive number"),
    C("synth-family-unknown", *SYNTH, "--family", "full-rank", expect="--family must be one of"),
    C("synth-tokens-0", *SYNTH, "--tokens", "0", expect="--tokens must be >= 1"),
    C("synth-heldout-tokens-0", *SYNTH, "--heldout-tokens", "0", expect="--heldout-tokens must be >= 1"),
    C("synth-doc-tokens-0", *SYNTH, "--doc-tokens", "0", expect="--doc-tokens must be >= 1"),
    C("synth-seed-negative", *SYNTH, "--seed", "-1", expect="--seed must be in"),
    C("synth-concentration-0", *SYNTH, "--family", "low-rank-probs", "--concentration", "0", expect="--concentration"),
    C("synth-temperature-with-probs", *SYNTH, "--family", "low-rank-probs", "--temperature", "1", expect="--temperature applies to"),
    C("train-hidden-sizes-0", *TRAIN, "--hidden-sizes", "0", expect="--hidden-sizes must be positive"),
    C("train-hidden-sizes-not-numbers", *TRAIN, "--hidden-sizes", "big", expect="--hidden-sizes must be comma-separated"),
    C("train-layers-0", *TRAIN, "--layers", "0", expect="--layers must be >= 1"),
    C("train-heads-not-dividing", *TRAIN, "--heads", "3", expect="not divisible by --heads 3"),
    C("train-arch-unknown", *TRAIN, "--arch", "rnn", expect="--arch must be one of"),
    C("train-seq-len-1", *TRAIN, "--seq-len", "1", expect="--seq-len must be >= 2"),
    C("train-steps-0", *TRAIN, "--steps", "0", expect="--steps must be >= 1"),
    C("train-batch-size-0", *TRAIN, "--batch-size", "0", expect="--batch-size must be >= 1"),
    C("train-lr-0", *TRAIN, "--lr", "0", expect="--lr must be a positive number"),
    C("train-lr-nan", *TRAIN, "--lr", "nan", expect="--lr must be a positive number"),
    C("train-min-lr-ratio-2", *TRAIN, "--min-lr-ratio", "2", expect="--min-lr-ratio must be in [0, 1]"),
    C("train-warmup-negative", *TRAIN, "--warmup", "-1", expect="--warmup must be between 0 and --steps"),
    C("train-grad-clip-0", *TRAIN, "--grad-clip", "0", expect="--grad-clip > 0"),
    C("train-seed-negative", *TRAIN, "--seed", "-1", expect="--seed must be in"),
    C("train-checkpoint-every-0", *TRAIN, "--checkpoint-every", "0", expect="--checkpoint-every must be >= 1"),
    C("train-log-every-0", *TRAIN, "--log-every", "0", expect="--log-every must be >= 1"),
    C("train-device-tpu", *TRAIN, "--device", "tpu", expect="--device must be one of"),
    C("train-missing-eval-data", *TRAIN, "--eval-data", "{root}/nope", expect="does not exist"),
]
# causality (the same threshold bounds as saturation)
CAUS = ("causality", "{rundir}")
CASES += [
    C("causality-output-is-a-file", *CAUS, "-o", "{out}/afile", expect="is an existing file", output=False, pre_file=True),
    C("causality-output-under-a-file", *CAUS, "-o", "{out}/afile/sub", expect="is a file", output=False, pre_file=True),
    C("causality-output-immutable", *CAUS, "-o", "{immutable_dir}/sub", expect="cannot be written", output=False, needs="immutable_dir"),
    C("causality-output-read-only-fs", *CAUS, "-o", "{readonly_dir}/sub", expect="read-only filesystem", output=False, needs="readonly_dir"),
    C("causality-missing-run-dir", "causality", "{root}/nope", expect="does not exist"),
    C("causality-max-rise-negative", *CAUS, "--max-rise", "-1", expect="--max-rise must be >= 0 (got -1)"),
    C("causality-min-entropy-rise-0", *CAUS, "--min-entropy-rise", "0", expect="--min-entropy-rise must be > 0 (got 0)"),
    C("causality-rank-drop-2", *CAUS, "--rank-drop", "2", expect="--rank-drop must be in (0, 1) (got 2)"),
    C("causality-level-1", *CAUS, "--level", "1", expect="--level must be in (0, 1) (got 1)"),
    C("causality-n-boot-0", *CAUS, "--n-boot", "0", expect="--n-boot must be >= 1 (got 0)"),
    C("causality-low-rank-linear-1", *CAUS, "--low-rank-linear", "1", expect="--low-rank-linear must be in (0, 1) (got 1)"),
    # Ray task resources without --ray (train, downstream, rank-probe: the shared grid executor options)
    C("train-cpus-per-task-without-ray", *TRAIN, "--cpus-per-task", "2", expect="--cpus-per-task apply to Ray tasks"),
    C("downstream-gpus-per-task-without-ray", *DOWN, "--gpus-per-task", "1", expect="--cpus-per-task apply to Ray tasks"),
    C("rank-probe-cpus-per-task-without-ray", *PROBE, "--cpus-per-task", "2", expect="--cpus-per-task apply to Ray tasks"),
    C("causality-no-records", *CAUS, expect="no sweep or train records"),
]
# downstream, report, demo, fetch-assets, the app itself
CASES += [
    C("downstream-nothing-to-evaluate", "downstream", expect="nothing to evaluate"),
    C("downstream-missing-run-dir", "downstream", "{root}/nope", expect="does not exist"),
    C("downstream-batch-size-0", *DOWN, "--batch-size", "0", expect="--batch-size must be >= 1"),
    C("downstream-bootstrap-negative", *DOWN, "--bootstrap-iters", "-1", expect="--bootstrap-iters must be >= 0"),
    C("downstream-device-tpu", *DOWN, "--device", "tpu", expect="--device must be one of"),
    C("downstream-dtype-float8", *DOWN, "--dtype", "float8", expect="--dtype must be one of"),
    C("report-missing-run-dir", "report", "{root}/nope", "-o", "{out}/r.html", expect="does not exist", output=False),
    C("report-unknown-format", "report", "{rundir}", "-o", "{out}/r.txt", expect="cannot tell the report format", output=False),
    C("report-markdown-with-html-name", "report", "{rundir}", "--markdown", "-o", "{out}/r.html", expect="--markdown", output=False),
    C("demo-device-tpu", "demo", "--quick", "--device", "tpu", expect="--device must be one of"),
    C("fetch-assets-unknown-name", "fetch-assets", "everything", expect="unknown asset everything", output=False),
    C("fetch-assets-cache-under-a-file", "fetch-assets", "brown", expect="is a file", output=False, pre_file=True,
      cache="{out}/afile/cache"),
    C("fetch-assets-cache-immutable", "fetch-assets", "kjv", expect="cannot be written", output=False, needs="immutable_dir",
      cache="{immutable_dir}/cache"),
    C("fetch-assets-cache-read-only-fs", "fetch-assets", "gpt2-bpe", expect="read-only filesystem", output=False,
      needs="readonly_dir", cache="{readonly_dir}/cache"),
    C("unknown-command", "frobnicate", expect="No such command 'frobnicate'", output=False),
]


def _fill(arg: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        arg = arg.replace("{" + name + "}", value)
    return arg


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


if _no_cuda():
    CASES += [
        C("anisotropy-device-cuda-without-gpu", *ANISO, "--device", "cuda", expect="no CUDA GPU is visible"),
        C("sweep-device-cuda-without-gpu", *SWEEP, "--device", "cuda", expect="no CUDA GPU is visible"),
    ]


def test_the_battery_is_large_and_its_cases_distinct():
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({c.argv for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_error_line_exit_2_and_writes_nothing(case: Case, env, cli, tmp_path, request, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    values = {**env, "out": str(out)}
    if case.needs:
        values[case.needs] = request.getfixturevalue(case.needs)
    if case.pre_file:
        (out / "afile").write_text("keep me\n")
    argv = [_fill(a, values) for a in case.argv]
    if case.cache:
        monkeypatch.setenv("LMSAT_CACHE", _fill(case.cache, values))
    if case.output and "-o" not in argv:
        argv += ["-o", str(out / "run")]
    before = snapshot(out, Path(env["root"]))
    res = cli(*argv)
    assert_user_error(res, [out, Path(env["root"])], case.expect, before=before)
    if case.pre_file:
        assert (out / "afile").read_text() == "keep me\n"


# --- warnings that are not errors, Ctrl-C, a sweep where everything failed ---------------------


def test_undecodable_bytes_are_replaced_the_same_way_in_text_jsonl_and_parquet_with_one_warning(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmsat.loading.corpus import CorpusSpec, iter_documents

    body = "caf\xe9 na\xefve".encode("latin-1")  # two latin-1 bytes, not UTF-8
    (tmp_path / "a.txt").write_bytes(b"one " + body + b" two\n")
    (tmp_path / "a.jsonl").write_bytes(b'{"text": "one ' + body + b' two\\n"}\n')
    pq.write_table(pa.table({"text": pa.array([b"one " + body + b" two\n"], type=pa.binary())}), tmp_path / "a.parquet")
    texts = {}
    for name in ("a.txt", "a.jsonl", "a.parquet"):
        capsys.readouterr()
        texts[name] = list(iter_documents(CorpusSpec(str(tmp_path / name))))
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("lmsat: warning: ") and " 2 undecodable byte(s)" in err[0], err
    expected = ["one caf\ufffd na\ufffdve two\n"]
    assert texts["a.txt"] == texts["a.jsonl"] == texts["a.parquet"] == expected


def test_a_mostly_binary_corpus_gets_a_warning(tmp_path, capsys):
    from lmsat.loading.corpus import CorpusSpec, iter_documents

    blob = bytes(range(256)) * 64
    (tmp_path / "blob.txt").write_bytes(blob)
    capsys.readouterr()
    list(iter_documents(CorpusSpec(str(tmp_path / "blob.txt"))))
    err = capsys.readouterr().err
    # 128 bytes >= 0x80 are not UTF-8 and 29 are control characters (not tab/newline), of every 256
    assert f"{128 * 64:,} undecodable byte(s)" in err
    assert "looks mostly binary: 61%" in err


def test_ctrl_c_prints_one_line_exits_130_and_leaves_no_partial_file(env, cli, tmp_path):
    out = tmp_path / "run"
    argv = [*(_fill(a, env) for a in TRAIN[:5]), "--hidden-sizes", "8", "--steps", "100000", "--warmup", "1",
            "--seq-len", "16", "--batch-size", "2", "--eval-tokens", "64", "--checkpoint-every", "1000", "--device", "cpu",
            "-o", str(out)]
    timer = threading.Timer(4.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        res = cli(*argv)
    finally:
        timer.cancel()
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.code == 130, res.stderr[-2000:]
    assert lines[-1] == "lmsat: error: interrupted; finished results are kept: run the same command again to resume."
    assert sum(line.startswith("lmsat: error:") for line in lines) == 1
    assert "Traceback" not in res.stderr
    assert not [p for p in files_under(out) if p.name.endswith(".tmp")]


def test_a_sweep_where_every_checkpoint_failed_exits_1_with_the_failures(env, cli, tmp_path):
    suite = tmp_path / "broken" / "m"
    for step in (0, 1):
        folder = suite / f"step{step}"
        shutil.copytree(env["gpt2"], folder)
        (folder / "model.safetensors").write_bytes(b"not weights")
    res = cli("sweep", suite, "-d", env["data"], "--tokens", "64", "--seq-len", "16", "--device", "cpu", "-o", tmp_path / "run")
    assert res.code == 1, res.stderr[-2000:]
    assert res.stdout.count("failed: ") >= 2
    assert "lmsat: error: every checkpoint failed (2 of 2)" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_markdown_report_escapes_html_in_a_model_name(env, cli, tmp_path):
    model = tmp_path / "<script>alert(1)<\\script>"
    shutil.copytree(env["gpt2"], model)
    run = tmp_path / "run"
    assert cli("head", model, "--device", "cpu", "-o", run).code == 0
    res = cli("report", run, "-o", tmp_path / "r.md")
    assert res.code == 0, res.stderr[-2000:]
    text = (tmp_path / "r.md").read_text()
    assert "&lt;script&gt;alert(1)" in text
    assert "<script>" not in text
