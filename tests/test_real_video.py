"""The real video set's builder: Wesnoth unit files and numbered sprite frames read into captioned clips,
written as MP4 and swapped among rows, on a tiny package folder made here (no Debian package needed)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_video  # noqa: E402
from real_sets import RealSet, build, save_clip, select  # noqa: E402
from real_video import animation_caption, frame_sequences, unit_names  # noqa: E402

from multimem_core.data.media import load_video  # noqa: E402

UNIT_CFG = '''#textdomain wesnoth-units
[unit_type]
    id=Elvish Archer
    name= _ "Elvish Archer"
    image="units/elves-wood/archer.png"
    [attack_anim]
        [frame]
            image="units/elves-wood/archer-bow-attack[1~4].png:[75*2,100,130]"
        [/frame]
    [/attack_anim]
    [female]
        name= _ "female^Elvish Archer"
        image="units/elves-wood/archer+female.png"
    [/female]
[/unit_type]
'''


def test_unit_names_reads_standing_pictures_not_animation_frames():
    assert unit_names(UNIT_CFG) == {"units/elves-wood/archer.png": "Elvish Archer",
                                    "units/elves-wood/archer+female.png": "Elvish Archer (female)"}


def test_frame_sequences_orders_frames_by_number_and_drops_short_ones():
    files = ["u/archer-die10.png", "u/archer-die2.png", "u/archer-die1.png", "u/archer.png",
             "u/archer-idle-1.png", "u/archer-idle-2.png", "u/other.txt"]
    assert frame_sequences(files) == {"u/archer-die": ["u/archer-die1.png", "u/archer-die2.png", "u/archer-die10.png"]}
    assert set(frame_sequences(files, min_frames=2)) == {"u/archer-die", "u/archer-idle"}


def test_animation_caption_takes_the_longest_unit_and_spells_directions():
    names = {"u/archer.png": "Elvish Archer", "u/archer+female.png": "Elvish Archer (female)",
             "u/arch.png": "Arch"}
    assert animation_caption("u/archer-bow-attack", names) == "Elvish Archer: bow attack."
    assert animation_caption("u/archer+female-ne-melee", names) == "Elvish Archer (female): melee, facing northeast."
    assert animation_caption("u/archer", names) == "Elvish Archer."
    assert animation_caption("u/archery-hit", names) is None  # 'archer' is not a whole word of it
    assert animation_caption("v/archer-die", names) is None    # another folder's picture


def sprite(color: tuple[int, int, int], size: tuple[int, int] = (20, 16)) -> bytes:
    """A transparent picture with a coloured square in its middle."""
    img = Image.new("RGBA", size, (0, 0, 0, 0))
    img.paste(Image.new("RGBA", (8, 8), (*color, 255)), (size[0] // 2 - 4, size[1] // 2 - 4))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_save_clip_writes_every_frame_on_white_on_one_even_canvas(tmp_path):
    frames = (sprite((255, 0, 0)), sprite((0, 0, 255), (23, 17)), sprite((0, 160, 0)))
    save_clip(frames, tmp_path / "c.mp4", fps=3)
    clip = load_video(tmp_path / "c.mp4", 3, 16).transpose(0, 2, 3, 1).astype(int)  # [T, H, W, 3]
    corner, centre = clip[:, 0, 0], clip[:, 8, 8]
    assert (corner > 200).all()  # transparency became white
    assert centre[0, 0] > 150 and centre[0, 2] < 100  # red first, blue second, green last: the order kept
    assert centre[1, 2] > 150 and centre[1, 0] < 100
    assert centre[2, 1] > 100 and centre[2, 0] < 100


def fake_wesnoth(core: Path, units: int = 24) -> Path:
    """A tiny Wesnoth core folder: one unit file per unit, a standing picture and two animations each
    (one too short to count)."""
    rng = np.random.default_rng(0)
    for u in range(units):
        cfg = core / "units" / "folk" / f"Unit{u}.cfg"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        cfg.write_text(f'[unit_type]\n    name= _ "Unit number {u}"\n    image="units/folk/unit{u}.png"\n[/unit_type]\n')
        pics = core / "images" / "units" / "folk"
        pics.mkdir(parents=True, exist_ok=True)
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        (pics / f"unit{u}.png").write_bytes(sprite(colour))
        for i in range(1, 5):
            (pics / f"unit{u}-ne-attack{i}.png").write_bytes(sprite(colour))
        (pics / f"unit{u}-defend1.png").write_bytes(sprite(colour))
    return core


def test_build_of_a_video_set_swaps_the_clips_and_keeps_the_captions(tmp_path):
    core = fake_wesnoth(tmp_path / "core")
    items = real_video.wesnoth_units(np.random.default_rng(0), core=core)
    assert len(items) == 24 and all(len(it.video) == 4 for it in items)
    assert items[0].text == "Unit number 0: attack, facing northeast."
    s = RealSet("fake-video", ("video", "text"), "sprite animations", "tune", "video", (), "a test folder",
                lambda rng: items, 20, seed=3)
    manifest = build(s, tmp_path / "cache")
    table = pd.read_csv(manifest, keep_default_na=False)
    truth = pd.read_csv(manifest.parent / "truth.csv", keep_default_na=False)
    sources = pd.read_csv(manifest.parent / "sources.csv", keep_default_na=False)
    assert list(table.columns) == ["id", "video", "text"]
    assert len(table) == 20 and (truth["injected"] == "video_swap").sum() == 2
    captions = {it.key: it.text for it in items}
    for row, t, src in zip(table.itertuples(), truth.itertuples(), sources.itertuples()):
        assert row.text == captions[src.source]  # captions stay; the clips move
        assert row.video == f"video/{t.swapped_from or row.id}.mp4"
        assert load_video(manifest.parent / row.video, 8, 16).shape == (8, 3, 16, 16)


def test_the_video_sets_are_registered_one_to_tune_one_to_validate():
    tune, validate = select("wesnoth-units,supertux-sprites")
    assert tune.split == "tune" and validate.split == "validate"
    assert all(s.modalities == ("video", "text") and s.swapped == "video" for s in (tune, validate))


SPRITE = '''(supertux-sprite
  (action
    (name "left")
    (fps 14)
    (images "walk-0.png"
            "walk-1.png"
            "walk-2.png"))
  (action (name "right") (mirror-action "left"))
  (action (name "flat-left") (images "flat.png"))
  (action (images "a.png" "b.png" "c.png")))
'''


def test_sprite_actions_lists_pictures_in_order_and_skips_mirrors():
    assert real_video.sprite_actions(SPRITE) == {"left": ["walk-0.png", "walk-1.png", "walk-2.png"],
                                                 "flat-left": ["flat.png"], "default": ["a.png", "b.png", "c.png"]}


def test_sprite_caption_names_the_thing_and_the_action():
    assert real_video.sprite_caption("creatures/mr_iceblock/mr_iceblock.sprite", "melting-left") == "Mr iceblock: melting left."
    assert real_video.sprite_caption("objects/switch/left.sprite", "turnoff") == "Switch left: turnoff."
    assert real_video.sprite_caption("objects/explosion/explosion.sprite", "default") == "Explosion."


def test_supertux_sprites_reads_actions_with_enough_frames_once(tmp_path):
    folder = tmp_path / "images" / "creatures" / "blob"
    folder.mkdir(parents=True)
    for name in ("walk-0", "walk-1", "walk-2", "flat", "a", "b", "c"):
        (folder / f"{name}.png").write_bytes(sprite((200, 40, 40)))
    (folder / "blob.sprite").write_text(SPRITE)
    (folder / "twin.sprite").write_text(SPRITE)  # the same pictures again: not a new row
    items = real_video.supertux_sprites(np.random.default_rng(0), images=tmp_path / "images")
    assert [it.text for it in items] == ["Blob: left.", "Blob."]
    assert items[0].video == tuple(folder / f"walk-{i}.png" for i in range(3))
