"""`revela search "query" --index DIR`: the best documents for a query."""

from __future__ import annotations

import argparse

from revela_hf.commands import positive_int
from revela_hf.search.fusion import DEFAULT_FUSION, FUSION_HELP, FUSIONS


def register(subparsers) -> None:
    parser = subparsers.add_parser("search", help="search an index built by `revela index`",
                                   description="Encode queries with the index's retriever and print the best documents.")
    parser.add_argument("queries", nargs="+", metavar="QUERY")
    parser.add_argument("--index", required=True, help="index folder")
    parser.add_argument("--retriever", help="retriever to encode queries with (default: the one that built the index)")
    parser.add_argument("--top-k", type=positive_int, default=10)
    parser.add_argument("--hybrid", action="store_true",
                        help="fuse the dense ranking with BM25's (an index built with --hybrid)")
    parser.add_argument("--fusion", choices=list(FUSIONS), default=DEFAULT_FUSION, help=FUSION_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from revela_hf.search import ShardedIndex, load_encoder

    index = ShardedIndex.load(args.index)
    retriever = args.retriever or index.config.encoder
    if retriever is None:
        raise ValueError("the index does not record its retriever; pass --retriever")
    embeddings = load_encoder(retriever).encode_queries(args.queries)
    if args.hybrid:
        hits = index.search_hybrid(args.queries, embeddings, top_k=args.top_k, fusion=args.fusion)
    else:
        hits = index.search(embeddings, top_k=args.top_k)
    for query, query_hits in zip(args.queries, hits):
        if args.json:
            print(json.dumps({"query": query, "hits": [{"id": h.doc_id, "score": h.score, "text": h.text} for h in query_hits]}))
            continue
        print(f"query: {query}")
        for rank, hit in enumerate(query_hits, 1):
            snippet = " ".join(hit.text.split())[:100]
            print(f"{rank:>3}. {hit.score:.4f}  {hit.doc_id}  {snippet}")
    return 0
