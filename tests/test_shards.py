"""WebDataset shards: index, streamed decode, references, export. Everything is built in tmp folders from
the shapes world; the scores on shards are compared with the scores on the same samples as a manifest."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from multimem_core.data.decode import decode_manifest
from multimem_core.config import ColumnKeys
from multimem_core.data.manifest import ManifestError, read_manifest
from multimem_core.config import MediaSpec
from multimem_core.data.shard_members import read_member
from multimem_core.data.shard_writer import write_shards
from multimem_core.data.shards import (ShardMemberError, decode_shards, is_member_ref, read_shards, shard_paths,
                                       split_ref)
from tests.conftest import tiny_score_config

SPEC = MediaSpec(image_size=16, audio_sample_rate=8000, audio_seconds=0.25, video_frames=2, video_size=16)
MODS = ["image", "text", "audio", "video"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """120 shapes samples as a manifest and the same samples as 3 shards (50, 50, 20)."""
    from multimem_core.data.shapes import build_shapes

    tmp = tmp_path_factory.mktemp("shards")
    manifest = read_manifest(build_shapes(tmp / "data", n=120, image_size=32, progress=False))
    shards = write_shards(manifest.table, manifest.root, tmp / "shards", shard_size=50)
    return manifest, tmp / "shards", shards


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# ------------------------------------------------------------------------------------------------- index


def test_index_matches_the_manifest(dataset):
    manifest, folder, paths = dataset
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    s = read_shards(folder)
    assert s.format == "webdataset" and s.root == folder.resolve() and s.modalities == MODS
    assert s.shards == [p.resolve() for p in paths]
    m = manifest.table
    assert s.table["id"].tolist() == m["id"].tolist()  # key order = shard order = written order
    assert s.table["row"].tolist() == list(range(120))
    for col in ("text", "label", "injected"):
        assert s.table[col].tolist() == m[col].tolist(), col
    assert (m["injected"] != "").any()  # the injected kinds travel in key.json
    first = s.table.iloc[0]
    assert first["image"] == f"shard-000000.tar#{first['id']}.png"
    assert s.table.iloc[119]["audio"] == f"shard-000002.tar#{m.iloc[119]['id']}.wav"
    # media behind the references are the original files, byte for byte
    for i in (0, 57, 119):
        for mod in ("image", "audio", "video"):
            assert read_member(s.root, s.table.iloc[i][mod]) == (manifest.root / m.iloc[i][mod]).read_bytes()


def test_folder_single_tar_list_and_brace_pattern(dataset):
    _, folder, paths = dataset
    whole = read_shards(folder)
    brace = read_shards(str(folder / "shard-{000000..000002}.tar"))
    listed = read_shards([str(p) for p in paths])
    for other in (brace, listed):
        assert other.table.equals(whole.table) and other.sha256 == whole.sha256
    one = read_shards(paths[2])
    assert one.table["id"].tolist() == whole.table["id"].tolist()[100:]
    assert one.table["image"].iloc[0].startswith("shard-000002.tar#")
    assert shard_paths(folder) == sorted(paths)


def test_keys_and_modalities(dataset):
    _, folder, _ = dataset
    two = read_shards(folder, modalities=["image", "text"])
    assert two.modalities == ["image", "text"] and "audio" not in two.table
    png_only = read_shards(folder, keys=ColumnKeys(image="png"), modalities=["image", "audio"])
    assert png_only.source_columns["image"] == "png"
    with pytest.raises(ManifestError, match="no sample has a .jpg member for image"):
        read_shards(folder, keys=ColumnKeys(image="jpg"), modalities=["image", "text"])


def test_whole_dataset_errors_name_the_shard(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no .tar shards"):
        read_shards(tmp_path / "empty")
    one_mod = _tar(tmp_path / "one.tar", {"x.txt": b"hello", "y.txt": b"world"})
    with pytest.raises(ManifestError, match="at least two modalities.*found text"):
        read_shards(one_mod)
    d = tmp_path / "dup"
    d.mkdir()
    _tar(d / "a.tar", {"k1.txt": b"one", "k1.png": b"x", "k2.txt": b"two", "k2.png": b"x"})
    _tar(d / "b.tar", {"k2.txt": b"again", "k2.png": b"x"})
    with pytest.raises(ManifestError, match=r"duplicate sample keys: 'k2' in a.tar, b.tar"):
        read_shards(d)
    bad = tmp_path / "bad"
    bad.mkdir()
    _tar(bad / "a.tar", {"k1.txt": b"one", "k1.png": b"x"})
    (bad / "b.tar").write_bytes(b"this is not a tar file at all" * 40)
    with pytest.raises(ManifestError, match=r"b\.tar: cannot read the shard"):
        read_shards(bad)
    with pytest.raises(ManifestError, match="no such shard"):
        read_shards(tmp_path / "missing.tar")
    scattered = tmp_path / "scattered.tar"
    _tar(scattered, {"k1.txt": b"one", "k2.png": b"x", "k1.png": b"x"})  # k1's members not consecutive
    with pytest.raises(ManifestError, match="repeats"):
        read_shards([d / "a.tar", scattered])


# ------------------------------------------------------------------------------------------------ decode


def test_decode_equals_manifest_decode_and_uses_the_cache(dataset, tmp_path):
    manifest, folder, _ = dataset
    a = decode_manifest(manifest, MODS, SPEC, tmp_path / "m", progress=False)
    b = decode_shards(read_shards(folder), MODS, SPEC, tmp_path / "s", progress=False)
    assert a.ids == b.ids and len(b.ids) == 120 and b.errors.empty
    assert b.arrays["text"] == a.arrays["text"]
    for mod in ("image", "audio", "video"):
        np.testing.assert_array_equal(b.arrays[mod], a.arrays[mod])
    again = decode_shards(read_shards(folder), MODS, SPEC, tmp_path / "s", progress=False)
    assert again.cache_hit and again.ids == b.ids


def test_corrupt_member_is_recorded_and_skipped(dataset, tmp_path):
    manifest, _, _ = dataset
    src = manifest.root
    m = manifest.table.head(6)
    members: dict[str, bytes] = {}
    for _, r in m.iterrows():
        k = r["id"]
        members[f"{k}.png"] = (src / r["image"]).read_bytes()
        members[f"{k}.txt"] = r["text"].encode()
        members[f"{k}.wav"] = (src / r["audio"]).read_bytes()
    ids = m["id"].tolist()
    members[f"{ids[1]}.png"] = b"\x89PNG\r\n\x1a\n garbage"  # corrupt image
    members[f"{ids[3]}.wav"] = members[f"{ids[3]}.wav"][:30]  # truncated audio
    del members[f"{ids[4]}.png"]  # no image at all
    folder = tmp_path / "corrupt"
    folder.mkdir()
    _tar(folder / "a.tar", members)
    s = read_shards(folder)
    assert s.table.loc[4, "image"] == ""
    d = decode_shards(s, ["image", "text", "audio"], SPEC, tmp_path / "cache", progress=False)
    assert d.ids == [ids[0], ids[2], ids[5]]  # shard order kept
    assert d.rows.tolist() == [0, 2, 5]
    assert len(d.arrays["image"]) == len(d.arrays["audio"]) == len(d.arrays["text"]) == 3
    errs = d.errors.set_index("id")
    assert errs.loc[ids[1], "modality"] == "image" and errs.loc[ids[1], "path"] == f"a.tar#{ids[1]}.png"
    assert errs.loc[ids[3], "modality"] == "audio" and errs.loc[ids[3], "path"] == f"a.tar#{ids[3]}.wav"
    assert errs.loc[ids[4], "reason"] == "no image member"
    assert set(d.errors["id"]) == {ids[1], ids[3], ids[4]}


# --------------------------------------------------------------------------------------- read_member


def test_read_member_refs_and_refusals(dataset, tmp_path):
    _, folder, _ = dataset
    s = read_shards(folder)
    ref = s.table.loc[3, "image"]
    assert is_member_ref(ref) and not is_member_ref("image/s000001.png")
    assert split_ref("sub/a.tar#k.png") == ("sub/a.tar", "k.png")
    assert read_member(folder, ref)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ShardMemberError, match="no member"):
        read_member(folder, "shard-000000.tar#nope.png")
    with pytest.raises(ShardMemberError, match="no shard"):
        read_member(folder, "shard-000009.tar#x.png")
    escaping = os.path.relpath(folder / ref, tmp_path)  # "../../…/shard-000000.tar#s000003.png"
    assert escaping.startswith("..")
    with pytest.raises(ShardMemberError, match="outside the dataset folder"):
        read_member(tmp_path, escaping)
    with pytest.raises(ShardMemberError, match="larger than"):
        read_member(folder, ref, max_bytes=10)
    with pytest.raises(ShardMemberError, match="not a shard reference"):
        read_member(folder, "image/s000001.png")


# ------------------------------------------------------------------------------------------------- write


def test_write_shards_refuses_bad_keys_and_old_shards(dataset, tmp_path):
    manifest, folder, _ = dataset
    with pytest.raises(ValueError, match="already holds .tar shards"):
        write_shards(manifest.table, manifest.root, folder)
    dotted = manifest.table.head(2).assign(id=["a.b", "c"])
    with pytest.raises(ValueError, match=r"id 'a.b' \(row 0\) cannot be a WebDataset key"):
        write_shards(dotted, manifest.root, tmp_path / "x")


def test_rewriting_shards_copies_every_member(dataset, tmp_path):
    """A sample from shards is copied whole, also members this package does not read."""
    _, folder, _ = dataset
    src = tmp_path / "src"
    src.mkdir()
    _tar(src / "a.tar", {"k1.png": read_member(folder, read_shards(folder).table.loc[0, "image"]),
                         "k1.txt": b"a caption", "k1.extra.json": b'{"url": "http://x"}', "k1.cls": b"3",
                         "k2.png": b"bytes", "k2.txt": b"another"})
    s = read_shards(src)
    assert s.table["label"].tolist() == ["3", ""]
    out = write_shards(s.table, s.root, tmp_path / "out")
    with tarfile.open(out[0]) as tar:
        got = {i.name: tar.extractfile(i).read() for i in tar}
    with tarfile.open(src / "a.tar") as tar:
        want = {i.name: tar.extractfile(i).read() for i in tar}
    assert got == want


# --------------------------------------------------------------------------------- scores and export


def test_scores_on_shards_equal_scores_on_the_manifest(dataset, tmp_path):
    from multimem_core.export import build_export, default_format, write_export
    from multimem_core.review import DropRule
    from multimem_core.score import score_run

    manifest, folder, _ = dataset
    runs = {}
    for name, source in (("manifest", manifest.path), ("shards", folder)):
        cfg = tiny_score_config(source, tmp_path / name, modalities=["image", "text", "audio"], epochs=1,
                                views=1, projection=False)
        runs[name] = score_run(cfg)
    a, b = runs["manifest"].scores(), runs["shards"].scores()
    assert a["id"].tolist() == b["id"].tolist() and len(a) > 0
    np.testing.assert_allclose(b["multimem"].to_numpy(), a["multimem"].to_numpy(), atol=1e-6, rtol=0)
    assert runs["shards"].config()["manifest"]["format"] == "webdataset"

    # export: shards in, shards out; the dropped samples are gone, the rest copied byte for byte
    run = runs["shards"]
    assert default_format(run) == "shards" and default_format(run, "clean.csv") == "csv"
    drop = a["id"].tolist()[:3]
    export = build_export(run, DropRule("ids", ids=tuple(drop)))
    out = write_export(export, tmp_path / "clean")
    cleaned = read_shards(out)
    kept = [i for i in manifest.table["id"] if i not in drop]
    assert cleaned.table["id"].tolist() == kept and export.kept == len(kept)
    ref = cleaned.table.set_index("id").loc[kept[0], "video"]
    assert read_member(out, ref) == (manifest.root / manifest.table.set_index("id").loc[kept[0], "video"]).read_bytes()

    # a manifest run exports to shards too (media read from its files)
    manifest_export = build_export(runs["manifest"], DropRule("ids", ids=tuple(drop)), format="shards")
    from_manifest = read_shards(write_export(manifest_export, tmp_path / "clean_from_manifest"))
    same = ["id", "row", "image", "text", "audio", "label", "injected"]  # the manifest run read no video
    assert from_manifest.table[same].equals(cleaned.table[same])
