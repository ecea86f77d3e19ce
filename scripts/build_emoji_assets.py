#!/usr/bin/env python3
"""Rebuild assets/emoji/ (the built-in `emoji` dataset's sources) from Debian packages.

    python scripts/build_emoji_assets.py            # apt-get download + dpkg -x into a temp dir (as root)
    python scripts/build_emoji_assets.py --debs D   # reuse .deb files already in folder D

Sources (nothing is installed system-wide; the demo needs none of them at run time):
  fonts-noto-color-emoji   NotoColorEmoji.ttf (OFL-1.1): the pictures, rendered with Pillow
  unicode-data             emoji-test.txt: the emoji list, groups, subgroups, fallback names
  unicode-cldr-core        annotations/en.xml (+ annotationsDerived/en.xml): English names and keywords

Writes, in --out (default: assets/emoji next to this script's repository):
  sprites.png   every emoji as a 64 px RGB tile on a neutral grey background, `columns` tiles a row
  emoji.csv     one row an emoji: sprite, emoji, codepoints, name, keywords, group, subgroup, version
  emoji.json    tile size, columns, count, background colour, source package versions
  LICENSES.md   the licences of the sources, copied from the packages' copyright files
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, features

PACKAGES = ("fonts-noto-color-emoji", "unicode-cldr-core", "unicode-data")
FONT = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "usr/share/unicode/emoji/emoji-test.txt"
CLDR = "usr/share/unicode/cldr/common"
# The only size the CBDT bitmap strike of Noto Color Emoji renders at.
FONT_SIZE = 109
# Groups left out: flags are country codes more than pictures, components are skin tones / hair pieces.
EXCLUDED_GROUPS = {"Flags", "Component"}
SKIN_TONES = range(0x1F3FB, 0x1F400)
BACKGROUND = (224, 224, 224)
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Emoji:
    emoji: str
    codepoints: str  # "1F636 200D 1F32B FE0F", as emoji-test.txt writes it
    name: str
    keywords: str  # "a | b | c", CLDR's own separator
    group: str
    subgroup: str
    version: str  # "E1.0": the Emoji version that introduced it


def fetch_packages(workdir: Path, debs: Path | None) -> tuple[Path, dict[str, str]]:
    """Download (unless `debs` is given) and unpack the three packages; returns (root, {package: version})."""
    if debs is None:
        debs = workdir / "debs"
        debs.mkdir()
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        # apt-get download writes into the current folder; as root it warns about the _apt sandbox, harmlessly.
        subprocess.run(["apt-get", "download", *PACKAGES], check=True, cwd=debs)
    root = workdir / "root"
    versions = {}
    for package in PACKAGES:
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            sys.exit(f"error: no {package}_*.deb in {debs}; run without --debs to download it")
        subprocess.run(["dpkg", "-x", str(found[-1]), str(root)], check=True)
        versions[package] = found[-1].name.split("_")[1]
    return root, versions


def read_emoji_test(path: Path) -> list[tuple[str, str, str, str, str, str]]:
    """(codepoints, emoji, name, group, subgroup, version) of every fully-qualified emoji we keep."""
    line_re = re.compile(r"^([0-9A-F ]+?)\s*;\s*fully-qualified\s*#\s*(\S+)\s+(E\d+\.\d+)\s+(.+)$")
    group = subgroup = ""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif m := line_re.match(line):
            codepoints, _, version, name = m.groups()
            cps = [int(c, 16) for c in codepoints.split()]
            if group in EXCLUDED_GROUPS or any(c in SKIN_TONES for c in cps):
                continue
            rows.append((codepoints, "".join(map(chr, cps)), name, group, subgroup, version))
    return rows


def read_cldr(paths: list[Path]) -> dict[str, tuple[str, str]]:
    """{emoji without U+FE0F: (tts name, keywords)}; later files only fill what earlier ones lack."""
    names: dict[str, str] = {}
    keywords: dict[str, str] = {}
    for path in paths:
        for node in ET.parse(path).getroot().iter("annotation"):
            cp, text = node.get("cp"), (node.text or "").strip()
            target = names if node.get("type") == "tts" else keywords
            target.setdefault(cp, text)
    return {cp: (names.get(cp, ""), keywords.get(cp, "")) for cp in set(names) | set(keywords)}


def collect(root: Path) -> list[Emoji]:
    cldr = read_cldr([root / CLDR / "annotations/en.xml", root / CLDR / "annotationsDerived/en.xml"])
    out = []
    for codepoints, char, test_name, group, subgroup, version in read_emoji_test(root / EMOJI_TEST):
        # CLDR keys drop the emoji presentation selector U+FE0F (see the note in annotations/en.xml).
        name, keywords = cldr.get(char.replace("\ufe0f", ""), ("", ""))
        out.append(Emoji(char, codepoints, name or test_name, keywords or name or test_name,
                         group, subgroup, version))
    return out


def render(font: ImageFont.FreeTypeFont, char: str, tile: int) -> Image.Image:
    """One emoji as an RGB tile; raises if the font has no single glyph (ligature) for it."""
    # Noto's glyph box is 136 x 128; one glyph means one advance. More means Pillow fell back to
    # drawing the pieces of a ZWJ sequence side by side (no raqm, or a sequence the font lacks).
    width = font.getlength(char)
    if width > 140:
        raise ValueError(f"{char!r} renders as {width / 136:.1f} glyphs (no ligature in the font)")
    canvas = Image.new("RGBA", (136, 136), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 4), char, font=font, embedded_color=True)
    if canvas.getbbox() is None:
        raise ValueError(f"{char!r} renders empty")
    # Pillow resizes RGBA with premultiplied alpha, so edges do not pick up the transparent black.
    small = canvas.resize((tile, tile), Image.Resampling.LANCZOS)
    background = Image.new("RGBA", small.size, BACKGROUND + (255,))
    return Image.alpha_composite(background, small).convert("RGB")


LICENSE_HEADER = """# Licences of the emoji dataset's sources

Everything in this folder was generated by `scripts/build_emoji_assets.py` from Debian packages:

| file | derived from | package (version) | licence |
|---|---|---|---|
| `sprites.png` | NotoColorEmoji.ttf, each glyph rendered by Pillow at size 109 and downscaled to {tile} px on a grey background | fonts-noto-color-emoji ({fonts-noto-color-emoji}) | SIL Open Font License 1.1 |
| `emoji.csv` (names, keywords) | CLDR `common/annotations/en.xml` and `common/annotationsDerived/en.xml` | unicode-cldr-core ({unicode-cldr-core}) | Unicode License (Unicode-DFS-2016) |
| `emoji.csv` (list, groups, subgroups, fallback names, versions) | `emoji-test.txt` | unicode-data ({unicode-data}) | Unicode License |

Modification notice (required by the Unicode licence): the Unicode data files were modified: this
folder holds a selection of their rows (fully-qualified emoji without skin-tone variants, flags and
components), reformatted as CSV, not the original files.

The rendered pictures are derived from the Noto Color Emoji font and stay under the SIL Open Font
License 1.1; the font itself is not redistributed here.

Below are the packages' copyright files, verbatim.
"""


def write_licenses(root: Path, out: Path, versions: dict[str, str], tile: int) -> None:
    parts = [LICENSE_HEADER.format(tile=tile, **versions)]
    for package in PACKAGES:
        text = (root / "usr/share/doc" / package / "copyright").read_text(encoding="utf-8")
        parts.append(f"\n## {package} {versions[package]}: /usr/share/doc/{package}/copyright\n\n```\n{text.rstrip()}\n```\n")
    (out / "LICENSES.md").write_text("".join(parts), encoding="utf-8")


def build(root: Path, out: Path, versions: dict[str, str], *, tile: int, columns: int) -> dict:
    if not features.check("raqm"):
        sys.exit("error: Pillow lacks libraqm, so ZWJ sequences would render as separate glyphs; "
                 "use a Pillow wheel from PyPI (it bundles raqm)")
    font = ImageFont.truetype(str(root / FONT), FONT_SIZE)
    kept, tiles = [], []
    for e in collect(root):
        try:
            tiles.append(render(font, e.emoji, tile))
            kept.append(e)
        except ValueError as err:
            print(f"skipped {e.codepoints} {e.name}: {err}", file=sys.stderr)
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * tile, rows * tile), BACKGROUND)
    for i, im in enumerate(tiles):
        sheet.paste(im, ((i % columns) * tile, (i // columns) * tile))
    out.mkdir(parents=True, exist_ok=True)
    sheet.save(out / "sprites.png", optimize=True)
    with open(out / "emoji.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["sprite", "emoji", "codepoints", "name", "keywords", "group", "subgroup", "version"])
        for i, e in enumerate(kept):
            w.writerow([i, e.emoji, e.codepoints, e.name, e.keywords, e.group, e.subgroup, e.version])
    meta = {"tile": tile, "columns": columns, "count": len(kept), "background": list(BACKGROUND),
            "font_size": FONT_SIZE, "packages": versions}
    (out / "emoji.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    write_licenses(root, out, versions, tile)
    return meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "assets" / "emoji")
    p.add_argument("--debs", type=Path, help="folder that already holds the three .deb files (skips apt-get)")
    p.add_argument("--tile", type=int, default=64, help="tile size in pixels (default 64)")
    p.add_argument("--columns", type=int, default=40, help="tiles per sprite-sheet row (default 40)")
    args = p.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emoji-assets-") as tmp:
        root, versions = fetch_packages(Path(tmp), args.debs)
        meta = build(root, args.out, versions, tile=args.tile, columns=args.columns)
    size = sum(f.stat().st_size for f in args.out.iterdir() if f.is_file())
    print(f"wrote {meta['count']} emoji to {args.out} ({size / 1e6:.1f} MB) "
          f"in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
