"""A run folder is data that may come from someone else: what its crafted files must not make us do.

Each test plants what a sender could put in a run folder (a symlink where the engine writes, a SQLite file
that is a link, a media cell that is Markdown, ...) and checks that no file outside the run is touched and
nothing is fetched from another host.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file of the user's, outside every run: nothing may write it, move it or delete it."""
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_text("the user's own file\n")
    return path


def test_a_symlink_where_the_decode_cache_writes_leaves_its_target_alone(victim, tmp_path):
    """RUN/cache/<m>.partial.npy linked to a user's file: decoding (evaluate, mitigate, the dashboard's what-if
    preview) writes a new array of its own, never through the link."""
    from multimem_core.config import MediaSpec
    from multimem_core.data.decode import decode_manifest
    from multimem_core.data.manifest import read_manifest
    from multimem_core.data.shapes import build_shapes

    manifest = build_shapes(tmp_path / "data", n=12, inject_rate=0.0, seed=0, modalities=("image", "text"),
                            image_size=16, progress=False)
    cache = tmp_path / "run" / "cache"
    cache.mkdir(parents=True)
    for name in ("image.partial.npy", "image.compact.npy"):
        (cache / name).symlink_to(victim)
    decoded = decode_manifest(read_manifest(manifest), ["image", "text"], MediaSpec(image_size=16), cache,
                              progress=False)
    assert len(decoded.ids) == 12
    assert victim.read_text() == "the user's own file\n", "a link in the run folder redirected a write"
    assert not (cache / "image.npy").is_symlink() and (cache / "image.npy").resolve().parent == cache.resolve()


def test_allocated_memmap_replaces_a_link_instead_of_writing_through_it(victim, tmp_path):
    from multimem_core.atomic import allocated_memmap

    link = tmp_path / "run" / "embeddings" / "f" / "image.npy"
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    array = allocated_memmap(link, np.float16, (4, 3))
    array[:] = 1
    array.flush()
    del array
    assert victim.read_text() == "the user's own file\n"
    assert not link.is_symlink() and np.load(link).shape == (4, 3)


def _sqlite_objects(path: Path) -> list[str]:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master"))


@pytest.mark.parametrize("target", ["other database", "no file yet"])
def test_a_flags_database_that_is_a_link_is_refused_and_its_target_untouched(target, tmp_path):
    """RUN/review.sqlite linked to another SQLite file (its tables, journal mode would change) or to a path
    that does not exist yet (SQLite would create it there, holding sample ids the sender chose)."""
    import sqlite3
    from contextlib import closing

    from multimem_core.review import ReviewError, ReviewStore
    from multimem_core.saved_views import list_views

    other = tmp_path / "elsewhere" / "app.sqlite"
    other.parent.mkdir()
    if target == "other database":
        with closing(sqlite3.connect(other)) as conn:
            conn.execute("CREATE TABLE secrets (x)")
            conn.commit()
        before = other.read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    (run / "review.sqlite").symlink_to(other)
    store = ReviewStore(run / "review.sqlite")
    with pytest.raises(ReviewError, match="link"):
        store.flag(["a\nssh-ed25519 AAAA sender\n"], "noisy", reviewer="me")
    with pytest.raises(ReviewError, match="link"):
        list_views(store) if target == "other database" else store.tag(["a"], "x", reviewer="me")
    if target == "other database":
        assert other.read_bytes() == before and _sqlite_objects(other) == ["secrets"]
    else:
        assert not other.exists(), "a file was created where the link points"


# --- nothing from a run folder becomes Markdown that fetches from another host -------------------------------

BEACON = "http://127.0.0.2:9/"  # what a sender's image link would fetch: that the run was opened, and by whom


def _beacon(what: str) -> str:
    return f"![{what}]({BEACON}{what}.png)"


@pytest.fixture
def markdown_run(tmp_path, monkeypatch):
    """A run made by `multimem import-scores`, then rewritten as a sender would: a sample id, an image cell, a
    label, a score column, the self-check's ranking and a mitigation's metrics that are Markdown images."""
    import json
    import subprocess
    import sys

    from corpus.build import good_sample

    data = tmp_path / "data"
    rows = [good_sample(data, i, ("image", "text")) for i in range(8)]
    pd.DataFrame(rows).to_csv(manifest := data / "manifest.csv", index=False)
    pd.DataFrame({"id": [r["id"] for r in rows], "multimem": np.linspace(1, 0, 8)}).to_csv(
        table := tmp_path / "scores.csv", index=False)
    run = tmp_path / "![run](http:127.0.0.2:9)"  # a folder's name can hold a link too (http: without slashes)
    res = subprocess.run([sys.executable, "-m", "multimem_core.cli", "import-scores", "--manifest", str(manifest),
                          "--scores", str(table), "--out", str(run)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    evil_id = _beacon("id")
    for name in ("samples.parquet", "scores.parquet"):
        df = pd.read_parquet(run / name)
        df.loc[df["id"] == "good0", "id"] = evil_id
        if name == "samples.parquet":
            df.loc[df["id"] == "good1", "image"] = _beacon("cell")
            df["label"] = ["cat"] * 7 + [_beacon("label")]
        else:
            df[f"base__{_beacon('column')}"] = np.linspace(0, 1, len(df))
        df.to_parquet(run / name, index=False)
    config = json.loads((run / "config.json").read_text())
    config["selfcheck"] = {"expected_auroc": 0.8, "expected_auroc_low": 0.7, "expected_auroc_high": 0.9,
                           "ranking": _beacon("ranking"), "kinds": [], "n_planted": _beacon("planted")}
    config["protocol"] = {**config.get("protocol", {}), "name": _beacon("protocol")}
    config["confidence"] = {"lift": None, "k": 5, "n_heldout": _beacon("heldout")}
    config["manifest"] = {**config.get("manifest", {}), "format": _beacon("format")}
    (run / "config.json").write_text(json.dumps(config))
    mit = run / "mitigation" / "m1"
    mit.mkdir(parents=True)
    (mit / "config.json").write_text(json.dumps({"strategy": "regroup"}))
    memo = {"mean": 0.1, "n": 8}
    (mit / "metrics.json").write_text(json.dumps({
        "every": _beacon("every"), "seconds": 1.0,
        "overhead": {"scoring_s": 1.0, "training_s": 2.0, "share": 0.5},
        "before": {"memorization": memo, "evaluation": {}, "source": _beacon("source")},
        "after": {"memorization": memo, "evaluation": {}}}))
    monkeypatch.setenv("MULTIMEM_RUN", str(run))
    monkeypatch.setenv("MULTIMEM_DATA_ROOT", str(data))
    return run, evil_id


MARKDOWN_FIELDS = ("body", "label", "help", "caption")  # the fields of an element Streamlit renders as Markdown


def _markdown(node) -> list[str]:
    """The Markdown an element of the page renders (bodies, labels, help), its children's too; not the plain
    text of options, values or keys."""
    out = _fields(getattr(node, "proto", None))
    for child in getattr(node, "children", {}).values():
        out += _markdown(child)
    return out


def _fields(message) -> list[str]:
    out = []
    for field, value in message.ListFields() if hasattr(message, "ListFields") else ():
        if field.name in MARKDOWN_FIELDS and isinstance(value, str):
            out.append(value)
        elif hasattr(value, "ListFields"):
            out += _fields(value)
    return out


def _images_in_markdown(at) -> list[str]:
    import re

    image = re.compile(r"(?<!\\)!(?<!\\)\[[^\]]*(?<!\\)\]\(")  # an unescaped ![…]( : Markdown fetches it
    seen = _markdown(at._tree) + [t.proto.body for t in at.toast]
    code_span = re.compile(r"`[^`]*`")  # shown verbatim: no image in there (common.code keeps it closed)
    return [s for s in seen if image.search(code_span.sub("", s))]


@pytest.mark.parametrize("page", ["overview", "samples", "detail", "detail of it", "triage", "map", "mitigation",
                                  "review_export", "new_run"])
def test_no_markdown_image_from_a_run_reaches_the_page(markdown_run, page):
    from streamlit.testing.v1 import AppTest

    run, evil_id = markdown_run
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "main.py"), default_timeout=120)
    at.run()
    if page.startswith("detail"):
        at.query_params["id"] = evil_id if page == "detail of it" else evil_id + " (not in the run)"
    at.switch_page(f"views/{page.split()[0]}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    if page == "samples":  # flag the card with the hostile id: the toast names it
        at.button(key=f"grid_noisy_{evil_id}").click().run()
        assert at.toast, "the flag said nothing"
    found = _images_in_markdown(at)
    assert not found, found


def test_a_run_that_names_no_real_modality_or_score_is_refused_or_ignored(tmp_path):
    """Modality names reach labels and Markdown on every page; score column names too (as their plain name)."""
    import json

    from multimem_core.names import score_columns
    from multimem_core.run import RunDir, RunDirError

    (tmp_path / "config.json").write_text(json.dumps({"modalities": ["image", _beacon("modality")]}))
    with pytest.raises(RunDirError, match="modalities that do not exist"):
        RunDir(tmp_path).config()
    assert score_columns(["id", "multimem", "base__cosine", f"base__{_beacon('column')}", "pair__image__text"]) == \
        ["multimem", "base__cosine", "pair__image__text"]


# --- the dashboard answers only the address it was started on ---------------------------------------------------

def _websocket_answer(port: int, host: str) -> str:
    """The status line the app gives a WebSocket handshake carrying `host` (as a browser on a page of that host
    would send it: Origin and Host alike, which is what a DNS-rebinding page sends for 127.0.0.1)."""
    import base64
    import os
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nOrigin: http://{host}:{port}\r\n"
                   "Sec-WebSocket-Protocol: streamlit\r\n\r\n").encode())
        return s.recv(4096).decode(errors="replace").splitlines()[0]


def test_a_page_of_another_host_rebound_to_localhost_cannot_drive_the_dashboard(markdown_run, tmp_path):
    from tests.conftest import serving_app

    run, _ = markdown_run
    with serving_app([str(run), "--data-root", str(run.parent / "data")], tmp_path / "app.log") as url:
        port = int(url.rsplit(":", 1)[1])
        assert " 101 " in _websocket_answer(port, "127.0.0.1")  # control: the browser the user opens
        assert " 101 " in _websocket_answer(port, "localhost")
        assert " 403 " in _websocket_answer(port, "attacker.example")


def test_the_dashboard_bound_to_an_address_accepts_that_address_and_loopback_only():
    from app import streamlit_command

    cmd = streamlit_command("RUN", host="10.1.2.3", port=8600)
    hosts = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--server.allowedHosts"]
    assert set(hosts) == {"localhost", "127.0.0.1", "::1", "[::1]", "10.1.2.3"}
    assert cmd[cmd.index("--client.allowedOrigins") + 1] == "http://10.1.2.3:8600"


# --- the what-if preview reads only under the folder the app serves ----------------------------------------------

@pytest.mark.parametrize("case", ["dataset elsewhere", "media outside allowed", "hub weights", "served"])
def test_the_preview_reads_no_dataset_or_weights_outside_the_served_folder(case, markdown_run, monkeypatch):
    """The preview decodes the dataset config.json names and loads the encoders it names: a sender's run may
    name any folder on this machine, media outside its own (--allow-outside-root), or hub weights."""
    import json

    from streamlit.testing.v1 import AppTest

    run, _ = markdown_run
    (run / "models" / "f").mkdir(parents=True)
    (run / "models" / "f" / "model.safetensors").write_bytes(b"")
    config = json.loads((run / "config.json").read_text())
    config["model"] = {"image_tower": "ViT-B-32", "pretrained": "openai"} if case == "hub weights" else {}
    config["media"] = {"allow_outside_root": case == "media outside allowed"}
    config["input"] = str(run.parent / "data" / "manifest.csv")  # where a scored run names its dataset
    (run / "config.json").write_text(json.dumps(config))
    if case == "dataset elsewhere":
        (served := run.parent / "served").mkdir()
        monkeypatch.setenv("MULTIMEM_DATA_ROOT", str(served))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("views/mitigation.py").run()
    assert not at.exception, [e.value for e in at.exception]
    said = " ".join(i.value for i in at.info)
    offered = any(b.key == "whatif_run" for b in at.button)
    if case == "served":
        assert offered, said
        return
    assert not offered, "the preview would read what the run names"
    assert {"dataset elsewhere": "lies outside", "media outside allowed": "allow-outside-root",
            "hub weights": "fetches nothing"}[case] in said, said


# --- every read of a run folder's file is bounded: a FIFO or a giant file planted there stops nothing ------------

PLANTED_READS = {  # what is planted, where; the reader the dashboard uses
    ("FIFO", "embeddings/f/ids.txt"): "RunDir(run).embeddings('f', 'image')",
    ("FIFO", "embeddings/f/image.npy"): "RunDir(run).embedding_array('f', 'image')",
    ("giant", "mitigation/m1/metrics.json"): "list_mitigations(RunDir(run))",
}


@pytest.mark.parametrize("kind,planted", list(PLANTED_READS))
def test_a_fifo_or_a_giant_file_in_a_run_folder_is_refused_at_once(kind, planted, tmp_path):
    """open() on a FIFO blocks until someone writes it (the Detail page, or a command, would hang for good); a
    file of 65 MiB where the engine writes a few kilobytes of JSON is read into memory whole. Each is refused in
    seconds, naming the file."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    (run / "embeddings" / "f").mkdir(parents=True)
    (run / "mitigation" / "m1").mkdir(parents=True)
    (run / "embeddings" / "f" / "ids.txt").write_text("a\nb\n")
    np.save(run / "embeddings" / "f" / "image.npy", np.zeros((2, 3), np.float16))
    (run / "mitigation" / "m1" / "config.json").write_text('{"strategy": "remove"}')
    (run / "mitigation" / "m1" / "metrics.json").write_text("{}")
    (run / "config.json").write_text('{"modalities": ["image", "text"]}')
    (run / planted).unlink()
    if kind == "FIFO":
        os.mkfifo(run / planted)
    else:
        with open(run / planted, "wb") as f:
            f.truncate(65 * 2**20)  # sparse: no disk used
    code = ("from multimem_core.run import RunDir; from multimem_core.run_files import RunDirError\n"
            "from multimem_core.mitigation.results import list_mitigations\n"
            f"run = {str(run)!r}\ntry:\n    {PLANTED_READS[kind, planted]}\nexcept RunDirError as e:\n"
            "    print('refused:', e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parent.parent)
    said = res.stdout
    assert res.returncode == 0 and "refused:" in said and planted.split("/")[-1] in said, (said, res.stderr[-2000:])
    assert ("FIFO" if kind == "FIFO" else "over the") in said, said


def test_rows_written_by_hand_into_the_flags_database_cost_nothing_but_themselves(markdown_run):
    """review.sqlite from a sender: saved views whose query is no JSON or that open a page that does not exist,
    and a decision with a label the dashboard does not know. Every page still renders; they are not listed."""
    import sqlite3
    from contextlib import closing

    from streamlit.testing.v1 import AppTest

    from multimem_core.review import ReviewStore
    from multimem_core.saved_views import list_views, save_view

    run, _ = markdown_run
    store = ReviewStore(run / "review.sqlite")
    save_view(store, "mine", "samples", {"sort": ["multimem"]}, reviewer="me")
    with closing(sqlite3.connect(run / "review.sqlite")) as conn:
        conn.executemany("INSERT INTO saved_views VALUES (?, ?, ?, 'x', 'now')",
                         [("not json", "samples", "{oops"), ("a list", "samples", "[1]"),
                          ("elsewhere", "../../evil", "{}")])
        conn.execute("INSERT INTO decisions (sample_id, action, label, reviewer, created_at) "
                     f"VALUES ('good3', 'flag', '{_beacon('flag')}', 'x', 'now')")
        conn.commit()
    assert [v["name"] for v in list_views(store)] == ["mine"]
    assert "good3" not in store.labels()
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "main.py"), default_timeout=120)
    at.run()
    at.switch_page("views/samples.py").run()
    assert not at.exception, [e.value for e in at.exception]


# --- media decoding is bounded whatever the file claims -----------------------------------------------------------

def test_a_video_of_many_frames_is_decoded_within_bounds(tmp_path, monkeypatch):
    """A few MB of still frames can claim millions of them: decoding holds a bounded number of thumbnails and
    stops after MAX_VIDEO_FRAMES (here shrunk, so that a 300-frame file shows both bounds)."""
    from corpus.build import mp4

    from multimem_core.data import media

    video = mp4(tmp_path / "long.mp4", frames=300, size=(32, 32))
    monkeypatch.setattr(media, "MAX_VIDEO_FRAMES", 200, raising=False)
    monkeypatch.setattr(media, "KEPT_FRAMES", 16, raising=False)
    shrunk = []
    real = media._shrink_frame
    monkeypatch.setattr(media, "_shrink_frame", lambda frame, *a: shrunk.append(frame.time) or real(frame, *a))
    out = media.load_video(video, 8, 16)
    assert out.shape == (8, 3, 16, 16)
    # every frame until 32 are held, then every 2nd, 4th, 8th (73 in all); nothing after frame 200 (at 8 fps)
    assert len(shrunk) == 32 + 16 + 16 + 9 and max(shrunk) < 200 / 8, (len(shrunk), max(shrunk))


def test_a_streamlit_config_in_the_folder_the_app_starts_in_is_not_read(markdown_run, tmp_path):
    """`multimem app` is naturally started in a dataset folder (its default --data-root), which may come from
    someone else; Streamlit reads .streamlit/config.toml from where it starts. One there that turns off the XSRF
    check (and would load fonts from another host) changes nothing: the XSRF cookie is still set."""
    import urllib.request

    from tests.conftest import serving_app

    run, _ = markdown_run
    (data := run.parent / "data" / ".streamlit").mkdir()
    (data / "config.toml").write_text('[server]\nenableXsrfProtection = false\nenableCORS = false\n\n'
                                      f'[[theme.fontFaces]]\nfamily = "F"\nurl = "{BEACON}font.woff2"\n')
    with serving_app([str(run)], tmp_path / "app.log", cwd=data.parent) as url:
        cookies = urllib.request.urlopen(url + "/_stcore/health", timeout=30).headers.get_all("Set-Cookie") or []
    assert any("_streamlit_xsrf" in c for c in cookies), cookies
