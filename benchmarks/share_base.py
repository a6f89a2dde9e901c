"""Peak memory of a retriever that copies the LM's base weights vs one that shares them (`share_base`).

Model: a randomly initialised Llama of SmolLM2-135M's shape (30 layers, hidden 576, 9 heads / 3 KV
heads, vocabulary 49152, tied embeddings), fp32, frozen; the retriever is the LM's first
`--retriever-layers` layers (6 = the demo's recipe; 30 = the whole base model) with a rank-16 LoRA
adapter on every projection. `two_copies` deep-copies those layers and the embeddings into the
retriever (`from_parts(lm, retriever_layers=N)`); `shared` builds the retriever on the LM's own
tensors (`share_base=True`). Same settings otherwise: in-batch term in the top 4 LM layers, one
group of B chunks of L tokens, AdamW on the adapter. Each variant runs in a fresh process.

Memory is the process's ru_maxrss: `model_mib` its growth while building the model (the weights),
`peak_over_imports_mib` its growth from after the imports to the end of the training steps
(weights, activations, gradients, optimizer state); `one_lm_mib` is the bytes of the LM's own
parameters, for comparison. `step_seconds` is the best of `--steps` steps after a warm-up step.
Prints one JSON object; the ratios are shared / two_copies.

    PYTHONPATH=src python benchmarks/share_base.py [--retriever-layers 6 30 --group 8 --length 64 --steps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

import torch
from measure import rss_mib, timed_training_steps

VARIANTS = ("two_copies", "shared")
SMOLLM2_135M = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "tie_word_embeddings": True}


def measure(variant: str, retriever_layers: int, args: argparse.Namespace) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from revela_hf import RevelaForCausalLM
    from revela_hf.training import lora

    imported = rss_mib()
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M, pad_token_id=0, eos_token_id=1, bos_token_id=None))
    one_lm = sum(p.numel() * p.element_size() for p in lm.parameters()) / 2**20
    model = RevelaForCausalLM.from_parts(
        lm, retriever_layers=retriever_layers, retriever_lora=lora(16), share_base=variant == "shared",
        inbatch_layers=[-4, -3, -2, -1], temperature=1e-2,
    ).train()
    model.lm.requires_grad_(False)  # a frozen LM in both variants (the shared one's already is)
    built = rss_mib()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    B, L = args.group, args.length
    ids = torch.randint(2, SMOLLM2_135M["vocab_size"], (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": ids, "query_input_ids": ids[:, : L // 2],
              "query_attention_mask": mask[:, : L // 2], "passage_input_ids": ids, "passage_attention_mask": mask}
    times, loss = timed_training_steps(model, inputs, optimizer, args.steps)
    peak = rss_mib()
    return {
        "variant": variant,
        "retriever_layers": retriever_layers,
        "params": sum(p.numel() for p in model.parameters()),  # each shared tensor once
        "trainable_params": sum(p.numel() for p in trainable),
        "one_lm_mib": round(one_lm, 1),
        "model_mib": round(built - imported, 1),
        "peak_over_imports_mib": round(peak - imported, 1),
        "peak_rss_mib": round(peak, 1),
        "step_seconds": round(min(times), 2),
        "loss": round(loss, 5),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--retriever-layers", type=int, nargs="+", default=[6, 30])
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)  # VARIANT RETRIEVER_LAYERS
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), args)))
        return
    load_before = os.getloadavg()[0]
    results = []
    for layers in args.retriever_layers:
        rows = {}
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--worker", variant, str(layers), f"--group={args.group}",
                   f"--length={args.length}", f"--steps={args.steps}"]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        two, shared = rows["two_copies"], rows["shared"]
        ratios = {key: round(shared[key] / two[key], 3) for key in ("model_mib", "peak_over_imports_mib", "peak_rss_mib")}
        results.append({"retriever_layers": layers, **rows, "shared_vs_two_copies": ratios})
    machine = {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__,
               "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    shape = {"lm": "SmolLM2-135M shape, random init, fp32", "group": args.group, "length": args.length, "steps": args.steps}
    print(json.dumps({"benchmark": "retriever copying vs sharing the LM's base weights, CPU", "shape": shape,
                      "machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
