"""The encoder interface shared by grouping and search, and its sentence-transformers adapter.

`Encoder` is what the `embedding` grouping and re-grouping (documents only) and search (queries and
documents) call; `SentenceTransformerEncoder` adapts a sentence-transformers model to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch


class Encoder(Protocol):
    """Turns queries and documents into `(N, E)` vectors compared by inner product.

    Grouping calls `encode_corpus` with ``show_progress_bar=False``; search calls both through
    `as_encoder`, which gives float32 numpy arrays.
    """

    def encode_queries(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False) -> np.ndarray | torch.Tensor: ...

    def encode_corpus(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False) -> np.ndarray | torch.Tensor: ...


def as_array(embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
    """`(N, E)` embeddings as a C-contiguous float32 numpy array."""
    if hasattr(embeddings, "detach"):  # a torch.Tensor (torch is not imported until it is needed)
        embeddings = embeddings.detach().float().cpu().numpy()
    return np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))


class SentenceTransformerEncoder:
    """Adapts a sentence-transformers model (loaded, or a folder / Hub id to load) to `Encoder`: its
    "query"/"document" prompts, `(N, E)` CPU tensors.

    Args:
        model: a `SentenceTransformer`, or the name or path to load one from.
        device: where to load `model` when it is a name or path.
        normalize: L2-normalise the embeddings; None = when the model scores by cosine.
    """

    def __init__(self, model: Any, device: str | None = None, normalize: bool | None = None) -> None:
        if isinstance(model, str):
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(model, device=device)
        self.model = model
        self.normalize = model.similarity_fn_name in (None, "cosine") if normalize is None else normalize

    def _encode(self, method: str, texts: list[str], batch_size: int, show_progress_bar: bool) -> torch.Tensor:
        encode = getattr(self.model, method)
        return encode(texts, batch_size=batch_size, show_progress_bar=show_progress_bar, convert_to_tensor=True,
                      normalize_embeddings=self.normalize).cpu()

    def encode_queries(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False) -> torch.Tensor:
        return self._encode("encode_query", texts, batch_size, show_progress_bar)

    def encode_corpus(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False) -> torch.Tensor:
        return self._encode("encode_document", texts, batch_size, show_progress_bar)
