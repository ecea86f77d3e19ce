"""A page's filters, sort and selection in its URL, so that a link (or a saved view) reproduces what is shown.

Each page declares its query keys. On every run the page reads them; when the URL carries state the session
has not seen yet (a shared link, a saved view, the browser's back button), the page applies it to its widgets
before drawing them. After drawing, the page writes its state back. A page opened from the sidebar has a bare
URL: the session's own choices stay and are written into the URL.
"""

from __future__ import annotations

import streamlit as st

MAX_SELECTION_IN_URL = 500  # ids in a URL; a larger selection stays in the session (a saved view says so)

Query = dict[str, list[str]]


def read(keys) -> Query:
    return {k: list(st.query_params.get_all(k)) for k in keys if k in st.query_params}


def incoming(page: str, keys) -> Query | None:
    """The URL's state if the page should apply it: the address changed since the last run saw it (a shared link
    on first load, a link from another page, the back button) and it is not the echo of what the page wrote.

    An address the browser did not update (a message can arrive before the page's own new-session message and
    be overridden) is not a change: it was already seen, so the session's state stays and `write` sends it again."""
    query = read(keys)
    seen_key = f"_url_seen_{page}"
    changed = seen_key not in st.session_state or st.session_state[seen_key] != query
    st.session_state[seen_key] = query
    if not query or not changed or st.session_state.get(f"_url_{page}") == query:
        return None
    st.session_state[f"_url_{page}"] = query
    return query


def write(page: str, keys, query: Query) -> None:
    """Put the page's state in the URL, leaving any other parameter (e.g. the detail page's id) alone."""
    query = {k: [str(v) for v in vs] for k, vs in query.items() if vs}
    st.session_state[f"_url_{page}"] = query
    if read(keys) == query:
        return
    others = {k: st.query_params.get_all(k) for k in st.query_params if k not in keys}
    st.query_params.from_dict({**others, **query})


def one(query: Query, key: str, default: str | None = None) -> str | None:
    values = query.get(key) or []
    return values[-1] if values else default


def selection_param(ids) -> list[str]:
    ids = [str(i) for i in ids or ()]
    return ids if 0 < len(ids) <= MAX_SELECTION_IN_URL else []
