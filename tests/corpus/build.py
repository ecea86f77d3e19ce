"""The corpus of bad inputs a scraped multi-modal dataset holds, made by code (no media committed).

Every case is a `Case`: what it is, the answer it must get (kept, skipped and recorded, or a clear stop)
and the words that answer must contain. `make(folder)` writes the case's files under `folder`:

- a per-sample case (kind image, audio, video, text) writes its bad file(s) and returns the manifest
  row of the bad sample; tests/test_corpus.py puts it into a manifest between good samples;
- a manifest case writes a whole manifest and returns its path (`bad` names the ids that must be
  skipped, when the answer is a skip);
- a shards case writes a folder of .tar shards and returns it.

`python tests/corpus/build.py OUT` writes every case under OUT; `mixed_manifest(folder, n, bad_frac)`
makes a large image+text manifest with bad rows mixed in (the 5,000-sample test).
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import sys
import tarfile
import wave
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

GOOD_TEXT = "a red square on a blue background"
OUTSIDE = "outside"  # a folder beside the dataset's folder: what '../' paths reach


@dataclass(frozen=True)
class Case:
    key: str
    kind: str                     # image | audio | video | text | manifest | shards
    title: str                    # what a person would call it
    expect: str                   # kept | skipped | stopped
    says: str = ""                # words the reason / message must contain (case-insensitive)
    make: Callable[[Path], object] = field(default=None, repr=False)
    bad: tuple[str, ...] = ("bad",)  # manifest cases: ids that must be skipped
    stage: str = "decode"         # decode: read + decode; score: up to the protocol (needs the sample count)
    bounded_mb: float | None = None  # resources: decoding it must grow the peak memory by less than this
    note: str = ""                # kept cases: how (for docs/CORPUS.md)


# --------------------------------------------------------------------------------------------- good media

def png(path: Path, size=(32, 32), color=(200, 30, 30), mode="RGB") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def jpeg_bytes(size=(64, 48)) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def wav(path: Path, *, seconds=0.5, rate=16000, channels=1, subtype="PCM_16", fmt=None) -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * rate))) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sf.write(path, np.repeat(tone[:, None], channels, axis=1), rate, subtype=subtype, format=fmt)
    return path


def mp4(path: Path, *, frames=4, size=(32, 32), codec="mpeg4", pts=None) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        st = c.add_stream(codec, rate=8)
        st.width, st.height, st.pix_fmt = size[0], size[1], "yuv420p"
        if pts is not None:  # variable frame rate: explicit timestamps in ms
            st.codec_context.time_base = st.time_base = Fraction(1, 1000)
        if frames == 0:
            c.start_encoding()
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (40 * i) % 255, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[i], Fraction(1, 1000)
            for p in st.encode(f):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    return path


def good_sample(folder: Path, i: int, modalities: tuple[str, ...]) -> dict:
    row = {"id": f"good{i}"}
    if "image" in modalities:
        row["image"] = png(folder / "good" / f"{i}.png", color=(20 * i % 255, 90, 160)).relative_to(folder).as_posix()
    if "audio" in modalities:
        row["audio"] = wav(folder / "good" / f"{i}.wav", seconds=0.3 + 0.1 * i).relative_to(folder).as_posix()
    if "video" in modalities:
        row["video"] = mp4(folder / "good" / f"{i}.mp4").relative_to(folder).as_posix()
    if "text" in modalities:
        row["text"] = f"{GOOD_TEXT} number {i}"
    return row


MODALITIES_OF = {"image": ("image", "text"), "audio": ("audio", "text"), "video": ("video", "text"),
                 "text": ("image", "text")}


def _file(name: str, write: Callable[[Path], object], **row) -> Callable[[Path], dict]:
    """A per-sample case's maker: write the bad file `name` with `write(path)`; the row names it."""

    def make(folder: Path) -> dict:
        path = folder / "bad" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        modality = next(m for m in ("image", "audio", "video") if name.rsplit(".", 1)[-1] in EXT[m])
        return {"id": "bad", modality: f"bad/{name}", "text": GOOD_TEXT, **row}

    return make


EXT = {"image": ("png", "jpg", "gif"), "audio": ("wav", "mp3", "ogg"), "video": ("mp4",)}


# -------------------------------------------------------------------------------------------------- images

def _bomb(path: Path, side: int = 20_000) -> None:
    """A 20,000 × 20,000 1-bit PNG (400 M pixels, 1.2 GB as RGB) of a few hundred KB, written row by row."""
    row = b"\x00" + b"\x00" * math.ceil(side / 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _cmyk(path: Path) -> None:
    from PIL import Image

    Image.new("CMYK", (40, 30), (0, 200, 200, 0)).save(path, "JPEG")


def _sixteen_bit(path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.linspace(0, 65535, 32 * 32, dtype=np.uint16).reshape(32, 32)).save(path)


def _palette(path: Path) -> None:
    from PIL import Image

    img = Image.new("P", (32, 32), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.save(path, transparency=0)


def _animated(path: Path) -> None:
    from PIL import Image

    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def exif_rotated(path: Path) -> None:
    """Stored 40 wide × 20 tall, left half red, right half blue, EXIF orientation 6 (turn 90° clockwise to
    view): as seen, 20 wide × 40 tall, red on top."""
    from PIL import Image

    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, "JPEG", exif=exif, quality=95)


IMAGES = [
    Case("truncated_jpeg", "image", "truncated JPEG", "skipped", "truncated",
         _file("t.jpg", lambda p: p.write_bytes(jpeg_bytes()[: len(jpeg_bytes()) // 2]))),
    Case("zero_byte_png", "image", "zero-byte PNG", "skipped", "empty image file", _file("z.png", lambda p: p.write_bytes(b""))),
    Case("text_as_png", "image", "text file named .png", "skipped", "not an image",
         _file("fake.png", lambda p: p.write_text("this is not a picture\n"))),
    Case("cmyk_jpeg", "image", "CMYK JPEG", "kept", make=_file("cmyk.jpg", _cmyk), note="converted to RGB"),
    Case("png_16bit", "image", "16-bit PNG", "kept", make=_file("16.png", _sixteen_bit), note="rescaled to 8 bits (not clipped to white)"),
    Case("rgba", "image", "RGBA PNG", "kept", make=_file("rgba.png", lambda p: png(p, color=(1, 2, 3, 100), mode="RGBA")), note="alpha dropped (as open_clip does)"),
    Case("palette", "image", "palette PNG with transparency", "kept", make=_file("p.png", _palette), note="through RGBA to RGB"),
    Case("one_pixel", "image", "1×1 image", "skipped", "too small", _file("1.png", lambda p: png(p, size=(1, 1)))),
    Case("bomb", "image", "20,000×20,000 PNG (decompression bomb)", "skipped", "too large", _file("bomb.png", _bomb),
         bounded_mb=32),
    Case("animated_gif", "image", "animated GIF", "kept", make=_file("a.gif", _animated), note="first frame"),
    Case("exif_rotated", "image", "EXIF-rotated JPEG", "kept", make=_file("exif.jpg", exif_rotated), note="EXIF orientation applied (shown as a person sees it)"),
]

# --------------------------------------------------------------------------------------------------- audio


def _zero_wav(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)  # a header, no frames


AUDIO = [
    Case("zero_wav", "audio", "zero-length WAV (header, no frames)", "skipped", "zero-length audio",
         _file("zero.wav", _zero_wav)),
    Case("wav_8k", "audio", "8 kHz WAV", "kept", make=_file("8k.wav", lambda p: wav(p, rate=8000)), note="resampled to the run's rate"),
    Case("wav_96k", "audio", "96 kHz WAV", "kept", make=_file("96k.wav", lambda p: wav(p, rate=96000)), note="resampled to the run's rate"),
    Case("six_channels", "audio", "6-channel WAV", "kept", make=_file("6ch.wav", lambda p: wav(p, channels=6)), note="channels averaged to mono"),
    Case("one_ms", "audio", "1 ms WAV", "kept", make=_file("1ms.wav", lambda p: wav(p, seconds=0.001)), note="zero-padded to the clip length"),
    Case("ten_minutes", "audio", "10-minute WAV (44.1 kHz stereo)", "kept",
         make=_file("10min.wav", lambda p: wav(p, seconds=600, rate=44100, channels=2)), bounded_mb=32, note="only the center clip (plus 50 ms) is read, not ten minutes"),
    Case("text_as_wav", "audio", "text file named .wav", "skipped", "undecodable audio",
         _file("fake.wav", lambda p: p.write_text("RIFF? no, just text\n"))),
    Case("mp3", "audio", "MP3", "kept", make=_file("a.mp3", lambda p: wav(p, fmt="MP3", subtype="MPEG_LAYER_III")), note="decoded by libsndfile"),
    Case("ogg", "audio", "OGG Vorbis", "kept", make=_file("a.ogg", lambda p: wav(p, fmt="OGG", subtype="VORBIS")), note="decoded by libsndfile"),
]

# --------------------------------------------------------------------------------------------------- video


def _audio_only_mp4(path: Path) -> None:
    import av

    with av.open(str(path), "w") as c:
        st = c.add_stream("aac", rate=16000)
        for i in range(8):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for p in st.encode(fr):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


VIDEO = [
    Case("zero_frames", "video", "MP4 with 0 frames", "skipped", "video", _file("zero.mp4", lambda p: mp4(p, frames=0))),
    Case("one_frame", "video", "MP4 with 1 frame", "kept", make=_file("one.mp4", lambda p: mp4(p, frames=1)), note="the frame repeated"),
    Case("garbage_mp4", "video", "undecodable bytes named .mp4", "skipped", "undecodable video",
         _file("junk.mp4", lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096)))),
    Case("audio_only_mp4", "video", "audio-only MP4", "skipped", "no video stream", _file("aonly.mp4", _audio_only_mp4)),
    Case("video_4k", "video", "4K frames (3840×2160)", "kept",
         make=_file("4k.mp4", lambda p: mp4(p, frames=6, size=(3840, 2160))), bounded_mb=150, note="each frame shrunk as it is decoded"),
    Case("vfr", "video", "variable frame rate", "kept",
         make=_file("vfr.mp4", lambda p: mp4(p, frames=8, codec="libx264", pts=[0, 10, 200, 230, 900, 905, 1500, 2000])), note="frames picked evenly over the stream"),
]

# ---------------------------------------------------------------------------------------------------- text


def _text(value: str) -> Callable[[Path], dict]:
    def make(folder: Path) -> dict:
        return {"id": "bad", "image": png(folder / "bad" / "ok.png").relative_to(folder).as_posix(), "text": value}

    return make


TEXT = [
    Case("empty_text", "text", "empty caption", "skipped", "empty text", _text("")),
    Case("whitespace_text", "text", "caption of whitespace only", "skipped", "empty text", _text(" \t  ")),
    Case("long_text", "text", "caption of 100,000 characters", "skipped", "characters", _text("word " * 20_000)),
    Case("emoji_text", "text", "caption of emoji only", "kept", make=_text("🐶🌈🔥"), note="kept as written"),
    Case("nul_text", "text", "caption with a NUL byte", "skipped", "NUL", _text("a cat\x00\x01\x02 on a mat")),
]

# ----------------------------------------------------------------------------------------------- manifests


def _csv(folder: Path, rows: list[dict], name="manifest.csv") -> Path:
    import pandas as pd

    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _goods(folder: Path, n: int = 3) -> list[dict]:
    return [good_sample(folder, i, ("image", "text")) for i in range(n)]


def _outside(folder: Path) -> Path:
    """A real image in a folder beside the dataset's: a refusal is not a missing file."""
    return png(folder.parent / OUTSIDE / "x.png")


def _with_rows(*extra: Callable[[Path], dict], n_good: int = 3) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        return _csv(folder, _goods(folder, n_good) + [f(folder) for f in extra])

    return make


def _row(**cells) -> Callable[[Path], dict]:
    return lambda folder: {"text": GOOD_TEXT, **cells}


def _symlink(folder: Path) -> dict:
    link = folder / "innocent.png"
    link.unlink(missing_ok=True)
    link.symlink_to("/etc/passwd")
    return {"id": "bad", "image": "innocent.png", "text": GOOD_TEXT}


def _dotdot_image(folder: Path) -> dict:
    _outside(folder)
    return {"id": "bad", "image": f"../{OUTSIDE}/x.png", "text": GOOD_TEXT}


def _absolute_image(folder: Path) -> dict:
    return {"id": "bad", "image": str(_outside(folder).resolve()), "text": GOOD_TEXT}


def _missing_column(folder: Path) -> Path:
    rows = [{k: v for k, v in r.items() if k != "image"} | {"picture": r["image"]} for r in _goods(folder)]
    return _csv(folder, rows)


def _duplicate_ids(folder: Path) -> Path:
    rows = _goods(folder, 4)
    rows[3]["id"] = rows[1]["id"]
    return _csv(folder, rows)


def _header_only(folder: Path) -> Path:
    (path := folder / "manifest.csv").write_text("id,image,text\n")
    return path


def _latin1(folder: Path) -> Path:
    rows = _goods(folder, 3)
    lines = ["id,image,text"] + [f"{r['id']},{r['image']},{r['text']}" for r in rows]
    data = ("\n".join(lines[:3]) + "\n").encode() + f"bad,{rows[2]['image']},café crème\n".encode("latin-1") + \
        (lines[3] + "\n").encode()
    (path := folder / "manifest.csv").write_bytes(data)
    return path


def _bom(folder: Path) -> Path:
    rows = _goods(folder)
    text = "id,image,text\n" + "".join(f"{r['id']},{r['image']},{r['text']}\n" for r in rows)
    (path := folder / "manifest.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    return path


def _quoted_newlines(folder: Path) -> Path:
    rows = _goods(folder)
    rows[1]["text"] = "a caption\nover two lines, with \"quotes\", and commas"
    return _csv(folder, rows)


def _parquet_wrong_type(folder: Path) -> Path:
    import pandas as pd

    rows = _goods(folder)
    table = pd.DataFrame({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows],
                          "image": [(folder / r["image"]).read_bytes() for r in rows]})  # bytes, not paths
    table.to_parquet(path := folder / "manifest.parquet", index=False)
    return path


MANIFESTS = [
    Case("missing_column", "manifest", "the image column is missing (named 'picture')", "stopped",
         "needs at least two modalities", _missing_column),
    Case("duplicate_ids", "manifest", "duplicate ids", "stopped", "duplicate ids", _duplicate_ids),
    Case("slash_id", "manifest", "an id with a slash", "kept", make=_with_rows(_row(id="a/b", image="good/0.png")),
         bad=(), note="ids are labels, never file names"),
    Case("dotdot_path", "manifest", "media path ../outside/x.png", "skipped", "outside the dataset folder",
         _with_rows(_dotdot_image)),
    Case("etc_passwd", "manifest", "media path ../../../../etc/passwd", "skipped", "outside the dataset folder",
         _with_rows(_row(id="bad", image="../../../../../../../../etc/passwd"))),
    Case("absolute_outside", "manifest", "absolute media path outside the folder", "skipped",
         "absolute path outside", _with_rows(_absolute_image)),
    Case("absolute_passwd", "manifest", "media path /etc/passwd", "skipped", "absolute path outside",
         _with_rows(_row(id="bad", image="/etc/passwd"))),
    Case("symlink_out", "manifest", "symlink to /etc/passwd", "skipped", "symlink", _with_rows(_symlink)),
    Case("missing_file", "manifest", "media file that does not exist", "skipped", "missing file",
         _with_rows(_row(id="bad", image="nowhere/x.png"))),
    Case("header_only", "manifest", "header only", "stopped", "no rows", _header_only),
    Case("three_rows", "manifest", "3 rows", "stopped", "too few", _with_rows(n_good=3), bad=(), stage="score"),
    Case("mixed_encodings", "manifest", "mixed encodings (a Latin-1 row in UTF-8)", "stopped", "line 4", _latin1),
    Case("bom", "manifest", "UTF-8 with a BOM", "kept", make=_bom, bad=(), note="the BOM is dropped"),
    Case("quoted_newlines", "manifest", "quoted newlines in a caption", "kept", make=_quoted_newlines, bad=(), note="the caption keeps its newline"),
    Case("parquet_wrong_type", "manifest", "Parquet image column of bytes, not paths", "stopped", "not file paths",
         _parquet_wrong_type),
]

# -------------------------------------------------------------------------------------------------- shards


def _shard(folder: Path, name: str, members: list[tuple[str, bytes]]) -> Path:
    path = folder / name
    with tarfile.open(path, "w") as tar:
        for member, data in members:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _good_members(folder: Path, n: int = 3) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        row = good_sample(folder / "src", i, ("image", "text"))
        out += [(f"good{i}.png", (folder / "src" / row["image"]).read_bytes()), (f"good{i}.txt", row["text"].encode())]
    return out


def _truncated_tar(folder: Path) -> Path:
    shards = folder / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    path = _shard(shards, "a-000000.tar", _good_members(folder) + [("bad.jpg", jpeg_bytes((256, 256))),
                                                                    ("bad.txt", GOOD_TEXT.encode())])
    data = path.read_bytes()
    cut = data.index(b"bad.jpg")  # through the middle of the last sample's image
    path.write_bytes(data[: cut + 512 + 2000])
    return shards


def _unpaired(folder: Path) -> Path:
    shards = folder / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    _shard(shards, "a-000000.tar", _good_members(folder) + [("bad.png", png(folder / "b.png").read_bytes())])
    return shards


SHARDS = [
    Case("truncated_tar", "shards", "truncated .tar shard", "stopped", "cannot read the shard", _truncated_tar),
    Case("unpaired_member", "shards", "a member without its pair (image, no caption)", "skipped", "empty text",
         _unpaired),
]

# ------------------------------------------------------------------------ special files and strange paths


def _special(name: str, make_at: Callable[[Path], object]) -> Callable[[Path], dict]:
    """A per-sample case whose image path is something other than a regular file (made by `make_at`)."""

    def make(folder: Path) -> dict:
        path = folder / "bad" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        make_at(path)
        return {"id": "bad", "image": f"bad/{name}", "text": GOOD_TEXT}

    return make


def _symlink_loop(path: Path) -> None:
    other = path.with_name("loop-b.png")
    path.symlink_to(other.name)
    other.symlink_to(path.name)


def _dev_zero_manifest(folder: Path) -> Path:
    (path := folder / "manifest.csv").symlink_to("/dev/zero")
    return path


def _fifo_manifest(folder: Path) -> Path:
    os.mkfifo(path := folder / "manifest.csv")
    return path


def _sparse_member(folder: Path) -> Path:
    """A shard whose last sample's image declares 2 GiB: a sparse file, a few KB on disk."""
    shards = folder / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    path = _shard(shards, "a-000000.tar", _good_members(folder) + [("bad.txt", GOOD_TEXT.encode())])
    with tarfile.open(path) as tar:
        last = tar.getmember("bad.txt")
    end = last.offset_data + -(-last.size // 512) * 512  # where the archive's end blocks start
    info = tarfile.TarInfo("bad.png")
    info.size = 2 * 2**30
    with open(path, "r+b") as f:
        f.seek(end)
        f.write(info.tobuf(format=tarfile.GNU_FORMAT))
        f.truncate(end + 512 + info.size + 1024)  # the member's data and two end blocks: holes, all zeros
    return shards


SPECIAL = [
    Case("fifo_media", "image", "a FIFO (named pipe) named .png", "skipped", "FIFO", _special("f.png", os.mkfifo)),
    Case("folder_media", "image", "a folder named .png", "skipped", "a folder, not a file",
         _special("d.png", lambda p: p.mkdir())),
    Case("device_media", "image", "a symlink to /dev/zero named .png", "skipped", "outside the dataset folder",
         _special("z.png", lambda p: p.symlink_to("/dev/zero"))),
    Case("symlink_loop", "image", "a symlink loop", "skipped", "symlink loop", _special("loop-a.png", _symlink_loop)),
    Case("long_name", "image", "a file name of 300 characters", "skipped", "name too long",
         lambda folder: (folder / "bad").mkdir(exist_ok=True) or {"id": "bad", "image": "bad/" + "n" * 300 + ".png",
                                                                   "text": GOOD_TEXT}),
    Case("nul_path", "image", "a media path with a NUL byte", "skipped", "NUL byte",
         lambda folder: {"id": "bad", "image": "bad/a\x00b.png", "text": GOOD_TEXT}),
    Case("zero_width_text", "text", "caption of zero-width characters only", "skipped", "empty text",
         _text("\u200b\u200c\u200d\ufeff\u2060")),
    Case("control_text", "text", "caption of control characters only", "skipped", "empty text",
         _text("\x01\x02\x1b\x7f\x0b")),
    Case("fifo_manifest", "manifest", "the manifest is a FIFO (named pipe)", "stopped", "FIFO", _fifo_manifest),
    Case("dev_zero_manifest", "manifest", "the manifest is a symlink to /dev/zero", "stopped", "character device",
         _dev_zero_manifest),
    Case("sparse_member", "shards", "a shard member declaring 2 GiB (sparse, tiny on disk)", "skipped",
         "over the", _sparse_member),
]

CASES: list[Case] = IMAGES + AUDIO + VIDEO + TEXT + MANIFESTS + SHARDS + SPECIAL


# ------------------------------------------------------------------------------------------ mixed manifest

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
          "white": (240, 240, 240), "purple": (140, 50, 170)}
SHAPES = ("square", "circle", "triangle")


def mixed_manifest(folder: str | Path, *, n: int = 5000, bad_frac: float = 0.05, seed: int = 0) -> tuple[Path, list[str]]:
    """An image+text CSV of `n` rows, a `bad_frac` share of them bad (the per-sample image and text cases
    and the path escapes above, in turn), spread at random. Returns the manifest and the bad ids."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_bad = int(round(n * bad_frac))
    bad_at = set(rng.choice(n, n_bad, replace=False).tolist())
    bad_makers = [c for c in IMAGES + TEXT if c.expect == "skipped"] + \
                 [c for c in MANIFESTS if c.key in ("dotdot_path", "etc_passwd", "absolute_outside", "symlink_out",
                                                    "missing_file")]
    rows, bad_ids, made = [], [], {}
    for i in range(n):
        sid = f"s{i:05d}"
        if i in bad_at:
            case = bad_makers[len(bad_ids) % len(bad_makers)]
            if case.key not in made:  # each bad file once, shared by its rows
                sub = folder / "cases" / case.key
                sub.mkdir(parents=True, exist_ok=True)
                made[case.key] = _case_row(case, sub, folder)
            rows.append({**made[case.key], "id": sid})
            bad_ids.append(sid)
            continue
        color, shape = rng.choice(list(COLORS)), SHAPES[rng.integers(len(SHAPES))]
        img = Image.new("RGB", (32, 32), (20, 20, 20))
        d = ImageDraw.Draw(img)
        x, y = rng.integers(4, 14, 2)
        box = (int(x), int(y), int(x) + 14, int(y) + 14)
        {"square": d.rectangle, "circle": d.ellipse,
         "triangle": lambda b, fill: d.polygon([(b[0], b[3]), (b[2], b[3]), ((b[0] + b[2]) // 2, b[1])], fill=fill)
         }[shape](box, fill=COLORS[color])
        img.save(folder / "img" / f"{sid}.png")
        rows.append({"id": sid, "image": f"img/{sid}.png", "text": f"a {color} {shape}"})
    import pandas as pd

    pd.DataFrame(rows, columns=["id", "image", "text"]).to_csv(path := folder / "manifest.csv", index=False)
    return path, bad_ids


def _case_row(case: Case, sub: Path, root: Path) -> dict:
    """The bad row of a per-sample or path case, with paths relative to `root` (the manifest's folder)."""
    if case.key == "dotdot_path":
        png(root.parent / OUTSIDE / "x.png")
        return {"image": f"../{OUTSIDE}/x.png", "text": GOOD_TEXT}
    if case.key == "absolute_outside":
        return {"image": str(png(root.parent / OUTSIDE / "x.png").resolve()), "text": GOOD_TEXT}
    if case.kind == "manifest":  # its maker writes a whole manifest in `sub`: take its bad row
        import pandas as pd

        made = pd.read_csv(case.make(sub), dtype=str, keep_default_na=False)
        row = made[made["id"] == "bad"].iloc[0].to_dict()
    else:
        row = case.make(sub)
    image = row["image"]
    if not os.path.isabs(image) and not image.startswith("../"):
        image = (sub / image).relative_to(root).as_posix()
    return {"image": image, "text": row["text"]}


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus-out")
    for c in CASES:
        where = out / c.kind / c.key
        where.mkdir(parents=True, exist_ok=True)
        print(f"{c.kind:9s} {c.key:20s} {c.expect:8s} {c.make(where)}")
    print(json.dumps({"cases": len(CASES)}))
