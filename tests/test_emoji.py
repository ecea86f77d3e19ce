"""The built-in emoji dataset: shipped assets, a small real build, decodable media, injections, seeds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import soundfile
from PIL import Image

from multimem_core.data.emoji import (
    EMOJI_KINDS,
    MOTIONS,
    build_emoji,
    load_emoji_assets,
    motion_frames,
)
from multimem_core.data.speech import spoken_name

LIMIT = 40


def _frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("emoji") / "ds"
    start = time.perf_counter()
    # 0.25 of 40 = 10 injected: two of each of the five kinds (round-robin).
    manifest = build_emoji(out, limit=LIMIT, inject_rate=0.25, seed=0, progress=False)
    return manifest, time.perf_counter() - start


def test_assets_load():
    a = load_emoji_assets()
    assert len(a.table) == a.meta["count"] == len(a.sprites) >= 1500
    assert a.sprites.shape[1:] == (64, 64, 3) and a.sprites.dtype == np.uint8
    assert set(a.table["group"]) == {"Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink",
                                     "Travel & Places", "Activities", "Objects", "Symbols"}
    assert (a.table["name"].str.len() > 0).all() and (a.table["keywords"].str.len() > 0).all()
    assert not a.table["name"].duplicated().any()
    cps = a.table["codepoints"].str.split()
    assert not cps.apply(lambda c: any(x in {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"} for x in c)).any()
    grinning = a.table.index[a.table["codepoints"] == "1F600"][0]
    assert a.table.at[grinning, "name"] == "grinning face"
    # Every tile holds a picture: plenty of pixels differ from the background, and tiles differ.
    differs = (np.abs(a.sprites.astype(int) - np.array(a.background)).sum(-1) > 30).mean(axis=(1, 2))
    assert differs.min() > 0.01, f"empty tile at sprite {differs.argmin()}"
    assert len({t.tobytes() for t in a.sprites[:200]}) == 200
    assert (a.path / "LICENSES.md").read_text().count("Open Font License") >= 1
    assert sum(f.stat().st_size for f in a.path.iterdir()) < 12e6


def test_build_is_quick_and_complete(built):
    manifest, seconds = built
    assert seconds < 60, f"a {LIMIT}-sample build took {seconds:.1f} s"
    t = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    assert list(t.columns) == ["id", "text", "image", "audio", "video", "label", "injected"]
    assert len(t) == LIMIT and t["id"].is_unique
    assert t["label"].nunique() == 8  # evenly spread rows reach every group
    info = json.loads((manifest.parent / "dataset.json").read_text())
    assert info["name"] == "emoji" and info["complete"] and info["allow_hflip"] is False
    assert (manifest.parent / "LICENSES.md").exists()


def test_media_decode(built):
    manifest, _ = built
    root = manifest.parent
    t = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    for r in t.itertuples():
        with Image.open(root / r.image) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
        wav, rate = soundfile.read(root / r.audio, dtype="float32")
        assert rate == 16000 and wav.ndim == 1 and 0.2 < len(wav) / rate <= 2.0
        # Speech, not silence: loud and with many voiced 20 ms windows.
        frames = wav[: len(wav) // 320 * 320].reshape(-1, 320)
        assert np.abs(wav).max() > 0.5 and (np.sqrt((frames**2).mean(1)) > 0.02).mean() > 0.3, r.audio
        clip = _frames(root / r.video)
        assert clip.shape == (8, 64, 64, 3)


def test_captions_name_the_motion(built):
    manifest, _ = built
    root = manifest.parent
    t = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    truth = pd.read_csv(root / "attributes.csv", dtype=str, keep_default_na=False).set_index("id")
    clean = t[t["injected"] == ""]
    for r in clean.itertuples():
        a = truth.loc[r.id]
        assert r.text.startswith(f"{a['name']}, {a['motion']}"), r.text
    # A clip moving left moves left: the emoji's centre of mass goes down in x.
    left = clean[truth.loc[clean["id"], "motion"].to_numpy() == "moving left"]
    a = load_emoji_assets()
    for r in left.itertuples():
        clip = _frames(root / r.video).astype(int)
        mask = np.abs(clip - np.array(a.background)).sum(-1) > 40
        xs = [np.nonzero(m)[1].mean() for m in mask]
        assert xs[0] - xs[-1] > 20, (r.id, xs)


def test_image_is_the_clips_key_frame(built):
    """With video, the image is the clip's last frame (where the motion ends), so it shows the motion too:
    closer to its own clip's last frame than to any other sample's, and off-centre when moving."""
    manifest, _ = built
    root = manifest.parent
    t = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    clean = t[t["injected"] == ""].reset_index(drop=True)
    images = np.stack([np.asarray(Image.open(root / p).convert("RGB"), dtype=np.float32) for p in clean["image"]])
    last = np.stack([_frames(root / v)[-1].astype(np.float32) for v in clean["video"]])
    dist = np.abs(images[:, None] - last[None]).mean(axis=(2, 3, 4))  # [image, clip]
    assert (dist.argmin(axis=1) == np.arange(len(clean))).all()
    assert np.diag(dist).max() < 6, np.diag(dist)  # H.264's loss only
    truth = pd.read_csv(root / "attributes.csv", dtype=str, keep_default_na=False).set_index("id")
    bg = np.array(load_emoji_assets().background)
    for r, im in zip(clean.itertuples(), images):
        motion = truth.at[r.id, "motion"]
        if motion in ("moving left", "moving right"):
            x = np.nonzero(np.abs(im - bg).sum(-1) > 40)[1].mean()
            assert (x < 24) if motion == "moving left" else (x > 40), (r.id, motion, x)


def test_injected_kinds_recorded(built):
    manifest, _ = built
    root = manifest.parent
    t = pd.read_csv(manifest, dtype=str, keep_default_na=False).set_index("id")
    counts = t["injected"].value_counts()
    assert {k: counts.get(k, 0) for k in EMOJI_KINDS} == {k: 2 for k in EMOJI_KINDS}
    own = {m: t.index.map(lambda i, m=m, e=e: f"{m}/{i}.{e}") for m, e in
           (("image", "png"), ("audio", "wav"), ("video", "mp4"))}
    truth = pd.read_csv(root / "attributes.csv", dtype=str, keep_default_na=False).set_index("id")
    for sid, r in t.iterrows():
        kind = r["injected"]
        swapped = {m for m in own if r[m] != own[m][t.index.get_loc(sid)]}
        caption_own = r["text"].startswith(truth.at[sid, "name"] + ",")
        assert "image" not in swapped  # the anchor is never replaced
        expected = {"": set(), "caption_swap": set(), "audio_swap": {"audio"}, "video_swap": {"video"},
                    "all_contradictory": {"audio", "video"}, "dark_video": {"video"}}[kind]
        assert swapped == expected, (sid, kind, swapped)
        assert caption_own == (kind not in ("caption_swap", "all_contradictory")), (sid, kind, r["text"])
        if kind == "dark_video":
            clip = _frames(root / r["video"])
            assert clip.mean() < 15 and r["video"].endswith("_dark.mp4")


def test_same_seed_same_files_other_seed_differs(built, tmp_path):
    manifest, _ = built
    again = build_emoji(tmp_path / "again", limit=LIMIT, inject_rate=0.25, seed=0, progress=False)
    assert again.read_bytes() == manifest.read_bytes()
    for rel in ("image/emoji-0000.png", "audio/emoji-0000.wav"):
        assert (again.parent / rel).read_bytes() == (manifest.parent / rel).read_bytes()
    assert np.array_equal(_frames(again.parent / "video/emoji-0000.mp4"), _frames(manifest.parent / "video/emoji-0000.mp4"))
    other = build_emoji(tmp_path / "other", limit=LIMIT, inject_rate=0.25, seed=1, progress=False)
    assert other.read_bytes() != manifest.read_bytes()


def test_a_build_on_worker_processes_writes_the_same_bytes_as_one_process(tmp_path):
    from multimem_core.data.emoji import ROWS_PER_TASK

    n = 2 * ROWS_PER_TASK + 5  # enough rows for the pool, and a last task that is not full

    def files(root: Path) -> dict[str, bytes]:
        return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*"))
                if f.is_file() and f.name != "dataset.json"}  # dataset.json holds the build's seconds

    one = build_emoji(tmp_path / "one", limit=n, inject_rate=0.25, seed=3, progress=False, workers=1).parent
    two = build_emoji(tmp_path / "two", limit=n, inject_rate=0.25, seed=3, progress=False, workers=2).parent
    a, b = files(one), files(two)
    assert len(a) > 3 * n and a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_rebuild_reuses_work(built, tmp_path):
    out = tmp_path / "ds"
    build_emoji(out, limit=8, inject_rate=0.0, progress=False)
    wav = out / "audio/emoji-0000.wav"
    stamp = wav.stat().st_mtime_ns
    start = time.perf_counter()
    build_emoji(out, limit=8, inject_rate=0.0, progress=False)
    assert time.perf_counter() - start < 1.0
    assert wav.stat().st_mtime_ns == stamp
    # Another seed draws other motions; the audio says the motion, so exactly the clips whose motion
    # changed are spoken again.
    before = pd.read_csv(out / "attributes.csv").set_index("id")["motion"]
    stamps = {i: (out / f"audio/{i}.wav").stat().st_mtime_ns for i in before.index}
    build_emoji(out, limit=8, inject_rate=0.0, seed=5, progress=False)
    after = pd.read_csv(out / "attributes.csv").set_index("id")["motion"]
    redone = {i for i in before.index if (out / f"audio/{i}.wav").stat().st_mtime_ns != stamps[i]}
    assert redone == set(before.index[before != after]) and 0 < len(redone) < len(before)
    with pytest.raises(FileExistsError):
        (tmp_path / "foreign").mkdir()
        (tmp_path / "foreign" / "x.txt").write_text("not ours")
        build_emoji(tmp_path / "foreign", limit=4, progress=False)


def test_two_modalities_and_bad_options(tmp_path):
    m = build_emoji(tmp_path / "it", limit=6, modalities=("image", "text"), inject_rate=0.5, progress=False)
    t = pd.read_csv(m, dtype=str, keep_default_na=False)
    assert list(t.columns) == ["id", "text", "image", "label", "injected"]
    assert set(t["injected"]) <= {"", "caption_swap"}
    assert not (tmp_path / "it" / "video").exists() and "moving" not in " ".join(t["text"])
    with pytest.raises(ValueError, match="even"):
        build_emoji(tmp_path / "odd", limit=4, image_size=33, progress=False)
    with pytest.raises(ValueError, match="at least two"):
        build_emoji(tmp_path / "one", limit=4, modalities=("image", "smell"), progress=False)


@pytest.mark.parametrize("motion", MOTIONS)
def test_motion_frames_stay_in_frame(motion):
    a = load_emoji_assets()
    clip = motion_frames(a.sprites[0], motion, size=64, frames=8, background=a.background)
    assert clip.shape == (8, 64, 64, 3)
    fg = (np.abs(clip.astype(int) - np.array(a.background)).sum(-1) > 40).sum(axis=(1, 2))
    assert (fg > 50).all()  # the emoji is visible in every frame
    if motion in ("growing", "shrinking"):
        assert (fg[-1] > fg[0]) == (motion == "growing")


def test_long_names_fit():
    x = spoken_name("woman in motorized wheelchair facing right, with extra words to make it long",
                    voice="en-us", rate=16000, max_seconds=1.0)
    assert 0.5 * 16000 < len(x) <= 16000 and np.abs(x).max() > 0.5
