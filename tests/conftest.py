"""Shared fixtures: real runs made by the engine on small built-in data (no mocked models)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package (apt-get install -y chromium): no browser download
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def chromium_page(*, height: int = 2000):
    """A page of a headless Chromium, 1400 px wide; `height` tall, since Streamlit scrolls inside its own
    container and a tall viewport replaces full-page screenshots."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": height})
        finally:
            browser.close()


@contextmanager
def serving_app(args: list[str], log: Path, *, cwd: Path | None = None) -> Iterator[str]:
    """`multimem app ARGS --port P` on a free localhost port (started in `cwd`); yields its URL once
    /_stcore/health answers.

    The app runs in a process group of its own and is stopped with SIGTERM (it takes its Streamlit child
    down itself); its output is in `log`, which failures quote."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the checkout first on the path, also when the app starts in another folder
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                         os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "multimem_core.cli", "app", *args, "--port", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"multimem app exited early:\n{log.read_text()}")
                time.sleep(0.25)
        else:
            pytest.fail(f"multimem app did not answer within 60 s:\n{log.read_text()}")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def tiny_score_config(manifest: Path, out: Path, *, epochs: int = 2, views: int = 2, seed: int = 0,
                      modalities=None, folds: int = 2, protocol: str = "crossfit", projection: bool = True,
                      repeats: int | None = 1):
    """A fast ScoreConfig: tiny towers, 16 px images, 4 video frames, short audio; one crossfit split unless
    `repeats` says otherwise (None: the default rule, which repeats a set this small)."""
    from multimem_core.config import AugmentConfig, MediaSpec, ModelConfig, ProtocolConfig, ScoreConfig, TrainConfig

    return ScoreConfig(
        input=str(manifest), out=str(out), modalities=modalities,
        protocol=ProtocolConfig(protocol, folds=folds, seed=seed, repeats=repeats if protocol == "crossfit" else None),
        model=ModelConfig(image_tower="mm-tiny", text_tower="mm-tiny", audio_tower="mel-cnn", video_tower="trained"),
        train=TrainConfig(epochs=epochs, batch_size=64, seed=seed, augment=AugmentConfig()),
        media=MediaSpec(image_size=16, video_frames=4, audio_seconds=0.5),
        views=views, projection=projection, progress=False,
        train_workers=1,  # in-process, so tests can interrupt training; test_score covers the parallel path
    )


@pytest.fixture(scope="session", autouse=True)
def served_data_root(tmp_path_factory) -> Path:
    """The folder the dashboard may serve media from in tests: pytest's temporary folder, which holds every
    test's dataset ($MULTIMEM_DATA_ROOT, as a user's `multimem app --data-root`). Tests of the serving
    rule name a narrower folder themselves."""
    root = tmp_path_factory.getbasetemp().resolve()
    os.environ["MULTIMEM_DATA_ROOT"] = str(root)
    return root


@pytest.fixture(scope="session")
def shapes_manifest(tmp_path_factory) -> Path:
    """A 160-sample, 4-modality shapes dataset with 10 % injected misalignments."""
    from multimem_core.data.shapes import build_shapes

    return build_shapes(tmp_path_factory.mktemp("shapes") / "data", n=160, inject_rate=0.1, seed=0,
                        image_size=32, progress=False)


@pytest.fixture(scope="session")
def engine_run(shapes_manifest, tmp_path_factory):
    """A real, complete 4-modality run directory made by `score_run` (about half a minute)."""
    from multimem_core.score import score_run

    cfg = tiny_score_config(shapes_manifest, tmp_path_factory.mktemp("runs") / "engine_run")
    cfg.save_views = True  # the augmented views too: tests re-import them (`multimem import-embeddings`)
    return score_run(cfg)


# rows of `unloadable_run`'s manifest that the run cannot load, and why (the reasons errors.parquet gives)
UNLOADABLE = {3: ("image", "img/missing.png", "missing file"), 11: ("image", "img/gone.png", "missing file"),
              20: ("image", "../outside.png", "path leads outside"), 7: ("text", "", "empty text"),
              30: ("text", "", "empty text")}


@pytest.fixture(scope="session")
def unloadable_run(tmp_path_factory):
    """A real run on a 40-row image+text manifest of which 5 rows cannot be loaded (UNLOADABLE: two missing
    images, one path outside the dataset folder, two empty captions), so the engine skips them into
    errors.parquet. (run, manifest table as written, {id: reason} of the unloadable rows)."""
    import pandas as pd

    from multimem_core.data.shapes import build_shapes
    from multimem_core.score import score_run

    base = tmp_path_factory.mktemp("unloadable")
    manifest = Path(build_shapes(base / "data", n=40, inject_rate=0.1, seed=0, modalities=("image", "text"),
                                 image_size=32, progress=False))
    table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    (base / "outside.png").write_bytes((manifest.parent / table["image"].iloc[0]).read_bytes())  # exists, refused
    for row, (column, value, _) in UNLOADABLE.items():
        table.loc[row, column] = value
    table.to_csv(manifest, index=False)
    run = score_run(tiny_score_config(manifest, base / "run", projection=False))
    return run, table, {table["id"].iloc[row]: why for row, (_, _, why) in UNLOADABLE.items()}
