"""Encoding throughput of RevelaRetriever vs sentence-transformers on the same model and texts, and
all-MiniLM-L6-v2 on HumanEval docstring -> code retrieval.

    PYTHONPATH=src python benchmarks/encode.py --output benchmarks/encode.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from revela_hf.demo.assets import minilm_path
from revela_hf.evaluation import evaluate_retrieval, load_beir
from revela_hf.demo.humaneval import build_humaneval_beir
from revela_hf.retriever import RevelaRetriever


def _interleaved_docs_per_second(encoders: dict, texts: list[str], repeats: int) -> dict[str, float]:
    """Best-of-`repeats` docs/s of each encoder, the encoders taking turns so that background load hits all alike."""
    for encode in encoders.values():
        encode(texts[:8])  # warm-up
    best = {name: float("inf") for name in encoders}
    for _ in range(repeats):
        for name, encode in encoders.items():
            start = time.perf_counter()
            encode(texts)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: len(texts) / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="benchmarks/encode.json")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        beir = build_humaneval_beir(str(Path(tmp) / "humaneval"))
        texts = load_beir(beir).doc_texts()[1]
        # The same model both ways: all-MiniLM-L6-v2 as a Revela retriever (mean pooling, no prefixes) and as ST.
        revela = RevelaRetriever.from_backbone(minilm_path(), pooling="mean", query_prefix="", passage_prefix="", max_length=256)
        revela.save_pretrained(str(Path(tmp) / "minilm-revela"))
        st = SentenceTransformer(minilm_path(), device="cpu")
        st_all = torch.from_numpy(st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False))
        same = (revela.encode(texts, batch_size=args.batch_size, show_progress_bar=False) - st_all).abs().max().item()
        load_before = os.getloadavg()
        dps = _interleaved_docs_per_second({
            "revela": lambda t: revela.encode(t, batch_size=args.batch_size, show_progress_bar=False),
            "st": lambda t: st.encode(t, batch_size=args.batch_size, show_progress_bar=False),
        }, texts, args.repeats)
        load_after = os.getloadavg()
        revela_dps, st_dps = dps["revela"], dps["st"]
        table = {name: evaluate_retrieval(name, beir, batch_size=args.batch_size) for name in (minilm_path(), "bm25")}
    report = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)]},
        "throughput": {
            "model": "all-MiniLM-L6-v2", "texts": len(texts), "batch_size": args.batch_size, "repeats_interleaved_best_of": args.repeats,
            "revela_docs_per_s": round(revela_dps, 1), "sentence_transformers_docs_per_s": round(st_dps, 1),
            "ratio_revela_over_st": round(revela_dps / st_dps, 3), "max_abs_embedding_diff": same,
        },
        "humaneval_docstring_to_code": {
            "all-MiniLM-L6-v2": {k: round(100 * v, 2) for k, v in table[minilm_path()].items()},
            "bm25": {k: round(100 * v, 2) for k, v in table["bm25"].items()},
        },
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
