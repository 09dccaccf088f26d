"""One run on many processes: torchrun's environment, the process group, rank-0-only writes, DDP and SyncBN.

`torchrun --nproc-per-node N -m prunectl train ...` starts N copies of the command with RANK, WORLD_SIZE and
LOCAL_RANK set; each joins one process group (gloo on CPU, NCCL on CUDA), trains its shard of every global batch
(`prunectl.data.Shard`) in a DistributedDataParallel replica, and only rank 0 writes. The spec's batch size stays
the global batch, so the spec and run id do not depend on the number of processes.
"""

from __future__ import annotations

import atexit
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from prunectl import errors
from prunectl.data import Shard
from prunectl.errors import BadValueError, PrunectlError

T = TypeVar("T")
TIMEOUT = timedelta(minutes=30)  # a rank waiting at a collective for longer than this fails instead of hanging


@dataclass(frozen=True)
class World:
    """Where this process stands in its run: rank `rank` of `size` processes (`local_rank` on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, even: bool) -> Shard:
        return Shard(self.rank, self.size, even)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum `values` over the ranks (in place; every rank gets the same result)."""
        if self.distributed:
            dist.all_reduce(values)
        return values

    def on_main(self, action: Callable[[], T]) -> T:
        """Run `action` on rank 0 only (a write), then let every rank continue with its result (JSON values).

        A one-line error raised there is raised on every rank, so no rank waits forever for one that failed."""
        if not self.distributed:
            return action()
        outcome: dict[str, Any] = {}
        failure: BaseException | None = None
        if self.is_main:
            try:
                outcome["result"] = action()
            except PrunectlError as err:
                failure, outcome["error"] = err, [type(err).__name__, str(err)]
            except BaseException as err:
                failure, outcome["error"] = err, ["PrunectlError", f"rank 0 failed: {type(err).__name__}: {err}"]
        outcome = broadcast_json(outcome)
        if failure is not None:
            raise failure
        if "error" in outcome:
            kind, message = outcome["error"]
            error_type = getattr(errors, kind, PrunectlError)
            raise error_type(message) if isinstance(error_type, type) and issubclass(error_type, PrunectlError) \
                else PrunectlError(message)
        return outcome.get("result")  # type: ignore[return-value]

    def agree(self, value: T) -> T:
        """Rank 0's `value` on every rank (a JSON value): one decision, e.g. whether a checkpoint is there."""
        return broadcast_json({"value": value})["value"] if self.distributed else value


SINGLE = World()


def world_from_env() -> World:
    """The world torchrun (or Slurm via submitit's TorchDistributedEnvironment) describes in the environment."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise BadValueError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise BadValueError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local}")
    return World(rank, size, local)


def check_batch(batch_size: int, world: World) -> int:
    """The per-rank batch: the spec's (global) batch split evenly over the ranks, else a one-line error."""
    if batch_size % world.size:
        raise BadValueError(f"the global batch size {batch_size} does not divide over {world.size} processes "
                            f"(torchrun world size); use a batch size that is a multiple of {world.size} "
                            "or another --nproc-per-node")
    return batch_size // world.size


def rank_device(world: World, device: str | None) -> str | None:
    """The device of this rank: under torchrun "auto"/"cuda" mean this rank's own GPU, cuda:LOCAL_RANK."""
    if not world.distributed:
        return device
    wants_cuda = device == "cuda" or (device in (None, "auto") and torch.cuda.is_available())
    if wants_cuda:
        return f"cuda:{world.local_rank}"
    if device is not None and device.startswith("cuda:"):
        raise BadValueError(f"under torchrun every process takes its own GPU (cuda:LOCAL_RANK); pass --device cuda "
                            f"or auto, not {device}")
    return device


def join(world: World, device: torch.device) -> None:
    """Join the run's process group (once per process): NCCL for CUDA, gloo for CPU."""
    if not world.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT,
                            device_id=device if device.type == "cuda" else None)
    # Leave the group before the interpreter exits: gloo's threads destroyed at exit instead abort the process
    # ("terminate called without an active exception"), which torchrun reports as a failed job.
    atexit.register(_leave)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_json(value: Any) -> Any:
    """Rank 0's JSON value on every rank, sent as bytes in a tensor (nothing pickled crosses processes)."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    payload = json.dumps(value).encode() if dist.get_rank() == 0 else b""
    length = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(length, 0)
    data = torch.zeros(int(length.item()), dtype=torch.uint8, device=device)
    if dist.get_rank() == 0:
        data.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(data, 0)
    return json.loads(bytes(data.cpu().tolist()).decode())


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BN running statistics) on every rank: without SyncBN each rank's statistics follow its
    own shard, so they are made one before a rank evaluates or rank 0 checkpoints."""
    for buffer in model.buffers():
        dist.broadcast(buffer, 0)


def to_sync_batchnorm(module: nn.Module) -> nn.Module:
    """BatchNorm layers → SyncBatchNorm in place (CUDA only: SyncBN refuses CPU tensors). The SyncBN layers hold
    the same parameter and buffer tensors, so optimiser groups stay valid; behaviours see them as `_BatchNorm`
    (SyncBatchNorm is not a BatchNorm2d subclass)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, nn.SyncBatchNorm):
        return _swap(module, nn.SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                              module.track_running_stats), plain=type(module))
    for name, child in module.named_children():
        converted = to_sync_batchnorm(child)
        if converted is not child:
            module.add_module(name, converted)
    return module


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """SyncBatchNorm layers made by `to_sync_batchnorm` back to their own BatchNorm type (the same tensors), so
    what is saved and pruned afterwards is a plain model."""
    plain = getattr(module, "_prunectl_plain", None)
    if isinstance(module, nn.SyncBatchNorm) and plain is not None:
        return _swap(module, plain(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats))
    for name, child in module.named_children():
        reverted = revert_sync_batchnorm(child)
        if reverted is not child:
            module.add_module(name, reverted)
    return module


def _swap(old: _BatchNorm, new: _BatchNorm, plain: type | None = None) -> _BatchNorm:
    if old.affine:
        new.weight, new.bias = old.weight, old.bias
    new.running_mean, new.running_var = old.running_mean, old.running_var
    new.num_batches_tracked = old.num_batches_tracked
    new.train(old.training)
    if plain is not None:
        new._prunectl_plain = plain  # type: ignore[assignment]
    return new


__all__ = ["SINGLE", "World", "broadcast_buffers", "broadcast_json", "check_batch", "join", "rank_device",
           "revert_sync_batchnorm", "to_sync_batchnorm", "world_from_env"]
