"""The input layer: manifests, media loaders, decode cache. All data is made in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from multimem_core.data.decode import decode_manifest
from multimem_core.config import ColumnKeys
from multimem_core.data.manifest import ManifestError, read_manifest
from multimem_core.data.media import MediaError, even_indices, load_audio, load_image, load_text, load_video
from multimem_core.config import MediaSpec

SPEC = MediaSpec(image_size=16, audio_sample_rate=8000, audio_seconds=0.5, video_frames=4, video_size=16)


# ------------------------------------------------------------------------------------------ test media


def write_png(path: Path, color=(200, 30, 60), size=(24, 20), mode="RGB") -> Path:
    Image.new("RGB", size, color).convert(mode).save(path)
    return path


def write_wav(path: Path, *, rate=8000, seconds=0.5, channels=1, freq=440.0, subtype="PCM_16") -> Path:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    sf.write(path, np.stack([x] * channels, axis=1), rate, subtype=subtype)
    return path


def write_mp4(path: Path, frames: np.ndarray, fps: int = 8) -> Path:
    """uint8 [T, H, W, 3] -> a tiny H.264 yuv420p mp4 (H, W even)."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def numbered_frames(t: int, h: int = 24, w: int = 32) -> np.ndarray:
    """Frame k is flat grey 20 + 20k, so the decoded brightness tells which frame it was."""
    return np.stack([np.full((h, w, 3), 20 + 20 * k, np.uint8) for k in range(t)])


def make_dataset(root: Path, n: int = 4) -> pd.DataFrame:
    """n good samples in root (media in a subfolder), returned as the manifest table to write."""
    (root / "media").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        write_png(root / "media" / f"{i}.png", color=(10 * i, 100, 200))
        write_wav(root / "media" / f"{i}.wav", freq=200.0 + 100 * i)
        write_mp4(root / "media" / f"{i}.mp4", numbered_frames(6))
        rows.append({"id": f"s{i:02d}", "text": f"sample number {i}", "image": f"media/{i}.png",
                     "audio": f"media/{i}.wav", "video": f"media/{i}.mp4", "label": f"c{i % 2}", "injected": ""})
    return pd.DataFrame(rows)


def write_manifest(df: pd.DataFrame, path: Path) -> Path:
    ext = path.suffix
    if ext == ".csv":
        df.to_csv(path, index=False)
    elif ext == ".tsv":
        df.to_csv(path, index=False, sep="\t")
    elif ext == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif ext == ".parquet":
        df.to_parquet(path, index=False)
    else:
        raise ValueError(ext)
    return path


# -------------------------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_every_format_reads_to_the_same_table(tmp_path, ext):
    df = pd.DataFrame({"id": ["007", "b", "c"], "text": ["None", "a, \"quoted\" caption", "NA"],
                       "image": ["x.png", "y.png", "/abs/z.png"], "label": ["3", "1", "2"], "extra": [1, 2, 3]})
    m = read_manifest(write_manifest(df, tmp_path / f"m{ext}"))
    expected = pd.DataFrame({"id": ["007", "b", "c"], "row": [0, 1, 2], "image": ["x.png", "y.png", "/abs/z.png"],
                             "text": ["None", "a, \"quoted\" caption", "NA"], "label": ["3", "1", "2"]})
    pd.testing.assert_frame_equal(m.table.reset_index(drop=True), expected, check_dtype=False)
    assert m.format == ext[1:]
    assert m.modalities == ["image", "text"]
    assert m.root == tmp_path.resolve()
    assert m.media_path("x.png") == tmp_path.resolve() / "x.png"
    assert m.media_path("/abs/z.png") == Path("/abs/z.png")
    import hashlib

    assert m.sha256 == hashlib.sha256((tmp_path / f"m{ext}").read_bytes()).hexdigest()


def test_integer_labels_stay_integers_in_parquet_and_jsonl(tmp_path):
    df = pd.DataFrame({"text": ["a", "b"], "image": ["a.png", "b.png"], "label": [3, 10]})
    for ext in (".parquet", ".jsonl"):
        m = read_manifest(write_manifest(df, tmp_path / f"m{ext}"))
        assert m.table["label"].tolist() == ["3", "10"]
        assert m.table["id"].tolist() == ["0", "1"]  # no id column: the row number


def test_open_clip_csv_tab_separated_with_column_keys(tmp_path):
    (tmp_path / "train.csv").write_text("filepath\ttitle\nimgs/a.jpg\ta red cat, sitting\nimgs/b.jpg\ta dog\n")
    m = read_manifest(tmp_path / "train.csv", keys=ColumnKeys(image="filepath", text="title"))
    assert m.table["image"].tolist() == ["imgs/a.jpg", "imgs/b.jpg"]
    assert m.table["text"].tolist() == ["a red cat, sitting", "a dog"]
    assert m.table["id"].tolist() == ["0", "1"]
    assert m.source_columns == {"image": "filepath", "text": "title"}
    # The comma-separated flavour of the same file works too.
    (tmp_path / "train2.csv").write_text('filepath,title\nimgs/a.jpg,"a red cat, sitting"\n')
    m2 = read_manifest(tmp_path / "train2.csv", keys=ColumnKeys(image="filepath", text="title"))
    assert m2.table["text"].tolist() == ["a red cat, sitting"]
    # and a spreadsheet's semicolon-separated export (commas inside captions stay in the caption)
    (tmp_path / "train3.csv").write_text("filepath;title\nimgs/a.jpg;a red cat, sitting\n")
    m3 = read_manifest(tmp_path / "train3.csv", keys=ColumnKeys(image="filepath", text="title"))
    assert m3.table["text"].tolist() == ["a red cat, sitting"]


def test_one_modality_asked_for_is_refused_as_too_few(tmp_path):
    df = make_dataset(tmp_path, n=2)
    with pytest.raises(ManifestError, match="--modalities image: .* at least two"):
        read_manifest(write_manifest(df, tmp_path / "m.csv"), modalities=["image"])


def test_modalities_argument_restricts_columns(tmp_path):
    df = pd.DataFrame({"text": ["a"], "image": ["a.png"], "audio": ["a.wav"]})
    m = read_manifest(write_manifest(df, tmp_path / "m.csv"), modalities=["text", "audio"])
    assert m.modalities == ["text", "audio"]
    assert "image" not in m.table.columns


def _error_of(path, **kw) -> str:
    with pytest.raises(ManifestError) as e:
        read_manifest(path, **kw)
    msg = str(e.value)
    assert str(path) in msg, msg
    return msg


def test_manifest_errors_name_file_problem_and_fix(tmp_path):
    ok = pd.DataFrame({"id": ["a", "b", "c", "d"], "text": list("wxyz"), "image": list("1234")})

    # missing requested modality: names the missing column, the columns it has, and the option to fix it
    msg = _error_of(write_manifest(ok, tmp_path / "m.csv"), modalities=["image", "audio"])
    assert "'audio'" in msg and "id, text, image" in msg and "--audio-key" in msg

    # a renamed key that is not there
    msg = _error_of(tmp_path / "m.csv", keys=ColumnKeys(image="filepath"))
    assert "'filepath'" in msg and "--image-key" in msg

    # fewer than two modalities
    msg = _error_of(write_manifest(ok[["id", "text"]], tmp_path / "one.csv"))
    assert "at least two modalities" in msg and "found text" in msg

    # duplicate ids: names the ids and their rows
    dup = ok.assign(id=["a", "b", "a", "b"])
    msg = _error_of(write_manifest(dup, tmp_path / "dup.jsonl"))
    assert "duplicate ids" in msg and "'a' at rows 0, 2" in msg and "'b' at rows 1, 3" in msg

    # unknown extension
    (tmp_path / "m.xlsx").write_bytes(b"whatever")
    msg = _error_of(tmp_path / "m.xlsx")
    assert "unknown manifest extension" in msg and ".csv" in msg

    # unreadable (missing) file
    msg = _error_of(tmp_path / "nope.csv")
    assert "cannot read" in msg

    # unparseable content
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    assert "cannot parse as PARQUET" in _error_of(tmp_path / "bad.parquet")
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "image": "a.png"}\n{"text": oops}\n')
    assert "line 2 is not valid JSON" in _error_of(tmp_path / "bad.jsonl")
    (tmp_path / "bad.csv").write_text('text,image\n"unterminated,a.png\n')
    assert "cannot parse as CSV" in _error_of(tmp_path / "bad.csv")
    (tmp_path / "latin.csv").write_bytes("text,image\ncaf\xe9,a.png\n".encode("latin-1"))
    assert "UTF-8" in _error_of(tmp_path / "latin.csv")

    # empty file and header only
    (tmp_path / "empty.csv").write_text("")
    assert "empty" in _error_of(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("text,image\n")
    assert "no rows" in _error_of(tmp_path / "header.csv")

    # empty id
    msg = _error_of(write_manifest(ok.assign(id=["a", "", "c", "d"]), tmp_path / "noid.csv"))
    assert "empty id in rows 1" in msg


# ----------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "CMYK", "LA", "1", "I;16"])
def test_image_any_mode_to_rgb(tmp_path, mode):
    ext = ".jpg" if mode == "CMYK" else ".png"
    if mode == "P":
        img = Image.new("RGB", (24, 20), (200, 30, 60)).quantize(4)
        img.save(tmp_path / "p.png", transparency=3)  # an index no pixel uses: every pixel stays opaque
        path = tmp_path / "p.png"
    elif mode == "I;16":  # 16-bit greyscale: 40000 of 65535 must come out mid-grey, not clipped white
        Image.fromarray(np.full((20, 24), 40000, np.uint16)).save(tmp_path / "g16.png")
        path = tmp_path / "g16.png"
        with Image.open(path) as img:
            assert img.mode.startswith("I")
        assert abs(int(load_image(path, 16, fit="crop").mean()) - 156) <= 2
    else:
        path = write_png(tmp_path / f"x{ext}", mode=mode)
    out = load_image(path, 16, fit="crop")
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    if mode in ("RGB", "RGBA", "P", "CMYK"):
        assert np.allclose(out.reshape(3, -1).mean(axis=1), (200, 30, 60), atol=8), out.reshape(3, -1).mean(axis=1)
    else:  # greyscale: three equal channels
        assert (out[0] == out[1]).all() and (out[1] == out[2]).all() and out.max() > 0


def test_image_resize_short_side_and_center_crop(tmp_path):
    # 60x20: left third red, middle green, right blue. The center crop keeps only green.
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, :20, 0] = arr[:, 20:40, 1] = arr[:, 40:, 2] = 255
    Image.fromarray(arr).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", 10, fit="crop")
    assert out.shape == (3, 10, 10)
    assert out[1].min() > 200 and out[0, :, 2:8].max() < 40 and out[2, :, 2:8].max() < 40
    # bytes work the same as a path
    assert np.array_equal(load_image((tmp_path / "wide.png").read_bytes(), 10, fit="crop"), out)


def test_image_pad_keeps_the_whole_picture_on_white(tmp_path):
    # the same 60x20 red | green | blue: padded, all three thirds survive, above and below them white
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, :20, 0] = arr[:, 20:40, 1] = arr[:, 40:, 2] = 255
    Image.fromarray(arr).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", 30, fit="pad").astype(int)
    assert out.shape == (3, 30, 30)
    assert (out[:, :8] == 255).all() and (out[:, -8:] == 255).all()  # 30x10 picture centred: rows 10-19
    band = out[:, 12:18]
    assert band[0, :, 2:8].min() > 200 and band[1, :, 12:18].min() > 200 and band[2, :, 22:28].min() > 200
    assert band[1, :, 2:8].max() < 40 and band[0, :, 22:28].max() < 40


def test_square_images_decode_the_same_with_either_fit(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 37, 3), dtype=np.uint8)).save(tmp_path / "sq.png")
    assert np.array_equal(load_image(tmp_path / "sq.png", 16, fit="pad"), load_image(tmp_path / "sq.png", 16, fit="crop"))
    with pytest.raises(ValueError, match="fit"):
        load_image(tmp_path / "sq.png", 16, fit="stretch")


@pytest.mark.parametrize("fit", ["pad", "crop"])
def test_transparent_pixels_are_white(tmp_path, fit):
    # black line art on a transparent ground whose hidden colour is black, as clip-art PNGs often store it
    arr = np.zeros((20, 20, 4), np.uint8)
    arr[9:11, :, 3] = 255  # an opaque black bar; everything else transparent black
    Image.fromarray(arr, "RGBA").save(tmp_path / "art.png")
    out = load_image(tmp_path / "art.png", 20, fit=fit).astype(int)
    assert out[:, :7].min() == 255 and out[:, -7:].min() == 255 and out[:, 9:11].max() < 30


def test_image_errors(tmp_path):
    write_png(tmp_path / "ok.png", size=(64, 64))
    Image.effect_noise((64, 64), 50).save(tmp_path / "noise.jpg", quality=95)
    data = (tmp_path / "noise.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as e:
        load_image(tmp_path / "trunc.jpg", 16, fit="crop")
    assert e.value.reason == "truncated image"
    with pytest.raises(MediaError, match="missing file: .*gone.png"):
        load_image(tmp_path / "gone.png", 16, fit="crop")
    with pytest.raises(MediaError):
        load_image(b"\x00\x01 not an image", 16, fit="crop")


# ------------------------------------------------------------------------------------------------ audio


def test_audio_resampling_and_channel_mixing(tmp_path):
    # 44.1 kHz stereo, 0.5 s, 100 Hz tone in the left channel only -> 8 kHz mono, half amplitude.
    rate, n = 44100, 22050
    t = np.arange(n) / rate
    left = 0.8 * np.sin(2 * np.pi * 100 * t)
    sf.write(tmp_path / "st.wav", np.stack([left, np.zeros(n)], axis=1), rate, subtype="FLOAT")
    out = load_audio(tmp_path / "st.wav", 8000, 4000)
    assert out.shape == (4000,) and out.dtype == np.float32
    ref = 0.4 * np.sin(2 * np.pi * 100 * np.arange(4000) / 8000)
    assert np.abs(out[200:-200] - ref[200:-200]).max() < 0.02
    # longer input: center crop; shorter input: zero pad at the end
    write_wav(tmp_path / "long.wav", rate=8000, seconds=2.0)
    assert load_audio(tmp_path / "long.wav", 8000, 4000).shape == (4000,)
    write_wav(tmp_path / "short.wav", rate=8000, seconds=0.1, channels=6)
    short = load_audio(tmp_path / "short.wav", 8000, 4000)
    assert np.abs(short[:800]).max() > 0.4 and not short[800:].any()
    # flac bytes, odd rate ratio
    write_wav(tmp_path / "odd.flac", rate=11025, seconds=0.5)
    assert load_audio((tmp_path / "odd.flac").read_bytes(), 16000, 8000).shape == (8000,)


def test_audio_errors(tmp_path):
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1), np.float32), 8000)
    for bad in (tmp_path / "zero.wav", b""):
        with pytest.raises(MediaError) as e:
            load_audio(bad, 8000, 4000)
        assert e.value.reason == "zero-length audio"
    with pytest.raises(MediaError, match="undecodable audio"):
        load_audio(np.random.default_rng(0).bytes(2000), 8000, 4000)


# ------------------------------------------------------------------------------------------------ video


def test_video_frames_sampled_evenly(tmp_path):
    write_mp4(tmp_path / "v.mp4", numbered_frames(12))
    out = load_video(tmp_path / "v.mp4", 4, 16)
    assert out.shape == (4, 3, 16, 16) and out.dtype == np.uint8
    brightness = out.reshape(4, -1).mean(axis=1)
    expected = 20 + 20 * even_indices(12, 4)  # frames 1, 4, 7, 10
    assert np.allclose(brightness, expected, atol=6), (brightness, expected)
    # fewer frames than asked: repeat evenly
    write_mp4(tmp_path / "short.mp4", numbered_frames(3))
    out = load_video((tmp_path / "short.mp4").read_bytes(), 8, 16)
    assert out.shape == (8, 3, 16, 16)
    idx = np.rint((out.reshape(8, -1).mean(axis=1) - 20) / 20).astype(int)
    assert idx.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


def test_even_indices():
    assert even_indices(100, 4).tolist() == [12, 37, 62, 87]
    assert even_indices(1, 3).tolist() == [0, 0, 0]


def test_video_errors(tmp_path):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(MediaError) as e:
        load_video(tmp_path / "noise.mp4", 4, 16)
    assert "video" in e.value.reason
    with pytest.raises(MediaError, match="missing file"):
        load_video(tmp_path / "gone.mp4", 4, 16)


def test_text():
    assert load_text("  a cat ") == "a cat"
    for bad in ("", "   ", None, float("nan")):
        with pytest.raises(MediaError, match="empty text"):
            load_text(bad)


# ----------------------------------------------------------------------------------------------- decode


def test_decode_skips_broken_samples_and_keeps_good_ones(tmp_path):
    df = make_dataset(tmp_path, n=4)
    media = tmp_path / "media"
    # broken copies of each kind
    Image.effect_noise((64, 64), 50).save(media / "big.jpg", quality=95)
    (media / "trunc.jpg").write_bytes((media / "big.jpg").read_bytes()[:1500])
    sf.write(media / "zero.wav", np.zeros((0, 1), np.float32), 8000)
    (media / "noise.mp4").write_bytes(np.random.default_rng(1).bytes(4000))
    bad = pd.DataFrame([
        {"id": "trunc", "text": "t", "image": "media/trunc.jpg", "audio": "media/0.wav", "video": "media/0.mp4"},
        {"id": "zero", "text": "t", "image": "media/0.png", "audio": "media/zero.wav", "video": "media/0.mp4"},
        {"id": "noise", "text": "t", "image": "media/0.png", "audio": "media/0.wav", "video": "media/noise.mp4"},
        {"id": "gone", "text": "t", "image": "media/gone.png", "audio": "media/0.wav", "video": "media/0.mp4"},
        {"id": "notext", "text": "", "image": "media/0.png", "audio": "media/0.wav", "video": "media/0.mp4"},
    ])
    full = pd.concat([df.iloc[:2], bad, df.iloc[2:]], ignore_index=True).fillna("")
    m = read_manifest(write_manifest(full, tmp_path / "m.csv"))
    d = decode_manifest(m, ["image", "text", "audio", "video"], SPEC, tmp_path / "cache", progress=False)

    assert d.ids == ["s00", "s01", "s02", "s03"]
    assert d.rows.tolist() == [0, 1, 7, 8]
    assert d.arrays["image"].shape == (4, 3, 16, 16) and d.arrays["image"].dtype == np.uint8
    assert d.arrays["audio"].shape == (4, 4000) and d.arrays["audio"].dtype == np.float32
    assert d.arrays["video"].shape == (4, 4, 3, 16, 16)
    assert d.arrays["text"] == ["sample number 0", "sample number 1", "sample number 2", "sample number 3"]
    # arrays hold the right samples in the right order (image red channel is 10 * i; the centre rows, which the
    # white padding of these non-square pictures does not reach)
    assert np.allclose(d.arrays["image"][:, 0, 6:10].reshape(4, -1).mean(axis=1), [0, 10, 20, 30], atol=2)
    assert np.array_equal(d.arrays["audio"][2], load_audio(media / "2.wav", 8000, 4000))

    errs = d.errors.set_index("id")
    assert list(d.errors.columns) == ["id", "row", "modality", "path", "reason"]
    assert errs.loc["trunc", "modality"] == "image" and errs.loc["trunc", "reason"] == "truncated image"
    assert errs.loc["zero", "reason"] == "zero-length audio" and errs.loc["zero", "row"] == 3
    assert errs.loc["noise", "modality"] == "video"
    assert errs.loc["gone", "reason"] == "missing file" and errs.loc["gone", "path"].endswith("gone.png")
    assert errs.loc["notext", "reason"] == "empty text"
    assert len(d.errors) == 5
    assert json.loads((tmp_path / "cache" / "text.json").read_text()) == d.arrays["text"]
    assert not list((tmp_path / "cache").glob("*.partial.npy"))


def test_decode_cache_reuse_and_invalidation(tmp_path):
    df = make_dataset(tmp_path, n=3)
    path = write_manifest(df, tmp_path / "m.parquet")
    m = read_manifest(path)
    cache = tmp_path / "cache"
    first = decode_manifest(m, ["image", "audio"], SPEC, cache, progress=False)
    assert not first.cache_hit and first.errors.empty
    image = np.array(first.arrays["image"])

    shutil.rmtree(tmp_path / "media")  # a second decode must not touch the media at all
    again = decode_manifest(read_manifest(path), ["audio", "image"], SPEC, cache, progress=False)
    assert again.cache_hit and again.ids == first.ids
    assert np.array_equal(again.arrays["image"], image)
    assert set(again.arrays) == {"image", "audio"}

    # another spec is another key: decoded again (and now every file is missing)
    other = decode_manifest(m, ["image", "audio"], MediaSpec(image_size=8, audio_sample_rate=8000,
                                                             audio_seconds=0.5), cache, progress=False)
    assert not other.cache_hit and other.ids == [] and len(other.errors) == 6
    assert other.arrays["image"].shape == (0, 3, 8, 8)


def test_decode_threads_match_serial(tmp_path):
    df = make_dataset(tmp_path, n=5)
    m = read_manifest(write_manifest(df, tmp_path / "m.jsonl"))
    one = decode_manifest(m, ["image", "video"], SPEC, tmp_path / "c1", progress=False, workers=1)
    two = decode_manifest(m, ["image", "video"], SPEC, tmp_path / "c2", progress=False, workers=2)
    assert one.ids == two.ids
    assert np.array_equal(one.arrays["video"], two.arrays["video"])
    assert np.array_equal(one.arrays["image"], two.arrays["image"])
