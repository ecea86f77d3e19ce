"""The run directory: the contract between the engine and the dashboard (DESIGN §6). Its main files below;
every file and the command that writes it: docs/RUN_DIRECTORY.md.

    RUN/config.json          how the run was made (enough to reproduce it)
    RUN/samples.parquet      one row a sample: id, role, input columns, label, injected
    RUN/scores.parquet       one row a scored sample: multimem, cmc_in, cmc_out, pair__a__b, contrib__m, base__*;
                             then one row an H sample (role H, cmc_out only, the rest NaN)
    RUN/diagnostics/         sim_in.npy / sim_out.npy: [N_scored, n, n] modality similarity, rows as the scored rows
    RUN/embeddings/<model>/  <modality>.npy (float16, clean view) and ids.txt (row order)
    RUN/projection.parquet   id, x, y (UMAP of the joint embedding), optional x__<m>, y__<m>
    RUN/models/<model>/      checkpoint.pt (training state, resumable), model.safetensors (final weights)
    RUN/mitigation/<name>/   config.json, metrics.json
    RUN/review.sqlite        flags
    RUN/errors.parquet       samples that could not be loaded and why
    RUN/timings.json         seconds per stage
    RUN/progress.json        what the engine is doing now (stage, epoch, samples/s, eta), for the New-run page
Everything here is plain files; the app reads them through `RunDir` and never imports training code.
Writes go to a temporary name and are renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import atomic_write_json, atomic_write_parquet
from .names import HELDOUT, MODALITIES, one_line
from .run_files import DAMAGED_HINT, RunDirError, load_run_array, read_run_json, read_run_lines, read_run_parquet

def stored_paths(run_path: Path, **paths: str | os.PathLike) -> dict:
    """config.json entries for paths a run refers to: each absolute, plus "paths_from_run" with each relative
    to the run directory (RunDir.stored_path reads them back from any working folder)."""
    absolute = {k: str(Path(v).expanduser().resolve()) for k, v in paths.items()}
    run_path = Path(run_path).expanduser().resolve()
    return {**absolute, "paths_from_run": {k: os.path.relpath(v, run_path) for k, v in absolute.items()}}


def made_by_importer(config: dict) -> bool:
    """Whether a run's config.json is of imported embeddings or scores (the importers name themselves in
    "source"), not of proxy models `multimem score` trained."""
    return bool(config.get("source"))


@dataclass(frozen=True)
class RunDir:
    """A run directory. Cheap to construct; every accessor reads from disk when called."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path).expanduser().resolve())

    # --- locations -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.parquet"

    @property
    def scores_path(self) -> Path:
        return self.path / "scores.parquet"

    @property
    def errors_path(self) -> Path:
        return self.path / "errors.parquet"

    @property
    def projection_path(self) -> Path:
        return self.path / "projection.parquet"

    @property
    def review_path(self) -> Path:
        return self.path / "review.sqlite"

    @property
    def models_dir(self) -> Path:
        return self.path / "models"

    @property
    def embeddings_dir(self) -> Path:
        return self.path / "embeddings"

    @property
    def diagnostics_dir(self) -> Path:
        return self.path / "diagnostics"

    @property
    def mitigation_dir(self) -> Path:
        return self.path / "mitigation"

    @property
    def cache_dir(self) -> Path:
        return self.path / "cache"

    @property
    def timings_path(self) -> Path:
        return self.path / "timings.json"

    @property
    def progress_path(self) -> Path:
        return self.path / "progress.json"

    # --- reading ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.config_path.is_file() and self.samples_path.is_file()

    def is_complete(self) -> bool:
        """Scores written and the writer said it finished (status "complete"); a run that failed, was
        killed, or is still being written is not complete, whatever files it already holds."""
        if not (self.exists() and self.scores_path.is_file()):
            return False
        try:
            return self.config().get("status", "complete") == "complete"
        except (OSError, ValueError, RunDirError):
            return False

    def config(self) -> dict:
        if not self.config_path.exists():
            raise RunDirError(f"{self.path} is not a run directory: it has no config.json")
        config = read_run_json(self.config_path, "run's settings (config.json)")
        if not isinstance(config, dict) or not isinstance(config.get("modalities", []), list):
            raise RunDirError(f"{self.config_path}: the run's settings are damaged (not the object `multimem` "
                              f"writes); {DAMAGED_HINT}")
        # the names reach file names, labels and Markdown on every page: only the modalities there are
        unknown = [m for m in config.get("modalities", []) if m not in MODALITIES]
        if unknown:
            raise RunDirError(f"{self.config_path}: the run's settings name {len(unknown)} modalities that do not "
                              f"exist (one of {', '.join(MODALITIES)} each); {DAMAGED_HINT}")
        return config

    @property
    def modalities(self) -> list[str]:
        return list(self.config()["modalities"])

    def ranking(self) -> str:
        """The run's ranking: the score column the self-check found best on this data ('multimem' for runs
        without one); a leading '-' where lower is more suspicious."""
        try:
            return str(self.config().get("ranking") or "multimem")
        except (RunDirError, ValueError):
            return "multimem"

    def ranking_column(self) -> str:
        """The column of scores.parquet the run ranks by (its ranking without the sign)."""
        return self.ranking().lstrip("-")

    @property
    def dataset_root(self) -> Path:
        """The folder media paths in samples.parquet are relative to; the app serves nothing outside it."""
        return self.stored_path("dataset_root")

    @property
    def input_path(self) -> Path:
        """The manifest file or shards folder the run was made from."""
        return self.stored_path("input")

    def stored_path(self, key: str) -> Path:
        """A path config.json names ("input", "dataset_root", "manifest"), usable from any working folder.

        The engine stores it absolute and, under "paths_from_run", relative to the run directory, so a run
        moved together with its data still finds it. Runs made before that kept the path as typed,
        relative to the folder `multimem score` ran in; that folder is the run's path minus its `out`."""
        config = self.config()
        value = config["manifest"].get("path", "") if key == "manifest" else config.get(key, "")
        stored = Path(str(value)).expanduser()
        candidates = [stored] if stored.is_absolute() else []
        from_run = (config.get("paths_from_run") or {}).get(key)
        if from_run:
            candidates.append(self.path / from_run)
        if not stored.is_absolute():
            out = Path(str(config.get("out", "")))
            if (str(out) not in ("", ".") and not out.is_absolute() and ".." not in out.parts
                    and len(out.parts) <= len(self.path.parts)):
                candidates.append(self.path.parents[len(out.parts) - 1] / stored)
        for path in candidates:
            if path.exists():
                return path.resolve()
        return candidates[0] if candidates else stored

    def samples(self) -> pd.DataFrame:
        samples = read_run_parquet(self.samples_path, "sample table")
        if "id" not in samples.columns:
            raise RunDirError(f"{self.samples_path}: the sample table has no `id` column; {DAMAGED_HINT}")
        return samples

    def scores(self, *, heldout: bool = False) -> pd.DataFrame | None:
        """The scored samples (rows as diagnostics/sim_*.npy); heldout=True adds the H rows (role "H",
        only cmc_out: no model saw them, so they have no memorization score)."""
        if not self.scores_path.is_file():
            return None
        scores = read_run_parquet(self.scores_path, "score table")
        if "id" not in scores.columns:
            raise RunDirError(f"{self.scores_path}: the score table has no `id` column; {DAMAGED_HINT}")
        # The engine writes finite scores or NaN; ±inf can only come from an edited file (a run folder may come
        # from someone else), and it would turn every mean and rank built on it into inf: read it as missing.
        floats = scores.select_dtypes("floating").columns
        scores[floats] = scores[floats].mask(np.isinf(scores[floats]))
        if heldout or "role" not in scores.columns:
            return scores
        return scores[scores["role"] != HELDOUT].reset_index(drop=True)

    def errors(self) -> pd.DataFrame:
        if self.errors_path.exists():
            return read_run_parquet(self.errors_path, "table of skipped samples")
        return pd.DataFrame(columns=["id", "row", "modality", "path", "reason"])

    def projection(self) -> pd.DataFrame | None:
        return read_run_parquet(self.projection_path, "map") if self.projection_path.exists() else None

    def timings(self) -> dict[str, float]:
        if not self.timings_path.exists():
            return {}
        timings = read_run_json(self.timings_path, "stage timings (timings.json)")
        return timings if isinstance(timings, dict) else {}

    def progress(self) -> dict | None:
        try:
            progress = read_run_json(self.progress_path, "progress report (progress.json)")
        except RunDirError:  # absent, or caught half-way by a reader on a file system without atomic rename
            return None
        return progress if isinstance(progress, dict) else None

    def embedding_models(self) -> list[str]:
        if not self.embeddings_dir.is_dir():
            return []
        return sorted(p.name for p in self.embeddings_dir.iterdir() if (p / "ids.txt").is_file())

    def embeddings(self, model: str, modality: str, *, mmap: bool = True) -> tuple[list[str], np.ndarray]:
        """(ids, float16 [N, d]) of one model and modality, clean view, L2-normalised."""
        folder = self.embeddings_dir / model
        ids = read_run_lines(folder / "ids.txt", "id list of the embeddings")
        return ids, self.embedding_array(model, modality, mmap=mmap)

    def embedding_array(self, model: str, modality: str, *, mmap: bool = True) -> np.ndarray:
        """float16 [N, d] of one model and modality, rows in the order of the model folder's ids.txt."""
        return load_run_array(self.embeddings_dir / model / f"{modality}.npy", "embeddings", mmap=mmap)

    def similarity_matrices(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per scored sample, the n×n modality similarity under the models that saw it and the one that did not."""
        a, b = self.diagnostics_dir / "sim_in.npy", self.diagnostics_dir / "sim_out.npy"
        if not (a.is_file() and b.is_file()):
            return None
        return load_run_array(a, "similarity matrices"), load_run_array(b, "similarity matrices")

    # --- writing (engine side) ---------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_path, config)

    def write_samples(self, df: pd.DataFrame) -> None:
        atomic_write_parquet(self.samples_path, df)

    def write_scores(self, df: pd.DataFrame) -> None:
        atomic_write_parquet(self.scores_path, df)

    def write_errors(self, df: pd.DataFrame) -> None:
        atomic_write_parquet(self.errors_path, df)

    def write_projection(self, df: pd.DataFrame) -> None:
        atomic_write_parquet(self.projection_path, df)

    def record_timing(self, stage: str, seconds: float) -> None:
        """Set the seconds of `stage` (stages.Stages decides what a rerun adds, keeps or replaces)."""
        atomic_write_json(self.timings_path, {**self.timings(), stage: round(seconds, 3)})

    def write_progress(self, **fields: Any) -> None:
        atomic_write_json(self.progress_path, {"updated": time.time(), "pid": os.getpid(), **fields})

    def mark_failed(self, error: BaseException) -> None:
        """Record in config.json (status "failed") and progress.json (stage "failed") why the writer stopped.

        Best effort: on a full disk even this may not fit, and then the status stays "running", which no
        reader takes for complete either."""
        reason = "interrupted" if isinstance(error, (KeyboardInterrupt, SystemExit)) else \
            f"{type(error).__name__}: {error}"
        try:
            if self.config_path.is_file():
                self.write_config({**self.config(), "status": "failed", "error": reason})
            self.write_progress(stage="failed", error=reason)
        except (OSError, ValueError):
            pass


def describe_skipped(errors: pd.DataFrame, *, total: int | None = None, where: str | Path = "errors.parquet",
                     shown: int = 5) -> str:
    """What the console says about skipped samples: how many, and the first `shown` with their reasons."""
    ids = list(dict.fromkeys(errors["id"].astype(str)))
    of = f" of {total}" if total is not None else ""
    lines = [f"skipped {len(ids)}{of} samples that could not be loaded (every reason in {where}):"]
    for sample_id in ids[:shown]:
        rows = errors[errors["id"].astype(str) == sample_id]
        why = "; ".join(f"{r.modality} {r.path}: {one_line(r.reason)}" if r.path else
                        f"{r.modality}: {one_line(r.reason)}" for r in rows.itertuples())  # whole in errors.parquet
        lines.append(f"  {sample_id!r} (row {int(rows['row'].iloc[0])}): {why}")
    if len(ids) > shown:
        lines.append(f"  … and {len(ids) - shown} more")
    return "\n".join(lines)
