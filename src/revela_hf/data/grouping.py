"""Grouping strategies: turn N chunks (positions 0..N-1, in corpus order) into groups of B.

Every strategy uses each chunk at most once; fewer than B chunks may be left over (reported).
Neighbour strategies (`bm25`, `embedding`) grow a group from a random seed chunk and its nearest
unused neighbours; seeds whose neighbours are all taken wait for the next round, which indexes
only the chunks still free. Large corpora are split into random shards to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
from tqdm.auto import tqdm

from revela_hf.encoders import Encoder, as_array

STRATEGIES = ("interleave", "document", "bm25", "embedding", "random")
Search = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class Grouping:
    """Groups as an (G, B) array of chunk positions, plus what did not fit."""

    groups: np.ndarray
    leftover: int
    fallback_groups: int = 0


def _finish(groups: list[np.ndarray], n: int, group_size: int, fallback: int = 0) -> Grouping:
    array = np.stack(groups).astype(np.int64) if groups else np.empty((0, group_size), dtype=np.int64)
    return Grouping(array, n - array.size, fallback)


def random_groups(n: int, group_size: int, rng: np.random.Generator) -> Grouping:
    """A control: a random permutation cut into consecutive groups."""
    usable = n - n % group_size
    return Grouping(rng.permutation(n)[:usable].reshape(-1, group_size), n - usable)


def _document_spans(doc_index: np.ndarray) -> list[tuple[int, int]]:
    starts = np.flatnonzero(np.r_[True, doc_index[1:] != doc_index[:-1]]) if len(doc_index) else np.empty(0, int)
    ends = np.r_[starts[1:], len(doc_index)]
    return list(zip(starts.tolist(), ends.tolist()))


def interleave_groups(doc_index: np.ndarray, group_size: int, width: int = 4) -> Grouping:
    """The paper's Wikipedia recipe: a stream that takes chunks round-robin from a window of `width`
    consecutive documents (a finished document is replaced by the next one in corpus order),
    cut into consecutive groups, so a group holds chunks of a few neighbouring documents."""
    if width < 1:
        raise ValueError(f"interleave width must be positive, got {width}")
    spans = iter(_document_spans(doc_index))
    active = [list(span) for _, span in zip(range(width), spans)]
    stream: list[int] = []
    while active:
        still = []
        for span in active:
            stream.append(span[0])
            span[0] += 1
            if span[0] < span[1]:
                still.append(span)
            else:
                nxt = next(spans, None)
                if nxt is not None:
                    still.append(list(nxt))
        active = still
    usable = len(stream) - len(stream) % group_size
    return Grouping(np.asarray(stream[:usable], dtype=np.int64).reshape(-1, group_size), len(stream) - usable)


def document_groups(doc_index: np.ndarray, group_size: int) -> Grouping:
    """Chunks of one document together: each document fills whole groups with its own chunks; the
    remainder waits in a buffer that the following (neighbouring) documents top up."""
    groups: list[np.ndarray] = []
    buffer: list[int] = []
    for start, end in _document_spans(doc_index):
        whole = (end - start) // group_size * group_size
        groups.extend(np.arange(start, start + whole).reshape(-1, group_size))
        buffer.extend(range(start + whole, end))
        while len(buffer) >= group_size:
            groups.append(np.asarray(buffer[:group_size]))
            del buffer[:group_size]
    return _finish(groups, len(doc_index), group_size)


def _greedy_round(pool: np.ndarray, group_size: int, rng: np.random.Generator, search: Search, k: int,
                  progress: tqdm, batch: int = 256) -> tuple[list[np.ndarray], np.ndarray]:
    """One pass of seeded grouping over `pool` (global positions); returns groups and the unused rest."""
    used = np.zeros(len(pool), dtype=bool)
    groups: list[np.ndarray] = []
    order = rng.permutation(len(pool))
    for start in range(0, len(order), batch):
        seeds = order[start:start + batch]
        seeds = seeds[~used[seeds]]
        if not len(seeds):
            continue
        for seed, row in zip(seeds, search(seeds, k)):
            if used[seed]:
                continue
            candidates = row[(row >= 0) & (row != seed)]
            candidates = candidates[~used[candidates]][: group_size - 1]
            if len(candidates) < group_size - 1:
                continue
            members = np.r_[seed, candidates]
            used[members] = True
            groups.append(pool[members])
            progress.update(group_size)
    return groups, pool[~used]


class NeighbourIndex(Protocol):
    """Builds a nearest-neighbour search over a pool of chunk positions (local ids in, local ids out)."""

    def load_shard(self, shard: np.ndarray) -> None: ...

    def search_over(self, pool: np.ndarray) -> Search: ...


def neighbour_groups(n: int, group_size: int, rng: np.random.Generator, index: NeighbourIndex, *,
                     shard_size: int = 500_000, max_rounds: int = 4, candidates: int = 3,
                     show_progress: bool = False, desc: str = "grouping") -> Grouping:
    """Seed + nearest unused neighbours, in rounds; what no round can group is grouped at random
    (counted in `fallback_groups`)."""
    groups: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    order = rng.permutation(n)
    with tqdm(total=n - n % group_size, desc=desc, unit="chunk", disable=not show_progress) as progress:
        for start in range(0, n, shard_size):
            pool = np.sort(order[start:start + shard_size])
            index.load_shard(pool)
            for _ in range(max_rounds):
                if len(pool) < 2 * group_size:
                    break
                k = min(candidates * group_size, len(pool))
                made, pool = _greedy_round(pool, group_size, rng, index.search_over(pool), k, progress)
                groups.extend(made)
                if not made:
                    break
            rest.append(pool)
        leftover = np.concatenate(rest) if rest else np.empty(0, np.int64)
        fallback = random_groups(len(leftover), group_size, rng)
        progress.update(fallback.groups.size)
    groups.extend(leftover[fallback.groups])
    return _finish(groups, n, group_size, len(fallback.groups))


class Bm25Index:
    """BM25 neighbours with bm25s: chunks are tokenized once per shard, queries are the seed's tokens."""

    def __init__(self, texts: Callable[[np.ndarray], list[str]], batch: int = 8192):
        self.texts = texts
        self.batch = batch
        self.tokens: dict[int, list[int]] = {}
        self.vocab: dict[str, int] = {}

    def load_shard(self, shard: np.ndarray) -> None:
        import bm25s

        tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
        self.tokens = {}
        for start in range(0, len(shard), self.batch):
            positions = shard[start:start + self.batch]
            ids = tokenizer.tokenize(self.texts(positions), update_vocab=True, return_as="ids", show_progress=False)
            self.tokens.update(zip(positions.tolist(), ids))
        self.vocab = tokenizer.get_vocab_dict()

    def search_over(self, pool: np.ndarray) -> Search:
        import bm25s

        retriever = bm25s.BM25()
        corpus = [self.tokens[p] for p in pool.tolist()]
        retriever.index((corpus, self.vocab), show_progress=False)

        def search(local: np.ndarray, k: int) -> np.ndarray:
            queries = [sorted(set(corpus[i])) for i in local.tolist()]
            ids, _ = retriever.retrieve(queries, k=k, show_progress=False, n_threads=0)
            return np.asarray(ids, dtype=np.int64)

        return search


def encode_to_memmap(encoder: Encoder, texts: Callable[[np.ndarray], list[str]], n: int, path: Path,
                     batch: int = 4096, show_progress: bool = False) -> np.ndarray:
    """Encode all n chunks into a float32 memory-mapped file (bounded memory); rows are L2-normalised."""
    embeddings: np.ndarray | None = None
    for start in tqdm(range(0, n, batch), desc="encoding", unit="batch", disable=not show_progress):
        positions = np.arange(start, min(start + batch, n))
        vectors = as_array(encoder.encode_corpus(texts(positions), batch_size=32, show_progress_bar=False))  # (b, E)
        if embeddings is None:
            embeddings = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, vectors.shape[1]))
        embeddings[start:start + len(positions)] = vectors
    if embeddings is None:
        raise ValueError("nothing to encode")
    return embeddings


class EmbeddingIndex:
    """Inner-product neighbours with faiss: exact below `exact_limit` vectors, IVF above."""

    def __init__(self, embeddings: np.ndarray, exact_limit: int = 50_000, nprobe: int = 16):
        self.embeddings = embeddings
        self.exact_limit = exact_limit
        self.nprobe = nprobe

    def load_shard(self, shard: np.ndarray) -> None:
        pass

    def search_over(self, pool: np.ndarray) -> Search:
        import faiss

        vectors = np.ascontiguousarray(self.embeddings[pool], dtype=np.float32)
        dim = vectors.shape[1]
        if len(pool) <= self.exact_limit:
            index = faiss.IndexFlatIP(dim)
        else:
            lists = int(4 * np.sqrt(len(pool)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = 1234
            sample = vectors[np.random.default_rng(0).choice(len(vectors), min(len(vectors), 64 * lists), replace=False)]
            index.train(sample)
            index.nprobe = self.nprobe
        index.add(vectors)

        def search(local: np.ndarray, k: int) -> np.ndarray:
            _, ids = index.search(vectors[local], k)
            return ids.astype(np.int64)

        return search


def group_chunks(strategy: str, n: int, group_size: int, seed: int, *, doc_index: np.ndarray | None = None,
                 texts: Callable[[np.ndarray], list[str]] | None = None, embeddings: np.ndarray | None = None,
                 interleave_width: int = 4, shard_size: int = 500_000, show_progress: bool = False) -> Grouping:
    """Group n chunks with a strategy; `doc_index` for interleave/document, `texts` for bm25,
    `embeddings` (N, E) for embedding."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown grouping strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if group_size < 2:
        raise ValueError(f"group size must be at least 2, got {group_size}")
    if n < group_size:
        raise ValueError(f"the corpus has {n} usable chunks, fewer than one group of {group_size}")
    rng = np.random.default_rng(seed)
    if strategy == "random":
        return random_groups(n, group_size, rng)
    if strategy in ("interleave", "document"):
        if doc_index is None:
            raise ValueError(f"strategy {strategy!r} needs doc_index")
        if strategy == "document":
            return document_groups(doc_index, group_size)
        return interleave_groups(doc_index, group_size, interleave_width)
    if strategy == "bm25":
        if texts is None:
            raise ValueError("strategy 'bm25' needs the chunk texts")
        index: NeighbourIndex = Bm25Index(texts)
    else:
        if embeddings is None:
            raise ValueError("strategy 'embedding' needs embeddings (pass an encoder)")
        index = EmbeddingIndex(embeddings)
    return neighbour_groups(n, group_size, rng, index, shard_size=shard_size, show_progress=show_progress, desc=strategy)
