"""SIF token weights for mean pooling (Arora, Liang & Ma, "A simple but tough-to-beat baseline for sentence
embeddings", ICLR 2017): a token's weight is `a / (a + p(token))`, `p` its frequency in a corpus, so that the tokens
every text holds (punctuation, keywords, the prefix, EOS) count little in a mean and the rare ones count fully. The
common-component removal that completes SIF is `revela_hf.all_but_the_top`.

The frequencies are counted over the corpus as the retriever reads it: each text once as a query and once as a
passage (prefix and EOS included), so the prefixes and EOS, in every row, get low weights too. Tokens the corpus
never holds get weight 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from revela_hf.defaults import SIF_A
from revela_hf.io import write_file_atomically

TOKEN_WEIGHTS_FILE = "token_weights.npy"


def sif_weights(rows: Iterable[list[int]], vocab_size: int, a: float = SIF_A) -> torch.Tensor:
    """`(vocab_size,)` float32 weights `a / (a + p)` from token id `rows`; `p` = a token's share of all tokens counted."""
    if a <= 0:
        raise ValueError(f"the SIF constant a must be positive, got {a}")
    counts = np.zeros(vocab_size, dtype=np.float64)
    for ids in rows:
        if ids and max(ids) >= vocab_size:
            raise ValueError(f"token id {max(ids)} is outside the vocabulary of {vocab_size} tokens")
        np.add.at(counts, ids, 1.0)
    if counts.sum() == 0:
        raise ValueError("no tokens to count SIF weights from: the texts are empty")
    return torch.as_tensor(a / (a + counts / counts.sum()), dtype=torch.float32)


def save_token_weights(folder: str | os.PathLike[str], weights: torch.Tensor) -> Path:
    """Write `weights` `(V,)` to `folder / TOKEN_WEIGHTS_FILE` atomically."""
    path = Path(folder) / TOKEN_WEIGHTS_FILE
    write_file_atomically(path, lambda handle: np.save(handle, weights.detach().cpu().numpy()), "wb")
    return path


def load_token_weights(folder: str | os.PathLike[str]) -> torch.Tensor | None:
    """The weights saved in `folder`, or None where it holds none."""
    path = Path(folder) / TOKEN_WEIGHTS_FILE
    return torch.from_numpy(np.load(path)) if path.is_file() else None
