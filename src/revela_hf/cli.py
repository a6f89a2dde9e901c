"""The `revela` command line: one sub-command per module of `revela_hf.commands`.

Command modules import only argparse and light constants at module level, so `revela --help` does
not load torch; each command imports what it needs when it runs, after the version check.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from revela_hf import commands
from revela_hf.dependency_versions import check_versions

# Commands that must work in a broken environment (they report on it).
UNCHECKED_COMMANDS = frozenset({"env"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="revela", description="Train dense retrievers from raw text by language modeling.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command not in UNCHECKED_COMMANDS:
            check_versions()
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError) as err:  # ImportError: versions, missing extras
        print(f"revela {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
