"""The one rule for where a command may write: never over what it reads, never into a run's own files.

`multimem export RUN --out RUN/samples.parquet` would replace the run's table with a manifest, and
`--out data/manifest.csv` the dataset the run was made from; an import `--out` on the dataset folder with
`--overwrite` would delete it; `--out data/imgs/000.png` one of the dataset's pictures. Every command that
writes (export, score, the importers) asks `check_output` first, before it reads or writes anything else. A
user who does mean to replace such a file says so with `--overwrite` (export); a folder that holds the
command's own input is never replaced. `multimem score` writes only into a new or empty folder or a run to
resume, and resumes only the run the same command made (`check_resumable`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping

from .runlock import LOCK_NAME

# A run's folders that hold outputs meant for people (the dashboard writes its exports here).
OUTPUT_FOLDERS = ("exports",)
RUN_DATA = "data"  # a run's own copy of its dataset (`multimem demo` builds it there, then scores into RUN)
# what only a run holds: its settings, the job the New-run page set up for it (multimem_core.launch), or the
# progress of one that stopped before it wrote its settings (a bad manifest)
RUN_MARKS = ("config.json", "request.json", "progress.json")


class OutputError(ValueError):
    """An output path that would destroy an input or a run's own file; the message says which and what to do."""


def _resolved(path: str | os.PathLike) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a loop, a NUL byte
        raise OutputError(f"{path}: cannot be used as an output ({e}); choose another path") from e


def run_folder_of(path: Path) -> Path | None:
    """The run folder `path` is (or lies in): the nearest folder holding config.json and samples.parquet."""
    for folder in (path, *path.parents):
        if (folder / "config.json").is_file() and (folder / "samples.parquet").is_file():
            return folder
    return None


def check_output(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (), writes: str = "file",
                 overwrite: bool = False, dataset: str | os.PathLike | None = None,
                 references: Callable[[], Mapping[Path, str]] | None = None) -> Path:
    """`out`, resolved, if writing it destroys nothing the command reads or a run owns; OutputError otherwise.

    `writes` says what the command makes at `out`:
    - "file" (export): refused when `out` is one of `inputs`, a run folder or a file in one (other than
      under RUN/exports/), or an existing file under `dataset` (the folder of the run's data: its manifest,
      media and whatever else lies there; a new file there is fine), or an existing file `references()` names
      (resolved path -> what it is: every file the run's manifest names, also outside `dataset`), unless
      `overwrite`;
    - "run" (score: files written into the folder, resumable): refused when `out` is an existing file,
      an input folder, the folder an input file lies in or a folder that holds an input (other than as its
      own RUN/data), or a folder with content that is no run (none of RUN_MARKS);
    - "folder" (export to a tool's dataset folder, or shards): refused when `out` is an existing file, an input
      folder or the folder an input file lies in, a run folder or a folder in one (other than under RUN/exports/);
    - "replaced run" (the importers: the folder replaced whole): refused, even with `overwrite`, when an
      input lies in it."""
    target = _resolved(out)
    sources = [_resolved(p) for p in inputs if str(p).strip()]
    if writes == "file":
        if target in sources and not overwrite:
            raise OutputError(f"--out {target} is the input this command reads; writing there would destroy it. "
                              "Choose another --out, or pass --overwrite to replace it on purpose.")
        if not overwrite:
            _refuse_run_files(target, ", or pass --overwrite to replace it on purpose")
        root = _resolved(dataset) if dataset is not None and str(dataset).strip() else None
        if not overwrite and root is not None and target.is_file() and target.is_relative_to(root):
            raise OutputError(f"--out {target} is an existing file of the dataset in {root} (the run's data); "
                              "writing there would destroy it. Choose another --out, or pass --overwrite to "
                              "replace it on purpose.")
        what = references().get(target) if references is not None and not overwrite and target.is_file() else None
        if what:
            raise OutputError(f"--out {target} is {what}; writing there would destroy it. Choose another --out, or "
                              "pass --overwrite to replace it on purpose.")
        if target.is_dir():
            raise OutputError(f"--out {target} is a folder; name the file to write.")
        return target
    if target.exists() and not target.is_dir():
        raise OutputError(f"--out {target} is an existing file; a run is a folder. Choose another --out.")
    if writes == "folder":
        _refuse_run_files(target, "")
    for source in sources:
        held = source == target or source.is_relative_to(target)
        # a manifest's run may not go into the folder its media lie in; a dataset folder's (shards, a Hugging
        # Face dataset) not into that folder itself. A run may hold its own copy of the data (RUN/data).
        folder = source if source.is_dir() else source.parent
        if writes in ("run", "folder") and target == folder:
            raise OutputError(f"--out {target} is the dataset this command reads ({source}); a run must not be "
                              "written into it. Choose another --out (e.g. a folder beside it).")
        if writes == "replaced run" and held:
            raise OutputError(f"--out {target} holds {source}, which this command reads; replacing the folder "
                              "would delete it. Choose another --out.")
        if writes == "run" and held and not source.is_relative_to(target / RUN_DATA):
            raise OutputError(f"--out {target} holds {source}, which this command reads; a run must not be "
                              "written over its dataset. Choose another --out (e.g. a folder beside it).")
    if writes == "run" and not any((target / name).is_file() for name in RUN_MARKS):
        own_data = [RUN_DATA] if any(s.is_relative_to(target / RUN_DATA) for s in sources) else []
        if content(target, besides=own_data):
            raise OutputError(not_empty(target, ", and is no run to resume"))
    return target


def dataset_of(run) -> Path | None:
    """The folder of the data a RunDir was made from (config.json's dataset_root); None when it names none."""
    return run.dataset_root if str(run.config().get("dataset_root") or "").strip() else None


def content(folder: Path, *, besides: Iterable[str] = ()) -> list[Path]:
    """What a folder holds besides a run's lock file and the names in `besides` ([] when it is no folder)."""
    skip = {LOCK_NAME, *besides}
    return [p for p in folder.iterdir() if p.name not in skip] if folder.is_dir() else []


def not_empty(out: Path, why: str = "", remedy: str = "") -> str:
    """The one wording for an --out that holds something the command would not write over."""
    return f"--out {out} exists and is not empty{why}: choose another --out{remedy}."


def _refuse_run_files(target: Path, hint: str) -> None:
    """OutputError when `target` is a run folder or lies in one outside its OUTPUT_FOLDERS."""
    run = run_folder_of(target)
    if run is None:
        return
    inside = target.relative_to(run)
    if len(inside.parts) < 2 or inside.parts[0] not in OUTPUT_FOLDERS:
        what = "a run folder" if not inside.parts else f"{inside} of the run {run}"
        raise OutputError(f"--out {target} is {what}: a run's own files are never written over. Choose "
                          f"another --out (e.g. {run / 'exports' / target.name}){hint}.")


# ScoreConfig fields that change how a run is computed or shown, not its scores: a resumed run may change them.
# And "selfcheck": a finished run's config.json keeps the self-check's figures under that key, not its options,
# so they cannot be compared (each model's training fingerprint still retrains what a new plan changes).
RESUME_MAY_CHANGE = ("input", "out", "progress", "device", "chunk_size", "projection", "projection_per_modality",
                     "save_views", "selfcheck")


def check_resumable(out: Path, cfg, sha256: str) -> None:
    """OutputError when `out` holds a run that `multimem score` with `cfg` (modalities resolved, as config.json
    records them) on an input hashing to `sha256` must not resume: one made from other data, by an importer,
    or with other options. Rerunning the command that made it resumes; a new or empty folder passes."""
    from .config import ScoreConfig
    from .run import RunDir, RunDirError, made_by_importer

    if not (out / "config.json").is_file():
        return
    again = "rerunning resumes only the command that made it. Choose a new --out"
    try:
        stored = RunDir(out).config()
    except RunDirError as e:
        raise OutputError(f"--out {out}: cannot tell which run it holds ({e}); {again}.") from e
    if made_by_importer(stored):
        raise OutputError(f"--out {out} holds a run made by {stored['source']}, not by `multimem score`; {again}.")
    try:
        old = _flat(ScoreConfig.from_dict(stored).to_dict())
    except (TypeError, ValueError, AttributeError) as e:
        raise OutputError(f"--out {out}: cannot tell which run it holds ({e}); {again}.") from e
    manifest = stored.get("manifest") or {}
    if manifest.get("sha256") != sha256:
        made_from = manifest.get("path") or stored.get("input") or "?"
        what = (f"{made_from} as it was before it changed" if Path(str(made_from)) == _resolved(cfg.input)
                else f"{made_from}, not {cfg.input}")
        raise OutputError(f"--out {out} holds a run made from another input manifest ({what}); {again}.")
    new = _flat(cfg.to_dict())
    changed = [k for k in sorted(old.keys() | new.keys())
               if k.split(".")[0] not in RESUME_MAY_CHANGE and old.get(k) != new.get(k)]
    if changed:
        shown = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4]) + " …" * (len(changed) > 4)
        raise OutputError(f"--out {out} holds a run made with other options ({shown}); {again}, or rerun with the "
                          f"run's own options (--config {out / 'config.json'}).")


def _flat(d: dict, prefix: str = "") -> dict:
    """{"train": {"epochs": 1}} -> {"train.epochs": 1}; tuples as lists (JSON keeps no tuples)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out
