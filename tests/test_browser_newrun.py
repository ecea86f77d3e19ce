"""The New-run page in a real browser: a run started there on a tiny shapes manifest shows its progress while it
runs (also after a reload), finishes, and opens in the other pages. Helpers from tests/test_browser.py."""

from __future__ import annotations

import re
import time

import pytest

from multimem_core.run import RunDir
from tests.conftest import serving_app
from tests.conftest import chromium_page
from tests.test_browser import open_page, settle, shot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A data root holding a tiny image+text shapes set, and an empty folder of runs."""
    from multimem_core.data.shapes import build_shapes

    base = tmp_path_factory.mktemp("newrun")
    build_shapes(base / "data" / "shapes", n=120, inject_rate=0.1, seed=0, modalities=("image", "text"),
                 image_size=32, progress=False)
    (base / "runs").mkdir()
    return base / "data", base / "runs"


@pytest.fixture(scope="module")
def server(dirs, tmp_path_factory):
    """`multimem app RUNS --data-root DATA` on a free port, once it answers."""
    data, runs = dirs
    log = tmp_path_factory.mktemp("log") / "app.log"
    try:
        with serving_app([str(runs), "--data-root", str(data)], log) as url:
            yield url
    finally:
        # a run the test left behind (it failed midway) must not outlive it
        from multimem_core import launch

        for job in launch.list_jobs(runs):
            launch.cancel(job.path)


@pytest.fixture(scope="module")
def page(server):
    with chromium_page() as pg:
        yield pg


def set_number(pg, label: str, value: int) -> None:
    box = pg.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    settle(pg)
    assert box.input_value() == str(value), label


def metrics(pg) -> dict[str, str]:
    """Label -> value of every st.metric on the page."""
    out = {}
    for m in pg.locator("[data-testid='stMetric']").all():
        try:
            label = m.locator("[data-testid='stMetricLabel']").inner_text(timeout=500).strip()
            out[label] = m.locator("[data-testid='stMetricValue']").inner_text(timeout=500).strip()
        except Exception:  # the fragment redrew it between the two reads
            continue
    return out


def test_new_run_progress_finish_and_open(page, server, dirs):
    data, runs = dirs
    open_page(page, server, "new_run")
    assert page.locator("h1").first.inner_text().strip() == "New run"
    # the shapes manifest is found under the data root and preselected; its modalities are read
    page.wait_for_selector("text=120 samples · modalities image, text")
    # a tower trained from scratch, so that training has epochs to watch (the default image tower is frozen)
    page.locator("[data-testid='stSelectbox']").filter(has_text="Image tower").click()
    page.get_by_role("option", name="mm-tiny", exact=True).click()
    settle(page)
    set_number(page, "Epochs", 6)
    page.get_by_text("More options").click()
    set_number(page, "Augmented views per sample", 2)
    set_number(page, "Image size (px, 0: the tower's own)", 16)
    set_number(page, "Batch size", 32)
    shot(page, "new_run_form")
    page.get_by_role("button", name=re.compile("Start run")).click()

    # while it runs: stage, epoch, samples/s and time left, refreshed by the page itself
    seen: list[dict[str, str]] = []
    reloaded = False
    deadline = time.time() + 300
    while time.time() < deadline:
        m = metrics(page)
        if m:
            seen.append(m)
        if not reloaded and re.fullmatch(r"\d+ / 6", m.get("Epoch", "")):
            shot(page, "new_run_progress")
            # a reload starts a new browser session: the job is found again from its files and the address
            assert "job=" in page.url
            page.reload()
            page.wait_for_selector("[data-testid='stMetric']", timeout=60_000)
            reloaded = True
        if page.locator("text=Finished:").count():
            break
        failed = page.locator("[data-testid='stAlertContentError']")
        assert failed.count() == 0, failed.first.inner_text()
        time.sleep(0.4)
    else:
        pytest.fail(f"the run did not finish within 300 s; last progress seen: {seen[-3:]}")
    assert reloaded, f"no training epoch was shown while the run went on: {seen}"
    training = [m for m in seen if re.fullmatch(r"\d+ / 6", m.get("Epoch", ""))]
    assert any(re.fullmatch(r"\d+", m.get("Samples/s", "")) for m in training), training
    assert any(m.get("Time left", "–") != "–" for m in training), training
    assert "training" in {m.get("Stage") for m in seen}, seen  # a redraw may hide one metric from a read
    settle(page)
    shot(page, "new_run_done")

    name = re.search(r"job=([^&]+)", page.url).group(1)
    run = RunDir(runs / name)
    assert run.is_complete() and run.config()["train"]["epochs"] == 6 and run.config()["views"] == 2
    n_scored = len(run.scores())

    # the finished run opens in the other pages
    page.get_by_role("button", name=re.compile("Open this run")).click()
    page.wait_for_selector(f"h1:has-text('Overview · {name}')", timeout=60_000)
    settle(page)
    assert metrics(page)["Scored"] == f"{n_scored:,}"
    assert page.locator(".js-plotly-plot").count() >= 2
    shot(page, "new_run_opened_overview")
    page.locator("[data-testid='stSidebarNav'] a", has_text="Samples").click()
    page.wait_for_selector("h1:has-text('Samples')", timeout=60_000)
    settle(page)
    assert page.locator("button:has-text('Noisy')").count() >= 4 and page.locator("img").count() >= 4
    page.locator("[data-testid='stSidebarNav'] a", has_text="Map").click()
    page.wait_for_selector("h1:has-text('Map')", timeout=60_000)
    settle(page)
    assert page.locator(".js-plotly-plot").count() >= 1
    assert page.locator("[data-testid='stException']").count() == 0
