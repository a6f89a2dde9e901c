"""Proof that Revela training learns retrieval, on a corpus where relevance is known by construction.

Every chunk has a partner. Both open with the same three CONCEPTS (plus their own filler words)
and go on with the same six VALUE words, drawn at random per pair, then those six again (as real
text repeats itself, so copying from context pays inside a chunk too). A concept c is written `a{c}` in
one partner and `b{c}` in the other, so the halves that the retriever sees as queries share no
word with their partner: an untrained retriever is at chance, and it can only improve by learning
the a/b correspondence. The LM can predict a chunk's value words only by copying them from its
partner through in-batch attention. A group holds B/2 pairs, shuffled. Both models start from
random weights.

Revela assumes an LM that already uses its context (a pretrained one). Here the LM is first warmed
up on the same chunks with UNIFORM in-batch weights (`--lm-warmup-steps`; the retriever gets no
signal), so it learns to read in-batch context at all; the Revela stage then trains both. Without
it, the in-batch term is noise to the LM at first, the retriever flattens Sim to average the noise
away, and collapsed embeddings give no gradient back (measured: seed 1 stuck at chance).

    python examples/synthetic_learning.py            # Revela
    python examples/synthetic_learning.py --control uniform   # weights fixed uniform: must not learn

The last line printed is one JSON object: accuracy_before/after (held-out top-1: does the first half
of a chunk retrieve its partner among the other chunks of its group), loss_before/after.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast

from revela_hf import RevelaConfig, RevelaForCausalLM
from revela_hf.collator import RevelaDataCollator
from revela_hf.trainer import RevelaTrainer, RevelaTrainingArguments

KEY_WORDS, FILLER_WORDS, VALUE_WORDS, NUM_CONCEPTS = 3, 3, 6, 60


def build_tokenizer(vocab_words: list[str]) -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[EOS]"]
    vocab = {word: i for i, word in enumerate(specials + vocab_words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


def make_groups(num_groups: int, group_size: int, rng: random.Random, vocab: dict[str, list[str]]) -> list[dict]:
    """Groups of `group_size` chunks = `group_size // 2` partner pairs; doc_ids name the pair."""
    rows = []
    for g in range(num_groups):
        chunks, doc_ids = [], []
        for p in range(group_size // 2):
            concepts = rng.sample(range(NUM_CONCEPTS), KEY_WORDS)
            values = rng.sample(vocab["value"], VALUE_WORDS)
            for form in "ab":
                filler = rng.sample(vocab["filler"], FILLER_WORDS)
                chunks.append(" ".join([f"{form}{c}" for c in concepts] + filler + values + values))
                doc_ids.append(f"g{g}p{p}")
        order = list(range(group_size))
        rng.shuffle(order)
        rows.append({"chunks": [chunks[i] for i in order], "doc_ids": [doc_ids[i] for i in order]})
    return rows


@torch.no_grad()
def evaluate(model: RevelaForCausalLM, collator: RevelaDataCollator, groups: list[dict]) -> tuple[float, float]:
    """Held-out top-1 partner accuracy of the retriever, and the mean in-batch LM loss."""
    model.eval()
    hits, total, losses = 0, 0, []
    for row in groups:
        batch = collator([row])
        same = batch.pop("same_document")
        out = model(**batch)
        scores = out.similarity.masked_fill(torch.eye(len(same), dtype=torch.bool), float("-inf"))
        top1 = scores.argmax(dim=-1)
        hits += same[torch.arange(len(top1)), top1].sum().item()
        total += len(top1)
        losses.append(out.loss.item())
    model.train()
    return hits / total, sum(losses) / len(losses)


class FixedWeightsTrainer(RevelaTrainer):
    """Weights that bypass the retriever: `zero` (plain next-token prediction: the LM warm-up),
    `uniform` (a control: the retriever gets no signal, must not learn) or `oracle` (weight on the
    true partner: an upper bound for the LM side)."""

    def __init__(self, *args, control: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fixed_weights = control

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        size = inputs["input_ids"].shape[0]
        if self.fixed_weights == "zero":
            inputs["inbatch_weights"] = torch.zeros(size, size)
        elif self.fixed_weights == "uniform":
            inputs["inbatch_weights"] = (1 - torch.eye(size)) / (size - 1)
        else:
            inputs["inbatch_weights"] = inputs["same_document"].float().fill_diagonal_(0)
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def fit(model, tokenizer, collator, rows, steps, learning_rate, seed, weights: str = "retriever") -> None:
    """Train `steps` groups with RevelaTrainer; `weights` other than "retriever" fixes the in-batch weights."""
    with tempfile.TemporaryDirectory() as output_dir:
        args = RevelaTrainingArguments(
            output_dir=output_dir, max_steps=steps, learning_rate=learning_rate, warmup_steps=min(20, steps // 10),
            lr_scheduler_type="cosine", logging_steps=50, save_strategy="no", report_to=[], seed=seed, use_cpu=True,
            disable_tqdm=True,
        )
        extra = {} if weights == "retriever" else {"control": weights}
        trainer = (RevelaTrainer if weights == "retriever" else FixedWeightsTrainer)(
            model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
            data_collator=collator, **extra,
        )
        trainer.train()


def run(
    steps: int = 2500,
    lm_warmup_steps: int = 300,
    group_size: int = 8,
    control: str = "none",
    seed: int = 0,
    temperature: float = 0.1,
    learning_rate: float = 3e-3,
    pooling: str = "mean",
) -> dict:
    random.seed(seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vocab = {kind: [f"{kind}{i}" for i in range(n)] for kind, n in (("filler", 60), ("value", 120))}
    vocab["concept"] = [f"{form}{c}" for form in "ab" for c in range(NUM_CONCEPTS)]
    tokenizer = build_tokenizer([w for words in vocab.values() for w in words])
    backbone = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        tie_word_embeddings=True,  # copying a token from context is then a short path (untied, it was not learned)
    )
    config = RevelaConfig(
        lm_config=LlamaConfig(**backbone).to_dict(),
        retriever_config=LlamaConfig(**backbone).to_dict(),
        temperature=temperature,
        query_prefix="",
        passage_prefix="",
        query_ratio=1 / 3,  # the query side is the concepts + filler: no word shared with the partner
        pooling=pooling,  # mean: a random decoder's EOS states are near-identical, so EOS pooling starts blind
    )
    model = RevelaForCausalLM(config)
    warmup_rows = make_groups(lm_warmup_steps, group_size, rng, vocab)
    train_rows = make_groups(steps, group_size, rng, vocab)
    test_rows = make_groups(40, group_size, rng, vocab)
    collator = RevelaDataCollator.from_model_config(tokenizer, None, config, max_length=32, retriever_max_length=32)
    accuracy_before, loss_before = evaluate(model, collator, test_rows)
    if lm_warmup_steps:
        fit(model, tokenizer, collator, warmup_rows, lm_warmup_steps, learning_rate, seed, weights="uniform")
    fit(model, tokenizer, collator, train_rows, steps, learning_rate, seed, weights="retriever" if control == "none" else control)
    accuracy_after, loss_after = evaluate(model, collator, test_rows)
    return {
        "control": control,
        "steps": steps,
        "lm_warmup_steps": lm_warmup_steps,
        "group_size": group_size,
        "temperature": temperature,
        "chance": round(1 / (group_size - 1), 4),
        "accuracy_before": round(accuracy_before, 4),
        "accuracy_after": round(accuracy_after, 4),
        "loss_before": round(loss_before, 4),
        "loss_after": round(loss_after, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500, help="Revela steps (one group each)")
    parser.add_argument("--lm-warmup-steps", type=int, default=300, help="LM steps on uniform in-batch weights before Revela")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--control", choices=["none", "uniform", "oracle"], default="none")
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--pooling", default="mean")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = run(args.steps, args.lm_warmup_steps, args.group_size, args.control, args.seed, args.temperature,
                 args.learning_rate, args.pooling)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
