"""The built-in shapes dataset and the shared synthetic writers / misalignment injection."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import soundfile
from PIL import Image

from multimem_core.data import BUILTIN_DATASETS
from multimem_core.data.shapes import (
    COLOURS,
    SHAPES_AUGMENTATION_HINTS,
    _BEEPS,
    _PITCH_HZ,
    build_shapes,
    caption_attributes,
)
from multimem_core.data.synthetic import INJECTED_KINDS, applicable_kinds, inject_misalignments, write_mp4

N, RATE = 60, 0.2  # 12 injected: 3 of each kind


def _read(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    table = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(root / "attributes.csv", dtype=str).set_index("id")
    return table, truth


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    manifest = build_shapes(root, n=N, inject_rate=RATE, seed=3, progress=False)
    assert manifest == root / "manifest.csv"
    return root


def _decode_video(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _blob(rgb: np.ndarray) -> tuple[str, np.ndarray]:
    """Nearest palette colour of the saturated pixels, and their centroid (x, y)."""
    arr = rgb.astype(int)
    sat = arr.max(-1) - arr.min(-1) > 80  # the background is dark grey-ish, the shapes are saturated
    ys, xs = np.nonzero(sat)
    mean = arr[sat].mean(0)
    colour = min(COLOURS, key=lambda c: np.sum((np.array(COLOURS[c]) - mean) ** 2))
    return colour, np.array([xs.mean(), ys.mean()])


def _quadrant(xy: np.ndarray, size: int) -> str:
    return f"{'top' if xy[1] < size / 2 else 'bottom'}-{'left' if xy[0] < size / 2 else 'right'}"


def test_manifest_and_media_decode(built):
    table, truth = _read(built)
    assert list(table.columns) == ["id", "text", "image", "audio", "video", "label", "injected"]
    assert len(table) == N and table["id"].is_unique and set(truth.index) == set(table["id"])
    assert table["image"].iloc[0] == f"image/{table['id'].iloc[0]}.png"
    for path in table["image"]:
        with Image.open(built / path) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    for path in table["audio"]:
        info = soundfile.info(str(built / path))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (16000, 16000, 1, "PCM_16")
    for path in table["video"].unique()[:20]:
        frames = _decode_video(built / path)
        assert frames.shape == (8, 64, 64, 3)
    assert (table["label"] == truth.loc[table["id"], "shape"].to_numpy()).all()


def test_dataset_json_forbids_flips(built):
    meta = json.loads((built / "dataset.json").read_text())
    assert meta["name"] == "shapes" and meta["complete"] is True
    assert meta["allow_hflip"] is False and SHAPES_AUGMENTATION_HINTS["hflip"] is False
    assert meta["injected_kinds"] == list(INJECTED_KINDS)
    assert (meta["n"], meta["seed"], meta["n_injected"]) == (N, 3, round(RATE * N))
    assert BUILTIN_DATASETS["shapes"] is build_shapes


def test_injected_fraction_and_kinds(built):
    table, _ = _read(built)
    counts = table["injected"].value_counts()
    assert counts[""] == N - round(RATE * N)
    assert {k: counts[k] for k in INJECTED_KINDS} == {k: 3 for k in INJECTED_KINDS}


def test_clean_samples_agree_across_modalities(built):
    table, truth = _read(built)
    clean = table[table["injected"] == ""]
    for r in clean.itertuples():
        t = truth.loc[r.id]
        assert caption_attributes(r.text) == t.to_dict(), r.text
        assert (r.image, r.audio, r.video) == (f"image/{r.id}.png", f"audio/{r.id}.wav", f"video/{r.id}.mp4")
    # The pixels say what the attributes say: colour and quadrant in the image, motion in the video.
    for r in clean.head(15).itertuples():
        t = truth.loc[r.id]
        colour, xy = _blob(np.asarray(Image.open(built / r.image).convert("RGB")))
        assert (colour, _quadrant(xy, 64)) == (t.colour, t.position), r.id
        frames = _decode_video(built / r.video)
        (_, first), (_, last) = _blob(frames[0]), _blob(frames[-1])
        dx, dy = last - first
        seen = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        assert seen == t.motion and max(abs(dx), abs(dy)) > 8, (r.id, dx, dy)


def test_audio_encodes_colour_and_shape(built):
    table, truth = _read(built)
    for r in table[table["injected"] == ""].head(15).itertuples():
        t = truth.loc[r.id]
        x, rate = soundfile.read(str(built / r.audio), dtype="float32")
        spectrum = np.abs(np.fft.rfft(x))
        peak = np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()]
        assert abs(12 * np.log2(peak / _PITCH_HZ[t.colour])) < 2.0, (r.id, peak, t.colour)
        loud = np.abs(x).reshape(-1, 160).max(1) > 0.1  # 10 ms frames above the noise floor
        onsets = int(loud[0]) + int(np.sum(loud[1:] & ~loud[:-1]))
        assert onsets == _BEEPS[t["shape"]], (r.id, onsets, t["shape"])


def test_swaps_really_contradict(built):
    table, truth = _read(built)
    own = {"audio": "audio/{}.wav", "video": "video/{}.mp4"}

    def donor(path: str) -> str:
        return Path(path).stem

    for r in table[table["injected"] != ""].itertuples():
        t = truth.loc[r.id]
        assert r.image == f"image/{r.id}.png" and r.label == t["shape"]  # the anchor never moves
        said = caption_attributes(r.text)
        if r.injected == "caption_swap":
            assert said != t.to_dict()
            assert (r.audio, r.video) == (own["audio"].format(r.id), own["video"].format(r.id))
        elif r.injected == "audio_swap":
            assert said == t.to_dict() and donor(r.audio) != r.id
            assert truth.loc[donor(r.audio)].to_dict() != t.to_dict()
        elif r.injected == "video_swap":
            assert said == t.to_dict() and donor(r.video) != r.id
            assert truth.loc[donor(r.video)].to_dict() != t.to_dict()
        else:
            assert r.injected == "all_contradictory"
            keys = [tuple(t), tuple(said.values()), tuple(truth.loc[donor(r.audio)]), tuple(truth.loc[donor(r.video)])]
            assert len(set(keys)) == 4, keys  # sample and three donors: all different from each other


def test_deterministic_under_seed(built, tmp_path):
    again = build_shapes(tmp_path / "a", n=N, inject_rate=RATE, seed=3, progress=False).parent
    for name in ("manifest.csv", "attributes.csv"):
        assert (again / name).read_bytes() == (built / name).read_bytes()
    for sub, ext in (("image", "png"), ("audio", "wav"), ("video", "mp4")):
        for i in (0, 7, N - 1):
            assert (again / sub / f"s{i:06d}.{ext}").read_bytes() == (built / sub / f"s{i:06d}.{ext}").read_bytes()
    other = build_shapes(tmp_path / "b", n=N, inject_rate=RATE, seed=4, progress=False).parent
    assert (other / "manifest.csv").read_bytes() != (built / "manifest.csv").read_bytes()


def test_sample_does_not_depend_on_n_workers_or_modalities(built, tmp_path):
    small = build_shapes(tmp_path / "s", n=6, seed=3, inject_rate=0.0, modalities=("image", "text"),
                         workers=2, progress=False).parent
    table, _ = _read(small)
    full, _ = _read(built)
    assert list(table.columns) == ["id", "text", "image", "label", "injected"]
    assert not (small / "audio").exists() and not (small / "video").exists()
    for i in range(6):
        assert (small / f"image/s{i:06d}.png").read_bytes() == (built / f"image/s{i:06d}.png").read_bytes()
    clean_full = full.set_index("id")
    for r in table.itertuples():
        if clean_full.loc[r.id, "injected"] == "":
            assert r.text == clean_full.loc[r.id, "text"]


def test_rebuild_in_place_and_refuse_foreign_folder(tmp_path):
    build_shapes(tmp_path / "d", n=12, seed=0, modalities=("image", "text"), progress=False)
    build_shapes(tmp_path / "d", n=4, seed=0, modalities=("image", "text"), progress=False)
    assert len(list((tmp_path / "d" / "image").iterdir())) == 4  # no stale files from the bigger build
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        build_shapes(tmp_path / "e", n=4, progress=False)


# ---------------------------------------------------------------- inject_misalignments, generic


def _toy(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame({
        "id": [f"x{i}" for i in range(n)],
        "image": [f"i{i}" for i in range(n)],
        "text": [f"t{i}" for i in range(n)],
        "video": [f"v{i}" for i in range(n)],
        "label": [i % 5 for i in range(n)],
        "attr": [f"a{i % 8}" for i in range(n)],
    })


def test_inject_generic_rules():
    table = _toy()
    out = inject_misalignments(table, rate=0.25, kinds=INJECTED_KINDS, modalities=("image", "text", "video"),
                               attribute_key="attr", rng=0)
    assert "injected" not in table.columns  # the input is not modified
    assert (out["injected"] != "").sum() == 10
    assert set(out["injected"]) == {"", "caption_swap", "video_swap", "all_contradictory"}  # no audio column
    assert (out["image"] == table["image"]).all() and (out["label"] == table["label"]).all()
    attr = dict(zip(table["text"], table["attr"])) | dict(zip(table["video"], table["attr"]))
    for i, r in out.iterrows():
        own = table.loc[i, "attr"]
        if r.injected == "caption_swap":
            assert attr[r.text] != own and r.video == table.loc[i, "video"]
        if r.injected == "all_contradictory":
            assert len({own, attr[r.text], attr[r.video]}) == 3
    again = inject_misalignments(table, rate=0.25, modalities=("image", "text", "video"), attribute_key="attr", rng=0)
    pd.testing.assert_frame_equal(out, again)


def test_inject_edge_cases():
    table = _toy(10)
    assert applicable_kinds(INJECTED_KINDS, ("image", "text")) == ["caption_swap"]
    assert applicable_kinds(("dark_video", "caption_swap"), ("image", "text", "video")) == ["dark_video", "caption_swap"]
    none = inject_misalignments(table, rate=0.0, modalities=("image", "text"), attribute_key="attr", rng=0)
    assert (none["injected"] == "").all()
    dark = inject_misalignments(table, rate=0.5, kinds=("dark_video",), modalities=("image", "text", "video"),
                                attribute_key="attr", rng=0)
    assert (dark["injected"] == "dark_video").sum() == 5 and (dark["video"] == table["video"]).all()
    with pytest.raises(ValueError, match="unknown injected kind"):
        inject_misalignments(table, rate=0.5, kinds=("caption_swapp",), modalities=("image", "text"), attribute_key="attr", rng=0)
    same = table.assign(attr="one")
    with pytest.raises(ValueError, match="distinct attribute"):
        inject_misalignments(same, rate=0.5, modalities=("image", "text"), attribute_key="attr", rng=0)
    with pytest.raises(ValueError, match="attribute_key"):
        inject_misalignments(table, rate=0.5, modalities=("image", "text"), attribute_key="nope", rng=0)


def test_write_mp4_needs_even_size(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_mp4(tmp_path / "odd.mp4", np.zeros((2, 63, 64, 3), np.uint8))
