"""SIF token weights and the base model's mean half (`revela_hf.token_weights`, `RevelaRetriever(token_weights=,
mean_from_base=)`, `revela project --token-weights --mean-from-base`)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import TEXTS, adapted_revela, tiny_decoder
from datasets import Dataset
from transformers import AutoModel

from revela_hf.all_but_the_top import AllButTheTop
from revela_hf.retriever import RevelaRetriever
from revela_hf.search.projection import project_retriever
from revela_hf.token_weights import TOKEN_WEIGHTS_FILE, sif_weights


def test_sif_weights_follow_the_formula():
    got = sif_weights([[1, 2, 2], [2, 3]], vocab_size=5, a=0.1).tolist()
    shares = [0 / 5, 1 / 5, 3 / 5, 1 / 5, 0 / 5]  # token 2 is 3 of the 5 tokens counted
    assert got == pytest.approx([0.1 / (0.1 + p) for p in shares])
    assert got[0] == got[4] == 1.0 and got[2] < got[1]  # unseen tokens weigh 1, frequent ones less
    with pytest.raises(ValueError, match="no tokens to count"):
        sif_weights([[], []], vocab_size=5)
    with pytest.raises(ValueError, match="token id 7 is outside the vocabulary of 5"):
        sif_weights([[1, 7]], vocab_size=5)
    with pytest.raises(ValueError, match="must be positive"):
        sif_weights([[1]], vocab_size=5, a=0.0)


def test_fit_token_weights_counts_texts_as_queries_and_passages(tmp_path):
    retriever = RevelaRetriever.from_backbone(str(tiny_decoder(tmp_path / "base")), pooling="mean+eos", max_length=24)
    weights = retriever.fit_token_weights(TEXTS, a=0.01)
    tokenizer = retriever.tokenizer
    counts = Counter(token for prefix in ("Query: ", "Passage: ") for text in TEXTS
                     for token in tokenizer(prefix + text)["input_ids"] + [tokenizer.eos_token_id])
    total = sum(counts.values())
    for token in [tokenizer.eos_token_id, *tokenizer("cat mat paris")["input_ids"]]:
        assert weights[token].item() == pytest.approx(0.01 / (0.01 + counts[token] / total), rel=1e-6)
    unseen = next(i for i in range(len(weights)) if i not in counts)
    assert weights[unseen].item() == 1.0 and weights.shape == (retriever.backbone.get_input_embeddings().num_embeddings,)
    with pytest.raises(ValueError, match="'eos' pooling has none"):
        RevelaRetriever.from_backbone(str(tmp_path / "base")).fit_token_weights(TEXTS)


def test_the_mean_half_is_the_base_models_weighted_mean_and_the_eos_half_the_adapters(tmp_path):
    base = tiny_decoder(tmp_path / "base")
    adapted = adapted_revela(base)
    weights = torch.rand(adapted.backbone.get_input_embeddings().num_embeddings) + 0.05
    retriever = RevelaRetriever(adapted.backbone, adapted.tokenizer, pooling="mean+eos", normalize=False, max_length=24,
                                token_weights=weights, mean_from_base=True)
    batch = retriever.tokenize(TEXTS[:3], prefix="Query: ")
    with torch.no_grad():
        got = retriever(batch["input_ids"], batch["attention_mask"])
        plain = AutoModel.from_pretrained(str(base))(**batch).last_hidden_state  # (N, L, E): no adapter
        tuned = adapted.backbone(**batch).last_hidden_state  # (N, L, E): the adapter on, as before the call
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    for row, ids, n, base_states, tuned_states in zip(got.tolist(), batch["input_ids"].tolist(), lengths, plain.tolist(), tuned.tolist()):
        w = [weights[ids[t]].item() for t in range(n)]
        mean = [sum(w[t] * base_states[t][e] for t in range(n)) / sum(w) for e in range(32)]
        assert row == pytest.approx(mean + tuned_states[n - 1], abs=1e-5)
    assert (plain - tuned).abs().max() > 1e-2  # the two halves do read different models
    with pytest.raises(ValueError, match="'eos' pooling has none"):
        RevelaRetriever(adapted.backbone, adapted.tokenizer, mean_from_base=True)
    with pytest.raises(ValueError, match="one weight per token"):
        RevelaRetriever(adapted.backbone, adapted.tokenizer, pooling="mean", token_weights=weights[:-1])
    with pytest.raises(ValueError, match="merging the adapter would lose"):
        retriever.save_pretrained(str(tmp_path / "merged"), merge_lora=True)
    assert not (tmp_path / "merged").exists()
    with pytest.raises(ValueError, match="ONNX export holds one model"):
        retriever.export_onnx(str(tmp_path / "onnx"))


def test_revela_project_fits_token_weights_on_a_prepared_corpus_and_the_copy_reloads_them(tmp_path, capsys):
    from revela_hf.cli import main
    from revela_hf.search import load_encoder

    adapted_revela(tiny_decoder(tmp_path / "base")).save_pretrained(tmp_path / "ret")
    corpus = tmp_path / "corpus"
    Dataset.from_dict({"chunks": [TEXTS[:3], TEXTS[3:]]}).save_to_disk(str(corpus))
    descriptions = tmp_path / "descriptions.txt"
    descriptions.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "projected"
    assert main(["project", "--retriever", str(tmp_path / "ret"), "--descriptions", str(descriptions), "--pooling", "mean+eos",
                 "--token-weights", str(corpus), "--mean-from-base", "--directions", "2", "--output", str(out)]) == 0
    expected = RevelaRetriever.from_pretrained(str(tmp_path / "ret"), pooling="mean+eos", mean_from_base=True)
    weights = expected.fit_token_weights(TEXTS)
    projection = AllButTheTop.load(out)
    queries = projection.transform(expected.encode_queries(TEXTS, show_progress_bar=False).numpy())
    loaded = RevelaRetriever.from_pretrained(str(out))
    assert torch.equal(loaded.token_weights, weights) and loaded.mean_from_base and (out / TOKEN_WEIGHTS_FILE).is_file()
    assert loaded.encode_queries(TEXTS, show_progress_bar=False).numpy() == pytest.approx(queries, abs=1e-5)
    assert load_encoder(str(out)).encode_queries(TEXTS) == pytest.approx(queries, abs=1e-5)  # evaluate, search, mteb
    plain = project_retriever(tmp_path / "ret", tmp_path / "plain", TEXTS, k=2, pooling="mean+eos")
    assert np.abs(plain.transform(RevelaRetriever.from_pretrained(str(tmp_path / "ret"), pooling="mean+eos").encode_queries(
        TEXTS, show_progress_bar=False).numpy()) - queries).max() > 1e-2  # the weights and the base's mean change it
    # Stock sentence-transformers modules cannot read the base model under the adapter: no modules.json that would
    # load a different model (without --mean-from-base they can: tests/test_projection.py).
    assert not (out / "modules.json").exists() and (tmp_path / "plain" / "modules.json").is_file()
    capsys.readouterr()
    assert main(["project", "--retriever", str(tmp_path / "ret"), "--descriptions", str(descriptions),
                 "--token-weights", str(tmp_path / "ret"), "--output", str(tmp_path / "x")]) == 2
    assert "is neither a `Dataset` directory" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_pushed_sif_retriever_and_its_card_give_its_embeddings(hub, tmp_path):
    from huggingface_hub import snapshot_download

    from revela_hf.cli import main

    adapted_revela(tiny_decoder(tmp_path / "base")).save_pretrained(tmp_path / "ret")
    project_retriever(tmp_path / "ret", tmp_path / "projected", TEXTS, k=2, pooling="mean+eos", token_weight_texts=TEXTS,
                      mean_from_base=True)
    assert main(["push", "tests/revela-sif", str(tmp_path / "projected")]) == 0
    query = "how do I sort a list in python?"  # the model card's example query
    local = RevelaRetriever.from_pretrained(str(tmp_path / "projected"))
    local.max_length = 64  # the card's snippet does not truncate
    expected = local.encode_queries([query], show_progress_bar=False).numpy()
    pulled = RevelaRetriever.from_pretrained("hf://tests/revela-sif", max_length=64)
    assert pulled.encode_queries([query], show_progress_bar=False).numpy() == pytest.approx(expected, abs=1e-5)
    folder = snapshot_download("tests/revela-sif", cache_dir=tmp_path / "cache")
    card = (tmp_path / "cache").glob("**/README.md")
    text = next(card).read_text()
    assert "Not available for this read-out" in text and "read from the base model, adapter off" in text
    snippet = text.split("### transformers (PEFT integration)")[1].split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # what the card tells transformers users to run
    assert namespace["embedding"].numpy() == pytest.approx(expected, abs=1e-5)
    assert not (tmp_path / "cache").joinpath(folder, "modules.json").exists()
