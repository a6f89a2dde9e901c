"""README's "Python API" example runs as written, on tiny stand-ins for its model folders and data."""

import re
from pathlib import Path

import torch
from datasets import Dataset
from transformers import LlamaForCausalLM, LlamaModel

from conftest import tiny_llama_config, word_groups, word_tokenizer
from revela_hf import RevelaRetriever

ROOT = Path(__file__).resolve().parents[1]


def readme_api_example() -> str:
    """The first Python block under README's "## Python API" heading."""
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_api_example_trains_and_returns_a_retriever(tmp_path, monkeypatch):
    code = readme_api_example()
    # Its two settings that need real models and a long run: the folders and the number of steps.
    folders = re.search(r"^lm_dir, retriever_dir = .*$", code, re.M)
    assert folders and "max_steps=100" in code, "the example's shape changed: update this test"
    code = code.replace(folders.group(0), 'lm_dir, retriever_dir = "lm", "retriever"').replace("max_steps=100", "max_steps=2")

    monkeypatch.chdir(tmp_path)
    tok = word_tokenizer()
    torch.manual_seed(0)
    config = tiny_llama_config(tok, num_hidden_layers=4)  # the example puts the in-batch term in the top 4 layers
    LlamaForCausalLM(config).save_pretrained("lm")
    tok.save_pretrained("lm")
    LlamaModel(config).save_pretrained("retriever")
    Dataset.from_list(word_groups(4)).save_to_disk("groups")  # what `revela prepare ... --output groups/` writes

    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["trainer"].state.global_step == 2
    retriever = namespace["retriever"]
    assert isinstance(retriever, RevelaRetriever)
    emb = retriever.encode_queries(["w1 w2 w3", "w4 w5"])
    assert emb.shape == (2, config.hidden_size) and torch.isfinite(emb).all()
    assert (tmp_path / "run" / "checkpoint-2" / "retriever").is_dir(), "the example's comment: checkpoints carry retriever/"
