"""A training DataLoader whose batch order is a pure function of (seed, epoch) and that resumes mid-epoch exactly.

``EpochSampler`` orders an epoch with ``torch.randperm`` seeded with ``seed + epoch`` (never the global RNG), pads
the order to a multiple of the world size and gives rank ``r`` of ``W`` the items ``r, r + W, ...``
(``DistributedSampler``'s rule). Rank and world size are ``torch.distributed``'s when initialised (then run
Lightning with ``use_distributed_sampler=False``).

``ResumableLoader`` counts the batches it hands out in the main process. Lightning asks for one batch at a time from a
loader with a length, so at a checkpoint this count is the batches already trained on in the epoch; Lightning saves
``state_dict()`` in the checkpoint and calls ``load_state_dict`` on resume, and the next iteration skips exactly those
batches. A state whose epoch is complete resumes at the start of the next epoch.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

STATE_VERSION = 1
# entries of the state that must match between the saving and the resuming loader
_MUST_MATCH = ("n", "batch_size", "seed", "shuffle", "world_size")


def rank_and_world_size() -> Tuple[int, int]:
    """(rank, world size) of ``torch.distributed`` when it is initialised, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler[int]):
    """The indices of one rank for the current epoch (see the module docstring); ``set_epoch`` selects it.

    ``rank`` and ``world_size`` (both or neither) default to those of ``torch.distributed`` at the time of
    use. ``start`` is the number of this rank's indices the next iteration leaves out (``ResumableLoader``
    sets it).
    """

    def __init__(
        self, n: int, *, seed: int = 0, shuffle: bool = True, rank: int | None = None, world_size: int | None = None
    ):
        if n < 0:
            raise ValueError(f"the number of items must be >= 0, got {n}")
        if (rank is None) != (world_size is None):
            raise ValueError(f"give both rank and world_size or neither (got rank={rank}, world_size={world_size})")
        if world_size is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank={rank}, world_size={world_size}")
        self.n = int(n)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self._rank = rank
        self._world_size = world_size
        self.epoch = 0
        self.start = 0

    def rank_and_world_size(self) -> Tuple[int, int]:
        if self._rank is not None:
            return self._rank, self._world_size
        return rank_and_world_size()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self, epoch: int) -> List[int]:
        """This rank's indices for ``epoch``, in order (a pure function of seed, epoch, rank and world size)."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + int(epoch))
            order = torch.randperm(self.n, generator=generator).tolist()
        else:
            order = list(range(self.n))
        rank, world_size = self.rank_and_world_size()
        total = math.ceil(self.n / world_size) * world_size
        if order and total > len(order):  # pad by repeating the start, as DistributedSampler does
            order = (order * math.ceil(total / len(order)))[:total]
        return order[rank:total:world_size]

    def __len__(self) -> int:
        return math.ceil(self.n / self.rank_and_world_size()[1])

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0  # applies to this iteration only
        return iter(self.indices(self.epoch)[start:])


class ResumableLoader(DataLoader):
    """DataLoader over ``dataset`` in batches of ``batch_size`` (the last may be smaller) in ``EpochSampler``
    order, with ``state_dict``/``load_state_dict`` for an exact mid-epoch resume (see the module docstring).

    ``set_epoch(e)`` (Lightning calls it on the sampler before every epoch) selects the order of epoch e.
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        collate_fn: Callable | None = None,
        num_workers: int = 0,
        persistent_workers: bool = False,
        pin_memory: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle, rank=rank, world_size=world_size)
        super().__init__(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate_fn,
            num_workers=num_workers,
            persistent_workers=persistent_workers and num_workers > 0,
            pin_memory=pin_memory,
            drop_last=False,
            # DataLoader draws its workers' base seed from this generator, not from the global RNG
            generator=torch.Generator().manual_seed(int(seed)),
        )
        self._progress: Tuple[int, int] | None = None  # (epoch, batches of it handed out so far)
        self._resume: Tuple[int, int] | None = None  # (epoch, batches to skip) from load_state_dict

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        # A generator: the epoch is read, and the underlying iterator (and its workers) created, on the first
        # next(), after Lightning's set_epoch (Lightning calls iter() before set_epoch when it resumes).
        epoch = self.sampler.epoch
        skip = 0
        if self._resume is not None and self._resume[0] == epoch:
            skip = self._resume[1]
        self._resume = None
        self.sampler.start = skip * self.batch_size
        self._progress = (epoch, skip)
        for batch in super().__iter__():
            self._progress = (epoch, self._progress[1] + 1)
            yield batch

    def state_dict(self) -> Dict[str, Any]:
        """Epoch and number of its batches handed out so far, with what must match on resume (plain ints)."""
        epoch, batches = self._progress if self._progress is not None else (self.sampler.epoch, 0)
        return {
            "version": STATE_VERSION,
            "epoch": epoch,
            "batches": batches,
            "n": self.sampler.n,
            "batch_size": self.batch_size,
            "seed": self.sampler.seed,
            "shuffle": self.sampler.shuffle,
            "world_size": self.sampler.rank_and_world_size()[1],
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Resume where ``state`` (from ``state_dict``) left off: the rest of its epoch, or the next epoch.

        A state saved mid-epoch with other data size, batch size, seed, shuffle or world size is a ValueError
        (the rest of that epoch is not defined any more); a finished epoch resumes at the next one regardless.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(
                f"training loader state has version {state.get('version')!r}, this physml-md reads version "
                f"{STATE_VERSION}; resume with the physml-md version that wrote the checkpoint"
            )
        epoch, batches = int(state["epoch"]), int(state["batches"])
        saved_length = math.ceil(math.ceil(int(state["n"]) / int(state["world_size"])) / int(state["batch_size"]))
        if batches >= saved_length:
            epoch, batches = epoch + 1, 0
        current = self.state_dict()
        differ = [f"{key} {state[key]!r} -> {current[key]!r}" for key in _MUST_MATCH if state[key] != current[key]]
        if differ and batches > 0:
            raise ValueError(
                f"cannot resume the training data order in the middle of epoch {epoch}: the checkpoint was written "
                f"with other settings ({'; '.join(differ)}). Resume with the same training data, batch size, "
                "shuffle seed and number of devices, or resume from a checkpoint written at the end of an epoch"
            )
        self.sampler.set_epoch(epoch)
        self._resume = (epoch, batches)
        self._progress = (epoch, batches)
