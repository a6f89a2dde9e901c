"""Step time and peak memory of the training objectives at equal group size B and chunk length L.

Objectives: Revela with a trainable LM and the in-batch term in every layer (full two-pass),
Revela with a frozen LM and the in-batch term in its top 4 layers, DREAM (frozen LM, bias in
all heads of the top 4 layers; each of the B chunks gives a row: its first half is the query,
its second half the target, the other B-1 chunks the candidates) and REPLUG (frozen LM scoring
all B*(B-1) ordered pairs, KL to the retriever). Same random-init Llama LM and retriever for all.

A step = collated batch -> forward -> backward -> AdamW step on the trainable weights. Each
objective runs in a fresh process: `peak_rss_mib` is that process's ru_maxrss (everything:
Python, torch, models), `step_peak_rss_mib` its growth during the steps (over the peak reached
once the models were built). `step_seconds` is the median of `--steps` timed steps after one
warm-up step; timings on a shared 2-core machine are noisy.
Prints one JSON object.

    PYTHONPATH=src python benchmarks/objectives.py [--group-size 8 --length 128 --layers 8 --hidden 256 --steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

OBJECTIVES = ("revela_full", "revela_frozen_top4", "dream", "replug")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(objective: str, group_size: int, length: int, layers: int, hidden: int, steps: int, threads: int | None) -> dict:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    from revela_hf import RevelaConfig, RevelaForCausalLM
    from revela_hf.collator import DreamDataCollator, RevelaDataCollator
    from revela_hf.objectives import dream_rows_from_groups

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    words = [f"t{i}" for i in range(2000)]
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[EOS]", *words])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")
    heads = max(hidden // 64, 1)
    lm = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, num_key_value_heads=heads, pad_token_id=0, eos_token_id=2, bos_token_id=None,
                     max_position_embeddings=group_size * (length + 1) + 2 * length)
    retriever = LlamaConfig(**{**lm.to_dict(), "num_hidden_layers": max(layers // 2, 1)})
    kwargs = {
        "revela_full": dict(objective="revela", temperature=1e-3),
        "revela_frozen_top4": dict(objective="revela", inbatch_layers=[-4, -3, -2, -1], temperature=1e-3),
        "dream": dict(objective="dream", objective_settings={"layers": [-4, -3, -2, -1]}),
        "replug": dict(objective="replug", objective_settings={"pair_batch_size": 2 * group_size}),
    }[objective]
    model = RevelaForCausalLM(RevelaConfig(lm_config=lm.to_dict(), retriever_config=retriever.to_dict(), query_prefix="",
                                           passage_prefix="", **kwargs)).train()
    if objective != "revela_full":  # every other variant trains the retriever against a frozen LM
        model.lm.requires_grad_(False)
    rng = torch.Generator().manual_seed(1)
    group = {"chunks": [" ".join(words[int(t)] for t in torch.randint(0, len(words), (length - 1,), generator=rng))
                        for _ in range(group_size)]}
    if objective == "dream":
        collator = DreamDataCollator(tokenizer, candidate_max_length=length, query_max_length=length, target_max_length=length,
                                     retriever_max_length=length, query_prefix="", passage_prefix="")
        rows = dream_rows_from_groups([group])
    else:
        collator = RevelaDataCollator(tokenizer, max_length=length, retriever_max_length=length, query_prefix="", passage_prefix="")
        rows = [group]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def step() -> float:
        start = time.perf_counter()
        batch = collator(rows)
        batch.pop("same_document", None)
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    before = _rss_mib()
    step()  # warm-up (allocator, optimizer state)
    times = [step() for _ in range(steps)]
    batch = collator(rows)
    lm_tokens = int(batch["attention_mask"].sum())
    if objective == "replug":
        lm_tokens = 2 * lm_tokens * (group_size - 1)  # every (j, i) concatenation
    elif objective.startswith("revela"):
        lm_tokens *= 2  # clean pass + in-batch pass
    return {
        "step_seconds": round(sorted(times)[len(times) // 2], 3),
        "step_seconds_all": [round(t, 3) for t in times],
        "peak_rss_mib": round(_rss_mib(), 1),
        "rss_before_steps_mib": round(before, 1),
        "step_peak_rss_mib": round(_rss_mib() - before, 1),
        "trainable_params": trainable,
        "lm_tokens_per_step": lm_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--objectives", nargs="*", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--only", choices=OBJECTIVES, help=argparse.SUPPRESS)  # child process: one measurement
    args = parser.parse_args()
    shape = dict(group_size=args.group_size, length=args.length, layers=args.layers, hidden=args.hidden, steps=args.steps,
                 threads=args.threads)
    if args.only:
        print(json.dumps(measure(args.only, **shape)))
        return
    results = {}
    load_before = os.getloadavg()[0]
    for objective in args.objectives:
        command = [sys.executable, __file__, "--only", objective, "--group-size", str(args.group_size), "--length", str(args.length),
                   "--layers", str(args.layers), "--hidden", str(args.hidden), "--steps", str(args.steps)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            results[objective] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
        else:
            results[objective] = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps({
        "shape": {k: v for k, v in shape.items() if k != "threads"} | {"heads": max(args.hidden // 64, 1), "retriever_layers": max(args.layers // 2, 1)},
        "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "platform": platform.platform(),
                    "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]},  # before, after: other jobs skew timings
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
