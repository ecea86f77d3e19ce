"""Exports for the review tools people already use: every sample with its scores, reason, review label and
map position, in the form each tool opens. Each tool is an optional dependency (pyproject extras); only the
FiftyOne export needs its library to write, the others write plain files their libraries read.

Media: a file under the dataset's root is named by its absolute path; media held in a table or a shard is
written once into a folder beside the output (`OUT.media/`), so the tool can open it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pandas as pd

from multimem_core.review import ReviewError, ReviewStore
from multimem_core.atomic import atomic_write_bytes
from multimem_core.names import MEDIA_MODALITIES
from multimem_core.run import RunDir

MAX_BYTES = 256 * 2**20
EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp", "image/bmp": ".bmp",
       "audio/wav": ".wav", "audio/flac": ".flac", "audio/ogg": ".ogg", "audio/mpeg": ".mp3", "video/mp4": ".mp4",
       "video/webm": ".webm", "video/x-msvideo": ".avi"}


def review_table(run: RunDir, dropped: set[str]) -> pd.DataFrame:
    """One row per sample: the input columns, every score, the reason, the reviewer's label and reason, whether
    the drop rule picks it (`drop`), and its place on the map (`umap_x`, `umap_y`)."""
    from multimem_core.diagnose import reasons

    samples = run.samples()
    samples["id"] = samples["id"].astype(str)
    table = samples
    scores = run.scores(heldout=True)
    if scores is not None:
        table = table.merge(scores.drop(columns=[c for c in ("role",) if c in scores]).astype({"id": str}),
                            on="id", how="left")
        table = table.merge(reasons(run).astype({"id": str}), on="id", how="left")
    current = ReviewStore.for_run(run).current()
    review = current.rename(columns={"sample_id": "id", "label": "review_label", "reason": "review_reason"})
    table = table.merge(review[["id", "review_label", "review_reason"]], on="id", how="left")
    proj = run.projection()
    if proj is not None:
        table = table.merge(proj[["id", "x", "y"]].astype({"id": str}).rename(columns={"x": "umap_x", "y": "umap_y"}),
                            on="id", how="left")
    table["drop"] = table["id"].isin(dropped)
    for c in ("reason", "review_label", "review_reason"):
        if c in table:
            table[c] = table[c].fillna("")
    return table


def media_bytes(root: Path, cell: str) -> tuple[bytes, str]:
    """The bytes and media type behind one media cell (a path under the root, a shard member, table media)."""
    from multimem_core.data import hf_media
    from multimem_core.data.shard_members import read_member
    from multimem_core.data.shards import ShardMemberError, is_member_ref

    try:
        if is_member_ref(cell):
            blob = read_member(root, cell, max_bytes=MAX_BYTES)
        elif hf_media.is_ref(cell):
            blob = hf_media.read_hf_media(root, cell, max_bytes=MAX_BYTES)
        else:
            return local_path(root, cell).read_bytes(), ""
    except (ShardMemberError, hf_media.HFMediaError) as e:
        raise ReviewError(f"cannot export {cell!r}: {e}") from e
    return blob, hf_media.mime_of(blob)


def local_path(root: Path, cell: str) -> Path:
    """A media path under the root, checked as the engine checks it."""
    from multimem_core.data.paths import OutsideRootError, resolve_under

    try:
        path = resolve_under(root, cell)
    except OutsideRootError as e:
        raise ReviewError(f"cannot export {cell!r}: {e}") from e
    if not path.is_file():
        raise ReviewError(f"cannot export {cell!r}: no such file under {root}")
    return path


def media_files(run: RunDir, table: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """`table` with each media cell replaced by an absolute file path: files under the root as they are, media
    held in tables or shards written into `folder` (one file per sample and modality)."""
    from multimem_core.data import hf_media
    from multimem_core.data.shards import is_member_ref

    root = run.dataset_root
    out = table.copy()
    for m in [m for m in MEDIA_MODALITIES if m in table.columns]:
        paths = []
        for i, cell in enumerate(table[m].fillna("").astype(str)):
            if not cell.strip():
                paths.append("")
            elif is_member_ref(cell) or hf_media.is_ref(cell):
                blob, mime = media_bytes(root, cell)
                path = folder / m / f"{i:07d}{EXT.get(mime, '.bin')}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(blob)
                paths.append(str(path.resolve()))
            else:
                paths.append(str(local_path(root, cell)))
        out[m] = paths
    return out


def _fresh(out: Path) -> Path:
    out = Path(out).expanduser()
    if out.exists():
        raise ReviewError(f"{out} already exists: choose a new --out (export never writes over files)")
    return out


# ----------------------------------------------------------------------------------------------- Spotlight


def write_spotlight(run: RunDir, dropped: set[str], out: str | Path) -> str:
    """A Parquet table Renumics Spotlight opens (`spotlight OUT` or `spotlight.show(pd.read_parquet(OUT))`):
    media as file paths, every score, reason, label, drop and map position as columns."""
    out = _fresh(out)
    table = media_files(run, review_table(run, dropped), out.with_name(out.name + ".media"))
    buf = table.to_parquet(index=False)
    atomic_write_bytes(out, buf)
    return f"{len(table)} samples with their scores for Renumics Spotlight (open it: spotlight {out})"


# -------------------------------------------------------------------------------------------- Label Studio


def label_config(modalities: list[str]) -> str:
    """The labeling interface: the sample's modalities, a clean/noisy/unsure choice and a reason."""
    tags = {"image": "Image", "text": "Text", "audio": "Audio", "video": "Video"}
    shown = [m for m in ("image", "video", "audio", "text") if m in modalities]
    lines = [f'  <{tags[m]} name="{m}" value="${m}"/>' for m in shown]
    lines += [f'  <Choices name="quality" toName="{shown[0]}" choice="single" showInline="true">',
              '    <Choice value="clean"/>', '    <Choice value="noisy"/>', '    <Choice value="unsure"/>',
              '  </Choices>', f'  <TextArea name="reason" toName="{shown[0]}" placeholder="why"/>']
    return "<View>\n" + "\n".join(lines) + "\n</View>\n"


def write_label_studio(run: RunDir, dropped: set[str], out: str | Path) -> str:
    """A Label Studio task file (JSON list): one task per scored sample, most suspicious first, the MultiMem
    scores in its data and its MultiMem rank as the prediction's score (Label Studio wants [0, 1]: 1 = the
    most memorized; sort by it to review the worst first) and, with a drop rule, the rule's choice as
    the predicted label. The labeling config is written beside it (OUT.xml). Files under the dataset root are
    named as Label Studio's local-files URLs (LOCAL_FILES_DOCUMENT_ROOT = the dataset root); media held in
    tables or shards go inline as data: URLs."""
    from multimem_core.data import hf_media
    from multimem_core.data.shards import is_member_ref

    out = _fresh(out)
    table = review_table(run, dropped)
    if "multimem" in table:
        table = table.dropna(subset=["multimem"]).sort_values("multimem", ascending=False)
        table["rank_score"] = table["multimem"].rank(pct=True)
    modalities = [m for m in run.modalities if m in table.columns]
    root = run.dataset_root
    tasks = []
    for row in table.itertuples(index=False):
        rec = row._asdict()
        data = {"id": rec["id"]}
        for m in modalities:
            cell = str(rec[m] or "")
            if m == "text" or not cell:
                data[m] = cell
            elif is_member_ref(cell) or hf_media.is_ref(cell):
                blob, mime = media_bytes(root, cell)
                data[m] = f"data:{mime};base64," + base64.b64encode(blob).decode()
            else:
                rel = local_path(root, cell).relative_to(root).as_posix()
                data[m] = "/data/local-files/?d=" + rel
        for c in [c for c in table.columns if c == "multimem" or c.startswith(("pair__", "contrib__", "base__"))]:
            data[c] = None if pd.isna(rec[c]) else float(rec[c])
        data["reason"] = rec.get("reason", "")
        result = []
        if dropped:
            result = [{"from_name": "quality", "to_name": modalities[0], "type": "choices",
                       "value": {"choices": ["noisy" if rec["drop"] else "clean"]}}]
        tasks.append({"data": data, "predictions": [{"model_version": "multimem", "score": rec.get("rank_score"),
                                                     "result": result}]})
    atomic_write_bytes(out, json.dumps(tasks, indent=1).encode())
    config = out.with_suffix(".xml")
    atomic_write_bytes(config, label_config(modalities).encode())
    return (f"{len(tasks)} tasks for Label Studio (labeling config {config}; media under {root}: "
            f"LOCAL_FILES_SERVING_ENABLED=true LOCAL_FILES_DOCUMENT_ROOT={root})")


# ------------------------------------------------------------------------------------------------ FiftyOne


def write_fiftyone(run: RunDir, dropped: set[str], out: str | Path) -> str:
    """A FiftyOne dataset directory (FiftyOneDataset format, media copied in): one sample per image (or video),
    every score, the reason, the review label and `drop` as fields, the UMAP map as a visualization
    ("multimem_umap"). Load it with fo.Dataset.from_dir(OUT, dataset_type=fo.types.FiftyOneDataset)."""
    try:
        import fiftyone as fo
    except ImportError as e:
        raise ReviewError("--to fiftyone needs fiftyone: pip install -e '.[fiftyone]'") from e
    out = _fresh(out)
    medium = next((m for m in ("image", "video") if m in run.modalities), None)
    if medium is None:
        raise ReviewError("--to fiftyone needs an image or video modality (FiftyOne samples are images or videos)")
    staging = out.with_name(out.name + ".staging")
    table = media_files(run, review_table(run, dropped), staging)
    dataset = fo.Dataset()
    try:
        samples = []
        for rec in table.to_dict("records"):
            sample = fo.Sample(filepath=rec[medium])
            for k, v in rec.items():
                if k in (medium, "row") or (isinstance(v, float) and pd.isna(v)):
                    continue
                sample[k if k != "id" else "sample_id"] = v.item() if hasattr(v, "item") else v
            samples.append(sample)
        dataset.add_samples(samples)
        if {"umap_x", "umap_y"} <= set(table.columns) and table["umap_x"].notna().all():
            import fiftyone.brain as fob

            fob.compute_visualization(dataset, points=table[["umap_x", "umap_y"]].to_numpy(), brain_key="multimem_umap")
        dataset.export(export_dir=str(out), dataset_type=fo.types.FiftyOneDataset, export_media=True)
    finally:
        dataset.delete()
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return f"{len(table)} samples for FiftyOne (load: fo.Dataset.from_dir({str(out)!r}, dataset_type=fo.types.FiftyOneDataset))"
