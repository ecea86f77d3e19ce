"""The dashboard in a real browser: `multimem app` + Debian's Chromium driven by Playwright.

Opens every page, flags a sample on Samples, checks review.sqlite, exports (page and CLI), and saves a
1400×2000 screenshot of every page into $MULTIMEM_SCREENSHOTS (default test-artifacts/screenshots/).
On another run: MULTIMEM_BROWSER_RUN=runs/demo python -m pytest tests/test_browser.py
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from multimem_core.run import RunDir
from tests.conftest import CHROMIUM, chromium_page, serving_app

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("MULTIMEM_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots"))
PAGES = {"overview": "", "samples": "samples", "detail": "detail", "map": "map", "review_export": "review_export"}

if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium (apt-get install -y chromium)",
                allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no `playwright install`)")


@pytest.fixture(scope="module")
def browser_run(request, tmp_path_factory) -> RunDir:
    """A copy of the engine's test run, or of $MULTIMEM_BROWSER_RUN (e.g. a `multimem demo` run)."""
    given = os.environ.get("MULTIMEM_BROWSER_RUN")
    source = RunDir(given) if given else request.getfixturevalue("engine_run")
    dst = tmp_path_factory.mktemp("browser") / "run"
    shutil.copytree(source.path, dst, ignore=shutil.ignore_patterns("models", "cache", "data", "review.sqlite*",
                                                                    "exports"))
    return RunDir(dst)


@pytest.fixture(scope="module")
def server(browser_run, tmp_path_factory):
    """`multimem app RUN` on a free port: the address it prints, once the server answers."""
    log = tmp_path_factory.mktemp("log") / "app.log"
    with serving_app([str(browser_run.path)], log) as url:
        for _ in range(40):  # the CLI prints the address it serves, localhost unless told otherwise
            if "open http://" in log.read_text():
                break
            time.sleep(0.25)
        text = log.read_text()
        assert "open http://" in text and text.split("open ", 1)[1].split()[0] == url, text
        yield url


@pytest.fixture(scope="module")
def page(server):
    with chromium_page() as pg:
        yield pg


def settle(pg, *, timeout: float = 60) -> None:
    """Wait until the script run is over and the page stopped changing."""
    pg.wait_for_selector("[data-testid='stApp']", timeout=timeout * 1000)
    pg.wait_for_selector("h1", timeout=timeout * 1000)
    end, quiet = time.time() + timeout, 0
    while time.time() < end and quiet < 3:
        running = pg.locator("[data-testid='stStatusWidget']").count() > 0
        quiet = 0 if running else quiet + 1
        time.sleep(0.3)
    time.sleep(0.8)  # images, plots and media elements paint after the run ends


def open_page(pg, url: str, path: str) -> None:
    pg.goto(f"{url}/{path}")
    settle(pg)
    exceptions = pg.locator("[data-testid='stException']")
    assert exceptions.count() == 0, exceptions.first.inner_text()


def shot(pg, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(SHOTS / f"{name}.png"))


def test_every_page_renders_in_chromium(page, server):
    for name, path in PAGES.items():
        open_page(page, server, path)
        assert page.locator("h1").first.inner_text().strip(), f"{name}: no title"
        shot(page, name)
    open_page(page, server, "")
    assert page.locator(".js-plotly-plot").count() >= 4, "Overview shows its charts"


def test_samples_plays_media_flags_and_exports(page, server, browser_run, tmp_path):
    open_page(page, server, "samples")
    # a 4-modality run: every card has a playable audio and video element
    assert page.locator("audio").count() >= 4 and page.locator("video").count() >= 4
    page.wait_for_function("() => [...document.querySelectorAll('video')].some(v => v.readyState >= 1 && v.duration > 0)",
                           timeout=20_000)
    page.wait_for_function("() => [...document.querySelectorAll('audio')].some(a => a.readyState >= 1 && a.duration > 0)",
                           timeout=20_000)
    assert page.locator("img").count() >= 4

    db = browser_run.review_path
    # one button per card and action (a button with a tooltip used to be drawn twice: 24 "Noisy" for 12 cards)
    cards = page.locator("[class*='st-key-grid_noisy_'] button")
    assert cards.count() == page.locator("[class*='st-key-grid_ok_'] button").count() == 12
    cards.first.click()
    deadline = time.time() + 20
    rows = []
    while time.time() < deadline and not rows:
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    rows = conn.execute("SELECT sample_id, label, source FROM decisions").fetchall()
            except sqlite3.OperationalError:  # the file exists a moment before its table does
                pass
        time.sleep(0.3)
    assert len(rows) == 1 and rows[0][1:] == ("noisy", "samples"), rows
    flagged = rows[0][0]
    settle(page)
    shot(page, "samples_flagged")

    # the CLI export leaves exactly that id out
    out = tmp_path / "clean.csv"
    res = subprocess.run([sys.executable, "-m", "multimem_core.cli", "export", str(browser_run.path), "--out",
                          str(out), "--drop", "flagged"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    ids = set(pd.read_csv(out, dtype=str)["id"])
    all_ids = set(browser_run.samples()["id"].astype(str))
    assert flagged not in ids and ids == all_ids - {flagged}

    # and the page's export does the same
    open_page(page, server, "review_export")
    page.locator("button:has-text('Build export')").click()
    page.wait_for_selector("text=Written to", timeout=30_000)
    settle(page)
    shot(page, "review_export_done")
    written = sorted((browser_run.path / "exports").glob("cleaned_manifest_flagged_*.csv"))
    assert written and set(pd.read_csv(written[-1], dtype=str)["id"]) == all_ids - {flagged}


def test_detail_page_for_the_most_memorized(page, server, browser_run):
    sid = browser_run.scores().sort_values("multimem")["id"].iloc[-1]
    open_page(page, server, f"detail?id={sid}")
    assert page.locator("text=never trained on it").count() >= 1
    assert page.locator(".js-plotly-plot").count() >= 2
    shot(page, "detail_top")
