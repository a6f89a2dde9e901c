"""One variant of the demo's default recipe, trained on the CPU for the suite's variants table
(`benchmarks/suite_variants_b16.json`, README "Variants measured").

The default is `revela demo`'s (SmolLM2 LM frozen, in-batch term in its top 4 layers, 6-layer LoRA r 16 retriever,
EOS pooling, tau 1e-3, constant lr 3e-4, 90 steps of 16 chunks from 8 interleaved modules of 400 `.py` files), in
bf16; each flag changes one thing. Then score it on the suite:

    PYTHONPATH=src python benchmarks/suite_variant.py OUT --seed 1 [--retriever-layers 12 --temperature 3e-3 ...]
    PYTHONPATH=src python benchmarks/quality.py --suite --root SUITE --baselines bm25 --hybrid --retriever NAME=OUT/run/retriever

`--corpus DIR` reuses (or writes) the prepared groups; a corpus is specific to its group size and width.
`--steps N --decay-steps D --save-steps S` trains longer, the last D steps decaying the rate, keeping every S-th
step's checkpoint (`benchmarks/suite_long_run.json`: 720 steps, checkpoints every 90, each projected and scored).
`--objective replug|dream --wall SECONDS` trains another objective until a wall time (equal-time comparisons);
`--dream-heads N` first picks DREAM's N query-focused heads over all layers (`select_retrieval_heads` on the first 8
training batches, 64 rows of groups of 8: about 6 minutes in fp32, before the wall clock starts).
`--self-contrast W` adds W x a contrastive loss on the retriever's own scores (query i's positive: chunk i).
`--centred-sim` computes Sim from group-centred embeddings (each side minus its group's mean: query-set centring
inside the group); pair it with `--temperature 0.05`, where centred cosines spread about 50x wider than plain ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

import revela_hf.modeling_revela as modeling_revela
from revela_hf.demo.assets import smollm2_path
from revela_hf.demo.main_job import prepare_demo_corpus
from revela_hf.demo.recipes import BUDGETS, DEMO_GROUPING
from revela_hf.objectives import select_retrieval_heads
from revela_hf.objectives.registry import get_objective
from revela_hf.trainer import RevelaTrainer, RevelaTrainingArguments
from revela_hf.training import ModelSpec, train


class SelfContrastTrainer(RevelaTrainer):
    """Adds `weight` x cross-entropy(cos(q_i, p_j) / tau, target i) over the group: the retriever also learns to
    find a chunk's own passage from its first half."""

    weight = 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        cosine = outputs.similarity.float()  # (B, B), the diagonal included
        contrast = F.cross_entropy(cosine / model.config.temperature, torch.arange(len(cosine), device=cosine.device))
        self._group_metrics["self_contrast"].append(contrast.item())
        loss = loss + self.weight * contrast
        return (loss, outputs) if return_outputs else loss


def centred_similarity(plain):
    """`plain` (cosine / tau, softmax over the group) applied to group-centred embeddings."""

    def similarity(query_emb, passage_emb, temperature, exclude_diagonal=True):
        q, p = F.normalize(query_emb.float(), dim=-1), F.normalize(passage_emb.float(), dim=-1)  # (B, E) each
        return plain(q - q.mean(0, keepdim=True), p - p.mean(0, keepdim=True), temperature, exclude_diagonal)

    return similarity


class DreamHeads(TrainerCallback):
    """Before the first step, sets DREAM's heads to the `num_heads` that `select_retrieval_heads` ranks highest on
    the first 8 training batches."""

    def __init__(self, num_heads: int) -> None:
        self.num_heads = num_heads

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        data, collate = train_dataloader.dataset, train_dataloader.collate_fn
        found = select_retrieval_heads(model, [collate([data[i]]) for i in range(8)], num_heads=self.num_heads)
        model.config.objective_settings = {**model.config.objective_settings, "layers": None, "heads": found.heads}
        print(json.dumps({"dream_heads": found.heads}), flush=True)


class WallTime(TrainerCallback):
    """Stops training `seconds` after it starts (after callbacks listed before it have run their `on_train_begin`)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        if time.time() - self.start > self.seconds:
            control.should_training_stop = control.should_save = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--corpus", help="prepared groups (default OUT/corpus, written if missing)")
    parser.add_argument("--retriever-layers", type=int, default=6)
    parser.add_argument("--temperature", type=float, default=1e-3)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--group-size", type=int)
    parser.add_argument("--width", type=int, help="interleaved modules per group")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--decay-steps", type=int, help="the last N steps decay the rate along a cosine")
    parser.add_argument("--save-steps", type=int, default=45, help="a checkpoint every N steps")
    parser.add_argument("--pooling", default="eos")
    parser.add_argument("--top", type=int, default=4, help="LM layers (from the top) with the in-batch term")
    parser.add_argument("--no-v-norm", action="store_true")
    parser.add_argument("--query-ratio", type=float)
    parser.add_argument("--objective", default="revela")
    parser.add_argument("--dream-heads", type=int)
    parser.add_argument("--wall", type=float, help="stop after this many seconds of training")
    parser.add_argument("--self-contrast", type=float, default=0.0)
    parser.add_argument("--centred-sim", action="store_true")
    parser.add_argument("--grouping", default=DEMO_GROUPING, help="how a corpus written here groups its chunks")
    a = parser.parse_args()
    if a.centred_sim:
        modeling_revela.similarity_weights = centred_similarity(modeling_revela.similarity_weights)

    plan = BUDGETS["default"]
    changed = {"group_size": a.group_size, "interleave_width": a.width, "max_steps": a.steps, "decay_steps": a.decay_steps}
    plan = dataclasses.replace(plan, **{key: value for key, value in changed.items() if value})
    out = Path(a.out)
    corpus = Path(a.corpus) if a.corpus else out / "corpus"
    if not corpus.exists():  # every installed distribution: the corpus the committed seeds used
        prepare_demo_corpus(corpus, plan, a.grouping, "block", a.seed, distributions=None)
    top = list(range(-a.top, 0))
    objective = get_objective(a.objective).config_kwargs(top)
    if a.objective == "dream":  # DREAM's 0.05 leaves P(k | q) uniform at this retriever's cosine spread
        objective["objective_settings"]["temperature"] = a.temperature
    overrides = {**objective, "inbatch_top_k": None, "pooling": a.pooling}
    if a.no_v_norm:
        overrides["v_norm"] = False
    if a.query_ratio:
        overrides["query_ratio"] = a.query_ratio
    spec = ModelSpec(lm=smollm2_path(), retriever=smollm2_path(num_hidden_layers=a.retriever_layers),
                     inbatch_layers=top, temperature=a.temperature, retriever_lora_r=a.lora_r,
                     retriever_pooling=a.pooling, config_overrides=overrides)
    args = RevelaTrainingArguments(
        output_dir=str(out / "run"), max_steps=plan.max_steps, learning_rate=a.lr, **plan.lr_schedule(),
        logging_steps=3, save_steps=a.save_steps, max_length=plan.max_tokens,
        retriever_max_length=plan.max_tokens, report_to=[], seed=a.seed, use_cpu=True, bf16=True,
        base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
    )
    SelfContrastTrainer.weight = a.self_contrast
    callbacks = ([DreamHeads(a.dream_heads)] if a.dream_heads else []) + ([WallTime(a.wall)] if a.wall else [])
    trainer = train(spec, corpus, args, callbacks=callbacks,
                    trainer_class=SelfContrastTrainer if a.self_contrast else RevelaTrainer)
    print(json.dumps({"steps": trainer.state.global_step, **trainer.state.log_history[-1]}))


if __name__ == "__main__":
    main()
