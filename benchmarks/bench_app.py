"""Dashboard speed on a synthetic 100,000-sample run (headless, streamlit.testing AppTest).

Prints, after the first load (which reads the run, computes the per-sample reasons once and fills the caches):
  - time to paint Overview, Samples (cards and table) and Triage, first visit and steady state (target < 2 s),
  - time for a 10,000-point map selection to update the selection grid (target < 2 s),
  - for reference, the first (cold) load and a page flip on Samples,
  - every page's first paint in a new session once the run is loaded, Mitigation included (target ≤ 3 s).

With --browser, the same three figures in headless Chromium (Debian's, driven by Playwright) against
`streamlit run`: page switches through the sidebar after the first load, and a real box selection of
about 10,000 points on the Map, timed until the selection grid has rendered.

    python benchmarks/bench_app.py [--n 100000] [--keep DIR] [--browser]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

TARGET_S = 2.0


def timed(at, repeat: int = 3) -> float:
    """Median wall time of `repeat` reruns of the current page."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        at.run(timeout=300)
        times.append(time.perf_counter() - t)
        if at.exception:
            raise RuntimeError(at.exception[0].value)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--keep", default=None, help="reuse or keep the synthetic run in this folder")
    p.add_argument("--browser", action="store_true", help="also time the pages in headless Chromium")
    args = p.parse_args()
    from streamlit.testing.v1 import AppTest

    from app import common, run_data
    from synthetic_run import make_synthetic_run

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_app_"))
    run_path = base / "run"
    if not (run_path / "scores.parquet").is_file():
        t = time.perf_counter()
        make_synthetic_run(base, args.n, seed=0)
        print(f"synthetic run: {args.n:,} samples written in {time.perf_counter() - t:.1f} s ({run_path})")
    os.environ[run_data.ENV_RUN] = str(run_path)
    os.environ.setdefault("MULTIMEM_DATA_ROOT", str(base.resolve()))  # the app serves the run's media from here

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
    t = time.perf_counter()
    at.run()
    cold = time.perf_counter() - t
    overview = timed(at)

    at.switch_page("views/samples.py")
    t = time.perf_counter()
    at.run()
    samples_first = time.perf_counter() - t
    samples = timed(at)
    cards = [b.key for b in at.button if b.key and b.key.startswith("grid_noisy_")]
    assert len(cards) == 12, f"Samples shows {len(cards)} cards"
    t = time.perf_counter()
    at.number_input(key="samples_cards_page").set_value(500).run()
    flip = time.perf_counter() - t
    at.number_input(key="samples_cards_page").set_value(1).run()

    at.session_state["samples_view"] = "table"
    t = time.perf_counter()
    at.run(timeout=300)
    table_first = time.perf_counter() - t
    table = timed(at)
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == args.n, "the table holds every matching row"

    at.session_state["triage_source"] = "top"
    at.switch_page("views/triage.py")
    t = time.perf_counter()
    at.run(timeout=300)
    triage_first = time.perf_counter() - t
    triage = timed(at)
    assert any("reviewed" in str(p.proto.text) for p in at.get("progress")), "Triage shows its progress"

    import pandas as pd

    scored = pd.read_parquet(run_path / "scores.parquet", columns=["id"])["id"]
    ids = scored.sample(min(10_000, len(scored)), random_state=0).tolist()
    at.switch_page("views/map.py")
    at.run()  # map without selection (fills the map caches)
    at.session_state[common.SELECTION] = ids
    t = time.perf_counter()
    at.run()
    selection = time.perf_counter() - t
    if at.exception:
        raise RuntimeError(at.exception[0].value)
    shown = [b.key for b in at.button if b.key and b.key.startswith("mapgrid_noisy_")]
    assert len(shown) == 12, shown

    rows = [
        ("first load (cold: read run, fill caches)", cold, None),
        ("Overview render after first load", overview, TARGET_S),
        ("Samples (cards) first paint (sort caches)", samples_first, TARGET_S),
        ("Samples (cards) render after first load", samples, TARGET_S),
        ("Samples page flip (page 500)", flip, None),
        ("Samples (table, all matching rows) first paint", table_first, TARGET_S),
        ("Samples (table) render after first load", table, TARGET_S),
        ("Triage first paint (top 500 queue)", triage_first, TARGET_S),
        ("Triage render after first load", triage, TARGET_S),
        ("10,000-point selection -> grid (Map)", selection, TARGET_S),
    ]
    rows += first_paints(args.n)
    print(f"\nMultiMem Studio dashboard, {args.n:,} samples (AppTest, median of 3 where repeated)")
    ok = True
    for name, s, target in rows:
        verdict = "" if target is None else ("  OK" if s < target else "  SLOW")
        ok &= target is None or s < target
        print(f"  {name:<52} {s:6.2f} s" + (f"   (target < {target:.0f} s; ratio {s / target:.2f}){verdict}"
                                              if target else ""))
    if args.browser:
        browser_rows = browser_timings(run_path)
        print("\nthe same in headless Chromium (streamlit run, software WebGL, 1400×2000 viewport)")
        for name, sec in browser_rows:
            verdict = "  OK" if sec < TARGET_S else "  SLOW"
            ok &= sec < TARGET_S
            print(f"  {name:<52} {sec:6.2f} s   (target < {TARGET_S:.0f} s; ratio {sec / TARGET_S:.2f}){verdict}")
    return 0 if ok else 1


FIRST_PAINT_S = 3.0
PAGES = ["overview", "samples", "triage", "detail", "map", "review_export", "mitigation", "new_run"]


def first_paints(n: int) -> list[tuple[str, float, float]]:
    """Each page's first visit in a new session, once the run is loaded (the cold load is reported above)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
    at.run()
    rows = []
    for page in PAGES:
        at.switch_page(f"views/{page}.py")
        t = time.perf_counter()
        at.run(timeout=300)
        took = time.perf_counter() - t
        if at.exception:
            raise RuntimeError(f"{page}: {at.exception[0].value}")
        rows.append((f"first paint: {page} ({n:,} rows)", took, FIRST_PAINT_S))
    return rows


def browser_timings(run_path: Path) -> list[tuple[str, float]]:
    import signal
    import socket
    import subprocess
    import urllib.request

    import numpy as np
    import pandas as pd
    from playwright.sync_api import sync_playwright

    from app import streamlit_command

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(streamlit_command(run_path, port=port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
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
                rows.append((f"{name} render after first load (browser)", time.perf_counter() - t))
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
            rows.append((f"box selection -> grid (browser; {title.split('(')[1].split(')')[0]} samples)", seconds))
            browser.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    return rows


if __name__ == "__main__":
    sys.exit(main())
