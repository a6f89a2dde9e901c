"""`prepare` from `datasets` objects and `load_dataset`: a folder saved with `save_to_disk`, an in-memory
`Dataset`, a streamed `IterableDataset` and `load_dataset` of local data files give the same groups."""

import ast
import inspect
import json
from pathlib import Path

import datasets
import pytest

from revela_hf.cli import main
from revela_hf.data import DatasetInput, DocumentReader, load_dataset_input, prepare

STDLIB = Path(inspect.getfile(json)).parent.parent
B = 4


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory, monkeypatch):
    """`load_dataset` caches into a temporary folder, not the user's."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_datasets_cache"))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Docstrings of three standard-library modules: real prose, enough for a few dozen groups."""
    found = []
    for module in ("argparse.py", "textwrap.py", "json/decoder.py"):
        tree = ast.parse((STDLIB / module).read_text())
        found += [ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and ast.get_docstring(n)]
    return [t for t in found if len(t.split()) >= 8]


@pytest.fixture(scope="module")
def corpus(texts, tmp_path_factory) -> dict[str, Path]:
    """The same rows as a `save_to_disk` folder, a JSONL file and a folder of a JSONL file for `load_dataset`."""
    root = tmp_path_factory.mktemp("inputs")
    rows = {"text": texts, "id": [f"doc{i}" for i in range(len(texts))], "extra": list(range(len(texts)))}
    datasets.Dataset.from_dict(rows).save_to_disk(str(root / "corpus"))
    (root / "files" / "corpus").mkdir(parents=True)
    jsonl = root / "files" / "corpus" / "data.jsonl"
    jsonl.write_text("".join(json.dumps(dict(zip(rows, values))) + "\n" for values in zip(*rows.values())))
    return {"saved": root / "corpus", "jsonl": jsonl, "folder": root / "files" / "corpus"}


def run(tmp_path, name, inputs, **options):
    options = {"group_size": B, "max_words": 60, "strategy": "bm25", "seed": 1, "show_progress": False, **options}
    summary = prepare(inputs, tmp_path / name, **options)
    return summary, datasets.load_from_disk(str(tmp_path / name)).to_list()


def test_saved_folder_dataset_stream_and_load_dataset_give_the_same_groups(tmp_path, texts, corpus):
    summary, reference = run(tmp_path, "saved", [corpus["saved"]])
    assert summary.documents == len(texts) and len(reference) == summary.groups > 10
    assert {d.split("#")[0] for row in reference for d in row["doc_ids"]} == {"corpus"}
    in_memory = datasets.load_from_disk(str(corpus["saved"]))
    variants = {
        "in_memory": DatasetInput(in_memory, "corpus"),  # one input, not in a list
        "from_dict": [DatasetInput(datasets.Dataset.from_dict({"text": texts}), "corpus")],
        "iterable": [DatasetInput(in_memory.to_iterable_dataset(), "corpus")],
        "json_stream": [load_dataset_input("json", data_files=str(corpus["jsonl"]), split="train", streaming=True, source="corpus")],
        "local_folder": [load_dataset_input(str(corpus["folder"]), split="train")],  # source: the folder's name
    }
    for name, inputs in variants.items():
        assert run(tmp_path, name, inputs)[1] == reference, name
    _, by_id = run(tmp_path, "saved_ids", [corpus["saved"]], id_column="id")
    _, stream_by_id = run(tmp_path, "stream_ids", [load_dataset_input(str(corpus["folder"]), split="train", streaming=True)],
                          id_column="id")
    assert stream_by_id == by_id and {d for row in by_id for d in row["doc_ids"]} <= {f"corpus:doc{i}" for i in range(len(texts))}


def test_cli_prepare_dataset_streams_local_files_to_the_same_groups(tmp_path, corpus, capsys):
    _, reference = run(tmp_path, "saved", [corpus["saved"]], strategy="interleave")
    argv = ["prepare", "--dataset", "corpus=json", "--data-files", str(corpus["jsonl"]), "--split", "train", "--streaming",
            "--output", str(tmp_path / "cli"), "--group-size", str(B), "--max-words", "60", "--strategy", "interleave",
            "--seed", "1", "--no-progress"]
    assert main(argv) == 0
    assert f"groups of {B} (interleave)" in capsys.readouterr().out
    assert datasets.load_from_disk(str(tmp_path / "cli")).to_list() == reference
    # every split of a local folder when --split is not given: doc ids name the split
    assert main(["prepare", "--dataset", str(corpus["folder"]), "--output", str(tmp_path / "all"), "--group-size", str(B),
                 "--no-progress"]) == 0
    assert {d.split("#")[0] for row in datasets.load_from_disk(str(tmp_path / "all")) for d in row["doc_ids"]} == {"corpus/train"}


def test_a_stream_is_read_lazily(texts):
    pulled = []

    def rows():
        for text in texts:
            pulled.append(text)
            yield {"text": text}

    documents = iter(DocumentReader(datasets.IterableDataset.from_generator(rows)))
    first = next(documents)
    assert first.text == texts[0] and first.doc_id == "dataset#0"
    assert len(pulled) < len(texts)  # the rest of the stream is not read yet
    assert [d.text for d in documents] == texts[1:] and pulled == texts


def test_missing_column_or_empty_dataset_is_a_clear_error_and_writes_nothing(tmp_path, texts, corpus, capsys):
    body = datasets.Dataset.from_dict({"body": texts})
    cases = [
        (body, r"dataset: no text column 'text'; columns are \['body'\]"),
        (body.to_iterable_dataset(), r"dataset: no text column 'text'; columns are \['body'\]"),
        (datasets.IterableDataset.from_generator(lambda: iter([{"body": t} for t in texts])), r"dataset#0: no text column 'text'"),
        (DatasetInput(datasets.Dataset.from_dict({"text": []}), "empty"), r"empty: the dataset is empty \(no rows\)"),
        (datasets.IterableDataset.from_generator(lambda: iter([])), r"dataset: the dataset is empty \(no rows\)"),
        (datasets.DatasetDict({"train": body}), r"dataset/train: no text column 'text'"),
    ]
    for inputs, message in cases:
        with pytest.raises(ValueError, match=message):
            prepare(inputs, tmp_path / "out", group_size=B, show_progress=False)
    with pytest.raises(ValueError, match=r"corpus: no id column 'doc'; columns are \['extra', 'id', 'text'\]"):
        prepare([corpus["saved"]], tmp_path / "out", group_size=B, id_column="doc", show_progress=False)
    with pytest.raises(ValueError, match="no text column 'body'"):
        prepare(load_dataset_input("json", data_files=str(corpus["jsonl"]), streaming=True), tmp_path / "out",
                group_size=B, text_column="body", show_progress=False)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder left behind

    base = ["prepare", "--output", str(tmp_path / "out"), "--no-progress"]
    assert main([*base, "--dataset", "json", "--data-files", str(corpus["jsonl"]), "--text-column", "body"]) == 2
    assert "json/train: no text column 'body'; columns are ['extra', 'id', 'text']" in capsys.readouterr().err
    assert main([*base, "--dataset", str(tmp_path / "missing")]) == 2
    assert f"no dataset at {tmp_path / 'missing'} (a path, not a Hub repo id)" in capsys.readouterr().err
    assert main([*base, str(corpus["saved"]), "--split", "train"]) == 2
    assert "--split need --dataset" in capsys.readouterr().err
    assert main(base) == 2
    assert "give at least one INPUT path or --dataset" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_output_never_replaces_the_dataset_it_reads(tmp_path, corpus):
    run(tmp_path, "groups", [corpus["saved"]])
    groups = datasets.load_from_disk(str(tmp_path / "groups"))
    with pytest.raises(ValueError, match="refusing to write .*groups: the input .*groups is it"):
        prepare(DatasetInput(groups, "groups"), tmp_path / "groups", group_size=B, text_column="chunks", overwrite=True,
                show_progress=False)
    assert datasets.load_from_disk(str(tmp_path / "groups")).to_list() == groups.to_list()
