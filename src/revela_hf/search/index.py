"""Sharded faiss indexes of encoded corpora, built and searched one shard at a time.

An index folder holds `index.json` (settings and shard list) and, per shard, `shard_NNNNN.faiss`
(the vectors, flat or HNSW, inner product) and `shard_NNNNN.jsonl` (doc id and text per row).
Only one shard is in memory at a time, while building and while searching, so a corpus larger
than memory can be indexed by choosing `shard_size` small enough.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from revela_hf.search.encoders import Encoder

INDEX_KINDS = ("flat", "hnsw")
INDEX_CONFIG = "index.json"


def new_faiss_index(embeddings: np.ndarray, kind: str = "flat", hnsw_m: int = 32) -> faiss.Index:
    """An inner-product faiss index holding `embeddings` (N, E)."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
    dim = embeddings.shape[1]
    index = faiss.IndexFlatIP(dim) if kind == "flat" else faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def search_faiss(index: faiss.Index, queries: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and row numbers (-1 where fewer than `top_k` rows exist) of the best `top_k` rows per query."""
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), min(top_k, index.ntotal))


@dataclass
class IndexConfig:
    """What `index.json` records about an index."""

    kind: str
    dim: int
    num_docs: int
    shards: list[str] = field(default_factory=list)
    encoder: str | None = None
    hnsw_m: int = 32


@dataclass
class Hit:
    """One search result."""

    doc_id: str
    score: float
    text: str


def _batches(docs: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    iterator = iter(docs)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


class ShardedIndex:
    """A folder of faiss shards; see the module docstring for its layout."""

    def __init__(self, root: str | Path, config: IndexConfig) -> None:
        self.root = Path(root)
        self.config = config

    @classmethod
    def build(
        cls,
        encoder: Encoder,
        docs: Iterable[tuple[str, str]],
        output_dir: str | Path,
        kind: str = "flat",
        shard_size: int = 100_000,
        batch_size: int = 32,
        hnsw_m: int = 32,
        encoder_name: str | None = None,
    ) -> ShardedIndex:
        """Encode (doc id, text) pairs with `encoder.encode_corpus` and write them shard by shard."""
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        root = Path(output_dir)
        root.mkdir(parents=True, exist_ok=True)
        config = IndexConfig(kind=kind, dim=0, num_docs=0, encoder=encoder_name, hnsw_m=hnsw_m)
        for number, batch in enumerate(_batches(docs, shard_size)):
            name = f"shard_{number:05d}"
            embeddings = encoder.encode_corpus([text for _, text in batch], batch_size=batch_size)
            faiss.write_index(new_faiss_index(embeddings, kind, hnsw_m), str(root / f"{name}.faiss"))
            with open(root / f"{name}.jsonl", "w", encoding="utf-8") as handle:
                for doc_id, text in batch:
                    handle.write(json.dumps({"id": doc_id, "text": text}) + "\n")
            config.dim, config.num_docs = embeddings.shape[1], config.num_docs + len(batch)
            config.shards.append(name)
        if not config.shards:
            raise ValueError("cannot index an empty corpus")
        (root / INDEX_CONFIG).write_text(json.dumps(asdict(config), indent=2) + "\n", encoding="utf-8")
        return cls(root, config)

    @classmethod
    def load(cls, root: str | Path) -> ShardedIndex:
        """Open an index folder written by `build`."""
        path = Path(root) / INDEX_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"no index at {root} (missing {INDEX_CONFIG}); build one with `revela index`")
        return cls(root, IndexConfig(**json.loads(path.read_text(encoding="utf-8"))))

    def search(self, query_embeddings: np.ndarray, top_k: int = 10) -> list[list[Hit]]:
        """The `top_k` best documents for each query embedding, best first, across all shards."""
        if query_embeddings.ndim != 2 or query_embeddings.shape[1] != self.config.dim:
            raise ValueError(f"query embeddings must be (N, {self.config.dim}), got {query_embeddings.shape}")
        best: list[list[tuple[float, str, int]]] = [[] for _ in range(len(query_embeddings))]
        for name in self.config.shards:
            scores, rows = search_faiss(faiss.read_index(str(self.root / f"{name}.faiss")), query_embeddings, top_k)
            for q, (q_scores, q_rows) in enumerate(zip(scores, rows)):
                candidates = [(float(s), name, int(r)) for s, r in zip(q_scores, q_rows) if r >= 0]
                best[q] = heapq.nlargest(top_k, best[q] + candidates, key=lambda c: c[0])
        return [self._hits(candidates) for candidates in best]

    def _hits(self, candidates: list[tuple[float, str, int]]) -> list[Hit]:
        wanted = {(name, row) for _, name, row in candidates}
        docs: dict[tuple[str, int], dict] = {}
        for name in {name for name, _ in wanted}:
            with open(self.root / f"{name}.jsonl", encoding="utf-8") as handle:
                for row, line in enumerate(handle):
                    if (name, row) in wanted:
                        docs[(name, row)] = json.loads(line)
        return [Hit(doc_id=docs[(name, row)]["id"], score=score, text=docs[(name, row)]["text"]) for score, name, row in candidates]
