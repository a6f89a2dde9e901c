"""glibc malloc tuning of the training commands (`revela_hf.malloc`): when it applies, and that a real
restarted process keeps freed memory where glibc's defaults hand it back to the kernel."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from revela_hf.malloc import OPT_OUT, TUNABLES, tuned_environment

glibc_linux = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="GLIBC_TUNABLES is read by glibc on Linux only"
)

# Allocates and frees 256 MiB through torch, prints how much of it left the process, then restarts once.
CHILD = """
import json, os, torch
from revela_hf.malloc import restart_with_tuned_malloc
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
x = torch.ones(2**26)
held = rss()
del x
print(json.dumps({"tunables": os.environ.get("GLIBC_TUNABLES"), "released_mib": held - rss()}), flush=True)
restart_with_tuned_malloc()
"""


@glibc_linux
def test_tuned_environment_adds_the_tunables_unless_set_or_opted_out():
    assert tuned_environment({"HOME": "/h"}) == {"HOME": "/h", "GLIBC_TUNABLES": TUNABLES}
    assert tuned_environment({OPT_OUT: "0"})["GLIBC_TUNABLES"] == TUNABLES
    assert tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}) is None  # the user's own
    assert tuned_environment({OPT_OUT: "1"}) is None


@glibc_linux
def test_restarted_process_keeps_freed_memory():
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    run = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    default, tuned = (json.loads(line) for line in run.stdout.splitlines())  # before and after the restart, once
    assert default["tunables"] is None and tuned["tunables"] == TUNABLES
    assert "restarting with GLIBC_TUNABLES" in run.stderr
    assert default["released_mib"] > 200  # glibc's default: a 256 MiB block is unmapped on free
    assert tuned["released_mib"] < 32  # tuned: it stays in the heap for the next step


@glibc_linux
def test_help_of_a_training_command_does_not_restart():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", OPT_OUT)}
    cli = [sys.executable, "-m", "revela_hf.cli", "train"]
    shown = subprocess.run([*cli, "--help"], env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--max_steps" in shown.stdout
    assert "restarting" not in shown.stderr
    # the same command with a flag it cannot parse is a run: it restarts first, then fails on the flag
    failed = subprocess.run([*cli, "--no-such-flag"], env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and "restarting with GLIBC_TUNABLES" in failed.stderr
