"""Serving media safely: the dashboard sends the browser only regular files under the folder it was started
on (no Streamlit import here).

The serving root comes from the app's command line (`multimem app RUN --data-root DIR`, default the folder
it was started in), never from the run folder: a run is data a user may receive from someone else, and its
config.json or samples.parquet may name any folder and any file. The run's recorded dataset folder is only
where relative media paths are looked up (`base`); whatever a cell says, the resolved path must lie under
the serving root (multimem_core.data.paths.resolve_under), checked before anything opens the file, and is
then read as a regular file of bounded size (multimem_core.data.files).
"""

from __future__ import annotations

from pathlib import Path

from multimem_core.data.files import MEDIA_LIMIT, UnreadableFileError, file_kind, plain_reason, read_regular_bounded
from multimem_core.data.paths import BadPathError, OutsideRootError, resolve_under

MIME = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".m4a": "audio/mp4",
    ".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
}
MAX_BYTES = 64 * 1024 * 1024  # a sample's media file larger than this is not pushed to the browser
assert MAX_BYTES <= MEDIA_LIMIT
SERVE_HINT = "start the app with --data-root DIR on the folder that holds the media"


class MediaPathError(ValueError):
    """The path cannot be shown; the message says why (outside the served folder, missing, not a file, too large)."""


def located(root: str | Path, value: str, base: str | Path | None = None) -> str:
    """The path a cell names: absolute as written, else relative to `base` (the run's dataset folder), else
    relative to `root`. Only where to look: whether it may be read is `root`'s business."""
    text = str(value or "").strip()
    if not text or base is None or Path(text).expanduser().is_absolute():
        return text
    return str(Path(base) / text)


def safe_media_path(root: str | Path, value: str, *, base: str | Path | None = None) -> Path:
    """The file a media cell names, resolved, guaranteed to lie under `root` (the folder the app serves).

    Raises MediaPathError for an empty cell, a path that leads out of `root` (.., absolute, symlink), a NUL
    byte, a symlink loop, a missing path or one that is not a regular file (a FIFO, a device, a folder);
    nothing is opened by these checks."""
    text = str(value or "").strip()
    if not text:
        raise MediaPathError("no file given")
    root = Path(root).resolve()
    try:
        path = resolve_under(root, located(root, text, base))
    except OutsideRootError as e:
        raise MediaPathError(f"{text!r} is outside the folder the app serves ({root}); not shown ({SERVE_HINT})") \
            from e
    except BadPathError as e:
        raise MediaPathError(f"{text!r}: {e.reason}; not shown") from e
    kind = file_kind(path)
    if kind == "missing":
        raise MediaPathError(f"{text!r} does not exist under {root}")
    if kind != "a regular file":
        raise MediaPathError(f"{text!r}: {plain_reason(kind)}; not shown")
    return path


def read_media(root: str | Path, value: str, *, base: str | Path | None = None) -> tuple[bytes, str]:
    """(bytes, mime type) of a media file under `root`, of a WebDataset member ("shard.tar#key.jpg") of a
    shard under `root`, or of media held in a Hugging Face data file under `root` ("data.arrow#image/7");
    MediaPathError as safe_media_path, and for what is not a regular file, is missing or is larger than
    MAX_BYTES (read at most that much)."""
    text = str(value or "").strip()
    if "#" in text:  # a reference into a data file or a shard (their readers import the decoding stack: seconds)
        referenced = _read_reference(root, text, base)
        if referenced is not None:
            return referenced
    path = safe_media_path(root, text, base=base)
    try:
        blob = read_regular_bounded(path, MAX_BYTES, "media file")
    except UnreadableFileError as e:
        raise MediaPathError(f"{text!r}: {e.reason}" + ("" if "not read" in e.reason else "; not shown")) from e
    except OSError as e:
        raise MediaPathError(f"{text!r}: cannot read it ({e.strerror or e})") from e
    return blob, MIME.get(path.suffix.lower(), "application/octet-stream")


def _read_reference(root: str | Path, text: str, base: str | Path | None) -> tuple[bytes, str] | None:
    """read_media for "data.arrow#image/7" or "shard.tar#key.jpg"; None when `text` is neither."""
    from multimem_core.data import hf_media as hf
    from multimem_core.data.shard_members import read_member
    from multimem_core.data.shards import ShardMemberError, is_member_ref

    if hf.is_ref(text):
        file, rest = text.rsplit("#", 1)
        try:
            safe_media_path(root, file, base=base)  # the data file itself must lie under the served folder
            blob = hf.read_hf_media(root, located(root, file, base) + "#" + rest, max_bytes=MAX_BYTES)
        except hf.HFMediaError as e:
            raise MediaPathError(str(e)) from e
        return blob, hf.mime_of(blob)
    if is_member_ref(text):
        shard, member = text.rsplit("#", 1)
        try:
            safe_media_path(root, shard, base=base)  # the shard itself must lie under the served folder
            blob = read_member(root, located(root, shard, base) + "#" + member, max_bytes=MAX_BYTES)
        except ShardMemberError as e:
            raise MediaPathError(str(e)) from e
        return blob, MIME.get(Path(member).suffix.lower(), "application/octet-stream")
    return None


def check_image(blob: bytes) -> None:
    """MediaPathError unless `blob` is an image Pillow recognises within its pixel limit (the browser would
    show a broken image, and Streamlit refuses bytes it cannot identify)."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as img:
            w, h = img.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and w * h > limit:
                raise MediaPathError(f"image too large ({w}×{h} pixels); not shown")
    except UnidentifiedImageError as e:
        raise MediaPathError("not an image (the file's bytes are no image format Pillow knows)") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, MediaPathError):
            raise
        raise MediaPathError(f"undecodable image ({e})") from e
