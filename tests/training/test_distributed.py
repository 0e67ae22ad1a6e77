"""`fit` under DDP: real ``torchrun`` launches (gloo, 2 CPU processes) and the pieces they use.

The launched script is tests/training/ddp_scripts/train.py. Tolerances: a global step's loss is
the mean of 32 float32 per-sample losses either way, summed in a different order (2 x 16 on two
ranks, combined in float64, vs 32 on one), so per step values differ by at most about
``32 * eps32``; the gradient likewise, and SGD (lr 0.5) moves the weights by ``lr * grad`` per
step, so after ``S`` steps the weights differ by at most ``S * 0.5 * 32 * eps32`` (gradients here
are below 1). Epoch metrics, computed from those weights, get the same bound.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fitlens
from fitlens.adapters.data import BatchSource
from fitlens.adapters.evaluation import measure_batches
from fitlens.safety.checkpoint import load_checkpoint
from fitlens.training.distributed import Distributed, check_supported, resolve_strategy
from fitlens.training.epoch_truth import EpochTruth
from fitlens.training.reduction import combine_rows
from fitlens.training.sharding import ShardSampler, rebuild_loader, shard_for_eval
from fitlens.view.lens import Lens, Rows
from fitlens.view.progress import Progress

SCRIPT = Path(__file__).parent / "ddp_scripts" / "train.py"
EPS32 = float(np.finfo(np.float32).eps)
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc): torchrun's workers."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _torchrun(
    out: Path,
    mode: str,
    script: Path = SCRIPT,
    *,
    launcher: list[str] = (),  # type: ignore[assignment]
    bound: float = 150.0,
) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node 2 --standalone [launcher...] script out mode``.

    The output goes to files (no pipe a stray worker could hold). A run still going after
    ``bound`` seconds fails the test with every worker's Python stacks (the scripts register
    faulthandler on SIGUSR1) and the output so far.
    """
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    src = str(Path(fitlens.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command += ["--standalone", *launcher, str(script), str(out), mode]
    logs = out / f"torchrun-{mode}.log"
    with logs.open("w") as log:
        # Its own session, so that a hang is ended with the workers, not only torchrun.
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            process.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            workers = _children(process.pid)
            for pid in workers:  # each dumps its stacks to the log
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR1)
            time.sleep(3)
            for pid in [process.pid, *workers]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait()
            pytest.fail(
                f"torchrun {mode} did not end within {bound:g} s; its output, with the "
                f"workers' stacks at the end:\n{logs.read_text()[-12000:]}"
            )
    return subprocess.CompletedProcess(command, process.returncode, logs.read_text(), "")


def _load(out: Path, name: str, rank: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / f"{name}-rank{rank}.json").read_text())
    return result


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The script's comparison runs on 2 ranks (torchrun) and on one process (here)."""
    two = tmp_path_factory.mktemp("two_ranks")
    done = _torchrun(two, "pair")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (two / "output.txt").write_text(done.stdout + done.stderr)
    one = tmp_path_factory.mktemp("one_process")
    spec = importlib.util.spec_from_file_location("ddp_train_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.run_pair(one, world=1)
    return two, one


def _assert_history_close(got: dict[str, list[float]], want: dict[str, list[float]], tol: float):
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=0, atol=tol, err_msg=key)


def _assert_same_run(two: Path, one: Path, name: str, steps: int) -> None:
    """Run ``name`` on 2 ranks equals it on one process: the same global batches (sizes), the
    history within the SGD bound of the module docstring, the same on both ranks bit for bit."""
    rank0, rank1, single = _load(two, name, 0), _load(two, name, 1), _load(one, name)
    assert rank0["world_size"] == 2 and single["world_size"] == 1
    assert rank0["history"] == rank1["history"]  # identical on every rank, bit for bit
    assert rank0["sizes"] == single["sizes"]  # one global row per global step
    assert len(single["sizes"]) == steps
    tol = steps * 0.5 * 32 * EPS32
    _assert_history_close(rank0["history"], single["history"], tol)
    for key, want in single["weights"].items():
        np.testing.assert_allclose(rank0["weights"][key], want, rtol=0, atol=tol, err_msg=key)


def test_two_ranks_of_a_shuffled_loader_of_32_train_as_one_process_with_it(pair):
    # The DataLoader's batch_size (32) is the global batch: 16 per rank, the one-process order.
    # Validation (41 samples: 20 and 21 per rank) and train_eval (each rank replays its shard)
    # are split across the ranks and summed: their values are the one-process ones too.
    two, one = pair
    _assert_same_run(two, one, "even", 8)
    assert _load(two, "even")["sizes"] == [32.0] * 8
    assert "val_loss" in _load(one, "even")["history"]
    assert "train_eval_loss" in _load(one, "even")["history"]


def test_shuffled_arrays_with_a_train_eval_subset_train_as_on_one_process(pair):
    two, one = pair
    _assert_same_run(two, one, "uninterrupted", 12)  # 128 samples, 32 a step, 3 epochs
    assert "train_eval_accuracy" in _load(one, "uninterrupted")["history"]


def test_class_and_sample_weights_under_ddp_give_the_weighted_run_of_one_process(pair):
    two, one = pair
    # Weighted validation (x, y, w) and a weighted train_eval subset are split and summed too.
    _assert_same_run(two, one, "weighted", 4)
    plain = _load(one, "even")["history"]["loss"][0]
    history = _load(one, "weighted")["history"]
    assert history["loss"][0] != plain  # the weights count
    assert {"val_loss", "train_eval_loss"} <= set(history)


def test_a_nonfinite_loss_on_one_rank_skips_the_step_on_every_rank_as_on_one_process(pair):
    # Rank 1 alone sees the infinite loss of global step 2, and its gradients are finite: the
    # loss DDP back-propagates carries it into every rank's gradients, so both ranks skip.
    two, one = pair
    _assert_same_run(two, one, "skip", 6)  # 8 steps, the 2 skipped leave no row
    for rank in (0, 1):
        assert _load(two, "skip", rank)["skipped"] == [[1, 2], [2, 2]]
    assert _load(two, "skip", 0)["weights"] == _load(two, "skip", 1)["weights"]
    assert _load(one, "skip")["skipped"] == [[1, 2], [2, 2]]


def test_a_torchmetrics_epoch_value_under_ddp_is_the_one_process_value(pair):
    # A macro F1 over the epoch is not a mean of batch F1s: only merging the ranks' states
    # (torchmetrics' own sync, at each reduction on every rank) gives the one-process value.
    two, one = pair
    _assert_same_run(two, one, "torchmetrics", 8)
    history = _load(one, "torchmetrics")["history"]
    assert {"f1", "val_f1", "train_eval_f1"} <= set(history)
    per_step = _load(two, "torchmetrics")["per_step"]
    for i, (epoch, step, refreshed, collectives) in enumerate(per_step):
        epoch_end = i + 1 == len(per_step) or per_step[i + 1][0] != epoch
        if not epoch_end:  # torchmetrics syncs at refreshes only, never between
            assert (collectives > 0) == (refreshed == step), per_step


def test_the_readme_example_under_torchrun_has_the_history_of_one_process(pair):
    # Adam, 1400 shuffled samples, batch 32 (16 per rank), 5 epochs. Each step's gradient is
    # a sum of 32 float32 per-sample gradients added in another order (within 32 * eps32 of
    # the sum of their sizes); Adam's step lr * m / (sqrt(v) + eps) moves a weight by at most
    # about 3.2 * lr whatever the gradient's scale, and a relative error d in both m and
    # sqrt(v) changes it by at most 2d of that: after S steps the weights differ by at most
    # S * 3.2 * lr * 2 * 32 * eps32 (to first order; measured: 9e-8).
    two, one = pair
    rank0, rank1, single = _load(two, "readme", 0), _load(two, "readme", 1), _load(one, "readme")
    assert rank0["history"] == rank1["history"]
    assert rank0["sizes"] == single["sizes"] == ([32.0] * 43 + [24.0]) * 5
    tol = len(single["sizes"]) * 3.2 * 1e-3 * 2 * 32 * EPS32
    for key, want in single["weights"].items():
        np.testing.assert_allclose(rank0["weights"][key], want, rtol=0, atol=tol, err_msg=key)
    _assert_history_close(rank0["history"], single["history"], tol)


def test_collectives_run_once_per_refresh_and_never_between(pair):
    two, _ = pair
    for rank in (0, 1):
        run = _load(two, "even", rank)
        per_step = run["per_step"]
        # fit's own count agrees; set-up ran one more: the shuffling generator's broadcast
        assert sum(row[3] for row in per_step) + 1 == run["collectives"]
        ends = {(e, s) for e, s, *_ in per_step}
        assert len(per_step) == len(ends)
        for i, (epoch, step, refreshed, collectives) in enumerate(per_step):
            epoch_end = i + 1 == len(per_step) or per_step[i + 1][0] != epoch
            if epoch_end:  # the end flush (or the last step's refresh), one all_reduce for
                # validation's sums and counts, one per train_eval pass (train, eval mode)
                assert collectives == 1 + 1 + 2, per_step
            else:
                assert collectives == (1 if refreshed == step else 0), per_step


def test_a_dataset_not_divisible_by_the_world_size_is_counted_exactly(pair):
    two, one = pair
    # 101 = 3 x 32 + 5: the last global step is 3 samples on rank 0 and 2 on rank 1. Its losses
    # are scaled by 3*2/5 and 2*2/5, so DDP's average of the two gradients is the gradient of
    # the 5 samples' mean loss: the weights, and so validation, follow one process too.
    _assert_same_run(two, one, "uneven", 4)
    rank0 = _load(two, "uneven")
    assert rank0["sizes"] == [32.0, 32.0, 32.0, 5.0]
    correct = rank0["history"]["accuracy"][0] * 101
    assert abs(correct - round(correct)) < 101 * 32 * EPS32  # a whole number of samples


def test_arrays_are_dealt_across_ranks_and_a_last_batch_too_small_to_share_is_left_out(pair):
    two, _ = pair
    rank0, rank1 = _load(two, "arrays", 0), _load(two, "arrays", 1)
    assert rank0["history"] == rank1["history"]
    assert rank0["sizes"] == [16.0] * 6 * 2  # 97 samples, 16 a step: the 97th is left out


def test_only_rank_0_shows_the_display_and_the_warnings(pair):
    two, _ = pair
    output = (two / "output.txt").read_text()
    assert output.count("Epoch 1/1 - 4 steps") == 1  # the uneven run's summary line
    assert output.count("sample(s) are left out of each epoch") == 1  # the arrays run's


def test_fit_uses_a_process_group_the_user_initialised_and_leaves_it_up(pair):
    two, _ = pair
    assert json.loads((two / "group-rank0.json").read_text()) is True
    assert json.loads((two / "group-rank1.json").read_text()) is True


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A run_dir whose run lost rank 1 to an exception in its second epoch, and the output."""
    out = tmp_path_factory.mktemp("crashed")
    done = _torchrun(out, "crash")  # a hang would run into the subprocess timeout
    assert done.returncode != 0
    return out, done.stdout + done.stderr


def test_a_raising_rank_stops_every_rank_with_a_message_naming_it(crashed):
    out, output = crashed
    assert "fitlens: rank 1 of 2 failed: ValueError: bad batch on purpose" in output
    assert not list(out.glob("*.json"))  # no rank finished training


def test_checkpoints_every_n_steps_are_taken_mid_epoch_under_ddp(crashed):
    out, _ = crashed
    # Every 3 steps, 4 steps an epoch, crash before step 3 of epoch 2: three checkpoints, after
    # global steps 3, 4 (the epoch end) and 6 (epoch 2, step 2); the last two are kept.
    names = sorted(p.name for p in (out / "run" / "checkpoints").glob("ckpt-*.pt"))
    assert names == ["ckpt-00000002.pt", "ckpt-00000003.pt"]
    state = load_checkpoint(out / "run" / "checkpoints" / names[-1])
    assert state["position"] == {"epoch": 1, "step": 2, "global_step": 6}
    ddp = state["parts"]["ddp"]
    assert len(ddp["rngs"]) == len(ddp["positions"]) == 2  # every rank's, for the resume


@pytest.fixture(scope="module")
def signalled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Runs stopped by SIGTERM in their second epoch: sent to rank 1 alone, and to torchrun
    (which forwards it to every worker); each run_dir and the output."""
    runs = {}
    for mode in ("signal-rank", "signal-launcher"):
        out = tmp_path_factory.mktemp(mode)
        done = _torchrun(out, mode)
        assert done.returncode != 0, done.stdout[-3000:]
        runs[mode] = (out, done.stdout)
    return runs


@pytest.mark.parametrize("mode", ["signal-rank", "signal-launcher"])
def test_sigterm_on_one_rank_or_on_torchrun_stops_every_rank_after_the_same_step(signalled, mode):
    out, output = signalled[mode]
    stops = [json.loads((out / f"stopped-rank{r}.json").read_text()) for r in (0, 1)]
    assert stops[0]["signal"] == stops[1]["signal"] == "SIGTERM"
    assert stops[0]["reached"] == stops[1]["reached"]
    # The signal came before step 3 of epoch 2 (to rank 0, from torchrun, while it waited for
    # it there): the ranks agreed at that step's refresh and stopped after it.
    epoch, step = stops[0]["reached"]
    assert (epoch, step) == (1, 3)
    # One voice: rank 0 says where it stopped and how to resume; no rank reports a failure.
    assert output.count("fitlens: SIGTERM received; stopped at") == 1, output[-3000:]
    assert "fitlens: SIGTERM received; stopped at epoch 2, step 3. Checkpoint:" in output
    assert "failed:" not in output and "has not reached" not in output
    summary = json.loads((out / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    # every_minutes (tiny) was due at every refresh, a refresh every step: the ranks agreed on
    # a checkpoint after each step (the last step's is the epoch end's), the stop's included.
    assert summary["checkpoints"]["written_this_session"] == 4 * epoch + step


def test_a_run_stopped_by_sigterm_resumes_to_the_uninterrupted_run_bit_for_bit(pair, signalled):
    two, _ = pair
    # The stop on torchrun's SIGTERM is at the same step with the same checkpoint (the test
    # above): resuming one of the two runs covers both.
    out, _ = signalled["signal-rank"]
    # It resumes from the stop's own checkpoint, mid-epoch.
    latest = sorted((out / "run" / "checkpoints").glob("ckpt-*.pt"))[-1]
    position = load_checkpoint(latest)["position"]
    assert (position["epoch"], position["step"]) == (1, 3)
    done = _torchrun(out, "resume")
    assert done.returncode == 0, done.stdout[-3000:]
    want = _load(two, "uninterrupted")
    for rank in (0, 1):
        got = _load(out, "resume", rank)
        assert got["weights"] == want["weights"]
        assert got["history"] == want["history"]


def test_torchrun_max_restarts_with_resume_ends_as_the_uninterrupted_run(pair, tmp_path):
    two, _ = pair
    # The first attempt loses rank 1 to an exception in epoch 2 (as `crashed`); torchrun starts
    # both again, and resume=True continues from rank 0's mid-epoch checkpoint: the crash-and-
    # resume case, bit for bit.
    done = _torchrun(tmp_path, "restart", launcher=["--max-restarts", "1"])
    assert done.returncode == 0, done.stdout[-3000:]
    assert "fitlens: rank 1 of 2 failed: ValueError: bad batch on purpose" in done.stdout
    want = _load(two, "uninterrupted")
    for rank in (0, 1):
        got = _load(tmp_path, "restart", rank)
        assert got["weights"] == want["weights"]
        assert got["history"] == want["history"]


def test_a_hanging_rank_stops_every_rank_within_ddp_timeout_with_messages_naming_it(tmp_path):
    done = _torchrun(tmp_path, "hang")  # ddp_timeout=5: a hang would run into the bound
    assert done.returncode != 0
    output = done.stdout
    assert "fitlens: rank 0 of 2 failed: RuntimeError" in output
    assert "fitlens: rank 0 of 2 was waiting for the other ranks in a collective" in output
    assert "fitlens: rank 1 of 2 received SIGTERM 5 s ago and has not reached" in output
    assert "in act" in output  # its stack: the callback it sleeps in
    assert not list(tmp_path.glob("*.json"))


def test_a_killed_rank_stops_every_rank(tmp_path):
    done = _torchrun(tmp_path, "kill")  # a hang would run into the subprocess timeout
    assert done.returncode != 0
    output = done.stdout + done.stderr
    # SIGKILL leaves no message of its own: rank 0 names the lost peer, torchrun the rank.
    assert "fitlens: rank 0 of 2 failed: RuntimeError" in output
    assert "local_rank: 1" in output and "exitcode: -9" in output
    assert not list(tmp_path.glob("*.json"))


def test_resuming_with_another_world_size_is_refused_with_the_command():
    ddp = Distributed.__new__(Distributed)  # no process group needed for this check
    ddp.world = 4
    with pytest.raises(
        ValueError, match=r"written by 2 processes, this run has 4.*--nproc-per-node 2"
    ):
        ddp.load_state_dict({"world": 2, "seed": 1, "rngs": []})


def test_the_lightning_callback_under_lightnings_ddp_shows_global_values(tmp_path):
    done = _torchrun(tmp_path, "-", Path(__file__).parent / "ddp_scripts" / "lightning_ddp.py")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rank0, rank1 = _load(tmp_path, "lightning", 0), _load(tmp_path, "lightning", 1)
    assert rank0["history"] == rank1["history"]
    assert rank0["rows"] == 12  # 96 samples, 2 ranks x 3 batches of 16, 2 epochs
    # Each rank logged its own batch losses; the history holds the global sample-weighted mean.
    np.testing.assert_allclose(rank0["history"]["loss"], rank0["reference"], rtol=1e-12)


def test_a_set_up_error_tears_down_the_process_group_fit_started(monkeypatch, capsys):
    # A one-process "torchrun" environment: fit initialises a gloo group, then fails set-up.
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**env, "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    model = torch.nn.Linear(2, 2)
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    with pytest.raises(TypeError, match="Expected `validation_data`"):
        fitlens.fit(
            model,
            (x, y),
            loss="cross_entropy",
            optimizer="sgd",
            strategy="ddp",
            validation_data="not data",
            verbose=0,
        )
    assert not dist.is_initialized()
    assert "fitlens: rank 0 of 1 failed: TypeError" in capsys.readouterr().err


# -- in-process: strategy resolution, sharding, the reduction --------------------------------


def test_strategy_ddp_outside_torchrun_fails_with_the_torchrun_command(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node 2"):
        resolve_strategy("ddp")
    assert resolve_strategy("auto") is False
    model = torch.nn.Linear(2, 2)
    x, y = torch.randn(8, 2), torch.randint(0, 2, (8,))
    with pytest.raises(ValueError, match="Expected `strategy` to be one of"):
        fitlens.fit(model, (x, y), loss="cross_entropy", optimizer="sgd", strategy="many")
    with pytest.raises(ValueError, match="Expected `ddp_timeout`"):
        fitlens.fit(model, (x, y), loss="cross_entropy", optimizer="sgd", ddp_timeout=0)


@pytest.mark.parametrize(
    "n, uneven", [(101, [(4, 3 * 2 / 5), (4, 2 * 2 / 5)]), (98, [None, None]), (96, [None, None])]
)
def test_an_unequally_shared_last_batch_is_rescaled_to_the_one_process_gradient(n, uneven):
    # 101 = 3 x 32 + 5 (3 and 2); 98 = 3 x 32 + 2 (1 and 1: equal); 96 = 3 x 32 (no tail)
    got = [ShardSampler(n, r, 2, 32, generator=None).uneven_last_step() for r in range(2)]
    assert got == uneven


@pytest.mark.parametrize("n, used", [(101, 101), (97, 96), (128, 128)])
def test_shards_deal_each_global_batch_across_ranks_without_duplicates(n, used):
    world, batch = 2, 32  # the global batch: 16 per rank
    shards = [
        ShardSampler(n, r, world, batch, generator=torch.Generator().manual_seed(3))
        for r in range(world)
    ]
    for epoch in range(2):  # each epoch draws the next order of the generator
        parts = [list(s) for s in shards]
        g = torch.Generator().manual_seed(3)
        order = [torch.randperm(n, generator=g) for _ in range(epoch + 1)][-1].tolist()
        assert sorted(parts[0] + parts[1]) == sorted(order[:used])  # each used sample once
        steps = [-(-len(p) // 16) for p in parts]
        assert steps[0] == steps[1]  # every rank runs the same number of steps
        for i in range(steps[0]):  # global batch i: the same samples as one process's batch i
            global_batch = parts[0][i * 16 : (i + 1) * 16] + parts[1][i * 16 : (i + 1) * 16]
            assert sorted(global_batch) == sorted(order[i * 32 : min((i + 1) * 32, used)])


def test_a_shuffled_loader_is_dealt_in_the_order_one_process_draws_with_the_same_seed():
    # RandomSampler draws a seed from the global generator after the loader drew its workers'
    # base seed; the sharded loader draws both from its own copy of that generator.
    dataset = torch.utils.data.TensorDataset(torch.arange(50))
    torch.manual_seed(7)
    state = torch.get_rng_state()  # what rank 0 broadcasts at set-up
    one = [b[0].tolist() for b in torch.utils.data.DataLoader(dataset, batch_size=10, shuffle=True)]
    sharded = []
    for r in range(2):
        generator = torch.Generator()
        generator.set_state(state)
        sampler = ShardSampler(50, r, 2, 10, generator=generator, draw="seeded")
        loader = rebuild_loader(
            torch.utils.data.DataLoader(dataset, batch_size=10, shuffle=True), sampler, 5, generator
        )
        sharded.append([b[0].tolist() for b in loader])
    assert [sorted(a + b) for a, b in zip(*sharded, strict=True)] == [sorted(b) for b in one]


def test_a_global_batch_the_ranks_cannot_share_equally_is_refused():
    with pytest.raises(ValueError, match=r"multiple of 4.*batch_size / 4.*batch_size=30"):
        ShardSampler(100, 0, 4, 30, generator=None)


@pytest.mark.parametrize("kind", ["arrays", "loader", "list"])
def test_evaluation_data_is_split_into_disjoint_parts_that_cover_it(kind):
    x, y = torch.arange(11.0)[:, None], torch.arange(11)
    data: Any = {
        "arrays": (x, y),
        "loader": torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2),
        "list": [(x[i : i + 2], y[i : i + 2]) for i in range(0, 11, 2)],
    }[kind]
    seen = []
    for rank in range(3):
        source = BatchSource(data, name="validation_data", shuffle=False)
        assert shard_for_eval(source, rank, 3)
        seen += [int(v) for _, batch_y in source.epoch() for v in batch_y]
    assert sorted(seen) == list(range(11))  # every sample once


def test_evaluation_data_fitlens_cannot_split_is_left_whole():
    x, y = torch.arange(11.0)[:, None], torch.arange(11)
    limited = BatchSource((x, y), name="validation_data", steps=1, batch_size=4, shuffle=False)
    stream = BatchSource(iter([(x, y)] * 3), name="validation_data", steps=3, shuffle=False)
    assert not shard_for_eval(limited, 0, 2) and not shard_for_eval(stream, 0, 2)


def test_sharded_sums_reduced_over_ranks_give_the_whole_pass():
    # The reduction's contract, with the ranks simulated in one process: each part measured with
    # a reduce that adds the other parts' sums gives the one-process value of the whole pass.
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(9, 3), torch.randint(0, 2, (9,))
    whole = fitlens.evaluate(model, (x, y), loss="cross_entropy", metrics=["accuracy"])
    sums = []
    for rank in range(2):
        source = BatchSource((x, y), name="data", batch_size=2, shuffle=False)
        shard_for_eval(source, rank, 2)
        sums.append(source)

    def local_sums(source: BatchSource) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        measure_batches(
            model, source.epoch(), "loss", fitlens_loss, [], torch.device("cpu"),
            reduce=lambda t: captured.append(t) or t,
        )  # fmt: skip
        return captured[0]

    fitlens_loss = torch.nn.functional.cross_entropy
    parts = [local_sums(s) for s in sums]
    values = measure_batches(
        model, sums[0].epoch(), "loss", fitlens_loss, [], torch.device("cpu"),
        reduce=lambda t: t + parts[1],
    )  # fmt: skip
    assert values["loss"].n == 9
    assert values["loss"].mean == pytest.approx(whole["loss"], abs=9 * EPS32)


def test_combined_rows_are_sample_weighted_means_over_the_ranks():
    # ranks x steps x (step, 2 values, 2 weights, size, step time, data time)
    gathered = np.array(
        [
            [[1, 1.0, 0.5, 3, 3, 3, 0.1, 0.01], [2, 2.0, np.nan, 1, 0, 1, 0.2, 0.0]],
            [[1, 3.0, 0.0, 1, 1, 1, 0.3, 0.02], [2, 4.0, np.nan, 3, 0, 3, 0.1, 0.0]],
        ]
    )
    rows = combine_rows(gathered, 2)
    np.testing.assert_array_equal(rows.steps, [1, 2])
    np.testing.assert_allclose(rows.values[:, 0], [(3 * 1 + 3) / 4, (2 + 3 * 4) / 4])
    assert rows.values[0, 1] == pytest.approx(1.5 / 4) and np.isnan(rows.values[1, 1])
    np.testing.assert_array_equal(rows.weights, [[4, 4], [4, 0]])
    np.testing.assert_array_equal(rows.sizes, [4, 4])
    np.testing.assert_array_equal(rows.step_times, [0.3, 0.2])  # the slowest rank's


def test_a_lens_with_a_reduction_refreshes_on_a_step_schedule_not_the_clock():
    now = [0.0]

    def clock() -> float:
        now[0] += 0.05  # every read: 0.05 s (a step reads the clock twice: 0.1 s per step)
        return now[0]

    reduced: list[int] = []

    def reduce(rows: Rows) -> Rows:
        reduced.append(len(rows.steps))
        return rows

    lens = Lens(Progress(0, refresh_per_second=2.0), "ema", clock=clock)
    lens.reduce = reduce
    lens.set_metrics(["loss"])
    lens.begin_run(1, 20)
    lens.begin_epoch(0)
    for _ in range(20):
        lens.begin_step()
        lens.record([1.0], 4)
        lens.refresh_if_due()
        lens.end_step()
    lens.end_epoch()
    assert sum(reduced) == 20
    # The first step refreshes; then every 0.5 s / (measured s per step) steps, and the end.
    assert reduced[0] == 1 and len(reduced) > 2 and max(reduced) < 20


def test_skip_with_float16_scaling_under_ddp_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r'"16-mixed" is not supported under DDP.*GradScaler'):
        check_supported(on_nonfinite="skip", precision="16-mixed")
    check_supported(on_nonfinite="skip", precision="bf16-mixed")  # allowed


def test_a_train_eval_sample_of_kept_batches_is_refused_under_ddp_and_arrays_are_split():
    x, y = torch.randn(10, 2), torch.randint(0, 2, (10,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)
    cpu = torch.device("cpu")
    kept = EpochTruth(0.5, BatchSource(loader, name="train"), torch.nn.functional.mse_loss, [], cpu)
    with pytest.raises(ValueError, match=r"Under DDP, `train_eval` takes \(x, y\) arrays"):
        kept.distribute(0, 2, lambda t: t, [])
    parts = []
    for rank in range(2):
        source = BatchSource((x, y), name="train", batch_size=4)
        truth = EpochTruth(7, source, torch.nn.functional.mse_loss, [], cpu)
        truth.distribute(rank, 2, lambda t: t, [])
        assert truth.subset is not None
        parts.append(torch.cat([b[1] for b in truth.subset.batches()]))
    subset = EpochTruth(7, BatchSource((x, y), name="train", batch_size=4), None, [], cpu).subset
    assert subset is not None
    whole = torch.cat([b[1] for b in subset.batches()])
    assert torch.equal(torch.cat(parts), whole)  # the 7 drawn samples, split 3 + 4
