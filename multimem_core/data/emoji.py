"""The built-in `emoji` dataset: real pictures, real words, real speech, and motion.

Each sample is one of the 1,601 emoji shipped in ``assets/emoji`` (Noto Color Emoji pictures, CLDR
English names and keywords, see ``scripts/build_emoji_assets.py`` and ``assets/emoji/LICENSES.md``):

- image: the clip's key frame (PNG, ``image_size`` px, on a light grey background): its last frame, where
         the motion ends, as a video dataset takes a still from each clip; the emoji itself without video.
         Image and text then agree on the motion as video and text do; an emoji alone would only match
         its name, which a tower trained from scratch on a few hundred emoji cannot learn for unseen ones.
- video: the emoji in motion (moving left/right/up/down, growing, shrinking, spinning), H.264 MP4
- text:  the name, the motion and a few CLDR keywords: "grinning face, moving left (face, grin)".
         Video and text agree on the motion as well as on the identity; that is why ``allow_hflip``,
         ``allow_vflip`` and ``allow_rotate`` are false in ``dataset.json`` (a mirrored clip moving
         left would contradict its caption).
- audio: the caption's name and motion spoken by espeak-ng ("grinning face, moving left"), 16-bit WAV,
         at most ``audio_seconds`` long (long names are spoken faster rather than cut off)
- label: the emoji's group ("Smileys & Emotion", "Animals & Nature", ...: 8 classes)

A fraction ``inject_rate`` of the samples carries a known misalignment (``synthetic.inject_misalignments``:
caption, audio or video swapped with a sample of another subgroup, all of them contradictory, or the
emoji's own ``dark_video``: near-black frames under an unchanged caption); the kind is in ``injected``.

    build_emoji("data/emoji")  ->  data/emoji/manifest.csv  (+ image/ audio/ video/ attributes.csv dataset.json LICENSES.md)
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from multimem_core.data.speech import speech_key, spoken_name
from multimem_core.names import MODALITIES
from multimem_core.data.synthetic import (
    INJECTED_KINDS,
    applicable_kinds,
    build_samples,
    inject_misalignments,
    write_mp4,
    write_png,
    write_wav,
)

__all__ = [
    "ASSETS_DIR",
    "EMOJI_KINDS",
    "MOTIONS",
    "EmojiAssets",
    "build_emoji",
    "load_emoji_assets",
    "motion_frames",
    "spoken_name",
]

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets" / "emoji"
MOTIONS = ("moving left", "moving right", "moving up", "moving down", "growing", "shrinking", "spinning")
# One speaker: a word then sounds alike in every clip, so a small audio tower trained on ~1,000 clips can
# learn words that carry over to clips it never heard. With six voices and the name alone, nothing did:
# every audio pair scored AUROC ~0.5 in the demo, audio swaps included. More voices are one entry away.
VOICES = ("en-us",)
EMOJI_KINDS = tuple(INJECTED_KINDS) + ("dark_video",)
COLUMN_ORDER = ("text", "image", "audio", "video")  # manifest columns, as shapes writes them
VOICE_SEED = 20260  # fixes which voice speaks which emoji, independently of the build's seed
# Build processes: rows are independent, and one core spent ~19 s on the demo's 1,000 (espeak, MP4)
BUILD_WORKERS = 2
ROWS_PER_TASK = 32


@dataclass(frozen=True)
class EmojiAssets:
    table: pd.DataFrame  # sprite, emoji, codepoints, name, keywords, group, subgroup, version
    sprites: np.ndarray  # uint8 [N, tile, tile, 3], row i = table.sprite == i
    background: tuple[int, int, int]
    meta: dict
    path: Path


@lru_cache(maxsize=2)
def _load_assets(path: Path) -> EmojiAssets:
    try:
        meta = json.loads((path / "emoji.json").read_text(encoding="utf-8"))
        table = pd.read_csv(path / "emoji.csv", dtype=str, keep_default_na=False)
        sheet = np.asarray(Image.open(path / "sprites.png").convert("RGB"))
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"emoji assets missing: {err.filename}. They ship in the repository's assets/emoji; "
            f"rebuild them with `python scripts/build_emoji_assets.py` (needs apt-get, as root)"
        ) from err
    tile, columns, count = meta["tile"], meta["columns"], meta["count"]
    if len(table) != count:
        raise ValueError(f"{path / 'emoji.csv'} has {len(table)} rows but emoji.json says {count}; rebuild the assets")
    rows = sheet.shape[0] // tile
    tiles = sheet.reshape(rows, tile, columns, tile, 3).transpose(0, 2, 1, 3, 4).reshape(-1, tile, tile, 3)
    table["sprite"] = table["sprite"].astype(int)
    return EmojiAssets(table, tiles[:count].copy(), tuple(meta["background"]), meta, path)


def load_emoji_assets(assets_dir: str | Path | None = None) -> EmojiAssets:
    """The shipped emoji table and sprite tiles (cached per process)."""
    return _load_assets(Path(assets_dir or ASSETS_DIR).resolve())


def motion_frames(
    tile: np.ndarray, motion: str, *, size: int, frames: int, background: Sequence[int]
) -> np.ndarray:
    """The emoji `tile` (uint8 [h, w, 3] on `background`) performing `motion`: uint8 [frames, size, size, 3]."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose from {MOTIONS}")
    src = Image.fromarray(tile)
    bg = tuple(int(c) for c in background)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        p = t / (frames - 1) if frames > 1 else 0.0
        scale, cx, cy, angle = 0.5, 0.5, 0.5, 0.0
        if motion.startswith("moving"):
            # Travel half the frame, staying inside it, so the whole emoji is visible in every frame.
            d = 0.25 - 0.5 * p
            cx += {"moving left": d, "moving right": -d}.get(motion, 0.0)
            cy += {"moving up": d, "moving down": -d}.get(motion, 0.0)
        elif motion in ("growing", "shrinking"):
            scale = 0.3 + 0.65 * (p if motion == "growing" else 1 - p)
        else:  # spinning: one clockwise turn over the clip, first and last frame not repeated
            scale, angle = 0.7, -360.0 * t / frames
        side = max(2, round(scale * size))
        im = src.resize((side, side), Image.Resampling.LANCZOS)
        if angle:
            im = im.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=bg)
        canvas = Image.new("RGB", (size, size), bg)
        canvas.paste(im, (round(cx * size - im.width / 2), round(cy * size - im.height / 2)))
        out[t] = np.asarray(canvas)
    return out


def dark_frames(*, size: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Near-black frames (a faint noise floor, as from a camera with the lens cap on)."""
    return rng.integers(0, 12, size=(frames, size, size, 3), dtype=np.uint8)


def _caption(name: str, keywords: str, motion: str | None, rng: np.random.Generator) -> str:
    """'grinning face, moving left (face, grin)': name, motion (when there is video), two CLDR keywords."""
    extra = [k.strip() for k in keywords.split("|") if k.strip() and k.strip() != name]
    picked = [extra[i] for i in sorted(rng.permutation(len(extra))[:2])] if extra else []
    text = name if motion is None else f"{name}, {motion}"
    return f"{text} ({', '.join(picked)})" if picked else text


def _pick_rows(n_total: int, limit: int | None) -> np.ndarray:
    """Evenly spaced rows, so a small build still covers every group (the table is in group order)."""
    if limit is None or limit >= n_total:
        return np.arange(n_total)
    if limit < 2:
        raise ValueError(f"limit must be at least 2, got {limit}")
    return np.unique(np.linspace(0, n_total - 1, limit).round().astype(int))


def _previous_build(out: Path) -> dict | None:
    """The dataset.json of an emoji build in `out`; None for a new or empty folder; refuses anything else."""
    if not out.exists() or not any(out.iterdir()):
        return None
    try:
        info = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    if info.get("name") != "emoji":
        raise FileExistsError(f"{out} is not empty and holds no emoji dataset.json; pass an empty or new folder")
    return info


def _complete(out: Path, info: dict | None, config: dict) -> bool:
    """A finished earlier build with the same options whose media files are all still there."""
    if not info or not info.get("complete") or info.get("config") != config:
        return False
    try:
        table = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return False
    return all((out / p).exists() for c in ("image", "audio", "video") if c in table.columns for p in table[c])


@dataclass(frozen=True)
class _RowOptions:
    """What every row of a build shares (picklable: it travels to the worker processes)."""

    out: Path
    seed: int
    modalities: tuple[str, ...]
    image_size: int
    video_frames: int
    video_fps: int
    audio_rate: int
    audio_seconds: float
    assets_dir: str


def _make_row(opts: _RowOptions, job: tuple[dict, str, str | None]) -> tuple[dict, dict, str | None]:
    """One emoji's sample: its media files written, its manifest row, its truth row and its speech key."""
    r, voice, old_key = job
    modalities = opts.modalities
    with_video = "video" in modalities
    assets = load_emoji_assets(opts.assets_dir)
    # One generator per emoji: its sample does not depend on `limit` or on the modalities built.
    rng = np.random.default_rng([opts.seed, 1, r["sprite"]])
    motion = MOTIONS[rng.integers(len(MOTIONS))]
    caption = _caption(r["name"], r["keywords"], motion if with_video else None, rng)
    tile = assets.sprites[r["sprite"]]
    sid = f"emoji-{r['sprite']:04d}"
    row, key = {"id": sid}, None
    if "text" in modalities:
        row["text"] = caption
    clip = motion_frames(tile, motion, size=opts.image_size, frames=opts.video_frames,
                         background=assets.background) if with_video else None
    if "image" in modalities:
        # With video, the image is the clip's key frame, as in a video dataset: its last frame, where
        # the motion ends (the emoji off-centre, large, small or turned), so that image and text agree
        # on the motion too. Else the emoji itself.
        if clip is not None:
            im = clip[-1]
        elif opts.image_size == tile.shape[0]:
            im = tile
        else:
            im = np.asarray(Image.fromarray(tile).resize((opts.image_size, opts.image_size), Image.Resampling.LANCZOS))
        row["image"] = f"image/{sid}.png"
        write_png(opts.out / row["image"], im)
    if "audio" in modalities:
        row["audio"] = f"audio/{sid}.wav"
        spec = dict(voice=voice, rate=opts.audio_rate, max_seconds=opts.audio_seconds)
        spoken = f"{r['name']}, {motion}" if with_video else r["name"]  # what the video shows, said aloud too
        key = speech_key(spoken, **spec)
        if old_key != key or not (opts.out / row["audio"]).exists():
            write_wav(opts.out / row["audio"], spoken_name(spoken, **spec), opts.audio_rate)
    if with_video:
        row["video"] = f"video/{sid}.mp4"
        write_mp4(opts.out / row["video"], clip, fps=opts.video_fps)
    row["label"] = r["group"]
    # Swaps draw donors from another subgroup: "grinning face" under "beaming face" would barely contradict.
    row["_key"] = r["subgroup"]
    truth = {"id": sid, "emoji": r["emoji"], "codepoints": r["codepoints"], "name": r["name"], "group": r["group"],
             "subgroup": r["subgroup"], "motion": motion if with_video else "",
             "voice": voice if "audio" in modalities else ""}
    return row, truth, key


def build_emoji(
    out_dir: str | Path,
    *,
    inject_rate: float = 0.1,
    seed: int = 0,
    modalities: Sequence[str] = ("image", "text", "audio", "video"),
    image_size: int = 64,
    video_frames: int = 8,
    video_fps: int = 8,
    audio_rate: int = 16000,
    audio_seconds: float = 2.0,
    limit: int | None = None,
    kinds: Sequence[str] = EMOJI_KINDS,
    assets_dir: str | Path | None = None,
    progress: bool = True,
    workers: int = BUILD_WORKERS,
) -> Path:
    """Build the emoji dataset in `out_dir` and return the path of its manifest.csv.

    Writes image/, audio/, video/ media (only for the asked modalities), manifest.csv (id, text, image,
    audio, video, label, injected; media paths relative to out_dir), attributes.csv (each sample's own
    emoji, name, group, subgroup, motion, voice: what it shows when clean), dataset.json (options,
    augmentation hints, injected kinds) and LICENSES.md. `label` is the emoji's group.

    `limit` keeps that many emoji, evenly spread over the table (all 1,601 by default). The same seed
    gives the same files, and an emoji's sample does not depend on `limit`. A second call with the same
    options on a complete build returns at once. Speech is cached: each emoji has its own voice
    whatever the seed, and a WAV whose synthesis key (kept in ``.cache/speech.json``) is unchanged is
    not spoken again. Images upscaled beyond the 64 px sprites are blurry.
    """
    bad = [m for m in modalities if m not in MODALITIES]
    modalities = [m for m in MODALITIES if m in set(modalities)]  # canonical order
    if bad or len(modalities) < 2:
        raise ValueError(f"modalities must be at least two of {MODALITIES}, got {modalities + bad}")
    if image_size % 2 or image_size < 8:
        raise ValueError(f"image_size must be even and at least 8 (H.264 needs even sizes), got {image_size}")
    if video_frames < 1 or audio_seconds <= 0:
        raise ValueError(f"video_frames must be >= 1 and audio_seconds > 0, got {video_frames}, {audio_seconds}")
    kinds = applicable_kinds(kinds, modalities)

    out = Path(out_dir)
    manifest = out / "manifest.csv"
    assets = load_emoji_assets(assets_dir)
    config = {
        "inject_rate": inject_rate, "seed": seed, "modalities": modalities, "image_size": image_size,
        "video_frames": video_frames, "video_fps": video_fps, "audio_rate": audio_rate,
        "audio_seconds": audio_seconds, "limit": limit, "kinds": kinds,
        "assets": assets.meta.get("packages", {}),
    }
    previous = _previous_build(out)
    if _complete(out, previous, config):
        return manifest
    start = time.perf_counter()
    # Stale images and clips of an earlier, larger build would linger; audio/ stays for the speech cache.
    for sub in ("image", "video"):
        shutil.rmtree(out / sub, ignore_errors=True)
    manifest.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    # Mark the folder as ours at once, so that a build that crashes half-way can simply be rerun.
    (out / "dataset.json").write_text(json.dumps({"name": "emoji", "complete": False}) + "\n")
    for m in ("image", "audio", "video"):
        if m in modalities:
            (out / m).mkdir(exist_ok=True)

    rows = assets.table.iloc[_pick_rows(len(assets.table), limit)].reset_index(drop=True)
    # The voice belongs to the emoji, not to the seed, so that rebuilds reuse the spoken names.
    voice_of = np.random.default_rng(VOICE_SEED).integers(len(VOICES), size=len(assets.table))
    keys_file = out / ".cache" / "speech.json"
    try:
        old_keys = json.loads(keys_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old_keys = {}
    opts = _RowOptions(out=out, seed=seed, modalities=tuple(modalities), image_size=image_size,
                       video_frames=video_frames, video_fps=video_fps, audio_rate=audio_rate,
                       audio_seconds=audio_seconds, assets_dir=str(assets.path))
    jobs = [(r, VOICES[voice_of[r["sprite"]]], old_keys.get(f"audio/emoji-{r['sprite']:04d}.wav"))
            for r in rows.to_dict("records")]
    results = build_samples(partial(_make_row, opts), jobs, workers=workers, chunksize=ROWS_PER_TASK, desc="emoji",
                            progress=progress)
    records = [row for row, _, _ in results]
    truth = [t for _, t, _ in results]
    speech_keys = {row["audio"]: key for row, _, key in results if key is not None}

    table = inject_misalignments(pd.DataFrame(records), rate=inject_rate, kinds=kinds, modalities=modalities,
                                 attribute_key="_key", rng=np.random.default_rng([seed, 2]))
    # dark_video is only assigned by inject_misalignments; the clip is ours to make. The clean clip
    # stays on disk: swaps may have borrowed it as a donor.
    dark_rng = np.random.default_rng([seed, 3])
    for i in np.flatnonzero(table["injected"].to_numpy() == "dark_video"):
        path = f"video/{table.at[i, 'id']}_dark.mp4"
        write_mp4(out / path, dark_frames(size=image_size, frames=video_frames, rng=dark_rng), fps=video_fps)
        table.at[i, "video"] = path

    if "audio" in modalities:
        keep = set(speech_keys)
        for f in (out / "audio").glob("*.wav"):  # spoken names of emoji this build left out
            if f"audio/{f.name}" not in keep:
                f.unlink()
        keys_file.parent.mkdir(exist_ok=True)
        keys_file.write_text(json.dumps(speech_keys, indent=0), encoding="utf-8")
    pd.DataFrame(truth).to_csv(out / "attributes.csv", index=False)
    shutil.copyfile(assets.path / "LICENSES.md", out / "LICENSES.md")
    meta = {
        "name": "emoji",
        "complete": True,
        # Captions name the direction of motion: a mirrored, flipped or rotated clip would contradict them.
        "allow_hflip": False,
        "allow_vflip": False,
        "allow_rotate": False,
        "injected_kinds": kinds,
        "n": len(table),
        "seed": seed,
        "inject_rate": inject_rate,
        "n_injected": int((table["injected"] != "").sum()),
        "injected_counts": {k: int((table["injected"] == k).sum()) for k in kinds},
        "modalities": modalities,
        "image_size": image_size,
        "video_frames": video_frames,
        "video_fps": video_fps,
        "audio_rate": audio_rate,
        "audio_seconds": audio_seconds,
        "label": "emoji group (Unicode emoji-test.txt)",
        "labels": sorted(set(table["label"])),
        "attributes": {"motion": list(MOTIONS) if "video" in modalities else [],
                       "voice": list(VOICES) if "audio" in modalities else []},
        "attributes_file": "attributes.csv",
        "sources": "Noto Color Emoji (OFL-1.1), Unicode CLDR and emoji-test.txt (Unicode License): see LICENSES.md",
        "build_seconds": round(time.perf_counter() - start, 1),
        "config": config,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    columns = ["id", *[m for m in COLUMN_ORDER if m in modalities], "label", "injected"]
    table[columns].to_csv(manifest, index=False)  # last: a half-finished build has no manifest
    return manifest
