"""Checkpoint folders ``step<N>/``, the training state kept for resume, and ``metrics.jsonl``."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmsat.loading.tokenizers import TextTokenizer
from lmsat.store import atomic_open
from lmsat.loading.checkpoints import step_from_name
from lmsat.training.config import (
    METRICS,
    STATE_FILE,
    TRAIN_CONFIG,
)



# --- checkpoints ----------------------------------------------------------------------------


def list_checkpoints(model_dir: str | Path) -> dict[int, Path]:
    """Complete checkpoint folders ``step<N>`` (config and weights present), by step."""
    model_dir = Path(model_dir)
    out: dict[int, Path] = {}
    if not model_dir.is_dir():
        return out
    for p in model_dir.iterdir():
        step = step_from_name(p.name)  # the one checkpoint-name parser (training writes step<N>)
        if step is not None and p.is_dir() and (p / "config.json").is_file() and (p / "model.safetensors").is_file():
            out[step] = p
    return dict(sorted(out.items()))


def save_checkpoint(model: Any, tokenizer: TextTokenizer, model_dir: Path, step: int, state: dict[str, Any]) -> Path:
    """Write ``step<N>/`` atomically (temporary folder, then rename).

    The training state stays in the two newest checkpoints: the previous one is kept until
    this one is complete, so a damaged newest checkpoint can fall back to it
    (:func:`load_resume_point`).
    """
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
    with_state = [s for s, folder in list_checkpoints(model_dir).items() if (folder / STATE_FILE).is_file() and s < step]
    for older_step in with_state[:-1]:  # all but the previous one
        (model_dir / f"step{older_step}" / STATE_FILE).unlink(missing_ok=True)
    return final


def training_state(optimizer: Any, step: int, elapsed: float, running_loss: tuple[float, int] = (0.0, 0)) -> dict[str, Any]:
    """What a resume needs besides the weights: optimizer, step, RNG, elapsed time, the running loss (sum, count)."""
    import torch

    state: dict[str, Any] = {"step": step, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
                             "elapsed_s": elapsed, "running_loss": (float(running_loss[0]), int(running_loss[1]))}
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



# --- a model folder: identity, resume point, metrics log ------------------------------------


def check_identity(model_dir: Path, identity: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Refuse to continue a model folder trained with other settings, data or tokenizer.

    ``defaults``: the current default settings; settings added to lmsat after that run started
    count as their defaults.
    """
    from lmsat.errors import UserError

    config_path = model_dir / TRAIN_CONFIG
    if not config_path.is_file():
        return
    old = json.loads(config_path.read_text()).get("identity", {})
    old.setdefault("settings", {}).update({k: v for k, v in defaults.items() if k not in old["settings"]})
    if old != json.loads(json.dumps(identity)):
        diff = sorted(k for k in set(old.get("settings", {})) | set(identity["settings"])
                      if old.get("settings", {}).get(k) != identity["settings"].get(k))
        what = f"settings {', '.join(diff)}" if diff else "data or tokenizer"
        raise UserError(
            f"'{model_dir}' was trained with different {what}; use another -o folder, or --force to retrain from scratch."
        )


@dataclass
class ResumePoint:
    """Where an interrupted run continues: the model and optimizer of checkpoint ``step``."""

    step: int
    model: Any
    optimizer_state: dict[str, Any]
    elapsed: float
    running_loss: tuple[float, int]  # (sum, count) of the training losses since the last log line


def load_resume_point(model_dir: Path, model_name: str, build: Any = None) -> ResumePoint | None:
    """The newest checkpoint that can be resumed from, or None for a fresh start (no checkpoint).

    A newest checkpoint whose training state or weights are missing, truncated or refused
    falls back to the previous one, with one warning line; the damaged folders past the
    resume point are removed (training writes them again). ``build()`` makes an empty model
    whose weights are then loaded from ``model.safetensors`` (heads that Hugging Face cannot
    rebuild); else ``AutoModelForCausalLM.from_pretrained``.
    """
    from lmsat.errors import UserError
    from lmsat.store import warn

    checkpoints = list_checkpoints(model_dir)
    if not checkpoints:
        return None
    newest_dir = checkpoints[max(checkpoints)]
    problems: list[str] = []
    for step in sorted(checkpoints, reverse=True):
        folder = checkpoints[step]
        if not (folder / STATE_FILE).is_file():
            if problems:  # states are kept in the two newest checkpoints only: nothing older to try
                break
            raise UserError(f"'{folder}' has no {STATE_FILE} to resume from; use --force to retrain {model_name} from scratch.")
        try:
            point = _load_point(folder, build)
        except Exception as exc:  # noqa: BLE001 - a torn file, a refused pickle, bad safetensors: try the previous one
            problems.append(f"'{folder}' ({type(exc).__name__})")
            continue
        if problems:
            warn(f"cannot resume from {', '.join(problems)}; continuing from step {step} instead.")
            for later, later_dir in checkpoints.items():
                if later > step:
                    shutil.rmtree(later_dir, ignore_errors=True)
        return point
    raise UserError(
        f"no checkpoint of {model_name} can be resumed from ({', '.join(problems) or newest_dir}); "
        f"use --force to retrain {model_name} from scratch."
    )


def _own_names(model: Any, saved: dict[str, Any]) -> dict[str, Any]:
    """Saved weights under the model's own parameter names: Hugging Face saves some heads under a
    legacy module name (GPT-NeoX's ``lm_head`` as ``embed_out``); the head's parameters are renamed back."""
    head = model.get_output_embeddings()
    name = next(n for n, m in model.named_modules() if m is head)
    expected = set(model.state_dict())
    by_tail = {k.split(".", 1)[1]: k for k in saved if k not in expected and "." in k}
    out = dict(saved)
    for key in expected - set(saved):
        tail = key[len(name) + 1 :] if key.startswith(name + ".") else None
        if tail in by_tail:
            out[key] = out.pop(by_tail[tail])
    return out


def _load_point(folder: Path, build: Any) -> ResumePoint:
    import torch

    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if build is None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    else:
        from safetensors.torch import load_file

        model = build()
        model.load_state_dict(_own_names(model, load_file(str(folder / "model.safetensors"))), strict=True)
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    running = state.get("running_loss", (0.0, 0))
    return ResumePoint(int(state["step"]), model, state["optimizer"], float(state.get("elapsed_s", 0.0)),
                       (float(running[0]), int(running[1])))


def restart_metrics(model_dir: Path, upto: int) -> Path:
    """Keep the lines of ``metrics.jsonl`` up to step ``upto`` (those written after the resume point go)."""
    path = model_dir / METRICS
    kept = _read_metrics(path, upto=upto)
    with atomic_open(path) as fh:
        fh.writelines(json.dumps(row) + "\n" for row in kept)
    return path


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as out:
        out.write(json.dumps(row) + "\n")
