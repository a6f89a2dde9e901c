"""Publishing outputs so that nothing is lost: build aside, mark complete, switch atomically, under a lock.

Every folder revela writes (a prepared dataset, a retriever, a model cache entry) is built in a
temporary sibling, fsynced, given a completion marker (`.revela-complete.json`, written last) and
renamed into place; an existing folder is exchanged with the new one in one atomic step where the
OS allows it. Only a folder that carries the marker may be replaced, and never an input or a
folder holding an input. A lock file next to each output (removed when done) makes a second writer fail at once.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

MARKER = ".revela-complete.json"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_FAULT_HITS: Counter[str] = Counter()
_MKDTEMP_SUFFIX = re.compile(r"[a-z0-9_]{8}")  # what tempfile appends to a prefix


class OutputExistsError(ValueError):
    """The output exists and may not be replaced as asked."""


class OutputBusyError(OSError):
    """Another process is writing the same output."""


class IncompleteOutputError(ValueError):
    """A folder is not a complete output of the kind expected (e.g. an adapter without its settings)."""


def fault_point(name: str) -> None:
    """Fault-injection hook for tests: with `REVELA_FAULT_AT=name` (or `name#n`, the n-th time here) the
    process sends itself `REVELA_FAULT_SIGNAL` (KILL by default, or e.g. STOP) at this point."""
    wanted = os.environ.get("REVELA_FAULT_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition("#")
    if point == name:
        _FAULT_HITS[name] += 1
        if _FAULT_HITS[name] == int(nth or 1):
            os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("REVELA_FAULT_SIGNAL", "KILL")))


def absolute(path: str | os.PathLike[str]) -> Path:
    """`path` made absolute and normalised ("." and ".." resolved) without following symbolic links."""
    return Path(os.path.abspath(os.path.expanduser(path)))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under `root` (and `root` itself) to disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


def write_file_atomically(path: str | os.PathLike[str], write: Callable[[IO], Any], mode: str = "w") -> Path:
    """Call `write(handle)` on a temporary sibling of `path` opened with `mode`, then replace `path` with it:
    readers see the old file or the whole new one, and a failed write leaves no temporary file. The file
    gets the permissions of any new file (tempfile makes it private)."""
    target = absolute(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    encoding = None if "b" in mode else "utf-8"
    with tempfile.NamedTemporaryFile(mode, encoding=encoding, dir=target.parent, prefix=f".{target.name}.tmp-", delete=False) as handle:
        try:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            os.unlink(handle.name)
            raise
    os.replace(handle.name, target)
    _fsync(target.parent)
    return target


def write_json_atomically(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write `payload` as indented JSON to `path` (see `write_file_atomically`)."""
    return write_file_atomically(path, lambda handle: handle.write(json.dumps(payload, indent=2) + "\n"))


def _version() -> str:
    try:
        return importlib.metadata.version("revela-hf")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def marker_kind(path: str | os.PathLike[str]) -> str | None:
    """The kind recorded in the completion marker of folder `path`, or None without a readable marker."""
    try:
        marker = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker.get("kind") if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def is_ours(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a folder revela finished writing (it carries the completion marker)."""
    return marker_kind(path) is not None


def lock_path(target: Path) -> Path:
    """The lock file guarding output `target`: a hidden sibling."""
    return target.parent / f".{target.name}.lock"


def _lock_file(path: Path, wait: bool) -> int:
    """An open descriptor of lock file `path`, locked, and the file at `path` the one locked; BlockingIOError
    (naming the holder) when another process holds it and `wait` is False. POSIX only (flock)."""
    import fcntl  # here, not at the top: the package still imports where there is no fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            raise BlockingIOError(holder or "another process") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the previous holder removed the file while this process waited: lock the new one


@contextmanager
def output_lock(target: str | os.PathLike[str], wait: bool = False) -> Iterator[None]:
    """Hold the lock of output `target`; with `wait=False` a second holder fails at once with OutputBusyError.

    The lock file (a hidden sibling naming the holder's pid) is removed on release, while still locked.
    """
    path = lock_path(absolute(target))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = _lock_file(path, wait)
    except BlockingIOError as busy:
        raise OutputBusyError(f"{absolute(target)} is being written by {busy} (it holds {path}); wait for it to "
                              "finish, or choose another output") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()}\n".encode())
        yield
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def check_replaceable(target: Path, kind: str, overwrite: bool, inputs: Iterable[str | os.PathLike[str]] = ()) -> None:
    """Refuse to write `target` if that would destroy an input, a foreign folder, or (without `overwrite`) anything.

    Replaceable: nothing, an empty folder, or (with `overwrite`) a folder whose marker says `kind`."""
    resolved = target.resolve()
    for item in inputs:
        source = Path(item).resolve()
        if source == resolved or resolved in source.parents:
            raise OutputExistsError(f"refusing to write {target}: the input {item} is {'it' if source == resolved else 'inside it'}; "
                                    "choose another output")
    if not target.exists() and not target.is_symlink():
        return
    if target.is_dir() and not target.is_symlink() and not any(target.iterdir()):
        return  # an empty folder: nothing to lose
    if not overwrite:
        raise OutputExistsError(f"output {target} already exists (pass overwrite=True / --overwrite to replace it)")
    if target.is_symlink() or not target.is_dir():
        raise OutputExistsError(f"refusing to replace {target}: it is not a folder revela wrote; remove it yourself "
                                "or choose another output")
    found = marker_kind(target)
    if found is None:
        raise OutputExistsError(f"refusing to replace {target}: it has no {MARKER}, so it is not a folder revela wrote; "
                                "remove or move it yourself, or choose another output")
    if found != kind:
        raise OutputExistsError(f"refusing to replace {target}: it holds a {found}, not a {kind}; choose another output")


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where the OS or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    return renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0


def _switch(built: Path, target: Path) -> None:
    """Put folder `built` at `target`; an old `target` is exchanged into `built` (deleted by the caller) or removed."""
    if not target.exists():
        os.rename(built, target)
    elif not _exchange(built, target):
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.rename(target, old / target.name)  # a crash here leaves the old folder in `old`, not lost
        os.rename(built, target)
        shutil.rmtree(old)
    _fsync(target.parent)


def _private_dir_to_umask(folder: Path) -> None:
    folder.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the finished folder should not be


def write_marker(folder: Path, kind: str) -> None:
    """Mark `folder` as a complete revela output of `kind` (the last file written into it)."""
    write_json_atomically(folder / MARKER, {"kind": kind, "version": _version(),
                                            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def _temporary_prefix(target: Path) -> str:
    return f".{target.name}.tmp-"


def temporary_sibling(target: str | os.PathLike[str]) -> tempfile.TemporaryDirectory:
    """A scratch folder next to `target`, removed on exit (or, after a crash, by the next `publishing`)."""
    path = absolute(target)
    return tempfile.TemporaryDirectory(prefix=_temporary_prefix(path), dir=path.parent)


def _remove_leftovers(target: Path) -> None:
    """Delete temporary siblings of `target` that a killed writer left (the caller holds the lock)."""
    prefix = _temporary_prefix(target)
    for entry in target.parent.iterdir():
        if entry.name.startswith(prefix) and _MKDTEMP_SUFFIX.fullmatch(entry.name[len(prefix):]) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def publishing(target: str | os.PathLike[str], kind: str, *, overwrite: bool = False,
               inputs: Iterable[str | os.PathLike[str]] = (), wait: bool = False) -> Iterator[Path]:
    """Lock `target`, yield an empty temporary sibling to build in, then publish it as `target`.

    On normal exit the marker is written, everything is fsynced and the folder switched into
    place; on an exception nothing changes at `target`. See `check_replaceable` for refusals.
    """
    path = absolute(target)
    inputs = list(inputs)
    with output_lock(path, wait=wait):
        check_replaceable(path, kind, overwrite, inputs)
        _remove_leftovers(path)
        built = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), dir=path.parent))
        try:
            _private_dir_to_umask(built)
            yield built
            fault_point("publish:built")
            write_marker(built, kind)
            fsync_tree(built)
            fault_point("publish:marked")
            check_replaceable(path, kind, overwrite, inputs)
            _switch(built, path)
        finally:
            shutil.rmtree(built, ignore_errors=True)


def publish_dir(target: str | os.PathLike[str], build: Callable[[Path], None], kind: str, **options: Any) -> Path:
    """Run `build(folder)` on a temporary sibling of `target` and publish it there (see `publishing`)."""
    with publishing(target, kind, **options) as folder:
        build(folder)
    return absolute(target)


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Run `build(folder)` and publish the result as `target`, waiting for another writer's lock; a finished `target`
    is reused as is (model caches, evaluation sets)."""
    if target.is_dir():
        return target
    try:
        return publish_dir(target, build, "model", wait=True)
    except OutputExistsError:  # another process finished it while this one waited for the lock
        return target
