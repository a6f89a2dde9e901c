"""`revela_hf.io`: publishing folders atomically, the completion marker, the output lock, atomic JSON."""

from __future__ import annotations

import json
import os

import pytest

from revela_hf import io
from revela_hf.io import (MARKER, OutputBusyError, OutputExistsError, is_ours, output_lock, publish_dir, publishing,
                          write_file_atomically, write_json_atomically)


def _write(text: str):
    return lambda folder: (folder / "data.txt").write_text(text)


def test_publish_replaces_its_own_folder_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "out"
    publish_dir(target, _write("one"), "thing")
    publish_dir(target, _write("two"), "thing", overwrite=True)
    assert (target / "data.txt").read_text() == "two" and sorted(os.listdir(target)) == [MARKER, "data.txt"]
    assert json.loads((target / MARKER).read_text())["kind"] == "thing"
    assert os.listdir(tmp_path) == ["out"]


def test_without_an_atomic_exchange_the_two_renames_still_replace_it(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_exchange", lambda first, second: False)  # e.g. a file system without renameat2
    target = tmp_path / "out"
    publish_dir(target, _write("one"), "thing")
    publish_dir(target, _write("two"), "thing", overwrite=True)
    assert (target / "data.txt").read_text() == "two" and os.listdir(tmp_path) == ["out"]


def test_a_failed_build_changes_nothing_and_a_killed_ones_leftovers_go(tmp_path):
    target = tmp_path / "out"
    publish_dir(target, _write("one"), "thing")
    with pytest.raises(RuntimeError, match="build failed"):
        with publishing(target, "thing", overwrite=True) as folder:
            (folder / "data.txt").write_text("half")
            raise RuntimeError("build failed")
    assert (target / "data.txt").read_text() == "one" and os.listdir(tmp_path) == ["out"]
    (tmp_path / ".out.tmp-k1lled_8").mkdir()  # what a writer killed with -9 leaves
    (tmp_path / ".out.tmp-x.tmp-abcdefgh").mkdir()  # the build folder of another output, "out.tmp-x": kept
    publish_dir(target, _write("two"), "thing", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == [".out.tmp-x.tmp-abcdefgh", "out"]


def test_refusals(tmp_path):
    publish_dir(tmp_path / "dataset", _write("x"), "dataset")
    with pytest.raises(OutputExistsError, match="already exists"):
        publish_dir(tmp_path / "dataset", _write("y"), "dataset")
    with pytest.raises(OutputExistsError, match="holds a dataset, not a retriever"):
        publish_dir(tmp_path / "dataset", _write("y"), "retriever", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not a folder revela wrote"):
        publish_dir(tmp_path / "file", _write("y"), "dataset", overwrite=True)
    (tmp_path / "link").symlink_to(tmp_path / "dataset")
    with pytest.raises(OutputExistsError, match="not a folder revela wrote"):
        publish_dir(tmp_path / "link", _write("y"), "dataset", overwrite=True)
    (tmp_path / "empty").mkdir()
    publish_dir(tmp_path / "empty", _write("y"), "dataset")  # nothing to lose
    assert is_ours(tmp_path / "empty") and (tmp_path / "dataset" / "data.txt").read_text() == "x"


def test_the_lock_is_exclusive_and_its_file_goes_with_it(tmp_path):
    target = tmp_path / "out"
    with output_lock(target):
        assert (tmp_path / ".out.lock").read_text() == f"process {os.getpid()}\n"
        with pytest.raises(OutputBusyError, match=f"{target} is being written by process {os.getpid()}"):
            with output_lock(target):
                pass
    assert os.listdir(tmp_path) == []
    with output_lock(target):  # free again
        pass


def test_write_json_atomically_replaces_the_whole_file(tmp_path):
    path = write_json_atomically(tmp_path / "sub" / "results.json", {"a": 1})
    write_json_atomically(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]} and os.listdir(path.parent) == ["results.json"]
    umask = os.umask(0o022)
    try:
        assert write_json_atomically(path, {}).stat().st_mode & 0o777 == 0o644  # not tempfile's private 0o600
    finally:
        os.umask(umask)


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary_one(tmp_path):
    path = write_json_atomically(tmp_path / "results.json", {"a": 1})

    def fail(handle):
        handle.write("{half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_file_atomically(path, fail)
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["results.json"]
