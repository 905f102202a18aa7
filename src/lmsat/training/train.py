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

Modules (nanoGPT-style): :mod:`lmsat.training.config` (settings and schedules),
:mod:`lmsat.training.data`, :mod:`lmsat.training.model` (config, optimizer, evaluation),
:mod:`lmsat.training.checkpoints` (folders, training state, metrics log) and
:mod:`lmsat.training.loop` (the loop, the family, the table). This module re-exports them.
"""

from lmsat.training.checkpoints import (
    list_checkpoints,
    read_metrics,
    save_checkpoint,
    training_state,
)
from lmsat.training.config import (
    ARCHS,
    KIND,
    METRICS,
    STATE_FILE,
    TRAIN_CONFIG,
    TrainConfig,
    checkpoint_steps,
    lr_at,
)
from lmsat.training.data import (
    FamilyInputs,
    TrainingData,
    batch_indices,
    prepare_data,
    resolve_inputs,
    spread,
    token_stream,
    windows_of,
)
from lmsat.training.loop import (
    train_family,
    train_model,
    train_step,
)
from lmsat.training.model import (
    EvalResult,
    build_model,
    count_params,
    evaluate,
    make_optimizer,
    model_config,
    rotary_fraction,
)

__all__ = [
    "ARCHS", "KIND", "METRICS", "STATE_FILE", "TRAIN_CONFIG", "EvalResult", "FamilyInputs", "TrainConfig", "TrainingData",
    "batch_indices", "build_model", "checkpoint_steps", "count_params", "evaluate", "list_checkpoints",
    "lr_at", "make_optimizer", "model_config", "prepare_data", "read_metrics", "resolve_inputs",
    "rotary_fraction", "save_checkpoint", "spread", "token_stream", "train_family", "train_model", "train_step",
    "training_state", "windows_of",
]
