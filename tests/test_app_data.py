"""The dashboard's data path at scale: id lookups, sort orders, neighbour search, the map's drawn points and
its zoom (the last one headless, AppTest, on a small synthetic run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from app.filters import Filters, matching_rows, sort_order
from app.run_data import RowIndex
from multimem_core import diagnose


def test_row_index_finds_rows_like_a_dict_and_the_first_of_a_repeated_id():
    ids = pd.Series(["b", "a", "c", "a", "d"], dtype="str")
    index = RowIndex(ids)
    assert index.get("a") == 1 and index.get("d") == 4 and index.get("zz") is None and index.get("zz", -1) == -1
    assert "c" in index and "zz" not in index
    assert index.rows(["d", "zz", "a", "b"]).tolist() == [4, -1, 1, 0]
    assert index.rows({"c"}).tolist() == [2]  # any iterable of ids
    big = pd.Series([f"s{i:07d}" for i in range(200_000)], dtype="str")
    wanted = np.random.default_rng(0).choice(len(big), 5000, replace=False)
    assert (RowIndex(big).rows(big.to_numpy(dtype=object)[wanted]) == wanted).all()


def test_text_sort_matches_a_plain_python_sort_with_empty_cells_last_either_way():
    values = ["b", "a", "", "ä", "Zed", None, "a b", "a"]
    table = pd.DataFrame({"text": pd.Series(values, dtype="str")})
    text = ["" if v is None else v for v in values]
    filled = sorted((i for i, v in enumerate(text) if v), key=lambda i: (text[i], i))
    empty = [i for i, v in enumerate(text) if not v]
    assert sort_order(table, "text", True).tolist() == filled + empty
    # descending: the ascending order reversed (ties too), the empty ones still last
    assert sort_order(table, "text", False).tolist() == filled[::-1] + empty[::-1]


def test_matching_rows_with_a_cached_order_filters_and_keeps_that_order():
    table = pd.DataFrame({"id": [f"s{i}" for i in range(6)], "role": ["fold0", "fold1"] * 3,
                          "label": list("xyxyxy"), "injected": [""] * 6,
                          "multimem": [0.1, 0.5, np.nan, 0.9, 0.3, 0.2]})
    order = sort_order(table, "multimem", False)
    order.setflags(write=False)  # the app shares one order between sessions
    rows = matching_rows(table, pd.Series([""] * 6), Filters(labels=["y"]), labels={}, tags={}, order=order)
    assert table["id"].to_numpy()[rows].tolist() == ["s3", "s1", "s5"]


def test_neighbour_index_over_float16_rows_finds_the_same_as_float32():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(70_000, 8)).astype(np.float32)  # more than one slice added to faiss
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = [f"s{i}" for i in range(len(x))]
    half = diagnose.NeighbourIndex(ids, {"image": x.astype(np.float16)}, model="m")
    full = diagnose.NeighbourIndex(ids, {"image": x.astype(np.float16).astype(np.float32)}, model="m")
    for sid in ("s0", "s69999", "s12345"):
        a = half.neighbours(sid, query="image", target="image", k=5)
        b = full.neighbours(sid, query="image", target="image", k=5)
        assert a["id"].tolist() == b["id"].tolist() and sid not in a["id"].tolist()
    assert "s5" in half and "nope" not in half


def test_map_draws_the_most_suspicious_and_a_fixed_sample_and_every_point_of_a_zoom_window():
    from app.selection import drawn_sample, window_around, window_mask

    rng = np.random.default_rng(2)
    score = rng.normal(size=100_000)
    score[rng.random(len(score)) < 0.01] = np.nan
    picked = drawn_sample(score, 20_000, 2_000)
    assert len(picked) == 20_000 and len(set(picked)) == 20_000 and (np.diff(picked) > 0).all()
    top = np.argsort(np.nan_to_num(-score, nan=np.inf))[:2_000]
    assert set(top) <= set(picked)  # the most suspicious always
    assert (drawn_sample(score, 20_000, 2_000) == picked).all()  # the same picture on every rerun
    assert (drawn_sample(score[:500], 20_000, 2_000) == np.arange(500)).all()  # few points: all of them

    x, y = rng.normal(size=100_000), rng.normal(size=100_000)
    near = (np.abs(x) < 0.1) & (np.abs(y) < 0.1)
    window = window_around(x[near], y[near])
    inside = window_mask(x, y, window)
    assert inside[near].all() and inside.sum() < 2 * near.sum() and inside.sum() <= 20_000
    assert window_mask(x, y, None).all() and window_around(np.array([np.nan]), np.array([1.0])) is None


def test_map_zooms_in_on_the_selection_and_back_to_the_whole_map(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import common, run_data

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "benchmarks"))
    from synthetic_run import make_synthetic_run

    run = make_synthetic_run(tmp_path, 300, seed=5, n_media=6)
    monkeypatch.setenv(run_data.ENV_RUN, str(run.path))
    monkeypatch.setenv("MULTIMEM_DATA_ROOT", str(tmp_path))
    at = AppTest.from_file(str(root / "app" / "main.py"), default_timeout=90)
    at.switch_page("views/map.py").run()
    proj = run.projection().set_index("id")
    picked = proj.index[(proj["x"] > proj["x"].median())][:40].tolist()
    at.session_state[common.SELECTION] = picked
    at.session_state[common.SELECTION_SOURCE] = "map"
    at.run()
    assert not at.exception and not at.button(key="map_zoom").disabled
    at.button(key="map_zoom").click().run()
    layout = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]
    x0, x1 = layout["xaxis"]["range"]
    y0, y1 = layout["yaxis"]["range"]
    xs, ys = proj.loc[picked, "x"], proj.loc[picked, "y"]
    assert x0 < xs.min() and xs.max() < x1 and y0 < ys.min() and ys.max() < y1  # the selection fills the view
    here = int(((proj["x"] >= x0) & (proj["x"] <= x1) & (proj["y"] >= y0) & (proj["y"] <= y1)).sum())
    assert layout["title"]["subtitle"]["text"] == f"zoomed in: {here:,} samples here, every one drawn"
    at.button(key="map_unzoom").click().run()
    layout = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]
    assert "range" not in layout["xaxis"] or layout["xaxis"]["range"] is None
    assert not at.exception
