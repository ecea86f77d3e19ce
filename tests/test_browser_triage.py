"""The reviewer's day in Chromium: the app started from a folder other than the run's, 20 samples
triaged with the keyboard only, the decisions in review.sqlite, an export whose media paths open from where it
is written, the Mitigation preview; and a map selection that filters the table while the table's label filter
shows on the map. Helpers from tests/test_browser.py."""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import expect

from multimem_core.run import RunDir
from tests.conftest import serving_app
from tests.conftest import chromium_page
from tests.test_browser import open_page, settle, shot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def workplace(engine_run, shapes_manifest, tmp_path_factory) -> tuple[RunDir, Path]:
    """The engine's run (with its models) and its data in work/runs/r and work/data, with config.json as older
    runs wrote it: paths relative to the folder `multimem score` ran in (work/)."""
    work = tmp_path_factory.mktemp("triage") / "work"
    shutil.copytree(shapes_manifest.parent, work / "data")
    shutil.copytree(engine_run.path, work / "runs" / "r", ignore=shutil.ignore_patterns("review.sqlite*", "exports",
                                                                                          "mitigation"))
    run = RunDir(work / "runs" / "r")
    config = run.config()
    config.pop("paths_from_run", None)
    config.update(input=f"data/{shapes_manifest.name}", out="runs/r", dataset_root="data")
    config["manifest"]["path"] = f"data/{shapes_manifest.name}"
    run.write_config(config)
    elsewhere = work.parent / "elsewhere"
    elsewhere.mkdir()
    return run, elsewhere


@pytest.fixture(scope="module")
def page_and_url(workplace, tmp_path_factory):
    run, elsewhere = workplace
    log = tmp_path_factory.mktemp("log") / "app.log"
    with serving_app([str(run.path)], log, cwd=elsewhere) as url, chromium_page() as pg:
        yield pg, url


def progress(pg) -> tuple[int, int]:
    found = re.search(r"([\d,]+) of ([\d,]+) reviewed", pg.locator("[data-testid='stProgress']").inner_text())
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


def current_id(pg) -> str:
    return pg.locator("[data-testid='stMain'] [data-testid='stPageLink']").first.inner_text().split()[-1]


def wait_for(predicate, what: str, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_triage_with_the_keyboard_export_and_preview_from_another_folder(page_and_url, workplace):
    pg, url = page_and_url
    run, _ = workplace
    open_page(pg, url, "triage")
    done, total = progress(pg)
    assert done == 0 and total >= 20
    pg.locator("h1").first.click()  # focus on the page, not on a text field
    first = current_id(pg)
    pg.keyboard.press("j")
    wait_for(lambda: current_id(pg) != first, "j to move to the next sample")
    pg.keyboard.press("k")
    wait_for(lambda: current_id(pg) == first, "k to move back")
    seen = []
    for i in range(20):
        seen.append(current_id(pg))
        pg.keyboard.press("n" if i % 2 == 0 else "o")
        wait_for(lambda: progress(pg)[0] == i + 1, f"decision {i + 1} to be counted")
        wait_for(lambda: current_id(pg) != seen[-1], "the page to advance by itself")
    settle(pg)
    shot(pg, "triage")
    assert len(set(seen)) == 20
    with sqlite3.connect(run.review_path) as conn:
        rows = conn.execute("SELECT sample_id, label, reviewer, created_at, source FROM decisions ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == seen
    assert [r[1] for r in rows] == ["noisy", "ok"] * 10
    assert all(r[2].strip() and r[4] == "triage" for r in rows)
    assert all(datetime.fromisoformat(r[3]).tzinfo is not None for r in rows)
    noisy = {r[0] for r in rows if r[1] == "noisy"}

    # export drops the noisy ones; every media path in the written manifest opens from where it was written
    open_page(pg, url, "review_export")
    pg.locator("button:has-text('Build export')").click()
    pg.wait_for_selector("text=Written to", timeout=30_000)
    written = sorted((run.path / "exports").glob("cleaned_manifest_flagged_*.csv"))
    assert written
    table = pd.read_csv(written[-1], dtype=str, keep_default_na=False)
    assert set(table["id"]) == set(run.samples()["id"].astype(str)) - noisy
    for column in ("image", "audio", "video"):
        assert all((written[-1].parent / v).is_file() for v in table[column]), column

    # the Mitigation preview reads the dataset through config.json's relative paths
    sid = sorted(noisy & set(run.scores()["id"].astype(str)))[0]
    pg.goto(f"{url}/mitigation?id={sid}")
    pg.wait_for_selector("h1:has-text('Mitigation')", timeout=90_000)
    pg.locator("button:has-text('Run the preview')").click()
    pg.wait_for_selector("text=Targeting (chosen", timeout=180_000)
    settle(pg)
    assert pg.locator("[data-testid='stException']").count() == 0
    assert pg.get_by_text("cannot read the manifest").count() == 0
    shot(pg, "mitigation_from_elsewhere")


def nav(pg, title: str) -> None:
    """Go to a page through the sidebar: the same browser session, so the selection and filters stay."""
    pg.locator(f"[data-testid='stSidebarNav'] a:has-text('{title}')").first.click()
    pg.wait_for_selector(f"h1:has-text('{title}')", timeout=60_000)
    settle(pg)


def test_map_selection_filters_the_table_and_the_label_filter_shows_on_the_map(page_and_url, workplace):
    pg, url = page_and_url
    run, _ = workplace
    open_page(pg, url, "map")
    pg.wait_for_selector(".js-plotly-plot", timeout=60_000)
    x, y = pg.evaluate("""() => { const gd = document.querySelector('.js-plotly-plot'), fl = gd._fullLayout;
        const t = gd._fullData[0], r = gd.getBoundingClientRect();
        return [r.left + fl._size.l + fl.xaxis.l2p(t.x[0]), r.top + fl._size.t + fl.yaxis.l2p(t.y[0])]; }""")
    pg.mouse.move(x - 40, y - 40)
    pg.mouse.move(x, y, steps=8)
    # as a person does: the pointer rests on the point (its hover thumbnail comes back) before the click
    expect(pg.locator("#multimem-hover-thumb")).to_be_visible(timeout=30_000)
    pg.mouse.click(x, y)
    pg.wait_for_selector("a:has-text('Open ')", timeout=30_000)
    settle(pg)
    clicked = pg.locator("a:has-text('Open ')").first.inner_text().split()[-1]
    assert pg.locator("[data-testid='stImage'] img").count() >= 1, "the clicked point's thumbnail"
    shot(pg, "map_click")

    nav(pg, "Samples")
    pg.locator("button:has-text('Table')").first.click()
    settle(pg)
    assert pg.get_by_text(re.compile(r"^1 of [\d,]+ samples match")).count() == 1, "the map selection filters the table"
    grid = pg.locator("[data-testid='stDataFrame']")
    assert grid.count() == 1 and clicked in (grid.text_content() or ""), (grid.text_content() or "")[:500]
    shot(pg, "samples_table_selection")

    # the table's label filter, without the selection, shows on the map
    pg.locator("label:has-text('Only the selection')").first.click()
    settle(pg)
    label = str(run.samples()["label"].value_counts().index[0])
    count = int((run.samples()["label"].astype(str) == label).sum())
    pg.locator("[data-testid='stMultiSelect']:has-text('Dataset label') input").first.click()
    pg.keyboard.type(label)
    pg.keyboard.press("Enter")
    pg.locator("h1").first.click()
    settle(pg)
    # the table holds the whole filtered set, and says how many match
    expect(pg.get_by_text(f"{count:,} of {len(run.samples()):,} samples match")).to_have_count(1)
    nav(pg, "Map")
    assert pg.get_by_text(f"Show the Samples filters: label {label} ({count:,} samples)").count() == 1
    legend = pg.evaluate("() => document.querySelector('.js-plotly-plot')._fullData.map(t => t.name)")
    outside = [n for n in legend if n and n.startswith("outside the Samples filters")]
    drawn = sum(int(n.split("(")[-1].rstrip(")").replace(",", "")) for n in outside)
    assert outside and drawn == len(run.projection()) - count
    shot(pg, "map_with_samples_filters")
