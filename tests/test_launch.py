"""Runs started from the dashboard: paths stay under the data root, and a job's state (running, failed,
cancelled) comes from its files alone, with real `multimem score` processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from multimem_core import launch


def test_paths_outside_the_data_root_are_refused(tmp_path):
    root = tmp_path / "data"
    (root / "set").mkdir(parents=True)
    (root / "set" / "m.csv").write_text("id,text,image\n")
    (tmp_path / "secret.csv").write_text("id,text,image\n")
    (root / "escape").symlink_to(tmp_path)
    assert launch.resolve_under(root, "set/m.csv") == (root / "set" / "m.csv").resolve()
    assert launch.resolve_under(root, str(root / "set")) == (root / "set").resolve()
    for bad in ("../secret.csv", str(tmp_path / "secret.csv"), "escape/secret.csv", "/etc/passwd"):
        with pytest.raises(launch.LaunchError, match="outside the data root"):
            launch.resolve_under(root, bad)
    with pytest.raises(launch.LaunchError, match="does not exist"):
        launch.resolve_under(root, "set/nope.csv")
    with pytest.raises(launch.LaunchError, match="no input"):
        launch.resolve_under(root, "  ")


def test_find_inputs_lists_manifests_and_shard_folders_not_runs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "manifest.csv").write_text("x")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "000.tar").write_bytes(b"")
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    for name in ("config.json", "samples.parquet", "scores.parquet"):
        (run / name).write_text("{}")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "m.csv").write_text("x")
    found = {str(p.relative_to(tmp_path)) for p in launch.find_inputs(tmp_path)}
    assert found == {"a/manifest.csv", "shards"}


def not_manifests_beside_manifests(root: Path) -> None:
    """A data root where some CSVs are manifests and others are not."""
    import os

    (root / "set").mkdir(parents=True)
    (root / "set" / "manifest.csv").write_text("id,text,image\na,a cat,a.png\n")
    (root / "clip.csv").write_text("filepath\ttitle\ttext\timage\nx.png\tt\tt\tx.png\n")  # tab-separated
    # a valid header over rows that do not parse: only the header line is read
    (root / "big.csv").write_bytes(b"text;audio\n" + b"\xff\xfe not UTF-8, \"unclosed\n" * 50_000)
    (root / "results.csv").write_text("epoch,loss\n1,0.5\n")
    (root / "one.csv").write_text("id,text\na,only text\n")
    (root / "empty.tsv").write_text("")
    os.mkfifo(root / "pipe.csv")  # opening it to read would block
    (root / "rows.jsonl").write_text('{"id": "a"}\n')  # no header line: judged once chosen


def test_split_inputs_sets_apart_csvs_that_are_not_manifests_reading_only_their_header(tmp_path, monkeypatch):
    from multimem_core.data import manifest

    not_manifests_beside_manifests(tmp_path)
    monkeypatch.setattr(manifest, "read_regular_bounded", None)  # a whole file is never read
    usable, refused = launch.split_inputs(launch.find_inputs(tmp_path))
    assert {p.name for p in usable} == {"manifest.csv", "clip.csv", "big.csv", "rows.jsonl"}
    assert {p.name for p in refused} == {"results.csv", "one.csv", "empty.tsv", "pipe.csv"}
    reasons = {p.name: why for p, why in refused.items()}
    assert "at least two modalities" in reasons["results.csv"] and "found text" in reasons["one.csv"]
    assert "empty" in reasons["empty.tsv"] and "FIFO" in reasons["pipe.csv"]


def test_new_run_page_lists_only_manifests_and_names_the_others(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "data"
    not_manifests_beside_manifests(root)
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("MULTIMEM_RUN", str(tmp_path / "runs"))
    monkeypatch.setenv(launch.ENV_DATA_ROOT, str(root))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app" / "main.py"), default_timeout=90)
    at.run()
    at.switch_page("views/new_run.py").run()
    assert not at.exception, [e.value for e in at.exception]
    picker = at.selectbox(key="newrun_found")
    assert set(picker.options) == {"set/manifest.csv", "clip.csv", "big.csv", "rows.jsonl"}
    assert picker.value == "set/manifest.csv" and not at.error
    note = next(c for c in at.caption if "not manifests" in c.value)
    assert all(f"`{name}`" in note.value for name in ("results.csv", "one.csv", "empty.tsv", "pipe.csv"))


def test_request_is_a_score_config_started_from_request_json(tmp_path):
    """The New-run page's request is a ScoreConfig; the job runs it from RUN/request.json, with no option
    spelled out on a command line."""
    from multimem_core.cli.score import config_file
    from multimem_core.config import ScoreConfig

    cfg = launch.request("/d/m.csv", "/r/x", {"modalities": ["image", "text"], "protocol": "paper", "epochs": 3,
                                              "text_tower": "", "image_tower": "mm-tiny", "seed": 7})
    assert isinstance(cfg, ScoreConfig) and cfg.protocol.name == "paper" and cfg.train.epochs == 3
    assert cfg.model.text_tower == "mm-tiny"  # "": the image tower's
    assert cfg.protocol.seed == cfg.train.seed == 7
    (tmp_path / "req.json").write_text(__import__("json").dumps(cfg.to_dict()))
    assert config_file(tmp_path / "req.json") == cfg
    runs = tmp_path / "runs"
    runs.mkdir()
    assert launch.runs_folder(runs, root=tmp_path) == runs.resolve()
    single = runs / "one"
    single.mkdir()
    (single / "config.json").write_text("{}")
    (single / "samples.parquet").write_text("")
    assert launch.runs_folder(single, root=tmp_path) == (tmp_path / "runs").resolve()
    assert launch.describe(None)["stage"] == "starting"
    d = launch.describe({"stage": "train", "model_index": 2, "models_total": 2, "epoch": 1, "epochs": 4,
                         "samples_per_s": 100, "eta_s": 3, "eta_train_s": 3, "model": "fold1"})
    assert d["fraction"] == 5 / 8 and d["eta_s"] == 3 and "epoch 1 of 4" in d["detail"]
    assert launch.duration(75) == "1 min 15 s"


def tiny_manifest(folder: Path, n: int) -> Path:
    from multimem_core.data.shapes import build_shapes

    return build_shapes(folder, n=n, inject_rate=0.0, seed=0, modalities=("image", "text"), image_size=16,
                        progress=False)


def wait_for(predicate, timeout: float = 120):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_failed_job_shows_the_end_of_its_log(tmp_path):
    manifest = tiny_manifest(tmp_path / "data", 6)  # too few samples to train: the engine refuses
    out = launch.start(launch.request("manifest.csv", tmp_path / "runs" / "few", {"epochs": 1}),
                       root=tmp_path / "data")
    assert launch.job_state(out).state in ("starting", "running", "failed")
    state = wait_for(lambda: (s := launch.job_state(out)) and not s.active and s)
    assert state.state == "failed" and state.exit_code == 2
    assert "too few to train" in state.error and state.error.count("\n") < 45
    assert (out / "log.txt").read_text().startswith("$ ")
    assert launch.job_state(out).job["command"][-2:] == ["--config", str(out / launch.REQUEST)]
    with pytest.raises(launch.LaunchError, match="exists already"):
        launch.start(launch.request(manifest, out, {}), root=tmp_path / "data")


def test_cancel_ends_the_whole_process_group(tmp_path):
    tiny_manifest(tmp_path / "data", 200)
    out = launch.start(launch.request("manifest.csv", tmp_path / "runs" / "long",
                                      {"epochs": 500, "image_size": 16, "views": 1, "batch_size": 32}),
                       root=tmp_path / "data")
    job = launch.job_state(out).job
    # wait until the engine itself runs (a child of the wrapper shell), then cancel
    engine_pid = wait_for(lambda: (p := launch._read_json(out / "progress.json")) and p.get("pid"))
    assert launch.cancel(out)
    state = launch.job_state(out)
    assert state.state == "cancelled" and not state.active
    for pid in (job["pid"], engine_pid):
        launch._reap(pid)
        assert not launch.process_alive(pid, str(out))
    assert not launch.group_members(job["pgid"])
    assert not launch.cancel(out)  # nothing left to cancel
    assert [s.name for s in launch.list_jobs(out.parent)] == ["long"]


def test_start_refuses_bad_settings(tmp_path):
    (tmp_path / "m.csv").write_text("id,text,image\n")
    good = dict(input="m.csv", out=str(tmp_path / "runs" / "ok"))
    for kwargs, message in [({"out": str(tmp_path / "runs" / "bad name")}, "run name"),
                            ({"out": str(tmp_path / "runs" / ".." / ".." / "escaped")}, "run name"),
                            ({"protocol": "other"}, "--protocol other: choose one of crossfit, paper"),
                            ({"folds": 1}, "--folds 1: must be at least 2"),
                            ({"epochs": 0}, "--epochs 0: must be at least 1"),
                            ({"input": "../x.csv"}, "outside the data root")]:
        paths = {k: kwargs.pop(k, good[k]) for k in ("input", "out")}
        with pytest.raises(launch.LaunchError, match=message):
            launch.start(launch.request(paths["input"], paths["out"], kwargs), root=tmp_path)
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "escaped").exists()
