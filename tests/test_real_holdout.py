"""The validate-only sets' readers (0 A.D.'s sounds, Xfig's drawings) on tiny package layouts made here:
names made readable, numbered series and long or nameless files left out, drawings rendered by fig2dev
(skipped with a reason where fig2dev is missing). No Debian package needed."""

from __future__ import annotations

import io
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_holdout  # noqa: E402
from real_holdout import series_name, split_words, xfig_caption, xfig_items, zeroad_caption, zeroad_items  # noqa: E402
from real_sets import RealSet, build, render_fig  # noqa: E402


def test_names_made_readable():
    assert series_name("arrow_wood_21") == "arrow_wood" and series_name("swordhit_12b") == "swordhit"
    assert series_name("desktop5") == "desktop" and series_name("3darrow") == "3darrow"
    assert split_words("alarmcreatemiltaryfoot", real_holdout.ALARM_WORDS) == ["alarm", "create", "miltary", "foot"]
    assert split_words("alarmzebra", real_holdout.ALARM_WORDS) == ["alarmzebra"]  # not wholly known: kept whole
    assert zeroad_caption("audio/attack/impact/arrow_metal_3.ogg") == "Arrow metal (impact)."
    assert zeroad_caption("audio/interface/select/building/sel_civ_center.ogg") == "Civic center selected (building)."
    assert zeroad_caption("audio/interface/alarm/alarmcreatemiltaryfoot.ogg") == "Alarm create military foot."
    assert zeroad_caption("audio/actor/fauna/death/death_horse_2.ogg") == "Death horse."  # the folder said already
    assert xfig_caption(Path("Flags/Europe/france.fig")) == "France (flags, europe)."
    assert xfig_caption(Path("Maps/Mexico/mexico.fig")) == "Mexico (maps)."
    assert xfig_caption(Path("Electronic/Schematic/Classic/capacitor_polar.fig")) == "Capacitor polar (electronic, schematic)."
    assert xfig_caption(Path("ProcessFlowsheet/CentrifugalPump.fig")) == "Centrifugal pump (process flowsheet)."


def wav(seconds: float, rate: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, 0.5 * np.sin(2 * np.pi * 440 * t), rate, format="WAV")
    return buf.getvalue()


def test_zeroad_items_keep_two_takes_of_a_name_and_leave_out_long_nameless_music_and_voice(tmp_path):
    archive = tmp_path / "public.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("arrow_wood_1", "arrow_wood_2", "arrow_wood_3"):
            z.writestr(f"audio/attack/impact/{name}.wav", wav(0.3))
        z.writestr("audio/attack/fire/c_1.wav", wav(0.3))                  # no name
        z.writestr("audio/ambient/weather/rain.wav", wav(real_holdout.SOUND_SECONDS + 1))  # an ambient loop
        z.writestr("audio/music/theme.wav", wav(0.3))
        z.writestr("audio/voice/greek/civ/attack.wav", wav(0.3))
        z.writestr("audio/interface/select/building/sel_dock.wav", wav(1.0))
        z.writestr("audio/interface/select/building/sel_broken.wav", b"RIFF not a sound")
        z.writestr("art/textures/wood.png", b"")
    items = zeroad_items(archive)
    assert [it.key for it in items] == ["0ad/attack/impact/arrow_wood_1", "0ad/attack/impact/arrow_wood_2",
                                        "0ad/interface/select/building/sel_dock"]
    assert [it.text for it in items] == ["Arrow wood (impact).", "Arrow wood (impact).", "Dock selected (building)."]
    assert items[0].audio_suffix == ".wav" and sf.info(io.BytesIO(items[0].audio)).duration == pytest.approx(0.3)


BOX_FIG = """#FIG 3.2  Produced by xfig version 3.2.8b
Landscape
Center
Metric
A4
100.00
Single
-2
1200 2
2 2 0 1 0 0 50 -1 20 0.000 0 0 -1 0 0 5
\t 0 0 {w} 0 {w} 600 0 600 0 0
"""


def fig_library(root: Path) -> Path:
    for rel, w in (("Furniture/desk1.fig", 1200), ("Furniture/desk2.fig", 600), ("Welding/1011.fig", 1200),
                   ("GUI/sbar2h_l.fig", 1200), ("Flags/Europe/france.fig", 90), ("Logic/7400.fig", 1200),
                   ("Arrows/straight_arrow3.fig", 2400)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(BOX_FIG.format(w=w))
    return root


def test_xfig_items_one_per_caption_codes_left_out(tmp_path):
    items = xfig_items(fig_library(tmp_path / "Libraries"))
    assert [(it.key, it.text) for it in items] == [("xfig/Arrows/straight_arrow3", "Straight arrow (arrows)."),
                                                   ("xfig/Flags/Europe/france", "France (flags, europe)."),
                                                   ("xfig/Furniture/desk1", "Desk (furniture).")]
    assert items[0].image == tmp_path / "Libraries" / "Arrows" / "straight_arrow3.fig"
    (tmp_path / "Libraries" / "Maps" / "Europe").mkdir(parents=True)
    (tmp_path / "Libraries" / "Maps" / "Europe" / "france.fig").write_text(BOX_FIG.format(w=500))
    named = xfig_items(tmp_path / "Libraries", folders=False)  # the map of France has the flag's name: one kept
    assert [(it.key, it.text) for it in named] == [("xfig/Arrows/straight_arrow3", "Straight arrow."),
                                                   ("xfig/Flags/Europe/france", "France."), ("xfig/Furniture/desk1", "Desk.")]


@pytest.mark.skipif(shutil.which("fig2dev") is None, reason="fig2dev missing (apt-get install fig2dev)")
def test_drawings_are_rendered_to_about_256_pixels_and_written_as_a_set(tmp_path):
    lib = fig_library(tmp_path / "Libraries")
    for rel in ("Flags/Europe/france.fig", "Arrows/straight_arrow3.fig"):  # a tiny and a large drawing
        with Image.open(io.BytesIO(render_fig(lib / rel))) as img:
            assert 200 <= max(img.size) <= 300
            grey = np.asarray(img.convert("L"))
        assert grey[grey.shape[0] // 2, grey.shape[1] // 2] < 60  # the filled box is black
    for i, name in enumerate(("bed", "chair", "desk", "lamp", "sofa", "stool", "table", "bench", "shelf", "clock",
                              "piano", "mirror", "rug", "sink", "bath", "oven", "crib", "cot", "fan", "vase")):
        (lib / "Furniture" / f"{name}.fig").write_text(BOX_FIG.format(w=300 + 60 * i))
    s = RealSet("tiny-xfig", ("image", "text"), "line drawings", "validate", "text", (), "a test folder",
                lambda rng: xfig_items(lib), 20, seed=0)
    manifest = build(s, tmp_path / "cache")
    table = pd.read_csv(manifest, keep_default_na=False)
    truth = pd.read_csv(manifest.parent / "truth.csv", keep_default_na=False)
    assert len(table) == 20 and (truth["injected"] == "caption_swap").sum() == 2
    for path in table["image"]:
        with Image.open(manifest.parent / path) as im:
            assert im.format == "JPEG" and 200 <= max(im.size) <= 300


def test_registered_as_validate_sets():
    from real_sets import select

    sets = {s.name: s for s in select("validate")}
    assert sets["zeroad-sounds"].modalities == ("audio", "text") and sets["zeroad-sounds"].swapped == "audio"
    assert sets["xfig-drawings"].modalities == ("image", "text") and sets["xfig-drawings"].swapped == "text"
    assert sets["xfig-names"].modalities == ("image", "text") and sets["xfig-names"].swapped == "text"
