"""`multimem app` and `export` (app/, multimem_core.review, multimem_core.export)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import CLIError, existing_path


def _free_port(host: str, preferred: int) -> int:
    import socket

    for port in [preferred] + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise CLIError(f"no free port on {host}")


def add_app(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=existing_path, help="a run directory, or a folder of runs (the app offers a picker)")
    p.add_argument("--port", type=int, default=None,
                   help="port to serve on (the next free one if taken); default: Streamlit's own setting "
                        "($STREAMLIT_SERVER_PORT, else server.port in .streamlit/config.toml, else 8501)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; the default keeps the dashboard on this machine (0.0.0.0 exposes it)")
    p.add_argument("--data-root", default=None,
                   help="the dataset folder: the app sends the browser media only from under it, whatever the run "
                        "folder says, and the New-run page starts runs only on data under it (default: "
                        "$MULTIMEM_DATA_ROOT, else the current folder)")


def app_port(given: int | None) -> int:
    """--port, else what Streamlit itself would use: $STREAMLIT_SERVER_PORT, then its config files, then 8501."""
    import os

    if given is not None:
        return given
    env = os.environ.get("STREAMLIT_SERVER_PORT", "").strip()
    if env:
        try:
            return int(env)
        except ValueError:
            raise CLIError(f"STREAMLIT_SERVER_PORT={env!r} is not a port number; unset it or use --port") from None
    from streamlit import config

    return int(config.get_option("server.port"))


class _Stopped(Exception):
    """SIGTERM or SIGHUP reached `multimem app`: stop the server it started, then exit."""


def _die_with_parent() -> None:
    """In the Streamlit child (Linux): get SIGTERM when `multimem app` dies, even by SIGKILL."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not glibc: the signal handlers in cmd_app still cover SIGTERM and Ctrl-C
        pass


def cmd_app(args) -> int:
    import os
    import signal
    import subprocess

    from app import LAUNCH_DIR, streamlit_command

    wanted = app_port(args.port)
    port = _free_port(args.host, wanted)
    if port != wanted:
        print(f"port {wanted} is taken; using {port}")
    run = Path(args.run).resolve()
    from multimem_core.launch import data_root as default_root

    data_root = Path(args.data_root).expanduser().resolve() if args.data_root else default_root()
    if not data_root.is_dir():
        raise CLIError(f"--data-root {args.data_root}: not a folder. Name the folder that holds the dataset.")
    cmd = streamlit_command(run, host=args.host, port=port, data_root=data_root)
    # the address as bound: "localhost" may resolve to ::1 first, where nothing listens
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    print(f"MultiMem Studio for {run}\n  media served only from under {data_root} (--data-root)\n"
          f"  open http://{shown}:{port}  (Ctrl-C stops it)", flush=True)
    env = {**os.environ, "MULTIMEM_RUN": str(run), "MULTIMEM_DATA_ROOT": str(data_root)}

    def stop(signum, frame):
        raise _Stopped(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    # its own process group, so that stopping it takes whatever Streamlit started too
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, cwd=LAUNCH_DIR,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    try:
        return proc.wait()
    except (KeyboardInterrupt, _Stopped):
        return 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=existing_path, help="run directory")
    p.add_argument("--out", required=True, help="file to write (a folder for --format shards)")
    p.add_argument("--drop", default=None, metavar="RULE",
                   help="flagged (flagged as noisy in the dashboard), top:N (the N most suspicious by --score), "
                        "above:T or below:T (score vs threshold). A cleaned export (a manifest, shards, hf, an id "
                        "list) also leaves out the rows the run could not load (missing file, path outside the "
                        "dataset folder, empty text, ...: RUN/errors.parquet), and the summary line counts them")
    p.add_argument("--keep-unloaded", action="store_true",
                   help="keep the rows the run could not load in the cleaned manifest or hf dataset (and out of an "
                        "id list): by default they are left out as broken rows. Not with --format shards")
    p.add_argument("--score", default=None,
                   help="score column for top/above/below (any column of scores.parquet; default: the run's ranking, "
                        "the column its self-check found best, as `multimem summary` names it)")
    p.add_argument("--format", "--to", dest="format", default=None,
                   choices=["csv", "tsv", "jsonl", "parquet", "shards", "ids", "ids-csv", "npy",
                            "hf", "fiftyone", "spotlight", "label-studio"],
                   help="csv/tsv/jsonl/parquet: the cleaned manifest with the input's own columns; shards: the kept "
                        "samples as WebDataset .tar shards in the folder --out (the default for shard input); "
                        "ids: removed ids, "
                        "one a line; ids-csv: removed ids with their score; npy: sorted removed ids (DataComp style); "
                        "hf: a Hugging Face dataset folder (input minus dropped rows); fiftyone, spotlight, "
                        "label-studio: every sample with its scores for that tool (docs/INTEGRATIONS.md). "
                        "Default: from --out's suffix, else the input manifest's own format")
    p.add_argument("--overwrite", action="store_true",
                   help="write --out even when it is the input manifest or a file of a run (replacing it on purpose)")
    p.add_argument("--repairs", action="store_true",
                   help="apply the repairs recorded in the dashboard (a sample's caption, sound or image replaced "
                        "by the suggested one) to the kept samples, and write what changed beside --out "
                        "(clean.csv -> clean.repairs.csv)")
    p.add_argument("--absolute-paths", action="store_true",
                   help="write media paths absolute (default: relative to the folder of --out, so they open "
                        "from where the cleaned manifest is written)")


def cmd_export(args) -> int:
    from multimem_core.export import build_export, default_format, write_export
    from multimem_core.review import ReviewError, lower_is_worse, parse_drop_rule
    from multimem_core.exporters import FORMATS as TOOL_FORMATS, export_to
    from multimem_core.run import RunDir, RunDirError

    run = RunDir(args.run)
    fmt = args.format or default_format(run, args.out)
    score = args.score or run.ranking_column()  # the run's own ranking unless the user names a column
    if score.startswith("-") and lower_is_worse(score[1:]):  # a ranking as `multimem summary` names it (-cmc_out)
        score = score[1:]
    if fmt in TOOL_FORMATS:
        try:
            rule = parse_drop_rule(args.drop, score=score) if args.drop else None
            print(f"{export_to(run, fmt, args.out, rule, keep_unloaded=args.keep_unloaded)}\nwrote {args.out}")
        except (ReviewError, RunDirError) as e:
            raise CLIError(str(e))
        return 0
    if args.drop is None:
        raise CLIError(f"--format {fmt} needs --drop RULE (flagged, top:N, above:T or below:T)")
    try:
        rule = parse_drop_rule(args.drop, score=score)
        export = build_export(run, rule, format=fmt, repairs=args.repairs, keep_unloaded=args.keep_unloaded)
        # shards: refuses a folder that already holds shards
        out = write_export(export, args.out, absolute_paths=args.absolute_paths, overwrite=args.overwrite)
    except (ReviewError, RunDirError) as e:
        raise CLIError(str(e))
    print(f"{export.summary()}\nwrote {out}")
    if export.repairs is not None:
        from multimem_core.repairs import repairs_path

        print(f"applied {len(export.repairs)} repairs; wrote {repairs_path(out)}")
    return 0


COMMANDS = [
    ("app", "open the dashboard on a run (or a folder of runs), bound to 127.0.0.1", add_app, cmd_app),
    ("export", "write the cleaned manifest (input's own format and columns) or the removed ids", add_export,
     cmd_export),
]
