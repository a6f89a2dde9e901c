"""How far apart an untrained retriever's cosines lie within a group, and what Sim's temperature makes of that.

For each retriever (SmolLM2-135M cut to 4 / 6 / 12 layers and whole, all-MiniLM-L6-v2), on the first groups of a
`revela prepare` folder, through the training path's own model builder and collator: the standard deviation of
each chunk's query-to-passage cosines over the other chunks (the median over chunks), the tau that would put that
spread at the 6-layer retriever's spread in logits at the recipe's 1e-3, and Sim's mean largest weight and entropy
(nats) at 1e-3. A near one-hot Sim (largest weight near 1, entropy near 0) passes almost no gradient to the
retriever. Prints one JSON object.

    PYTHONPATH=src python benchmarks/temperature_spread.py --data GROUPS_DIR [--groups 8 --max-length 128]
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from datasets import load_from_disk
from transformers import AutoTokenizer

from revela_hf.defaults import RECIPE_TEMPERATURE
from revela_hf.demo.assets import minilm_path, smollm2_path
from revela_hf.objectives import data_collator_for
from revela_hf.ops import similarity_weights
from revela_hf.training import ModelSpec, build_model

KEYS = ("query_input_ids", "query_attention_mask", "passage_input_ids", "passage_attention_mask")
REFERENCE = "SmolLM2-135M, 6 layers"  # the demo's retriever: its spread at 1e-3 is the one every README run learned with


def retrievers() -> dict[str, ModelSpec]:
    """The retrievers compared; the LM is SmolLM2 cut to 2 layers (only the retriever is scored)."""
    lm = smollm2_path(num_hidden_layers=2)
    specs = {f"SmolLM2-135M, {n} layers": ModelSpec(lm=lm, retriever=smollm2_path(num_hidden_layers=n), inbatch_layers=[-1])
             for n in (4, 6, 12)}
    specs["SmolLM2-135M, 30 layers"] = ModelSpec(lm=lm, retriever=smollm2_path(), inbatch_layers=[-1])
    specs["all-MiniLM-L6-v2 (mean pooling)"] = ModelSpec(lm=lm, retriever=str(minilm_path()), encoder_retriever=True,
                                                         inbatch_layers=[-1])
    return specs


@torch.no_grad()
def spread_and_sim(model, collator, rows: list[dict], temperature: float) -> dict[str, float]:
    """Median in-row cosine sd, and Sim's mean largest weight and entropy at `temperature`, over the rows' chunks."""
    spread, largest, entropy = [], [], []
    for row in rows:
        batch = collator([row])
        query, passage = model.retriever_embeddings(*(batch[k] for k in KEYS))
        cosine, weights = similarity_weights(query, passage, temperature)  # (B, B) each
        size = cosine.shape[0]
        spread.append(cosine[~torch.eye(size, dtype=torch.bool)].view(size, size - 1).std(dim=-1))
        largest.append(weights.max(dim=-1).values)
        entropy.append(-(weights * weights.clamp_min(1e-12).log()).sum(dim=-1))
    return {"cosine_sd_in_row": round(torch.cat(spread).quantile(0.5).item(), 5),
            "sim_max": round(torch.cat(largest).mean().item(), 3), "sim_entropy": round(torch.cat(entropy).mean().item(), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a `revela prepare` folder")
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128, help="tokens per chunk (the demo's)")
    args = parser.parse_args()
    dataset = load_from_disk(args.data)
    rows = [dataset[i] for i in range(min(args.groups, len(dataset)))]
    results = {}
    for name, spec in retrievers().items():
        model, tokenizer = build_model(spec)
        model.eval()
        own = AutoTokenizer.from_pretrained(spec.retriever) if spec.encoder_retriever else None  # as `train` builds it
        collator = data_collator_for(model.config, tokenizer, own, max_length=args.max_length, retriever_max_length=args.max_length)
        results[name] = spread_and_sim(model, collator, rows, RECIPE_TEMPERATURE)
        print(name, json.dumps(results[name]), file=sys.stderr)
    reference = results[REFERENCE]["cosine_sd_in_row"]
    for values in results.values():
        values["tau_for_the_reference_spread"] = float(f"{RECIPE_TEMPERATURE * values['cosine_sd_in_row'] / reference:.3g}")
    print(json.dumps({"data": args.data, "groups": len(rows), "temperature": RECIPE_TEMPERATURE, "retrievers": results}, indent=1))


if __name__ == "__main__":
    main()
