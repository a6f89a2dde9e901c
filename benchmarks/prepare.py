"""Throughput of `revela prepare` stages on local text; prints JSON.

Chunks Python sources (code-aware) and their reST/Markdown docs from a local tree until at least
--chunks chunks exist, then times every grouping strategy on them. Embedding grouping uses the
training-free HashingEncoder (its encoding time is reported separately). Extrapolation to 5M
chunks is linear in chunks; bm25/embedding index shards of --shard-size chunks, so their per-chunk
cost at 5M is that of full shards (run with --chunks >= --shard-size to measure it).

    python benchmarks/prepare.py --chunks 200000 [--source DIR ...] [--group-size 16]

--chunks counts the chunks kept after short and duplicate chunks are dropped.
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
from revela_hf.data.store import ChunkStore, _fingerprint

TARGET = 5_000_000
_PY = f"python{sys.version_info.major}.{sys.version_info.minor}"
# site-packages first, then the standard library when it runs short of text
DEFAULT_SOURCES = [str(Path(sys.prefix) / "lib" / _PY / "site-packages"), str(Path(sys.base_prefix) / "lib" / _PY)]
MIN_WORDS = 8  # ChunkStore.build's default: shorter chunks are dropped


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def collect(sources: list[str], chunker: Chunker, target: int, min_words: int = MIN_WORDS) -> tuple[list, int, int, float]:
    """Documents from `sources` until they yield `target` chunks that `ChunkStore.build` keeps (at least
    `min_words` words, not a duplicate); returns them, the kept and all chunk counts, and chunking seconds."""
    documents, kept, total, seconds, seen = [], 0, 0, 0.0, set()
    for document in DocumentReader(sources):
        start = time.perf_counter()
        chunks = chunker.chunks(document.text, document.kind)
        seconds += time.perf_counter() - start
        total += len(chunks)
        for text in chunks:
            if len(text.split()) >= min_words:
                fingerprint = _fingerprint(text)
                if fingerprint not in seen:
                    seen.add(fingerprint)
                    kept += 1
        documents.append(document)
        if kept >= target:
            break
    return documents, kept, total, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=200_000, help="chunks to keep after dropping short and duplicate ones")
    parser.add_argument("--source", nargs="+", default=DEFAULT_SOURCES, help="read in order until --chunks are kept")
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--max-words", type=int, default=120)
    parser.add_argument("--shard-size", type=int, default=500_000)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    args = parser.parse_args()

    chunker = Chunker(max_words=args.max_words)
    documents, kept, total, chunk_seconds = collect(args.source, chunker, args.chunks)
    if kept < args.chunks:
        raise SystemExit(f"{args.source} yield only {kept} chunks after dedupe (< --chunks {args.chunks}); add a --source")
    result: dict = {"source": args.source, "documents": len(documents), "group_size": args.group_size, "chunks_before_dedupe": total}
    with tempfile.TemporaryDirectory() as workdir:
        start = time.perf_counter()
        store = ChunkStore.build(documents, chunker, Path(workdir) / "chunks.arrow", Counter())
        store_seconds = time.perf_counter() - start
        n = len(store)
        assert n == kept, (n, kept)  # the same rule as ChunkStore.build
        del documents
        result["chunks"] = n
        result["chunking"] = {"chunks_per_s": round(total / chunk_seconds), "with_store_and_dedup_chunks_per_s": round(n / store_seconds),
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
