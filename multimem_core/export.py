"""Export has one implementation, used by the dashboard and by `multimem export`: pick the ids to drop with a
review.DropRule, then write either the cleaned manifest in the input's own format and columns (an open_clip
training CSV comes back as an open_clip training CSV), WebDataset shards, or the list of removed ids.
No Streamlit import here.

One rule for every format (these and multimem_core.exporters.hf): a cleaned export leaves out the rows the drop
rule picks *and* the rows the run could not load (`unloaded_rows`: RUN/errors.parquet: a missing file, a path
refused as outside the dataset folder, empty text, ...), unless `keep_unloaded`; an id list then names both.
`export_summary` is the one line that says what happened to every input row.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from multimem_core.names import MEDIA_MODALITIES, one_line
from multimem_core.repairs import MODALITIES, apply_repairs, current_repairs, repairs_path
from multimem_core.review import DropRule, ReviewError, ReviewStore, ids_to_drop
from multimem_core.atomic import atomic_write_bytes
from multimem_core.run import RunDir

MANIFEST_FORMATS = ("csv", "tsv", "jsonl", "parquet")
ID_FORMATS = ("ids", "ids-csv", "npy")
SHARD_FORMAT = "shards"  # WebDataset .tar shards written into a folder (multimem_core.data.shard_writer.write_shards)
FORMATS = MANIFEST_FORMATS + (SHARD_FORMAT,) + ID_FORMATS



@dataclass
class Export:
    data: bytes
    format: str
    dropped: list[str]
    kept: int  # rows in the cleaned manifest (for id formats: samples not dropped)
    total: int
    suffix: str
    source: str  # what the rows came from: the original manifest file or samples.parquet
    # manifests and shards: the kept rows, and the folder their media paths / shard references are under
    table: pd.DataFrame | None = None
    root: str = ""
    media_columns: tuple[str, ...] = ()  # manifests: the columns that hold media paths (the input's own names)
    repairs: pd.DataFrame | None = None  # the repairs applied (multimem_core.repairs.apply_repairs), if asked
    # the rows left out because the run could not load them (unloaded_rows: id, row, reason), besides `dropped`
    skipped: pd.DataFrame | None = None
    rule: str = ""  # the drop rule, described (DropRule.describe)
    dataset: str = ""  # the folder of the run's data: write_export writes over no file in it unless told so
    run: RunDir | None = None  # write_export writes over no file its manifest names (referenced_files) unless told so

    def summary(self) -> str:
        return export_summary(total=self.total, dropped=len(self.dropped), skipped=self.skipped, kept=self.kept,
                              rule=self.rule, what=self.format)


def export_summary(*, total: int, dropped: int, skipped: pd.DataFrame | None, kept: int, rule: str = "",
                   what: str = "") -> str:
    """The one line every export prints: what happened to each of the input's `total` rows, e.g.
    "dropped 3 of 60 rows (the 3 samples with the highest multimem); left out 2 more that the run could not
    load (2 missing file; listed in RUN/errors.parquet); kept 55 (csv)". dropped + left out + kept = total."""
    line = f"dropped {dropped} of {total} rows" + (f" ({rule})" if rule else "")
    if skipped is not None and len(skipped):
        # each reason on one short line (a decoder's error can be long), counted as it is shown
        counts = skipped["reason"].map(one_line).value_counts(sort=False)  # most frequent first, ties as listed
        counts = counts.iloc[np.argsort(-counts.to_numpy(), kind="stable")]
        why = ", ".join(f"{n} {reason}" for reason, n in counts.items())
        line += f"; left out {len(skipped)} more that the run could not load ({why}; listed in errors.parquet)"
    return f"{line}; kept {kept}" + (f" ({what})" if what else "")


def unloaded_rows(run: RunDir) -> pd.DataFrame:
    """The input's rows the run could not load and skipped (RUN/errors.parquet), one per id: id, row, reason
    (the first of its reasons). A cleaned export leaves them out: they are broken rows, never scored."""
    errors = run.errors()
    if not len(errors):
        return pd.DataFrame({"id": pd.Series(dtype=str), "row": pd.Series(dtype=int), "reason": pd.Series(dtype=str)})
    rows = pd.to_numeric(errors["row"], errors="coerce").fillna(-1) if "row" in errors else -1  # -1: row unknown
    errors = errors.assign(id=errors["id"].astype(str), row=rows, reason=errors["reason"].fillna("").astype(str))
    first = errors.drop_duplicates("id").reset_index(drop=True)
    return first[["id", "row", "reason"]].astype({"row": int})


def removal(run: RunDir, rule: DropRule, *, store: ReviewStore | None = None,
            keep_unloaded: bool = False) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    """(the ids the rule drops, the unloaded rows left out besides them, every unloaded row): what every export
    format removes from the input. With `keep_unloaded` only the rule's ids are removed."""
    dropped = ids_to_drop(run, rule, store=store)
    unloaded = unloaded_rows(run)
    skipped = unloaded.iloc[:0] if keep_unloaded else unloaded[~unloaded["id"].isin(set(dropped))]
    return dropped, skipped.reset_index(drop=True), unloaded


def input_rows(table_rows: int, row_of: dict[str, int], unloaded: pd.DataFrame) -> int:
    """How many rows the input had: those of the table, plus the unloaded ones the table has no row for
    (samples.parquet holds only the rows the run loaded)."""
    return table_rows + int((~unloaded["id"].isin(set(row_of))).sum())


def manifest_info(run: RunDir) -> dict:
    return run.config().get("manifest") or {}


def default_format(run: RunDir, out: str | Path | None = None) -> str:
    """From the output's suffix when it says (.txt ids, .npy, .jsonl, ...), else the input's own format."""
    suffix = Path(out).suffix.lower() if out else ""
    by_suffix = {".txt": "ids", ".npy": "npy", ".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl",
                 ".parquet": "parquet"}
    input_format = manifest_info(run).get("format")
    if suffix == ".csv" and input_format == "tsv":
        return "tsv"  # an open_clip "csv" that is tab-separated keeps its tabs
    if suffix in by_suffix:
        return by_suffix[suffix]
    if input_format == "webdataset":
        return SHARD_FORMAT  # shards in, shards out
    if input_format == "hf":
        return "hf"  # a Hugging Face dataset in, one out (multimem_core.exporters.hf)
    return input_format if input_format in MANIFEST_FORMATS else "csv"


def build_export(run: RunDir, rule: DropRule, *, format: str | None = None,
                 store: ReviewStore | None = None, repairs: bool = False, keep_unloaded: bool = False) -> Export:
    """The export of `run` without the samples `rule` drops and without the rows the run could not load (unless
    `keep_unloaded`); with `repairs`, the recorded repairs applied to the kept samples (multimem_core.repairs) and
    their log in Export.repairs."""
    from multimem_core.outputs import dataset_of

    export = _build_export(run, rule, format=format, store=store, repairs=repairs, keep_unloaded=keep_unloaded)
    export.dataset, export.run = str(dataset_of(run) or ""), run
    return export


def _build_export(run: RunDir, rule: DropRule, *, format: str | None, store: ReviewStore | None,
                  repairs: bool, keep_unloaded: bool) -> Export:
    fmt = format or default_format(run)
    if fmt not in FORMATS:
        raise ReviewError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if repairs and fmt in ID_FORMATS:
        raise ReviewError(f"repairs change the manifest's rows: export a manifest or shards, not {fmt}")
    dropped, skipped, unloaded = removal(run, rule, store=store, keep_unloaded=keep_unloaded)
    if keep_unloaded and fmt == SHARD_FORMAT and len(unloaded):
        raise ReviewError(f"shards hold only the samples the run loaded: the {len(unloaded)} it could not load have "
                          "no media to copy (errors.parquet); export them without --keep-unloaded, or as a manifest")
    samples = run.samples()
    drop_set = set(dropped) | set(skipped["id"])
    described = rule.describe()
    if fmt in ID_FORMATS:
        ids = samples["id"].astype(str)
        total = input_rows(len(samples), dict.fromkeys(ids), unloaded)
        known = set(ids) | set(unloaded["id"])
        kept = total - len(drop_set & known)
        removed = dropped + skipped["id"].tolist()
        if fmt == "ids":
            data = "".join(f"{i}\n" for i in removed).encode()
        elif fmt == "ids-csv":
            data = _removed_table(run, dropped, rule, skipped).to_csv(index=False).encode()
        else:
            buf = io.BytesIO()
            # DataComp-style: a sorted array of the removed ids (unicode, loads without allow_pickle).
            np.save(buf, np.array(sorted(removed), dtype=str), allow_pickle=False)
            data = buf.getvalue()
        suffix = {"ids": ".txt", "ids-csv": ".csv", "npy": ".npy"}[fmt]
        return Export(data, fmt, dropped, kept, total, suffix, "drop rule", skipped=skipped, rule=described)
    if fmt == SHARD_FORMAT:
        # The run's samples (shard references or media paths) minus the removed; write_export copies the
        # media into new shards. Samples that failed to decode are not in samples.parquet, so not exported.
        from multimem_core.exporters.embedding import media_root

        table, log = samples.reset_index(drop=True), None
        root = media_root(run, table)  # the input's own root, every row's media cells the input's own
        row_of = dict(zip(table["id"].astype(str), range(len(table))))
        total = input_rows(len(table), row_of, unloaded)
        if repairs:
            table, log = apply_repairs(table, row_of, _kept_repairs(run, store, drop_set), {})
        table = _without(table, row_of, drop_set)
        return Export(b"", fmt, dropped, len(table), total, "", str(run.samples_path), table=table,
                      root=str(root), repairs=log, skipped=skipped, rule=described)
    if manifest_info(run).get("format") == "hf":
        raise ReviewError(f"a Hugging Face dataset keeps its media inside its tables, so a {fmt} manifest of it would "
                          "name no files: export with --to hf (or --format shards, or ids)")
    names = manifest_info(run).get("source_columns") or {}
    table, row_of, source = manifest_rows(run, unloaded)
    total = input_rows(len(table), row_of, unloaded)
    log = None
    if repairs:
        table, log = apply_repairs(table, row_of, _kept_repairs(run, store, drop_set),
                                   {m: names.get(m, m) for m in MODALITIES})
    table = _without(table, row_of, drop_set)
    media = tuple(c for c in (names.get(m, m) for m in MEDIA_MODALITIES) if c in table.columns)
    root = str(run.dataset_root)
    # `data` is what a browser downloads to a folder nobody knows: absolute paths open from anywhere here
    data = _encode_table(rebase_media_paths(table, media, root=root, to=None), fmt)
    return Export(data, fmt, dropped, len(table), total, "." + fmt, source, table=table, root=root,
                  media_columns=media, repairs=log, skipped=skipped, rule=described)


def write_export(export: Export, out: str | Path, *, absolute_paths: bool = False, overwrite: bool = False) -> Path:
    """Write the export to `out`. A cleaned manifest's media paths are rewritten relative to the folder of
    `out` (absolute with `absolute_paths`), so that they open from where the file is written.

    Never over the manifest the rows came from or a run's own files (multimem_core.outputs), unless
    `overwrite`; a ReviewError says so before anything is written."""
    from multimem_core.outputs import OutputError, check_output

    try:
        if export.format == SHARD_FORMAT:  # a folder of new shards: never the shards it copies from
            check_output(out, inputs=[export.root], writes="folder")
        else:
            check_output(out, inputs=[export.source], overwrite=overwrite, dataset=export.dataset,
                         references=(lambda: referenced_files(export.run)) if export.run is not None else None)
    except OutputError as e:
        raise ReviewError(str(e)) from e
    out = Path(out).expanduser()
    if export.repairs is not None:  # beside the manifest (or the shard folder): what the repairs changed
        atomic_write_bytes(repairs_path(out), export.repairs.to_csv(index=False).encode())
    if export.format in MANIFEST_FORMATS and export.table is not None:
        to = None if absolute_paths else out.resolve().parent
        table = rebase_media_paths(export.table, export.media_columns, root=export.root, to=to)
        atomic_write_bytes(out, _encode_table(table, export.format))
        return out
    if export.format == SHARD_FORMAT:  # `out` is a folder of .tar shards
        from multimem_core.data.shard_writer import write_shards

        try:
            write_shards(export.table, export.root, out)
        except (ValueError, OSError) as e:
            raise ReviewError(f"cannot write shards into {out}: {e}") from e
        return out
    atomic_write_bytes(out, export.data)
    return out


def rebase_media_paths(table: pd.DataFrame, columns: Sequence[str], *, root: str | Path,
                       to: str | Path | None) -> pd.DataFrame:
    """A copy of `table` whose media cells (paths relative to `root`) resolve from the folder `to`, or are
    absolute when `to` is None. Empty cells, URLs and absolute paths stay as they are; a WebDataset
    reference "shard.tar#key.jpg" has its shard part rebased."""
    root = Path(root).expanduser().resolve()
    out = table.copy()
    out.attrs = dict(table.attrs)  # the separator of an open_clip CSV

    def rebase(value):
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        path, hash_, member = text.partition("#") if ".tar#" in text else (text, "", "")
        if not path.strip() or "://" in path or Path(path).expanduser().is_absolute():
            return value
        full = root / path
        return (str(full) if to is None else os.path.relpath(full, Path(to))) + hash_ + member

    for c in columns:
        out[c] = out[c].map(rebase)
    return out


def _kept_repairs(run: RunDir, store: ReviewStore | None, drop: set[str]) -> pd.DataFrame:
    reps = current_repairs(store or ReviewStore.for_run(run))
    return reps[~reps["sample_id"].astype(str).isin(drop)].sort_values("seq")


def _removed_table(run: RunDir, dropped: Sequence[str], rule: DropRule, skipped: pd.DataFrame) -> pd.DataFrame:
    """The removed ids, the rule's first (with their score), then the unloaded ones; `why` says which."""
    df = pd.DataFrame({"id": list(dropped) + skipped["id"].tolist(),
                       "why": [rule.describe()] * len(dropped) + [f"could not load: {r}" for r in skipped["reason"]]})
    scores = run.scores()
    if scores is not None and rule.score in scores.columns:
        df = df.merge(scores[["id", rule.score]].astype({"id": str}), on="id", how="left")
    return df


def cleaned_manifest(run: RunDir, drop: set[str], unloaded: pd.DataFrame) -> tuple[pd.DataFrame, int, list, str]:
    """The input manifest without the rows of the ids in `drop` (the rule's and the unloaded ones: `removal`,
    which also gives `unloaded`, every unloaded row), with the input's own column names; how many rows the
    input had (`input_rows`); the sample id of each kept row (None where the run names none); its source."""
    table, row_of, source = manifest_rows(run, unloaded)
    id_at = {row: i for i, row in row_of.items()}
    drop_rows = {row_of[i] for i in drop if i in row_of}
    ids = [id_at.get(r) for r in range(len(table)) if r not in drop_rows]
    return _without(table, row_of, drop), input_rows(len(table), row_of, unloaded), ids, source


def referenced_files(run: RunDir) -> dict[Path, str]:
    """Every file the run's input names, resolved wherever it leads (a run made with --allow-outside-root reads
    media outside its dataset folder): the manifest and each media cell of every row, the rows the run could not
    load included -> what it is, for the message of an export that would write over it."""
    from multimem_core.data.paths import BadPathError, resolve_under
    from multimem_core.data.shards import is_member_ref, split_ref

    found: dict[Path, str] = {}

    def add(value, what: str) -> None:
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value).strip()
        text = split_ref(text)[0] if is_member_ref(text) else text  # a shard member: its shard
        if text and "://" not in text:
            try:
                found.setdefault(resolve_under(run.dataset_root, text, allow_outside=True), what)
            except BadPathError:  # a NUL byte or a symlink loop: no file to protect
                pass

    if manifest_info(run).get("path"):
        add(run.stored_path("manifest"), "the run's input manifest")
    try:
        table, _, source = manifest_rows(run)
    except ReviewError:  # the manifest changed since the run: the rows the run holds
        table, source = run.samples(), str(run.samples_path)
    names = manifest_info(run).get("source_columns") or {}
    for column in dict.fromkeys(names.get(m, m) for m in MEDIA_MODALITIES):
        for value in table[column] if column in table.columns else ():
            add(value, f"a file the run's manifest names (its {column} column, {source})")
    for value in run.errors().get("path", ()):
        add(value, f"a file the run's manifest names (a row it could not load, {run.errors_path})")
    return found


def manifest_rows(run: RunDir, unloaded: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, int], str]:
    """The whole input manifest with the input's own column names, each sample's row in it (also of the rows the
    run could not load: `unloaded`, unloaded_rows(run) when the caller has read them), and its source.

    Re-reads the original file when it is still there, so every column survives (also ones the engine
    ignored); otherwise rebuilds the table from samples.parquet with the original names (without the rows the
    run could not load, which samples.parquet does not hold)."""
    info = manifest_info(run)
    samples = run.samples()
    samples["id"] = samples["id"].astype(str)
    path = run.stored_path("manifest") if info.get("path") else None
    if path is not None and not path.exists() and not Path(info["path"]).is_absolute():
        path = run.dataset_root / info["path"]  # a name relative to the dataset's folder (hand-made runs)
    fmt = info.get("format")
    if path is not None and path.is_file() and fmt in MANIFEST_FORMATS:
        original = _read_original(path, fmt)
        if len(original) < len(samples):
            raise ReviewError(f"{path} has {len(original)} rows but the run has {len(samples)} samples: the "
                              "manifest changed after the run; export with --format ids instead")
        unloaded = (unloaded_rows(run) if unloaded is None else unloaded).query("row >= 0")
        row_of = {**dict(zip(unloaded["id"], unloaded["row"])), **dict(zip(samples["id"], samples["row"].astype(int)))}
        return original, row_of, str(path)
    source_columns = info.get("source_columns") or {}
    # the original names in the order the engine recorded them (the file's own order is gone with it)
    standard = list(source_columns) or ["id", "image", "text", "audio", "video", "label", "injected"]
    cols = [c for c in standard if c in samples.columns]
    table = samples[cols].rename(columns=source_columns).reset_index(drop=True)
    return table, dict(zip(samples["id"], range(len(samples)))), str(run.samples_path)


def _without(table: pd.DataFrame, row_of: dict[str, int], drop: set[str]) -> pd.DataFrame:
    drop_rows = {row_of[i] for i in drop if i in row_of}
    keep = np.array([i not in drop_rows for i in range(len(table))], dtype=bool)
    out = table[keep].reset_index(drop=True)
    out.attrs = dict(table.attrs)
    return out


def _read_original(path: Path, fmt: str) -> pd.DataFrame:
    if fmt in ("csv", "tsv"):
        text = path.read_bytes().decode("utf-8-sig")
        header = text.split("\n", 1)[0]
        # the same rule the manifest reader uses: open_clip "csv" files are often tab-separated
        sep = "\t" if fmt == "tsv" or header.count("\t") > header.count(",") else ","
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
        df.attrs["sep"] = sep
        return df
    if fmt == "jsonl":
        text = path.read_bytes().decode("utf-8-sig")
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        return pd.DataFrame.from_records(records).astype(object)
    return pd.read_parquet(path)


def _encode_table(table: pd.DataFrame, fmt: str) -> bytes:
    if fmt in ("csv", "tsv"):
        sep = table.attrs.get("sep", "\t" if fmt == "tsv" else ",")
        if fmt == "tsv":
            sep = "\t"
        return table.to_csv(index=False, sep=sep).encode()
    if fmt == "jsonl":
        lines = []
        for rec in table.to_dict(orient="records"):
            # drop keys a record never had (from.records fills them with NaN)
            rec = {k: v for k, v in rec.items() if not (isinstance(v, float) and np.isnan(v))}
            lines.append(json.dumps(rec, ensure_ascii=False, default=str))
        return ("\n".join(lines) + "\n").encode() if lines else b""
    buf = io.BytesIO()
    table.to_parquet(buf, index=False)
    return buf.getvalue()
