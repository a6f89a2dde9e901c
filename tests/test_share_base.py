"""share_base: the retriever is a LoRA adapter on the LM's own weights. Equality with the two-copy
model built from the same weights, save/load round trips, the retriever-only folder, errors."""

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors.torch import load_file
from conftest import TEXTS, TINY, group_inputs, tiny_decoder
from transformers import AutoModel, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from revela_hf import RevelaConfig, RevelaForCausalLM, RevelaRetriever
from revela_hf.training import ModelSpec, build_model

RETRIEVER_LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"], "init_lora_weights": False}
LM_LORA = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "o_proj"], "init_lora_weights": False}
CASES = {
    "frozen_lm_top_block_cut_retriever": {"freeze_lm": True, "inbatch_layers": [-2, -1], "retriever_layers": 2},
    "frozen_lm_all_layers": {"freeze_lm": True},
    "lm_lora": {"lm_lora": LM_LORA},
}


def tiny_lm(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**TINY, tie_word_embeddings=True)).eval()


def two_ways(lm, **kwargs):
    """The two-copy model (its LM frozen with `freeze_lm`) and the shared-base model (whose LM trains through
    `lm_lora` or not at all) built from the same LM weights and adapter weights."""
    freeze_lm = kwargs.pop("freeze_lm", False)
    kwargs = dict(retriever_lora=RETRIEVER_LORA, temperature=0.5, **kwargs)
    copies = RevelaForCausalLM.from_parts(copy.deepcopy(lm), **kwargs).train()
    if freeze_lm:
        copies.lm.requires_grad_(False)
    shared = RevelaForCausalLM.from_parts(lm, share_base=True, **kwargs).train()
    adapters = {n: p for n, p in copies.state_dict().items() if "lora_" in n}
    assert adapters and not shared.load_state_dict(adapters, strict=False).unexpected_keys
    return copies, shared


def retriever_inputs(ids, mask):
    return {"query_input_ids": ids[:, :5], "query_attention_mask": mask[:, :5], "passage_input_ids": ids, "passage_attention_mask": mask}


def loss_and_grads(model, ids, mask, labels):
    out = model(ids, mask, labels=labels, **retriever_inputs(ids, mask))
    out.loss.backward()
    return out.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def n_params(model):
    return sum(p.numel() for p in model.parameters())  # each shared tensor once


@pytest.mark.parametrize("case", sorted(CASES))
def test_shared_base_equals_two_copies(case):
    lm = tiny_lm()
    plain_lm = copy.deepcopy(lm)
    copies, shared = two_ways(lm, **CASES[case])
    assert shared.lm_is_frozen == copies.lm_is_frozen == ("lm_lora" not in CASES[case])
    backbone = shared.retriever.backbone
    assert backbone.embed_tokens.weight is shared.lm.get_input_embeddings().weight
    retriever_base = sum(p.numel() for n, p in copies.retriever.named_parameters() if "lora_" not in n)
    assert n_params(shared) == n_params(copies) - retriever_base
    ids, mask, labels = group_inputs()

    torch.testing.assert_close(shared.retriever(ids, mask), copies.retriever(ids, mask), atol=0, rtol=0)
    lm_logits = shared.lm(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(lm_logits, copies.lm(input_ids=ids, attention_mask=mask).logits, atol=0, rtol=0)
    if "lm_lora" not in CASES[case]:  # the retriever's adapter must not reach the LM
        torch.testing.assert_close(lm_logits, plain_lm(input_ids=ids, attention_mask=mask).logits, atol=0, rtol=0)

    loss_copies, grads_copies = loss_and_grads(copies, ids, mask, labels)
    loss_shared, grads_shared = loss_and_grads(shared, ids, mask, labels)
    torch.testing.assert_close(loss_shared, loss_copies, atol=1e-6, rtol=1e-6)
    assert grads_shared.keys() == grads_copies.keys()
    assert any(n.startswith("retriever.") for n in grads_shared)
    assert all("lora_" in n for n in grads_shared), "the shared base weights stay frozen"
    for name, grad in grads_copies.items():
        assert grad is not None and grad.abs().sum() > 0, name
        torch.testing.assert_close(grads_shared[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_save_load_keeps_one_copy_and_identical_weights(tmp_path):
    model = two_ways(tiny_lm(), inbatch_layers=[-1], retriever_layers=2)[1].eval()
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert not any(k.startswith("retriever.") and "lora_" not in k for k in saved), "the shared weights are saved once"

    loaded = RevelaForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.share_base and loaded.retriever.backbone.config.num_hidden_layers == 2
    assert loaded.retriever.backbone.layers[1].mlp.up_proj.weight is loaded.lm.model.layers[1].mlp.up_proj.weight
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, reloaded[name]), name
    ids, mask, labels = group_inputs()
    a, b = model(ids, mask, labels=labels, **retriever_inputs(ids, mask)), loaded(ids, mask, labels=labels, **retriever_inputs(ids, mask))
    torch.testing.assert_close(b.loss, a.loss, atol=0, rtol=0)
    torch.testing.assert_close(b.inbatch_weights, a.inbatch_weights, atol=0, rtol=0)


def embed(model, tokenizer, prefix):
    """EOS-pooled, normalised embeddings of TEXTS as the model card tells transformers/peft users to compute them."""
    rows = []
    for text in TEXTS:
        batch = tokenizer([prefix + text], return_tensors="pt")
        with torch.no_grad():
            rows.append(F.normalize(model(**batch).last_hidden_state[0, -1], dim=-1))
    return torch.stack(rows)


@pytest.mark.parametrize("cut", [False, True], ids=["full_depth", "cut_checkpoint"])
def test_retriever_folder_holds_only_the_adapter_and_loads_everywhere(tmp_path, cut):
    """The retriever-only folder of a shared-base model: the adapter and settings, loadable by RevelaRetriever,
    AutoModel (base + adapter) and PeftModel, with the embeddings of the trained retriever. With a cut
    checkpoint as retriever, the adapter names that checkpoint as its base model."""
    folder = tiny_decoder(tmp_path / "base")
    lm = LlamaForCausalLM.from_pretrained(folder)  # base weights from the folder, a fresh head
    retriever = None
    if cut:
        AutoModel.from_pretrained(folder, num_hidden_layers=1).save_pretrained(tmp_path / "cut")
        AutoTokenizer.from_pretrained(folder).save_pretrained(tmp_path / "cut")
        retriever = AutoModel.from_pretrained(tmp_path / "cut")
    torch.manual_seed(0)
    model = RevelaForCausalLM.from_parts(lm, retriever, retriever_lora=RETRIEVER_LORA, share_base=True, pooling="eos",
                                         query_prefix="q: ", passage_prefix="p: ",
                                         retriever_tokenizer=AutoTokenizer.from_pretrained(folder))
    assert model.retriever.backbone.layers[0].self_attn.k_proj.weight is lm.model.layers[0].self_attn.k_proj.weight
    model.retriever.save_pretrained(tmp_path / "retriever")

    adapter = load_file(tmp_path / "retriever" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k for k in adapter)
    assert not (tmp_path / "retriever" / "model.safetensors").exists()
    base_folder = tmp_path / "cut" if cut else folder
    expected = model.retriever.encode_queries(TEXTS, show_progress_bar=False)
    loaded = RevelaRetriever.from_pretrained(str(tmp_path / "retriever"))
    torch.testing.assert_close(loaded.encode_queries(TEXTS, show_progress_bar=False), expected, atol=1e-5, rtol=0)
    tokenizer = loaded.tokenizer  # appends EOS itself
    for backbone in (AutoModel.from_pretrained(tmp_path / "retriever"),
                     PeftModel.from_pretrained(AutoModel.from_pretrained(base_folder), tmp_path / "retriever")):
        torch.testing.assert_close(embed(backbone.eval(), tokenizer, "q: "), expected, atol=1e-5, rtol=0)


def test_errors_are_named():
    lm_config = LlamaConfig(**TINY).to_dict()
    with pytest.raises(ValueError, match="set retriever_lora"):
        RevelaConfig(lm_config=lm_config, share_base=True)
    lm = tiny_lm()
    kwargs = {"retriever_lora": RETRIEVER_LORA, "share_base": True}
    with pytest.raises(ValueError, match="is not the LM base model's"):
        RevelaForCausalLM.from_parts(lm, tiny_lm(seed=1), **kwargs)
    with pytest.raises(ValueError, match=r"retriever_layers must be in 1\.\.3"):
        RevelaForCausalLM.from_parts(lm, retriever_layers=4, **kwargs)
    with pytest.raises(ValueError, match="load a given retriever with num_hidden_layers"):
        RevelaForCausalLM.from_parts(lm, copy.deepcopy(lm), retriever_layers=2, **kwargs)


def test_model_spec_builds_a_shared_base(tmp_path):
    folder = tiny_decoder(tmp_path / "base")
    model, _ = build_model(ModelSpec(lm=str(folder), share_base=True, retriever_layers=1, retriever_lora_r=2,
                                          inbatch_layers=[-1]))
    backbone = model.retriever.backbone
    assert model.config.share_base and backbone.config.num_hidden_layers == 1 and len(backbone.layers) == 1
    assert backbone.layers[0].mlp.gate_proj.weight is model.lm.model.layers[0].mlp.gate_proj.weight
    assert backbone.config.name_or_path == str(folder)  # the base model the saved adapter names
