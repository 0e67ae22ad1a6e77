"""The public API is listed once: ``__all__``, the lazy exports and the README's API section agree."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import fitlens

ROOT = Path(__file__).resolve().parents[1]


def _readme_api_names() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `fitlens.")]
    return {name for row in rows for name in re.findall(r"`fitlens\.(\w+)`", row.split("|")[1])}


def _type_checking_imports() -> set[str]:
    tree = ast.parse(Path(fitlens.__file__).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                names.update(alias.name for alias in imp.names)
    return names


def test_all_the_lazy_exports_and_the_readme_name_the_same_things():
    exported = set(fitlens._EXPORTS) | {"__version__"}
    assert set(fitlens.__all__) == exported
    assert _type_checking_imports() == set(fitlens._EXPORTS)
    assert _readme_api_names() == exported | set(fitlens._SUBMODULES)


def test_every_lazy_export_comes_from_the_module_it_names():
    for name, module in fitlens._EXPORTS.items():
        assert getattr(fitlens, name) is getattr(importlib.import_module(module), name), name


def test_the_types_users_meet_are_exported():
    assert type(_callback_run()) is fitlens.RunState
    assert isinstance(fitlens.History().batches, fitlens.BatchLog)


def _callback_run() -> object:
    """The `run` a fit callback sees, from a real one-step fit."""
    import torch

    seen = []

    class Look(fitlens.Callback):
        def on_train_begin(self, logs):
            seen.append(self.run)

    fitlens.fit(
        torch.nn.Linear(2, 1),
        (torch.zeros(4, 2), torch.zeros(4, 1)),
        loss="mse",
        optimizer="sgd",
        batch_size=4,
        verbose=0,
        callbacks=[Look()],
    )
    return seen[0]
