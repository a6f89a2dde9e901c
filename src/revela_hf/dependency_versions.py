"""Supported versions of the stack, read from this package's own metadata (setup.cfg is the one source).

`check_versions()` runs before every `revela` command and on first use of the model API, so an
unsupported transformers/peft pair fails in a second with one message, not after minutes of work.
`import_optional()` imports an optional integration or names the extra that installs it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
from types import ModuleType

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

DISTRIBUTION = "revela-hf"
SKIP_ENV = "REVELA_HF_SKIP_VERSION_CHECK"
LOCK_FILE = "constraints.txt"


class DependencyVersionError(ImportError):
    """An installed package is outside the range revela-hf supports (or missing)."""


def required_by(distribution: str, extras: tuple[str, ...] = ()) -> list[Requirement]:
    """The requirements the installed `distribution` lists for its core and for `extras`, those whose
    markers hold in this environment; empty when it is not installed."""
    try:
        lines = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    requirements = [Requirement(line) for line in lines]
    return [r for r in requirements if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in (*extras, ""))]


def supported_requirements(extras: tuple[str, ...] = ()) -> dict[str, Requirement]:
    """{distribution name: requirement} of the core dependencies and of `extras`, from the installed
    metadata; empty when revela-hf runs from a source tree that was never installed."""
    # the `test` extra names our own extras: not a dependency
    return {_normalise(r.name): r for r in required_by(DISTRIBUTION, extras) if _normalise(r.name) != DISTRIBUTION}


def version_problems(extras: tuple[str, ...] = (), installed: dict[str, str | None] | None = None) -> list[str]:
    """One line per required package that is missing or outside its range. `installed` maps names to
    versions (None = not installed) in place of what this environment holds (for tests)."""
    problems = []
    for name, req in supported_requirements(extras).items():
        version = installed.get(name) if installed is not None else installed_version(name)
        wanted = f"{req.name}{req.specifier}"
        if version is None:
            problems.append(f"{req.name} is not installed (revela-hf needs {wanted})")
            continue
        try:
            ok = req.specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(f"{req.name} {version} is installed; revela-hf supports {wanted}")
    return problems


def check_versions(extras: tuple[str, ...] = ()) -> None:
    """Raise one DependencyVersionError naming every unsupported package and the command that fixes it."""
    if os.environ.get(SKIP_ENV) == "1":
        return
    _check_cached(tuple(sorted(extras)))


@functools.cache
def _check_cached(extras: tuple[str, ...]) -> None:
    problems = version_problems(extras)
    if not problems:
        return
    wanted = " ".join(f'"{req.name}{req.specifier}"' for req in supported_requirements(extras).values())
    raise DependencyVersionError(
        "unsupported package versions:\n  - " + "\n  - ".join(problems)
        + f"\nFix: pip install {wanted}\n(in a clone of revela-hf: pip install -c {LOCK_FILE} -e .; "
        f"set {SKIP_ENV}=1 to run anyway)"
    )


def import_optional(module: str, extra: str, feature: str) -> ModuleType:
    """`importlib.import_module(module)`, or an ImportError saying which extra brings it for `feature`."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{feature} needs the optional package {module!r}: pip install 'revela-hf[{extra}]'") from err


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
