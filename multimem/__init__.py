"""The Python API for notebooks, `import multimem as mm` (a package of its own: `multimem_core.score` is the pipeline module, so `mm.score` cannot live there):

    run = mm.score(df_or_dataset_or_path, modalities=["image", "text"], epochs=20, image_key="filepath")
    run.scores        # the input's rows with their scores (NaN for held-out and skipped rows)
    run.summary()     # what `multimem summary` prints
    run.flagged("top:50")
    run.export("clean.csv", drop="top:50")   # or to="hf" / "fiftyone" / "spotlight" / "label-studio"
    mm.open(run)      # the dashboard on 127.0.0.1, from the notebook

Options are those of `multimem score` (declared once, on the config dataclasses' fields: multimem_core.config
and multimem_core.options), by their dest or field name, with the same defaults: `epochs`, `folds`,
`protocol`, `image_tower`, `image_size`, `views`, `image_key`, `projection=False`, ... (`mm.options()` lists
them). Progress bars are tqdm.auto: widgets in a notebook.

A DataFrame (paths, bytes or PIL images in its media columns) or a `datasets.Dataset` is written once into
RUN/data as a Hugging Face dataset with the media's bytes inside (multimem_core.data.hf reads it), so the
run, the dashboard and the exports read it from the run itself and trust no path in it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from multimem_core import config as C
from multimem_core.run import RunDir

def options() -> dict[str, str]:
    """Every option mm.score takes -> the config field it sets ("train.epochs"): the command line's options by
    their dest (`multimem score --help`), plus each option's field name where it differs (`projection=False`
    for --no-projection, `progress=False` for --quiet, `video_frames` for --frames)."""
    from multimem_core.options import option_fields

    out = {}
    for o in option_fields(C.ScoreConfig):
        out[o.dest] = ".".join(o.path)
        out.setdefault(o.path[-1] if o.path[0] != "keys" else o.dest, ".".join(o.path))
    out.pop("modalities", None)  # mm.score's own argument
    return out


def score_config(data_path: str | Path, out: str | Path, modalities: Sequence[str] | None = None,
                 **opts: Any) -> C.ScoreConfig:
    """A ScoreConfig from mm.score's keyword options (see `options`), through the same machinery as the
    command line (ScoreConfig.with_options); unknown names raise TypeError listing the known ones."""
    from multimem_core.options import option_fields

    known = options()
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; mm.score takes {', '.join(sorted(known))}")
    by_path = {".".join(o.path): o for o in option_fields(C.ScoreConfig)}
    values = {}
    for name, value in opts.items():
        o = by_path[known[name]]
        # a field name (projection=False) means the field's value; a negating flag's dest (no_projection=True) not
        values[o.dest] = (not value) if o.option.negate and name != o.dest else value
    if modalities:
        values["modalities"] = list(modalities)
    return C.ScoreConfig(input=str(data_path), out=str(out)).with_options(values)


class Run:
    """A scored run, as a notebook sees it. `path` is the run directory (`multimem app PATH` opens it too)."""

    def __init__(self, path: str | Path, frame: pd.DataFrame | None = None):
        self.dir = RunDir(path)
        self.path = self.dir.path
        self._frame = frame  # the DataFrame the run was made from, if it was one

    def __repr__(self) -> str:
        return f"<multimem Run {self.path}>"

    @property
    def scores(self) -> pd.DataFrame:
        """The input joined to the scores: one row per input row, in input order; score columns NaN where a row
        was held out (H: no model saw it) or could not be loaded (see `errors`)."""
        samples = self.dir.samples()
        scores = self.dir.scores()
        cols = [c for c in scores.columns if c not in ("role",)] if scores is not None else ["id"]
        by_row = samples[["id", "row", "role"]].merge(scores[cols] if scores is not None else samples[["id"]],
                                                      on="id", how="left")
        if self._frame is None:
            base = samples.drop(columns=["role"])
            return base.merge(by_row.drop(columns=["row"]), on="id", how="left")
        out = self._frame.reset_index(drop=True).copy()
        extra = by_row.set_index("row").drop(columns=[c for c in ("id",) if c in out.columns])
        return out.join(extra, how="left")

    @property
    def errors(self) -> pd.DataFrame:
        return self.dir.errors()

    def summary(self) -> dict:
        from multimem_core.summary import summarize

        return summarize(self.dir)

    def flagged(self, rule: str = "flagged", *, score: str = "multimem") -> pd.DataFrame:
        """The rows a drop rule picks, most suspicious first: "flagged" (marked noisy in the dashboard),
        "top:N", "above:T", "below:T" (as `multimem export --drop`)."""
        from multimem_core.review import ids_to_drop, parse_drop_rule

        ids = ids_to_drop(self.dir, parse_drop_rule(rule, score=score))
        table = self.scores.set_index(self.scores["id"].astype(str) if "id" in self.scores else None)
        return table.loc[[i for i in ids if i in table.index]].reset_index(drop=True)

    def export(self, out: str | Path, *, to: str | None = None, drop: str | None = None,
               score: str = "multimem", keep_unloaded: bool = False) -> Path:
        """What `multimem export RUN --to TO --out OUT --drop DROP [--keep-unloaded]` writes; `to` defaults from
        OUT's suffix. The rows the run could not load (errors.parquet) are left out unless `keep_unloaded`."""
        from multimem_core.export import build_export, default_format, write_export
        from multimem_core.exporters import FORMATS as TOOL_FORMATS, export_to
        from multimem_core.review import ReviewError, parse_drop_rule

        fmt = to or default_format(self.dir, out)
        rule = parse_drop_rule(drop, score=score) if drop else None
        if fmt in TOOL_FORMATS:
            print(export_to(self.dir, fmt, out, rule, keep_unloaded=keep_unloaded))
            return Path(out)
        if rule is None:
            raise ReviewError(f"export to {fmt} needs drop= (flagged, top:N, above:T or below:T)")
        export = build_export(self.dir, rule, format=fmt, keep_unloaded=keep_unloaded)
        print(export.summary())
        return write_export(export, out)


def score(data: Any, modalities: Sequence[str] | None = None, *, out: str | Path | None = None,
          root: str | Path | None = None, **opts: Any) -> Run:
    """Score `data`: a pandas DataFrame, a `datasets.Dataset`, or a path (manifest, shards, Hugging Face dataset
    folder). `out` is the run directory (default: a new temporary folder); `root` is the folder a DataFrame's
    relative media paths start from (default: the working folder). Other options: see the module's docstring."""
    from multimem_core.score import score_run

    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="multimem-run-"))
    frame = None
    if isinstance(data, pd.DataFrame):
        from multimem_core.data.hf_write import frame_to_dataset

        frame = data
        keys = C.ColumnKeys(**{k[:-4]: v for k, v in opts.items() if k.endswith("_key")})
        allow = bool(opts.get("allow_outside_root", False))
        data_path = frame_to_dataset(data, out / "data", keys=keys, root=Path(root or Path.cwd()),
                                     allow_outside_root=allow)
    elif type(data).__module__.startswith("datasets"):
        data_path = out / "data"
        if not (data_path / "state.json").is_file():
            data.save_to_disk(str(data_path))
    else:
        data_path = Path(data)
    cfg = score_config(data_path, out, modalities, **opts)
    return Run(score_run(cfg).path, frame)


def open(run: Run | str | Path, *, port: int | None = None, host: str = "127.0.0.1"):  # noqa: A001 (mm.open)
    """Start the dashboard on `run` in the background, bound to `host`; returns the server process (call
    .terminate() to stop it; it stops with the notebook's kernel too). Prints the address to open."""
    import os
    import socket
    import subprocess
    import sys

    from app import LAUNCH_DIR, streamlit_command
    from multimem_core.cli.apps import _die_with_parent
    from multimem_core.launch import data_root

    path = Path(run.path if isinstance(run, Run) else run).resolve()
    with socket.socket() as s:
        s.bind((host, port or 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(streamlit_command(path, host=host, port=port, data_root=data_root()), cwd=LAUNCH_DIR,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MULTIMEM_RUN": str(path)},
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    print(f"MultiMem Studio for {path}: http://{host}:{port}")
    proc.url = f"http://{host}:{port}"
    return proc
