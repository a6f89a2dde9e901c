"""Retriever folders: saved complete or not at all, recognised by what they hold, and encode's argument checks."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import TEXTS, tiny_causal_lm, tiny_decoder, tiny_revela

from revela_hf.cli import main
from revela_hf.io import MARKER, IncompleteOutputError, OutputExistsError
from revela_hf.model_card import CardInfo
from revela_hf.retriever import RevelaRetriever


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return tiny_decoder(tmp_path_factory.mktemp("base") / "base")


def test_an_adapter_left_by_an_interrupted_save_is_refused_not_taken_for_an_official_release(base, tmp_path):
    retriever = tiny_revela(base, query_prefix="Q: ", max_length=24)
    retriever.backbone.save_pretrained(tmp_path / "partial")  # what kill -9 after the first file of a save left
    with pytest.raises(IncompleteOutputError, match=r"partial holds a LoRA adapter but no revela_retriever.json"):
        RevelaRetriever.from_pretrained(str(tmp_path / "partial"))
    loaded = RevelaRetriever.from_pretrained(str(tmp_path / "partial"), pooling="eos", query_prefix="Q: ",
                                             passage_prefix="Passage: ", max_length=24)
    assert torch.allclose(loaded.encode_queries(TEXTS, show_progress_bar=False), retriever.encode_queries(TEXTS, show_progress_bar=False), atol=1e-6)


def test_save_is_complete_and_replaces_only_its_own_folders(base, tmp_path):
    retriever = tiny_revela(base, max_length=24)
    target = tmp_path / "retriever"
    retriever.save_pretrained(str(target))
    assert json.loads((target / MARKER).read_text())["kind"] == "retriever"
    retriever.save_pretrained(str(target))  # its own earlier save: replaced
    assert os.listdir(tmp_path) == ["retriever"]  # no temporary folder, old copy or lock left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="refusing to replace"):
        retriever.save_pretrained(str(tmp_path / "mine"))
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    assert "from_pretrained(\"retriever\")" in (target / "README.md").read_text()  # the card names the folder, not its temporary name


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
def test_encode_refuses_a_batch_size_that_is_not_positive(base, batch_size):
    retriever = tiny_revela(base, max_length=24)
    with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {batch_size}"):
        retriever.encode_corpus(TEXTS, batch_size=batch_size, show_progress_bar=False)


def test_push_keeps_the_training_record_of_the_saved_folder(base, tmp_path, hub):
    card = CardInfo(training_data=["python-docs"], hyperparameters={"objective": "revela", "steps": 7})
    tiny_revela(base, max_length=24).save_pretrained(str(tmp_path / "run" / "retriever"), card=card)
    assert main(["push", "user/pushed", str(tmp_path / "run" / "retriever"), "--base-model", "tests/tiny-llama"]) == 0
    readme = dict(hub.repos[("models", "user/pushed")].commits[-1][1])["README.md"].decode()
    assert "| steps | `7` |" in readme and "| objective | `revela` |" in readme and "python-docs" in readme
    assert 'SentenceTransformer("user/pushed")' in readme and "base_model: tests/tiny-llama" in readme


def test_push_given_the_folder_first_names_the_order_and_uploads_nothing(base, tmp_path, hub):
    tiny_revela(base, max_length=24).save_pretrained(str(tmp_path / "ret"))
    with pytest.raises(SystemExit, match="repo id first, then the folder"):
        main(["push", str(tmp_path / "ret"), "user/pushed"])
    assert ("models", "user/pushed") not in hub.repos


def test_encode_writes_its_npy_file_whole(base, tmp_path):
    import numpy as np

    retriever = tiny_revela(base, max_length=24)
    retriever.save_pretrained(str(tmp_path / "ret"))
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    assert main(["encode", "--retriever", str(tmp_path / "ret"), "--input", str(tmp_path / "texts.txt"), "--output", str(tmp_path / "emb")]) == 0
    assert sorted(os.listdir(tmp_path)) == ["emb.npy", "ret", "texts.txt"]  # np.save's naming, no temporary file
    expected = retriever.encode_corpus(TEXTS, show_progress_bar=False).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), expected, atol=1e-5)


def test_an_official_revela_adapter_is_recognised_by_what_it_holds(base, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaModel

    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="FEATURE_EXTRACTION")
    get_peft_model(LlamaModel.from_pretrained(base), config).save_pretrained(tmp_path / "official")
    loaded = RevelaRetriever.from_pretrained(str(tmp_path / "official"))
    assert (loaded.pooling, loaded.query_prefix, loaded.passage_prefix) == ("eos", "query: ", "passage: ")


def test_hub_ids_are_downloaded_loudly_and_hf_prefix_asks_for_the_hub_explicitly(base, tmp_path, hub, monkeypatch, capsys):
    from huggingface_hub import constants

    from revela_hf.hub import push_folder

    # `hub` is a local HTTP server speaking the Hub API (huggingface_hub's endpoint points at it): "run/retriever" is a
    # repo there, nothing is downloaded from the internet.
    tiny_revela(base, max_length=24).save_pretrained(str(tmp_path / "ret"))
    push_folder(tmp_path / "ret", "run/retriever")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))  # downloads stay in the test's folder
    (tmp_path / "run").mkdir()  # a local run/ exists: "run/retriever" means a path inside it
    with pytest.raises(FileNotFoundError, match="run/ is a local folder"):
        RevelaRetriever.from_pretrained("run/retriever")
    assert RevelaRetriever.from_pretrained("hf://run/retriever").max_length == 24
    (tmp_path / "run").rmdir()
    capsys.readouterr()
    assert RevelaRetriever.from_pretrained("run/retriever").max_length == 24
    assert "[revela-hf] run/retriever is not a local folder: downloading the Hub repo run/retriever" in capsys.readouterr().err


@pytest.mark.parametrize("retriever_folder", [False, True], ids=["cut-in-memory", "cut-at-load"])
def test_a_retriever_cut_to_fewer_layers_than_its_base_reloads_at_its_own_depth(tmp_path, retriever_folder):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    from revela_hf.training import ModelSpec, build_model

    lm = tiny_causal_lm(tmp_path / "lm")  # 2 layers; the retriever keeps the first
    spec = ModelSpec(lm=str(lm), retriever=str(lm) if retriever_folder else None, retriever_layers=1, retriever_lora_r=4,
                     inbatch_layers=None)
    model, tokenizer = build_model(spec)
    retriever = model.retriever
    retriever.tokenizer = tokenizer
    torch.manual_seed(3)
    for name, param in retriever.named_parameters():
        if "lora_B" in name:  # a trained adapter, not LoRA's identity start
            torch.nn.init.normal_(param, std=0.5)
    retriever.save_pretrained(str(tmp_path / "ret"))
    expected = retriever.encode_corpus(TEXTS, show_progress_bar=False)

    loaded = RevelaRetriever.from_pretrained(str(tmp_path / "ret"))
    assert loaded.backbone.config.num_hidden_layers == 1
    assert torch.equal(loaded.encode_corpus(TEXTS, show_progress_bar=False), expected)
    st = SentenceTransformer(str(tmp_path / "ret"), device="cpu")
    torch.testing.assert_close(torch.from_numpy(st.encode_document(TEXTS)), expected, atol=1e-5, rtol=0)
    assert 'AutoModel.from_pretrained("ret", num_hidden_layers=1)' in (tmp_path / "ret" / "README.md").read_text()
    auto = AutoModel.from_pretrained(str(tmp_path / "ret"), num_hidden_layers=1)  # what the model card says
    batch = loaded.tokenize(TEXTS[:1], retriever.passage_prefix)
    with torch.no_grad():
        hidden = auto(**batch).last_hidden_state[0, -1]
    torch.testing.assert_close(torch.nn.functional.normalize(hidden, dim=-1), expected[0], atol=1e-5, rtol=0)
