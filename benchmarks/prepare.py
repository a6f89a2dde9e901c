"""Throughput of `revela prepare` stages on local text; prints JSON.

Chunks Python sources (code-aware) and their reST/Markdown docs from a local tree until at least
--chunks chunks exist, then times every grouping strategy on them. Embedding grouping uses the
training-free HashingEncoder (its encoding time is reported separately). Extrapolation to 5M
chunks is linear in chunks; bm25/embedding index shards of --shard-size chunks, so their per-chunk
cost at 5M is that of full shards (run with --chunks >= --shard-size to measure it).

    python benchmarks/prepare.py --chunks 200000 [--source DIR] [--group-size 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from revela_hf.data.chunking import Chunker
from revela_hf.data.encoders import HashingEncoder
from revela_hf.data.grouping import STRATEGIES, encode_to_memmap, group_chunks
from revela_hf.data.readers import DocumentReader
from revela_hf.data.store import ChunkStore

TARGET = 5_000_000


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def collect(source: str, chunker: Chunker, target: int) -> tuple[list, int, float]:
    """Documents from `source` until they yield `target` chunks; returns them, the count and chunking seconds."""
    documents, count, seconds = [], 0, 0.0
    for document in DocumentReader([source]):
        start = time.perf_counter()
        count += len(chunker.chunks(document.text, document.kind))
        seconds += time.perf_counter() - start
        documents.append(document)
        if count >= target:
            break
    return documents, count, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--source", default=str(Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"))
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--max-words", type=int, default=120)
    parser.add_argument("--shard-size", type=int, default=500_000)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    args = parser.parse_args()

    chunker = Chunker(max_words=args.max_words)
    documents, _, chunk_seconds = collect(args.source, chunker, args.chunks)
    result: dict = {"source": args.source, "documents": len(documents), "group_size": args.group_size}
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        store = ChunkStore.build(documents, chunker, Path(workdir) / "chunks.arrow", Counter())
        store_seconds = time.perf_counter() - start
        n = len(store)
        del documents
        result["chunks"] = n
        result["chunking"] = {"chunks_per_s": round(n / chunk_seconds), "with_store_and_dedup_chunks_per_s": round(n / store_seconds),
                              "seconds": round(store_seconds, 2), "peak_rss_mb": peak_rss_mb()}
        for strategy in args.strategies:
            stage: dict = {}
            embeddings = None
            if strategy == "embedding":
                start = time.perf_counter()
                embeddings = encode_to_memmap(HashingEncoder(), store.texts, n, Path(workdir) / "emb.npy")
                stage["encoding_chunks_per_s"] = round(n / (time.perf_counter() - start))
            start = time.perf_counter()
            grouping = group_chunks(strategy, n, args.group_size, 0, doc_index=store.doc_index, texts=store.texts,
                                    embeddings=embeddings, shard_size=args.shard_size)
            seconds = time.perf_counter() - start
            stage.update({"chunks_per_s": round(n / seconds), "seconds": round(seconds, 2), "groups": len(grouping.groups),
                          "fallback_groups": grouping.fallback_groups, "peak_rss_mb": peak_rss_mb()})
            result[strategy] = stage
    per_chunk = store_seconds / n + max(
        (result[s]["seconds"] / n for s in args.strategies), default=0.0)
    result["extrapolated_seconds_for_5M_chunks"] = {
        "chunking": round(store_seconds / n * TARGET),
        **{s: round(result[s]["seconds"] / n * TARGET) for s in args.strategies},
        "slowest_full_pipeline": round(per_chunk * TARGET),
    }
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
