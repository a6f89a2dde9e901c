"""Push a tiny trained retriever to a local Hub server, then load it by repo id in a fresh process
through every loader (RevelaRetriever, AutoModel + adapter, PeftModel, SentenceTransformer) and
compare embeddings. Also loads an adapter in the official Revela release format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import TEXTS, tiny_causal_lm, tiny_decoder, tiny_groups, tiny_revela
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, LlamaModel

from revela_hf.hub import push_folder, set_adapter_base_model
from revela_hf.model_card import CardInfo

BASE_REPO, REPO, OFFICIAL_REPO = "tests/tiny-llama", "tests/revela-tiny", "official/revela-tiny"

LOADERS = textwrap.dedent('''
    import json, sys
    import torch
    import torch.nn.functional as F
    from peft import PeftModel
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer
    from revela_hf.retriever import RevelaRetriever

    repo, base_repo, official_repo, texts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    out = {}
    retriever = RevelaRetriever.from_pretrained(repo)
    out["revela"] = {"q": retriever.encode_queries(texts).tolist(), "p": retriever.encode_corpus(texts).tolist()}
    st = SentenceTransformer(repo)
    out["sentence-transformers"] = {"q": st.encode_query(texts).tolist(), "p": st.encode_document(texts).tolist()}
    tokenizer = AutoTokenizer.from_pretrained(repo)

    def manual(model, prefix):  # what the model card tells transformers/peft users to do
        rows = []
        for text in texts:
            batch = tokenizer([prefix + text], return_tensors="pt", truncation=True, max_length=retriever.max_length)
            with torch.no_grad():
                rows.append(F.normalize(model(**batch).last_hidden_state[0, -1], dim=-1).tolist())
        return rows

    auto = AutoModel.from_pretrained(repo)
    out["transformers"] = {"q": manual(auto, retriever.query_prefix), "p": manual(auto, retriever.passage_prefix)}
    peft = PeftModel.from_pretrained(AutoModel.from_pretrained(base_repo), repo)
    out["peft"] = {"q": manual(peft, retriever.query_prefix), "p": manual(peft, retriever.passage_prefix)}
    official = RevelaRetriever.from_pretrained(official_repo)
    out["official"] = {"settings": official.settings(), "q": official.encode_queries(texts).tolist()}
    print("RESULT" + json.dumps(out))
''')


def _official_adapter(base, folder):
    """An adapter saved the way the official Revela code saves its retriever: PEFT on the bare decoder."""
    torch.manual_seed(2)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="FEATURE_EXTRACTION",
                        init_lora_weights=False)
    model = get_peft_model(LlamaModel.from_pretrained(base), config)
    model.save_pretrained(folder)
    set_adapter_base_model(folder, BASE_REPO)
    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = []
    for text in TEXTS:  # the official inference recipe: "query: " prefix, EOS appended, its state, L2-normalised
        ids = torch.tensor([tokenizer("query: " + text)["input_ids"] + [tokenizer.eos_token_id]])
        with torch.no_grad():
            rows.append(F.normalize(model(input_ids=ids).last_hidden_state[0, -1], dim=-1))
    return folder, torch.stack(rows)


def test_push_then_load_everywhere_in_a_fresh_process(hub, tmp_path):
    base = tiny_decoder(tmp_path / "base")
    push_folder(base, BASE_REPO)
    retriever = tiny_revela(base, max_length=24)
    # The base model's Hub id comes with the card, as training records it (RevelaTrainingArguments.base_model).
    card = CardInfo(training_data=["python-docs"], hyperparameters={"lora_r": 4, "group_size": 4},
                    eval_results={"HumanEval": {"ndcg@10": 0.5}}, base_model=BASE_REPO)
    retriever.push_to_hub(REPO, card=card)
    official_folder, official_expected = _official_adapter(base, tmp_path / "official")
    push_folder(official_folder, OFFICIAL_REPO)
    expected = {"q": retriever.encode_queries(TEXTS, show_progress_bar=False), "p": retriever.encode_corpus(TEXTS, show_progress_bar=False)}

    uploaded = dict(hub.repos[("models", REPO)].commits[-1][1])
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "revela_retriever.json", "modules.json",
            "1_Pooling/config.json", "config_sentence_transformers.json", "README.md"} <= set(uploaded)
    assert not any(name.startswith("model") and name.endswith(".safetensors") for name in uploaded)  # retriever only
    assert json.loads(uploaded["adapter_config.json"])["base_model_name_or_path"] == BASE_REPO
    card_text = uploaded["README.md"].decode()
    assert "base_model: tests/tiny-llama" in card_text and "SentenceTransformer(\"tests/revela-tiny\")" in card_text
    assert "| HumanEval | 50.00 |" in card_text and "| lora_r | `4` |" in card_text

    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "0",
           "PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in sys.path if p)}
    elsewhere = tmp_path / "elsewhere"  # a folder holding no local tests/ or official/ that the repo ids could mean
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, "-c", LOADERS, REPO, BASE_REPO, OFFICIAL_REPO, json.dumps(TEXTS)],
                         env=env, capture_output=True, text=True, timeout=300, cwd=elsewhere)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("RESULT"))[len("RESULT"):])
    for loader in ("revela", "sentence-transformers", "transformers", "peft"):
        for side in ("q", "p"):
            diff = (torch.tensor(loaded[loader][side]) - expected[side]).abs().max().item()
            assert diff < 1e-5, f"{loader} {side}: max difference {diff}"

    official = loaded["official"]
    assert official["settings"]["query_prefix"] == "query: " and official["settings"]["pooling"] == "eos"
    assert (torch.tensor(official["q"]) - official_expected).abs().max().item() < 1e-5
    assert ("GET", f"/api/models/{REPO}/revision/main") in hub.requests


@pytest.mark.parametrize("strategy, while_training", [("end", 0), ("every_save", 2)])
def test_the_trainers_push_to_hub_uploads_the_retriever_alone(hub, tmp_path, monkeypatch, strategy, while_training):
    """`RevelaTrainer` with `push_to_hub=True` uploads the retriever at `push_to_hub()` (and at each save unless
    `hub_strategy="end"`), at the repository's root: no LM, no trainable-state file, no checkpoint; the repo id
    loads the trained retriever."""
    from revela_hf.retriever import RevelaRetriever
    from revela_hf.trainer import RevelaTrainingArguments
    from revela_hf.training import ModelSpec, train

    lm = tiny_causal_lm(tmp_path / "lm")
    push_folder(lm, BASE_REPO)  # the retriever is a copy of the LM's base model: its adapter names this repo
    repo = "user/revela-run"
    args = RevelaTrainingArguments(output_dir=str(tmp_path / "run"), max_steps=2, save_steps=1, learning_rate=1e-2,
                                   report_to=[], use_cpu=True, disable_tqdm=True, max_length=16, retriever_max_length=16,
                                   push_to_hub=True, hub_model_id=repo, hub_strategy=strategy, base_model=BASE_REPO)
    trainer = train(ModelSpec(lm=str(lm), retriever_lora_r=4, inbatch_layers=[-1]), tiny_groups(tmp_path / "data"), args)
    commits = hub.repos[("models", repo)].commits
    # One upload per save (steps 1 and 2) unless hub_strategy="end", and one by the final save_model() of `train`
    # (its card adds the run's time); pushing the same retriever again commits nothing.
    assert len(commits) == while_training + 1
    trainer.push_to_hub()
    commits = hub.repos[("models", repo)].commits
    assert len(commits) == while_training + 1
    files = set(commits[-1][1])
    assert {"adapter_model.safetensors", "adapter_config.json", "revela_retriever.json", "modules.json", "README.md"} <= files
    assert not files & {"revela_trainable.safetensors", "training_args.bin", "config.json", "model.safetensors", ".revela-complete.json"}
    assert not any("/" in name and not name.startswith("1_Pooling/") for name in files), sorted(files)
    assert json.loads(commits[-1][1]["adapter_config.json"])["base_model_name_or_path"] == BASE_REPO
    assert "base_model: tests/tiny-llama" in commits[-1][1]["README.md"].decode()

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # where no local tests/ folder shadows the base model's repo id
    loaded = RevelaRetriever.from_pretrained(repo)
    expected = trainer.model.retriever.encode_queries(TEXTS, show_progress_bar=False)
    torch.testing.assert_close(loaded.encode_queries(TEXTS, show_progress_bar=False), expected, atol=1e-5, rtol=1e-5)
