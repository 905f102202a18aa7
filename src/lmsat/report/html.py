"""Render a report as ONE self-contained HTML file: inline CSS, figures as base64 PNG, no script, no network."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from lmsat import __version__
from lmsat.report.content import Section, Table, fmt_cell
from lmsat.report.diagnosis import CONTESTED, ModelDiagnosis
from lmsat.store import now_iso, slugify

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dde5; --bg:#ffffff; --panel:#f6f7f9;
        --bad:#b42318; --bad-bg:#fdecea; --mid:#9a6700; --mid-bg:#fff4d6; --ok:#1a7f37; --ok-bg:#e6f4ea; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color:var(--fg); background:var(--bg); }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 21px; margin: 40px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 17px; margin: 22px 0 6px; } h4 { font-size: 15px; margin: 14px 0 4px; }
.meta, .caption, .caveat { color: var(--muted); font-size: 13px; }
nav { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; margin: 14px 0; font-size: 14px; }
nav a { margin-right: 14px; color: #0b57d0; text-decoration: none; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 4px; max-width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 9px; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { min-width: 5em; } td.num { white-space: nowrap; }
table.transposed tbody th { background: var(--panel); text-align: left; position: static; }
th { background: var(--panel); font-weight: 600; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { max-height: 440px; overflow: auto; border: 1px solid var(--line); border-radius: 4px; display: block; width: fit-content; max-width: 100%; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin: 14px 0; }
.finding { border-left: 4px solid var(--line); padding: 4px 12px; margin: 10px 0; }
.finding.binding { border-color: var(--bad); } .finding.partly-binding { border-color: var(--mid); } .finding.not-binding { border-color: var(--ok); }
.badge { display: inline-block; font-size: 12px; font-weight: 600; border-radius: 10px; padding: 0 9px; margin-left: 6px; background: var(--panel); color: var(--muted); }
.badge.binding { background: var(--bad-bg); color: var(--bad); } .badge.partly-binding { background: var(--mid-bg); color: var(--mid); }
.badge.not-binding { background: var(--ok-bg); color: var(--ok); }
.evidence { display: flex; gap: 18px; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 10px 0 16px; overflow-x: auto; } figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
.note { background: var(--panel); border-radius: 6px; padding: 8px 12px; font-size: 13px; }
ul.caveats { margin: 4px 0; padding-left: 18px; }
"""


# A figure is never shown below this fraction of its drawn size (10 pt text at 130 dpi stays >= 10 px,
# 8 pt legends >= 8 px); on a narrower window its box scrolls sideways instead of shrinking the text.
MIN_FIGURE_SCALE = 0.55
# Tables with more columns than this and few rows are shown transposed (one row per column), so they fit the page.
MAX_COLUMNS = 8


def png_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None for anything else."""
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or raw[12:16] != b"IHDR":
        return None
    return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")


def _img(path: Path, alt: str) -> str:
    raw = Path(path).read_bytes()
    data = base64.b64encode(raw).decode("ascii")
    size = png_size(raw)
    dims = (f' width="{size[0]}" height="{size[1]}" style="min-width:{round(size[0] * MIN_FIGURE_SCALE)}px"' if size else "")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}"{dims}>'


def _is_num(v: Any) -> bool:
    import numbers

    return isinstance(v, numbers.Number) and not isinstance(v, bool)


def _cell_html(v: Any) -> str:
    v = None if (isinstance(v, float) and v != v) else v
    cls = ' class="num"' if _is_num(v) else ""
    data = f' data-value="{escape(repr(float(v)))}"' if _is_num(v) else ""
    return f"<td{cls}{data}>{escape(fmt_cell(v))}</td>"


def transposed_html(table: Table) -> str:
    """A wide, short table turned on its side: one row per column, one column per record (labelled by the first column)."""
    frame: pd.DataFrame = table.frame
    label = frame.columns[0]
    head = f"<th>{escape(str(label))}</th>" + "".join(f"<th>{escape(fmt_cell(v))}</th>" for v in frame[label])
    rows = []
    for col in frame.columns[1:]:
        rows.append(f'<tr><th scope="row">{escape(str(col))}</th>' + "".join(_cell_html(v) for v in frame[col]) + "</tr>")
    caption = f'<p class="caption">{escape(table.caption)}</p>' if table.caption else ""
    return (f'<h4>{escape(table.title)}</h4><div class="scroll"><table class="data transposed" id="tbl-{slugify(table.id)}" '
            f'data-table="{escape(table.id)}" data-transposed="1"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{caption}')


def table_html(table: Table) -> str:
    frame: pd.DataFrame = table.frame
    if len(frame.columns) > MAX_COLUMNS and 0 < len(frame) <= MAX_COLUMNS:
        return transposed_html(table)
    head = "".join(f"<th>{escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = []
        for v in row:
            v = None if (isinstance(v, float) and v != v) else v
            cls = ' class="num"' if _is_num(v) else ""
            data = f' data-value="{escape(repr(float(v)))}"' if _is_num(v) else ""
            cells.append(f"<td{cls}{data}>{escape(fmt_cell(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    caption = f'<p class="caption">{escape(table.caption)}</p>' if table.caption else ""
    return (f'<h4>{escape(table.title)}</h4><div class="scroll"><table class="data" id="tbl-{slugify(table.id)}" data-table="{escape(table.id)}">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>{caption}")


def _kv_table(numbers: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><th scope="row">{escape(k)}</th><td class="num"{_dv(v)}>{escape(fmt_cell(v))}</td></tr>' for k, v in numbers.items()
    )
    return f'<table class="evidence-numbers">{rows}</table>'


def _dv(v: Any) -> str:
    return f' data-value="{escape(repr(float(v)))}"' if _is_num(v) and v == v else ""


def _status_class(status: str) -> str:
    return slugify(status).replace("_", "-")


def diagnosis_html(diags: list[ModelDiagnosis], evidence: dict[str, Path], summary: pd.DataFrame) -> str:
    parts = ['<section id="diagnosis"><h2>Diagnosis</h2>',
             '<p>For each model: does its hidden size d limit what its softmax head can express on this data? '
             '<span class="badge binding">binding</span> the evidence says the head\'s rank is a limit, '
             '<span class="badge partly-binding">partly binding</span> it limits the tail, '
             '<span class="badge not-binding">not binding</span> it is not the limit here.</p>']
    if len(summary):
        parts.append(table_html(Table("summary", "Summary", summary)))
    else:
        parts.append("<p>These run directories hold no model-level result (head, anisotropy, sweep, rank probe or training), "
                     "so there is no model to diagnose; the measurements they hold follow.</p>")
    for m in diags:
        overall = m.overall
        parts.append(f'<div class="card" id="model-{slugify(m.model)}"><h3>{escape(m.model)}'
                     f'<span class="badge {_status_class(overall)}">{escape(overall)}</span></h3>'
                     f'<p class="meta">hidden size d = {escape(fmt_cell(m.hidden_size))}</p>')
        if not m.findings:
            parts.append("<p>No finding: the run directories hold no result this diagnosis can use for this model.</p>")
        for f in m.findings:
            parts.append(f'<div class="finding {_status_class(f.status)}"><h4>{escape(f.topic)}'
                         f'<span class="badge {_status_class(f.status)}">{escape(f.status)}</span></h4>'
                         f"<p>{escape(f.verdict)}</p>{_kv_table(f.numbers)}")
            if f.caveats:
                parts.append('<ul class="caveats caveat">' + "".join(f"<li>{escape(c)}</li>" for c in f.caveats) + "</ul>")
            parts.append("</div>")
        if m.model in evidence:
            parts.append(f'<figure>{_img(evidence[m.model], f"evidence for {m.model}")}'
                         f'<figcaption class="caption">Evidence for {escape(m.model)}, drawn from the stored records.</figcaption></figure>')
        model_caveats = [c for c in m.caveats if c != CONTESTED]
        if model_caveats:
            parts.append('<div class="note"><b>Caveats for this model</b><ul class="caveats">'
                         + "".join(f"<li>{escape(c)}</li>" for c in model_caveats) + "</ul></div>")
        parts.append("</div>")
    parts.append(f'<div class="note"><b>Read with care.</b> {escape(CONTESTED)}</div></section>')
    return "".join(parts)


def verdict_html(verdicts: list[dict[str, Any]]) -> str:
    """`lmsat diagnose`'s verdict: status, why, the evidence (each number labelled with what it is measured on),
    the recommendation, every assumption."""
    parts = []
    for v in verdicts:
        status = str(v.get("status", "inconclusive"))
        parts.append(f'<section id="verdict" class="card"><h2>Verdict: d = {escape(fmt_cell(v.get("hidden_size")))} is '
                     f'<span class="badge {_status_class(status)}">{escape(status)}</span></h2>'
                     f'<p>{escape(str(v.get("reason", "")))}</p>'
                     f'<p><b>Recommendation.</b> {escape(str(v.get("recommendation", "")))}</p>')
        if v.get("own_head_note"):
            parts.append(f'<p class="note">{escape(str(v["own_head_note"]))}</p>')
        parts.append("<h4>Evidence</h4>" + _kv_table(dict(v.get("evidence", {}))))
        if v.get("assumptions"):
            parts.append("<h4>Assumptions</h4><ul class=\"caveats\">" + "".join(f"<li>{escape(str(a))}</li>" for a in v["assumptions"]) + "</ul>")
        parts.append("</section>")
    return "".join(parts)


def section_html(sec: Section) -> str:
    parts = [f'<section id="{escape(sec.id)}"><h2>{escape(sec.title)}</h2><p>{escape(sec.intro)}</p>']
    for fig in sec.figures:
        parts.append(f'<figure class="plot" id="{escape(fig.id)}">{_img(fig.path, fig.title)}<figcaption class="caption">{escape(fig.caption)}</figcaption></figure>')
    for t in sec.tables:
        parts.append(table_html(t))
    parts.append("</section>")
    return "".join(parts)


def render_html(meta: dict[str, Any], diags: list[ModelDiagnosis], evidence: dict[str, Path], sections: list[Section],
                summary: pd.DataFrame) -> str:
    """The whole report as one HTML document (no external resource of any kind)."""
    kinds = ", ".join(f"{k} ({n})" for k, n in meta["kinds"].items())
    nav = ('<a href="#verdict">Verdict</a>' if meta.get("verdicts") else "") + '<a href="#diagnosis">Diagnosis</a>' + "".join(f'<a href="#{escape(s.id)}">{escape(s.title.split(":")[0])}</a>' for s in sections)
    body = [
        f"<header><h1>{escape(meta['title'])}</h1>",
        f'<p class="meta">Generated {escape(now_iso())} by lmsat {escape(__version__)} from '
        + ", ".join(f"<code>{escape(d)}</code>" for d in meta["run_dirs"])
        + f". Records: {escape(kinds)}. Tables as CSV in <code>{escape(meta['files'])}/</code>. "
          "Every number below is read from stored results; nothing is recomputed.</p></header>",
        f"<nav>{nav}</nav>",
        verdict_html(meta.get("verdicts", [])),
        diagnosis_html(diags, evidence, summary),
        *[section_html(s) for s in sections],
        '<footer><p class="meta">Study: Godey, de la Clergerie, Sagot, "Why do small language models underperform? Studying language '
        'model saturation via the softmax bottleneck", arXiv 2404.07647. Counterpoint: arXiv 2602.20433.</p></footer>',
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(meta['title'])}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")
