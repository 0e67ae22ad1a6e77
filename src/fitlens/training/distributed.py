"""`fit` under torch.distributed: DistributedDataParallel launched by ``torchrun``.

What this module holds, in the order `fit` uses it:

* `resolve_strategy`: ``strategy="auto"`` runs DDP when a process group is already initialised
  with more than one process, or when ``torchrun``'s environment (``WORLD_SIZE`` > 1) is set;
  ``"ddp"`` outside torchrun fails with the command to run instead.
* `Distributed`: initialises the process group from torchrun's environment when the caller has
  not (``gloo`` on CPU, ``nccl`` on CUDA, timeout ``ddp_timeout`` seconds), moves the model to
  this process's device (``cuda:LOCAL_RANK`` on CUDA), wraps it in ``DistributedDataParallel``
  unless it is wrapped already, and tears down only what it set up.
* Sharding (`fitlens.training.sharding`): arrays and ``DataLoader``s with PyTorch's default
  sampler are split across ranks, their batch size the global one, their order the one a single
  process would draw (`Distributed.generator`); every rank runs the same number of steps.
  Validation and ``train_eval`` data are split into disjoint parts whose sums one
  ``all_reduce`` per pass adds up (`Distributed.shard_eval`, `Distributed.sum_sums`).
* The lens's reduction hook (`Distributed.gather_rows`): at each display refresh and epoch end
  one ``all_gather`` brings every rank's queued per-step rows to every rank, and each step's rows
  become one global row (`fitlens.training.reduction`). Every rank then feeds the same rows to its
  estimators, so epoch means, now estimates and ``History`` are global and identical on every
  rank; no collective runs between refreshes.
* Checkpoints, signals and resume (`Distributed` is run safety's `Peers`): every rank decides
  the same checkpoints at the same steps (``every_steps`` counts steps; ``every_minutes`` is
  read from the clocks at refreshes and agreed in the refresh's ``all_gather``; epoch ends), and
  each takes part: one ``all_gather_object`` brings every rank's random states and data
  position to rank 0, which alone has the ``run_dir`` and writes (`Distributed.state_dict`, with the
  state of the sharded data's shuffling generators).
  SIGINT/SIGTERM on any rank only sets a flag (`SharedInterrupt`); the flag travels in the next
  refresh's ``all_gather`` (or the epoch end's checkpoint gather), so every rank stops after the
  same step, rank 0 writes the checkpoint, a barrier, and all raise `TrainingInterrupted`. On
  resume rank 0 restores as on one process and `share_resume` broadcasts the checkpoint; each
  rank restores it with its own random states and data position (mid-epoch included). Another
  world size is refused.
* Faults: a failing rank names itself on stderr (`Distributed.failed`); torchrun stops the rest.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import warnings
import weakref
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler

from fitlens.adapters.data import ArrayData, BatchSource
from fitlens.adapters.rng import capture_rng
from fitlens.safety.signals import SharedInterrupt, TrainingInterrupted
from fitlens.training.reduction import (
    SyncedMetric,
    from_rank_0,
    gather_rows_and_flags,
    sum_over_ranks,
)
from fitlens.training.sharding import (
    Draw,
    ShardedArrays,
    ShardSampler,
    default_sampler,
    rebuild_loader,
    shard_for_eval,
)
from fitlens.view.lens import Lens, Rows

Strategy = Literal["auto", "ddp", "single"]
STRATEGIES: tuple[str, ...] = ("auto", "ddp", "single")


def _torchrun_world() -> int:
    """WORLD_SIZE from torchrun's environment (1 when unset)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def resolve_strategy(strategy: Any) -> bool:
    """True when `fit` must run data-parallel; raises for a bad or impossible ``strategy``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"Expected `strategy` to be one of {STRATEGIES}. Received: {strategy!r}.")
    if strategy == "single":
        return False
    initialised = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if initialised else _torchrun_world()
    if strategy == "auto":
        return world > 1
    if not initialised and "RANK" not in os.environ:
        script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "train.py"
        raise RuntimeError(
            'strategy="ddp" needs one process per device, started by torchrun; this process '
            "was not. Run:\n"
            f"    torchrun --nproc-per-node 2 {script}\n"
            '(or pass strategy="auto", which trains on one process outside torchrun).'
        )
    return True


def check_ddp_timeout(seconds: Any) -> float:
    """Validate ``ddp_timeout`` (seconds > 0)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ValueError(
            f"Expected `ddp_timeout` to be a number of seconds > 0. Received: {seconds!r}."
        )
    return float(seconds)


def check_supported(*, on_nonfinite: str, precision: str) -> None:
    """Refuse, before any step, what `fit` does not do under DDP (the message says why)."""
    if on_nonfinite == "skip" and precision == "16-mixed":
        raise ValueError(
            'on_nonfinite="skip" with precision="16-mixed" is not supported under DDP: a rank '
            "that skips a step for its own non-finite loss would leave its GradScaler's scale "
            "behind the others', and the ranks would add up gradients of different scales. Use "
            '"bf16-mixed" or "32", the default "stop", or train on one process.'
        )


_SIGNALS = ("SIGINT", "SIGTERM")  # a flag's code is its index + 1 (0: no signal)


class Distributed:
    """This process's part in a data-parallel `fit`: process group, device, wrapped model.

    Args:
        model: the user's model (or one they wrapped in ``DistributedDataParallel`` already).
        device: `fit`'s ``device`` (None: ``cuda:LOCAL_RANK`` when CUDA is available, else CPU).
        timeout: seconds a collective may wait for the other ranks before failing (used when
            this object initialises the process group).

    Attributes:
        rank, world: this process's rank and the number of processes.
        device: where this rank trains. module: the model without the DDP wrapper (for
            checkpoints, validation, callbacks). wrapped: the model the step runs.
        collectives: collectives this object has run (the reduction's, counted per call).
    """

    def __init__(self, model: torch.nn.Module, device: Any, timeout: float) -> None:
        self.owns_group = not dist.is_initialized()
        cuda = torch.cuda.is_available()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device is not None:
            self.device = torch.device(device)
        else:
            self.device = torch.device("cuda", local) if cuda else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.owns_group:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            wait = timedelta(seconds=timeout)
            dist.init_process_group(backend, timeout=wait, **_attempt_store(wait))
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.collectives = 0
        if isinstance(model, DistributedDataParallel):
            self.wrapped, self.module = model, model.module
        else:
            self.module = model.to(self.device)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = DistributedDataParallel(self.module, device_ids=ids)
        self._quiet = ExitStack()
        if self.rank != 0:  # one voice: rank 0 shows and warns; the others speak only to fail
            self._quiet.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        self._samplers: list[Any] = []
        self.generators: list[torch.Generator] = []  # the sharded training data's shuffling
        self.synced: list[SyncedMetric] = []  # torchmetrics training metrics, merged at flushes
        self.uneven: tuple[int, float] | None = None  # see ShardSampler.uneven_last_step
        self.failing = False  # set by `failed`: the other ranks may be gone
        self._rngs: list[Any] = []
        self._positions: list[Any] = []
        self.checkpoints = False  # `Peers`: set by `watch`
        self.guard: SharedInterrupt | None = None
        self._time_due: Callable[[], bool] = lambda: False
        self._due = False

    # -- data ---------------------------------------------------------------------------------

    def generator(self, source: torch.Generator | None) -> torch.Generator:
        """A generator of fitlens's own in rank 0's state of ``source`` (None: torch's global
        CPU generator) at this moment (one broadcast): every rank then draws the same orders,
        the ones rank 0's ``source`` would have drawn on one process, without touching it."""
        state = source.get_state() if source is not None else torch.get_rng_state()
        self.collectives += 1  # once per sharded shuffled source, before the first step
        generator = torch.Generator()
        generator.set_state(from_rank_0(state))
        self.generators.append(generator)
        return generator

    def shard(self, source: BatchSource, batch_size: int | None) -> None:
        """Split ``source`` across the ranks (in place), when fitlens knows how.

        Arrays and a ``DataLoader`` with PyTorch's default sampler (``shuffle`` kept) are dealt
        by a `ShardSampler`: their batch size (``batch_size``, the loader's) is the global one,
        split equally across the ranks. A ``DataLoader`` with its own sampler (a
        ``DistributedSampler`` included) is left alone, ``set_epoch`` called on it each epoch
        when it has one; a generator is taken as this rank's own stream (each rank must yield
        its own shard).
        """
        data = source.iterable
        if isinstance(data, ArrayData):
            generator = self.generator(None) if data.shuffle else None
            sampler = self._sampler(data.n, data.batch_size, generator, "randperm", False)
            source.iterable = ShardedArrays(data, sampler)
        elif isinstance(data, DataLoader):
            source.iterable = self._loader(data)
        else:
            return
        full = len(source.iterable)
        source.steps = min(full, source.steps) if source.steps else full
        dealt = getattr(source.iterable, "sampler", None)
        if isinstance(dealt, ShardSampler) and source.steps == full:
            self.uneven = dealt.uneven_last_step()

    def _sampler(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator | None,
        draw: Draw,
        drop_last: bool,
    ) -> ShardSampler:
        sampler = ShardSampler(
            n,
            self.rank,
            self.world,
            batch_size,
            generator=generator,
            draw=draw,
            drop_last=drop_last,
        )
        if sampler.dropped and not drop_last:
            warnings.warn(
                f"{n} samples do not split into global batches of {batch_size} with each of the "
                f"{self.world} ranks getting a share of the last one: its {sampler.dropped} "
                "sample(s) are left out of each epoch (every rank must run the same steps).",
                stacklevel=4,
            )
        self._samplers.append(sampler)
        return sampler

    def _loader(self, loader: DataLoader) -> DataLoader:
        if not default_sampler(loader):
            if hasattr(loader.sampler, "set_epoch"):
                self._samplers.append(loader.sampler)
            return loader
        generator, seeds = None, loader.generator
        draw: Draw = "randperm"
        if isinstance(loader.sampler, RandomSampler):
            own = loader.sampler.generator  # None: the sampler draws from the global one
            generator = self.generator(own)
            draw = "randperm" if own is not None else "seeded"
            if own is loader.generator:  # the workers' base seed came from the same stream
                seeds = generator
        sampler = self._sampler(
            len(loader.dataset),  # type: ignore[arg-type]
            int(loader.batch_size or 1),  # set: a default sampler batches
            generator,
            draw,
            loader.drop_last,
        )
        return rebuild_loader(loader, sampler, sampler.per_rank, seeds)

    def shard_eval(self, source: BatchSource) -> bool:
        """Split an evaluation pass's data across the ranks (`shard_for_eval`); True when split
        (its sums must then go through `sum_sums`)."""
        shuffling = self.generators[0] if len(self.generators) == 1 else None
        return shard_for_eval(source, self.rank, self.world, shuffling)

    def sum_sums(self, local: torch.Tensor) -> torch.Tensor:
        """An evaluation pass's sums and counts over the ranks: one ``all_reduce``."""
        self.collectives += 1
        return sum_over_ranks(local)

    def begin_epoch(self, epoch: int) -> None:
        """``set_epoch`` on every sampler, so each epoch draws a new order, the same on all ranks."""
        for sampler in self._samplers:
            sampler.set_epoch(epoch)

    # -- checkpoints and resume ----------------------------------------------------------------

    def watch(
        self, guard: SharedInterrupt, time_due: Callable[[], bool], checkpoints: bool
    ) -> None:
        """Take part in run safety (`Peers`): carry ``guard``'s signal and ``time_due()`` (read
        at each refresh) to the other ranks; ``checkpoints``: the run keeps checkpoints."""
        self.guard, self._time_due, self.checkpoints = guard, time_due, checkpoints

    def _agree_signal(self, codes: Any) -> None:
        code = next((int(c) for c in codes if int(c) > 0), 0)  # the lowest rank's signal
        if self.guard is not None and code:
            self.guard.agree(_SIGNALS[code - 1])

    def _local_signal(self) -> int:
        local = self.guard.local if self.guard is not None else None
        return _SIGNALS.index(local) + 1 if local in _SIGNALS else 0

    def take_due(self) -> bool:
        """`Peers`: a time-based checkpoint the ranks agreed on at the latest refresh."""
        due, self._due = self._due, False
        return due

    def gather_states(self, position: dict[str, Any]) -> None:
        """`Peers`: every rank's random states and data position (and signal) to every rank,
        for rank 0's checkpoint (one collective; every rank calls it before the checkpoint)."""
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, (capture_rng(), position, self._local_signal()))
        self.collectives += 1
        self._due = False  # this is the checkpoint a time-based request asked for
        self._rngs = [s[0] for s in states]
        self._positions = [s[1] for s in states]
        self._agree_signal([s[2] for s in states])

    def done(self) -> None:
        """`Peers`: a barrier (after rank 0 wrote a stop's checkpoint)."""
        dist.barrier()
        self.collectives += 1

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the DDP run (rank 0 writes it): the world size, the
        state of the sharded data's shuffling generators, and every rank's random states and
        data position at the checkpoint."""
        return {
            "world": self.world,
            "shuffling": [g.get_state() for g in self.generators],
            "rngs": self._rngs,
            "positions": self._positions,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore on rank 0 (inside the run safety's restore); refuses another world size."""
        if int(state["world"]) != self.world:
            raise ValueError(
                f"Cannot resume: the checkpoint was written by {state['world']} processes, this "
                f"run has {self.world}. Each rank's data shard and random state belong to the "
                f"world size; resume with `torchrun --nproc-per-node {state['world']}` (x "
                "nodes), or start a new run_dir."
            )

    def share_resume(self, pending: dict[str, Any] | None) -> dict[str, Any] | None:
        """After rank 0's run safety read a checkpoint: hand it to every rank (one broadcast);
        returns it with this rank's random states and data position in place of rank 0's (for
        run safety to restore and resume from), or None for a fresh start.

        Args:
            pending: rank 0's restored checkpoint (None: a fresh start); ignored elsewhere.
        """
        box: list[Any] = [pending if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        self.collectives += 1
        state = box[0]
        if state is None:
            return None
        ddp = state["parts"].get("ddp")
        mid_epoch = int(state["position"]["step"]) != 0
        if ddp is None or (mid_epoch and not ddp.get("positions")):
            raise ValueError(
                "Cannot resume under DDP from a checkpoint written on one process: its data "
                "position and random states are one process's. Resume it on one process."
            )
        self.load_state_dict(ddp)  # the world size, checked on every rank
        if "shuffling" not in ddp:
            raise ValueError(
                "Cannot resume under DDP from this checkpoint: it was written by an earlier "
                "fitlens that drew the shuffled order from a seed, not from the one-process "
                "generator. Resume it with that version, or start a new run_dir."
            )
        for generator, saved in zip(self.generators, ddp["shuffling"], strict=True):
            generator.set_state(saved)  # the next orders, as the run would have drawn them
        mine = {**state, "rng": ddp["rngs"][self.rank]}
        if ddp.get("positions"):  # absent in epoch-end checkpoints written before they were kept
            mine["epoch_start"] = ddp["positions"][self.rank]
        return mine

    # -- the lens's reduction -----------------------------------------------------------------

    def attach(self, lens: Lens) -> None:
        """Make ``lens`` reduce its rows across ranks at each flush."""
        lens.reduce = self.gather_rows

    def gather_rows(self, rows: Rows) -> Rows:
        """`Lens`'s reduction hook: one ``all_gather`` of every rank's queued rows, carrying
        this rank's signal and whether its clock says a checkpoint is due; the ranks agree on
        both (`SharedInterrupt.agree`, `take_due`). Then the torchmetrics metrics in `synced`
        merge their states (their own collectives, not counted in `collectives`)."""
        self.collectives += 1
        flags = (self._local_signal(), float(self._time_due()))
        reduced, every = gather_rows_and_flags(rows, flags)
        self._agree_signal(every[:, 0])
        self._due = self._due or bool(every[:, 1].any())
        for metric in self.synced:
            metric.sync()
        return reduced

    # -- end ----------------------------------------------------------------------------------

    def failed(self, error: BaseException) -> None:
        """Say which rank failed, and why, on stderr (the other ranks are silent; torchrun stops
        them when this process exits) and in ``error``'s notes (Python 3.11+). A stop on
        SIGINT/SIGTERM is no failure: rank 0 has said it."""
        if isinstance(error, TrainingInterrupted):
            return
        self.failing = True
        line = f"fitlens: rank {self.rank} of {self.world} failed: {type(error).__name__}: {error}"
        if _peer_lost(error):
            line += (
                f"\nfitlens: rank {self.rank} of {self.world} was waiting for the other ranks in a "
                "collective (for at most ddp_timeout seconds): one of them failed, was killed or "
                "is stuck; its own `fitlens: rank R` message, or torchrun's summary, names it."
            )
        print(line, file=sys.stderr, flush=True)
        add_note = getattr(error, "add_note", None)
        if add_note is not None:
            add_note(line)

    def close(self, lens: Lens | None) -> None:
        """Detach from ``lens`` (recording ``params["collectives"]``: how many this fit call
        ran), restore warnings, and destroy the process group if ours.

        The caller must have dropped its own references to the DDP wrapper (`wrapped`): when
        the wrapper outlives a process group that `destroy_process_group` removed, freeing it
        later destroys the group from inside its reducer, with the GIL held, while a gloo
        worker thread waits for the GIL to free a finished collective's tensors: a deadlock
        (torch 2.13, seen as a resumed run whose rank 1 never exited).
        """
        if lens is not None:
            lens.reduce = None
            lens.history.params["collectives"] = self.collectives
        self._quiet.close()
        wrapper = weakref.ref(self.wrapped)
        self.wrapped = self.module
        if self.owns_group and dist.is_initialized():
            if not self.failing:
                # gloo's worker threads free a finished collective's tensors late, and that
                # needs the GIL when Python let go of them first; the group's destructor (run
                # when DDP's reducer goes) joins those threads holding the GIL: a deadlock at
                # the end of fit, seen under load. Waiting on a barrier lets them finish first.
                cuda = self.device.type == "cuda"
                dist.barrier(device_ids=[torch.cuda.current_device()] if cuda else None)
            if wrapper() is not None:  # held in a reference cycle: free it first
                gc.collect()
            dist.destroy_process_group()


def _peer_lost(error: BaseException) -> bool:
    """Whether ``error`` is a collective's report of a peer that did not take part (a timeout
    or a closed connection, as gloo and NCCL word them), not this rank's own fault."""
    if not isinstance(error, RuntimeError):
        return False
    text = str(error).lower()
    return any(
        mark in text
        for mark in ("timed out", "timeout", "connection closed", "connection reset", "peer")
    )


def _attempt_store(timeout: timedelta) -> dict[str, Any]:
    """Under torchrun's agent store, `init_process_group` arguments that keep each restart's
    keys apart (``{}`` otherwise: the default ``env://`` rendezvous).

    torchrun (2.13) hands every attempt of a ``--max-restarts`` run the same store, and the
    default group's keys (each rank's address) are named alike in each attempt: a restarted rank
    read its peer's address from the failed attempt and could not connect (pytorch/pytorch
    issue 167288). The prefix names the attempt (``TORCHELASTIC_RESTART_COUNT``).
    """
    env = os.environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_PORT" not in env:
        return {}
    store = dist.TCPStore(
        env.get("MASTER_ADDR", "localhost"),
        int(env["MASTER_PORT"]),
        int(env["WORLD_SIZE"]),
        is_master=False,  # the agent hosts it
        timeout=timeout,
    )
    attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    return {
        "store": dist.PrefixStore(f"fitlens/attempt_{attempt}", store),
        "rank": int(env["RANK"]),
        "world_size": int(env["WORLD_SIZE"]),
    }


def closed_on_error(init: Callable[..., None]) -> Callable[..., None]:
    """Decorates `Training.__init__`: when it raises after setting ``self.dist`` up, that rank
    names itself and the process group fit initialised is torn down (nothing else was built)."""

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except BaseException as e:
            ddp = getattr(self, "dist", None)
            if isinstance(ddp, Distributed):
                ddp.failed(e)
                ddp.close(None)
            raise

    return wrapper
