"""Fitting all-but-the-top on descriptions (`revela project`): the descriptions a corpus holds, and a projected copy of
a retriever folder. The projection itself, and how every loader applies it, is `revela_hf.all_but_the_top`."""

from __future__ import annotations

import ast
import os
import random
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from revela_hf.all_but_the_top import PROJECTION_FILE, AllButTheTop
from revela_hf.defaults import PROJECTION_DIRECTIONS
from revela_hf.encoders import as_array
from revela_hf.pooling import POOLED_PARTS
from revela_hf.retriever import SETTINGS_FILE, RevelaRetriever
from revela_hf.search.encoders import as_encoder, load_encoder


def docstring_descriptions(files: Iterable[str | os.PathLike[str]], max_texts: int = 2000, seed: int = 0) -> list[str]:
    """The first paragraphs (whitespace collapsed, at least 6 words) of the function and method docstrings
    of Python `files`, the files read in a random order (`seed`) until `max_texts` are found, so that they come from
    across the corpus; files that do not parse are skipped."""
    order = list(files)
    random.Random(seed).shuffle(order)
    texts: list[str] = []
    for path in order:
        try:
            tree = ast.parse(Path(path).read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (doc := ast.get_docstring(node)):
                paragraph = " ".join(doc.split("\n\n")[0].split())
                if len(paragraph.split()) >= 6:
                    texts.append(paragraph)
        if len(texts) >= max_texts:
            break
    return texts[:max_texts]


def corpus_chunks(data_dir: str | os.PathLike[str]) -> list[str]:
    """Every chunk of a `revela prepare` dataset (the training text), group after group."""
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(str(data_dir))
    if isinstance(dataset, DatasetDict) or "chunks" not in dataset.column_names:
        raise ValueError(f"{data_dir} is not a `revela prepare` dataset (one split with a 'chunks' column)")
    chunks = [chunk for group in dataset["chunks"] for chunk in group]
    if not chunks:
        raise ValueError(f"the prepared dataset at {data_dir} holds no chunk")
    return chunks


def project_retriever(
    retriever_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str], descriptions: list[str],
    k: int | None = None, pooling: str | None = None, batch_size: int = 32, overwrite: bool = False,
    token_weight_texts: list[str] | None = None, mean_from_base: bool = False,
) -> AllButTheTop:
    """Fit the projection on `descriptions` encoded as queries by the retriever at `retriever_dir` and write a copy of
    that folder holding it to `output_dir` atomically (an existing one is refused, or with `overwrite` replaced once
    the new copy is complete). A Revela retriever is loaded, re-pooled when `pooling` is given (e.g. "mean+eos") and
    saved again with the projection, so its model card states it; a sentence-transformers folder is copied and the
    projection saved into it. `k` defaults to `PROJECTION_DIRECTIONS` for each vector the pooling puts side by side (32 for
    "mean+eos"). With `token_weight_texts` (the training corpus) the mean-pooled part weighs its tokens by SIF weights
    counted over them (`RevelaRetriever.fit_token_weights`); with `mean_from_base` it reads the base model under the
    adapter (`RevelaRetriever`'s `mean_from_base`). Both are fitted before the projection, which sees their embeddings."""
    output, source = Path(output_dir), Path(retriever_dir)
    if (source / PROJECTION_FILE).is_file():
        raise ValueError(f"{retriever_dir} is already projected ({PROJECTION_FILE}); project the retriever it was copied from")
    if output.exists() and not overwrite:
        raise ValueError(f"refusing to write the projected retriever into {output}: it exists")
    if not descriptions:
        raise ValueError("no descriptions to fit the projection on")
    revela = (source / SETTINGS_FILE).is_file()
    if (pooling is not None or token_weight_texts is not None or mean_from_base) and not revela:
        raise ValueError(f"re-pooling, token weights and mean_from_base need a Revela retriever ({SETTINGS_FILE}); {retriever_dir} is not one")
    overrides = {**({"pooling": pooling} if pooling else {}), **({"mean_from_base": True} if mean_from_base else {})}
    model = RevelaRetriever.from_pretrained(str(source), **overrides) if revela else None
    if token_weight_texts is not None:
        model.fit_token_weights(token_weight_texts)
    encoder = as_encoder(model) if revela else load_encoder(str(source))
    parts = len(POOLED_PARTS[model.pooling]) if model is not None else 1
    k = PROJECTION_DIRECTIONS * parts if k is None else k
    projection = AllButTheTop.fit(as_array(encoder.encode_queries(descriptions, batch_size=batch_size)), k)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    old = staging.with_name(staging.name + "-old")
    try:
        if model is not None:
            model.projection = projection
            model.save_pretrained(str(staging), repo_id=output.name)
        else:
            shutil.copytree(source, staging, dirs_exist_ok=True)
            projection.save(staging)
        if output.exists():
            os.rename(output, old)
        os.rename(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return projection
