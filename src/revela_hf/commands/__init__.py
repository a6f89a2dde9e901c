"""Sub-commands of the `revela` CLI. Each module defines `register(subparsers)`, which adds its
parser and sets `func` (called with the parsed args, returns an exit code)."""
