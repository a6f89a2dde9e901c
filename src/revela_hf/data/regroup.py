"""Iterative re-grouping: rebuild `embedding` groups with the retriever being trained.

`GroupDataset` serves prepared groups to a Trainer from a group list that can be replaced
mid-training; `RegroupCallback` re-encodes the corpus every N steps with `model.retriever` and
swaps in new embedding groups, so later steps see groups the current retriever finds related.
The dataset must live in the training process (dataloader_num_workers=0): workers hold copies.
New groups reach the batches the loader fetches after the swap (accelerate's loader prefetches
one batch, so the step right after a swap still gets an old group).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import TrainerCallback

from revela_hf.data.grouping import EmbeddingIndex, neighbour_groups
from revela_hf.encoders import Encoder, as_array
from revela_hf.retriever import RevelaRetriever

logger = logging.getLogger(__name__)
COLUMNS = ("chunks", "sources", "doc_ids", "full_chunk")


class GroupDataset(Dataset):
    """Rows in the prepared schema, drawn from a flat chunk table through a replaceable group list."""

    def __init__(self, chunks: list[str], sources: list[str], doc_ids: list[str], full_chunk: list[bool], groups: np.ndarray):
        self.chunks, self.sources, self.doc_ids, self.full_chunk = chunks, sources, doc_ids, full_chunk
        self.groups = np.asarray(groups, dtype=np.int64)
        self.generation = 0

    @classmethod
    def from_prepared(cls, dataset) -> "GroupDataset":
        """Flatten a prepared `datasets.Dataset` (or its folder path) into chunks and its groups."""
        if isinstance(dataset, str):
            import datasets

            dataset = datasets.load_from_disk(dataset)
        missing = [c for c in COLUMNS if c not in dataset.column_names]
        if missing:
            raise ValueError(f"not a prepared group dataset: missing columns {missing}")
        columns = {c: dataset[c] for c in COLUMNS}
        size = len(columns["chunks"][0]) if len(dataset) else 0
        flat = {c: [value for row in columns[c] for value in row] for c in COLUMNS}
        groups = np.arange(len(flat["chunks"]), dtype=np.int64).reshape(-1, size) if size else np.empty((0, 0), np.int64)
        return cls(flat["chunks"], flat["sources"], flat["doc_ids"], flat["full_chunk"], groups)

    @property
    def group_size(self) -> int:
        return self.groups.shape[1]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, list]:
        members = self.groups[index].tolist()
        return {
            "chunks": [self.chunks[i] for i in members],
            "sources": [self.sources[i] for i in members],
            "doc_ids": [self.doc_ids[i] for i in members],
            "full_chunk": [self.full_chunk[i] for i in members],
        }

    def set_groups(self, groups: np.ndarray) -> None:
        """Replace the groups; the count and size must stay (samplers already hold indices)."""
        groups = np.asarray(groups, dtype=np.int64)
        if groups.shape != self.groups.shape:
            raise ValueError(f"new groups have shape {groups.shape}, the dataset serves {self.groups.shape}")
        self.groups = groups
        self.generation += 1


def embedding_groups(encoder: Encoder, texts: list[str], group_size: int, seed: int, batch_size: int = 32) -> np.ndarray:
    """Encode `texts` with `encoder` and build embedding neighbour groups (positions into `texts`)."""
    with torch.no_grad():
        embeddings = as_array(encoder.encode_corpus(texts, batch_size=batch_size, show_progress_bar=False))  # (N, E)
    rng = np.random.default_rng(seed)
    return neighbour_groups(len(texts), group_size, rng, EmbeddingIndex(embeddings)).groups


class RegroupCallback(TrainerCallback):
    """Every `every_n_steps` optimizer steps, re-encode the corpus with `model.retriever` and
    replace the dataset's groups with fresh `embedding` groups (same count and size)."""

    def __init__(self, dataset: GroupDataset, every_n_steps: int, seed: int = 0, batch_size: int = 32):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be positive, got {every_n_steps}")
        self.dataset = dataset
        self.every_n_steps = every_n_steps
        self.seed = seed
        self.batch_size = batch_size

    def on_train_begin(self, args, state, control, **kwargs):
        if getattr(args, "dataloader_num_workers", 0):
            logger.warning("RegroupCallback: dataloader workers hold copies of the dataset; new groups reach them only at the next epoch")

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every_n_steps or state.global_step >= state.max_steps:
            return
        model = kwargs.get("model")
        retriever = getattr(model, "retriever", None)
        if retriever is None:
            raise ValueError("RegroupCallback needs the trained model to expose `.retriever` with encode_corpus")
        if isinstance(retriever, RevelaRetriever):  # one cut from the LM reads with the LM's tokenizer
            retriever = retriever.with_default_tokenizer(kwargs.get("processing_class"))
        was_training = getattr(retriever, "training", False)
        if was_training:
            retriever.eval()
        try:
            groups = embedding_groups(retriever, self.dataset.chunks, self.dataset.group_size,
                                      seed=self.seed + state.global_step, batch_size=self.batch_size)
        finally:
            if was_training:
                retriever.train()
        self.dataset.set_groups(groups)
        logger.info("re-grouped %d groups at step %d", len(groups), state.global_step)
