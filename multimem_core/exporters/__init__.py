"""Exports to other tools' formats, each behind an optional dependency (pyproject extras):

    hf            a Hugging Face dataset folder (`datasets.load_from_disk`): the input minus the dropped rows
    fiftyone      a FiftyOne dataset with the scores, reasons, flags and the UMAP map      (.[fiftyone])
    spotlight     a Parquet table Renumics Spotlight opens (`spotlight.show(df)`)          (.[spotlight])
    label-studio  a Label Studio task file: the pairs to review, the scores as predictions (.[label-studio])

The manifest, shard and id formats stay in multimem_core.export.
"""

from __future__ import annotations

from pathlib import Path

from multimem_core.review import DropRule, ReviewError, ids_to_drop
from multimem_core.run import RunDir

FORMATS = ("hf", "fiftyone", "spotlight", "label-studio")
NEEDS_DROP = ("hf",)  # the others carry every sample with its scores; a drop rule only marks rows


def export_to(run: RunDir, fmt: str, out: str | Path, rule: DropRule | None, *, keep_unloaded: bool = False) -> str:
    """Write `run` in format `fmt` to `out`; the one-line summary to print. The Hugging Face dataset is a cleaned
    export: it follows multimem_core.export's rule (the rule's rows and the rows the run could not load left out,
    unless `keep_unloaded`) and its summary (export_summary)."""
    if fmt in NEEDS_DROP and rule is None:
        raise ReviewError(f"--to {fmt} needs --drop RULE (e.g. --drop top:100, or --drop flagged)")
    from multimem_core.export import referenced_files
    from multimem_core.outputs import OutputError, check_output, dataset_of

    try:  # never over the run's own files, the input it was made from, a file of its dataset or one it names
        check_output(out, inputs=[run.input_path], writes="file" if fmt in ("spotlight", "label-studio") else "folder",
                     dataset=dataset_of(run), references=lambda: referenced_files(run))
    except OutputError as e:
        raise ReviewError(str(e)) from e
    if fmt == "hf":
        from multimem_core.export import export_summary, removal
        from .hf import write_hf

        dropped, skipped, unloaded = removal(run, rule, keep_unloaded=keep_unloaded)  # errors.parquet, read once
        kept, total = write_hf(run, set(dropped) | set(skipped["id"]), out, unloaded)
        return export_summary(total=total, dropped=len(dropped), skipped=skipped, kept=kept, rule=rule.describe(),
                              what="Hugging Face dataset")
    dropped = set(ids_to_drop(run, rule)) if rule is not None else set()
    if fmt == "fiftyone":
        from .tools import write_fiftyone

        return write_fiftyone(run, dropped, out)
    if fmt == "spotlight":
        from .tools import write_spotlight

        return write_spotlight(run, dropped, out)
    if fmt == "label-studio":
        from .tools import write_label_studio

        return write_label_studio(run, dropped, out)
    raise ReviewError(f"unknown export target {fmt!r}; use one of {', '.join(FORMATS)}")
