"""The built-in `shapes` world: coloured shapes in a quadrant, moving in a direction.

Every sample has four attributes (shape, colour, position, motion) and each modality shows them:

- image: the shape in its colour at its quadrant on a dark, noisy background (static: no motion);
- text:  a caption naming all four, with some template variety;
- audio: beeps: pitch = colour, number of beeps = shape, pitch glide / envelope = motion,
         timbre (a 3rd harmonic or not) = top/bottom, beep length = left/right;
- video: the shape moving through its quadrant in its direction.

Clean samples therefore generalize by construction (a tiny model at 32 px learns the world from about
1,000 samples), and the injected misalignments are the only samples a model has to memorize.

Captions say left/right and top/bottom, so flips (and rotations) would turn clean samples into
contradictions: the engine must read `SHAPES_AUGMENTATION_HINTS` / dataset.json and not flip.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from multimem_core.names import MODALITIES
from multimem_core.data.synthetic import (INJECTED_KINDS, applicable_kinds, build_samples, inject_misalignments,
                                          write_mp4, write_png, write_wav)

__all__ = [
    "COLOURS",
    "MOTIONS",
    "POSITIONS",
    "SHAPES",
    "SHAPES_AUGMENTATION_HINTS",
    "build_shapes",
    "caption_attributes",
]

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {  # strongly distinct hues, bright against the dark background
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 245),
    "yellow": (235, 220, 40),
    "magenta": (220, 50, 220),
    "cyan": (40, 220, 230),
}
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right")
MOTIONS = ("up", "down", "left", "right")

# Flips and rotations change what the caption says (left/right, top/bottom, up/down).
SHAPES_AUGMENTATION_HINTS = {"hflip": False, "vflip": False, "rotate": False}

# Audio encoding: colours half an octave apart (C4 .. F#6), so no colour's glide reaches another's pitch.
_PITCH_HZ = dict(zip(COLOURS, (261.6, 370.0, 523.3, 740.0, 1046.5, 1480.0)))
_BEEPS = {"circle": 1, "cross": 2, "triangle": 3, "square": 4}
_MOTION_VEC = {"up": (0.0, -1.0), "down": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}
VIDEO_FPS = 8
_SUPERSAMPLE = 2  # render at 2x and average: anti-aliased edges for free


@dataclass(frozen=True)
class _Sample:
    shape: str
    colour: str
    position: str
    motion: str

    @property
    def key(self) -> str:
        return f"{self.shape}|{self.colour}|{self.position}|{self.motion}"


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------

_VERBS = ("moving", "drifting", "heading", "going", "sliding")
_TEMPLATES = (
    "a {colour} {shape} in the {v} {h}, {verb} {dir}",
    "{colour} {shape}, {v}-{h} corner, {verb} {dir}ward",
    "the {shape} is {colour}; it sits in the {v} {h} and is {verb} {dir}",
    "{v} {h}: a {colour} {shape} {verb} {dir}",
    "a {shape} in {colour} at the {v}-{h}, {verb} {dir}wards",
    "{verb} {dir} from the {v} {h} corner: one {colour} {shape}",
)
_VERTICAL_WORDS = {"top": ("top", "upper"), "bottom": ("bottom", "lower")}


def _caption(s: _Sample, rng: np.random.Generator) -> str:
    vertical, horizontal = s.position.split("-")
    words = _VERTICAL_WORDS[vertical]
    template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    return template.format(
        colour=s.colour, shape=s.shape, v=words[rng.integers(len(words))], h=horizontal,
        verb=_VERBS[rng.integers(len(_VERBS))], dir=s.motion,
    )


_POS_RE = re.compile(r"\b(top|upper|bottom|lower)[\s-](left|right)\b")
_MOTION_RE = re.compile(r"\b(?:" + "|".join(_VERBS) + r")\s+(up|down|left|right)(?:wards?)?\b")
_WORD_RE = re.compile(r"[a-z]+")


def caption_attributes(text: str) -> dict[str, str | None]:
    """Read shape, colour, position and motion back out of a shapes caption (None where absent)."""
    text = text.lower()
    words = set(_WORD_RE.findall(text))
    pos, motion = _POS_RE.search(text), _MOTION_RE.search(text)
    vertical = {"upper": "top", "lower": "bottom"}.get(pos.group(1), pos.group(1)) if pos else None
    return {
        "shape": next((s for s in SHAPES if s in words), None),
        "colour": next((c for c in COLOURS if c in words), None),
        "position": f"{vertical}-{pos.group(2)}" if pos else None,
        "motion": motion.group(1) if motion else None,
    }


# --------------------------------------------------------------------------------------------
# Pixels: boolean masks from coordinate grids, vectorized over frames
# --------------------------------------------------------------------------------------------


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Inside-mask of a shape of 'radius' r centred at the origin of (dx, dy)."""
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = 0.82 * r  # same visual area as the circle, roughly
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if shape == "triangle":  # apex up; base at 0.8 r below the centre, as wide as the circle
        top, bottom = -r, 0.8 * r
        return (dy >= top) & (dy <= bottom) & (np.abs(dx) <= r * (dy - top) / (bottom - top))
    if shape == "cross":  # a plus sign
        arm = 0.32 * r
        return ((np.abs(dx) <= r) & (np.abs(dy) <= arm)) | ((np.abs(dy) <= r) & (np.abs(dx) <= arm))
    raise ValueError(f"unknown shape {shape!r}")


def _render(s: _Sample, centres: np.ndarray, *, size: int, radius: float, colour: np.ndarray,
            background: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Frames uint8 [T, size, size, 3] with the shape at each centre (pixel coordinates [T, 2])."""
    ss = _SUPERSAMPLE
    grid = (np.arange(size * ss, dtype=np.float32) + 0.5) / ss  # supersampled pixel centres
    dx = grid[None, None, :] - centres[:, 0, None, None].astype(np.float32)
    dy = grid[None, :, None] - centres[:, 1, None, None].astype(np.float32)
    mask = _shape_mask(s.shape, dx, dy, radius)
    # Coverage of each output pixel by its ss x ss sub-pixels (strided sums beat a reshape-mean here).
    alpha = sum(mask[:, a::ss, b::ss].astype(np.float32) for a in range(ss) for b in range(ss))[..., None] / ss**2
    bg = background + noise * rng.standard_normal(size=(len(centres), size, size, 3), dtype=np.float32)
    return np.clip(bg * (1.0 - alpha) + colour * alpha, 0, 255).round().astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Sound
# --------------------------------------------------------------------------------------------


def _tones(s: _Sample, *, rate: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(round(rate * seconds))
    t = np.arange(n, dtype=np.float64) / rate
    freq = np.zeros(n)
    env = np.zeros(n)
    f0 = _PITCH_HZ[s.colour] * 2 ** (rng.uniform(-0.25, 0.25) / 12)  # up to a quarter-semitone of jitter
    beeps = _BEEPS[s.shape]
    slot = seconds / beeps
    vertical, horizontal = s.position.split("-")
    length = slot * (0.4 if horizontal == "left" else 0.8)  # left: short beeps, right: long ones
    for b in range(beeps):
        start = b * slot + 0.05 * slot + rng.uniform(0.0, 0.05) * slot
        inside = (t >= start) & (t < start + length)
        u = (t[inside] - start) / length  # 0..1 through the beep
        glide = {"up": 3.0, "down": -3.0}.get(s.motion, 0.0)  # semitones over the beep, centred on f0
        freq[inside] = f0 * 2 ** (glide * (u - 0.5) / 12)
        ramp = np.minimum(1.0, np.minimum(u, 1.0 - u) * length / 0.01)  # 10 ms fades: no clicks
        shape = {"left": np.exp(-4.0 * u), "right": 0.15 + 0.85 * u}.get(s.motion, 1.0)  # pluck / swell
        env[inside] = ramp * shape
    phase = 2 * np.pi * np.cumsum(freq) / rate
    wave = np.sin(phase)
    if vertical == "bottom":  # a hollow, clarinet-like timbre for the bottom row
        wave = (wave + 0.45 * np.sin(3 * phase)) / 1.45
    audio = rng.uniform(0.45, 0.65) * env * wave + rng.normal(0.0, 0.01, size=n)
    return audio.astype(np.float32)


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------


def _prepare_out_dir(out: Path) -> None:
    """Refuse to write into a folder that holds something else; clear a previous shapes build."""
    if out.exists() and any(out.iterdir()):
        meta = out / "dataset.json"
        try:
            ours = json.loads(meta.read_text()).get("name") == "shapes"
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise FileExistsError(f"{out} is not empty and holds no shapes dataset.json; pass an empty or new folder")
        for sub in ("image", "audio", "video"):  # stale media of a larger earlier build would linger
            shutil.rmtree(out / sub, ignore_errors=True)
        for name in ("manifest.csv", "attributes.csv"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    # Mark the folder as ours at once, so that a build that crashes half-way can simply be rerun.
    (out / "dataset.json").write_text(json.dumps({"name": "shapes", "complete": False}) + "\n")


@dataclass(frozen=True)
class _Options:
    out: Path
    seed: int
    modalities: tuple[str, ...]
    size: int
    video_frames: int
    audio_rate: int
    audio_seconds: float


def _make_sample(o: _Options, i: int) -> tuple[dict, dict]:
    """Render and write sample i; return its manifest row and its true attributes."""
    # One generator per sample: sample i does not depend on n, on the workers, or on the modalities built.
    rng = np.random.default_rng([o.seed, 1, i])
    s = _Sample(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=list(COLOURS)[rng.integers(len(COLOURS))],
        position=POSITIONS[rng.integers(len(POSITIONS))],
        motion=MOTIONS[rng.integers(len(MOTIONS))],
    )
    # Draw every per-sample parameter before branching on modalities, so they never shift.
    size = o.size
    caption = _caption(s, rng)
    radius = size * rng.uniform(0.14, 0.19)
    vertical, horizontal = s.position.split("-")
    centre = np.array([0.25 if horizontal == "left" else 0.75, 0.25 if vertical == "top" else 0.75]) * size
    centre = centre + rng.uniform(-0.04, 0.04, size=2) * size
    colour = np.clip(np.array(COLOURS[s.colour]) + rng.integers(-12, 13, size=3), 0, 255).astype(np.float32)
    background = rng.uniform(8, 40, size=3).astype(np.float32)
    image_rng, audio_rng, video_rng = (np.random.default_rng(rng.integers(2**63)) for _ in range(3))

    sid = f"s{i:06d}"
    row = {"id": sid}
    if "text" in o.modalities:
        row["text"] = caption
    if "image" in o.modalities:
        img = _render(s, centre[None], size=size, radius=radius, colour=colour, background=background,
                      noise=5.0, rng=image_rng)[0]
        write_png(o.out / "image" / f"{sid}.png", img)
        row["image"] = f"image/{sid}.png"
    if "audio" in o.modalities:
        wave = _tones(s, rate=o.audio_rate, seconds=o.audio_seconds, rng=audio_rng)
        write_wav(o.out / "audio" / f"{sid}.wav", wave, o.audio_rate)
        row["audio"] = f"audio/{sid}.wav"
    if "video" in o.modalities:
        # The path runs through the quadrant centre, so the shape stays in its quadrant all along.
        travel = 0.25 * size * (np.linspace(0.0, 1.0, o.video_frames) - 0.5)
        centres = centre[None] + travel[:, None] * np.array(_MOTION_VEC[s.motion])[None]
        frames = _render(s, centres, size=size, radius=radius, colour=colour, background=background,
                         noise=3.0, rng=video_rng)
        write_mp4(o.out / "video" / f"{sid}.mp4", frames, fps=VIDEO_FPS)
        row["video"] = f"video/{sid}.mp4"
    row["label"] = s.shape
    row["_key"] = s.key
    truth = {"id": sid, "shape": s.shape, "colour": s.colour, "position": s.position, "motion": s.motion}
    return row, truth


def build_shapes(
    out_dir: str | Path,
    *,
    n: int = 2000,
    inject_rate: float = 0.1,
    seed: int = 0,
    modalities: Sequence[str] = ("image", "text", "audio", "video"),
    image_size: int = 64,
    video_frames: int = 8,
    audio_rate: int = 16000,
    audio_seconds: float = 1.0,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Build the shapes dataset in `out_dir` and return the path of its manifest.csv.

    Writes image/, audio/, video/ media (only for the asked modalities), manifest.csv (id, text, image,
    audio, video, label, injected; media paths relative to out_dir), attributes.csv (each sample's own
    shape, colour, position, motion: what it shows when clean) and dataset.json (build options,
    augmentation hints, injected kinds). `label` is the shape of the sample's image. The same seed gives
    the same files, and sample i is the same whatever n or `workers` is. `workers` > 1 renders in
    that many processes (the machines have few cores shared by everyone, so the default is one).
    """
    modalities = tuple(modalities)
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or len(set(modalities)) < 2:
        raise ValueError(f"modalities must be at least two of {MODALITIES}, got {list(modalities)}")
    modalities = tuple(m for m in MODALITIES if m in modalities)  # canonical order
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    if "video" in modalities and image_size % 2:
        raise ValueError(f"image_size must be even for H.264 video, got {image_size}")
    out = Path(out_dir)
    _prepare_out_dir(out)
    for m in ("image", "audio", "video"):
        if m in modalities:
            (out / m).mkdir(exist_ok=True)

    size = int(image_size)
    opts = _Options(out=out, seed=seed, modalities=modalities, size=size, video_frames=video_frames,
                    audio_rate=audio_rate, audio_seconds=audio_seconds)
    results = build_samples(partial(_make_sample, opts), range(n), workers=workers, chunksize=64, desc="shapes",
                            progress=progress)
    rows, truth = [r for r, _ in results], [t for _, t in results]

    table = pd.DataFrame(rows)
    kinds = applicable_kinds(INJECTED_KINDS, modalities)
    table = inject_misalignments(table, rate=inject_rate, kinds=kinds, modalities=modalities,
                                 attribute_key="_key", rng=np.random.default_rng([seed, 2]))
    columns = ["id", *[m for m in ("text", "image", "audio", "video") if m in modalities], "label", "injected"]

    pd.DataFrame(truth).to_csv(out / "attributes.csv", index=False)
    meta = {
        "name": "shapes",
        "complete": True,
        "allow_hflip": SHAPES_AUGMENTATION_HINTS["hflip"],
        "allow_vflip": SHAPES_AUGMENTATION_HINTS["vflip"],
        "allow_rotate": SHAPES_AUGMENTATION_HINTS["rotate"],
        "injected_kinds": kinds,
        "n": n,
        "seed": seed,
        "inject_rate": inject_rate,
        "n_injected": int((table["injected"] != "").sum()),
        "modalities": list(modalities),
        "image_size": size,
        "video_frames": video_frames,
        "video_fps": VIDEO_FPS,
        "audio_rate": audio_rate,
        "audio_seconds": audio_seconds,
        "label": "shape of the sample's image",
        "attributes": {"shape": list(SHAPES), "colour": list(COLOURS), "position": list(POSITIONS), "motion": list(MOTIONS)},
        "attributes_file": "attributes.csv",
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    manifest = out / "manifest.csv"
    table[columns].to_csv(manifest, index=False)  # last: a half-finished build has no manifest
    return manifest
