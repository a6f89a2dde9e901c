"""What this machine holds, found without importing or downloading anything: installed package folders,
this interpreter's library roots and revela-hf's cache folder; and the progress line of slow local steps (`assets`, `humaneval`, `benchmark_sets`)."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
import sysconfig


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """`cache_dir`, else `$REVELA_HF_CACHE`, else `~/.cache/revela_hf`."""
    root = cache_dir or os.environ.get("REVELA_HF_CACHE") or pathlib.Path.home() / ".cache" / "revela_hf"
    return pathlib.Path(root).expanduser()


def log(message: str) -> None:
    """Progress line on stderr for slow steps."""
    print(f"[revela-hf] {message}", file=sys.stderr, flush=True)


def package_dir(module: str, package: str, install: str | None = None) -> pathlib.Path:
    """Folder of an installed package, found without importing it; a missing one names `install` (default: pip install `package`)."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ModuleNotFoundError(f"{package} (module {module}) is not installed; install it with: {install or f'pip install {package}'}")
    if not spec.submodule_search_locations:
        raise RuntimeError(f"{module} is not a package folder ({spec.origin})")
    return pathlib.Path(spec.submodule_search_locations[0])


def python_roots() -> tuple[pathlib.Path, list[pathlib.Path]]:
    """This interpreter's standard library folder and its installed-package folders (site-packages)."""
    paths = sysconfig.get_paths()
    return pathlib.Path(paths["stdlib"]), sorted({pathlib.Path(paths["purelib"]), pathlib.Path(paths["platlib"])})
