"""The report as a person sees it: Debian's headless chromium opens the HTML file.

Asserts no console error, no request leaving the file, every image decoded with a
non-zero size, and the rendered tables showing the numbers stored in the records.
Saves a screenshot of the first screen to test-artifacts/report.png.

Chromium and the Python `playwright` package come from scripts/install_browser.sh
(apt-get + pip; no browser download): the test runs it when either is missing and
fails with its output if that does not work. It never skips silently.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.report.test_report import close, html_report, raw_records, report_runs  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def ensure_browser() -> None:
    missing = not Path(CHROMIUM).exists()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = True
    if missing:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "install_browser.sh")], capture_output=True, text=True)
        if proc.returncode != 0 or not Path(CHROMIUM).exists():
            pytest.fail(f"headless chromium is needed for this test and scripts/install_browser.sh failed:\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="module")
def page_of(html_report):
    ensure_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        events: dict[str, list[str]] = {"console": [], "pageerror": [], "requests": [], "failed": []}
        page.on("console", lambda m: events["console"].append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: events["pageerror"].append(str(e)))
        page.on("request", lambda r: events["requests"].append(r.url))
        page.on("requestfailed", lambda r: events["failed"].append(r.url))
        page.goto(html_report.as_uri(), wait_until="load")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        artifacts = ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artifacts / "report.png"))
        yield page, events
        browser.close()


def test_page_loads_without_console_errors_or_network(page_of, html_report):
    page, events = page_of
    assert [m for m in events["console"] if m.startswith(("error", "warning"))] == []
    assert events["pageerror"] == [] and events["failed"] == []
    # The only request is the file itself: figures are data: URIs, nothing is fetched.
    assert [u for u in events["requests"] if not u.startswith("data:")] == [html_report.as_uri()]
    assert page.title() == "lmsat report"


def test_every_image_decodes_with_nonzero_size(page_of):
    page, _ = page_of
    sizes = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(sizes) >= 9
    for alt, complete, w, h in sizes:
        assert complete and w > 0 and h > 0, alt


def rendered_table(page, name: str) -> list[dict[str, str]]:
    """Rows of a rendered table as {header: visible cell text} (a table shown transposed is turned back)."""
    return page.evaluate(
        """name => { const t = document.querySelector(`table[data-table="${name}"]`);
            const head = Array.from(t.querySelectorAll('thead th')).map(th => th.innerText.trim());
            const body = Array.from(t.querySelectorAll('tbody tr')).map(tr => Array.from(tr.children).map(c => c.innerText.trim()));
            if (t.dataset.transposed) {
                return head.slice(1).map((label, j) => Object.fromEntries(
                    [[head[0], label], ...body.map(cells => [cells[0], cells[j + 1]])]));
            }
            return body.map(cells => Object.fromEntries(cells.map((text, i) => [head[i], text]))); }""",
        name,
    )


def test_rendered_tables_show_the_stored_numbers(page_of, report_runs):
    from lmsat.kinds import anisotropy, head, rank_probe, saturation

    A, H, R, S = anisotropy.LABELS, head.LABELS, rank_probe.LABELS, saturation.LABELS
    page, _ = page_of
    real, extra = report_runs[:2]
    head = {row["model"]: row for row in rendered_table(page, "head")}
    for rec in raw_records(real, "head"):
        row = head[Path(rec["inputs"]["model"]).name]
        assert int(row[H["hidden_size"]]) == rec["inputs"]["hidden_size"]  # columns: the kinds' human-readable labels
        assert close(row[H["singular_entropy"]], rec["results"]["singular_entropy"])
        assert close(row[H["w_error_d4"]], rec["results"]["w_error_d4"])
    aniso = rendered_table(page, "anisotropy")
    stored = [(Path(r["inputs"]["model"]).name, x["layer"], x["anisotropy"]) for r in raw_records(real, "anisotropy") for x in r["results"]["layers"]]
    assert len(aniso) == len(stored)
    for row, (model, layer, value) in zip(aniso, stored):
        assert row["model"] == model and int(row[A["layer"]]) == layer and close(row[A["anisotropy"]], value)
    probe = rendered_table(page, "rank_probe")
    stored_probe = sorted((r["results"]["rank"], r["results"]["loss"]) for r in raw_records(extra, "rank_probe") if r["results"]["stage"] == "final")
    assert [(int(p[R["rank"]]), float(p[R["loss"]])) for p in probe] == [(r, pytest.approx(v, rel=5e-4)) for r, v in stored_probe]
    sat = json.loads(next((extra / "saturation").glob("*.json")).read_text())["results"]
    row = rendered_table(page, "saturation")[0]
    assert int(row[S["best_step"]]) == sat["best_step"] and close(row[S["relative_rise"]], sat["relative_rise"])


def test_first_screen_shows_the_diagnosis(page_of):
    page, _ = page_of
    assert (ROOT / "test-artifacts" / "report.png").stat().st_size > 10_000
    box = page.locator("#diagnosis h2").bounding_box()
    assert box is not None and box["y"] < 900  # the diagnosis starts on the first screen
    assert page.locator("table[data-table=summary]").is_visible()


# --- readability at two window widths -----------------------------------------------------------

WIDTHS = (1400, 800)
MIN_SCALE = 0.55  # lmsat.report.html.MIN_FIGURE_SCALE, restated: 8 pt legends at 130 dpi stay >= 8 px


@pytest.fixture(scope="module")
def layouts(page_of, html_report):
    """At each width: page and viewport widths, every figure's drawn and shown width, every table's and its box's width,
    every header's text; and a full-page screenshot in test-artifacts/report-<width>.png."""
    browser = page_of[0].context.browser  # one Playwright per thread: reuse page_of's browser
    out = {}
    for width in WIDTHS:
        page = browser.new_page(viewport={"width": width, "height": 1000})
        page.goto(html_report.as_uri(), wait_until="load")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        out[width] = page.evaluate("""() => ({
            page: document.documentElement.scrollWidth, viewport: window.innerWidth,
            figures: Array.from(document.images).map(i => ({alt: i.alt, natural: i.naturalWidth,
                shown: i.getBoundingClientRect().width, box: i.parentElement.clientWidth})),
            tables: Array.from(document.querySelectorAll('table')).map(t => ({name: t.dataset.table || t.className,
                width: t.getBoundingClientRect().width, box: (t.closest('.scroll') || t.parentElement).clientWidth,
                main: document.querySelector('main').clientWidth})),
            // column labels: the header row of a plain table, the first column of a transposed one (its header row holds record names)
            headers: Array.from(document.querySelectorAll('table:not([data-transposed]) thead th, table[data-transposed] tbody th'))
                .map(th => th.innerText.trim())})""")
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        page.screenshot(path=str(ROOT / "test-artifacts" / f"report-{width}.png"), full_page=True)
        page.close()
    return out


@pytest.mark.parametrize("width", WIDTHS)
def test_page_never_scrolls_sideways(layouts, width):
    assert layouts[width]["viewport"] == width
    assert layouts[width]["page"] <= width


@pytest.mark.parametrize("width", WIDTHS)
def test_figures_are_shown_at_a_readable_scale(layouts, width):
    figures = layouts[width]["figures"]
    assert figures
    for f in figures:
        # never shrunk below MIN_SCALE of the drawn size, never drawn wider than drawn
        assert f["shown"] >= MIN_SCALE * f["natural"] - 1, f
        assert f["shown"] <= f["natural"] + 1, f
    if width == 1400:  # on a wide window every figure fits its column without scrolling
        assert all(f["shown"] <= f["box"] + 1 for f in figures)


def test_tables_fit_the_page_at_1400_px(layouts):
    for t in layouts[1400]["tables"]:
        assert t["width"] <= t["box"] + 1 and t["width"] <= t["main"], t


def test_headers_are_words_not_code(layouts):
    import re

    for text in layouts[1400]["headers"]:
        assert not re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+", text), f"snake_case header: {text}"
        assert not text.startswith("{"), f"raw dict as header: {text}"
