"""The dashboard, headless (streamlit.testing AppTest), on a real run made by the engine in this session."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from app import common, run_data
from app.media import MediaPathError, safe_media_path
from multimem_core import diagnose
from multimem_core.review import ReviewStore
from multimem_core.run import RunDir

MAIN = Path(__file__).resolve().parent.parent / "app" / "main.py"
PAGES = ["views/overview.py", "views/samples.py", "views/detail.py", "views/map.py", "views/review_export.py"]


@pytest.fixture
def run(engine_run, tmp_path) -> RunDir:
    """A private copy of the engine's run (flags and exports must not leak between tests)."""
    dst = tmp_path / "run"
    shutil.copytree(RunDir(engine_run.path if hasattr(engine_run, "path") else engine_run).path, dst,
                    ignore=shutil.ignore_patterns("models", "cache", "review.sqlite*", "exports"))
    return RunDir(dst)


def start(path: Path, monkeypatch, page: str | None = None) -> AppTest:
    monkeypatch.setenv(run_data.ENV_RUN, str(path))
    at = AppTest.from_file(str(MAIN), default_timeout=90)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def card_ids(at: AppTest, key: str = "grid") -> list[str]:
    prefix = f"{key}_noisy_"
    return [b.key[len(prefix):] for b in at.button if b.key and b.key.startswith(prefix)]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(run, monkeypatch, page):
    at = start(run.path, monkeypatch, page)
    assert at.title, f"{page} shows no title"
    assert not at.error, [e.value for e in at.error]


def test_overview_shows_counts_plots_and_auroc(run, monkeypatch):
    at = start(run.path, monkeypatch)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Samples"] == f"{len(run.samples()):,}"
    assert metrics["Scored"] == f"{len(run.scores()):,}"
    assert len(at.get("plotly_chart")) >= 5  # histograms, contributions, pairs, precision at k
    auroc = at.dataframe[0].value
    assert "multimem" not in auroc.columns
    assert set(auroc["name"]) >= {diagnose.score_label("multimem"), diagnose.score_label("base__cosine")}
    assert auroc["auroc"].between(0, 1).all()


def test_samples_grid_is_sorted_by_the_chosen_score(run, monkeypatch):
    at = start(run.path, monkeypatch, "views/samples.py")
    scores = run.scores().set_index("id")
    ids = card_ids(at)
    assert len(ids) == 12
    values = scores.loc[ids, "multimem"].to_numpy()
    assert np.all(np.diff(values) <= 0) and values[0] == scores["multimem"].max()

    at.selectbox(key="samples_sort").set_value("base__cosine").run()  # low cosine = suspicious: ascending
    ids = card_ids(at)
    values = scores.loc[ids, "base__cosine"].to_numpy()
    assert np.all(np.diff(values) >= 0) and values[0] == scores["base__cosine"].min()

    at.selectbox(key="samples_order_base__cosine").set_value("highest first").run()
    values = scores.loc[card_ids(at), "base__cosine"].to_numpy()
    assert np.all(np.diff(values) <= 0)


def test_samples_filters_and_paging(run, monkeypatch):
    at = start(run.path, monkeypatch, "views/samples.py")
    samples = run.samples()
    role = sorted(samples["role"].unique())[-1]  # crossfit: every row is in a fold, none held out
    at.multiselect(key="samples_roles").set_value([role]).run()
    assert set(samples.set_index("id").loc[card_ids(at), "role"]) == {role}
    at.multiselect(key="samples_roles").set_value([]).run()
    word = samples["text"].iloc[0].split()[1]
    at.text_input(key="samples_query").input(word).run()
    shown = card_ids(at)
    assert shown and all(word.lower() in t.lower() for t in samples.set_index("id").loc[shown, "text"])
    at.text_input(key="samples_query").input("no caption says this").run()
    assert not card_ids(at) and "No sample matches" in at.info[0].value
    at.text_input(key="samples_query").input("").run()
    first = card_ids(at)
    at.number_input(key="samples_cards_page").set_value(2).run()
    assert card_ids(at) and not set(card_ids(at)) & set(first)


def test_flag_click_writes_a_row_and_export_drops_exactly_the_flagged(run, monkeypatch):
    at = start(run.path, monkeypatch, "views/samples.py")
    # (AppTest drops the entry script's sidebar after switch_page, so set the reviewer field's state directly)
    at.session_state[common.REVIEWER] = "tester"
    ids = card_ids(at)
    at.button(key=f"grid_noisy_{ids[0]}").click().run()
    at.button(key=f"grid_noisy_{ids[2]}").click().run()
    at.button(key=f"grid_ok_{ids[1]}").click().run()
    hist = ReviewStore.for_run(run).history()
    assert len(hist) == 3 and set(hist["reviewer"]) == {"tester"} and set(hist["source"]) == {"samples"}
    flagged = {ids[0], ids[2]}
    assert set(ReviewStore.for_run(run).flagged_ids()) == flagged

    at.switch_page("views/review_export.py").run()
    assert not at.exception
    assert at.radio(key="export_rule").value == "flagged"
    at.button(key="export_build").click().run()
    assert not at.exception and not at.error
    out = sorted((run.path / "exports").glob("cleaned_manifest_flagged_*.csv"))
    assert len(out) == 1
    cleaned = pd.read_csv(out[0], dtype=str, keep_default_na=False)
    original = pd.read_csv(run.config()["manifest"]["path"], dtype=str, keep_default_na=False)
    assert list(cleaned.columns) == list(original.columns)
    assert set(cleaned["id"]) == set(original["id"]) - flagged and len(cleaned) == len(original) - 2
    at.button(key="export_build").click().run()  # again, within the same second most likely: a file of its own
    assert len(sorted((run.path / "exports").glob("cleaned_manifest_flagged_*.csv"))) == 2


def test_a_threshold_rule_defaults_to_dropping_a_tenth_from_its_own_side(run, monkeypatch):
    at = start(run.path, monkeypatch, "views/review_export.py")
    at.radio(key="export_rule").set_value("below").run()
    score = at.selectbox(key="export_score").value
    values = run.scores()[score].dropna()
    threshold = at.number_input(key=f"export_threshold_below_{score}").value
    assert abs((values < threshold).mean() - 0.1) < 0.02  # a tenth, not nine tenths


def test_undo_on_review_page(run, monkeypatch):
    store = ReviewStore.for_run(run)
    sid = run.samples()["id"].iloc[3]
    store.flag(sid, "noisy", reviewer="ann")
    at = start(run.path, monkeypatch, "views/review_export.py")
    seq = int(store.history()["seq"].iloc[0])
    at.selectbox(key="undo_choice").set_value(seq)
    at.button(key="undo_button").click().run()
    assert not at.exception
    assert sid not in store.labels() and len(store.history()) == 2


def test_detail_page_explains_and_flags_with_reason(run, monkeypatch):
    scores = run.scores()
    sid = scores.sort_values("multimem")["id"].iloc[-1]
    monkeypatch.setenv(run_data.ENV_RUN, str(run.path))
    at = AppTest.from_file(str(MAIN), default_timeout=90)
    at.run()
    at.switch_page("views/detail.py")
    at.query_params["id"] = sid
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key=f"detail_id_input_{sid}").value == sid
    sentence = at.info[0].value
    assert "never trained on it" in sentence and any(m in sentence for m in run.modalities)
    assert len(at.get("plotly_chart")) >= 3  # two heatmaps and the contributions
    assert len(at.tabs) == len(run.modalities)  # neighbours from each modality
    at.radio(key=f"detail_label_{sid}").set_value("unsure")
    at.text_input(key=f"detail_reason_{sid}").input("colour in caption looks off")
    next(b for b in at.button if b.label == "Save").click().run()
    cur = ReviewStore.for_run(run).current()
    assert cur[["sample_id", "label", "reason"]].values.tolist() == [[sid, "unsure", "colour in caption looks off"]]


def test_map_selection_shows_a_grid_and_flags_the_whole_selection(run, monkeypatch):
    at = start(run.path, monkeypatch, "views/map.py")
    assert "Nothing selected" in at.info[0].value
    chosen = run.scores().sort_values("multimem", ascending=False)["id"].head(15).tolist()
    at.session_state[common.SELECTION] = chosen
    at.run()
    assert not at.exception
    assert card_ids(at, "mapgrid") == chosen[:12]  # most memorized first
    at.button(key="map_flag_all").click().run()
    assert set(ReviewStore.for_run(run).flagged_ids()) == set(chosen)


def test_folder_of_runs_offers_a_picker(run, monkeypatch, tmp_path):
    other = tmp_path / "second"
    shutil.copytree(run.path, other)
    at = start(tmp_path, monkeypatch)
    picker = at.sidebar.selectbox(key="run_picker")
    assert {Path(p).name for p in picker.options} == {"run", "second"}


def test_no_run_says_what_to_do(monkeypatch, tmp_path):
    at = start(tmp_path, monkeypatch)
    assert "multimem demo" in at.info[0].value


def test_hostile_paths_and_captions_stay_inert(run, monkeypatch, tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for the browser")
    samples = run.samples()
    sid = samples["id"].iloc[0]
    hostile = "<img src=x onerror=alert(1)> **bold** [link](http://example.org)"
    samples.loc[0, "image"] = "../" * 12 + str(secret).lstrip("/")
    samples.loc[0, "text"] = hostile
    run.write_samples(samples)
    monkeypatch.setenv(run_data.ENV_RUN, str(run.path))
    monkeypatch.setenv("MULTIMEM_DATA_ROOT", str(run.dataset_root))  # as `multimem app RUN --data-root DATA`
    at = AppTest.from_file(str(MAIN), default_timeout=90)
    at.run()
    at.switch_page("views/detail.py")
    at.query_params["id"] = sid
    at.run()
    assert not at.exception
    assert any("outside the folder the app serves" in e.value and "not shown" in e.value for e in at.error)
    assert hostile in [t.value for t in at.text]  # shown verbatim, as text
    assert not any("<img" in m.value for m in at.markdown)


def test_safe_media_path(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"x")
    (tmp_path / "outside.png").write_bytes(b"x")
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    assert safe_media_path(root, "a/x.png") == (root / "a" / "x.png").resolve()
    assert safe_media_path(root, str(root / "a" / "x.png")).name == "x.png"  # absolute inside: fine
    for bad in ("../outside.png", str(tmp_path / "outside.png"), "link.png", "a/../../outside.png"):
        with pytest.raises(MediaPathError, match="outside the folder the app serves"):
            safe_media_path(root, bad)
    with pytest.raises(MediaPathError, match="does not exist"):
        safe_media_path(root, "a/missing.png")
    with pytest.raises(MediaPathError, match="no file"):
        safe_media_path(root, "")


def test_box_and_lasso_select_every_sample_inside_drawn_or_not():
    from app.selection import inside_polygon, selected_rows

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"row": np.arange(5000), "x": rng.uniform(-1, 1, 5000), "y": rng.uniform(-1, 1, 5000)})
    box = selected_rows({"box": [{"x": [0.5, -0.5], "y": [-0.25, 0.25]}], "points": [{"customdata": 1}]}, frame)
    expect = frame.loc[frame["x"].abs().le(0.5) & frame["y"].abs().le(0.25), "row"].to_numpy()
    assert np.array_equal(np.sort(box), expect)
    # a diamond |x| + |y| < 0.5 as a lasso
    lasso = selected_rows({"lasso": [{"x": [0.5, 0, -0.5, 0], "y": [0, 0.5, 0, -0.5]}]}, frame)
    inside = (frame["x"].abs() + frame["y"].abs() < 0.5).to_numpy()
    assert set(lasso) == set(frame["row"][inside])
    assert inside_polygon(np.array([0.0, 2.0]), np.array([0.0, 0.0]), [1, -1, -1, 1], [1, 1, -1, -1]).tolist() == [True, False]
    # a click (no shape): the clicked points' rows
    assert selected_rows({"points": [{"customdata": [7]}, {"customdata": 3}]}, frame).tolist() == [3, 7]


def test_media_from_webdataset_shards_stay_under_the_root(tmp_path):
    import io
    import tarfile

    from app.media import read_media

    with tarfile.open(tmp_path / "shard-000000.tar", "w") as tar:
        blob = b"\x89PNG not really"
        info = tarfile.TarInfo("k1.png")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    assert read_media(tmp_path, "shard-000000.tar#k1.png") == (blob, "image/png")
    with pytest.raises(MediaPathError, match="outside the folder the app serves"):
        read_media(tmp_path / "sub", "../shard-000000.tar#k1.png")
    with pytest.raises(MediaPathError, match="no member"):
        read_media(tmp_path, "shard-000000.tar#k2.png")


VARIANTS = {
    "paper protocol": dict(protocol="paper"),
    "image and text only": dict(modalities=["image", "text"]),
    "audio and video, no projection": dict(modalities=["audio", "video"], projection=False),
    "not scored yet": dict(),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_page_handles_other_run_shapes(variant, monkeypatch, tmp_path):
    """Synthetic runs (benchmarks/synthetic_run.py) of shapes the tiny engine run does not cover."""
    import sys

    sys.path.insert(0, str(MAIN.parent.parent / "benchmarks"))
    from synthetic_run import make_synthetic_run

    run = make_synthetic_run(tmp_path / "s", 200, n_media=6, **VARIANTS[variant])
    if variant == "not scored yet":
        run.scores_path.unlink()
    at = start(run.path, monkeypatch)
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
    if variant == "paper protocol":
        at.switch_page("views/overview.py").run()
        assert any("S_C" in str(c.proto.spec) for c in at.get("plotly_chart"))


def test_samples_label_regex_sort_table_tags_and_bulk_flags(run, monkeypatch):
    at = start(run.path, monkeypatch, "views/samples.py")
    at.session_state[common.REVIEWER] = "tester"
    samples = run.samples().set_index("id")
    label = samples["label"].value_counts().index[0]
    at.multiselect(key="samples_labels").set_value([label]).run()
    shown = card_ids(at)
    assert shown and set(samples.loc[shown, "label"]) == {label}
    at.multiselect(key="samples_labels").set_value([]).run()
    colour = samples["text"].iloc[0].split()[0]
    at.session_state["samples_text_mode"] = "regex"
    at.text_input(key="samples_query").input(f"^{colour} (square|circle|triangle|cross)").run()
    shown = card_ids(at)
    assert shown and all(re.match(f"{colour} (square|circle|triangle|cross)", t)
                         for t in samples.loc[shown, "text"])
    at.text_input(key="samples_query").input("(unclosed").run()
    assert at.error and "not a regular expression" in at.error[0].value
    at.text_input(key="samples_query").input("").run()
    at.selectbox(key="samples_sort").set_value("id").run()
    assert card_ids(at) == sorted(samples.index)[:12]
    # the reason on every scored card, computed once per run
    reasons = diagnose.reasons(run).set_index("id")["reason"]
    captions = " ".join(c.value for c in at.caption)
    assert any(reasons.get(i, "") and common.plain(reasons[i]) in captions for i in card_ids(at))

    # the table: every score under its plain name, flag, tags, reason
    at.session_state["samples_view"] = "table"
    at.run()
    table = at.dataframe[0].value
    assert {"id", "flag", "tags", "reason"} <= set(table.columns) and set(run.scores().columns) >= {"multimem"}
    # every matching row (not one page), so a click on a column header sorts all of them
    assert "multimem" in table.columns and len(table) == len(at.session_state[common.FILTERED]) > 50

    # bulk actions on the filtered set: tag, then filter by the tag; flag them all
    at.multiselect(key="samples_labels").set_value([label]).run()
    expected = set(samples.index[samples["label"] == label])
    at.text_input(key="bulk_tag").input("watermark").run()
    at.button(key="bulk_tag_add").click().run()
    store = ReviewStore.for_run(run)
    assert {i for i, tags in store.tags().items() if "watermark" in tags} == expected
    at.button(key="bulk_noisy").click().run()
    assert set(store.flagged_ids()) == expected


def test_card_buttons_have_no_hidden_copies(run, monkeypatch):
    """A button with a tooltip is drawn twice by Streamlit (24 "Noisy" buttons for 12 cards): none on cards."""
    at = start(run.path, monkeypatch, "views/samples.py")
    buttons = [b for b in at.button if b.key and b.key.startswith(("grid_noisy_", "grid_ok_"))]
    assert len(buttons) == 24 and not any(b.help for b in buttons)


def test_triage_decides_with_a_reason_advances_and_resumes_for_another_reviewer(run, monkeypatch):
    at = start(run.path, monkeypatch)
    at.session_state[common.REVIEWER] = "ann"
    at.session_state["triage_source"] = "top"
    at.switch_page("views/triage.py").run()
    assert not at.exception, [e.value for e in at.exception]
    top = run.scores().sort_values("multimem", ascending=False)["id"].astype(str).tolist()
    assert "0 of" in at.get("progress")[0].proto.text
    at.text_input(key="triage_reason").input("the caption names another shape").run()
    at.button(key="triage_noisy").click().run()
    at.button(key="triage_ok").click().run()
    hist = ReviewStore.for_run(run).history().sort_values("seq")
    assert hist["sample_id"].tolist() == top[:2] and hist["label"].tolist() == ["noisy", "ok"]
    assert hist["reason"].tolist() == ["the caption names another shape", ""] and set(hist["source"]) == {"triage"}
    assert set(hist["reviewer"]) == {"ann"} and "2 of" in at.get("progress")[0].proto.text
    at.button(key="triage_prev").click().run()  # k
    assert at.get("page_link")[0].proto.label.endswith(common.plain(top[1]) + "**")

    other = start(run.path, monkeypatch)  # another reviewer, another session: resumes at the first open one
    other.session_state["triage_source"] = "top"
    other.switch_page("views/triage.py").run()
    assert other.get("page_link")[0].proto.label.endswith(common.plain(top[2]) + "**")
