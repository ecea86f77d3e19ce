"""Real video sets: where their rows come from and the registry entries (beside real_sources.py's pictures
and sounds).

wesnoth-units: Battle for Wesnoth's unit animations. Each unit's sprite sheet lies in the package as
numbered pictures (`units/elves-wood/archer-bow-attack1.png` … `4.png`); the unit files (`units/*/*.cfg`)
name the unit whose standing picture is `units/elves-wood/archer.png` ("Elvish Archer"). A row is one
numbered sequence of at least MIN_FRAMES pictures, written as a short MP4 clip, captioned with the unit's
English name and what the file name says the animation is ("Elvish Archer: bow attack.").

supertux-sprites: SuperTux's animations. Each `.sprite` file lists its actions, each with a name and its
pictures in order; a row is one action of at least MIN_FRAMES pictures, captioned with the sprite's name
(its file and folder) and the action's ("Mr iceblock: melting left."). Side-view platformer art, a
different look from Wesnoth's, so it serves as the validate set.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from real_sets import Item, RealSet, register
from real_sources import words_from_name

WESNOTH_CORE = Path("/usr/share/games/wesnoth/1.16/data/core")
SUPERTUX_IMAGES = Path("/usr/share/games/supertux2/images")
SUPERTUX_FOLDERS = ("creatures", "objects", "powerups", "worldmap")  # not particles, tiles, backgrounds, the editor
MIN_FRAMES = 3  # fewer pictures are a pose, not an animation

_NAME = re.compile(r'^\s*name\s*=\s*_\s*"([^"]+)"')
_IMAGE = re.compile(r'^\s*image\s*=\s*"?(units/[^":~\[\]]+\.png)"?\s*$')
_FRAME = re.compile(r"^(.+?)-?(\d+)$")
DIRECTIONS = {"n": "north", "ne": "northeast", "e": "east", "se": "southeast", "s": "south", "sw": "southwest",
              "w": "west", "nw": "northwest"}


def unit_names(cfg_text: str) -> dict[str, str]:
    """A unit file's standing pictures -> the unit's English name: the `image=` that follows a translatable
    `name=` ('female^Elvish Archer' -> 'Elvish Archer (female)'). Animation frames (with `~`, `:` or
    `[1~4]`) are not standing pictures."""
    out: dict[str, str] = {}
    name = None
    for line in cfg_text.splitlines():
        if m := _NAME.match(line):
            name = m.group(1)
        elif (m := _IMAGE.match(line)) and name and m.group(1) not in out:
            female = name.startswith("female^")
            out[m.group(1)] = name.split("^", 1)[-1] + (" (female)" if female else "")
    return out


def frame_sequences(files: list[str], min_frames: int = MIN_FRAMES) -> dict[str, list[str]]:
    """Picture paths (relative, '/'-separated) -> {stem: the numbered frames in order} for the stems with
    at least min_frames numbered pictures ('a/archer-die1.png' … -> 'a/archer-die')."""
    seqs: dict[str, dict[int, str]] = {}
    for f in files:
        folder, _, base = f.rpartition("/")
        if not base.endswith(".png") or not (m := _FRAME.match(base[:-4])):
            continue
        seqs.setdefault(f"{folder}/{m.group(1)}", {})[int(m.group(2))] = f
    return {stem: [frames[i] for i in sorted(frames)] for stem, frames in sorted(seqs.items())
            if len(frames) >= min_frames}


def animation_caption(stem: str, names: dict[str, str]) -> str | None:
    """'units/elves-wood/archer-bow-attack' -> 'Elvish Archer: bow attack.'; the unit is the longest standing
    picture's stem the sequence's stem starts with, in the same folder; None when no unit claims it.
    Direction letters become words ('ne' -> 'facing northeast')."""
    best = None
    for image, name in names.items():
        base = image[:-4]
        if (stem == base or stem.startswith(base + "-")) and (best is None or len(base) > len(best[0])):
            best = (base, name)
    if best is None:
        return None
    words = [w for w in stem[len(best[0]):].replace("-", " ").replace("_", " ").split() if w]
    facing = [DIRECTIONS[w] for w in words if w in DIRECTIONS]
    action = " ".join(w for w in words if w not in DIRECTIONS)
    text = best[1] + (f": {action}" if action else "") + (f", facing {facing[0]}" if facing else "")
    return text + "."


def wesnoth_units(rng: np.random.Generator, core: Path = WESNOTH_CORE) -> list[Item]:
    """Every named unit animation of Wesnoth's core data, in path order."""
    names: dict[str, str] = {}
    for cfg in sorted((core / "units").rglob("*.cfg")):
        for image, name in unit_names(cfg.read_text(encoding="utf-8", errors="replace")).items():
            names.setdefault(image, name)
    images = core / "images"
    files = sorted(str(p.relative_to(images)) for p in (images / "units").rglob("*.png"))
    items = []
    for stem, frames in frame_sequences(files).items():
        caption = animation_caption(stem, names)
        if caption:
            items.append(Item(f"wesnoth/{stem}", caption, video=tuple(images / f for f in frames)))
    return items


_ACTION_NAME = re.compile(r'\(name\s+"([^"]*)"\)')
_IMAGES = re.compile(r'\(images\s+((?:"[^"]*"\s*)+)\)')


def sprite_actions(text: str) -> dict[str, list[str]]:
    """A SuperTux .sprite file -> {action name: its pictures in order}; actions that only mirror another
    (no images of their own) are not listed; an unnamed action is 'default'."""
    out: dict[str, list[str]] = {}
    for block in re.split(r"\(action\b", text)[1:]:  # each action's text runs to the next action
        name, images = _ACTION_NAME.search(block), _IMAGES.search(block)
        if images:
            out.setdefault(name.group(1) if name else "default", re.findall(r'"([^"]+)"', images.group(1)))
    return out


def sprite_caption(sprite: str, action: str) -> str:
    """'creatures/mr_iceblock/mr_iceblock.sprite', 'melting-left' -> 'Mr iceblock: melting left.'; the
    folder's name comes first where the file's does not hold it ('objects/switch/left' -> 'Switch left')."""
    folder, stem = words_from_name(Path(sprite).parent.name), words_from_name(Path(sprite).stem)
    thing = stem if folder in stem else f"{folder} {stem}".strip()
    action = "" if action == "default" else words_from_name(action)
    return thing.capitalize() + (f": {action}" if action else "") + "."


def supertux_sprites(rng: np.random.Generator, images: Path = SUPERTUX_IMAGES) -> list[Item]:
    """Every action of at least MIN_FRAMES pictures of SuperTux's creatures, objects, power-ups and world
    map sprites; an action whose pictures another already showed is left out."""
    items, seen = [], set()
    for folder in SUPERTUX_FOLDERS:
        for sprite in sorted((images / folder).rglob("*.sprite")):
            actions = sprite_actions(sprite.read_text(encoding="utf-8", errors="replace"))
            for action, pictures in actions.items():
                frames = tuple(sprite.parent / p for p in pictures)
                if len(frames) < MIN_FRAMES or frames in seen or not all(f.is_file() for f in frames):
                    continue
                seen.add(frames)
                rel = str(sprite.relative_to(images))
                items.append(Item(f"supertux/{rel}/{action}", sprite_caption(rel, action), video=frames))
    return items


register(RealSet(
    "wesnoth-units", ("video", "text"), "sprite animations", "tune", "video", ("wesnoth-1.16-data",),
    "Battle for Wesnoth 1.16 (GPL-2+): unit animations (numbered sprite frames as MP4 clips), captioned with the "
    "unit's name from its unit file and the animation's file name", wesnoth_units, 600))
register(RealSet(
    "supertux-sprites", ("video", "text"), "sprite animations", "validate", "video", ("supertux-data",),
    "SuperTux 0.6.3 (GPL-3+ art, a few files CC-BY-SA or public domain per its copyright file): the actions of its "
    "sprites as MP4 clips, captioned with the sprite's and the action's names", supertux_sprites, 600))
