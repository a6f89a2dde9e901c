"""`save_pretrained(..., merge_lora=True)` / `revela push --merge-lora`: a retriever's LoRA adapter merged into full
weights, which load in RevelaRetriever, sentence-transformers and transformers (in a process where peft is not
installed) with the adapter's embeddings; the live retriever keeps its adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import torch
from conftest import TEXTS, adapted_revela, tiny_decoder
from huggingface_hub import snapshot_download
from sentence_transformers import SentenceTransformer

from revela_hf.retriever import RevelaRetriever

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")

WITHOUT_PEFT = textwrap.dedent('''
    import importlib.util, json, sys
    import torch.nn.functional as F
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    assert importlib.util.find_spec("peft") is None and importlib.util.find_spec("revela_hf") is None
    folder, texts, prefix = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    st = SentenceTransformer(folder).encode_query(texts).tolist()
    model, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)  # the tokenizer appends EOS
    rows = [F.normalize(model(**tokenizer([prefix + t], return_tensors="pt")).last_hidden_state[0, -1], dim=-1).tolist()
            for t in texts]
    print("RESULT" + json.dumps({"st": st, "transformers": rows}))
''')



def _site_without_peft(root: Path) -> Path:
    """A site-packages of links to this environment's packages but peft (read without site hooks: `python -S`)."""
    root.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        name = entry.name.lower()
        if not (name == "peft" or name.startswith("peft-")):
            (root / entry.name).symlink_to(entry)
    return root


def _load_without_peft(folder: Path, prefix: str, site: Path) -> dict[str, torch.Tensor]:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-S", "-c", WITHOUT_PEFT, str(folder), json.dumps(TEXTS), prefix],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    return {key: torch.tensor(value) for key, value in json.loads(line[len("RESULT"):]).items()}


def test_merged_folder_loads_everywhere_with_the_adapters_embeddings(tmp_path):
    retriever = adapted_revela(tiny_decoder(tmp_path / "base"))
    queries, passages = (retriever.encode_queries(TEXTS, show_progress_bar=False),
                         retriever.encode_corpus(TEXTS, show_progress_bar=False))
    retriever.save_pretrained(tmp_path / "merged", merge_lora=True)

    folder = tmp_path / "merged"
    assert not any((folder / name).exists() for name in ADAPTER_FILES) and (folder / "model.safetensors").is_file()
    assert retriever.backbone._hf_peft_config_loaded  # the live retriever still trains its adapter
    assert any("lora_B" in name for name, _ in retriever.backbone.named_parameters())
    torch.testing.assert_close(retriever.encode_queries(TEXTS, show_progress_bar=False), queries, rtol=0, atol=0)

    reloaded = RevelaRetriever.from_pretrained(str(folder))
    assert reloaded.settings() == retriever.settings()
    assert not any("lora" in name for name, _ in reloaded.backbone.named_parameters())
    torch.testing.assert_close(reloaded.encode_queries(TEXTS, show_progress_bar=False), queries, rtol=0, atol=1e-5)
    torch.testing.assert_close(reloaded.encode_corpus(TEXTS, show_progress_bar=False), passages, rtol=0, atol=1e-5)

    st = SentenceTransformer(str(folder))
    torch.testing.assert_close(torch.from_numpy(st.encode_query(TEXTS)), queries, rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(st.encode_document(TEXTS)), passages, rtol=0, atol=1e-5)

    loaded = _load_without_peft(folder, retriever.query_prefix, _site_without_peft(tmp_path / "site"))
    torch.testing.assert_close(loaded["st"], queries, rtol=0, atol=1e-5)
    torch.testing.assert_close(loaded["transformers"], queries, rtol=0, atol=1e-5)


def test_merge_lora_without_an_adapter_writes_the_same_weights(tmp_path):
    base = tiny_decoder(tmp_path / "base")
    plain = RevelaRetriever.from_backbone(str(base), max_length=24)
    plain.save_pretrained(tmp_path / "a")
    plain.save_pretrained(tmp_path / "b", merge_lora=True)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_cli_push_merge_lora(hub, tmp_path, capsys):
    from revela_hf.cli import main

    retriever = adapted_revela(tiny_decoder(tmp_path / "base"))
    retriever.save_pretrained(tmp_path / "ret")
    assert (tmp_path / "ret" / "adapter_config.json").is_file()
    assert main(["push", "tests/revela-merged", str(tmp_path / "ret"), "--merge-lora"]) == 0
    assert "pushed to" in capsys.readouterr().out
    folder = Path(snapshot_download("tests/revela-merged", cache_dir=tmp_path / "cache"))
    assert not any((folder / name).exists() for name in ADAPTER_FILES)
    expected = retriever.encode_queries(TEXTS, show_progress_bar=False)
    torch.testing.assert_close(torch.from_numpy(SentenceTransformer(str(folder)).encode_query(TEXTS)), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(RevelaRetriever.from_pretrained(str(folder)).encode_queries(TEXTS, show_progress_bar=False),
                               expected, rtol=0, atol=1e-5)
