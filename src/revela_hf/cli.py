"""The `revela` command line: one sub-command per module of `revela_hf.commands`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from revela_hf import commands


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
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"revela {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
