"""All-but-the-top post-processing fitted on descriptions: an inductive cure for the shared query direction.

Every description a Revela retriever cut from a decoder LM embeds (a docstring, a task statement, a dictionary
definition) lies near one shared direction, and the descriptions of one kind share more of it (query-set centring,
`revela_hf.search.centering`, measures that but needs the queries). Where descriptions differ most from one another
is largely *how* they are written, not what they ask for. Fitted once on descriptions from the training corpus
(docstrings of its functions), the projection removes their mean and their top-k principal directions from every
embedding, queries and documents alike, and normalises again (Mu & Viswanath, "All-but-the-Top", ICLR 2018, fitted on
the descriptions instead of all text):

    x' = normalise(y - V_k^T V_k y),   y = x / |x| - mean_P,   V_k: top-k right singular vectors of (P - mean_P)

It is one fixed affine map followed by normalisation: a single query needs nothing else. A `RevelaRetriever` holding
one (`retriever.projection`) applies it in `forward`, so `encode`, mteb and the ONNX export do; saved beside the
retriever (`PROJECTION_FILE`) it loads back with `RevelaRetriever.from_pretrained`, and the folder's
sentence-transformers modules end with it as a `Dense` layer between two `Normalize`s, so `SentenceTransformer(folder)`
gives the same embeddings.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from revela_hf.defaults import PROJECTION_DIRECTIONS
from revela_hf.hub import append_sentence_transformers_projection
from revela_hf.io import write_file_atomically
from revela_hf.search.centering import unit_rows

PROJECTION_FILE = "all_but_the_top.npz"


class AllButTheTop(nn.Module):
    """Removes `mean` `(E,)` and the `directions` `(k, E)`, orthonormal rows) from unit-length embeddings."""

    def __init__(self, mean: np.ndarray | torch.Tensor, directions: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        mean, directions = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(directions, dtype=torch.float32)
        if mean.ndim != 1 or directions.ndim != 2 or directions.shape[1] != mean.shape[0]:
            raise ValueError(f"all-but-the-top needs a (dim,) mean and (k, dim) directions, got {tuple(mean.shape)} and {tuple(directions.shape)}")
        self.register_buffer("mean", mean)  # (E,)
        self.register_buffer("directions", directions)  # (k, E)

    @classmethod
    def fit(cls, embeddings: np.ndarray, k: int = PROJECTION_DIRECTIONS) -> AllButTheTop:
        """Fit on `(N, E)` description embeddings: their unit rows' mean and top-`k` principal directions (N > k)."""
        if embeddings.ndim != 2:
            raise ValueError(f"fitting all-but-the-top expects (rows, dim) embeddings, got shape {embeddings.shape}")
        if k < 0 or len(embeddings) <= k:
            raise ValueError(f"removing {k} directions needs more than {k} descriptions (and k >= 0), got {len(embeddings)}")
        unit = unit_rows(embeddings)
        mean = unit.mean(axis=0)
        _, _, vt = np.linalg.svd(unit - mean, full_matrices=False)  # vt: (min(N, E), E)
        return cls(mean, vt[:k])

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`(N, E)` embeddings projected and normalised again, in float32."""
        if embeddings.shape[-1] != self.mean.shape[-1]:
            raise ValueError(f"embeddings of width {embeddings.shape[-1]} meet a projection fitted on width {self.mean.shape[-1]}")
        centred = F.normalize(embeddings.float(), dim=-1) - self.mean  # (N, E)
        return F.normalize(centred - (centred @ self.directions.T) @ self.directions, dim=-1)

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        """`forward` on a numpy array: `(N, E)` float32."""
        with torch.no_grad():
            return self(torch.as_tensor(np.asarray(embeddings, dtype=np.float32))).numpy()

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(weight (E, E), bias (E,))` with `weight @ u + bias` = the projection of a unit embedding `u` before the
        final normalisation: `weight` = I - V^T V, `bias` = -weight @ mean."""
        weight = torch.eye(len(self.mean)) - self.directions.T @ self.directions
        return weight, -weight @ self.mean

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write `PROJECTION_FILE` into `folder` atomically; a folder with sentence-transformers modules also gets the
        projection as its last modules (`Normalize`, `Dense`, `Normalize`)."""
        path = Path(folder) / PROJECTION_FILE
        mean, directions = self.mean.numpy(), self.directions.numpy()
        write_file_atomically(path, lambda handle: np.savez(handle, mean=mean, directions=directions), "wb")
        if (Path(folder) / "modules.json").is_file():
            append_sentence_transformers_projection(folder, *self.affine())
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> AllButTheTop:
        """Read `PROJECTION_FILE` from `folder`."""
        with np.load(Path(folder) / PROJECTION_FILE) as stored:
            return cls(stored["mean"], stored["directions"])
