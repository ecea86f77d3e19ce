"""Where each real set's rows come from: one function per source package, and the registry entries.

Each source function returns Items (key, caption, picture and/or sound) read from an installed package;
real_sets.build samples, swaps and writes them. Captions are what the package itself says about the
media (a description, a title, a catalogue name) or, where it says nothing else, the file's name.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import tarfile
import wave
import zipfile
import zlib
from pathlib import Path

import numpy as np

from real_sets import CACHE, Item, RealSet, npm_tarball, register, sample

STAMPS = Path("/usr/share/tuxpaint/stamps")
GCOMPRIS_RCC = Path("/usr/share/gcompris-qt/rcc")
# GCompris activities whose pictures are photographs named after what they show
GCOMPRIS_PHOTOS = ("lang", "erase", "categorization", "explore_world_animals", "explore_farm_animals",
                   "explore_monuments")
OPENCLIPART = Path("/usr/share/openclipart")
FURNITURE = Path("/usr/share/sweethome3d/furniture")
FREEORION = Path("/usr/share/games/freeorion/default")
WESNOTH_SOUNDS = Path("/usr/share/games/wesnoth/1.16/data/core/sounds")
SCRATCH_SOUNDS = Path("/usr/share/scratch/Media/Sounds")
SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


def words_from_name(stem: str) -> str:
    """'screwDriver2' -> 'screw driver'; 'human-old-hit-2' -> 'human old hit'."""
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", re.sub(r"[\d_\- ]+$", "", stem))
    return " ".join(words.replace("_", " ").replace("-", " ").lower().split())


def caption_from_name(stem: str) -> str:
    """'screwDriver2' -> 'A screw driver.'; 'polar_bear' -> 'A polar bear.'"""
    words = words_from_name(stem)
    return f"{'An' if words[:1] in 'aeiou' else 'A'} {words}."


# --- Tux Paint and GCompris (stamps, stamp-sounds, photos-holdout) ----------------------------------

def read_rcc(path: Path) -> dict[str, bytes]:
    """The files inside a Qt resource file (.rcc, how GCompris ships its data): path -> bytes."""
    b = path.read_bytes()
    if b[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource file")
    version, tree, data, names = struct.unpack(">iiii", b[4:20])
    entry = 14 if version < 2 else 22
    out: dict[str, bytes] = {}

    def name(off: int) -> str:
        (n,) = struct.unpack(">H", b[names + off:names + off + 2])
        return b[names + off + 6:names + off + 6 + 2 * n].decode("utf-16-be")

    def walk(i: int, prefix: str) -> None:
        e = tree + i * entry
        name_off, flags = struct.unpack(">iH", b[e:e + 6])
        here = name(name_off) if i else ""
        if flags & 2:  # a directory: its children follow
            count, first = struct.unpack(">ii", b[e + 6:e + 14])
            for c in range(first, first + count):
                walk(c, f"{prefix}{here}/" if here else prefix)
            return
        (off,) = struct.unpack(">i", b[e + 10:e + 14])
        (size,) = struct.unpack(">I", b[data + off:data + off + 4])
        raw = b[data + off + 4:data + off + 4 + size]
        if flags & 1:  # qCompress: 4-byte length, then zlib
            raw = zlib.decompress(raw[4:])
        elif flags & 4:
            return  # zstd-compressed entries: none in the files used here
        out[prefix + here] = raw

    walk(0, "")
    return out


def stamp_items() -> list[Item]:
    """Tux Paint stamps: picture, English description (first line of the .txt), sound effect if any.
    The alphabet stamps are left out: letters, not pictures."""
    items = []
    for png in sorted(STAMPS.rglob("*.png")):
        rel = png.relative_to(STAMPS)
        txt = png.with_suffix(".txt")
        if rel.parts[:2] == ("symbols", "alphabets") or not txt.is_file():
            continue
        caption = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
        sound = png.with_suffix(".ogg")
        items.append(Item("tuxpaint/" + str(rel.with_suffix("")), caption, png, sound if sound.is_file() else None))
    return items


def gcompris_items() -> list[Item]:
    """GCompris photos named by their files; farm animals also with their call (.ogg of the same name)."""
    items = []
    for activity in GCOMPRIS_PHOTOS:
        files = read_rcc(GCOMPRIS_RCC / f"{activity}.rcc")
        for path, raw in sorted(files.items()):
            if not path.endswith(".webp"):
                continue
            stem = Path(path).stem
            if stem in ("question", "background") or "background" in path:
                continue
            items.append(Item(f"gcompris/{activity}/{stem}", caption_from_name(stem), raw, files.get(path[:-5] + ".ogg")))
    return items


def stamp_pool() -> list[Item]:
    return stamp_items() + gcompris_items()


def stamps(rng: np.random.Generator) -> list[Item]:
    return stamp_pool()


def stamp_sounds(rng: np.random.Generator) -> list[Item]:
    return [it for it in stamp_pool() if it.audio is not None]


def _digest(image: Path | bytes) -> str:
    return hashlib.sha1(image.read_bytes() if isinstance(image, Path) else image).hexdigest()


def photos_holdout(rng: np.random.Generator) -> list[Item]:
    """The pictures of the stamp pool that neither tune set uses (not among the stamps set's sample, no
    sound), and no picture whose bytes equal one the tune sets use."""
    pool = stamp_pool()
    tune = sample(pool, STAMPS_SET.rows, np.random.default_rng(STAMPS_SET.seed))
    used = {it.key for it in tune} | {it.key for it in pool if it.audio is not None}
    used_bytes = {_digest(it.image) for it in pool if it.key in used}
    return [it for it in pool if it.key not in used and _digest(it.image) not in used_bytes]


# --- OpenClipart (openclipart-tune, openclipart-validate) -------------------------------------------

_TITLE = re.compile(rb"<dc:title>\s*([^<]*?)\s*</dc:title>", re.S)
# titles of collections, themes and generated series, not of the picture
_NOT_A_TITLE = re.compile(r"collection|theme|icons?\b|clip ?arts?|untitled|\bby\b|svg|pattern|gradient|\bset\b|architetto",
                          re.I)


def openclipart_items() -> list[Item]:
    """Clip art with the title of its SVG metadata (the first dc:title, the work's), pictured by the
    package's own PNG rendering; titles shared by more than 3 files (series, collections) left out."""
    found = []
    for svg in sorted((OPENCLIPART / "svg").rglob("*.svg")):
        m = _TITLE.search(svg.read_bytes()[:200_000])
        png = (OPENCLIPART / "png" / svg.relative_to(OPENCLIPART / "svg")).with_suffix(".png")
        if m and png.is_file():
            title = " ".join(m.group(1).decode("utf-8", "replace").split())
            found.append((svg.relative_to(OPENCLIPART / "svg").with_suffix(""), title, png))
    counts: dict[str, int] = {}
    for _, title, _ in found:
        counts[words_from_name(title)] = counts.get(words_from_name(title), 0) + 1
    return [Item(f"openclipart/{rel}", title.replace("_", " "), _picture(png, OPENCLIPART / "svg" / f"{rel}.svg"))
            for rel, title, png in found
            if counts[words_from_name(title)] <= 3 and re.search("[a-z]{3}", words_from_name(title))
            and not _NOT_A_TITLE.search(title)]


def _picture(png: Path, svg: Path, max_pixels: int = 4096 * 4096) -> Path:
    """The package's PNG, or its SVG (rendered small by rsvg-convert) where the PNG is huge: a few are
    over 100 megapixels, slow to decode for a 640-pixel JPEG."""
    with png.open("rb") as f:
        head = f.read(24)
    width, height = struct.unpack(">II", head[16:24]) if head[12:16] == b"IHDR" else (0, 0)
    return svg if width * height > max_pixels else png


def _half(key: str) -> int:
    return hashlib.sha256(key.encode()).digest()[0] & 1


def openclipart_tune(rng: np.random.Generator) -> list[Item]:
    return [it for it in openclipart_items() if _half(it.key) == 0]


def openclipart_validate(rng: np.random.Generator) -> list[Item]:
    return [it for it in openclipart_items() if _half(it.key) == 1]


# --- game-icons.net via npm (game-icons) ------------------------------------------------------------

def game_icons(rng: np.random.Generator) -> list[Item]:
    """@iconify-json/game-icons: 4,000 monochrome SVG icons named by what they show ('battle-axe');
    numbered series ('abstract-001') left out. Rendered black on white by rsvg-convert."""
    import json

    with tarfile.open(npm_tarball("@iconify-json/game-icons", CACHE)) as tar:
        data = json.load(tar.extractfile("package/icons.json"))
    w, h = data.get("width", 512), data.get("height", 512)
    items = []
    for name, icon in sorted(data["icons"].items()):
        if re.search(r"\d{2,}$", name):
            continue
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {icon.get("width", w)} {icon.get("height", h)}" '
               f'color="#000">{icon["body"]}</svg>').encode()
        items.append(Item(f"game-icons/{name}", caption_from_name(name), svg))
    return items


# --- Sweet Home 3D furniture (furniture) ------------------------------------------------------------

def furniture(rng: np.random.Generator) -> list[Item]:
    """Sweet Home 3D's furniture libraries: each model's rendered icon, its catalogue name and category."""
    items = []
    for lib in sorted(FURNITURE.glob("*.sh3f")):
        with zipfile.ZipFile(lib) as z:
            props: dict[str, str] = {}
            for line in z.read("PluginFurnitureCatalog.properties").decode("latin-1").splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    k, v = line.split("=", 1)
                    props[k.strip()] = v.strip().encode("latin-1").decode("unicode_escape")
            for k, name in props.items():
                if not k.startswith("name#"):
                    continue
                n = k.split("#", 1)[1]
                icon = props.get(f"icon#{n}", "").lstrip("/")
                if icon not in z.namelist():
                    continue
                category = props.get(f"category#{n}", "")
                text = f"{name} ({category.lower()})" if category else name
                items.append(Item(f"sweethome3d/{lib.stem}/{n}", text, z.read(icon)))
    return items


# --- FreeOrion (freeorion) --------------------------------------------------------------------------

def freeorion(rng: np.random.Generator) -> list[Item]:
    """FreeOrion's content scripts: each file's first `name = "KEY"` with its first icon/graphic, KEY's
    English name from the string table (techs, buildings, species, ship parts and hulls, monsters)."""
    lines = (FREEORION / "stringtables" / "en.txt").read_text(encoding="utf-8").splitlines()
    names = {}
    for a, b in zip(lines, lines[1:]):
        if re.fullmatch(r"[A-Z][A-Z0-9_]+", a) and b.strip() and not b.startswith("#"):
            names.setdefault(a, b.strip())
    name_re = re.compile(r'\bname\s*=\s*"([A-Z][A-Z0-9_]+)"')
    art_re = re.compile(r'\b(?:icon|graphic)\s*=\s*"([^"]+\.png)"')
    items = {}
    for f in sorted((FREEORION / "scripting").rglob("*.focs.*")):
        text = f.read_text(encoding="utf-8", errors="replace")
        n, a = name_re.search(text), art_re.search(text)
        if not (n and a) or n.group(1) not in names or names[n.group(1)].startswith(("*", "%")):
            continue
        art = FREEORION / "data" / "art" / a.group(1).replace("//", "/")
        if art.is_file() and str(art) not in items:
            items[str(art)] = Item(f"freeorion/{a.group(1)}", names[n.group(1)], art)
    return list(items.values())


# --- sounds (wesnoth-sounds, scratch-sounds, gm-instruments) ----------------------------------------

def wesnoth_sounds(rng: np.random.Generator) -> list[Item]:
    """Battle for Wesnoth's sound effects, named by their files ('wolf-hit-2' -> 'Wolf hit.')."""
    return [Item(f"wesnoth/{p.relative_to(WESNOTH_SOUNDS).with_suffix('')}", words_from_name(p.stem).capitalize() + ".",
                 audio=p) for p in sorted(WESNOTH_SOUNDS.rglob("*.ogg")) if words_from_name(p.stem)]


def scratch_sounds(rng: np.random.Generator) -> list[Item]:
    """Scratch's sound library ('Animal/Dog1.wav' -> 'Dog, an animal sound.'): WAV and MP3."""
    items = []
    for p in sorted(SCRATCH_SOUNDS.rglob("*")):
        if p.suffix.lower() in (".wav", ".mp3") and words_from_name(p.stem):
            category = words_from_name(p.parent.name).rstrip("s")
            article = "an" if category[:1] in "aeiou" else "a"
            items.append(Item(f"scratch/{p.relative_to(SCRATCH_SOUNDS).with_suffix('')}",
                              f"{words_from_name(p.stem).capitalize()}, {article} {category} sound.", audio=p))
    return items


from gm_names import GM_DRUMS, GM_PROGRAMS  # noqa: E402  (the General MIDI names: long tables, own file)

NOTES = ((48, "a low note"), (60, "a middle note"), (72, "a high note"))


def midi_file(events: list[tuple[int, bytes]]) -> bytes:
    """A format-0 MIDI file from (delta ticks, message) pairs, 480 ticks a beat, 120 beats a minute."""
    def varlen(v: int) -> bytes:
        out = [v & 0x7F]
        while v > 0x7F:
            v >>= 7
            out.insert(0, (v & 0x7F) | 0x80)
        return bytes(out)

    track = b"".join(varlen(d) + m for d, m in events) + b"\x00\xff\x2f\x00"
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(track)) + track


def gm_instruments(rng: np.random.Generator, *, seconds: float = 1.0, rate: int = 22050) -> list[Item]:
    """Every General MIDI instrument at three pitches, and the percussion kit, rendered from the Fluid R3
    soundfont by fluidsynth in one pass (a note every 2 s), then cut into one WAV per note from its onset:
    one second, the clip length `multimem score` reads by default (it reads a longer clip's middle, where
    a drum hit has died away)."""
    import subprocess
    import tempfile

    notes = [(0, prog, pitch, f"{name}, {where}.") for prog, name in enumerate(GM_PROGRAMS) for pitch, where in NOTES]
    notes += [(9, 0, key, f"{name}, a drum kit sound.") for key, name in GM_DRUMS.items()]
    beat = 480  # 0.5 s
    events: list[tuple[int, bytes]] = []
    for ch, prog, pitch, _ in notes:
        events += [(0, bytes([0xC0 | ch, prog])), (0, bytes([0x90 | ch, pitch, 100])),
                   (2 * beat, bytes([0x80 | ch, pitch, 0])), (2 * beat, bytes([0xB0 | ch, 123, 0]))]
    with tempfile.TemporaryDirectory() as tmp:
        mid, out = Path(tmp) / "all.mid", Path(tmp) / "all.wav"
        mid.write_bytes(midi_file(events))
        subprocess.run(["fluidsynth", "-ni", "-q", "-r", str(rate), "-g", "0.6", "-F", str(out), str(SOUNDFONT), str(mid)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with wave.open(str(out)) as w:
            channels, width = w.getnchannels(), w.getsampwidth()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16 if width == 2 else np.int32)
    mono = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    step, keep = 2 * rate, int(seconds * rate)
    items = []
    for i, (ch, prog, pitch, text) in enumerate(notes):
        clip = mono[i * step:i * step + keep]
        if len(clip) < keep // 2 or not np.abs(clip).max(initial=0) > 100:
            continue  # silent: a program or drum the soundfont lacks
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
            w.writeframes(clip.tobytes())
        items.append(Item(f"gm/{ch}/{prog}/{pitch}", text, audio=buf.getvalue(), audio_suffix=".wav"))
    return items


# --- the registry -----------------------------------------------------------------------------------

TUX = ("tuxpaint-stamps-default", "gcompris-qt-data")
STAMPS_SET = register(RealSet(
    "stamps", ("image", "text"), "photos and drawings", "tune", "text", TUX,
    "Tux Paint stamps (descriptions; GPL-2+ / CC) and GCompris photos (named by file; GPL-3+ / CC-BY-SA)",
    stamps, 800, seed=0))
register(RealSet(
    "stamp-sounds", ("audio", "image", "text"), "sound effects", "tune", "audio", TUX,
    "the stamps with a sound effect (an animal's call, an engine) and GCompris's farm animals", stamp_sounds, 1000,
    seed=0))
register(RealSet(
    "photos-holdout", ("image", "text"), "photos and drawings", "validate", "text", TUX,
    "the Tux Paint stamps and GCompris photos that no tune set uses", photos_holdout, 800))
register(RealSet(
    "openclipart-tune", ("image", "text"), "clip art", "tune", "text", ("openclipart-png", "openclipart-svg"),
    "OpenClipart 0.18 (public domain): PNG renderings, titles from the SVG metadata; one half by key hash",
    openclipart_tune, 1000))
register(RealSet(
    "openclipart-validate", ("image", "text"), "clip art", "validate", "text", ("openclipart-png", "openclipart-svg"),
    "OpenClipart 0.18 (public domain): the other half", openclipart_validate, 1000))
register(RealSet(
    "game-icons", ("image", "text"), "icons", "tune", "text", ("librsvg2-bin",),
    "game-icons.net via npm @iconify-json/game-icons (CC-BY-3.0): icon names as captions", game_icons, 800,
    npm=("@iconify-json/game-icons",)))
register(RealSet(
    "furniture", ("image", "text"), "product renders", "validate", "text", ("sweethome3d-furniture",),
    "Sweet Home 3D furniture libraries (CC-BY / CC0 / free, per library): rendered icons, catalogue names",
    furniture, 800))
register(RealSet(
    "freeorion", ("image", "text"), "game art", "tune", "text", ("freeorion-data",),
    "FreeOrion (CC-BY-SA-3.0 art, GPL-2+ scripts): icons of techs, buildings, species, parts, monsters",
    freeorion, 800))
register(RealSet(
    "wesnoth-sounds", ("audio", "text"), "sound effects", "validate", "audio", ("wesnoth-1.16-data",),
    "Battle for Wesnoth 1.16 (GPL-2+): core sound effects named by file", wesnoth_sounds, 1000))
register(RealSet(
    "scratch-sounds", ("audio", "text"), "sound effects", "tune", "audio", ("scratch",),
    "Scratch 1.4 media (CC-BY-SA-3.0): its sound library named by file and category", scratch_sounds, 1000))
register(RealSet(
    "gm-instruments", ("audio", "text"), "instrument notes", "tune", "audio", ("fluid-soundfont-gm", "fluidsynth"),
    "Fluid R3 General MIDI soundfont (MIT), rendered by fluidsynth: 128 instruments × 3 pitches + drums",
    gm_instruments, 1000))
