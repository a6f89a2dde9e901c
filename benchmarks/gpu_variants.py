"""One training variant on a lent GPU, at equal wall time with the others (`benchmarks/suite_gpu_variants.json`).

Trains with `revela train`'s flags until SECONDS have passed since the first step (use a schedule that needs no
step count, e.g. `--lr_scheduler_type constant_with_warmup --max_steps 100000`), then scores the retriever it saved
on the yardstick suite's sets (folders written by `benchmarks/quality.py --suite --root SUITE_DIR`) on the same
device: dense, and fused with BM25 by every fusion. Writes OUT/NAME.json (steps, peak GPU memory, the training
log, nDCG@10 / MRR@10 / Recall@100 per set). `--eval-only FOLDER` scores a retriever folder without training.

    PYTHONPATH=src python benchmarks/gpu_variants.py recipe 100 revela-suite out -- --data CORPUS --lm LM \
        --retriever LM-L6 --bf16 --max_length 160 --retriever_max_length 160 --output_dir run-recipe \
        --max_steps 100000 --lr_scheduler_type constant_with_warmup --warmup_steps 30
    PYTHONPATH=src python benchmarks/gpu_variants.py ref 0 revela-suite out --eval-only run/retriever

`SETS=humaneval,stdlib` scores a subset. The GPU image this ran on has no faiss wheel: where faiss cannot be
imported, an exact inner-product search in numpy stands in for `faiss.IndexFlatIP` (the same ranking; scored
on this machine's CPU with faiss, the 'recipe' retriever gives the same nDCG@10 to the printed digit).
"""
import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

try:
    import faiss  # noqa: F401
except ImportError:  # an exact inner-product index in numpy stands in for faiss.IndexFlatIP
    import types
    import numpy as np

    class _FlatIP:
        def __init__(self, dim: int) -> None:
            self.x = np.zeros((0, dim), dtype=np.float32)

        @property
        def ntotal(self) -> int:
            return len(self.x)

        def add(self, x: np.ndarray) -> None:
            self.x = np.concatenate([self.x, np.asarray(x, dtype=np.float32)])

        def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            s = np.asarray(q, dtype=np.float32) @ self.x.T
            k = min(k, s.shape[1])
            rows = np.argsort(-s, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(s, rows, axis=1), rows

    import importlib.machinery

    shim = types.ModuleType("faiss")
    shim.__spec__ = importlib.machinery.ModuleSpec("faiss", None)
    shim.IndexFlatIP = shim.Index = _FlatIP
    shim.METRIC_INNER_PRODUCT = 0
    sys.modules["faiss"] = shim

from quality import ResultCache, _evaluate_on_sets  # the suite's own scoring: dense, then fused with BM25
from revela_hf.commands.train import parse_train_args
from revela_hf.retriever import RevelaRetriever
from revela_hf.search.encoders import as_encoder
from revela_hf.training import train

SETS = os.environ.get("SETS", "humaneval,concode,foldoc,stdlib").split(",")


class WallClock(TrainerCallback):
    """Stops training once `seconds` have passed since the first step began."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, None

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = self.start or time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() - self.start > self.seconds:
            control.should_training_stop = True


def score(folder: str, suite: Path) -> dict:
    """{system: {set: metrics in %, "mean": mean nDCG@10}} of the retriever in `folder`, dense and fused with BM25."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scores = _evaluate_on_sets(lambda: as_encoder(RevelaRetriever.from_pretrained(folder).to(device)), folder,
                               {name: str(suite / name) for name in SETS}, "dense", ResultCache(None), hybrid=True)
    results = {system: {name: {m: round(100 * v, 2) for m, v in metrics.items()} for name, metrics in per_set.items()}
               for system, per_set in scores.items()}
    for per_set in results.values():
        per_set["mean"] = round(sum(per_set[s]["ndcg@10"] for s in SETS) / len(SETS), 2)
    return results


def main() -> None:
    """Train (or not, with --eval-only), score, write OUT/NAME.json and print the suite means."""
    name, seconds, suite, out = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    record: dict = {"name": name, "argv": sys.argv[5:]}
    if sys.argv[5] == "--eval-only":
        folder = sys.argv[6]
    else:
        recipe, args = parse_train_args(sys.argv[6:])
        started = time.time()
        trainer = train(recipe.model_spec(), recipe.data, args, callbacks=[WallClock(seconds)])
        logs = trainer.state.log_history
        record["training"] = {
            "steps": trainer.state.global_step,
            "wall_s": round(time.time() - started, 1),
            "train_runtime_s": next((x["train_runtime"] for x in logs if "train_runtime" in x), None),
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "log": [x for x in logs if "loss" in x],
        }
        folder = str(Path(args.output_dir) / "retriever")
        del trainer
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    started = time.time()
    record["suite"] = score(folder, suite)
    record["eval_s"] = round(time.time() - started, 1)
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))
    print(name, json.dumps({s: r["mean"] for s, r in record["suite"].items()}), record.get("training", {}).get("steps"))


if __name__ == "__main__":
    main()
