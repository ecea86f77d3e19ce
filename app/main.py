"""MultiMem Studio dashboard: the frame (page config, sidebar) and the router.

    multimem app RUN_OR_RUNS_FOLDER          (or: streamlit run app/main.py -- --run RUN)

Every page is one file in app/views/. To add a page, append an `st.Page` to PAGES (within a section).

Why app/views/ and not app/pages/: Streamlit treats a `pages/` folder next to the entry script as a
legacy multipage app until some session has run st.navigation, so the first visitor of a fresh server
who opens a bookmarked /samples would get that page without this frame (no run, no sidebar).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/main.py` from a checkout that is not pip-installed: make `app` importable.
_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import streamlit as st  # noqa: E402

from app import common  # noqa: E402

# the tab icon is a file served by the app itself: a Material icon name would be fetched from a fonts host
st.set_page_config(page_title="MultiMem Studio", page_icon=str(Path(__file__).resolve().parent / "icon.png"),
                   layout="wide", initial_sidebar_state="expanded")

# Sections of the sidebar navigation; pages run in the order listed. Add yours here.
PAGES: dict[str, list] = {
    "Explore": [
        st.Page("views/overview.py", title="Overview", icon=":material/monitoring:", default=True),
        st.Page("views/samples.py", title="Samples", icon=":material/grid_view:"),
        st.Page("views/triage.py", title="Triage", icon=":material/keyboard:"),
        st.Page("views/detail.py", title="Sample detail", icon=":material/search:"),
        st.Page("views/map.py", title="Map", icon=":material/scatter_plot:"),
    ],
    "Act": [
        st.Page("views/review_export.py", title="Review & export", icon=":material/ios_share:"),
        st.Page("views/mitigation.py", title="Mitigation", icon=":material/healing:"),
        st.Page("views/new_run.py", title="New run", icon=":material/play_circle:"),
    ],
}

# metric labels wrap instead of ending in "…": a score's plain name is a few words long
st.html("<style>[data-testid='stMetricLabel'] * {white-space: normal !important; overflow: visible !important; "
        "text-overflow: clip !important;} [data-testid='stMetricLabel'] {height: auto !important;}</style>")

page = st.navigation(PAGES)
# Arriving from another page, a page's URL is new to it: forget which address it saw last (app.url_state)
for key in [k for k in st.session_state if str(k).startswith("_url_seen_") and k != f"_url_seen_{page.url_path}"]:
    del st.session_state[key]
try:
    common.sidebar()  # run picker and reviewer, on every page
    common.show_toast()
    page.run()
except common.RUN_DAMAGED as e:  # a damaged file in the run folder: one line on the page, never a traceback
    st.error(common.inert(e), icon=":material/error:")
