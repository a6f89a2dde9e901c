"""The install story: the lock agrees with setup.cfg, bad versions fail fast and clearly, imports are light."""

from __future__ import annotations

import configparser
import os
import pathlib
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.version import Version

from revela_hf.dependency_versions import supported_requirements, version_problems

ROOT = pathlib.Path(__file__).resolve().parents[1]
HEAVY_OPTIONAL = ("matplotlib", "faiss", "mteb", "deepspeed", "sentence_transformers")


def _setup_cfg_requirements() -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    for extra in cfg["options.extras_require"].values():
        lines += extra.splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.startswith("revela-hf")]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_every_locked_version_is_in_its_setup_cfg_range() -> None:
    lock = _lock()
    for req in _setup_cfg_requirements():
        name = req.name.lower().replace("_", "-")
        assert name in lock, f"{req.name} is required but not in constraints.txt"
        assert req.specifier.contains(Version(lock[name]), prereleases=True), f"lock {name}=={lock[name]} not in {req}"
    assert lock["torch"] == "2.13.0"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash\n")[1:3]]
    assert blocks[1].endswith("-m pytest -q") and "-c constraints.txt" in blocks[1]
    assert blocks[1] in (ROOT / ".ci" / "run").read_text()
    assert "-c constraints.txt" in blocks[0] and blocks[0].endswith("revela demo")


def test_version_problems_name_the_package_and_both_versions() -> None:
    ranges = supported_requirements()
    assert {"torch", "transformers", "peft", "accelerate"} <= set(ranges)
    installed = {name: _lock()[name] for name in ranges}
    assert version_problems(installed=installed) == []
    problems = version_problems(installed={**installed, "transformers": "5.24.0", "peft": None})
    assert len(problems) == 2
    assert any("transformers 5.24.0" in p and str(ranges["transformers"].specifier) in p for p in problems)
    assert any(p.startswith("peft is not installed") for p in problems)
    assert "deepspeed" not in supported_requirements() and "deepspeed" in supported_requirements(("deepspeed",))


def _fake_distribution(root: pathlib.Path, name: str, version: str) -> None:
    """A dist-info that shadows the real one in importlib.metadata (the module itself stays the real one)."""
    info = root / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _revela(args: list[str], tmp_path: pathlib.Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "revela_hf.cli", *args], capture_output=True, text=True, cwd=tmp_path,
        env={**os.environ, **env}, timeout=120,
    )


def test_an_unsupported_transformers_stops_a_command_at_once(tmp_path: pathlib.Path) -> None:
    _fake_distribution(tmp_path / "site", "transformers", "5.24.0")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path])}
    result = _revela(["prepare", str(tmp_path / "missing"), "--output", str(tmp_path / "out")], tmp_path, **env)
    assert result.returncode == 2
    assert "transformers 5.24.0 is installed" in result.stderr and "pip install" in result.stderr
    assert not (tmp_path / "out").exists()
    report = _revela(["env"], tmp_path, **env)  # env still works, and says what is wrong
    assert report.returncode == 0 and "transformers: 5.24.0" in report.stdout and "5.24.0 is installed" in report.stdout
    skipped = _revela(["prepare", str(tmp_path / "missing"), "--output", str(tmp_path / "out")], tmp_path,
                      REVELA_HF_SKIP_VERSION_CHECK="1", **env)
    assert "5.24.0" not in skipped.stderr


def test_import_and_help_load_nothing_heavy() -> None:
    probe = (
        "import sys, runpy, revela_hf\n"
        "light = [m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers', *%r}]\n"
        "sys.argv = ['revela', '--help']\n"
        "try:\n    runpy.run_module('revela_hf.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print(light, [m for m in %r if m in sys.modules], 'torch' in sys.modules)\n"
    ) % (HEAVY_OPTIONAL, HEAVY_OPTIONAL)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120).stdout
    assert out.strip().splitlines()[-1] == "[] [] False"


def test_model_api_registers_the_auto_classes_without_optional_modules() -> None:
    probe = (
        "import sys, revela_hf\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        "config = revela_hf.RevelaConfig()\n"
        "assert type(AutoConfig.for_model('revela')) is revela_hf.RevelaConfig\n"
        "from revela_hf import RevelaTrainer, RevelaTrainingArguments, RevelaDataCollator, RevelaRetriever\n"
        "print([m for m in %r if m in sys.modules])\n"
    ) % (HEAVY_OPTIONAL,)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
