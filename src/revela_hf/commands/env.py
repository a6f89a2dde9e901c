"""`revela env`: the versions, threads, device and cache folders to paste into a bug report."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("env", help="print the environment (versions, device, caches) for a bug report")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from revela_hf.environment import environment

    info = environment()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "packages":
            for name, version in value.items():
                print(f"  {name}: {version or 'not installed'}")
        elif key == "version_problems":
            print(f"version check: {'ok' if not value else '; '.join(value)}")
        else:
            print(f"{key}: {value}")
    return 0
