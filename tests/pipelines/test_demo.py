"""`lmsat demo --quick` end to end: the report's diagnosis against the generator's known rank.

The known rank R and the trained models' losses are read back from the stored records
(the language's synth record, models/train/*.json), independently of the report code;
the report's summary table is parsed from its HTML.
"""

from __future__ import annotations

import json

import pytest

from tests.report.test_report import parse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from lmsat.cli import main

    out = tmp_path_factory.mktemp("demo") / "run"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            main(["demo", "--quick", "-o", str(out), "--device", "cpu"])
            code = 0
        except SystemExit as exc:
            code = exc.code
    return out, code, buf.getvalue()


def test_demo_quick_writes_a_report_and_prints_its_summary(demo_run):
    out, code, stdout = demo_run
    assert code in (0, None), stdout[-2000:]
    report = out / "report.html"
    assert report.is_file() and report.stat().st_size > 50_000
    assert f"report: {report}" in " ".join(stdout.split())
    assert "[7/7] writing the report" in stdout and "Diagnosis" in stdout
    for stage in ("language", "training", "sweeping", "n-gram", "rank probe", "SmolLM2"):
        assert stage in stdout


def test_diagnosis_matches_the_generators_known_rank(demo_run):
    out, _, _ = demo_run
    from lmsat.store import Store
    from lmsat.synth.truth import KEY, KIND

    truth = json.loads(Store(out / "language").record_path(KIND, KEY).read_text())["results"]
    rank = truth["rank"]
    trains = {json.loads(p.read_text())["key"]: json.loads(p.read_text())["results"] for p in (out / "models" / "train").glob("*.json")}
    assert {r["hidden_size"] < rank for r in trains.values()} == {True, False}  # the family straddles R
    summary = parse((out / "report.html").read_text()).frame("summary").set_index("model")
    for name, res in trains.items():
        row = summary.loc[name]
        d = res["hidden_size"]
        assert int(row["d"]) == d and int(row["known rank"]) == rank
        assert row["bottleneck"] == ("binding" if d < rank else "not binding")
        assert abs(float(row["gap to true entropy"]) - res["final_gap"]) <= 5e-4 * max(1, res["final_gap"])
    # The measured evidence agrees with the truth: models below R stay further from the true entropy ...
    below = [r["final_gap"] for r in trains.values() if r["hidden_size"] < rank]
    above = [r["final_gap"] for r in trains.values() if r["hidden_size"] >= rank]
    assert min(below) > max(above)
    # ... and the rank probe of the widest model needs a rank close to R (within the grid's spacing).
    widest = max(trains, key=lambda k: trains[k]["hidden_size"])
    needed = int(summary.loc[widest, "probe rank needed"])
    assert rank / 2 <= needed <= 2 * rank
    raw = [json.loads(p.read_text()) for p in (out / "results" / "rank_probe").glob("*.json")]
    probe = {r["results"]["rank"]: r["results"]["loss"] for r in raw if r["key"].endswith("final")}
    assert probe[min(probe)] > probe[max(probe)]  # a rank-limited head loses loss


def test_report_shows_the_ngram_dimension_stored(demo_run):
    out, _, _ = demo_run
    rec = json.loads(next((out / "results" / "ngram").glob("*.json")).read_text())
    table = parse((out / "report.html").read_text()).frame("ngram")
    assert int(table["dimension at W-error 0.5"].iloc[0]) == rec["results"]["dims_for_w_error"]["0.5"]


def test_rerun_continues_from_what_is_done(demo_run, cli):
    out, _, _ = demo_run
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.parent.name in ("train", "sweep", "rank_probe", "ngram", "synth")}
    r = cli("demo", "--quick", "-o", out, "--device", "cpu")
    assert r.code == 0, r.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # no record rewritten: nothing was measured again


def test_other_settings_in_the_same_folder_are_refused(demo_run, cli, tmp_path):
    out, _, _ = demo_run
    r = cli("demo", "-o", out)  # full demo into a quick demo's folder
    assert r.code == 2 and "holds a quick demo with other settings" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    r = cli("demo", "--quick", "-o", tmp_path / "x")
    assert r.code == 2 and "not empty" in r.stderr
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["notes.txt"]


def test_demo_report_opens_cleanly_in_chromium(demo_run):
    """The demo's own report (every section from real records) in Debian's headless chromium."""
    from tests.report.test_browser import CHROMIUM, CHROMIUM_ARGS, ensure_browser

    ensure_browser()
    from playwright.sync_api import sync_playwright

    out, _, _ = demo_run
    report = out / "report.html"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: problems.append(r.url) if not r.url.startswith(("data:", report.as_uri())) else None)
        page.goto(report.as_uri(), wait_until="load")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        sizes = page.evaluate("Array.from(document.images).map(i => [i.alt, i.naturalWidth, i.naturalHeight])")
        sections = page.evaluate("Array.from(document.querySelectorAll('section h2')).map(h => h.innerText)")
        browser.close()
    assert problems == []
    assert len(sizes) >= 12 and all(w > 0 and h > 0 for _, w, h in sizes), sizes
    for title in ("Diagnosis", "Ground truth", "Data dimension", "Anisotropy by layer", "Checkpoint sweep", "Rank-constrained heads"):
        assert any(s.startswith(title) for s in sections), (title, sections)


def test_every_record_the_demo_writes_has_a_registered_kind_and_only_typed_fields(demo_run):
    """The record kinds are the schema: every record of every stage is of a registered kind, reads through it
    (schema string checked), holds no field the kind does not declare, and round-trips exactly."""
    from lmsat import kinds
    from lmsat.store import Store

    out = demo_run[0]
    seen = set()
    for folder in sorted({p.parent.parent for p in out.rglob("*.json") if p.parent.name in kinds.REGISTRY}):
        store = Store(folder)
        for kind in store.kinds():
            if kind not in kinds.REGISTRY:
                continue
            for rec in store.records(kind):
                typed = kinds.typed(rec)
                assert dict(typed.extra) == {}, f"{kind} record {rec.key} has undeclared fields {sorted(typed.extra)}"
                assert typed.to_record()["results"] == rec.results
                seen.add(kind)
    assert {"synth", "train", "sweep", "saturation", "ngram", "head", "anisotropy", "rank_probe", "rank_probe_ref"} <= seen
