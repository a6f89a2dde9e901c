"""`RevelaRetriever`: a transformers backbone plus pooling, prefixes and normalisation."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

POOLINGS = ("eos", "last", "mean", "cls")
SETTINGS_FILE = "revela_retriever.json"


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    return pooling


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool `(N, L, E)` hidden states into `(N, E)`.

    "eos"/"last" take the last real token (works with left or right padding), "mean" averages
    the real tokens, "cls" takes position 0.
    """
    check_pooling(pooling)
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (N, L, 1)
    if pooling == "mean":
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask.bool() * positions).argmax(dim=1)  # (N,) index of the last real token
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class RevelaRetriever(nn.Module):
    """Dense retriever: `backbone` (any transformers base model) -> pooled, optionally L2-normalised embedding.

    Decoder backbones use "eos" pooling (an EOS token is appended to every text and its final
    hidden state is the embedding, RepLLaMA style); encoder backbones "mean" or "cls".
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        pooling: str = "eos",
        query_prefix: str = "Query: ",
        passage_prefix: str = "Passage: ",
        normalize: bool = True,
        max_length: int = 512,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooling = check_pooling(pooling)
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.normalize = normalize
        self.max_length = max_length

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(
        cls,
        backbone: str | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        lora: Any | None = None,
        **settings: Any,
    ) -> "RevelaRetriever":
        """Build from a model folder or an instantiated model; `lora` is a `peft.LoraConfig` to inject."""
        if isinstance(backbone, str):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(backbone)
            backbone = AutoModel.from_pretrained(backbone)
        backbone = base_model_of(backbone)
        if lora is not None:
            backbone.add_adapter(lora)
        return cls(backbone, tokenizer, **settings)

    def settings(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "normalize": self.normalize,
            "max_length": self.max_length,
        }

    def save_pretrained(self, save_directory: str) -> None:
        """Write the backbone (adapter only when LoRA is attached), tokenizer and settings."""
        os.makedirs(save_directory, exist_ok=True)
        self.backbone.save_pretrained(save_directory)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)
        with open(os.path.join(save_directory, SETTINGS_FILE), "w", encoding="utf-8") as f:
            json.dump(self.settings(), f, indent=2)

    @classmethod
    def from_pretrained(cls, path: str, **overrides: Any) -> "RevelaRetriever":
        """Load a folder written by `save_pretrained` (a LoRA adapter folder loads base + adapter)."""
        settings_path = os.path.join(path, SETTINGS_FILE)
        settings: dict[str, Any] = {}
        if os.path.exists(settings_path):
            with open(settings_path, encoding="utf-8") as f:
                settings = json.load(f)
        settings.update(overrides)
        return cls(AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), **settings)

    # ------------------------------------------------------------------ encoding
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """`(N, L)` token ids -> `(N, E)` embeddings."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (N, L, E)
        emb = pool(hidden, attention_mask, self.pooling)
        return F.normalize(emb, dim=-1) if self.normalize else emb

    def tokenize(self, texts: list[str], prefix: str = "", max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenise `prefix + text`, appending EOS for "eos" pooling; right-padded."""
        if self.tokenizer is None:
            raise ValueError("this RevelaRetriever has no tokenizer; pass one to encode text")
        return tokenize_texts(self.tokenizer, texts, prefix, max_length or self.max_length, self.pooling == "eos")

    @torch.no_grad()
    def encode(
        self, texts: list[str], prefix: str = "", batch_size: int = 32, show_progress_bar: bool = True
    ) -> torch.Tensor:
        """Encode texts in batches (longest first, to waste little padding); returns `(N, E)` on CPU."""
        if isinstance(texts, str):
            raise ValueError("encode expects a list of texts, got a single string")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: list[torch.Tensor] = [None] * len(texts)  # type: ignore[list-item]
        batches = range(0, len(texts), batch_size)
        for start in tqdm(batches, desc="encoding", disable=not show_progress_bar, unit="batch"):
            idx = order[start : start + batch_size]
            enc = self.tokenize([texts[i] for i in idx], prefix)
            emb = self(enc["input_ids"].to(device), enc["attention_mask"].to(device)).float().cpu()
            for row, i in enumerate(idx):
                out[i] = emb[row]
        self.train(was_training)
        if not texts:
            return torch.empty(0, self.backbone.config.hidden_size)
        return torch.stack(out)

    def encode_queries(self, queries: list[str], batch_size: int = 32, show_progress_bar: bool = True) -> torch.Tensor:
        return self.encode(queries, self.query_prefix, batch_size, show_progress_bar)

    def encode_corpus(self, corpus: list[str], batch_size: int = 32, show_progress_bar: bool = True) -> torch.Tensor:
        return self.encode(corpus, self.passage_prefix, batch_size, show_progress_bar)


def tokenize_texts(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], prefix: str, max_length: int, append_eos: bool
) -> dict[str, torch.Tensor]:
    """Right-padded `prefix + text` token ids and mask; with `append_eos` the EOS id ends every row (truncation keeps it)."""
    if append_eos and tokenizer.eos_token_id is None:
        raise ValueError("eos pooling needs a tokenizer with an EOS token")
    limit = max_length - 1 if append_eos else max_length
    rows = tokenizer([prefix + t for t in texts], truncation=True, max_length=limit)["input_ids"]
    if append_eos:
        eos = tokenizer.eos_token_id
        rows = [ids if ids and ids[-1] == eos else ids + [eos] for ids in rows]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max((len(r) for r in rows), default=0)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, ids in enumerate(rows):
        input_ids[k, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[k, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def base_model_of(model: PreTrainedModel) -> PreTrainedModel:
    """The bare transformer of a model with a head (e.g. LlamaModel inside LlamaForCausalLM)."""
    base = getattr(model, "base_model", model)
    return base if isinstance(base, PreTrainedModel) else model
