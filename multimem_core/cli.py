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


if __name__ == "__main__":
    sys.exit(main())
