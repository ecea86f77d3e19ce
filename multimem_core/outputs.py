"""The one rule for where a command may write: never over what it reads, never into a run's own files.

`multimem export RUN --out RUN/samples.parquet` would replace the run's table with a manifest, and
`--out data/manifest.csv` the dataset the run was made from; an import `--out` on the dataset folder with
`--overwrite` would delete it. Every command that writes (export, score, the importers) asks `check_output`
first, before it reads or writes anything else. A user who does mean to replace such a file says so with
`--overwrite` (export); a folder that holds the command's own input is never replaced.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

# A run's folders that hold outputs meant for people (the dashboard writes its exports here).
OUTPUT_FOLDERS = ("exports",)


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
                 overwrite: bool = False) -> Path:
    """`out`, resolved, if writing it destroys nothing the command reads or a run owns; OutputError otherwise.

    `writes` says what the command makes at `out`:
    - "file" (export): refused when `out` is one of `inputs`, a run folder or a file in one (other than
      under RUN/exports/), unless `overwrite`;
    - "run" (score: files written into the folder, resumable): refused when `out` is an existing file,
      an input folder or the folder an input file lies in;
    - "folder" (export to a tool's dataset folder): as "run", and also refused for a run folder or a folder
      in one (other than under RUN/exports/);
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
    return target


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
