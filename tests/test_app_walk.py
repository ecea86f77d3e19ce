"""The reviewer's second round, headless (AppTest) on a synthetic run: the detail page's URL and flag follow the
sample shown, previous/next walk the Samples list, filters live in the URL and in saved views, repairs are
recorded, and the Mitigation preview waits to be asked. The same in Chromium: tests/test_browser_walk.py."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import common, run_data
from multimem_core.repairs import current_repairs
from multimem_core.review import ReviewStore
from multimem_core.run import RunDir
from multimem_core.saved_views import list_views

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from synthetic_run import make_synthetic_run  # noqa: E402


@pytest.fixture
def synth(tmp_path) -> RunDir:
    make_synthetic_run(tmp_path, 240, seed=3, n_media=4)
    return RunDir(tmp_path / "run")


def start(run: RunDir, monkeypatch, page: str, **query) -> AppTest:
    monkeypatch.setenv(run_data.ENV_RUN, str(run.path))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=90)
    at.run()
    at.switch_page(page)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def qid(at: AppTest) -> str:
    v = at.query_params["id"]
    return v[0] if isinstance(v, list) else v


def test_neighbour_then_save_flags_the_sample_shown_and_the_url_names_it(synth, monkeypatch):
    at = start(synth, monkeypatch, "views/detail.py")
    a = qid(at)
    nb = next(b for b in at.button if b.key and b.key.startswith("nb_"))
    b = nb.key.split("_", 3)[3]
    nb.click().run()
    assert qid(at) == b != a
    at.radio(key=f"detail_label_{b}").set_value("unsure")
    next(x for x in at.button if x.label == "Save").click().run()
    assert ReviewStore.for_run(synth).labels() == {b: "unsure"}
    assert qid(at) == b and at.text_input(key=f"detail_id_input_{b}").value == b


def test_previous_next_walk_the_filtered_samples(synth, monkeypatch):
    at = start(synth, monkeypatch, "views/samples.py")
    label = synth.samples()["label"].value_counts().index[0]
    at.multiselect(key="samples_labels").set_value([label]).run()
    walk = list(at.session_state[common.FILTERED])
    at.switch_page("views/detail.py")
    at.query_params["id"] = walk[0]
    at.run()
    assert any(m.value == f"**1 of {len(walk):,}**" for m in at.markdown)
    at.button(key="detail_next").click().run()
    assert qid(at) == walk[1] and any(m.value == f"**2 of {len(walk):,}**" for m in at.markdown)
    at.button(key="detail_prev").click().run()
    assert qid(at) == walk[0] and at.button(key="detail_prev").disabled


def test_url_filters_round_trip_and_a_saved_view_is_listed(synth, monkeypatch):
    label = synth.samples()["label"].value_counts().index[-1]
    at = start(synth, monkeypatch, "views/samples.py", label=label, sort="id", order="desc", flag="unreviewed")
    assert at.multiselect(key="samples_labels").value == [label]
    assert at.selectbox(key="samples_sort").value == "id" and at.selectbox(key="samples_flag").value == "unreviewed"
    ids = at.session_state[common.FILTERED]
    expected = sorted(synth.samples().query("label == @label")["id"].astype(str), reverse=True)
    assert list(ids) == expected
    at.selectbox(key="samples_flag").set_value("any").run()
    assert "flag" not in at.query_params and at.query_params["label"] == label
    at.text_input(key="view_name").input("rare label")
    at.button(key="view_save").click().run()
    views = list_views(ReviewStore.for_run(synth))
    assert [(v["name"], v["page"], v["params"]["label"]) for v in views] == [("rare label", "samples", [label])]
    assert any(b.key == "saved_view_rare label" for b in at.sidebar.button)
    # opened from another page, the saved view brings its filters back and writes them into the URL
    at.multiselect(key="samples_labels").set_value([]).run()
    at.switch_page("views/overview.py").run()
    at.sidebar.button(key="saved_view_rare label").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="samples_labels").value == [label] and at.query_params["label"] == label


def test_repair_is_recorded_and_listed_with_undo(synth, monkeypatch):
    at = start(synth, monkeypatch, "views/detail.py")
    a = qid(at)
    fix = next(b for b in at.button if b.key and b.key.startswith("fix_"))
    fix.click().run()
    reps = current_repairs(ReviewStore.for_run(synth))
    assert reps[["sample_id", "from_id"]].values.tolist() == [[a, fix.key.split("_", 3)[3]]]
    at.switch_page("views/review_export.py").run()
    assert any(t.label == "Repairs (1)" for t in at.tabs)
    at.button(key="unfix_button").click().run()
    assert current_repairs(ReviewStore.for_run(synth)).empty
    with sqlite3.connect(synth.review_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM repairs").fetchone() == (2,)  # undo is a row, nothing deleted
