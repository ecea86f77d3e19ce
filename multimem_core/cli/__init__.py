"""`multimem …`: the command line, one module per command group. Each subcommand is a small `add_<name>`
(its options) and `cmd_<name>` (its work); a module lists its commands in COMMANDS.

Heavy imports (torch, umap, streamlit) happen inside the commands so that `multimem --help` is instant
(the option defaults come from multimem_core.config, which imports nothing heavy).
"""

from __future__ import annotations

import argparse
import sys

from . import apps, imports, mitigation, score
from .common import CLIError, existing_path  # noqa: F401 (public names)
from .score import score_config, score_defaults  # noqa: F401 (public names)

# `SUBCOMMANDS` lists them in the order `multimem --help` shows: (name, one-line help, add, cmd).
SUBCOMMANDS: list = [*score.COMMANDS, *imports.COMMANDS, *apps.COMMANDS, *mitigation.COMMANDS]


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
