"""Bring your own embeddings or scores: re-imported runs score as the original, and every bad input is refused
with a message that names the file and the ids, leaving nothing behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from multimem_core.importing.embeddings import EmbeddingImport, import_embeddings
from multimem_core.importing.embedding_files import ImportValidationError
from multimem_core.importing.scores import ScoresImport, import_scores
from multimem_core.run import RunDir

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "app" / "main.py"


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multimem_core.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


# --- a real run made by `multimem score --save-views`, re-imported --------------------------------------------

@pytest.fixture(scope="module")
def views_run(shapes_manifest, tmp_path_factory) -> RunDir:
    """A 4-modality shapes run with a held-out set H (crossfit --heldout-frac 0.1), made by score_run as
    `multimem score --save-views` makes it: it keeps its augmented views, those of H's pass too."""
    from dataclasses import replace

    from conftest import tiny_score_config

    from multimem_core.score import score_run

    cfg = tiny_score_config(shapes_manifest, tmp_path_factory.mktemp("runs") / "views_run")
    cfg.protocol = replace(cfg.protocol, heldout_frac=0.1)
    cfg.save_views = True
    return score_run(cfg)


def test_heldout_rows_come_last_with_cmc_out_only(views_run):
    """With --heldout-frac, H rows are no model's training rows: they get cmc_out (every model saw them out)
    and no multimem, and they come after the scored rows in scores.parquet."""
    samples, scores, every = views_run.samples(), views_run.scores(), views_run.scores(heldout=True)
    held = every[every["role"] == "H"]
    assert len(held) >= 0.05 * len(samples)
    assert set(held["id"]) == set(samples.loc[samples.role == "H", "id"])
    assert set(scores["id"]) == set(samples.loc[samples.role != "H", "id"])
    assert every.index[every["role"] == "H"].min() == len(scores)
    assert np.isfinite(held["cmc_out"]).all() and held["multimem"].isna().all()
    assert np.isfinite(scores["multimem"]).all()


@pytest.fixture(params=["views_run", "engine_run"])
def any_views_run(request) -> RunDir:
    """With H, and the default (every row scored, each model's own fold its reference set)."""
    return request.getfixturevalue(request.param)


def test_save_views_option_reaches_the_engine(tmp_path):
    from multimem_core.cli import build_parser
    from multimem_core.cli.score import score_config

    args = build_parser().parse_args(["score", "m.csv", "--out", str(tmp_path), "--save-views"])
    assert score_config(args, args.input, args.out).save_views
    args = build_parser().parse_args(["score", "m.csv", "--out", str(tmp_path)])
    assert not score_config(args, args.input, args.out).save_views


def test_saved_views_have_the_documented_shape(views_run):
    n = len(views_run.samples())
    for model in ("fold0", "fold1"):
        for m in views_run.modalities:
            views = np.load(views_run.embeddings_dir / model / f"{m}.views.npy", mmap_mode="r")
            assert views.shape[:2] == (2, n) and views.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(views, axis=-1), 1, atol=1e-4)


def test_reimported_crossfit_run_gives_the_same_multimem(any_views_run, shapes_manifest, tmp_path):
    views_run = any_views_run
    out = tmp_path / "reimported"
    res = cli("import-embeddings", "--manifest", str(shapes_manifest), "--out", str(out),
              "--crossfit", str(views_run.embeddings_dir), "--roles", str(views_run.samples_path))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "open it:" in res.stdout
    run = RunDir(out)
    original, again = views_run.scores(), run.scores()
    assert list(original["id"]) == list(again["id"]) and list(original["role"]) == list(again["role"])
    np.testing.assert_allclose(again["multimem"], original["multimem"], atol=1e-5, rtol=0)
    # everything the metric computes agrees as well; the loss baseline differs only by its temperature
    same = [c for c in original.columns if c not in ("id", "role", "base__loss", "combo__meanrank")]
    np.testing.assert_allclose(again[same].to_numpy(), original[same].to_numpy(), atol=1e-5, rtol=0)
    # a mean of ranks: float noise (1e-7) may swap two near-equal rows, one rank step at most
    np.testing.assert_allclose(again["combo__meanrank"], original["combo__meanrank"], atol=2.5 / len(original))
    assert set(again.columns) == set(original.columns)
    # H rows too (RunDir.scores() drops them): the held-out rule (an H sample against the rest of H) is one
    # function both paths call, so the re-imported consistency of every H sample is the run's own
    held, held_again = (pd.read_parquet(r.path / "scores.parquet").query("role == 'H'").set_index("id")
                        for r in (views_run, run))
    assert list(held.index) == list(held_again.index)
    assert (len(held) > 1) is (views_run.config()["protocol"]["heldout_frac"] == 0.1)
    np.testing.assert_allclose(held_again["cmc_out"], held["cmc_out"], atol=1e-5, rtol=0)
    # a full run directory: diagnostics, embeddings, projection, samples with the manifest's columns
    sim_in, sim_out = run.similarity_matrices()
    np.testing.assert_allclose(sim_in, views_run.similarity_matrices()[0], atol=1e-5)
    assert run.embedding_models() == ["fold0", "fold1"]
    ids, emb = run.embeddings("fold0", "image")
    assert ids == views_run.embeddings("fold0", "image")[0] and emb.dtype == np.float16
    proj = run.projection()
    assert len(proj) == len(run.samples()) and np.isfinite(proj[["x", "y"]].to_numpy()).all()
    cfg = run.config()
    assert cfg["status"] == "complete" and cfg["source"] == "import-embeddings"
    assert cfg["protocol"] == {"name": "crossfit", "folds": 2} and cfg["views"] == 2
    assert "temperature 0.07" in cfg["baselines"]["base__loss"]
    pd.testing.assert_frame_equal(run.samples(), views_run.samples())


def test_paper_layout_and_python_api_agree(views_run, shapes_manifest, tmp_path):
    """fold1 trained on fold0's samples and fold0 did not: as the paper's f and g with the run's H, fold0's
    samples are S_C (f − g) and fold1's S_I (g − f); the import and the array API give the same MultiMem."""
    from multimem_core.metric import multimem_scores

    samples = views_run.samples()
    roles = samples[["id"]].assign(role=samples["role"].map({"fold0": "S_C", "fold1": "S_I", "H": "H"}))
    roles_path = tmp_path / "roles.csv"
    roles.to_csv(roles_path, index=False)
    heldout = tmp_path / "heldout.txt"
    h_ids = samples.loc[samples.role == "H", "id"].astype(str).tolist()
    heldout.write_text("\n".join(h_ids) + "\n")
    emb = views_run.embeddings_dir
    run = import_embeddings(EmbeddingImport(manifest=str(shapes_manifest), out=str(tmp_path / "paper"),
                                            in_model=str(emb / "fold1"), out_model=str(emb / "fold0"),
                                            heldout=str(heldout), roles=str(roles_path), temperature=None,
                                            projection=False))
    again = run.scores().set_index("id")
    assert "base__loss" not in again.columns and "left out" in run.config()["baselines"]["base__loss"]
    assert run.embedding_models() == ["f", "g"] and run.projection() is None

    # the array API (numpy in, numpy out) on the same views: fold0's samples scored f = fold1 vs g = fold0
    mods = views_run.modalities
    ids = (emb / "fold0" / "ids.txt").read_text().split()

    def views(model, rows):
        return np.stack([np.load(emb / model / f"{m}.views.npy")[:, rows] for m in mods], axis=2)

    def heldout_views(model):  # H as the run's reference pass embedded it (--save-views keeps those views apart)
        ref_ids = (emb / model / "heldout.ids.txt").read_text().split()
        pos = [ref_ids.index(i) for i in h_ids]
        return np.stack([np.load(emb / model / f"{m}.heldout.views.npy")[:, pos] for m in mods], axis=2)

    role = samples.set_index("id").loc[ids, "role"].to_numpy()
    s = np.flatnonzero(role == "fold0")
    cols = multimem_scores(views("fold1", s), views("fold0", s), (heldout_views("fold1"), heldout_views("fold0")),
                           modalities=mods, normalize=True)
    assert isinstance(cols["multimem"], np.ndarray)
    np.testing.assert_allclose(cols["multimem"], again.loc[[ids[i] for i in s], "multimem"], atol=1e-5, rtol=0)


# --- small hand-made inputs for every validation case ---------------------------------------------------------

N, D = 30, 8


@pytest.fixture
def manifest(tmp_path) -> Path:
    path = tmp_path / "manifest.csv"
    pd.DataFrame({"id": [f"s{i:02d}" for i in range(N)], "text": [f"caption {i}" for i in range(N)],
                  "image": [f"img/{i}.png" for i in range(N)]}).to_csv(path, index=False)
    return path


def write_model(folder: Path, *, seed: int, modalities=("image", "text"), views: int = 3, ids=None,
                fmt: str = "npy") -> Path:
    rng = np.random.default_rng(seed)
    ids = list(ids or [f"s{i:02d}" for i in range(N)])
    folder.mkdir(parents=True, exist_ok=True)
    for m in modalities:
        x = rng.normal(size=(views, len(ids), D)).astype(np.float32)
        if fmt == "npy":
            np.save(folder / f"{m}.npy", x)
        else:
            pd.DataFrame({"id": ids, "vector": [x[:, i].tolist() for i in range(len(ids))]}).to_parquet(
                folder / f"{m}.parquet")
    if fmt == "npy":
        (folder / "ids.txt").write_text("\n".join(ids) + "\n")
    return folder


@pytest.fixture
def paper(tmp_path, manifest):
    """A valid paper-layout import: f and g over all 30 ids, the last 6 held out."""
    f = write_model(tmp_path / "f", seed=1)
    g = write_model(tmp_path / "g", seed=2)
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("\n".join(f"s{i:02d}" for i in range(24, N)))
    return EmbeddingImport(manifest=str(manifest), out=str(tmp_path / "out" / "run"), in_model=str(f),
                           out_model=str(g), heldout=str(heldout), projection=False)


def refused(cfg: EmbeddingImport, *fragments: str) -> str:
    with pytest.raises(ImportValidationError) as e:
        import_embeddings(cfg)
    message = str(e.value)
    for fragment in fragments:
        assert fragment in message, message
    out = Path(cfg.out)
    # nothing written half: no run, no staging folder left beside it
    assert not out.exists()
    assert not [p for p in out.parent.glob(".*")] if out.parent.exists() else True
    return message


def test_valid_paper_import_from_npy_and_parquet(paper, tmp_path):
    run = import_embeddings(paper)
    scores = run.scores()
    assert len(scores) == 24 and set(scores["role"]) == {"S_C"}
    assert np.isfinite(scores["multimem"]).all()
    assert {"base__cosine", "base__clipmem", "base__loss", "pair__image__text"} <= set(scores.columns)
    from multimem_core.metric import multimem_scores

    def load(model, rows):
        return np.stack([np.load(Path(model) / f"{m}.npy")[:, rows] for m in ("image", "text")], axis=2)

    s, h = np.arange(24), np.arange(24, N)
    api = multimem_scores(load(paper.in_model, s), load(paper.out_model, s),
                          (load(paper.in_model, h), load(paper.out_model, h)), modalities=["image", "text"],
                          normalize=True)
    np.testing.assert_allclose(scores["multimem"], api["multimem"], atol=1e-6)

    # the same embeddings as Parquet (one list of views per cell) score the same
    f = write_model(tmp_path / "pf", seed=1, fmt="parquet")
    g = write_model(tmp_path / "pg", seed=2, fmt="parquet")
    again = import_embeddings(EmbeddingImport(**{**paper.__dict__, "in_model": str(f), "out_model": str(g),
                                                 "out": str(tmp_path / "parquet_run")}))
    np.testing.assert_allclose(again.scores()["multimem"], scores["multimem"], atol=1e-6)


def test_one_view_and_shuffled_rows_are_fine(paper, tmp_path):
    """[N, d] is one view; a modality's rows may come in another order than its neighbour's."""
    f = Path(paper.in_model)
    x = np.load(f / "text.npy")[0]
    order = np.random.default_rng(0).permutation(N)
    np.save(f / "text.npy", x[order])
    (f / "text.ids.txt").write_text("\n".join(f"s{i:02d}" for i in order))
    run = import_embeddings(paper)
    assert len(run.scores()) == 24


def test_ids_differ_between_modality_files(paper):
    f = Path(paper.in_model)
    (f / "text.ids.txt").write_text("\n".join(f"s{i:02d}" for i in range(N - 1)) + "\nstranger\n")
    refused(paper, "image.npy and text.npy differ", "'s29'", "'stranger'")


def test_ids_differ_between_models(paper, tmp_path):
    g = Path(paper.out_model)
    shutil.rmtree(g)
    write_model(g, seed=2, ids=[f"s{i:02d}" for i in range(N - 2)])
    refused(paper, "the models embed different samples", "'s28'", "'s29'", str(Path(paper.in_model)))


def test_rows_and_ids_disagree(paper):
    f = Path(paper.in_model)
    np.save(f / "image.npy", np.random.default_rng(0).normal(size=(3, N + 1, D)).astype(np.float32))
    refused(paper, "image.npy: 31 embeddings but", "ids.txt lists 30 ids")


def test_wrong_shape(paper):
    np.save(Path(paper.in_model) / "image.npy", np.ones((2, 3, N, D), np.float32))
    refused(paper, "image.npy: shape (2, 3, 30, 8)", "[A, N, d]")


def test_nan_vectors_are_named(paper):
    f = Path(paper.in_model)
    x = np.load(f / "text.npy")
    x[1, 4, 2] = np.nan
    x[0, 7] = np.inf
    np.save(f / "text.npy", x)
    refused(paper, "text.npy: 2 embeddings contain NaN or inf", "'s04'", "'s07'")


def test_zero_vectors_are_named(paper):
    f = Path(paper.out_model)
    x = np.load(f / "image.npy")
    x[2, 11] = 0
    np.save(f / "image.npy", x)
    refused(paper, str(f / "image.npy"), "1 embeddings are all zeros", "'s11'")


def test_dimension_differs_between_modalities(paper):
    np.save(Path(paper.in_model) / "text.npy", np.ones((3, N, D + 4), np.float32))
    refused(paper, "image.npy has dimension 8 but text.npy has 12")


def test_fewer_than_two_modalities(paper):
    (Path(paper.out_model) / "text.npy").unlink()
    refused(paper, "embeddings for image; MultiMem needs at least two modalities", str(Path(paper.out_model)))


def test_different_view_counts(paper):
    np.save(Path(paper.in_model) / "text.npy", np.ones((2, N, D), np.float32))
    refused(paper, "different numbers of augmented views", "image.npy: 3", "text.npy: 2")


def test_embedded_ids_missing_from_the_manifest(paper, manifest):
    table = pd.read_csv(manifest)
    table.iloc[:-3].to_csv(manifest, index=False)
    refused(paper, "3 embedded ids are not in the manifest", "'s27'")


def test_heldout_problems(paper, tmp_path):
    Path(paper.heldout).write_text("s25\nnobody\n")
    refused(paper, "held-out ids have no embeddings", "'nobody'")
    refused(EmbeddingImport(**{**paper.__dict__, "heldout": None}), "no held-out samples", "--heldout")


def test_crossfit_roles_are_checked(tmp_path, manifest):
    for k in range(3):
        write_model(tmp_path / "folds" / f"fold{k}", seed=k)
    roles = pd.DataFrame({"id": [f"s{i:02d}" for i in range(N)],
                          "role": ["H"] * 6 + [f"fold{i % 3}" for i in range(N - 6)]})
    roles.iloc[:-2].to_csv(tmp_path / "short.csv", index=False)
    cfg = EmbeddingImport(manifest=str(manifest), out=str(tmp_path / "out" / "run"), crossfit=str(tmp_path / "folds"),
                          roles=str(tmp_path / "short.csv"), projection=False)
    refused(cfg, "no role for 2 embedded ids", "'s28'", "'s29'")
    roles.assign(role=roles["role"].replace({"fold2": "fold7"})).to_csv(tmp_path / "bad.csv", index=False)
    refused(EmbeddingImport(**{**cfg.__dict__, "roles": str(tmp_path / "bad.csv")}), "unknown roles", "'fold7'")
    refused(EmbeddingImport(**{**cfg.__dict__, "roles": None}), "--roles FILE")
    roles.to_csv(tmp_path / "roles.csv", index=False)
    run = import_embeddings(EmbeddingImport(**{**cfg.__dict__, "roles": str(tmp_path / "roles.csv")}))
    assert set(run.scores()["role"]) == {"fold0", "fold1", "fold2"}
    assert run.config()["models"]["fold0"]["trained_on"] == ["fold1", "fold2"]


def test_existing_out_is_kept_unless_overwrite(paper):
    out = Path(paper.out)
    out.mkdir(parents=True)
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(ImportValidationError, match="exists and is not empty"):
        import_embeddings(paper)
    assert (out / "precious.txt").read_text() == "keep me"
    run = import_embeddings(EmbeddingImport(**{**paper.__dict__, "overwrite": True}))
    assert run.is_complete() and not (out / "precious.txt").exists()
    assert [p.name for p in out.parent.iterdir()] == ["run"]


def test_cli_error_is_one_clear_line(paper):
    (Path(paper.out_model) / "text.npy").unlink()
    res = cli("import-embeddings", "--manifest", paper.manifest, "--out", paper.out, "--in-model", paper.in_model,
              "--out-model", paper.out_model, "--heldout", paper.heldout, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.startswith("multimem: error: ") and "at least two modalities" in res.stderr
    assert not Path(paper.out).exists()


# --- scores from a table ---------------------------------------------------------------------------------------

def test_import_scores_validation(tmp_path, manifest):
    def bad(table: pd.DataFrame, *fragments, **kw):
        path = tmp_path / "scores.csv"
        table.to_csv(path, index=False)
        out = tmp_path / "out" / "run"
        with pytest.raises(ImportValidationError) as e:
            import_scores(ScoresImport(manifest=str(manifest), scores=str(path), out=str(out), **kw))
        for fragment in fragments:
            assert fragment in str(e.value), str(e.value)
        assert not out.exists()

    ids = [f"s{i:02d}" for i in range(5)]
    bad(pd.DataFrame({"sample": ids, "multimem": 0.1}), "no `id` column")
    bad(pd.DataFrame({"id": ids + ["s01"], "multimem": 0.1}), "duplicate ids", "'s01'")
    bad(pd.DataFrame({"id": ids + ["zz"], "multimem": 0.1}), "not in the manifest", "'zz'")
    bad(pd.DataFrame({"id": ids, "a": 0.1, "b": 0.2}), "which column is MultiMem", "--multimem-column")
    bad(pd.DataFrame({"id": ids, "multimem": [0.1, np.nan, 0.2, 0.3, 0.4]}), "no finite 'multimem'", "'s01'")


def test_import_scores_run_opens_on_every_page(views_run, shapes_manifest, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app import run_data

    table = views_run.scores()[["id", "multimem", "base__cosine"]].rename(columns={"multimem": "mem"})
    table.to_parquet(tmp_path / "paper_scores.parquet")
    res = cli("import-scores", "--manifest", str(shapes_manifest), "--scores", str(tmp_path / "paper_scores.parquet"),
              "--out", str(tmp_path / "run"), "--multimem-column", "mem")
    assert res.returncode == 0, res.stderr[-3000:]
    run = RunDir(tmp_path / "run")
    scores = run.scores()
    np.testing.assert_allclose(scores.set_index("id").loc[table["id"], "multimem"], table["mem"])
    assert list(scores.columns) == ["id", "role", "multimem", "base__cosine"]
    assert len(run.samples()) == len(pd.read_csv(shapes_manifest))
    assert run.projection() is None and run.similarity_matrices() is None and run.embedding_models() == []

    monkeypatch.setenv(run_data.ENV_RUN, str(run.path))
    for page in ["views/overview.py", "views/samples.py", "views/detail.py", "views/map.py", "views/review_export.py"]:
        at = AppTest.from_file(str(MAIN), default_timeout=120)
        at.run()
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        if page.endswith("map.py"):
            assert any("imported from a score table" in i.value for i in at.info)


def test_parquet_one_vector_per_cell_and_ragged_vectors(paper, tmp_path):
    rng = np.random.default_rng(3)
    ids = [f"s{i:02d}" for i in range(N)]
    for model in ("qf", "qg"):
        folder = tmp_path / model
        folder.mkdir()
        for m in ("image", "text"):
            pd.DataFrame({"id": ids, "emb": list(rng.normal(size=(N, D)).astype(np.float32))}).to_parquet(
                folder / f"{m}.parquet")
    cfg = EmbeddingImport(**{**paper.__dict__, "in_model": str(tmp_path / "qf"), "out_model": str(tmp_path / "qg")})
    assert len(import_embeddings(cfg).scores()) == 24
    ragged = [np.ones(D, np.float32)] * (N - 1) + [np.ones(D + 1, np.float32)]
    pd.DataFrame({"id": ids, "emb": ragged}).to_parquet(tmp_path / "qf" / "text.parquet")
    refused(EmbeddingImport(**{**cfg.__dict__, "out": str(tmp_path / "out2" / "run")}),
            "text.parquet", "lists of different lengths", "'s29'")
