"""`prepare` never destroys what is not its own: refusals, the output lock, skip reasons in errors."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import datasets
import pytest

from revela_hf.cli import main
from revela_hf.data import prepare
from revela_hf.io import MARKER, OutputBusyError, OutputExistsError, is_ours, output_lock

CORPUS = Path(inspect.getfile(json)).parent  # the json package: enough text for a few groups of 4
OPTIONS = {"group_size": 4, "max_words": 50, "strategy": "interleave", "show_progress": False}


def _copy_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for source in CORPUS.glob("*.py"):
        (folder / source.name).write_bytes(source.read_bytes())
    return folder


def test_overwrite_refuses_a_folder_revela_did_not_write(tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\documentclass{article}")
    with pytest.raises(OutputExistsError, match=f"refusing to replace .*thesis: it has no {MARKER}"):
        prepare([CORPUS], thesis, overwrite=True, **OPTIONS)
    assert (thesis / "thesis.tex").read_text() == "\\documentclass{article}"


def test_overwrite_refuses_the_input_and_its_parent(tmp_path):
    corpus = _copy_corpus(tmp_path / "corpus" / "json")
    before = sorted(p.name for p in corpus.iterdir())
    for output in (corpus, corpus.parent, corpus / ".." / "json"):
        with pytest.raises(OutputExistsError, match="refusing to write .*: the input"):
            prepare([corpus], output, overwrite=True, **OPTIONS)
    assert sorted(p.name for p in corpus.iterdir()) == before


def test_overwrite_replaces_an_earlier_dataset_and_nothing_else(tmp_path):
    out = tmp_path / "groups"
    first = prepare([CORPUS], out, seed=0, **OPTIONS)
    assert is_ours(out) and json.loads((out / MARKER).read_text())["kind"] == "dataset"
    second = prepare([CORPUS], out, seed=1, overwrite=True, **OPTIONS)
    assert first.groups == second.groups
    rows = datasets.load_from_disk(str(out))
    assert len(rows) == second.groups and is_ours(out)
    assert [p.name for p in tmp_path.iterdir()] == ["groups"]  # no temporary folder or lock file left


def test_a_second_writer_fails_at_once_and_the_first_is_intact(tmp_path):
    out = tmp_path / "groups"
    prepare([CORPUS], out, **OPTIONS)
    rows = datasets.load_from_disk(str(out)).to_list()
    with output_lock(out):  # another writer holds the output
        with pytest.raises(OutputBusyError, match=rf"being written by process {os.getpid()}"):
            prepare([CORPUS], out, overwrite=True, seed=5, **OPTIONS)
    assert datasets.load_from_disk(str(out)).to_list() == rows


def test_output_dot_is_refused_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["prepare", str(CORPUS), "--output", ".", "--overwrite", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("revela prepare: error: refusing to replace") and err.count("\n") == 1
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_no_usable_chunk_names_the_reasons(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_bytes(b"\x00\x01binary")
    (tmp_path / "in" / "b.txt").write_bytes("caf\xe9 latin-1".encode("latin-1"))
    (tmp_path / "in" / "c.txt").write_text("   \n")
    with pytest.raises(ValueError, match="0 usable chunks.*skipped: 1 binary file, 1 empty file, 1 file not valid UTF-8"):
        prepare([tmp_path / "in"], tmp_path / "out", **OPTIONS)
    assert os.listdir(tmp_path) == ["in"]  # no output, no temporary folder, no lock file
