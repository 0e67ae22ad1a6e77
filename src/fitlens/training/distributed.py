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
* Checkpoints and resume: rank 0 alone has the ``run_dir`` and writes at epoch ends only
  (`Distributed.state_dict`: world size, shuffling generators, every rank's random states, gathered
  by `gather_rng`); on resume rank 0 restores as on one process and `share_resume` broadcasts
  the checkpoint to the other ranks. Another world size is refused.
* Faults: a failing rank names itself on stderr (`Distributed.failed`); torchrun stops the rest.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler

from fitlens.adapters.data import ArrayData, BatchSource
from fitlens.adapters.rng import capture_rng, restore_rng
from fitlens.safety.signals import InterruptGuard
from fitlens.training.reduction import SyncedMetric, from_rank_0, gather_rows, sum_over_ranks
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


class DefaultSignals(InterruptGuard):
    """Under DDP, SIGINT/SIGTERM keep their default action (the process ends; torchrun stops
    the others): a checkpoint taken by rank 0 alone, mid-epoch, could not be resumed."""

    def __enter__(self) -> DefaultSignals:
        return self  # installs no handler


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
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
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

    def gather_rng(self) -> None:
        """Every rank's random states, to rank 0's next checkpoint (one collective; call on
        every rank at the epoch end, before the checkpoint)."""
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, capture_rng())
        self.collectives += 1
        self._rngs = states

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the DDP run (rank 0 writes it): the world size, the
        state of the sharded data's shuffling generators and every rank's random states at the
        epoch end."""
        shuffling = [g.get_state() for g in self.generators]
        return {"world": self.world, "shuffling": shuffling, "rngs": self._rngs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore on rank 0 (inside the run safety's restore); refuses another world size."""
        if int(state["world"]) != self.world:
            raise ValueError(
                f"Cannot resume: the checkpoint was written by {state['world']} processes, this "
                f"run has {self.world}. Each rank's data shard and random state belong to the "
                f"world size; resume with `torchrun --nproc-per-node {state['world']}` (x "
                "nodes), or start a new run_dir."
            )

    def share_resume(
        self, pending: dict[str, Any] | None, first: int, parts: dict[str, Any]
    ) -> int:
        """After rank 0's run safety restored a checkpoint: hand it to every rank (one
        broadcast) and restore it there; returns the epoch to start at (the same everywhere).

        Args:
            pending: rank 0's restored checkpoint (None: a fresh start); ignored elsewhere.
            first: this rank's start epoch. parts: ``model``, ``optimizer``, ``scheduler``,
                ``callbacks``, ``history``, ``lens`` and ``extra`` (run safety's other parts by
                name, such as the update's scaler and the LR schedule) to restore on the other
                ranks.
        """
        box: list[Any] = [pending if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        self.collectives += 1
        state = box[0]
        if state is None:
            return first
        position = state["position"]
        if int(position["step"]) != 0:
            raise ValueError(
                "Cannot resume under DDP from a mid-epoch checkpoint (written on one process?): "
                "under DDP checkpoints are taken at epoch ends. Resume it on one process."
            )
        ddp = state["parts"]["ddp"]
        for generator, saved in zip(self.generators, ddp["shuffling"], strict=True):
            generator.set_state(saved)  # the next epoch's order, as the run would have drawn it
        if self.rank != 0:
            self.module.load_state_dict(state["model"])
            parts["optimizer"].load_state_dict(state["optimizer"])
            if parts["scheduler"] is not None and state["scheduler"] is not None:
                parts["scheduler"].load_state_dict(state["scheduler"])
            for cb, cb_state in zip(parts["callbacks"], state["callbacks"], strict=False):
                cb.load_state_dict(cb_state)
            parts["history"].load_state_dict(state["history"])
            lens: Lens = parts["lens"]
            lens.load_state_dict(state["lens"], epoch_means=False)
            for name, part in parts.get("extra", {}).items():
                if name in state["parts"]:
                    part.load_state_dict(state["parts"][name])
            restore_rng(ddp["rngs"][self.rank])
        return int(position["epoch"])

    # -- the lens's reduction -----------------------------------------------------------------

    def attach(self, lens: Lens) -> None:
        """Make ``lens`` reduce its rows across ranks at each flush."""
        lens.reduce = self.gather_rows

    def gather_rows(self, rows: Rows) -> Rows:
        """`Lens`'s reduction hook: one ``all_gather`` of every rank's queued rows; then the
        torchmetrics metrics in `synced` merge their states (their own collectives, not
        counted in `collectives`)."""
        self.collectives += 1
        reduced = gather_rows(rows)
        for metric in self.synced:
            metric.sync()
        return reduced

    # -- end ----------------------------------------------------------------------------------

    def failed(self, error: BaseException) -> None:
        """Say which rank failed, and why, on stderr (the other ranks are silent; torchrun stops
        them when this process exits) and in ``error``'s notes (Python 3.11+)."""
        self.failing = True
        line = f"fitlens: rank {self.rank} of {self.world} failed: {type(error).__name__}: {error}"
        print(line, file=sys.stderr, flush=True)
        add_note = getattr(error, "add_note", None)
        if add_note is not None:
            add_note(line)

    def close(self, lens: Lens | None) -> None:
        """Detach from ``lens`` (recording ``params["collectives"]``: how many this fit call
        ran), restore warnings, and destroy the process group if ours."""
        if lens is not None:
            lens.reduce = None
            lens.history.params["collectives"] = self.collectives
        self._quiet.close()
        if self.owns_group and dist.is_initialized():
            if not self.failing:
                # gloo's worker threads free a finished collective's tensors late, and that
                # needs the GIL when Python let go of them first; the group's destructor (run
                # when DDP's reducer goes) joins those threads holding the GIL: a deadlock at
                # the end of fit, seen under load. Waiting on a barrier lets them finish first.
                cuda = self.device.type == "cuda"
                dist.barrier(device_ids=[torch.cuda.current_device()] if cuda else None)
            dist.destroy_process_group()


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
