"""Serving media safely: only files under the dataset's root are ever read (no Streamlit import here).

A manifest cell is untrusted input. `../../etc/passwd`, an absolute path elsewhere, or a symlink that
leads out of the root would let a crafted dataset make the dashboard read and display any file the
app's user can read; `safe_media_path` refuses those with the engine's own rule
(multimem_core.data.paths.resolve_under), before anything opens the file. The dashboard never serves
outside the root, whatever the run was scored with.
"""

from __future__ import annotations

from pathlib import Path

from multimem_core.data.paths import OutsideRootError, resolve_under

MIME = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".m4a": "audio/mp4",
    ".mp4": "video/mp4", ".webm": "video/webm", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
}
MAX_BYTES = 64 * 1024 * 1024  # a sample's media file larger than this is not pushed to the browser


class MediaPathError(ValueError):
    """The path cannot be shown; the message says why (escapes the root, missing, too large)."""


def safe_media_path(root: str | Path, value: str) -> Path:
    """The file a manifest cell names, resolved, guaranteed to lie under `root`.

    Raises MediaPathError for an empty cell, a path that escapes the root (.., absolute, symlink),
    or a file that does not exist. The escaping check runs before anything touches the file."""
    text = str(value or "").strip()
    if not text:
        raise MediaPathError("no file given")
    root = Path(root).resolve()
    try:
        resolved = resolve_under(root, text)
    except OutsideRootError as e:
        raise MediaPathError(f"{e}; not shown") from e
    if not resolved.is_file():
        raise MediaPathError(f"{text!r} does not exist under {root}")
    if resolved.stat().st_size > MAX_BYTES:
        raise MediaPathError(f"{text!r} is larger than {MAX_BYTES // 2**20} MiB; open it from disk")
    return resolved


def read_media(root: str | Path, value: str) -> tuple[bytes, str]:
    """(bytes, mime type) of a media file under `root`, of a WebDataset member ("shard.tar#key.jpg") of a
    shard under `root`, or of media held in a Hugging Face data file under `root` ("data.arrow#image/7");
    MediaPathError as safe_media_path."""
    from multimem_core.data import hf_media as hf
    from multimem_core.data.shard_members import read_member
    from multimem_core.data.shards import ShardMemberError, is_member_ref

    text = str(value or "").strip()
    if hf.is_ref(text):
        try:
            blob = hf.read_hf_media(root, text, max_bytes=MAX_BYTES)
        except hf.HFMediaError as e:
            raise MediaPathError(str(e)) from e
        return blob, hf.mime_of(blob)
    if is_member_ref(text):
        try:
            blob = read_member(root, text, max_bytes=MAX_BYTES)
        except ShardMemberError as e:
            raise MediaPathError(str(e)) from e
        return blob, MIME.get(Path(text.rsplit("#", 1)[1]).suffix.lower(), "application/octet-stream")
    path = safe_media_path(root, text)
    return path.read_bytes(), MIME.get(path.suffix.lower(), "application/octet-stream")
