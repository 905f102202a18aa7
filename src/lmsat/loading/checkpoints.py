"""Checkpoints over training: Pythia suites, revision sets, local checkpoint folders.

What a sweep measures is a list of :class:`SweepModel` (one per model), each with
its :class:`Checkpoint` list, built by :func:`expand_sweep` from what the user typed:

* **Suites.** ``pythia`` -> ``EleutherAI/pythia-<size>``, ``pythia-deduped`` ->
  ``EleutherAI/pythia-<size>-deduped``, sizes 14m 31m 70m 160m 410m 1b 1.4b 2.8b
  6.9b 12b (:data:`PYTHIA_SIZES`).
* **Revision sets** (``--revisions``, comma-separated, their union is taken):
  ``all`` (every checkpoint; for Pythia the 154 published steps step0, step1,
  step2, step4, ..., step512, step1000, step2000, ..., step143000), ``log``
  (step 0 and the powers of two: step0, step1, ..., step512), ``every:N`` (steps
  that are multiples of N, plus the last step), ``final`` (the last step),
  ``first`` (the first step), or explicit names / numbers (``step1000``,
  ``1000``, ``checkpoint-500``).
* **Local folders.** A folder of checkpoint sub-folders named ``stepN``,
  ``step-N``, ``step_N`` or ``checkpoint-N`` (as lmsat's trainer and the
  Hugging Face Trainer write them) is one model; a folder of such folders is a
  family of models. The step is read from the name. ``train_config.json`` in a
  model folder (written by lmsat's trainer) gives ``tokens_per_step`` and
  ``n_params``.
* **Other hub models.** Any other hub id works with explicit revisions; with
  ``all``/``log``/``every:N`` its branches are listed on the hub
  (:func:`hub_revisions`).

Everything here validates without loading weights, so a bad input fails before
anything is written. Hub helpers (:func:`hub_cached_commits`,
:func:`evict_hub_commit`) let a long hub sweep delete each checkpoint it
downloaded once measured, so 770 checkpoints do not fill the disk.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lmsat.errors import UserError

PYTHIA_SIZES: tuple[str, ...] = ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
SUITES: dict[str, str] = {
    "pythia": "EleutherAI/pythia-{size}",
    "pythia-deduped": "EleutherAI/pythia-{size}-deduped",
    "polypythias": "EleutherAI/pythia-{size}-seed{seed}",
}
#: PolyPythias (arXiv 2503.09543): 9 more seeds of the 5 smallest sizes, the same 154 revisions.
#: Seed 0 here is the original Pythia run (EleutherAI/pythia-<size>, trained with seed 1234).
POLYPYTHIAS_SIZES: tuple[str, ...] = ("14m", "31m", "70m", "160m", "410m")
POLYPYTHIAS_SEEDS: tuple[int, ...] = tuple(range(1, 10))
#: The 154 published Pythia checkpoints: step0, the powers of two 1..512, then every 1000 steps to 143000.
PYTHIA_STEPS: tuple[int, ...] = (0, *(2**i for i in range(10)), *range(1000, 143001, 1000))
#: Pythia batch: 1024 sequences x 2048 tokens.
PYTHIA_TOKENS_PER_STEP = 2_097_152
REVISION_SETS = ("all", "log", "final", "first", "every:N")
TRAIN_CONFIG = "train_config.json"

_PYTHIA_ID = re.compile(
    r"^EleutherAI/pythia-(?P<size>[0-9.]+[mb])(?P<deduped>-deduped)?(?:-(?:data-|weight-)?seed(?P<seed>\d+))?$", re.IGNORECASE
)
#: The one seed-suffix rule: PolyPythias' ``-seedN`` and lmsat train's ``-seedN`` / ``-weight-seedN`` /
#: ``-data-seedN``, followed by the end of the name or another ``-`` part (lmsat.kinds.seeds groups by it).
SEED_SUFFIX = re.compile(r"-(?:weight-|data-)?seed(\d+)(?=-|$)", re.IGNORECASE)
_STEP_NAME = re.compile(r"^(?:step[-_]?|checkpoint[-_])(?P<step>\d+)$", re.IGNORECASE)
_HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class Checkpoint:
    """One (model, revision) pair of a sweep; ``key`` is its record key ``<model>@<revision>``."""

    model: str
    revision: str
    step: int
    source: str  # "hub" or "local"
    path: str | None = None  # the checkpoint folder, for local checkpoints
    seed: int | None = None  # the training seed of the model (PolyPythias -seedN, lmsat train --seed), when known

    @property
    def key(self) -> str:
        return f"{self.model}@{self.revision}"

    @property
    def load_name(self) -> str:
        """What ``from_pretrained`` gets: the folder for local checkpoints, the hub id otherwise."""
        return self.path if self.path is not None else self.model

    @property
    def load_revision(self) -> str | None:
        return None if self.source == "local" else self.revision


@dataclass
class SweepModel:
    """One model of a sweep and the checkpoints chosen for it."""

    model: str
    source: str
    path: str | None
    checkpoints: list[Checkpoint]
    tokens_per_step: int | None = None
    n_params: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def short_name(self) -> str:
        return short_name(self.model)


def short_name(model: str) -> str:
    """``EleutherAI/pythia-70m`` -> ``pythia-70m``; ``runs/fam/tiny-a`` -> ``tiny-a``."""
    return Path(str(model).rstrip("/\\")).name or str(model)


# --- suites and revision sets ----------------------------------------------------------------


def model_seed(model: str) -> int | None:
    """The training seed in a hub name: ``EleutherAI/pythia-70m-seed3`` -> 3; None when the name has none."""
    seeds = SEED_SUFFIX.findall(str(model).rstrip("/"))
    return int(seeds[-1]) if seeds else None


def suite_models(suite: str, sizes: str | Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> list[str]:
    """Hub ids of a suite, in the order of ``sizes`` (all sizes, smallest first, when None), then ``seeds``.

    ``polypythias`` takes ``seeds`` (default 1..9; seed 0 is the original ``EleutherAI/pythia-<size>``).

    >>> suite_models("pythia-deduped", "70m,1.4b")
    ['EleutherAI/pythia-70m-deduped', 'EleutherAI/pythia-1.4b-deduped']
    >>> suite_models("polypythias", "14m", [0, 1, 2])
    ['EleutherAI/pythia-14m', 'EleutherAI/pythia-14m-seed1', 'EleutherAI/pythia-14m-seed2']
    """
    if suite not in SUITES:
        raise UserError(f"unknown suite '{suite}'; choose from {', '.join(SUITES)}.")
    if suite == "polypythias":
        wanted = _split(sizes) if sizes is not None else list(POLYPYTHIAS_SIZES)
        bad = [s for s in wanted if s.lower() not in POLYPYTHIAS_SIZES]
        if bad:
            raise UserError(f"PolyPythias has no size '{bad[0]}'; its sizes are {', '.join(POLYPYTHIAS_SIZES)}.")
        chosen = list(seeds) if seeds is not None else list(POLYPYTHIAS_SEEDS)
        if any(s not in (0, *POLYPYTHIAS_SEEDS) for s in chosen):
            raise UserError(f"PolyPythias seeds are 1-9 (0 = the original Pythia run); got {','.join(map(str, chosen))}.")
        return [SUITES["pythia"].format(size=size.lower()) if seed == 0 else SUITES[suite].format(size=size.lower(), seed=seed)
                for size in dict.fromkeys(wanted) for seed in chosen]
    if seeds is not None:
        raise UserError(f"--seeds applies to --suite polypythias (suite '{suite}' has one seed per size).")
    wanted = _split(sizes) if sizes is not None else list(PYTHIA_SIZES)
    if not wanted:
        raise UserError(f"--sizes is empty; give sizes such as 14m,70m (known: {', '.join(PYTHIA_SIZES)}).")
    out = []
    for size in wanted:
        size = size.lower()
        if size not in PYTHIA_SIZES:
            raise UserError(f"suite '{suite}' has no size '{size}'; known sizes: {', '.join(PYTHIA_SIZES)}.")
        name = SUITES[suite].format(size=size)
        if name not in out:
            out.append(name)
    return out


def is_pythia(model: str) -> bool:
    """Whether ``model`` is a hub id of the Pythia suites (their 154 steps and batch size are known)."""
    return bool(_PYTHIA_ID.match(model))


def revision_name(step: int) -> str:
    """Pythia's branch name of a step: ``step1000``."""
    return f"step{step}"


def step_from_name(name: str) -> int | None:
    """The training step in a checkpoint name (``step1000``, ``step-5``, ``checkpoint-500``), else None."""
    m = _STEP_NAME.match(name.strip())
    return int(m.group("step")) if m else None


def _split(text: str | Sequence[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else [p for t in text for p in str(t).split(",")]
    return [p.strip() for p in items if p.strip()]


def select_revisions(revisions: str | Sequence[str], available: Sequence[tuple[str, int]], what: str) -> list[tuple[str, int]]:
    """Pick (name, step) pairs from ``available`` with a revision-set expression (module docstring).

    ``available`` is every checkpoint of one model as (revision name, step); the
    result is sorted by step, without repeats. ``what`` names the model in errors.
    """
    tokens = _split(revisions)
    if not tokens:
        raise UserError(f"--revisions is empty; give a set ({', '.join(REVISION_SETS)}) or revisions such as step1000.")
    if not available:
        raise UserError(f"{what} has no checkpoints.")
    by_step = sorted(available, key=lambda nv: (nv[1], nv[0]))
    steps = [s for _, s in by_step]
    by_name = {n.lower(): (n, s) for n, s in by_step}
    chosen: dict[str, tuple[str, int]] = {}

    def add(items: Iterable[tuple[str, int]]) -> None:
        for n, s in items:
            chosen[n] = (n, s)

    for token in tokens:
        low = token.lower()
        if low == "all":
            add(by_step)
        elif low == "log":
            add((n, s) for n, s in by_step if s == 0 or (s & (s - 1)) == 0)
        elif low == "final":
            add([by_step[-1]])
        elif low == "first":
            add([by_step[0]])
        elif low.startswith("every:"):
            arg = low.split(":", 1)[1]
            if not arg.isdigit() or int(arg) < 1:
                raise UserError(f"--revisions '{token}': every:N needs a positive whole number of steps, e.g. every:10000.")
            n = int(arg)
            add((name, s) for name, s in by_step if s % n == 0)
            add([by_step[-1]])
        elif low in by_name:
            add([by_name[low]])
        elif low.isdigit() or step_from_name(token) is not None:
            step = int(low) if low.isdigit() else step_from_name(token)
            match = [(n, s) for n, s in by_step if s == step]
            if not match:
                raise UserError(
                    f"{what} has no checkpoint at step {step}; it has {len(steps)} steps from {steps[0]} to {steps[-1]}"
                    f"{_nearby(steps, step)}."
                )
            add(match[:1])
        else:
            raise UserError(
                f"unknown revision or revision set '{token}' for {what}; use {', '.join(REVISION_SETS)}, "
                "or checkpoint names such as step1000."
            )
    return sorted(chosen.values(), key=lambda nv: (nv[1], nv[0]))


def _nearby(steps: Sequence[int], step: int) -> str:
    near = sorted(steps, key=lambda s: abs(s - step))[:2]
    return f" (nearest: {', '.join(str(s) for s in sorted(near))})" if near else ""


# --- local checkpoint folders ----------------------------------------------------------------


def is_checkpoint_folder(path: Path) -> bool:
    """A Hugging Face model folder whose name carries a step (``step100``, ``checkpoint-500``)."""
    return path.is_dir() and step_from_name(path.name) is not None and (path / "config.json").is_file()


def checkpoint_folders(path: Path) -> list[tuple[str, int]]:
    """(folder name, step) of every checkpoint sub-folder of a model folder."""
    if not path.is_dir():
        return []
    out = []
    for child in path.iterdir():
        if is_checkpoint_folder(child):
            out.append((child.name, int(step_from_name(child.name))))  # type: ignore[arg-type]
    return sorted(out, key=lambda nv: (nv[1], nv[0]))


def local_members(given: str) -> list[tuple[str, Path]]:
    """(model name as recorded, folder) of each model under a local folder.

    A folder with checkpoint sub-folders is one model; otherwise each sub-folder
    that has checkpoint sub-folders is a model of the family (sorted by name).
    The recorded model name is the folder path as given (normalised), so the
    same command always gives the same record keys.
    """
    root = Path(given).expanduser()
    if not root.is_dir():
        raise UserError(f"checkpoint folder '{given}' does not exist; give a folder of step*/checkpoint-* folders or a hub id.")
    base = os.path.normpath(given)
    if checkpoint_folders(root):
        return [(base, root)]
    members = [(os.path.join(base, child.name), child) for child in sorted(root.iterdir()) if checkpoint_folders(child)]
    if not members:
        if (root / "config.json").is_file():
            raise UserError(
                f"'{given}' is a single model folder, not a folder of checkpoints; a sweep needs sub-folders named "
                "stepN or checkpoint-N (each a Hugging Face model folder)."
            )
        raise UserError(
            f"'{given}' holds no checkpoints: expected sub-folders named stepN or checkpoint-N with a config.json, "
            "or a folder of such model folders."
        )
    return members


def read_train_config(folder: Path) -> dict[str, Any]:
    """``train_config.json`` of a local model folder (empty dict when absent)."""
    path = folder / TRAIN_CONFIG
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read '{path}': {exc}; fix or remove it.") from exc
    if not isinstance(data, dict):
        raise UserError(f"'{path}' must hold a JSON object with tokens_per_step and n_params.")
    return data


def _positive_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value <= 0:
        raise UserError(f"{what} must be a positive whole number (got {value!r}).")
    return int(value)


def local_model(name: str, folder: Path, revisions: str | Sequence[str]) -> SweepModel:
    """A local model and its chosen checkpoints (steps read from the folder names)."""
    available = checkpoint_folders(folder)
    chosen = select_revisions(revisions, available, f"'{name}'")
    train = read_train_config(folder)
    settings = (train.get("identity") or {}).get("settings") or {}
    seed = settings.get("seed") if isinstance(settings.get("seed"), int) else None
    return SweepModel(
        model=name,
        source="local",
        path=str(folder.resolve()),
        checkpoints=[
            Checkpoint(model=name, revision=rev, step=step, source="local", path=str((folder / rev).resolve()), seed=seed)
            for rev, step in chosen
        ],
        tokens_per_step=_positive_int(train.get("tokens_per_step"), f"tokens_per_step in {folder / TRAIN_CONFIG}"),
        n_params=_positive_int(train.get("n_params"), f"n_params in {folder / TRAIN_CONFIG}"),
    )


# --- hub models ------------------------------------------------------------------------------


def hub_revisions(repo: str) -> list[tuple[str, int]]:
    """(branch, step) of every branch of a hub model whose name carries a step (needs the hub)."""
    from huggingface_hub import list_repo_refs

    from lmsat.loading.models import check_hub_reachable, hub_error

    check_hub_reachable(repo)
    try:
        refs = list_repo_refs(repo)
    except Exception as exc:
        raise hub_error("model", repo, None, exc) from exc
    out = [(b.name, step_from_name(b.name)) for b in refs.branches]
    found = [(n, s) for n, s in out if s is not None]
    if not found:
        raise UserError(f"hub model '{repo}' has no branches named stepN or checkpoint-N; give --revisions explicitly.")
    return sorted(found, key=lambda nv: (nv[1], nv[0]))  # type: ignore[arg-type,return-value]


def hub_model(repo: str, revisions: str | Sequence[str]) -> SweepModel:
    """A hub model and its chosen revisions; Pythia's steps are known, others are listed on the hub."""
    if is_pythia(repo):
        available = [(revision_name(s), s) for s in PYTHIA_STEPS]
        tokens_per_step: int | None = PYTHIA_TOKENS_PER_STEP
    else:
        tokens = _split(revisions)
        named = [(t, step_from_name(t)) for t in tokens if not _is_set_token(t)]
        if len(named) == len(tokens):  # explicit revisions only: no hub listing needed
            bad = [t for t, s in named if s is None and not t.isdigit()]
            if bad:
                raise UserError(
                    f"cannot read a training step from revision '{bad[0]}' of '{repo}'; sweeps need names such as step1000."
                )
            available = [(t if not t.isdigit() else revision_name(int(t)), int(t) if t.isdigit() else s) for t, s in named]  # type: ignore[misc]
        else:
            available = hub_revisions(repo)
        tokens_per_step = None
    chosen = select_revisions(revisions, available, f"'{repo}'")
    return SweepModel(
        model=repo,
        source="hub",
        path=None,
        checkpoints=[Checkpoint(model=repo, revision=rev, step=step, source="hub", seed=model_seed(repo)) for rev, step in chosen],
        tokens_per_step=tokens_per_step,
    )


def _is_set_token(token: str) -> bool:
    low = token.lower()
    return low in ("all", "log", "final", "first") or low.startswith("every:")


def expand_sweep(
    models: Sequence[str] = (),
    suite: str | None = None,
    sizes: str | None = None,
    revisions: str | Sequence[str] = "all",
    seeds: Sequence[int] | None = None,
) -> list[SweepModel]:
    """Every model of the sweep, suite members first, each with its chosen checkpoints.

    ``seeds`` picks PolyPythias seeds (``suite="polypythias"``); each checkpoint records its seed.

    ``models`` are hub ids or local folders (a folder of checkpoints, or a family
    of such folders). Nothing is downloaded or loaded, except the branch list of
    a non-Pythia hub model when a revision set is asked for.
    """
    if sizes is not None and suite is None:
        raise UserError("--sizes needs --suite (e.g. --suite pythia --sizes 14m,70m).")
    if seeds is not None and suite != "polypythias":
        raise UserError("--seeds needs --suite polypythias (e.g. --suite polypythias --sizes 14m,70m --seeds 1-9).")
    names: list[str] = suite_models(suite, sizes, seeds) if suite is not None else []
    names += [m for m in models if m not in names]
    if not names:
        raise UserError("nothing to sweep: give model folders or hub ids, or --suite pythia (with --sizes).")
    from lmsat.loading.models import looks_like_hub_id

    out: list[SweepModel] = []
    for name in names:
        if Path(name).expanduser().exists():
            for member, folder in local_members(name):
                out.append(local_model(member, folder, revisions))
        elif looks_like_hub_id(name) and name.count("/") == 1 and not name.startswith("/"):
            out.append(hub_model(name, revisions))
            if suite == "polypythias" and model_seed(name) is None:  # the original run is PolyPythias' seed 0
                out[-1].checkpoints = [replace(c, seed=0) for c in out[-1].checkpoints]
        else:
            raise UserError(
                f"'{name}' is neither an existing folder of checkpoints nor a Hugging Face id such as EleutherAI/pythia-70m."
            )
    seen: set[str] = set()
    for m in out:
        if m.model in seen:
            raise UserError(f"model '{m.model}' is named twice; give each model once.")
        seen.add(m.model)
    return out


def find_tokenizer_folder(model: SweepModel) -> str:
    """Where a model's tokenizer loads from: a local checkpoint (or model) folder that has one, or the hub id."""
    if model.source == "hub":
        return model.model
    candidates = [Path(c.path) for c in model.checkpoints if c.path] + ([Path(model.path)] if model.path else [])
    for folder in candidates:
        if any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")):
            return str(folder)
    raise UserError(
        f"no tokenizer files in the checkpoints of '{model.model}'; pass --tokenizer with a tokenizer folder or hub id."
    )


def has_weights(folder: str | Path) -> bool:
    """Whether a local checkpoint folder holds Hugging Face weights (safetensors or a torch file)."""
    folder = Path(folder)
    return any((folder / f).is_file() for f in _HF_WEIGHTS) or any(folder.glob("model-*.safetensors"))


# --- hub cache housekeeping (a 770-checkpoint sweep must not keep 240 GB of downloads) -------


def hub_cached_commits(repo: str) -> set[str]:
    """Commit hashes of ``repo`` already in the local Hugging Face cache."""
    from huggingface_hub import constants, scan_cache_dir

    try:
        info = scan_cache_dir(constants.HF_HUB_CACHE)
    except Exception:  # no cache folder yet
        return set()
    return {rev.commit_hash for r in info.repos if r.repo_id == repo and r.repo_type == "model" for rev in r.revisions}


def hub_commit_of(repo: str, revision: str) -> str | None:
    """The commit a cached revision (branch) points to, read from the cache's ``refs`` folder."""
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs" / revision
    try:
        return ref.read_text().strip() or None
    except OSError:
        return None


def evict_hub_commit(commit: str) -> int:
    """Delete one cached revision (files shared with other cached revisions stay); bytes freed."""
    from huggingface_hub import constants, scan_cache_dir

    strategy = scan_cache_dir(constants.HF_HUB_CACHE).delete_revisions(commit)
    strategy.execute()
    return int(strategy.expected_freed_size)
