"""The main job's protocol on any BEIR-layout folder: untrained SmolLM2 retriever, the same after Revela
training on local unlabelled code (the `revela demo` recipe and budgets), BM25 and all-MiniLM-L6-v2,
in one run. Prints one JSON object (nDCG@10 / MRR@10 / Recall@100 per retriever, and the ratios of
the trained retriever to its untrained self and to BM25).

    PYTHONPATH=src python benchmarks/quality.py --data path/to/beir_folder [--budget default|full|ci] [--objective revela|replug|dream]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from revela_hf.demo import run_demo
from revela_hf.recipes import BUDGETS, OBJECTIVE_NAMES, trained_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv")
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="default")
    parser.add_argument("--output", default="revela-quality", help="working folder")
    parser.add_argument("--objective", choices=sorted(OBJECTIVE_NAMES), default="revela")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (Path(args.data) / "corpus.jsonl").is_file():
        raise SystemExit(f"{args.data} is not a BEIR folder (no corpus.jsonl)")
    results = run_demo(args.output, args.budget, args.seed, eval_dir=args.data, objective=args.objective)
    table = results["table"]
    trained, untrained = table[trained_name(args.objective)]["ndcg@10"], table["SmolLM2-135M untrained"]["ndcg@10"]
    print(json.dumps({
        "data": args.data,
        "budget": args.budget,
        "objective": args.objective,
        "wall_time_s": results["wall_time_s"],
        "table": table,
        "ndcg@10_trained_over_untrained": round(trained / max(untrained, 1e-9), 3),
        "ndcg@10_trained_over_bm25": round(trained / max(table["BM25"]["ndcg@10"], 1e-9), 3),
    }))


if __name__ == "__main__":
    main()
