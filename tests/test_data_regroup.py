"""Re-grouping mid-training with a real transformers Trainer and a tiny trainable retriever."""

import inspect
import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Trainer, TrainingArguments

from revela_hf.data import prepare
from revela_hf.data.regroup import GroupDataset, RegroupCallback

STDLIB = Path(inspect.getfile(json)).parent.parent
_WORD = re.compile(r"\w\w+")


class BagRetriever(torch.nn.Module):
    """A small bag-of-hashed-words retriever with the library's encode_corpus interface."""

    def __init__(self, buckets: int = 4096, dim: int = 32):
        super().__init__()
        torch.manual_seed(0)
        self.buckets = buckets
        self.embed = torch.nn.EmbeddingBag(buckets, dim, mode="mean")

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = [[zlib.crc32(w.encode()) % self.buckets for w in _WORD.findall(t.lower())] or [0] for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return torch.nn.functional.normalize(self.embed(torch.tensor(sum(ids, [])), offsets), dim=-1)

    def encode_corpus(self, texts, batch_size=32, show_progress_bar=False):
        return torch.cat([self(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)])


class GroupModel(torch.nn.Module):
    """Trains the retriever to make chunks of a group similar; records the groups it sees."""

    def __init__(self):
        super().__init__()
        self.retriever = BagRetriever()
        self.seen: list[list[str]] = []

    def forward(self, chunks):
        self.seen.extend(chunks)
        vectors = torch.stack([self.retriever(group) for group in chunks])
        return {"loss": -(vectors @ vectors.transpose(1, 2)).mean()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("regroup") / "groups"
    prepare([STDLIB / "json"], out, group_size=4, strategy="random", max_words=50, show_progress=False)
    return str(out)


def test_group_dataset_round_trips_prepared_rows(prepared):
    import datasets

    rows = datasets.load_from_disk(prepared)
    dataset = GroupDataset.from_prepared(prepared)
    assert len(dataset) == len(rows) and dataset.group_size == 4
    assert [dataset[i] for i in range(len(dataset))] == rows.to_list()
    with pytest.raises(ValueError, match="shape"):
        dataset.set_groups(dataset.groups[:-1])


def test_callback_swaps_groups_for_the_rest_of_training(prepared, tmp_path):
    dataset = GroupDataset.from_prepared(prepared)
    before = dataset.groups.copy()
    model = GroupModel()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=2, learning_rate=0.1,
                             report_to=[], save_strategy="no", logging_strategy="no", remove_unused_columns=False,
                             dataloader_num_workers=0, use_cpu=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=dataset,
                      data_collator=lambda rows: {"chunks": [r["chunks"] for r in rows]},
                      callbacks=[RegroupCallback(dataset, every_n_steps=3)])
    trainer.train()
    assert dataset.generation == 1  # regrouped at step 3, not at the last step
    assert sorted(dataset.groups.ravel()) == sorted(before.ravel())  # same chunks, each once
    assert not np.array_equal(np.sort(dataset.groups, axis=1), np.sort(before, axis=1))
    new_groups = {tuple(sorted(dataset[i]["chunks"])) for i in range(len(dataset))}
    old_groups = {tuple(sorted(GroupDataset.from_prepared(prepared)[i]["chunks"])) for i in range(len(dataset))}
    # accelerate's loader fetches one batch ahead: step 4 was loaded before the swap, steps 5-6 after
    late = [tuple(sorted(g)) for g in model.seen[8:]]
    assert len(late) == 4 and all(g in new_groups for g in late) and not all(g in old_groups for g in late)
