"""`HashingEncoder`, a cheap, training-free `Encoder` for the `embedding` strategy: hashed word
features projected to a dense vector (`revela_hf.encoders.SentenceTransformerEncoder` adapts a
sentence-transformers model)."""

from __future__ import annotations

import re
import zlib

import numpy as np
import torch

_WORD = re.compile(r"\w\w+")


class HashingEncoder:
    """Dense embeddings of hashed, log-scaled word counts through a fixed random projection."""

    def __init__(self, dim: int = 256, buckets: int = 2**18, seed: int = 0):
        self.dim = dim
        self.buckets = buckets
        self.seed = seed

    def _direction(self, buckets: np.ndarray) -> np.ndarray:
        """A deterministic pseudo-random unit-variance vector per bucket (no table held in memory)."""
        rows = [np.random.default_rng([self.seed, int(b)]).standard_normal(self.dim, dtype=np.float32) for b in buckets]
        return np.stack(rows) if rows else np.empty((0, self.dim), np.float32)

    def encode_corpus(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False) -> torch.Tensor:
        from scipy.sparse import csr_matrix

        rows, buckets = [], []
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                rows.append(row)
                buckets.append(zlib.crc32(word.encode()) % self.buckets)
        unique, columns = np.unique(np.asarray(buckets, dtype=np.int64), return_inverse=True)
        counts = csr_matrix((np.ones(len(rows), np.float32), (rows, columns)), shape=(len(texts), len(unique)))
        counts.sum_duplicates()
        counts.data = 1.0 + np.log(counts.data)
        out = np.asarray(counts @ self._direction(unique), dtype=np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return torch.from_numpy(out / np.maximum(norms, 1e-12))

    encode_queries = encode_corpus  # a bag of words encodes queries and documents alike
