"""Saved views: a page of the dashboard with its filters, sort and selection, under a name, in RUN/review.sqlite.

A view is the page's URL query (what the dashboard puts in the address bar), so opening a saved view and
opening a shared link are the same thing. Saving under an existing name replaces it; nothing else is changed.
No Streamlit import here.
"""

from __future__ import annotations

import json
import re
from contextlib import closing

from multimem_core.review import ReviewError, ReviewStore, utc_timestamp

NAME_PATTERN = re.compile(r"^[\w][\w .:/+()-]{0,59}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS saved_views (
    name       TEXT PRIMARY KEY,
    page       TEXT NOT NULL,   -- the dashboard page's URL path: samples, map
    params     TEXT NOT NULL,   -- JSON object: query parameter -> list of values
    reviewer   TEXT NOT NULL,
    created_at TEXT NOT NULL    -- ISO 8601, UTC
);
"""


def save_view(store: ReviewStore, name: str, page: str, params: dict[str, list[str]], *, reviewer: str) -> None:
    name = str(name).strip()
    if not NAME_PATTERN.match(name):
        raise ReviewError(f"view name {name!r} is not usable: up to 60 letters, digits, spaces or . : / + ( ) -, "
                          "starting with a letter or digit")
    if not str(reviewer).strip():
        raise ReviewError("reviewer name is empty; type your name in the sidebar")
    clean = {str(k): [str(v) for v in (vs if isinstance(vs, (list, tuple)) else [vs])] for k, vs in params.items()}
    with closing(store._connect()) as conn:
        conn.executescript(_SCHEMA)
        conn.execute("INSERT OR REPLACE INTO saved_views (name, page, params, reviewer, created_at) VALUES (?, ?, ?, ?, ?)",
                     (name, page, json.dumps(clean, sort_keys=True), reviewer.strip(), utc_timestamp()))


def delete_view(store: ReviewStore, name: str) -> None:
    with closing(store._connect()) as conn:
        conn.executescript(_SCHEMA)
        conn.execute("DELETE FROM saved_views WHERE name = ?", (str(name),))


def list_views(store: ReviewStore) -> list[dict]:
    """Every saved view, by name: name, page, params (query parameter -> list of values), reviewer, created_at."""
    if not store.path.is_file():
        return []
    with closing(store._connect()) as conn:
        conn.executescript(_SCHEMA)
        rows = conn.execute("SELECT name, page, params, reviewer, created_at FROM saved_views ORDER BY name").fetchall()
    return [{"name": n, "page": p, "params": params, "reviewer": r, "created_at": c} for n, p, q, r, c in rows
            if (params := _params(q)) is not None and p in PAGES and isinstance(n, str) and NAME_PATTERN.match(n)]


PAGES = ("samples", "map")  # the dashboard pages a view opens


def _params(text) -> dict[str, list[str]] | None:
    """A view's query as save_view wrote it; None for a row it did not write (a run folder may come from someone
    else: a row that opens a page that does not exist, or whose query is no JSON object, is not listed)."""
    try:
        params = json.loads(text)
    except (TypeError, ValueError):
        return None
    if not isinstance(params, dict) or not all(isinstance(v, list) and all(isinstance(x, str) for x in v)
                                               for v in params.values()):
        return None
    return params
