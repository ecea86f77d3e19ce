"""What an export that copies media BYTES into its output (`--format shards`, `--to hf`) may read: the one home.

A run folder may come from someone else, and both its config.json and its samples.parquet are the sender's. An
export that embeds bytes therefore never reads under config.json's "dataset_root" and never trusts a media cell
of samples.parquet (or of the manifest config.json names): it re-reads the run's input now
(multimem_core.inputs.read_input, as restore.load_run_inputs does), reads under that input's own root, and
refuses every row whose id the input does not have or whose media cell is not the input's own cell for that id.
Otherwise a crafted run (dataset_root: the recipient's home; an image cell: ".ssh/id_rsa") would copy the
recipient's files into an export they then share. Path-only exports (manifests, id lists) copy no bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from multimem_core.names import MEDIA_MODALITIES
from multimem_core.review import ReviewError
from multimem_core.run import RunDir, RunDirError


@dataclass
class EmbedInput:
    """The run's input as re-read now: the folder media bytes are read under, and its own media cells."""

    run: RunDir
    source: object  # the Manifest read_input returned (HFDataset for a Hugging Face dataset)
    root: Path
    cells: dict[str, dict[str, str]]  # media modality -> {sample id: the input's own cell}

    def check(self, ids: Sequence[str | None], table: pd.DataFrame, columns: Mapping[str, str], file: str) -> None:
        """Refuse (ReviewError naming the run and `file`) any row of `table` (the sample `ids[i]`, None where the
        run names no sample for it) with a media cell (`columns`: modality -> its column) that is not the
        input's own cell for that id. Empty cells copy nothing and pass."""
        from multimem_core.data.manifest import cell_text

        for modality, column in columns.items():
            if modality not in MEDIA_MODALITIES or column not in table.columns:
                continue
            own = self.cells.get(modality, {})
            for i, (sample, value) in enumerate(zip(ids, table[column].tolist())):
                text = cell_text(value)
                if not text.strip():
                    continue
                if sample is None or sample not in own:
                    who = "no sample" if sample is None else f"sample {sample!r}, which the input does not have"
                    raise ReviewError(self._refused(file, f"row {i} ({who}) names {text!r} as its {modality}"))
                if own[sample] != text:
                    raise ReviewError(self._refused(file, f"sample {sample!r} names {text!r} as its {modality}, "
                                                          f"but the input has {own[sample]!r} there"))

    def _refused(self, file: str, what: str) -> str:
        return (f"cannot export the run {self.run.path}: {file}: {what}. An export that copies media reads "
                f"only the files the run's input ({self.source.path}) names for its own samples; the run folder "
                "was edited or does not belong to this input. Export refused (export --format ids copies no files)")


def embedding_input(run: RunDir) -> EmbedInput:
    """The run's input re-read now (its config's ScoreConfig, as restore.load_run_inputs reads it); ReviewError
    when it cannot be read."""
    from multimem_core.data.manifest import cell_text
    from multimem_core.inputs import read_input
    from multimem_core.restore import score_config_of

    try:
        cfg = score_config_of(run)
    except (RunDirError, KeyError, TypeError, ValueError) as e:
        raise ReviewError(f"{run.path}: cannot tell what the run's input is ({e}); an export that copies media "
                          "re-reads it") from e
    try:
        source = read_input(cfg.input, keys=cfg.keys, modalities=cfg.modalities)
    except (OSError, ValueError) as e:  # a missing file, or a ManifestError (a ValueError) saying what is wrong
        raise ReviewError(f"the input of {run.path} ({cfg.input}) cannot be read: {e}. An export that copies "
                          "media re-reads the dataset; put it back where the run found it") from e
    table = source.table
    ids = table["id"].astype(str).tolist()
    cells = {m: dict(zip(ids, (cell_text(v) for v in table[m].tolist())))
             for m in MEDIA_MODALITIES if m in table.columns}
    return EmbedInput(run, source, Path(source.root).expanduser().resolve(), cells)


def media_root(run: RunDir, samples: pd.DataFrame) -> Path:
    """The root to read the media of `samples` (RUN/samples.parquet's rows, standard column names) under, once
    every row is checked against the re-read input (EmbedInput.check)."""
    emb = embedding_input(run)
    emb.check(samples["id"].astype(str).tolist(), samples, {m: m for m in MEDIA_MODALITIES},
              str(run.samples_path))
    return emb.root
