"""Engine stage `train`: build (or inherit) a model, train it in its run directory, write the results."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from prunectl import paths
from prunectl.core.flops import count
from prunectl.core.hparams import MethodTraining, OptimSpec, ScheduleSpec, TrainSpec, slimming_training
from prunectl.core.io import save_tensors, write_json
from prunectl.core.spec import Spec, settings_from
from prunectl.data import Dataset, canonical_dataset, dataset_facts, load_dataset, verify_dataset
from prunectl.engine.arms import arm_for_stage
from prunectl.engine.protocols import PROTOCOLS
from prunectl.errors import ArtifactError, BadValueError
from prunectl.methods import get_method
from prunectl.models import ArchModel, build_model, default_arch
from prunectl.runs.store import Run, load_weights, prepare_run, record_protocol, run_location, write_lineage
from prunectl.training import distributed
from prunectl.training.hooks import KeepMasks, TrainingBehaviour
from prunectl.training.trainer import Progress, Trainer, resolve_device


def baseline_spec(model: str, dataset: str, *, epochs: int | None = None, lr: float | None = None,
                  batch_size: int | None = None, weight_decay: float | None = None,
                  momentum: float | None = None, seed: int = 0, sparsity: float = 0.0,
                  training: MethodTraining | None = None, data_dir: str | Path | None = None,
                  **model_options: Any) -> TrainSpec:
    """The spec of a baseline run: the protocol the dataset follows (`dataset_facts`: its registration's, or for
    user data the default inferred from its images), with any value the caller overrides.

    `training` is a method acting during training (validated here against the method's training settings);
    `sparsity=S` is short for Network Slimming's `MethodTraining("slimming", {"sparsity": S})`.

    >>> spec = baseline_spec("smallcnn", "mnist5k", epochs=2)
    >>> spec.schedule.epochs, spec.optim.lr
    (2, 0.1)
    >>> baseline_spec("smallcnn", "mnist5k", sparsity=1e-4).training
    MethodTraining(method='slimming', settings={'sparsity': 0.0001})
    """
    if sparsity and training is not None:
        raise BadValueError("give either sparsity (Network Slimming's shortcut) or a training method, not both")
    if sparsity < 0:
        raise BadValueError(f"sparsity must be >= 0, got {sparsity}")
    training = (method_training(training.method, training.settings) if training is not None
                else slimming_training(sparsity))
    dataset, fingerprint = canonical_dataset(dataset, data_dir)
    facts = dataset_facts(dataset, data_dir=data_dir)
    proto = PROTOCOLS[facts.protocol.name]
    arch = default_arch(model, num_classes=facts.num_classes, input_size=facts.input_size, **model_options)
    optim = _override(proto.optim, lr=lr, batch_size=batch_size, weight_decay=weight_decay, momentum=momentum)
    schedule = _override(proto.schedule, epochs=epochs)
    return TrainSpec(arch=arch, dataset=dataset, data_fingerprint=fingerprint, optim=optim, schedule=schedule,
                     seed=seed, training=training)


def method_training(method: str, settings: Mapping[str, Any] | None = None) -> MethodTraining:
    """A method's training, validated by its `training_settings` and normalised (defaults omitted, integers of
    float settings as floats), so equal settings give equal run ids: `method_training("slimming", {"sparsity":
    1e-4})`. An unknown method, a method that does not act during training, or an unknown or ill-typed setting
    is a one-line BadValueError naming what is valid.
    """
    return MethodTraining(method, _training_settings(method, settings or {}).to_dict(omit_defaults=True))


def _training_settings(name: str, values: Mapping[str, Any]) -> Spec:
    method = get_method(name)
    if method.training_settings is None:
        raise BadValueError(f"method '{name}' does not act during training (it only prunes a trained model)")
    owner = f"training of method '{name}'"
    fields = dataclasses.fields(method.training_settings)  # type: ignore[arg-type]
    missing = [f.name for f in fields if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing and set(values) <= {f.name for f in fields}:  # unknown keys: settings_from names the valid ones
        raise BadValueError(f"{owner} needs {', '.join(repr(k) for k in missing)} (e.g. --set {missing[0]}=VALUE)")
    return settings_from(method.training_settings, values, owner)


def behaviours_for(spec: TrainSpec, model: ArchModel,
                   masks: Mapping[str, torch.Tensor] | None = None) -> list[TrainingBehaviour]:
    """What the trainer applies for `spec`: the method's training behaviour, then the kept mask (last, so a
    masked weight's gradient stays zero whatever a method added to it)."""
    behaviours: list[TrainingBehaviour] = []
    if spec.training is not None:
        settings = _training_settings(spec.training.method, spec.training.settings)
        behaviours.append(get_method(spec.training.method).training(settings, model))
    if masks is not None:
        behaviours.append(KeepMasks(masks))
    return behaviours


def _override(spec: Any, **values: Any) -> Any:
    return spec.replace(**{k: v for k, v in values.items() if v is not None})


def train(spec: TrainSpec, *, out: str | Path | None = None, parent: Run | None = None,
          rewind_source: Run | None = None, data_dir: str | Path | None = None, download: bool = False,
          device: str | None = None, progress: Callable[[Progress], None] | None = None,
          data: Dataset | None = None, note: Callable[[str], None] | None = None) -> Run:
    """Run (or resume, or reuse) the training that `spec` describes; returns its finished run directory.

    `parent` is the run the spec derives from (weights to inherit, mask to keep); `rewind_source` is the
    baseline whose saved weights a lottery ticket rewinds to. A user dataset is checked against the spec's
    fingerprint first, for a stored run too: a changed file is an error, not a silently reused run. `note`
    hears, once everything is checked and just before training starts, which protocol the data follows and why.

    Under torchrun (WORLD_SIZE > 1) every process calls this with the same spec: they join one process group,
    each trains its shard of every global batch (the spec's batch size, which must divide over the processes),
    and only rank 0 writes (prunectl/training/distributed.py); every rank returns the finished run.
    """
    world = distributed.world_from_env()
    distributed.check_batch(spec.optim.batch_size, world)  # one-line error before anything is written
    if spec.training is not None:  # a bad method or setting, or a model it cannot act on, fails before anything is written
        with torch.device("meta"):  # the network's structure only: no memory, no random numbers drawn
            behaviours_for(spec, build_model(spec.arch))
    resolved = resolve_device(distributed.rank_device(world, device))
    distributed.join(world, resolved)
    _verify_data(spec, out)
    done = world.on_main(lambda: prepare_run(spec, spec.stage, out).is_done())
    run = Run(run_location(spec, spec.stage, out))
    if done:
        return run
    data = data or load_dataset(spec.dataset, data_dir=data_dir, download=download)
    if data.protocol is not None:
        protocol = data.protocol.to_dict()
        world.on_main(lambda: record_protocol(run, protocol))
    _check_fits(spec, data)
    model, masks = _initial_model(spec, parent, rewind_source)
    world.on_main(lambda: _write_inputs(run, model, parent, masks))
    trainer = Trainer(model, data, spec.optim, spec.schedule, spec.seed, run.path, behaviours_for(spec, model, masks),
                      device=resolved, augment=spec.augment, save_init=spec.save_init,
                      snapshot_epochs=spec.snapshot_epochs, progress=progress if world.is_main else None,
                      precision=spec.precision, compile=spec.compile, world=world)
    if note is not None and world.is_main:
        if data.protocol is not None:
            note(f"protocol: {data.protocol.name} ({data.protocol.why})")
        if spec.precision == "bf16" and resolved.type == "cpu":
            note("bf16 on CPU: autocast runs; it is faster than fp32 only on CPUs with AVX512-BF16 or AMX")
        if world.distributed:
            note(f"{world.size} processes ({'NCCL' if resolved.type == 'cuda' else 'gloo'}), "
                 f"{spec.optim.batch_size // world.size} images each per step of {spec.optim.batch_size}")
    summary = trainer.fit()
    world.on_main(lambda: finish(run, model, summary, spec, masks, processes=world.size))
    return run


def _write_inputs(run: Run, model: ArchModel, parent: Run | None, masks: dict[str, torch.Tensor] | None) -> None:
    """What a run records before its first step: its lineage, architecture and kept mask."""
    if parent is not None:
        write_lineage(run, parent)
    write_json(run.file(paths.ARCH), model.to_arch().to_dict())
    if masks is not None:
        save_tensors(run.file(paths.MASK), masks)


def _verify_data(spec: TrainSpec, out: str | Path | None) -> None:
    location = run_location(spec, spec.stage, out)
    if Run(location).is_done():
        consequence = "the stored run was trained on other data"
    elif spec.parent is not None:
        consequence = "the runs it derives from were trained on other data"
    else:
        consequence = "its spec was made for other data"
    verify_dataset(spec.dataset, spec.data_fingerprint, run=location.name, consequence=consequence)


def finish(run: Run, model: ArchModel, summary: dict[str, Any], spec: TrainSpec,
           masks: dict[str, torch.Tensor] | None, *, processes: int = 1) -> None:
    """Write the final weights and result.json, then drop the checkpoint (result.json marks the run done).
    `processes`: how many torchrun processes trained it (not part of the spec: the result is the same run)."""
    save_tensors(run.file(paths.MODEL), model.state_dict())
    counts = count(model, model.input_size, masks)
    result = {**summary, **counts.as_dict(), "seed": spec.seed, "stage": spec.stage, "dataset": spec.dataset,
              "arch": model.to_arch().name, "id": run.id, "parent": spec.parent, "arm": _arm_label(spec.stage),
              "level": _level(run, masks), "threads": torch.get_num_threads(), "processes": processes}
    write_json(run.file(paths.RESULT), result)
    run.file(paths.CHECKPOINT).unlink(missing_ok=True)


def _arm_label(stage: str) -> str | None:
    """The comparison arm a run of this stage belongs to (`prunectl.engine.arms`), written into result.json."""
    found = arm_for_stage(stage)
    return found.label if found is not None else None


def _level(run: Run, masks: dict[str, torch.Tensor] | None) -> dict[str, Any] | None:
    """The pruning that produced this run's architecture (method, settings; for iterative pruning the round),
    from its lineage, and the fraction of prunable weights that remain when a mask is kept."""
    prunes = [r for r in run.lineage() if r.get("kind") == "PruneSpec"]
    if not prunes:
        return None
    level = {"method": prunes[0]["spec"]["method"], **prunes[0]["spec"]["settings"]}  # settings as given
    arm = arm_for_stage(run.stage)
    if len(prunes) > 1 or (arm is not None and arm.recipe == "lottery"):
        level["round"] = len(prunes)
    if masks:
        level["remaining"] = round(sum(float(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()), 6)
    return level


def _check_fits(spec: TrainSpec, data: Dataset) -> None:
    arch = spec.arch
    if tuple(arch.input_size) != tuple(data.input_size) or arch.num_classes != data.num_classes:
        raise BadValueError(
            f"architecture expects {arch.num_classes} classes of {tuple(arch.input_size)} images but "
            f"{spec.dataset} has {data.num_classes} classes of {tuple(data.input_size)}"
        )


def _initial_model(spec: TrainSpec, parent: Run | None,
                   rewind_source: Run | None) -> tuple[ArchModel, dict[str, torch.Tensor] | None]:
    """Build the network from the spec's seed, then take the parent's weights and mask if the spec says so."""
    torch.manual_seed(spec.seed)
    model = build_model(spec.arch)
    if spec.parent is not None and (parent is None or parent.id != spec.parent):
        raise ArtifactError(f"this run derives from run {spec.parent}; pass that run directory")
    if spec.init == "inherit":
        load_weights(model, parent.weights(paths.MODEL), parent.file(paths.MODEL))  # type: ignore[union-attr]
    elif spec.init == "rewind":
        _rewind(model, spec, parent, rewind_source)
    masks = None
    if spec.masked:
        masks = parent.mask() if parent is not None else None
        if masks is None:
            raise ArtifactError(f"run {spec.parent} has no {paths.MASK} to keep applied")
        if spec.density_scaled_init:
            with torch.no_grad():
                params = dict(model.named_parameters())
                for name, mask in masks.items():
                    params[name].mul_(float(mask.numel() / max(mask.sum().item(), 1)) ** 0.5)
    return model, masks


def _rewind(model: ArchModel, spec: TrainSpec, parent: Run | None, source: Run | None) -> None:
    """Load the baseline's initial (or epoch-K) weights; the baseline must be the root of the parent's lineage."""
    roots = [r for r in (parent.lineage() if parent is not None else []) if r.get("kind") == "TrainSpec"]
    root_id = roots[-1]["id"] if roots else spec.parent
    if source is None or source.id != root_id:
        raise ArtifactError(f"rewinding needs the baseline run {root_id}; pass it as the rewind source")
    name = paths.INIT if spec.rewind_to == "init" else paths.rewind_weights(int(spec.rewind_to[6:]))
    if not source.has(name):
        hint = "--save-init" if spec.rewind_to == "init" else f"--snapshot-epochs {spec.rewind_to[6:]}"
        raise BadValueError(f"baseline {source.path} has no saved {name}; retrain it with {hint}")
    load_weights(model, source.weights(name), source.file(name))


__all__ = ["MethodTraining", "OptimSpec", "ScheduleSpec", "TrainSpec", "baseline_spec", "behaviours_for", "finish",
           "method_training", "train"]
