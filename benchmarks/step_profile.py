"""Where the time of one `revela demo` training step goes, phase by phase, against a FLOP estimate.

The demo's model (revela_hf.training.build_model with the demo's ModelSpec: the full SmolLM2 LM,
frozen, in-batch term in its top 4 layers; SmolLM2 cut to 6 layers with LoRA r=16 as the retriever)
takes `--steps` AdamW steps on one group of B=8 chunks of `--length` LM tokens cut from real local
source code. Forward phases are timed with module hooks (retriever: queries then passages; LM pass
1: every layer under no_grad, recording key/value; LM pass 2: the top block, then the head and
loss), backward and the optimizer step around their calls. The FLOP estimate counts 2 x parameters
x tokens for each matrix product a phase runs (attention scores left out: L is short), backward as
2x its forward where weights or inputs need gradients. Prints one JSON object: per phase, the best
(min over steps) seconds, its share of the step and its achieved GFLOP/s.

    PYTHONPATH=src python benchmarks/step_profile.py [--steps 3 --length 128]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import torch

from revela_hf.demo.assets import smollm2_path, training_text_sources
from revela_hf.collator import RevelaDataCollator
from revela_hf.data.chunking import Chunker
from revela_hf.training import ModelSpec, build_model


def real_group(tokenizer, size: int, length: int) -> list[str]:
    """`size` consecutive chunks of at most `length` tokens from the first local source files that have enough."""
    chunker = Chunker(max_tokens=length - 1, tokenizer=tokenizer)
    chunks: list[str] = []
    for path in (p for p in training_text_sources(max_files=200) if p.suffix == ".py"):
        chunks += chunker.chunks(path.read_text(encoding="utf-8", errors="replace"), "code")
        if len(chunks) >= size:
            return chunks[:size]
    raise RuntimeError("not enough local source code for one group")


class PhaseTimer:
    """Seconds per named phase, accumulated by forward hooks (start on pre-hook, stop on hook)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._started: dict[str, float] = {}

    def watch(self, module: torch.nn.Module, name_of_call) -> None:
        calls = {"n": 0}

        def pre(*_):
            self._started[name_of_call(calls["n"])] = time.perf_counter()

        def post(*_):
            name = name_of_call(calls["n"])
            self.seconds[name] += time.perf_counter() - self._started.pop(name)
            calls["n"] += 1

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    def add(self, name: str, started: float) -> None:
        self.seconds[name] += time.perf_counter() - started


def matmul_params(module: torch.nn.Module) -> int:
    """Parameters of the module's linear layers (what a token's matrix products touch)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--group", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    spec = ModelSpec(lm=smollm2_path(), retriever=smollm2_path(num_hidden_layers=6), temperature=1e-3)
    model, tokenizer = build_model(spec)
    model.train()
    collate = RevelaDataCollator.from_model_config(tokenizer, None, model.config, max_length=args.length,
                                                   retriever_max_length=args.length)
    batch = collate([{"chunks": real_group(tokenizer, args.group, args.length)}])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)

    decoder = model.lm.get_decoder()
    top = model.config.resolved_inbatch_layers()
    n_layers = model.config.lm_config.num_hidden_layers
    timer = PhaseTimer()
    timer.watch(model.retriever, lambda n: ("retriever forward (queries)", "retriever forward (passages)")[n % 2])
    timer.watch(decoder, lambda n: ("LM pass 1 (clean, no_grad)", "LM pass 2 (top block)")[n % 2])
    per_step: list[dict[str, float]] = []
    for step in range(args.steps + 1):
        timer.seconds.clear()
        started = time.perf_counter()
        loss = model(**batch).loss
        forward = time.perf_counter() - started
        timer.seconds["LM head + loss"] = forward - sum(timer.seconds.values())
        mark = time.perf_counter()
        loss.backward()
        timer.add("backward (pass 2, head, retriever)", mark)
        mark = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timer.add("optimizer step", mark)
        timer.seconds["step"] = time.perf_counter() - started
        if step:  # the first step warms the allocator and creates the optimizer state
            per_step.append(dict(timer.seconds))

    tokens = int(batch["attention_mask"].sum())
    q_tokens, p_tokens = int(batch["query_attention_mask"].sum()), int(batch["passage_attention_mask"].sum())
    layer = matmul_params(decoder.layers[0])
    head = model.lm.get_output_embeddings().weight.numel()
    retriever = matmul_params(model.retriever)
    gflop = {
        "retriever forward (queries)": 2 * retriever * q_tokens,
        "retriever forward (passages)": 2 * retriever * p_tokens,
        "LM pass 1 (clean, no_grad)": 2 * layer * n_layers * tokens,
        "LM pass 2 (top block)": 2 * layer * len(top) * tokens,
        "LM head + loss": 2 * head * tokens,
        # Frozen weights: the gradient w.r.t. inputs only (1x forward) through head and top block;
        # the retriever's LoRA needs input gradients through every layer (~1x forward, LoRA weights are small).
        "backward (pass 2, head, retriever)": 2 * (head + layer * len(top)) * tokens + 2 * retriever * (q_tokens + p_tokens),
    }
    best = {name: min(s[name] for s in per_step) for name in per_step[0]}
    step = best.pop("step")
    phases = {
        name: {
            "seconds": round(sec, 3),
            "share_of_step": round(sec / step, 3),
            **({"gflop": round(gflop[name] / 1e9, 1), "gflop_per_s": round(gflop[name] / 1e9 / max(sec, 1e-9), 1)} if name in gflop else {}),
        }
        for name, sec in best.items()
    }
    total = sum(gflop.values()) / 1e9
    print(json.dumps({
        "benchmark": "one revela demo training step by phase, fp32, CPU",
        "shape": {"group": args.group, "length": args.length, "lm_tokens": tokens, "lm_layers": n_layers,
                  "inbatch_layers": len(top), "retriever_layers": model.retriever.backbone.config.num_hidden_layers},
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "step_seconds": round(step, 3),
        "step_seconds_all": [round(s["step"], 3) for s in per_step],
        "estimated_gflop": round(total, 1),
        "achieved_gflop_per_s": round(total / step, 1),
        "phases": phases,
    }, indent=2))


if __name__ == "__main__":
    main()
