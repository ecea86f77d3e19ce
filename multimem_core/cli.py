"""`multimem …`: the command line. Each subcommand is a small `add_<name>` (its options) and `cmd_<name>` (its work).

Heavy imports (torch, umap, streamlit) happen inside the commands so that `multimem --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class CLIError(SystemExit):
    """A user-facing error: printed without a traceback, exit status 2."""

    def __init__(self, message: str):
        print(f"multimem: error: {message}", file=sys.stderr)
        super().__init__(2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multimem",
        description="Measure, explain and mitigate memorization in multi-modal contrastive models (MultiMem).",
        epilog="Start with `multimem demo`, then open the dashboard with the command it prints.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add, run in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add(p)
        p.set_defaults(func=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    return int(result or 0)


def existing_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist")
    return path


# --- subcommands: each is add_<name>(parser) for its options and cmd_<name>(args) for its work --------
# (each section below is owned by the module it calls into; keep imports inside cmd_* functions)


# `SUBCOMMANDS` lists them in the order `multimem --help` shows: (name, one-line help, add, cmd).
SUBCOMMANDS: list = []

# ---- app / export (app/, multimem_core.review) --------------------------------------------------------

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
    p.add_argument("--port", type=int, default=8501, help="port to serve on (the next free one if taken)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; the default keeps the dashboard on this machine (0.0.0.0 exposes it)")


def cmd_app(args) -> int:
    import os
    import subprocess

    import app as app_package

    main_py = Path(app_package.__file__).resolve().parent / "main.py"
    port = _free_port(args.host, args.port)
    if port != args.port:
        print(f"port {args.port} is taken; using {port}")
    run = Path(args.run).resolve()
    cmd = [sys.executable, "-m", "streamlit", "run", str(main_py), "--server.address", args.host,
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--", "--run", str(run)]
    shown = "localhost" if args.host == "127.0.0.1" else args.host
    print(f"MultiMem Studio for {run}\n  open http://{shown}:{port}  (Ctrl-C stops it)", flush=True)
    env = {**os.environ, "MULTIMEM_RUN": str(run)}
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(timeout=10)
        return 0


def add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=existing_path, help="run directory")
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--drop", required=True, metavar="RULE",
                   help="flagged (flagged as noisy in the dashboard), top:N (the N most suspicious by --score), "
                        "above:T or below:T (score vs threshold)")
    p.add_argument("--score", default="multimem", help="score column for top/above/below (any column of scores.parquet)")
    p.add_argument("--format", default=None,
                   choices=["csv", "tsv", "jsonl", "parquet", "ids", "ids-csv", "npy"],
                   help="csv/tsv/jsonl/parquet: the cleaned manifest with the input's own columns; ids: removed ids, "
                        "one a line; ids-csv: removed ids with their score; npy: sorted removed ids (DataComp style). "
                        "Default: from --out's suffix, else the input manifest's own format")


def cmd_export(args) -> int:
    from multimem_core.review import ReviewError, build_export, default_format, parse_drop_rule, write_export
    from multimem_core.run import RunDir, RunDirError

    run = RunDir(args.run)
    try:
        rule = parse_drop_rule(args.drop, score=args.score)
        export = build_export(run, rule, format=args.format or default_format(run, args.out))
    except (ReviewError, RunDirError) as e:
        raise CLIError(str(e))
    out = write_export(export, args.out)
    print(f"{export.summary()}: {rule.describe()}\nwrote {out}")
    return 0


SUBCOMMANDS += [
    ("app", "open the dashboard on a run (or a folder of runs), bound to 127.0.0.1", add_app, cmd_app),
    ("export", "write the cleaned manifest (input's own format and columns) or the removed ids", add_export,
     cmd_export),
]


if __name__ == "__main__":
    sys.exit(main())
