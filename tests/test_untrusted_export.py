"""A run folder from someone else must not make an export that copies media bytes (`--format shards`, `--to hf`)
embed the recipient's own files.

The sender writes config.json and samples.parquet: a crafted run names a "dataset_root" in the recipient's home
and a media cell ".ssh/id_rsa.pem". Each test builds a real tiny run, crafts a copy of it as an attacker would, and
checks that the export is refused with a clear error and that no byte of the secret reaches the output.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from multimem_core.cli import main
from multimem_core.run import RunDir

SECRET_NAME = ".ssh/id_rsa.pem"  # with an extension: a shard member needs one
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY-----\nthe recipient's own key\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.fixture(scope="module")
def honest_run(tmp_path_factory) -> RunDir:
    """A real, complete image+text run on 24 shapes samples."""
    from multimem_core.data.shapes import build_shapes
    from multimem_core.score import score_run

    from tests.conftest import tiny_score_config

    base = tmp_path_factory.mktemp("honest")
    manifest = build_shapes(base / "data", n=24, inject_rate=0.1, seed=0, modalities=("image", "text"),
                            image_size=32, progress=False)
    return score_run(tiny_score_config(manifest, base / "run", projection=False))


def _home(tmp_path: Path) -> Path:
    """The recipient's home, holding a secret the export must never copy."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / SECRET_NAME).write_bytes(SECRET)
    return home


def _crafted(honest: RunDir, tmp_path: Path, home: Path, how: str) -> tuple[RunDir, str]:
    """A copy of the honest run as a sender would craft it: config.json's dataset_root is the recipient's home,
    one kept row's image cell names the secret and every other image cell is empty; in samples.parquet (the
    manifest config.json names made missing, so that every export reads samples.parquet) or in a manifest the
    sender ships in the run folder."""
    run = RunDir(shutil.copytree(honest.path, tmp_path / "received_run"))
    config = json.loads(run.config_path.read_text())
    config["dataset_root"] = str(home)
    config.setdefault("paths_from_run", {})["dataset_root"] = os.path.relpath(home, run.path)
    samples = run.samples()
    victim_id = run.scores().nsmallest(1, "multimem")["id"].iloc[0]  # kept by --drop top:1
    # the secret as one kept row's image; the other rows' images emptied, so that nothing else fails to copy
    samples["image"] = samples["id"].map({victim_id: SECRET_NAME}).fillna("")
    if how == "samples":
        config["manifest"]["path"] = str(tmp_path / "gone.csv")
        config["paths_from_run"].pop("manifest", None)
        samples.to_parquet(run.samples_path, index=False)
    else:  # a manifest of the sender's, named by config.json, with the secret in it
        table = pd.read_csv(honest.stored_path("manifest"), dtype=str, keep_default_na=False)
        table["image"] = table["id"].map({victim_id: SECRET_NAME}).fillna("")
        table.to_csv(run.path / "manifest.csv", index=False)
        config["manifest"]["path"] = str(run.path / "manifest.csv")
        config["paths_from_run"]["manifest"] = "manifest.csv"
    run.config_path.write_text(json.dumps(config))
    return run, victim_id


def _holds_secret(folder: Path) -> bool:
    return folder.exists() and any(SECRET[:40] in p.read_bytes() for p in folder.rglob("*") if p.is_file())


# where the crafted cell sits: samples.parquet, or a manifest the sender ships in the run folder (only the hf
# export reads the manifest; a shard export reads samples.parquet alone)
@pytest.mark.parametrize("to, how", [(["--to", "hf"], "samples"), (["--to", "hf"], "manifest"),
                                     (["--format", "shards"], "samples")])
def test_a_crafted_run_cannot_embed_the_recipients_files(honest_run, tmp_path, capsys, to, how):
    if to[1] == "hf":
        pytest.importorskip("datasets", reason="the Hugging Face `datasets` package is not installed")
    home = _home(tmp_path)
    run, victim_id = _crafted(honest_run, tmp_path, home, how)
    out = tmp_path / "export"
    try:
        code = main(["export", str(run.path), *to, "--out", str(out), "--drop", "top:1"])
    except SystemExit as e:
        code = e.code
    err = " ".join(capsys.readouterr().err.split())
    assert not _holds_secret(out), "the export copied the recipient's secret"
    assert code not in (0, None), "the export of a crafted run went through"
    assert str(run.path) in err and SECRET_NAME in err and victim_id in err, err
    assert "Export refused" in err, err


def test_an_honest_copy_of_the_run_still_exports_its_own_media(honest_run, tmp_path, capsys):
    """The run folder moved elsewhere, untouched: shards are written from the input's own files."""
    run = RunDir(shutil.copytree(honest_run.path, tmp_path / "copy"))
    assert main(["export", str(run.path), "--format", "shards", "--out", str(tmp_path / "sh"), "--drop", "top:1"]) == 0
    assert "kept 23" in capsys.readouterr().out and any((tmp_path / "sh").glob("*.tar"))


def test_an_export_that_cannot_re_read_the_input_stops(honest_run, tmp_path, capsys):
    """Without its input the run's media cannot be checked: the embedding export stops and says how to fix it."""
    run = RunDir(shutil.copytree(honest_run.path, tmp_path / "received_run"))
    config = json.loads(run.config_path.read_text())
    config["input"] = str(tmp_path / "moved" / "manifest.csv")
    config["paths_from_run"].pop("input", None)
    run.config_path.write_text(json.dumps(config))
    for to in (["--format", "shards"], ["--to", "hf"]):
        with pytest.raises(SystemExit):
            main(["export", str(run.path), *to, "--out", str(tmp_path / to[1]), "--drop", "top:1"])
        err = " ".join(capsys.readouterr().err.split())
        assert "put it back where the run found it" in err and str(run.path) in err, err
        assert not (tmp_path / to[1]).exists() or not any((tmp_path / to[1]).iterdir())
