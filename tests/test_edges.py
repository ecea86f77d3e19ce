"""Broken edges: run paths from any working folder, the app's port and process tree, exported
manifests whose media paths open from where they are written."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from multimem_core.export import build_export, write_export
from multimem_core.review import DropRule, ReviewStore
from multimem_core.run import RunDir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from synthetic_run import make_synthetic_run  # noqa: E402


def test_engine_stores_run_paths_absolute_and_relative_to_the_run(engine_run):
    config = engine_run.config()
    assert Path(config["input"]).is_absolute() and Path(config["dataset_root"]).is_absolute()
    rel = config["paths_from_run"]
    assert (engine_run.path / rel["input"]).resolve() == Path(config["input"])
    assert (engine_run.path / rel["manifest"]).resolve() == Path(config["manifest"]["path"])


@pytest.fixture
def moved_run(engine_run, shapes_manifest, tmp_path) -> tuple[RunDir, Path]:
    """The engine's run and its data copied into work/runs/r and work/data (with the decode cache)."""
    work = tmp_path / "work"
    shutil.copytree(shapes_manifest.parent, work / "data")
    shutil.copytree(engine_run.path, work / "runs" / "r",
                    ignore=shutil.ignore_patterns("review.sqlite*", "exports", "mitigation", "models"))
    return RunDir(work / "runs" / "r"), work / "data" / shapes_manifest.name


def test_a_run_made_with_relative_paths_reopens_from_another_folder(moved_run, tmp_path, monkeypatch):
    """Runs made before the fix kept `input` as typed (relative to where `multimem score` ran): the Mitigation
    preview and `mitigate` failed with "cannot read the manifest" when started elsewhere."""
    from multimem_core.restore import load_run_inputs

    run, manifest = moved_run
    config = run.config()
    config.pop("paths_from_run", None)
    config.update(input=f"data/{manifest.name}", out="runs/r", dataset_root="data")
    config["manifest"]["path"] = f"data/{manifest.name}"
    run.write_config(config)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run.input_path == manifest.resolve() and run.dataset_root == manifest.parent.resolve()
    inputs = load_run_inputs(run)
    assert inputs.ids == run.samples()["id"].astype(str).tolist()


def test_a_run_moved_with_its_data_finds_it_through_the_relative_fallback(moved_run, tmp_path, monkeypatch):
    run, manifest = moved_run
    config = run.config()  # as the engine writes it, for data that lay at /gone/data beside /gone/runs/r
    config.update(input=f"/gone/data/{manifest.name}", dataset_root="/gone/data",
                  paths_from_run={"input": f"../../data/{manifest.name}", "dataset_root": "../../data",
                                  "manifest": f"../../data/{manifest.name}"})
    config["manifest"]["path"] = config["input"]
    run.write_config(config)
    monkeypatch.chdir(tmp_path)
    assert run.input_path == manifest.resolve() and run.dataset_root == manifest.parent.resolve()


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> RunDir:
    return make_synthetic_run(tmp_path_factory.mktemp("synth"), 60, seed=3, n_media=8)


@pytest.mark.parametrize("absolute", [False, True])
def test_exported_manifest_media_paths_open_from_where_it_is_written(synth, tmp_path, absolute):
    ReviewStore.for_run(synth).flag(["s000001", "s000002"], "noisy", reviewer="ann")
    out = tmp_path / "somewhere" / "else" / "clean.csv"
    write_export(build_export(synth, DropRule("flagged"), format="csv"), out, absolute_paths=absolute)
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    media = [c for c in ("image", "audio", "video") if c in table.columns]
    assert media and len(table) == 58
    for c in media:
        for value in table[c]:
            assert Path(value).is_absolute() == absolute
            assert (out.parent / value).is_file(), f"{c} {value!r} does not open from {out.parent}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
        return True
    except OSError:
        return False


def test_app_serves_on_streamlit_server_port_and_sigterm_leaves_no_process(synth, tmp_path):
    psutil = pytest.importorskip("psutil")
    port = _free_port()
    env = {**os.environ, "STREAMLIT_SERVER_PORT": str(port)}
    log = tmp_path / "app.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "multimem_core.cli", "app", str(synth.path)], env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        for _ in range(240):
            if _answers(port) or proc.poll() is not None:
                break
            time.sleep(0.25)
        assert _answers(port), log.read_text()
        assert f"open http://127.0.0.1:{port}" in log.read_text()
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert tree, "the CLI serves through a Streamlit child"
        proc.send_signal(signal.SIGTERM)  # to `multimem app` only, as a service manager would
        assert proc.wait(timeout=30) == 0
        gone, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, [p.cmdline() for p in alive]
        assert not _answers(port)
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in psutil.Process().children(recursive=True):
            if "streamlit" in " ".join(p.cmdline()):
                p.kill()


def test_app_refuses_a_port_variable_that_is_not_a_number(synth):
    env = {**os.environ, "STREAMLIT_SERVER_PORT": "eighty"}
    res = subprocess.run([sys.executable, "-m", "multimem_core.cli", "app", str(synth.path)], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "STREAMLIT_SERVER_PORT" in res.stderr and "Traceback" not in res.stderr


def test_an_edited_score_table_with_infinities_reads_them_as_missing(tmp_path):
    """±inf is never written by the engine; in a run folder from elsewhere it would make every mean inf."""
    import numpy as np

    from multimem_core.summary import summarize

    run = make_synthetic_run(tmp_path / "run", 60, seed=5, n_media=4, projection=False)
    scores = pd.read_parquet(run.scores_path)
    scores.loc[scores.index[:3], "multimem"] = np.inf
    scores.loc[scores.index[3:5], "cmc_out"] = -np.inf
    scores.to_parquet(run.scores_path)

    read = run.scores(heldout=True)
    assert read["multimem"].iloc[:3].isna().all() and read["cmc_out"].iloc[3:5].isna().all()
    assert np.isfinite(read.select_dtypes("floating").to_numpy(dtype=float)[5:]).any()
    summary = summarize(run)
    means = [v["mean"] for v in summary["mean_by_role"].values()]
    assert means and all(np.isfinite(means)), summary["mean_by_role"]
    assert summary["rows_scored"] == int(np.isfinite(read["multimem"]).sum())
