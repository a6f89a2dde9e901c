"""One interface over every retriever this package can search with.

`as_encoder` wraps a RevelaRetriever (or any object with `encode_queries` / `encode_corpus`) or a
sentence-transformers model; `load_encoder` opens a folder or Hub repo of either kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from revela_hf.encoders import Encoder, SentenceTransformerEncoder, as_array

RETRIEVER_CONFIG = "revela_retriever.json"


class QueryCorpusEncoder:
    """Wraps an object with `encode_queries` / `encode_corpus` (a RevelaRetriever, a `SentenceTransformerEncoder`,
    a BEIR-style model) to give float32 numpy arrays."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def encode_queries(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        with torch.inference_mode():
            return as_array(self.model.encode_queries(texts, batch_size=batch_size))

    def encode_corpus(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        with torch.inference_mode():
            return as_array(self.model.encode_corpus(texts, batch_size=batch_size))


def as_encoder(model: Any) -> Encoder:
    """Adapt `model` to the `Encoder` interface."""
    from sentence_transformers import SentenceTransformer

    if isinstance(model, SentenceTransformer):
        model = SentenceTransformerEncoder(model)
    if callable(getattr(model, "encode_queries", None)) and callable(getattr(model, "encode_corpus", None)):
        return QueryCorpusEncoder(model)
    raise ValueError(f"cannot retrieve with a {type(model).__name__}: expected a RevelaRetriever, a SentenceTransformer or an object with encode_queries/encode_corpus")


def load_encoder(name_or_path: str, revision: str | None = None) -> Encoder:
    """Open a Revela retriever or a sentence-transformers model from a folder or Hub repo id. Either applies the
    all-but-the-top projection its folder may hold (`revela project`)."""
    from revela_hf.hub import resolve_model_dir

    folder = resolve_model_dir(name_or_path, revision=revision)
    if (folder / RETRIEVER_CONFIG).is_file() or (folder / "adapter_config.json").is_file():
        from revela_hf.retriever import RevelaRetriever

        return as_encoder(RevelaRetriever.from_pretrained(str(folder)))
    if (folder / "modules.json").is_file() or (folder / "config.json").is_file():
        from sentence_transformers import SentenceTransformer

        return as_encoder(SentenceTransformer(str(folder)))
    raise FileNotFoundError(f"{name_or_path} holds neither a Revela retriever ({RETRIEVER_CONFIG}) nor a sentence-transformers model")
