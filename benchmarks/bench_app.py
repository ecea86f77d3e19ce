"""Dashboard speed on a synthetic run of any size (headless, streamlit.testing AppTest, in this process).

Prints, for a run of --rows samples (default 1,000,000):
  - the cold load: the first visit on a fresh server (reads the run, fills the shared caches), for reference,
  - every page's first paint in a new session once the run is loaded (target <= 3 s), the Samples table too,
  - on Samples: a filter (one dataset label, a caption word) and a sort by another score or by caption, each
    timed from the widget change to the redrawn page (target <= 1 s), and a page flip,
  - a 10,000-point Map selection until its card grid is drawn (target <= 1 s),
  - the app's memory: the peak resident set of this process, which runs the app (the run is made in a child).

With --browser, the same pages in headless Chromium (Debian's, driven by Playwright) against `streamlit run`:
page switches through the sidebar after the first load, and a real box selection of about 10,000 points on
the Map, timed until the selection grid has rendered; and the server process's peak memory.

    python benchmarks/bench_app.py [--rows 1000000] [--keep DIR] [--browser]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

FIRST_PAINT_S = 3.0  # a page's first paint
ACTION_S = 1.0  # a filter, a sort, a selection
PAGES = ["overview", "samples", "triage", "detail", "map", "review_export", "mitigation", "new_run"]


def rerun(at, label: str) -> float:
    t = time.perf_counter()
    at.run(timeout=600)
    took = time.perf_counter() - t
    if at.exception:
        raise RuntimeError(f"{label}: {at.exception[0].value}")
    return took


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def rss_gib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**30


def new_session(page: str | None = None, **state):
    """A new browser session (AppTest), on Overview, then `page`, with `state` set first."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=600)
    for k, v in state.items():
        at.session_state[k] = v
    if page:
        at.switch_page(f"views/{page}.py")
    return at


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="samples in the synthetic run")
    p.add_argument("--keep", default=None, help="reuse or keep the synthetic run in this folder")
    p.add_argument("--browser", action="store_true", help="also time the pages in headless Chromium")
    args = p.parse_args()

    from app import common, run_data

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_app_"))
    run_path = base / "run"
    if not (run_path / "scores.parquet").is_file():
        t = time.perf_counter()  # in a child: its memory is not the app's
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "synthetic_run.py"), str(base), "--n",
                        str(args.rows)], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        print(f"synthetic run: {args.rows:,} samples written in {time.perf_counter() - t:.1f} s ({run_path})")
    os.environ[run_data.ENV_RUN] = str(run_path)
    os.environ.setdefault("MULTIMEM_DATA_ROOT", str(base.resolve()))  # the app serves the run's media from here
    import pandas as pd

    n = len(pd.read_parquet(run_path / "samples.parquet", columns=["id"]))
    rss_before = rss_gib()

    rows: list[tuple[str, float, float | None]] = []
    at = new_session()
    rows.append(("first load (cold: read the run, fill the caches)", rerun(at, "cold"), None))
    rss_loaded = rss_gib()
    for page in PAGES:
        rows.append((f"first paint: {page}", rerun(new_session(page), page), FIRST_PAINT_S))
        if page == "samples":
            at = new_session("samples", samples_view="table")
            took = rerun(at, "table")
            table = at.dataframe[0].value
            rows.append((f"first paint: samples, table ({len(table):,} rows on its page)", took, FIRST_PAINT_S))

    # the actions, on a Samples page that is open (cards)
    at = new_session("samples")
    rerun(at, "samples")
    cards = [b.key for b in at.button if b.key and b.key.startswith("grid_noisy_")]
    assert len(cards) == 12, f"Samples shows {len(cards)} cards"
    label = at.multiselect(key="samples_labels").options[0]
    at.multiselect(key="samples_labels").set_value([label])
    rows.append((f"filter: dataset label {label!r}", rerun(at, "label filter"), ACTION_S))
    matched = len(at.session_state[common.FILTERED])
    at.multiselect(key="samples_labels").set_value([])
    rerun(at, "clear")
    at.text_input(key="samples_query").input("triangle")
    rows.append(("filter: caption has 'triangle'", rerun(at, "caption filter"), ACTION_S))
    at.text_input(key="samples_query").input("")
    rerun(at, "clear")
    at.selectbox(key="samples_sort").set_value("cmc_out")
    rows.append(("sort: by another score (cmc_out), first time", rerun(at, "sort"), ACTION_S))
    at.selectbox(key="samples_sort").set_value("text")
    rows.append(("sort: by caption, first time", rerun(at, "sort text"), ACTION_S))
    first = [b.key for b in at.button if b.key and b.key.startswith("grid_noisy_")]
    at.selectbox(key="samples_sort").set_value("multimem")
    rerun(at, "back")
    at.number_input(key="samples_cards_page").set_value(500)
    rows.append(("page flip (cards, page 500)", rerun(at, "flip"), ACTION_S))

    scored = pd.read_parquet(run_path / "scores.parquet", columns=["id"])["id"]
    ids = scored.sample(min(10_000, len(scored)), random_state=0).tolist()
    at = new_session("map")
    rerun(at, "map")
    at.session_state[common.SELECTION] = ids
    took = rerun(at, "selection")
    shown = [b.key for b in at.button if b.key and b.key.startswith("mapgrid_noisy_")]
    assert len(shown) == 12, shown
    rows.append((f"Map: {len(ids):,}-point selection -> card grid", took, ACTION_S))

    peak = peak_rss_gib()
    print(f"\nMultiMem Studio dashboard, {n:,} samples (AppTest; every figure one timed rerun)")
    print(f"  (the label filter matched {matched:,} samples; the caption sort starts with {first[0][11:]!r})")
    ok = True
    for name, s, target in rows:
        good = target is None or s <= target
        ok &= good
        print(f"  {name:<58} {s:6.2f} s" + (f"   (target <= {target:.0f} s) {'OK' if good else 'SLOW'}"
                                              if target else ""))
    print(f"  memory of the app process: {rss_before:.2f} GiB before the run was read, {rss_loaded:.2f} GiB once "
          f"loaded, peak {peak:.2f} GiB")
    if args.browser:
        browser_rows, server_peak = browser_timings(run_path)
        print("\nthe same in headless Chromium (streamlit run, software WebGL, 1400×2000 viewport)")
        for name, sec, target in browser_rows:
            good = sec <= target
            ok &= good
            print(f"  {name:<58} {sec:6.2f} s   (target <= {target:.0f} s) {'OK' if good else 'SLOW'}")
        print(f"  memory of the server process: peak {server_peak:.2f} GiB")
    slow = [name for name, s, target in rows if target is not None and s > target]
    print(f"rows={n} first_paint_max_s={max(s for name, s, t in rows if t == FIRST_PAINT_S):.2f} "
          f"action_max_s={max(s for name, s, t in rows if t == ACTION_S):.2f} peak_rss_gib={peak:.2f} "
          f"slow={len(slow)}")
    return 0 if ok else 1


def browser_timings(run_path: Path) -> tuple[list[tuple[str, float, float]], float]:
    """(name, seconds, target) per timed step, and the server process's peak resident memory in GiB."""
    import signal
    import socket
    import subprocess
    import urllib.request

    import numpy as np
    import pandas as pd
    from playwright.sync_api import sync_playwright

    from app import LAUNCH_DIR, streamlit_command

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # started in the package's app/ folder, as `multimem app` starts it: no .streamlit/config.toml of the folder
    # the benchmark runs in is read; media are served from under that folder, named explicitly
    proc = subprocess.Popen(streamlit_command(run_path, port=port, data_root=Path.cwd()), cwd=LAUNCH_DIR,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def settled(pg, ready_js: str, timeout: float = 120.0) -> None:
        """Until `ready_js` holds and Streamlit's running indicator has been gone for a moment."""
        pg.wait_for_function(ready_js, timeout=timeout * 1000)
        quiet = 0
        while quiet < 2:
            quiet = 0 if pg.locator("[data-testid='stStatusWidget']").count() else quiet + 1
            time.sleep(0.05)

    overview_ready = ("() => [...document.querySelectorAll('h1')].some(h => h.innerText.startsWith('Overview'))"
                      " && document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4")
    samples_ready = ("() => [...document.querySelectorAll('h1')].some(h => h.innerText === 'Samples')"
                     " && document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 12")
    rows = []
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            pg = browser.new_page(viewport={"width": 1400, "height": 2000})
            pg.goto(url)
            settled(pg, overview_ready, 300)  # first load: the run is read and cached
            for name, link, ready in [("Samples", "Samples", samples_ready), ("Overview", "Overview", overview_ready),
                                      ("Samples", "Samples", samples_ready)]:
                t = time.perf_counter()
                pg.locator(f"[data-testid='stSidebarNav'] a:has-text('{link}')").first.click()
                settled(pg, ready)
                rows.append((f"{name} render after first load (browser)", time.perf_counter() - t,
                             FIRST_PAINT_S))
            rows = rows[1:]  # the first Samples visit fills its sort cache; report the steady state

            pg.locator("[data-testid='stSidebarNav'] a:has-text('Map')").first.click()
            settled(pg, "() => document.querySelectorAll('.js-plotly-plot .scatterlayer, .js-plotly-plot canvas').length > 0")
            # a box around ~10,000 samples: x between two quantiles, every y
            proj = pd.read_parquet(run_path / "projection.parquet", columns=["x", "y"])
            xs = np.sort(proj["x"].to_numpy())
            x0, x1 = xs[len(xs) // 2 - 5_000], xs[len(xs) // 2 + 5_000]
            y0, y1 = float(proj["y"].min()) - 0.1, float(proj["y"].max()) + 0.1
            pg.locator(".js-plotly-plot [data-title='Box Select']").first.click()
            corners = pg.evaluate("""([x0, x1, y0, y1]) => {
                const gd = document.querySelector('.js-plotly-plot'); const L = gd._fullLayout;
                const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
                const px = v => r.left + L.xaxis.d2p(v), py = v => r.top + L.yaxis.d2p(v);
                return [px(x0), py(y1), px(x1), py(y0)]; }""", [float(x0), float(x1), y0, y1])
            t = time.perf_counter()
            pg.mouse.move(corners[0], corners[1])
            pg.mouse.down()
            pg.mouse.move(corners[2], corners[3], steps=6)
            pg.mouse.up()
            settled(pg, "() => [...document.querySelectorAll('h3')].some(h => h.innerText.startsWith('Selected samples'))"
                        " && document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 12")
            seconds = time.perf_counter() - t
            title = pg.locator("h3:has-text('Selected samples')").first.inner_text()
            rows.append((f"box selection -> grid (browser; {title.split('(')[1].split(')')[0]} samples)", seconds,
                         ACTION_S))
            browser.close()
    finally:
        peak = _peak_gib(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    return rows, peak


def _peak_gib(pid: int) -> float:
    """A live process's peak resident set (VmHWM in /proc), in GiB; NaN where /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
