"""`RevelaDataCollator`: one group of B text chunks -> LM inputs + retriever query/passage inputs."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from revela_hf.pooling import pooling_appends_eos
from revela_hf.retriever import tokenize_texts

_WORD = re.compile(r"\S+")


def leading_words(text: str, ratio: float) -> str:
    """The first `ceil(ratio * n_words)` words of `text`, with its original spacing and line breaks."""
    ends = [m.end() for m in _WORD.finditer(text)]
    if not ends:
        return text
    keep = max(1, math.ceil(ratio * len(ends)))
    return text[: ends[keep - 1]]


def retriever_inputs(
    collator: "RevelaDataCollator | DreamDataCollator", tokenizer: PreTrainedTokenizerBase, queries: list[str], passages: list[str]
) -> dict[str, torch.Tensor]:
    """`query_*` / `passage_*` ids and masks, with the collator's prefixes, length limit and EOS rule."""
    query = tokenize_texts(tokenizer, queries, collator.query_prefix, collator.retriever_max_length, collator.append_eos)
    passage = tokenize_texts(tokenizer, passages, collator.passage_prefix, collator.retriever_max_length, collator.append_eos)
    return {
        "query_input_ids": query["input_ids"],
        "query_attention_mask": query["attention_mask"],
        "passage_input_ids": passage["input_ids"],
        "passage_attention_mask": passage["attention_mask"],
    }


@dataclass
class RevelaDataCollator:
    r"""Data collator that turns one group of B text chunks into the inputs of [`RevelaForCausalLM`].

    It serves the `"revela"` and `"replug"` objectives (REPLUG reads the same group inputs; there is no separate
    REPLUG collator). A dataset row is `{"chunks": [...B texts], "sources"?: [...], "doc_ids"?: [...],
    "full_chunk"?: [...]}`, as `revela prepare` writes them, and a batch is exactly one row: scale with gradient
    accumulation, not with the batch size.

    LM side: each chunk + EOS, at most `max_length` tokens, right-padded; labels = ids (-100 on padding).
    Retriever side: query = `query_prefix` + the first `ceil(query_ratio * n_words)` words of the chunk (the
    whole chunk for sources in `full_chunk_sources`, or wherever the row's `full_chunk` flags say so; given, those
    flags replace the per-source rule); passage = `passage_prefix` + the chunk. Rows without `sources` count as
    `"text"`. With `doc_ids`, `same_document` `(B, B)` feeds [`RevelaTrainer`]'s label-free diagnostics.

    Use [`RevelaDataCollator.from_model_config`] to take the retriever settings from a [`RevelaConfig`];
    [`RevelaTrainer`] builds one that way when it is given no `data_collator`.

    Args:
        tokenizer ([`PreTrainedTokenizerBase`]):
            The LM's tokenizer; it must have an EOS token.
        retriever_tokenizer ([`PreTrainedTokenizerBase`], *optional*):
            The retriever's tokenizer, when it differs from the LM's. Defaults to `tokenizer`.
        max_length (`int`, *optional*, defaults to 160):
            LM tokens per chunk, EOS included; longer chunks are truncated.
        retriever_max_length (`int`, *optional*, defaults to 160):
            Retriever tokens per query and per passage, prefix and EOS included.
        query_ratio (`float`, *optional*, defaults to 0.5):
            Share of a chunk's words (at least one) that forms its query.
        full_chunk_sources (`Sequence[str]`, *optional*, defaults to `["code"]`):
            Sources whose query is the whole chunk.
        query_prefix (`str`, *optional*, defaults to `"Query: "`):
            Text put before every query.
        passage_prefix (`str`, *optional*, defaults to `"Passage: "`):
            Text put before every passage.
        append_eos (`bool`, *optional*, defaults to `True`):
            Whether every retriever input ends with EOS (what `"eos"` pooling reads). The LM inputs always do.

    Returns (when called on a list of one row):
        `dict[str, torch.Tensor]` with `input_ids`, `attention_mask` and `labels` `(B, L)`; `query_input_ids` and
        `query_attention_mask` `(B, Lq)`; `passage_input_ids` and `passage_attention_mask` `(B, Lp)`; and, when
        the row has `doc_ids`, `same_document` `(B, B)` (bool). It raises a `ValueError` for a batch of more than
        one row, a row without `chunks` or with fewer than 2, and a group left with no token to predict.

    Example:

    ```python
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import PreTrainedTokenizerFast
    >>> from revela_hf import RevelaDataCollator

    >>> words = "[PAD] [UNK] [EOS] Query: Passage: the cat sat on a mat dog ran in park".split()
    >>> backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    >>> backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    >>> tokenizer = PreTrainedTokenizerFast(
    ...     tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    ... )

    >>> collator = RevelaDataCollator(tokenizer, max_length=16)
    >>> row = {"chunks": ["the cat sat on a mat", "a dog ran in the park", "the cat ran"], "doc_ids": ["a", "b", "a"]}
    >>> batch = collator([row])
    >>> batch["input_ids"].shape  # (B, L): the longest chunk + EOS
    torch.Size([3, 7])
    >>> tokenizer.decode(batch["query_input_ids"][0])  # prefix + the first half of the words + EOS
    'Query: the cat sat [EOS]'
    >>> batch["same_document"][0].tolist()
    [True, False, True]

    ```
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
            append_eos=pooling_appends_eos(config.pooling),
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
        batch.update(retriever_inputs(self, self.retriever_tokenizer or self.tokenizer, queries, chunks))
        doc_ids = group.get("doc_ids")
        if doc_ids:
            batch["same_document"] = torch.tensor([[a == b for b in doc_ids] for a in doc_ids])
        return batch

    def _lm_inputs(self, chunks: list[str]) -> dict[str, torch.Tensor]:
        """Chunks + EOS as right-padded LM inputs with labels."""
        encoded = tokenize_texts(self.tokenizer, chunks, "", self.max_length, append_eos=True)
        labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
        if not (labels[:, 1:] != -100).any():
            raise ValueError(f"a group has no token to predict (max_length {self.max_length}, chunks {chunks!r:.200}): its chunks "
                             "are empty or cut to their EOS; drop empty chunks from the dataset or raise max_length")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}


@dataclass
class DreamDataCollator:
    r"""Data collator that turns DREAM rows into the inputs of a [`RevelaForCausalLM`] with `objective="dream"`.

    A row is `{"query": str, "target": str, "candidates": [K texts], "positives"?: [K bools]}`. A feature may also
    be a group row whose fields are lists (N queries, as `revela_hf.objectives.dream_rows_from_groups` builds
    them); all rows of all features form one batch of N rows. LM side, one left-padded sequence per row (left
    padding puts every target at the end, so the model computes logits for the target window only):

        [BOS] cand_1 SEP ... cand_K SEP query target EOS

    (BOS where the tokenizer adds one; SEP = `separator`, the EOS token by default). `labels` are -100 except on
    the target and its EOS; `candidate_spans` `(N, K, 2)` holds each candidate's [start, end) positions and
    `candidate_mask` `(N, K)` which candidates are real (rows with fewer candidates are padded at the end).
    Retriever side: `query_prefix` + query `(N, Lq)`, `passage_prefix` + every real candidate `(M, Lp)`,
    row-major (M = the number of real candidates). With `positives`, `same_document` `(N, K)` marks them
    ([`RevelaTrainer`]'s `top1_same_doc` then reads "the retriever's top candidate is a positive").

    Args:
        tokenizer ([`PreTrainedTokenizerBase`]):
            The LM's tokenizer; it must have an EOS token.
        retriever_tokenizer ([`PreTrainedTokenizerBase`], *optional*):
            The retriever's tokenizer, when it differs from the LM's. Defaults to `tokenizer`.
        candidate_max_length (`int`, *optional*, defaults to 160):
            LM tokens per candidate (separator not counted); longer candidates are cut.
        query_max_length (`int`, *optional*, defaults to 80):
            LM tokens of the query.
        target_max_length (`int`, *optional*, defaults to 80):
            LM tokens of the target, its EOS included.
        retriever_max_length (`int`, *optional*, defaults to 160):
            Retriever tokens per query and per candidate passage, prefix and EOS included.
        query_prefix (`str`, *optional*, defaults to `"Query: "`):
            Text put before every query on the retriever side.
        passage_prefix (`str`, *optional*, defaults to `"Passage: "`):
            Text put before every candidate on the retriever side.
        append_eos (`bool`, *optional*, defaults to `True`):
            Whether every retriever input ends with EOS (what `"eos"` pooling reads).
        separator (`str`, *optional*):
            Text between candidates in the LM sequence. Defaults to the EOS token.

    Returns (when called on a list of rows):
        `dict[str, torch.Tensor]` with `input_ids`, `attention_mask` and `labels` `(N, T)`; `candidate_spans`
        `(N, K, 2)`; `candidate_mask` `(N, K)` (bool); `query_input_ids` and `query_attention_mask` `(N, Lq)`;
        `passage_input_ids` and `passage_attention_mask` `(M, Lp)`; and, when rows have `positives`,
        `same_document` `(N, K)` (bool). It raises a `ValueError` for a row missing `query`, `target` or
        `candidates`, a row without candidates, `positives` of the wrong length, and an empty batch.

    Example:

    ```python
    >>> from tokenizers import Tokenizer, models, pre_tokenizers
    >>> from transformers import PreTrainedTokenizerFast
    >>> from revela_hf import DreamDataCollator

    >>> words = "[PAD] [UNK] [EOS] Query: Passage: the cat sat on a mat dog ran in park".split()
    >>> backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    >>> backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    >>> tokenizer = PreTrainedTokenizerFast(
    ...     tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]"
    ... )

    >>> collator = DreamDataCollator(tokenizer)
    >>> rows = [
    ...     {"query": "the cat", "target": "sat on a mat", "candidates": ["a cat sat", "a dog ran"],
    ...      "positives": [True, False]},
    ...     {"query": "a dog", "target": "ran", "candidates": ["the dog ran in the park"]},
    ... ]
    >>> batch = collator(rows)
    >>> batch["input_ids"].shape  # (N, T), left-padded
    torch.Size([2, 15])
    >>> batch["candidate_mask"].tolist()  # (N, K): the second row has one candidate
    [[True, True], [True, False]]
    >>> batch["passage_input_ids"].shape[0]  # M: every real candidate
    3
    >>> tokenizer.decode(batch["input_ids"][1], skip_special_tokens=False)
    '[PAD] [PAD] [PAD] [PAD] the dog ran in the park [EOS] a dog ran [EOS]'

    ```
    """

    tokenizer: PreTrainedTokenizerBase
    retriever_tokenizer: PreTrainedTokenizerBase | None = None
    candidate_max_length: int = 160
    query_max_length: int = 80
    target_max_length: int = 80
    retriever_max_length: int = 160
    query_prefix: str = "Query: "
    passage_prefix: str = "Passage: "
    append_eos: bool = True
    separator: str | None = None

    @classmethod
    def from_model_config(
        cls, tokenizer: PreTrainedTokenizerBase, retriever_tokenizer: PreTrainedTokenizerBase | None, config: Any, **kwargs: Any
    ) -> "DreamDataCollator":
        """A collator whose retriever settings follow a `RevelaConfig`; `max_length` (the trainer's) caps candidates."""
        if "max_length" in kwargs:
            kwargs.setdefault("candidate_max_length", kwargs.pop("max_length"))
        return cls(
            tokenizer=tokenizer,
            retriever_tokenizer=retriever_tokenizer,
            query_prefix=config.query_prefix,
            passage_prefix=config.passage_prefix,
            append_eos=pooling_appends_eos(config.pooling),
            **kwargs,
        )

    @staticmethod
    def rows(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Flatten single rows and group rows into single rows, checking their fields."""
        out = []
        for feature in features:
            missing = {"query", "target", "candidates"} - set(feature)
            if missing:
                raise ValueError(f"a DREAM row needs 'query', 'target' and 'candidates'; missing {sorted(missing)} in {sorted(feature)}")
            if isinstance(feature["query"], str):
                out.append(feature)
            else:
                keys = [k for k in ("query", "target", "candidates", "positives") if feature.get(k) is not None]
                out.extend(dict(zip(keys, values)) for values in zip(*(feature[k] for k in keys)))
        for row in out:
            if not row["candidates"]:
                raise ValueError(f"a DREAM row needs at least one candidate; query {row['query'][:60]!r} has none")
            if row.get("positives") is not None and len(row["positives"]) != len(row["candidates"]):
                raise ValueError(f"{len(row['positives'])} positives flags for {len(row['candidates'])} candidates")
        if not out:
            raise ValueError("DreamDataCollator got no row")
        return out

    def _piece(self, texts: list[str], limit: int) -> list[list[int]]:
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        return [ids[:limit] for ids in encoded]

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = self.rows(features)
        tok = self.tokenizer
        if tok.eos_token_id is None:
            raise ValueError("DreamDataCollator needs an LM tokenizer with an EOS token")
        bos = tok.bos_token_id
        probe = tok("a")["input_ids"]
        prefix = [bos] if bos is not None and probe and probe[0] == bos else []
        sep = [tok.eos_token_id] if self.separator is None else tok(self.separator, add_special_tokens=False)["input_ids"]

        sequences, labels, spans = [], [], []
        for row in rows:
            candidates = self._piece(list(row["candidates"]), self.candidate_max_length)
            query = self._piece([row["query"]], self.query_max_length)[0]
            target = self._piece([row["target"]], max(self.target_max_length - 1, 0))[0] + [tok.eos_token_id]
            ids, row_spans = list(prefix), []
            for cand in candidates:
                row_spans.append((len(ids), len(ids) + len(cand)))
                ids += cand + sep
            ids += query
            labels.append([-100] * len(ids) + target)
            sequences.append(ids + target)
            spans.append(row_spans)

        num_rows, width = len(rows), max(len(s) for s in sequences)
        max_candidates = max(len(s) for s in spans)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        batch = {
            "input_ids": torch.full((num_rows, width), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((num_rows, width), dtype=torch.long),
            "labels": torch.full((num_rows, width), -100, dtype=torch.long),
            "candidate_spans": torch.zeros((num_rows, max_candidates, 2), dtype=torch.long),
            "candidate_mask": torch.zeros((num_rows, max_candidates), dtype=torch.bool),
        }
        for n, (ids, row_labels, row_spans) in enumerate(zip(sequences, labels, spans)):
            offset = width - len(ids)
            batch["input_ids"][n, offset:] = torch.tensor(ids)
            batch["attention_mask"][n, offset:] = 1
            batch["labels"][n, offset:] = torch.tensor(row_labels)
            batch["candidate_spans"][n, : len(row_spans)] = torch.tensor(row_spans) + offset
            batch["candidate_mask"][n, : len(row_spans)] = True

        passages = [text for row in rows for text in row["candidates"]]
        batch.update(retriever_inputs(self, self.retriever_tokenizer or tok, [r["query"] for r in rows], passages))
        if any(row.get("positives") is not None for row in rows):
            same = torch.zeros((num_rows, max_candidates), dtype=torch.bool)
            for n, row in enumerate(rows):
                flags = row.get("positives") or []
                same[n, : len(flags)] = torch.tensor([bool(f) for f in flags], dtype=torch.bool)
            batch["same_document"] = same
        return batch
