"""Proof that LM-supervised training learns retrieval, on a corpus where relevance is known by construction.

Every chunk has a partner. Both open with the same three CONCEPTS (plus their own filler words)
and go on with the same six VALUE words, drawn at random per pair, then those six again (as real
text repeats itself, so copying from context pays inside a chunk too). A concept c is written `a{c}` in
one partner and `b{c}` in the other, so the halves that the retriever sees as queries share no
word with their partner: an untrained retriever is at chance, and it can only improve by learning
the a/b correspondence. The LM can predict a chunk's value words only by copying them from its
partner. A group holds B/2 pairs, shuffled. Both models start from random weights.

Every objective assumes an LM that already uses its context (a pretrained one), so a first stage
(`--lm-warmup-steps`) teaches the random LM to read context, in the form its objective reads it;
the retriever gets no signal there:

- `revela`: the LM trains on the groups with UNIFORM in-batch weights; the Revela stage then trains
  both models. Without it, the in-batch term is noise to the LM at first, the retriever flattens
  Sim to average the noise away, and collapsed embeddings give no gradient back (measured: seed 1
  stuck at chance).
- `replug` / `dream`: the LM trains on "chunk j + chunk i" sequences, j the partner of i half of the
  time and another chunk of the group otherwise, then is FROZEN; only the retriever trains, on
  REPLUG's KL(P_LM || P_retriever) or on DREAM's target loss with the retriever's scores biasing
  the LM's attention over the packed group (rows from `dream_rows_from_groups`: query = the
  first third of a chunk, target = the rest, candidates = the other chunks of its group).

    python examples/synthetic_learning.py                        # Revela
    python examples/synthetic_learning.py --objective replug     # REPLUG (frozen LM)
    python examples/synthetic_learning.py --objective dream      # DREAM (frozen LM)
    python examples/synthetic_learning.py --control uniform      # Revela, weights fixed uniform: must not learn

The last line printed is one JSON object: accuracy_before/after (held-out top-1: does the first third
of a chunk retrieve its partner among the other chunks of its group), loss_before/after (the
objective's loss on the held-out groups).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, PreTrainedTokenizerFast, get_cosine_schedule_with_warmup

from revela_hf import RevelaConfig, RevelaForCausalLM
from revela_hf.collator import DreamDataCollator, RevelaDataCollator, leading_words
from revela_hf.objectives import data_collator_for, dream_rows_from_groups
from revela_hf.trainer import RevelaTrainer, RevelaTrainingArguments

KEY_WORDS, FILLER_WORDS, VALUE_WORDS, NUM_CONCEPTS = 3, 3, 6, 60
MARKER = "is"  # every chunk: concepts, filler, MARKER, values, values
# Per objective: training steps and the retriever temperature (tau, tau_r, DREAM's score temperature).
DEFAULTS = {  # per objective; the LM learning rate is that of the warm-up stage
    "revela": {"steps": 2500, "lm_warmup_steps": 300, "temperature": 0.1, "learning_rate": 3e-3, "lm_learning_rate": 3e-3},
    "replug": {"steps": 600, "lm_warmup_steps": 300, "temperature": 0.1, "learning_rate": 1e-3, "lm_learning_rate": 1e-3},
    "dream": {"steps": 600, "lm_warmup_steps": 300, "temperature": 0.1, "learning_rate": 1e-3, "lm_learning_rate": 1e-3},
}


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
                chunks.append(" ".join([f"{form}{c}" for c in concepts] + filler + [MARKER] + values + values))
                doc_ids.append(f"g{g}p{p}")
        order = list(range(group_size))
        rng.shuffle(order)
        rows.append({"chunks": [chunks[i] for i in order], "doc_ids": [doc_ids[i] for i in order]})
    return rows


@torch.no_grad()
def evaluate(model: RevelaForCausalLM, groups: list[dict], retrieval: RevelaDataCollator, objective_batches: list[dict]) -> tuple[float, float]:
    """Held-out top-1 partner accuracy of the retriever (any objective), and the objective's mean loss."""
    model.eval()
    hits, total = 0, 0
    for row in groups:
        batch = retrieval([row])
        scores = model.score_group(
            batch["query_input_ids"], batch["query_attention_mask"], batch["passage_input_ids"], batch["passage_attention_mask"]
        )[0].masked_fill(torch.eye(len(row["chunks"]), dtype=torch.bool), float("-inf"))  # (B, B) cosine
        top1 = scores.argmax(dim=-1)
        hits += batch["same_document"][torch.arange(len(top1)), top1].sum().item()
        total += len(top1)
    losses = [model(**{k: v for k, v in batch.items() if k != "same_document"}).loss.item() for batch in objective_batches]
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
    """Train `steps` rows with RevelaTrainer; `weights` other than "retriever" fixes Revela's in-batch weights."""
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


def train_lm(lm, batches: list[dict], loss_fn, learning_rate: float) -> None:
    """Plain AdamW + cosine training of `lm` alone, one batch per step; `lm` is frozen again afterwards."""
    lm.requires_grad_(True)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=learning_rate)
    schedule = get_cosine_schedule_with_warmup(optimizer, min(20, len(batches) // 10), len(batches))
    for batch in batches:
        loss_fn(batch).backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    lm.requires_grad_(False)


def warm_up_reader(lm, tokenizer, groups: list[dict], learning_rate: float, query_ratio: float, rng: random.Random) -> None:
    """REPLUG's reader: next-token training on "chunk j + chunk i" (the concatenation REPLUG scores), j the
    partner of i half of the time and another chunk of the group otherwise."""
    packer = DreamDataCollator(tokenizer, query_prefix="", passage_prefix="")  # one candidate = chunk j EOS chunk i
    batches = []
    for group in groups:
        chunks, docs = group["chunks"], group["doc_ids"]
        rows = []
        for i, chunk in enumerate(chunks):
            partner = next(j for j in range(len(chunks)) if j != i and docs[j] == docs[i])
            other = rng.choice([j for j in range(len(chunks)) if j not in (i, partner)])
            query = leading_words(chunk, query_ratio)
            rows.append({"query": query, "target": chunk[len(query):], "candidates": [chunks[rng.choice([partner, other])]]})
        batches.append(packer(rows))

    def loss(batch):
        positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        return lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=positions,
                  labels=batch["labels"]).loss

    train_lm(lm, batches, loss, learning_rate)


def warm_up_pointer(model: RevelaForCausalLM, collator: DreamDataCollator, groups: list[dict], learning_rate: float,
                    query_ratio: float) -> None:
    """DREAM's reader: its packed rows, with the attention bias on the chunk's partner (DREAM's forward with
    given weights). DREAM presumes heads that read the candidate they are pointed at; a small LM trained
    from scratch does not grow them from plain packed text within minutes (measured: after 4000 steps
    the bias on the partner lowered the target loss by 0.24 nats only)."""
    batches = [collator([row]) for row in dream_rows_from_groups(groups, query_ratio)]

    def loss(batch):
        partner = batch["same_document"].float()  # (N, K): the candidate that holds the target's values
        pointer = (partner + 0.01) / (partner + 0.01).sum(-1, keepdim=True)
        return model(**{k: v for k, v in batch.items() if k != "same_document"}, inbatch_weights=pointer).loss

    train_lm(model.lm, batches, loss, learning_rate)


def run(objective: str = "revela", group_size: int = 8, control: str = "none", seed: int = 0, pooling: str = "mean",
        inbatch_top_k: int | None = None, **overrides: float | None) -> dict:
    """Train and evaluate; `overrides` (steps, lm_warmup_steps, temperature, learning_rate, lm_learning_rate)
    replace the objective's DEFAULTS where not None; `inbatch_top_k`: Revela's sparse in-batch attention."""
    if objective not in DEFAULTS:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(DEFAULTS)}")
    if control != "none" and objective != "revela":
        raise ValueError("--control fixes Revela's in-batch weights; it applies to --objective revela only")
    unknown = set(overrides) - set(DEFAULTS[objective])
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}")
    plan = {**DEFAULTS[objective], **{k: v for k, v in overrides.items() if v is not None}}
    steps, lm_warmup_steps, temperature = plan["steps"], plan["lm_warmup_steps"], plan["temperature"]
    random.seed(seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vocab = {kind: [f"{kind}{i}" for i in range(n)] for kind, n in (("filler", 60), ("value", 120))}
    vocab["concept"] = [f"{form}{c}" for form in "ab" for c in range(NUM_CONCEPTS)]
    tokenizer = build_tokenizer([MARKER] + [w for words in vocab.values() for w in words])
    backbone = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        tie_word_embeddings=True,  # copying a token from context is then a short path (untied, it was not learned)
    )
    query_ratio = 1 / 3  # the query side is the concepts + filler: no word shared with the partner
    config = RevelaConfig(
        lm_config=LlamaConfig(**backbone).to_dict(),
        retriever_config=LlamaConfig(**backbone).to_dict(),
        objective=objective,
        inbatch_top_k=inbatch_top_k,
        temperature=temperature,
        # The retriever's temperature of each objective: Revela's is `temperature` itself.
        objective_settings={"replug": {"retriever_temperature": temperature}, "dream": {"temperature": temperature}}.get(objective),
        query_prefix="",
        passage_prefix="",
        query_ratio=query_ratio,
        pooling=pooling,  # mean: a random decoder's EOS states are near-identical, so EOS pooling starts blind
    )
    model = RevelaForCausalLM(config)
    if objective != "revela":  # REPLUG and DREAM train the retriever against a frozen LM
        model.lm.requires_grad_(False)
    warmup_rows = make_groups(lm_warmup_steps, group_size, rng, vocab)
    train_rows = make_groups(steps, group_size, rng, vocab)
    test_rows = make_groups(40, group_size, rng, vocab)
    retrieval = RevelaDataCollator.from_model_config(tokenizer, None, config, max_length=32, retriever_max_length=32)
    collator = data_collator_for(config, tokenizer, max_length=32, retriever_max_length=32)
    if objective == "dream":
        train_rows, objective_test_rows = dream_rows_from_groups(train_rows, query_ratio), dream_rows_from_groups(test_rows, query_ratio)
    else:
        objective_test_rows = test_rows
    objective_batches = [collator([row]) for row in objective_test_rows]
    if objective == "replug" and lm_warmup_steps:  # before measuring: the frozen LM is part of the objective's loss
        warm_up_reader(model.lm, tokenizer, warmup_rows, plan["lm_learning_rate"], query_ratio, rng)
    elif objective == "dream" and lm_warmup_steps:
        warm_up_pointer(model, collator, warmup_rows, plan["lm_learning_rate"], query_ratio)
    accuracy_before, loss_before = evaluate(model, test_rows, retrieval, objective_batches)
    if objective == "revela" and lm_warmup_steps:
        fit(model, tokenizer, collator, warmup_rows, lm_warmup_steps, plan["lm_learning_rate"], seed, weights="uniform")
    fit(model, tokenizer, collator, train_rows, steps, plan["learning_rate"], seed, weights="retriever" if control == "none" else control)
    accuracy_after, loss_after = evaluate(model, test_rows, retrieval, objective_batches)
    return {
        "objective": objective,
        "control": control,
        **plan,
        "group_size": group_size,
        "inbatch_top_k": inbatch_top_k,
        "chance": round(1 / (group_size - 1), 4),
        "accuracy_before": round(accuracy_before, 4),
        "accuracy_after": round(accuracy_after, 4),
        "loss_before": round(loss_before, 4),
        "loss_after": round(loss_after, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objective", choices=sorted(DEFAULTS), default="revela")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--control", choices=["none", "uniform", "oracle"], default="none")
    parser.add_argument("--pooling", default="mean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inbatch-top-k", type=int, default=None, help="Revela: sparse in-batch attention over the k largest Sim")
    for name, help_text in (
        ("steps", "training steps (one group each)"),
        ("lm-warmup-steps", "steps that first teach the LM to read context"),
        ("temperature", "the objective's retriever temperature"),
        ("learning-rate", "learning rate of the training stage"),
        ("lm-learning-rate", "learning rate of the LM warm-up"),
    ):
        kind = int if name.endswith("steps") else float
        parser.add_argument(f"--{name}", type=kind, default=None, help=f"{help_text}; default per objective (DEFAULTS)")
    args = vars(parser.parse_args())
    result = run(args.pop("objective"), args.pop("group_size"), args.pop("control"), args.pop("seed"), args.pop("pooling"),
                 args.pop("inbatch_top_k"), **args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
