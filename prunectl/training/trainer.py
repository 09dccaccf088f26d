"""The training loop: SGD + step schedule, the methods' training behaviours, and exact resume from checkpoints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from prunectl import paths
from prunectl.core.hparams import OptimSpec, ScheduleSpec
from prunectl.core.io import load_tensors, save_tensors, tensors_metadata, write_text
from prunectl.core.validate import check_checkpoint, check_finite
from prunectl.data import Dataset, Shard
from prunectl.errors import ArtifactError, BadValueError
from prunectl.training import distributed
from prunectl.training import precision as precision_module
from prunectl.training.distributed import SINGLE, World
from prunectl.training.hooks import TrainingBehaviour


@dataclass(frozen=True)
class Progress:
    """What the trainer reports after every batch and epoch (the CLI draws a progress bar from it)."""

    epoch: int
    epochs: int
    batch: int
    batches: int
    metrics: Mapping[str, float] | None = None  # set at the end of an epoch


@dataclass
class _State:
    epoch: int = 0  # epochs completed
    wall_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's data order, augmentation and dropout: a pure function, so resume is exact."""
    digest = hashlib.sha256(f"prunectl:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def resolve_device(device: str | None) -> torch.device:
    """"auto"/None → CUDA when present, else CPU; a device that is not there is a one-line error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise BadValueError(f"unknown device '{device}' (use cpu, cuda, cuda:N or auto)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BadValueError(f"device '{device}' asked for, but CUDA is not available here; use --device cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise BadValueError(f"device '{device}' is not supported (use cpu, cuda, cuda:N or auto)")
    return resolved


def evaluate(model: nn.Module, data: Dataset, batch_size: int, device: torch.device, *, world: World = SINGLE,
             autocast: Callable[[], Any] | None = None) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy on the test split (on many ranks: each its shard, then summed).

    Sums stay on the device until the end: one host synchronisation per evaluation, not one per batch."""
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, images
    shard = world.shard(even=False) if world.distributed else Shard()
    with torch.no_grad():
        for x, y in data.batches("test", batch_size * world.size, shuffle=False, augment=False, seed=0,
                                 device=device, shard=shard):
            if len(y) == 0:
                continue
            with (autocast or contextlib.nullcontext)():
                logits = model(x)
            totals[0] += F.cross_entropy(logits.float(), y, reduction="sum")
            totals[1] += (logits.argmax(1) == y).sum()
            totals[2] += len(y)
    loss_sum, correct, n = world.all_sum(totals).tolist()
    return {"test_acc": 100.0 * correct / n, "test_loss": loss_sum / n}


BEHAVIOUR_PREFIX = "behaviour."  # checkpoint keys of behaviour state: behaviour.<index in the list>.<its key>


def build_optimizer(model: nn.Module, optim: OptimSpec, behaviours: Sequence[TrainingBehaviour]) -> torch.optim.SGD:
    """SGD over a default group (every parameter no behaviour claims, with the run's settings) followed by the
    behaviours' groups in order, each with its own settings; a group keeps its `name` and `lr_scale`."""
    claimed: dict[int, str] = {}
    groups: list[dict[str, Any]] = []
    for behaviour in behaviours:
        for group in behaviour.param_groups(model):
            for param in group.params:
                if id(param) in claimed:
                    raise BadValueError(f"parameter group '{group.name}' takes a parameter that group "
                                        f"'{claimed[id(param)]}' already has")
                claimed[id(param)] = group.name
            overrides = {"weight_decay": group.weight_decay, "momentum": group.momentum, "nesterov": group.nesterov}
            groups.append({"params": list(group.params), "name": group.name, "lr_scale": group.lr_scale,
                           "lr": optim.lr * group.lr_scale, **{k: v for k, v in overrides.items() if v is not None}})
    default = [p for p in model.parameters() if id(p) not in claimed]
    groups.insert(0, {"params": default, "name": "default", "lr_scale": 1.0})
    try:
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay,
                               nesterov=optim.nesterov)
    except ValueError as err:  # e.g. Nesterov with a group's momentum 0
        raise BadValueError(f"bad optimiser group settings: {err}") from None


class Trainer:
    """Trains `model` in `run_dir`, checkpointing every epoch; `fit()` resumes from the last checkpoint.

    `behaviours` are the methods' training behaviours (prunectl/training/hooks.py), called in list order at
    each hook. Plain options: `save_init` writes the weights as they are before the first step to
    `init.safetensors` (lottery tickets); `snapshot_epochs` writes the weights after these epochs (late
    rewinding); `progress` is called with a `Progress` after every batch and epoch.

    Speed and scale (prunectl/training/precision.py, distributed.py): `precision` "bf16" runs the forward pass
    under bf16 autocast (parameters, gradients and what behaviours see stay fp32), `compile` wraps the model in
    `torch.compile`. With a distributed `world` (torchrun), each rank trains its shard of every global batch in
    a DistributedDataParallel replica (SyncBatchNorm on CUDA, reverted when `fit` returns), evaluation is
    sharded and summed, and only rank 0 writes.

    >>> trainer = Trainer(model, data, OptimSpec(), ScheduleSpec(epochs=2), seed=0, run_dir=path)  # doctest: +SKIP
    >>> summary = trainer.fit()                                                                      # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, data: Dataset, optim: OptimSpec, schedule: ScheduleSpec, seed: int,
                 run_dir: Path, behaviours: Sequence[TrainingBehaviour] = (), *,
                 device: str | torch.device | None = None, augment: bool = True, save_init: bool = False,
                 snapshot_epochs: Sequence[int] = (), progress: Callable[[Progress], None] | None = None,
                 eval_batch_size: int = 256, precision: str = "fp32", compile: bool = False,
                 world: World = SINGLE) -> None:
        self.device = resolve_device(str(device) if device is not None else None)
        self.world = world
        distributed.check_batch(optim.batch_size, world)
        self.model = model.to(self.device)
        if any(isinstance(m, nn.Conv2d) for m in self.model.modules()):
            # oneDNN and cuDNN run small convs markedly faster in NHWC (smallcnn on 2 CPU cores: 30 → 18 ms/step);
            # only the in-memory layout changes: saved weights are contiguous, values are the same.
            self.model.to(memory_format=torch.channels_last)
        self.sync_bn = world.distributed and self.device.type == "cuda"  # SyncBN refuses CPU tensors
        if self.sync_bn:
            distributed.to_sync_batchnorm(self.model)
        self.data, self.optim_spec, self.schedule, self.seed = data, optim, schedule, seed
        self.run_dir, self.augment, self.eval_batch_size = run_dir, augment, eval_batch_size
        self.behaviours = list(behaviours)
        self.save_init, self.snapshot_epochs, self.progress = save_init, tuple(snapshot_epochs), progress
        self.optimizer = build_optimizer(self.model, optim, self.behaviours)
        self.autocast = precision_module.autocast(precision, self.device)
        step_model: nn.Module = self.model
        if world.distributed:
            distributed.join(world, self.device)
            step_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.step_model = precision_module.compiled(step_model, compile)
        self.eval_model = precision_module.compiled(self.model, compile)

    # -- public -----------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        try:
            return self._fit()
        finally:
            if self.sync_bn:  # what the caller saves or prunes next is a plain model
                distributed.revert_sync_batchnorm(self.model)

    def _fit(self) -> dict[str, Any]:
        state = self._resume_or_start()
        for epoch in range(state.epoch, self.schedule.epochs):
            start = time.perf_counter()
            train_metrics = self._train_epoch(epoch)
            train_metrics["train_seconds"] = round(time.perf_counter() - start, 4)
            for behaviour in self.behaviours:
                behaviour.on_epoch_end(self.model, epoch, self.schedule.epochs)
            if self.world.distributed:
                distributed.broadcast_buffers(self.model)  # one set of BN statistics to evaluate and save
            metrics = {"epoch": epoch + 1, "lr": self.schedule.lr_at(epoch, self.optim_spec.lr), **train_metrics,
                       **evaluate(self.eval_model, self.data, self.eval_batch_size, self.device, world=self.world,
                                  autocast=self.autocast)}
            check_finite(metrics, epoch + 1, self.run_dir)  # a diverged run stops here; its last checkpoint is kept
            state.wall_seconds += time.perf_counter() - start
            metrics["wall_seconds"] = round(state.wall_seconds, 3)
            state.history.append(metrics)
            state.epoch = epoch + 1
            if self.world.is_main:  # only rank 0 writes; every rank holds the same weights
                if state.epoch in self.snapshot_epochs:
                    save_tensors(self.run_dir / paths.rewind_weights(state.epoch), self.model.state_dict())
                self._save_checkpoint(state)
            self._report(Progress(epoch + 1, self.schedule.epochs, 0, 0, metrics))
        return self._summary(state)

    # -- one epoch --------------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> dict[str, float]:
        lr = self.schedule.lr_at(epoch, self.optim_spec.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # checkpoints before groups existed have no lr_scale
        seed = epoch_seed(self.seed, epoch)
        torch.manual_seed(seed)  # dropout and anything else drawing from the global RNG
        batches = self.data.batches("train", self.optim_spec.batch_size, shuffle=True, augment=self.augment,
                                    seed=seed, device=self.device, shard=self.world.shard(even=True))
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        # No host synchronisation in this loop: sums stay on the device, batches come from device tensors.
        for i, (x, y) in enumerate(batches):
            with self.autocast():
                logits = self.step_model(x)
                loss = F.cross_entropy(logits, y)  # autocast computes it in fp32
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # DDP: the gradients are averaged over the ranks by the time this returns
            # Behaviours see the true gradients: fp32, unscaled (bf16 autocast needs no loss scaling).
            for behaviour in self.behaviours:
                behaviour.after_backward(self.model)
            self.optimizer.step()
            for behaviour in self.behaviours:
                behaviour.after_step(self.model, lr)
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if self.progress is not None:
                self._report(Progress(epoch + 1, self.schedule.epochs, i + 1, len(batches)))
        totals = self.world.all_sum(torch.stack([loss_sum.double(), correct.double(),
                                                 torch.tensor(float(seen), dtype=torch.float64, device=self.device)]))
        loss_total, correct_total, seen_total = totals.tolist()
        return {"train_loss": loss_total / seen_total, "train_acc": 100.0 * correct_total / seen_total}

    def _report(self, event: Progress) -> None:
        if self.progress is not None:
            self.progress(event)

    # -- checkpoints ------------------------------------------------------------------------------------
    def _resume_or_start(self) -> _State:
        ckpt = self.run_dir / paths.CHECKPOINT
        if self.world.agree(ckpt.is_file()):  # rank 0 decides; every rank then reads the same file
            if not ckpt.is_file():
                raise ArtifactError(f"rank {self.world.rank} cannot see {ckpt}, which rank 0 resumes from: the run "
                                    "store must be on a file system every node shares")
            return self._load_checkpoint(ckpt)
        for behaviour in self.behaviours:
            behaviour.on_train_start(self.model)
        if self.save_init and self.world.is_main:
            save_tensors(self.run_dir / paths.INIT, self.model.state_dict())
        return _State()

    def _save_checkpoint(self, state: _State) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim = self.optimizer.state_dict()
        for idx, slots in optim["state"].items():
            for key, value in slots.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{idx}.{key}"] = value
        for i, behaviour in enumerate(self.behaviours):
            for key, value in behaviour.state_dict().items():
                tensors[f"{BEHAVIOUR_PREFIX}{i}.{key}"] = value
        meta = {"epoch": str(state.epoch), "wall_seconds": repr(state.wall_seconds),
                "history": json.dumps(state.history, allow_nan=False), "param_groups": json.dumps(optim["param_groups"]),
                "behaviours": json.dumps([type(b).__name__ for b in self.behaviours])}
        # metrics first: whoever sees a checkpoint also finds the metrics of its epochs (resume rewrites them)
        self._write_metrics(state.history)
        save_tensors(self.run_dir / paths.CHECKPOINT, tensors, metadata=meta)

    def _load_checkpoint(self, ckpt: Path) -> _State:
        tensors, meta = load_tensors(ckpt), tensors_metadata(ckpt)
        check_checkpoint(tensors, meta, self.model, ckpt)  # names, shapes and metadata, before anything is loaded
        names = [type(b).__name__ for b in self.behaviours]
        saved_names = json.loads(meta.get("behaviours", "null"))
        if saved_names is not None and saved_names != names:
            raise ArtifactError(f"{ckpt} was written with training behaviours {saved_names}, not {names}; "
                                "delete it to start this run afresh")
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                slots.setdefault(int(idx), {})[name] = value.to(self.device)
        try:
            self.optimizer.load_state_dict({"state": slots, "param_groups": json.loads(meta["param_groups"])})
        except ValueError as err:  # another number or size of parameter groups
            raise ArtifactError(f"{ckpt} does not match this run's optimiser groups ({err})") from None
        for i, behaviour in enumerate(self.behaviours):
            prefix = f"{BEHAVIOUR_PREFIX}{i}."
            behaviour.load_state_dict({k[len(prefix):]: v.to(self.device) for k, v in tensors.items()
                                       if k.startswith(prefix)})
        state = _State(int(meta["epoch"]), float(meta["wall_seconds"]), json.loads(meta["history"]))
        if self.world.is_main:
            self._write_metrics(state.history)
        return state

    def _write_metrics(self, history: list[dict[str, Any]]) -> None:
        write_text(self.run_dir / paths.METRICS, "".join(json.dumps(m, sort_keys=True, allow_nan=False) + "\n" for m in history))

    def _summary(self, state: _State) -> dict[str, Any]:
        best = max(state.history, key=lambda m: m["test_acc"])
        last = state.history[-1]
        images = self.data.num_examples("train") * len(state.history)
        train_seconds = sum(m["train_seconds"] for m in state.history)
        return {
            "final_acc": last["test_acc"], "final_loss": last["test_loss"],
            "best_acc": best["test_acc"], "best_epoch": best["epoch"],
            "epochs": state.epoch, "wall_seconds": round(state.wall_seconds, 3),
            "train_images_per_second": round(images / max(train_seconds, 1e-9), 1),
        }
