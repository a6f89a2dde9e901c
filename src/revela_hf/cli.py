"""The `revela` command line: one sub-command per module of `revela_hf.commands`.

Command modules import only argparse and light constants at module level, so `revela --help` does
not load torch; each command imports what it needs when it runs, after the version check. A command
that sets `forward_argv` parses its own flags: it gets them as `args.argv` (`revela train`, whose
`HfArgumentParser` needs torch).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from revela_hf import commands
from revela_hf.dependency_versions import check_versions
from revela_hf.malloc import restart_with_tuned_malloc

# Commands that must work in a broken environment (they report on it).
UNCHECKED_COMMANDS = frozenset({"env"})
# Commands that train: run from the command line, they restart under glibc malloc settings that keep
# freed memory between steps (revela_hf.malloc).
TRAINING_COMMANDS = frozenset({"train", "demo"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="revela", description="Train dense retrievers from raw text by language modeling.")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "forward_argv", False):  # a command parsing its own flags (`revela train`)
        args.argv = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    # A process of its own (not a call from Python) that will train (not `revela train --help`).
    if argv is None and args.command in TRAINING_COMMANDS and not {"-h", "--help"} & set(rest):
        restart_with_tuned_malloc()
    try:
        if args.command not in UNCHECKED_COMMANDS:
            check_versions()
        return int(args.func(args) or 0)
    except Exception as err:  # noqa: BLE001 -- every error becomes one line; --debug shows the traceback
        if args.debug:
            raise
        print(f"revela {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: Exception) -> str:
    """The error's message on one line, its type named unless it is a ValueError or OSError."""
    message = " ".join(str(err).split())
    if isinstance(err, (ValueError, OSError)) and message:
        return message
    return f"{type(err).__name__}{': ' + message if message else ''} (rerun with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
