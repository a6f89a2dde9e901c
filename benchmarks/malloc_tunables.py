"""The demo's training step under glibc's default malloc settings and under `revela_hf.malloc.TUNABLES`.

Runs `benchmarks/step_profile.py` (the demo's models, one group of B real code chunks, fp32, AdamW) in
fresh processes, the two settings taking turns for `--rounds` rounds so that a slow spell of the machine
falls on both. Per setting: the median and every timed step, the median of the LM head + loss and of the
backward phase, and the processes' system (kernel) CPU seconds, where page faults are counted. Prints one
JSON object; `ratio` is tuned / default of the median step.

    PYTHONPATH=src python benchmarks/malloc_tunables.py [--group 16 --steps 6 --rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from revela_hf.malloc import TUNABLES

PROFILE = Path(__file__).with_name("step_profile.py")
SETTINGS = {"glibc default": None, "revela_hf.malloc.TUNABLES": TUNABLES}


def profile_once(tunables: str | None, args: argparse.Namespace) -> tuple[dict, float]:
    """One step_profile run in a fresh process: its JSON and the process's system CPU seconds."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    run = subprocess.run(
        [sys.executable, str(PROFILE), "--group", str(args.group), "--steps", str(args.steps), "--length", str(args.length)],
        env=env, capture_output=True, text=True, check=True,
    )
    return json.loads(run.stdout), resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    runs: dict[str, list[tuple[dict, float]]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, tunables in SETTINGS.items():
            runs[name].append(profile_once(tunables, args))

    def summary(name: str) -> dict:
        steps = [s for profile, _ in runs[name] for s in profile["step_seconds_all"]]
        return {
            "step_seconds_median": round(statistics.median(steps), 3),
            "step_seconds_all": steps,
            "lm_head_and_loss_seconds": [profile["phases"]["LM head + loss"]["seconds"] for profile, _ in runs[name]],
            "backward_seconds": [profile["phases"]["backward (pass 2, head, retriever)"]["seconds"] for profile, _ in runs[name]],
            "system_cpu_seconds_per_process": [round(sys_s, 1) for _, sys_s in runs[name]],
        }

    results = {name: summary(name) for name in SETTINGS}
    default, tuned = (results[name]["step_seconds_median"] for name in SETTINGS)
    first = runs["glibc default"][0][0]
    print(json.dumps({
        "benchmark": "revela demo training step (step_profile.py), glibc malloc defaults vs revela_hf.malloc.TUNABLES",
        "shape": first["shape"], "threads": first["threads"], "torch": first["torch"],
        "steps_per_process": args.steps, "rounds": args.rounds,
        "tunables": TUNABLES,
        "settings": results,
        "ratio": round(tuned / default, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
