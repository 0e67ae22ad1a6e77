"""`fit(..., compile=True)` and compiled models: training works, fitlens adds no graph break."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

import fitlens
from fitlens.safety.checkpoint import CheckpointStore
from tests.training.test_update import _batches, _model

# Inductor on CPU compiles C++ kernels; without a C compiler torch.compile cannot run here.
needs_compiler = pytest.mark.skipif(
    shutil.which("gcc") is None and shutil.which("cc") is None,
    reason="torch.compile's CPU backend (inductor) needs a C compiler (gcc or cc) on PATH",
)


@needs_compiler
def test_fit_compiles_the_model_trains_it_and_breaks_no_graph(tmp_path: Path) -> None:
    torch._dynamo.reset()
    counters.clear()
    net = _model()
    h = fitlens.fit(
        net, _batches(4), loss="cross_entropy", optimizer="sgd", metrics=["accuracy"],
        epochs=2, verbose=0, compile=True, run_dir=tmp_path / "run",
    )  # fmt: skip
    assert dict(counters["graph_break"]) == {}  # the step's own code never enters the graph
    assert counters["stats"]["unique_graphs"] >= 1  # the model did run compiled
    assert np.isfinite(h.history["loss"]).all() and h.history["loss"][1] < h.history["loss"][0]
    latest = CheckpointStore(tmp_path / "run" / "checkpoints").latest()
    assert latest is not None  # checkpoints hold the model's own names, not "_orig_mod."
    assert list(latest[1]["model"]) == list(net.state_dict())


def test_a_model_the_user_compiled_trains_under_fit_with_no_graph_break() -> None:
    torch._dynamo.reset()
    counters.clear()
    net = _model()
    before = [p.detach().clone() for p in net.parameters()]
    compiled = torch.compile(net, backend="eager")  # dynamo traces; no C compiler needed
    h = fitlens.fit(
        compiled, _batches(4), loss="cross_entropy", optimizer="sgd", epochs=1, verbose=0,
        precision="bf16-mixed", accumulate=2, clip_grad_norm=1.0, metrics=["grad_norm"],
    )  # fmt: skip
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] >= 1
    assert np.isfinite(h.history["loss"]).all()
    assert not any(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
