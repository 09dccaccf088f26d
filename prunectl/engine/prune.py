"""Engine stages `prune` and `extract_arch`: a trained run → a pruned run (smaller dense net, or a mask)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunectl import paths
from prunectl.core.flops import count
from prunectl.core.hparams import TrainSpec
from prunectl.core.io import new_file, save_tensors, write_json
from prunectl.core.spec import Spec, register_spec, settings_from
from prunectl.data import load_dataset, verify_dataset
from prunectl.errors import ArtifactError, BadValueError
from prunectl.methods import PruneContext, get_method
from prunectl.runs.store import Run, prepare_run, run_location, write_lineage
from prunectl.training.trainer import evaluate, resolve_device


@register_spec
@dataclass(frozen=True)
class PruneSpec(Spec):
    """Prune the final weights of run `parent` with `method`; `settings` is the method's settings (defaults
    omitted, so the id survives new defaulted options)."""

    parent: str
    method: str
    settings: Mapping[str, Any]
    dataset: str
    seed: int = 0

    def method_settings(self) -> Spec:
        return get_method(self.method).settings.from_dict(self.settings)


def prune_spec(baseline: Run, method: str, settings: Mapping[str, Any] | Spec) -> PruneSpec:
    """The spec of pruning `baseline` (validates the settings against the method's dataclass)."""
    impl = get_method(method)
    parsed = settings if isinstance(settings, Spec) else settings_from(impl.settings, settings, f"method '{method}'")
    base = _train_spec(baseline)
    return PruneSpec(parent=baseline.id, method=method, settings=parsed.to_dict(omit_defaults=True),
                     dataset=base.dataset, seed=base.seed)


def _train_spec(run: Run) -> TrainSpec:
    spec = run.spec()
    if not isinstance(spec, TrainSpec):
        raise BadValueError(f"{run.path} is a {run.stage} run; prune needs a trained model (a train or finetune run)")
    if not run.is_done():
        raise ArtifactError(f"run {run.path} has not finished; finish it first (rerun its command to resume)")
    return spec


def prune(baseline: Run, spec: PruneSpec, *, out: str | Path | None = None, data_dir: str | Path | None = None,
          device: str | None = None, note: Callable[[str], None] = lambda message: None) -> Run:
    """Prune `baseline` as `spec` says; writes the pruned model, its arch, the mask (unstructured), and before /
    after figures including the test accuracy straight after pruning (before any fine-tuning)."""
    base_spec = _train_spec(baseline)
    if spec.parent != baseline.id:
        raise BadValueError(f"the prune spec is for run {spec.parent}, not {baseline.id}")
    verify_dataset(spec.dataset, base_spec.data_fingerprint, run=baseline.path.name,
                   consequence="the run being pruned was trained on other data")
    stored = Run(run_location(spec, "prune", out))
    if stored.is_done() and stored.id == spec.spec_hash():
        return stored
    notes: list[str] = []

    def remember(message: str) -> None:
        notes.append(message)
        note(message)

    data = load_dataset(spec.dataset, data_dir=data_dir)
    method = get_method(spec.method)
    model = baseline.model()
    prior = baseline.mask()
    context = PruneContext(data=data, training=base_spec.training, mask=prior, note=remember)
    outcome = method.prune(model, spec.method_settings(), context)  # a refusal leaves nothing written
    pruned = outcome.model
    run = prepare_run(spec, "prune", out)  # only now: a method that refuses the run leaves nothing written
    write_lineage(run, baseline)
    write_json(run.file(paths.ARCH), pruned.to_arch().to_dict())
    save_tensors(run.file(paths.MODEL), pruned.state_dict())
    if outcome.mask is not None:
        save_tensors(run.file(paths.MASK), outcome.mask)
    before = count(model, model.input_size, prior)
    after = count(pruned, pruned.input_size, outcome.mask)
    acc = evaluate(pruned.to(resolve_device(device)), data, 256, resolve_device(device))
    result = {
        "stage": "prune", "method": spec.method, "settings": dict(spec.settings), "id": run.id,
        "parent": baseline.id, "seed": spec.seed, "dataset": spec.dataset, "arch": pruned.to_arch().name,
        "structured": method.structured, "params_before": before.params, "flops_before": before.flops,
        "params": after.params, "flops": after.flops, "flops_ratio": before.flops / max(after.flops, 1),
        "params_ratio": before.params / max(after.params, 1), "pruned_acc": acc["test_acc"],
        "final_acc": acc["test_acc"],  # the accuracy of this run's model: straight after pruning
        "report": json.loads(json.dumps(outcome.report)), "notes": notes,
    }
    write_json(run.file(paths.RESULT), result)
    return run


def extract_arch(run: Run, out: str | Path | None = None) -> dict[str, Any]:
    """The pruned architecture as data. Writes `out` (JSON) and, for a masked run, the mask beside it as
    `<out stem>.mask.safetensors`; returns {"arch": ..., "arch_file": ..., "mask_file": ...}."""
    arch = run.arch()
    written: dict[str, Any] = {"arch": arch.to_dict(), "arch_file": None, "mask_file": None}
    mask = run.mask()
    if out is not None:
        out = Path(out).expanduser()
        record = arch.to_dict()
        new_file(out, "-o")
        if mask is not None:
            mask_path = out.with_name(out.stem + ".mask.safetensors")
            new_file(mask_path, "-o")
            save_tensors(mask_path, mask, metadata={"source_run": run.id})
            record.setdefault("notes", {})["mask_file"] = mask_path.name
            written["mask_file"] = str(mask_path)
        record.setdefault("notes", {})["source_run"] = run.id
        write_json(out, record)
        written["arch_file"] = str(out)
    if mask is not None:
        total = sum(m.numel() for m in mask.values())
        written["density"] = sum(float(m.sum()) for m in mask.values()) / total
    return written
