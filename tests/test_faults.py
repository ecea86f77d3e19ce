"""Faults: kill -9 at any moment, a full disk, two writers, two reviewers, crafted files. Nothing is lost,
nothing half-written looks complete, and a rerun gives the scores an uninterrupted run gives."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from multimem_core.run import RunDir

REPO = Path(__file__).resolve().parents[1]
# `multimem score` small enough for tests: tiny towers at 16 px, image+text, two training workers
TINY = ["--image-size", "16", "--frames", "4", "--audio-seconds", "0.5", "--audio-tower", "mel-cnn", "--batch-size", "32",
        "--views", "2", "--quiet", "--train-workers", "2", "--seed", "0"]


# The runs compared with `reference` train long enough for a kill to land mid-training on a fast machine: at 30
# epochs a model trained in 0.43 s here, under one progress report (every 0.5 s), and CI's faster machine once
# finished before the test could see epoch 3.
REFERENCE_EPOCHS = 300


def score_cmd(manifest: Path, out: Path, *extra: str, epochs: int = 30, modalities="image,text") -> list[str]:
    return [sys.executable, "-m", "multimem_core.cli", "score", str(manifest), "--out", str(out), *TINY,
            "--epochs", str(epochs), "--modalities", modalities, *extra]


def run(cmd: list[str], *, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw)


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under `folder`: (mtime_ns, size, sha256)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_mtime_ns, st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out += [int(x) for x in task.read_text().split()]
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the command ended before {what}:\n{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


def scores_of(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "scores.parquet")


def assert_same_scores(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(scores_of(a), scores_of(b), check_exact=True)


@pytest.fixture(scope="module")
def reference(shapes_manifest, tmp_path_factory):
    """An uninterrupted run of the tiny command, and how long it took."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    t = time.time()
    res = run(score_cmd(shapes_manifest, out, "--no-projection", epochs=REFERENCE_EPOCHS))
    assert res.returncode == 0, res.stderr[-3000:]
    return out, time.time() - t


# --- kill -9 -----------------------------------------------------------------------------------------------

def test_sigkill_during_training_then_nothing_writes_and_a_rerun_scores_the_same(reference, shapes_manifest,
                                                                                 tmp_path):
    ref, _ = reference
    out = tmp_path / "victim"
    proc = subprocess.Popen(score_cmd(shapes_manifest, out, "--no-projection", epochs=REFERENCE_EPOCHS), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def training() -> dict | None:  # both workers in their third epoch or later
        progress = RunDir(out).progress() or {}
        ok = progress.get("stage") == "train" and progress.get("parallel_models") and progress.get("epoch", 0) >= 3
        return progress if ok else None

    wait_for(training, 300, "training in the workers", proc)
    workers = children(proc.pid)
    assert workers, "no training workers to watch"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = snapshot(out)
    time.sleep(0.5)
    after = snapshot(out)
    assert after == before, {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
                             if before.get(k) != after.get(k)}
    assert not [w for w in workers if alive(w)], "a training worker outlived its killed parent"
    assert not RunDir(out).is_complete()
    assert json.loads((out / "config.json").read_text())["status"] == "running"  # killed: no chance to say more

    res = run(score_cmd(shapes_manifest, out, "--no-projection", epochs=REFERENCE_EPOCHS))  # at once, same command
    assert res.returncode == 0, res.stderr[-3000:]
    assert RunDir(out).is_complete()
    assert_same_scores(ref, out)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["decode", "prepare", "train", "embed", "score", "projection"])
def test_sigkill_in_every_stage_then_a_rerun_scores_the_same(stage, reference, shapes_manifest, tmp_path):
    """kill -9 as soon as the run enters `stage` (progress.json), then the same command: the scores equal the
    uninterrupted run's (the UMAP map is on here, so that writing it is a stage too; it does not touch scores)."""
    ref, _ = reference
    out = tmp_path / "victim"
    proc = subprocess.Popen(score_cmd(shapes_manifest, out, epochs=REFERENCE_EPOCHS), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.time() + 300
    while (RunDir(out).progress() or {}).get("stage") != stage:
        assert proc.poll() is None and time.time() < end, f"the run never showed stage {stage}"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not RunDir(out).is_complete()  # even with scores.parquet written (killed in projection)
    res = run(score_cmd(shapes_manifest, out, epochs=REFERENCE_EPOCHS))
    assert res.returncode == 0, f"after a kill in {stage}: {res.stderr[-3000:]}"
    assert_same_scores(ref, out)
    print(f"killed in stage {stage}: rerun scores equal")


# --- one writer per run ---------------------------------------------------------------------------------------

def test_a_second_writer_is_refused_naming_the_holder(shapes_manifest, tmp_path):
    from multimem_core import launch
    from multimem_core.runlock import RunLock, RunLockedError, describe_holder, holder

    out = tmp_path / "run"
    with RunLock(out, "multimem score (the first one)"):
        assert holder(out)["pid"] == os.getpid()
        res = run(score_cmd(shapes_manifest, out))
        assert res.returncode == 2, res.stderr
        assert f"pid {os.getpid()}" in res.stderr and "the first one" in res.stderr and "Traceback" not in res.stderr
        with pytest.raises(RunLockedError, match="one writer per run"):
            RunLock(out).acquire()
        with pytest.raises(launch.LaunchError, match=f"pid {os.getpid()}"):
            launch.start(launch.request(shapes_manifest, out, {}), root=shapes_manifest.parent.parent)
        assert not (out / "config.json").exists()  # the refused command wrote nothing
    assert holder(out) is None and describe_holder(out) is None
    with RunLock(out):  # free again once the holder is gone
        pass


def test_imports_and_mitigate_take_the_lock(tmp_path):
    from multimem_core.importing.embeddings import import_embeddings
    from multimem_core.mitigation.settings import MitigateConfig
    from multimem_core.mitigation import mitigate
    from multimem_core.runlock import RunLock, RunLockedError

    out = tmp_path / "run"
    with RunLock(out, "someone else"):
        with pytest.raises(RunLockedError, match="someone else"):
            mitigate(out, MitigateConfig(strategy="remove"))
        cfg = _paper_import(tmp_path, out)
        with pytest.raises(RunLockedError, match="someone else"):
            import_embeddings(cfg)
    assert import_embeddings(cfg).is_complete()  # and once free, the import goes through, lock file and all


def test_a_failed_run_is_marked_failed_and_not_listed_as_complete(tmp_path):
    from corpus.build import good_sample

    data = tmp_path / "data"
    rows = [good_sample(data, i, ("image", "text")) for i in range(4)] + [
        {"id": "escape", "image": "../../x.png", "text": "a"}, {"id": "gone", "image": "no.png", "text": "b"}]
    pd.DataFrame(rows).to_csv(data / "m.csv", index=False)
    out = tmp_path / "runs" / "small"
    res = run(score_cmd(data / "m.csv", out))
    assert res.returncode == 2 and "m.csv" in res.stderr and "too few" in res.stderr, res.stderr
    assert "2 were skipped" in res.stderr and "skipped 2 of 6 samples" in res.stdout, res.stdout
    assert "'escape' (row 4): image" in res.stdout and "outside the dataset folder" in res.stdout, res.stdout
    assert "'gone' (row 5): image" in res.stdout and "missing file" in res.stdout, res.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["status"] == "failed" and "too few" in config["error"]
    assert RunDir(out).progress()["stage"] == "failed"
    assert not RunDir(out).is_complete()


# --- a full disk ----------------------------------------------------------------------------------------------

@contextmanager
def small_disk(folder: Path, size_kb: int):
    """A tmpfs of `size_kb` at `folder` when this process may mount (root), else None: the caller then
    limits file sizes instead (RLIMIT_FSIZE: a write past it fails with EFBIG, as a full disk fails with ENOSPC)."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                                 capture_output=True).returncode == 0
    try:
        yield "tmpfs" if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_gives_a_clear_error_and_no_complete_looking_run(reference, shapes_manifest, tmp_path):
    import resource

    ref, _ = reference
    need_kb = sum(p.stat().st_size for p in ref.rglob("*") if p.is_file()) // 1024
    biggest = max(p.stat().st_size for p in ref.rglob("*") if p.is_file())
    with small_disk(tmp_path / "disk", need_kb // 2) as kind:
        out = tmp_path / "disk" / "run"
        limit = None if kind else biggest // 2

        def cap():  # in the child: files may not grow past `limit`
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        res = run(score_cmd(shapes_manifest, out, "--no-projection"), preexec_fn=cap if limit else None)
        assert res.returncode == 2, res.stderr[-3000:]
        assert "no space left writing" in res.stderr and "Traceback" not in res.stderr, res.stderr[-3000:]
        assert str(out) in res.stderr  # names the file it could not write
        assert not RunDir(out).is_complete()
        config = RunDir(out).config() if (out / "config.json").is_file() else {}
        assert config.get("status") in ("running", "failed", None)
        print(f"full disk simulated with {kind or f'RLIMIT_FSIZE {limit} bytes'}: {res.stderr.strip()[:300]}")


# --- flags: two reviewers at once, and kill -9 between flags ----------------------------------------------------

FLAGGER = """
import sys
from multimem_core.review import ReviewStore
store = ReviewStore(sys.argv[1])
for i in range(int(sys.argv[3])):
    seq = store.flag(f"{sys.argv[2]}-{i}", "noisy", reviewer=sys.argv[2], source="test")
    print(seq[0], flush=True)  # printed only after the commit returned
"""


def test_two_reviewers_flagging_at_once_lose_nothing(tmp_path):
    n = 150
    procs = [subprocess.Popen([sys.executable, "-c", FLAGGER, str(tmp_path), who, str(n)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for who in ("ana", "bo")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    import sqlite3

    with sqlite3.connect(tmp_path / "review.sqlite") as conn:
        stored = sorted(r[0] for r in conn.execute("SELECT sample_id FROM decisions"))
    expected = sorted(f"{w}-{i}" for w in ("ana", "bo") for i in range(n))
    assert stored == expected, f"{len(set(expected) - set(stored))} flags lost"


def test_kill_between_flags_loses_no_committed_flag(tmp_path):
    import sqlite3

    proc = subprocess.Popen([sys.executable, "-c", FLAGGER, str(tmp_path), "ana", "100000"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    committed = []
    while len(committed) < 40:
        line = proc.stdout.readline()
        assert line, "the flagger stopped"
        committed.append(int(line))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(tmp_path / "review.sqlite") as conn:
        stored = {r[0] for r in conn.execute("SELECT seq FROM decisions")}
    lost = set(committed) - stored
    assert not lost, f"{len(lost)} committed flags lost"


# --- imports: mismatched ids, NaN, inf, wrong shapes -------------------------------------------------------------

def _paper_import(tmp_path: Path, out: Path, *, mutate=None):
    from test_importers import N, write_model

    from multimem_core.importing.embeddings import EmbeddingImport

    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"id": [f"s{i:02d}" for i in range(N)], "text": [f"caption {i}" for i in range(N)],
                  "image": [f"img/{i}.png" for i in range(N)]}).to_csv(manifest, index=False)
    f, g = write_model(tmp_path / "f", seed=1), write_model(tmp_path / "g", seed=2)
    if mutate:
        mutate(f)
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("\n".join(f"s{i:02d}" for i in range(24, N)))
    return EmbeddingImport(manifest=str(manifest), out=str(out), in_model=str(f), out_model=str(g),
                           heldout=str(heldout), projection=False)


def _set(value):
    def mutate(folder: Path):
        x = np.load(folder / "image.npy")
        x[0, 3, 2] = value
        np.save(folder / "image.npy", x)
    return mutate


def _reshape(folder: Path):
    np.save(folder / "image.npy", np.load(folder / "image.npy")[:, :-1])


def _rename_id(folder: Path):
    ids = (folder / "ids.txt").read_text().splitlines()
    ids[5] = "stranger"
    (folder / "ids.txt").write_text("\n".join(ids) + "\n")


@pytest.mark.parametrize("mutate,words", [(_set(np.nan), "s03"), (_set(np.inf), "s03"), (_set(-np.inf), "s03"),
                                          (_reshape, "image.npy"), (_rename_id, "stranger")],
                         ids=["nan", "inf", "-inf", "wrong shape", "mismatched ids"])
def test_bad_embeddings_are_refused_and_nothing_is_written(mutate, words, tmp_path):
    from multimem_core.importing.embedding_files import ImportValidationError
    from multimem_core.importing.embeddings import import_embeddings

    out = tmp_path / "runs" / "imported"
    cfg = _paper_import(tmp_path, out, mutate=mutate)
    with pytest.raises(ImportValidationError) as e:
        import_embeddings(cfg)
    assert words in str(e.value), str(e.value)
    assert not out.exists() and not list(out.parent.glob(".*")), list(out.parent.iterdir())


@pytest.mark.parametrize("values,words", [([0.1, np.inf, 0.2], "s01"), ([0.1, np.nan, 0.2], "s01"),
                                          ([0.1, -np.inf, 0.2], "s01")], ids=["inf", "nan", "-inf"])
def test_bad_score_tables_are_refused_and_nothing_is_written(values, words, tmp_path):
    from multimem_core.importing.embedding_files import ImportValidationError
    from multimem_core.importing.scores import ScoresImport, import_scores

    cfg = _paper_import(tmp_path, tmp_path / "unused")
    table = tmp_path / "scores.csv"
    pd.DataFrame({"id": ["s00", "s01", "s02"], "multimem": values}).to_csv(table, index=False)
    out = tmp_path / "runs" / "from-table"
    with pytest.raises(ImportValidationError) as e:
        import_scores(ScoresImport(manifest=cfg.manifest, scores=str(table), out=str(out)))
    assert words in str(e.value), str(e.value)
    assert not out.exists()


# --- crafted files ----------------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_checkpoint_is_never_unpickled(tmp_path):
    import torch

    from multimem_core.config import ModelConfig
    from multimem_core.models.factory import create_model
    from multimem_core.config import TrainConfig
    from multimem_core.train import train_model

    marker = tmp_path / "pwned"
    folder = tmp_path / "models" / "fold0"
    folder.mkdir(parents=True)
    torch.save({"key": _Payload(marker)}, folder / "checkpoint.pt")
    model = create_model(ModelConfig(image_tower="mm-tiny", text_tower="mm-tiny", image_size=16,
                                     modalities=["image", "text"]))
    data = {"image": torch.rand(8, 3, 16, 16), "text": model.towers["text"].prepare([f"a {i}" for i in range(8)])}
    stats = train_model(model, data, np.arange(8), TrainConfig(epochs=1, batch_size=4), folder, progress=False)
    assert stats["epochs"] == 1 and (folder / "model.safetensors").is_file()
    assert not marker.exists(), "the checkpoint's code ran"
    torch.load(folder / "checkpoint.pt", weights_only=True)  # replaced by a real one
    # control: the same file unpickled without weights_only would have run the command
    torch.save({"key": _Payload(marker)}, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def test_the_new_run_page_accepts_only_inputs_under_its_data_root(tmp_path):
    from multimem_core import launch

    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (outside / "m.csv").write_text("id,image,text\n")
    (root / "m.csv").write_text("id,image,text\n")
    (root / "link.csv").symlink_to(outside / "m.csv")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    assert launch.resolve_under(root, "m.csv") == (root / "m.csv").resolve()
    for text in ["../elsewhere/m.csv", str(outside / "m.csv"), "link.csv", "linked/m.csv", "/etc"]:
        with pytest.raises(launch.LaunchError, match="outside the data root"):
            launch.resolve_under(root, text)


def test_the_app_serves_no_file_outside_the_dataset_root(tmp_path):
    """Every page shows media through app.common.show_media -> app.media.read_media; it refuses `..`,
    absolute paths, symlinks and shard references that lead out of the root."""
    from app.media import MediaPathError, read_media

    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "img").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"\x89PNG secret")
    (root / "img" / "ok.png").write_bytes(b"\x89PNG fine")
    (root / "img" / "link.png").symlink_to(outside / "secret.png")
    (root / "up").symlink_to(outside, target_is_directory=True)
    assert read_media(root, "img/ok.png")[0] == b"\x89PNG fine"
    for value in ["../outside/secret.png", "img/../../outside/secret.png", str(outside / "secret.png"),
                  "/etc/passwd", "../../../../../../etc/passwd", "img/link.png", "up/secret.png",
                  "../outside.tar#secret.png", "/etc/passwd.tar#x.png"]:
        with pytest.raises(MediaPathError):
            read_media(root, value)
    pages = sorted((REPO / "app" / "views").glob("*.py")) + [REPO / "app" / "common.py"]
    # a file opened directly (open(...), Path.read_bytes); decoding bytes already read (Image.open) is fine
    file_read = re.compile(r"(?<![\w.])open\(|read_bytes\(")
    readers = [p.name for p in pages if file_read.search(p.read_text())]
    assert readers == [], f"pages that read files themselves instead of through app.media: {readers}"


# --- a run folder is data: crafted, damaged or pointed at the wrong place ---------------------------------------

SECRET = b"\x89PNG not-for-the-browser " + b"S3CRET" * 8


def cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "multimem_core.cli", *args], timeout=timeout)


def one_line_error(res: subprocess.CompletedProcess, *words: str) -> str:
    """The command failed with exit 2 and one line `multimem: error: …` holding `words`, no traceback."""
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], err[-3000:])
    assert "Traceback" not in err and err.startswith("multimem: error: ") and "\n" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture
def imported(tmp_path) -> tuple[Path, Path, Path]:
    """(dataset folder, manifest, run): a run made by `multimem import-scores` (no training) over 20 real PNGs,
    and a secret file beside the dataset folder."""
    from corpus.build import good_sample

    data = tmp_path / "data"
    rows = [good_sample(data, i, ("image", "text")) for i in range(20)]
    pd.DataFrame(rows).to_csv(manifest := data / "manifest.csv", index=False)
    pd.DataFrame({"id": [r["id"] for r in rows], "multimem": np.linspace(1, 0, 20)}).to_csv(
        table := tmp_path / "scores.csv", index=False)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(SECRET)
    res = cli("import-scores", "--manifest", str(manifest), "--scores", str(table), "--out", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    return data, manifest, tmp_path / "run"


def tamper(run_path: Path, *, dataset_root: str | None = None, **images: str) -> None:
    """Rewrite a run's config.json dataset folder and samples.parquet image cells, as a hostile sender would."""
    if dataset_root is not None:
        config = json.loads((run_path / "config.json").read_text())
        config["dataset_root"] = dataset_root
        config.get("paths_from_run", {}).pop("dataset_root", None)
        (run_path / "config.json").write_text(json.dumps(config))
    samples = pd.read_parquet(run_path / "samples.parquet")
    for sid, value in images.items():
        samples.loc[samples["id"] == sid, "image"] = value
    samples.to_parquet(run_path / "samples.parquet", index=False)


def app_page(run_path: Path, data_root: Path, monkeypatch, page: str = "views/samples.py"):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MULTIMEM_RUN", str(run_path))
    monkeypatch.setenv("MULTIMEM_DATA_ROOT", str(data_root))
    at = AppTest.from_file(str(REPO / "app" / "main.py"), default_timeout=90)
    at.run()
    at.switch_page(page).run()
    return at


def test_the_app_serves_only_under_its_command_line_root_whatever_the_run_says(imported, monkeypatch):
    """config.json names / as the dataset folder and samples.parquet points images at a file outside the
    folder the app was started on: the Samples page never opens it (an audit hook sees every open) and says so
    on the card; the other cards still show their images."""
    global OPENED
    data, _, run_path = imported
    secret = (data.parent / "outside" / "secret.png").resolve()
    # the other cells absolute (inside the served folder), so that they still show under the new "root"
    good = {f"good{i}": str((data / "good" / f"{i}.png").resolve()) for i in range(3, 20)}
    tamper(run_path, dataset_root="/", good0=str(secret).lstrip("/"), good1=str(secret),
           good2="../" * 12 + str(secret).lstrip("/"), **good)
    sys.addaudithook(_record_opens)
    OPENED = []
    try:
        at = app_page(run_path, data, monkeypatch)
        opened = list(OPENED)
    finally:
        OPENED = None
    assert not at.exception, [e.value for e in at.exception]
    assert str(secret) not in opened
    refusals = [e.value for e in at.error if "outside the folder the app serves" in e.value]
    assert len(refusals) == 3, [e.value for e in at.error]
    assert any(p.endswith("good/5.png") for p in opened)  # a good card's image was read: the hook does see opens
    assert len(at.get("image")) == 9  # the other cards of the first page show their images


OPENED: list[str] | None = None


def _record_opens(event: str, args: tuple) -> None:
    if OPENED is not None and event == "open" and isinstance(args[0], (str, Path)):
        try:
            OPENED.append(str(Path(args[0]).resolve()))
        except (OSError, RuntimeError, ValueError):
            OPENED.append(str(args[0]))


@pytest.mark.parametrize("target", ["samples.parquet", "config.json", "scores.parquet", "manifest"])
def test_export_never_writes_over_the_run_or_its_input(imported, target):
    data, manifest, run_path = imported
    out = manifest if target == "manifest" else run_path / target
    before = out.read_bytes()
    res = cli("export", str(run_path), "--out", str(out), "--drop", "top:3", "--format", "csv")
    one_line_error(res, str(out.resolve()), "--overwrite")
    assert out.read_bytes() == before
    assert cli("summary", str(run_path)).returncode == 0


def test_export_over_the_input_manifest_when_told_so(imported):
    data, manifest, run_path = imported
    res = cli("export", str(run_path), "--out", str(manifest), "--drop", "top:3", "--overwrite")
    assert res.returncode == 0, res.stderr
    assert len(pd.read_csv(manifest)) == 17


def unlocked(folder: Path) -> dict:
    """snapshot() without the run lock, which notes each command that takes it, even one that then refuses."""
    return {k: v for k, v in snapshot(folder).items() if Path(k).name != ".lock"}


@pytest.mark.parametrize("target", ["good/0.png", "good/7.png", "notes.txt"])
@pytest.mark.parametrize("fmt", ["csv", "ids"])
def test_export_never_writes_over_a_file_of_the_dataset(imported, target, fmt):
    """The manifest's media (and any other file in the dataset's folder) are the dataset's own: an export there
    is one line naming the file and --overwrite, and the file is as it was. A new file there is fine."""
    data, _, run_path = imported
    (data / "notes.txt").write_text("the dataset's readme\n")
    out = data / target
    before = out.read_bytes()
    res = cli("export", str(run_path), "--out", str(out), "--drop", "top:3", "--format", fmt)
    one_line_error(res, str(out.resolve()), "dataset", "--overwrite")
    assert out.read_bytes() == before
    res = cli("export", str(run_path), "--out", str(data / "good" / f"new.{fmt}"), "--drop", "top:3", "--format", fmt)
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="module")
def outside_run(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """(run, {case: media file outside the dataset folder}): a real run made with --allow-outside-root on 24
    image+text rows, of which one image lies beside the dataset folder ('../outside/...'), one elsewhere (an
    absolute path) and one, outside too, belongs to a row the run could not load (its caption is empty)."""
    from dataclasses import replace

    from corpus.build import good_sample

    from multimem_core.score import score_run
    from tests.conftest import tiny_score_config

    base = tmp_path_factory.mktemp("outside_run")
    data = base / "data"
    rows = [good_sample(data, i, ("image", "text")) for i in range(24)]
    files = {"beside": base / "outside" / "0.png", "elsewhere": base / "elsewhere" / "1.png",
             "unloaded row": base / "outside" / "2.png"}
    for i, (case, path) in enumerate(files.items()):
        path.parent.mkdir(parents=True, exist_ok=True)
        (data / rows[i]["image"]).rename(path)
        rows[i]["image"] = str(path) if case == "elsewhere" else f"../outside/{path.name}"
    rows[2]["text"] = ""
    pd.DataFrame(rows).to_csv(manifest := data / "manifest.csv", index=False)
    cfg = tiny_score_config(manifest, base / "run", epochs=1, projection=False)
    cfg.media = replace(cfg.media, allow_outside_root=True)
    run = score_run(cfg)
    assert run.errors()["id"].tolist() == ["good2"] and "good0" in set(run.samples()["id"])
    return run.path, files


@pytest.mark.parametrize("case, fmt", [(case, fmt) for case in ("beside", "elsewhere", "unloaded row")
                                       for fmt in ("csv", "ids")] + [("elsewhere", "label-studio")])
def test_export_never_writes_over_a_file_the_manifest_names_outside_the_dataset(outside_run, case, fmt):
    """A run made with --allow-outside-root reads media outside its dataset folder: those files are the
    dataset's own too. An export over one is one line naming the file and --overwrite, and the file is as it
    was; --overwrite writes there on purpose. (The tools' exports refuse every existing file; they say why.)"""
    run_path, files = outside_run
    out = files[case]
    before = out.read_bytes()
    res = cli("export", str(run_path), "--out", str(out), "--drop", "top:3", "--format", fmt)
    one_line_error(res, str(out.resolve()), "manifest names", "--overwrite")
    assert out.read_bytes() == before
    if fmt == "ids" and case == "beside":
        res = cli("export", str(run_path), "--out", str(out), "--drop", "top:3", "--format", fmt, "--overwrite")
        assert res.returncode == 0, res.stderr
        out.write_bytes(before)


def test_score_writes_only_into_a_new_folder_or_its_own_run(imported, tmp_path):
    """`score --out` on the dataset's image folder, on a folder that holds the manifest, on a folder of other
    things or on a run an importer made: one line each, nothing written there. A demo's run holds its own data,
    a New-run job its request."""
    from multimem_core.outputs import check_output

    data, manifest, run_path = imported
    (other := tmp_path / "notes").mkdir()
    (other / "todo.txt").write_text("x")
    inner = pd.read_csv(manifest).assign(image=lambda t: t["image"].str.removeprefix("good/"))
    inner.to_csv(inner_manifest := data / "good" / "inner.csv", index=False)
    cases = [(manifest, data / "good", "not empty"), (inner_manifest, data, "holds"), (manifest, tmp_path, "not empty"),
             (manifest, other, "not empty"), (manifest, run_path, "import-scores")]
    for source, out, words in cases:
        before = unlocked(out)
        one_line_error(cli("score", str(source), "--out", str(out), "--epochs", "1", *TINY), str(out.resolve()),
                       words, "--out")
        assert unlocked(out) == before, out
    demo = tmp_path / "demo"
    (demo / "data").mkdir(parents=True)
    (demo / "data" / "manifest.csv").write_text("id,text\n")
    assert check_output(demo, inputs=[demo / "data" / "manifest.csv"], writes="run") == demo.resolve()
    (job := tmp_path / "job").mkdir()  # the New-run page writes the job's request and log, then scores into it
    (job / "request.json").write_text("{}")
    (job / "log.txt").write_text("$ multimem score --config job/request.json\n")
    assert check_output(job, inputs=[manifest], writes="run") == job.resolve()


def test_score_resumes_only_the_run_the_same_command_made(imported, tmp_path):
    """A finished run of one manifest: score with another manifest or other options into it is refused (one line
    saying which differs), the run and its flags untouched; the same command again resumes it."""
    data, manifest, _ = imported
    out = tmp_path / "scored"
    # --no-selfcheck: a finished run's config.json keeps the self-check's figures where its options were, and the
    # same command must still resume
    command = ["score", str(manifest), "--out", str(out), "--epochs", "1", "--modalities", "image,text",
               "--no-selfcheck", *TINY]
    res = cli(*command)
    assert res.returncode == 0, res.stderr[-3000:]
    from multimem_core.review import ReviewStore

    ReviewStore(out).flag(["good1"], "noisy", reviewer="ann")
    pd.read_csv(manifest).iloc[:18].to_csv(other := data / "other.csv", index=False)
    before = unlocked(out)
    one_line_error(cli("score", str(other), "--out", str(out), *command[4:]), "another input manifest", str(other),
                   "new --out")
    one_line_error(cli(*command[:-len(TINY)], *TINY[:-2], "--seed", "1"), "other options", "train.seed 0 -> 1")
    assert unlocked(out) == before
    res = cli(*command)
    assert res.returncode == 0, res.stderr[-3000:]
    assert RunDir(out).config()["status"] == "complete" and ReviewStore(out).flagged_ids() == ["good1"]


def test_an_import_never_replaces_the_folder_it_reads(imported, tmp_path):
    data, manifest, _ = imported
    before = snapshot(data)
    res = cli("import-scores", "--manifest", str(manifest), "--scores", str(tmp_path / "scores.csv"), "--out", str(data),
              "--overwrite")
    one_line_error(res, str(data.resolve()))
    assert snapshot(data) == before


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flag_then_garbage(path: Path) -> None:
    _garbage(path)


DAMAGE = {  # (file, damage, command args after RUN, words the error holds)
    "review garbage, export": ("review.sqlite", _flag_then_garbage, ["export", "--drop", "flagged", "--out", "x.csv"],
                               "not a SQLite database"),
    "scores truncated, summary": ("scores.parquet", _truncate, ["summary"], "scores.parquet"),
    "samples garbage, summary": ("samples.parquet", _garbage, ["summary"], "samples.parquet"),
    "samples garbage, export": ("samples.parquet", _garbage, ["export", "--drop", "top:2", "--out", "x.csv"],
                                "samples.parquet"),
    "config garbage, summary": ("config.json", _garbage, ["summary"], "config.json"),
    "config garbage, export": ("config.json", _garbage, ["export", "--drop", "top:2", "--out", "x.csv"],
                               "config.json"),
    "config is /dev/zero, summary": ("config.json", lambda p: (p.unlink(), p.symlink_to("/dev/zero")), ["summary"],
                                     "character device"),
}


@pytest.mark.parametrize("case", list(DAMAGE), ids=list(DAMAGE))
def test_a_damaged_run_folder_gives_one_line_naming_the_file(case, imported, tmp_path):
    name, damage, args, words = DAMAGE[case]
    _, _, run_path = imported
    damage(run_path / name)
    command, *rest = args
    rest = [str(tmp_path / a) if a.endswith(".csv") else a for a in rest]
    err = one_line_error(cli(command, str(run_path), *rest), words)
    assert name in err and any(w in err for w in ("rerun", "restore", "move it", "again")), err


@pytest.mark.parametrize("where", ["an existing file", "under /sys"])
def test_an_output_that_cannot_be_written_gives_one_line(where, imported, tmp_path):
    data, manifest, run_path = imported
    if where == "an existing file":
        (blocker := tmp_path / "blocker").write_text("x")
        out = blocker / "clean.csv"
    else:
        out = Path("/sys/multimem-test/clean.csv")
    one_line_error(cli("export", str(run_path), "--drop", "top:2", "--out", str(out)), str(out.parent))
    res = cli("score", str(manifest), "--out", str(tmp_path / "blocker" if where == "an existing file" else out.parent),
              "--epochs", "1", "--quiet")
    one_line_error(res, "--out")


def test_the_app_says_on_the_page_what_is_wrong_with_a_damaged_run(imported, monkeypatch):
    data, _, run_path = imported
    _garbage(run_path / "review.sqlite")
    at = app_page(run_path, data, monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    assert any("review.sqlite" in e.value and "not a SQLite database" in e.value for e in at.error), \
        [e.value for e in at.error]


def test_one_bad_media_file_costs_its_card_only(imported, monkeypatch):
    """Importers do not decode media: the top-ranked cards hold a text file named .png, a symlink loop, a NUL
    byte, a FIFO and a folder. Each card says why; the page and the other cards render."""
    data, _, run_path = imported
    (data / "bad").mkdir()
    (data / "bad" / "fake.png").write_text("not a picture\n")
    (data / "bad" / "a.png").symlink_to("b.png")
    (data / "bad" / "b.png").symlink_to("a.png")
    os.mkfifo(data / "bad" / "pipe.png")
    (data / "bad" / "dir.png").mkdir()
    tamper(run_path, good0="bad/fake.png", good1="bad/a.png", good2="bad/x\x00.png", good3="bad/pipe.png",
           good4="bad/dir.png")
    at = app_page(run_path, data, monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    said = " | ".join(e.value for e in at.error)
    for words in ("not an image", "symlink loop", "NUL byte", "FIFO", "a folder"):
        assert words in said, (words, said)
    assert len(at.get("image")) >= 7  # the seven good cards of the first page


def test_import_scores_names_the_bad_cell(imported, tmp_path):
    data, manifest, _ = imported
    ids = [f"good{i}" for i in range(20)]
    for values, words in [(["0.5"] * 19 + ["abc"], "'abc'"), ([0.1] * 19 + [1e308], "1e+308"),
                          ([0.1] * 19 + [-1e308], "-1e+308")]:
        pd.DataFrame({"id": ids, "multimem": values}).to_csv(table := tmp_path / "bad.csv", index=False)
        err = one_line_error(cli("import-scores", "--manifest", str(manifest), "--scores", str(table), "--out",
                                 str(tmp_path / "r")), "'multimem'", "good19", words)
        assert "no `multimem` column" not in err
        assert not (tmp_path / "r").exists()


def test_a_fifo_score_table_is_refused_at_once(imported, tmp_path):
    data, manifest, _ = imported
    os.mkfifo(fifo := tmp_path / "scores.csv.fifo.csv")
    one_line_error(cli("import-scores", "--manifest", str(manifest), "--scores", str(fifo), "--out", str(tmp_path / "r"),
                       timeout=60), "FIFO")
