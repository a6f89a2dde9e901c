"""How many principal directions all-but-the-top should remove, chosen on training text only.

A docstring -> code validation set is built from the training corpus (every installed package's `.py` files, the
evaluation roots excluded, as the suite's trained seeds read them): `function_pairs` of the files at the end of the
shuffled order `docstring_descriptions` reads from its start, so the validation functions are not the descriptions
the projection is fitted on. For each retriever it prints nDCG@10 % of plain cosine, of query-set centring (the
transductive reference) and of the projection removing the mean and k = 0, 4, ..., 96 directions, as JSON.

    PYTHONPATH=src python benchmarks/projection_directions.py RUN_s0/retriever RUN_s1/retriever ...
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np

from revela_hf.demo.assets import training_python_files
from revela_hf.demo.benchmark_sets import function_pairs
from revela_hf.evaluation.metrics import ndcg_at_k
from revela_hf.search import center_query_set, load_encoder
from revela_hf.all_but_the_top import AllButTheTop
from revela_hf.search.projection import docstring_descriptions

DIRECTIONS = (0, 4, 8, 16, 24, 32, 48, 64, 96)
VALIDATION_PAIRS = 1000


def validation_pairs(files: list[Path], descriptions: set[str]) -> list[tuple[str, str]]:
    """Up to `VALIDATION_PAIRS` (docstring, code) pairs from the end of `files`, unique, none a fitting description."""
    pairs, seen = [], set()
    for path in reversed(files):
        for query, code in function_pairs(path.read_text(encoding="utf-8", errors="replace"))[:3]:
            if query not in seen and code not in seen and query not in descriptions:
                seen |= {query, code}
                pairs.append((query, code))
        if len(pairs) >= VALIDATION_PAIRS:
            return pairs[:VALIDATION_PAIRS]
    return pairs


def ndcg10(queries: np.ndarray, docs: np.ndarray) -> float:
    """nDCG@10 % of query i's one relevant document i, by inner product."""
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1)[:, :10]
    run = {str(i): {str(j): float(scores[i, j]) for j in row} for i, row in enumerate(top)}
    return 100 * ndcg_at_k({str(i): {str(i): 1} for i in range(len(queries))}, run, 10)


def main() -> None:
    files = training_python_files()
    descriptions = docstring_descriptions(files)
    order = list(files)
    random.Random(0).shuffle(order)  # docstring_descriptions' order: the pool from its start, validation from its end
    pairs = validation_pairs(order, set(descriptions))
    results = {"descriptions": len(descriptions), "validation_pairs": len(pairs), "retrievers": {}}
    for folder in sys.argv[1:]:
        encoder = load_encoder(folder)
        pool = encoder.encode_queries(descriptions)
        queries, docs = encoder.encode_queries([q for q, _ in pairs]), encoder.encode_corpus([d for _, d in pairs])
        row = {"plain": ndcg10(queries, docs), "query-set centred": ndcg10(*center_query_set(queries, docs))}
        for k in DIRECTIONS:
            projection = AllButTheTop.fit(pool, k)
            row[f"k={k}"] = ndcg10(projection.transform(queries), projection.transform(docs))
        row["best k"] = max(DIRECTIONS, key=lambda k: row[f"k={k}"])
        results["retrievers"][folder] = {key: round(value, 2) for key, value in row.items()}
        print(json.dumps({folder: results["retrievers"][folder]}), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
