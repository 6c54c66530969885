"""``BaseDataLoader``: everything ``tfd.DataLoader`` is, for a given number of workers.

``tfd.DataLoader`` (``loader.py``) is this class plus ``num_workers="auto"``, which measures loaders
of this class (``tuning.py``); so the tuner never needs the class that calls it.

NOTE [ Worker lifecycle ]
The dataset crosses into each worker as configuration (pickled for ``spawn``, copied for
``fork``); sources open connections lazily and check the pid, so nothing opened in the parent is
used in a child. Map-style datasets are driven by an :class:`~tensorfeed.sampling.EpochSampler`
in the main process, so the batch sequence depends only on ``(seed, epoch)``, never on
``num_workers``. Iterable tensorfeed streams are wrapped in ``stream.batches(batch_size)`` and run
with ``batch_size=None``: each worker slices whole batches from Arrow and converts them itself.
Each worker seeds ``random``, numpy and torch from ``(seed, epoch, rank, worker)``.

Checkpoints are torchdata's (``state_dict`` of the sampler, or of each worker's stream iterator,
taken for the batch actually handed to the training loop) plus ``{"epoch", "dataset", "seed",
"ranks"}`` under the ``"tensorfeed"`` key so a state dict from another dataset is refused, not
silently misapplied. A map-style checkpoint is the job's (``loader_state.py``, NOTE [ Elastic
map-style checkpoints ] in ``epoch_progress.py``): it loads on any number of workers and ranks.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import IterableDataset
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.stateful_dataloader import (
    _StatefulSingleProcessDataLoaderIter,
)

from . import job_view, key_order, loader_state, stream_state
from .collate_fn import Collate
from .dataset import MapDataset, StreamDataset, _BatchIterable
from .device_prefetch import _check_device, _DevicePrefetcher, _to_device
from .epoch_progress import Done
from .errors import ConfigError, StateError
from .loader_stats import LoaderStats, _EvenRanksIterator, _StatsIterator
from .sampling import (
    EpochBatchSampler,
    EpochSampler,
    dist_rank_world,
    seed_worker_generators,
    shard_seed,
)
from .worker_restarts import RestartingIterator

# Library logging: silent unless the application configures the ``tensorfeed`` loggers.
log = logging.getLogger("tensorfeed.loader")
log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class _WorkerInit:
    """Seeds a worker's generators from (seed, epoch, rank, worker), then runs the user's hook."""

    seed: int
    epoch: int
    rank: int
    user_fn: Callable[[int], None] | None = None

    def __call__(self, worker_id: int) -> None:
        seed_worker_generators(shard_seed(self.seed, self.epoch, self.rank, worker_id))
        if self.user_fn is not None:
            self.user_fn(worker_id)


class BaseDataLoader(StatefulDataLoader):
    """``tfd.DataLoader`` with ``num_workers`` an int (see :class:`tensorfeed.DataLoader`, whose
    documentation this is; the tuner measures throughput with this class)."""

    def __init__(
        self,
        dataset: Any,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Any = None,
        batch_sampler: Any = None,
        num_workers: int | str = 0,
        collate_fn: Callable[[Any], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: Any = None,
        generator: torch.Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        snapshot_every_n_steps: int | None = 1,
        seed: int = 0,
        batch_transform: Callable[[Any], Any] | None = None,
        float_dtype: torch.dtype = torch.float32,
        ddp: str = "pad",
        device: str | torch.device | None = None,
        prefetch_to_device: int = 0,
        max_worker_restarts: int = 0,
        on_change: str = "raise",
    ) -> None:
        workers = self._resolve_workers(num_workers, dataset, batch_size)
        self.seed = int(seed)
        self.stats = LoaderStats()
        self._device = _check_device(device, prefetch_to_device)
        self._prefetch_to_device = prefetch_to_device
        if not isinstance(max_worker_restarts, int) or max_worker_restarts < 0:
            raise ConfigError(
                f"max_worker_restarts must be an int >= 0, got {max_worker_restarts!r}"
            )
        self._max_worker_restarts = max_worker_restarts  # NOTE [ Worker restarts ]
        if self._device is not None and self._device.type == "cuda":
            pin_memory = True
        self._next_epoch = 0
        self.epoch = 0
        self._source = dataset
        self._rank = dist_rank_world()[0]
        if not isinstance(dataset, StreamDataset):
            job_view.share(dataset)  # NOTE [ One view of the source for the job ]
        self._epoch_sampler: EpochSampler | None = None
        if ddp not in ("pad", "drop"):
            raise ConfigError(f"ddp must be 'pad' or 'drop', got {ddp!r}")
        self._ddp = ddp

        if collate_fn is None:
            collate_fn = Collate(float_dtype, batch_transform)
        elif batch_transform is not None:
            collate_fn = _Compose(collate_fn, batch_transform)

        if isinstance(dataset, StreamDataset):
            if batch_sampler is not None or sampler is not None:
                raise ConfigError("a tensorfeed stream cannot take a sampler or batch_sampler")
            if shuffle:
                raise ConfigError(
                    "shuffle=True does not apply to a stream: give the stream a shuffle_buffer"
                )
            if batch_size is not None:
                dataset = _BatchIterable(dataset, batch_size, drop_last)
                batch_size, drop_last = None, False
            shuffle = None
        elif not isinstance(dataset, IterableDataset) and batch_sampler is None:
            if sampler is None:
                sampler = EpochSampler(len(dataset), bool(shuffle), self.seed, ddp=ddp)
                shuffle = None
            if isinstance(sampler, EpochSampler) and batch_size is not None:
                batch_sampler = EpochBatchSampler(
                    sampler, batch_size, drop_last, as_array=isinstance(dataset, MapDataset)
                )
                self._epoch_sampler = sampler
                if workers == 0 and callable(getattr(dataset, "prefetch_hint", None)):
                    batch_sampler.prefetch_hint = dataset.prefetch_hint
                sampler, batch_size, drop_last = None, 1, False
        self._on_change = self._order_by_keys(on_change)  # NOTE [ Continuing over changed data ]
        self._source_changes: dict[str, Any] | None = None
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        # torch's timeout= is for collecting a batch from workers (torch and torchdata assert it
        # is 0 without workers); a stream read in this process applies it itself
        self._inline_timeout = 0.0
        if workers == 0 and timeout:
            if not isinstance(dataset, _BatchIterable | StreamDataset):
                raise ConfigError(
                    f"timeout={timeout} needs num_workers >= 1 for a map-style dataset (it "
                    "bounds the wait for a worker's batch); tensorfeed streams apply it without "
                    "workers too"
                )
            self._inline_timeout, timeout = float(timeout), 0

        with warnings.catch_warnings():
            # torchdata 0.11 calls a deprecated torch API in its constructor: silenced here
            # only, for the user's sake (no global warning filter)
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
            super().__init__(
                dataset,
                batch_size=batch_size,
                shuffle=shuffle,
                sampler=sampler,
                batch_sampler=batch_sampler,
                num_workers=workers,
                collate_fn=collate_fn,
                pin_memory=pin_memory,
                drop_last=drop_last,
                timeout=timeout,
                worker_init_fn=_WorkerInit(self.seed, 0, self._rank, worker_init_fn),
                multiprocessing_context=multiprocessing_context,
                generator=generator,
                prefetch_factor=prefetch_factor,
                persistent_workers=persistent_workers,
                pin_memory_device=pin_memory_device,
                in_order=in_order,
                snapshot_every_n_steps=snapshot_every_n_steps,
            )

    def _order_by_keys(self, on_change: str) -> str:
        """With ``on_change="continue"``, order the epoch by the rows' keys (key_order.py)."""
        if on_change not in ("raise", "continue"):
            raise ConfigError(f"on_change must be 'raise' or 'continue', got {on_change!r}")
        if on_change == "raise":
            return on_change
        if getattr(self._source, "_continues_over_changes", False):
            return on_change  # a stream that moves its own positions on (KafkaStream)
        keys_of = getattr(self._source, "key_index", None)
        sampler = self._epoch_sampler
        if not callable(keys_of) or sampler is None or type(sampler) is not EpochSampler:
            raise ConfigError(
                "on_change='continue' needs a map-style source with a key (SQLDataset, the file "
                "datasets, LakeDataset with key=) read by the loader's own sampler "
                "(shuffle=True/False, a batch_size), or KafkaStream: "
                f"{self._source!r} does not qualify (a SQLStream needs key= and no shuffle buffer)"
            )
        sampler.order_keys = key_order.as_keys(keys_of(), self._source.describe())
        return on_change

    @staticmethod
    def _resolve_workers(num_workers: int | str, dataset: Any, batch_size: int | None) -> int:
        """The worker count to start (``tfd.DataLoader`` also resolves ``"auto"``)."""
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(
                f"num_workers must be a non-negative int or 'auto', got {num_workers!r}"
            )
        return num_workers

    # -- epochs -----------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter(loader)`` run epoch ``epoch`` (a new shuffle order)."""
        self._next_epoch = int(epoch)

    def _prepare_epoch(self) -> None:
        resuming = self.next_iter_state is not None
        if not resuming:
            self.epoch = self._next_epoch
        self._next_epoch = self.epoch + 1
        sampler = self._epoch_sampler or self.sampler
        if hasattr(sampler, "set_epoch") and not resuming:
            sampler.set_epoch(self.epoch)
        user_batches = self.batch_sampler
        if (
            not isinstance(user_batches, EpochBatchSampler)
            and hasattr(user_batches, "set_epoch")
            and not resuming
        ):
            user_batches.set_epoch(self.epoch)  # e.g. LakeDataset.locality_sampler(batch_size=)
        ds = self.dataset
        if _pins_epochs(ds) and not resuming:
            ds.set_epoch(self.epoch)
            job_view.share(self._source)  # the epoch's view is rank 0's
        # DataLoader forbids re-assigning worker_init_fn after __init__ (it is guarded by
        # __setattr__ only for a few names), so rebuild it through object.__setattr__.
        object.__setattr__(
            self,
            "worker_init_fn",
            _WorkerInit(self.seed, self.epoch, self._rank, self.worker_init_fn.user_fn),
        )

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        if isinstance(self._source, StreamDataset):
            # torch's timeout= covers workers only; a stream applies it itself in this process
            self._source.loader_timeout = self._inline_timeout

        def start() -> Iterator[Any]:
            self._prepare_epoch()
            self._before_workers()
            return super(BaseDataLoader, self).__iter__()

        limit = self._max_worker_restarts
        inner: Iterator[Any] = (
            RestartingIterator(self, start, limit) if self.num_workers else start()
        )
        self.stats = LoaderStats()
        if self._source_changes is not None:  # this is the epoch that continued over them
            self.stats.source_changes, self._source_changes = self._source_changes, None
        if isinstance(self.dataset, _BatchIterable) and dist_rank_world()[1] > 1:
            inner = _EvenRanksIterator(inner, self._ddp, self.stats)
        inner = _StatsIterator(inner, self.stats)
        if self._device is not None and self._prefetch_to_device > 0:
            inner = _DevicePrefetcher(inner, self._device, self._prefetch_to_device)
        elif self._device is not None:
            inner = (_to_device(b, self._device, False) for b in inner)
        return inner

    def _get_iterator(self) -> Any:
        if self.num_workers == 0 and not isinstance(self.dataset, IterableDataset):
            me: Any = self  # torchdata leaves next_iter_state untyped
            state, me.next_iter_state = me.next_iter_state, None
            return _LeanSingleProcessIter(self, state)
        return super()._get_iterator()

    def _before_workers(self) -> None:
        """Let the dataset load what its forked workers should share (SQLDataset's kept rows)
        before they start; spawned workers would each receive a pickled copy, so not then."""
        hook = getattr(self.dataset, "_before_workers", None)
        if self.num_workers == 0 or not callable(hook):
            return
        ctx = self.multiprocessing_context
        method = (
            ctx.get_start_method()
            if ctx is not None
            else torch.multiprocessing.get_start_method(allow_none=True)
        )
        if (method or torch.multiprocessing.get_all_start_methods()[0]) == "fork":
            hook()

    # -- checkpoints ------------------------------------------------------------------------
    def _identity(self) -> str:
        fp = getattr(self._source, "fingerprint", None)
        if callable(fp):
            return str(fp())
        if isinstance(self._source, StreamDataset):
            return self._source.describe()
        n = len(self._source) if hasattr(self._source, "__len__") else -1
        return f"{type(self._source).__name__}:{n}"

    def _elastic_sampler(self) -> EpochSampler | None:
        """The EpochSampler driving this map-style loader, whose state is the job's position
        (NOTE [ Elastic map-style checkpoints ] in epoch_progress.py); None for streams and
        for samplers of the user's own."""
        if self._epoch_sampler is not None:
            return self._epoch_sampler
        if isinstance(self.sampler, EpochSampler) and self.batch_sampler is None:
            return self.sampler  # batch_size=None: one index per step
        return None

    def _indices_per_step(self) -> int:
        return self.batch_sampler.batch_size if self._epoch_sampler is not None else 1

    def state_dict(self) -> dict[str, Any]:
        """The loader's checkpoint: the whole job's position (under ``torch.distributed`` a
        collective: call it on every rank, each gets the same state). It loads into any number
        of workers and ranks (a stream with a shuffle buffer: the same numbers only)."""
        state = super().state_dict()
        ranks = dist_rank_world()[1]
        sampler = self._elastic_sampler()
        if sampler is not None:
            local = copy.deepcopy(loader_state.sampler_state(state))
            steps = loader_state.steps_since_snapshot(state)
            if (
                steps
                and isinstance(local, dict)
                and local.get("segment") == sampler._segment.as_dict()
            ):
                local["yielded"] = min(
                    int(local["yielded"]) + steps * self._indices_per_step(), sampler._share_size
                )
            states = [local]
            if ranks > 1 and sampler.world_size == ranks:
                import torch.distributed as dist

                states = [None] * ranks
                dist.all_gather_object(states, local)
            # a sampler given explicit ranks without a process group: this rank's state only
            job = sampler.merge_states(states) if len(states) == sampler.world_size else local
            state = loader_state.for_workers(state, job, self.num_workers, self.seed)
        ours: dict[str, Any] = {
            "epoch": self.epoch,
            "dataset": self._identity(),
            "seed": self.seed,
            "ranks": ranks,
        }
        if isinstance(self.dataset, _BatchIterable | StreamDataset):
            # every rank's shard positions: one state for the job (NOTE [ Elastic stream
            # checkpoints ] in stream_state.py)
            per_rank = stream_state.gather(state, ranks)
            state = per_rank[0]
            ours["stream"] = {"workers": self.num_workers, "other_ranks": per_rank[1:]}
        state["tensorfeed"] = ours
        if self._on_change == "continue" and sampler is not None:  # what is done, by key
            done = Done.from_state(job["done"], sampler._sequence_length(), "the job's state")
            keys, epoch = sampler.order_keys, int(job["epoch"])
            assert keys is not None  # set by _order_by_keys
            ours["cut"] = key_order.cut(keys, sampler.shuffle, sampler.seed, epoch, done)
            ours["source_name"] = self._source.describe()
        # What the source was, to name what changed if it no longer matches (SQL keys, files).
        manifest = getattr(self._source, "_change_manifest", None)
        if callable(manifest):
            ours["manifest"] = manifest()
        # A source that pins what an epoch reads (KafkaStream's end offsets) keeps it here.
        source_state = getattr(self._source, "_checkpoint_state", None)
        if callable(source_state):
            ours["source"] = source_state()
        # A sampler fed by the training loop (HardExampleSampler.update) has state the loop
        # changed after torchdata's snapshot of it: save the loop's view too.
        loop = getattr(self._epoch_sampler or self.sampler, "loop_state_dict", None)
        if callable(loop):
            ours["sampler_loop"] = loop()
        # A source that acts on checkpoints (KafkaStream(commit_on_checkpoint=True)) sees them.
        hook = getattr(self._source, "_on_checkpoint", None)
        if callable(hook):
            hook(state)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; every field is checked here (a StateError names the
        wrong one), not at the first batch."""
        if not isinstance(state_dict, dict):
            raise StateError(f"a state dict must be a dict, got {type(state_dict).__name__}")
        ours = loader_state.check_block(state_dict.get("tensorfeed"))
        changed = ours["dataset"] != self._identity()
        if changed and not self._continues_over(ours):
            loader_state.raise_if_changed(self._source, ours.get("manifest"))
            raise StateError(
                f"this state dict is from dataset {ours['dataset']!r}, not {self._identity()!r}"
            )
        if ours["seed"] != self.seed:
            raise StateError(f"this state dict was made with seed={ours['seed']}, not {self.seed}")
        rest = {k: v for k, v in state_dict.items() if k != "tensorfeed"}
        loader_state.workers_of(rest)  # the shape is torchdata's
        # What the source pinned for the epoch (Kafka's end offsets, a lake stream's files),
        # before a stream's positions are regrouped over it.
        restore = getattr(self._source, "_restore_checkpoint_state", None)
        if callable(restore):
            restore(ours.get("source"))
        sampler = self._elastic_sampler()
        if sampler is not None:
            job = loader_state.sampler_state(rest)
            if changed:  # on_change="continue": what is done, found again over today's rows
                job = self._continue_job(job, ours)
            epoch = sampler.parse_state(job)[0]
            if epoch != ours["epoch"]:
                raise StateError(
                    f"the sampler state is of epoch {epoch}, the loader's of epoch {ours['epoch']}"
                )
            rest = loader_state.for_workers(rest, job, self.num_workers, self.seed)
        elif isinstance(self.dataset, _BatchIterable | StreamDataset) and "stream" in ours:
            rest = self._stream_rank_state(rest, ours)
        elif isinstance(self.dataset, IterableDataset):
            loader_state.check_stream_topology(
                rest, ours, self.num_workers, dist_rank_world()[1], self._identity()
            )
        super().load_state_dict(rest)
        if "sampler_loop" in ours:
            loop_sampler: Any = self._epoch_sampler or self.sampler
            loop_sampler.load_loop_state_dict(ours["sampler_loop"])
        self.epoch = int(ours["epoch"])
        self._next_epoch = self.epoch
        if _pins_epochs(self.dataset):
            self.dataset.set_epoch(self.epoch)
            job_view.share(self._source)

    def _continues_over(self, ours: dict[str, Any]) -> bool:
        """Whether a checkpoint of changed data continues (on_change="continue", same source)."""
        if self._on_change != "continue" or "cut" not in ours:
            return False
        if ours.get("source_name") != self._source.describe():
            raise StateError(
                f"this state dict is from {ours.get('source_name')!r}, not "
                f"{self._source.describe()!r}: on_change='continue' resumes the same source only"
            )
        return True

    def _continue_job(self, job: Any, ours: dict[str, Any]) -> dict[str, Any]:
        sampler = self._elastic_sampler()
        assert sampler is not None and sampler.order_keys is not None
        if not isinstance(job, dict) or not isinstance(job.get("epoch"), int):
            raise StateError("the checkpoint holds no job state of the loader's sampler")
        done, counts = key_order.resume(
            ours["cut"], sampler.order_keys, sampler.shuffle, sampler.seed, job["epoch"]
        )
        self._source_changes = counts
        log.warning(
            "%s changed since this checkpoint; continuing its epoch: %s",
            self._source.describe(),
            counts,
        )
        return {**job, "num_items": sampler.num_items, "done": done.as_dict()}

    # -- this rank alone (restarting its workers) ----------------------------------------------
    def _rank_state(self) -> dict[str, Any]:
        """This rank's torchdata state: what its own workers need to restart from the last
        batch handed out (no collective, unlike :meth:`state_dict`)."""
        return super().state_dict()

    def _resume_rank(self, state: dict[str, Any]) -> None:
        """Load a :meth:`_rank_state` of this loader (same epoch, workers and rank)."""
        super().load_state_dict(state)

    def _stream_rank_state(self, rank0: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
        """This rank's torchdata state from a stream's job checkpoint: its own part on the same
        topology, else the source's regrouped positions (NOTE [ Elastic stream checkpoints ])."""
        taken_ranks = int(ours.get("ranks", 1))
        workers, parts = stream_state.job_states(rank0, ours["stream"], taken_ranks)
        rank, ranks = dist_rank_world()
        source: StreamDataset = self._source
        epoch = int(ours["epoch"])
        same = (workers, taken_ranks) == (self.num_workers, ranks)
        # positions some batches old (snapshot_every_n_steps > 1) do only on the same topology
        positions = copy.deepcopy(
            stream_state.shard_positions(parts, source.describe(), epoch, exact=not same)
        )
        check = getattr(source, "_check_resume", None)  # can the source still serve them?
        moved = check(positions, self._on_change == "continue") if callable(check) else None
        if moved is not None:  # on_change="continue" moved some (NOTE in kafka/stream.py)
            self._source_changes = moved
            log.warning(
                "%s changed since this checkpoint; continuing: %s", source.describe(), moved
            )
            stream_state.shard_positions(parts, source.describe(), epoch, exact=True)
            same = False  # this rank's state is rebuilt from the moved positions
        if same:
            return copy.deepcopy(parts[rank])
        per_rank = max(self.num_workers, 1)
        regrouped = source._regroup(epoch, positions, ranks * per_rank)
        mine = regrouped[rank * per_rank : (rank + 1) * per_rank]
        return stream_state.for_shards(mine, source.describe(), epoch, self.num_workers, self.seed)


def _pins_epochs(ds: Any) -> bool:
    """An iterable of ours whose epoch is started in this process, before the workers (a stream
    pins what the epoch reads; KafkaWindows through its stream)."""
    return isinstance(ds, _BatchIterable | StreamDataset) or (
        isinstance(ds, IterableDataset) and callable(getattr(ds, "_restore_checkpoint_state", None))
    )


class _LeanSingleProcessIter(_StatefulSingleProcessDataLoaderIter):
    """torchdata's in-process iterator, minus the ``record_function`` that torch's ``__next__``
    opens for every batch even when no profiler runs: measured ~55 us of a ~250 us batch of 1024
    in-memory rows (benchmarks/loader.py). Under an active profiler it is torch's ``__next__``,
    so the ``enumerate(DataLoader)`` spans still show up. Map-style datasets only (torch's
    ``__next__`` also checks an IterableDataset's reported length)."""

    def __next__(self) -> Any:
        if torch.autograd._profiler_enabled():
            return super().__next__()
        try:
            if self._sampler_iter is None:
                self._reset()  # type: ignore[call-arg]
            data = self._next_data()
            self._num_yielded += 1
            return data
        except StopIteration:
            self._finished = True
            raise


@dataclass(frozen=True)
class _Compose:
    collate_fn: Callable[[Any], Any]
    batch_transform: Callable[[Any], Any]

    def __call__(self, batch: Any) -> Any:
        return self.batch_transform(self.collate_fn(batch))
