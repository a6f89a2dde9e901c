"""All-but-the-top post-processing fitted on descriptions (`revela_hf.search.projection`, `revela project`)."""

from __future__ import annotations

import math

import json

import numpy as np
import pytest
import torch
from conftest import TEXTS, adapted_revela, tiny_decoder
from sentence_transformers import SentenceTransformer

from revela_hf.all_but_the_top import PROJECTION_FILE, AllButTheTop
from revela_hf.search.projection import docstring_descriptions, project_retriever

SOURCE = '''
def area(radius):
    """Compute the area enclosed by a circle of the given radius."""
    return 3.14159 * radius ** 2


class Stack:
    def push(self, item):
        """Put one more item on top of the stack of things."""
        self.items.append(item)

    def pop(self):
        """Short."""
        return self.items.pop()


async def fetch(url):
    """Download the page at this address and return its body text.

    A second paragraph that is not part of the description.
    """
'''


def test_all_but_the_top_follows_the_formula():
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(40, 6)) * np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.2]) + 4.0
    projection = AllButTheTop.fit(pool, k=2)
    unit = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    mean = unit.mean(axis=0)
    assert projection.mean.numpy() == pytest.approx(mean, abs=1e-6)
    # The directions are the covariance's top-2 eigenvectors (an eigendecomposition, not the SVD the code uses).
    values, vectors = np.linalg.eigh((unit - mean).T @ (unit - mean))
    top = vectors[:, np.argsort(values)[::-1][:2]].T
    assert np.abs(projection.directions.numpy() @ top.T) == pytest.approx(np.eye(2), abs=1e-5)
    x = rng.normal(size=(3, 6))
    got = projection.transform(x)
    for got_row, row in zip(got.tolist(), x.tolist()):
        norm = math.sqrt(sum(v * v for v in row))
        y = [v / norm - m for v, m in zip(row, mean.tolist())]
        for direction in top.tolist():
            dot = sum(a * b for a, b in zip(y, direction))
            y = [a - dot * b for a, b in zip(y, direction)]
        length = math.sqrt(sum(v * v for v in y))
        assert got_row == pytest.approx([v / length for v in y], abs=1e-5)
    with pytest.raises(ValueError, match="more than 6 descriptions"):
        AllButTheTop.fit(pool[:6], k=6)
    with pytest.raises(ValueError, match="width 5 meet a projection fitted on width 6"):
        projection.transform(x[:, :5])


def test_docstring_descriptions_reads_first_paragraphs(tmp_path):
    good, broken = tmp_path / "good.py", tmp_path / "broken.py"
    good.write_text(SOURCE, encoding="utf-8")
    broken.write_text("def oops(:\n", encoding="utf-8")
    texts = docstring_descriptions([broken, good])
    assert sorted(texts) == sorted(["Compute the area enclosed by a circle of the given radius.",
                                    "Put one more item on top of the stack of things.",
                                    "Download the page at this address and return its body text."])
    assert len(docstring_descriptions([good], max_texts=2)) == 2


def test_cli_project_writes_a_copy_that_every_command_loads(tmp_path, capsys):
    from revela_hf.cli import main
    from revela_hf.demo.assets import minilm_path
    from revela_hf.evaluation import BeirDataset, evaluate_retrieval, write_beir
    from revela_hf.search import load_encoder

    sources = tmp_path / "src"
    sources.mkdir()
    (sources / "shapes.py").write_text(SOURCE, encoding="utf-8")
    out = tmp_path / "projected"
    assert main(["project", "--retriever", minilm_path(), "--sources", str(sources), "--directions", "1", "--output", str(out)]) == 0
    assert (out / PROJECTION_FILE).is_file()
    # A sentence-transformers model: the projection ends its modules, so SentenceTransformer applies it.
    types = [m["type"].rsplit(".", 1)[1] for m in json.loads((out / "modules.json").read_text())]
    assert types == ["Transformer", "Pooling", "Normalize", "Dense", "Normalize"]
    projected, plain = load_encoder(str(out)), load_encoder(minilm_path())
    projection = AllButTheTop.load(out)
    assert projection.directions.shape == (1, 384)
    texts = ["what is the capital of France?", "a stack of plates"]
    assert projected.encode_queries(texts) == pytest.approx(projection.transform(plain.encode_queries(texts)), abs=1e-5)
    assert projected.encode_corpus(texts) == pytest.approx(projection.transform(plain.encode_corpus(texts)), abs=1e-5)
    facts = {"paris": "Paris is the capital of France", "stack": "Plates are piled in a stack"}
    data = write_beir(tmp_path / "beir", BeirDataset(corpus={k: {"title": "", "text": v} for k, v in facts.items()},
                                                     queries={"q1": texts[0], "q2": texts[1]},
                                                     qrels={"q1": {"paris": 1}, "q2": {"stack": 1}}))
    assert evaluate_retrieval(str(out), data)["mrr@10"] == pytest.approx(1.0)  # evaluate loads the projection too
    capsys.readouterr()
    assert main(["project", "--retriever", minilm_path(), "--sources", str(sources), "--output", str(out)]) == 2
    assert "it exists" in capsys.readouterr().err and AllButTheTop.load(out).directions.shape == (1, 384)
    assert main(["project", "--retriever", minilm_path(), "--sources", str(sources), "--output", str(tmp_path / "x")]) == 2
    assert "removing 16 directions needs more than 16 descriptions" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["project", "--retriever", minilm_path(), "--sources", str(tmp_path / "empty"), "--output", str(tmp_path / "x")]) == 2
    assert "no descriptions" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_project_retriever_replaces_a_copy_only_when_asked(tmp_path):
    adapted_revela(tiny_decoder(tmp_path / "base")).save_pretrained(tmp_path / "retriever")
    retriever, out = tmp_path / "retriever", tmp_path / "projected"
    first = project_retriever(retriever, out, TEXTS[:3], k=1)
    with pytest.raises(ValueError, match="it exists"):
        project_retriever(retriever, out, TEXTS[2:], k=1)
    assert torch.equal(AllButTheTop.load(out).mean, first.mean)
    second = project_retriever(retriever, out, TEXTS[2:], k=1, overwrite=True)
    assert torch.equal(AllButTheTop.load(out).mean, second.mean) and not torch.allclose(second.mean, first.mean)
    assert (out / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "projected", "retriever"]  # no staging folder left
    with pytest.raises(ValueError, match="already projected"):  # its embeddings would meet the projection twice
        project_retriever(out, tmp_path / "twice", TEXTS, k=1)
    with pytest.raises(ValueError, match="re-pooling, token weights and mean_from_base need a Revela retriever"):
        project_retriever(tmp_path / "base", tmp_path / "x", TEXTS, pooling="mean+eos")


@pytest.mark.parametrize(("pooling", "sif"), [(None, False), ("mean+eos", False), ("mean+eos", True)])
def test_a_projected_revela_retriever_loads_projected_everywhere(tmp_path, pooling, sif):
    from revela_hf.evaluation.mteb_integration import revela_model_meta
    from revela_hf.retriever import RevelaRetriever
    from revela_hf.search import load_encoder

    adapted_revela(tiny_decoder(tmp_path / "base")).save_pretrained(tmp_path / "ret")
    retriever = RevelaRetriever.from_pretrained(str(tmp_path / "ret"), **({"pooling": pooling} if pooling else {}))
    if sif:
        retriever.fit_token_weights(TEXTS)  # SIF weights on the mean part, as `revela project --token-weights` fits them
    raw_q = retriever.encode_queries(TEXTS, show_progress_bar=False).numpy()
    raw_p = retriever.encode_corpus(TEXTS, show_progress_bar=False).numpy()
    assert raw_q.shape == (len(TEXTS), 64 if pooling else 32)  # mean and EOS side by side
    projection = project_retriever(tmp_path / "ret", tmp_path / "projected", TEXTS, k=2, pooling=pooling,
                                   token_weight_texts=TEXTS if sif else None)
    queries, passages = projection.transform(raw_q), projection.transform(raw_p)
    assert np.abs(queries - unit(raw_q)).max() > 0.1  # the projection moves the embeddings

    def assert_projected(folder):
        loaded = RevelaRetriever.from_pretrained(str(folder))
        assert loaded.encode_queries(TEXTS, show_progress_bar=False).numpy() == pytest.approx(queries, abs=1e-5)
        assert loaded.encode_corpus(TEXTS, show_progress_bar=False).numpy() == pytest.approx(passages, abs=1e-5)
        assert load_encoder(str(folder)).encode_queries(TEXTS) == pytest.approx(queries, abs=1e-5)
        st = SentenceTransformer(str(folder))  # its mean pooling rounds apart by up to ~2e-5 after the projection
        assert st.encode_query(TEXTS) == pytest.approx(queries, abs=5e-5)
        assert st.encode_document(TEXTS) == pytest.approx(passages, abs=5e-5)
        types = [m["type"].rsplit(".", 1)[1] for m in json.loads((folder / "modules.json").read_text())]
        # With SIF weights, WordWeights weighs every token's state by its id and a Dense divides the EOS part by
        # the EOS token's weight again: stock modules, no trust_remote_code.
        sif_modules = (["WordWeights"], ["Dense"]) if sif else ([], [])
        assert types == ["Transformer", *sif_modules[0], "Pooling", *sif_modules[1], "Normalize", "Dense", "Normalize"]
        card = (folder / "README.md").read_text()
        assert "| Post-processing | all-but-the-top: the mean and top 2 principal directions" in card
        assert '"all_but_the_top.npz"' in card  # the transformers snippet applies it too
        return loaded

    loaded = assert_projected(tmp_path / "projected")
    mteb_model = revela_model_meta(str(tmp_path / "projected")).load_model()
    assert mteb_model.encode([{"text": TEXTS}], task_metadata=None, hf_split="test", hf_subset="default",
                             prompt_type=None) == pytest.approx(projection.transform(
                                 retriever.encode(TEXTS, retriever.passage_prefix, show_progress_bar=False).numpy()), abs=1e-5)
    loaded.save_pretrained(tmp_path / "again")  # a save keeps the projection, once
    assert_projected(tmp_path / "again")
    again = AllButTheTop.load(tmp_path / "again")
    assert torch.equal(again.mean, projection.mean) and torch.equal(again.directions, projection.directions)
    plain = RevelaRetriever.from_pretrained(str(tmp_path / "ret")).encode_queries(TEXTS, show_progress_bar=False).numpy()
    assert SentenceTransformer(str(tmp_path / "ret")).encode_query(TEXTS) == pytest.approx(plain, abs=1e-5)  # untouched


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(("pooling", "sif"), [(None, False), ("mean+eos", False), ("mean+eos", True)])
def test_a_pushed_projected_retriever_and_its_card_apply_the_projection(hub, tmp_path, pooling, sif):
    from huggingface_hub import snapshot_download

    from revela_hf.cli import main
    from revela_hf.retriever import RevelaRetriever

    retriever = adapted_revela(tiny_decoder(tmp_path / "base"))
    retriever.max_length = 64  # the card's snippet does not truncate
    retriever.save_pretrained(tmp_path / "ret")
    projection = project_retriever(tmp_path / "ret", tmp_path / "projected", TEXTS, k=2, pooling=pooling,
                                   token_weight_texts=TEXTS if sif else None)
    assert main(["push", "tests/revela-projected", str(tmp_path / "projected"), "--merge-lora"]) == 0
    query = "how do I sort a list in python?"  # the model card's example query
    retriever.pooling = pooling or retriever.pooling
    if sif:
        retriever.fit_token_weights(TEXTS)
    expected = projection.transform(retriever.encode_queries([query], show_progress_bar=False).numpy())
    folder = snapshot_download("tests/revela-projected", cache_dir=tmp_path / "cache")
    assert SentenceTransformer(folder).encode_query([query]) == pytest.approx(expected, abs=1e-5)
    assert RevelaRetriever.from_pretrained("hf://tests/revela-projected").encode_queries(
        [query], show_progress_bar=False).numpy() == pytest.approx(expected, abs=1e-5)
    card = (tmp_path / "cache").glob("**/README.md")
    snippet = next(card).read_text().split("### transformers (PEFT integration)")[1].split("```python\n")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)  # what the card tells transformers users to run
    assert namespace["embedding"].numpy() == pytest.approx(expected, abs=1e-5)


def test_mean_and_eos_pooling_concatenates_both_states(tmp_path):
    from transformers import AutoModel

    from revela_hf.retriever import RevelaRetriever

    base = tiny_decoder(tmp_path / "base")
    retriever = RevelaRetriever.from_backbone(str(base), pooling="mean+eos", normalize=False, max_length=24)
    batch = retriever.tokenize(TEXTS[:3], prefix="Query: ")
    eos = retriever.tokenizer.eos_token_id
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert all(row[n - 1] == eos for row, n in zip(batch["input_ids"].tolist(), lengths))  # EOS appended, as for "eos"
    with torch.no_grad():
        got = retriever(batch["input_ids"], batch["attention_mask"])
        hidden = AutoModel.from_pretrained(str(base))(**batch).last_hidden_state  # (N, L, E)
    for row, n, states in zip(got.tolist(), lengths, hidden.tolist()):
        mean = [sum(states[t][e] for t in range(n)) / n for e in range(32)]
        assert row == pytest.approx(mean + states[n - 1], abs=1e-5)  # [mean of the real tokens, the last (EOS) state]
