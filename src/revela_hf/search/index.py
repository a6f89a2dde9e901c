"""Sharded faiss indexes of encoded corpora, built and searched one shard at a time.

An index folder holds `index.json` (settings, shard list and generation) and a generation folder
`gen-XXXX/` holding, per shard, `shard_NNNNN.faiss` (the vectors, flat or HNSW, inner product) and
`shard_NNNNN.jsonl` (doc id and text per row). Only one shard is in memory at a time, while
building and while searching, so a corpus larger than memory can be indexed by choosing
`shard_size` small enough. A hybrid index (`lexical=True`) also holds `bm25/`, a BM25 index of the
whole corpus (bm25s; its documents are keyed by shard and row), and `search_hybrid` fuses the
dense and the BM25 rankings (normalised scores by default). An index calibrated on example queries
(`calibration_queries`) is query-set centred (`revela_hf.search.centering`): its shards hold the documents centred
on the corpus mean, `centering.npz` holds that mean and the example queries' mean, and every query searched is
centred on the latter, so a single query gets the calibration a batch of its kind would give.

Rebuilding writes a new generation beside the old one and then switches `index.json` atomically,
under the index's lock (`revela_hf.io`): a reader sees the old index or the new one, never a mix,
and a build that fails or is killed leaves the old index as it was.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from revela_hf.search.bm25 import BM25Retriever
from revela_hf.search.centering import center, embedding_mean, unit_rows
from revela_hf.search.fusion import DEFAULT_FUSION, fuse
from revela_hf.io import absolute, fault_point, fsync_tree, output_lock, write_json_atomically
from revela_hf.encoders import Encoder

INDEX_KINDS = ("flat", "hnsw")
INDEX_CONFIG = "index.json"
GENERATION_PREFIX = "gen-"
_BUILDING_PREFIX = ".building-"
LEXICAL_DIR = "bm25"
CENTERING_FILE = "centering.npz"  # query_mean and doc_mean (E,) of a calibrated index
HYBRID_DEPTH = 100  # documents each ranking contributes to the fusion


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
    generation: str = ""  # sub-folder holding the shards ("" = the index folder itself, the older layout)
    lexical: bool = False  # holds a BM25 index too (`search_hybrid`)
    calibration_queries: int = 0  # example queries it is centred on (0: plain cosine)


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
        lexical: bool = False,
        calibration_queries: Sequence[str] | None = None,
    ) -> ShardedIndex:
        """Encode (doc id, text) pairs with `encoder.encode_corpus` and write them shard by shard; with
        `lexical`, a BM25 index of every document too (in memory at once while it is built); with
        `calibration_queries` (at least 2 unlabelled examples of the queries it will be asked), centred on them."""
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        if calibration_queries is not None and len(calibration_queries) < 2:
            raise ValueError(f"centering an index needs at least 2 calibration queries, got {len(calibration_queries)}")
        root = absolute(output_dir)
        with output_lock(root):
            _check_index_target(root)
            root.mkdir(parents=True, exist_ok=True)
            building = Path(tempfile.mkdtemp(prefix=_BUILDING_PREFIX, dir=root))
            try:
                config = IndexConfig(kind=kind, dim=0, num_docs=0, encoder=encoder_name, hnsw_m=hnsw_m, lexical=lexical,
                                     generation=GENERATION_PREFIX + building.name.removeprefix(_BUILDING_PREFIX))
                unit_sum = 0.0  # (E,) sum of the documents' unit embeddings
                for number, batch in enumerate(_batches(docs, shard_size)):
                    name = f"shard_{number:05d}"
                    unit_sum = unit_sum + _write_shard(encoder, batch, building / name, kind, hnsw_m, batch_size)
                    config.num_docs += len(batch)
                    config.shards.append(name)
                    fault_point("index:shard")
                if not config.shards:
                    raise ValueError("cannot index an empty corpus")
                config.dim = len(unit_sum)
                if calibration_queries is not None:
                    query_mean = embedding_mean(encoder.encode_queries(list(calibration_queries), batch_size=batch_size),
                                                "calibration queries")
                    _center_shards(building, config, query_mean, unit_sum / config.num_docs)
                    config.calibration_queries = len(calibration_queries)
                if lexical:
                    _write_lexical(building, config.shards)
                fsync_tree(building)
                os.rename(building, root / config.generation)
                fault_point("index:generation")
                write_json_atomically(root / INDEX_CONFIG, asdict(config))  # the switch to the new generation
            finally:
                shutil.rmtree(building, ignore_errors=True)
            _remove_stale(root, config.generation)
        return cls(root, config)

    @classmethod
    def load(cls, root: str | Path) -> ShardedIndex:
        """Open an index folder written by `build`."""
        path = Path(root) / INDEX_CONFIG
        if not path.is_file():
            raise FileNotFoundError(f"no index at {root} (missing {INDEX_CONFIG}); build one with `revela index`")
        return cls(root, IndexConfig(**json.loads(path.read_text(encoding="utf-8"))))

    def shard_path(self, name: str, suffix: str) -> Path:
        """The `.faiss` or `.jsonl` file of shard `name`; FileNotFoundError naming it if it is gone."""
        path = self.root / self.config.generation / f"{name}{suffix}"
        if not path.is_file():
            raise FileNotFoundError(f"the index at {self.root} lists {path.name} but {path} is missing; rebuild it with `revela index`")
        return path

    def search(self, query_embeddings: np.ndarray, top_k: int = 10) -> list[list[Hit]]:
        """The `top_k` best documents for each query embedding, best first, across all shards."""
        return [self._hits(candidates) for candidates in self._dense(query_embeddings, top_k)]

    def search_hybrid(
        self, queries: list[str], query_embeddings: np.ndarray, top_k: int = 10, fusion: str = DEFAULT_FUSION
    ) -> list[list[Hit]]:
        """The `top_k` best documents for each query (its text for BM25, its embedding for the dense
        shards): the two rankings of `HYBRID_DEPTH` documents fused by `fusion` (`revela_hf.search.fusion`:
        normalised scores by default, or reciprocal rank), scored by it."""
        if not self.config.lexical:
            raise ValueError(f"the index at {self.root} holds no BM25 index; rebuild it with `revela index --hybrid`")
        if len(queries) != len(query_embeddings):
            raise ValueError(f"{len(queries)} queries for {len(query_embeddings)} query embeddings")
        depth = max(top_k, HYBRID_DEPTH)
        dense = {str(q): {_row_key(name, row): score for score, name, row in c} for q, c in enumerate(self._dense(query_embeddings, depth))}
        bm25 = BM25Retriever.load(self.root / self.config.generation / LEXICAL_DIR)
        lexical = {str(q): hits for q, hits in enumerate(bm25.search(queries, depth))}
        fused = fuse([dense, lexical], fusion, top_k)
        return [self._hits([(score, *_parse_row_key(key)) for key, score in fused.get(str(q), {}).items()]) for q in range(len(queries))]

    def _dense(self, query_embeddings: np.ndarray, top_k: int) -> list[list[tuple[float, str, int]]]:
        """(score, shard, row) of the `top_k` best rows for each query embedding, best first, across all shards."""
        if top_k < 1:
            raise ValueError(f"top_k must be positive, got {top_k}")
        if query_embeddings.ndim != 2 or query_embeddings.shape[1] != self.config.dim:
            raise ValueError(f"query embeddings must be (N, {self.config.dim}), got {query_embeddings.shape}")
        if self.config.calibration_queries:
            query_embeddings = center(query_embeddings, self.centering()["query_mean"])
        best: list[list[tuple[float, str, int]]] = [[] for _ in range(len(query_embeddings))]
        for name in self.config.shards:
            scores, rows = search_faiss(faiss.read_index(str(self.shard_path(name, ".faiss"))), query_embeddings, top_k)
            for q, (q_scores, q_rows) in enumerate(zip(scores, rows)):
                candidates = [(float(s), name, int(r)) for s, r in zip(q_scores, q_rows) if r >= 0]
                best[q] = heapq.nlargest(top_k, best[q] + candidates, key=lambda c: c[0])
        return best

    def centering(self) -> dict[str, np.ndarray]:
        """`query_mean` and `doc_mean` (E,) of a calibrated index."""
        path = self.root / self.config.generation / CENTERING_FILE
        if not path.is_file():
            raise FileNotFoundError(f"the index at {self.root} is calibrated but {path} is missing; rebuild it with `revela index`")
        with np.load(path) as stored:
            return {key: stored[key] for key in ("query_mean", "doc_mean")}

    def _hits(self, candidates: list[tuple[float, str, int]]) -> list[Hit]:
        wanted = {(name, row) for _, name, row in candidates}
        docs: dict[tuple[str, int], dict] = {}
        for name in {name for name, _ in wanted}:
            with open(self.shard_path(name, ".jsonl"), encoding="utf-8") as handle:
                for row, line in enumerate(handle):
                    if (name, row) in wanted:
                        docs[(name, row)] = json.loads(line)
        return [Hit(doc_id=docs[(name, row)]["id"], score=score, text=docs[(name, row)]["text"]) for score, name, row in candidates]


def _write_shard(encoder: Encoder, batch: list[tuple[str, str]], stem: Path, kind: str, hnsw_m: int, batch_size: int) -> np.ndarray:
    """Encode one shard's documents and write `stem.faiss` and `stem.jsonl`; returns the sum (E,) of their unit
    embeddings."""
    embeddings = encoder.encode_corpus([text for _, text in batch], batch_size=batch_size)  # (n, E)
    faiss.write_index(new_faiss_index(embeddings, kind, hnsw_m), str(stem.with_suffix(".faiss")))
    with open(stem.with_suffix(".jsonl"), "w", encoding="utf-8") as handle:
        for doc_id, text in batch:
            handle.write(json.dumps({"id": doc_id, "text": text}) + "\n")
    return unit_rows(embeddings).sum(axis=0)


def _center_shards(building: Path, config: IndexConfig, query_mean: np.ndarray, doc_mean: np.ndarray) -> None:
    """Rewrite every shard of `building` with its documents centred on `doc_mean`, one shard in memory at a time,
    and store both means in `CENTERING_FILE`."""
    for name in config.shards:
        path = str(building / f"{name}.faiss")
        stored = faiss.read_index(path)
        faiss.write_index(new_faiss_index(center(stored.reconstruct_n(0, stored.ntotal), doc_mean), config.kind, config.hnsw_m), path)
    np.savez(building / CENTERING_FILE, query_mean=query_mean, doc_mean=doc_mean)


def _row_key(shard: str, row: int) -> str:
    return f"{shard}:{row}"


def _parse_row_key(key: str) -> tuple[str, int]:
    shard, row = key.rsplit(":", 1)
    return shard, int(row)


def _write_lexical(building: Path, shards: list[str]) -> None:
    """A BM25 index of every document of the written `shards`, keyed by shard and row, in `building/bm25`."""
    keys, texts = [], []
    for name in shards:
        with open(building / f"{name}.jsonl", encoding="utf-8") as handle:
            for row, line in enumerate(handle):
                keys.append(_row_key(name, row))
                texts.append(json.loads(line)["text"])
    BM25Retriever(keys, texts).save(building / LEXICAL_DIR)


def _check_index_target(root: Path) -> None:
    """Refuse to build into a folder that holds something other than an index."""
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not (root / INDEX_CONFIG).is_file())):
        raise ValueError(f"refusing to write an index into {root}: it exists and holds no {INDEX_CONFIG}; "
                         "choose another --output, or remove it yourself")


def _remove_stale(root: Path, current: str) -> None:
    """Delete what earlier or interrupted builds left: other generations, unfinished ones, shards of the older layout."""
    for entry in root.iterdir():
        stale_dir = entry.name.startswith((GENERATION_PREFIX, _BUILDING_PREFIX)) and entry.name != current
        if stale_dir and entry.is_dir():
            shutil.rmtree(entry)
        elif entry.name.startswith("shard_") and entry.suffix in (".faiss", ".jsonl"):
            entry.unlink()
