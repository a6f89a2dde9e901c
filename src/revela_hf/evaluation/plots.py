"""Bar chart of a results table."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np

from revela_hf.dependency_versions import import_optional
from revela_hf.evaluation.evaluate import HEADLINE_METRICS
from revela_hf.io import write_file_atomically


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the file-only Agg backend (the `plot` extra), imported on first use."""
    matplotlib = import_optional("matplotlib", "plot", "plotting results")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plot_results(
    table: dict[str, dict[str, float]],
    path: str | Path,
    metrics: tuple[str, ...] = HEADLINE_METRICS,
    title: str = "Retrieval results",
    errors: dict[str, dict[str, float]] | None = None,
) -> Path:
    """Grouped bars (one group per metric, one bar per retriever, scores in percent) saved as PNG.

    `errors` (same keys, optional per retriever and metric) draws error bars, e.g. the spread over seeds.
    """
    if not table:
        raise ValueError("nothing to plot: the results table is empty")
    plt = pyplot()
    names = list(table)
    positions = np.arange(len(metrics))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(metrics) * max(1, len(names)) / 2), 4))
    for i, name in enumerate(names):
        values = [100 * table[name][m] for m in metrics]
        spread = [100 * (errors or {}).get(name, {}).get(m, 0.0) for m in metrics]
        offsets = positions + (i - (len(names) - 1) / 2) * width
        bars = ax.bar(offsets, values, width, yerr=spread if any(spread) else None, capsize=2, label=Path(name).name or name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(positions, [m.replace("ndcg", "nDCG").replace("mrr", "MRR").replace("recall", "Recall") for m in metrics])
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(out, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
    plt.close(fig)
    return out
