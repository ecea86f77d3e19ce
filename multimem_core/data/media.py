"""Decoding one sample: image, audio, video or text into a fixed-size array.

Every loader takes a path or the raw bytes of the file (WebDataset shards stream members out of a tar)
and either returns an array of the exact shape asked for or raises `MediaError` with a short reason.
Callers record the reason and skip the sample; nothing here is fatal for a whole dataset.
"""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np
from av.video.reformatter import VideoReformatter
import soundfile as sf
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy.signal import resample_poly

from ..config import IMAGE_FITS
from .files import file_kind, plain_reason

Source = Path | str | bytes


class MediaError(Exception):
    """A sample that cannot be loaded. `.reason` is short human text ("truncated image", ...)."""

    def __init__(self, reason: str, path: Path | str | None = None):
        self.reason = reason
        self.path = None if path is None else str(path)
        super().__init__(reason if path is None else f"{reason}: {path}")


def _open(src: Source) -> tuple[BinaryIO | str, str | None]:
    """A file object or path for the decoders, plus the path to name in errors (None for bytes)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(src)), None
    path = Path(src)
    kind = file_kind(path)  # a FIFO would block the decoder forever, a device read without end
    if kind != "a regular file":
        raise MediaError(plain_reason(kind), path)
    return str(path), str(path)


def _is_empty(src: Source) -> bool:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return len(src) == 0
    return Path(src).stat().st_size == 0


# ---------------------------------------------------------------------------------------------- image


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparent pixels are composited on white: clip art and icons are drawn to
    be seen on a page, and the colour stored under a transparent pixel (often black) is not part of the
    picture (dropping alpha turned black line art on a transparent ground into a black square)."""
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info) \
            or (img.mode in ("L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16/32-bit greyscale: convert("RGB") would clip everything above 255 to white; rescale instead.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if img.mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr, top = arr - lo, max(hi - lo, 1e-12)
        img = Image.fromarray(np.clip(np.nan_to_num(arr) / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")



def _resize_pad(img: Image.Image, size: int) -> Image.Image:
    """Resize the long side to `size` and centre the picture on a white square: nothing of it is cut off.
    A square image comes out exactly as _resize_center_crop makes it."""
    w, h = img.size
    scale = size / max(w, h)
    fw, fh = max(1, round(w * scale)), max(1, round(h * scale))
    if (fw, fh) == (size, size):
        return img.resize((size, size), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(img.resize((fw, fh), Image.Resampling.BICUBIC), ((size - fw) // 2, (size - fh) // 2))
    return canvas


def _resize_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the short side to `size` and center-crop the long side: one resize of the center square."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) / 2.0, (h - side) / 2.0
    return img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side))


MIN_IMAGE_SIDE = 4  # a 1×1 or 2×2 "image" is a tracking pixel or a placeholder, not a picture of anything


def max_image_pixels() -> int | None:
    """Pixels an image may decode to: Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, which a
    user may raise or set to None). Checked on the header, before any pixel is decoded."""
    return Image.MAX_IMAGE_PIXELS


def load_image(src: Source, size: int, *, fit: str) -> np.ndarray:
    """Decode an image file -> uint8 [3, size, size] RGB. fit "pad": the long side resized and the picture
    centred on white (a drawing keeps its whole outline); "crop": the short side resized, center crop.

    EXIF orientation is applied (a phone photo stands as the person saw it). Refused before decoding:
    images with more pixels than `max_image_pixels()` after JPEG's draft scaling (decompression bombs),
    and images with a side under MIN_IMAGE_SIDE."""
    if fit not in IMAGE_FITS:
        raise ValueError(f"image fit must be one of {', '.join(IMAGE_FITS)}, not {fit!r}")
    fp, path = _open(src)
    if _is_empty(src):
        raise MediaError("empty image file", path)
    limit = max_image_pixels()
    try:
        with Image.open(fp) as img:
            # JPEG can decode at 1/2, 1/4, 1/8 scale directly: much faster for big photos, never below `size`.
            img.draft("RGB", (size, size))
            w, h = img.size  # from the header (after draft: what will really be decoded)
            if limit is not None and w * h > limit:
                raise MediaError(f"image too large ({w}×{h} = {w * h:,} pixels, over the limit of {limit:,}): "
                                 "not decoded", path)
            if min(w, h) < MIN_IMAGE_SIDE:
                raise MediaError(f"image too small ({w}×{h} pixels; a placeholder?)", path)
            img.load()  # force the full decode now, so a truncated file fails here and not later
            rgb = _to_rgb(ImageOps.exif_transpose(img))
            rgb = _resize_pad(rgb, size) if fit == "pad" else _resize_center_crop(rgb, size)
    except UnidentifiedImageError as e:
        raise MediaError("not an image", path) from e
    except Image.DecompressionBombError as e:  # Pillow's own check, in case draft changed nothing above
        raise MediaError(f"image too large ({e}): not decoded", path) from e
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated image" if "truncated" in str(e).lower() else f"undecodable image ({e})"
        raise MediaError(reason, path) from e
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------------- audio


def load_audio(src: Source, sample_rate: int, num_samples: int) -> np.ndarray:
    """Decode an audio file -> float32 [num_samples] mono at `sample_rate`.

    Channels are averaged, the signal is resampled with a polyphase filter, then center-cropped
    when longer or zero-padded at the end when shorter (the sound keeps its onset at t=0).
    """
    fp, path = _open(src)
    if _is_empty(src):
        raise MediaError("zero-length audio", path)
    try:
        with sf.SoundFile(fp) as f:
            rate, frames = int(f.samplerate), f.frames
            start, count = audio_window(frames, rate, sample_rate=sample_rate, num_samples=num_samples)
            if start and f.seekable():
                f.seek(start)
            data = f.read(count, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise MediaError(f"undecodable audio ({e})", path) from e
    if data.shape[0] == 0:
        raise MediaError("zero-length audio", path)
    mono = np.nan_to_num(data.mean(axis=1, dtype=np.float32))
    if rate != sample_rate:
        ratio = Fraction(sample_rate, int(rate))
        mono = resample_poly(mono, ratio.numerator, ratio.denominator).astype(np.float32)
    return _crop_or_pad(mono, num_samples)


def audio_window(frames: int, rate: int, *, sample_rate: int, num_samples: int) -> tuple[int, int]:
    """(first frame, frame count) of a file of `frames` frames at `rate` that decoding reads: the center
    `num_samples` at `sample_rate`, plus a margin for the resampling filter's edges. A 10-minute file
    costs the memory and time of the clip it is cut to, not of ten minutes."""
    need = math.ceil(num_samples * rate / sample_rate)
    margin = max(64, rate // 20)  # 50 ms: far more than resample_poly's filter reaches
    if frames <= need + 2 * margin:
        return 0, frames
    count = need + 2 * margin
    return (frames - count) // 2, count


def _crop_or_pad(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) >= n:
        start = (len(x) - n) // 2
        return np.ascontiguousarray(x[start : start + n], dtype=np.float32)
    out = np.zeros(n, dtype=np.float32)
    out[: len(x)] = x
    return out


# ---------------------------------------------------------------------------------------------- video


def even_indices(available: int, wanted: int) -> np.ndarray:
    """`wanted` indices spread evenly over `available` items: the center of each of `wanted` equal
    segments. With fewer items than wanted, each item repeats about equally often."""
    return np.minimum(((np.arange(wanted) + 0.5) * available / wanted).astype(np.int64), available - 1)


MAX_VIDEO_FRAMES = 108_000  # frames decoded at most: an hour at 30 fps (a sample is a clip; later frames go unread)
KEPT_FRAMES = 512  # thumbnails a decode holds, times two at most; far more than the 64 frames a sample may ask


def load_video(src: Source, frames: int, size: int) -> np.ndarray:
    """Decode a video file with PyAV -> uint8 [frames, 3, size, size].

    Every frame is decoded and every `step`-th one shrunk at once; then `frames` of those are picked evenly
    over the stream and center-cropped. Fewer decodable frames than asked: they repeat evenly. A stream that
    breaks off midway keeps the frames decoded before the break.

    Bounded whatever the file says: at most KEPT_FRAMES * 2 thumbnails are held (when they fill up, every
    other one goes and the step doubles: an hour of video at 256 px held every frame, 21 GB), and decoding
    stops after MAX_VIDEO_FRAMES (a few MB of still frames can claim millions of them).
    """
    fp, path = _open(src)
    if _is_empty(src):
        raise MediaError("empty video file", path)
    thumbs: list[np.ndarray] = []
    try:
        container = av.open(fp, mode="r")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError("undecodable video", path) from e
    try:
        if not container.streams.video:
            raise MediaError("no video stream", path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame + slice threads inside FFmpeg: decoding dominates the cost
        # One scaler for the whole stream: a fresh one per frame (frame.reformat) costs ~4x the decode.
        scaler = VideoReformatter()
        step = 1
        try:
            for seen, frame in enumerate(container.decode(stream)):
                if seen >= MAX_VIDEO_FRAMES:
                    break
                if seen % step == 0:
                    thumbs.append(_shrink_frame(frame, size, scaler))
                    if len(thumbs) >= 2 * KEPT_FRAMES:
                        thumbs, step = thumbs[::2], 2 * step
        except (av.FFmpegError, OSError, ValueError):
            if not thumbs:
                raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError("undecodable video", path) from e
    finally:
        container.close()
    if not thumbs:
        raise MediaError("no decodable video frames", path)
    picked = np.stack([thumbs[i] for i in even_indices(len(thumbs), frames)])
    return np.ascontiguousarray(picked.transpose(0, 3, 1, 2))


def _shrink_frame(frame: Any, size: int, scaler: VideoReformatter) -> np.ndarray:
    """One decoded frame -> uint8 [size, size, 3]: resize the short side with FFmpeg's scaler
    (area filter: no aliasing when shrinking a lot), then crop the center in numpy."""
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    nw, nh = max(size, math.ceil(w * scale - 1e-6)), max(size, math.ceil(h * scale - 1e-6))
    rgb = scaler.reformat(frame, width=nw, height=nh, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (nh - size) // 2, (nw - size) // 2
    return rgb[top : top + size, left : left + size]


# ----------------------------------------------------------------------------------------------- text


def load_text(value: Any) -> str:
    """A caption cell -> stripped str. Missing, NaN or blank -> MediaError("empty text")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise MediaError("empty text")
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = str(value).strip()
    if not text:
        raise MediaError("empty text")
    if not any(_visible(c) for c in text):
        raise MediaError("empty text (only invisible or control characters)")
    if "\x00" in text:
        raise MediaError("text holds a NUL byte (binary data in a caption column?)")
    if len(text) > MAX_TEXT_CHARS:
        raise MediaError(f"text of {len(text):,} characters, over {MAX_TEXT_CHARS:,} (a document, not a caption?)")
    return text


def _visible(char: str) -> bool:
    """A character a person sees: not a control, format (zero-width), separator or unassigned code point."""
    import unicodedata

    return unicodedata.category(char)[0] not in "CZ"


MAX_TEXT_CHARS = 10_000  # captions are short; the towers read only the first 77 tokens anyway
