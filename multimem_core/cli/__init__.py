"""`multimem …`: the command line, one module per command group. Each subcommand is a small `add_<name>`
(its options) and `cmd_<name>` (its work); a module lists its commands in COMMANDS.

Heavy imports (torch, umap, streamlit) happen inside the commands so that `multimem --help` is instant
(the option defaults come from multimem_core.config, which imports nothing heavy).
"""

from __future__ import annotations

import argparse
import errno
import sys

from . import apps, imports, mitigation, score
from .common import CLIError

# `SUBCOMMANDS` lists them in the order `multimem --help` shows: (name, one-line help, add, cmd).
SUBCOMMANDS: list = [*score.COMMANDS, *imports.COMMANDS, *apps.COMMANDS, *mitigation.COMMANDS]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default once: not after a help that already says it, and a flag's as on/off."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0 and action.const is True:  # a store_true flag
            return f"{text} (default: {'on' if action.default else 'off'})"
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multimem",
        description="Measure, explain and mitigate memorization in multi-modal contrastive models (MultiMem).",
        epilog="Start with `multimem demo`, then open the dashboard with the command it prints.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, add, run in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=HelpFormatter)
        add(p)
        p.set_defaults(func=run)
    return parser


# Options whose value may start with "-" (a ranking such as -cmc_out, as `multimem summary` names it): argparse
# would take "--score -cmc_out" for two options, so such a pair is joined as "--score=-cmc_out" first.
DASHED_VALUES = ("--score", "--rankings")


def join_dashed_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in DASHED_VALUES and arg.startswith("-") and not arg.startswith("--"):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_dashed_values(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from multimem_core.outputs import OutputError
    from multimem_core.review import ReviewError
    from multimem_core.run import RunDirError
    from multimem_core.runlock import RunLockedError

    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume where it stopped", file=sys.stderr)
        return 130
    except RunLockedError as e:  # a second writer on a run: say who holds it
        raise CLIError(str(e))
    except (RunDirError, ReviewError, OutputError) as e:  # a damaged run folder, a refused output: one line
        raise CLIError(str(e))
    except Exception as e:
        if isinstance(e, OSError) and e.filename and not disk_full(e):
            why = "a file where a folder is needed" if e.errno in (errno.EEXIST, errno.ENOTDIR) else e.strerror or e
            raise CLIError(f"cannot use {e.filename} ({why}). Choose another path (--out a folder you can "
                           "write), or check the file's permissions.")
        if not disk_full(e):
            raise
        # native writers (safetensors) do not say which file: then name the run folder at least
        where = getattr(e, "filename", None) or getattr(args, "out", None) or "the run"
        raise CLIError(f"no space left writing {where} ({getattr(e, 'strerror', None) or e}). Free some space (or "
                       "choose another --out) and run the same command again: finished work is kept and the "
                       "run resumes; until then it is marked failed, not complete.")
    return int(result or 0)


DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}  # EFBIG: a file-size limit (ulimit -f)
# Libraries that write through their own native code (safetensors) report a full disk as text in a
# RuntimeError: match the system's own words for ENOSPC / EFBIG / EDQUOT.
DISK_FULL_WORDS = ("no space left on device", "file too large", "disk quota exceeded", "storagefull")


def disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return True
    return any(w in str(error).lower() for w in DISK_FULL_WORDS)
