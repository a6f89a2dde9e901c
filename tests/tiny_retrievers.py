"""Tiny real retrievers for tests: a 2-layer Llama with a BPE tokenizer trained on the spot."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel, PreTrainedTokenizerFast

from revela_hf.retriever import RevelaRetriever

TEXTS = [
    "the cat sat on the mat and purred",
    "dogs bark at the mailman every morning",
    "python functions return values with the return statement",
    "a list comprehension builds a list from an iterable",
    "the capital of france is paris",
]


def tiny_decoder(folder: str | Path, seed: int = 0, hidden_size: int = 32) -> Path:
    """Save a random 2-layer LlamaModel and a byte-level BPE tokenizer (EOS <|endoftext|>) to `folder`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
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


def tiny_revela(base: str | Path, **settings) -> RevelaRetriever:
    """A RevelaRetriever on `base` with a randomly initialised (non-zero) LoRA adapter."""
    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return RevelaRetriever.from_backbone(str(base), lora=lora, **settings)
