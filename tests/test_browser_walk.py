"""The reviewer's day, second round, in Chromium: a flag always lands on the sample shown and the URL names it;
previous / next walk the Samples list; a shared URL reproduces the filters; no page asks another host for
anything; a repair appears in the export; hovering a map point shows its thumbnail. Helpers from
tests/test_browser.py."""

from __future__ import annotations

import re
import shutil
import sqlite3
from urllib.parse import parse_qs, urlencode, urlparse

import pandas as pd
import pytest
from playwright.sync_api import expect

from multimem_core.run import RunDir
from tests.conftest import serving_app
from tests.conftest import chromium_page
from tests.test_browser import open_page, settle, shot
from tests.test_browser_triage import nav, wait_for

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def walk_run(engine_run, tmp_path_factory) -> RunDir:
    dst = tmp_path_factory.mktemp("walk") / "run"
    shutil.copytree(engine_run.path, dst, ignore=shutil.ignore_patterns("review.sqlite*", "exports", "mitigation"))
    return RunDir(dst)


@pytest.fixture(scope="module")
def session(walk_run, tmp_path_factory):
    """A served app, a browser page, and every host the page sent a request to."""
    log = tmp_path_factory.mktemp("log") / "app.log"
    hosts: list[str] = []
    with serving_app([str(walk_run.path)], log) as url, chromium_page() as pg:
        pg.on("request", lambda req: hosts.append(req.url))
        yield pg, url, hosts


def address(pg) -> str:
    """The address bar as the browser has it now. (The sync API's `page.url` is a copy that only catches up with
    history.pushState while some other Playwright call runs, so polling it alone never sees the change.)"""
    return pg.evaluate("() => location.href")


def url_id(pg) -> str | None:
    return (parse_qs(urlparse(address(pg)).query).get("id") or [None])[0]


def expect_url_id(pg, sid: str, timeout: float = 30_000) -> None:
    """Wait until the address bar names `sid` (the page writes it once the sample is drawn)."""
    expect(pg).to_have_url(re.compile(r"[?&]id=" + re.escape(sid) + r"(&|$)"), timeout=timeout)


def shown_id(pg) -> str:
    return pg.locator("[data-testid='stMain'] [data-testid='stTextInput'] input").first.input_value()


def decisions(run: RunDir) -> list[tuple]:
    if not run.review_path.exists():
        return []
    try:
        with sqlite3.connect(run.review_path) as conn:
            return conn.execute("SELECT sample_id, label, source FROM decisions ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return []


def test_neighbour_link_moves_the_url_and_the_flag_lands_on_the_sample_shown(session, walk_run):
    pg, url, _ = session
    scores = walk_run.scores()
    a = str(scores.sort_values("multimem")["id"].iloc[-1])
    open_page(pg, url, f"detail?id={a}")
    assert url_id(pg) == a and shown_id(pg) == a
    link = pg.locator("[class*='st-key-nb_']").first
    token = next(c for c in link.get_attribute("class").split() if c.startswith("st-key-nb_"))
    b = token.split("_", 3)[3]  # st-key-nb_{query}_{target}_{id}
    assert b != a and b in link.inner_text()
    link.locator("button").click()
    expect_url_id(pg, b)
    settle(pg)
    assert shown_id(pg) == b
    before = len(decisions(walk_run))
    pg.locator("[data-testid='stForm'] label:has-text('unsure')").first.click()
    pg.locator("[data-testid='stForm'] button:has-text('Save')").first.click()
    wait_for(lambda: len(decisions(walk_run)) == before + 1, "the decision to be saved")
    expect(pg.get_by_text(f"Flagged {b} as unsure").first).to_be_visible(timeout=30_000)  # the toast names it
    settle(pg)
    assert decisions(walk_run)[-1] == (b, "unsure", "detail")
    assert url_id(pg) == b and shown_id(pg) == b, "the page stays on the flagged sample"
    pg.reload()
    settle(pg)
    assert url_id(pg) == b and shown_id(pg) == b, "a reload shows the same sample"
    shot(pg, "detail_after_neighbour_flag")


def test_previous_and_next_walk_the_filtered_samples(session, walk_run):
    pg, url, _ = session
    samples, scores = walk_run.samples(), walk_run.scores()
    label = str(samples["label"].value_counts().index[0])
    table = samples.assign(id=samples["id"].astype(str)).merge(scores.assign(id=scores["id"].astype(str)),
                                                                on="id", how="left")
    expected = table[table["label"].astype(str) == label].sort_values("multimem", ascending=False,
                                                                        kind="stable", na_position="last")["id"].tolist()
    assert len(expected) >= 3
    open_page(pg, url, "samples")
    pg.locator("[data-testid='stMultiSelect']:has-text('Dataset label') input").first.click()
    pg.keyboard.type(label)
    pg.keyboard.press("Enter")
    pg.locator("h1").first.click()
    settle(pg)
    assert pg.get_by_text(f"of {len(expected):,}").count() >= 1
    nav(pg, "Sample detail")
    pg.locator("[data-testid='stMain'] [data-testid='stTextInput'] input").first.fill(expected[0])
    pg.keyboard.press("Enter")
    expect_url_id(pg, expected[0])
    settle(pg)
    assert pg.get_by_text(f"1 of {len(expected):,}").count() == 1
    pg.locator("h1").first.click()
    pg.keyboard.press("ArrowRight")
    expect_url_id(pg, expected[1])  # → opens the next sample of the filtered list
    settle(pg)
    assert shown_id(pg) == expected[1] and pg.get_by_text(f"2 of {len(expected):,}").count() == 1
    pg.locator("[class*='st-key-detail_next'] button").click()
    expect_url_id(pg, expected[2])
    pg.locator("h1").first.click()
    pg.keyboard.press("ArrowLeft")
    expect_url_id(pg, expected[1])  # ← back
    pg.locator("[class*='st-key-detail_prev'] button").click()
    expect_url_id(pg, expected[0])
    settle(pg)
    assert pg.locator("[class*='st-key-detail_prev'] button").is_disabled(), "nothing before the first"
    shot(pg, "detail_walk")


def test_no_page_requests_anything_from_another_host(session):
    pg, url, hosts = session
    hosts.clear()
    for path in ("", "samples", "triage", "detail", "map", "review_export", "mitigation", "new_run"):
        open_page(pg, url, path)
        pg.wait_for_load_state("networkidle")  # icons, fonts and media load after the script run
    assert len(hosts) > 20, "the listener sees the page's requests"
    local = {"127.0.0.1", "localhost", "[::1]"}
    foreign = sorted({u for u in hosts if urlparse(u).scheme in ("http", "https", "ws", "wss")
                      and urlparse(u).hostname not in local | {"::1"}})
    assert not foreign, foreign
    icon = pg.evaluate("() => [...document.querySelectorAll(\"link[rel*='icon']\")].map(l => l.href)")
    assert icon and all(urlparse(h).hostname in local for h in icon), icon


def test_a_shared_url_reproduces_the_filters_and_a_saved_view_reopens_them(session, walk_run):
    pg, url, _ = session
    samples = walk_run.samples()
    label = str(samples["label"].value_counts().index[-1])
    count = int((samples["label"].astype(str) == label).sum())
    # a fresh page load is a fresh session: only the URL carries the filters
    pg.goto(f"{url}/samples?" + urlencode({"label": label, "sort": "id", "order": "asc", "view": "table"}))
    settle(pg)
    assert pg.get_by_text(f"{count:,} of {len(samples):,} samples match, sorted by id").count() == 1
    assert label in pg.locator("[data-testid='stMultiSelect']:has-text('Dataset label')").first.inner_text()
    query = parse_qs(urlparse(address(pg)).query)
    assert query.get("label") == [label] and query.get("view") == ["table"] and query.get("sort") == ["id"]

    pg.locator("button:has-text('Save this view')").first.click()
    pg.locator("[data-testid='stPopoverBody'] input").first.fill("only " + label)
    pg.locator("[data-testid='stPopoverBody'] button:has-text('Save')").first.click()
    link = pg.locator(f"[data-testid='stSidebar'] button:has-text('only {label}')")
    link.first.wait_for(timeout=30_000)
    with sqlite3.connect(walk_run.review_path) as conn:
        assert conn.execute("SELECT page FROM saved_views WHERE name = ?", (f"only {label}",)).fetchone() == ("samples",)

    # another session: the saved view in the sidebar brings the same filters back
    pg.goto(f"{url}/samples")
    settle(pg)
    assert pg.get_by_text(f"{count:,} of {len(samples):,} samples match").count() == 0
    pg.locator(f"[data-testid='stSidebar'] button:has-text('only {label}')").first.click()
    wait_for(lambda: pg.get_by_text(f"{count:,} of {len(samples):,} samples match, sorted by id").count() == 1,
             "the saved view's filters")
    settle(pg)
    assert parse_qs(urlparse(address(pg)).query).get("label") == [label]
    shot(pg, "samples_saved_view")


def test_a_repair_made_on_the_detail_page_appears_in_the_export(session, walk_run):
    pg, url, _ = session
    modalities = walk_run.config()["modalities"]
    query = modalities[0]
    target = "text" if query != "text" else modalities[1]
    scores = walk_run.scores()
    a = str(scores.sort_values("multimem")["id"].iloc[-2])
    open_page(pg, url, f"detail?id={a}")
    button = pg.locator(f"[class*='st-key-fix_{query}_{target}_']").first
    token = next(c for c in button.get_attribute("class").split() if c.startswith(f"st-key-fix_{query}_{target}_"))
    donor = token[len(f"st-key-fix_{query}_{target}_"):]
    button.locator("button").click()
    pg.get_by_text(f"Repaired: its {target} is replaced by").first.wait_for(timeout=30_000)
    with sqlite3.connect(walk_run.review_path) as conn:
        assert conn.execute("SELECT sample_id, modality, from_id, source FROM repairs").fetchall() == \
            [(a, target, donor, "detail")]
    assert url_id(pg) == a

    open_page(pg, url, "review_export")
    assert pg.get_by_text("Repairs (1)").count() == 1
    pg.locator("button:has-text('Build export')").click()
    pg.wait_for_selector("text=Written to", timeout=30_000)
    settle(pg)
    assert pg.get_by_text("Applied 1 repairs").count() == 1
    written = sorted((walk_run.path / "exports").glob("cleaned_manifest_*.csv"))
    written = [w for w in written if not w.name.endswith(".repairs.csv")]
    assert written
    out = pd.read_csv(written[-1], dtype=str, keep_default_na=False)
    info = walk_run.config()["manifest"]
    column = (info.get("source_columns") or {}).get(target, target)
    original = pd.read_csv(walk_run.stored_path("manifest"), dtype=str, keep_default_na=False)
    samples = walk_run.samples().assign(id=lambda d: d["id"].astype(str)).set_index("id")
    assert len(out) == len(original), "nothing was flagged noisy, so every row is kept, in order"
    assert out[column].iloc[int(samples.loc[a, "row"])] == original[column].iloc[int(samples.loc[donor, "row"])]
    assert out[column].iloc[int(samples.loc[donor, "row"])] == original[column].iloc[int(samples.loc[donor, "row"])]
    log = pd.read_csv(written[-1].with_name(written[-1].stem + ".repairs.csv"), dtype=str, keep_default_na=False)
    assert log[["sample_id", "from_id"]].values.tolist() == [[a, donor]]
    shot(pg, "review_export_repairs")


def test_map_box_selection_shows_at_once_and_flag_all_asks_first(session, walk_run):
    pg, url, _ = session
    open_page(pg, url, "map")
    pg.locator("[data-testid='stMain'] button:has-text('box')").first.click()
    settle(pg)
    box = pg.evaluate("""() => { const gd = document.querySelector('.js-plotly-plot'), s = gd._fullLayout._size;
        const r = gd.getBoundingClientRect(); return [r.left + s.l, r.top + s.t, s.w, s.h]; }""")
    left, top, w, h = box
    pg.mouse.move(left + 0.05 * w, top + 0.05 * h)
    pg.mouse.down()
    pg.mouse.move(left + 0.5 * w, top + 0.5 * h, steps=12)
    pg.mouse.move(left + 0.95 * w, top + 0.95 * h, steps=12)
    pg.mouse.up()
    sidebar = pg.locator("[data-testid='stSidebar']")
    wait_for(lambda: "Selection (on the map)" in sidebar.inner_text(), "the sidebar to show the box selection")
    settle(pg)
    n = int(sidebar.inner_text().split("Selection (on the map):", 1)[1].split("samples")[0].strip().replace(",", ""))
    assert n > 0
    legend = pg.evaluate("() => document.querySelector('.js-plotly-plot')._fullData.map(t => t.name)")
    assert f"selection ({n:,})" in legend, legend
    before = len(decisions(walk_run))
    pg.locator("button:has-text('Flag all as noisy')").first.click()
    confirm = pg.locator(f"[data-testid='stPopoverBody'] button:has-text('Yes, flag {n:,} as noisy')")
    confirm.wait_for(timeout=10_000)
    assert len(decisions(walk_run)) == before, "nothing is written before the confirmation"
    confirm.click()
    wait_for(lambda: len(decisions(walk_run)) == before + n, f"{n} decisions")
    shot(pg, "map_box_selection")


def test_detail_layout_leaves_room_for_labels_and_the_audio_seek_bar(session, walk_run):
    pg, url, _ = session
    sid = str(walk_run.scores().sort_values("multimem")["id"].iloc[-1])
    open_page(pg, url, f"detail?id={sid}")
    visible_audio = """() => [...document.querySelectorAll('[data-testid=stMain] audio')]
        .filter(a => a.getClientRects().length > 0).map(a => a.clientWidth)"""
    widths = pg.evaluate(visible_audio)
    # every tab of neighbours in turn: a player in a hidden tab has no width to measure until its tab is open
    tabs = pg.locator("[data-testid='stMain'] [data-testid='stTab']")
    assert tabs.count() >= 2
    for i in range(tabs.count()):
        tabs.nth(i).click()
        expect(tabs.nth(i)).to_have_attribute("aria-selected", "true")
        widths += pg.evaluate(visible_audio)
    assert len(widths) > 1 + tabs.count(), widths  # the sample's own player and the neighbours' ones
    assert min(widths) >= 300, widths
    cut = pg.evaluate("""() => [...document.querySelectorAll('[data-testid=stMetricLabel]')]
        .filter(l => l.scrollWidth > l.clientWidth + 1 || l.scrollHeight > l.clientHeight + 1).map(l => l.innerText)""")
    assert not cut, cut


def test_map_hover_shows_the_hovered_samples_thumbnail_from_the_app_itself(session, walk_run):
    import base64
    import io

    import numpy as np
    from PIL import Image

    pg, url, hosts = session
    open_page(pg, url, "map")
    x, y, text = pg.evaluate("""() => { const gd = document.querySelector('.st-key-map_chart .js-plotly-plot');
        const fl = gd._fullLayout, t = gd._fullData[gd._fullData.length - 1], r = gd.getBoundingClientRect();
        return [r.left + fl._size.l + fl.xaxis.l2p(t.x[0]), r.top + fl._size.t + fl.yaxis.l2p(t.y[0]), t.text[0]]; }""")
    sid = text.split("<br>")[0]
    box = pg.locator("#multimem-hover-thumb")
    expect(box).to_be_hidden()
    hosts.clear()
    pg.mouse.move(x - 40, y - 40)
    pg.mouse.move(x, y, steps=8)
    expect(box).to_be_visible(timeout=30_000)
    expect(box).to_have_attribute("data-id", sid)
    src = box.locator("img").get_attribute("src")
    assert src.startswith("data:image/png;base64,")
    assert not [u for u in hosts if urlparse(u).scheme in ("http", "https", "ws", "wss")
                and urlparse(u).hostname not in ("127.0.0.1", "localhost")], hosts
    # the picture is the hovered sample's own image file, as the app read it
    samples = walk_run.samples().assign(id=lambda d: d["id"].astype(str)).set_index("id")
    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as shown, \
            Image.open(walk_run.stored_path("manifest").parent / samples.loc[sid, "image"]) as original:
        original = original.convert("RGB")
        original.thumbnail((160, 160))
        assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(original))
    shot(pg, "map_hover")
    pg.mouse.move(5, 5)
    expect(box).to_be_hidden(timeout=10_000)
