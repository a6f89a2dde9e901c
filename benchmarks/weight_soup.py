"""A weight soup of trained retrievers: each one's LoRA adapter merged into the shared base, the merged weights
averaged (Wortsman et al.'s uniform soup), saved as one retriever folder to project and score on the suite.

    PYTHONPATH=src python benchmarks/weight_soup.py OUT RUN_SEED0/retriever RUN_SEED1/retriever RUN_SEED2/retriever
    revela project --retriever OUT --descriptions DESCRIPTIONS --pooling mean+eos --output OUT-projected
    PYTHONPATH=src python benchmarks/quality.py --suite ... --retriever "soup=OUT-projected"

Prints one JSON object: the folders averaged and, per retriever, the cosine of its embeddings of a few probe texts to
the soup's (how far the soup moved from each).
"""

from __future__ import annotations

import argparse
import json

import torch

from revela_hf.retriever import RevelaRetriever, merged_backbone

PROBES = ["def add(a, b): return a + b", "sort a list of numbers in place", "open a file and read its lines"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("retrievers", nargs="+")
    args = parser.parse_args()
    if len(args.retrievers) < 2:
        parser.error("a soup needs at least two retrievers")
    models = [RevelaRetriever.from_pretrained(folder) for folder in args.retrievers]
    probes = [model.encode(PROBES, show_progress_bar=False) for model in models]
    states = [merged_backbone(model.backbone).state_dict() for model in models]
    if any(state.keys() != states[0].keys() for state in states):
        raise ValueError("the retrievers do not share one base model's parameters")
    soup = models[0]
    soup.backbone = merged_backbone(soup.backbone)
    soup.backbone.load_state_dict({name: torch.stack([state[name].float() for state in states]).mean(0).to(tensor.dtype)
                                   for name, tensor in states[0].items()})
    soup.save_pretrained(args.out)
    probe = soup.encode(PROBES, show_progress_bar=False)
    cosines = {folder: (embeddings * probe).sum(-1).mean().item() for folder, embeddings in zip(args.retrievers, probes)}
    print(json.dumps({"soup": args.out, "retrievers": args.retrievers, "probe_cosine_to_soup": cosines}, indent=1))


if __name__ == "__main__":
    main()
