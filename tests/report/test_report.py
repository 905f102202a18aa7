"""`lmsat report`: one file from stored results, the numbers in its tables are the stored ones.

The run directories are made the way a user makes them: `lmsat anisotropy` and `lmsat head`
on the real SmolLM2 model and a tiny GPT-NeoX, on Brown text. Kinds whose commands are not
exercised here get records written with Store.put, marked as test data (inputs.test_data);
their numbers are asserted to appear in the report's tables.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.contract import assert_user_error
from lmsat.kinds import anisotropy as kinds_anisotropy
from lmsat.kinds import head as kinds_head
from lmsat.kinds import rank_probe as kinds_rank_probe
from lmsat.kinds import sweep as kinds_sweep
from lmsat.kinds import synth as kinds_synth

# n-gram test spectrum: s_i^2 = exp(-i / 100), i = 0..999. Its dimensions at W-error 0.5 / 0.1
# are computed independently in `expected_dimension` below.
NGRAM_S = np.sqrt(np.exp(-np.arange(1000) / 100.0))


def expected_dimension(s: np.ndarray, threshold: float) -> int:
    """Smallest k with sqrt(sum_{i>=k} s_i^2 / sum s^2) <= threshold, by a plain loop."""
    total = float(np.sum(s**2))
    for k in range(len(s) + 1):
        if np.sqrt(float(np.sum(s[k:] ** 2)) / total) <= threshold:
            return k
    raise AssertionError("unreachable")


def write_test_data(run_dir: Path) -> dict[str, object]:
    """Records for the kinds whose commands are not run here, in those commands' schemas (marked test_data)."""
    from lmsat.store import Store

    store = Store(run_dir)
    t = {"test_data": True}
    store.put("ngram", "brown|smollm2|n=5", {**t, "corpus": {"source": "/data/brown"}, "n": 5, "tokenizer": {"name": "smollm2"}},
              {"n_tokens": 200000, "n_contexts": 150000, "frobenius_norm": float(np.linalg.norm(NGRAM_S)), "complete": True,
               "dims_for_w_error": {"0.5": expected_dimension(NGRAM_S, 0.5), "0.1": expected_dimension(NGRAM_S, 0.1)}},
              arrays={"singular_values": NGRAM_S})
    lang = run_dir / "lang"
    Store(lang).put("synth", "language", {**t, "rank": 24, "vocab": 256, "seed": 3}, {"rank": 24, "family": "low-rank-logits", "expected_entropy": 2.3456})
    steps = [0, 100, 200, 400, 800, 1600]
    losses = [6.0, 4.1, 3.512, 3.533, 3.61, 3.7031]
    entropies = [0.3, 0.25, 0.2, 1.9, 2.1, 2.2]
    aniso = [0.2, 0.3, 0.35, 0.5, 0.93, 0.95]
    for st, lo, en, an in zip(steps, losses, entropies, aniso):
        store.put("sweep", f"EleutherAI/pythia-14m@step{st}", {**t, "model": "EleutherAI/pythia-14m", "revision": f"step{st}", "step": st},
                  {"status": "ok", "cross_entropy": lo, "singular_entropy": en, "last_layer_anisotropy": an, "hidden_size": 128})
    store.put("train", "pythia-14m", {**t, "model": "pythia-14m", "hidden_size": 128,
                                      "data": {"corpus": {"source": str(lang / "corpus")}}},
              {"hidden_size": 128, "final_eval_loss": 3.7031, "final_gap": 1.3575, "best_gap": 1.1664})
    store.put("saturation", "EleutherAI/pythia-14m", {**t, "model": "EleutherAI/pythia-14m"},
              {"best_step": 200, "best_loss": 3.512, "final_loss": 3.7031, "relative_rise": 3.7031 / 3.512 - 1, "saturates": True,
               "collapse_step": 400, "collapse_rise": 2.0, "anisotropy_jump_step": 800, "anisotropy_rise": 0.75})
    store.put("scaling_fit", "fit", {**t}, {"A": 119.09, "alpha": 0.246, "E": 1.69, "B": 410.7, "beta": 0.28})
    for r, loss in ((16, 4.4321), (32, 3.9876), (64, 3.6012), (128, 3.5874)):
        for stage, lr in (("search", 0.003), ("final", 0.01)):
            store.put("rank_probe", f"EleutherAI/pythia-14m|r={r}|lr={lr}|{stage}",
                      {**t, "model": "EleutherAI/pythia-14m", "hidden_size": 128, "rank": r, "lr": lr, "stage": stage},
                      {"stage": stage, "head": "low-rank", "rank": r, "lr": lr, "loss": loss if stage == "final" else None,
                       "dev_loss": loss + 0.1, "accuracy": 0.3 - 0.0001 * r if stage == "final" else None})
    store.put("rank_probe_ref", "EleutherAI/pythia-14m|full|lr=0.01|final", {**t, "model": "EleutherAI/pythia-14m", "hidden_size": 128},
              {"stage": "final", "head": "full-rank", "rank": 128, "loss": 3.5702})
    store.put("downstream", "EleutherAI/pythia-14m@step200", {**t, "model": "EleutherAI/pythia-14m", "revision": "step200"},
              {"lambada_openai.acc": 0.1234, "sciq.acc": 0.5678})
    return {"steps": steps, "losses": losses}


# test_browser.py imports these session fixtures; pytest then holds one definition per module, so
# the first one built is kept here and the other returns it instead of measuring again.
_BUILT: dict[str, object] = {}


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory, smollm2_hf, tiny_neox, brown_dir):
    """Run directories: real measurements (SmolLM2 + tiny NeoX on Brown), test-data records, a language."""
    if "runs" in _BUILT:
        return _BUILT["runs"]
    from lmsat.cli import main

    real = tmp_path_factory.mktemp("real_run")
    for args in (["anisotropy", smollm2_hf, tiny_neox, "-d", brown_dir, "-n", "512", "--seq-len", "128", "-o", real],
                 ["head", smollm2_hf, tiny_neox, "-o", real]):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code in (0, None), f"lmsat {args[0]} failed"
    extra = tmp_path_factory.mktemp("extra_run")
    write_test_data(extra)
    _BUILT["runs"] = (real, extra, extra / "lang")
    return _BUILT["runs"]


class Tables(HTMLParser):
    """Every <table data-table=...> of an HTML page as a DataFrame of cell texts (an independent parser)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.transposed: set[str] = set()
        self._name: str | None = None
        self._cell: list[str] | None = None
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "data-table" in a:
            self._name = a["data-table"]
            self.tables[self._name] = []
            if a.get("data-transposed"):
                self.transposed.add(self._name)
        elif tag == "tr" and self._name:
            self.tables[self._name].append([])
        elif tag in ("td", "th") and self._name:
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._name:
            self.tables[self._name][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._name = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def frame(self, name: str) -> pd.DataFrame:
        """A table as the report's frame (a wide table shown transposed, one row per column, is turned back)."""
        rows = self.tables[name]
        if name in self.transposed:
            head, body = rows[0], rows[1:]
            return pd.DataFrame([[head[j]] + [r[j] for r in body] for j in range(1, len(head))], columns=[head[0]] + [r[0] for r in body])
        return pd.DataFrame(rows[1:], columns=rows[0])


def parse(html_text: str) -> Tables:
    p = Tables()
    p.feed(html_text)
    return p


def close(cell: str, value: float) -> bool:
    """A table cell (4 significant digits) shows ``value``."""
    return abs(float(cell) - value) <= 5e-4 * max(1.0, abs(value))


def raw_records(run: Path, kind: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / kind).glob("*.json"))]


@pytest.fixture(scope="session")
def html_report(report_runs, tmp_path_factory):
    if "html" in _BUILT:
        return _BUILT["html"]
    from lmsat.cli import main

    out = tmp_path_factory.mktemp("report") / "report.html"
    try:
        main(["report", *map(str, report_runs), "-o", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    _BUILT["html"] = out
    return out


def test_html_report_is_one_self_contained_file(html_report):
    text = html_report.read_text()
    assert text.startswith("<!DOCTYPE html>")
    # No resource outside the file: every src/href is a data: URI or an in-page anchor.
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs), [r[:40] for r in refs if not r.startswith(("data:", "#"))]
    assert "<script" not in text and "<link" not in text and "@import" not in text
    page = parse(text)
    # figures: evidence per model + anisotropy, head (2), ngram, sweep (3), rank probe
    assert len(page.images) >= 9
    for src in page.images:
        import base64

        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_anisotropy_and_head_tables_hold_the_stored_numbers(html_report, report_runs):
    page = parse(html_report.read_text())
    real = report_runs[0]
    aniso = page.frame("anisotropy")  # columns: the kind's human-readable labels
    A, H = kinds_anisotropy.LABELS, kinds_head.LABELS
    recs = raw_records(real, "anisotropy")
    assert len(aniso) == sum(len(r["results"]["layers"]) for r in recs)
    for rec in recs:
        name = Path(rec["inputs"]["model"]).name
        rows = aniso[aniso["model"] == name]
        assert len(rows) == len(rec["results"]["layers"])
        for (_, row), layer in zip(rows.iterrows(), rec["results"]["layers"]):
            assert int(row[A["layer"]]) == layer["layer"]
            assert close(row[A["anisotropy"]], layer["anisotropy"])
    head = page.frame("head")
    for rec in raw_records(real, "head"):
        row = head[head["model"] == Path(rec["inputs"]["model"]).name].iloc[0]
        assert int(row[H["hidden_size"]]) == rec["inputs"]["hidden_size"]
        for col in ("singular_entropy", "effective_rank", "w_error_d2"):
            assert close(row[H[col]], rec["results"][col]), col
    smol = head[head["model"] == "smollm2-hf"].iloc[0]
    assert int(smol[H["hidden_size"]]) == 576 and int(smol[H["vocab_rows"]]) == 49152


def test_other_kinds_tables_hold_the_test_data(html_report, report_runs):
    page = parse(html_report.read_text())
    sweep = page.frame("sweep")
    S, R = kinds_sweep.LABELS, kinds_rank_probe.LABELS
    assert [int(x) for x in sweep[S["step"]]] == [0, 100, 200, 400, 800, 1600]
    assert all(close(c, v) for c, v in zip(sweep[S["cross_entropy"]], [6.0, 4.1, 3.512, 3.533, 3.61, 3.7031]))
    probe = page.frame("rank_probe")  # final runs only, not the learning-rate search
    assert [int(x) for x in probe[R["rank"]]] == [16, 32, 64, 128]
    assert close(probe[R["loss"]].iloc[0], 4.4321) and close(probe[R["lr"]].iloc[0], 0.01)
    fit = page.frame("scaling_fit")
    assert close(fit["A"].iloc[0], 119.09) and close(fit["alpha"].iloc[0], 0.246)
    down = page.frame("downstream")
    assert close(down["lambada_openai.acc"].iloc[0], 0.1234)
    ngram = page.frame("ngram")
    assert int(ngram["dimension at W-error 0.5"].iloc[0]) == expected_dimension(NGRAM_S, 0.5)
    assert int(ngram["dimension at W-error 0.1"].iloc[0]) == expected_dimension(NGRAM_S, 0.1)
    assert close(page.frame("synth")[kinds_synth.LABELS["expected_entropy"]].iloc[0], 2.3456)


def test_diagnosis_compares_d_with_the_data_dimension(html_report):
    page = parse(html_report.read_text())
    summary = page.frame("summary")
    dim5, dim1 = expected_dimension(NGRAM_S, 0.5), expected_dimension(NGRAM_S, 0.1)
    assert dim5 < 576 and 32 < dim5 and dim1 <= 576  # the test spectrum straddles the models' d
    by_model = summary.set_index("model")
    # tiny NeoX: d = 32 < dim(0.5); SmolLM2: d = 576 >= dim(0.1)
    assert by_model.loc["smollm2-hf", "bottleneck"] == "not binding"
    # pythia-14m: trained on the rank-24 language (d = 128 >= 24): the exact rank decides over the estimate
    assert by_model.loc["pythia-14m", "bottleneck"] == "not binding"
    tiny = [m for m in by_model.index if m.startswith("tiny_neox")]
    assert tiny and by_model.loc[tiny[0], "bottleneck"] == "binding"
    assert int(by_model.loc["smollm2-hf", "dim@0.5"]) == dim5 and int(by_model.loc["smollm2-hf", "dim@0.1"]) == dim1
    assert int(by_model.loc["pythia-14m", "known rank"]) == 24  # trained on lang/corpus (train record)
    assert by_model.loc["smollm2-hf", "known rank"] == "–"  # not trained on it: no known rank applies
    text = html_report.read_text()
    assert "arXiv 2602.20433" in text
    assert "instruction-tuned model, not a pretraining checkpoint" in text  # SmolLM2-Instruct caveat
    assert "Only 6 checkpoints" in text  # small-sweep caveat


def test_csv_tables_next_to_the_report_equal_the_records(html_report, report_runs):
    files = html_report.parent / "report_files"
    head = pd.read_csv(files / "head.csv")
    for rec in raw_records(report_runs[0], "head"):
        row = head[head["model"] == Path(rec["inputs"]["model"]).name].iloc[0]
        assert row[kinds_head.LABELS["singular_entropy"]] == pytest.approx(rec["results"]["singular_entropy"], rel=1e-12)
    sweep = pd.read_csv(files / "sweep.csv")
    assert sweep[kinds_sweep.LABELS["cross_entropy"]].tolist() == pytest.approx([6.0, 4.1, 3.512, 3.533, 3.61, 3.7031])
    assert {"summary.csv", "diagnosis.csv", "anisotropy.csv", "rank_probe.csv", "ngram.csv"} <= {p.name for p in files.iterdir()}


def test_markdown_report_links_existing_figures(report_runs, tmp_path, cli):
    out = tmp_path / "paper" / "report.md"
    out.parent.mkdir()
    r = cli("report", *report_runs, "-o", out, "--markdown")
    assert r.code == 0, r.stderr
    text = out.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links and all((out.parent / link).is_file() for link in links)
    rec = raw_records(report_runs[0], "head")
    ent = next(x for x in rec if x["inputs"]["model"].endswith("smollm2-hf"))["results"]["singular_entropy"]
    head_rows = [line.split("|") for line in text.splitlines() if line.startswith("| smollm2-hf |") and "| 49152 |" in line]
    assert len(head_rows) == 1 and f" {ent:.4g} " in head_rows[0]


def test_report_never_loads_a_model(report_runs, tmp_path, cli, monkeypatch):
    import lmsat.loading.models as models

    def refuse(*a, **k):
        raise AssertionError("report loaded a model")

    monkeypatch.setattr(models, "load_model", refuse)
    monkeypatch.setattr(models, "load_config", refuse)
    r = cli("report", report_runs[1], "-o", tmp_path / "r.html")
    assert r.code == 0, r.stderr
    assert "pythia-14m" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("empty", "holds no lmsat results"),
        ("suffix", "name it *.html or *.md"),
        ("conflict", "--markdown asks for Markdown"),
        ("future-schema", "re-run `lmsat sweep`"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, message, tmp_path, cli, report_runs):
    import shutil

    run = tmp_path / "run"
    out = tmp_path / "out" / "report.html"
    args: list[object] = [run]
    if case == "missing":
        pass
    elif case == "empty":
        run.mkdir()
        (run / "tokens").mkdir()
    else:
        shutil.copytree(report_runs[1], run)
        if case == "suffix":
            out = out.with_suffix(".pdf")
        elif case == "conflict":
            args.append("--markdown")
        elif case == "future-schema":  # a record of a newer lmsat: its kind refuses to guess its fields
            victim = next((run / "sweep").glob("*.json"))
            victim.write_text(victim.read_text().replace('"lmsat.sweep/1"', '"lmsat.sweep/9"'))
    r = cli("report", *args, "-o", out)
    assert_user_error(r, tmp_path / "out", message)


def test_a_corrupt_record_is_skipped_with_one_warning_and_left_in_place(tmp_path, cli, report_runs):
    """A truncated record: one warning naming it, the report is written without it, and the file stays where it is
    (the report only reads; the command that wrote the record moves it aside and redoes it)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(report_runs[1], run)
    victim = next((run / "sweep").glob("*.json"))
    victim.write_text(victim.read_text()[:40])
    out = tmp_path / "out" / "report.html"
    r = cli("report", run, "-o", out)
    assert r.code == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("lmsat: warning:")]
    assert len(warnings) == 1 and victim.name in warnings[0] and "Traceback" not in r.stderr
    assert "left in place" in warnings[0]
    assert out.is_file() and victim.exists() and not list((run / "sweep").glob("*.corrupt"))
