"""The Mitigation page, headless (AppTest) and in Chromium, on a real run with a real (tiny) removal sweep:
tables and plots of the mitigation runs, and the what-if preview on a selected sample."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from multimem_core.run import RunDir
from tests.conftest import CHROMIUM, chromium_page, serving_app

MAIN = Path(__file__).resolve().parent.parent / "app" / "main.py"
PAGE = "views/mitigation.py"


@pytest.fixture(scope="module")
def mitigated_run(engine_run, tmp_path_factory) -> RunDir:
    """A copy of the engine's run with models and decode cache, and a small removal sweep."""
    from multimem_core.mitigation.settings import MitigateConfig
    from multimem_core.mitigation import mitigate

    dst = tmp_path_factory.mktemp("mitigation_page") / "run"
    shutil.copytree(engine_run.path, dst, ignore=shutil.ignore_patterns("review.sqlite*", "mitigation", "evaluation.json"))
    run = RunDir(dst)
    mitigate(run, MitigateConfig(strategy="remove", sweep=(0, 4), rankings=("multimem", "random"), finetune_epochs=1,
                                 views=1, progress=False))
    return run


def top_id(run: RunDir) -> str:
    return str(run.scores().sort_values("multimem")["id"].iloc[-1])


def test_page_shows_runs_and_previews_the_selected_sample(mitigated_run, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import run_data

    monkeypatch.setenv(run_data.ENV_RUN, str(mitigated_run.path))
    at = AppTest.from_file(str(MAIN), default_timeout=180)
    at.run()
    sid = top_id(mitigated_run)
    at.query_params["id"] = sid
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Mitigation"
    runs = at.dataframe[0].value  # the table of mitigation runs comes first
    assert runs["strategy"].tolist() == ["remove"] and runs["status"].tolist() == ["done"]
    # the sweep: one line per ranking, metric switchable
    assert at.selectbox(key="sweep_metric").value == "recall@5"
    at.selectbox(key="sweep_metric").set_value("zero_shot").run()
    assert not at.exception
    # MultiMem: each point's change on its own kept rows, next to the run's scores on the same rows
    at.selectbox(key="sweep_metric").set_value("multimem").run()
    assert not at.exception, [e.value for e in at.exception]
    assert runs["MultiMem rows"].tolist() == [len(mitigated_run.scores()) - 4]
    points = at.dataframe[1].value
    assert {"MultiMem, run (kept rows)", "MultiMem change"} <= set(points.columns)
    assert points["MultiMem change"].notna().all()
    # the preview: nothing runs until asked, and the cost is said first
    assert at.multiselect(key="whatif_ids").value == [sid]
    assert not any("Targeting" in m.label for m in at.metric)
    assert any("about" in c.value and " s " in c.value for c in at.caption)
    at.button(key="whatif_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    # the selected sample against clean ones
    table = at.dataframe[-1].value  # the preview table comes last
    assert table.loc[table["group"] == "selected", "id"].tolist() == [sid]
    assert (table["group"] == "clean (random)").sum() > 0
    labels = [m.label for m in at.metric]
    assert any("chosen" in label for label in labels) and any("clean" in label for label in labels)
    # another augmentation and strength recomputes
    at.selectbox(key="whatif_aug").set_value("crop").run()
    assert not at.exception
    assert "crop" in at.get("plotly_chart")[-1].proto.spec


@pytest.mark.browser
def test_page_renders_in_chromium_with_a_preview(mitigated_run, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium")
    pytest.importorskip("playwright.sync_api")
    log = tmp_path / "app.log"
    with serving_app([str(mitigated_run.path)], log) as url, chromium_page(height=2400) as page:
        sid = top_id(mitigated_run)
        page.goto(f"{url}/mitigation?id={sid}")
        page.wait_for_selector("h1:has-text('Mitigation')", timeout=90_000)
        page.wait_for_selector("button:has-text('Run the preview')", timeout=90_000)
        assert page.get_by_text("Targeting (chosen").count() == 0, "the preview waits for the button"
        page.locator("button:has-text('Run the preview')").click()
        page.wait_for_selector("text=Targeting (chosen", timeout=180_000)  # the preview's metrics
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 2", timeout=60_000)
        time.sleep(1.5)
        assert page.locator("[data-testid='stException']").count() == 0
        assert page.get_by_text("What-if preview").count() >= 1
        assert page.get_by_text(sid).count() >= 1  # the selected sample is in the preview
        shots = Path(os.environ.get("MULTIMEM_SCREENSHOTS", MAIN.parent.parent / "test-artifacts" / "screenshots"))
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "mitigation.png"))
