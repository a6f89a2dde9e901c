"""`revela evaluate --retriever R [--retriever R2 ...] --data BEIR_FOLDER`: metrics table, JSON and bar chart."""

from __future__ import annotations

import argparse

from revela_hf.commands import add_center_queries, positive_int
from revela_hf.search.fusion import DEFAULT_FUSION, FUSION_HELP, FUSIONS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="nDCG@10, MRR@10 and Recall@100 of retrievers on a BEIR folder, BM25 alongside",
        description="Evaluate retrievers (a Revela retriever folder or Hub repo, a sentence-transformers folder, or "
                    "'bm25') on a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv).")
    parser.add_argument("--retriever", action="append", required=True, help="folder, Hub repo id or 'bm25' (repeatable)")
    parser.add_argument("--data", required=True, help="BEIR folder")
    parser.add_argument("--split", default="test", help="qrels split (default test)")
    parser.add_argument("--output", help="JSON file for the results table (default: <data>/results.json)")
    parser.add_argument("--plot", help="PNG bar chart of the table")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--no-bm25", action="store_true", help="do not add BM25 to the table")
    parser.add_argument("--hybrid", action="store_true", help="add a row per dense retriever: its ranking fused with BM25's")
    parser.add_argument("--fusion", choices=list(FUSIONS), default=DEFAULT_FUSION, help=FUSION_HELP)
    add_center_queries(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from revela_hf.evaluation import evaluate_table, format_table, plot_results, save_table

    retrievers = list(dict.fromkeys(args.retriever + ([] if args.no_bm25 else ["bm25"])))
    table = evaluate_table(retrievers, args.data, batch_size=args.batch_size, split=args.split, hybrid=args.hybrid,
                           fusion=args.fusion, center=args.center_queries)
    print(format_table(table))
    output = save_table(table, args.output or Path(args.data) / "results.json", args.data)
    print(f"results written to {output}")
    if args.plot:
        print(f"plot written to {plot_results(table, args.plot)}")
    return 0
