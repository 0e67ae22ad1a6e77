"""The `fitlens` command: a thin dispatcher to one module per subcommand.

Each subcommand lives in its own module with a ``main(argv) -> int`` (or the function named after
a colon) and is imported only when chosen, so `fitlens explain` never pays for torch.

`fitlens explain` does no BLAS work (no matrix products worth a thread), yet OpenBLAS starts one
thread per core when NumPy is imported, which doubles the start-up's CPU time on two cores. For
that command only, ``OPENBLAS_NUM_THREADS`` is set to 1 before NumPy loads, unless the user set
it (their value wins). `fit` and the other commands keep OpenBLAS's default.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

_COMMANDS = {
    "demo": (
        "fitlens.cli.demo",
        "train a small network on real data and watch the epoch-start jump",
    ),
    "explain": ("fitlens.explain.command", "read a Keras training log and explain every jump"),
    "report": ("fitlens.report.command:report_main", "write a run directory as one HTML page"),
    "show": ("fitlens.report.command:show_main", "show a run directory in the terminal"),
}


#: Commands that do no BLAS work: OpenBLAS gets one thread for them (see the module docs).
_ONE_BLAS_THREAD = frozenset({"explain"})


def _blas_threads(command: str) -> None:
    """Ask OpenBLAS for one thread when ``command`` does no BLAS work, unless the user chose a
    count or NumPy is already loaded (its threads have started; nothing to gain)."""
    if command in _ONE_BLAS_THREAD and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


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
    module_name, _, function = _COMMANDS[name][0].partition(":")
    _blas_threads(name)
    module = importlib.import_module(module_name)
    return int(getattr(module, function or "main")(rest))
