"""`revela index --retriever R --corpus corpus.jsonl --output DIR`: encode a corpus into sharded faiss indexes."""

from __future__ import annotations

import argparse

from revela_hf.commands import positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "index", help="encode a corpus into a (sharded) faiss index",
        description="Encode a BEIR-style corpus.jsonl (or a BEIR folder) with a retriever and write faiss shards "
                    "(flat or HNSW, inner product). Shards are built one at a time, so corpora larger than memory work.")
    parser.add_argument("--retriever", required=True, help="Revela retriever or sentence-transformers folder/Hub repo")
    parser.add_argument("--corpus", required=True, help="corpus.jsonl, or a BEIR folder holding one")
    parser.add_argument("--output", required=True, help="index folder")
    parser.add_argument("--kind", choices=("flat", "hnsw"), default="flat")
    parser.add_argument("--shard-size", type=positive_int, default=100_000, help="documents per shard (default 100000)")
    parser.add_argument("--hnsw-m", type=positive_int, default=32, help="HNSW graph degree (default 32)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--hybrid", action="store_true", help="also build a BM25 index, for `revela search --hybrid`")
    parser.add_argument("--calibration-queries", metavar="FILE",
                        help="unlabelled example queries (queries.jsonl, or one per line; 16 or more): centre the index "
                             "on them and on the corpus (query-set centering), which every later search uses")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from revela_hf.evaluation.beir import iter_corpus, read_query_texts
    from revela_hf.hub import model_reference
    from revela_hf.search import ShardedIndex, load_encoder

    corpus = Path(args.corpus)
    folder = corpus if corpus.is_dir() else corpus.parent
    if not corpus.is_dir() and corpus.name != "corpus.jsonl":
        raise ValueError(f"--corpus must be a corpus.jsonl file or a BEIR folder, got {corpus}")
    calibration = read_query_texts(args.calibration_queries) if args.calibration_queries else None
    index = ShardedIndex.build(load_encoder(args.retriever), iter_corpus(folder), args.output, kind=args.kind,
                               shard_size=args.shard_size, batch_size=args.batch_size, hnsw_m=args.hnsw_m,
                               encoder_name=model_reference(args.retriever), lexical=args.hybrid,
                               calibration_queries=calibration)
    lexical = " and a BM25 index" if args.hybrid else ""
    centred = f", centred on {len(calibration)} calibration queries" if calibration else ""
    print(f"indexed {index.config.num_docs} documents in {len(index.config.shards)} {args.kind} shard(s){lexical}{centred} at {args.output}")
    return 0
