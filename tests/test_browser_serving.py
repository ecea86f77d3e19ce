"""The serving rule in a real browser (docs/SERVING.md): no response from the app carries the bytes of a file
outside the folder its command line names, whatever the run folder says.

A run made by `multimem import-scores` is turned hostile, as a sender would: config.json names `/` as its
dataset folder and samples.parquet points images at a secret PNG beside the dataset folder (absolute,
relative to `/`, and by `..`). `multimem app RUN --data-root DATA` serves it to Chromium; every HTTP
response body and every WebSocket frame of the Samples page (cards) and its table (thumbnails) is searched
for the secret's bytes. The control: a good image's own bytes do arrive, so the search sees what is served.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import CHROMIUM, chromium_page, serving_app

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
if not CHROMIUM.exists():
    pytest.skip("Debian's Chromium is not installed at /usr/bin/chromium", allow_module_level=True)
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no `playwright install`)")


def marked_png(path: Path, marker: str, color) -> bytes:
    """A 48×48 PNG carrying `marker` in a text chunk: its bytes are unique to it."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("marker", marker)
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), color).save(buf, "PNG", pnginfo=info)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    data, secret = tmp / "data", tmp / "outside" / "secret.png"
    secret_bytes = marked_png(secret, "SECRET-" + "x" * 32, SECRET_COLOR)
    good = {f"g{i:02d}": marked_png(data / "img" / f"{i}.png", f"GOOD-{i:02d}", (0, 20 * i, 90)) for i in range(16)}
    ids = list(good)
    pd.DataFrame({"id": ids, "image": [f"img/{i}.png" for i in range(16)],
                  "text": [f"a blue square number {i}" for i in range(16)]}).to_csv(data / "m.csv", index=False)
    pd.DataFrame({"id": ids, "multimem": np.linspace(1, 0, 16)}).to_csv(tmp / "scores.csv", index=False)
    run = tmp / "run"
    res = subprocess.run([sys.executable, "-m", "multimem_core.cli", "import-scores", "--manifest", str(data / "m.csv"),
                          "--scores", str(tmp / "scores.csv"), "--out", str(run)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    config = json.loads((run / "config.json").read_text())
    config["dataset_root"] = "/"
    config.get("paths_from_run", {}).pop("dataset_root", None)
    (run / "config.json").write_text(json.dumps(config))
    samples = pd.read_parquet(run / "samples.parquet")
    cells = {"g00": str(secret.resolve()), "g01": str(secret.resolve()).lstrip("/"),
             "g02": "../" * 16 + str(secret.resolve()).lstrip("/")}
    for i, sid in enumerate(ids):  # the good ones absolute: inside the served folder, shown whatever the root says
        samples.loc[samples["id"] == sid, "image"] = cells.get(sid, str((data / "img" / f"{i}.png").resolve()))
    samples.to_parquet(run / "samples.parquet", index=False)
    return run, data, secret_bytes, good


def test_no_response_carries_a_file_outside_the_data_root(hostile, tmp_path):
    run, data, secret_bytes, good = hostile
    bodies: list[bytes] = []

    def on_response(response):
        try:
            bodies.append(response.body())
        except Exception:  # redirects and aborted requests have no body
            pass

    def on_socket(ws):
        ws.on("framereceived", lambda payload: bodies.append(payload if isinstance(payload, bytes)
                                                             else payload.encode()))

    with serving_app([str(run), "--data-root", str(data)], tmp_path / "app.log") as url, chromium_page() as page:
        page.on("response", on_response)
        page.on("websocket", on_socket)
        page.goto(f"{url}/samples")
        page.wait_for_selector("h1", timeout=90_000)
        page.wait_for_function("() => document.querySelectorAll('img[src*=\"media\"]').length >= 9", timeout=90_000)
        time.sleep(2)
        refusals = page.get_by_text("outside the folder the app serves").count()
        page.locator("button:has-text('Table')").first.click()  # thumbnails: the other way media reach the page
        time.sleep(4)
    blob = b"".join(bodies)
    assert refusals >= 3, "the three hostile cards say why they show nothing"
    assert secret_bytes not in blob and b"SECRET-" not in blob, "a file outside --data-root reached the browser"
    # Streamlit re-encodes images it serves: compare what they show too (the secret is the only red one)
    colors = [c for c in map(_center_color, bodies) if c is not None]
    assert not [c for c in colors if _near(c, SECRET_COLOR)], "the secret image was served (re-encoded)"
    shown = {g for c in colors for g in GOOD_COLORS if _near(c, g)}
    assert len(shown) >= 9, f"control: the good images do arrive ({len(shown)} of them)"


SECRET_COLOR = (200, 0, 0)
GOOD_COLORS = {(0, 20 * i, 90) for i in range(16)}


def _near(a, b, tol: int = 8) -> bool:
    """Equal colors, up to what a lossy re-encoding changes."""
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def _center_color(body: bytes):
    """The center pixel of a response that is an image, else None."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(body)) as img:
            rgb = img.convert("RGB")
            return rgb.getpixel((rgb.width // 2, rgb.height // 2))
    except Exception:
        return None
