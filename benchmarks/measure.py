"""What the training benchmarks share: peak memory and timed training steps (`python benchmarks/X.py`
puts this folder on the import path)."""

from __future__ import annotations

import resource
import time

import torch


def rss_mib() -> float:
    """This process's peak resident memory so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_training_steps(
    model: torch.nn.Module, inputs: dict, optimizer: torch.optim.Optimizer, steps: int
) -> tuple[list[float], float]:
    """Seconds of each of `steps` forward + backward + optimizer steps, after one untimed warm-up step
    (allocator, optimizer state), and the last step's loss."""
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - start)
    return times, loss.item()
