"""Validate-only sets from packages no tune set reads: 0 A.D.'s sound effects and Xfig's drawing library.

Both readers name a row by its file, made readable, with the folder it sits in where that says what kind of
thing it is ("Arrow metal (impact).", "France (flags, europe)."). A numbered series ("arrow_wood_1" …
"arrow_wood_21", "desktop1" … "desktop5") is one name: the sound set keeps its first two files under that
one caption (as wesnoth-sounds keeps every take of "Wolf hit."), the drawing set its first drawing only.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np

from real_sets import Item, RealSet, register

ZEROAD_ZIP = Path("/usr/share/games/0ad/mods/public/public.zip")
XFIG_LIBRARIES = Path("/usr/share/xfig/Libraries")

SOUND_SECONDS = 8.0   # longer files are ambient loops (rain, a river, a day's birdsong): not short sounds
TAKES_PER_NAME = 2    # files kept of one numbered series, so one series of 20 takes does not fill the set

# 0 A.D.'s abbreviations and run-together words, spelled out
ZEROAD_WORDS = {
    "sel": "selected", "con": "construction", "fs": "footstep", "hstep": "footstep", "mstep": "hoofstep",
    "foorstep": "footstep", "jav": "javelin", "ballist": "ballista", "smove": "ship move", "amb": "ambience",
    "fleshimp": "flesh impact", "fleshstab": "flesh stab", "siegeprojectilehit": "siege projectile hit",
    "swordhit": "sword hit", "arrowfly": "arrow flight", "stonegate": "stone gate", "gamesetup": "game setup",
    "wavecrash": "wave crash", "waverocky": "rocky wave", "windgust": "wind gust", "windleaves": "wind in leaves",
    "windstorm": "wind storm", "snowstorm": "snow storm", "civ": "civic", "iber": "Iberian", "med": "medium",
    "miltary": "military", "gen": "", "mn": "", "singlesteps": "steps", "fieldexpire": "field expire",
    "fruitexpire": "fruit expire", "meatexpire": "meat expire", "treeexpire": "tree expire",
}
# the parts of the alarm sounds' run-together names ("alarmcreatecavalry")
ALARM_WORDS = ("alarm", "attack", "city", "player", "unit", "create", "cavalry", "female", "miltary", "foot",
               "priest", "worker", "defeat", "garrison", "hero", "dead", "join", "no", "resource", "objectives",
               "research", "phase", "tech", "turn", "upgrade", "armory", "victory", "ally", "alert")
# drawings whose names are part numbers or codes ('7400', 'cph_rad', 'sbar2h_l'), not what they show
XFIG_SKIP = ("Welding", "Electronic/Schematic/Classic/simple_", "GUI/", "Knitting/Grids/", "Knitting/Colors/")


def split_words(token: str, vocabulary: tuple[str, ...]) -> list[str]:
    """'alarmcreatecavalry' -> ['alarm', 'create', 'cavalry'] (longest known word first); a token that does
    not split wholly into known words is kept whole."""
    def known(rest: str) -> list[str] | None:
        if not rest:
            return []
        for w in sorted((w for w in vocabulary if rest.startswith(w)), key=len, reverse=True):
            tail = known(rest[len(w):])
            if tail is not None:
                return [w, *tail]
        return None

    return known(token) or [token]


def series_name(stem: str) -> str:
    """The name a numbered file shares with its series: 'arrow_wood_21' -> 'arrow_wood', 'swordhit_12b' ->
    'swordhit', 'desktop5' -> 'desktop'."""
    return re.sub(r"(?:[_\- ]?\d+[a-z]?)+$", "", stem)


def readable(stem: str, words: dict[str, str] | None = None) -> list[str]:
    """A file's name as lower-case words: camelCase, '_' and '-' split; abbreviations spelled out."""
    parts = re.sub(r"([a-z])([A-Z])", r"\1 \2", series_name(stem)).replace("_", " ").replace("-", " ").lower().split()
    out: list[str] = []
    for p in parts:
        for q in (split_words(p, ALARM_WORDS) if words is not None and p.startswith("alarm") else [p]):
            out += (words or {}).get(q, q).split()
    return out


def with_category(name: list[str], category: list[str]) -> str:
    """'Arrow metal (impact).'; the category left out where the name already says it."""
    text = " ".join(name)
    text = text[:1].upper() + text[1:]
    extra = [w for w in category if w not in name]
    return f"{text} ({' '.join(extra)})." if extra else f"{text}."


# --- 0 A.D. (zeroad-sounds) -------------------------------------------------------------------------

def zeroad_caption(path: str) -> str:
    """'audio/attack/impact/arrow_metal_3.ogg' -> 'Arrow metal (impact).'; 'sel_barracks' -> 'Barracks
    selected (building).', 'complete_dock' -> 'Dock complete (building).'"""
    folder, stem = path.rsplit("/", 2)[-2], Path(path).stem
    name = readable(stem, ZEROAD_WORDS)
    if name[:1] in (["selected"], ["complete"]) and len(name) > 1:
        name = name[1:] + name[:1]
    return with_category(name, readable(folder, ZEROAD_WORDS))


def sound_seconds(raw: bytes) -> float:
    import soundfile as sf

    info = sf.info(io.BytesIO(raw))
    return info.frames / info.samplerate


def zeroad_items(archive: Path = ZEROAD_ZIP) -> list[Item]:
    """0 A.D.'s sound effects (the public mod's archive, audio/ less its music and its spoken lines, which are in
    ancient languages): at most TAKES_PER_NAME files of a numbered series, sounds over SOUND_SECONDS left out,
    names without a word of three letters ('c', 'sp') left out."""
    items, takes = [], {}
    with zipfile.ZipFile(archive) as z:
        for path in sorted(n for n in z.namelist() if n.startswith("audio/") and n.endswith((".ogg", ".wav"))):
            if path.startswith(("audio/music/", "audio/voice/")):
                continue
            caption = zeroad_caption(path)
            if (not re.search("[a-z]{3}", " ".join(readable(Path(path).stem, ZEROAD_WORDS)))
                    or takes.get(caption, 0) >= TAKES_PER_NAME):
                continue
            raw = z.read(path)
            try:
                if sound_seconds(raw) > SOUND_SECONDS:
                    continue
            except RuntimeError:  # soundfile's error for a file it cannot decode
                continue
            takes[caption] = takes.get(caption, 0) + 1
            items.append(Item(f"0ad/{path[len('audio/'):-4]}", caption, audio=raw, audio_suffix=Path(path).suffix))
    return items


def zeroad_sounds(rng: np.random.Generator) -> list[Item]:
    return zeroad_items()


# --- Xfig's library (xfig-drawings) -----------------------------------------------------------------

def xfig_caption(rel: Path, folders: bool = True) -> str:
    """'Flags/Europe/france.fig' -> 'France (flags, europe).'; 'Logic/gate_nand.fig' -> 'Gate nand (logic).';
    'Classic', which only sorts the library, and a folder the name repeats ('Maps/Mexico/mexico') are not named.
    Without folders: the name alone ('France.'), as a title names a picture."""
    name = readable(rel.stem)
    folders = [" ".join(readable(f)) for f in rel.parent.parts if f != "Classic"] if folders else []
    folders = [f for f in folders if f != " ".join(name)]
    text = " ".join(name)
    return f"{text[:1].upper()}{text[1:]}" + (f" ({', '.join(folders)})." if folders else ".")


def xfig_items(root: Path = XFIG_LIBRARIES, folders: bool = True) -> list[Item]:
    """Every drawing of the library whose name says what it shows: one per caption (the first of a numbered
    series), the folders of part numbers and codes (XFIG_SKIP) left out. The picture is the .fig file,
    rendered by fig2dev when the set is written."""
    items, seen = [], set()
    for fig in sorted(root.rglob("*.fig")):
        rel = fig.relative_to(root)
        if rel.as_posix().startswith(XFIG_SKIP) or not re.search("[a-z]{3}", " ".join(readable(rel.stem))):
            continue
        caption = xfig_caption(rel, folders)
        if caption not in seen:
            seen.add(caption)
            items.append(Item(f"xfig/{rel.with_suffix('')}", caption, fig))
    return items


def xfig_drawings(rng: np.random.Generator) -> list[Item]:
    return xfig_items()


def xfig_names(rng: np.random.Generator) -> list[Item]:
    return xfig_items(folders=False)


# --- the registry -----------------------------------------------------------------------------------

register(RealSet(
    "zeroad-sounds", ("audio", "text"), "sound effects", "validate", "audio", ("0ad-data",),
    "0 A.D. 0.0.26 (CC-BY-SA-3.0): its sound effects named by file and folder, up to two takes of a name",
    zeroad_sounds, 400))
register(RealSet(
    "xfig-drawings", ("image", "text"), "line drawings", "validate", "text", ("xfig-libs", "fig2dev"),
    "Xfig 3.2.8b's drawing library (xfig licence, permissive; DSP folder public domain), rendered by fig2dev",
    xfig_drawings, 1000))
register(RealSet(
    "xfig-names", ("image", "text"), "line drawings", "validate", "text", ("xfig-libs", "fig2dev"),
    "the same library captioned by the drawing's name alone ('France.'), one drawing per name: a swap no longer "
    "changes the folder a caption names", xfig_names, 1000))
