"""Downstream evaluation of the best and the final checkpoint of each model (docs/methods.md §11, study Table 1).

The study's claim: saturation is not a loss artefact only; zero-shot task
scores drop from the best (lowest-loss) checkpoint to the final one. This
module picks the two checkpoints and evaluates them with EleutherAI's
lm-evaluation-harness (``lm-eval``), which owns every task definition; lmsat
only chooses checkpoints, passes options through, stores results and builds
the comparison.

* **Selection.** From a sweep's records (kind ``sweep``, key ``model@revision``,
  inputs ``model, revision, step, source, path``, results ``status,
  cross_entropy`` in nats/token): best = lowest ``cross_entropy`` among records
  with ``status == "ok"``, final = largest ``step`` among them (a failed record
  is ignored, whatever its loss or step). Or explicitly: ``--model M
  --revisions BEST,FINAL``, where ``M`` is a hub id or a local folder of
  ``stepN`` checkpoint folders (lmsat's trainer writes ``OUT/<model>/step<N>/``).
* **Tasks.** The study's: ``lambada_openai`` (acc, perplexity),
  ``storycloze_2016`` (acc; its data is not redistributable: download the
  StoryCloze 2016 CSV files and pass ``--storycloze-dir``), ``wikitext`` (word
  perplexity), ``sciq`` and ``arc_easy`` (acc), all zero-shot; or any harness
  task name, a task YAML file, and folders of custom YAML tasks
  (``--include-path``) over local data.
* **Storage.** One record of kind ``downstream`` per (checkpoint, task set),
  key ``model@revision#<task-set id>``, written atomically once the harness has
  finished, so a re-run skips finished checkpoints. The harness's own log,
  results JSON and per-sample JSONL files are kept under
  ``RUN_DIR/downstream/logs/`` and ``RUN_DIR/downstream/harness/<key>/``.
  One record of kind ``downstream_table`` per (model, task set) holds the
  Table 1-style comparison: best and final side by side and the difference.

Units in the comparison: accuracies in percent (as in the study's Table 1),
perplexities as the harness reports them (word perplexity = exp(-sum of
log-likelihoods in nats / number of words)), bits per byte as is. Records keep
the harness's raw values (accuracies as fractions).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from lmsat import __version__
from lmsat.errors import UserError
from lmsat.kinds.base import as_kind
from lmsat.kinds.base import value as stored
from lmsat.kinds.downstream import DownstreamRecord, DownstreamTableRecord
from lmsat.kinds.sweep import SweepRecord
from lmsat.loading.checkpoints import Checkpoint, step_from_name
from lmsat.loading.models import ModelSpec
from lmsat.measure.saturation import best_final_rise
from lmsat.store import (
    Record,
    Store,
    atomic_open,
    atomic_write_text,
    fingerprint,
    record_name,
    slugify,
)

KIND = "downstream"
TABLE_KIND = "downstream_table"
SWEEP_KIND = "sweep"

#: The study's zero-shot tasks (Table 1), in its order.
STUDY_TASKS: tuple[str, ...] = ("lambada_openai", "storycloze_2016", "wikitext", "sciq", "arc_easy")
#: The metric(s) Table 1 reports for each study task; they come first in the comparison.
STUDY_METRICS: dict[str, tuple[str, ...]] = {
    "lambada_openai": ("perplexity", "acc"),
    "storycloze_2016": ("acc",),
    "wikitext": ("word_perplexity",),
    "sciq": ("acc",),
    "arc_easy": ("acc",),
}
#: The study's Table 1 for Pythia-160M, best -> final checkpoint (docs/methods.md §11); accuracies in percent.
STUDY_TABLE1: dict[str, dict[tuple[str, str], tuple[float, float]]] = {
    "EleutherAI/pythia-160m": {
        ("lambada_openai", "perplexity"): (24.6, 32.9),
        ("lambada_openai", "acc"): (40.3, 38.0),
        ("storycloze_2016", "acc"): (59.6, 57.2),
        ("wikitext", "word_perplexity"): (30.47, 33.4),
        ("sciq", "acc"): (79.6, 73.4),
        ("arc_easy", "acc"): (46.5, 43.2),
    }
}
#: Harness metrics that are fractions; the comparison shows them in percent like Table 1.
PERCENT_METRICS = frozenset({"acc", "acc_norm", "exact_match", "acc_mutual_info"})

STORYCLOZE_TASK = "storycloze_2016"
_STORYCLOZE_FIELDS = ("story_id", "input_sentence_1", "input_sentence_2", "input_sentence_3", "input_sentence_4",
                      "sentence_quiz1", "sentence_quiz2", "answer_right_ending")
_STORYCLOZE_HINT = (
    "StoryCloze 2016 is not redistributable: request it at https://cs.rochester.edu/nlp/rocstories/ and pass the folder "
    "holding 'cloze_test_val__spring2016 - cloze_test_ALL_val.csv' and 'cloze_test_test__spring2016 - cloze_test_ALL_test.csv' "
    "with --storycloze-dir"
)


# --- lm-eval --------------------------------------------------------------------------------------


def require_lm_eval() -> str:
    """The installed lm-eval version; a clear error when the optional dependency is missing."""
    try:
        import lm_eval
    except ImportError as exc:
        raise UserError("lmsat downstream needs EleutherAI's lm-evaluation-harness: pip install 'lmsat[downstream]' (or lm-eval).") from exc
    return str(getattr(lm_eval, "__version__", "unknown"))


# --- which checkpoints: best and final --------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """The best (lowest-loss) and the final (last-step) checkpoint of one model.

    ``best_loss``/``final_loss`` are the sweep's cross-entropies (nats/token), None
    for an explicit selection.
    """

    model: str
    best: Checkpoint
    final: Checkpoint
    best_loss: float | None = None
    final_loss: float | None = None
    origin: str = "explicit"
    notes: tuple[str, ...] = ()

    @property
    def same(self) -> bool:
        """The best checkpoint is the final one (the model did not saturate on the sweep's sample)."""
        return self.best.key == self.final.key and self.best.path == self.final.path

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return [self.best] if self.same else [self.best, self.final]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def checkpoint_of(record: Record) -> Checkpoint:
    """The checkpoint a sweep record measured (inputs ``model, revision, step, source, path``)."""
    inp = record.inputs
    source = inp.get("source") or ("local" if inp.get("path") else "hub")
    return Checkpoint(model=str(inp["model"]), revision=str(inp["revision"]), step=int(inp["step"]), source=str(source),
                      path=inp.get("path"))


def select_best_final(records: Sequence[Record], models: Sequence[str] | None = None, origin: str = "sweep") -> list[Selection]:
    """Best and final checkpoint of each model of a sweep.

    best = argmin cross_entropy over records with status "ok" (ties: earlier step),
    final = argmax step over the same records. Failed records, records without a
    finite cross-entropy, and records whose weights duplicate an earlier
    checkpoint's (``duplicate_of``: a hub branch serving the wrong weights) are
    ignored. ``models`` keeps only those models (exact
    names as recorded). Models are returned in the order of their first record.
    """
    by_model: dict[str, list[Record]] = {}
    for rec in records:
        by_model.setdefault(str(rec.inputs.get("model")), []).append(rec)
    if models:
        unknown = [m for m in models if m not in by_model]
        if unknown:
            raise UserError(f"model '{unknown[0]}' is not in the sweep; it has: {', '.join(by_model)}.")
        by_model = {m: by_model[m] for m in models}
    out: list[Selection] = []
    skipped: list[str] = []
    for model, recs in by_model.items():
        typed = [SweepRecord.from_record(r) for r in recs]
        ok = [r for r in typed if r.usable]  # the one usable-checkpoint rule
        if not ok:
            skipped.append(model)
            continue
        # The one best/final rule (docs/methods.md §5): best = lowest loss, earliest on ties; final = last step.
        point = best_final_rise([r.step for r in ok], [r.loss for r in ok])
        best = min((r for r in ok if r.step == point["best_step"]), key=lambda r: r.loss)
        final = next(r for r in ok if r.step == point["final_step"])
        notes = []
        dups = [r for r in typed if r.duplicate_of]
        failed = [r for r in typed if r not in ok and r not in dups]
        if failed:
            notes.append(f"{len(failed)} failed checkpoint(s) ignored: {', '.join(r.key for r in failed[:3])}"
                         + (" ..." if len(failed) > 3 else ""))
        if dups:
            notes.append(f"{len(dups)} checkpoint(s) ignored because their weights equal an earlier checkpoint's: "
                         + ", ".join(f"{r.key} = {r.duplicate_of}" for r in dups[:3]) + (" ..." if len(dups) > 3 else ""))
        later = [r for r in failed + dups if r.step is not None and r.step > final.step]
        if later:
            notes.append(f"final = the last checkpoint measured without failure (step {final.step}); "
                         f"step {max(r.step for r in later)} is later but failed or duplicates another")
        out.append(Selection(model=model, best=checkpoint_of(best.record), final=checkpoint_of(final.record),
                             best_loss=best.loss, final_loss=final.loss,
                             origin=origin, notes=tuple(notes)))
    if not out:
        raise UserError(
            f"no checkpoint of {', '.join(skipped) or 'any model'} was measured successfully in the sweep; "
            "re-run `lmsat sweep` or give --model with --revisions BEST,FINAL."
        )
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def sweep_selection(run_dir: str | os.PathLike[str], models: Sequence[str] | None = None) -> list[Selection]:
    """:func:`select_best_final` over the sweep records of ``run_dir``; clear errors when there are none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory '{run_dir}' does not exist; give the --output folder of `lmsat sweep`, or --model with --revisions.")
    records = Store(run_dir).records(SWEEP_KIND)
    if not records:
        raise UserError(f"'{run_dir}' holds no sweep records ({SWEEP_KIND}/*.json); run `lmsat sweep -o {run_dir} ...` first, "
                        "or give --model with --revisions BEST,FINAL.")
    bad = [r.key for r in records if not {"model", "revision", "step"} <= set(r.inputs) or not _is_int(r.inputs.get("step"))]
    if bad:
        raise UserError(f"sweep record '{bad[0]}' lacks model/revision/step inputs; it was not written by `lmsat sweep`.")
    return select_best_final(records, models, origin=f"sweep:{run_dir}")


def explicit_selection(model: str, revisions: str) -> Selection:
    """``--model M --revisions BEST,FINAL``: a hub id, or a local folder of checkpoint folders ``M/BEST``, ``M/FINAL``."""
    revs = [r.strip() for r in revisions.split(",") if r.strip()]
    if len(revs) != 2:
        raise UserError(f"--revisions needs exactly two revisions, BEST,FINAL (e.g. step80000,step143000); got '{revisions}'.")
    if revs[0] == revs[1]:
        raise UserError(f"--revisions names '{revs[0]}' twice; give the best and the final checkpoint.")
    folder = Path(model).expanduser()
    checkpoints = []
    if folder.exists():
        name = os.path.normpath(model)
        for rev in revs:
            path = folder / rev
            if not (path / "config.json").is_file():
                raise UserError(
                    f"local checkpoint '{path}' is not a model folder (no config.json); a local --model is a folder of "
                    "checkpoint folders such as OUT/<model>/step<N>/, and --revisions names two of them."
                )
            checkpoints.append(Checkpoint(model=name, revision=rev, step=step_from_name(rev), source="local",  # type: ignore[arg-type]
                                          path=str(path.resolve())))
    else:
        from lmsat.loading.models import looks_like_hub_id

        if not looks_like_hub_id(model) or model.startswith("/") or model.count("/") > 1:
            raise UserError(f"model path '{model}' does not exist; give a folder of checkpoint folders or a Hugging Face id "
                            "such as EleutherAI/pythia-160m.")
        checkpoints = [Checkpoint(model=model, revision=rev, step=step_from_name(rev), source="hub") for rev in revs]  # type: ignore[arg-type]
    return Selection(model=checkpoints[0].model, best=checkpoints[0], final=checkpoints[1], origin="explicit")


# --- which tasks ------------------------------------------------------------------------------


@dataclass
class TaskPlan:
    """The tasks to run and what the harness needs to find them.

    ``names``: task names, or paths of task YAML files, as the harness takes them.
    ``task_set``: short id of (names, custom YAML contents, StoryCloze data, limit),
    part of every record key, so a different task set never reuses a record.
    """

    names: list[str]
    include_paths: list[str]
    storycloze_dir: str | None
    limit: int | float | None
    task_manager: Any
    storycloze_files: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    task_set: str = ""

    def describe(self) -> dict[str, Any]:
        return {"tasks": self.names, "include_path": self.include_paths, "storycloze_dir": self.storycloze_dir,
                "limit": self.limit, "num_fewshot": 0, "task_set": self.task_set}


def split_tasks(text: str | None) -> list[str]:
    """``--tasks a,b,c`` (the harness's spelling) -> names; the study's tasks when not given."""
    if text is None:
        return list(STUDY_TASKS)
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError("--tasks is empty; give task names such as lambada_openai,sciq (see `lm_eval ls tasks`).")
    if len(set(names)) != len(names):
        raise UserError(f"--tasks names a task twice: {text}.")
    return names


def _yaml_files_digest(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*.yaml")) + sorted(root.rglob("*.py"))
        for f in files:
            h.update(str(f.relative_to(root) if f != root else f.name).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def build_task_manager(include_paths: Sequence[str], needed: Sequence[str]) -> Any:
    """A harness TaskManager that knows every name in ``needed``.

    Indexing the harness's ~15k built-in task files takes seconds, so when every
    needed name is defined in the include paths only those are indexed.
    """
    if include_paths or not needed:  # only YAML file paths need no index at all
        local = _task_manager(tuple(include_paths), include_defaults=False)
        if all(n in local.all_tasks for n in needed):
            return local
    return _task_manager(tuple(include_paths), include_defaults=True)


_TASK_MANAGERS: dict[tuple[Any, ...], Any] = {}


def _task_manager(include_paths: tuple[str, ...], include_defaults: bool) -> Any:
    """One TaskManager per (include paths and their YAML contents, defaults) in this process."""
    from lm_eval.tasks import TaskManager

    key = (include_paths, _yaml_files_digest([Path(p) for p in include_paths]) if include_paths else None, include_defaults)
    if key not in _TASK_MANAGERS:
        with _quiet_harness():
            _TASK_MANAGERS[key] = TaskManager(include_path=list(include_paths) or None, include_defaults=include_defaults)
    return _TASK_MANAGERS[key]


def resolve_tasks(
    tasks: str | None,
    include_paths: Sequence[str | os.PathLike[str]] = (),
    storycloze_dir: str | os.PathLike[str] | None = None,
    limit: int | float | None = None,
) -> TaskPlan:
    """Check every task name, include path and data path before anything runs; see the module docstring.

    With the default (study) tasks and no ``storycloze_dir``, StoryCloze is left
    out with a note; asking for ``storycloze_2016`` by name without it is an error.
    """
    default = tasks is None
    names = split_tasks(tasks)
    includes = []
    for p in include_paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise UserError(f"--include-path '{p}' does not exist; give a folder of lm-eval task YAML files.")
        if not path.is_dir():
            raise UserError(f"--include-path '{p}' is not a folder; give the folder holding the task YAML files "
                            "(or pass one YAML file to --tasks).")
        if not any(path.rglob("*.yaml")):
            raise UserError(f"--include-path '{p}' holds no .yaml task files.")
        includes.append(str(path.resolve()))
    notes = []
    for bad in ("storycloze", "storycloze_2018"):
        if bad in names:
            raise UserError(f"task '{bad}' needs manually downloaded data that lmsat does not wire up; "
                            f"use {STORYCLOZE_TASK} (the study's) with --storycloze-dir, or a custom YAML with --include-path.")
    story_files: dict[str, Path] = {}
    if storycloze_dir is not None:
        story_files = find_storycloze_files(storycloze_dir)
        if STORYCLOZE_TASK not in names:
            raise UserError(f"--storycloze-dir is given but --tasks does not include {STORYCLOZE_TASK}; add it or drop the option.")
    elif STORYCLOZE_TASK in names:
        if default:
            names.remove(STORYCLOZE_TASK)
            notes.append(f"{STORYCLOZE_TASK} left out: {_STORYCLOZE_HINT}.")
        else:
            raise UserError(f"task {STORYCLOZE_TASK} needs its data: {_STORYCLOZE_HINT}.")
    yaml_specs = [n for n in names if n.endswith((".yaml", ".yml"))]
    for spec in yaml_specs:
        if not Path(spec).expanduser().is_file():
            raise UserError(f"task file '{spec}' does not exist; give an lm-eval task YAML file or a task name.")
    registered = [n for n in names if n not in yaml_specs]
    tm = build_task_manager(includes, registered)
    known = set(tm.all_tasks)
    for name in registered:
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            where = f" or in {', '.join(includes)}" if includes else ""
            raise UserError(f"unknown task '{name}'{hint}: it is not an lm-eval task{where}; "
                            "list tasks with `lm_eval ls tasks`, or pass --include-path for custom YAML tasks.")
    resolved = [str(Path(n).expanduser().resolve()) if n in yaml_specs else n for n in names]
    digest_paths = [Path(p) for p in includes] + [Path(p) for p in resolved if p.endswith((".yaml", ".yml"))]
    story_digest = {k: hashlib.sha256(v.read_bytes()).hexdigest()[:16] for k, v in story_files.items()}
    task_set = fingerprint({"tasks": resolved, "yaml": _yaml_files_digest(digest_paths) if digest_paths else None,
                            "storycloze": story_digest or None, "limit": limit, "num_fewshot": 0}, length=8)
    return TaskPlan(names=resolved, include_paths=includes, storycloze_dir=str(Path(storycloze_dir).resolve()) if storycloze_dir else None,
                    limit=limit, task_manager=tm, storycloze_files=story_files, notes=notes, task_set=task_set)


def find_storycloze_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """The StoryCloze 2016 CSV files in ``folder``: {"test": ..., "validation": ...} (validation optional).

    The validation file is the CSV whose name contains "val", the test file the
    one whose name contains "test" but not "val" (as the official names do:
    both start with "cloze_test").
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"--storycloze-dir '{folder}' is not a folder; {_STORYCLOZE_HINT}.")
    csvs = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    vals = [p for p in csvs if "val" in p.name.lower()]
    tests = [p for p in csvs if "test" in p.name.lower() and p not in vals]
    if len(tests) != 1:
        found = f"found {', '.join(p.name for p in tests)}" if tests else "found none"
        raise UserError(f"--storycloze-dir '{folder}' must hold exactly one test CSV (a .csv with 'test' but not 'val' in its name; "
                        f"{found}); {_STORYCLOZE_HINT}.")
    if len(vals) > 1:
        raise UserError(f"--storycloze-dir '{folder}' holds several validation CSVs ({', '.join(p.name for p in vals)}); keep one.")
    out = {"test": tests[0]}
    if vals:
        out["validation"] = vals[0]
    for split, path in out.items():
        read_storycloze_csv(path)  # validate now, before anything is written
    return out


def read_storycloze_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a StoryCloze CSV (header line, then 8 columns: id, 4 sentences, 2 endings, right ending 1|2).

    Read the way the Hugging Face ``story_cloze`` loader reads it, into its field names,
    which the harness's ``storycloze_2016`` task uses.
    """
    rows = []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, quotechar='"', delimiter=",", skipinitialspace=True)
            next(reader, None)
            for i, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != 8 or row[7].strip() not in ("1", "2"):
                    raise UserError(f"line {i} of '{path}' is not a StoryCloze row (8 columns, the last one 1 or 2); "
                                    "give the official StoryCloze 2016 CSV files.")
                doc = dict(zip(_STORYCLOZE_FIELDS[:7], row[:7]))
                doc["answer_right_ending"] = int(row[7])
                rows.append(doc)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read StoryCloze file '{path}': {exc}.") from exc
    if not rows:
        raise UserError(f"StoryCloze file '{path}' holds no stories.")
    return rows


@contextlib.contextmanager
def harness_task_specs(plan: TaskPlan) -> Iterator[list[str | dict[str, Any]]]:
    """What ``simple_evaluate(tasks=...)`` gets: the names, with StoryCloze bound to the user's CSV files.

    The harness's own ``storycloze_2016`` config is kept (prompt, choices, metric);
    only its data source changes to JSONL copies of the CSVs, written to a
    temporary folder that lives as long as the evaluation.
    """
    if not plan.storycloze_files:
        yield list(plan.names)
        return
    with tempfile.TemporaryDirectory(prefix="lmsat-storycloze-") as tmp:
        data_files = {}
        for split, path in plan.storycloze_files.items():
            target = Path(tmp) / f"{split}.jsonl"
            target.write_text("".join(json.dumps(row) + "\n" for row in read_storycloze_csv(path)))
            data_files[split] = str(target)
        cfg = json.loads(json.dumps(plan.task_manager.task_index[STORYCLOZE_TASK].cfg))
        cfg.pop("tag", None)
        cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": data_files})
        if "validation" not in data_files:
            cfg["validation_split"] = None
        yield [cfg if n == STORYCLOZE_TASK else n for n in plan.names]


def check_task_data(plan: TaskPlan, specs: Sequence[str | dict[str, Any]]) -> None:
    """Build each task once and render its first document, before any evaluation.

    Building a task loads its data, so a missing data file or an unreachable hub
    fails here; rendering the first document's prompt, target and choices
    catches a YAML template that names a field the data does not have.
    """
    import jinja2

    for spec in specs:
        name = spec["task"] if isinstance(spec, dict) else spec
        try:
            with _quiet_harness(), _datasets_bars():
                loaded = plan.task_manager.load([spec])["tasks"]
        except jinja2.TemplateError as exc:  # the harness renders the first document while building the task
            raise UserError(f"task '{name}' fails on its first document ({type(exc).__name__}: {exc}); check the templates "
                            "(doc_to_text, doc_to_target, doc_to_choice) in its YAML against the data's fields.") from exc
        except Exception as exc:  # datasets and the harness raise many types; all mean "this task cannot run"
            text = " ".join(str(exc).split())[:300]
            raise UserError(
                f"task '{name}' cannot load its data ({type(exc).__name__}: {text}); check the data path in its YAML "
                "(dataset_path, data_files), the network or HF_DATASETS_OFFLINE for hub datasets."
            ) from exc
        for task_name, task in loaded.items():
            try:
                docs = task.eval_docs
                if len(docs) == 0:
                    raise ValueError("its evaluation split is empty")
                doc = docs[0]
                task.doc_to_text(doc)
                task.doc_to_target(doc)
                if task.OUTPUT_TYPE == "multiple_choice":
                    task.doc_to_choice(doc)
            except Exception as exc:
                text = " ".join(str(exc).split())[:300]
                raise UserError(f"task '{task_name}' fails on its first document ({type(exc).__name__}: {text}); "
                                "check the templates (doc_to_text, doc_to_target, doc_to_choice) and split names in its YAML.") from exc


# --- running the harness on one checkpoint ----------------------------------------------------


def record_key(ckpt: Checkpoint, dtype: str, task_set: str) -> str:
    """``model@revision#<task set>`` (``~dtype`` after the revision when not float32)."""
    label = ckpt.key if dtype == "float32" else f"{ckpt.key}~{dtype}"
    return f"{label}#{task_set}"


def harness_equivalent(ckpt: Checkpoint, plan: TaskPlan, dtype: str, batch_size: int) -> str:
    """The ``lm_eval`` command line that runs the same evaluation (for users comparing with the harness's CLI)."""
    args = f"pretrained={ckpt.load_name}" + (f",revision={ckpt.load_revision}" if ckpt.load_revision else "") + f",dtype={dtype}"
    cmd = f"lm_eval --model hf --model_args {args} --tasks {','.join(plan.names)} --batch_size {batch_size}"
    if plan.include_paths:
        cmd += "".join(f" --include_path {p}" for p in plan.include_paths)
    if plan.limit is not None:
        cmd += f" --limit {plan.limit}"
    return cmd


@contextlib.contextmanager
def _quiet_harness() -> Iterator[None]:
    """Keep the harness's INFO chatter off the terminal while it indexes or loads tasks."""
    logger = logging.getLogger("lm_eval")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


@contextlib.contextmanager
def harness_log(path: Path, capture_stderr: bool) -> Iterator[None]:
    """Send the harness's log records and prints to ``path``; its progress bars (stderr) too when ``capture_stderr``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("lm_eval")
    with open(path, "w", encoding="utf-8") as fh:
        handler = logging.StreamHandler(fh)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        old_level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(fh), _datasets_bars():
                if capture_stderr:
                    with contextlib.redirect_stderr(fh):
                        yield
                else:
                    yield
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)


@contextlib.contextmanager
def _datasets_bars() -> Iterator[None]:
    """The `datasets` progress bars follow lmsat's switch (LMSAT_PROGRESS=0 silences them)."""
    from datasets.utils import logging as ds_logging

    from lmsat import progress

    was = ds_logging.is_progress_bar_enabled()
    if not progress.enabled():
        ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not ds_logging.is_progress_bar_enabled():
            ds_logging.enable_progress_bar()


def split_metric_key(key: str) -> tuple[str, str]:
    """Harness result key ``metric,filter`` -> (metric, filter)."""
    metric, _, flt = key.partition(",")
    return metric, flt or "none"


def metrics_of(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task of a harness results dict: {"metrics", "stderr", "higher_is_better", "n_samples"}.

    Metric names drop the default filter (``acc,none`` -> ``acc``) and keep any
    other (``acc,strict``). Values are the harness's, unconverted; a stderr the
    harness did not compute ("N/A") is None.
    """
    out: dict[str, dict[str, Any]] = {}
    hib_all = results.get("higher_is_better", {})
    n_samples = results.get("n-samples", {})
    for task, values in results.get("results", {}).items():
        metrics: dict[str, float] = {}
        stderr: dict[str, float | None] = {}
        for key, value in values.items():
            if "," not in key:
                continue
            metric, flt = split_metric_key(key)
            is_err = metric.endswith("_stderr")
            base = metric[: -len("_stderr")] if is_err else metric
            name = base if flt == "none" else f"{base},{flt}"
            number = float(value) if _finite(value) else None
            if is_err:
                stderr[name] = number
            elif number is not None:
                metrics[name] = number
        hib = hib_all.get(task, {})
        out[task] = {
            "metrics": metrics,
            "stderr": {k: stderr.get(k) for k in metrics},
            "higher_is_better": {k: hib.get(split_metric_key(k)[0]) for k in metrics},
            "n_samples": int((n_samples.get(task) or {}).get("effective", 0)) or None,
        }
    return out


def _write_harness_files(folder: Path, results: dict[str, Any], log_samples: bool) -> dict[str, str]:
    from lm_eval.utils import handle_non_serializable

    folder.mkdir(parents=True, exist_ok=True)
    samples = results.pop("samples", None) or {}
    files = {"results": str(folder / "results.json")}
    atomic_write_text(folder / "results.json", json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n")
    if log_samples:
        for task, items in samples.items():
            path = folder / f"samples_{slugify(task)}.jsonl"
            with atomic_open(path, "w") as fh:
                for item in items:
                    fh.write(json.dumps(item, default=handle_non_serializable, ensure_ascii=False) + "\n")
            files[f"samples:{task}"] = str(path)
    return files


def evaluate_checkpoint(
    ckpt: Checkpoint,
    plan: TaskPlan,
    specs: Sequence[str | dict[str, Any]],
    output: str | os.PathLike[str],
    dtype: str = "float32",
    device: str = "auto",
    batch_size: int = 8,
    bootstrap_iters: int = 100000,
    log_samples: bool = True,
    trust_remote_code: bool = False,
    force: bool = False,
) -> Record:
    """Run the harness on one checkpoint; one ``downstream`` record (skipped when it exists, unless ``force``)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from lmsat import progress
    from lmsat.experiments.common import model_inputs, still_current
    from lmsat.loading.models import load_model, load_model_tokenizer

    store = Store(output)
    key = record_key(ckpt, dtype, plan.task_set)
    spec = ModelSpec(name=ckpt.load_name, revision=ckpt.load_revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    done = store.get(KIND, key)
    if done is not None and not force and still_current(done, spec):  # a local folder re-trained in place is evaluated again
        return done
    loaded = load_model(spec, require_causal=True)
    tokenizer = load_model_tokenizer(spec).backend
    slug = record_name(key)
    root = Path(output)
    log_path = root / KIND / "logs" / f"{slug}.log"
    start = time.perf_counter()
    with harness_log(log_path, capture_stderr=not progress.enabled()):
        lm = HFLM(pretrained=loaded.model, tokenizer=tokenizer, batch_size=batch_size)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(specs),
            task_manager=plan.task_manager,
            limit=plan.limit,
            bootstrap_iters=bootstrap_iters,
            log_samples=log_samples,
        )
    duration = time.perf_counter() - start
    if results is None:  # only on non-zero ranks of a distributed run, which lmsat does not start
        raise RuntimeError("lm-eval returned no results")
    per_task = metrics_of(results)
    files = _write_harness_files(root / KIND / "harness" / slug, results, log_samples)
    files["log"] = str(log_path)
    inputs = model_inputs(
        loaded,
        model=ckpt.model,
        revision=ckpt.revision,
        step=ckpt.step,
        source=ckpt.source,
        path=ckpt.path,
        batch_size=batch_size,
        bootstrap_iters=bootstrap_iters,
        lm_eval_version=getattr(lm_eval, "__version__", None),
        harness_equivalent=harness_equivalent(ckpt, plan, dtype, batch_size),
        **plan.describe(),
    )
    record = DownstreamRecord(
        key=key, inputs=inputs,
        tasks={t: v["metrics"] for t, v in per_task.items()},
        stderr={t: v["stderr"] for t, v in per_task.items()},
        higher_is_better={t: v["higher_is_better"] for t, v in per_task.items()},
        n_samples={t: v["n_samples"] for t, v in per_task.items()},
        duration_s=duration,
        files={k: os.path.relpath(v, root) for k, v in files.items()},
    ).put(store)
    del lm, loaded
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return record


# --- the Table 1-style comparison -------------------------------------------------------------


def study_values(model: str) -> dict[tuple[str, str], tuple[float, float]]:
    """The study's Table 1 numbers for ``model`` (Pythia-160M only), else empty."""
    return STUDY_TABLE1.get(model, {})


def _scale(metric: str) -> tuple[float, str]:
    return (100.0, "%") if metric.split(",")[0] in PERCENT_METRICS else (1.0, "")


def comparison_rows(selection: Selection, best: Record, final: Record) -> list[dict[str, Any]]:
    """One row per (task, metric): best and final side by side, difference = final - best.

    Accuracies in percent; ``relative_change`` = final / best - 1; ``worse_at_final``
    uses the harness's higher_is_better (None when it does not say).
    """
    study = study_values(selection.model)
    rows = []
    best, final = as_kind(best, DownstreamRecord), as_kind(final, DownstreamRecord)
    for task, metrics in best.tasks.items():
        final_metrics = final.tasks.get(task, {})
        first = [m for m in STUDY_METRICS.get(task, ()) if m in metrics]
        for metric in first + [m for m in metrics if m not in first]:
            if metric not in final_metrics:
                continue
            scale, unit = _scale(metric)
            b, f = metrics[metric] * scale, final_metrics[metric] * scale
            hib = (stored(best.higher_is_better) or {}).get(task, {}).get(metric)
            berr = (stored(best.stderr) or {}).get(task, {}).get(metric)
            ferr = (stored(final.stderr) or {}).get(task, {}).get(metric)
            sb, sf = study.get((task, metric), (None, None))
            rows.append({
                "model": selection.model,
                "task": task,
                "metric": metric,
                "unit": unit,
                "best_revision": selection.best.revision,
                "best_step": selection.best.step,
                "final_revision": selection.final.revision,
                "final_step": selection.final.step,
                "best": b,
                "final": f,
                "difference": f - b,
                "relative_change": (f / b - 1.0) if b else None,
                "higher_is_better": hib,
                "worse_at_final": None if hib is None or f == b else (f < b if hib else f > b),
                "best_stderr": None if berr is None else berr * scale,
                "final_stderr": None if ferr is None else ferr * scale,
                "study_best": sb,
                "study_final": sf,
            })
    return rows


def table_key(selection: Selection, dtype: str, task_set: str) -> str:
    return f"{selection.model}{'' if dtype == 'float32' else '~' + dtype}#{task_set}"


def put_table(store: Store, selection: Selection, plan: TaskPlan, dtype: str, best: Record, final: Record) -> Record:
    """Write (or replace) the ``downstream_table`` record of one model: the rows of :func:`comparison_rows`."""
    rows = comparison_rows(selection, best, final)
    worse = [r for r in rows if r["worse_at_final"] is True]
    judged = [r for r in rows if r["worse_at_final"] is not None]

    def side(ckpt: Checkpoint, loss: float | None, rec: Record) -> dict[str, Any]:
        return {"revision": ckpt.revision, "step": ckpt.step, "source": ckpt.source, "path": ckpt.path,
                "cross_entropy": loss, "record": rec.key}

    inputs = {"model": selection.model, "selection": selection.origin, "dtype": dtype, "notes": list(selection.notes),
              "best": side(selection.best, selection.best_loss, best), "final": side(selection.final, selection.final_loss, final),
              "lmsat_version": __version__, **plan.describe()}
    return DownstreamTableRecord(key=table_key(selection, dtype, plan.task_set), inputs=inputs, rows=rows, best_is_final=selection.same,
                                 n_metrics=len(rows), n_worse_at_final=len(worse), n_judged=len(judged)).put(store)


def run_downstream(
    selections: Sequence[Selection],
    plan: TaskPlan,
    output: str | os.PathLike[str],
    dtype: str = "float32",
    device: str = "auto",
    batch_size: int = 8,
    bootstrap_iters: int = 100000,
    log_samples: bool = True,
    trust_remote_code: bool = False,
    force: bool = False,
    on_start: Any = None,
    executor: Any = None,
    resources: Any = None,
) -> list[Record]:
    """Evaluate best and final of every selection; returns the ``downstream_table`` records (one per model).

    Everything a user can get wrong (model folders, hub revisions, task data) is
    checked before the first evaluation, so a bad input writes nothing.
    ``on_start(ckpt, role, index, total, log_path)`` is called before each evaluation
    (with ``executor``: when its task is submitted).

    ``executor`` (``lmsat downstream --ray``: an ``lmsat.executor`` executor, ``resources`` per
    task): each checkpoint to evaluate is one task running :func:`evaluate_checkpoint`, as
    here; the task writes its record and harness files itself, so OUTPUT must be a path every
    worker sees (one node, or a shared filesystem: docs/distributed.md).
    """
    from lmsat.loading.models import load_config, resolve_device, torch_dtype

    require_lm_eval()
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1 (got {batch_size}).")
    if bootstrap_iters < 0:
        raise UserError(f"--bootstrap-iters must be 0 (no standard errors) or more (got {bootstrap_iters}).")
    resolve_device(device)
    torch_dtype(dtype)
    for sel in selections:
        for ckpt in sel.checkpoints:
            load_config(ModelSpec(name=ckpt.load_name, revision=ckpt.load_revision, dtype=dtype, device=device,
                                  trust_remote_code=trust_remote_code))
    store = Store(output)
    with harness_task_specs(plan) as specs:
        todo = [(sel, ckpt) for sel in selections for ckpt in sel.checkpoints]
        pending = [(s, c) for s, c in todo if force or not store.has(KIND, record_key(c, dtype, plan.task_set))]
        if pending:
            check_task_data(plan, specs)
        done: dict[str, Record] = {}
        run_args: dict[str, tuple[Any, ...]] = {}
        for i, (sel, ckpt) in enumerate(todo):
            key = record_key(ckpt, dtype, plan.task_set)
            if on_start is not None and (sel, ckpt) in pending:
                role = "best and final" if sel.same else ("best" if ckpt is sel.best else "final")
                on_start(ckpt, role, pending.index((sel, ckpt)) + 1, len(pending), Path(output) / KIND / "logs" / f"{record_name(key)}.log")
            args = (ckpt, plan, specs, output, dtype, device, batch_size, bootstrap_iters, log_samples, trust_remote_code, force)
            if executor is not None:
                run_args.setdefault(key, args)  # best and final may be one checkpoint: one task
                continue
            done[key] = evaluate_checkpoint(*args)
        if run_args:
            done.update(_evaluate_on(executor, resources, run_args))
    tables = []
    for sel in selections:
        best = done[record_key(sel.best, dtype, plan.task_set)]
        final = done[record_key(sel.final, dtype, plan.task_set)]
        tables.append(put_table(store, sel, plan, dtype, best, final))
    return tables


def _evaluate_on(executor: Any, resources: Any, run_args: dict[str, tuple[Any, ...]]) -> dict[str, Record]:
    """record key -> record: :func:`evaluate_checkpoint` of each ``run_args`` value as one task of ``executor``."""
    from lmsat.progress import track

    keys = list(run_args)
    shared_plan = executor.share(next(iter(run_args.values()))[1])  # the task list (with its harness index) sent once
    args = [(a[0], shared_plan, *a[2:]) for a in run_args.values()]
    options = {} if resources is None else {"resources": resources}
    out: dict[str, Record] = {}
    lost: list[str] = []
    for d in track(executor.map(evaluate_checkpoint, args, **options), "downstream (Ray)", total=len(args), unit="checkpoints"):
        if d.value is None:
            d.reraise_user_error()
            lost.append(f"{keys[d.index]} ({d.error})")
            continue
        out[keys[d.index]] = d.value
    if lost:
        raise UserError(f"not evaluated: {'; '.join(lost)[:600]}; the other checkpoints are stored; re-run the same command to resume.")
    return out


__all__ = [
    "KIND", "TABLE_KIND", "STUDY_TASKS", "STUDY_METRICS", "STUDY_TABLE1", "Selection", "TaskPlan", "select_best_final",
    "sweep_selection", "explicit_selection", "resolve_tasks", "run_downstream", "comparison_rows",
    "metrics_of", "record_key",
]
