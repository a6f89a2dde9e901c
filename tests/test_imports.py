"""How the package imports: lazy exports that stay what they name, and no import cycle between modules."""

from __future__ import annotations

import subprocess
import sys

LAZY_PACKAGES = ("revela_hf", "revela_hf.data")


def test_an_exported_name_stays_the_exported_object_after_its_module_is_imported() -> None:
    # `revela_hf.data.prepare` is both a function the package exports and the module defining it; importing the
    # module first (as another test or a user's script may) used to leave the package's `prepare` the module.
    probe = (
        "import importlib, sys\n"
        "for name in %r:\n"
        "    package = importlib.import_module(name)\n"
        "    modules = {export: importlib.import_module(module) for export, module in package._EXPORTS.items()}\n"
        "    wrong = [export for export, module in modules.items() if getattr(package, export) is not getattr(module, export)]\n"
        "    print(name, wrong)\n"
        "from revela_hf.data import prepare\n"
        "print(callable(prepare), type(sys.modules['revela_hf.data.prepare']).__name__)\n"
    ) % (LAZY_PACKAGES,)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-3:] == ["revela_hf []", "revela_hf.data []", "True module"]
