"""Step time and peak memory of the cheaper two-pass variants of Revela training, each in a fresh process.

Variants (RevelaConfig settings, a frozen LM, forward's detach_clean_kv):
    full            LM trainable, gradients through both passes (the paper's two-pass computation)
    detach_clean_kv LM trainable, the clean pass's key/value detached (no gradient through pass 1)
    frozen_lm       LM frozen: clean pass under no_grad, only the retriever trains
    frozen_lm_top4  LM frozen, in-batch term in the top 4 layers only: the second pass recomputes
                    just those 4 layers from the hidden state captured in the clean pass

Model: a randomly initialised Llama LM (default 8 layers, hidden 256, 8 heads / 4 KV heads) and a
2-layer Llama retriever of the same width (trainable in every variant), one group of B=8 chunks of
L=128 tokens, fp32, AdamW over the trainable parameters. A step = retriever scoring + both LM passes
+ backward + optimizer step; the time is the best (min; the median is printed too) of --steps steps
after one warm-up step, as the least disturbed by other load on a shared machine. Peak
memory is the process's ru_maxrss (whole process), and its growth over the RSS after building the
model ("train_peak_mib": activations, gradients, optimizer state). Prints one JSON object.

    PYTHONPATH=src python benchmarks/passes.py [--layers 8 --hidden 256 --group 8 --length 128 --steps 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys

import torch
from measure import rss_mib, timed_training_steps

VARIANTS = {
    "full": {},
    "detach_clean_kv": {"detach_clean_kv": True},
    "frozen_lm": {"freeze_lm": True},
    "frozen_lm_top4": {"freeze_lm": True, "inbatch_layers": [-4, -3, -2, -1]},
}
TRAINING_CHOICES = ("freeze_lm", "detach_clean_kv")  # not config: the LM's requires_grad, a forward argument


def measure(variant: str, args: argparse.Namespace) -> dict:
    from transformers import LlamaConfig

    from revela_hf import RevelaConfig, RevelaForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.hidden * 4 // 3 * 2,
                  num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=max(256, args.length),
                  pad_token_id=0, eos_token_id=1, bos_token_id=None)
    lm = LlamaConfig(num_hidden_layers=args.layers, **common)
    retriever = LlamaConfig(num_hidden_layers=2, **common)
    settings = {k: v for k, v in VARIANTS[variant].items() if k not in TRAINING_CHOICES}
    config = RevelaConfig(lm_config=lm.to_dict(), retriever_config=retriever.to_dict(), temperature=1e-2, **settings)
    model = RevelaForCausalLM(config).train()
    if VARIANTS[variant].get("freeze_lm"):
        model.lm.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    B, L = args.group, args.length
    ids = torch.randint(2, args.vocab, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    for i in range(1, B):  # ragged chunks, right padding
        mask[i, L - 7 * i :] = 0
    ids = ids.masked_fill(mask == 0, 0)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100),
                  query_input_ids=ids[:, : L // 2], query_attention_mask=mask[:, : L // 2],
                  passage_input_ids=ids, passage_attention_mask=mask,
                  detach_clean_kv=VARIANTS[variant].get("detach_clean_kv", False))
    built = rss_mib()
    times, loss = timed_training_steps(model, inputs, optimizer, args.steps)
    peak = rss_mib()
    return {
        "variant": variant,
        "settings": VARIANTS[variant],
        "trainable_params": sum(p.numel() for p in trainable),
        "step_seconds": round(min(times), 3),
        "step_seconds_median": round(statistics.median(times), 3),
        "step_seconds_all": [round(t, 3) for t in times],
        "peak_rss_mib": round(peak, 1),
        "train_peak_mib": round(peak - built, 1),
        "loss": round(loss, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return
    passthrough = [f"--{k}={getattr(args, k)}" for k in ("layers", "hidden", "vocab", "group", "length", "steps")]
    rows = []
    for variant in args.variants:
        cmd = [sys.executable, __file__, "--worker", variant, *passthrough]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    full = next((r for r in rows if r["variant"] == "full"), None)
    if full:
        for r in rows:
            r["time_vs_full"] = round(r["step_seconds"] / full["step_seconds"], 3)
            r["train_memory_vs_full"] = round(r["train_peak_mib"] / max(full["train_peak_mib"], 1e-9), 3)
    shape = {k: getattr(args, k) for k in ("layers", "hidden", "vocab", "group", "length", "steps")}
    machine = {"platform": platform.platform(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(json.dumps({"benchmark": "Revela training step by pass variant, fp32, CPU", "shape": shape,
                      "machine": machine, "results": rows}))


if __name__ == "__main__":
    main()
