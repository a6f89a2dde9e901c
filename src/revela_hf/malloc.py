"""glibc malloc settings for training on CPU: keep freed memory in the process between steps.

A training step allocates and frees the same large buffers every step: at the demo's B = 16 chunks of
128 tokens, the `(B, L, vocabulary)` logits of SmolLM2 alone are 400 MB in fp32, and their gradient as
much. glibc serves every block above its mmap threshold (adapted up to 32 MiB) with a fresh `mmap` and
unmaps it on free, so each step faults hundreds of MB of pages in again, zeroed by the kernel. With a
higher threshold and no trimming, freed blocks stay in the heap for the next step: on 2 cores the demo's
fp32 step gets faster (`benchmarks/malloc_tunables.py`). The process keeps its peak memory
until it exits, which is what a caching allocator does anyway.

glibc reads `GLIBC_TUNABLES` once, at start, so `revela train` and `revela demo` start themselves
again with it set (`restart_with_tuned_malloc`). They leave a `GLIBC_TUNABLES` of the user's alone;
`REVELA_HF_NO_MALLOC_TUNING=1` keeps glibc's defaults.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

TUNABLES = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=17179869184"  # 1 GiB, 16 GiB
OPT_OUT = "REVELA_HF_NO_MALLOC_TUNING"


def tuned_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """`environ` plus `GLIBC_TUNABLES`, or None where it does not apply: not glibc on Linux, a
    `GLIBC_TUNABLES` already set (the user's, or ours after a restart), or `REVELA_HF_NO_MALLOC_TUNING` set."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    if "GLIBC_TUNABLES" in environ or environ.get(OPT_OUT, "") not in ("", "0"):
        return None
    return {**environ, "GLIBC_TUNABLES": TUNABLES}


def restart_with_tuned_malloc() -> None:
    """Replace this process by the same command line under `tuned_environment` (same PID); return where
    the tuning does not apply or is already in place."""
    environ = tuned_environment(os.environ)
    if environ is None:
        return
    print(f"[revela-hf] restarting with GLIBC_TUNABLES={TUNABLES} (freed memory stays in the process; "
          f"{OPT_OUT}=1 keeps glibc's defaults)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, environ)
