"""Suite and revision expansion: exact published names, local checkpoint folders, hub-cache housekeeping."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from lmsat.errors import UserError
from lmsat.loading.checkpoints import (
    PYTHIA_STEPS,
    PYTHIA_TOKENS_PER_STEP,
    expand_sweep,
    local_members,
    select_revisions,
    step_from_name,
    suite_models,
)

# The published Pythia branches, written out independently of the code under test:
# step0, then 1, 2, 4, ..., 512, then every 1000 steps up to 143000.
PUBLISHED = ["step0"] + [f"step{2**i}" for i in range(10)] + [f"step{k * 1000}" for k in range(1, 144)]


def names(model) -> list[str]:
    return [c.revision for c in model.checkpoints]


def test_pythia_all_is_exactly_the_154_published_steps():
    assert len(PUBLISHED) == 154 and len(set(PUBLISHED)) == 154
    (m,) = expand_sweep(suite="pythia", sizes="70m", revisions="all")
    assert names(m) == PUBLISHED
    assert [c.step for c in m.checkpoints] == [int(n[4:]) for n in PUBLISHED] == list(PYTHIA_STEPS)
    assert m.checkpoints[0].key == "EleutherAI/pythia-70m@step0"
    assert m.checkpoints[-1].key == "EleutherAI/pythia-70m@step143000"
    assert all(c.source == "hub" and c.path is None and c.load_revision == c.revision for c in m.checkpoints)
    assert m.tokens_per_step == PYTHIA_TOKENS_PER_STEP == 1024 * 2048


def test_suites_expand_to_the_hub_names_in_size_order():
    assert suite_models("pythia") == [
        "EleutherAI/pythia-14m", "EleutherAI/pythia-31m", "EleutherAI/pythia-70m", "EleutherAI/pythia-160m",
        "EleutherAI/pythia-410m", "EleutherAI/pythia-1b", "EleutherAI/pythia-1.4b", "EleutherAI/pythia-2.8b",
        "EleutherAI/pythia-6.9b", "EleutherAI/pythia-12b",
    ]
    assert suite_models("pythia-deduped", "14m,31m,70m,160m,410m") == [
        f"EleutherAI/pythia-{s}-deduped" for s in ("14m", "31m", "70m", "160m", "410m")
    ]
    models = expand_sweep(suite="pythia", sizes="14m,31m,70m,160m,410m", revisions="all")
    assert sum(len(m.checkpoints) for m in models) == 5 * 154


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("log", ["step0", "step1", "step2", "step4", "step8", "step16", "step32", "step64", "step128", "step256", "step512"]),
        ("every:20000", ["step0"] + [f"step{k}" for k in range(20000, 143001, 20000)] + ["step143000"]),
        ("final", ["step143000"]),
        ("first,final", ["step0", "step143000"]),
        ("step2000, 1000,step1000", ["step1000", "step2000"]),
        ("log,every:71500", ["step0", "step1", "step2", "step4", "step8", "step16", "step32", "step64", "step128",
                             "step256", "step512", "step143000"]),
    ],
)
def test_revision_sets_on_pythia(spec, expected):
    (m,) = expand_sweep(suite="pythia", sizes="14m", revisions=spec)
    assert names(m) == expected


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"suite": "pythia", "sizes": "13m"}, "has no size '13m'"),
        ({"suite": "gpt2"}, "unknown suite 'gpt2'"),
        ({"sizes": "70m"}, "--sizes needs --suite"),
        ({"suite": "pythia", "sizes": "70m", "revisions": "al"}, "unknown revision or revision set 'al'"),
        ({"suite": "pythia", "sizes": "70m", "revisions": "every:x"}, "every:N needs a positive whole number"),
        ({"suite": "pythia", "sizes": "70m", "revisions": "step1500"}, "no checkpoint at step 1500"),
        ({"suite": "pythia", "sizes": "70m", "revisions": ""}, "--revisions is empty"),
        ({}, "nothing to sweep"),
        ({"models": ["no/such/folder"]}, "neither an existing folder"),
    ],
)
def test_bad_suite_or_revision_input_is_a_user_error(kw, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as info:
        expand_sweep(**kw)
    assert "\n" not in str(info.value)


def test_missing_step_error_names_the_nearest_published_steps():
    with pytest.raises(UserError, match=r"nearest: 1000, 2000"):
        expand_sweep(suite="pythia", sizes="70m", revisions="1500")


def test_explicit_revisions_of_another_hub_model_need_no_hub():
    (m,) = expand_sweep(["org/my-model"], revisions="checkpoint-500,step100")
    assert [(c.revision, c.step) for c in m.checkpoints] == [("step100", 100), ("checkpoint-500", 500)]
    assert m.tokens_per_step is None
    with pytest.raises(UserError, match="cannot read a training step from revision 'main'"):
        expand_sweep(["org/my-model"], revisions="main")


@pytest.mark.parametrize(
    "name, step",
    [("step0", 0), ("step143000", 143000), ("step-5", 5), ("step_7", 7), ("checkpoint-500", 500), ("checkpoint_12", 12),
     ("Step10", 10), ("final", None), ("checkpoint", None), ("step10b", None), ("mystep10", None)],
)
def test_step_read_from_checkpoint_names(name, step):
    assert step_from_name(name) == step


def _ckpt(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")


def test_local_checkpoint_folders_single_model_and_family(tmp_path):
    fam = tmp_path / "fam"
    for s in (0, 10, 200, 30):
        _ckpt(fam / "m1" / f"step{s}")
    for s in (5, 50):
        _ckpt(fam / "m2" / f"checkpoint-{s}")
    (fam / "m2" / "runs").mkdir()  # not a checkpoint
    _ckpt(fam / "m2" / "step99x")  # not a step name
    (fam / "m1" / "step40").mkdir()  # no config.json: not a checkpoint
    (fam / "notes").mkdir()
    (fam / "m1" / "train_config.json").write_text(json.dumps({"tokens_per_step": 4096, "n_params": 1234}))

    models = expand_sweep([str(fam)], revisions="all")
    assert [m.model for m in models] == [os.path.join(str(fam), "m1"), os.path.join(str(fam), "m2")]
    assert names(models[0]) == ["step0", "step10", "step30", "step200"]
    assert names(models[1]) == ["checkpoint-5", "checkpoint-50"]
    assert (models[0].tokens_per_step, models[0].n_params) == (4096, 1234)
    assert (models[1].tokens_per_step, models[1].n_params) == (None, None)
    c = models[1].checkpoints[1]
    assert c.source == "local" and c.path == str((fam / "m2" / "checkpoint-50").resolve()) and c.load_revision is None
    assert c.key == f"{fam}/m2@checkpoint-50"

    # one model folder given directly (trailing slash normalised); sets apply to its own steps
    (m,) = expand_sweep([str(fam / "m1") + "/"], revisions="log,final")
    assert m.model == str(fam / "m1") and names(m) == ["step0", "step200"]
    (m,) = expand_sweep([str(fam / "m1")], revisions="every:20")
    assert names(m) == ["step0", "step200"]  # multiples of 20, plus the last step
    (m,) = expand_sweep([str(fam / "m2")], revisions="50,step5")
    assert names(m) == ["checkpoint-5", "checkpoint-50"]


def test_local_folders_that_hold_no_checkpoints_are_user_errors(tmp_path):
    _ckpt(tmp_path / "plain")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="single model folder"):
        local_members(str(tmp_path / "plain"))
    with pytest.raises(UserError, match="holds no checkpoints"):
        local_members(str(tmp_path / "empty"))
    _ckpt(tmp_path / "m" / "step1")
    (tmp_path / "m" / "train_config.json").write_text(json.dumps({"tokens_per_step": -4}))
    with pytest.raises(UserError, match="positive whole number"):
        expand_sweep([str(tmp_path / "m")])
    with pytest.raises(UserError, match="no checkpoint at step 2"):
        select_revisions("step2", [("step1", 1)], "'m'")


# --- hub cache housekeeping, on a cache laid out as huggingface_hub writes it -----------------


def fake_hub_cache(cache: Path, repo: str, revisions: dict[str, dict[str, bytes]]) -> dict[str, str]:
    """A Hugging Face cache for ``repo``: blobs by content hash, one snapshot per branch, refs; {branch: commit}."""
    base = cache / f"models--{repo.replace('/', '--')}"
    commits = {}
    for branch, files in revisions.items():
        commit = hashlib.sha1(branch.encode()).hexdigest()
        commits[branch] = commit
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / branch).write_text(commit)
        for name, content in files.items():
            blob = base / "blobs" / hashlib.sha256(content).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(content)
            link = base / "snapshots" / commit / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    return commits


def test_eviction_deletes_only_the_revision_asked_and_keeps_shared_files(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from lmsat.experiments.sweep import _evict
    from lmsat.loading.checkpoints import hub_cached_commits, hub_commit_of

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = "EleutherAI/pythia-14m"
    commits = fake_hub_cache(
        tmp_path, repo,
        {
            "main": {"config.json": b"{cfg}", "model.safetensors": b"W-final"},
            "step1": {"config.json": b"{cfg}", "model.safetensors": b"W-1"},
            "step2": {"config.json": b"{cfg}", "model.safetensors": b"W-2"},
        },
    )
    assert hub_cached_commits(repo) == set(commits.values())
    assert hub_commit_of(repo, "step1") == commits["step1"] and hub_commit_of(repo, "step9") is None
    keep = {commits["main"], commits["step2"]}  # were cached before the sweep
    for rev in ("step1", "step2"):
        _evict(repo, rev, keep)
    assert hub_cached_commits(repo) == keep
    blobs = {p.read_bytes() for p in (tmp_path / f"models--{repo.replace('/', '--')}" / "blobs").iterdir()}
    assert blobs == {b"{cfg}", b"W-final", b"W-2"}  # step1's weights gone, the shared config kept
