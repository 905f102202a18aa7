"""Train families of small causal LMs with Pythia-like checkpoints that every lmsat command reads.

One model per hidden size d, all else equal. The recipe, in the order a step runs:

* **Model.** GPT-NeoX like Pythia by default (parallel residual, rotary on 25% of each
  head's dimensions, at least 2, untied input and output embeddings, GELU MLP of 4d, no
  dropout), or Llama (RMSNorm, SwiGLU MLP of about 8d/3, untied head). Weights are
  initialised by transformers from ``torch.manual_seed(seed)``.
* **Data.** The corpus is read with :func:`lmsat.loading.corpus.iter_documents` and tokenised
  with the given tokenizer into one stream, each document followed by the tokenizer's eos
  token (as :mod:`lmsat.loading.tokens` does). The stream is cut into windows of
  ``seq_len + 1`` tokens with stride ``seq_len`` (inputs = window[:-1], targets =
  window[1:], so every token but the first is a target once per epoch). Sample j = step *
  batch_size + b is window perm_e[j mod n] of epoch e = j // n, perm_e a permutation
  seeded by (seed, e): the batch of a step is a function of the step alone, so a resumed
  run sees exactly the batches an uninterrupted run would.
* **Held-out loss.** On ``eval_tokens`` tokens of windows spread evenly over a separate
  held-out corpus (``eval_data``; by default the ``heldout/`` folder of a language written by
  ``lmsat synth``), or else over the last windows of the stream, which are then not trained on.
* **Optimiser.** AdamW (betas 0.9, 0.95; weight decay on matrices only, not on biases and norm
  gains), gradient clipping at ``grad_clip`` (global L2 norm), learning rate
  :func:`lr_at`: linear warm-up to ``lr`` over ``warmup`` steps, then cosine decay to
  ``min_lr_ratio * lr`` at the last step. bf16 autocast on CUDA, float32 on CPU.
* **Checkpoints** at :func:`checkpoint_steps` (step0, 1, 2, 4, ... below ``checkpoint_every``,
  then every ``checkpoint_every`` steps and the last step), each a standard Hugging Face folder
  ``OUT/<model>/step<N>/`` (config.json, model.safetensors, tokenizer files) written in a
  temporary folder and renamed into place. The newest checkpoint also holds
  ``training_state.pt`` (optimizer state, step, RNG state, elapsed time; plain tensors and
  numbers, loadable with ``torch.load(weights_only=True)``), removed from older ones.
* **Resume.** Re-running the same command continues from the newest checkpoint: same
  step count, same batches, same schedule; log lines written after that checkpoint are
  dropped first. Different settings in the same folder are refused (use ``force``).
* **Logs.** ``OUT/<model>/metrics.jsonl``: one line per ``log_every`` steps (train loss
  averaged since the last line, lr, grad norm, tokens seen) and one per checkpoint
  (held-out loss, last-layer anisotropy, LM-head singular values, singular entropy and
  effective rank; the paired gap to the true entropy for a synthetic language).
  ``OUT/<model>/train_config.json`` holds the settings, ``tokens_per_step`` and
  ``n_params``; the finished model gets a ``train`` record in ``OUT/train/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lmsat import __version__
from lmsat.training.schedule import warmup_cosine
from lmsat.errors import UserError
from lmsat.loading.corpus import CorpusSpec, iter_documents, resolve_files
from lmsat.loading.tokenizers import TextTokenizer
from lmsat.store import Record, Store, atomic_open, atomic_write_json

KIND = "train"
ARCHS: tuple[str, ...] = ("gpt-neox", "llama")
TRAIN_CONFIG = "train_config.json"
METRICS = "metrics.jsonl"
STATE_FILE = "training_state.pt"
_STEP_DIR = re.compile(r"^step(\d+)$")
_ENCODE_BATCH = 64


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one model's training (see module docstring); ``hidden_size`` is d."""

    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    arch: str = "gpt-neox"
    seq_len: int = 64
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100
    eval_tokens: int = 16384
    max_tokens: int | None = None
    log_every: int = 10
    device: str = "auto"

    @property
    def model_name(self) -> str:
        """Folder name of the model: ``<arch>-d<hidden>-l<layers>`` (e.g. ``gpt-neox-d64-l2``)."""
        return f"{self.arch}-d{self.hidden_size}-l{self.layers}"

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def settings(self) -> dict[str, Any]:
        """Everything that determines the trained weights (the device is left out)."""
        out = asdict(self)
        out.pop("device")
        return out

    def validate(self) -> None:
        """Raise :class:`UserError` for settings that cannot train."""
        if self.arch not in ARCHS:
            raise UserError(f"--arch must be one of {', '.join(ARCHS)} (got '{self.arch}').")
        positive = {"--hidden-sizes": self.hidden_size, "--layers": self.layers, "--heads": self.heads, "--steps": self.steps,
                    "--batch-size": self.batch_size, "--checkpoint-every": self.checkpoint_every,
                    "--eval-tokens": self.eval_tokens, "--log-every": self.log_every}
        for name, value in positive.items():
            if value < 1:
                raise UserError(f"{name} must be >= 1 (got {value}).")
        if self.hidden_size % self.heads:
            raise UserError(
                f"hidden size {self.hidden_size} is not divisible by --heads {self.heads}; "
                "pick hidden sizes that are multiples of the number of heads."
            )
        if self.seq_len < 2:
            raise UserError(f"--seq-len must be >= 2 (got {self.seq_len}).")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"--lr must be a positive number (got {self.lr}).")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"--min-lr-ratio must be in [0, 1] (got {self.min_lr_ratio}).")
        if not 0 <= self.warmup <= self.steps:
            raise UserError(f"--warmup must be between 0 and --steps {self.steps} (got {self.warmup}).")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise UserError(f"--max-tokens must be >= 2 (got {self.max_tokens}).")
        if self.weight_decay < 0 or self.grad_clip <= 0:
            raise UserError(f"--weight-decay must be >= 0 and --grad-clip > 0 (got {self.weight_decay} and {self.grad_clip}).")


# --- schedules (pure) -----------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of update ``step`` (0-based): ``cfg.lr`` times :func:`warmup_cosine`
    (linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_ratio * lr``)."""
    return cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup, cfg.min_lr_ratio)


def checkpoint_steps(steps: int, every: int) -> list[int]:
    """Pythia-like schedule: 0, the powers of two below ``every``, the multiples of ``every`` up to ``steps``, and ``steps``."""
    out = {0, steps}
    p = 1
    while p < min(every, steps):
        out.add(p)
        p *= 2
    out.update(range(every, steps + 1, every))
    return sorted(out)


def batch_indices(step: int, batch_size: int, n_windows: int, seed: int) -> np.ndarray:
    """Window indices of the batch of update ``step``: epoch-wise permutations seeded by (seed, epoch)."""
    j = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
    epochs, pos = j // n_windows, j % n_windows
    out = np.empty(batch_size, dtype=np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([int(seed), int(e)]).permutation(n_windows)
        out[epochs == e] = perm[pos[epochs == e]]
    return out


# --- data -----------------------------------------------------------------------------------


def token_stream(corpus: CorpusSpec, tokenizer: TextTokenizer, max_tokens: int | None = None) -> np.ndarray:
    """The corpus as one int64 stream: each document's ids followed by the eos id (if any).

    Read whole into memory, or only its first ``max_tokens`` tokens (documents in corpus order).
    """
    parts: list[np.ndarray] = []
    batch: list[str] = []
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    count = 0

    def flush() -> None:
        nonlocal count
        for ids in tokenizer.encode_batch(batch):
            if ids:
                parts.append(np.asarray(list(ids) + eos, dtype=np.int64))
                count += len(parts[-1])
        batch.clear()

    for doc in iter_documents(corpus):
        batch.append(doc)
        if len(batch) >= _ENCODE_BATCH:
            flush()
            if max_tokens is not None and count >= max_tokens:
                break
    flush()
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return stream[:max_tokens] if max_tokens is not None else stream


def windows_of(stream: np.ndarray, seq_len: int) -> np.ndarray:
    """(n, seq_len + 1) view of the stream: windows of seq_len + 1 tokens with stride seq_len."""
    n = (len(stream) - 1) // seq_len
    if n < 1:
        return np.zeros((0, seq_len + 1), dtype=stream.dtype)
    return np.lib.stride_tricks.sliding_window_view(stream, seq_len + 1)[: n * seq_len : seq_len]


def spread(n_total: int, n_pick: int) -> np.ndarray:
    """``n_pick`` indices spread evenly over range(n_total)."""
    return np.unique(np.linspace(0, n_total - 1, num=min(n_pick, n_total)).round().astype(np.int64))


@dataclass
class TrainingData:
    """Training windows, held-out windows, and what they were made from."""

    train: np.ndarray  # (n_train, L + 1)
    eval: np.ndarray  # (n_eval, L + 1)
    eval_reference: np.ndarray | None  # (n_eval, L) true -ln p of each target (NaN where unknown), synthetic languages
    info: dict[str, Any]


def _stream_hash(stream: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(stream, dtype=np.int64).tobytes()).hexdigest()[:16]


def prepare_data(
    corpus: CorpusSpec,
    tokenizer: TextTokenizer,
    seq_len: int,
    eval_tokens: int,
    eval_corpus: CorpusSpec | None = None,
    max_tokens: int | None = None,
) -> TrainingData:
    """Tokenise, window and split the data (module docstring); clear errors when there is too little.

    ``max_tokens`` caps the training stream (the first tokens of the corpus), for corpora too
    large to hold in memory or streamed hub datasets.
    """
    stream = token_stream(corpus, tokenizer, max_tokens)
    if len(stream) == 0:
        raise UserError(f"corpus '{corpus.source}' contains no text; point --data at files with content.")
    all_windows = windows_of(stream, seq_len)
    n_eval = math.ceil(eval_tokens / seq_len)
    info: dict[str, Any] = {"corpus": corpus.describe(), "tokens": int(len(stream)), "stream_hash": _stream_hash(stream)}
    reference = None
    if eval_corpus is not None:
        eval_stream = token_stream(eval_corpus, tokenizer)
        eval_windows = windows_of(eval_stream, seq_len)
        if len(eval_windows) < 1:
            raise UserError(f"held-out corpus '{eval_corpus.source}' has fewer than --seq-len + 1 = {seq_len + 1} tokens; give more text.")
        pick = spread(len(eval_windows), n_eval)
        eval_windows, train_windows = eval_windows[pick], all_windows
        info.update(eval_corpus=eval_corpus.describe(), eval_stream_hash=_stream_hash(eval_stream))
        reference = _synthetic_reference(eval_corpus, eval_stream, tokenizer, seq_len, pick)
    else:
        if len(all_windows) < n_eval + 1:
            raise UserError(
                f"corpus '{corpus.source}' has {len(stream)} tokens: not enough for {n_eval} held-out windows of --seq-len "
                f"{seq_len} plus training; lower --eval-tokens or --seq-len, or give --eval-data."
            )
        eval_windows, train_windows = all_windows[-n_eval:], all_windows[:-n_eval]
        info["eval_corpus"] = "last windows of --data (not trained on)"
    if len(train_windows) < 1:
        raise UserError(f"corpus '{corpus.source}' has fewer than --seq-len + 1 = {seq_len + 1} tokens; use a shorter --seq-len or more text.")
    info.update(train_windows=int(len(train_windows)), eval_windows=int(len(eval_windows)), eval_targets=int(eval_windows.shape[0] * seq_len))
    return TrainingData(train=train_windows, eval=np.ascontiguousarray(eval_windows), eval_reference=reference, info=info)


def _synthetic_reference(
    eval_corpus: CorpusSpec, eval_stream: np.ndarray, tokenizer: TextTokenizer, seq_len: int, pick: np.ndarray
) -> np.ndarray | None:
    """True -ln p of each held-out target when the held-out corpus is a synthetic language's ``heldout/``."""
    from lmsat.experiments.synth import heldout_reference

    per_token = heldout_reference(eval_corpus.source, eval_stream, tokenizer.eos_id)
    if per_token is None:
        return None
    return windows_of(per_token, seq_len)[pick][:, 1:].copy()


# --- model ----------------------------------------------------------------------------------


def rotary_fraction(head_dim: int) -> float:
    """Pythia's 25% of each head's dimensions, raised so that at least 2 dimensions rotate."""
    if head_dim < 2:
        return 0.25
    return min(1.0, max(0.25, 2.0 / head_dim))


def model_config(cfg: TrainConfig, vocab_size: int, eos_id: int | None) -> Any:
    """The transformers config of one model of the family (see module docstring)."""
    from transformers import GPTNeoXConfig, LlamaConfig

    d = cfg.hidden_size
    common = dict(
        vocab_size=vocab_size, hidden_size=d, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        max_position_embeddings=max(2048, cfg.seq_len), tie_word_embeddings=False, bos_token_id=eos_id,
        eos_token_id=eos_id, initializer_range=0.02,
    )
    if cfg.arch == "gpt-neox":
        return GPTNeoXConfig(**common, intermediate_size=4 * d, rotary_pct=rotary_fraction(d // cfg.heads),
                             use_parallel_residual=True, hidden_dropout=0.0, attention_dropout=0.0,
                             architectures=["GPTNeoXForCausalLM"])
    return LlamaConfig(**common, intermediate_size=8 * (-(-8 * d // 3) // 8), num_key_value_heads=cfg.heads,
                       architectures=["LlamaForCausalLM"])


def build_model(cfg: TrainConfig, vocab_size: int, eos_id: int | None) -> Any:
    """A freshly initialised model, weights drawn after ``torch.manual_seed(cfg.seed)``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(cfg.seed)
    return AutoModelForCausalLM.from_config(model_config(cfg, vocab_size, eos_id))


def count_params(model: Any) -> tuple[int, int]:
    """(all parameters, parameters outside the input embedding and the LM head)."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    return int(total), int(total - emb)


def make_optimizer(model: Any, cfg: TrainConfig) -> Any:
    """AdamW, betas (0.9, 0.95); weight decay on parameters with >= 2 dimensions only."""
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)


# --- evaluation -----------------------------------------------------------------------------


@dataclass
class EvalResult:
    eval_loss: float  # mean -ln q over all held-out targets, nats/token
    last_layer_anisotropy: float
    head_singular_values: np.ndarray
    reference_entropy: float | None = None  # mean true -ln p over the targets it is known for
    gap: float | None = None  # mean (-ln q + ln p) over those same targets
    gap_standard_error: float | None = None  # std(-ln q + ln p) / sqrt(n) over those targets

    def as_json(self) -> dict[str, Any]:
        from lmsat.measure.spectrum import effective_rank, singular_entropy

        s = self.head_singular_values
        return {
            "eval_loss": self.eval_loss,
            "reference_entropy": self.reference_entropy,
            "gap": self.gap,
            "gap_standard_error": self.gap_standard_error,
            "last_layer_anisotropy": self.last_layer_anisotropy,
            "head_singular_entropy": singular_entropy(s),
            "head_effective_rank": effective_rank(s),
            "head_singular_values": [float(x) for x in s],
        }


def evaluate(model: Any, data: TrainingData, batch_size: int, device: str) -> EvalResult:
    """Held-out loss, the paired gap to the true entropy (when known), last-layer anisotropy, head spectrum.

    The last layer is what the LM head sees: the base model's last hidden state (after the final norm).
    """
    import torch
    import torch.nn.functional as F

    from lmsat.measure.anisotropy import AnisotropyAccumulator
    from lmsat.measure.spectrum import singular_values

    was_training = model.training
    model.eval()
    head = model.get_output_embeddings()
    acc = AnisotropyAccumulator()
    losses = []
    with torch.inference_mode(), _autocast(device):
        for start in range(0, len(data.eval), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(data.eval[start : start + batch_size])).to(device)
            h = model.base_model(input_ids=x[:, :-1]).last_hidden_state
            acc.update(h.float())
            logits = head(h).float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none")
            losses.append(nll.reshape(x.shape[0], -1).double().cpu().numpy())
    model.train(was_training)
    nll = np.concatenate(losses)
    result = EvalResult(eval_loss=float(nll.mean()), last_layer_anisotropy=acc.value,
                        head_singular_values=singular_values(head.weight))
    if data.eval_reference is not None:
        known = np.isfinite(data.eval_reference)
        if known.any():
            diff = nll[known] - data.eval_reference[known]
            result.reference_entropy = float(data.eval_reference[known].mean())
            result.gap = float(diff.mean())
            result.gap_standard_error = float(diff.std() / np.sqrt(diff.size))
    return result


def _autocast(device: str) -> Any:
    import contextlib

    import torch

    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- checkpoints ----------------------------------------------------------------------------


def list_checkpoints(model_dir: str | Path) -> dict[int, Path]:
    """Complete checkpoint folders ``step<N>`` (config and weights present), by step."""
    model_dir = Path(model_dir)
    out: dict[int, Path] = {}
    if not model_dir.is_dir():
        return out
    for p in model_dir.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / "config.json").is_file() and (p / "model.safetensors").is_file():
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def save_checkpoint(model: Any, tokenizer: TextTokenizer, model_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``step<N>/`` atomically (temporary folder, then rename); keep the training state only in the newest."""
    import torch

    final = model_dir / f"step{step}"
    tmp = model_dir / f".tmp-step{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.backend.save_pretrained(str(tmp))
    torch.save(state, tmp / STATE_FILE)
    if final.exists():  # a checkpoint of an abandoned run past the resume point
        shutil.rmtree(final)
    os.replace(tmp, final)
    for older_step, older in list_checkpoints(model_dir).items():
        if older_step != step:
            (older / STATE_FILE).unlink(missing_ok=True)
    return final


def _training_state(optimizer: Any, step: int, elapsed: float) -> dict[str, Any]:
    import torch

    state: dict[str, Any] = {"step": step, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(), "elapsed_s": elapsed}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def _read_metrics(path: Path, upto: int) -> list[dict[str, Any]]:
    """Parsed metric lines with step <= ``upto`` (a torn last line from a kill is dropped)."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("step", upto + 1) <= upto:
                rows.append(row)
    return rows


def read_metrics(model_dir: str | Path) -> list[dict[str, Any]]:
    """Every line of a model's ``metrics.jsonl``."""
    return _read_metrics(Path(model_dir) / METRICS, upto=2**62)


# --- training -------------------------------------------------------------------------------


@dataclass
class FamilyInputs:
    """What every model of a family shares: the corpus, held-out corpus and tokenizer."""

    corpus: CorpusSpec
    eval_corpus: CorpusSpec | None
    tokenizer: TextTokenizer


def resolve_inputs(
    data: str | Path | CorpusSpec, tokenizer: str | Path | TextTokenizer, eval_data: str | Path | CorpusSpec | None = None
) -> FamilyInputs:
    """Check the corpus, held-out corpus and tokenizer (clear errors); the default held-out corpus of a language."""
    from lmsat.experiments.synth import HELDOUT, language_for_corpus
    from lmsat.loading.tokenizers import load_tokenizer

    corpus = data if isinstance(data, CorpusSpec) else CorpusSpec(source=str(data))
    if not corpus.is_hub_dataset:
        resolve_files(corpus.source)
    if eval_data is None and not corpus.is_hub_dataset and language_for_corpus(corpus.source) is not None:
        candidate = Path(corpus.source).expanduser().parent / HELDOUT
        if candidate.is_dir():
            eval_data = candidate
    eval_corpus = None
    if eval_data is not None:
        eval_corpus = eval_data if isinstance(eval_data, CorpusSpec) else CorpusSpec(source=str(eval_data))
        if not eval_corpus.is_hub_dataset:
            resolve_files(eval_corpus.source)
    tok = tokenizer if isinstance(tokenizer, TextTokenizer) else load_tokenizer(str(tokenizer))
    if tok.kind == "tiktoken":
        raise UserError(
            f"tokenizer '{tok.name}' is a tiktoken file, which cannot be saved into Hugging Face checkpoints; "
            "give a Hugging Face tokenizer folder or id (e.g. the tokenizer/ folder written by lmsat synth)."
        )
    return FamilyInputs(corpus=corpus, eval_corpus=eval_corpus, tokenizer=tok)


def train_model(
    cfg: TrainConfig,
    inputs: FamilyInputs,
    data: TrainingData,
    output: str | Path,
    force: bool = False,
) -> Record:
    """Train (or resume, or skip when finished) one model; returns its ``train`` record.

    Writes ``output/<model_name>/`` (checkpoints, metrics.jsonl, train_config.json) and
    ``output/train/<model_name>.json``. See the module docstring for the recipe.
    """
    import torch
    import torch.nn.functional as F

    from transformers.utils import logging as hf_logging

    from lmsat.loading.models import resolve_device
    from lmsat.progress import track

    hf_logging.disable_progress_bar()
    cfg.validate()
    device = resolve_device(cfg.device)
    output = Path(output)
    store = Store(output)
    model_dir = output / cfg.model_name
    tok = inputs.tokenizer
    schedule = checkpoint_steps(cfg.steps, cfg.checkpoint_every)
    identity = {
        "settings": cfg.settings(),
        "data": {k: data.info[k] for k in ("corpus", "tokens", "stream_hash", "eval_corpus")},
        "tokenizer_fingerprint": tok.fingerprint,
        "vocab_size": tok.vocab_size,
    }
    if force:
        shutil.rmtree(model_dir, ignore_errors=True)
        store.delete(KIND, cfg.model_name)
    config_path = model_dir / TRAIN_CONFIG
    if config_path.is_file():
        previous = json.loads(config_path.read_text())
        old = previous.get("identity", {})
        # settings added to lmsat after that run started count as their defaults
        old.setdefault("settings", {}).update({k: v for k, v in TrainConfig().settings().items() if k not in old["settings"]})
        if old != json.loads(json.dumps(identity)):
            diff = sorted(k for k in set(old.get("settings", {})) | set(identity["settings"])
                          if old.get("settings", {}).get(k) != identity["settings"].get(k))
            what = f"settings {', '.join(diff)}" if diff else "data or tokenizer"
            raise UserError(
                f"'{model_dir}' was trained with different {what}; use another -o folder, or --force to retrain from scratch."
            )
    done = store.get(KIND, cfg.model_name)
    if done is not None and config_path.is_file() and cfg.steps in list_checkpoints(model_dir):
        return done

    for stale in model_dir.glob(".tmp-step*") if model_dir.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)
    checkpoints = list_checkpoints(model_dir)
    start, elapsed = 0, 0.0
    optimizer_state = None
    if checkpoints:
        last_step, last_dir = max(checkpoints.items())
        if not (last_dir / STATE_FILE).is_file():
            raise UserError(
                f"'{last_dir}' has no {STATE_FILE} to resume from; use --force to retrain {cfg.model_name} from scratch."
            )
        from transformers import AutoModelForCausalLM

        state = torch.load(last_dir / STATE_FILE, map_location="cpu", weights_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(last_dir), dtype=torch.float32)
        start, elapsed, optimizer_state = int(state["step"]), float(state.get("elapsed_s", 0.0)), state["optimizer"]
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    else:
        model = build_model(cfg, tok.vocab_size, tok.eos_id)
    model.to(device)
    model.train()
    n_params, n_params_body = count_params(model)
    model_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(config_path, {
        "model_name": cfg.model_name,
        "tokens_per_step": cfg.tokens_per_step,
        "n_params": n_params,
        "n_params_non_embedding": n_params_body,
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.layers,
        "num_heads": cfg.heads,
        "arch": cfg.arch,
        "vocab_size": tok.vocab_size,
        "checkpoint_steps": schedule,
        "data": data.info,
        "tokenizer": tok.name,
        "lmsat_version": __version__,
        "identity": identity,
    })
    metrics_path = model_dir / METRICS
    kept = _read_metrics(metrics_path, upto=start)
    with atomic_open(metrics_path) as fh:
        fh.writelines(json.dumps(row) + "\n" for row in kept)

    optimizer = make_optimizer(model, cfg)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    params = [p for p in model.parameters()]
    vocab = tok.vocab_size
    session_start = time.perf_counter()
    run_loss = torch.zeros((), dtype=torch.float64, device=device)
    run_n, grad_norm = 0, float("nan")

    def log(row: dict[str, Any]) -> None:
        with open(metrics_path, "a") as out:
            out.write(json.dumps(row) + "\n")

    def checkpoint(step: int) -> None:
        ev = evaluate(model, data, cfg.batch_size, device)
        now = elapsed + time.perf_counter() - session_start
        log({"step": step, "tokens": step * cfg.tokens_per_step, **ev.as_json()})
        save_checkpoint(model, tok, model_dir, step, _training_state(optimizer, step, now))

    if start == 0 and 0 not in list_checkpoints(model_dir):
        checkpoint(0)
    for step in track(range(start, cfg.steps), f"train {cfg.model_name}", total=cfg.steps - start):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = torch.from_numpy(data.train[batch_indices(step, cfg.batch_size, len(data.train), cfg.seed)]).to(device)
        with _autocast(device):
            logits = model(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, vocab), x[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm_t = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimizer.step()
        run_loss += loss.detach().double()
        run_n += 1
        done_steps = step + 1
        if done_steps % cfg.log_every == 0 or done_steps == cfg.steps:
            grad_norm = float(grad_norm_t)
            log({"step": done_steps, "train_loss": float(run_loss) / run_n, "lr": lr, "grad_norm": grad_norm,
                 "tokens": done_steps * cfg.tokens_per_step,
                 "elapsed_s": round(elapsed + time.perf_counter() - session_start, 3)})
            run_loss.zero_()
            run_n = 0
        if done_steps in schedule:
            checkpoint(done_steps)
    wall = elapsed + time.perf_counter() - session_start
    return store.put(KIND, cfg.model_name, _record_inputs(cfg, inputs, data, device),
                     *_record_results(cfg, model_dir, n_params, n_params_body, wall))


def _record_inputs(cfg: TrainConfig, inputs: FamilyInputs, data: TrainingData, device: str) -> dict[str, Any]:
    return {
        "model": cfg.model_name,
        **cfg.settings(),
        "device": device,
        "tokens_per_step": cfg.tokens_per_step,
        "data": data.info,
        "tokenizer": inputs.tokenizer.name,
        "tokenizer_fingerprint": inputs.tokenizer.fingerprint,
        "lmsat_version": __version__,
    }


def _record_results(
    cfg: TrainConfig, model_dir: Path, n_params: int, n_params_body: int, wall: float
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Scalars and per-checkpoint arrays of a finished model, from its metrics.jsonl."""
    rows = read_metrics(model_dir)
    evals = {r["step"]: r for r in rows if "eval_loss" in r}
    trains = [r for r in rows if "train_loss" in r]
    steps = np.array(sorted(evals), dtype=np.int64)
    eval_loss = np.array([evals[s]["eval_loss"] for s in steps])
    best = int(np.argmin(eval_loss))
    final = evals[int(steps[-1])]
    tail = trains[-max(1, len(trains) // 10):]
    results: dict[str, Any] = {
        "model_dir": str(model_dir),
        "hidden_size": cfg.hidden_size,
        "n_params": n_params,
        "n_params_non_embedding": n_params_body,
        "steps": cfg.steps,
        "tokens": cfg.steps * cfg.tokens_per_step,
        "checkpoints": [f"step{s}" for s in steps],
        "final_train_loss": float(np.mean([r["train_loss"] for r in tail])) if tail else None,
        "final_eval_loss": float(eval_loss[-1]),
        "best_eval_loss": float(eval_loss[best]),
        "best_step": int(steps[best]),
        "relative_rise": float(eval_loss[-1] / eval_loss[best] - 1.0),
        "reference_entropy": final.get("reference_entropy"),
        "final_gap": final.get("gap"),
        "final_gap_standard_error": final.get("gap_standard_error"),
        "best_gap": min((evals[s]["gap"] for s in steps if evals[s].get("gap") is not None), default=None),
        "final_last_layer_anisotropy": final.get("last_layer_anisotropy"),
        "final_head_singular_entropy": final.get("head_singular_entropy"),
        "final_head_effective_rank": final.get("head_effective_rank"),
        "wall_seconds": wall,
        "tokens_per_second": cfg.steps * cfg.tokens_per_step / wall if wall > 0 else None,
    }
    arrays = {
        "checkpoint_steps": steps,
        "eval_loss": eval_loss,
        "gap": np.array([np.nan if evals[s].get("gap") is None else evals[s]["gap"] for s in steps]),
        "last_layer_anisotropy": np.array([evals[s]["last_layer_anisotropy"] for s in steps]),
        "head_singular_values": np.array([evals[s]["head_singular_values"] for s in steps]),
    }
    return results, arrays


def train_family(
    data: str | Path | CorpusSpec,
    tokenizer: str | Path | TextTokenizer,
    output: str | Path,
    hidden_sizes: Sequence[int],
    config: TrainConfig = TrainConfig(),
    eval_data: str | Path | CorpusSpec | None = None,
    force: bool = False,
) -> list[Record]:
    """Train one model per hidden size in ``hidden_sizes`` (all other settings from ``config``).

    ``data``/``eval_data``: anything ``--data`` accepts (file, folder, glob, ``hf:NAME``) or a
    :class:`CorpusSpec`; ``tokenizer``: a Hugging Face tokenizer folder or id. Every input is
    checked before anything is written. Finished models are skipped, interrupted ones resume.
    Returns the ``train`` records, in the order of ``hidden_sizes``.
    """
    if not hidden_sizes:
        raise UserError("--hidden-sizes is empty; give at least one hidden size, e.g. 16,32,64,128.")
    configs = [replace(config, hidden_size=int(d)) for d in hidden_sizes]
    for cfg in configs:
        cfg.validate()
    from lmsat.loading.models import resolve_device

    resolve_device(config.device)
    inputs = resolve_inputs(data, tokenizer, eval_data)
    prepared = prepare_data(inputs.corpus, inputs.tokenizer, config.seq_len, config.eval_tokens, inputs.eval_corpus,
                            max_tokens=config.max_tokens)
    return [train_model(cfg, inputs, prepared, output, force=force) for cfg in configs]


def family_table(records: list[Record]) -> Any:
    """One row per trained model (sorted by d): losses in nats/token, gap to the true entropy, saturation signs.

    ``rise`` = final / best held-out loss - 1; ``head_eff_rank`` = exp(H(s^2 / sum s^2)) of the
    LM head; ``anisotropy`` = last-layer anisotropy on held-out text (final checkpoint).
    """
    import pandas as pd

    rows = []
    for rec in sorted(records, key=lambda r: (r.results["hidden_size"], r.key)):
        res = rec.results
        rows.append({
            "model": rec.key, "d": res["hidden_size"], "params": res["n_params"], "steps": res["steps"],
            "final_loss": res["final_eval_loss"], "best_loss": res["best_eval_loss"], "best_step": res["best_step"],
            "rise": res["relative_rise"], "entropy": res.get("reference_entropy"), "gap": res.get("final_gap"),
            "best_gap": res.get("best_gap"), "head_eff_rank": res.get("final_head_effective_rank"),
            "anisotropy": res.get("final_last_layer_anisotropy"),
        })
    return pd.DataFrame(rows)


def parse_hidden_sizes(text: str) -> list[int]:
    """``"16,32,64"`` -> [16, 32, 64]; a clear error for anything else."""
    try:
        sizes = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise UserError(f"--hidden-sizes must be comma-separated integers such as 16,32,64,128 (got '{text}').") from None
    if not sizes or any(d < 1 for d in sizes):
        raise UserError(f"--hidden-sizes must be positive integers such as 16,32,64,128 (got '{text}').")
    if len(set(sizes)) != len(sizes):
        raise UserError(f"--hidden-sizes repeats a size (got '{text}').")
    return sizes
