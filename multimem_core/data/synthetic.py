"""Shared pieces of the built-in synthetic datasets: media writers and misalignment injection.

The writers produce files that both our decoders and a browser read: PNG, 16-bit PCM WAV, and H.264
MP4 in yuv420p with the index at the front (``+faststart``) so that a page can start playing at once.

``inject_misalignments`` turns some clean samples into known-bad ones by swapping modality columns
between samples whose attributes differ. The kind of each injection lands in the ``injected`` column,
which is the ground truth the MultiMem score is checked against.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

__all__ = [
    "CALLER_APPLIED_KINDS",
    "INJECTED_KINDS",
    "KIND_MODALITY",
    "inject_misalignments",
    "write_mp4",
    "write_png",
    "write_wav",
]

INJECTED_KINDS = ("caption_swap", "audio_swap", "video_swap", "all_contradictory")

# Kinds this module only assigns and records; the dataset builder changes the media itself
# (emoji's dark_video blacks out frames, which is not a column swap).
CALLER_APPLIED_KINDS = ("dark_video",)

# The modality a single-modality kind needs (and, for swaps, replaces).
KIND_MODALITY = {
    "caption_swap": "text",
    "audio_swap": "audio",
    "video_swap": "video",
    "dark_video": "video",
}


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------

# A reused RGB -> yuv420p converter: building a fresh swscale context for every clip costs about as
# much as encoding a 64 px clip. One per thread, because a reformatter is not thread-safe.
_local = threading.local()


def _to_yuv420p(arr: np.ndarray):
    import av
    from av.video.reformatter import VideoReformatter

    if not hasattr(_local, "reformatter"):
        _local.reformatter = VideoReformatter()
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
    return _local.reformatter.reformat(frame, format="yuv420p")


def write_png(path: str | Path, rgb_uint8_hwc: np.ndarray) -> None:
    """Write an RGB uint8 [H, W, 3] array as a PNG."""
    from PIL import Image

    arr = np.asarray(rgb_uint8_hwc)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"write_png({path}): expected uint8 [H, W, 3], got {arr.dtype} {arr.shape}")
    # compress_level 1: the files are tiny either way and level 6 costs time on big builds.
    Image.fromarray(arr, mode="RGB").save(path, format="PNG", compress_level=1)


def write_wav(path: str | Path, mono_float32: np.ndarray, rate: int) -> None:
    """Write mono float audio in [-1, 1] as a 16-bit PCM WAV (values outside are clipped)."""
    import soundfile

    x = np.asarray(mono_float32, dtype=np.float32)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"write_wav({path}): expected a non-empty mono 1-D array, got shape {x.shape}")
    # Through memory: writing to a path makes libsndfile fsync on close, which costs more than the rest.
    buf = io.BytesIO()
    soundfile.write(buf, np.clip(x, -1.0, 1.0), int(rate), subtype="PCM_16", format="WAV")
    Path(path).write_bytes(buf.getvalue())


def write_mp4(path: str | Path, frames_uint8_THW3: np.ndarray, fps: int = 8) -> None:
    """Write RGB uint8 frames [T, H, W, 3] as a browser-playable MP4 (H.264, yuv420p, faststart).

    yuv420p halves the chroma resolution, so H and W must be even; we refuse odd sizes rather than
    silently cropping a pixel.
    """
    import av

    frames = np.asarray(frames_uint8_THW3)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[0] == 0:
        raise ValueError(f"write_mp4({path}): expected uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}")
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"write_mp4({path}): H.264 yuv420p needs even width and height, got {w}x{h}; pad or resize the frames")

    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # One thread: many tiny clips are encoded back to back, and thread start-up would dominate.
        # crf 18 keeps the few pixels of a 64 px clip clean; ultrafast because quality is set by crf.
        stream.options = {"crf": "18", "preset": "ultrafast", "threads": "1"}
        for arr in frames:
            for packet in stream.encode(_to_yuv420p(arr)):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)


# --------------------------------------------------------------------------------------------
# Misalignment injection
# --------------------------------------------------------------------------------------------


def _anchor(modalities: Sequence[str]) -> str:
    """The modality a sample 'is': injections never replace it (image when present)."""
    return "image" if "image" in modalities else modalities[0]


def applicable_kinds(kinds: Sequence[str], modalities: Sequence[str]) -> list[str]:
    """The kinds (in the order given) that make sense for this set of modalities.

    A swap needs its modality and must not replace the anchor; ``all_contradictory`` needs at least two
    non-anchor modalities (with one it would be the same as a single swap).
    """
    known = set(INJECTED_KINDS) | set(CALLER_APPLIED_KINDS)
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise ValueError(f"unknown injected kind(s) {unknown}; known kinds are {sorted(known)}")
    anchor = _anchor(modalities)
    out = []
    for kind in kinds:
        if kind == "all_contradictory":
            ok = sum(m != anchor for m in modalities) >= 2
        else:
            ok = KIND_MODALITY[kind] in modalities and KIND_MODALITY[kind] != anchor
        if ok and kind not in out:
            out.append(kind)
    return out


def _pick_donors(attrs: np.ndarray, i: int, count: int, rng: np.random.Generator) -> list[int]:
    """`count` sample indices whose attributes differ from sample i's and from each other's."""
    used = {attrs[i]}
    donors: list[int] = []
    n = len(attrs)
    for _ in range(count):
        # Rejection sampling is O(1) per draw when most samples differ, which is the normal case;
        # fall back to an exact candidate list when the attribute space is nearly exhausted.
        pick = -1
        for _ in range(64):
            j = int(rng.integers(n))
            if attrs[j] not in used:
                pick = j
                break
        if pick < 0:
            candidates = np.flatnonzero(~np.isin(attrs, list(used)))
            if candidates.size == 0:
                raise ValueError(
                    f"cannot inject a misalignment into row {i}: it needs {count} donor sample(s) whose attributes "
                    f"differ from its own ({attrs[i]!r}) and from each other, but the table has only "
                    f"{len(set(attrs))} distinct attribute value(s); use more varied data or a lower rate"
                )
            pick = int(rng.choice(candidates))
        donors.append(pick)
        used.add(attrs[pick])
    return donors


def inject_misalignments(
    table: pd.DataFrame,
    *,
    rate: float,
    kinds: Sequence[str] = INJECTED_KINDS,
    modalities: Sequence[str],
    attribute_key: str,
    rng: np.random.Generator | int,
) -> pd.DataFrame:
    """Return a copy of `table` in which round(rate * N) samples carry a known misalignment.

    - The samples are drawn at random; kinds go round-robin over those of `kinds` that apply to
      `modalities` (see `applicable_kinds`), so each kind gets an equal share.
    - A single swap (caption_swap, audio_swap, video_swap) replaces that modality's column with the
      value of a donor sample whose `attribute_key` differs, so the swap truly contradicts.
    - all_contradictory replaces every modality but the anchor (image when present), each from a
      different donor; the donors' attributes differ from the sample's and from each other's.
    - Caller-applied kinds (dark_video) are only assigned and recorded; the caller alters the media.
    - Donor values come from the table as given, so a donor that is itself injected still lends its
      original (clean) media. The anchor, `label` and every other column stay the sample's own.

    The kind lands in a string column ``injected`` ("" for clean samples).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"inject rate must lie in [0, 1], got {rate}")
    if attribute_key not in table.columns:
        raise ValueError(f"attribute_key {attribute_key!r} is not a column of the table (columns: {list(table.columns)})")
    modalities = [m for m in modalities if m in table.columns]
    if len(modalities) < 2:
        raise ValueError(f"injection needs at least two modality columns present in the table, got {modalities}")
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng

    out = table.copy()
    out["injected"] = ""
    n = len(out)
    count = int(round(rate * n))
    if count == 0:
        return out
    usable = applicable_kinds(kinds, modalities)
    if not usable:
        raise ValueError(f"none of the kinds {list(kinds)} applies to the modalities {modalities}")

    attrs = table[attribute_key].astype(str).to_numpy()
    anchor = _anchor(modalities)
    others = [m for m in modalities if m != anchor]
    original = {m: table[m].to_numpy(dtype=object) for m in modalities}
    new = {m: original[m].copy() for m in modalities}
    injected = np.full(n, "", dtype=object)

    chosen = rng.choice(n, size=count, replace=False)
    for k, i in enumerate(chosen):
        kind = usable[k % len(usable)]
        injected[i] = kind
        if kind in CALLER_APPLIED_KINDS:
            continue
        targets = others if kind == "all_contradictory" else [KIND_MODALITY[kind]]
        for m, j in zip(targets, _pick_donors(attrs, int(i), len(targets), rng)):
            new[m][i] = original[m][j]

    for m in others:
        out[m] = new[m]
    out["injected"] = injected.astype(str)
    return out


def build_samples(make: Callable, jobs: Sequence, *, workers: int, chunksize: int, desc: str,
                  progress: bool) -> list:
    """`make` over `jobs` in order, on `workers` processes when there is more than a task each, with a
    progress bar. A built-in dataset's samples are independent (each has its own generator and files), so
    the results and files are the same either way. spawn, not fork: the caller may hold torch/OpenMP
    threads, which do not survive a fork; `make` must therefore be picklable (a module-level function)."""
    bar = tqdm(total=len(jobs), desc=desc, unit="sample", disable=not progress)
    results = []
    if workers <= 1 or len(jobs) < 2 * chunksize:
        for job in jobs:
            results.append(make(job))
            bar.update()
    else:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            for result in pool.map(make, jobs, chunksize=chunksize):
                results.append(result)
                bar.update()
    bar.close()
    return results
