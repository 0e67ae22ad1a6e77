"""The `fitlens` command: a thin dispatcher to one module per subcommand.

Each subcommand lives in its own module with a ``main(argv) -> int`` and is imported only when
chosen, so `fitlens explain` never pays for torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

_COMMANDS = {
    "demo": (
        "fitlens.cli.demo",
        "train a small network on real data and watch the epoch-start jump",
    ),
    "explain": ("fitlens.explain.command", "read a Keras training log and explain every jump"),
}


def _usage() -> str:
    lines = ["usage: fitlens COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in _COMMANDS.items()]
    lines += ["", "Run `fitlens COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fitlens command line; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from fitlens import __version__

        print(f"fitlens {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in _COMMANDS:
        known = ", ".join(_COMMANDS)
        print(f"fitlens: unknown command {name!r}; expected one of: {known}.", file=sys.stderr)
        print("Run `fitlens --help` for usage.", file=sys.stderr)
        return 2
    module = importlib.import_module(_COMMANDS[name][0])
    return int(module.main(rest))
