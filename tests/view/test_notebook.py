"""`fitlens.fit` in a real notebook, executed headless (nbclient + ipykernel): a tqdm widget
with ipywidgets, plain lines without it, and each epoch's summary line once."""

from __future__ import annotations

import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

_TRAIN = """
import numpy as np, torch
import fitlens

torch.manual_seed(0)
rng = np.random.default_rng(0)
y = rng.integers(0, 3, size=200)
x = (rng.normal(size=(3, 8))[y] * 2 + rng.normal(size=(200, 8))).astype(np.float32)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
history = fitlens.fit(model, (x, y), loss="cross_entropy", optimizer="adam",
                      metrics=["accuracy"], epochs=2, batch_size=20)
"""
# Makes `import ipywidgets` fail inside the kernel, as in an environment without it.
_NO_WIDGETS = "import sys\nsys.modules['ipywidgets'] = None\n"

_WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def cells() -> list[list[dict]]:
    """One kernel (started once: it is the slow part): training with ipywidgets, then with
    ipywidgets made unimportable, then training again; each cell's outputs."""
    sources = [_TRAIN, _NO_WIDGETS, _TRAIN]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in sources])
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3").execute()
    return [list(cell.outputs) for cell in nb.cells]


def _text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")


def _epoch_lines(text: str) -> list[str]:
    return re.findall(r"^Epoch \d/2 - \d+ steps - .*$", text, re.M)


def test_a_notebook_gets_a_widget_and_each_epoch_line_once(cells):
    outputs = cells[0]
    assert sum(_WIDGET in o.get("data", {}) for o in outputs) == 2  # one bar per epoch
    text = _text(outputs)
    assert [line[:13] for line in _epoch_lines(text)] == ["Epoch 1/2 - 1", "Epoch 2/2 - 1"]
    assert "IProgress not found" not in text and "\x1b[" not in text


def test_without_ipywidgets_a_notebook_gets_plain_lines_and_no_warning(cells):
    outputs = cells[2]
    assert not any(_WIDGET in o.get("data", {}) for o in outputs)
    text = _text(outputs)
    assert "IProgress" not in text and "\r" not in text and "\x1b[" not in text
    assert [line[:13] for line in _epoch_lines(text)] == ["Epoch 1/2 - 1", "Epoch 2/2 - 1"]
    # The log's timed lines: one at every tenth of the 10-step epoch.
    assert len(re.findall(r"^Epoch 1/2 - \d+/10 - ", text, re.M)) == 10
