"""`RevelaDataCollator`: one group of B text chunks -> LM inputs + retriever query/passage inputs."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from revela_hf.retriever import tokenize_texts

_WORD = re.compile(r"\S+")


def leading_words(text: str, ratio: float) -> str:
    """The first `ceil(ratio * n_words)` words of `text`, with its original spacing and line breaks."""
    ends = [m.end() for m in _WORD.finditer(text)]
    if not ends:
        return text
    keep = max(1, math.ceil(ratio * len(ends)))
    return text[: ends[keep - 1]]


@dataclass
class RevelaDataCollator:
    """Turn a dataset row `{"chunks": [...B texts], "sources"?: [...], "doc_ids"?: [...], "full_chunk"?: [...]}`
    into model inputs.

    LM side: each chunk + EOS, at most `max_length` tokens, right-padded, labels = ids (-100 on padding).
    Retriever side: query = `query_prefix` + the first `query_ratio` of the chunk's words (the whole
    chunk for sources in `full_chunk_sources`, or where the row's `full_chunk` flag says so);
    passage = `passage_prefix` + the chunk. With doc ids, `same_document` `(B, B)` feeds the
    trainer's label-free diagnostics. One group per batch: scale with gradient accumulation.
    """

    tokenizer: PreTrainedTokenizerBase
    retriever_tokenizer: PreTrainedTokenizerBase | None = None
    max_length: int = 160
    retriever_max_length: int = 160
    query_ratio: float = 0.5
    full_chunk_sources: Sequence[str] = field(default_factory=lambda: ["code"])
    query_prefix: str = "Query: "
    passage_prefix: str = "Passage: "
    append_eos: bool = True

    @classmethod
    def from_model_config(
        cls, tokenizer: PreTrainedTokenizerBase, retriever_tokenizer: PreTrainedTokenizerBase | None, config: Any, **kwargs: Any
    ) -> "RevelaDataCollator":
        """A collator whose retriever settings follow a `RevelaConfig`."""
        return cls(
            tokenizer=tokenizer,
            retriever_tokenizer=retriever_tokenizer,
            query_ratio=config.query_ratio,
            full_chunk_sources=list(config.full_chunk_sources),
            query_prefix=config.query_prefix,
            passage_prefix=config.passage_prefix,
            append_eos=config.pooling == "eos",
            **kwargs,
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if len(features) != 1:
            raise ValueError(
                f"RevelaDataCollator takes one group per batch, got {len(features)}: set per_device_train_batch_size=1 "
                "and raise gradient_accumulation_steps for more groups per update"
            )
        group = features[0]
        if "chunks" not in group:
            raise ValueError(f"a training row needs a 'chunks' column (list of texts); got columns {sorted(group)}")
        chunks = list(group["chunks"])
        if len(chunks) < 2:
            raise ValueError(f"a group needs at least 2 chunks, got {len(chunks)}")
        sources = group.get("sources") or ["text"] * len(chunks)
        full = group.get("full_chunk") or [source in self.full_chunk_sources for source in sources]
        queries = [chunk if whole else leading_words(chunk, self.query_ratio) for chunk, whole in zip(chunks, full)]

        batch = self._lm_inputs(chunks)
        retriever_tokenizer = self.retriever_tokenizer or self.tokenizer
        query = tokenize_texts(retriever_tokenizer, queries, self.query_prefix, self.retriever_max_length, self.append_eos)
        passage = tokenize_texts(retriever_tokenizer, chunks, self.passage_prefix, self.retriever_max_length, self.append_eos)
        batch.update(
            query_input_ids=query["input_ids"],
            query_attention_mask=query["attention_mask"],
            passage_input_ids=passage["input_ids"],
            passage_attention_mask=passage["attention_mask"],
        )
        doc_ids = group.get("doc_ids")
        if doc_ids:
            batch["same_document"] = torch.tensor([[a == b for b in doc_ids] for a in doc_ids])
        return batch

    def _lm_inputs(self, chunks: list[str]) -> dict[str, torch.Tensor]:
        """Chunks + EOS as right-padded LM inputs with labels."""
        encoded = tokenize_texts(self.tokenizer, chunks, "", self.max_length, append_eos=True)
        labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}
