"""Per-epoch time breakdown (data wait, compute, eval) and the input-bottleneck hint, on a fake clock."""

from __future__ import annotations

import io
import math

import pytest
import torch

import fitlens
from fitlens.view.data_wait import DataWaitHint, data_share


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class CostlyLinear(torch.nn.Module):
    """A model whose every call advances the fake clock by ``cost`` seconds."""

    def __init__(self, clock: FakeClock, cost: float) -> None:
        super().__init__()
        self.clock, self.cost = clock, cost
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        self.clock.t += self.cost
        return self.linear(x)


def costly_batches(clock: FakeClock, cost: float):
    g = torch.Generator().manual_seed(0)
    while True:
        clock.t += cost
        yield torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)


def run(data_cost: float, step_cost: float, *, epochs: int = 3, steps: int = 10, **kw):
    clock = FakeClock()
    out = io.StringIO()
    history = fitlens.fit(
        CostlyLinear(clock, step_cost),
        costly_batches(clock, data_cost),
        loss="cross_entropy",
        optimizer="sgd",
        epochs=epochs,
        steps_per_epoch=steps,
        clock=clock,
        verbose=fitlens.Progress(2, file=out),
        **kw,
    )
    return history, out.getvalue()


def test_history_splits_each_epoch_into_data_wait_compute_and_eval():
    clock = FakeClock()
    history = fitlens.fit(
        CostlyLinear(clock, 0.25),
        costly_batches(clock, 0.5),
        loss="cross_entropy",
        optimizer="sgd",
        epochs=2,
        steps_per_epoch=10,
        validation_data=costly_batches(clock, 0.5),
        validation_steps=4,
        clock=clock,
        verbose=0,
    )
    assert history.timing["data_wait"] == pytest.approx([5.0, 5.0])
    assert history.timing["compute"] == pytest.approx([2.5, 2.5])
    assert history.timing["eval"] == pytest.approx([3.0, 3.0])  # 4 x (0.5 data + 0.25 model)
    assert history.timing["time"] == pytest.approx([10.5, 10.5])


def test_a_starved_model_gets_one_hint_naming_prefetch_and_dataloader_workers():
    _, text = run(data_cost=0.6, step_cost=0.4)
    hints = [line for line in text.splitlines() if line.startswith("Input pipeline bottleneck")]
    assert len(hints) == 1  # three slow epochs, one hint
    assert "60% of epoch 1" in hints[0]
    assert "prefetch=4" in hints[0] and "num_workers" in hints[0]


def test_the_epoch_line_shows_the_data_wait_share():
    _, text = run(data_cost=0.6, step_cost=0.4, epochs=1)
    assert "data 60%" in text.splitlines()[0]


def test_no_hint_when_the_model_is_the_bottleneck():
    _, text = run(data_cost=0.1, step_cost=0.9)
    assert "Input pipeline bottleneck" not in text


def _hint(prefetch, data=None, workers=None) -> str:
    line = DataWaitHint(min_seconds=0.0).check(
        0, {"time": 4.0, "data_wait": 2.0}, prefetch, data, workers
    )
    assert line is not None
    return line.split("Try: ")[1]


def test_a_generator_without_prefetch_is_told_of_the_thread_and_when_it_is_not_enough():
    advice = _hint(0, "generator")
    assert advice.startswith("fit(..., prefetch=4): a background thread")
    assert "If a batch takes longer, make batches in parallel" in advice
    assert "num_workers=N" in advice


def test_a_generator_already_prefetching_is_pointed_at_parallel_loading_not_a_bigger_buffer():
    advice = _hint(4, "generator")
    assert advice.startswith("make batches in parallel: a torch Dataset in a DataLoader(")
    assert "prefetch=4 already reads ahead, but in one thread" in advice
    assert "raise prefetch" not in advice and "larger prefetch= fills no faster" in advice


def test_a_dataloader_without_workers_is_told_to_add_workers():
    for prefetch in (0, 4):
        advice = _hint(prefetch, "dataloader", 0)
        assert advice.startswith("the DataLoader makes every batch in the training process")
        assert "num_workers=N" in advice and "prefetch=" not in advice


def test_a_dataloader_with_workers_is_told_to_raise_them_and_keep_them():
    advice = _hint(0, "dataloader", 2)
    assert advice.startswith("the DataLoader already loads in parallel with num_workers=2")
    assert "persistent_workers=True" in advice and "fit(..., prefetch" not in advice


def test_arrays_in_memory_are_told_the_wait_is_the_copy_to_the_device():
    assert _hint(0, "arrays").startswith("the batches are sliced from arrays in memory")


def test_fit_records_a_dataloader_and_its_workers_for_the_hint():
    clock = FakeClock()
    dataset = torch.utils.data.TensorDataset(torch.randn(40, 4), torch.randint(0, 2, (40,)))
    history = fitlens.fit(
        CostlyLinear(clock, 0.5),
        torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=0),
        loss="cross_entropy",
        optimizer="sgd",
        epochs=1,
        clock=clock,
        verbose=0,
    )
    assert history.params["data"] == "dataloader" and history.params["workers"] == 0


def test_short_epochs_never_trigger_the_hint():
    hint = DataWaitHint(min_seconds=1.0)
    assert hint.check(0, {"time": 0.5, "data_wait": 0.4}, prefetch=0) is None
    assert not hint.given


def test_data_share_is_nan_for_an_empty_epoch():
    assert math.isnan(data_share({"time": 0.0, "data_wait": 0.0}))
    assert data_share({"time": 4.0, "data_wait": 1.0}) == 0.25


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2])
def test_threshold_outside_zero_one_is_rejected(bad):
    with pytest.raises(ValueError, match=r"Expected `threshold` in \(0, 1\)"):
        DataWaitHint(threshold=bad)
