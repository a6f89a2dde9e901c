"""Tiny real models, tokenizers and data shared by the tests (`from conftest import ...`), and shared fixtures.

- `word_tokenizer`: a word-level tokenizer over synthetic words `w0`..`w59` ([PAD], [UNK], [EOS] first).
- `tiny_llama_config`: a 2-layer, 32-wide Llama config (4 heads over 2 KV heads), sized to a tokenizer.
- `word_groups`: prepared-style rows of random `w*` chunks; `OneHotEncoder`: "... number i" -> e_i, a search oracle.
- `TINY` / `group_inputs`: a 3-layer shape every tested decoder family accepts, and one group's LM inputs.
- `tiny_decoder` / `tiny_causal_lm` / `tiny_revela` / `tiny_groups`: model folders with a byte-level BPE
  tokenizer trained on `TEXTS`, a retriever with a non-zero LoRA adapter, a prepared-style dataset.
- Fixtures: `tokenizer` (a `word_tokenizer`) and `hub` (a local Hub server the `huggingface_hub` client talks to).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel, PreTrainedTokenizerFast, TrainerCallback

WORDS = [f"w{i}" for i in range(60)]
TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)
TEXTS = [
    "the cat sat on the mat and purred",
    "dogs bark at the mailman every morning",
    "python functions return values with the return statement",
    "a list comprehension builds a list from an iterable",
    "the capital of france is paris",
]


def word_tokenizer(words: list[str] = WORDS) -> PreTrainedTokenizerFast:
    """Whitespace-split word-level tokenizer: ids 0-2 are [PAD], [UNK], [EOS], then `words` in order."""
    vocab = {word: i for i, word in enumerate(["[PAD]", "[UNK]", "[EOS]", *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


def tiny_llama_config(tokenizer: PreTrainedTokenizerFast | None = None, **overrides) -> LlamaConfig:
    """A 2-layer, 32-wide Llama (4 heads, 2 KV heads); with `tokenizer`, its vocabulary size, PAD and EOS ids and no BOS."""
    special = {}
    if tokenizer is not None:
        special = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "bos_token_id": None}
    shape = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    return LlamaConfig(**{**shape, **special, **overrides})


def word_groups(n: int, B: int = 4, seed: int = 0, sources: list[str] | None = None) -> list[dict]:
    """`n` rows of B chunks of 10 random words of `WORDS`, two chunks per document, `sources` (default "text") per chunk."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for r in range(n):
        chunks = [" ".join(WORDS[int(t)] for t in torch.randint(0, len(WORDS), (10,), generator=g)) for _ in range(B)]
        out.append({"chunks": chunks, "sources": sources or ["text"] * B, "doc_ids": [f"d{r}-{i // 2}" for i in range(B)]})
    return out


class OneHotEncoder:
    """Text "... i" -> unit vector e_i (8 dimensions); fails on its `fail_on`-th corpus call (counting from 1)."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls, self.fail_on = 0, fail_on

    def encode_queries(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), 8), dtype=np.float32)
        out[np.arange(len(texts)), [int(t.split()[-1]) for t in texts]] = 1.0
        return out

    def encode_corpus(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("encoder crashed")
        return self.encode_queries(texts)


def group_inputs(B: int = 4, L: int = 9, vocab: int = 97, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random `(B, L)` token ids, attention mask (chunk 1 right-padded after 6 tokens) and labels of one group."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1, 6:] = 0  # a right-padded chunk
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


class StopAt(TrainerCallback):
    """Interrupts a run after `step` (the checkpoint of that step is written first)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


def tiny_decoder(folder: str | Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """Save a random 2-layer LlamaModel and a byte-level BPE tokenizer (EOS <|endoftext|>) to `folder`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = tiny_llama_config(vocab_size=len(fast), hidden_size=hidden_size, max_position_embeddings=256,
                               eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    LlamaModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return Path(folder)


def tiny_causal_lm(folder: str | Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """`tiny_decoder` with a language-model head: an LM folder `revela train --lm` accepts."""
    tiny_decoder(folder, seed, hidden_size)
    torch.manual_seed(seed)
    LlamaForCausalLM(LlamaConfig.from_pretrained(folder)).save_pretrained(folder)
    return Path(folder)


def tiny_groups(folder: str | Path, groups: int = 6, size: int = 4) -> Path:
    """A prepared-style dataset of `groups` groups of `size` short chunks, saved to `folder`."""
    from datasets import Dataset

    words = " ".join(TEXTS).split()
    rows = [{"chunks": [" ".join(words[(g * size + i) % len(words):][:8]) for i in range(size)],
             "sources": ["text"] * size, "doc_ids": [f"d{g}-{i // 2}" for i in range(size)]} for g in range(groups)]
    Dataset.from_list(rows).save_to_disk(str(folder))
    return Path(folder)


def tiny_revela(base: str | Path, **settings):
    """A RevelaRetriever on `base` with a randomly initialised (non-zero) LoRA adapter."""
    from peft import LoraConfig

    from revela_hf.retriever import RevelaRetriever

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return RevelaRetriever.from_backbone(str(base), lora=lora, **settings)


def adapted_revela(base: str | Path, **settings):
    """`tiny_revela` with lora_B perturbed further, checked to move the embeddings (> 1e-2 from the plain
    backbone's), so an export that dropped the adapter would fail."""
    from revela_hf.retriever import RevelaRetriever

    retriever = tiny_revela(base, max_length=24, **settings)
    with torch.no_grad():
        for name, param in retriever.backbone.named_parameters():
            if "lora_B" in name:
                param.add_(0.5 * torch.randn_like(param))
    plain = RevelaRetriever.from_backbone(str(base), max_length=24, **settings).encode_queries(TEXTS, show_progress_bar=False)
    assert (retriever.encode_queries(TEXTS, show_progress_bar=False) - plain).abs().max() > 1e-2
    return retriever


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return word_tokenizer()


@pytest.fixture
def hub(monkeypatch):
    """A local Hub server (tests/hub_server.py) that `huggingface_hub` uploads to and downloads from."""
    from huggingface_hub import constants
    from transformers.utils import hub as transformers_hub

    from hub_server import LocalHub

    with LocalHub() as server:
        # transformers keeps one HfApi, bound to the endpoint it first saw (an earlier test's server): start afresh
        monkeypatch.setattr(transformers_hub, "_hf_api", None)
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
        yield server
