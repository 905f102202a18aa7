"""Render a report as Markdown (GitHub-flavoured pipe tables) for papers and issues.

Figures are linked as PNG files in the companion folder, by paths relative to the
report, so the folder travels with the ``.md`` file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from lmsat import __version__
from lmsat.report.content import Section, fmt_cell
from lmsat.report.diagnosis import CONTESTED, ModelDiagnosis
from lmsat.store import now_iso


def _esc(text: Any) -> str:
    """HTML special characters as entities: a model named ``<script>`` stays text in any Markdown renderer."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cell(v: Any) -> str:
    v = None if (isinstance(v, float) and v != v) else v
    return _esc(fmt_cell(v)).replace("|", "\\|").replace("\n", " ")


def table_md(frame: pd.DataFrame) -> str:
    if not len(frame):
        return "_(empty)_\n"
    head = "| " + " | ".join(_cell(c) for c in frame.columns) + " |"
    sep = "|" + "|".join("---:" if frame[c].dtype.kind in "fiu" else "---" for c in frame.columns) + "|"
    rows = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, sep, *rows]) + "\n"


def md_text(text: Any) -> str:
    """Any string that can hold a user's name (models, folders, kinds, titles, record text) as inert
    Markdown: HTML special characters as entities (a model named ``<script>`` stays text in any
    renderer), then Markdown's inline markup backslash-escaped, on one line."""
    out = _esc(text)
    for ch in "\\`*_[]|#!":
        out = out.replace(ch, "\\" + ch)
    return out.replace("\n", " ")


def verdict_md(verdicts: list[dict[str, Any]]) -> list[str]:
    out = []
    for v in verdicts:
        out.append(f"## Verdict: d = {fmt_cell(v.get('hidden_size'))} is {md_text(v.get('status'))}\n")
        out.append(md_text(v.get("reason", "")) + "\n")
        out.append(f"**Recommendation.** {md_text(v.get('recommendation', ''))}\n")
        if v.get("own_head_note"):
            out.append(f"> {md_text(v['own_head_note'])}\n")
        ev = dict(v.get("evidence", {}))
        out.append(table_md(pd.DataFrame({"evidence (measured on)": list(ev), "value": [fmt_cell(x) for x in ev.values()]})))
        out += ["**Assumptions**\n"] + [f"- {md_text(a)}" for a in v.get("assumptions", [])] + [""]
    return out


def _rel(path: Path, base: Path) -> str:
    """The link target of a file, relative to the report, percent-encoded (a folder name is never markup)."""
    from urllib.parse import quote

    return quote(Path(os.path.relpath(path, base)).as_posix())


def render_markdown(meta: dict[str, Any], diags: list[ModelDiagnosis], evidence: dict[str, Path], sections: list[Section],
                    summary: pd.DataFrame, base: Path) -> str:
    kinds = ", ".join(f"{md_text(k)} ({n})" for k, n in meta["kinds"].items())
    out = [f"# {md_text(meta['title'])}\n",
           f"Generated {now_iso()} by lmsat {__version__} from {', '.join(md_text(d) for d in meta['run_dirs'])}. "
           f"Records: {kinds}. Tables as CSV in {md_text(meta['files'])}/. Every number is read from stored results.\n",
           *verdict_md(meta.get("verdicts", [])),
           "## Diagnosis\n"]
    if len(summary):
        out.append(table_md(summary))
    else:
        out.append("These run directories hold no model-level result, so there is no model to diagnose.\n")
    for m in diags:
        out.append(f"### {md_text(m.model)} — {md_text(m.overall)}\n\nhidden size d = {fmt_cell(m.hidden_size)}\n")
        for f in m.findings:
            out.append(f"**{md_text(f.topic)}** ({md_text(f.status)}). {md_text(f.verdict)}\n")
            out.append(table_md(pd.DataFrame({"evidence": list(f.numbers), "value": [fmt_cell(v) for v in f.numbers.values()]})))
            for c in f.caveats:
                out.append(f"> {md_text(c)}\n")
        if m.model in evidence:
            out.append(f"![evidence for {md_text(m.model)}]({_rel(evidence[m.model], base)})\n")
        for c in m.caveats:
            if c != CONTESTED:
                out.append(f"- Caveat: {md_text(c)}")
        out.append("")
    out.append(f"> **Read with care.** {CONTESTED}\n")
    for sec in sections:
        out.append(f"## {md_text(sec.title)}\n\n{md_text(sec.intro)}\n")
        for fig in sec.figures:
            out.append(f"![{md_text(fig.title)}]({_rel(fig.path, base)})\n\n_{md_text(fig.caption)}_\n")
        for t in sec.tables:
            out.append(f"**{md_text(t.title)}**\n\n{table_md(t.frame)}")
    out.append("---\nStudy: Godey, de la Clergerie, Sagot, arXiv 2404.07647. Counterpoint: arXiv 2602.20433.\n")
    return "\n".join(out)
