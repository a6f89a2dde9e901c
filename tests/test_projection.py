"""All-but-the-top post-processing fitted on descriptions (`revela_hf.search.projection`, `revela project`)."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from revela_hf.search.projection import (
    PROJECTION_FILE,
    AllButTheTop,
    ProjectedEncoder,
    docstring_descriptions,
    project_retriever,
)

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
    assert projection.mean == pytest.approx(mean, abs=1e-6)
    # The directions are the covariance's top-2 eigenvectors (an eigendecomposition, not the SVD the code uses).
    values, vectors = np.linalg.eigh((unit - mean).T @ (unit - mean))
    top = vectors[:, np.argsort(values)[::-1][:2]].T
    assert np.abs(projection.directions @ top.T) == pytest.approx(np.eye(2), abs=1e-5)
    x = rng.normal(size=(3, 6))
    got = projection(x)
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
        projection(x[:, :5])


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
    assert (out / PROJECTION_FILE).is_file() and (out / "modules.json").is_file()
    projected, plain = load_encoder(str(out)), load_encoder(minilm_path())
    assert isinstance(projected, ProjectedEncoder) and not isinstance(plain, ProjectedEncoder)
    projection = AllButTheTop.load(out)
    assert projection.directions.shape == (1, 384)
    texts = ["what is the capital of France?", "a stack of plates"]
    assert projected.encode_queries(texts) == pytest.approx(projection(plain.encode_queries(texts)), abs=1e-6)
    assert projected.encode_corpus(texts) == pytest.approx(projection(plain.encode_corpus(texts)), abs=1e-6)
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


class SeededEncoder:
    """Text -> a fixed random vector seeded by the text."""

    def encode_queries(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        return np.stack([np.random.default_rng(zlib.crc32(t.encode())).normal(size=5) for t in texts]).astype(np.float32)

    encode_corpus = encode_queries


def test_project_retriever_replaces_a_copy_only_when_asked(tmp_path):
    retriever = tmp_path / "retriever"
    retriever.mkdir()
    (retriever / "weights.bin").write_bytes(b"w")
    out = tmp_path / "projected"
    first = project_retriever(SeededEncoder(), retriever, out, [f"first {i}" for i in range(4)], k=1)
    with pytest.raises(ValueError, match="it exists"):
        project_retriever(SeededEncoder(), retriever, out, [f"second {i}" for i in range(4)], k=1)
    assert AllButTheTop.load(out).mean == pytest.approx(first.mean)
    second = project_retriever(SeededEncoder(), retriever, out, [f"second {i}" for i in range(4)], k=1, overwrite=True)
    assert AllButTheTop.load(out).mean == pytest.approx(second.mean) and second.mean != pytest.approx(first.mean)
    assert (out / "weights.bin").read_bytes() == b"w"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["projected", "retriever"]  # no staging folder left
    with pytest.raises(ValueError, match="already projected"):  # its embeddings would meet the projection twice
        project_retriever(SeededEncoder(), out, tmp_path / "twice", [f"third {i}" for i in range(4)], k=1)
